//! xlb's user side: the agent that owns the XDP data path, its config, health checks, the
//! runtime API and the CLI. `main.rs` only parses arguments and dispatches here.

pub mod admin_socket;
pub mod agent;
pub mod api;
pub mod bpf_sys;
pub mod config;
pub mod datapath;
pub mod datapath_error;
pub mod egress;
pub mod health;
pub mod map_batch;
pub mod metrics;
pub mod neigh;
pub mod netns;
pub mod peer_wire;
pub mod peers;
pub mod pins;
pub mod services;
pub mod state;
pub mod stick_maps;
pub mod stick_table;
