//! The runtime API: HAProxy's words, one command per line, one answer, then the connection
//! closes — so `echo "show table be_app" | socat /run/xlb/admin.sock -` works as users type it.
//!
//! Every answer ends with a newline; errors are one line. Nothing a client sends can stop the
//! agent: input is bounded, parsed strictly, and a failure is an answer, not a panic.
//!
//! A command fails with an [`ApiError`]: its text is the answer, and its
//! [`exit_status`](ApiError::exit_status) is the `xlb` CLI's. A program (the CLI) that starts
//! its line with [`STATUS_REQUEST`] gets the same answer followed by one more line,
//! `@status <n>` (0: success), so it never has to guess from the text; people and `socat` see
//! the plain answer.
//!
//! A command runs in two steps so that no table walk holds the agent's lock: [`prepare`], under
//! the lock, does what needs the balancer (and all of a command that needs nothing else) and
//! copies out what a walk needs; [`Prepared::finish`], without the lock, walks the stick table
//! on a map handle of its own and writes the answer as it is made.

use std::{collections::HashMap, fmt::Write as _, io, net::IpAddr, path::Path, time::Duration};

use lb_common::{BackendStats, PassiveStats, ServiceStats, StickEntry, StickKey};

use crate::{
    balancer::stick::{self, Filter},
    balancer::{Balancer, Svc},
    config::AdminState,
    control::{frontends::Frontends, state::AgentState},
    datapath::coarse_now_ns,
    datapath::stick_maps::{StickMapError, StickTables},
    health::{CheckStatus, TargetKey},
};

mod error;
mod json;
mod passive;

use error::bad_argument;
pub use error::{ApiError, STATUS_REQUEST, split_status, status_line};
pub use json::stat_json;

/// Longest command line accepted.
pub const MAX_LINE: usize = 4096;

pub const HELP: &str = "\
The following commands are valid at this level:
  help                                     : this message
  show info                                : report information about the running process
  show stat                                : report counters for each service and server (CSV)
  show stat json                           : the same figures, with checks, as one JSON document
  show servers state [<service>]           : dump servers state (HAProxy format, version 1)
  show peers                               : the peers sharing the stick tables, with counters
  show table [<service>]                   : report table usage stats or dump this table's contents
  show table <service> key <addr>          : show the entry of one client address
  show table <service> data.server_id eq <n> : show the entries pinned to one server
  show table [<service> [<filter>]] json   : the same, as JSON
  clear table <service> [key <addr> | data.server_id eq <n>] : remove entries
  set server <service>/<server> state ready|drain|maint : change a server's administrative state
  set server <service>/<server> weight <0-256> : change a server's weight
  where <service> <addr>                   : which server a client goes to now, and why
  show frontends                           : each service's VIP: announced or not, and why
  disable frontend <service>               : withdraw the service's VIP (kept across restarts)
  enable frontend <service>                : announce it again
  disable announce                         : take this balancer out of the fleet: withdraw every VIP
  enable announce                          : bring it back
";

/// A command after [`prepare`]: what it does, and whether the client asked for the status line.
pub struct Prepared {
    command: Result<Command, ApiError>,
    status_line: bool,
}

/// What a command does once parsed.
enum Command {
    /// The whole answer.
    Answer(String),
    /// A walk of the stick table, with what it needs from the balancer.
    Walk(Box<Walk>),
}

/// A stick-table walk and the services it needs, copied out of the balancer under the lock.
pub enum Walk {
    /// `show table`: each table's header.
    Headers(Vec<Svc>),
    /// `show table NAME [filter]`.
    Show(Svc, Filter),
    /// `clear table NAME [filter]`.
    Clear(Svc, Filter),
    /// `show stat`.
    Stat(StatSnapshot),
    /// `show stat json`.
    StatJson(StatSnapshot),
    /// `show table json`.
    HeadersJson(Vec<Svc>),
    /// `show table NAME [filter] json`.
    ShowJson(Svc, Filter),
}

/// Parse one command line and do, under the balancer's lock, what needs the balancer. Quick:
/// no table walk.
pub fn prepare(b: &mut Balancer, state: &AgentState, line: &str) -> Prepared {
    let mut words: Vec<&str> = line.split_whitespace().collect();
    let status_line = words.first() == Some(&STATUS_REQUEST);
    if status_line {
        words.remove(0);
    }
    Prepared {
        command: run(b, state, &words),
        status_line,
    }
}

impl Prepared {
    /// Without the lock: walk the stick map pinned at `stick_pin` if the command needs it, and
    /// write the answer to `out` as it is made (then the status line, if asked for). An error
    /// of `out` (the client went away) stops the walk.
    pub fn finish(self, stick_pin: &Path, out: &mut dyn io::Write) -> io::Result<()> {
        let result = match self.command {
            Ok(Command::Answer(a)) => Ok(out.write_all(a.as_bytes())?),
            Ok(Command::Walk(w)) => match w.run(stick_pin, out) {
                Ok(()) => Ok(()),
                Err(WalkError::Out(e)) => return Err(e),
                Err(WalkError::Table(e)) => Err(e),
            },
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            writeln!(out, "{e}")?;
        }
        if self.status_line {
            out.write_all(status_line(&result).as_bytes())?;
        }
        Ok(())
    }
}

/// Why a walk stopped: the client's end failed, or the table could not be read (the answer).
enum WalkError {
    Out(io::Error),
    Table(ApiError),
}

impl From<io::Error> for WalkError {
    fn from(e: io::Error) -> Self {
        WalkError::Out(e)
    }
}

impl Walk {
    fn run(self, stick_pin: &Path, out: &mut dyn io::Write) -> Result<(), WalkError> {
        let mut tables = stick::open_pinned(stick_pin).map_err(|e| {
            WalkError::Table(ApiError::OpenTables {
                message: format!("{e:#}"),
            })
        })?;
        match self {
            Walk::Headers(services) => {
                for s in &services {
                    let n = read(tables.entries_of(s.id))?.len();
                    let size = tables.capacity(s.id).unwrap_or(0);
                    out.write_all(stick::header(s, size, n).as_bytes())?;
                }
            }
            Walk::Show(svc, filter) => {
                let size = tables.capacity(svc.id).unwrap_or(0);
                let all = read(tables.entries_of(svc.id))?;
                for line in stick::show(&all, &svc, size, &filter) {
                    out.write_all(line.as_bytes())?;
                }
            }
            Walk::Clear(svc, filter) => {
                let n = match tables.get_mut(svc.id) {
                    Some(t) => stick::clear(&mut t.map, &svc, &filter)
                        .map_err(|source| WalkError::Table(ApiError::Clear { source }))?,
                    None => 0,
                };
                log::info!("clear table {}: {n} entries removed", svc.cfg.name);
            }
            Walk::Stat(snapshot) => {
                let all = read(tables.entries())?;
                out.write_all(show_stat(&snapshot, &tables, &all).as_bytes())?
            }
            Walk::StatJson(snapshot) => json::write_stat(out, &snapshot, &tables)?,
            Walk::HeadersJson(services) => json::write_heads(out, &services, &tables)?,
            Walk::ShowJson(svc, filter) => json::write_table(out, &tables, &svc, &filter)?,
        }
        Ok(())
    }
}

/// Entries read from a table, or the answer saying why they could not be.
fn read(
    r: Result<Vec<(StickKey, StickEntry)>, StickMapError>,
) -> Result<Vec<(StickKey, StickEntry)>, WalkError> {
    r.map_err(|source| WalkError::Table(ApiError::ReadTable { source }))
}

/// A service as a walk needs it: names, ids and settings, without its Maglev table.
fn for_walk(s: &Svc) -> Svc {
    Svc {
        id: s.id,
        cfg: s.cfg.clone(),
        servers: s.servers.clone(),
        table: Vec::new(),
    }
}

fn run(b: &mut Balancer, state: &AgentState, w: &[&str]) -> Result<Command, ApiError> {
    let answer = |a: String| Ok(Command::Answer(a));
    let walk = |w: Walk| Ok(Command::Walk(Box::new(w)));
    match w {
        [] => Err(ApiError::Empty),
        ["help"] => answer(HELP.into()),
        ["show", "info"] => answer(show_info(b, state)),
        ["show", "peers"] => answer(match &state.peers {
            Some(p) => p.show(),
            None => "# no [[peer]] configured\n".into(),
        }),
        ["show", "stat"] => walk(Walk::Stat(stat_snapshot(b, state)?)),
        ["show", "stat", "json"] => walk(Walk::StatJson(stat_snapshot(b, state)?)),
        ["show", "servers", "state"] => answer(show_servers_state(b, state, None)?),
        ["show", "servers", "state", name] => answer(show_servers_state(b, state, Some(name))?),
        ["show", "table"] => walk(Walk::Headers(b.services.iter().map(for_walk).collect())),
        ["show", "table", "json"] => walk(Walk::HeadersJson(b.services.iter().map(for_walk).collect())),
        ["show", "table", name, filter @ .., "json"] => {
            let f = Filter::parse(filter).map_err(bad_argument)?;
            walk(Walk::ShowJson(for_walk(service(b, name)?), f))
        }
        ["show", "table", name, filter @ ..] => {
            let f = Filter::parse(filter).map_err(bad_argument)?;
            walk(Walk::Show(for_walk(service(b, name)?), f))
        }
        ["clear", "table", name, filter @ ..] => {
            let f = Filter::parse(filter).map_err(bad_argument)?;
            walk(Walk::Clear(for_walk(service(b, name)?), f))
        }
        ["set", "server", target, "state", st] => {
            let (s, v) = split_target(target)?;
            let state: AdminState = st
                .parse()
                .map_err(|_| bad_argument(format!("'{st}' is not a state; use ready, drain or maint.")))?;
            match b.set_admin(s, v, state) {
                Ok(true) => answer(String::new()),
                Ok(false) => Err(no_server(b, s, v)),
                Err(source) => Err(ApiError::Apply { source }),
            }
        }
        ["set", "server", target, "weight", n] => {
            let (s, v) = split_target(target)?;
            let weight: u32 = n
                .trim_end_matches('%')
                .parse()
                .ok()
                .filter(|w| *w <= 256)
                .ok_or_else(|| bad_argument(format!("'{n}' is not a weight; use an integer from 0 to 256.")))?;
            match b.set_weight(s, v, weight) {
                Ok(true) => answer(String::new()),
                Ok(false) => Err(no_server(b, s, v)),
                Err(source) => Err(ApiError::Apply { source }),
            }
        }
        ["set", "server", ..] => Err(bad_argument(
            "'set server' expects '<service>/<server> state ready|drain|maint' or '<service>/<server> weight <n>'.".into(),
        )),
        ["show", "frontends"] => answer(frontends(state)?.show(&b.services)),
        [verb @ ("disable" | "enable"), "frontend", name] => {
            let f = frontends(state)?;
            if b.service(name).is_none() {
                return Err(ApiError::NoSuchFrontend {
                    name: name.to_string(),
                    frontends: names(b),
                });
            }
            f.set_frontend_disabled(name, *verb == "disable")
                .map_err(|e| save_error(f, e))?;
            answer(String::new())
        }
        [verb @ ("disable" | "enable"), "announce"] => {
            let f = frontends(state)?;
            f.set_balancer_out(*verb == "disable").map_err(|e| save_error(f, e))?;
            answer(String::new())
        }
        ["where", name, addr] => {
            let a: IpAddr = addr
                .parse()
                .map_err(|_| bad_argument(format!("'{addr}' is not an IPv4 or IPv6 address")))?;
            let svc = service(b, name)?;
            stick::where_is(&b.dp, svc, a)
                .map(Command::Answer)
                .map_err(|source| ApiError::Datapath { source })
        }
        words => Err(ApiError::Unknown {
            command: words.join(" ").chars().take(64).collect(),
        }),
    }
}

fn split_target(t: &str) -> Result<(&str, &str), ApiError> {
    t.split_once('/')
        .filter(|(s, v)| !s.is_empty() && !v.is_empty())
        .ok_or_else(|| bad_argument(format!("'{t}' must be written <service>/<server>.")))
}

fn service<'a>(b: &'a Balancer, name: &str) -> Result<&'a crate::balancer::Svc, ApiError> {
    b.service(name).ok_or_else(|| ApiError::NoSuchTable {
        name: name.to_string(),
        tables: names(b),
    })
}

/// The services' names, for an error that lists them.
fn names(b: &Balancer) -> String {
    b.services
        .iter()
        .map(|s| s.cfg.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn frontends(state: &AgentState) -> Result<&Frontends, ApiError> {
    state.frontends.as_deref().ok_or(ApiError::NoAnnounce)
}

fn save_error(f: &Frontends, source: io::Error) -> ApiError {
    ApiError::SaveDisables {
        path: f.state_file().display().to_string(),
        source,
    }
}

fn no_server(b: &Balancer, s: &str, v: &str) -> ApiError {
    match b.service(s) {
        None => ApiError::NoSuchBackend {
            service: s.to_string(),
        },
        Some(_) => ApiError::NoSuchServer {
            service: s.to_string(),
            server: v.to_string(),
        },
    }
}

/// HAProxy's `show servers state` (version 1): the columns that apply, in HAProxy's order.
/// srv_op_state: 0 stopped (down), 2 running. srv_admin_state bits: 0x01 forced maint,
/// 0x08 forced drain.
/// Then ours: passive health's counters and the last DOWN's reason (`passive`).
fn show_servers_state(b: &Balancer, state: &AgentState, only: Option<&str>) -> Result<String, ApiError> {
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
    services: Vec<(Svc, ServiceStats, Vec<ServerFigures>)>,
    checks: HashMap<TargetKey, CheckStatus>,
    uptime: Duration,
}

/// One server's figures in `show stat`.
struct ServerFigures {
    stats: BackendStats,
    signals: PassiveStats,
    last_down: Option<String>,
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
                Ok(ServerFigures {
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
fn show_stat(snapshot: &StatSnapshot, tables: &StickTables, all: &[(StickKey, StickEntry)]) -> String {
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
fn show_info(b: &Balancer, state: &AgentState) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(command: Result<Command, ApiError>, status_line: bool) -> String {
        let mut out = Vec::new();
        Prepared { command, status_line }
            .finish(Path::new("/nonexistent"), &mut out)
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn an_error_is_its_one_line_answer_and_its_exit_status() {
        let e = ApiError::NoSuchTable {
            name: "nope".into(),
            tables: "be_app, dns".into(),
        };
        assert_eq!(e.to_string(), "No such table: 'nope'. Tables: be_app, dns.");
        assert_eq!(e.exit_status(), 1);
        // Plain clients (socat) get the text only.
        assert_eq!(
            finished(Err(ApiError::Empty), false),
            "Empty command. Type 'help' for the list of commands.\n"
        );
        assert_eq!(finished(Ok(Command::Answer("a\nb\n".into())), false), "a\nb\n");
        // The CLI gets the status line after it, and reads both back.
        let answer = finished(Err(e), true);
        assert_eq!(answer, "No such table: 'nope'. Tables: be_app, dns.\n@status 1\n");
        assert_eq!(
            split_status(&answer),
            Some(("No such table: 'nope'. Tables: be_app, dns.\n", 1))
        );
        let answer = finished(Ok(Command::Answer("a\nb\n".into())), true);
        assert_eq!(split_status(&answer), Some(("a\nb\n", 0)));
        // `set` answers nothing on success.
        let answer = finished(Ok(Command::Answer(String::new())), true);
        assert_eq!(answer, "@status 0\n");
        assert_eq!(split_status(&answer), Some(("", 0)));
    }
}
