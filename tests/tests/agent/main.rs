//! The agent's runtime API and CLI against the real agent and data path: every command and its
//! output format, the errors, garbage input that must not hurt it, and the metrics endpoint.

mod commands;
mod lifecycle;
mod table_walk;

use harness::lbenv::{LbEnv, Opts};

fn env(name: &str, opts: Opts) -> LbEnv {
    let e = LbEnv::new(name, opts).unwrap_or_else(|e| panic!("building the harness (needs root): {e:#}"));
    e.start_agent()
        .unwrap_or_else(|err| panic!("starting the agent: {err:#}"));
    e
}
