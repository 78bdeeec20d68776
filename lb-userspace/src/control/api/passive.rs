//! Passive health in `show servers state` and `show stat`: each server's handshake signals and
//! the reason it last went DOWN, as columns after the existing ones.

use lb_common::PassiveStats;

/// Appended to `show servers state`'s header. The reason is free text: the last column, the
/// rest of the line ("-" when none).
pub(super) const STATE_COLUMNS: &str = " srv_syn_sent srv_syn_retransmits srv_handshakes srv_last_down";

/// Appended to `show stat`'s header.
pub(super) const STAT_COLUMNS: &str = "syn_sent,syn_retransmits,handshakes,last_down,";

/// A server's columns in `show servers state` (with their leading space).
pub(super) fn state_columns(p: &PassiveStats, last_down: Option<&str>) -> String {
    format!(
        " {} {} {} {}",
        p.syn_sent,
        p.syn_retransmits,
        p.handshakes,
        last_down.unwrap_or("-")
    )
}

/// A server's (or, with no reason, a service's) columns in `show stat`; the reason is quoted
/// as CSV quotes a field (it holds commas).
pub(super) fn stat_columns(p: &PassiveStats, last_down: Option<&str>) -> String {
    let reason = last_down
        .map(|r| format!("\"{}\"", r.replace('"', "\"\"")))
        .unwrap_or_default();
    format!("{},{},{},{reason},", p.syn_sent, p.syn_retransmits, p.handshakes)
}
