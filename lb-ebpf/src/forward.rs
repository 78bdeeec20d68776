//! Steps 4 and 7 (see `main`): whether a frame is ours to forward, and L2 direct server
//! return. Rewrite the destination MAC to the backend's and the source MAC to ours (so a bridge
//! never learns the client's MAC on our port), then `XDP_TX` out of the receiving interface or
//! `XDP_REDIRECT` to the backend's interface. The IP packet is not touched: the backend holds
//! the VIP on its loopback and answers the client directly.
//!
//! VLAN: the parser accepts one 802.1Q tag with any VLAN id and matches the VIP on the inner IP
//! header alone (a VIP is the same service on every VLAN the interface carries). The tag is
//! kept as it is, on `XDP_TX` and on `XDP_REDIRECT` alike: a backend on another interface must
//! be reachable there on the same VLAN (a trunk carrying that tag), or it drops the frame. The
//! data path never adds, removes or rewrites a tag.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use lb_common::{Backend, gstat::Counter};

use crate::{
    headers::{MAC_LEN, MACS_LEN},
    maps,
};

/// Step 4: is the frame addressed to this interface's own MAC? Only then is it ours to forward.
/// A broadcast, multicast or other host's unicast frame reaches XDP through a flooding switch
/// or promiscuous mode; forwarding it would send a second copy of someone else's frame with our
/// source MAC. Checked after the VIP lookup, so non-VIP traffic pays nothing.
#[inline(always)]
pub fn addressed_to_us(ctx: &XdpContext) -> bool {
    let start = ctx.data();
    if start + MAC_LEN > ctx.data_end() {
        return false; // parse already checked this; keeps the verifier content
    }
    // SAFETY: MAC_LEN bytes bounds-checked above.
    let dst = unsafe { &*(start as *const [u8; MAC_LEN]) };
    maps::is_own_mac(
        u32::from_ne_bytes([dst[0], dst[1], dst[2], dst[3]]),
        u16::from_ne_bytes([dst[4], dst[5]]),
    )
}

/// Step 7: rewrite the MACs and send the frame to `backend`.
#[inline(always)]
pub fn to_backend(ctx: &XdpContext, backend: &Backend) -> u32 {
    let start = ctx.data();
    if start + MACS_LEN > ctx.data_end() {
        return xdp_action::XDP_PASS; // parse already checked this; keeps the verifier content
    }
    let eth = start as *mut [u8; MACS_LEN];
    // SAFETY: MACS_LEN bytes bounds-checked above.
    let eth = unsafe { &mut *eth };
    let src = if backend.src_mac == [0; MAC_LEN] {
        [eth[0], eth[1], eth[2], eth[3], eth[4], eth[5]]
    } else {
        backend.src_mac
    };
    eth[..MAC_LEN].copy_from_slice(&backend.mac);
    eth[MAC_LEN..MACS_LEN].copy_from_slice(&src);
    if backend.tx_port == 0 {
        xdp_action::XDP_TX
    } else {
        maps::count(Counter::Redirect);
        maps::redirect(backend.tx_port)
    }
}

/// The floor for benchmarks: swap the MACs and send the frame back.
#[inline(always)]
pub fn swap_macs(ctx: &XdpContext) -> u32 {
    let start = ctx.data();
    if start + MACS_LEN > ctx.data_end() {
        return xdp_action::XDP_PASS;
    }
    // SAFETY: MACS_LEN bytes bounds-checked above.
    let eth = unsafe { &mut *(start as *mut [u8; MACS_LEN]) };
    let mut i = 0;
    while i < MAC_LEN {
        eth.swap(i, i + MAC_LEN);
        i += 1;
    }
    xdp_action::XDP_TX
}
