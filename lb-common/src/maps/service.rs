//! A service's settings (`MAP_SERVICES`) and its two Maglev tables (`MAP_MAGLEV`, the live one
//! named by `MAP_ACTIVE_SLOT`): how a packet of the service finds its backend.

/// Largest Maglev table a service may use (a prime). Each service owns two regions of this
/// size in `MAP_MAGLEV`: slot 0 and slot 1.
pub const MAGLEV_MAX_SIZE: u32 = 65537;
/// Default Maglev table size (prime).
pub const MAGLEV_DEFAULT_SIZE: u32 = 65537;
/// A Maglev slot that names no backend (the service has no usable server).
pub const NO_BACKEND: u32 = u32::MAX;

/// Index of `service`'s region for table `slot` (0 or 1) in `MAP_MAGLEV`.
#[inline(always)]
pub const fn maglev_base(service: u32, slot: u32) -> u32 {
    (service * 2 + slot) * MAGLEV_MAX_SIZE
}

/// `Service::stick_mode`
pub const STICK_NONE: u8 = 0;
pub const STICK_SRC: u8 = 1;
pub const STICK_SRC_PORT: u8 = 2;

/// `Service::flags`
pub const SVC_F_REDISPATCH: u8 = 1;

/// Value of `MAP_SERVICES` (index: service id).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Service {
    /// Idle time after which a stick entry no longer counts (ns); 0 = never expires.
    pub expire_ns: u64,
    /// Client address mask for IPv4 (network byte order, as bytes: /24 = ff ff ff 00).
    pub v4_mask: [u8; 4],
    /// Client address mask for IPv6.
    pub v6_mask: [u8; 16],
    /// Maglev table size M of slot 0 and slot 1 (each written before its slot is made active).
    pub table_size: [u32; 2],
    pub stick_mode: u8,
    pub flags: u8,
    /// 1 when the entry is in use (a deleted service is zeroed: packets to it are passed).
    pub enabled: u8,
    pub _pad: [u8; 1],
}
map_type!(Service, 40);
