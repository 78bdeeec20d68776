//! Maglev table build time (10, 100, 1000 servers at M = 65537 = `MAGLEV_MAX_SIZE`; larger
//! tables are not allowed by the data path, so they are not timed), and the time from
//! a health change to the flipped table being in the kernel.

use std::time::Instant;

use anyhow::Result;
use lb_common::{BACKEND_DOWN, maglev};
use serde_json::json;

use super::{Report, median};
use crate::fixture::{Lb, Svc};

pub fn run() -> Result<Report> {
    let mut rows = Vec::new();
    let mut table = String::from("maglev: table build time, median of 5\nservers        M   build ms\n");
    for m in [lb_common::MAGLEV_MAX_SIZE] {
        for n in [10usize, 100, 1000] {
            let names: Vec<String> = (0..n).map(|i| format!("srv{i}")).collect();
            let servers: Vec<maglev::MaglevServer> = names
                .iter()
                .enumerate()
                .map(|(i, s)| maglev::MaglevServer {
                    name: s,
                    id: i as u32,
                    weight: 1,
                })
                .collect();
            let mut t = Vec::new();
            for _ in 0..5 {
                let t0 = Instant::now();
                let tab = maglev::build(&servers, m);
                t.push(t0.elapsed().as_secs_f64() * 1e3);
                std::hint::black_box(tab);
            }
            let ms = median(&t);
            table.push_str(&format!("{n:>7} {m:>8} {ms:>10.2}\n"));
            rows.push(json!({"servers": n, "m": m, "build_ms": ms}));
        }
    }
    // Health change -> flipped table in the kernel, as the agent does it: rebuild + write the
    // inactive slot + flip (the fixture's `set_state` is that path).
    let mut lb = Lb::new(Svc::default());
    let mut t = Vec::new();
    for i in 0..5 {
        let t0 = Instant::now();
        lb.set_state(i % 4, BACKEND_DOWN);
        t.push(t0.elapsed().as_secs_f64() * 1e3);
        lb.set_state(i % 4, lb_common::BACKEND_UP);
    }
    let flip = median(&t);
    table.push_str(&format!(
        "health change -> flipped table in the kernel (4 servers, M = 65537): {flip:.2} ms\n"
    ));
    Ok(Report {
        table,
        json: json!({"builds": rows, "health_change_to_flip_ms": flip}),
    })
}
