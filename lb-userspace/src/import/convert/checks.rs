//! The service's health check: the kind from the backend (`option httpchk`, `http-check`,
//! `option tcp-check`, `timeout check`), the timing from its checked servers.

use std::time::Duration;

use super::{Context, Value, quoted, servers::Kept};
use crate::{
    config::format_duration,
    import::haproxy::{At, Check, Proxy},
};

/// The health check.
pub(super) struct HealthPlan {
    pub(super) value: Value,
    /// The servers are checked (type is not "none").
    pub(super) checks: bool,
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
    let whole_ms = |d: Duration| Duration::from_millis(d.as_millis().max(1) as u64);
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
    HealthPlan {
        value: Value {
            toml: format!("{{ {} }}", fields.join(", ")),
            from,
        },
        checks: true,
    }
}
