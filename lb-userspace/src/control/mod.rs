//! What operators and peers talk to: the runtime API and its socket, the metrics, the state
//! the agent publishes for them, the announcements' controls, and the peers protocol.

pub mod admin_socket;
pub mod api;
pub mod frontends;
pub mod metrics;
pub mod peers;
pub mod state;
