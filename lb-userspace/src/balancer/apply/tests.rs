//! The phases' decisions that need no kernel: what a reload keeps of a server, what a restart
//! reads back from a pinned backend, which checks a service gets, when stick keys change
//! meaning.

use std::time::Duration;

use lb_common::BACKEND_UP;

use super::*;
use crate::{config::HealthKind, health::CheckSpec};

const MAC_CFG: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC_NEIGH: [u8; 6] = [2, 0, 0, 0, 0, 2];
const MAC_OLD: [u8; 6] = [2, 0, 0, 0, 0, 3];

/// Service "web" (TCP checks on port 8080 for app2) with app1 (no MAC) and app2 (MAC_CFG,
/// weight 2, drain); service "dns" without checks, with ns1. (The `ids` tests use it too.)
pub(in crate::balancer) fn config() -> Config {
    config::parse(
        r#"
[global]
interface = "eth0"
[[service]]
name = "web"
vip = "10.0.0.10:80"
[[service.server]]
name = "app1"
address = "10.0.1.11"
[[service.server]]
name = "app2"
address = "10.0.1.12"
mac = "02:00:00:00:00:01"
weight = 2
state = "drain"
check_port = 8080
[[service]]
name = "dns"
vip = "10.0.0.10:53"
protocol = "udp"
health = { type = "none" }
[[service.server]]
name = "ns1"
address = "10.0.1.21"
"#,
        "xlb.toml",
    )
    .unwrap()
}

fn server_cfg(service: usize, server: usize) -> config::Server {
    config().services[service].servers[server].clone()
}

fn egress(ifindex: u32) -> Egress {
    Egress {
        ifindex,
        ..Egress::default()
    }
}

/// app1 as it ran: weight 5 and maint set at runtime, health down, MAC_OLD, on interface 4.
fn app1_before() -> Server {
    let mut s = fresh(7, 0, &server_cfg(0, 0), None, egress(4), Some(MAC_OLD));
    s.admin = AdminState::Maint;
    s.weight = 5;
    s.health = Health::Down;
    s.last_reason = "timeout".into();
    s
}

#[test]
fn a_reload_keeps_runtime_state_the_config_did_not_change() {
    let before = app1_before();
    let s = carried_over(&before, 9, 3, &before.cfg.clone(), egress(4), None);
    assert_eq!((s.id, s.puid), (9, 4), "id and position come from this apply");
    assert_eq!(s.admin, AdminState::Maint);
    assert_eq!(s.weight, 5);
    assert_eq!(s.health, Health::Down);
    assert_eq!(s.last_reason, "timeout");
    assert_eq!(s.last_change, before.last_change);
    assert_eq!(
        s.mac,
        Some(MAC_OLD),
        "same address, same interface: the MAC known"
    );
}

#[test]
fn a_reload_takes_the_fields_the_config_changed() {
    let before = app1_before();
    let mut c = before.cfg.clone();
    c.weight = 3;
    c.state = AdminState::Drain;
    let s = carried_over(&before, 7, 0, &c, egress(4), None);
    assert_eq!((s.admin, s.weight), (AdminState::Drain, 3));
    assert_eq!(s.health, Health::Down, "health is the checks' business");
}

#[test]
fn a_reload_trusts_an_old_mac_only_at_the_same_address_and_interface() {
    let before = app1_before();
    let c = before.cfg.clone();
    assert_eq!(carried_over(&before, 7, 0, &c, egress(5), None).mac, None);
    let mut moved = c.clone();
    moved.address = "10.0.1.99".parse().unwrap();
    assert_eq!(carried_over(&before, 7, 0, &moved, egress(4), None).mac, None);
    // The neighbour table wins over the MAC known, the config over both.
    assert_eq!(
        carried_over(&before, 7, 0, &c, egress(4), Some(MAC_NEIGH)).mac,
        Some(MAC_NEIGH)
    );
    let mut with_mac = c;
    with_mac.mac = Some(MAC_CFG);
    assert_eq!(
        carried_over(&before, 7, 0, &with_mac, egress(4), Some(MAC_NEIGH)).mac,
        Some(MAC_CFG)
    );
}

#[test]
fn a_new_server_starts_as_configured_and_up() {
    let app2 = fresh(3, 1, &server_cfg(0, 1), None, egress(4), Some(MAC_NEIGH));
    assert_eq!((app2.id, app2.puid), (3, 2));
    assert_eq!(
        (app2.admin, app2.health, app2.weight),
        (AdminState::Drain, Health::Up, 2)
    );
    assert_eq!(app2.mac, Some(MAC_CFG), "the config's MAC wins");
    assert_eq!(app2.egress, egress(4));
    let app1 = fresh(2, 0, &server_cfg(0, 0), None, egress(4), None);
    assert_eq!(app1.mac, None);
    assert_eq!(
        app1.dp_state(),
        lb_common::BACKEND_DOWN,
        "no MAC, nothing to send to"
    );
}

#[test]
fn a_restart_reads_admin_state_and_health_back_from_the_pinned_backend() {
    let pinned = |state, mac| Backend {
        state,
        mac,
        ..Backend::default()
    };
    let ready = AdminState::Ready;
    let cases = [
        (None, (ready, Health::Up)),
        (Some(Backend::default()), (ready, Health::Up)),
        (Some(pinned(BACKEND_UP, MAC_OLD)), (ready, Health::Up)),
        (
            Some(pinned(BACKEND_MAINT, MAC_OLD)),
            (AdminState::Maint, Health::Up),
        ),
        (
            Some(pinned(BACKEND_DRAIN, MAC_OLD)),
            (AdminState::Drain, Health::Up),
        ),
        (Some(pinned(BACKEND_DOWN, MAC_OLD)), (ready, Health::Down)),
        // DOWN for want of a MAC says nothing about the server's health.
        (Some(pinned(BACKEND_DOWN, [0; 6])), (ready, Health::Up)),
    ];
    for (p, want) in cases {
        assert_eq!(adopted_state(p, ready), want, "{p:?}");
    }
    // The configured state stands unless the runtime API had set maint or drain.
    assert_eq!(
        adopted_state(Some(pinned(BACKEND_UP, MAC_OLD)), AdminState::Drain).0,
        AdminState::Drain
    );
}

#[test]
fn a_restart_takes_the_neighbour_tables_mac_over_the_pinned_one() {
    let c = server_cfg(0, 0);
    let pinned = Backend {
        state: BACKEND_UP,
        mac: MAC_OLD,
        ..Backend::default()
    };
    assert_eq!(fresh(1, 0, &c, Some(pinned), egress(4), None).mac, Some(MAC_OLD));
    assert_eq!(
        fresh(1, 0, &c, Some(pinned), egress(4), Some(MAC_NEIGH)).mac,
        Some(MAC_NEIGH)
    );
    let free = Backend::default();
    assert_eq!(fresh(1, 0, &c, Some(free), egress(4), None).mac, None);
}

fn svc(index: usize, id: u32) -> Svc {
    let cfg = config().services[index].clone();
    let servers = cfg
        .servers
        .iter()
        .enumerate()
        .map(|(i, c)| fresh(10 + i as u32, i, c, None, egress(4), None))
        .collect();
    Svc {
        id,
        cfg,
        servers,
        table: Vec::new(),
    }
}

#[test]
fn a_service_with_checks_sets_one_per_server_and_one_without_removes_them() {
    let mut checks = CheckChanges::default();
    add_checks(&svc(0, 0), &mut checks);
    add_checks(&svc(1, 1), &mut checks);
    let web = config().services[0].health.clone();
    assert_eq!(
        (&web.kind, web.inter, web.rise, web.fall),
        (&HealthKind::Tcp, Duration::from_secs(2), 2, 3)
    );
    let key = |a: &str, b: &str| (a.to_string(), b.to_string());
    let spec = |addr: &str| CheckSpec::new(&web, addr.parse().unwrap()).unwrap();
    assert_eq!(
        checks.set,
        vec![
            (key("web", "app1"), spec("10.0.1.11:80"), Health::Up),
            (key("web", "app2"), spec("10.0.1.12:8080"), Health::Up),
        ]
    );
    assert_eq!(checks.remove, vec![key("dns", "ns1")]);
}

#[test]
fn only_another_affinity_or_prefix_changes_what_stick_keys_mean() {
    let a = config().services[0].stick.clone();
    assert!(!rekeyed(&a, &a));
    let resized = Stick {
        size: a.size * 2,
        expire: a.expire * 2,
        ..a.clone()
    };
    assert!(!rekeyed(&a, &resized), "size and expire keep the keys");
    for b in [
        Stick {
            on: StickOn::SrcPort,
            ..a.clone()
        },
        Stick {
            on: StickOn::None,
            ..a.clone()
        },
        Stick {
            ipv4_prefix: 24,
            ..a.clone()
        },
        Stick {
            ipv6_prefix: 64,
            ..a.clone()
        },
    ] {
        assert!(rekeyed(&a, &b), "{b:?}");
    }
}
