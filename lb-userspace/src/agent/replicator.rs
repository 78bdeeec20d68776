//! The replicator: streams every stick entry the data path writes (its `XLB_INSERTS` ring) to
//! every peer's sender as it happens, in small batches, and notes them as held by the peers so
//! that the sweep does not send them again. Refreshes stay on the sweep (`sweeper`).

use std::{sync::Arc, time::Duration};

use lb_common::InsertRecord;
use tokio::sync::{broadcast, watch};

use super::Shared;
use crate::{control::peers, datapath::AsyncInserts};

/// A batch goes out once it holds this many lines...
const BATCH_LINES: usize = 256;
/// ...or this long after its first record arrived, whichever comes first.
const BATCH_WINDOW: Duration = Duration::from_millis(1);

/// Read the ring until the agent stops; with peers, send each batch of new entries to every
/// sender at once (as update lines, names from the balancer). Without peers the records are
/// only taken, so that the ring never fills (nor counts `insert_ring_full`) for nothing.
pub(super) async fn replicator(
    shared: Shared,
    mut inserts: AsyncInserts,
    replication: Option<(Arc<peers::Peers>, broadcast::Sender<peers::Batch>)>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut records: Vec<InsertRecord> = Vec::with_capacity(BATCH_LINES);
    loop {
        tokio::select! {
            r = inserts.next(&mut records, BATCH_LINES) => if let Err(e) = r {
                log::warn!("replicator: reading the data path's new entries: {e}; stopped (the sweep still replicates them)");
                return;
            },
            _ = shutdown.changed() => return,
        }
        let window = tokio::time::sleep(BATCH_WINDOW);
        tokio::pin!(window);
        while records.len() < BATCH_LINES {
            let room = BATCH_LINES - records.len();
            tokio::select! {
                r = inserts.next(&mut records, room) => if r.is_err() { break },
                _ = &mut window => break,
            }
        }
        let Some((list, batches)) = &replication else {
            records.clear();
            continue;
        };
        let entries: Vec<_> = records.drain(..).map(|r| (r.key, r.entry)).collect();
        let batch = peers::encode(&shared.lock().expect("balancer lock"), &entries);
        // No receiver (no sender connected yet) is not an error: the teach carries it.
        if batch.1 > 0 && batches.send(Arc::new(batch)).is_ok() {
            list.remember_streamed(&entries);
        }
    }
}
