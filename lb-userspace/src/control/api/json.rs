//! `show stat json` and `show table [<service> [filter]] json`: the figures of `show stat` and
//! the entries of `show table` as JSON (serde_json), for programs. The shapes are ours (HAProxy's
//! `show stat json` is an array of typed fields per line; one object per thing reads better),
//! documented field by field on the types below. `version` changes when a field changes meaning
//! or goes away; new fields do not change it. The stats page (`/stats` on the metrics listener)
//! renders the document of `show stat json`.

use std::{collections::BTreeMap, collections::HashMap, io, path::Path, time::Instant};

use serde::Serialize;

use lb_common::{ServiceStats, StickEntry, StickKey};

use super::{ApiError, StatSnapshot, WalkError, read};
use crate::{
    balancer::{
        Svc,
        stick::{self, Filter},
    },
    config::{HealthKind, StickOn},
    control::metrics::SERVICE_COUNTERS,
    datapath::{coarse_now_ns, stick_maps::StickTables},
    health::{CheckStatus, Health},
};

/// The version of the shapes below.
pub const VERSION: u32 = 1;

/// `show stat json`: every service with its counters and its servers.
#[derive(Debug, Serialize)]
pub struct StatDoc {
    pub version: u32,
    /// Milliseconds since the agent started, when the figures were read. A rate is the
    /// difference of a counter between two documents over the difference of this.
    pub uptime_ms: u64,
    pub services: Vec<ServiceStat>,
}

#[derive(Debug, Serialize)]
pub struct ServiceStat {
    pub name: String,
    /// `ADDR:PORT` (`[ADDR]:PORT` for IPv6).
    pub vip: String,
    /// `tcp` or `udp`.
    pub protocol: &'static str,
    /// `UP` when at least one server is UP, else `DOWN`.
    pub status: &'static str,
    pub servers_up: usize,
    /// Sum of the weights of the UP servers.
    pub weight: u32,
    /// Whether a client pinned to a server that is down goes elsewhere.
    pub redispatch: bool,
    pub stick: StickStat,
    /// The data path's counters of the service (since it was loaded).
    pub counters: ServiceCounters,
    pub servers: Vec<ServerStat>,
}

#[derive(Debug, Serialize)]
pub struct StickStat {
    /// `src`, `src_port` or `none`.
    pub on: &'static str,
    /// Capacity of the service's table in the data path (0: it keeps none).
    pub size: u32,
    /// Entries in the table when the document was made (a walk of the table).
    pub used: usize,
    /// Seconds an idle entry lives (0: for ever).
    pub expire_s: u64,
}

/// The data path's counters of a service: an object of every counter the metrics show of it,
/// named as there without `xlb_service_` (`packets`, `bytes`, `stick_hits`, `stick_misses`,
/// `stick_inserts` — its new clients —, `stick_expired`, `redispatches`, `pinned_down`,
/// `no_backend`), in that order.
#[derive(Debug)]
pub struct ServiceCounters(pub ServiceStats);

impl Serialize for ServiceCounters {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(
            SERVICE_COUNTERS
                .iter()
                .map(|(name, _, field)| (name.trim_start_matches("xlb_service_"), field(&self.0))),
        )
    }
}

#[derive(Debug, Serialize)]
pub struct ServerStat {
    pub name: String,
    /// 1-based position in its service (`srv_id`, the `server_id` of stick entries).
    pub id: u32,
    pub address: String,
    /// `UP`, `DOWN`, `DRAIN` or `MAINT`: what the data path does with it.
    pub state: &'static str,
    /// `ready`, `drain` or `maint`: what the operator set.
    pub admin: &'static str,
    /// Weight in force, and the configured one.
    pub weight: u32,
    pub config_weight: u32,
    /// Seconds since its state last changed.
    pub last_change_s: u64,
    /// Its active health check; `null` when the service has none.
    pub check: Option<CheckStat>,
    /// Packets and bytes the data path sent to it.
    pub packets: u64,
    pub bytes: u64,
    /// Stick entries that pin a client to it.
    pub stick_entries: usize,
    /// Passive health counters: what the real traffic showed of the server, by counter name
    /// (`syn_sent`, `syn_retransmits`, `handshakes`; the stats page shows one column per name).
    pub passive: Option<BTreeMap<String, u64>>,
    /// Why it last went DOWN (`passive: …; confirmed by check: …`, or the check's reason);
    /// `null` if it never did.
    pub last_down: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct CheckStat {
    /// `passed` or `failed` (the latest check), `pending` before the first one ended.
    pub status: &'static str,
    /// `UP` or `DOWN`: what the checks concluded (after rise/fall).
    pub health: &'static str,
    /// HAProxy's `check_health` (0 to rise + fall - 1), and the thresholds.
    pub health_count: u32,
    pub rise: u32,
    pub fall: u32,
    /// The reason of the latest failed check, if one ever failed (kept after successes).
    pub last_failure: Option<String>,
    /// Latency of the latest check, in milliseconds.
    pub latency_ms: Option<f64>,
    /// Checks run.
    pub checks: u64,
}

/// `show table NAME [filter] json` (also each item of `show table json`, without `entries`).
#[derive(Debug, Serialize)]
pub struct TableHead<'a> {
    pub table: &'a str,
    /// `ip` or `ipv6`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Capacity of the service's table in the data path (0: it keeps none).
    pub size: u32,
    /// Entries in the table (all of them, whatever the filter).
    pub used: usize,
}

/// One entry of `show table NAME json`'s `entries`: `show table`'s fields.
#[derive(Debug, Serialize)]
pub struct EntryJson<'a> {
    /// `0x` and 12 hex digits, as in the text.
    pub id: String,
    pub key: String,
    /// Milliseconds left before it expires (0: never).
    pub exp_ms: u64,
    /// The server's `id` (0 and `-`: no server of the service).
    pub server_id: u32,
    pub server_key: &'a str,
}

impl<'a> From<stick::EntryView<'a>> for EntryJson<'a> {
    fn from(v: stick::EntryView<'a>) -> Self {
        EntryJson {
            id: format!("0x{:012x}", v.id),
            key: v.key,
            exp_ms: v.exp_ms,
            server_id: v.server_id,
            server_key: v.server_key,
        }
    }
}

/// The document of `show stat json`, from `snapshot`, `counts` (live stick entries per
/// (service id, backend id)) and each service's table capacity by service id.
pub fn stat_doc(
    snapshot: &StatSnapshot,
    capacity: impl Fn(u32) -> Option<u32>,
    counts: &HashMap<(u16, u32), usize>,
) -> StatDoc {
    let now = Instant::now();
    let services = snapshot
        .services
        .iter()
        .map(|(s, t, stats)| {
            let used_by = |backend: u32| counts.get(&(s.id as u16, backend)).copied().unwrap_or(0);
            let up = || s.servers.iter().filter(|v| v.state_word() == "UP");
            let checked = !matches!(s.cfg.health.kind, HealthKind::None);
            let servers = s
                .servers
                .iter()
                .zip(stats)
                .map(|(v, st)| ServerStat {
                    name: v.cfg.name.clone(),
                    id: v.puid,
                    address: v.cfg.address.to_string(),
                    state: v.state_word(),
                    admin: v.admin.as_str(),
                    weight: v.weight,
                    config_weight: v.cfg.weight,
                    last_change_s: now.saturating_duration_since(v.last_change).as_secs(),
                    check: checked
                        .then(|| check_stat(snapshot.checks.get(&(s.cfg.name.clone(), v.cfg.name.clone())))),
                    packets: st.stats.packets,
                    bytes: st.stats.bytes,
                    stick_entries: used_by(v.id),
                    // Passive health signals (the stats page shows a column per name).
                    passive: Some(
                        [
                            ("syn_sent", st.signals.syn_sent),
                            ("syn_retransmits", st.signals.syn_retransmits),
                            ("handshakes", st.signals.handshakes),
                        ]
                        .into_iter()
                        .map(|(k, n)| (k.to_string(), n))
                        .collect(),
                    ),
                    last_down: st.last_down.clone(),
                })
                .collect();
            ServiceStat {
                name: s.cfg.name.clone(),
                vip: s.cfg.vip.to_string(),
                protocol: s.cfg.protocol.as_str(),
                status: if up().next().is_some() { "UP" } else { "DOWN" },
                servers_up: up().count(),
                weight: up().map(|v| v.weight).sum(),
                redispatch: s.cfg.redispatch,
                stick: StickStat {
                    on: match s.cfg.stick.on {
                        StickOn::Src => "src",
                        StickOn::SrcPort => "src_port",
                        StickOn::None => "none",
                    },
                    size: capacity(s.id).unwrap_or(0),
                    used: counts
                        .iter()
                        .filter(|((svc, _), _)| *svc as u32 == s.id)
                        .map(|(_, n)| n)
                        .sum(),
                    expire_s: s.cfg.stick.expire.as_secs(),
                },
                counters: ServiceCounters(*t),
                servers,
            }
        })
        .collect();
    StatDoc {
        version: VERSION,
        uptime_ms: snapshot.uptime.as_millis() as u64,
        services,
    }
}

/// A server's check as the document shows it; `None`: no check has reported yet.
fn check_stat(c: Option<&CheckStatus>) -> CheckStat {
    let Some(c) = c else {
        return CheckStat {
            status: "pending",
            health: "DOWN",
            health_count: 0,
            rise: 0,
            fall: 0,
            last_failure: None,
            latency_ms: None,
            checks: 0,
        };
    };
    CheckStat {
        status: match &c.last_outcome {
            None => "pending",
            Some(o) if o.is_ok() => "passed",
            Some(_) => "failed",
        },
        health: match c.health {
            Health::Up => "UP",
            Health::Down => "DOWN",
        },
        health_count: c.haproxy_health(),
        rise: c.rise,
        fall: c.fall,
        last_failure: c.last_failure.clone(),
        latency_ms: c.last_latency.map(|l| l.as_secs_f64() * 1000.0),
        checks: c.checks,
    }
}

/// `show stat json` without the runtime API (the stats page's `/stats.json`, fetched every
/// few seconds by every open page): `snapshot` (read under the agent's lock) and `counts`,
/// the stick entries the sweeper counted at its last pass ([`AgentState::table_used_by_backend`]:
/// no table walk, figures at most one `sweep_interval` old). The tables pinned at `stick_pin`
/// are opened for their capacities only. The document ends with a newline.
///
/// [`AgentState::table_used_by_backend`]: crate::control::state::AgentState::table_used_by_backend
pub fn stat_json(
    snapshot: StatSnapshot,
    counts: &HashMap<(u16, u32), usize>,
    stick_pin: &Path,
) -> Result<Vec<u8>, ApiError> {
    let tables = stick::open_pinned(stick_pin).map_err(|e| ApiError::OpenTables {
        message: format!("{e:#}"),
    })?;
    let mut out = serde_json::to_vec(&stat_doc(&snapshot, |id| tables.capacity(id), counts))
        .expect("the document serializes");
    out.push(b'\n');
    Ok(out)
}

/// Writes the document of `show stat json` (walks every table: the runtime API's figures are
/// exact at the time of asking).
pub(super) fn write_stat(
    out: &mut dyn io::Write,
    snapshot: &StatSnapshot,
    tables: &StickTables,
) -> Result<(), WalkError> {
    let counts = stick::count(&read(tables.entries())?);
    serde_json::to_writer(&mut *out, &stat_doc(snapshot, |id| tables.capacity(id), &counts))
        .map_err(io::Error::from)?;
    Ok(out.write_all(b"\n")?)
}

/// Writes `show table json`: an array of each table's head (`table`, `type`, `size`, `used`).
pub(super) fn write_heads(
    out: &mut dyn io::Write,
    services: &[Svc],
    tables: &StickTables,
) -> Result<(), WalkError> {
    let mut heads = Vec::new();
    for s in services {
        heads.push(TableHead {
            table: &s.cfg.name,
            kind: stick::table_type(s),
            size: tables.capacity(s.id).unwrap_or(0),
            used: read(tables.entries_of(s.id))?.len(),
        });
    }
    serde_json::to_writer(&mut *out, &heads).map_err(io::Error::from)?;
    Ok(out.write_all(b"\n")?)
}

/// Writes `show table NAME [filter] json`: the table's head and its matching `entries`, made
/// one by one as they are written (a table of a million entries is never one string).
pub(super) fn write_table(
    out: &mut dyn io::Write,
    tables: &StickTables,
    svc: &Svc,
    filter: &Filter,
) -> Result<(), WalkError> {
    let all = read(tables.entries_of(svc.id))?;
    let size = tables.capacity(svc.id).unwrap_or(0);
    Ok(write_entries(out, &all, svc, size, filter, coarse_now_ns())?)
}

/// `show table NAME [filter] json` from `all` (every entry of the service's table, which holds
/// `size`) at `now_ns`.
fn write_entries(
    out: &mut dyn io::Write,
    all: &[(StickKey, StickEntry)],
    svc: &Svc,
    size: u32,
    filter: &Filter,
    now_ns: u64,
) -> io::Result<()> {
    let mine = stick::entries_of(all, svc);
    let head = serde_json::to_string(&TableHead {
        table: &svc.cfg.name,
        kind: stick::table_type(svc),
        size,
        used: mine.len(),
    })?;
    // The head's object, opened again to add the entries.
    out.write_all(head.trim_end_matches('}').as_bytes())?;
    out.write_all(b",\"entries\":[")?;
    let matching = mine.iter().filter(|(k, e)| filter.matches(svc, k, e));
    for (i, (k, e)) in matching.enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        serde_json::to_writer(&mut *out, &EntryJson::from(stick::view(svc, k, e, now_ns)))?;
    }
    out.write_all(b"]}\n")
}

#[cfg(test)]
#[path = "json_tests.rs"]
mod tests;
