//! Where a forwarded frame goes: a backend (`MAP_BACKENDS`: its MACs, output port, state and
//! forwarding mode) and the receiving interface's own MAC (`MAP_OWN_MAC`: only frames sent to
//! it are forwarded).

/// `Backend::state` as the data path sees it (the agent folds health and admin state in).
/// Up and in rotation: new clients may be given it.
pub const BACKEND_UP: u8 = 1;
/// Draining: pinned clients stay, new clients never get it (not in the Maglev table).
pub const BACKEND_DRAIN: u8 = 2;
/// Health check says down.
pub const BACKEND_DOWN: u8 = 3;
/// Administratively in maintenance: treated as down.
pub const BACKEND_MAINT: u8 = 4;

/// Value of `MAP_BACKENDS` (index: backend id). All zero = a free id (`state` 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Backend {
    /// Destination MAC written into forwarded frames.
    pub mac: [u8; 6],
    /// Source MAC for forwarded frames; all zero = the frame's own destination MAC (ours).
    pub src_mac: [u8; 6],
    /// 0 = `XDP_TX` out of the receiving interface; n > 0 = `XDP_REDIRECT` to `MAP_TX_PORTS[n]`.
    pub tx_port: u32,
    /// `BACKEND_*`; 0 = the id is free (its server was removed).
    pub state: u8,
    /// `FORWARD_L2` (the MACs and `tx_port` above say where), else `FORWARD_IPIP` or
    /// `FORWARD_GUE`: encapsulated as `MAP_ENCAP` says, next hop from the kernel's FIB (the
    /// MACs and `tx_port` are then unused).
    pub forward: u8,
    /// The service this backend belongs to. Backend ids are reused after a server is removed,
    /// so a stick entry's backend id alone proves nothing: the data path follows an entry only
    /// when the backend's `service` is the packet's service and its state is not 0.
    pub service: u16,
}
map_type!(Backend, 20);

impl Backend {
    /// Whether this backend is a live server of service `service` (a stick entry of that
    /// service may follow it; whether it is up is `state`'s business).
    #[inline(always)]
    pub fn serves(&self, service: u32) -> bool {
        self.state != 0 && self.service as u32 == service
    }
}

/// Value of `MAP_OWN_MAC` (index 0): the MAC of the interface XDP runs on. Only frames sent to
/// it are forwarded; `set` is 0 until the agent (or a test fixture) writes it, and until then
/// every VIP frame is passed.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct OwnMac {
    pub mac: [u8; 6],
    pub set: u8,
    pub _pad: u8,
}
map_type!(OwnMac, 8);
