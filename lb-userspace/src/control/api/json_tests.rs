//! The JSON shapes of `show stat json` and `show table NAME json`, field by field.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::*;
use crate::{
    balancer::{Server, egress::Egress},
    config::{self, AdminState},
    health::Outcome,
};

/// `web` (TCP checks, two servers: app1 up, app2 drained by the operator) and `dns` (no checks,
/// one server that is down).
fn services() -> Vec<Svc> {
    let cfg = config::parse(
        r#"
[global]
interface = "eth0"
[[service]]
name = "web"
vip = "10.0.0.10:80"
stick = { on = "src", size = 1000, expire = "30m" }
[[service.server]]
name = "app1"
address = "10.0.1.11"
[[service.server]]
name = "app2"
address = "10.0.1.12"
weight = 2
[[service]]
name = "dns"
vip = "[fd00::10]:53"
protocol = "udp"
redispatch = false
stick = { on = "none" }
health = { type = "none" }
[[service.server]]
name = "ns1"
address = "fd00::21"
"#,
        "xlb.toml",
    )
    .unwrap();
    let mut id = 10;
    cfg.services
        .iter()
        .enumerate()
        .map(|(i, s)| Svc {
            id: i as u32,
            cfg: s.clone(),
            servers: s
                .servers
                .iter()
                .enumerate()
                .map(|(p, c)| {
                    id += 1;
                    Server {
                        id,
                        puid: p as u32 + 1,
                        cfg: c.clone(),
                        admin: if c.name == "app2" {
                            AdminState::Drain
                        } else {
                            AdminState::Ready
                        },
                        health: if c.name == "ns1" { Health::Down } else { Health::Up },
                        weight: c.weight,
                        mac: Some([2, 0, 0, 0, 0, 1]),
                        egress: Egress::default(),
                        last_change: Instant::now() - Duration::from_secs(90),
                        last_reason: String::new(),
                    }
                })
                .collect(),
            table: Vec::new(),
        })
        .collect()
}

fn snapshot() -> StatSnapshot {
    let svcs = services();
    let counters = ServiceStats {
        packets: 100,
        bytes: 6400,
        stick_inserts: 3,
        redispatches: 2,
        ..Default::default()
    };
    let app1_check = CheckStatus {
        health: Health::Up,
        consecutive_ok: 5,
        consecutive_failed: 0,
        last_outcome: Some(Outcome::Ok {
            latency: Duration::from_micros(1500),
        }),
        last_latency: Some(Duration::from_micros(1500)),
        last_failure: Some("connect refused".into()),
        checks: 9,
        since: Instant::now(),
        rise: 2,
        fall: 3,
        suspicion: None,
        last_down: None,
    };
    StatSnapshot {
        services: svcs
            .into_iter()
            .map(|s| {
                let per_server = s
                    .servers
                    .iter()
                    .map(|v| super::super::stat::StatServer {
                        stats: lb_common::BackendStats {
                            packets: v.id as u64,
                            bytes: v.id as u64 * 64,
                        },
                        signals: lb_common::PassiveStats {
                            syn_sent: 7,
                            syn_retransmits: 2,
                            handshakes: 5,
                        },
                        last_down: None,
                    })
                    .collect();
                (s, counters, per_server)
            })
            .collect(),
        checks: [(("web".into(), "app1".into()), app1_check)].into(),
        uptime: Duration::from_millis(12_345),
    }
}

/// Three clients of `web` on app1 (server id 11), one on app2 (12).
fn entries() -> Vec<(StickKey, StickEntry)> {
    let prefixes = services()[0].cfg.stick.prefixes();
    [(1, 11), (2, 11), (3, 11), (4, 12)]
        .map(|(host, backend)| {
            let k = StickKey::for_client(format!("10.77.0.{host}").parse().unwrap(), 0, 0, prefixes);
            let e = StickEntry {
                last_seen_ns: 5_000_000_000,
                backend,
                syn_at: 0,
            };
            (k, e)
        })
        .into()
}

#[test]
fn show_stat_json_has_every_service_and_server_with_their_figures() {
    let doc = serde_json::to_value(stat_doc(
        &snapshot(),
        |id| Some(1000 * (id + 1)),
        &stick::count(&entries()),
    ))
    .unwrap();
    assert_eq!(doc["version"], json!(1));
    assert_eq!(doc["uptime_ms"], json!(12_345));
    let web = &doc["services"][0];
    let want_web = json!({
        "name": "web",
        "vip": "10.0.0.10:80",
        "protocol": "tcp",
        "status": "UP",
        "servers_up": 1,
        "weight": 1,
        "redispatch": true,
        "stick": { "on": "src", "size": 1000, "used": 4, "expire_s": 1800 },
        "counters": {
            "packets": 100, "bytes": 6400, "stick_hits": 0, "stick_misses": 0,
            "stick_inserts": 3, "stick_expired": 0, "redispatches": 2, "pinned_down": 0,
            "no_backend": 0
        },
    });
    for (k, v) in want_web.as_object().unwrap() {
        assert_eq!(&web[k], v, "web.{k} in {web:#}");
    }
    let app1 = &web["servers"][0];
    assert_eq!(
        app1,
        &json!({
            "name": "app1", "id": 1, "address": "10.0.1.11", "state": "UP", "admin": "ready",
            "weight": 1, "config_weight": 1, "last_change_s": 90,
            "check": {
                "status": "passed", "health": "UP", "health_count": 4, "rise": 2, "fall": 3,
                "last_failure": "connect refused", "latency_ms": 1.5, "checks": 9
            },
            "packets": 11, "bytes": 704, "stick_entries": 3,
            "passive": { "syn_sent": 7, "syn_retransmits": 2, "handshakes": 5 }, "last_down": null
        })
    );
    // Drained by the operator; its check has not reported yet.
    let app2 = &web["servers"][1];
    assert_eq!(
        (
            &app2["state"],
            &app2["admin"],
            &app2["weight"],
            &app2["stick_entries"]
        ),
        (&json!("DRAIN"), &json!("drain"), &json!(2), &json!(1))
    );
    assert_eq!(app2["check"]["status"], json!("pending"), "{app2:#}");
    // No checks: `check` is null. No server up: the service is DOWN.
    let dns = &doc["services"][1];
    assert_eq!(
        (&dns["vip"], &dns["protocol"], &dns["status"], &dns["redispatch"]),
        (
            &json!("[fd00::10]:53"),
            &json!("udp"),
            &json!("DOWN"),
            &json!(false)
        )
    );
    assert_eq!(
        dns["stick"],
        json!({ "on": "none", "size": 2000, "used": 0, "expire_s": 1800 })
    );
    let ns1 = &dns["servers"][0];
    assert_eq!((&ns1["state"], &ns1["check"]), (&json!("DOWN"), &Value::Null));
}

#[test]
fn show_table_json_is_the_head_then_the_matching_entries() {
    let svc = &services()[0];
    let table = |filter: Filter| -> Value {
        let mut out = Vec::new();
        write_entries(
            &mut out,
            &entries(),
            svc,
            1000,
            &filter,
            5_000_000_000 + 60_000_000_000,
        )
        .unwrap();
        assert!(out.ends_with(b"}\n"), "one document, one line");
        serde_json::from_slice(&out).unwrap()
    };
    let all = table(Filter::All);
    assert_eq!(
        (&all["table"], &all["type"], &all["size"], &all["used"]),
        (&json!("web"), &json!("ip"), &json!(1000), &json!(4))
    );
    let first = &all["entries"][0];
    assert_eq!(first["key"], json!("10.77.0.1"));
    // 30 minutes, less the minute since the entry was last seen.
    assert_eq!(first["exp_ms"], json!(29 * 60 * 1000));
    assert_eq!(
        (&first["server_id"], &first["server_key"]),
        (&json!(1), &json!("app1"))
    );
    let id = first["id"].as_str().unwrap();
    assert!(id.starts_with("0x") && id.len() == 14, "{id}");
    assert_eq!(all["entries"].as_array().unwrap().len(), 4);
    // A filter keeps `used` (the whole table) and narrows `entries`.
    let on_app2 = table(Filter::ServerId(2));
    assert_eq!(on_app2["used"], json!(4));
    let keys: Vec<&Value> = on_app2["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["key"])
        .collect();
    assert_eq!(keys, [&json!("10.77.0.4")]);
    let none = table(Filter::Key("10.99.0.1".parse().unwrap()));
    assert_eq!(none["entries"], json!([]));
}

/// The text of `show table` and its JSON say the same of an entry.
#[test]
fn an_entrys_json_and_its_text_line_agree() {
    let svc = &services()[0];
    let (k, e) = entries()[3];
    let now = 6_000_000_000;
    let j = serde_json::to_value(EntryJson::from(stick::view(svc, &k, &e, now))).unwrap();
    let text = stick::line(svc, &k, &e, now);
    assert_eq!(
        text,
        format!(
            "{}: key={} use=0 exp={} server_id={} server_key={}\n",
            j["id"].as_str().unwrap(),
            j["key"].as_str().unwrap(),
            j["exp_ms"],
            j["server_id"],
            j["server_key"].as_str().unwrap()
        )
    );
}
