//! The service's health check: the kind from the backend (`option httpchk`, `http-check`,
//! `option tcp-check`, `timeout check`), the timing from its checked servers.

use std::{collections::BTreeSet, time::Duration};

use super::{Context, Value, quoted, servers::Kept};
use crate::{
    config::format_duration,
    import::haproxy::{At, Check, Proxy, ServerParams},
};

/// The health check.
pub(super) struct HealthPlan {
    pub(super) value: Value,
    /// The servers are checked (type is not "none").
    pub(super) checks: bool,
    /// Per server line: the passive-health keys of its own, where it differs from the
    /// service's (the first checked server's), as (key, TOML value).
    pub(super) overrides: Vec<(usize, Vec<(&'static str, String)>)>,
}

/// The service's health check: the backend's check kind, the first checked server's timing.
pub(super) fn health(be: &Proxy, kept: &[Kept], cx: &mut Context) -> HealthPlan {
    let checked: Vec<usize> = kept.iter().filter(|k| k.checked).map(|k| k.plan.line).collect();
    let kept: Vec<usize> = kept.iter().map(|k| k.plan.line).collect();
    let Some(&first) = checked.first() else {
        return HealthPlan {
            value: Value {
                toml: "{ type = \"none\" }".into(),
                from: vec!["no server has `check` in haproxy.cfg: every server counts as up".into()],
            },
            checks: false,
            overrides: Vec::new(),
        };
    };
    let mut from = Vec::new();
    let mut fields = Vec::new();
    match &be.check {
        Some(At {
            value: Check::Http { method, uri, host },
            line,
        }) => {
            if let Some(l) = be.httpchk_line {
                from.push(cx.origin(l));
            }
            from.push(cx.origin(*line));
            let request_line_ok = !method.is_empty()
                && method.chars().all(|c| c.is_ascii_uppercase())
                && uri.starts_with('/')
                && uri.bytes().all(|b| b.is_ascii_graphic());
            fields.push("type = \"http\"".to_string());
            if request_line_ok {
                fields.push(format!("send = {}", quoted(&format!("{method} {uri}"))));
            } else {
                cx.warn.at(
                    *line,
                    format!("health check request `{method} {uri}` is not \"METHOD /path\": \"GET /\" sent"),
                );
            }
            if let Some(e) = &be.expect {
                from.push(cx.origin(e.line));
                if (100..=599).contains(&e.value) {
                    fields.push(format!("expect = {}", e.value));
                }
            }
            if let Some(h) = host
                .as_ref()
                .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
            {
                fields.push(format!("host = {}", quoted(h)));
            }
        }
        Some(At {
            value: Check::Tcp,
            line,
        }) => {
            from.push(cx.origin(*line));
            fields.push("type = \"tcp\"".to_string());
        }
        None => {
            from.push("servers with `check` and no check option: a TCP connect, as in HAProxy".into());
            fields.push("type = \"tcp\"".to_string());
        }
    }
    let params: Vec<_> = be
        .servers
        .iter()
        .filter(|s| checked.contains(&s.line))
        .map(|s| (s, &s.params))
        .collect();
    let (head, p) = params[0];
    let inter = p
        .inter
        .as_ref()
        .map_or(Duration::from_secs(2), |i| i.value.max(Duration::from_millis(1)));
    let rise = p.rise.as_ref().map_or(2, |r| r.value.max(1));
    let fall = p.fall.as_ref().map_or(3, |f| f.value.max(1));
    for (s, q) in &params[1..] {
        let same = q.inter.as_ref().map(|i| i.value) == p.inter.as_ref().map(|i| i.value)
            && q.rise.as_ref().map(|r| r.value) == p.rise.as_ref().map(|r| r.value)
            && q.fall.as_ref().map(|f| f.value) == p.fall.as_ref().map(|f| f.value);
        if !same {
            cx.warn.at(
                s.line,
                format!(
                    "server {}'s inter/rise/fall differ from {}'s: xlb checks the servers of a service \
                     alike, with {}'s",
                    s.name, head.name, head.name
                ),
            );
        }
    }
    for s in be
        .servers
        .iter()
        .filter(|s| kept.contains(&s.line) && !checked.contains(&s.line))
    {
        cx.warn.at(
            s.line,
            format!(
                "server {} has no `check` but others do: xlb checks every server of a service",
                s.name
            ),
        );
    }
    fields.push(format!("inter = {}", quoted(&format_duration(whole_ms(inter)))));
    if let Some(t) = &be.timeout_check {
        from.push(cx.origin(t.line));
        fields.push(format!(
            "timeout = {}",
            quoted(&format_duration(whole_ms(t.value)))
        ));
    }
    fields.push(format!("rise = {rise}"));
    fields.push(format!("fall = {fall}"));
    let head_keys = passive_keys(p);
    fields.extend(head_keys.iter().map(|(k, v)| format!("{k} = {v}")));
    let mut warned = BTreeSet::new();
    let mut overrides = Vec::new();
    for (s, q) in &params {
        warn_observe(q, &mut warned, cx);
        let own = own_passive(&passive_keys(q), &head_keys, &format_duration(whole_ms(inter)));
        if !own.is_empty() {
            overrides.push((s.line, own));
        }
    }
    let passive_lines: BTreeSet<usize> = passive_lines(p);
    let lines: Vec<String> = [
        p.inter.as_ref().map(|i| i.line),
        p.rise.as_ref().map(|r| r.line),
        p.fall.as_ref().map(|f| f.line),
    ]
    .into_iter()
    .flatten()
    .collect::<std::collections::BTreeSet<_>>()
    .into_iter()
    .map(|l| l.to_string())
    .collect();
    from.push(if lines.is_empty() {
        format!("inter, rise, fall: HAProxy's defaults (line {first} has `check`)")
    } else {
        format!(
            "inter, rise, fall: line {} (server {})",
            lines.join(", "),
            head.name
        )
    });
    if !passive_lines.is_empty() {
        let lines: Vec<String> = passive_lines.iter().map(|l| l.to_string()).collect();
        from.push(format!(
            "observe, error_limit, on_error, fastinter, downinter: line {} (server {})",
            lines.join(", "),
            head.name
        ));
    }
    HealthPlan {
        value: Value {
            toml: format!("{{ {} }}", fields.join(", ")),
            from,
        },
        checks: true,
        overrides,
    }
}

/// A whole number of milliseconds, at least one.
fn whole_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis().max(1) as u64)
}

/// HAProxy's passive health of a server (`observe`, `error-limit`, `on-error`, `fastinter`,
/// `downinter`) as xlb's health keys (the same words), as (key, TOML value). `observe layer7`
/// becomes "layer4" (see [`warn_observe`]); another mode is not carried.
fn passive_keys(p: &ServerParams) -> Vec<(&'static str, String)> {
    let mut keys = Vec::new();
    if p.observe
        .as_ref()
        .is_some_and(|o| o.value == "layer4" || o.value == "layer7")
    {
        keys.push(("observe", quoted("layer4")));
    }
    if let Some(e) = &p.error_limit {
        keys.push(("error_limit", e.value.max(1).to_string()));
    }
    if let Some(o) = &p.on_error {
        keys.push(("on_error", quoted(&o.value)));
    }
    for (key, d) in [("fastinter", &p.fastinter), ("downinter", &p.downinter)] {
        if let Some(d) = d {
            keys.push((key, quoted(&format_duration(whole_ms(d.value)))));
        }
    }
    keys
}

/// The lines a server's passive-health options came from.
fn passive_lines(p: &ServerParams) -> BTreeSet<usize> {
    [
        p.observe.as_ref().map(|o| o.line),
        p.error_limit.as_ref().map(|e| e.line),
        p.on_error.as_ref().map(|o| o.line),
        p.fastinter.as_ref().map(|f| f.line),
        p.downinter.as_ref().map(|d| d.line),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Warns (once per line) about an `observe` mode xlb carries differently or not at all.
fn warn_observe(p: &ServerParams, warned: &mut BTreeSet<usize>, cx: &mut Context) {
    let Some(o) = &p.observe else { return };
    if o.value == "layer4" || !warned.insert(o.line) {
        return;
    }
    if o.value == "layer7" {
        cx.warn.at(
            o.line,
            "`observe layer7` watches HTTP responses, which xlb never sees (servers answer clients \
             directly): observe = \"layer4\" carried instead (handshakes that do not finish while \
             the service's other servers' do)",
        );
    } else {
        cx.warn.at(
            o.line,
            format!(
                "`observe {}` not carried: xlb observes \"layer4\" or \"none\"",
                o.value
            ),
        );
    }
}

/// The keys a server needs of its own for its passive health `own` to hold where the service's
/// is `service`: each that differs, and xlb's default for each the service sets and it does not
/// (HAProxy's defaults: observe none, error-limit 10, on-error fastinter, both intervals `inter`).
fn own_passive(
    own: &[(&'static str, String)],
    service: &[(&'static str, String)],
    inter: &str,
) -> Vec<(&'static str, String)> {
    let get = |keys: &[(&'static str, String)], k: &str| {
        keys.iter().find(|(key, _)| *key == k).map(|(_, v)| v.clone())
    };
    ["observe", "error_limit", "on_error", "fastinter", "downinter"]
        .into_iter()
        .filter_map(|k| {
            let default = match k {
                "observe" => quoted("none"),
                "error_limit" => crate::config::DEFAULT_ERROR_LIMIT.to_string(),
                "on_error" => quoted("fastinter"),
                _ => quoted(inter),
            };
            let mine = get(own, k).unwrap_or_else(|| default.clone());
            let theirs = get(service, k).unwrap_or(default);
            (mine != theirs).then_some((k, mine))
        })
        .collect()
}
