//! Names of the namespaces the harness creates, and the sweeper of those left behind by dead
//! runs.
//!
//! Every namespace is named `xlbt-<pid>-<n>-<test>-<role>`: `<pid>` is the creating process
//! (decimal), `<n>` a per-process counter, `<test>` and `<role>` short `[a-z0-9_]` words. The
//! pid lets [`sweep_stale`] tell a leftover of a dead run from a namespace in use.

use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result};

use crate::netns;

/// Every namespace the harness creates starts with this.
pub const PREFIX: &str = "xlbt";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// `[a-z0-9_]` only, at most `max` bytes.
fn word(s: &str, max: usize) -> String {
    let w: String = s
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(max)
        .collect();
    if w.is_empty() { "x".into() } else { w }
}

/// A fresh stem `xlbt-<pid>-<n>-<test>` for one topology (unique within this process).
pub fn new_stem(test_name: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{PREFIX}-{}-{n}-{}", std::process::id(), word(test_name, 24))
}

/// The namespace name for `role` under `stem`.
pub fn ns_name(stem: &str, role: &str) -> String {
    format!("{stem}-{}", word(role, 16))
}

/// A link name of at most 15 bytes: `<head><role>` cut to fit.
pub fn if_name(head: &str, role: &str) -> String {
    let mut s = format!("{head}{}", word(role, 15));
    s.truncate(15);
    s
}

/// The creating pid encoded in a harness namespace name, or `None` for a name that is not
/// exactly of the harness's form.
pub fn creator_pid(ns: &str) -> Option<u32> {
    let rest = ns.strip_prefix(PREFIX)?.strip_prefix('-')?;
    let mut parts = rest.splitn(3, '-');
    let pid = parts.next()?;
    let n = parts.next()?;
    parts.next()?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

fn pid_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks existence.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Names of all network namespaces (as `ip netns list` shows them) that start with [`PREFIX`].
pub fn list_harness_namespaces() -> Result<Vec<String>> {
    let dir = std::path::Path::new("/var/run/netns");
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).context("read /var/run/netns")? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if name.starts_with(PREFIX) {
            v.push(name);
        }
    }
    v.sort();
    Ok(v)
}

/// Deletes the namespaces a dead harness run left behind: those named exactly as the harness
/// names them whose creating process no longer exists. Processes still running inside such a
/// namespace (started there by that run) are killed first. Touches nothing else. Returns the
/// names deleted.
pub fn sweep_stale() -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for ns in list_harness_namespaces()? {
        let Some(pid) = creator_pid(&ns) else { continue };
        if pid == std::process::id() || pid_alive(pid) {
            continue;
        }
        if let Ok(pids) = netns::ip(&["netns", "pids", &ns]) {
            for p in pids
                .split_whitespace()
                .filter_map(|p| p.parse::<libc::pid_t>().ok())
            {
                // SAFETY: plain syscall.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
        }
        match netns::ip(&["netns", "del", &ns]) {
            Ok(_) => removed.push(ns),
            Err(e) => eprintln!("harness: could not delete stale namespace {ns}: {e:#}"),
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let stem = new_stem("My Test::case");
        let ns = ns_name(&stem, "be1");
        assert!(ns.starts_with("xlbt-"));
        assert!(ns.ends_with("-my_test__case-be1"), "{ns}");
        assert_eq!(creator_pid(&ns), Some(std::process::id()));
        assert_eq!(creator_pid("xlbt-12-3-a-b"), Some(12));
        assert_eq!(creator_pid("xlbt-12-3"), None);
        assert_eq!(creator_pid("xlbt-x2-3-a"), None);
        assert_eq!(creator_pid("xlbtfoo"), None);
        assert_eq!(creator_pid("other-12-3-a"), None);
        assert_eq!(if_name("p12-", "a_very_long_role_name"), "p12-a_very_long");
        assert!(if_name("p1-", "client").len() <= 15);
    }
}
