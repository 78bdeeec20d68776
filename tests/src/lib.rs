//! `harness`: the test support crate of xlb.
//!
//! - Network-namespace harness for end-to-end tests and the demo: [`Topology`] (a bridge in a
//!   "switch" namespace, host namespaces on veth pairs, address plan, cleanup guard),
//!   [`netns`] (entering namespaces, [`NsWorker`]), [`BackendServer`] (TCP/HTTP + UDP backend),
//!   [`client`] (bounded client calls), [`names`] (unique names, [`sweep_stale`]), [`loss`]
//!   (nftables packet loss inside a backend namespace).
//! - [`lbenv`]: one balancer running the real agent; [`agent`]: an agent's config, process
//!   and files (shared by lbenv, the peers tests and the fleet).
//! - [`routed_backends`]: backends behind a router, reached by IPIP or GUE, running `xlb decap`
//!   (built by [`lbenv`] when its options ask).
//! - [`fleet`]: several balancers behind a router running BIRD (BGP, BFD, ECMP), each with an
//!   xlb agent ([`fleet::Fleet::with_agents`]).
//! - [`browser`]: headless Chromium loading a page inside a host's namespace.
//! - BPF_PROG_TEST_RUN support: [`packet`] (frame builder), [`fixture`] (a loaded data path),
//!   [`routed`] (a namespace where FIB lookups have known answers), [`bench`] (benchmark
//!   runners).

pub mod agent;
pub mod backend;
pub mod bench;
pub mod browser;
pub mod client;
pub mod encap;
pub mod fixture;
pub mod fleet;
pub mod lbenv;
pub mod loss;
pub mod metrics;
pub mod names;
pub mod netns;
pub mod packet;
pub mod process;
pub mod raw_pins;
pub mod routed;
pub mod routed_backends;
pub mod topology;

pub use backend::BackendServer;
pub use names::{PREFIX, sweep_stale};
pub use netns::NsWorker;
pub use process::ChildGuard;
pub use topology::{Host, HostId, Topology, require_root};
