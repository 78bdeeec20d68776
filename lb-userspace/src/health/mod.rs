//! Health checks as HAProxy defines them: the checker, a state machine per target.
//!
//! One check loop per target. The first check runs after a random delay in `[0, inter)` so that
//! many servers configured at once do not check in lockstep; after that a check starts `inter`
//! after the previous one finished (checks of one target never overlap). Every check is bounded
//! by `timeout` as a whole (connect, request and status line together); the checks themselves,
//! `tcp` and `http`, are in `probe.rs`.
//!
//! `rise` consecutive successes move a server from Down to Up, `fall` consecutive failures move
//! it from Up to Down; a result resets the opposite counter. A [`Transition`] goes to the agent
//! only on an actual change of state, with the last result and the count
//! (`"connect refused, 3/3 failed"`, `"HTTP 200 in 1ms, 2/2 succeeded"`).
//!
//! This group spawns nothing: [`HealthChecker::new`] also returns a [`CheckRunner`], one future
//! that drives every target's loop, and the agent spawns it. [`HealthChecker::set`] hands it a
//! new loop. Loops are cancelled through a `watch` channel: [`HealthChecker::remove`] stops one
//! target, [`HealthChecker::shutdown`] stops all and waits until the runner has dropped them. A
//! loop whose target was removed or replaced can no longer change the shared state nor send a
//! transition (each loop carries a generation checked under the lock), so after `remove` returns
//! nothing more is reported for that key. The state is shared behind a std `Mutex` (never held
//! across an `.await`) and can be read from other tasks through a [`StatusView`].
//!
//! Passive health (`passive`: the detector) suspects a target through
//! [`HealthChecker::suspect`] (`suspicion`: per `on_error`); `schedule` spaces the checks by
//! state (`fastinter`, `downinter`). A DOWN it leads to says so (`passive: ...; confirmed by ...`).

pub mod passive;
mod probe;
mod schedule;
mod suspicion;
#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use futures_util::{
    StreamExt as _,
    future::{BoxFuture, FutureExt as _},
    stream::FuturesUnordered,
};
use tokio::sync::{Notify, mpsc, oneshot, watch};

use crate::config::{self, HealthKind, format_duration};
use probe::check_within;
use schedule::jitter;

/// The agent's opaque id of a target: (service, server).
pub type TargetKey = (String, String);

/// One target's check: what, where, how often and the thresholds. Built by [`CheckSpec::new`],
/// so that its kind is never `none`: a server without checks has no spec.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckSpec {
    /// `tcp` or `http`.
    kind: HealthKind,
    addr: SocketAddr,
    /// Delay between the end of a check and the start of the next one.
    inter: Duration,
    /// Bound on one whole check (connect + request + status line).
    timeout: Duration,
    /// Consecutive successes that move Down to Up (0 counts as 1).
    rise: u32,
    /// Consecutive failures that move Up to Down (0 counts as 1).
    fall: u32,
    /// Delay between checks while the target is suspected (`inter` unless set).
    fastinter: Duration,
    /// Delay between checks while the target is Down (`inter` unless set).
    downinter: Duration,
}

impl CheckSpec {
    /// The check `health` asks for at `addr`; `None` when its kind is `none` (checks off).
    pub fn new(health: &config::Health, addr: SocketAddr) -> Option<CheckSpec> {
        if health.kind == HealthKind::None {
            return None;
        }
        Some(CheckSpec {
            kind: health.kind.clone(),
            addr,
            inter: health.inter,
            timeout: health.timeout,
            rise: health.rise,
            fall: health.fall,
            fastinter: health.inter,
            downinter: health.inter,
        })
    }

    /// The same check, every `fastinter` while suspected and every `downinter` while Down.
    pub fn with_intervals(self, fastinter: Duration, downinter: Duration) -> CheckSpec {
        CheckSpec {
            fastinter,
            downinter,
            ..self
        }
    }
}

/// A target's health as seen by the checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Up,
    Down,
}

/// One result of one check.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Ok {
        latency: Duration,
    },
    Failed {
        /// E.g. "connect refused", "timeout after 2s while connecting",
        /// "HTTP status 503, expected 200", "connection closed before status line".
        reason: String,
        latency: Duration,
    },
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok { .. })
    }

    /// Time from the start of the check to its result.
    pub fn latency(&self) -> Duration {
        match self {
            Outcome::Ok { latency } | Outcome::Failed { latency, .. } => *latency,
        }
    }

    /// The failure reason, if it failed.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Outcome::Ok { .. } => None,
            Outcome::Failed { reason, .. } => Some(reason),
        }
    }
}

/// A state change, sent to the agent.
#[derive(Debug, Clone)]
pub struct Transition {
    pub key: TargetKey,
    pub to: Health,
    /// E.g. "connect refused, 3/3 failed" or "HTTP 200 in 1ms, 2/2 succeeded".
    pub reason: String,
}

/// A target's latest state, for `show servers state` and metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckStatus {
    pub health: Health,
    /// Consecutive successful checks (0 after a failure).
    pub consecutive_ok: u32,
    /// Consecutive failed checks (0 after a success).
    pub consecutive_failed: u32,
    /// The latest check's result; `None` before the first check of the current spec ended.
    pub last_outcome: Option<Outcome>,
    /// Latency of the latest check (kept across a spec change).
    pub last_latency: Option<Duration>,
    /// Reason of the latest failed check (kept across successes and spec changes).
    pub last_failure: Option<String>,
    /// Checks run for this key since it was first set.
    pub checks: u64,
    /// When `health` last changed (or the key was first set).
    pub since: Instant,
    /// The thresholds in force (effective values, at least 1).
    pub rise: u32,
    pub fall: u32,
    /// Why passive health suspects the target (`passive: ...`), until its checks confirm it
    /// (DOWN) or clear it (a successful check).
    pub suspicion: Option<String>,
    /// The reason of the latest change to Down (kept until the next one).
    pub last_down: Option<String>,
}

impl CheckStatus {
    /// HAProxy's `check_health` counter, in `[0, rise + fall - 1]`: the server is up at
    /// `rise` or above; each failure takes one off, each success adds one.
    pub fn haproxy_health(&self) -> u32 {
        match self.health {
            Health::Up => {
                (self.rise + self.fall - 1).saturating_sub(self.consecutive_failed.min(self.fall - 1))
            }
            Health::Down => self.consecutive_ok.min(self.rise - 1),
        }
    }
}

struct Slot {
    /// The generation of the loop allowed to write this slot.
    generation: u64,
    status: CheckStatus,
}

type SharedMap = Arc<Mutex<HashMap<TargetKey, Slot>>>;

fn lock(m: &Mutex<HashMap<TargetKey, Slot>>) -> MutexGuard<'_, HashMap<TargetKey, Slot>> {
    // A panic while holding the lock leaves plain data behind; keep using it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A cheap, cloneable read handle on every target's [`CheckStatus`], for other tasks.
#[derive(Clone)]
pub struct StatusView(SharedMap);

impl StatusView {
    pub fn get(&self, key: &TargetKey) -> Option<CheckStatus> {
        lock(&self.0).get(key).map(|s| s.status.clone())
    }

    /// Every target's status, sorted by key.
    pub fn all(&self) -> Vec<(TargetKey, CheckStatus)> {
        let mut v: Vec<_> = lock(&self.0)
            .iter()
            .map(|(k, s)| (k.clone(), s.status.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

/// One target's check loop, as the [`CheckRunner`] drives it.
type CheckLoop = BoxFuture<'static, ()>;

/// A target's check loop, as the checker knows it.
struct Running {
    spec: CheckSpec,
    /// Sending `true` (or dropping the sender) stops the loop. Closed once the loop has ended
    /// (the loop owns the only receiver).
    cancel: watch::Sender<bool>,
    /// Wakes the loop for a check now (a suspicion).
    now: Arc<Notify>,
}

/// Owns one check loop per target; its [`CheckRunner`] runs them.
pub struct HealthChecker {
    events: mpsc::UnboundedSender<Transition>,
    running: HashMap<TargetKey, Running>,
    shared: SharedMap,
    next_generation: u64,
    /// New loops, to the runner.
    loops: mpsc::UnboundedSender<CheckLoop>,
    /// Ends (with an error: nothing is ever sent) once the runner has dropped every loop.
    runner_done: oneshot::Receiver<()>,
}

/// Drives every target's check loop at once, in one future: the agent spawns
/// [`CheckRunner::run`].
pub struct CheckRunner {
    loops: mpsc::UnboundedReceiver<CheckLoop>,
    /// Dropped once every loop is.
    done: oneshot::Sender<()>,
}

impl CheckRunner {
    /// Run the loops the checker hands over until the checker shuts down or is dropped; then
    /// drop the loops left (a check in flight with them, its socket closed).
    pub async fn run(self) {
        let CheckRunner { mut loops, done } = self;
        let mut running = FuturesUnordered::new();
        loop {
            tokio::select! {
                new = loops.recv() => match new {
                    Some(check_loop) => running.push(check_loop),
                    None => break,
                },
                // A loop ends when it is cancelled or its target removed or replaced.
                Some(()) = running.next() => {}
            }
        }
        drop(running);
        // Only now, with every loop and its sender of transitions gone, may `shutdown` return.
        drop(done);
    }
}

impl HealthChecker {
    /// The checker, and the runner of its check loops, which the caller must spawn (nothing is
    /// checked until it runs).
    pub fn new(events: mpsc::UnboundedSender<Transition>) -> (HealthChecker, CheckRunner) {
        let (loops, new_loops) = mpsc::unbounded_channel();
        let (done, runner_done) = oneshot::channel();
        let checker = HealthChecker {
            events,
            running: HashMap::new(),
            shared: Arc::new(Mutex::new(HashMap::new())),
            next_generation: 1,
            loops,
            runner_done,
        };
        (
            checker,
            CheckRunner {
                loops: new_loops,
                done,
            },
        )
    }

    /// Start the check loop for `key` in state `initial`, or restart it with a new spec.
    ///
    /// The same spec as the running one is a no-op (the loop and its counters go on: a reload
    /// that changes nothing for this target disturbs nothing). A different spec restarts only
    /// this target's loop and keeps its current health (`initial` is then ignored: the checker's
    /// own state is the freshest); the consecutive counters restart from zero under the new spec.
    pub fn set(&mut self, key: TargetKey, spec: CheckSpec, initial: Health) {
        if let Some(t) = self.running.get(&key)
            && t.spec == spec
            && !t.cancel.is_closed()
        {
            return;
        }
        if let Some(old) = self.running.remove(&key) {
            stop(old);
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        let (rise, fall) = (spec.rise.max(1), spec.fall.max(1));
        {
            let mut map = lock(&self.shared);
            match map.get_mut(&key) {
                Some(slot) => {
                    // Restart: the old loop can no longer write; state carries over.
                    slot.generation = generation;
                    let s = &mut slot.status;
                    s.consecutive_ok = 0;
                    s.consecutive_failed = 0;
                    s.last_outcome = None;
                    s.rise = rise;
                    s.fall = fall;
                }
                None => {
                    map.insert(
                        key.clone(),
                        Slot {
                            generation,
                            status: CheckStatus {
                                health: initial,
                                consecutive_ok: 0,
                                consecutive_failed: 0,
                                last_outcome: None,
                                last_latency: None,
                                last_failure: None,
                                checks: 0,
                                since: Instant::now(),
                                rise,
                                fall,
                                suspicion: None,
                                last_down: None,
                            },
                        },
                    );
                }
            }
        }
        let (cancel, cancelled) = watch::channel(false);
        let now = Arc::new(Notify::new());
        let first = jitter(&key, generation, spec.inter);
        let check_loop = check_loop(
            key.clone(),
            spec.clone(),
            generation,
            first,
            self.shared.clone(),
            self.events.clone(),
            (cancelled, now.clone()),
        );
        // Refused only when the runner has ended; the loop is then dropped, as at a shutdown.
        let _ = self.loops.send(check_loop.boxed());
        self.running.insert(key, Running { spec, cancel, now });
    }

    /// Stop the check loop for `key` and forget its state. Once this returns, no transition for
    /// this key is sent any more (an in-flight check is dropped, its socket closed).
    pub fn remove(&mut self, key: &TargetKey) {
        lock(&self.shared).remove(key);
        if let Some(t) = self.running.remove(key) {
            stop(t);
        }
    }

    /// Latest state, consecutive counters, last latency, last failure reason.
    pub fn status(&self, key: &TargetKey) -> Option<CheckStatus> {
        lock(&self.shared).get(key).map(|s| s.status.clone())
    }

    /// A handle for reading statuses from other tasks.
    pub fn view(&self) -> StatusView {
        StatusView(self.shared.clone())
    }

    /// The keys with a running check loop, sorted.
    pub fn keys(&self) -> Vec<TargetKey> {
        let mut v: Vec<_> = self.running.keys().cloned().collect();
        v.sort();
        v
    }

    /// The spec in force for `key`.
    pub fn spec(&self, key: &TargetKey) -> Option<&CheckSpec> {
        self.running.get(key).map(|t| &t.spec)
    }

    /// Stop every check loop and wait until the runner has dropped them all.
    pub async fn shutdown(self) {
        let HealthChecker {
            shared,
            running,
            loops,
            runner_done,
            ..
        } = self;
        lock(&shared).clear();
        for t in running.values() {
            let _ = t.cancel.send(true);
        }
        // With no sender of loops left, the runner drops every loop and ends; it may also have
        // ended already (dropped or aborted), which leaves nothing to wait for either.
        drop(loops);
        let _ = runner_done.await;
    }
}

fn stop(t: Running) {
    let _ = t.cancel.send(true);
    // The loop notices at its next poll; until then the generation check keeps it from writing
    // anything.
}

/// One target's checks, one after the other, until cancelled or stale; `wake` is the cancel
/// signal and the call for a check now.
async fn check_loop(
    key: TargetKey,
    spec: CheckSpec,
    generation: u64,
    first: Duration,
    shared: SharedMap,
    events: mpsc::UnboundedSender<Transition>,
    wake: (watch::Receiver<bool>, Arc<Notify>),
) {
    let (mut cancelled, now) = wake;
    let mut delay = first;
    loop {
        // `changed()` resolves on cancel (Ok) and when the checker is dropped (Err): both stop.
        tokio::select! {
            biased;
            _ = cancelled.changed() => return,
            _ = now.notified() => {}
            _ = tokio::time::sleep(delay) => {}
        }
        let timeout = schedule::timeout_now(&shared, &key, &spec);
        let outcome = tokio::select! {
            biased;
            _ = cancelled.changed() => return,
            o = check_within(&spec, timeout) => o,
        };
        if let Outcome::Failed { reason, latency } = &outcome {
            log::debug!(
                "{}/{}: check failed after {}: {reason}",
                key.0,
                key.1,
                format_duration(*latency)
            );
        }
        if !record(&shared, &key, generation, &spec, outcome, &events) {
            return;
        }
        delay = schedule::next_delay(&shared, &key, &spec);
    }
}

/// Apply one result; send a transition on a change of state. False when this loop is stale.
fn record(
    shared: &Mutex<HashMap<TargetKey, Slot>>,
    key: &TargetKey,
    generation: u64,
    spec: &CheckSpec,
    outcome: Outcome,
    events: &mpsc::UnboundedSender<Transition>,
) -> bool {
    let mut map = lock(shared);
    let Some(slot) = map.get_mut(key) else {
        return false;
    };
    if slot.generation != generation {
        return false;
    }
    let s = &mut slot.status;
    s.checks += 1;
    s.last_latency = Some(outcome.latency());
    let change = match &outcome {
        Outcome::Ok { latency } => {
            s.consecutive_failed = 0;
            s.consecutive_ok = s.consecutive_ok.saturating_add(1);
            // The target answers: whatever passive health saw, the checks do not confirm it.
            s.suspicion = None;
            (s.health == Health::Down && s.consecutive_ok >= s.rise).then(|| {
                (
                    Health::Up,
                    format!(
                        "{}, {}/{} succeeded",
                        success_text(spec, *latency),
                        s.rise,
                        s.rise
                    ),
                )
            })
        }
        Outcome::Failed { reason, .. } => {
            s.consecutive_ok = 0;
            s.consecutive_failed = s.consecutive_failed.saturating_add(1);
            s.last_failure = Some(reason.clone());
            (s.health == Health::Up && s.consecutive_failed >= s.fall).then(|| {
                let checks = format!("{reason}, {}/{} failed", s.fall, s.fall);
                let reason = match s.suspicion.take() {
                    Some(passive) => format!("{passive}; confirmed by check: {checks}"),
                    None => checks,
                };
                (Health::Down, reason)
            })
        }
    };
    s.last_outcome = Some(outcome);
    if let Some((to, reason)) = change {
        s.health = to;
        s.since = Instant::now();
        if to == Health::Down {
            s.last_down = Some(reason.clone());
        }
        // Sent under the lock so that a `remove`/`set` racing with us is strictly before or after.
        let _ = events.send(Transition {
            key: key.clone(),
            to,
            reason,
        });
    }
    true
}

fn success_text(spec: &CheckSpec, latency: Duration) -> String {
    match &spec.kind {
        HealthKind::Http { expect, .. } => format!("HTTP {expect} in {}", format_duration(latency)),
        // `tcp` (a spec never holds `none`).
        HealthKind::Tcp | HealthKind::None => format!("TCP connect in {}", format_duration(latency)),
    }
}
