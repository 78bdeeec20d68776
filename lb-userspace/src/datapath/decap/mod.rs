//! The decapsulator for backend hosts (`xlb decap`): its own eBPF object (`xlb_decap` at XDP,
//! `xlb_decap_tc` at tc ingress, built from `lb-ebpf/src/decap`), loaded with typed handles on
//! its three maps. It shares nothing with the balancer's `Datapath`: a backend host loads only
//! this.
//!
//! - here: the hook (`Hook`), load (optionally pinning the maps), set the VIPs and the GUE port,
//!   read the counters, run a hook's program on a frame (BPF_PROG_TEST_RUN);
//! - `host`: what `xlb decap attach|detach|show` do on a host — the link (XDP or tcx) and the
//!   pins under a directory per interface, refusals that say what to do.

mod host;

use std::{net::IpAddr, path::PathBuf};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray},
    programs::{SchedClassifier, TestRun as _, TestRunOptions, Xdp},
};
use lb_common::{
    DECAP_MAPS, DecapConfig, DecapVip, MAP_DECAP_CONFIG, MAP_DECAP_STATS, MAP_DECAP_VIPS, MAX_DECAP_VIPS,
    PROG_DECAP, PROG_DECAP_TC, decap_stat,
};

pub use crate::datapath::decap::host::{
    AttachRequest, Attachment, attach, attached, base_dir, detach, status,
};

/// The compiled decapsulator (built by build.rs from `lb-ebpf/src/decap`).
pub static DECAP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xlb-decap.bpf.o"));

type Result<T, E = DecapError> = std::result::Result<T, E>;

/// `XDP_PASS` and tcx's `TCX_NEXT` (`TC_ACT_UNSPEC`), from the kernel's UAPI.
const XDP_PASS: u32 = 2;
const TCX_NEXT: i32 = -1;

/// Where the decapsulator runs on an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Hook {
    /// XDP (native, generic if the driver has none): the cheapest on a NIC whose driver runs
    /// XDP in place.
    Xdp,
    /// tc ingress (a tcx link, Linux 6.6 or later): for veth (containers) and other devices that
    /// copy a packet to run XDP on it, which veth does to most encapsulated packets.
    Tc,
}

impl Hook {
    pub const ALL: [Hook; 2] = [Hook::Xdp, Hook::Tc];

    /// The program's name in the object.
    pub fn program(self) -> &'static str {
        match self {
            Hook::Xdp => PROG_DECAP,
            Hook::Tc => PROG_DECAP_TC,
        }
    }

    /// The verdict the program returns for every packet: `XDP_PASS`, or at tc `TCX_NEXT`
    /// (on to the hook's next program, or the stack).
    pub fn pass_verdict(self) -> u32 {
        match self {
            Hook::Xdp => XDP_PASS,
            Hook::Tc => TCX_NEXT as u32,
        }
    }
}

impl std::fmt::Display for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Hook::Xdp => "xdp",
            Hook::Tc => "tc",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DecapError {
    #[error(transparent)]
    Interface(#[from] crate::net::link::LinkError),
    #[error(
        "this xlb binary carries no eBPF object (built with XLB_SKIP_EBPF=1); rebuild with `cargo xtask build`"
    )]
    EmptyObject,
    #[error("give at least one VIP (--vip ADDR): only packets to a VIP are decapsulated")]
    NoVips,
    #[error("VIP {vip}: {why}")]
    BadVip { vip: IpAddr, why: &'static str },
    #[error("{count} VIPs given; the decapsulator holds at most {MAX_DECAP_VIPS}")]
    TooManyVips { count: usize },
    #[error(
        "the decapsulator is already attached to {ifname} (pinned under {dir}); \
         `xlb decap detach --interface {ifname}` first, then attach again with the new settings"
    )]
    AlreadyAttached { ifname: String, dir: PathBuf },
    #[error("the decapsulator is not attached to {ifname} (nothing pinned under {dir})")]
    NotAttached { ifname: String, dir: PathBuf },
    #[error(
        "{ifname} already has an XDP program that `xlb decap` did not attach (the balancer, or \
         another tool). Refusing to replace it; detach that one first: {source}"
    )]
    Busy {
        ifname: String,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("failed to load the decapsulator's eBPF object: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("the decapsulator's program: {0}")]
    Program(#[source] Box<aya::programs::ProgramError>),
    #[error(
        "cannot attach at tc ingress of {ifname}: {source}. The tc hook needs tcx links (Linux 6.6 or \
         later); on an older kernel use --hook xdp"
    )]
    Tcx {
        ifname: String,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("link {path}: {what}")]
    Link { path: PathBuf, what: String },
    #[error("cannot remove the pins under {dir}: {source}")]
    RemovePins {
        dir: PathBuf,
        #[source]
        source: Box<crate::datapath::DatapathError>,
    },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn map_err(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> DecapError {
    move |source| DecapError::Map { name, source }
}

fn prog_err(e: aya::programs::ProgramError) -> DecapError {
    DecapError::Program(Box::new(e))
}

/// The loaded decapsulator and typed handles on its maps.
pub struct Decap {
    ebpf: Ebpf,
    vips: HashMap<MapData, DecapVip, u8>,
    config: Array<MapData, DecapConfig>,
    stats: PerCpuArray<MapData, u64>,
}

/// The decapsulator's counters, summed over CPUs (index: `lb_common::decap_stat`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecapCounters(pub [u64; decap_stat::COUNT as usize]);

impl DecapCounters {
    pub fn get(&self, stat: u32) -> u64 {
        self.0[stat as usize]
    }

    /// Every counter with its name, in index order.
    pub fn named(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        decap_stat::NAMES.iter().copied().zip(self.0.iter().copied())
    }
}

impl Decap {
    /// Load the object; with `pin_dir`, its maps are pinned under `<pin_dir>/maps/` (fresh
    /// ones: `attach` clears stale pins first). `None`: no pins (tests).
    pub fn load(pin_dir: Option<&std::path::Path>) -> Result<Self> {
        if DECAP_OBJECT.is_empty() {
            return Err(DecapError::EmptyObject);
        }
        let mut loader = EbpfLoader::new();
        let pins: Vec<(&str, PathBuf)> = match pin_dir {
            Some(dir) => {
                let maps = dir.join("maps");
                std::fs::create_dir_all(&maps).map_err(|source| DecapError::Io {
                    what: "cannot create pin directory",
                    path: maps.clone(),
                    source,
                })?;
                DECAP_MAPS.iter().map(|name| (*name, maps.join(name))).collect()
            }
            None => Vec::new(),
        };
        for (name, path) in &pins {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader
            .load(DECAP_OBJECT)
            .map_err(|e| DecapError::Load(Box::new(e)))?;
        macro_rules! take {
            ($name:expr) => {{
                let map = ebpf.take_map($name).ok_or(DecapError::Map {
                    name: $name,
                    source: aya::maps::MapError::InvalidName {
                        name: $name.to_string(),
                    },
                })?;
                map.try_into().map_err(map_err($name))?
            }};
        }
        Ok(Decap {
            vips: take!(MAP_DECAP_VIPS),
            config: take!(MAP_DECAP_CONFIG),
            stats: take!(MAP_DECAP_STATS),
            ebpf,
        })
    }

    /// Decapsulate packets to these VIPs (added to those already set).
    pub fn add_vips(&mut self, vips: &[IpAddr]) -> Result<()> {
        if vips.len() > MAX_DECAP_VIPS as usize {
            return Err(DecapError::TooManyVips { count: vips.len() });
        }
        for vip in vips {
            self.vips
                .insert(vip_key(*vip), 1, 0)
                .map_err(map_err(MAP_DECAP_VIPS))?;
        }
        Ok(())
    }

    /// Strip GUE sent to UDP `port`; `None`: GUE is not stripped.
    pub fn set_gue_port(&mut self, port: Option<u16>) -> Result<()> {
        let value = DecapConfig {
            gue_port: port.unwrap_or(0).to_be(),
            _pad: [0; 2],
        };
        self.config.set(0, value, 0).map_err(map_err(MAP_DECAP_CONFIG))
    }

    pub fn counters(&self) -> Result<DecapCounters> {
        read_counters(&self.stats)
    }

    /// Run `hook`'s program on `frame` once (BPF_PROG_TEST_RUN): its verdict and the frame it
    /// left.
    pub fn test_run(&mut self, hook: Hook, frame: &[u8]) -> Result<(u32, Vec<u8>)> {
        let mut out = vec![0u8; frame.len() + 256];
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.data_out = Some(&mut out);
        let r = match hook {
            Hook::Xdp => self.xdp()?.test_run(opts),
            Hook::Tc => self.tc()?.test_run(opts),
        }
        .map_err(prog_err)?;
        out.truncate(r.data_size_out as usize);
        Ok((r.return_value, out))
    }

    /// The XDP program, loaded into the kernel on first use.
    pub(super) fn xdp(&mut self) -> Result<&mut Xdp> {
        let prog: &mut Xdp = self.typed(Hook::Xdp)?;
        if prog.fd().is_err() {
            prog.load().map_err(prog_err)?;
        }
        Ok(prog)
    }

    /// The tc program, loaded into the kernel on first use.
    pub(super) fn tc(&mut self) -> Result<&mut SchedClassifier> {
        let prog: &mut SchedClassifier = self.typed(Hook::Tc)?;
        if prog.fd().is_err() {
            prog.load().map_err(prog_err)?;
        }
        Ok(prog)
    }

    fn typed<'a, P>(&'a mut self, hook: Hook) -> Result<&'a mut P>
    where
        &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
    {
        self.ebpf
            .program_mut(hook.program())
            .ok_or_else(|| prog_err(aya::programs::ProgramError::NotLoaded))?
            .try_into()
            .map_err(prog_err)
    }
}

/// The key of `vip` in `MAP_DECAP_VIPS`.
fn vip_key(vip: IpAddr) -> DecapVip {
    DecapVip {
        addr: lb_common::addr_bytes(vip),
        family: lb_common::family_of(vip),
        _pad: [0; 3],
    }
}

fn read_counters<T: std::borrow::Borrow<MapData>>(stats: &PerCpuArray<T, u64>) -> Result<DecapCounters> {
    let mut c = DecapCounters::default();
    for (i, slot) in c.0.iter_mut().enumerate() {
        *slot = stats
            .get(&(i as u32), 0)
            .map_err(map_err(MAP_DECAP_STATS))?
            .iter()
            .sum();
    }
    Ok(c)
}
