//! Issue 11's figures on a fleet of three balancers behind a router (BIRD, BGP + BFD, ECMP
//! with an L4 hash), four backends, 1000 IPv4 and 200 IPv6 client sources
//! ([`crate::fleet::Fleet::with_agents`]). One fleet, the scenarios one after another:
//!
//! 1. `split_sources`: every source opens 5 fresh connections; sources that reached more than
//!    one backend, summed over three rounds: all backends ready; with every table cleared and
//!    app1 draining on lb1 only; after app1 is ready again on lb1.
//! 2. Losing lb2's host (link cut at the switch, agent killed: no goodbye): `lb_loss_detect_s`
//!    (cut until the router's route has the two others only), `lb_loss_moved_sources` (a fresh
//!    connection per source after, against its backend before), `lb_loss_failed_conns` (240
//!    keep-alive connections asked during and after the loss).
//! 3. Its return, as after a reboot (routes and pins gone, link up, agent started): it
//!    announces after its peers' teach or the warm-up; `rejoin_moved_sources`,
//!    `rejoin_failed_conns` as above.
//! 4. `disable announce` on lb3: `drain_failed_conns` (240 keep-alive connections); the time
//!    until the router drops lb3 is printed.
//! 5. Every backend fails its health check: `withdraw_s` from the last server DOWN on the
//!    last balancer (the arrival, at the backend, of the check that made it DOWN: the `fall`-th
//!    failing one) until the router is seen (polled every millisecond or so) without a route
//!    to the VIP.
//! 6. `replication_p99_ms`: new clients (connections from the harness's own pool of source
//!    addresses, paced) at [`tables::NEW_CLIENTS_PER_S`]; for each, from its entry's first
//!    sight in any balancer's stick table (the one whose data path made it) to its sight in all
//!    three (read through their pins, polled together every 0.2 ms or so). A client whose
//!    entry no balancer ever made (its handshake did not complete) is counted and left out.
//! 7. `agent_kill_failed_conns`: lb1's agent killed with -9 while 240 keep-alive connections
//!    and a fresh connection per source run; both counted; then it is started again.
//! 8. `full_teach_s`: lb1's table filled with a million entries (through its pinned map, so
//!    nothing is streamed), lb2 rebooted as in 3: from its agent's start until `show peers`
//!    says lb1 taught it.
//!
//! A figure whose scenario failed is `null` in the JSON, and the table says why.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::json;

mod clients;
mod tables;

pub use clients::{Held, Reached, Round, backends_by_source, check_all, moved};
use tables::{full_teach, replication};

use super::Report;
use crate::{
    fleet::{AgentOpts, BALANCERS, Fleet, VIP_TABLE, VIPS},
    topology::VIP4,
};

/// The figures of `fleet.json`, in the order.
pub const KEYS: [&str; 11] = [
    "split_sources",
    "lb_loss_detect_s",
    "lb_loss_moved_sources",
    "lb_loss_failed_conns",
    "rejoin_moved_sources",
    "rejoin_failed_conns",
    "drain_failed_conns",
    "withdraw_s",
    "replication_p99_ms",
    "full_teach_s",
    "agent_kill_failed_conns",
];

/// Fresh connections per source in a consistency round.
const CONNS_PER_SOURCE: usize = 5;
/// Keep-alive connections held across a loss, a rejoin, a drain or a kill.
const HELD: usize = 240;
/// Bound of every wait for the router.
const ROUTER_BOUND: Duration = Duration::from_secs(30);

/// The figures measured so far, and why the others are missing.
#[derive(Default)]
struct Figures {
    values: BTreeMap<&'static str, f64>,
    missing: Vec<String>,
    notes: Vec<String>,
}

impl Figures {
    /// Runs one scenario; on failure its `keys` stay null, with the error as the reason.
    fn measure(&mut self, what: &str, keys: &[&'static str], f: impl FnOnce(&mut Figures) -> Result<()>) {
        eprintln!("-- {what}");
        if let Err(e) = f(self) {
            eprintln!("   failed: {e:#}");
            for k in keys {
                if !self.values.contains_key(k) {
                    self.missing.push(format!("{k}: {what} failed: {e:#}"));
                }
            }
        }
    }

    fn set(&mut self, key: &'static str, v: f64) {
        debug_assert!(KEYS.contains(&key), "{key} is not a figure of fleet.json");
        self.values.insert(key, v);
    }

    fn note(&mut self, line: String) {
        eprintln!("   {line}");
        self.notes.push(line);
    }

    /// Notes the first few of `failures` (connection: error), if any.
    fn failures(&mut self, what: &str, failures: impl Iterator<Item = String>) {
        let all: Vec<String> = failures.collect();
        if !all.is_empty() {
            let first: Vec<&str> = all.iter().take(3).map(String::as_str).collect();
            self.note(format!("{what}: {} failed, e.g. {}", all.len(), first.join("; ")));
        }
    }
}

pub fn run() -> Result<Report> {
    let fleet = Fleet::with_agents("bench-fleet", AgentOpts::default())?;
    let mut figs = Figures::default();
    figs.note(format!(
        "fleet: {BALANCERS} balancers, {} backends, {} sources; router's route to {VIP4}: {}",
        fleet.backends.len(),
        fleet.sources.len(),
        one_line(&fleet.router_route(VIPS[0])?)
    ));
    moment(&fleet, &mut figs, "three balancers up, before any scenario");
    let mut pins = BTreeMap::new();
    figs.measure("consistency", &["split_sources"], |f| {
        pins = consistency(&fleet, f)?;
        Ok(())
    });
    figs.measure(
        "losing lb2's host",
        &[
            "lb_loss_detect_s",
            "lb_loss_moved_sources",
            "lb_loss_failed_conns",
        ],
        |f| lb_loss(&fleet, &pins, f),
    );
    figs.measure(
        "lb2 returns",
        &["rejoin_moved_sources", "rejoin_failed_conns"],
        |f| rejoin(&fleet, &pins, f),
    );
    figs.measure("taking lb3 out", &["drain_failed_conns"], |f| drain(&fleet, f));
    figs.measure("every server DOWN", &["withdraw_s"], |f| withdraw(&fleet, f));
    figs.measure("replication", &["replication_p99_ms"], |f| {
        replication(&fleet, &pins, f)
    });
    moment(&fleet, &mut figs, "after the replication scenario");
    figs.measure("agent kill -9", &["agent_kill_failed_conns"], |f| {
        agent_kill(&fleet, f)
    });
    figs.measure("full teach", &["full_teach_s"], |f| full_teach(&fleet, &pins, f));
    Ok(report(figs))
}

/// The fleet as an operator would look at it at `what`: the router's routes to the VIPs and,
/// from each balancer whose agent runs, `show frontends` and `show peers` (for the closing
/// notes and anyone reading the run).
fn moment(fleet: &Fleet, figs: &mut Figures, what: &str) {
    let mut text = format!("moment: {what}\n  router:");
    for vip in VIPS {
        let route = fleet.router_route(vip).unwrap_or_else(|e| format!("({e:#})"));
        let route = if route.trim().is_empty() {
            format!("{vip}: no route")
        } else {
            route
        };
        text.push_str(&format!("\n    {}", route.trim_end().replace('\n', "\n    ")));
    }
    for lb in 0..BALANCERS {
        if !fleet.agents[lb].is_running() {
            text.push_str(&format!("\n  lb{}: agent not running", lb + 1));
            continue;
        }
        for cmd in ["show frontends", "show peers"] {
            let answer = fleet.api(lb, cmd).unwrap_or_else(|e| format!("({e:#})"));
            text.push_str(&format!(
                "\n  lb{} `{cmd}`:\n    {}",
                lb + 1,
                answer.trim_end().replace('\n', "\n    ")
            ));
        }
    }
    figs.note(text);
}

fn report(figs: Figures) -> Report {
    let mut table = String::from("fleet: issue 11's figures (goal in brackets)\n");
    let goals = ["0", "< 1", "0", "0", "0", "0", "0", "< 1", "< 50", "< 5", "0"];
    let mut obj = serde_json::Map::new();
    for (k, goal) in KEYS.iter().zip(goals) {
        let v = figs.values.get(k).copied();
        obj.insert(k.to_string(), v.map_or(serde_json::Value::Null, |v| json!(v)));
        let shown = match v {
            Some(v) if v.fract() == 0.0 && !k.ends_with("_s") && !k.ends_with("_ms") => format!("{v:.0}"),
            Some(v) => format!("{v:.3}"),
            None => "null".into(),
        };
        table.push_str(&format!("  {k:<26}{shown:>10}   [{goal}]\n"));
    }
    for n in &figs.notes {
        table.push_str(&format!("  - {n}\n"));
    }
    for m in &figs.missing {
        table.push_str(&format!("  NOT MEASURED {m}\n"));
    }
    Report {
        table,
        json: serde_json::Value::Object(obj),
    }
}

/// Scenario 1; returns each source's backend after it (the pins later scenarios compare to).
fn consistency(fleet: &Fleet, figs: &mut Figures) -> Result<BTreeMap<IpAddr, String>> {
    let mut split = BTreeSet::new();
    let mut round = |what: &str, figs: &mut Figures| -> Result<Round> {
        let t0 = Instant::now();
        let r = backends_by_source(&fleet.topo, fleet.client, &fleet.sources, CONNS_PER_SOURCE)?;
        figs.note(format!(
            "{what}: {} sources x {CONNS_PER_SOURCE} connections in {:.1}s: {} split, {} failed; sources per backend {:?}",
            fleet.sources.len(),
            t0.elapsed().as_secs_f64(),
            r.split(),
            r.failed.len(),
            r.per_backend()
        ));
        split.extend(r.reached.iter().filter(|(_, b)| b.len() > 1).map(|(s, _)| *s));
        Ok(r)
    };
    round("all ready", figs)?;
    for lb in 0..BALANCERS {
        for svc in ["be_app", "be_app6"] {
            fleet.api(lb, &format!("clear table {svc}"))?;
        }
    }
    for svc in ["be_app", "be_app6"] {
        expect_empty(fleet.api(0, &format!("set server {svc}/app1 state drain"))?)?;
    }
    round("tables cleared, app1 draining on lb1 only", figs)?;
    for svc in ["be_app", "be_app6"] {
        expect_empty(fleet.api(0, &format!("set server {svc}/app1 state ready"))?)?;
    }
    let last = round("app1 ready again on lb1", figs)?;
    figs.set("split_sources", split.len() as f64);
    Ok(last.first())
}

/// Emulates a host that dies: its link goes down at the switch and its agent is killed.
pub fn host_dies(fleet: &Fleet, lb: usize) -> Result<()> {
    fleet.cut_link(lb)?;
    fleet.kill_agent(lb);
    Ok(())
}

/// Emulates the dead host's reboot: what lived in its kernel is gone (table 200's routes, the
/// agent's pins and with them its XDP program), its link comes up, its agent starts.
pub fn host_returns(fleet: &Fleet, lb: usize) -> Result<()> {
    let id = fleet.balancers[lb];
    for family in ["-4", "-6"] {
        fleet.topo.exec(
            id,
            &["ip", family, "route", "flush", "table", &VIP_TABLE.to_string()],
        )?;
    }
    crate::agent::remove_agent_files(&fleet.agents[lb].bpffs);
    fleet.restore_link(lb)?;
    fleet.start_agent(lb)
}

/// A fresh connection per source; (moved against `pins`, failed). Notes the first failures.
fn moved_now(fleet: &Fleet, pins: &BTreeMap<IpAddr, String>, figs: &mut Figures) -> Result<(usize, usize)> {
    let r = backends_by_source(&fleet.topo, fleet.client, &fleet.sources, 1)?;
    figs.failures("fresh connections", r.failed.iter().cloned());
    Ok((moved(pins, &r.first()), r.failed.len()))
}

/// The keep-alive connections for a scenario: from the first [`HELD`] sources.
fn hold(fleet: &Fleet) -> Result<Vec<Held>> {
    let v4 = fleet.sources.iter().filter(|s| s.is_ipv4()).take(HELD * 5 / 6);
    let v6 = fleet.sources.iter().filter(|s| s.is_ipv6()).take(HELD / 6);
    let sources: Vec<IpAddr> = v4.chain(v6).copied().collect();
    Held::open(&fleet.topo, fleet.client, &sources)
}

fn lb_loss(fleet: &Fleet, pins: &BTreeMap<IpAddr, String>, figs: &mut Figures) -> Result<()> {
    let mut held = hold(fleet)?;
    let mut failed = BTreeMap::new();
    let cut = Instant::now();
    host_dies(fleet, 1)?;
    // Requests during the loss (those hashed to lb2 wait for TCP's retransmission) while the
    // router's route is watched.
    let detect = std::thread::scope(|s| {
        let asked = s.spawn(|| check_all(&mut held, &mut failed));
        let d = fleet
            .wait_next_hops(VIPS[0], &[0, 2], ROUTER_BOUND)
            .map(|_| cut.elapsed());
        asked.join().expect("keep-alive thread");
        d
    })?;
    figs.set("lb_loss_detect_s", detect.as_secs_f64());
    let during = failed.len();
    check_all(&mut held, &mut failed);
    figs.set("lb_loss_failed_conns", failed.len() as f64);
    figs.failures(
        "lb2 lost, keep-alive",
        failed.iter().map(|(s, e)| format!("{s}: {e}")),
    );
    moment(
        fleet,
        figs,
        "lb2's host lost (link cut, agent killed), the router has dropped it",
    );
    let (m, f) = moved_now(fleet, pins, figs)?;
    figs.set("lb_loss_moved_sources", m as f64);
    figs.note(format!(
        "lb2 lost: router dropped it {detect:?} after the cut; {HELD} keep-alive connections: {during} failed during, {} in all; fresh connections: {m} moved, {f} failed; route now {}",
        failed.len(),
        one_line(&fleet.router_route(VIPS[0])?)
    ));
    Ok(())
}

fn rejoin(fleet: &Fleet, pins: &BTreeMap<IpAddr, String>, figs: &mut Figures) -> Result<()> {
    let mut held = hold(fleet)?;
    let started = Instant::now();
    host_returns(fleet, 1)?;
    let all: Vec<usize> = (0..BALANCERS).collect();
    fleet.wait_next_hops(VIPS[0], &all, ROUTER_BOUND)?;
    let back = started.elapsed();
    moment(fleet, figs, "lb2 back (rebooted), announced again");
    let peers = fleet.api(1, "show peers")?;
    let mut failed = BTreeMap::new();
    check_all(&mut held, &mut failed);
    figs.set("rejoin_failed_conns", failed.len() as f64);
    figs.failures(
        "lb2 back, keep-alive",
        failed.iter().map(|(s, e)| format!("{s}: {e}")),
    );
    let (m, f) = moved_now(fleet, pins, figs)?;
    figs.set("rejoin_moved_sources", m as f64);
    figs.note(format!(
        "lb2 back (rebooted): its next hop returned {:.2}s after its agent started (warm-up {}); \
         keep-alive: {} failed; fresh: {m} moved, {f} failed; lb2 `show peers` then: {}",
        back.as_secs_f64(),
        AgentOpts::default().warmup,
        failed.len(),
        one_line(&peers)
    ));
    Ok(())
}

fn drain(fleet: &Fleet, figs: &mut Figures) -> Result<()> {
    let mut held = hold(fleet)?;
    let t0 = Instant::now();
    expect_empty(fleet.api(2, "disable announce")?)?;
    let gone = fleet.wait_next_hops(VIPS[0], &[0, 1], ROUTER_BOUND)?;
    moment(fleet, figs, "`disable announce` on lb3");
    let mut failed = BTreeMap::new();
    check_all(&mut held, &mut failed);
    figs.set("drain_failed_conns", failed.len() as f64);
    figs.failures(
        "lb3 out, keep-alive",
        failed.iter().map(|(s, e)| format!("{s}: {e}")),
    );
    figs.note(format!(
        "`disable announce` on lb3: the router dropped it {gone:?} after the command ({:?} in all); keep-alive: {} failed",
        t0.elapsed(),
        failed.len()
    ));
    expect_empty(fleet.api(2, "enable announce")?)?;
    let all: Vec<usize> = (0..BALANCERS).collect();
    fleet.wait_next_hops(VIPS[0], &all, ROUTER_BOUND)?;
    Ok(())
}

/// Whether `show stat` says every server of be_app is DOWN.
fn all_down(stat: &str) -> bool {
    let states: Vec<&str> = stat
        .lines()
        .filter(|l| l.starts_with("be_app,"))
        .filter_map(|l| l.split(',').nth(10))
        .collect();
    !states.is_empty() && states.iter().all(|s| *s == "DOWN")
}

/// Whether `show stat` says every server of every service is UP.
fn all_up(stat: &str) -> bool {
    let states: Vec<&str> = stat
        .lines()
        .filter(|l| !l.starts_with('#') && !l.contains(",BACKEND,"))
        .filter_map(|l| l.split(',').nth(10))
        .collect();
    !states.is_empty() && states.iter().all(|s| *s == "UP")
}

/// Polls `done` (every millisecond or so) until it says yes or `ROUTER_BOUND` passes; when
/// it said yes.
fn first_yes(mut done: impl FnMut() -> Result<bool>) -> Result<Option<Instant>> {
    let t0 = Instant::now();
    while t0.elapsed() < ROUTER_BOUND {
        if done()? {
            return Ok(Some(Instant::now()));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(None)
}

fn withdraw(fleet: &Fleet, figs: &mut Figures) -> Result<()> {
    // Before the failures begin: a check arriving after it may still pass, which makes the
    // DOWN found below no later than the real one, and `withdraw_s` no shorter.
    let t0 = Instant::now();
    for h in &fleet.http {
        h.set_health_status(503);
    }
    // One watcher per balancer and one on the router, each polling on its own.
    let (downs, gone) = std::thread::scope(|s| {
        let downs: Vec<_> = (0..BALANCERS)
            .map(|lb| s.spawn(move || first_yes(|| Ok(all_down(&fleet.api(lb, "show stat")?)))))
            .collect();
        let gone = first_yes(|| Ok(fleet.router_next_hops(VIPS[0])?.is_empty()));
        let downs: Vec<Result<Option<Instant>>> = downs
            .into_iter()
            .map(|h| h.join().expect("watcher thread"))
            .collect();
        (downs, gone)
    });
    moment(
        fleet,
        figs,
        "every server of be_app DOWN (be_app6's checks fail too)",
    );
    for h in &fleet.http {
        h.set_health_status(200);
    }
    let downs = downs.into_iter().collect::<Result<Option<Vec<_>>>>()?;
    let (Some(downs), Some(gone)) = (downs, gone?) else {
        bail!("within {ROUTER_BOUND:?}, not every balancer saw be_app's servers DOWN or the route stayed");
    };
    // A server goes DOWN on a balancer with its `fall`-th failed check: the `fall`-th check
    // from that balancer to arrive at the server after the failures began (the backend notes
    // when each arrives; it answers at once). The last of those is the last DOWN.
    let fall = AgentOpts::default().fall as usize;
    let mut last_down: Option<Instant> = None;
    for lb in &fleet.balancers {
        let checker = IpAddr::from(fleet.topo.host(*lb).ipv4);
        for h in &fleet.http {
            let failed_check = h
                .health_checks_from(checker)
                .into_iter()
                .filter(|t| *t > t0)
                .nth(fall - 1)
                .with_context(|| format!("{} got fewer than {fall} checks from {checker}", h.name()))?;
            last_down = last_down.max(Some(failed_check));
        }
    }
    let last_down = last_down.context("no balancer")?;
    let last_down_seen = *downs.iter().max().expect("three balancers");
    let s = gone.saturating_duration_since(last_down);
    figs.set("withdraw_s", s.as_secs_f64());
    let all: Vec<usize> = (0..BALANCERS).collect();
    let back = Instant::now();
    fleet.wait_next_hops(VIPS[0], &all, ROUTER_BOUND)?;
    // Every server of both services UP again on every balancer: the health transitions (and
    // the table rebuilds they make) are over before the next scenario measures anything.
    for lb in 0..BALANCERS {
        if first_yes(|| Ok(all_up(&fleet.api(lb, "show stat")?)))?.is_none() {
            bail!(
                "lb{}'s servers were not all UP again within {ROUTER_BOUND:?}",
                lb + 1
            );
        }
    }
    figs.note(format!(
        "every server DOWN: the last DOWN (the {fall}th failing check to arrive) {:?} after the checks began \
         failing; the route was seen gone {s:?} after it (polled every millisecond or so); the last balancer's \
         `show stat` said all DOWN {:?} after the failures began; back on all three {:?} after the servers were \
         healthy again",
        last_down - t0,
        last_down_seen - t0,
        back.elapsed()
    ));
    Ok(())
}

fn agent_kill(fleet: &Fleet, figs: &mut Figures) -> Result<()> {
    let mut held = hold(fleet)?;
    let mut failed = BTreeMap::new();
    fleet.kill_agent(0);
    let fresh = std::thread::scope(|s| {
        let asked = s.spawn(|| check_all(&mut held, &mut failed));
        let fresh = backends_by_source(&fleet.topo, fleet.client, &fleet.sources, 1);
        asked.join().expect("keep-alive thread");
        fresh
    })?;
    check_all(&mut held, &mut failed);
    let all: Vec<usize> = (0..BALANCERS).collect();
    let hops = fleet.router_next_hops(VIPS[0])?;
    let kept = hops.len() == BALANCERS;
    figs.set(
        "agent_kill_failed_conns",
        (failed.len() + fresh.failed.len()) as f64,
    );
    figs.failures(
        "lb1's agent killed",
        failed
            .iter()
            .map(|(s, e)| format!("{s} (keep-alive): {e}"))
            .chain(fresh.failed.iter().cloned()),
    );
    fleet.start_agent(0)?;
    fleet.wait_next_hops(VIPS[0], &all, ROUTER_BOUND)?;
    figs.note(format!(
        "lb1's agent killed (-9): keep-alive {} failed, fresh {} of {} failed; the router kept {} next hops{}",
        failed.len(),
        fresh.failed.len(),
        fleet.sources.len(),
        hops.len(),
        if kept { "" } else { " (SOME WITHDRAWN)" }
    ));
    Ok(())
}

/// An API answer that must be empty (a command that succeeded).
fn expect_empty(answer: String) -> Result<()> {
    if answer.trim().is_empty() {
        Ok(())
    } else {
        bail!("the agent answered: {}", answer.trim())
    }
}

/// `text` on one line.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
