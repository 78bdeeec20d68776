//! What the running agent knows besides the balancer model: when it started, the health
//! checker's live status, the peers and their counters, and how full the stick tables were at
//! the sweeper's last pass. The agent builds it once its tasks exist and is its only writer;
//! the runtime API and the metrics read it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Instant,
};

use crate::{
    control::{frontends::Frontends, peers::Peers},
    health::StatusView,
};

pub struct AgentState {
    /// When the agent started (`Uptime_sec`).
    pub started: Instant,
    /// Live health-check status of every checked server.
    pub checks: StatusView,
    /// The peers sharing the stick tables and their counters, if any are configured.
    pub peers: Option<Arc<Peers>>,
    /// The announcements, when `[announce]` is configured.
    pub frontends: Option<Arc<Frontends>>,
    /// Live stick entries per (service id, backend id), as of the sweeper's last pass. Readers
    /// must not walk the table themselves: at a million entries that takes seconds. A lock of
    /// its own, held only to copy or replace the map.
    table_used: Mutex<HashMap<(u16, u32), usize>>,
}

impl AgentState {
    pub fn new(
        started: Instant,
        checks: StatusView,
        peers: Option<Arc<Peers>>,
        frontends: Option<Arc<Frontends>>,
    ) -> Self {
        AgentState {
            started,
            checks,
            peers,
            frontends,
            table_used: Mutex::new(HashMap::new()),
        }
    }

    /// Something the announcements depend on may have changed: wake the announcer, if any.
    pub fn poke_announcer(&self) {
        if let Some(f) = &self.frontends {
            f.poke();
        }
    }

    /// Live stick entries of service `id` at the sweeper's last pass (0 before the first).
    pub fn table_used(&self, id: u16) -> usize {
        self.used()
            .iter()
            .filter(|((service, _), _)| *service == id)
            .map(|(_, n)| n)
            .sum()
    }

    /// Live stick entries of all services at the sweeper's last pass.
    pub fn table_used_total(&self) -> usize {
        self.used().values().sum()
    }

    /// Live stick entries per (service id, backend id) at the sweeper's last pass (the stats
    /// page's figures: a refresh walks no table).
    pub fn table_used_by_backend(&self) -> HashMap<(u16, u32), usize> {
        self.used().clone()
    }

    /// The sweeper's count of a pass, per (service id, backend id).
    pub fn set_table_used(&self, used: HashMap<(u16, u32), usize>) {
        *self.used() = used;
    }

    fn used(&self) -> std::sync::MutexGuard<'_, HashMap<(u16, u32), usize>> {
        // A panic while holding it cannot leave the map half-written: every write replaces it.
        self.table_used.lock().unwrap_or_else(|p| p.into_inner())
    }
}
