//! The options of a `server` or `default-server` line: those xlb carries, and a reason for
//! each other one.

use super::{
    haproxy_time,
    model::{At, ServerParams},
};
use std::str::FromStr as _;

use crate::{config, import::warnings::Warnings};

/// Server options that are flags (every other option takes one argument).
const SERVER_FLAGS: [&str; 36] = [
    "check",
    "no-check",
    "disabled",
    "enabled",
    "backup",
    "no-backup",
    "ssl",
    "no-ssl",
    "check-ssl",
    "no-check-ssl",
    "send-proxy",
    "no-send-proxy",
    "send-proxy-v2",
    "no-send-proxy-v2",
    "send-proxy-v2-ssl",
    "send-proxy-v2-ssl-cn",
    "check-send-proxy",
    "non-stick",
    "stick",
    "tfo",
    "agent-check",
    "no-agent-check",
    "no-verifyhost",
    "allow-0rtt",
    "no-tls-tickets",
    "tls-tickets",
    "force-sslv3",
    "force-tlsv10",
    "force-tlsv11",
    "force-tlsv12",
    "force-tlsv13",
    "no-sslv3",
    "no-tlsv10",
    "no-tlsv11",
    "no-tlsv12",
    "no-tlsv13",
];

/// `base` with the options `words` of a `server`/`default-server` line applied.
pub(super) fn server_params(
    mut s: ServerParams,
    words: &[String],
    line: usize,
    warn: &mut Warnings,
) -> ServerParams {
    let mut words = words.iter();
    while let Some(k) = words.next() {
        let k = k.as_str();
        let arg = if SERVER_FLAGS.contains(&k) {
            None
        } else {
            words.next()
        };
        let value = |v| At { value: v, line };
        let count = |v| At { value: v, line };
        let number = |a: Option<&String>| a.and_then(|a| a.parse::<u32>().ok());
        match k {
            "check" => s.check = Some(line),
            "no-check" => s.check = None,
            "disabled" => s.disabled = Some(line),
            "enabled" => s.disabled = None,
            "backup" => s.backup = Some(line),
            "no-backup" => s.backup = None,
            "inter" => s.inter = arg.and_then(|a| haproxy_time(a)).map(value),
            "rise" => s.rise = number(arg).map(count),
            "fall" => s.fall = number(arg).map(count),
            "weight" => s.weight = number(arg).map(count),
            "port" => s.port = arg.and_then(|a| a.parse().ok()).map(|v| At { value: v, line }),
            "observe" if arg.is_some_and(|a| a == "none") => s.observe = None,
            "observe" => s.observe = arg.map(|a| At { value: a.clone(), line }),
            "error-limit" => s.error_limit = number(arg).map(count),
            "on-error" if arg.is_some_and(|a| config::OnError::from_str(a).is_ok()) => {
                s.on_error = arg.map(|a| At { value: a.clone(), line })
            }
            "on-error" => warn.at(
                line,
                format!(
                    "`on-error {}` not carried: xlb's on_error is fastinter, fail-check, sudden-death or mark-down",
                    arg.map_or("", |a| a.as_str())
                ),
            ),
            "fastinter" => s.fastinter = arg.and_then(|a| haproxy_time(a)).map(value),
            "downinter" => s.downinter = arg.and_then(|a| haproxy_time(a)).map(value),
            _ => {
                let shown = arg.map_or(k.to_string(), |a| format!("{k} {a}"));
                warn.at(
                    line,
                    format!("server option `{shown}` not carried: {}", server_option_reason(k)),
                );
            }
        }
    }
    s
}

fn server_option_reason(k: &str) -> &'static str {
    match k {
        "cookie" => "cookie persistence is HTTP; xlb sticks by source address",
        "maxconn" | "maxqueue" | "minconn" => "xlb does not count connections; limit them on the server",
        "slowstart" => {
            "xlb has no slow start: a server that comes up gets its weight's share of new clients at once"
        }
        "addr" => "xlb checks the server's own address (with check_port for another port)",
        "check-ssl" | "check-sni" => "xlb's checks are plain TCP or HTTP; point `port` at a plain port",
        "send-proxy"
        | "send-proxy-v2"
        | "send-proxy-v2-ssl"
        | "send-proxy-v2-ssl-cn"
        | "check-send-proxy"
        | "proxy-v2-options" => {
            "xlb forwards the clients' own packets, so servers see their addresses without the PROXY \
             protocol: turn accept-proxy off on the servers"
        }
        "resolvers" | "resolve-prefer" | "init-addr" | "resolve-opts" | "resolve-net" => {
            "xlb needs each server's IP address; it does not resolve names"
        }
        "agent-check" | "agent-port" | "agent-inter" | "agent-addr" | "agent-send" => {
            "xlb has no agent checks"
        }
        "track" => "xlb checks every server itself",
        "on-marked-down" | "on-marked-up" => {
            "xlb does not act on other servers' connections when a server changes state; a DOWN \
             server's clients are redispatched (`redispatch = true`)"
        }
        "non-stick" => "xlb sticks every client of a service",
        k if k.starts_with("ssl")
            || k.contains("tls")
            || ["verify", "ca-file", "crt", "sni", "alpn", "ciphers"].contains(&k) =>
        {
            "xlb forwards the clients' TCP untouched; TLS to the server is the client's"
        }
        _ => "xlb has no use for it (it forwards packets at L4)",
    }
}
