//! SIGHUP: load the file again and apply it, or refuse it and keep the running one.

use std::path::Path;

use anyhow::{Result, bail};

use super::Shared;
use crate::{
    balancer::CheckChanges,
    config::{self, Config},
};

pub(super) fn reload(path: &Path, current: &Config, shared: &Shared) -> Result<(Config, CheckChanges)> {
    let new = config::load(path)?;
    if new.global != current.global {
        bail!(
            "[global] changed ({}); restart the agent to apply it",
            describe_global_change(&current.global, &new.global)
        );
    }
    if new.announce != current.announce {
        bail!("[announce] changed; restart the agent to apply it");
    }
    config::check_interfaces(&new)?;
    let mut b = shared.lock().expect("balancer lock");
    let checks = b.apply(new.clone(), false)?;
    Ok((new, checks))
}

fn describe_global_change(a: &config::Global, b: &config::Global) -> String {
    let changed = [
        ("interface", a.interface != b.interface),
        ("admin_socket", a.admin_socket != b.admin_socket),
        ("bpffs_dir", a.bpffs_dir != b.bpffs_dir),
        ("xdp_mode", a.xdp_mode != b.xdp_mode),
        ("metrics", a.metrics != b.metrics),
        ("sweep_interval", a.sweep_interval != b.sweep_interval),
        (
            "max_new_entries_per_cpu",
            a.max_new_entries_per_cpu != b.max_new_entries_per_cpu,
        ),
        ("peer_listen", a.peer_listen != b.peer_listen),
        ("[[peer]]", a.peers != b.peers),
        ("peer_key_file", a.peer_key_file != b.peer_key_file),
    ];
    let what: Vec<&str> = changed
        .iter()
        .filter(|(_, c)| *c)
        .map(|(name, _)| *name)
        .collect();
    what.join(", ")
}
