//! Issue 12's figures (`cargo xtask bench failover` → `target/xlb-bench/failover.json`), in the
//! netns harness: one LB host running the agent, four backends, 240 IPv4 client sources, each
//! opening a fresh connection every second ([`load`]: 240 new connections per second), the
//! default active checks (`inter 2s`, `fall 3`, `rise 2`). Backend `app2` is the one that fails;
//! its loss is made with nftables inside its namespace ([`crate::loss::Loss`]), on every
//! packet to the VIPs and to its own addresses (its health checks see the loss too: a backend
//! that vanished, not one whose VIP alone is filtered).
//!
//! 1. `silent_redispatch_s`: app2 silently drops everything. Per client pinned to app2 (its
//!    last answer before the drop came from app2): seconds from the drop's start to the end of
//!    its first attempt, begun after the drop, that another backend answered. `{median, max}`
//!    over those clients; `max` is null when some never got away within [`BOUND`] (and
//!    `median` too when half of them did not). This run also records the timeline (side file
//!    `failover-timeline.json`, printed).
//! 2. `refused_redispatch_s`: the same when app2's service stops (its kernel answers RST).
//! 3. `haproxy_silent_redispatch_s`: (1) through HAProxy on the LB host: the seed's config (as
//!    the e2e bench runs it) plus `observe layer4 error-limit 10 on-error mark-down` on its
//!    servers, `check inter 2s` (fall 3).
//! 4. `false_down_flood`: spoofed SYNs to the VIP at 20 × the clients' rate for [`secs`]
//!    (`XLB_BENCH_FAILOVER_SECS`, default 30) while the clients run: servers (service/server)
//!    the agent marked DOWN meanwhile and 3 s after (its log's `DOWN:` lines).
//! 5. `false_down_loss`: 10 % random loss on app2 for [`secs`], counted the same way.
//! 6. `hit_path_ratio_change`: the stick hit's ratio to the floor with passive health's packet
//!    code over the same without it, both programs timed in this run ([`super::hit_path`]:
//!    also `cargo xtask bench hit-path` alone).
//!
//! Between scenarios app2 comes back, the bench waits until the agent has it UP and clears the
//! stick table, so the sources spread over the four backends again.
//!
//! Passive health (`observe = "layer4"`) is one switch: [`OBSERVE_LAYER4`].

mod flood;
mod load;
mod timeline;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr, SocketAddrV4},
    time::Duration,
};

use anyhow::{Result, bail};
use serde_json::{Value, json};

pub use load::{Attempt, pins_before, rate, redispatch_s};

use super::{Report, e2e, median};
use crate::{
    lbenv::{LbEnv, Opts, VIP4_HTTP},
    loss::Loss,
    topology::{VIP4, VIP6},
};

/// The figures of `failover.json`, in the issue's order.
pub const KEYS: [&str; 6] = [
    "silent_redispatch_s",
    "haproxy_silent_redispatch_s",
    "refused_redispatch_s",
    "false_down_flood",
    "false_down_loss",
    "hit_path_ratio_change",
];

/// Passive health on the agent's TCP services: [`PASSIVE`] added to their `health`; the
/// active checks keep the issue's defaults (inter 2 s, fall 3).
pub const OBSERVE_LAYER4: bool = true;

/// The passive-health keys the bench's xlb runs with: a suspicion is confirmed by one check at
/// once (`sudden-death`: the next failed check marks DOWN), bounded by `fastinter` (200 ms).
/// HAProxy's run marks DOWN on its suspicion without a check (`on-error mark-down`).
pub const PASSIVE: &str = "observe = \"layer4\", on_error = \"sudden-death\", fastinter = \"200ms\", ";

/// The backend that fails (index into the environment's backends; server `app2`).
const FAILED: usize = 1;
/// Client sources (IPv4).
const SOURCES: usize = 240;
/// The clients run this long before a fault (pins made, rate steady).
const WARM: Duration = Duration::from_secs(3);
/// The longest wait for every pinned client to get away from a failed backend.
const BOUND: Duration = Duration::from_secs(30);
/// The longest wait for app2 to be UP again after a scenario.
const RECOVER: Duration = Duration::from_secs(20);
/// After a flood or a loss, DOWNs are still counted this long.
const TAIL: Duration = Duration::from_secs(3);
/// The flood's rate against the clients'.
const FLOOD_TIMES: u32 = 20;
/// Random loss: packets dropped in ten.
const LOSS_IN_TEN: u32 = 1;

/// How long the flood and the loss last: `XLB_BENCH_FAILOVER_SECS` (for quicker iterations),
/// else 30 s.
pub fn secs() -> Duration {
    let s = std::env::var("XLB_BENCH_FAILOVER_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(30);
    Duration::from_secs(s)
}

/// What made the backend fail.
#[derive(Clone, Copy, PartialEq)]
enum Fault {
    /// Every packet to it dropped.
    Silent,
    /// Its service stopped.
    Refused,
}

/// Per pinned client, seconds to its first connection on another backend (None: never).
type Redispatch = BTreeMap<IpAddr, Option<f64>>;

/// `{median, max}` over `times`; a client that never got away counts as longer than any: `max`
/// is then null, and `median` too when it falls on one of those.
pub fn median_max(times: &[Option<f64>]) -> Value {
    if times.is_empty() {
        return Value::Null;
    }
    let inf: Vec<f64> = times.iter().map(|t| t.unwrap_or(f64::INFINITY)).collect();
    let finite = |v: f64| {
        if v.is_finite() {
            json!(round3(v))
        } else {
            Value::Null
        }
    };
    let max = inf.iter().copied().fold(f64::MIN, f64::max);
    json!({"median": finite(median(&inf)), "max": finite(max)})
}

/// `v` to three decimals: milliseconds for the times, the resolution that means something here.
pub fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// `failover.json`: exactly [`KEYS`], null where a figure was not measured.
pub fn figures_json(values: &BTreeMap<&'static str, Value>) -> Value {
    Value::Object(
        KEYS.iter()
            .map(|k| (k.to_string(), values.get(k).cloned().unwrap_or(Value::Null)))
            .collect(),
    )
}

/// The figures measured so far, notes, and why the others are missing.
#[derive(Default)]
struct Figures {
    values: BTreeMap<&'static str, Value>,
    notes: Vec<String>,
    missing: Vec<String>,
}

impl Figures {
    fn measure(&mut self, what: &str, key: &'static str, f: impl FnOnce(&mut Figures) -> Result<Value>) {
        eprintln!("-- {what}");
        match f(self) {
            Ok(v) => {
                eprintln!("   {key} = {v}");
                self.values.insert(key, v);
            }
            Err(e) => {
                eprintln!("   failed: {e:#}");
                self.missing.push(format!("{key}: {what} failed: {e:#}"));
            }
        }
    }

    fn note(&mut self, line: String) {
        eprintln!("   {line}");
        self.notes.push(line);
    }
}

pub fn run() -> Result<Report> {
    let mut e = LbEnv::new(
        "bench-failover",
        Opts {
            inter: "2s".into(),
            rise: 2,
            fall: 3,
            stick_size: 100_000,
            ..Opts::sources(SOURCES, 0)
        },
    )?;
    if OBSERVE_LAYER4 {
        e.write_config(&with_observe(&e.config_text(e.opts.backends)))?;
    }
    e.start_agent()?;
    let mut figs = Figures::default();
    let mut events = Vec::new();
    figs.measure("silent loss of app2 (xlb)", "silent_redispatch_s", |f| {
        let (r, t) = redispatch(&mut e, Fault::Silent, f)?;
        events = t;
        Ok(median_max(&r.into_values().collect::<Vec<_>>()))
    });
    figs.measure("app2's service stops (xlb)", "refused_redispatch_s", |f| {
        let (r, _) = redispatch(&mut e, Fault::Refused, f)?;
        Ok(median_max(&r.into_values().collect::<Vec<_>>()))
    });
    figs.measure(
        "silent loss of app2 (HAProxy)",
        "haproxy_silent_redispatch_s",
        |f| {
            Ok(median_max(
                &haproxy_silent(&mut e, f)?.into_values().collect::<Vec<_>>(),
            ))
        },
    );
    figs.measure("spoofed SYN flood", "false_down_flood", |f| {
        Ok(json!(flood_downs(&mut e, f)?))
    });
    figs.measure("10 % random loss on app2", "false_down_loss", |f| {
        Ok(json!(loss_downs(&e, f)?))
    });
    drop(e);
    figs.measure(
        "stick hit with and without passive health's packet code",
        "hit_path_ratio_change",
        |f| {
            let r = super::hit_path::measure(super::hit_path::ROUNDS)?;
            f.note(r.summary());
            Ok(json!(round3(r.ratio_change())))
        },
    );
    let side = timeline::write_side_file(&events, &figs.notes)?;
    figs.note(format!("timeline and notes: {}", side.display()));
    Ok(report(figs, &events))
}

fn report(figs: Figures, events: &[timeline::Event]) -> Report {
    let goals = ["median ≤ 1.5", "(baseline)", "≤ 1.0", "0", "0", "≤ 1.02"];
    let mut table = format!(
        "failover: issue 12's figures (goal in brackets); passive health (observe layer4) {}\n",
        if OBSERVE_LAYER4 {
            "ON"
        } else {
            "OFF: active checks only"
        }
    );
    for (k, goal) in KEYS.iter().zip(goals) {
        let v = figs.values.get(k).map_or("null".to_string(), |v| v.to_string());
        table.push_str(&format!("  {k:<30}{v:>40}   [{goal}]\n"));
    }
    table.push_str(&timeline::render(events));
    for n in &figs.notes {
        table.push_str(&format!("  - {n}\n"));
    }
    for m in &figs.missing {
        table.push_str(&format!("  NOT MEASURED {m}\n"));
    }
    Report {
        table,
        json: figures_json(&figs.values),
    }
}

/// `config` with `observe = "layer4"` in each TCP service's health table.
fn with_observe(config: &str) -> String {
    config
        .lines()
        .map(|l| {
            if l.starts_with("health = { type = \"http\"") {
                l.replacen("health = { ", &format!("health = {{ {PASSIVE}"), 1)
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// The failed backend's server name.
fn failed_name(e: &LbEnv) -> String {
    e.http[FAILED].name().to_string()
}

/// Addresses whose packets a loss on the failed backend drops: the VIPs and its own.
fn failed_addrs(e: &LbEnv) -> Vec<IpAddr> {
    let h = e.topo.host(e.backends[FAILED]);
    vec![VIP4.into(), VIP6.into(), h.ipv4.into(), h.ipv6.into()]
}

/// One fault of app2 under the clients (to the VIP), app2 brought back after; the timeline
/// when the loss is silent.
fn redispatch(e: &mut LbEnv, fault: Fault, figs: &mut Figures) -> Result<(Redispatch, Vec<timeline::Event>)> {
    let r = under_fault(e, "xlb", VIP4_HTTP, fault, figs)?;
    back_up(e)?;
    Ok(r)
}

/// Clients to `target` (through `who`), app2 failing under them after [`WARM`] until every
/// client pinned to it got away (or [`BOUND`]); app2 is restored before this returns. The
/// timeline is watched when the loss is silent and `who` is xlb.
fn under_fault(
    e: &mut LbEnv,
    who: &str,
    target: SocketAddr,
    fault: Fault,
    figs: &mut Figures,
) -> Result<(Redispatch, Vec<timeline::Event>)> {
    let name = failed_name(e);
    let ns = e.topo.host(e.backends[FAILED]).ns.clone();
    let load = load::Load::start(&e.topo, e.client, &e.sources4, target, WARM + BOUND + RECOVER)?;
    std::thread::sleep(WARM);
    let watch = fault == Fault::Silent && who == "xlb";
    let watcher = watch.then(|| timeline::Watcher::start(e, &name, &load));
    let at = load.fault_began();
    let loss = match fault {
        Fault::Silent => Some(Loss::silent(&ns, &failed_addrs(e))?),
        Fault::Refused => {
            e.http[FAILED].stop();
            None
        }
    };
    let done = wait_all_away(&load, &name, at);
    let pins = pins_before(&load.attempts(), at);
    let stopped = load.elapsed();
    drop(loss);
    e.http[FAILED].restart()?;
    let mut events = watcher.map(timeline::Watcher::finish).unwrap_or_default();
    let attempts = load.finish()?;
    let r = redispatch_s(&attempts, &pins, &name, at);
    let what = if fault == Fault::Silent {
        "silent"
    } else {
        "refused"
    };
    figs.note(format!(
        "{who} {what}: {} clients pinned to {name} of {} pinned; {} got away; clients' rate before the fault {:.0} new connections/s{}",
        r.len(),
        pins.len(),
        r.values().filter(|t| t.is_some()).count(),
        rate(&attempts, Duration::ZERO, at),
        if done { "" } else { " (some never got away within the bound)" }
    ));
    if !watch {
        return Ok((r, Vec::new()));
    }
    timeline::add_first_redispatch(&mut events, &r, at);
    events.retain(|ev| ev.at.is_nan() || ev.at <= stopped.as_secs_f64());
    let events = timeline::since(events, at, &name);
    Ok((r, events))
}

/// Waits (≤ [`BOUND`]) until every source pinned to `failed` before `at` got an answer from
/// another backend; whether they all did.
fn wait_all_away(load: &load::Load, failed: &str, at: Duration) -> bool {
    loop {
        let attempts = load.attempts();
        let pins = pins_before(&attempts, at);
        let r = redispatch_s(&attempts, &pins, failed, at);
        if !r.is_empty() && r.values().all(Option::is_some) {
            return true;
        }
        if load.elapsed() > at + BOUND {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the agent has app2 UP again in be_app, then clears be_app's table so the
/// sources spread again.
fn back_up(e: &LbEnv) -> Result<()> {
    let name = failed_name(e);
    let up = e.wait_until(RECOVER, || {
        e.server_state("be_app", &name).is_ok_and(|s| s == "UP")
    });
    if !up {
        bail!("{name} not UP again within {RECOVER:?}");
    }
    let answer = e.api("clear table be_app")?;
    if !answer.trim().is_empty() {
        bail!("clear table be_app: {answer}");
    }
    Ok(())
}

/// (1) through HAProxy: its own clients' figures.
fn haproxy_silent(e: &mut LbEnv, figs: &mut Figures) -> Result<Redispatch> {
    let bind = SocketAddr::new(e.topo.host(e.lb).ipv4.into(), 8080);
    let hap = e2e::start_haproxy(
        e,
        &e2e::haproxy_config(e, bind, " observe layer4 error-limit 10 on-error mark-down"),
    )?;
    // HAProxy's first checks pass before the clients start.
    std::thread::sleep(Duration::from_secs(1));
    let r = under_fault(e, "HAProxy", bind, Fault::Silent, figs);
    hap.terminate(Duration::from_secs(2));
    let (r, _) = r?;
    back_up(e)?;
    Ok(r)
}

/// The `service/server` names the agent's log marks DOWN in `log` (its `DOWN:` lines).
pub fn marked_down(log: &str) -> BTreeSet<String> {
    log.lines()
        .filter_map(|l| l.split_once(" DOWN: ").map(|(head, _)| head))
        .filter_map(|head| head.split_whitespace().last())
        .map(str::to_string)
        .collect()
}

/// Servers marked DOWN while `during` runs beside the clients, and [`TAIL`] after.
fn downs_during(
    e: &LbEnv,
    what: &str,
    figs: &mut Figures,
    during: impl FnOnce() -> Result<String>,
) -> Result<usize> {
    let load = load::Load::start(&e.topo, e.client, &e.sources4, VIP4_HTTP, WARM + secs() + TAIL)?;
    std::thread::sleep(WARM);
    let before = e.agent_log().len();
    let from = load.elapsed();
    let said = during()?;
    let to = load.elapsed();
    std::thread::sleep(TAIL);
    let log = e.agent_log();
    let down = marked_down(log.get(before..).unwrap_or(""));
    let attempts = load.finish()?;
    let failed = attempts
        .iter()
        .filter(|a| a.start >= from && a.start < to && a.outcome.is_err())
        .count();
    figs.note(format!(
        "{what}: {said}; clients {:.0} new connections/s meanwhile, {failed} attempts failed; marked DOWN: {down:?}",
        rate(&attempts, from, to)
    ));
    let servers = down.len();
    back_up(e).or_else(|err| if servers > 0 { Ok(()) } else { Err(err) })?;
    Ok(servers)
}

fn flood_downs(e: &mut LbEnv, figs: &mut Figures) -> Result<usize> {
    e.topo.own_spoof_pool(e.client)?;
    let rate = FLOOD_TIMES * (SOURCES as u32) / load::PERIOD.as_secs() as u32;
    let dst = SocketAddrV4::new(VIP4, 80);
    let e = &*e;
    downs_during(e, "flood", figs, || {
        let sent = flood::syn_flood(&e.topo, e.client, dst, rate, secs())?;
        Ok(format!(
            "{sent} spoofed SYNs to {dst} at {rate}/s for {:?}",
            secs()
        ))
    })
}

fn loss_downs(e: &LbEnv, figs: &mut Figures) -> Result<usize> {
    let ns = e.topo.host(e.backends[FAILED]).ns.clone();
    downs_during(e, "random loss", figs, || {
        let loss = Loss::random(&ns, &failed_addrs(e), LOSS_IN_TEN)?;
        std::thread::sleep(secs());
        let dropped = loss.dropped()?;
        loss.remove()?;
        Ok(format!(
            "{LOSS_IN_TEN} in 10 packets dropped at random on {} for {:?} ({dropped} dropped)",
            failed_name(e),
            secs()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_max_counts_clients_that_never_got_away_as_longest() {
        assert_eq!(
            median_max(&[Some(1.0), Some(3.0), Some(2.0004)]),
            json!({"median": 2.0, "max": 3.0})
        );
        assert_eq!(
            median_max(&[Some(1.0), Some(2.0), None]),
            json!({"median": 2.0, "max": null})
        );
        assert_eq!(
            median_max(&[Some(1.0), None, None]),
            json!({"median": null, "max": null})
        );
        assert_eq!(median_max(&[]), Value::Null);
    }

    #[test]
    fn failover_json_has_exactly_the_issues_keys() {
        let mut v = BTreeMap::new();
        v.insert("false_down_flood", json!(0));
        v.insert("silent_redispatch_s", json!({"median": 1.0, "max": 2.0}));
        let j = figures_json(&v);
        let keys: BTreeSet<&str> = j
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, KEYS.iter().copied().collect::<BTreeSet<_>>());
        assert_eq!(j["false_down_flood"], json!(0));
        assert_eq!(j["hit_path_ratio_change"], Value::Null);
    }

    #[test]
    fn marked_down_reads_the_agents_down_lines() {
        let log = "[2026-11-25T21:00:00Z WARN  xlb::balancer] be_app/app2 DOWN: check failed\n\
                   [2026-11-25T21:00:01Z WARN  xlb::balancer] be_app/app2 UP: check passed\n\
                   [2026-11-25T21:00:02Z WARN  xlb::balancer] dns/app2 DOWN: connect refused\n\
                   [2026-11-25T21:00:03Z WARN  xlb::balancer] be_app/app2 DOWN: again\n";
        let d = marked_down(log);
        assert_eq!(d.into_iter().collect::<Vec<_>>(), ["be_app/app2", "dns/app2"]);
    }

    #[test]
    fn observe_goes_into_the_tcp_services_health_tables() {
        let c = "[[service]]\nname = \"be_app\"\nhealth = { type = \"http\", inter = \"2s\" }\n\
                 [[service]]\nname = \"dns\"\nhealth = { type = \"tcp\", port = 80 }\n";
        let o = with_observe(c);
        assert!(
            o.contains(&format!("health = {{ {PASSIVE}type = \"http\"")),
            "{o}"
        );
        assert!(o.contains("health = { type = \"tcp\", port = 80 }"), "{o}");
    }
}
