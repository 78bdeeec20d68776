//! End to end in the netns harness, with wrk (bounded: fixed duration and connections) from the
//! client host: (a) straight to one backend, (b) through xlb (VIP, XDP on the LB host), (c)
//! through the floor: a stateless XDP program on a host of its own, set up like the LB host,
//! that sends every frame to its VIP to one backend (no table, no hash; `xlb_e2e_floor`) -- the
//! best any XDP balancer can do in this harness, where the direct path is one veth hop shorter,
//! (d) through HAProxy on the LB host (`mode tcp`, `stick-table type ip`, `stick on src`,
//! `option redispatch`, its default thread count). Each with a new connection per request
//! (`close`) and with keep-alive (`ka`). Runs are interleaved; medians and spread.
//!
//! CPU, like for like: the whole machine's CPU time (all CPUs, busy = everything but idle and
//! iowait in /proc/stat) over each run, per request, minus the same figure of the direct path:
//! what the balancer costs the machine on top of the traffic itself (clients, backends and the
//! kernel's forwarding included in both). Beside it, for xlb's two paths, the kernel's own run
//! time of the XDP programs (`kernel.bpf_stats_enabled`) per request: the balancer's (the
//! encapsulation stage, a tail call, counts in it) and `xlb decap`'s on the backend (which
//! passes the L2 path's frames). /proc/stat is the host's: anything else running on the
//! machine during a run shows up in it (interleaving spreads that noise over the paths; the
//! spread of the rounds is printed).
//!
//! (e) through xlb again, to the same backend by IPIP with `xlb decap` on it (`xlb_ipip`, see
//! `e2e_ipip`): its ratio to (b) is what encapsulation costs. The two run next to each other,
//! in turn first and second from round to round; then, per mode, twelve quick pairs of 2 s runs
//! of the two alone; the figure is the median of all the pairs' ratios (16). Before: with three
//! rounds, `xlb_ipip` always right after `xlb`, and the ratio of the two medians, the same build
//! read 0.92 to 0.97 × from run to run; with the four rounds' pairs alone, 0.90 to 0.99.
//!
//! The backend's `xlb decap` runs at tc (`--hook tc`), as the README advises for veth: at XDP,
//! veth copies every encapsulated packet before the program runs (its headroom is short of the
//! 256 bytes veth wants, by the outer header the balancer pushed), while the L2 path's frames
//! arrive with room to spare — a copy no NIC makes (about 0.25 µs per keep-alive request).
//! `XLB_BENCH_DECAP_HOOK=xdp` measures the XDP hook instead (bench/RESULTS.md has both).
//!
//! wrk has one source address, so every path ends at one backend (source affinity pins it;
//! HAProxy's stick table too; the floor sends to that backend), which makes the paths
//! comparable.

use std::{
    net::SocketAddr,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use serde_json::json;

use super::{Report, median, spread};
use crate::{
    ChildGuard,
    lbenv::{LbEnv, Opts, VIP4_HTTP},
};

/// The floor host's VIP (in the harness's VIP plan, beside `VIP4`).
const VIP_FLOOR: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 77, 200, 2);

/// Rounds: an even number, so that `xlb` and `xlb_ipip` each go first as often.
const ROUNDS: usize = 4;
/// After the rounds, quick pairs of `xlb` and `xlb_ipip` (`QUICK_SECS` each, in turn first),
/// per mode: on this machine one round's ratio of the two wanders by ±10 %, mostly with what
/// the machine's neighbours do, which two short runs next to each other share more of.
const QUICK_PAIRS: usize = 12;
const QUICK_SECS: u32 = 2;
const SECS: u32 = 4;
const CONNS: u32 = 32;

struct Wrk {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: u64,
    errors: u64,
}

fn parse_ms(v: &str) -> Option<f64> {
    let v = v.trim();
    for (suffix, mult) in [("us", 0.001), ("ms", 1.0), ("s", 1000.0)] {
        if let Some(n) = v.strip_suffix(suffix) {
            return n.parse::<f64>().ok().map(|x| x * mult);
        }
    }
    None
}

fn wrk(e: &LbEnv, url: &str, close: bool, secs: u32) -> Result<Wrk> {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t",
        "1",
        "-c",
        &CONNS.to_string(),
        "-d",
        &format!("{secs}s"),
        "--latency",
        "--timeout",
        "2s",
    ]);
    if close {
        cmd.args(["-H", "Connection: close"]);
    }
    cmd.arg(url).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = e.topo.spawn(e.client, cmd)?;
    let status = child
        .wait_timeout(Duration::from_secs(secs as u64 + 20))
        .context("wrk did not finish")?;
    let mut out = String::new();
    if let Some(mut o) = child.take_stdout() {
        use std::io::Read as _;
        o.read_to_string(&mut out)?;
    }
    if !status.success() {
        bail!("wrk failed ({status}): {out}");
    }
    let rps = out
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk output:\n{out}"))?;
    let pct = |p: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(p))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(parse_ms)
            .unwrap_or(f64::NAN)
    };
    let requests = out
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let errors = wrk_errors(&out);
    Ok(Wrk {
        rps,
        p50_ms: pct("50%"),
        p99_ms: pct("99%"),
        requests,
        errors,
    })
}

/// Failed requests in wrk's output: the "Socket errors: connect N, read N, write N, timeout N"
/// line and the "Non-2xx or 3xx responses: N" line, both (each is printed only when not zero).
pub fn wrk_errors(out: &str) -> u64 {
    let mut n = 0;
    for l in out.lines().map(str::trim) {
        if let Some(rest) = l.strip_prefix("Socket errors:") {
            n += rest
                .split(',')
                .filter_map(|part| part.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        } else if let Some(rest) = l.strip_prefix("Non-2xx or 3xx responses:") {
            n += rest.trim().parse::<u64>().unwrap_or(0);
        }
    }
    n
}

/// Busy CPU time of the whole machine, all CPUs (ns): the "cpu" line of /proc/stat without
/// idle and iowait.
fn machine_busy_ns() -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    anyhow::ensure!(f.len() >= 8, "short cpu line in /proc/stat: {line}");
    // user nice system idle iowait irq softirq steal (guest time is inside user already)
    let busy: u64 = f[0] + f[1] + f[2] + f[5] + f[6] + f[7];
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Ok(busy * 1_000_000_000 / hz)
}

/// The floor host: a host of its own on the switch, like the LB host, running
/// `xlb_e2e_floor` aimed at `backend` for `VIP_FLOOR`.
fn add_floor_host(e: &mut LbEnv, backend: usize) -> Result<()> {
    let floor = e.topo.add_host("floor")?;
    let (port, ns, own_mac) = {
        let h = e.topo.host(floor);
        (h.port.clone(), h.ns.clone(), h.mac)
    };
    let backend_mac = e.topo.host(e.backends[backend]).mac;
    crate::netns::run_in(e.topo.switch_ns(), move || {
        xlb::datapath::attach_pass_program(&port)
    })??;
    crate::netns::run_in(&ns, move || -> Result<()> {
        let mut dp = xlb::datapath::Datapath::load(&xlb::datapath::LoadOptions::default())?;
        dp.set_floor_target(lb_common::FloorTarget {
            vip: VIP_FLOOR.octets(),
            backend_mac,
            own_mac,
        })?;
        let prog = dp.program(lb_common::PROG_E2E_FLOOR)?;
        let id = prog.attach("eth0", aya::programs::XdpMode::Driver)?;
        // The link lives until the floor host's namespace goes away with the topology.
        std::mem::forget(prog.take_link(id)?);
        Ok(())
    })??;
    for b in e.backends.clone() {
        e.topo.add_vip_on_lo(b, VIP_FLOOR.into())?;
    }
    e.topo.route_vip_via(e.client, VIP_FLOOR.into(), floor)?;
    Ok(())
}

/// The backend's `xlb decap` program (at XDP or tc; the bench loads one): (run time ns, run
/// count).
fn decap_runtime() -> Result<(u64, u64)> {
    let mut found = Vec::new();
    for p in aya::programs::loaded_programs() {
        let p = p?;
        if let Some(name) = p.name_as_str()
            && [lb_common::PROG_DECAP, lb_common::PROG_DECAP_TC].contains(&name)
        {
            found.push((p.run_time().as_nanos() as u64, p.run_count()));
        }
    }
    match found[..] {
        [one] => Ok(one),
        _ => bail!("expected one xlb decap program loaded, found {}", found.len()),
    }
}

/// Packets `xlb decap` on backend `bi` stripped so far.
fn decapsulated(e: &LbEnv, bi: usize) -> Result<u64> {
    let ns = &e.topo.host(e.backends[bi]).ns;
    let base = xlb::datapath::decap::base_dir(Some(ns));
    Ok(xlb::datapath::decap::status(crate::topology::HOST_IF, &base)?
        .counters
        .get(lb_common::decap_stat::DECAPSULATED))
}

/// Each path took the way it names: `xlb_ipip`'s requests came encapsulated (at least one
/// stripped packet per request), no other path's did (but for a few stragglers of an
/// `xlb_ipip` run just before: the last ACKs and FINs of its connections after wrk has stopped
/// counting; seen: 1 in a run of 26,250 requests).
fn check_path(name: &str, stripped: u64, requests: u64) -> Result<()> {
    let ok = if name == "xlb_ipip" {
        stripped >= requests
    } else {
        stripped <= requests / 100
    };
    anyhow::ensure!(
        ok,
        "path {name}: the backend's decapsulator stripped {stripped} packets for {requests} requests"
    );
    Ok(())
}

/// The XDP program attached to the LB's eth0: (run time ns, run count).
fn xdp_runtime(e: &LbEnv, host: crate::HostId) -> Result<(u64, u64)> {
    let link = e.topo.exec(host, &["ip", "-d", "link", "show", "eth0"])?;
    let id: u32 = link
        .split("prog/xdp id ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no XDP program on eth0 in {}", e.topo.host(host).ns))?;
    for p in aya::programs::loaded_programs() {
        let p = p?;
        if p.id() == id {
            return Ok((p.run_time().as_nanos() as u64, p.run_count()));
        }
    }
    bail!("program {id} not found")
}

/// The seed's HAProxy config (`mode tcp`, `stick on src`, `option redispatch`, `retries 3`) bound
/// to `bind`, one server per backend with `check inter 2s` and `server_opts` after it.
pub(super) fn haproxy_config(e: &LbEnv, bind: SocketAddr, server_opts: &str) -> String {
    let mut c = format!(
        "global\n  maxconn 8000\ndefaults\n  mode tcp\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n  option redispatch\n  retries 3\nfrontend fe\n  bind {bind}\n  default_backend be_app\nbackend be_app\n  balance roundrobin\n  stick-table type ip size 100k expire 30m\n  stick on src\n"
    );
    for (i, b) in e.backends.iter().enumerate() {
        c.push_str(&format!(
            "  server app{} {}:80 check inter 2s{server_opts}\n",
            i + 1,
            e.topo.host(*b).ipv4
        ));
    }
    c
}

/// HAProxy (`-db`) on the LB host with config `text` (written to the environment's directory);
/// an error with the config if it exits at start.
pub(super) fn start_haproxy(e: &LbEnv, text: &str) -> Result<ChildGuard> {
    let cfg = e.dir.join("haproxy.cfg");
    std::fs::write(&cfg, text)?;
    let mut cmd = Command::new("haproxy");
    cmd.args(["-db", "-f"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let hap = e.topo.spawn(e.lb, cmd)?;
    std::thread::sleep(Duration::from_millis(500));
    if let Some(st) = hap.try_wait() {
        bail!("haproxy exited at start ({st}); config:\n{text}");
    }
    Ok(hap)
}

pub fn run() -> Result<Report> {
    use xlb::datapath::decap::Hook;
    let decap_hook = match std::env::var("XLB_BENCH_DECAP_HOOK") {
        Ok(v) => *Hook::ALL
            .iter()
            .find(|h| h.to_string() == v)
            .with_context(|| format!("XLB_BENCH_DECAP_HOOK={v}: give xdp or tc"))?,
        Err(_) => Hook::Tc,
    };
    let mut e = LbEnv::new(
        "bench-e2e",
        Opts {
            inter: "2s".into(),
            ..Opts::sources(1, 0)
        },
    )?;
    super::e2e_ipip::set_encap_source(&mut e)?;
    e.start_agent()?;
    // HAProxy on the LB host, on its own address (XDP only takes the VIP).
    let lb_addr = e.topo.host(e.lb).ipv4;
    let hap_bind = SocketAddr::new(lb_addr.into(), 8080);
    let hap = start_haproxy(&e, &haproxy_config(&e, hap_bind, ""))?;
    // The backend the single wrk source is pinned to by xlb: the direct baseline uses it too.
    let served = e.get_vip(e.topo.host(e.client).ipv4.into())?;
    let bi = served.trim_start_matches("app").parse::<usize>()? - 1;
    let direct = format!("http://{}:80/", e.topo.host(e.backends[bi]).ipv4);
    add_floor_host(&mut e, bi)?;
    let via_floor = format!("http://{VIP_FLOOR}:80/");
    let floor_answer = e.topo.http_get(
        e.client,
        e.topo.host(e.client).ipv4.into(),
        SocketAddr::new(VIP_FLOOR.into(), 80),
        Duration::from_secs(5),
    )?;
    anyhow::ensure!(
        floor_answer.contains(served.trim()),
        "the floor path does not reach {served}: {floor_answer}"
    );
    let via_xlb = format!("http://{VIP4_HTTP}/");
    let via_ipip = super::e2e_ipip::add_ipip_path(&mut e, bi, decap_hook)?;
    let via_hap = format!("http://{hap_bind}/");

    let stats_was =
        std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").unwrap_or_else(|_| "0".into());
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1").context("enable kernel.bpf_stats_enabled")?;
    let mut rates: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    let mut lat: std::collections::BTreeMap<String, (Vec<f64>, Vec<f64>)> = Default::default();
    // Machine CPU ns per request, per path and mode; XDP run time ns per request (xlb).
    let mut machine: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    let mut xdp: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    // The same, of `xlb decap` on the backend (xlb's paths).
    let mut decap_xdp: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    let mut errors = 0;
    // Ratios xlb_ipip / xlb of the quick pairs, per mode.
    let mut quick: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    let paths = [
        ("direct", &direct),
        ("xlb", &via_xlb),
        // Next to its L2 twin (the two swap places in odd rounds): their ratio compares
        // neighbours in time.
        ("xlb_ipip", &via_ipip),
        ("floor", &via_floor),
        ("haproxy", &via_hap),
    ];
    let result = (|| -> Result<()> {
        for round in 0..ROUNDS {
            let mut order = paths;
            if round % 2 == 1 {
                order.swap(1, 2);
            }
            for (mode, close) in [("close", true), ("ka", false)] {
                for (name, url) in order {
                    let (x0, d0, m0) = (xdp_runtime(&e, e.lb)?, decap_runtime()?, machine_busy_ns()?);
                    let stripped0 = decapsulated(&e, bi)?;
                    let w = wrk(&e, url, close, SECS)?;
                    let (x1, d1, m1) = (xdp_runtime(&e, e.lb)?, decap_runtime()?, machine_busy_ns()?);
                    check_path(name, decapsulated(&e, bi)? - stripped0, w.requests)?;
                    errors += w.errors;
                    eprintln!(
                        "  round {}/{ROUNDS} {mode:<5} {name:<8} {:>9.0} req/s  p50 {:.2} ms  p99 {:.2} ms  ({} requests, {} errors)",
                        round + 1,
                        w.rps,
                        w.p50_ms,
                        w.p99_ms,
                        w.requests,
                        w.errors
                    );
                    let key = format!("{name}_{mode}");
                    rates.entry(key.clone()).or_default().push(w.rps);
                    let l = lat.entry(key.clone()).or_default();
                    l.0.push(w.p50_ms);
                    l.1.push(w.p99_ms);
                    if w.requests > 0 {
                        let per = |d: u64| d as f64 / w.requests as f64;
                        machine.entry(key.clone()).or_default().push(per(m1 - m0));
                        if name.starts_with("xlb") {
                            xdp.entry(key.clone()).or_default().push(per(x1.0 - x0.0));
                            decap_xdp.entry(key).or_default().push(per(d1.0 - d0.0));
                        }
                    }
                }
            }
        }
        for (mode, close) in [("close", true), ("ka", false)] {
            for pair in 0..QUICK_PAIRS {
                let mut pair_urls = [("xlb", &via_xlb), ("xlb_ipip", &via_ipip)];
                if pair % 2 == 1 {
                    pair_urls.swap(0, 1);
                }
                let mut rps = std::collections::BTreeMap::new();
                for (name, url) in pair_urls {
                    let stripped0 = decapsulated(&e, bi)?;
                    let w = wrk(&e, url, close, QUICK_SECS)?;
                    check_path(name, decapsulated(&e, bi)? - stripped0, w.requests)?;
                    errors += w.errors;
                    rps.insert(name, w.rps);
                }
                let ratio = rps["xlb_ipip"] / rps["xlb"];
                eprintln!(
                    "  quick pair {}/{QUICK_PAIRS} {mode:<5} xlb {:>9.0} req/s, xlb_ipip {:>9.0} req/s: {ratio:.3}",
                    pair + 1,
                    rps["xlb"],
                    rps["xlb_ipip"]
                );
                quick.entry(mode).or_default().push(ratio);
            }
        }
        Ok(())
    })();
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", stats_was.trim());
    hap.terminate(Duration::from_secs(2));
    result?;

    let m = |k: &str| median(&rates[k]);
    let mut table = format!(
        "e2e: wrk -c{CONNS} -d{SECS}s, {ROUNDS} interleaved rounds, medians (spread); one client address -> one backend\n{:<16}{:>12}{:>20}{:>10}{:>10}\n",
        "path", "req/s", "spread", "p50 ms", "p99 ms"
    );
    let keys = [
        "direct_close",
        "xlb_close",
        "floor_close",
        "haproxy_close",
        "xlb_ipip_close",
        "direct_ka",
        "xlb_ka",
        "floor_ka",
        "haproxy_ka",
        "xlb_ipip_ka",
    ];
    for k in keys {
        let (lo, hi) = spread(&rates[k]);
        table.push_str(&format!(
            "{k:<16}{:>12.0}{:>20}{:>10.2}{:>10.2}\n",
            m(k),
            format!("{lo:.0}..{hi:.0}"),
            median(&lat[k].0),
            median(&lat[k].1)
        ));
    }
    for mode in ["close", "ka"] {
        let r = |p: &str| m(&format!("{p}_{mode}"));
        table.push_str(&format!(
            "ratios {mode:<5}: xlb/direct {:.2}, xlb/floor {:.2}, floor/direct {:.2}, xlb/haproxy {:.2}\n",
            r("xlb") / r("direct"),
            r("xlb") / r("floor"),
            r("floor") / r("direct"),
            r("xlb") / r("haproxy")
        ));
    }
    // IPIP over L2 DSR: the median of the ratios of the two neighbours, the rounds' and the
    // quick pairs'.
    let ipip_to_l2 = |mode: &str| -> (f64, (f64, f64), usize) {
        let (ipip, l2) = (
            &rates[&format!("xlb_ipip_{mode}")],
            &rates[&format!("xlb_{mode}")],
        );
        let mut paired: Vec<f64> = ipip.iter().zip(l2).map(|(i, l)| i / l).collect();
        paired.extend(quick.get(mode).into_iter().flatten());
        (median(&paired), spread(&paired), paired.len())
    };
    for mode in ["close", "ka"] {
        let (ratio, (lo, hi), n) = ipip_to_l2(mode);
        table.push_str(&format!(
            "ipip   {mode:<5}: xlb_ipip/xlb {ratio:.3} ({n} pairs {lo:.2}..{hi:.2}; IPIP + xlb decap at {decap_hook} vs L2 DSR, same backend; goal >= 0.95)\n",
        ));
    }
    // CPU per request above the direct path (us), medians over rounds.
    let mut cpu_json = serde_json::Map::new();
    table.push_str(
        "machine CPU per request above direct (all CPUs, /proc/stat), us; eBPF run time per request, us\n",
    );
    for mode in ["close", "ka"] {
        let cpu = |p: &str| median(&machine[&format!("{p}_{mode}")]) / 1000.0;
        let above = |p: &str| cpu(p) - cpu("direct");
        let (lo, hi) = spread(&machine[&format!("direct_{mode}")]);
        let xdp_us = median(&xdp[&format!("xlb_{mode}")]) / 1000.0;
        let xdp_of = |runs: &std::collections::BTreeMap<String, Vec<f64>>, p: &str| {
            median(&runs[&format!("{p}_{mode}")]) / 1000.0
        };
        table.push_str(&format!(
            "  {mode:<5}: xlb {:+.2}, xlb_ipip {:+.2}, floor {:+.2}, haproxy {:+.2} (direct itself {:.2}, spread {:.2}..{:.2}); eBPF run time: balancer xlb {xdp_us:.3}, xlb_ipip {:.3}; backend (xlb decap at {decap_hook}) xlb {:.3}, xlb_ipip {:.3}\n",
            above("xlb"),
            above("xlb_ipip"),
            above("floor"),
            above("haproxy"),
            cpu("direct"),
            lo / 1000.0,
            hi / 1000.0,
            xdp_of(&xdp, "xlb_ipip"),
            xdp_of(&decap_xdp, "xlb"),
            xdp_of(&decap_xdp, "xlb_ipip"),
        ));
        cpu_json.insert(
            mode.to_string(),
            json!({
                "machine_us_per_req": {"direct": cpu("direct"), "xlb": cpu("xlb"), "xlb_ipip": cpu("xlb_ipip"), "floor": cpu("floor"), "haproxy": cpu("haproxy")},
                "above_direct_us_per_req": {"xlb": above("xlb"), "xlb_ipip": above("xlb_ipip"), "floor": above("floor"), "haproxy": above("haproxy")},
                "xlb_xdp_run_time_us_per_req": xdp_us,
                "xdp_run_time_us_per_req": {
                    "balancer": {"xlb": xdp_us, "xlb_ipip": xdp_of(&xdp, "xlb_ipip")},
                    "backend_decap": {"xlb": xdp_of(&decap_xdp, "xlb"), "xlb_ipip": xdp_of(&decap_xdp, "xlb_ipip")},
                },
            }),
        );
    }
    table.push_str(&format!("socket errors or non-2xx across all runs: {errors}\n"));
    let rates_json: serde_json::Map<String, serde_json::Value> =
        rates.keys().map(|k| (k.clone(), json!(m(k)))).collect();
    let lat_json: serde_json::Map<String, serde_json::Value> = lat
        .iter()
        .map(|(k, v)| (k.clone(), json!({"p50_ms": median(&v.0), "p99_ms": median(&v.1)})))
        .collect();
    Ok(Report {
        table,
        json: json!({
            "rates": rates_json,
            "latency": lat_json,
            "cpu": cpu_json,
            "ipip_to_l2": {
                "close": ipip_to_l2("close").0,
                "ka": ipip_to_l2("ka").0,
                "method": "median of xlb_ipip / xlb over the rounds and the quick pairs, the two run next to each other (in turn first)",
                "decap_hook": decap_hook.to_string(),
            },
            "rounds": ROUNDS, "quick_pairs": QUICK_PAIRS, "quick_seconds": QUICK_SECS, "seconds": SECS, "connections": CONNS, "errors": errors,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::wrk_errors;

    #[test]
    fn wrk_errors_reads_socket_errors_and_non_2xx_lines() {
        let out = "Running 4s test @ http://10.77.200.1:80/\n  1 threads and 32 connections\n  \
                   128000 requests in 4.00s, 20.00MB read\n  Socket errors: connect 2, read 3, write 0, timeout 4\n  \
                   Non-2xx or 3xx responses: 5\nRequests/sec:  32000.00\n";
        // Not the "2" and "3" of "Non-2xx or 3xx", not the line of one kind only.
        assert_eq!(wrk_errors(out), 2 + 3 + 4 + 5);
        assert_eq!(wrk_errors("  Non-2xx or 3xx responses: 7\n"), 7);
        assert_eq!(
            wrk_errors("  Socket errors: connect 0, read 1, write 0, timeout 0\n"),
            1
        );
        assert_eq!(wrk_errors("Requests/sec:  32000.00\n"), 0);
    }
}
