//! The agent's runtime API and CLI against the real agent and data path: every command and its
//! output format, the errors, garbage input that must not hurt it, and the metrics endpoint.

mod commands;
mod lifecycle;
mod service;
mod table_walk;
