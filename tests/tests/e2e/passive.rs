//! Passive health (issue 12): a backend that goes silent (its packets vanish, no RST) or whose
//! service stops (its kernel answers RST) is found by its clients' unanswered or retransmitted
//! SYNs, confirmed by its check and marked DOWN with a `passive:` reason, and its clients' new
//! connections succeed on another backend.

use std::{
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use harness::{
    client,
    lbenv::{LbEnv, Opts, env, http_vip},
    loss::Loss,
    netns,
    topology::VIP4,
};

use crate::{backend_index, pin_all, split, wait_state};

/// Client threads that keep opening connections (a `GET /` each, 2 s bound) from `sources`,
/// round-robin, until `stop` is set or 30 s have passed. A connection to a silent backend
/// sends its SYN again after 1 s, which is what the data path counts.
fn keep_connecting(
    e: &LbEnv,
    sources: &[IpAddr],
    threads: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<usize>> {
    let ns = e.topo.host(e.client).ns.clone();
    (0..threads)
        .map(|t| {
            let mine: Vec<IpAddr> = sources.iter().skip(t).step_by(threads).copied().collect();
            let stop = stop.clone();
            netns::spawn_in(&ns, &format!("conn{t}"), move || {
                let t0 = Instant::now();
                let mut ok = 0;
                for i in 0..100_000 {
                    if stop.load(Ordering::Relaxed) || t0.elapsed() > Duration::from_secs(30) {
                        break;
                    }
                    let src = mine[i % mine.len()];
                    ok += client::http_get(src, http_vip(src), Duration::from_secs(2)).is_ok() as usize;
                }
                ok
            })
            .expect("client thread in the client namespace")
        })
        .collect()
}

/// What a scenario left to check: the environment, the failed server, the clients pinned to it
/// and its DOWN reason (passive health's, confirmed by a check).
struct Failed {
    e: LbEnv,
    victim: String,
    moved: Vec<IpAddr>,
    reason: String,
}

/// Pins 120 sources, keeps them connecting, lets `fail` break one backend (given the
/// environment and the backend's server name) and waits for it to be DOWN.
/// HAProxy's default checks (inter 2 s, fall 3) with passive health: `health_extra`.
fn fail_one(name: &str, health_extra: &str, fail: impl FnOnce(&mut LbEnv, &str)) -> Failed {
    let mut e = env(
        name,
        Opts {
            inter: "2s".into(),
            fall: 3,
            health_extra: health_extra.into(),
            ..Opts::sources(120, 0)
        },
    );
    let pins = pin_all(&e, &e.sources4);
    let victim = pins[&e.sources4[0]].clone();
    let (moved, _stayed) = split(&pins, &victim);
    let stop = Arc::new(AtomicBool::new(false));
    let load = keep_connecting(&e, &e.sources4, 16, &stop);
    std::thread::sleep(Duration::from_millis(500));
    fail(&mut e, &victim);
    let took = wait_state(&e, "be_app", &victim, "DOWN", Duration::from_secs(15));
    stop.store(true, Ordering::Relaxed);
    let served: usize = load.into_iter().map(|h| h.join().expect("client thread")).sum();
    eprintln!("{name}: {victim} DOWN {took:?} after it failed; {served} connections served meanwhile");
    let reason = passive_down_reason(&e, &victim);
    Failed {
        e,
        victim,
        moved,
        reason,
    }
}

impl Failed {
    /// The clients pinned to the failed server now connect to another.
    fn clients_moved(&self) {
        for s in &self.moved {
            let b = self
                .e
                .get_vip(*s)
                .unwrap_or_else(|err| panic!("{s} (pinned to failed {}) failed: {err:#}", self.victim));
            assert_ne!(b, self.victim);
        }
    }
}

#[test]
fn s12_a_silent_backend_is_marked_down_by_passive_health_confirmed_by_its_check() {
    // Alone, the checks need 6 s and more to see it.
    let mut silence = None;
    let f = fail_one(
        "passive",
        "observe = \"layer4\", fastinter = \"200ms\"",
        |e, victim| {
            // The whole host goes silent: its VIP traffic and its checks alike.
            let host = e.topo.host(e.backends[backend_index(victim)]).clone();
            silence = Some(Loss::silent(&host.ns, &[IpAddr::V4(VIP4), IpAddr::V4(host.ipv4)]).expect("nft"));
        },
    );
    let (attempts, retransmits, _) = counts(&f.reason);
    assert!(
        attempts >= 10 || retransmits >= 10,
        "error_limit (10) unanswered attempts or retransmits were counted: {}",
        f.reason
    );
    assert!(
        f.e.agent_log()
            .contains(&format!("be_app/{}: passive: ", f.victim)),
        "{}",
        f.e.agent_log()
    );
    f.clients_moved();
    assert!(silence.expect("dropped").dropped().unwrap() > 0);
}

#[test]
fn s12b_a_backend_whose_service_stops_is_marked_down_by_its_unanswered_attempts() {
    // Its kernel answers each SYN with an RST: no client sends a SYN again, so only attempts
    // that no handshake follows show it. Alone, the checks would mark it DOWN with a reason of
    // their own ("connect refused, 3/3 failed"), not a `passive:` one.
    let f = fail_one(
        "passive-rst",
        "observe = \"layer4\", on_error = \"sudden-death\", fastinter = \"200ms\"",
        |e, victim| e.http[backend_index(victim)].stop(),
    );
    let (attempts, retransmits, handshakes) = counts(&f.reason);
    assert!(
        attempts >= 10 && handshakes * 10 <= attempts,
        "unanswered attempts made it suspect: {}",
        f.reason
    );
    assert_eq!(retransmits, 0, "a refused SYN is never sent again: {}", f.reason);
    assert!(
        f.reason.contains("; confirmed by check: connect refused"),
        "{}",
        f.reason
    );
    f.clients_moved();
}

/// `victim`'s DOWN reason in `show servers state`; it must be passive health's, confirmed by a
/// check.
fn passive_down_reason(e: &LbEnv, victim: &str) -> String {
    let state = e.api("show servers state be_app").unwrap();
    let row = state
        .lines()
        .find(|l| l.split(' ').nth(3) == Some(victim))
        .unwrap_or_else(|| panic!("no row for {victim}:\n{state}"));
    let reason = row
        .splitn(23, ' ')
        .nth(22)
        .unwrap_or_else(|| panic!("no reason column: {row}"));
    assert!(
        reason.starts_with("passive: ")
            && reason.contains(" SYN retransmits, ")
            && reason.contains("; confirmed by check: "),
        "DOWN must be passive health's, confirmed by a check: {row}"
    );
    reason.to_string()
}

/// The new SYNs, SYN retransmits and handshakes a `passive: N new SYNs, R SYN retransmits, H
/// handshakes in …` reason names.
fn counts(reason: &str) -> (u64, u64, u64) {
    let words: Vec<&str> = reason.split(' ').collect();
    let n = |i: usize| {
        words[i]
            .parse()
            .unwrap_or_else(|_| panic!("no count at word {i}: {reason}"))
    };
    (n(1), n(4), n(7))
}
