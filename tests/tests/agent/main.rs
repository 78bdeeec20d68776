//! The agent's runtime API and CLI against the real agent and data path: every command and its
//! output format, the errors, garbage input that must not hurt it, the metrics endpoint, and
//! the stats page in headless Chromium.

mod commands;
mod lifecycle;
mod service;
mod stats;
mod stats_live;
mod table_walk;
