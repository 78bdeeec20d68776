//! The exposition's shape: families, help and type lines, labels, values.

use super::*;
use lb_common::BackendStats;

/// Every family an agent with peers, checks and two services shows.
fn full() -> Snapshot {
    let server = |name: &str, state| {
        ServerFigures {
        name: name.into(),
        stats: Some(BackendStats {
            packets: 7,
            bytes: 700,
        }),
        check_latency: Some(0.0015),
        checks: Some(3),
        state,
        passive: Some(lb_common::PassiveStats {
            syn_sent: 20,
            syn_retransmits: 14,
            handshakes: 6,
        }),
        last_down: Some(
            "passive: 12 new SYNs, 14 SYN retransmits, 0 handshakes (SYNs in 800 ms, handshakes in 900 ms); confirmed by check: timeout, 3/3 failed"
                .into(),
        ),
    }
    };
    let service = |name: &str| ServiceFigures {
        name: name.into(),
        stats: Some(ServiceStats {
            packets: 9,
            stick_hits: 4,
            ..Default::default()
        }),
        table_used: 30,
        table_size: 10000,
        servers: vec![server("app1", "UP"), server("app2", "DRAIN")],
        announced: Some(name == "be_app"),
    };
    let peer = |name: &str| PeerFigures {
        name: name.into(),
        connected: true,
        updates: [1, 2, 3, 4, 5, 6, 7, 8],
        auth_failures: 1,
        write_timeouts: 2,
    };
    Snapshot {
        datapath: Some(lb_common::gstat::SHOWN.iter().map(|g| (g.name(), 5)).collect()),
        services: vec![service("be_app"), service("dns")],
        peers: Some(PeersFigures {
            peers: vec![peer("lb2"), peer("lb3")],
            connections_refused: 4,
            connections_refused_busy: 5,
        }),
    }
}

/// Family name of a sample line (the metric name; no histograms or summaries here).
fn sample_family(line: &str) -> &str {
    line.split(['{', ' ']).next().unwrap()
}

#[test]
fn each_family_has_one_help_and_type_and_its_samples_together() {
    let t = exposition(full());
    let mut seen: Vec<String> = Vec::new();
    let mut lines = t.lines().peekable();
    while let Some(help) = lines.next() {
        let name = help
            .strip_prefix("# HELP ")
            .and_then(|h| h.split(' ').next())
            .unwrap_or_else(|| panic!("expected a # HELP line, got {help:?}:\n{t}"));
        assert!(!seen.contains(&name.to_string()), "{name} twice:\n{t}");
        seen.push(name.to_string());
        let ty = lines.next().unwrap();
        assert!(ty.starts_with(&format!("# TYPE {name} ")), "{ty} after {help}");
        assert!(
            ty.ends_with(" counter") == name.ends_with("_total"),
            "counters, and only they, end in _total: {ty}"
        );
        let mut n = 0;
        while lines.peek().is_some_and(|l| !l.starts_with('#')) {
            let l = lines.next().unwrap();
            assert_eq!(sample_family(l), name, "{l} among {name}'s samples:\n{t}");
            n += 1;
        }
        assert!(n > 0, "{name} has no sample:\n{t}");
    }
    let mut want: Vec<String> = [
        "xlb_datapath_packets_total",
        "xlb_service_packets_total",
        "xlb_service_bytes_total",
        "xlb_service_stick_hits_total",
        "xlb_service_stick_misses_total",
        "xlb_service_stick_inserts_total",
        "xlb_service_stick_expired_total",
        "xlb_service_redispatches_total",
        "xlb_service_pinned_down_total",
        "xlb_service_no_backend_total",
        "xlb_stick_table_used",
        "xlb_stick_table_size",
        "xlb_frontend_announced",
        "xlb_server_packets_total",
        "xlb_server_bytes_total",
        "xlb_server_check_latency_seconds",
        "xlb_server_checks_total",
        "xlb_server_state",
        "xlb_server_syn_sent_total",
        "xlb_server_syn_retransmits_total",
        "xlb_server_handshakes_total",
        "xlb_server_last_down_info",
        "xlb_peer_connected",
        "xlb_peer_auth_failures_total",
        "xlb_peer_write_timeouts_total",
        "xlb_peer_connections_refused_total",
        "xlb_peer_connections_refused_busy_total",
    ]
    .map(String::from)
    .into();
    want.extend(PEER_UPDATES.map(|(w, _)| format!("xlb_peer_updates_{w}_total")));
    seen.sort();
    want.sort();
    assert_eq!(seen, want);
}

#[test]
fn samples_carry_the_labels_and_values() {
    let t = exposition(full());
    for line in [
        "xlb_datapath_packets_total{event=\"tx\"} 5",
        "xlb_service_stick_hits_total{service=\"dns\"} 4",
        "xlb_stick_table_used{service=\"be_app\"} 30",
        "xlb_stick_table_size{service=\"be_app\"} 10000",
        "xlb_frontend_announced{service=\"be_app\"} 1",
        "xlb_frontend_announced{service=\"dns\"} 0",
        "xlb_server_bytes_total{service=\"be_app\",server=\"app2\"} 700",
        "xlb_server_check_latency_seconds{service=\"be_app\",server=\"app1\"} 0.0015",
        "xlb_server_checks_total{service=\"dns\",server=\"app1\"} 3",
        "xlb_server_state{service=\"be_app\",server=\"app2\",state=\"DRAIN\"} 1",
        "xlb_server_state{service=\"be_app\",server=\"app2\",state=\"UP\"} 0",
        "xlb_server_syn_retransmits_total{service=\"be_app\",server=\"app1\"} 14",
        "xlb_server_handshakes_total{service=\"dns\",server=\"app2\"} 6",
        "xlb_server_last_down_info{service=\"be_app\",server=\"app1\",reason=\"passive: 12 new SYNs, 14 SYN retransmits, 0 handshakes (SYNs in 800 ms, handshakes in 900 ms); confirmed by check: timeout, 3/3 failed\"} 1",
        "xlb_peer_connected{peer=\"lb3\"} 1",
        "xlb_peer_updates_sent_total{peer=\"lb2\"} 1",
        "xlb_peer_updates_refused_total{peer=\"lb3\"} 8",
        "xlb_peer_auth_failures_total{peer=\"lb2\"} 1",
        "xlb_peer_write_timeouts_total{peer=\"lb2\"} 2",
        "xlb_peer_connections_refused_total 4",
        "xlb_peer_connections_refused_busy_total 5",
    ] {
        assert!(t.lines().any(|l| l == line), "no line {line:?}:\n{t}");
    }
}

#[test]
fn families_without_samples_are_left_out() {
    let mut s = full();
    s.peers = None;
    s.datapath = None;
    for v in s.services.iter_mut().flat_map(|s| &mut s.servers) {
        v.check_latency = None;
        v.checks = None;
    }
    for svc in &mut s.services {
        svc.announced = None;
    }
    let t = exposition(s);
    for gone in ["xlb_peer_", "xlb_datapath_", "xlb_server_check", "xlb_frontend_"] {
        assert!(!t.contains(gone), "{gone}:\n{t}");
    }
    assert!(t.contains("# TYPE xlb_server_state gauge\n"), "{t}");
}
