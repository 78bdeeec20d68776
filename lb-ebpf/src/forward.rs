//! Step 6: L2 direct server return. Rewrite the destination MAC to the backend's and the source
//! MAC to ours (so a bridge never learns the client's MAC on our port), then `XDP_TX` out of
//! the receiving interface or `XDP_REDIRECT` to the backend's interface. The IP packet is not
//! touched: the backend holds the VIP on its loopback and answers the client directly.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use lb_common::{Backend, gstat};

use crate::maps;

#[inline(always)]
pub fn to_backend(ctx: &XdpContext, backend: &Backend) -> u32 {
    let start = ctx.data();
    if start + 12 > ctx.data_end() {
        return xdp_action::XDP_PASS; // parse already checked this; keeps the verifier content
    }
    let eth = start as *mut [u8; 12];
    // SAFETY: 12 bytes bounds-checked above.
    let eth = unsafe { &mut *eth };
    let src = if backend.src_mac == [0; 6] {
        [eth[0], eth[1], eth[2], eth[3], eth[4], eth[5]]
    } else {
        backend.src_mac
    };
    eth[0..6].copy_from_slice(&backend.mac);
    eth[6..12].copy_from_slice(&src);
    if backend.tx_port == 0 {
        xdp_action::XDP_TX
    } else {
        maps::count(gstat::REDIRECT);
        maps::redirect(backend.tx_port)
    }
}

/// The floor for benchmarks: swap the MACs and send the frame back.
#[inline(always)]
pub fn swap_macs(ctx: &XdpContext) -> u32 {
    let start = ctx.data();
    if start + 12 > ctx.data_end() {
        return xdp_action::XDP_PASS;
    }
    // SAFETY: 12 bytes bounds-checked above.
    let eth = unsafe { &mut *(start as *mut [u8; 12]) };
    let mut i = 0;
    while i < 6 {
        eth.swap(i, i + 6);
        i += 1;
    }
    xdp_action::XDP_TX
}
