//! What the control group's servers ask of the agent: work under the balancer's lock, which the
//! agent alone takes, each job on a blocking thread so the runtime thread never waits for it.

use std::{future::Future, path::PathBuf, sync::Arc};

use super::Shared;
use crate::{
    balancer::stick,
    control::{api, metrics, peers, state::AgentState},
};

pub(super) struct Hooks {
    pub shared: Shared,
    pub state: Arc<AgentState>,
    /// The stick map's pin, for walks on a map handle of their own (without the lock).
    pub stick_pin: PathBuf,
}

impl peers::Agent for Hooks {
    fn teach(&self) -> tokio::sync::mpsc::Receiver<peers::Batch> {
        // Two pieces in flight: the walk stays a little ahead of the connection.
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let (shared, pin) = (self.shared.clone(), self.stick_pin.clone());
        tokio::task::spawn_blocking(move || {
            let walked = stick::read_in_chunks(&pin, |entries| {
                let piece = peers::encode(&shared.lock().expect("balancer lock"), entries);
                // A closed channel: the connection ended; stop walking.
                tx.blocking_send(Arc::new(piece)).is_ok()
            });
            if let Err(e) = walked {
                log::warn!("peers: reading the stick table: {e:#}");
            }
        });
        rx
    }

    fn apply_lines(
        &self,
        peers: Arc<peers::Peers>,
        index: usize,
        lines: Vec<String>,
    ) -> impl Future<Output = Option<String>> + Send {
        let shared = self.shared.clone();
        let job = tokio::task::spawn_blocking(move || {
            peers::apply_lines(&mut shared.lock().expect("balancer lock"), &peers, index, &lines)
        });
        async move { job.await.unwrap_or(None) }
    }
}

impl metrics::Agent for Hooks {
    fn snapshot(&self) -> impl Future<Output = metrics::Snapshot> + Send {
        let (shared, state) = (self.shared.clone(), self.state.clone());
        let job = tokio::task::spawn_blocking(move || {
            metrics::Snapshot::read(&shared.lock().expect("balancer lock"), &state)
        });
        async move { job.await.unwrap_or_default() }
    }

    fn stat_json(&self) -> impl Future<Output = Result<Vec<u8>, String>> + Send {
        let (shared, state, pin) = (self.shared.clone(), self.state.clone(), self.stick_pin.clone());
        let job = tokio::task::spawn_blocking(move || {
            let snapshot = api::stat_snapshot(&shared.lock().expect("balancer lock"), &state);
            api::stat_json(snapshot?, &state.table_used_by_backend(), &pin)
        });
        async move {
            match job.await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(e) => Err(format!("making the document failed: {e}")),
            }
        }
    }
}
