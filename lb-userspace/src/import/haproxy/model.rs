//! What haproxy.cfg's sections hold that xlb can carry, each value with its line.

use std::time::Duration;

use crate::import::lexer::Line;

/// A value and the line it came from.
#[derive(Debug, Clone, PartialEq)]
pub(in crate::import) struct At<T> {
    pub(in crate::import) value: T,
    pub(in crate::import) line: usize,
}

pub(in crate::import) fn at<T>(value: T, line: &Line) -> Option<At<T>> {
    Some(At {
        value,
        line: line.number,
    })
}

/// The file, read.
#[derive(Debug, Default)]
pub(in crate::import) struct Haproxy {
    /// Frontends, backends and listens, in file order (defaults applied).
    pub(in crate::import) proxies: Vec<Proxy>,
    pub(in crate::import) peers: Vec<Peers>,
    /// `localpeer NAME` in `global`.
    pub(in crate::import) localpeer: Option<At<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(in crate::import) enum Kind {
    #[default]
    Defaults,
    Frontend,
    Backend,
    Listen,
}

impl Kind {
    pub(in crate::import) fn as_str(self) -> &'static str {
        match self {
            Kind::Defaults => "defaults",
            Kind::Frontend => "frontend",
            Kind::Backend => "backend",
            Kind::Listen => "listen",
        }
    }
}

/// A `defaults`, `frontend`, `backend` or `listen` section: what xlb can carry of it.
#[derive(Debug, Clone, Default)]
pub(in crate::import) struct Proxy {
    pub(in crate::import) kind: Kind,
    pub(in crate::import) name: String,
    pub(in crate::import) line: usize,
    /// `mode http`, where it was set (here or in the defaults).
    pub(in crate::import) mode_http: Option<usize>,
    /// One per address of a `bind` (a bind lists them separated by commas).
    pub(in crate::import) binds: Vec<At<String>>,
    pub(in crate::import) default_backend: Option<At<String>>,
    pub(in crate::import) use_backends: Vec<UseBackend>,
    /// `balance` and its arguments.
    pub(in crate::import) balance: Option<At<Vec<String>>>,
    pub(in crate::import) hash_consistent: Option<usize>,
    pub(in crate::import) redispatch: Option<At<bool>>,
    pub(in crate::import) check: Option<At<Check>>,
    /// `http-check expect status N`.
    pub(in crate::import) expect: Option<At<u16>>,
    /// `option httpchk` when an `http-check send` line sets the request.
    pub(in crate::import) httpchk_line: Option<usize>,
    pub(in crate::import) timeout_check: Option<At<Duration>>,
    pub(in crate::import) stick_table: Option<At<StickTable>>,
    pub(in crate::import) stick_on: Option<At<StickOn>>,
    /// A `cookie` (or `appsession`) persistence line.
    pub(in crate::import) cookie: Option<usize>,
    pub(in crate::import) default_server: ServerParams,
    pub(in crate::import) servers: Vec<ServerLine>,
}

impl Proxy {
    /// "backend be_app (line 12)".
    pub(in crate::import) fn label(&self) -> String {
        format!("{} {} (line {})", self.kind.as_str(), self.name, self.line)
    }
}

#[derive(Debug, Clone)]
pub(in crate::import) struct UseBackend {
    pub(in crate::import) name: String,
    pub(in crate::import) line: usize,
    /// Followed by `if`/`unless`.
    pub(in crate::import) conditional: bool,
}

/// The health check a proxy asks for.
#[derive(Debug, Clone, PartialEq)]
pub(in crate::import) enum Check {
    /// A TCP connect (`option tcp-check`, or a protocol check xlb does not have).
    Tcp,
    Http {
        method: String,
        uri: String,
        host: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Default)]
pub(in crate::import) struct StickTable {
    /// Entries (HAProxy's sizes: k = 1024).
    pub(in crate::import) size: Option<u64>,
    /// None: entries never expire.
    pub(in crate::import) expire: Option<Duration>,
    pub(in crate::import) peers: Option<String>,
}

/// `stick on|match|store-request EXPR [table NAME]`.
#[derive(Debug, Clone, PartialEq)]
pub(in crate::import) struct StickOn {
    /// The key is the source address (`src`, maybe masked); else another expression.
    pub(in crate::import) src: bool,
    pub(in crate::import) expression: String,
    /// `src,ipmask(V4[,V6])`.
    pub(in crate::import) ipv4_prefix: Option<u8>,
    pub(in crate::import) ipv6_prefix: Option<u8>,
    pub(in crate::import) table: Option<String>,
}

/// What a `server` (or `default-server`) line sets that xlb carries.
#[derive(Debug, Clone, Default, PartialEq)]
pub(in crate::import) struct ServerParams {
    pub(in crate::import) check: Option<usize>,
    pub(in crate::import) inter: Option<At<Duration>>,
    pub(in crate::import) rise: Option<At<u32>>,
    pub(in crate::import) fall: Option<At<u32>>,
    pub(in crate::import) weight: Option<At<u32>>,
    /// `port N`: the check's port.
    pub(in crate::import) port: Option<At<u16>>,
    pub(in crate::import) disabled: Option<usize>,
    pub(in crate::import) backup: Option<usize>,
    /// Passive health: `observe layer4|layer7` (`observe none` clears it), `error-limit N`,
    /// `on-error fastinter|fail-check|sudden-death|mark-down`, `fastinter T`, `downinter T`.
    pub(in crate::import) observe: Option<At<String>>,
    pub(in crate::import) error_limit: Option<At<u32>>,
    pub(in crate::import) on_error: Option<At<String>>,
    pub(in crate::import) fastinter: Option<At<Duration>>,
    pub(in crate::import) downinter: Option<At<Duration>>,
}

#[derive(Debug, Clone)]
pub(in crate::import) struct ServerLine {
    pub(in crate::import) name: String,
    pub(in crate::import) address: String,
    pub(in crate::import) line: usize,
    pub(in crate::import) params: ServerParams,
}

/// A `peers` section.
#[derive(Debug, Clone, Default)]
pub(in crate::import) struct Peers {
    pub(in crate::import) name: String,
    pub(in crate::import) line: usize,
    /// `peer NAME ADDR:PORT`, or `server NAME [ADDR:PORT]` (without an address: this instance).
    pub(in crate::import) members: Vec<PeerMember>,
    /// `bind ADDR:PORT`: where this instance listens.
    pub(in crate::import) bind: Option<At<String>>,
}

#[derive(Debug, Clone)]
pub(in crate::import) struct PeerMember {
    pub(in crate::import) name: String,
    pub(in crate::import) address: Option<String>,
    pub(in crate::import) line: usize,
}
