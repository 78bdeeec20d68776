//! Passive health in the config, in HAProxy's words: `observe = "layer4"` (watch the data
//! path's handshake signals), `error_limit`, `on_error`, and the check intervals they drive,
//! `fastinter` and `downinter`. Each is a key of `[service.health]` (the service's default) and
//! of a `[[service.server]]` (that server's own), resolved here per server.

use std::{str::FromStr, time::Duration};

use super::{ConfigError, HealthKind, Protocol, error::Place, units::Dur};

/// HAProxy's default `error-limit`.
pub const DEFAULT_ERROR_LIMIT: u32 = 10;

/// What a server's passive health is, resolved (every default applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observe {
    /// `observe = "layer4"`: the detector watches the server's handshakes; off when absent.
    pub layer4: bool,
    /// Unanswered connection attempts, or SYN retransmissions, within a span of the
    /// detector's window (with almost no handshakes while a sibling serves) that make the
    /// server suspect.
    pub error_limit: u32,
    /// What a suspicion does.
    pub on_error: OnError,
    /// The check interval from a suspicion until the server is DOWN or recovered (`inter` when
    /// not set).
    pub fastinter: Duration,
    /// The check interval while the server is DOWN (`inter` when not set).
    pub downinter: Duration,
}

impl Observe {
    /// Passive health off, checks every `inter` in every state.
    pub fn off(inter: Duration) -> Observe {
        Observe {
            layer4: false,
            error_limit: DEFAULT_ERROR_LIMIT,
            on_error: OnError::FastInter,
            fastinter: inter,
            downinter: inter,
        }
    }
}

/// `on_error`: what a suspicion does (HAProxy's `on-error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Check at once, then every `fastinter` until the checks mark the server DOWN (`fall`
    /// failures) or it recovers. The default.
    FastInter,
    /// Count one failed check, then as `fastinter`.
    FailCheck,
    /// Count `fall - 1` failed checks (the next failure marks DOWN), then as `fastinter`.
    SuddenDeath,
    /// Mark the server DOWN at once; the checks bring it back (`rise`).
    MarkDown,
}

impl OnError {
    pub fn as_str(self) -> &'static str {
        match self {
            OnError::FastInter => "fastinter",
            OnError::FailCheck => "fail-check",
            OnError::SuddenDeath => "sudden-death",
            OnError::MarkDown => "mark-down",
        }
    }
}

impl FromStr for OnError {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        [
            OnError::FastInter,
            OnError::FailCheck,
            OnError::SuddenDeath,
            OnError::MarkDown,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
        .ok_or(())
    }
}

/// The passive-health keys of one table (`[service.health]` or a server), as written.
#[derive(Default)]
pub(super) struct RawObserve {
    pub(super) observe: Option<String>,
    pub(super) error_limit: Option<u32>,
    pub(super) on_error: Option<String>,
    pub(super) fastinter: Option<Dur>,
    pub(super) downinter: Option<Dur>,
}

/// A server's passive health: its own keys (`server`, at `sc`), else the service's (`service`,
/// at `c`, fields under `health.`), else the defaults. `inter` is the service's check interval;
/// `kind` and `protocol` decide whether watching makes sense at all.
pub(super) fn observe(
    service: &RawObserve,
    c: &Place,
    server: &RawObserve,
    sc: &Place,
    inter: Duration,
    kind: &HealthKind,
    protocol: Protocol,
) -> Result<Observe, ConfigError> {
    // (the place, the field's name there) of whichever table set a key.
    let from = |own: bool, key: &str| -> (&Place, String) {
        if own {
            (sc, key.to_string())
        } else {
            (c, format!("health.{key}"))
        }
    };
    let layer4 = match server.observe.as_deref().or(service.observe.as_deref()) {
        None | Some("none") => false,
        Some("layer4") => true,
        Some(o) => {
            let (p, f) = from(server.observe.is_some(), "observe");
            let hint = if o == "layer7" {
                "xlb forwards packets and never sees a response; "
            } else {
                ""
            };
            return Err(p.err(
                &f,
                format!("\"{o}\" is not an observe mode; {hint}use \"layer4\" or \"none\""),
            ));
        }
    };
    let error_limit = server
        .error_limit
        .or(service.error_limit)
        .unwrap_or(DEFAULT_ERROR_LIMIT);
    if error_limit == 0 {
        let (p, f) = from(server.error_limit.is_some(), "error_limit");
        return Err(p.err(&f, "must be at least 1 (HAProxy's default is 10)"));
    }
    let on_error = match server.on_error.as_deref().or(service.on_error.as_deref()) {
        None => OnError::FastInter,
        Some(o) => o.parse().map_err(|()| {
            let (p, f) = from(server.on_error.is_some(), "on_error");
            p.err(
                &f,
                format!(
                    "\"{o}\" is not an action; use \"fastinter\", \"fail-check\", \"sudden-death\" or \"mark-down\""
                ),
            )
        })?,
    };
    let interval = |own: Option<&Dur>, default: Option<&Dur>, key: &str| -> Result<Duration, ConfigError> {
        let (p, f) = from(own.is_some(), key);
        match own.or(default) {
            None => Ok(inter),
            Some(d) => {
                let d = d.duration().map_err(|e| p.err(&f, e))?;
                if d.is_zero() {
                    return Err(p.err(&f, "must be above zero, e.g. \"500ms\""));
                }
                Ok(d)
            }
        }
    };
    let fastinter = interval(server.fastinter.as_ref(), service.fastinter.as_ref(), "fastinter")?;
    let downinter = interval(server.downinter.as_ref(), service.downinter.as_ref(), "downinter")?;
    if layer4 {
        let (p, f) = from(server.observe.is_some(), "observe");
        if protocol != Protocol::Tcp {
            return Err(p.err(
                &f,
                "\"layer4\" watches TCP handshakes and this service is UDP; remove observe",
            ));
        }
        if *kind == HealthKind::None {
            return Err(p.err(
                &f,
                "\"layer4\" needs health checks, which confirm a suspicion and bring the server back; \
                 set health.type",
            ));
        }
    }
    Ok(Observe {
        layer4,
        error_limit,
        on_error,
        fastinter,
        downinter,
    })
}
