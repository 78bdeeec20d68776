//! xlb's user side: the agent that owns the XDP data path, its config, health checks, the
//! runtime API and the CLI. `main.rs` only parses arguments and dispatches here.
//!
//! The groups are layers. Each imports only from the groups listed above it; only `agent`
//! spawns tasks or takes the shared lock (`tests/layers.rs` checks both).
//!
//! - `net`: the operating system's network glue — links, addresses and neighbours through
//!   rtnetlink, network namespaces. No ioctls and no `ip` commands anywhere; the few other raw
//!   calls are where their subject is (`datapath::sys` for bpf(2), the bpffs mount in
//!   `datapath::pins`, the data path's clock in `datapath::clock`).
//! - `config`: the TOML file, parsed and validated into typed values.
//! - `import`: `xlb import haproxy.cfg`, an HAProxy configuration converted into xlb's.
//! - `datapath`: the loaded XDP program, its pinned maps and links, and the kernel's view of them.
//! - `health`: active health checks, a state machine per server and its probes.
//! - `balancer`: the model of services and servers and how it is programmed into the maps.
//! - `control`: what operators and peers talk to — the runtime API, its socket, the metrics,
//!   the peers protocol.
//! - `agent`: the process — startup, the run loop, reloads, the sweeper, shutdown.

pub mod net;

pub mod config;

pub mod import;

pub mod datapath;

pub mod health;

pub mod balancer;

pub mod control;

pub mod agent;
