//! The runtime API: HAProxy's words, one command per line, one answer, then the connection
//! closes — so `echo "show table be_app" | socat /run/xlb/admin.sock -` works as users type it.
//!
//! Every answer ends with a newline; errors are one line. Nothing a client sends can stop the
//! agent: input is bounded, parsed strictly, and a failure is an answer, not a panic.

use std::{fmt::Write as _, net::IpAddr};

use lb_common::gstat;

use crate::{
    config::AdminState,
    datapath::coarse_now_ns,
    services::Balancer,
    stick_table::{self, Filter},
};

/// Longest command line accepted.
pub const MAX_LINE: usize = 4096;

pub const HELP: &str = "\
The following commands are valid at this level:
  help                                     : this message
  show info                                : report information about the running process
  show stat                                : report counters for each service and server (CSV)
  show servers state [<service>]           : dump servers state (HAProxy format, version 1)
  show peers                               : the peers sharing the stick tables, with counters
  show table [<service>]                   : report table usage stats or dump this table's contents
  show table <service> key <addr>          : show the entry of one client address
  show table <service> data.server_id eq <n> : show the entries pinned to one server
  clear table <service> [key <addr> | data.server_id eq <n>] : remove entries
  set server <service>/<server> state ready|drain|maint : change a server's administrative state
  set server <service>/<server> weight <0-256> : change a server's weight
  where <service> <addr>                   : which server a client goes to now, and why
";

/// Run one command line against the balancer; the answer to send back.
pub fn execute(b: &mut Balancer, line: &str) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    match run(b, &words) {
        Ok(out) => out,
        Err(e) => format!("{e}\n"),
    }
}

fn run(b: &mut Balancer, w: &[&str]) -> Result<String, String> {
    match w {
        [] => Err("Empty command. Type 'help' for the list of commands.".into()),
        ["help"] => Ok(HELP.into()),
        ["show", "info"] => Ok(show_info(b)),
        ["show", "peers"] => Ok(match &b.peers {
            Some(p) => p.show(),
            None => "# no [[peer]] configured\n".into(),
        }),
        ["show", "stat"] => show_stat(b),
        ["show", "servers", "state"] => show_servers_state(b, None),
        ["show", "servers", "state", name] => show_servers_state(b, Some(name)),
        ["show", "table"] => show_tables(b),
        ["show", "table", name, filter @ ..] => {
            let f = Filter::parse(filter)?;
            let svc = service(b, name)?;
            stick_table::show(&b.dp, svc, &f).map_err(|e| format!("cannot read the stick table: {e}"))
        }
        ["clear", "table", name, filter @ ..] => {
            let f = Filter::parse(filter)?;
            service(b, name)?;
            // Disjoint borrows: the service list to match entries, the data path to delete them.
            let Balancer { dp, services, .. } = b;
            let svc = services.iter().find(|s| s.cfg.name == *name).expect("checked above");
            let n = stick_table::clear(dp, svc, &f).map_err(|e| format!("cannot clear: {e}"))?;
            log::info!("clear table {name}: {n} entries removed");
            Ok(String::new())
        }
        ["set", "server", target, "state", st] => {
            let (s, v) = split_target(target)?;
            let state: AdminState = st
                .parse()
                .map_err(|_| format!("'{st}' is not a state; use ready, drain or maint."))?;
            match b.set_admin(s, v, state) {
                Ok(true) => Ok(String::new()),
                Ok(false) => Err(no_server(b, s, v)),
                Err(e) => Err(format!("failed to apply: {e}")),
            }
        }
        ["set", "server", target, "weight", n] => {
            let (s, v) = split_target(target)?;
            let weight: u32 = n
                .trim_end_matches('%')
                .parse()
                .ok()
                .filter(|w| *w <= 256)
                .ok_or_else(|| format!("'{n}' is not a weight; use an integer from 0 to 256."))?;
            match b.set_weight(s, v, weight) {
                Ok(true) => Ok(String::new()),
                Ok(false) => Err(no_server(b, s, v)),
                Err(e) => Err(format!("failed to apply: {e}")),
            }
        }
        ["set", "server", ..] => Err("'set server' expects '<service>/<server> state ready|drain|maint' or '<service>/<server> weight <n>'.".into()),
        ["where", name, addr] => {
            let a: IpAddr = addr.parse().map_err(|_| format!("'{addr}' is not an IPv4 or IPv6 address"))?;
            let svc = service(b, name)?;
            stick_table::where_is(&b.dp, svc, a).map_err(|e| format!("cannot read the data path: {e}"))
        }
        words => Err(format!(
            "Unknown command: '{}'. Type 'help' for the list of commands.",
            words.join(" ").chars().take(64).collect::<String>()
        )),
    }
}

fn split_target(t: &str) -> Result<(&str, &str), String> {
    t.split_once('/')
        .filter(|(s, v)| !s.is_empty() && !v.is_empty())
        .ok_or_else(|| format!("'{t}' must be written <service>/<server>."))
}

fn service<'a>(b: &'a Balancer, name: &str) -> Result<&'a crate::services::Svc, String> {
    b.service(name).ok_or_else(|| {
        let names: Vec<&str> = b.services.iter().map(|s| s.cfg.name.as_str()).collect();
        format!("No such table: '{name}'. Tables: {}.", names.join(", "))
    })
}

fn no_server(b: &Balancer, s: &str, v: &str) -> String {
    match b.service(s) {
        None => format!("No such backend: '{s}'."),
        Some(_) => format!("No such server: '{s}/{v}'."),
    }
}

fn show_tables(b: &Balancer) -> Result<String, String> {
    let all =
        b.dp.stick_entries()
            .map_err(|e| format!("cannot read the stick table: {e}"))?;
    let mut out = String::new();
    for s in &b.services {
        out.push_str(&stick_table::header(
            s,
            b.dp.stick_capacity_of(s.id).unwrap_or(0),
            stick_table::entries_of(&all, s).len(),
        ));
    }
    Ok(out)
}

/// HAProxy's `show servers state` (version 1): the columns that apply, in HAProxy's order.
/// srv_op_state: 0 stopped (down), 2 running. srv_admin_state bits: 0x01 forced maint,
/// 0x08 forced drain.
fn show_servers_state(b: &Balancer, only: Option<&str>) -> Result<String, String> {
    if let Some(n) = only {
        service(b, n)?;
    }
    let mut out = String::from(
        "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port\n",
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
            let _ = writeln!(
                out,
                "{} {} {} {} {} {op} {admin} {} {} {} 0 {cres} {} {cstate} 0 0 0 - {}",
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
            );
        }
    }
    Ok(out)
}

/// `show stat`: HAProxy's leading columns (pxname, svname, ... bin, status, weight) then ours.
fn show_stat(b: &Balancer) -> Result<String, String> {
    let mut out = String::from(
        "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,status,weight,act,lastchg,pkts,stick_used,stick_hits,stick_misses,stick_inserts,stick_expired,redispatches,pinned_down,no_backend,\n",
    );
    let all =
        b.dp.stick_entries()
            .map_err(|e| format!("cannot read the stick table: {e}"))?;
    for s in &b.services {
        let entries = stick_table::entries_of(&all, s);
        for v in &s.servers {
            let st = b.dp.backend_stats(v.id).map_err(|e| e.to_string())?;
            let used = entries.iter().filter(|(_, e)| e.backend == v.id).count();
            let _ = writeln!(
                out,
                "{},{},0,0,0,0,,{},{},0,{},{},{},{},{},{used},,,,,,,,",
                s.cfg.name,
                v.cfg.name,
                used,
                st.bytes,
                v.state_word(),
                v.weight,
                (v.state_word() == "UP") as u8,
                v.last_change.elapsed().as_secs(),
                st.packets,
            );
        }
        let t = b.dp.service_stats(s.id).map_err(|e| e.to_string())?;
        let up = s.servers.iter().filter(|v| v.state_word() == "UP").count();
        let _ = writeln!(
            out,
            "{},BACKEND,0,0,0,0,{},{},{},0,{},{},{up},{},{},{},{},{},{},{},{},{},{},",
            s.cfg.name,
            b.dp.stick_capacity_of(s.id).unwrap_or(0),
            t.stick_inserts,
            t.bytes,
            if up > 0 { "UP" } else { "DOWN" },
            s.servers
                .iter()
                .filter(|v| v.state_word() == "UP")
                .map(|v| v.weight)
                .sum::<u32>(),
            b.started.elapsed().as_secs(),
            t.packets,
            entries.len(),
            t.stick_hits,
            t.stick_misses,
            t.stick_inserts,
            t.stick_expired,
            t.redispatches,
            t.pinned_down,
            t.no_backend,
        );
    }
    Ok(out)
}

fn show_info(b: &Balancer) -> String {
    let mut out = String::new();
    let g = b.dp.global_stats().unwrap_or([0; gstat::COUNT as usize]);
    let used = b.dp.stick_entries().map(|v| v.len()).unwrap_or(0);
    let _ = writeln!(out, "Name: xlb");
    let _ = writeln!(out, "Version: {}", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(out, "Pid: {}", std::process::id());
    let _ = writeln!(out, "Uptime_sec: {}", b.started.elapsed().as_secs());
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
    for (i, name) in gstat::NAMES.iter().enumerate() {
        let _ = writeln!(out, "Xdp_{name}: {}", g[i]);
    }
    out
}

/// Error answers are one line and start with one of these words (the CLI's exit code).
const ERROR_STARTS: [&str; 10] = [
    "Unknown command",
    "Empty command",
    "No such",
    "'",
    "cannot",
    "failed",
    "unknown filter",
    "Command too long",
    "Timeout",
    "Internal error",
];

/// Whether `answer` to a command of `verb` is an error (`set` and `clear` answer nothing on
/// success, like HAProxy).
pub fn is_error_answer(verb: &str, answer: &str) -> bool {
    if matches!(verb, "set" | "clear") {
        return !answer.trim().is_empty();
    }
    answer.lines().count() == 1 && ERROR_STARTS.iter().any(|p| answer.starts_with(p))
}
