//! What the import could not carry, line by line: the `Warning` type, and the catalogue of
//! HAProxy keywords xlb has no use for, each with the reason and what xlb does instead.

use std::fmt;

/// One warning: the haproxy.cfg line it is about (0: the file as a whole) and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub line: usize,
    pub message: String,
}

impl Warning {
    /// `FILE:LINE: warning: MESSAGE`, as compilers write them.
    pub fn display_in<'a>(&'a self, file: &'a str) -> impl fmt::Display + 'a {
        struct Shown<'a>(&'a Warning, &'a str);
        impl fmt::Display for Shown<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.0.line {
                    0 => write!(f, "{}: warning: {}", self.1, self.0.message),
                    n => write!(f, "{}:{n}: warning: {}", self.1, self.0.message),
                }
            }
        }
        Shown(self, file)
    }
}

/// Shown as in a file named `haproxy.cfg`.
impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.display_in("haproxy.cfg").fmt(f)
    }
}

/// The warnings of one import, in the order met.
#[derive(Debug, Default)]
pub(super) struct Warnings(Vec<Warning>);

impl Warnings {
    pub(super) fn at(&mut self, line: usize, message: impl Into<String>) {
        self.0.push(Warning {
            line,
            message: message.into(),
        });
    }

    /// By line (in the order met within a line), each message once.
    pub(super) fn into_sorted(self) -> Vec<Warning> {
        let mut out: Vec<Warning> = Vec::new();
        for w in self.0 {
            if !out.contains(&w) {
                out.push(w);
            }
        }
        out.sort_by_key(|w| w.line);
        out
    }
}

/// Why the statement `words` (in a section of `section` kind) is not carried, and what xlb
/// does instead.
pub(super) fn not_carried(section: &str, words: &[String]) -> String {
    let key = words.first().map_or("", String::as_str);
    let arg = words.get(1).map_or("", String::as_str);
    let reason = match (key, arg) {
        ("timeout", _) => TIMEOUT,
        ("option", "forwardfor" | "originalto") => {
            "xlb forwards packets with direct server return: \
             servers see the client's own address, no header is needed"
        }
        (
            "option",
            "httplog"
            | "tcplog"
            | "dontlognull"
            | "log-health-checks"
            | "logasap"
            | "log-separate-errors"
            | "dontlog-normal",
        )
        | (
            "log" | "log-format" | "log-tag" | "error-log-format" | "log-format-sd" | "unique-id-format"
            | "unique-id-header" | "capture" | "declare",
            _,
        ) => LOG,
        (
            "option",
            "tcpka"
            | "clitcpka"
            | "srvtcpka"
            | "nolinger"
            | "splice-auto"
            | "splice-request"
            | "splice-response"
            | "independent-streams"
            | "abortonclose"
            | "http-server-close"
            | "http-keep-alive"
            | "httpclose"
            | "http-pretend-keepalive"
            | "http-buffer-request"
            | "http-no-delay"
            | "http-use-proxy-header"
            | "accept-invalid-http-request"
            | "accept-invalid-http-response"
            | "h1-case-adjust-bogus-client"
            | "http-ignore-probes"
            | "prefer-last-server"
            | "http-restrict-req-hdr-names",
        ) => CONNECTION,
        ("option", "allbackups") => "xlb has no backup servers (see the warnings at `backup` servers)",
        ("option", "persist") | ("force-persist" | "ignore-persist" | "persist", _) => {
            "xlb keeps a client on its server by its stick entry; with redispatch = false it stays \
             there while the server is down"
        }
        ("option", "external-check") | ("external-check", _) => {
            "external check commands are not run; xlb checks with a TCP connect or an HTTP request"
        }
        ("option", "checkcache") => HTTP,
        ("option", _) => "an option xlb has no use for (it forwards packets at L4)",
        (
            "acl"
            | "http-request"
            | "http-response"
            | "http-after-response"
            | "redirect"
            | "compression"
            | "http-reuse"
            | "errorfile"
            | "errorfiles"
            | "errorloc"
            | "errorloc302"
            | "errorloc303"
            | "http-error"
            | "monitor-uri"
            | "monitor"
            | "filter"
            | "http-send-name-header"
            | "reqadd"
            | "reqrep"
            | "reqdel"
            | "rspadd"
            | "rsprep"
            | "rspdel"
            | "cache-use"
            | "cache-store"
            | "use-server"
            | "http-check",
            _,
        ) => HTTP,
        ("tcp-request" | "tcp-response", _) => {
            "a content rule: xlb does not read payloads or keep \
             per-connection state; filter traffic before it (nftables) or on the servers"
        }
        ("maxconn" | "fullconn" | "rate-limit" | "backlog" | "maxqueue", _) => {
            "xlb does not count connections (servers answer clients directly); limit them on the servers"
        }
        ("retries" | "retry-on", _) => "xlb opens no connections to servers; the client's TCP retransmits",
        ("stats", _) => STATS,
        (
            "ssl-default-bind-ciphers"
            | "ssl-default-bind-ciphersuites"
            | "ssl-default-bind-options"
            | "ssl-default-server-ciphers"
            | "ssl-default-server-ciphersuites"
            | "ssl-default-server-options"
            | "ssl-dh-param-file"
            | "ssl-server-verify"
            | "ca-base"
            | "crt-base"
            | "ssl-mode-async"
            | "ssl-engine"
            | "ssl-load-extra-files",
            _,
        ) => TLS,
        (
            "daemon"
            | "master-worker"
            | "pidfile"
            | "chroot"
            | "user"
            | "group"
            | "uid"
            | "gid"
            | "ulimit-n"
            | "nbproc"
            | "node"
            | "description"
            | "setenv"
            | "presetenv"
            | "resetenv"
            | "unsetenv"
            | "hard-stop-after"
            | "insecure-fork-wanted"
            | "expose-experimental-directives"
            | "localpeer"
            | "server-state-file"
            | "server-state-base"
            | "load-server-state-from-file"
            | "server-state-file-name"
            | "spread-checks"
            | "max-spread-checks"
            | "default-path"
            | "lua-load"
            | "lua-prepend-path"
            | "set-dumpable"
            | "strict-limits"
            | "zero-warning"
            | "grace"
            | "busy-polling"
            | "noepoll"
            | "nopoll"
            | "nosplice"
            | "maxsslconn"
            | "maxconnrate"
            | "maxsessrate"
            | "maxsslrate"
            | "maxcomprate"
            | "maxcompcpuusage"
            | "maxzlibmem"
            | "maxpipes"
            | "id"
            | "email-alert"
            | "dynamic-cookie-key"
            | "source"
            | "disabled"
            | "enabled"
            | "hash-balance-factor",
            _,
        ) => PROCESS,
        ("nbthread" | "cpu-map" | "thread-groups" | "numa-cpu-mapping", _) => {
            "xlb's XDP program runs on every CPU that receives packets; there are no threads to set"
        }
        (k, _) if k.starts_with("tune.") => PROCESS,
        (k, _) if k.starts_with("ssl-") => TLS,
        _ => return format!("`{key}` is not a keyword xlb import knows in a {section} section; ignored"),
    };
    format!("`{}` is not carried: {reason}", words.join(" "))
}

/// Per-connection timeouts.
pub(super) const TIMEOUT: &str = "xlb holds no connections (it forwards packets; servers answer \
     clients directly), so the clients' and servers' own TCP stacks time connections out";
const LOG: &str = "xlb does not log connections (servers see every client's own address); \
     `xlb show stat` and the metrics count the traffic";
const CONNECTION: &str = "a connection setting of a proxy; xlb forwards packets and holds no connections";
/// L7 rules.
pub(super) const HTTP: &str = "an HTTP rule; xlb balances TCP at L4 and never reads HTTP: \
     do it on the servers, or keep an HTTP proxy behind xlb";
pub(super) const TLS: &str = "xlb forwards TLS untouched; the servers terminate it";
const STATS: &str = "HAProxy's stats; xlb's figures are `xlb show stat`, `xlb show table` and \
     the Prometheus endpoint (`metrics` in [global])";
const PROCESS: &str = "a setting of the HAProxy process; xlb runs as root under systemd \
     (`xlb run -c /etc/xlb/xlb.toml`) and has no equivalent";

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    #[test]
    fn each_keyword_gets_its_reason() {
        assert!(not_carried("defaults", &words("timeout client 30s")).contains("holds no connections"));
        assert!(not_carried("frontend", &words("option forwardfor")).contains("client's own address"));
        assert!(not_carried("backend", &words("http-request set-header X 1")).contains("never reads HTTP"));
        assert!(not_carried("global", &words("tune.ssl.default-dh-param 2048")).contains("HAProxy process"));
        assert_eq!(
            not_carried("backend", &words("frobnicate 3")),
            "`frobnicate` is not a keyword xlb import knows in a backend section; ignored"
        );
        let mut w = Warnings::default();
        w.at(5, "b");
        w.at(2, "a");
        w.at(5, "b");
        let sorted = w.into_sorted();
        assert_eq!(sorted.len(), 2);
        assert_eq!(sorted[0].to_string(), "haproxy.cfg:2: warning: a");
        assert_eq!(sorted[1].display_in("lb.cfg").to_string(), "lb.cfg:5: warning: b");
    }
}
