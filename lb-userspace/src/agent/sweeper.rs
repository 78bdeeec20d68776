//! The sweeper: expiry, purge of retired servers' entries, and replication to the peers.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Result;
use tokio::sync::{Notify, broadcast, watch};

use super::Shared;
use crate::{balancer::stick, control::peers, control::state::AgentState, datapath};

/// Every `interval`, and at once after a reload that retired ids: delete idle and stale
/// entries (on its own map handle, in batches, off the async thread) and send the peers the
/// entries created or refreshed since the last pass that they do not hold yet (the
/// replicator streams new ones as they are made; this sends refreshes, and what a sender
/// missed).
pub(super) async fn sweeper(
    shared: Shared,
    state: Arc<AgentState>,
    stick_pin: PathBuf,
    interval: Duration,
    replication: Option<(Arc<peers::Peers>, broadcast::Sender<peers::Batch>)>,
    sweep_now: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut since = datapath::coarse_now_ns();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = sweep_now.notified() => {}
            _ = shutdown.changed() => return,
        }
        let policy = shared.lock().expect("balancer lock").sweep_policy();
        let pin = stick_pin.clone();
        let start = datapath::coarse_now_ns();
        // A sender that fell behind the stream missed entries made since then: this pass
        // sends every entry touched since, known to the peers or not.
        let missed = replication.as_ref().and_then(|(list, _)| list.take_missed());
        let touched_since = replication
            .as_ref()
            .map(|_| missed.map_or(since, |m| m.min(since)));
        let (s, p) = (shared.clone(), policy.clone());
        let r = tokio::task::spawn_blocking(move || -> Result<(stick::Swept, Duration)> {
            let t0 = Instant::now();
            let mut tables = stick::open_pinned(&pin)?;
            let current = || s.lock().expect("balancer lock").generation == p.generation;
            let swept = stick::sweep(
                &mut tables,
                &p,
                touched_since,
                10_000,
                std::thread::yield_now,
                current,
            )?;
            Ok((swept, t0.elapsed()))
        })
        .await;
        match r {
            Ok(Ok((swept, took))) => {
                if swept.deleted > 0 {
                    log::info!(
                        "sweeper: {} entries deleted of {} in {took:?} ({} of removed services or servers)",
                        swept.deleted,
                        swept.seen,
                        swept.stale
                    );
                }
                state.set_table_used(swept.used);
                if swept.purged {
                    shared.lock().expect("balancer lock").release_retired(&policy);
                }
                // The clock is coarse (a tick): overlap the windows by one so nothing falls
                // between two passes; an entry sent twice costs a line.
                since = start.saturating_sub(10_000_000);
                if let Some((list, batches)) = &replication {
                    let own = list.own_changes(swept.touched, missed.is_some());
                    if !own.is_empty() {
                        let batch = peers::encode(&shared.lock().expect("balancer lock"), &own);
                        let _ = batches.send(Arc::new(batch));
                    }
                }
            }
            Ok(Err(e)) => log::warn!("sweeper: {e:#}"),
            Err(e) => log::warn!("sweeper: {e}"),
        }
    }
}
