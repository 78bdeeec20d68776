//! `show stat json` and `show table ... json` from a live agent, against the text outputs; the
//! stats page (`/stats` on the metrics listener) rendered by headless Chromium, against the
//! agent's own `show stat json`.

use std::{collections::HashMap, path::Path, time::Duration};

use harness::{
    browser::{self, PageLoad},
    lbenv::{LbEnv, Opts, env},
};
use serde_json::{Value, json};

pub(super) fn json_of(e: &LbEnv, cmd: &str) -> Value {
    let answer = e.api(cmd).unwrap();
    serde_json::from_str(&answer).unwrap_or_else(|err| panic!("{cmd}: not JSON ({err}):\n{answer}"))
}

/// `show stat`'s rows as column name -> value, by (pxname, svname).
fn stat_rows(text: &str) -> HashMap<(String, String), HashMap<String, String>> {
    let mut lines = text.lines();
    let head: Vec<&str> = lines
        .next()
        .unwrap()
        .trim_start_matches("# ")
        .split(',')
        .collect();
    lines
        .map(|l| {
            let row: HashMap<String, String> = head
                .iter()
                .zip(l.split(','))
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect();
            ((row["pxname"].clone(), row["svname"].clone()), row)
        })
        .collect()
}

pub(super) fn service<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no service {name} in {doc:#}"))
}

pub(super) fn server<'a>(doc: &'a Value, svc: &str, name: &str) -> &'a Value {
    service(doc, svc)["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no server {svc}/{name} in {doc:#}"))
}

/// Whether every server's check has reported a result (a server is UP before its first check
/// ends, its check `pending`).
pub(super) fn checks_reported(doc: &Value) -> bool {
    doc["services"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["servers"].as_array().unwrap())
        .all(|v| v["check"]["status"] != "pending")
}

#[test]
fn show_stat_json_and_show_table_json_say_what_the_text_says() {
    let e = env(
        "statjson",
        Opts {
            backends: 3,
            ..Opts::sources(6, 2)
        },
    );
    let mut pins = Vec::new();
    for s in e.sources4.iter().chain(&e.sources6) {
        pins.push((*s, e.get_vip(*s).unwrap()));
    }
    e.api("set server be_app/app2 state drain").unwrap();
    assert!(
        e.wait_until(Duration::from_secs(5), || checks_reported(&json_of(
            &e,
            "show stat json"
        ))),
        "checks still pending:\n{}",
        e.api("show stat json").unwrap()
    );
    // No traffic from here on: both outputs read the same counters.
    let doc = json_of(&e, "show stat json");
    let text = e.api("show stat").unwrap();
    assert_eq!(doc["version"], json!(1));
    let names: Vec<&Value> = doc["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["name"])
        .collect();
    assert_eq!(names, [&json!("be_app"), &json!("be_app6"), &json!("dns")]);
    for ((px, sv), row) in stat_rows(&text) {
        let pairs: Vec<(&str, &Value)> = if sv == "BACKEND" {
            let s = service(&doc, &px);
            let c = &s["counters"];
            vec![
                ("status", &s["status"]),
                ("pkts", &c["packets"]),
                ("bin", &c["bytes"]),
                ("stick_used", &s["stick"]["used"]),
                ("slim", &s["stick"]["size"]),
                ("stick_inserts", &c["stick_inserts"]),
                ("redispatches", &c["redispatches"]),
                ("no_backend", &c["no_backend"]),
                ("weight", &s["weight"]),
            ]
        } else {
            let v = server(&doc, &px, &sv);
            vec![
                ("status", &v["state"]),
                ("weight", &v["weight"]),
                ("pkts", &v["packets"]),
                ("bin", &v["bytes"]),
                ("stick_used", &v["stick_entries"]),
            ]
        };
        for (col, got) in pairs {
            assert_eq!(row[col], shown(got), "{px}/{sv} {col}");
        }
    }
    let app1 = server(&doc, "be_app", "app1");
    assert_eq!(
        (&app1["check"]["status"], &app1["check"]["health"]),
        (&json!("passed"), &json!("UP")),
        "{app1:#}"
    );
    // The passive health signals, by name (issue 12's counters).
    let passive = app1["passive"].as_object().unwrap_or_else(|| panic!("{app1:#}"));
    assert_eq!(
        passive.keys().map(String::as_str).collect::<Vec<_>>(),
        ["handshakes", "syn_retransmits", "syn_sent"],
        "{app1:#}"
    );
    assert!(passive.values().all(Value::is_u64), "{app1:#}");
    let app2 = server(&doc, "be_app", "app2");
    assert_eq!(
        (&app2["state"], &app2["admin"]),
        (&json!("DRAIN"), &json!("drain"))
    );
    assert_eq!(service(&doc, "be_app")["stick"]["used"], json!(6));

    // show table NAME json: the entries of the text, in its order.
    let table = json_of(&e, "show table be_app json");
    assert_eq!(
        (&table["table"], &table["type"], &table["size"], &table["used"]),
        (&json!("be_app"), &json!("ip"), &json!(10000), &json!(6))
    );
    let from_json: Vec<(String, String)> = table["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["key"].as_str().unwrap().into(),
                x["server_key"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(from_json, e.table("be_app").unwrap());
    for (src, srv) in &pins {
        let svc = if src.is_ipv4() { "be_app" } else { "be_app6" };
        let one = json_of(&e, &format!("show table {svc} key {src} json"));
        let entries = one["entries"].as_array().unwrap();
        assert_eq!(entries.len(), 1, "{one:#}");
        assert_eq!(entries[0]["server_key"], json!(srv));
        let id = entries[0]["server_id"].as_u64().unwrap();
        let same_server = json_of(&e, &format!("show table {svc} data.server_id eq {id} json"));
        let n = pins
            .iter()
            .filter(|(s, v)| v == srv && s.is_ipv4() == src.is_ipv4())
            .count();
        assert_eq!(
            same_server["entries"].as_array().unwrap().len(),
            n,
            "{same_server:#}"
        );
    }
    // show table json: each table's head, as the text's headers say.
    let heads = json_of(&e, "show table json");
    let from_text: Vec<Value> = e
        .api("show table")
        .unwrap()
        .lines()
        .map(|l| {
            // # table: be_app, type: ip, size:10000, used:6
            let f: Vec<&str> = l.trim_start_matches("# table: ").split(", ").collect();
            let num = |s: &str| s.split(':').nth(1).unwrap().parse::<u64>().unwrap();
            json!({ "table": f[0], "type": f[1].trim_start_matches("type: "), "size": num(f[2]), "used": num(f[3]) })
        })
        .collect();
    assert_eq!(heads, Value::Array(from_text));
    // The CLI passes the words on.
    let out = e.cli(&["show", "stat", "json"]).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let by_cli = serde_json::from_slice::<Value>(&out.stdout).unwrap();
    for (a, b) in by_cli["services"]
        .as_array()
        .unwrap()
        .iter()
        .zip(doc["services"].as_array().unwrap())
    {
        assert_eq!((&a["name"], &a["counters"]), (&b["name"], &b["counters"]));
    }
    // Errors stay one line of text.
    let err = e.api("show table nope json").unwrap();
    assert!(err.starts_with("No such table: 'nope'."), "{err}");
}

/// The part of `html` from the opening tag that holds `attr` to the end of that element (its
/// first closing tag of the same name: no element here holds another of its own kind).
pub(super) fn element<'a>(html: &'a str, attr: &str) -> &'a str {
    let at = html
        .find(attr)
        .unwrap_or_else(|| panic!("no element with {attr} in:\n{html}"));
    let start = html[..at].rfind('<').unwrap();
    let tag: String = html[start + 1..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    let close = format!("</{tag}>");
    let end = html[start..]
        .find(&close)
        .unwrap_or_else(|| panic!("{tag} not closed in:\n{html}"));
    &html[start..start + end + close.len()]
}

/// The value of attribute `name` of the opening tag `element` starts with.
pub(super) fn attribute<'a>(element: &'a str, name: &str) -> &'a str {
    let open = &element[..element.find('>').unwrap()];
    let needle = format!(" {name}=\"");
    let from = open
        .find(&needle)
        .unwrap_or_else(|| panic!("no {name} in {open}"))
        + needle.len();
    &open[from..from + open[from..].find('"').unwrap()]
}

/// The `data-value` of the figure `field` inside `html`.
pub(super) fn figure(html: &str, field: &str) -> String {
    attribute(element(html, &format!("data-field=\"{field}\"")), "data-value").to_string()
}

/// A JSON number or string as the page writes it in `data-value`.
fn shown(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), String::from)
}

#[test]
fn the_stats_page_renders_the_agents_figures_in_chromium() {
    let e = env(
        "statspage",
        Opts {
            metrics: Some("127.0.0.1:9100".into()),
            ..Opts::sources(8, 2)
        },
    );
    for s in e.sources4.iter().chain(&e.sources6) {
        e.get_vip(*s).unwrap();
    }
    // A server in each state: app2 drained and app3 in maintenance in be_app; app4 failing
    // its HTTP checks (DOWN in be_app and be_app6; dns checks TCP, which still connects).
    e.api("set server be_app/app2 state drain").unwrap();
    e.api("set server be_app/app3 state maint").unwrap();
    e.http[3].set_health_status(503);
    let settled = |doc: &Value| {
        checks_reported(doc)
            && ["be_app", "be_app6"]
                .iter()
                .all(|s| server(doc, s, "app4")["state"] == "DOWN")
    };
    assert!(
        e.wait_until(Duration::from_secs(10), || settled(&json_of(
            &e,
            "show stat json"
        ))),
        "app4 never DOWN, or checks still pending:\n{}",
        e.api("show stat").unwrap()
    );
    // The page's stick figures are the sweeper's (a pass a second here): one after the traffic.
    assert!(
        e.wait_until(Duration::from_secs(5), || super::stats_live::sweeper_caught_up(
            &e
        )),
        "the sweeper's counts never matched the table"
    );
    // No traffic from here on: the page and the API read the same counters.
    let doc = json_of(&e, "show stat json");
    let screenshot = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/xlb-stats/stats.png");
    let dom = browser::dump_dom(
        &e.topo,
        e.lb,
        &PageLoad {
            url: "http://127.0.0.1:9100/stats",
            // Refreshes every 2 s: three or four documents.
            virtual_time: Duration::from_secs(6),
            screenshot: Some((&screenshot, 1500, 1150)),
            scratch: &e.dir,
        },
    );
    let body = element(&dom, "data-samples=");
    let samples: u32 = attribute(body, "data-samples").parse().unwrap();
    assert!(
        samples >= 2,
        "rates need two samples; the page rendered {samples}:\n{dom}"
    );
    let status = element(&dom, "id=\"status\"");
    assert_eq!(attribute(status, "class"), "ok", "{status}");
    for s in doc["services"].as_array().unwrap() {
        let name = s["name"].as_str().unwrap();
        let section = element(&dom, &format!("data-service=\"{name}\""));
        assert!(
            section.contains(&format!("{}/{}", shown(&s["vip"]), shown(&s["protocol"]))),
            "{section}"
        );
        let badge = element(section, "data-field=\"status\"");
        assert!(
            badge.contains(&format!(">{}</span>", shown(&s["status"]))),
            "{badge}"
        );
        let summary = element(section, "class=\"summary\"");
        for (field, want) in [
            ("servers_up", &s["servers_up"]),
            ("packets", &s["counters"]["packets"]),
            ("stick_used", &s["stick"]["used"]),
            ("redispatches", &s["counters"]["redispatches"]),
            ("pinned_down", &s["counters"]["pinned_down"]),
            ("no_backend", &s["counters"]["no_backend"]),
        ] {
            assert_eq!(figure(summary, field), shown(want), "{name} {field}: {summary}");
        }
        // Nothing moved between the samples.
        assert_eq!(figure(summary, "packets_rate"), "0.0", "{summary}");
        assert_eq!(figure(summary, "new_clients_rate"), "0.0", "{summary}");
        for v in s["servers"].as_array().unwrap() {
            let sv = v["name"].as_str().unwrap();
            let row = element(section, &format!("data-server=\"{sv}\""));
            let state = shown(&v["state"]);
            assert_eq!(
                attribute(row, "class"),
                format!("server state-{}", state.to_lowercase()),
                "{name}/{sv}"
            );
            assert_eq!(figure(row, "state"), state);
            for field in ["weight", "packets", "bytes", "stick_entries"] {
                assert_eq!(figure(row, field), shown(&v[field]), "{name}/{sv} {field}: {row}");
            }
            assert_eq!(
                figure(row, "check"),
                shown(&v["check"]["status"]),
                "{name}/{sv}: {row}"
            );
            assert_eq!(figure(row, "packets_rate"), "0.0", "{name}/{sv}: {row}");
            // A column per passive health counter, with the agent's figure.
            for name in ["syn_sent", "syn_retransmits", "handshakes"] {
                assert_eq!(
                    figure(row, &format!("passive.{name}")),
                    shown(&v["passive"][name]),
                    "{name}/{sv} passive.{name}: {row}"
                );
            }
        }
    }
    // The states this test set, as the page shows them.
    let be_app = element(&dom, "data-service=\"be_app\"");
    for (sv, class) in [
        ("app1", "up"),
        ("app2", "drain"),
        ("app3", "maint"),
        ("app4", "down"),
    ] {
        let row = element(be_app, &format!("data-server=\"{sv}\""));
        assert_eq!(attribute(row, "class"), format!("server state-{class}"), "{row}");
    }
    let png = std::fs::read(&screenshot)
        .unwrap_or_else(|err| panic!("no screenshot at {}: {err}", screenshot.display()));
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );

    // Without an agent to answer, the page says so instead of showing figures.
    let page = e.dir.join("stats.html");
    std::fs::write(&page, xlb::control::metrics::stats::PAGE).unwrap();
    let url = format!("file://{}", page.display());
    let dom = browser::dump_dom(
        &e.topo,
        e.lb,
        &PageLoad {
            url: &url,
            virtual_time: Duration::from_secs(3),
            screenshot: None,
            scratch: &e.dir,
        },
    );
    let status = element(&dom, "id=\"status\"");
    assert_eq!(attribute(status, "class"), "unreachable", "{status}");
    assert!(
        status.contains("agent unreachable (") && status.contains("no figures yet"),
        "{status}"
    );
    assert_eq!(attribute(element(&dom, "data-samples="), "data-samples"), "0");
    assert!(!dom.contains("data-service="), "{dom}");
}
