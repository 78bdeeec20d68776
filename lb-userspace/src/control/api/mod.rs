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

use std::{io, net::IpAddr, path::Path};

use lb_common::{StickEntry, StickKey};

use crate::{
    balancer::stick::{self, Filter},
    balancer::{Balancer, Svc},
    config::AdminState,
    control::{frontends::Frontends, state::AgentState},
    datapath::stick_maps::StickMapError,
};

mod error;
mod json;
mod passive;
mod stat;

use error::bad_argument;
pub use error::{ApiError, STATUS_REQUEST, split_status, status_line};
pub use json::stat_json;
pub use stat::{StatSnapshot, stat_snapshot};
use stat::{show_info, show_servers_state, show_stat};

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
