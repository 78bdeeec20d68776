//! Whether each service's VIP is announced, and why not: a pure decision from the model and
//! the agent's inputs (the operator's disables, the warm-up), and from it the set of addresses
//! that get a route (`net::route`; the agent's announcer writes them).
//!
//! A service is announced when, in this order of the reasons shown when it is not:
//! 1. the balancer is in the fleet (no `disable announce`);
//! 2. the operator has not disabled the frontend (`disable frontend <service>`);
//! 3. it has a usable server ([`usable`]);
//! 4. the agent is warm: every configured peer's full teach has arrived, or the warm-up passed.
//!
//! Several services on one address share its route: the address is announced while any of
//! them is. Warming up is the last reason on purpose: a service held back only by it is
//! otherwise ready, and a route a previous agent left for it is kept (not withdrawn and
//! re-announced: a restart must not flap) — see [`routes`].
//!
//! The data path being attached is not an input: the agent starts its announcer only once it
//! attached, and `xlb detach` removes the routes with the data path.

use std::{
    collections::{BTreeSet, HashSet},
    fmt,
    net::IpAddr,
    time::Duration,
};

use lb_common::{BACKEND_DRAIN, BACKEND_UP};

use super::{Server, Svc};

/// Whether a server keeps its service's VIP announced: it is UP or DRAIN — alive and not in
/// maintenance — whatever its weight.
///
/// Drain counts, although Maglev gives a draining server (or one of weight 0) no new client:
/// drain exists so that the clients already stuck to a server finish there (the data path still
/// forwards them to it), as HAProxy's drain keeps existing sessions. Withdrawing the VIP would
/// take the route those clients use away from every balancer of the fleet at once (they share
/// one config), which is the opposite of what the operator asked. The rule is the same:
/// withdrawn when the last server goes DOWN or into maintenance. A service whose servers all
/// drain stays announced and refuses new clients (counted as `no_backend`), like HAProxy's.
pub fn usable(s: &Server) -> bool {
    usable_state(s.dp_state())
}

/// [`usable`] for a data-path state (`program::backend_state`).
pub fn usable_state(state: u8) -> bool {
    state == BACKEND_UP || state == BACKEND_DRAIN
}

/// Whether the agent is warm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Warmth {
    Warm,
    /// `taught` of `peers` configured peers have sent their full teach; the warm-up ends in
    /// `left`.
    Warming {
        taught: usize,
        peers: usize,
        left: Duration,
    },
}

/// What the decision needs besides the services.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// `disable announce`: this balancer is out of the fleet.
    pub balancer_out: bool,
    /// Services whose frontend the operator disabled.
    pub disabled: &'a HashSet<String>,
    pub warmth: Warmth,
}

/// Why a service is not announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhyNot {
    BalancerOut,
    Disabled,
    NoUsableServer,
    WarmingUp {
        taught: usize,
        peers: usize,
        left: Duration,
    },
}

impl fmt::Display for WhyNot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WhyNot::BalancerOut => f.write_str("balancer out (disable announce)"),
            WhyNot::Disabled => f.write_str("disabled"),
            WhyNot::NoUsableServer => f.write_str("no usable server"),
            WhyNot::WarmingUp { taught, peers, left } => {
                // Round up: "0s left" only once the warm-up is over.
                let secs = left.as_millis().div_ceil(1000);
                if *peers == 0 {
                    write!(f, "warming up ({secs}s left)")
                } else {
                    write!(f, "warming up (peers {taught}/{peers} taught, {secs}s left)")
                }
            }
        }
    }
}

/// One service's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub service: String,
    pub vip: IpAddr,
    /// `None`: announced.
    pub why_not: Option<WhyNot>,
}

/// The verdict of every service, in their order.
pub fn decide(services: &[Svc], inputs: &Inputs<'_>) -> Vec<Verdict> {
    services
        .iter()
        .map(|s| Verdict {
            service: s.cfg.name.clone(),
            vip: s.cfg.vip.ip(),
            why_not: why_not(&s.cfg.name, s.servers.iter().any(usable), inputs),
        })
        .collect()
}

/// Why service `name` (with or without a usable server) is not announced, if it is not.
pub fn why_not(name: &str, has_usable: bool, inputs: &Inputs<'_>) -> Option<WhyNot> {
    if inputs.balancer_out {
        Some(WhyNot::BalancerOut)
    } else if inputs.disabled.contains(name) {
        Some(WhyNot::Disabled)
    } else if !has_usable {
        Some(WhyNot::NoUsableServer)
    } else if let Warmth::Warming { taught, peers, left } = inputs.warmth {
        Some(WhyNot::WarmingUp { taught, peers, left })
    } else {
        None
    }
}

/// The addresses that must have a route, given the `present` ones (found in the table): every
/// address of an announced service, and those of a service held back only by the warm-up
/// that already have one (a previous agent's, kept). Any other present route is withdrawn.
pub fn routes(verdicts: &[Verdict], present: &BTreeSet<IpAddr>) -> BTreeSet<IpAddr> {
    verdicts
        .iter()
        .filter(|v| match v.why_not {
            None => true,
            Some(WhyNot::WarmingUp { .. }) => present.contains(&v.vip),
            Some(_) => false,
        })
        .map(|v| v.vip)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        balancer::program::backend_state,
        config::AdminState::{self, Drain, Maint, Ready},
        health::Health::{self, Down, Up},
    };

    const MAC: Option<[u8; 6]> = Some([2, 0, 0, 0, 0, 1]);

    #[test]
    fn a_server_keeps_its_vip_announced_while_up_or_draining() {
        let cases: [(AdminState, Health, Option<[u8; 6]>, bool); 7] = [
            (Ready, Up, MAC, true),
            (Drain, Up, MAC, true),
            (Ready, Down, MAC, false),
            (Drain, Down, MAC, false),
            (Maint, Up, MAC, false),
            (Maint, Down, MAC, false),
            // No MAC yet: the data path cannot reach it.
            (Ready, Up, None, false),
        ];
        for (admin, health, mac, want) in cases {
            assert_eq!(
                usable_state(backend_state(admin, health, mac.is_some())),
                want,
                "{admin} {health:?} mac {mac:?}"
            );
        }
    }

    fn inputs(disabled: &HashSet<String>) -> Inputs<'_> {
        Inputs {
            balancer_out: false,
            disabled,
            warmth: Warmth::Warm,
        }
    }

    const WARMING: Warmth = Warmth::Warming {
        taught: 1,
        peers: 2,
        left: Duration::from_millis(6200),
    };

    #[test]
    fn the_first_reason_in_order_is_the_one_shown() {
        let none = HashSet::new();
        let web: HashSet<String> = ["web".to_string()].into();
        let warm = inputs(&none);
        assert_eq!(why_not("web", true, &warm), None);
        assert_eq!(why_not("web", false, &warm), Some(WhyNot::NoUsableServer));
        assert_eq!(why_not("web", false, &inputs(&web)), Some(WhyNot::Disabled));
        assert_eq!(why_not("dns", true, &inputs(&web)), None);
        let out = Inputs {
            balancer_out: true,
            ..inputs(&web)
        };
        assert_eq!(why_not("web", false, &out), Some(WhyNot::BalancerOut));
        let warming = Inputs {
            warmth: WARMING,
            ..inputs(&none)
        };
        // The warm-up is the last reason: a service shown warming up is otherwise ready.
        assert_eq!(why_not("web", false, &warming), Some(WhyNot::NoUsableServer));
        let w = why_not("web", true, &warming).unwrap();
        assert_eq!(w.to_string(), "warming up (peers 1/2 taught, 7s left)");
        let alone = WhyNot::WarmingUp {
            taught: 0,
            peers: 0,
            left: Duration::from_secs(3),
        };
        assert_eq!(alone.to_string(), "warming up (3s left)");
        assert_eq!(WhyNot::BalancerOut.to_string(), "balancer out (disable announce)");
    }

    fn verdict(service: &str, vip: &str, why_not: Option<WhyNot>) -> Verdict {
        Verdict {
            service: service.into(),
            vip: vip.parse().unwrap(),
            why_not,
        }
    }

    fn set(addrs: &[&str]) -> BTreeSet<IpAddr> {
        addrs.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn an_address_is_routed_while_any_of_its_services_is_announced() {
        let warming = Some(WhyNot::WarmingUp {
            taught: 0,
            peers: 1,
            left: Duration::from_secs(1),
        });
        let verdicts = [
            verdict("web", "10.0.0.10", Some(WhyNot::Disabled)),
            verdict("dns", "10.0.0.10", None),
            verdict("web6", "2001:db8::10", Some(WhyNot::NoUsableServer)),
            verdict("mail", "10.0.0.11", warming),
            verdict("ftp", "10.0.0.12", warming),
        ];
        // Warming up: nothing new is added; a route left by a previous agent stays.
        let present = set(&["10.0.0.11", "2001:db8::10", "10.0.0.99"]);
        assert_eq!(routes(&verdicts, &present), set(&["10.0.0.10", "10.0.0.11"]));
        assert_eq!(routes(&verdicts, &BTreeSet::new()), set(&["10.0.0.10"]));
        // Both services of 10.0.0.10 disabled: withdrawn.
        let verdicts = [
            verdict("web", "10.0.0.10", Some(WhyNot::Disabled)),
            verdict("dns", "10.0.0.10", Some(WhyNot::Disabled)),
        ];
        assert!(routes(&verdicts, &set(&["10.0.0.10"])).is_empty());
    }
}
