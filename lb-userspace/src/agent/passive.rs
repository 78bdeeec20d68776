//! Passive health in the agent: every `health::passive::READ_EVERY`, read the data path's
//! handshake signals of every service with an observed server (`observe = "layer4"`), hand
//! them to the detector, and pass each suspicion to the checker, which acts per `on_error`.
//! The counters are read under the lock on a blocking thread (one map read per backend).

use std::time::Instant;

use lb_common::PassiveStats;

use super::Shared;
use crate::{
    config,
    health::{
        Health, HealthChecker,
        passive::{Detector, Reading},
    },
};

/// One server of an observed service, as read under the lock.
struct Observed {
    server: String,
    id: u32,
    counters: PassiveStats,
    observe: config::Observe,
}

/// The detector and what it needs between rounds.
#[derive(Default)]
pub(super) struct PassiveWatch {
    detector: Detector,
}

impl PassiveWatch {
    /// One round: read, compare, suspect.
    pub(super) async fn round(&mut self, shared: &Shared, hc: &mut HealthChecker) {
        let s = shared.clone();
        let read = tokio::task::spawn_blocking(move || read_observed(&s)).await;
        let services = match read {
            Ok(v) => v,
            Err(e) => {
                log::warn!("passive health: reading the counters: {e}");
                return;
            }
        };
        let now = Instant::now();
        let names: Vec<&str> = services.iter().map(|(name, _)| name.as_str()).collect();
        self.detector.retain_services(&names);
        for (service, servers) in &services {
            let readings: Vec<Reading<'_>> = servers
                .iter()
                .map(|o| {
                    let status = hc.status(&(service.clone(), o.server.clone()));
                    let may = o.observe.layer4
                        && status.is_some_and(|st| st.health == Health::Up && st.suspicion.is_none());
                    Reading {
                        server: &o.server,
                        id: o.id,
                        counters: o.counters,
                        error_limit: may.then_some(o.observe.error_limit),
                    }
                })
                .collect();
            for s in self.detector.observe(now, service, &readings) {
                let Some(o) = servers.iter().find(|o| o.server == s.server) else {
                    continue;
                };
                let key = (service.clone(), s.server.clone());
                if hc.suspect(&key, o.observe.on_error, s.reason()) {
                    log::warn!(
                        "{service}/{}: {}; on_error = \"{}\"",
                        s.server,
                        s.reason(),
                        o.observe.on_error.as_str()
                    );
                }
            }
        }
    }
}

/// Every service with an observed server: its servers, their backend ids, counters and settings.
fn read_observed(shared: &Shared) -> Vec<(String, Vec<Observed>)> {
    let b = shared.lock().expect("balancer lock");
    b.services
        .iter()
        .filter(|svc| svc.servers.iter().any(|s| s.cfg.observe.layer4))
        .map(|svc| {
            let servers = svc
                .servers
                .iter()
                .filter_map(|s| {
                    let counters =
                        b.dp.passive_stats(s.id)
                            .map_err(|e| log::warn!("passive health: {}/{}: {e}", svc.cfg.name, s.cfg.name))
                            .ok()?;
                    Some(Observed {
                        server: s.cfg.name.clone(),
                        id: s.id,
                        counters,
                        observe: s.cfg.observe,
                    })
                })
                .collect();
            (svc.cfg.name.clone(), servers)
        })
        .collect()
}
