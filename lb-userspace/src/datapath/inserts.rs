//! The reader of `MAP_INSERTS`: the ring in which the data path reports every stick entry it
//! writes (a new client, an expired entry replaced, a redispatch), one [`InsertRecord`] each.
//! [`Inserts`] drains it (tests, and the agent through [`AsyncInserts`], which waits on the
//! ring's descriptor without polling).

use std::os::fd::{AsRawFd, RawFd};

use aya::maps::{MapData, RingBuf};
use lb_common::{InsertRecord, MAP_INSERTS};
use tokio::io::unix::AsyncFd;

use crate::datapath::{Datapath, DatapathError, map_err, no_map};

/// The ring of new entries, taken from the loaded program (one reader per load).
pub struct Inserts {
    ring: RingBuf<MapData>,
    /// Records of a size other than [`InsertRecord`]'s (none from this program): skipped.
    pub malformed: u64,
}

impl Inserts {
    /// Append up to `max` records waiting in the ring to `out`; how many were appended.
    pub fn drain(&mut self, out: &mut Vec<InsertRecord>, max: usize) -> usize {
        let mut n = 0;
        while n < max {
            let Some(item) = self.ring.next() else { break };
            if item.len() != size_of::<InsertRecord>() {
                self.malformed += 1;
                continue;
            }
            // SAFETY: `item` holds exactly one `InsertRecord`'s bytes, and every bit pattern is
            // one (`aya::Pod`); read unaligned, so the ring's alignment does not matter.
            out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<InsertRecord>()) });
            n += 1;
        }
        n
    }
}

impl AsRawFd for Inserts {
    fn as_raw_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }
}

impl Datapath {
    /// The ring of new entries, for its one reader. Fails the second time (it was taken).
    pub fn take_inserts(&mut self) -> Result<Inserts, DatapathError> {
        let map = self.ebpf.take_map(MAP_INSERTS).ok_or(no_map(MAP_INSERTS))?;
        Ok(Inserts {
            ring: RingBuf::try_from(map).map_err(map_err(MAP_INSERTS))?,
            malformed: 0,
        })
    }
}

/// [`Inserts`] on the tokio runtime: waits until the data path has written a record.
pub struct AsyncInserts(AsyncFd<Inserts>);

impl AsyncInserts {
    /// Must be called on a tokio runtime with I/O enabled.
    pub fn new(inserts: Inserts) -> std::io::Result<AsyncInserts> {
        // SAFETY: the descriptor is the ring map's, owned by `inserts`, which the `AsyncFd`
        // owns from here on: it is neither closed nor replaced while registered.
        Ok(AsyncInserts(unsafe { AsyncFd::register(inserts)? }))
    }

    /// Wait for records, then append up to `max` of them to `out` (at least one).
    pub async fn next(&mut self, out: &mut Vec<InsertRecord>, max: usize) -> std::io::Result<usize> {
        loop {
            let mut ready = self.0.readable_mut().await?;
            let n = ready.get_inner_mut().drain(out, max);
            if n > 0 {
                return Ok(n);
            }
            ready.clear_ready();
        }
    }

    /// Append what is waiting now, up to `max`, without waiting.
    pub fn drain(&mut self, out: &mut Vec<InsertRecord>, max: usize) -> usize {
        self.0.get_mut().drain(out, max)
    }

    /// Records skipped as malformed so far.
    pub fn malformed(&self) -> u64 {
        self.0.get_ref().malformed
    }
}
