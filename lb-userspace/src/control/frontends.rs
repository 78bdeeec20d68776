//! The announcements as operators see and steer them (with `[announce]` configured): the
//! operator's disables (`disable frontend <service>`, `disable announce`), kept in a state file
//! so that they survive a restart of the agent; the warm-up after a start; the addresses the
//! announcer last routed; and `show frontends`.
//!
//! The disables live in a small text file next to the instance lock in `/run/xlb` (see
//! `agent::announcer::state_path`), not in the pinned maps: bpffs holds pinned objects only,
//! not files, and a map slot would need a new pin format for a few names. `/run` is a tmpfs,
//! so the file lives exactly as long as the pins do (both go at a reboot), it is keyed by
//! service name (an id can be handed to another service after a reload), and an operator can
//! read it. `xlb detach` removes it with the routes.
//!
//! The announcer (in `agent`) waits on [`Frontends::poked`]; the agent pokes it after every
//! event that can change a verdict.

use std::{
    collections::{BTreeSet, HashSet},
    fmt::Write as _,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use tokio::sync::{Notify, watch};

use crate::{
    balancer::{
        Svc,
        announce::{self, Inputs, Verdict, Warmth, WhyNot},
    },
    config::Announce,
};

/// What the operator decided, as the state file holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Disables {
    /// `disable announce`.
    pub balancer_out: bool,
    /// `disable frontend <service>`.
    pub frontends: HashSet<String>,
}

impl Disables {
    const HEADER: &str = "# xlb: the operator's disables of announcements (written by the agent)\n";

    /// The state file's text: one command per line, as the runtime API takes them.
    pub fn to_text(&self) -> String {
        let mut out = String::from(Self::HEADER);
        if self.balancer_out {
            out.push_str("disable announce\n");
        }
        let mut names: Vec<&String> = self.frontends.iter().collect();
        names.sort();
        for n in names {
            let _ = writeln!(out, "disable frontend {n}");
        }
        out
    }

    /// Read back [`Disables::to_text`]; other lines are skipped with a warning.
    pub fn from_text(text: &str, origin: &Path) -> Disables {
        let mut d = Disables::default();
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            match line.split_whitespace().collect::<Vec<_>>()[..] {
                ["disable", "announce"] => d.balancer_out = true,
                ["disable", "frontend", name] => {
                    d.frontends.insert(name.to_string());
                }
                _ => log::warn!("{}: ignoring line {line:?}", origin.display()),
            }
        }
        d
    }
}

pub struct Frontends {
    /// The routing table of the VIP routes.
    pub table: u32,
    warmup: Duration,
    started: Instant,
    /// Configured peers, and how many have sent their full teach.
    peers: usize,
    taught: watch::Receiver<usize>,
    /// Set once the agent is warm; it stays warm.
    warm: AtomicBool,
    state_file: PathBuf,
    disables: Mutex<Disables>,
    /// The addresses the announcer's last pass left routed.
    routed: Mutex<BTreeSet<IpAddr>>,
    poke: Notify,
}

impl Frontends {
    /// The announcements of an agent started at `started` with `peers` peers, whose full-teach
    /// count `taught` reports; the operator's disables are read from `state_file` (absent:
    /// none).
    pub fn new(
        cfg: &Announce,
        started: Instant,
        peers: usize,
        taught: watch::Receiver<usize>,
        state_file: PathBuf,
    ) -> std::io::Result<Frontends> {
        let disables = match std::fs::read_to_string(&state_file) {
            Ok(text) => Disables::from_text(&text, &state_file),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Disables::default(),
            Err(e) => return Err(e),
        };
        Ok(Frontends {
            table: cfg.table,
            warmup: cfg.warmup,
            started,
            peers,
            taught,
            warm: AtomicBool::new(false),
            state_file,
            disables: Mutex::new(disables),
            routed: Mutex::new(BTreeSet::new()),
            poke: Notify::new(),
        })
    }

    /// Whether the agent is warm now: every peer taught it, or the warm-up passed, or it has
    /// no peer.
    pub fn warmth(&self) -> Warmth {
        if self.warm.load(Relaxed) {
            return Warmth::Warm;
        }
        let taught = *self.taught.borrow();
        let left = self.warmup.saturating_sub(self.started.elapsed());
        if self.peers == 0 || taught >= self.peers || left.is_zero() {
            self.warm.store(true, Relaxed);
            return Warmth::Warm;
        }
        Warmth::Warming {
            taught,
            peers: self.peers,
            left,
        }
    }

    /// When the warm-up ends, while it runs.
    pub fn warm_deadline(&self) -> Option<Instant> {
        match self.warmth() {
            Warmth::Warm => None,
            Warmth::Warming { left, .. } => Some(Instant::now() + left),
        }
    }

    /// The full-teach count, for the announcer to wait on.
    pub fn taught(&self) -> watch::Receiver<usize> {
        self.taught.clone()
    }

    /// Where the operator's disables are kept.
    pub fn state_file(&self) -> &Path {
        &self.state_file
    }

    /// Every service's verdict now.
    pub fn verdicts(&self, services: &[Svc]) -> Vec<Verdict> {
        let d = self.disables();
        let inputs = Inputs {
            balancer_out: d.balancer_out,
            disabled: &d.frontends,
            warmth: self.warmth(),
        };
        announce::decide(services, &inputs)
    }

    /// Wake the announcer: something a verdict depends on may have changed.
    pub fn poke(&self) {
        self.poke.notify_one();
    }

    /// Wait for [`Frontends::poke`].
    pub async fn poked(&self) {
        self.poke.notified().await
    }

    /// The announcer's last pass left these addresses routed.
    pub fn set_routed(&self, routed: BTreeSet<IpAddr>) {
        *lock(&self.routed) = routed;
    }

    pub fn is_routed(&self, vip: IpAddr) -> bool {
        lock(&self.routed).contains(&vip)
    }

    /// `disable|enable frontend <service>`: saved, then in force (the caller pokes).
    pub fn set_frontend_disabled(&self, service: &str, disabled: bool) -> std::io::Result<()> {
        self.change(|d| {
            if disabled {
                d.frontends.insert(service.to_string());
            } else {
                d.frontends.remove(service);
            }
        })
    }

    /// `disable|enable announce`: saved, then in force (the caller pokes).
    pub fn set_balancer_out(&self, out: bool) -> std::io::Result<()> {
        self.change(|d| d.balancer_out = out)
    }

    fn change(&self, f: impl FnOnce(&mut Disables)) -> std::io::Result<()> {
        let mut d = self.disables();
        let mut new = d.clone();
        f(&mut new);
        if new != *d {
            // Written whole and renamed into place: a crash leaves the old file or the new one.
            let tmp = self.state_file.with_extension("tmp");
            std::fs::write(&tmp, new.to_text())?;
            std::fs::rename(&tmp, &self.state_file)?;
            *d = new;
        }
        self.poke();
        Ok(())
    }

    fn disables(&self) -> MutexGuard<'_, Disables> {
        lock(&self.disables)
    }

    /// `show frontends`: one line per service — name, VIP, whether its address is announced,
    /// and why not (or why a route is still there or not yet there).
    pub fn show(&self, services: &[Svc]) -> String {
        let verdicts = self.verdicts(services);
        let mut out = format!("# table {}\n# frontend vip announced reason\n", self.table);
        for v in &verdicts {
            let routed = self.is_routed(v.vip);
            let reason = match (&v.why_not, routed) {
                (None, true) => "-".to_string(),
                (None, false) => "announcement pending".to_string(),
                (Some(w), false) => w.to_string(),
                (Some(w), true) => format!("{w}; {}", why_routed(v, w, &verdicts)),
            };
            let _ = writeln!(
                out,
                "{} {} {} {reason}",
                v.service,
                v.vip,
                if routed { "yes" } else { "no" }
            );
        }
        out
    }
}

/// Why the address of `v`, not announced for `why`, still has a route.
fn why_routed(v: &Verdict, why: &WhyNot, all: &[Verdict]) -> String {
    if let Some(other) = all.iter().find(|o| o.vip == v.vip && o.why_not.is_none()) {
        format!("address announced for {}", other.service)
    } else if matches!(why, WhyNot::WarmingUp { .. }) {
        "route kept until warm".into()
    } else {
        "withdrawal pending".into()
    }
}

/// A small lock of its own, held only to copy or replace what it guards.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_file_reads_back_what_it_wrote() {
        let d = Disables {
            balancer_out: true,
            frontends: ["web".to_string(), "dns".to_string()].into(),
        };
        let text = d.to_text();
        assert_eq!(
            text,
            "# xlb: the operator's disables of announcements (written by the agent)\n\
             disable announce\ndisable frontend dns\ndisable frontend web\n"
        );
        assert_eq!(Disables::from_text(&text, Path::new("x")), d);
        assert_eq!(
            Disables::from_text("bogus\n\ndisable frontend a\n", Path::new("x")),
            Disables {
                balancer_out: false,
                frontends: ["a".to_string()].into()
            }
        );
    }

    #[test]
    fn without_peers_the_agent_is_warm_at_once_and_with_them_after_the_warm_up() {
        let cfg = Announce {
            table: 200,
            warmup: Duration::from_secs(10),
        };
        let file = PathBuf::from("/nonexistent/xlb-announce");
        let (tx, rx) = watch::channel(0);
        let alone = Frontends::new(&cfg, Instant::now(), 0, rx.clone(), file.clone()).unwrap();
        assert_eq!(alone.warmth(), Warmth::Warm);
        assert_eq!(alone.warm_deadline(), None);
        let two = Frontends::new(&cfg, Instant::now(), 2, rx.clone(), file.clone()).unwrap();
        assert!(matches!(
            two.warmth(),
            Warmth::Warming {
                taught: 0,
                peers: 2,
                ..
            }
        ));
        tx.send(1).unwrap();
        assert!(matches!(
            two.warmth(),
            Warmth::Warming {
                taught: 1,
                peers: 2,
                ..
            }
        ));
        tx.send(2).unwrap();
        assert_eq!(two.warmth(), Warmth::Warm);
        // Warm stays warm.
        tx.send(0).unwrap();
        assert_eq!(two.warmth(), Warmth::Warm);
        let long_ago = Instant::now() - Duration::from_secs(11);
        let late = Frontends::new(&cfg, long_ago, 2, rx, file).unwrap();
        assert_eq!(late.warmth(), Warmth::Warm);
    }
}
