//! `cargo xtask demo`: a load balancer, four backends and a client with many addresses in
//! network namespaces; the real agent and XDP program; a short story in under two minutes.
//! `cargo xtask demo fleet`: three balancers behind a router, one of them lost and back
//! ([`fleet`]). Everything is torn down at the end, also on Ctrl-C.

mod fleet;

use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use harness::lbenv::{LbEnv, Opts};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn step(t0: Instant, msg: &str) -> Result<()> {
    if STOP.load(Ordering::SeqCst) {
        bail!("interrupted: tearing everything down");
    }
    println!("\n[{:>5.1}s] {msg}", t0.elapsed().as_secs_f64());
    Ok(())
}

fn main() {
    // SAFETY: installs a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_sigint as *const () as libc::sighandler_t);
    }
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("xlb-demo: run as root (network namespaces and XDP need it)");
        std::process::exit(1);
    }
    let story = std::env::args().nth(1);
    let result = match story.as_deref() {
        None => run(),
        Some("fleet") => fleet::run(),
        Some(other) => {
            eprintln!("xlb-demo: unknown demo '{other}'; `xlb-demo` or `xlb-demo fleet`");
            std::process::exit(2);
        }
    };
    let code = match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("xlb-demo: {e:#}");
            1
        }
    };
    println!("\nAll namespaces, pins and processes of the demo are gone.");
    std::process::exit(code);
}

fn clients_table(e: &LbEnv, clients: &[IpAddr]) -> Result<BTreeMap<String, Vec<IpAddr>>> {
    let mut by: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    for c in clients {
        let first = e.get_vip(*c).with_context(|| format!("connection from {c}"))?;
        for _ in 0..2 {
            let again = e.get_vip(*c)?;
            if again != first {
                bail!("{c} moved from {first} to {again}: stickiness broken");
            }
        }
        by.entry(first).or_default().push(*c);
    }
    Ok(by)
}

fn print_table(by: &BTreeMap<String, Vec<IpAddr>>) {
    for (b, cs) in by {
        let list: Vec<String> = cs.iter().map(|c| c.to_string()).collect();
        println!("    {b:<5} <- {:>2} clients: {}", cs.len(), list.join(" "));
    }
}

fn run() -> Result<()> {
    let t0 = Instant::now();
    step(
        t0,
        "Building the harness: a bridge, a client with 16 addresses, the LB host, four backends (VIP 10.77.200.1:80 on their lo)",
    )?;
    let e = LbEnv::new(
        "demo",
        Opts {
            v4_sources: 16,
            v6_sources: 4,
            inter: "500ms".into(),
            ..Default::default()
        },
    )?;
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/demo.toml");
    let text = std::fs::read_to_string(example).with_context(|| format!("read {example}"))?;
    e.write_config(
        &text
            .replace("@ADMIN_SOCKET@", &e.socket.display().to_string())
            .replace("@BPFFS_DIR@", &e.bpffs.display().to_string()),
    )?;
    println!(
        "    config: examples/demo.toml (be_app on 10.77.200.1:80, be_app6 on [fd77:200::1]:80, 4 servers each)"
    );
    step(
        t0,
        "Starting the agent: `xlb run -c xlb.toml --netns <lb>` (native XDP on the LB's eth0, maps pinned)",
    )?;
    e.start_agent()?;
    let ip = e.topo.exec(e.lb, &["ip", "-d", "link", "show", "eth0"])?;
    if let Some(p) = ip.lines().find(|l| l.contains("prog/xdp")) {
        println!("    {}", p.trim());
    }

    step(
        t0,
        "Each client opens 3 fresh TCP connections to the VIP; the backend answers with its name",
    )?;
    let clients: Vec<IpAddr> = e.sources4.iter().chain(e.sources6.iter()).copied().collect();
    let before = clients_table(&e, &clients)?;
    print_table(&before);
    println!("    every client got the same backend on all 3 connections (source affinity)");

    step(
        t0,
        "`echo \"show table be_app\" | socat <admin.sock> -`, as HAProxy users type it",
    )?;
    print!("{}", e.api("show table be_app")?);

    let victim = before.keys().next().cloned().context("no backend answered")?;
    let vi = victim.trim_start_matches("app").parse::<usize>()? - 1;
    step(
        t0,
        &format!("{victim}'s server stops; health checks (inter 500ms, fall 3) take it DOWN"),
    )?;
    let mut e = e;
    e.http[vi].stop();
    let down = Instant::now();
    if !e.wait_until(Duration::from_secs(10), || {
        e.server_state("be_app", &victim).is_ok_and(|s| s == "DOWN")
    }) {
        bail!("{victim} was not marked DOWN");
    }
    println!("    {victim} DOWN after {:.1}s", down.elapsed().as_secs_f64());
    for l in e.agent_log().lines().filter(|l| l.contains(" DOWN")) {
        println!("    agent: {}", l.split("] ").nth(1).unwrap_or(l));
    }
    step(
        t0,
        &format!("The clients pinned to {victim} are redispatched (option redispatch); the others stay put"),
    )?;
    let after = clients_table(&e, &clients)?;
    print_table(&after);
    for c in &before[&victim] {
        let now = after
            .iter()
            .find(|(_, cs)| cs.contains(c))
            .map(|(b, _)| b.clone())
            .unwrap_or_default();
        println!("    {c}: {victim} -> {now}");
    }

    step(
        t0,
        &format!("{victim} comes back; its old clients stay on their new backends (no flapping)"),
    )?;
    e.http[vi].restart()?;
    if !e.wait_until(Duration::from_secs(10), || {
        e.server_state("be_app", &victim).is_ok_and(|s| s == "UP")
    }) {
        bail!("{victim} did not come back UP");
    }
    let back = clients_table(&e, &clients)?;
    println!(
        "    {victim} UP again; clients moved since the failover: {}",
        if back == after {
            "none"
        } else {
            "SOME (unexpected)"
        }
    );

    step(t0, "Final counters (`show stat`, `show info`)")?;
    let stat = e.api("show stat")?;
    println!(
        "    {:<8} {:<8} {:<6} {:>8} {:>10} {:>10} {:>12}",
        "service", "server", "status", "packets", "stick_used", "redisp.", "stick_hits"
    );
    for l in stat.lines().filter(|l| l.starts_with("be_app,")) {
        let f: Vec<&str> = l.split(',').collect();
        println!(
            "    {:<8} {:<8} {:<6} {:>8} {:>10} {:>10} {:>12}",
            f[0],
            f[1],
            f[10],
            f[14],
            f[15],
            f.get(20).unwrap_or(&""),
            f.get(16).unwrap_or(&"")
        );
    }
    let info = e.api("show info")?;
    for l in info
        .lines()
        .filter(|l| l.starts_with("Xdp_") && !l.ends_with(": 0"))
    {
        println!("    {l}");
    }
    step(
        t0,
        "Stopping the agent (SIGTERM): the data path keeps forwarding from its pins; then tearing down",
    )?;
    e.stop_agent();
    let still = e.get_vip(clients[1]);
    println!(
        "    with the agent stopped, {} still reaches {}",
        clients[1],
        still.as_deref().unwrap_or("nothing (!)")
    );
    println!("\nDemo finished in {:.1}s.", t0.elapsed().as_secs_f64());
    Ok(())
}
