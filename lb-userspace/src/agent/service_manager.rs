//! What the agent tells its service manager (systemd's `Type=notify`, through `NOTIFY_SOCKET`):
//! ready once the data path is attached and the runtime API serves, reloading around a SIGHUP,
//! stopping on SIGTERM. Without `NOTIFY_SOCKET` (not started by systemd) each call does nothing.

use sd_notify::NotifyState;

/// The data path is attached and the runtime API answers (also: a reload has ended).
pub(super) fn ready() {
    send("READY=1", &[NotifyState::Ready]);
}

/// A SIGHUP reload starts; [`ready`] ends it, whether the new configuration was taken or refused.
pub(super) fn reloading() {
    // systemd wants the monotonic time with RELOADING=1, to tell this reload from a later one.
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send("RELOADING=1", &[NotifyState::Reloading, now]),
        Err(e) => log::warn!("xlb: cannot read the monotonic clock for systemd's RELOADING=1: {e}"),
    }
}

/// The agent stops; the data path keeps forwarding.
pub(super) fn stopping() {
    send("STOPPING=1", &[NotifyState::Stopping]);
}

/// A failed notification is worth a warning, never a stop: the data path does not depend on it.
fn send(what: &str, state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        log::warn!("xlb: could not tell the service manager {what} (NOTIFY_SOCKET): {e}");
    }
}
