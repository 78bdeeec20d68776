//! xlb's user side: the agent that owns the XDP data path, its config, health checks, the
//! runtime API and the CLI. `main.rs` only parses arguments and dispatches here.
//!
//! The groups are layers. Each imports only from the groups listed above it; only `agent`
//! spawns tasks or takes the shared lock.
//!
//! - `net`: the operating system's glue — netlink (neighbours, links, addresses), network
//!   namespaces. The only place with ioctls or `unsafe` OS calls besides `datapath::sys`.
//! - `config`: the TOML file, parsed and validated into typed values.
//! - `datapath`: the loaded XDP program, its pinned maps and links, and the kernel's view of them.
//! - `health`: active health checks, a state machine per server and its probes.
//! - `balancer`: the model of services and servers and how it is programmed into the maps.
//! - `control`: what operators and peers talk to — the runtime API, its socket, the metrics,
//!   the peers protocol.
//! - `agent`: the process — startup, the run loop, reloads, the sweeper, shutdown.

pub mod net;

pub mod config;

pub mod datapath;

pub mod health;

pub mod balancer;

pub mod control;

pub mod agent;
