//! haproxy.cfg's sections read into proxies: `global`, `defaults` (inherited by the proxies
//! after them, or by name with `from`), `frontend`, `backend`, `listen` and `peers`. Each
//! keyword xlb can carry is kept with its line; every other one is warned about here, once,
//! where it is written.

mod keywords;
mod model;
mod server;

use std::{collections::HashMap, time::Duration};

pub(super) use model::{At, Check, Haproxy, Kind, PeerMember, Peers, Proxy, ServerParams, StickTable};
use model::{ServerLine, UseBackend, at};

use super::{
    lexer::Line,
    warnings::{HTTP, TLS, Warnings, not_carried},
};

/// Where the lines being read go.
enum Section {
    None,
    Global,
    Proxy(Box<Proxy>),
    Peers(Peers),
    /// A section kind xlb has no use for (resolvers, userlist, …): its lines are skipped.
    Skipped,
}

/// Read the statements of haproxy.cfg.
pub(super) fn read(lines: &[Line], warn: &mut Warnings) -> Haproxy {
    let mut out = Haproxy::default();
    let mut defaults = Proxy::default();
    let mut named: HashMap<String, Proxy> = HashMap::new();
    let mut section = Section::None;
    for line in lines {
        let key = line.word(0);
        if SECTIONS.contains(&key) {
            // The section before is stored first: a `defaults` applies to the very next proxy.
            close(
                std::mem::replace(&mut section, Section::None),
                &mut out,
                &mut defaults,
                &mut named,
            );
            section = header(line, &defaults, &named, warn);
            continue;
        }
        match &mut section {
            Section::None => warn.at(line.number, format!("`{key}` outside any section; ignored")),
            Section::Global if key == "localpeer" => out.localpeer = at(line.word(1).to_string(), line),
            Section::Global => warn.at(line.number, not_carried("global", &line.words)),
            Section::Proxy(p) => proxy_line(p, line, warn),
            Section::Peers(p) => peers_line(p, line, warn),
            Section::Skipped => {}
        }
    }
    close(section, &mut out, &mut defaults, &mut named);
    out
}

/// The keywords that open a section.
const SECTIONS: [&str; 19] = [
    "global",
    "defaults",
    "frontend",
    "backend",
    "listen",
    "peers",
    "userlist",
    "resolvers",
    "mailers",
    "cache",
    "program",
    "http-errors",
    "ring",
    "log-forward",
    "fcgi-app",
    "crt-store",
    "traces",
    "acme",
    "dynamic-update",
];

/// The section `line` (a line starting with one of `SECTIONS`) opens.
fn header(line: &Line, defaults: &Proxy, named: &HashMap<String, Proxy>, warn: &mut Warnings) -> Section {
    let kind = match line.word(0) {
        "global" => return Section::Global,
        "defaults" => Kind::Defaults,
        "frontend" => Kind::Frontend,
        "backend" => Kind::Backend,
        "listen" => Kind::Listen,
        "peers" => {
            return Section::Peers(Peers {
                name: line.word(1).to_string(),
                line: line.number,
                ..Peers::default()
            });
        }
        k => {
            warn.at(
                line.number,
                format!("`{k}` section not carried: {}", skipped_section_reason(k)),
            );
            return Section::Skipped;
        }
    };
    // `defaults [NAME] [from DEFAULTS]`, `frontend NAME [from DEFAULTS]`, old `listen NAME ADDR:PORT`.
    let mut words = line.words[1..].iter();
    let mut name = String::new();
    // A `defaults` starts afresh (HAProxy resets the settings at each one) unless `from` names one.
    let fresh = Proxy::default();
    let mut base = if kind == Kind::Defaults { &fresh } else { defaults };
    let mut bind = None;
    while let Some(w) = words.next() {
        if w == "from" {
            let from = words.next().map_or("", String::as_str);
            match named.get(from) {
                Some(d) => base = d,
                None => warn.at(
                    line.number,
                    format!("no defaults section named \"{from}\" before this line"),
                ),
            }
        } else if name.is_empty() {
            name = w.clone();
        } else {
            bind = Some(w.clone());
        }
    }
    let mut p = base.clone();
    p.kind = kind;
    p.name = name;
    p.line = line.number;
    p.binds.extend(bind.into_iter().flat_map(|b| addresses(&b, line)));
    if kind == Kind::Frontend {
        // A frontend holds no servers: a `default-server` in the defaults is for backends.
        p.default_server = ServerParams::default();
    }
    Section::Proxy(Box::new(p))
}

fn skipped_section_reason(kind: &str) -> &'static str {
    match kind {
        "resolvers" => "xlb needs each server's IP address; write it on the `server` line",
        "userlist" | "cache" | "http-errors" | "fcgi-app" => HTTP,
        "crt-store" | "acme" => TLS,
        _ => "xlb has no equivalent",
    }
}

/// Store the section just read.
fn close(section: Section, out: &mut Haproxy, defaults: &mut Proxy, named: &mut HashMap<String, Proxy>) {
    match section {
        Section::Proxy(p) if p.kind == Kind::Defaults => {
            if !p.name.is_empty() {
                named.insert(p.name.clone(), (*p).clone());
            }
            *defaults = *p;
        }
        Section::Proxy(p) => out.proxies.push(*p),
        Section::Peers(p) => out.peers.push(p),
        Section::None | Section::Global | Section::Skipped => {}
    }
}

/// The addresses of a `bind` word: `A:P[,A:P…]`.
fn addresses(word: &str, line: &Line) -> Vec<At<String>> {
    word.split(',')
        .filter(|a| !a.is_empty())
        .filter_map(|a| at(a.to_string(), line))
        .collect()
}

/// One statement of a proxy section.
fn proxy_line(p: &mut Proxy, line: &Line, warn: &mut Warnings) {
    let n = line.number;
    let w = |i| line.word(i);
    let where_ = p.kind.as_str();
    match w(0) {
        "mode" => {
            p.mode_http = (w(1) == "http").then_some(n);
        }
        "bind" => {
            p.binds.extend(addresses(w(1), line));
            if line.words.len() > 2 {
                let options = line.words[2..].join(" ");
                let tls = [
                    "ssl",
                    "crt",
                    "crt-list",
                    "alpn",
                    "ciphers",
                    "ciphersuites",
                    "ca-file",
                    "verify",
                ];
                let reason = if line.words[2..].iter().any(|o| tls.contains(&o.as_str())) {
                    TLS
                } else {
                    "an xlb VIP is an address and a port; socket options do not apply"
                };
                warn.at(n, format!("bind options `{options}` not carried: {reason}"));
            }
        }
        "default_backend" => p.default_backend = at(w(1).to_string(), line),
        "use_backend" => p.use_backends.push(UseBackend {
            name: w(1).to_string(),
            line: n,
            conditional: matches!(w(2), "if" | "unless"),
        }),
        "balance" => p.balance = at(line.words[1..].to_vec(), line),
        "hash-type" => p.hash_consistent = line.words.iter().any(|x| x == "consistent").then_some(n),
        "option" => keywords::option(p, line, warn),
        "no" if w(1) == "option" && w(2) == "redispatch" => p.redispatch = at(false, line),
        // `no option X` turns off what xlb does not do anyway.
        "no" => {}
        "http-check" => keywords::http_check(p, line, warn),
        "tcp-check" => warn.at(
            n,
            format!(
                "`{}` not carried: xlb's TCP check is a connect, without a send/expect sequence",
                line.text()
            ),
        ),
        "timeout" if w(1) == "check" => match haproxy_time(w(2)) {
            Some(d) => p.timeout_check = at(d, line),
            None => warn.at(n, format!("`{}`: not a time; ignored", line.text())),
        },
        "stick-table" => keywords::stick_table(p, line, warn),
        "stick" => keywords::stick(p, line, warn),
        "cookie" | "appsession" => {
            p.cookie = Some(n);
            warn.at(
                n,
                format!(
                    "`{}`: cookie persistence is HTTP; xlb keeps each client on its server by its \
                     source address instead (stick on = \"src\")",
                    line.text()
                ),
            );
        }
        "server" => {
            let params = server::server_params(
                p.default_server.clone(),
                &line.words[3.min(line.words.len())..],
                n,
                warn,
            );
            p.servers.push(ServerLine {
                name: w(1).to_string(),
                address: w(2).to_string(),
                line: n,
                params,
            });
        }
        "default-server" => {
            p.default_server = server::server_params(p.default_server.clone(), &line.words[1..], n, warn);
        }
        "server-template" => warn.at(
            n,
            "`server-template` not carried: it makes servers of DNS answers; xlb needs each server's \
             IP address, list them with `server`",
        ),
        _ => warn.at(n, not_carried(where_, &line.words)),
    }
}

/// One statement of a `peers` section.
fn peers_line(p: &mut Peers, line: &Line, warn: &mut Warnings) {
    match line.word(0) {
        "peer" | "server" => p.members.push(PeerMember {
            name: line.word(1).to_string(),
            address: line.words.get(2).cloned(),
            line: line.number,
        }),
        "bind" => p.bind = at(line.word(1).to_string(), line),
        "table" => warn.at(
            line.number,
            "a table of a peers section is not carried: xlb replicates each service's own table",
        ),
        _ => warn.at(line.number, not_carried("peers", &line.words)),
    }
}

/// HAProxy's time format: an integer with a unit (us, ms, s, m, h, d), milliseconds by default.
pub(super) fn haproxy_time(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: u64 = s[..split].parse().ok()?;
    match &s[split..] {
        "us" => Some(Duration::from_micros(n)),
        "" | "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n.checked_mul(60)?)),
        "h" => Some(Duration::from_secs(n.checked_mul(3600)?)),
        "d" => Some(Duration::from_secs(n.checked_mul(86_400)?)),
        _ => None,
    }
}

/// HAProxy's size format: an integer with k, m or g (powers of 1024).
pub(super) fn haproxy_size(s: &str) -> Option<u64> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: u64 = s[..split].parse().ok()?;
    let unit: u64 = match &s[split..] {
        "" => 1,
        "k" | "K" => 1 << 10,
        "m" | "M" => 1 << 20,
        "g" | "G" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(unit)
}
