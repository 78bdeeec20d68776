//! The data path's counters, summed over CPUs: global, per service and per backend, and the
//! global counters the agent derives from them.

use lb_common::{
    BackendStats, MAP_BACKEND_STATS, MAP_GLOBAL_STATS, MAP_PASSIVE_STATS, MAP_SERVICE_STATS, PassiveStats,
    ServiceStats,
    gstat::{self, Counter, Derived, Global},
};

use crate::datapath::{Datapath, Result, map_err};

impl Datapath {
    /// Global counters summed over CPUs. The data path counts only the events that belong to
    /// no service (passes, parse errors, ...) globally (`gstat::Counter`); per-service events
    /// live in the per-service counters and are summed in here (`gstat::Derived`), so the
    /// forwarding path touches two counter slots per packet instead of five.
    pub fn global_stats(&self) -> Result<GlobalStats> {
        let mut counted = [0u64; Counter::COUNT as usize];
        for (slot, c) in counted.iter_mut().zip(Counter::ALL) {
            let v = self
                .gstats
                .get(&c.index(), 0)
                .map_err(map_err(MAP_GLOBAL_STATS))?;
            *slot = v.iter().sum();
        }
        let mut t = ServiceStats::default();
        for id in 0..lb_common::MAX_SERVICES {
            t.add(&self.service_stats(id)?);
        }
        Ok(GlobalStats::derive(counted, &t))
    }

    pub fn service_stats(&self, id: u32) -> Result<ServiceStats> {
        let v = self.sstats.get(&id, 0).map_err(map_err(MAP_SERVICE_STATS))?;
        let mut s = ServiceStats::default();
        for c in v.iter() {
            s.add(c);
        }
        Ok(s)
    }

    pub fn backend_stats(&self, id: u32) -> Result<BackendStats> {
        let v = self.bstats.get(&id, 0).map_err(map_err(MAP_BACKEND_STATS))?;
        Ok(v.iter().fold(BackendStats::default(), |a, c| BackendStats {
            packets: a.packets + c.packets,
            bytes: a.bytes + c.bytes,
        }))
    }

    /// A backend's passive health signals (SYNs, retransmitted SYNs, handshakes) summed over
    /// CPUs; they count from the load of this program (they are not pinned).
    pub fn passive_stats(&self, id: u32) -> Result<PassiveStats> {
        let v = self.passive.get(&id, 0).map_err(map_err(MAP_PASSIVE_STATS))?;
        let mut s = PassiveStats::default();
        for c in v.iter() {
            s.add(c);
        }
        Ok(s)
    }
}

/// The global counters, summed over CPUs: those the data path counts (`MAP_GLOBAL_STATS`,
/// indexed by `gstat::Counter`) and those the agent derives from them and the per-service
/// counters (`gstat::Derived`). `show info` and metrics list both, by name (`shown`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GlobalStats {
    counted: [u64; Counter::COUNT as usize],
    derived: [u64; Derived::COUNT as usize],
}

impl GlobalStats {
    /// The derived counters from the data path's `counted` ones and the per-service sums `t`.
    /// The per-CPU counters are read one after another while packets keep arriving, so
    /// `packets` may be read before a `no_backend` or `redirect` that counts a later packet:
    /// the difference saturates at 0 instead of wrapping to 2^64.
    fn derive(counted: [u64; Counter::COUNT as usize], t: &ServiceStats) -> Self {
        let c = |i: Counter| counted[i.index() as usize];
        let mut derived = [0u64; Derived::COUNT as usize];
        let mut set = |d: Derived, v: u64| derived[d.index() as usize] = v;
        set(
            Derived::Rx,
            c(Counter::PassNotVip)
                + c(Counter::ParseError)
                + c(Counter::PassNotOurMac)
                + c(Counter::FragmentNoRecord)
                + t.packets,
        );
        set(
            Derived::Tx,
            t.packets
                .saturating_sub(t.no_backend)
                .saturating_sub(c(Counter::Redirect))
                .saturating_sub(c(Counter::EncapFibMiss))
                .saturating_sub(c(Counter::EncapNoHeadroom))
                .saturating_sub(c(Counter::EncapStageMissing)),
        );
        set(Derived::NoBackend, t.no_backend);
        set(Derived::StickHit, t.stick_hits);
        set(Derived::StickMiss, t.stick_misses);
        set(Derived::StickInsert, t.stick_inserts);
        set(Derived::StickExpired, t.stick_expired);
        set(Derived::Redispatch, t.redispatches);
        set(Derived::PinnedDown, t.pinned_down);
        GlobalStats { counted, derived }
    }

    /// One counter of either kind.
    pub fn get(&self, counter: impl Into<Global>) -> u64 {
        match counter.into() {
            Global::Counted(c) => self.counted[c.index() as usize],
            Global::Derived(d) => self.derived[d.index() as usize],
        }
    }

    /// Every global counter with its name, in the order the user sees them (`gstat::SHOWN`).
    pub fn shown(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        gstat::SHOWN.iter().map(|g| (g.name(), self.get(*g)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `packets` read before a `no_backend` and a `redirect` that count later packets (the
    /// per-CPU reads are not one snapshot): TX must stay 0, not wrap to about 2^64.
    #[test]
    fn tx_counter_saturates_when_later_counts_were_read_first() {
        let mut counted = [0u64; Counter::COUNT as usize];
        counted[Counter::Redirect.index() as usize] = 3;
        let t = ServiceStats {
            packets: 5,
            no_backend: 4,
            ..Default::default()
        };
        assert_eq!(GlobalStats::derive(counted, &t).get(Derived::Tx), 0);
        counted[Counter::Redirect.index() as usize] = 1;
        let g = GlobalStats::derive(
            counted,
            &ServiceStats {
                packets: 10,
                no_backend: 2,
                ..Default::default()
            },
        );
        assert_eq!(g.get(Derived::Tx), 7);
    }
}
