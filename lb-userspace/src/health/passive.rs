//! Passive health: the detector that reads the data path's handshake signals (per backend: SYNs
//! sent, SYNs retransmitted, handshakes finished; `lb_common::PassiveStats`) and finds a backend
//! that stopped answering, by comparing it with its service's other backends over a short
//! window. Pure: the agent reads the counters every [`READ_EVERY`] and hands them over; the
//! checker acts on a [`Suspicion`] (`HealthChecker::suspect`).
//!
//! A backend is suspect when, over a span of the window (each attempt counted given at least
//! one reading interval to finish its handshake), one of two signals says it stopped answering
//! while a sibling shows that the service itself works:
//! - **unanswered attempts**: at least `error_limit` new connection attempts (first SYNs) and
//!   (almost) no handshakes: at most one per [`ATTEMPTS_PER_HANDSHAKE`] attempts; a sibling
//!   finished handshakes for at least half of its own attempts. This sees a silent backend
//!   within a reading or two, and a refusing one (its clients get an RST, so they never send
//!   a SYN again: no retransmission ever shows it);
//! - **SYN retransmissions** (HAProxy's `error-limit` counts errors): at least `error_limit`
//!   retransmitted SYNs and at most one handshake per [`ATTEMPTS_PER_HANDSHAKE`] of them; a
//!   sibling finished at least as many handshakes as it saw retransmissions. This still works
//!   during a spoofed SYN flood, whose SYNs are never sent again.
//!
//! What hits every backend alike is never suspect: a spoofed SYN flood (its SYNs are attempts
//! on every backend that no handshake follows, so no sibling answers half of its attempts; and
//! they are never retransmitted) or random loss (each backend still finishes most
//! handshakes). A backend with nobody to compare it with (the only one of its service) is
//! never suspect either: there is nowhere else to send its clients. A flood aimed at one
//! backend (sources chosen to hash onto it) can make it suspect; a passing check then clears
//! the suspicion, unless `on_error = "mark-down"`, which trusts the suspicion without a check.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use lb_common::PassiveStats;

/// How often the agent reads the counters; also the least time an attempt is given to finish its
/// handshake before it counts as unanswered (see `Track::delta`).
pub const READ_EVERY: Duration = Duration::from_millis(100);

/// How far back a backend is judged: readings older than this are dropped (so the longest span
/// of attempts is about 800 ms with readings every 100 ms; the shortest is one reading
/// interval).
pub const WINDOW: Duration = Duration::from_millis(1000);

/// A suspect finishes at most one handshake per this many attempts (or retransmissions).
pub const ATTEMPTS_PER_HANDSHAKE: u64 = 10;

/// One backend of a service in one reading.
#[derive(Clone, Debug)]
pub struct Reading<'a> {
    pub server: &'a str,
    /// Its backend id: a new id (the server was removed and added again) starts afresh.
    pub id: u32,
    pub counters: PassiveStats,
    /// `Some(error_limit)` when the server is observed (`observe = "layer4"`) and may be
    /// suspected now (up, not already suspected); `None` otherwise. It is compared with either
    /// way, as a sibling.
    pub error_limit: Option<u32>,
}

/// A backend that stopped finishing handshakes while its siblings did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Suspicion {
    pub server: String,
    /// New connection attempts (first SYNs).
    pub attempts: u64,
    pub retransmits: u64,
    pub handshakes: u64,
    /// The time the attempts and retransmissions span.
    pub span: Duration,
    /// The time the handshakes span (from the same start, one reading further).
    pub answer_span: Duration,
}

impl Suspicion {
    /// `passive: 12 new SYNs, 14 SYN retransmits, 0 handshakes (SYNs in 800 ms, handshakes in
    /// 900 ms)`.
    pub fn reason(&self) -> String {
        format!(
            "passive: {} new SYNs, {} SYN retransmits, {} handshakes (SYNs in {} ms, handshakes in {} ms)",
            self.attempts,
            self.retransmits,
            self.handshakes,
            self.span.as_millis(),
            self.answer_span.as_millis()
        )
    }
}

/// One backend's recent readings, oldest first.
#[derive(Debug)]
struct Track {
    id: u32,
    readings: VecDeque<(Instant, PassiveStats)>,
}

impl Track {
    /// The attempts and retransmissions over the last `readings` readings before the newest
    /// (the span from the oldest of them to the one before the newest), and the handshakes from
    /// the same oldest reading to the newest: every attempt counted had at least one reading
    /// interval ([`READ_EVERY`]) to finish its handshake. With the two spans; `None` when there
    /// are too few readings.
    fn delta(&self, readings: usize) -> Option<(PassiveStats, Duration, Duration)> {
        let n = self.readings.len();
        if readings < 2 || n < readings + 1 {
            return None;
        }
        let (t0, a) = &self.readings[n - 1 - readings];
        let (t1, b) = &self.readings[n - 2];
        let (t2, c) = &self.readings[n - 1];
        Some((
            PassiveStats {
                syn_sent: b.syn_sent - a.syn_sent,
                syn_retransmits: b.syn_retransmits - a.syn_retransmits,
                handshakes: c.handshakes - a.handshakes,
            },
            t1.saturating_duration_since(*t0),
            t2.saturating_duration_since(*t0),
        ))
    }
}

/// Whether `d` (one backend's counts over a span) is silent while one of `siblings` (theirs
/// over the same span) serves, by either signal (see the module's documentation).
fn silent_beside(d: &PassiveStats, limit: u64, siblings: &[PassiveStats]) -> bool {
    let unanswered = d.syn_sent >= limit
        && d.handshakes * ATTEMPTS_PER_HANDSHAKE <= d.syn_sent
        && siblings
            .iter()
            .any(|o| o.handshakes > 0 && o.handshakes * 2 >= o.syn_sent);
    let retransmitted = d.syn_retransmits >= limit
        && d.handshakes * ATTEMPTS_PER_HANDSHAKE <= d.syn_retransmits
        && siblings
            .iter()
            .any(|o| o.handshakes > 0 && o.handshakes >= o.syn_retransmits);
    unanswered || retransmitted
}

/// Per service, per server: the readings of the last [`WINDOW`].
#[derive(Debug, Default)]
pub struct Detector {
    services: HashMap<String, HashMap<String, Track>>,
}

impl Detector {
    pub fn new() -> Detector {
        Detector::default()
    }

    /// Take one reading of every backend of `service` at `now`; returns the backends that are
    /// suspect now. A suspect's readings start afresh, so it is reported again only on a new
    /// window of evidence. Servers not in `backends` are forgotten.
    pub fn observe(&mut self, now: Instant, service: &str, backends: &[Reading<'_>]) -> Vec<Suspicion> {
        let tracks = self.services.entry(service.to_string()).or_default();
        tracks.retain(|name, _| backends.iter().any(|b| b.server == name));
        for b in backends {
            let t = tracks.entry(b.server.to_string()).or_insert_with(|| Track {
                id: b.id,
                readings: VecDeque::new(),
            });
            let went_back = t.readings.back().is_some_and(|(_, last)| {
                b.counters.syn_sent < last.syn_sent
                    || b.counters.syn_retransmits < last.syn_retransmits
                    || b.counters.handshakes < last.handshakes
            });
            if t.id != b.id || went_back {
                // Another backend under this name, or counters that started again (a new program).
                t.id = b.id;
                t.readings.clear();
            }
            t.readings.push_back((now, b.counters));
            while t
                .readings
                .front()
                .is_some_and(|(at, _)| now.saturating_duration_since(*at) > WINDOW)
            {
                t.readings.pop_front();
            }
        }
        // Each span the window holds, shortest first (one reading interval before the newest
        // reading, two, …): a backend that stopped answering a moment ago shows it in the short
        // spans, before the counts from when it still answered leave the long one.
        let longest = backends
            .iter()
            .map(|b| tracks[b.server].readings.len())
            .max()
            .unwrap_or(0);
        let mut suspects = Vec::new();
        for b in backends {
            let Some(limit) = b.error_limit else { continue };
            let limit = u64::from(limit.max(1));
            let track = &tracks[b.server];
            let found = (2..longest).find_map(|readings| {
                let (d, span, answer_span) = track.delta(readings)?;
                let siblings: Vec<PassiveStats> = backends
                    .iter()
                    .filter(|o| o.server != b.server)
                    .filter_map(|o| tracks[o.server].delta(readings).map(|(d, ..)| d))
                    .collect();
                silent_beside(&d, limit, &siblings).then_some((d, span, answer_span))
            });
            if let Some((d, span, answer_span)) = found {
                suspects.push(Suspicion {
                    server: b.server.to_string(),
                    attempts: d.syn_sent,
                    retransmits: d.syn_retransmits,
                    handshakes: d.handshakes,
                    span,
                    answer_span,
                });
            }
        }
        for s in &suspects {
            if let Some(t) = tracks.get_mut(&s.server) {
                let last = t.readings.pop_back();
                t.readings.clear();
                t.readings.extend(last);
            }
        }
        suspects
    }

    /// Forget every service not in `keep`.
    pub fn retain_services(&mut self, keep: &[&str]) {
        self.services.retain(|name, _| keep.contains(&name.as_str()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVERS: [&str; 4] = ["app1", "app2", "app3", "app4"];

    /// Feeds the detector readings `READ_EVERY` apart (rounds 0..`rounds`); each round after
    /// the first, backend `i`'s counters grow by `per_round(round, i)`. Returns every suspicion
    /// reported, with its round.
    fn rounds(
        rounds: u32,
        per_round: impl Fn(u32, usize) -> PassiveStats,
        limit: Option<u32>,
    ) -> Vec<(u32, Suspicion)> {
        let mut d = Detector::new();
        let t0 = Instant::now();
        let mut totals = [PassiveStats::default(); 4];
        let mut out = Vec::new();
        for round in 0..rounds {
            for (i, t) in totals.iter_mut().enumerate() {
                if round > 0 {
                    t.add(&per_round(round, i));
                }
            }
            let readings: Vec<Reading<'_>> = SERVERS
                .iter()
                .zip(totals)
                .enumerate()
                .map(|(i, (s, counters))| Reading {
                    server: s,
                    id: i as u32,
                    counters,
                    error_limit: limit,
                })
                .collect();
            let found = d.observe(t0 + READ_EVERY * round, "web", &readings);
            out.extend(found.into_iter().map(|s| (round, s)));
        }
        out
    }

    /// Six readings (half a second), every backend's counters growing alike each round.
    fn run(per_round: impl Fn(usize) -> PassiveStats, limit: Option<u32>) -> Vec<Suspicion> {
        rounds(6, |_, i| per_round(i), limit)
            .into_iter()
            .map(|(_, s)| s)
            .collect()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn per(syn_sent: u64, syn_retransmits: u64, handshakes: u64) -> PassiveStats {
        PassiveStats {
            syn_sent,
            syn_retransmits,
            handshakes,
        }
    }

    #[test]
    fn one_silent_backend_is_suspect_and_reported_once_per_window() {
        // app1 answers nothing: 4 retransmits and no handshake per reading; the others serve.
        let got = run(|i| if i == 0 { per(3, 4, 0) } else { per(3, 0, 3) }, Some(10));
        assert_eq!(
            got,
            vec![Suspicion {
                server: "app1".into(),
                attempts: 9,
                retransmits: 12,
                handshakes: 0,
                span: ms(300),
                answer_span: ms(400),
            }],
            "suspect once 10 retransmits are in a span, then only after a new window"
        );
        assert_eq!(
            got[0].reason(),
            "passive: 9 new SYNs, 12 SYN retransmits, 0 handshakes (SYNs in 300 ms, handshakes in 400 ms)"
        );
    }

    #[test]
    fn unanswered_attempts_make_a_backend_suspect_before_any_retransmission() {
        // app1 is silent, or refuses (its clients get an RST and never send a SYN again):
        // 4 new attempts per reading, no handshake, no retransmission yet.
        let got = run(|i| if i == 0 { per(4, 0, 0) } else { per(4, 0, 4) }, Some(10));
        assert_eq!(
            got,
            vec![Suspicion {
                server: "app1".into(),
                attempts: 12,
                retransmits: 0,
                handshakes: 0,
                span: ms(300),
                answer_span: ms(400),
            }]
        );
        // The same with siblings that answer only some of their attempts (slow handshakes at
        // the window's edge): still suspect, as long as they answer half.
        assert_eq!(
            run(|i| if i == 0 { per(4, 0, 0) } else { per(4, 0, 2) }, Some(10)).len(),
            1
        );
        // A backend answering one attempt in five is not silent.
        assert_eq!(
            run(|i| if i == 0 { per(5, 0, 1) } else { per(4, 0, 4) }, Some(10)),
            vec![]
        );
    }

    #[test]
    fn attempts_have_one_reading_interval_to_finish_their_handshakes() {
        // A burst of 12 attempts to app1 just before a reading, their handshakes (a round trip
        // later) just after it: answered, not silent.
        let burst = |round: u32, i: usize| match (round, i) {
            (3, 0) => per(12, 0, 0),
            (4, 0) => per(0, 0, 12),
            (_, 0) => per(0, 0, 0),
            _ => per(4, 0, 4),
        };
        assert_eq!(rounds(8, burst, Some(10)), vec![]);
        // Had they not come by the next reading, it would be.
        let unanswered = |round: u32, i: usize| {
            if i == 0 {
                per(12 * u64::from(round == 3), 0, 0)
            } else {
                per(4, 0, 4)
            }
        };
        let got = rounds(8, unanswered, Some(10));
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!((got[0].0, got[0].1.attempts, got[0].1.span), (4, 12, READ_EVERY));
    }

    #[test]
    fn a_backend_that_stops_answering_is_suspect_in_the_first_span_that_shows_it() {
        // Every backend serves 20 attempts per reading; from the fourth reading on app1 answers
        // none. At the fifth the longest span still holds its earlier handshakes (80 attempts,
        // 60 handshakes): the shortest alone shows it.
        let got = rounds(
            6,
            |round, i| {
                if i == 0 && round >= 4 {
                    per(20, 0, 0)
                } else {
                    per(20, 0, 20)
                }
            },
            Some(10),
        );
        assert_eq!(
            got,
            vec![(
                5,
                Suspicion {
                    server: "app1".into(),
                    attempts: 20,
                    retransmits: 0,
                    handshakes: 0,
                    span: READ_EVERY,
                    answer_span: READ_EVERY * 2,
                }
            )]
        );
    }

    #[test]
    fn during_a_flood_a_silent_backend_is_found_by_its_retransmissions_only() {
        // Spoofed SYNs on every backend: no sibling answers half of its attempts, so app1's
        // unanswered attempts prove nothing; its real clients' retransmissions do.
        let flood = |silent: PassiveStats| move |i: usize| if i == 0 { silent } else { per(1000, 0, 5) };
        assert_eq!(run(flood(per(1000, 0, 0)), Some(10)), vec![]);
        let got = run(flood(per(1000, 4, 0)), Some(10));
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!((got[0].retransmits, got[0].handshakes), (12, 0));
    }

    #[test]
    fn a_spoofed_syn_flood_on_every_backend_is_not_suspect() {
        // Spoofed SYNs are never retransmitted, and no backend answers half of its attempts;
        // real clients still finish handshakes.
        assert_eq!(run(|_| per(1000, 0, 5), Some(10)), vec![]);
        // A flood that repeats its SYNs, with no real client: every backend looks the same.
        assert_eq!(run(|_| per(1000, 500, 0), Some(10)), vec![]);
    }

    #[test]
    fn random_loss_on_a_backend_that_still_serves_is_not_suspect() {
        // 10 % of app1's SYNs are lost and sent again; most of its handshakes finish.
        assert_eq!(
            run(|i| if i == 0 { per(50, 5, 45) } else { per(50, 0, 50) }, Some(10)),
            vec![]
        );
        // Loss everywhere alike.
        assert_eq!(run(|_| per(50, 20, 30), Some(10)), vec![]);
    }

    #[test]
    fn below_the_error_limit_or_unobserved_nothing_is_suspect() {
        let silent_app1 = |i: usize| if i == 0 { per(3, 4, 0) } else { per(3, 0, 3) };
        assert_eq!(run(silent_app1, Some(100)), vec![]);
        assert_eq!(run(silent_app1, None), vec![]);
    }

    #[test]
    fn a_backend_alone_in_its_service_is_never_suspect() {
        let mut d = Detector::new();
        let t0 = Instant::now();
        for round in 0..6u32 {
            let r = Reading {
                server: "only",
                id: 0,
                counters: per(0, 20 * u64::from(round), 0),
                error_limit: Some(1),
            };
            assert_eq!(d.observe(t0 + READ_EVERY * round, "web", &[r]), vec![]);
        }
    }

    #[test]
    fn counters_that_start_again_or_a_new_backend_id_start_afresh() {
        let mut d = Detector::new();
        let t0 = Instant::now();
        let reading = |server, id, counters| Reading {
            server,
            id,
            counters,
            error_limit: Some(10),
        };
        let serving = reading("app2", 1, per(0, 0, 100));
        d.observe(t0, "web", &[reading("app1", 0, per(0, 1000, 0)), serving.clone()]);
        // The program was replaced: app1's counters are small again. No wrap to 2^64, no
        // suspicion from the old numbers.
        let again = [
            reading("app1", 0, per(0, 5, 0)),
            reading("app2", 1, per(0, 0, 200)),
        ];
        assert_eq!(d.observe(t0 + READ_EVERY, "web", &again), vec![]);
        let later = [
            reading("app1", 7, per(0, 50, 0)),
            reading("app2", 1, per(0, 0, 300)),
        ];
        assert_eq!(
            d.observe(t0 + READ_EVERY * 2, "web", &later),
            vec![],
            "a new id starts afresh"
        );
    }
}
