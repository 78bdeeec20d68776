//! How clients stay on their server: the `stick` value (from stick rules, cookies, `balance`
//! and `mode http`) and `redispatch`.

use std::{collections::HashMap, time::Duration};

use super::{Context, Value, quoted};
use crate::{
    config::{MIN_STICK_EXPIRE, format_duration, stick_max_entries},
    import::haproxy::{Proxy, StickTable},
};

/// The `stick` value, and whether haproxy.cfg keeps clients on their server (a stick rule or a
/// cookie), which makes redispatch matter.
pub(super) fn stick(
    be: &Proxy,
    fe: Option<&Proxy>,
    backends: &HashMap<&str, &Proxy>,
    cx: &mut Context,
) -> (Value, bool) {
    let mut from = Vec::new();
    let balance = be
        .balance
        .as_ref()
        // `hdr(name)`, `rdp-cookie(name)`: the algorithm is before the parenthesis.
        .map(|b| {
            (
                b.value
                    .first()
                    .map_or("", |a| a.split('(').next().unwrap_or_default()),
                b.line,
            )
        });
    if let Some((algorithm, line)) = balance {
        match algorithm {
            "leastconn" | "first" => cx.warn.at(
                line,
                format!(
                    "balance {algorithm}: xlb spreads new clients over the servers by weight (Maglev); \
                     it does not count connections"
                ),
            ),
            "uri" | "url_param" | "hdr" | "rdp-cookie" | "hash" => cx.warn.at(
                line,
                format!(
                    "balance {algorithm} hashes a request's content; xlb hashes the client's source address"
                ),
            ),
            _ => {}
        }
        from.push(cx.origin(line));
    }
    if let Some(line) = be.hash_consistent {
        from.push(cx.origin(line));
    }
    // Counted at the default size; a table's own size replaces it (`table_fields`).
    cx.stick_entries += DEFAULT_STICK_SIZE;
    let mut fields = Vec::new();
    let persistent = be.stick_on.is_some() || be.cookie.is_some();
    let keyed_by_source = persistent
        || matches!(
            balance,
            Some(("source" | "uri" | "url_param" | "hdr" | "rdp-cookie" | "hash", _))
        )
        || be.mode_http.is_some()
        || fe.is_some_and(|f| f.mode_http.is_some());
    if !keyed_by_source {
        from.push("no persistence in haproxy.cfg: each connection is balanced on its own".into());
        return (
            Value {
                toml: "{ on = \"none\" }".into(),
                from,
            },
            false,
        );
    }
    fields.push("on = \"src\"".to_string());
    if let Some(line) = be.cookie {
        from.push(cx.origin(line));
    }
    let hashing = matches!(
        balance,
        Some(("source" | "uri" | "url_param" | "hdr" | "rdp-cookie" | "hash", _))
    );
    if !persistent && !hashing {
        from.push("mode http: clients kept on their server by source address".into());
    }
    if let Some(on) = &be.stick_on {
        let table = match &on.value.table {
            Some(t) => {
                cx.warn.at(
                    on.line,
                    format!(
                        "`stick … table {t}` shares {t}'s table; each xlb service has a table of its own, \
                         sized like {t}'s"
                    ),
                );
                backends.get(t.as_str()).and_then(|b| b.stick_table.as_ref())
            }
            None => be.stick_table.as_ref(),
        };
        if let Some(t) = table {
            from.push(cx.origin(t.line));
            fields.extend(table_fields(&t.value, t.line, cx));
        }
        from.push(cx.origin(on.line));
        if let Some(p) = on.value.ipv4_prefix.filter(|p| (1..=32).contains(p)) {
            fields.push(format!("ipv4_prefix = {p}"));
        }
        if let Some(p) = on.value.ipv6_prefix.filter(|p| (1..=128).contains(p)) {
            fields.push(format!("ipv6_prefix = {p}"));
        }
    }
    if fields.len() == 1 {
        from.push("size and expire: xlb's defaults (100k entries, 30m)".into());
    }
    (
        Value {
            toml: format!("{{ {} }}", fields.join(", ")),
            from,
        },
        persistent,
    )
}

/// `stick.size` when not set (xlb's default).
pub(super) const DEFAULT_STICK_SIZE: u64 = 100_000;

/// `size` and `expire` of a stick table.
fn table_fields(t: &StickTable, line: usize, cx: &mut Context) -> Vec<String> {
    let mut out = Vec::new();
    let mut entries = DEFAULT_STICK_SIZE;
    if let Some(size) = t.size {
        // All services' tables share one memory cap; keep the default size's room for the
        // services still to come.
        let before = cx.stick_entries - DEFAULT_STICK_SIZE;
        let room = stick_max_entries()
            .saturating_sub(before + cx.stick_reserve)
            .max(1);
        if size > room {
            cx.warn.at(
                line,
                format!(
                    "stick-table size {size}: xlb's tables hold at most {} entries in all; {room} kept for \
                     this one",
                    stick_max_entries()
                ),
            );
        }
        out.push(format!("size = {}", size.min(room)));
        entries = size.min(room);
    }
    let expire = match t.expire {
        None => Duration::ZERO,
        Some(e) if e < MIN_STICK_EXPIRE => {
            cx.warn.at(
                line,
                format!(
                    "stick-table expire {}: xlb refreshes entries once a second, so it needs at least {}; {} kept",
                    format_duration(e),
                    format_duration(MIN_STICK_EXPIRE),
                    format_duration(MIN_STICK_EXPIRE)
                ),
            );
            MIN_STICK_EXPIRE
        }
        Some(e) => Duration::from_millis(e.as_millis() as u64),
    };
    out.push(format!("expire = {}", quoted(&format_duration(expire))));
    // What the default size counted for this service (see `stick`) becomes the table's size.
    cx.stick_entries = cx.stick_entries - DEFAULT_STICK_SIZE + entries;
    out
}

/// `redispatch`: haproxy.cfg's `option redispatch`; without it a stuck client stays on a
/// down server, as in HAProxy.
pub(super) fn redispatch(be: &Proxy, persistent: bool, cx: &mut Context) -> Value {
    match &be.redispatch {
        Some(r) => Value {
            toml: r.value.to_string(),
            from: vec![cx.origin(r.line)],
        },
        None if persistent => {
            let line = be
                .stick_on
                .as_ref()
                .map(|s| s.line)
                .or(be.cookie)
                .unwrap_or(be.line);
            cx.warn.at(
                line,
                format!(
                    "{} keeps clients on their server without `option redispatch`: a client stays on a \
                     server that is down until its entry expires, as in haproxy.cfg (redispatch = false); \
                     set redispatch = true to re-balance it",
                    be.label()
                ),
            );
            Value {
                toml: "false".into(),
                from: vec!["no option redispatch in haproxy.cfg".into()],
            }
        }
        None => Value {
            toml: "true".into(),
            from: vec!["xlb's default: a client of a server that goes down is re-balanced".into()],
        },
    }
}
