//! The decapsulator's maps (names, keys and values in `lb_common::maps::decap`). None is
//! pinned by the object: `xlb decap attach` pins them under its own bpffs directory.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
};
use lb_common::{DecapConfig, DecapVip, MAX_DECAP_VIPS, decap_stat};

/// The VIPs this host serves. Key: address and family; value: 1. Written by `xlb decap
/// attach`; read per encapsulated packet.
#[map(name = "XLB_DECAP_VIPS")]
static VIPS: HashMap<DecapVip, u8> = HashMap::with_max_entries(MAX_DECAP_VIPS, 0);

/// Index 0: the GUE port (0: off). Written by `xlb decap attach`; read per UDP packet.
#[map(name = "XLB_DECAP_CONFIG")]
static CONFIG: Array<DecapConfig> = Array::with_max_entries(1, 0);

/// Per CPU, index `decap_stat`: packets by outcome. Written per packet; read by `xlb decap show`.
#[map(name = "XLB_DECAP_STATS")]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(decap_stat::COUNT, 0);

/// A key of `VIPS`, on the stack at an 8-byte boundary. `DecapVip` is made of bytes (alignment
/// 1), and the build lets LLVM merge byte loads and stores into wider ones wherever they fall
/// (`allows-misaligned-mem-access`), but the verifier takes only aligned stack accesses.
#[repr(C, align(8))]
pub struct VipKey(pub DecapVip);

impl VipKey {
    #[inline(always)]
    pub fn new(family: u8) -> Self {
        VipKey(DecapVip {
            addr: [0; 16],
            family,
            _pad: [0; 3],
        })
    }
}

#[inline(always)]
pub fn is_vip(key: &VipKey) -> bool {
    VIPS.get_ptr(&key.0).is_some()
}

/// The GUE port in network byte order; 0 when GUE is off.
#[inline(always)]
pub fn gue_port() -> u16 {
    CONFIG.get(0).map_or(0, |c| c.gue_port)
}

/// Count one packet under `stat` on this CPU.
#[inline(always)]
pub fn count(stat: u32) {
    if let Some(c) = STATS.get_ptr_mut(stat) {
        // SAFETY: per-CPU slot: no other writer while this program runs on this CPU.
        unsafe { *c += 1 };
    }
}
