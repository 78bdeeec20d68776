//! The stats page under live traffic: its packet and new-client rates, computed in the page
//! from two documents, are above zero and no more than the agent counted over a longer
//! interval; and `/stats.json` takes its stick-entry counts from the sweeper's last pass rather
//! than walking the tables at every refresh.

use std::{
    net::{IpAddr, Ipv4Addr},
    sync::atomic::{AtomicBool, AtomicU32, Ordering},
    time::Duration,
};

use harness::{
    browser::{self, PageLoad},
    client::connect_from,
    lbenv::{LbEnv, Opts, VIP4_HTTP, env},
    metrics,
    topology::SPOOF_POOL4,
};
use serde_json::Value;

use super::stats::{attribute, checks_reported, element, figure, json_of, service};

const METRICS: &str = "127.0.0.1:9100";

/// `/stats.json` as the page fetches it.
fn stats_json(e: &LbEnv) -> Value {
    let answer = metrics::get(e, METRICS, "/stats.json");
    let body = answer
        .split_once("\r\n\r\n")
        .filter(|_| answer.starts_with("HTTP/1.1 200 OK"))
        .unwrap_or_else(|| panic!("/stats.json: {answer}"))
        .1;
    serde_json::from_str(body).unwrap_or_else(|err| panic!("/stats.json not JSON ({err}): {body}"))
}

/// Each service's stick entries and each server's (`service/server`) in a document.
fn stick_figures(doc: &Value) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for s in doc["services"].as_array().unwrap() {
        let name = s["name"].as_str().unwrap();
        out.push((name.to_string(), s["stick"]["used"].as_u64().unwrap()));
        for v in s["servers"].as_array().unwrap() {
            let n = v["stick_entries"].as_u64().unwrap();
            out.push((format!("{name}/{}", v["name"].as_str().unwrap()), n));
        }
    }
    out
}

/// Whether `/stats.json` (the sweeper's counts) says what `show stat json` (a walk) says of the
/// stick tables: true once the sweeper has passed since the tables last changed.
pub(super) fn sweeper_caught_up(e: &LbEnv) -> bool {
    stick_figures(&stats_json(e)) == stick_figures(&json_of(e, "show stat json"))
}

#[test]
fn the_stats_document_counts_stick_entries_at_the_sweepers_pass_and_walks_no_table() {
    let e = env(
        "statscount",
        Opts {
            metrics: Some(METRICS.into()),
            // One pass at start, then only the one a reload that retires a server asks for.
            sweep: "1h".into(),
            ..Opts::sources(8, 0)
        },
    );
    for s in &e.sources4 {
        e.get_vip(*s).unwrap();
    }
    // The runtime API walks: 8 entries. The page's document does not: the sweeper's first
    // pass, at start, saw none.
    let walked = json_of(&e, "show stat json");
    assert_eq!(service(&walked, "be_app")["stick"]["used"], 8);
    let page = stats_json(&e);
    assert!(
        stick_figures(&page).iter().all(|(_, n)| *n == 0),
        "a walk at refresh: {page:#}"
    );

    // A reload that retires app4 makes the sweeper pass at once (deleting app4's entries):
    // the document then says what a walk says, server by server.
    e.write_config(&e.config_text(3)).unwrap();
    e.signal_agent(libc::SIGHUP);
    assert!(
        e.wait_until(Duration::from_secs(10), || sweeper_caught_up(&e)),
        "the document never caught up with the walk after the sweep:\n{:#}\n{}",
        stats_json(&e),
        e.api("show stat").unwrap()
    );
    let page = stats_json(&e);
    let used = service(&page, "be_app")["stick"]["used"].as_u64().unwrap();
    assert!(used > 0 && used <= 8, "{page:#}");
    let by_server: u64 = service(&page, "be_app")["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["stick_entries"].as_u64().unwrap())
        .sum();
    assert_eq!(by_server, used);
}

/// How many connections the traffic makes at most, over all its threads, each from an address
/// of its own (the spoof pool holds 16382).
const MAX_CLIENTS: u32 = 16_000;
/// Threads opening connections, each one every [`PACE`] at most: at least 24 s of traffic,
/// twice the page's virtual time (with 10 s, a machine busy with the other agent tests ran out
/// of addresses before chromium had loaded the page).
const THREADS: u32 = 4;
const PACE: Duration = Duration::from_millis(6);

#[test]
fn the_stats_page_shows_packet_and_new_client_rates_of_live_traffic() {
    let mut e = env(
        "statsrates",
        Opts {
            metrics: Some(METRICS.into()),
            ..Opts::sources(1, 0)
        },
    );
    // New clients: every connection from a fresh address of the spoof pool, which the client
    // namespace owns (a real handshake, so a stick entry each).
    e.topo.own_spoof_pool(e.client).unwrap();
    assert!(
        e.wait_until(Duration::from_secs(10), || checks_reported(&json_of(
            &e,
            "show stat json"
        ))),
        "checks still pending"
    );
    let counters = |doc: &Value| {
        let c = &service(doc, "be_app")["counters"];
        (
            c["packets"].as_u64().unwrap(),
            c["stick_inserts"].as_u64().unwrap(),
        )
    };
    let before = counters(&json_of(&e, "show stat json"));
    let stop = AtomicBool::new(false);
    let next = AtomicU32::new(0);
    let made = AtomicU32::new(0);
    let base = u32::from(SPOOF_POOL4.0);
    let dom = std::thread::scope(|scope| {
        for _ in 0..THREADS {
            scope.spawn(|| {
                e.topo
                    .run_in(e.client, || {
                        while !stop.load(Ordering::Relaxed) {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            if i >= MAX_CLIENTS {
                                break;
                            }
                            let src = IpAddr::V4(Ipv4Addr::from(base + 1 + i));
                            if connect_from(src, VIP4_HTTP, Duration::from_secs(1)).is_ok() {
                                made.fetch_add(1, Ordering::Relaxed);
                            }
                            std::thread::sleep(PACE);
                        }
                    })
                    .unwrap();
            });
        }
        // The traffic flows before the page's first document, and until after its last.
        assert!(
            e.wait_until(Duration::from_secs(10), || made.load(Ordering::Relaxed) > 0),
            "no connection made"
        );
        let dom = browser::dump_dom(
            &e.topo,
            e.lb,
            &PageLoad {
                url: &format!("http://{METRICS}/stats"),
                virtual_time: Duration::from_secs(12),
                screenshot: None,
                scratch: &e.dir,
            },
        );
        stop.store(true, Ordering::Relaxed);
        dom
    });
    let made = made.into_inner();
    assert!(
        made < MAX_CLIENTS,
        "the traffic ran out of addresses before the page finished"
    );
    let after = counters(&json_of(&e, "show stat json"));
    let (packets, inserts) = (after.0 - before.0, after.1 - before.1);
    assert!(
        inserts <= u64::from(made),
        "{inserts} new clients of {made} connections"
    );

    let body = element(&dom, "data-samples=");
    let window_ms: f64 = attribute(body, "data-rate-window-ms")
        .parse()
        .unwrap_or_else(|err| panic!("no rate window ({err}):\n{body}"));
    assert!(window_ms > 0.0, "{body}");
    let window = window_ms / 1000.0;
    let summary = element(element(&dom, "data-service=\"be_app\""), "class=\"summary\"");
    let rate = |field: &str| -> f64 {
        figure(summary, field)
            .parse()
            .unwrap_or_else(|err| panic!("{field} ({err}): {summary}"))
    };
    let (pps, cps) = (rate("packets_rate"), rate("new_clients_rate"));
    eprintln!(
        "page: {pps} pkt/s and {cps} new clients/s over {window_ms} ms; the agent counted \
         {packets} packets and {inserts} new clients over the whole run ({made} connections)"
    );
    // Shown to one decimal: at most 0.05/s above what the two documents say.
    let at_most = |shown: f64, counted: u64| shown * window <= counted as f64 + 0.05 * window;
    assert!(pps > 0.0, "no packet rate under traffic: {summary}");
    assert!(cps > 0.0, "no new-client rate under traffic: {summary}");
    assert!(
        at_most(pps, packets),
        "{pps} pkt/s over {window} s > {packets} packets counted"
    );
    assert!(
        at_most(cps, inserts),
        "{cps} new clients/s over {window} s > {inserts} counted"
    );
    // A server's row shows its share.
    let section = element(&dom, "data-service=\"be_app\"");
    let busy = (1..=4).any(|i| {
        let row = element(section, &format!("data-server=\"app{i}\""));
        figure(row, "packets_rate").parse::<f64>().is_ok_and(|r| r > 0.0)
    });
    assert!(busy, "no server with a packet rate: {section}");
}
