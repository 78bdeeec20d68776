//! Update lines: their text, how the sender makes them from stick entries, and how the receiver
//! merges them into its table. The functions that read the balancer take it already locked: the
//! agent calls them under its lock (see [`super::Agent`]).

use std::{net::IpAddr, sync::atomic::Ordering::Relaxed};

use lb_common::{StickEntry, StickKey};

use super::{Budget, MAX_LINE, Peers};
use crate::{balancer::Balancer, config::StickOn, datapath::coarse_now_ns};

/// One stick entry as it travels between peers (its names borrowed from the line or the
/// configuration: no allocation per line either way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update<'a> {
    pub service: &'a str,
    /// The key's address (already masked by the sender's prefix).
    pub addr: IpAddr,
    /// Source port for `src-port` services, else 0 (host order).
    pub port: u16,
    pub server: &'a str,
    pub idle_ms: u64,
}

impl<'a> Update<'a> {
    pub fn line(&self) -> String {
        let mut s = String::new();
        self.write_line(&mut s);
        s
    }

    /// Appends the line (with its newline) to `out`.
    pub fn write_line(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = writeln!(
            out,
            "{} {} {} {} {}",
            self.service, self.addr, self.port, self.server, self.idle_ms
        );
    }

    pub fn parse(line: &'a str) -> Result<Update<'a>, String> {
        let mut w = line.split_ascii_whitespace();
        let mut words = [""; 5];
        let mut n = 0;
        for word in w.by_ref().take(5) {
            words[n] = word;
            n += 1;
        }
        let n = n + w.count();
        let [service, addr, port, server, idle] = words;
        if n != 5 {
            return Err(format!("expected 5 words, got {n}"));
        }
        Ok(Update {
            service,
            addr: addr.parse().map_err(|_| format!("bad address {addr:?}"))?,
            port: port.parse().map_err(|_| format!("bad port {port:?}"))?,
            server,
            idle_ms: idle.parse().map_err(|_| format!("bad idle time {idle:?}"))?,
        })
    }
}

/// Stick entries as update lines (names from the balancer), one text block.
pub fn encode(b: &Balancer, entries: &[(StickKey, StickEntry)]) -> (String, u64) {
    let now = coarse_now_ns();
    let mut text = String::new();
    let mut n = 0;
    for (k, e) in entries {
        let Some(svc) = b.services.iter().find(|s| s.id == k.service as u32) else {
            continue;
        };
        let Some(server) = svc.server_by_id(e.backend) else {
            continue;
        };
        let u = Update {
            service: &svc.cfg.name,
            addr: k.client_addr(),
            port: u16::from_be(k.port),
            server: &server.cfg.name,
            idle_ms: now.saturating_sub(e.last_seen_ns) / 1_000_000,
        };
        u.write_line(&mut text);
        n += 1;
    }
    (text, n)
}

/// What merging one update did.
#[derive(Debug, PartialEq, Eq)]
pub enum Merged {
    Written,
    /// The local entry was seen as recently or later: kept.
    Older,
    /// Idle longer than the service's `expire`: nothing to keep.
    Expired,
    /// A service or server this instance does not have, a service without a stick table, or
    /// an address of the other family.
    Unknown(String),
    /// The peer spent its budget for the service this second.
    OverBudget,
    /// The table refused the write.
    Failed(String),
}

/// Merge one update into the stick table, by recency. Services and servers are looked up in
/// the current configuration; a write takes one from the peer's `budget`.
pub fn merge(b: &mut Balancer, peers: &Peers, budget: &mut Budget, u: &Update<'_>, now: u64) -> Merged {
    let Some(svc) = b.service(u.service) else {
        return Merged::Unknown(format!("no service {:?}", u.service));
    };
    if svc.cfg.stick.on == StickOn::None {
        return Merged::Unknown(format!("service {:?} has no stick table", u.service));
    }
    if u.addr.is_ipv4() != svc.cfg.vip.is_ipv4() {
        return Merged::Unknown(format!("{} is not of service {:?}'s family", u.addr, u.service));
    }
    let Some(server) = svc.server(u.server) else {
        return Merged::Unknown(format!("no server {:?} in service {:?}", u.server, u.service));
    };
    let expire = svc.cfg.stick.expire.as_nanos() as u64;
    let idle = u.idle_ms.saturating_mul(1_000_000);
    if expire != 0 && idle > expire {
        return Merged::Expired;
    }
    let port = if svc.cfg.stick.on == StickOn::SrcPort {
        u.port.to_be()
    } else {
        0
    };
    let key = StickKey::for_client(u.addr, svc.id as u16, port, svc.cfg.stick.prefixes());
    let seen = now.saturating_sub(idle);
    let entry = StickEntry {
        last_seen_ns: seen,
        backend: server.id,
        syn_at: 0,
    };
    let size = svc.cfg.stick.size;
    // A client new to this instance (the usual case) costs one write; one it knows, a read
    // and maybe a write: by recency.
    if budget.take(u.service, size, now) {
        match b.dp.stick_insert_new(key, entry) {
            Err(e) => return Merged::Failed(e.to_string()),
            Ok(true) => {
                peers.remember_written(key, seen);
                return Merged::Written;
            }
            Ok(false) => budget.give_back(u.service),
        }
    }
    match b.dp.stick_get(&key) {
        Err(e) => return Merged::Failed(e.to_string()),
        Ok(Some(e)) if e.last_seen_ns >= seen => return Merged::Older,
        Ok(_) => {}
    }
    if !budget.take(u.service, size, now) {
        return Merged::OverBudget;
    }
    if let Err(e) = b.dp.stick_insert(key, entry) {
        return Merged::Failed(e.to_string());
    }
    peers.remember_written(key, seen);
    Merged::Written
}

/// Merge `lines` from peer `index` into `b` (which the caller holds locked, once for all of
/// them) and count each; the first error, if any.
pub fn apply_lines(b: &mut Balancer, peers: &Peers, index: usize, lines: &[String]) -> Option<String> {
    let c = &peers.list[index].1;
    let mut first = None;
    let now = coarse_now_ns();
    let mut budget = c.budget.lock().expect("budget lock");
    for l in lines.iter().filter(|l| !l.trim().is_empty()) {
        c.received.fetch_add(1, Relaxed);
        let merged = if l.len() > MAX_LINE {
            Err(format!("a line longer than {MAX_LINE} bytes"))
        } else {
            Update::parse(l).map(|u| merge(b, peers, &mut budget, &u, now))
        };
        let counter = match merged {
            Ok(Merged::Written) => &c.applied,
            Ok(Merged::Older | Merged::Expired) => &c.older,
            Ok(Merged::Unknown(e)) => {
                first.get_or_insert(e);
                &c.unknown
            }
            Ok(Merged::OverBudget) => {
                first.get_or_insert_with(|| "over the peer's budget for the service this second".into());
                &c.refused
            }
            Ok(Merged::Failed(e)) => {
                first.get_or_insert(format!("writing the table: {e}"));
                &c.refused
            }
            Err(e) => {
                first.get_or_insert(e);
                &c.malformed
            }
        };
        counter.fetch_add(1, Relaxed);
    }
    first
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_line_round_trip() {
        let u = Update {
            service: "be_app",
            addr: "fd77:1::5".parse().unwrap(),
            port: 0,
            server: "app2",
            idle_ms: 1234,
        };
        assert_eq!(u.line(), "be_app fd77:1::5 0 app2 1234\n");
        let line = u.line();
        assert_eq!(Update::parse(line.trim_end()).unwrap(), u);
        assert!(
            Update::parse("be_app 10.0.0.1 0 app2 1 extra")
                .unwrap_err()
                .contains("got 6")
        );
        assert!(
            Update::parse("be_app 10.0.0.1 0 app2")
                .unwrap_err()
                .contains("5 words")
        );
        assert!(
            Update::parse("be_app 10.0.0 0 app2 1")
                .unwrap_err()
                .contains("bad address")
        );
        assert!(
            Update::parse("be_app 10.0.0.1 70000 app2 1")
                .unwrap_err()
                .contains("bad port")
        );
        assert!(
            Update::parse("be_app 10.0.0.1 0 app2 -1")
                .unwrap_err()
                .contains("bad idle")
        );
    }
}
