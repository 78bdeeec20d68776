//! xlb's user side: the agent that owns the XDP data path, its config, health checks, the
//! runtime API and the CLI. `main.rs` only parses arguments and dispatches here.

pub mod config;
pub mod health;
pub mod datapath;
