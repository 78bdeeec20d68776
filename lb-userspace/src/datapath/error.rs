//! What can go wrong with the data path: loading, pins, maps, links. Its own module so that
//! the pin checks (`pins`) and the data path's handle (`datapath`, which re-exports it) share
//! it without importing each other.

use std::path::PathBuf;

use lb_common::{MAGLEV_MAX_SIZE, VIP_PROBES, VIP_TABLE_SIZE};

use crate::datapath::stick_maps::StickMapError;

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    /// The interface to attach to, looked up on this host.
    #[error(transparent)]
    Interface(#[from] crate::net::link::LinkError),
    #[error(
        "this xlb binary carries no eBPF object (built with XLB_SKIP_EBPF=1); rebuild with `cargo xtask build`"
    )]
    EmptyObject,
    #[error(
        "the maps pinned under {path} do not match pin format {format}: {what}. Run the xlb \
         that wrote them, or `xlb detach -c FILE` to remove them (this empties the stick table)"
    )]
    PinMismatch {
        path: PathBuf,
        format: u64,
        what: String,
    },
    #[error("{what}")]
    Format { what: String },
    #[error(transparent)]
    Stick(Box<StickMapError>),
    #[error("service id {service} has no stick table")]
    NoStickTable { service: u32 },
    #[error("failed to load the eBPF object: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("program {name}: {source}")]
    Program {
        name: String,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("XDP link {path}: {what}")]
    Link { path: PathBuf, what: String },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{ifname} already has an XDP program that this xlb did not attach (no link pinned in its \
         bpffs_dir): another xlb with another bpffs_dir, or another tool. Refusing to replace it; \
         detach that one first: {source}"
    )]
    Busy {
        ifname: String,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("{0} VIP entries do not fit the VIP table ({VIP_TABLE_SIZE} slots, {VIP_PROBES} probes)")]
    VipTableFull(usize),
    #[error("service id {0} is out of range")]
    ServiceId(u32),
    #[error("Maglev table of {0} slots does not fit (at most {MAGLEV_MAX_SIZE})")]
    TableSize(usize),
}

impl From<StickMapError> for DatapathError {
    fn from(e: StickMapError) -> Self {
        DatapathError::Stick(Box::new(e))
    }
}
