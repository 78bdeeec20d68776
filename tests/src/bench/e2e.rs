//! End to end in the netns harness, with wrk (bounded: fixed duration and connections) from the
//! client host: (a) straight to one backend, (b) through xlb (VIP, XDP on the LB host), (c)
//! through HAProxy on the LB host (`mode tcp`, `stick-table type ip`, `stick on src`,
//! `option redispatch`: the seed's config). Each with a new connection per request (`close`)
//! and with keep-alive (`ka`). Runs are interleaved A, B, C, A, B, C, ...; medians and spread.
//!
//! LB CPU per connection: for xlb the kernel's own run time of the XDP program
//! (`kernel.bpf_stats_enabled`), for HAProxy its process time (utime + stime), both divided by
//! the requests wrk completed in `close` mode (one connection each).
//!
//! wrk has one source address, so every path ends at one backend (source affinity pins it;
//! HAProxy's stick table too), which makes the three paths comparable.

use std::{
    net::SocketAddr,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use serde_json::json;

use super::{Report, median, spread};
use crate::lbenv::{LbEnv, Opts, VIP4_HTTP};

const ROUNDS: usize = 3;
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

fn wrk(e: &LbEnv, url: &str, close: bool) -> Result<Wrk> {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t",
        "1",
        "-c",
        &CONNS.to_string(),
        "-d",
        &format!("{SECS}s"),
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
        .wait_timeout(Duration::from_secs(SECS as u64 + 20))
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
    let errors = out
        .lines()
        .find(|l| l.contains("Socket errors") || l.contains("Non-2xx"))
        .map(|l| {
            l.split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    Ok(Wrk {
        rps,
        p50_ms: pct("50%"),
        p99_ms: pct("99%"),
        requests,
        errors,
    })
}

/// The XDP program attached to the LB's eth0: (run time ns, run count).
fn xdp_runtime(e: &LbEnv) -> Result<(u64, u64)> {
    let link = e.topo.exec(e.lb, &["ip", "-d", "link", "show", "eth0"])?;
    let id: u32 = link
        .split("prog/xdp id ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no XDP program on the LB's eth0")?;
    for p in aya::programs::loaded_programs() {
        let p = p?;
        if p.id() == id {
            return Ok((p.run_time().as_nanos() as u64, p.run_count()));
        }
    }
    bail!("program {id} not found")
}

fn proc_cpu_ns(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Ok(ticks * 1_000_000_000 / hz)
}

fn haproxy_config(e: &LbEnv, bind: SocketAddr) -> String {
    let be = e.topo.host(e.backends[0]);
    let mut c = format!(
        "global\n  maxconn 8000\n  nbthread 1\ndefaults\n  mode tcp\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n  option redispatch\n  retries 3\nfrontend fe\n  bind {bind}\n  default_backend be_app\nbackend be_app\n  balance roundrobin\n  stick-table type ip size 100k expire 30m\n  stick on src\n"
    );
    let _ = be;
    for (i, b) in e.backends.iter().enumerate() {
        c.push_str(&format!(
            "  server app{} {}:80 check inter 2s\n",
            i + 1,
            e.topo.host(*b).ipv4
        ));
    }
    c
}

pub fn run() -> Result<Report> {
    let e = LbEnv::new(
        "bench-e2e",
        Opts {
            v4_sources: 1,
            v6_sources: 0,
            inter: "2s".into(),
            ..Default::default()
        },
    )?;
    e.start_agent()?;
    // HAProxy on the LB host, on its own address (XDP only takes the VIP).
    let lb_addr = e.topo.host(e.lb).ipv4;
    let hap_bind = SocketAddr::new(lb_addr.into(), 8080);
    let cfg = e.dir.join("haproxy.cfg");
    std::fs::write(&cfg, haproxy_config(&e, hap_bind))?;
    let mut cmd = Command::new("haproxy");
    cmd.args(["-db", "-f"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let hap = e.topo.spawn(e.lb, cmd)?;
    std::thread::sleep(Duration::from_millis(500));
    if let Some(st) = hap.try_wait() {
        bail!(
            "haproxy exited at start ({st}); config:\n{}",
            haproxy_config(&e, hap_bind)
        );
    }
    // The backend the single wrk source is pinned to by xlb: the direct baseline uses it too.
    let served = e.get_vip(e.topo.host(e.client).ipv4.into())?;
    let bi = served.trim_start_matches("app").parse::<usize>()? - 1;
    let direct = format!("http://{}:80/", e.topo.host(e.backends[bi]).ipv4);
    let via_xlb = format!("http://{VIP4_HTTP}/");
    let via_hap = format!("http://{hap_bind}/");

    let stats_was =
        std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").unwrap_or_else(|_| "0".into());
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1").context("enable kernel.bpf_stats_enabled")?;
    let mut rates: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    let mut lat: std::collections::BTreeMap<String, (Vec<f64>, Vec<f64>)> = Default::default();
    let (mut xlb_cpu, mut hap_cpu) = (Vec::new(), Vec::new());
    let mut errors = 0;
    let result = (|| -> Result<()> {
        for round in 0..ROUNDS {
            for (mode, close) in [("close", true), ("ka", false)] {
                for (name, url) in [("direct", &direct), ("xlb", &via_xlb), ("haproxy", &via_hap)] {
                    let (x0, h0) = (xdp_runtime(&e)?, proc_cpu_ns(hap.pid())?);
                    let w = wrk(&e, url, close)?;
                    let (x1, h1) = (xdp_runtime(&e)?, proc_cpu_ns(hap.pid())?);
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
                    let l = lat.entry(key).or_default();
                    l.0.push(w.p50_ms);
                    l.1.push(w.p99_ms);
                    if close && w.requests > 0 {
                        if name == "xlb" {
                            xlb_cpu.push((x1.0 - x0.0) as f64 / 1000.0 / w.requests as f64);
                        } else if name == "haproxy" {
                            hap_cpu.push((h1 - h0) as f64 / 1000.0 / w.requests as f64);
                        }
                    }
                }
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
    for k in [
        "direct_close",
        "xlb_close",
        "haproxy_close",
        "direct_ka",
        "xlb_ka",
        "haproxy_ka",
    ] {
        let (lo, hi) = spread(&rates[k]);
        table.push_str(&format!(
            "{k:<16}{:>12.0}{:>20}{:>10.2}{:>10.2}\n",
            m(k),
            format!("{lo:.0}..{hi:.0}"),
            median(&lat[k].0),
            median(&lat[k].1)
        ));
    }
    let (xc, hc) = (median(&xlb_cpu), median(&hap_cpu));
    table.push_str(&format!(
        "ratios: close xlb/direct {:.2}, xlb/haproxy {:.2}; keepalive xlb/direct {:.2}, xlb/haproxy {:.2}\n",
        m("xlb_close") / m("direct_close"),
        m("xlb_close") / m("haproxy_close"),
        m("xlb_ka") / m("direct_ka"),
        m("xlb_ka") / m("haproxy_ka")
    ));
    table.push_str(&format!(
        "LB CPU per connection: xlb {xc:.2} us (XDP run time), haproxy {hc:.1} us (process time): xlb = 1/{:.0} of haproxy\n",
        hc / xc
    ));
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
            "cpu_us_per_conn": {"xlb": xc, "haproxy": hc},
            "rounds": ROUNDS, "seconds": SECS, "connections": CONNS, "errors": errors,
        }),
    })
}
