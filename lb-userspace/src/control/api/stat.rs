//! The runtime API's figures: `show servers state`, `show stat` (and what `show stat json` is
//! made from: [`StatSnapshot`]) and `show info`.

use std::{collections::HashMap, fmt::Write as _, time::Duration};

use lb_common::{BackendStats, PassiveStats, ServiceStats, StickEntry, StickKey};

use super::{ApiError, for_walk, passive, service};
use crate::{
    balancer::{Balancer, Svc, stick},
    config::AdminState,
    control::state::AgentState,
    datapath::{coarse_now_ns, stick_maps::StickTables},
    health::{CheckStatus, TargetKey},
};

/// HAProxy's `show servers state` (version 1): the columns that apply, in HAProxy's order.
/// srv_op_state: 0 stopped (down), 2 running. srv_admin_state bits: 0x01 forced maint,
/// 0x08 forced drain.
/// Then ours: passive health's counters and the last DOWN's reason (`passive`).
pub(super) fn show_servers_state(
    b: &Balancer,
    state: &AgentState,
    only: Option<&str>,
) -> Result<String, ApiError> {
    if let Some(n) = only {
        service(b, n)?;
    }
    let mut out = format!(
        "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port{}\n",
        passive::STATE_COLUMNS
    );
    for s in b.services.iter().filter(|s| only.is_none_or(|n| s.cfg.name == n)) {
        for v in &s.servers {
            let op = match v.state_word() {
                "DOWN" | "MAINT" => 0,
                _ => 2,
            };
            let admin = match v.admin {
                AdminState::Ready => 0,
                AdminState::Maint => 0x01,
                AdminState::Drain => 0x08,
            };
            let checks = !matches!(s.cfg.health.kind, crate::config::HealthKind::None);
            // check_result: 0 unknown, 2 failed, 3 passed; check_state: 0 disabled, 6 enabled+running.
            let (cres, cstate) = match (checks, v.health) {
                (false, _) => (0, 0),
                (true, crate::health::Health::Up) => (3, 6),
                (true, crate::health::Health::Down) => (2, 6),
            };
            let signals = b.dp.passive_stats(v.id).unwrap_or_default();
            let last_down = state
                .checks
                .get(&(s.cfg.name.clone(), v.cfg.name.clone()))
                .and_then(|c| c.last_down);
            let _ = writeln!(
                out,
                "{} {} {} {} {} {op} {admin} {} {} {} 0 {cres} {} {cstate} 0 0 0 - {}{}",
                s.id + 1,
                s.cfg.name,
                v.puid,
                v.cfg.name,
                v.cfg.address,
                v.weight,
                v.cfg.weight,
                v.last_change.elapsed().as_secs(),
                if v.health == crate::health::Health::Up {
                    s.cfg.health.rise + s.cfg.health.fall - 1
                } else {
                    0
                },
                s.cfg.vip.port(),
                passive::state_columns(&signals, last_down.as_deref()),
            );
        }
    }
    Ok(out)
}

/// What `show stat` needs from the balancer: each service with its counters and its servers'
/// (with their passive health signals and last DOWN's reason), the checks' status, the agent's
/// uptime.
pub struct StatSnapshot {
    pub(super) services: Vec<(Svc, ServiceStats, Vec<StatServer>)>,
    pub(super) checks: HashMap<TargetKey, CheckStatus>,
    pub(super) uptime: Duration,
}

/// One server's figures in `show stat`.
pub(super) struct StatServer {
    pub(super) stats: BackendStats,
    pub(super) signals: PassiveStats,
    pub(super) last_down: Option<String>,
}

/// Reads what `show stat` needs of `b` and `state` (per-CPU counters, no walk: for under the
/// agent's lock).
pub fn stat_snapshot(b: &Balancer, state: &AgentState) -> Result<StatSnapshot, ApiError> {
    let mut services = Vec::new();
    for s in &b.services {
        let servers = s
            .servers
            .iter()
            .map(|v| {
                Ok(StatServer {
                    stats: b.dp.backend_stats(v.id)?,
                    signals: b.dp.passive_stats(v.id)?,
                    last_down: state
                        .checks
                        .get(&(s.cfg.name.clone(), v.cfg.name.clone()))
                        .and_then(|c| c.last_down),
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| ApiError::Counters { source })?;
        let totals =
            b.dp.service_stats(s.id)
                .map_err(|source| ApiError::Counters { source })?;
        services.push((for_walk(s), totals, servers));
    }
    Ok(StatSnapshot {
        services,
        checks: state.checks.all().into_iter().collect(),
        uptime: state.started.elapsed(),
    })
}

/// `show stat`: HAProxy's leading columns (pxname, svname, ... bin, status, weight) then ours;
/// entry counts from `all` (every entry of the table).
pub(super) fn show_stat(
    snapshot: &StatSnapshot,
    tables: &StickTables,
    all: &[(StickKey, StickEntry)],
) -> String {
    let mut out = format!(
        "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,status,weight,act,lastchg,pkts,stick_used,stick_hits,stick_misses,stick_inserts,stick_expired,redispatches,pinned_down,no_backend,{}\n",
        passive::STAT_COLUMNS
    );
    let counts: HashMap<(u16, u32), usize> = stick::count(all);
    for (s, t, stats) in &snapshot.services {
        let used_by = |backend: u32| counts.get(&(s.id as u16, backend)).copied().unwrap_or(0);
        for (v, ss) in s.servers.iter().zip(stats) {
            let (used, st) = (used_by(v.id), &ss.stats);
            let _ = writeln!(
                out,
                "{},{},0,0,0,0,,{},{},0,{},{},{},{},{},{used},,,,,,,,{}",
                s.cfg.name,
                v.cfg.name,
                used,
                st.bytes,
                v.state_word(),
                v.weight,
                (v.state_word() == "UP") as u8,
                v.last_change.elapsed().as_secs(),
                st.packets,
                passive::stat_columns(&ss.signals, ss.last_down.as_deref()),
            );
        }
        let signals = stats.iter().fold(PassiveStats::default(), |mut a, ss| {
            a.add(&ss.signals);
            a
        });
        let entries: usize = counts
            .iter()
            .filter(|((svc, _), _)| *svc as u32 == s.id)
            .map(|(_, n)| n)
            .sum();
        let up = s.servers.iter().filter(|v| v.state_word() == "UP").count();
        let _ = writeln!(
            out,
            "{},BACKEND,0,0,0,0,{},{},{},0,{},{},{up},{},{},{},{},{},{},{},{},{},{},{}",
            s.cfg.name,
            tables.capacity(s.id).unwrap_or(0),
            t.stick_inserts,
            t.bytes,
            if up > 0 { "UP" } else { "DOWN" },
            s.servers
                .iter()
                .filter(|v| v.state_word() == "UP")
                .map(|v| v.weight)
                .sum::<u32>(),
            snapshot.uptime.as_secs(),
            t.packets,
            entries,
            t.stick_hits,
            t.stick_misses,
            t.stick_inserts,
            t.stick_expired,
            t.redispatches,
            t.pinned_down,
            t.no_backend,
            passive::stat_columns(&signals, None),
        );
    }
    out
}

/// `show info`. `StickTableUsed` is the count of the sweeper's last pass (at most
/// `sweep_interval` old, the figure the metrics show): counting here would walk the table.
pub(super) fn show_info(b: &Balancer, state: &AgentState) -> String {
    let mut out = String::new();
    let g = b.dp.global_stats().unwrap_or_default();
    let used = state.table_used_total();
    let _ = writeln!(out, "Name: xlb");
    let _ = writeln!(out, "Version: {}", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(out, "Pid: {}", std::process::id());
    let _ = writeln!(out, "Uptime_sec: {}", state.started.elapsed().as_secs());
    let _ = writeln!(out, "Interface: {}", b.cfg.global.interface);
    let _ = writeln!(out, "Services: {}", b.services.len());
    let _ = writeln!(
        out,
        "Servers: {}",
        b.services.iter().map(|s| s.servers.len()).sum::<usize>()
    );
    let _ = writeln!(out, "StickTableUsed: {used}");
    let _ = writeln!(out, "StickTableCapacity: {}", b.dp.stick_capacity());
    let _ = writeln!(out, "MonotonicCoarseNs: {}", coarse_now_ns());
    for (name, value) in g.shown() {
        let _ = writeln!(out, "Xdp_{name}: {value}");
    }
    out
}
