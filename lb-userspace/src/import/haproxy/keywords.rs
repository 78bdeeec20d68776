//! The keywords of a proxy section that take more than a word to read: `option`,
//! `http-check`, `stick-table` and `stick`.

use super::model::{Check, Proxy, StickOn, StickTable, at};
use super::{haproxy_size, haproxy_time};
use crate::import::{
    lexer::Line,
    warnings::{HTTP, Warnings, not_carried},
};

/// `option …`.
pub(super) fn option(p: &mut Proxy, line: &Line, warn: &mut Warnings) {
    let n = line.number;
    match line.word(1) {
        "redispatch" => p.redispatch = at(true, line),
        "httpchk" => {
            // `option httpchk [[METHOD] URI [VERSION]]`; HAProxy's default is OPTIONS /. A
            // version may carry headers after "\r\n" (the old way to send a Host).
            let args = &line.words[2..];
            let (method, uri, version) = match args {
                [] => ("OPTIONS", "/", ""),
                [uri] => ("OPTIONS", uri.as_str(), ""),
                [m, uri] => (m.as_str(), uri.as_str(), ""),
                [m, uri, v, ..] => (m.as_str(), uri.as_str(), v.as_str()),
            };
            let host = version
                .split("\r\n")
                .skip(1)
                .find_map(|h| h.strip_prefix("Host:").or_else(|| h.strip_prefix("host:")))
                .map(|h| h.trim().to_string());
            p.check = at(
                Check::Http {
                    method: method.to_string(),
                    uri: uri.to_string(),
                    host,
                },
                line,
            );
        }
        "tcp-check" => p.check = at(Check::Tcp, line),
        k @ ("ssl-hello-chk" | "mysql-check" | "pgsql-check" | "redis-check" | "smtpchk" | "ldap-check"
        | "spop-check") => {
            p.check = at(Check::Tcp, line);
            warn.at(
                n,
                format!("`option {k}`: xlb has no such check; the servers are checked by a TCP connect"),
            );
        }
        _ => warn.at(n, not_carried(p.kind.as_str(), &line.words)),
    }
}

/// `http-check send|expect|…`.
pub(super) fn http_check(p: &mut Proxy, line: &Line, warn: &mut Warnings) {
    let n = line.number;
    match line.word(1) {
        "send" => {
            let (mut method, mut uri, mut host) = ("GET".to_string(), "/".to_string(), None);
            let mut words = line.words[2..].iter();
            while let Some(k) = words.next() {
                let v = words.next().cloned().unwrap_or_default();
                match k.as_str() {
                    "meth" => method = v,
                    "uri" => uri = v,
                    "ver" => {}
                    "hdr" if v.eq_ignore_ascii_case("host") => host = words.next().cloned(),
                    _ => warn.at(
                        n,
                        format!("http-check send `{k}` not carried: xlb's HTTP check sends a request line and a Host"),
                    ),
                }
            }
            p.httpchk_line = p.check.as_ref().map(|c| c.line);
            p.check = at(Check::Http { method, uri, host }, line);
        }
        "expect" => {
            let status = match (line.word(2), line.word(3)) {
                ("status", s) => s.split([',', '-']).next().and_then(|s| s.parse().ok()),
                _ => None,
            };
            match status {
                Some(s) => {
                    if line.word(3).contains([',', '-']) {
                        warn.at(n, format!("`{}`: xlb expects one status; {s} kept", line.text()));
                    }
                    p.expect = at(s, line);
                }
                None => warn.at(
                    n,
                    format!(
                        "`{}` not carried: xlb's HTTP check expects one status (`http-check expect status 200`)",
                        line.text()
                    ),
                ),
            }
        }
        _ => warn.at(n, not_carried(p.kind.as_str(), &line.words)),
    }
}

/// `stick-table type ip|ipv6 size N expire T [peers NAME] …`.
pub(super) fn stick_table(p: &mut Proxy, line: &Line, warn: &mut Warnings) {
    let mut t = StickTable::default();
    let mut words = line.words[1..].iter();
    while let Some(k) = words.next() {
        match k.as_str() {
            "type" => {
                let ty = words.next().map_or("", String::as_str);
                if !matches!(ty, "ip" | "ipv6") {
                    warn.at(
                        line.number,
                        format!("stick-table type {ty}: xlb's tables are keyed by the client's address"),
                    );
                }
            }
            "size" => t.size = words.next().and_then(|s| haproxy_size(s)),
            "expire" => t.expire = words.next().and_then(|s| haproxy_time(s)),
            "peers" => t.peers = words.next().cloned(),
            "len" => {
                words.next();
            }
            "store" => {
                let what = words.next().map_or("", String::as_str);
                warn.at(
                    line.number,
                    format!(
                        "stick-table store {what} not carried: xlb's entries hold the server and the last \
                         time seen; per-client counters (rates, connections) are not kept"
                    ),
                );
            }
            _ => {}
        }
    }
    p.stick_table = at(t, line);
}

/// `stick on|match|store-request EXPR [table NAME] [if|unless COND]`.
pub(super) fn stick(p: &mut Proxy, line: &Line, warn: &mut Warnings) {
    let n = line.number;
    if line.word(1) == "store-response" {
        warn.at(n, format!("`{}` not carried: {HTTP}", line.text()));
        return;
    }
    let expression = line.word(2).to_string();
    let (src, mask) = match expression.split_once(',') {
        None => (expression == "src", None),
        Some((first, conv)) => (
            first == "src" && conv.starts_with("ipmask("),
            conv.strip_prefix("ipmask("),
        ),
    };
    let prefix = |i: usize| mask.and_then(|m| m.trim_end_matches(')').split(',').nth(i)?.trim().parse().ok());
    let mut table = None;
    let mut words = line.words[3.min(line.words.len())..].iter();
    while let Some(k) = words.next() {
        match k.as_str() {
            "table" => table = words.next().cloned(),
            "if" | "unless" => {
                warn.at(
                    n,
                    format!(
                        "`{}`: the condition is not carried: xlb sticks every client",
                        line.text()
                    ),
                );
                break;
            }
            _ => {}
        }
    }
    if !src {
        warn.at(
            n,
            format!(
                "`stick {} {expression}`: xlb sticks by the client's source address, not by {expression}",
                line.word(1)
            ),
        );
    }
    let (ipv4_prefix, ipv6_prefix) = (prefix(0), prefix(1));
    p.stick_on = at(
        StickOn {
            src,
            expression,
            ipv4_prefix,
            ipv6_prefix,
            table,
        },
        line,
    );
}
