//! `ConfigError`, and `Place`: where in the file a value is, so that every error names the
//! file, the section (`[global]`, a service, a server, a peer) and the field.

use std::net::IpAddr;

use crate::net::link::LinkError;

/// A config error: where (file, service, server, field) and what is wrong / what would be right.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Shown without its source: print the chain (`{:#}` of an `anyhow::Error`) to see why.
    #[error("{file}: cannot read")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// Not TOML, an unknown key, a missing key or a value of the wrong type: `reason` is the
    /// toml crate's message with its line and column.
    #[error("{file}: {reason}")]
    Syntax { file: String, reason: String },
    #[error("{file}: {place}field \"{field}\": {reason}")]
    Invalid {
        file: String,
        /// `[global], ` / `[announce], ` / `service "x", ` / `service "x", server "y", ` / `peer "x", ` / empty
        /// for limits on the whole file (number of services, of servers).
        place: String,
        field: String,
        reason: String,
    },
    /// An interface the agent needs, looked up on this host.
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(
        "service \"{service}\", server \"{server}\", field \"interface\": \"{interface}\" does not \
         exist (in this network namespace); list them with \"ip link\""
    )]
    NoServerInterface {
        service: String,
        server: String,
        interface: String,
    },
    #[error(
        "service \"{service}\", server \"{server}\", field \"address\": {address} is on none of \
         the networks of {interface}, and an \"l2\" server is reached by its MAC on that \
         interface's segment; for a server a route away set forward = \"ipip\" or \"gue\" (and run \
         xlb decap on it), or name the interface it is on (`interface`)"
    )]
    NotOnSegment {
        service: String,
        server: String,
        address: IpAddr,
        /// The interface and its networks: `"eth0" (10.0.0.2/24, fd00::2/64)`.
        interface: String,
    },
    #[error(
        "service \"{service}\", field \"vip\": {vip} is an address of the XDP interface \
         \"{interface}\" itself, so the balancer would take the host's own traffic to that \
         address (its SSH, its peers, its health checks' answers); give the service an address \
         of its own"
    )]
    VipIsOwnAddress {
        service: String,
        vip: IpAddr,
        interface: String,
    },
    #[error(
        "service \"{service}\", server \"{server}\", field \"forward\": an encapsulated server's \
         next hop comes from the kernel's FIB, which answers only with forwarding on the XDP \
         interface; run sysctl -w {sysctl}=1 (or make the server \"l2\")"
    )]
    ForwardingOff {
        service: String,
        server: String,
        /// The sysctl to set, e.g. `net.ipv4.conf.eth0.forwarding`.
        sysctl: String,
    },
}

impl ConfigError {
    /// "line L, column C: message" from the toml crate's error, on one line (its source snippet
    /// dropped: the line number is enough to find it). Covers syntax errors, unknown keys
    /// ("unknown field `bogus`, expected one of ..."), missing keys and values of the wrong type.
    pub(super) fn syntax(file: &str, text: &str, e: &toml::de::Error) -> ConfigError {
        let msg = e.message().trim().replace('\n', " ");
        let reason = match e.span().and_then(|sp| text.get(..sp.start)) {
            Some(before) => {
                let line = before.matches('\n').count() + 1;
                let column = before.chars().rev().take_while(|c| *c != '\n').count() + 1;
                format!("line {line}, column {column}: {msg}")
            }
            None => msg,
        };
        ConfigError::Syntax {
            file: file.to_string(),
            reason,
        }
    }
}

/// Where a value is in the config file; makes the `ConfigError::Invalid` that names it.
pub(super) struct Place<'a> {
    file: &'a str,
    /// As `ConfigError::Invalid::place` shows it.
    place: String,
}

impl<'a> Place<'a> {
    /// A limit on the whole file (the number of services, of servers): no section.
    pub(super) fn top(file: &'a str) -> Self {
        Place {
            file,
            place: String::new(),
        }
    }

    pub(super) fn global(file: &'a str) -> Self {
        Place {
            file,
            place: "[global], ".into(),
        }
    }

    pub(super) fn announce(file: &'a str) -> Self {
        Place {
            file,
            place: "[announce], ".into(),
        }
    }

    pub(super) fn peer(file: &'a str, peer: &str) -> Self {
        Place {
            file,
            place: format!("peer \"{peer}\", "),
        }
    }

    pub(super) fn service(file: &'a str, service: &str) -> Self {
        Place {
            file,
            place: format!("service \"{service}\", "),
        }
    }

    pub(super) fn server(file: &'a str, service: &str, server: &str) -> Self {
        Place {
            file,
            place: format!("service \"{service}\", server \"{server}\", "),
        }
    }

    /// `field` here is wrong: `reason` says why and what would be right.
    pub(super) fn err(&self, field: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_string(),
            place: self.place.clone(),
            field: field.to_string(),
            reason: reason.into(),
        }
    }
}
