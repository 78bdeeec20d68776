//! `cargo xtask bench [datapath|table|maglev|e2e|fleet|failover|hit-path|all] [--json FILE]`: benchmarks
//! that print tables and write JSON under target/xlb-bench/ (`all` is every one but `fleet`,
//! which takes minutes and measures issue 11's fleet figures rather than a cost, and
//! `failover`, issue 12's passive-health figures; `hit-path` is that bench's stick-hit figure alone). Every comparison is a ratio to a baseline
//! measured in the same run (these machines are noisy; absolute times wander).

use std::{path::PathBuf, time::Instant};

use harness::bench::{self, Report};

fn main() {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "all".into());
    let mut json: Option<PathBuf> = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--json" => json = args.next().map(PathBuf::from),
            other => {
                eprintln!(
                    "xlb-bench: unknown argument '{other}'; usage: xlb-bench [datapath|table|maglev|e2e|fleet|failover|hit-path|all] [--json FILE]"
                );
                std::process::exit(2);
            }
        }
    }
    let out_dir = PathBuf::from("target/xlb-bench");
    std::fs::create_dir_all(&out_dir).expect("create target/xlb-bench");
    let t0 = Instant::now();
    let run = |name: &str, f: &dyn Fn() -> anyhow::Result<Report>, json: &Option<PathBuf>| {
        eprintln!("== bench {name} ==");
        match f() {
            Ok(r) => {
                println!("{}", r.table);
                let path = json
                    .clone()
                    .unwrap_or_else(|| out_dir.join(format!("{name}.json")));
                std::fs::write(&path, r.json.to_string()).expect("write json");
                eprintln!("wrote {}", path.display());
                true
            }
            Err(e) => {
                eprintln!("bench {name} failed: {e:#}");
                false
            }
        }
    };
    let ok = match which.as_str() {
        "datapath" => run("datapath", &bench::datapath::run, &json),
        "table" => run("table", &bench::table::run, &json),
        "maglev" => run("maglev", &bench::maglev::run, &json),
        "e2e" => run("e2e", &bench::e2e::run, &json),
        "fleet" => run("fleet", &bench::fleet::run, &json),
        "failover" => run("failover", &bench::failover::run, &json),
        "hit-path" => run("hit-path", &bench::hit_path::run, &json),
        "all" => {
            let mut ok = true;
            for (n, f) in [
                (
                    "datapath",
                    &bench::datapath::run as &dyn Fn() -> anyhow::Result<Report>,
                ),
                ("table", &bench::table::run),
                ("maglev", &bench::maglev::run),
                ("e2e", &bench::e2e::run),
            ] {
                ok &= run(n, f, &None);
            }
            ok
        }
        other => {
            eprintln!(
                "xlb-bench: unknown benchmark '{other}'; one of datapath, table, maglev, e2e, fleet, failover, hit-path, all"
            );
            std::process::exit(2);
        }
    };
    eprintln!("benchmarks took {:?}", t0.elapsed());
    std::process::exit(if ok { 0 } else { 1 });
}
