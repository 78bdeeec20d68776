//! The timeline of one silent-loss run: what the agent showed about the failed server, watched
//! every [`POLL`] from before the drop — `show stat` (its state; the first increase of any
//! column whose name holds `retrans`, and the first attempts without a handshake: `syn_sent`
//! rising over two polls while `handshakes` stays, the passive counters, when the agent has
//! them) and each
//! new line of the agent's log naming the server (suspicion, confirming check, DOWN, with the
//! agent's own words) — then the first redispatched connection, from the clients' log.
//! Printed with the figures and written to `target/xlb-bench/failover-timeline.json`, beside
//! `failover.json` (which holds the figures only).

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use serde_json::json;

use super::{load::Load, round3};
use crate::lbenv::{LbEnv, api_at};

/// How often the watcher looks.
const POLL: Duration = Duration::from_millis(20);

/// The side file.
pub const SIDE_FILE: &str = "target/xlb-bench/failover-timeline.json";

/// Something seen, and when (seconds since the clients began; since the drop after [`since`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub at: f64,
    pub what: String,
}

/// Watches the agent on a thread of its own until [`Watcher::finish`] (or until dropped).
pub struct Watcher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Event>>>,
}

impl Watcher {
    /// Starts watching `server` of be_app (times on `load`'s clock).
    pub fn start(e: &LbEnv, server: &str, load: &Load) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let socket = e.socket.clone();
        let dir = e.dir.clone();
        let server = server.to_string();
        let t0 = Instant::now() - load.elapsed();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || watch(&socket, &dir, &server, t0, &flag));
        Watcher {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops watching; what was seen.
    pub fn finish(mut self) -> Vec<Event> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn watch(
    socket: &std::path::Path,
    dir: &std::path::Path,
    server: &str,
    t0: Instant,
    stop: &AtomicBool,
) -> Vec<Event> {
    let mut events = Vec::new();
    let who = format!("be_app/{server}");
    let log_len = agent_logs(dir).len();
    let mut seen_log = log_len;
    let mut state: Option<String> = None;
    let mut retrans_start: Option<BTreeMap<String, u64>> = None;
    let mut retrans_seen = false;
    let mut unanswered = Unanswered::default();
    while !stop.load(Ordering::SeqCst) {
        let now = t0.elapsed().as_secs_f64();
        if let Ok(stat) = api_at(socket, "show stat")
            && let Some(row) = stat_row(&stat, server)
        {
            let st = row.get("status").cloned().unwrap_or_default();
            if state.as_ref() != Some(&st) {
                if state.is_some() {
                    events.push(Event {
                        at: now,
                        what: format!("show stat: {who} {st}"),
                    });
                }
                state = Some(st);
            }
            let retrans = retrans_columns(&row);
            match &retrans_start {
                None => retrans_start = Some(retrans),
                Some(first) if !retrans_seen => {
                    if let Some((col, v)) = retrans
                        .iter()
                        .find(|(c, v)| first.get(*c).is_some_and(|f| *v > f))
                    {
                        retrans_seen = true;
                        events.push(Event {
                            at: now,
                            what: format!("show stat: {who} {col} rose to {v} (first retransmits seen)"),
                        });
                    }
                }
                Some(_) => {}
            }
            if let Some(what) = unanswered.poll(&row, now) {
                events.push(Event {
                    at: unanswered.since,
                    what: format!("show stat: {who} {what}"),
                });
            }
        }
        let log = agent_logs(dir);
        if log.len() > seen_log {
            for line in log[seen_log..]
                .lines()
                .filter(|l| l.contains(&who) || l.contains(&format!(" {server}")))
            {
                events.push(Event {
                    at: now,
                    what: format!("agent log: {}", line.split_once("] ").map_or(line, |(_, m)| m)),
                });
            }
            seen_log = log.len();
        }
        std::thread::sleep(POLL);
    }
    if retrans_start.as_ref().is_some_and(BTreeMap::is_empty) {
        events.push(Event {
            at: f64::NAN,
            what: "no retransmit counter in `show stat` (this agent has no passive counters)".into(),
        });
    }
    events
}

/// Finds the first attempts without a handshake in successive `show stat` rows: `syn_sent`
/// rising at two polls in a row while `handshakes` stays (a handshake follows its SYN within
/// microseconds here, so one poll may catch a SYN before its handshake, two hardly).
#[derive(Default)]
struct Unanswered {
    last: Option<(u64, u64)>,
    /// Polls in a row with new attempts and no new handshake, and when the first of them was.
    streak: u32,
    since: f64,
    /// (syn_sent, handshakes) before the streak.
    from: (u64, u64),
    seen: bool,
}

impl Unanswered {
    /// Takes one row read at `now`; the event's text once the streak is two polls long.
    fn poll(&mut self, row: &BTreeMap<String, String>, now: f64) -> Option<String> {
        let num = |c: &str| row.get(c).and_then(|v| v.parse::<u64>().ok());
        let (sent, hs) = (num("syn_sent")?, num("handshakes")?);
        let last = self.last.replace((sent, hs))?;
        if self.seen {
            return None;
        }
        if sent > last.0 && hs == last.1 {
            if self.streak == 0 {
                self.since = now;
                self.from = last;
            }
            self.streak += 1;
        } else {
            self.streak = 0;
        }
        (self.streak == 2).then(|| {
            self.seen = true;
            format!(
                "syn_sent rose {} -> {} with handshakes still {} (first attempts without a handshake)",
                self.from.0, sent, self.from.1
            )
        })
    }
}

/// Every agent log of the environment's directory, in order.
fn agent_logs(dir: &std::path::Path) -> String {
    (0..)
        .map(|i| dir.join(format!("agent{i}.log")))
        .take_while(|p| p.exists())
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect()
}

/// `server`'s row of be_app in a `show stat` answer, by column name.
pub fn stat_row(stat: &str, server: &str) -> Option<BTreeMap<String, String>> {
    let header = stat.lines().next()?.trim_start_matches("# ");
    let names: Vec<&str> = header.split(',').collect();
    let row = stat
        .lines()
        .find(|l| l.starts_with(&format!("be_app,{server},")))?;
    Some(
        names
            .iter()
            .zip(row.split(','))
            .filter(|(n, _)| !n.is_empty())
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
    )
}

/// The columns of a row whose name holds `retrans`, as numbers.
pub fn retrans_columns(row: &BTreeMap<String, String>) -> BTreeMap<String, u64> {
    row.iter()
        .filter(|(n, _)| n.contains("retrans"))
        .filter_map(|(n, v)| Some((n.clone(), v.parse().ok()?)))
        .collect()
}

/// Adds the first redispatched connection among `r` (seconds since the fault at `at`).
pub fn add_first_redispatch(events: &mut Vec<Event>, r: &BTreeMap<IpAddr, Option<f64>>, at: Duration) {
    let first = r
        .iter()
        .filter_map(|(s, t)| Some((t.as_ref()?, s)))
        .min_by(|a, b| a.0.total_cmp(b.0));
    if let Some((t, src)) = first {
        events.push(Event {
            at: at.as_secs_f64() + t,
            what: format!("first redispatched connection ({src} answered by another backend)"),
        });
    }
}

/// `events` in seconds since the drop on `server` at `at`, with the drop itself, in order
/// (undated notes last).
pub fn since(events: Vec<Event>, at: Duration, server: &str) -> Vec<Event> {
    let at = at.as_secs_f64();
    let mut out: Vec<Event> = std::iter::once(Event {
        at: 0.0,
        what: format!("drop began (every packet to the VIPs and {server}'s addresses)"),
    })
    .chain(events.into_iter().map(|e| Event { at: e.at - at, ..e }))
    .collect();
    out.sort_by(|a, b| match (a.at.is_nan(), b.at.is_nan()) {
        (false, false) => a.at.total_cmp(&b.at),
        (x, y) => x.cmp(&y),
    });
    out
}

/// The timeline as text.
pub fn render(events: &[Event]) -> String {
    let mut s = String::from("  timeline of the silent loss (s since the drop began):\n");
    for e in events {
        if e.at.is_nan() {
            s.push_str(&format!("          {}\n", e.what));
        } else {
            s.push_str(&format!("    {:+7.3} {}\n", e.at, e.what));
        }
    }
    s
}

/// Writes the timeline and the notes to [`SIDE_FILE`]; its path.
pub fn write_side_file(events: &[Event], notes: &[String]) -> Result<PathBuf> {
    let path = PathBuf::from(SIDE_FILE);
    let timeline: Vec<_> = events
        .iter()
        .map(|e| json!({"t_s": if e.at.is_nan() { serde_json::Value::Null } else { json!(round3(e.at)) }, "event": e.what}))
        .collect();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, json!({"timeline": timeline, "notes": notes}).to_string())
        .with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_row_reads_columns_by_name() {
        let stat = "# pxname,svname,status,syn_retrans,\nbe_app,app1,UP,0,\nbe_app,app2,DOWN,14,\n";
        let row = stat_row(stat, "app2").expect("row");
        assert_eq!(row["status"], "DOWN");
        assert_eq!(
            retrans_columns(&row),
            BTreeMap::from([("syn_retrans".to_string(), 14)])
        );
        assert!(stat_row(stat, "app9").is_none());
    }

    #[test]
    fn unanswered_attempts_are_seen_at_the_first_of_two_polls() {
        let row = |sent: u64, hs: u64| {
            BTreeMap::from([
                ("syn_sent".to_string(), sent.to_string()),
                ("handshakes".to_string(), hs.to_string()),
            ])
        };
        let mut u = Unanswered::default();
        assert_eq!(u.poll(&row(10, 10), 1.0), None);
        // One poll catches a SYN before its handshake: no event.
        assert_eq!(u.poll(&row(11, 10), 1.1), None);
        assert_eq!(u.poll(&row(12, 12), 1.2), None);
        assert_eq!(u.poll(&row(14, 12), 1.3), None);
        assert_eq!(
            u.poll(&row(15, 12), 1.4).as_deref(),
            Some("syn_sent rose 12 -> 15 with handshakes still 12 (first attempts without a handshake)")
        );
        assert_eq!(u.since, 1.3);
        assert_eq!(u.poll(&row(19, 12), 1.5), None, "once");
    }

    #[test]
    fn since_puts_the_drop_first_and_undated_notes_last() {
        let ev = |at: f64, w: &str| Event { at, what: w.into() };
        let out = since(
            vec![ev(f64::NAN, "note"), ev(9.5, "down"), ev(8.25, "suspicion")],
            Duration::from_secs(3),
            "app2",
        );
        let whats: Vec<&str> = out.iter().map(|e| e.what.as_str()).collect();
        assert_eq!(whats[1..], ["suspicion", "down", "note"]);
        assert_eq!(out[1].at, 5.25);
        assert!(out[0].what.starts_with("drop began"));
    }
}
