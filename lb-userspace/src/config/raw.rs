//! The config file's shapes as serde reads them: every table refuses unknown keys, every
//! optional key is an `Option` (its default is applied in validation), durations and counts
//! are kept as written (`units`) so that their errors name the field.

use std::path::PathBuf;

use serde::Deserialize;

use super::{
    observe::RawObserve,
    units::{Dur, Size},
};

/// `take_observe(&mut self) -> RawObserve` for a table that has the passive-health keys (the
/// service's `health`, a server): the keys, taken out.
macro_rules! take_observe {
    ($table:ty) => {
        impl $table {
            pub(super) fn take_observe(&mut self) -> RawObserve {
                RawObserve {
                    observe: self.observe.take(),
                    error_limit: self.error_limit.take(),
                    on_error: self.on_error.take(),
                    fastinter: self.fastinter.take(),
                    downinter: self.downinter.take(),
                }
            }
        }
    };
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) global: RawGlobal,
    #[serde(default)]
    pub(super) service: Vec<RawService>,
    #[serde(default)]
    pub(super) peer: Vec<RawPeer>,
    pub(super) announce: Option<RawAnnounce>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAnnounce {
    pub(super) table: Option<u32>,
    pub(super) warmup: Option<Dur>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPeer {
    pub(super) name: String,
    pub(super) address: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGlobal {
    pub(super) interface: Option<String>,
    pub(super) admin_socket: Option<PathBuf>,
    pub(super) xdp_mode: Option<String>,
    pub(super) bpffs_dir: Option<PathBuf>,
    pub(super) metrics: Option<String>,
    pub(super) sweep_interval: Option<Dur>,
    pub(super) max_new_entries_per_cpu: Option<Size>,
    pub(super) peer_listen: Option<String>,
    pub(super) peer_key_file: Option<PathBuf>,
    #[serde(default)]
    pub(super) encap_source: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    pub(super) name: String,
    pub(super) vip: String,
    pub(super) protocol: Option<String>,
    pub(super) stick: Option<RawStick>,
    pub(super) redispatch: Option<bool>,
    pub(super) table_size: Option<u32>,
    pub(super) health: Option<RawHealth>,
    pub(super) forward: Option<String>,
    pub(super) gue_port: Option<u16>,
    pub(super) encap_source: Option<String>,
    #[serde(default)]
    pub(super) server: Vec<RawServer>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStick {
    pub(super) on: Option<String>,
    pub(super) size: Option<Size>,
    pub(super) expire: Option<Dur>,
    pub(super) ipv4_prefix: Option<u8>,
    pub(super) ipv6_prefix: Option<u8>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealth {
    #[serde(rename = "type")]
    pub(super) kind: Option<String>,
    pub(super) send: Option<String>,
    pub(super) expect: Option<u16>,
    pub(super) inter: Option<Dur>,
    pub(super) timeout: Option<Dur>,
    pub(super) rise: Option<u32>,
    pub(super) fall: Option<u32>,
    pub(super) port: Option<u16>,
    pub(super) host: Option<String>,
    pub(super) observe: Option<String>,
    pub(super) error_limit: Option<u32>,
    pub(super) on_error: Option<String>,
    pub(super) fastinter: Option<Dur>,
    pub(super) downinter: Option<Dur>,
}

take_observe!(RawHealth);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) name: String,
    pub(super) address: String,
    pub(super) weight: Option<u32>,
    pub(super) mac: Option<String>,
    pub(super) check_port: Option<u16>,
    pub(super) state: Option<String>,
    pub(super) interface: Option<String>,
    pub(super) observe: Option<String>,
    pub(super) error_limit: Option<u32>,
    pub(super) on_error: Option<String>,
    pub(super) fastinter: Option<Dur>,
    pub(super) downinter: Option<Dur>,
    pub(super) forward: Option<String>,
    pub(super) gue_port: Option<u16>,
}

take_observe!(RawServer);
