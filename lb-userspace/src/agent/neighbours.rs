//! The neighbour table followed: servers' MACs resolved at start, updated as they change,
//! and addresses without one probed again every second.
//!
//! Servers reached by encapsulation need no MAC of their own, but the data path sends to them
//! only through a next hop the kernel has a neighbour entry for; without one it passes the
//! packet (counted as `encap_fib_miss`), which the VIP's blackhole route then drops, and
//! nothing of that makes the kernel resolve the next hop. So they are probed at start, and
//! again within a second of any FIB miss.

use std::{sync::Arc, time::Duration};

use anyhow::Result;
use tokio::sync::watch;

use super::Shared;
use crate::{balancer::Balancer, control::state::AgentState, net::neigh};

/// The subscription to the neighbour table: its netlink connection (a task) and its changes.
pub(super) struct NeighbourWatch {
    conn: tokio::task::JoinHandle<()>,
    changes: neigh::Watch,
}

/// Subscribe to the neighbour table, spawn the subscription's connection, then dump the table
/// (in that order, so no change falls in between).
pub(super) async fn watch_neighbours() -> Result<(NeighbourWatch, neigh::Table)> {
    let (conn, changes) = neigh::subscribe()?;
    let conn = tokio::spawn(conn);
    let mut table = neigh::Table::default();
    for n in changes.dump().await? {
        table.update(&n);
    }
    Ok((NeighbourWatch { conn, changes }, table))
}

/// Before the agent serves: probe the addresses of servers without a MAC and take the answers
/// that come within a second (usually a millisecond), so a fresh agent starts with its servers
/// UP. Those still without one stay DOWN until their address resolves.
pub(super) async fn resolve_at_start(b: &mut Balancer, nw: &mut NeighbourWatch) -> Result<()> {
    // Routed servers' next hops: nothing to wait for (no server's state hangs on them), only
    // the kernel to set resolving before the first client comes.
    neigh::probe(&b.routed_addresses());
    let missing = b.unresolved();
    if missing.is_empty() {
        return Ok(());
    }
    neigh::probe(&missing.iter().map(|(_, a)| *a).collect::<Vec<_>>());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while !b.unresolved().is_empty() {
        match tokio::time::timeout_at(deadline, nw.changes.next()).await {
            Ok(Some(n)) => b.on_neighbour(&n)?,
            _ => break,
        }
    }
    for (server, addr) in b.unresolved() {
        log::warn!("{server}: no MAC for {addr} in the neighbour table yet; DOWN until it resolves");
    }
    Ok(())
}

/// Probe the addresses of servers without a MAC (the answers come through the neighbour
/// watch). Sending never blocks; it happens after the lock is released.
pub(super) fn probe_unresolved(shared: &Shared) {
    let missing = shared.lock().expect("balancer lock").unresolved();
    if !missing.is_empty() {
        neigh::probe(&missing.iter().map(|(_, a)| *a).collect::<Vec<_>>());
    }
}

/// Follow the neighbour table: each change goes to the balancer (a new MAC is written to the
/// backends at that address at once). Every second, addresses still without a MAC are probed
/// again. When the subscription ends (its socket failed, e.g. overflowed), subscribe again and
/// take a fresh dump, so no change stays missed.
pub(super) async fn follow_neighbours(
    shared: Shared,
    state: Arc<AgentState>,
    mut nw: NeighbourWatch,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut retry = tokio::time::interval(Duration::from_secs(1));
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Probe rounds each server without a MAC has been through: it is warned about at the fifth.
    let mut rounds: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
    // The data path's FIB misses at the last tick.
    let mut fib_misses = 0;
    loop {
        tokio::select! {
            change = nw.changes.next() => match change {
                Some(n) => {
                    if let Err(e) = shared.lock().expect("balancer lock").on_neighbour(&n) {
                        log::error!("neighbour {}: writing the new MAC failed: {e}", n.addr);
                    }
                    // A server's first MAC can bring it UP, and its VIP with it.
                    state.poke_announcer();
                }
                None => {
                    log::warn!("neighbour table: the netlink subscription ended; subscribing again");
                    nw.conn.abort();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    match resubscribe(&shared).await {
                        Ok(fresh) => nw = fresh,
                        Err(e) => {
                            log::error!("neighbour table: {e:#}; MACs no longer follow it until a restart");
                            return;
                        }
                    }
                }
            },
            _ = retry.tick() => {
                probe_routed_after_misses(&shared, &mut fib_misses);
                let missing = shared.lock().expect("balancer lock").unresolved();
                rounds.retain(|server, _| missing.iter().any(|(m, _)| m == server));
                if missing.is_empty() {
                    continue;
                }
                neigh::probe(&missing.iter().map(|(_, a)| *a).collect::<Vec<_>>());
                for (server, addr) in &missing {
                    let n = rounds.entry(server.clone()).or_default();
                    *n += 1;
                    if *n == 5 {
                        log::warn!("{server}: {addr} does not resolve (no neighbour entry); DOWN until it does");
                    }
                }
            }
            _ = shutdown.changed() => {
                nw.conn.abort();
                return;
            }
        }
    }
}

/// When the data path counted FIB misses since the last call (`fib_misses` holds the count),
/// probe the routed servers: the kernel resolves a next hop whose neighbour entry is missing
/// or failed when it has something to send through it. (Nothing else on the balancer need
/// send through it: the packets the data path passes are dropped by the VIP's route, and
/// health checks may be seconds apart or more.)
fn probe_routed_after_misses(shared: &Shared, fib_misses: &mut u64) {
    let (routed, misses) = {
        let b = shared.lock().expect("balancer lock");
        let routed = b.routed_addresses();
        if routed.is_empty() {
            return;
        }
        match b.encap_fib_misses() {
            Ok(m) => (routed, m),
            Err(e) => {
                log::debug!("reading encap_fib_miss: {e}");
                return;
            }
        }
    };
    if misses > *fib_misses {
        log::debug!(
            "{} FIB misses in the data path: probing the routed servers' next hops",
            misses - *fib_misses
        );
        neigh::probe(&routed);
    }
    *fib_misses = misses;
}

/// A new subscription, and every entry of the table now given to the balancer.
async fn resubscribe(shared: &Shared) -> Result<NeighbourWatch> {
    let (nw, table) = watch_neighbours().await?;
    let mut b = shared.lock().expect("balancer lock");
    for (addr, ifindex, mac) in table.entries() {
        b.on_neighbour(&neigh::Neighbour {
            addr,
            ifindex,
            mac: Some(mac),
        })?;
    }
    Ok(nw)
}
