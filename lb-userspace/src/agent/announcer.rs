//! The announcer (with `[announce]`): keeps one route per announced VIP in the configured
//! table (`net::route`), which the operator's BIRD exports by BGP. It recomputes the verdicts
//! (`balancer::announce`) whenever it is poked — after a health transition, a runtime-API
//! command (`set server`, `disable frontend`, ...), a reload — when the warm-up ends, and when
//! the peers' full-teach count changes; it writes only what changed. Every `RECONCILE` it also
//! reads the table back, so a route removed underneath it is put back.
//!
//! Routes of xlb's protocol already in the table at start (a previous agent's) are kept while
//! the agent warms up, when their service is otherwise ready, so a restart neither withdraws nor
//! re-announces anything; once warm, the table is reconciled with the verdicts. An agent that
//! stops (SIGTERM) or is killed leaves the routes as they are, like the data path; `xlb detach`
//! removes them ([`detach`]).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use tokio::{sync::watch, task::JoinHandle};

use super::{Shared, instance_lock::lock_path};
use crate::{
    balancer::announce::{self, Verdict},
    config::Config,
    control::frontends::Frontends,
    net::{
        link,
        route::{self, RTPROT_XLB, RouteError},
    },
};

/// How long after a failed route change the announcer tries again.
const RETRY: Duration = Duration::from_secs(1);

/// How often the announcer reads the table back from the kernel even when nothing changed:
/// routes can vanish underneath it (the kernel deletes a table's routes through an interface
/// set down; an operator's `ip route flush`), and one read puts them back.
const RECONCILE: Duration = Duration::from_secs(2);

/// Where the operator's disables are kept (see `control::frontends`): next to the instance
/// lock of the pins under `bpffs_dir`.
pub fn state_path(bpffs_dir: &Path) -> PathBuf {
    lock_path(bpffs_dir).with_extension("announce")
}

/// The announcements of an agent started at `started` (None without `[announce]`), with the
/// operator's disables read back; `taught`: the peers' full-teach count.
pub(super) fn frontends(
    cfg: &Config,
    started: Instant,
    taught: watch::Receiver<usize>,
) -> Result<Option<Arc<Frontends>>> {
    let Some(a) = &cfg.announce else {
        return Ok(None);
    };
    let file = state_path(&cfg.global.bpffs_dir);
    let f = Frontends::new(a, started, cfg.global.peers.len(), taught, file.clone())
        .with_context(|| format!("cannot read the announcements' disables from {}", file.display()))?;
    Ok(Some(Arc::new(f)))
}

/// Start the announcer of `frontends`, whose routes go through the XDP interface.
pub(super) fn spawn(
    cfg: &Config,
    shared: Shared,
    frontends: Arc<Frontends>,
    shutdown: watch::Receiver<bool>,
) -> Result<JoinHandle<()>> {
    let ifindex = link::lookup(&cfg.global.interface)?.index;
    Ok(tokio::spawn(announcer(shared, frontends, ifindex, shutdown)))
}

/// The routes of the table as the announcer knows them.
struct Routes {
    table: u32,
    /// The interface of the routes (the XDP one).
    ifindex: u32,
    /// xlb's routes in the table: address -> output interface. `None`: unknown (at start, or
    /// after a failure), read from the kernel at the next pass.
    present: Option<BTreeMap<IpAddr, u32>>,
}

impl Routes {
    /// Make the table hold the routes `verdicts` call for; returns the addresses routed.
    fn pass(&mut self, verdicts: &[Verdict]) -> Result<BTreeSet<IpAddr>, RouteError> {
        let mut present = match self.present.take() {
            Some(p) => p,
            None => route::list(self.table)?
                .into_iter()
                .map(|r| (r.dst, r.ifindex))
                .collect(),
        };
        let want = announce::routes(verdicts, &present.keys().copied().collect());
        let stale: Vec<IpAddr> = present.keys().filter(|a| !want.contains(a)).copied().collect();
        for addr in stale {
            route::delete(self.table, addr)?;
            present.remove(&addr);
            let why = verdicts
                .iter()
                .find(|v| v.vip == addr)
                .and_then(|v| v.why_not)
                .map_or("no service has this address".to_string(), |w| w.to_string());
            log::warn!("announce: {addr} withdrawn (table {}): {why}", self.table);
        }
        for &addr in &want {
            if present.get(&addr) != Some(&self.ifindex) {
                route::replace(self.table, addr, self.ifindex)?;
                present.insert(addr, self.ifindex);
                log::info!("announce: {addr} announced (table {})", self.table);
            }
        }
        self.present = Some(present);
        Ok(want)
    }
}

/// Runs until the agent stops. `ifindex`: the XDP interface, the routes' device.
async fn announcer(
    shared: Shared,
    frontends: Arc<Frontends>,
    ifindex: u32,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut taught = frontends.taught();
    let mut taught_open = true;
    let mut routes = Routes {
        table: frontends.table,
        ifindex,
        present: None,
    };
    loop {
        let verdicts = frontends.verdicts(&shared.lock().expect("balancer lock").services);
        // Netlink round trips: on a blocking thread, without the lock.
        let (r, result) = tokio::task::spawn_blocking(move || {
            let result = routes.pass(&verdicts);
            (routes, result)
        })
        .await
        .expect("a route pass does not panic");
        routes = r;
        let failed = match result {
            Ok(routed) => {
                frontends.set_routed(routed);
                false
            }
            Err(e) => {
                log::error!("announce: {e}; trying again in {RETRY:?}");
                true
            }
        };
        let warm_at = frontends.warm_deadline();
        tokio::select! {
            _ = frontends.poked() => {}
            _ = tokio::time::sleep_until(warm_at.unwrap_or_else(std::time::Instant::now).into()), if warm_at.is_some() => {}
            r = taught.changed(), if taught_open => taught_open = r.is_ok(),
            _ = tokio::time::sleep(RETRY), if failed => {}
            _ = tokio::time::sleep(RECONCILE) => routes.present = None,
            _ = shutdown.changed() => return,
        }
    }
}

/// `xlb detach` (with `[announce]`): remove every route of xlb's protocol from the table, and
/// the operator's disables, and say so.
pub(super) fn detach(cfg: &Config) -> Result<()> {
    let Some(a) = &cfg.announce else {
        return Ok(());
    };
    let routes = route::list(a.table)?;
    for r in &routes {
        route::delete(a.table, r.dst)?;
    }
    let _ = std::fs::remove_file(state_path(&cfg.global.bpffs_dir));
    println!(
        "xlb: {} VIP routes (proto {RTPROT_XLB}) removed from table {}",
        routes.len(),
        a.table
    );
    Ok(())
}
