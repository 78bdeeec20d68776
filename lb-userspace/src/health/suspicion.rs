//! What the checker does when passive health suspects a target (`on_error`).

use std::time::Instant;

use super::{CheckStatus, Health, HealthChecker, TargetKey, Transition, lock};
use crate::config::OnError;

impl HealthChecker {
    /// Passive health suspects `key` (`reason`: `passive: 12 new SYNs, 14 SYN retransmits, ...`): act per
    /// `on_error`. Nothing happens to a target that is not checked, is Down already or is
    /// suspected already (its checks are on it); returns whether it acted.
    ///
    /// - `fastinter`: check at once, then every `fastinter`; `fall` failures mark it Down;
    /// - `fail-check`: count one failed check (it may reach `fall`), then as `fastinter`;
    /// - `sudden-death`: count failed checks up to `fall - 1`, so the next failure marks it
    ///   Down, then as `fastinter`;
    /// - `mark-down`: Down at once; its checks (at once, then every `downinter`) bring it back.
    ///
    /// A successful check clears the suspicion; a Down it led to carries its reason.
    pub fn suspect(&mut self, key: &TargetKey, on_error: OnError, reason: String) -> bool {
        let Some(running) = self.running.get(key) else {
            return false;
        };
        let mut map = lock(&self.shared);
        let Some(slot) = map.get_mut(key) else {
            return false;
        };
        let s = &mut slot.status;
        if s.health == Health::Down || s.suspicion.is_some() {
            return false;
        }
        let down = match on_error {
            OnError::FastInter => None,
            OnError::FailCheck => fail(s, s.consecutive_failed.saturating_add(1)).then(|| {
                format!(
                    "{reason}; counted as a failed check, {}/{} failed",
                    s.fall, s.fall
                )
            }),
            OnError::SuddenDeath => {
                fail(s, s.consecutive_failed.max(s.fall - 1));
                None
            }
            OnError::MarkDown => Some(format!("{reason}; marked DOWN (on_error = \"mark-down\")")),
        };
        match down {
            Some(why) => {
                s.health = Health::Down;
                s.since = Instant::now();
                s.consecutive_ok = 0;
                s.last_down = Some(why.clone());
                // Sent under the lock, as `record` does.
                let _ = self.events.send(Transition {
                    key: key.clone(),
                    to: Health::Down,
                    reason: why,
                });
            }
            None => s.suspicion = Some(reason),
        }
        // A check now, and from then on at the interval of the target's new state.
        running.now.notify_one();
        true
    }
}

/// Count failed checks up to `failed` (as if they had been run); true when that reaches `fall`.
fn fail(s: &mut CheckStatus, failed: u32) -> bool {
    s.consecutive_ok = 0;
    s.consecutive_failed = failed;
    s.consecutive_failed >= s.fall
}
