//! The stick table as operators see it: HAProxy's `show table` lines, filters, `clear table`,
//! the expiry sweep, and "where does this client go?".

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_common::{
    BACKEND_DRAIN, BACKEND_UP, FAMILY_V4, NO_BACKEND, StickEntry, StickKey, hash::affinity_hash,
};

use crate::{
    config::StickOn,
    datapath::{Datapath, DatapathError, coarse_now_ns},
    services::{Svc, addr16},
    stick_maps::{StickMap, StickTables},
};

/// A filter of `show table NAME ...` / `clear table NAME ...`.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    All,
    Key(IpAddr),
    ServerId(u32),
}

impl Filter {
    /// Parse HAProxy's filter words: `key <addr>` or `data.server_id eq <n>`.
    pub fn parse(words: &[&str]) -> Result<Filter, String> {
        match words {
            [] => Ok(Filter::All),
            ["key", a] => a
                .parse()
                .map(Filter::Key)
                .map_err(|_| format!("'{a}' is not an IPv4 or IPv6 address")),
            ["data.server_id", "eq", n] => n
                .parse()
                .map(Filter::ServerId)
                .map_err(|_| format!("'{n}' is not a server id (a positive integer)")),
            _ => Err(format!(
                "unknown filter '{}'; use 'key <addr>' or 'data.server_id eq <n>'",
                words.join(" ")
            )),
        }
    }

    fn matches(&self, svc: &Svc, k: &StickKey, e: &StickEntry) -> bool {
        match self {
            Filter::All => true,
            Filter::Key(a) => k.addr == addr16(masked(svc, *a)),
            Filter::ServerId(n) => svc.server_by_id(e.backend).is_some_and(|s| s.puid == *n),
        }
    }
}

/// An address after the service's prefix mask (what the table keys on).
pub fn masked(svc: &Svc, a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V4(v) => {
            let p = svc.cfg.stick.ipv4_prefix as u32;
            let m = if p == 0 { 0 } else { u32::MAX << (32 - p) };
            IpAddr::V4(Ipv4Addr::from(u32::from(v) & m))
        }
        IpAddr::V6(v) => {
            let p = svc.cfg.stick.ipv6_prefix as u32;
            let m = if p == 0 { 0 } else { u128::MAX << (128 - p) };
            IpAddr::V6(Ipv6Addr::from(u128::from(v) & m))
        }
    }
}

pub fn key_addr(k: &StickKey) -> IpAddr {
    if k.family == FAMILY_V4 {
        IpAddr::V4(Ipv4Addr::new(k.addr[0], k.addr[1], k.addr[2], k.addr[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(k.addr))
    }
}

fn key_text(k: &StickKey) -> String {
    let a = key_addr(k);
    match (k.port, a) {
        (0, a) => a.to_string(),
        (p, IpAddr::V4(a)) => format!("{a}:{}", u16::from_be(p)),
        (p, IpAddr::V6(a)) => format!("[{a}]:{}", u16::from_be(p)),
    }
}

/// HAProxy's table type word.
pub fn table_type(svc: &Svc) -> &'static str {
    if svc.cfg.vip.is_ipv4() { "ip" } else { "ipv6" }
}

/// Entries of one service (from a list of several services' entries), sorted by key.
pub fn entries_of(all: &[(StickKey, StickEntry)], svc: &Svc) -> Vec<(StickKey, StickEntry)> {
    let mut v: Vec<_> = all
        .iter()
        .filter(|(k, _)| k.service as u32 == svc.id)
        .copied()
        .collect();
    v.sort_by_key(|(k, _)| (k.addr, k.port));
    v
}

/// `# table: be_app, type: ip, size:100000, used:42`: `size` is the capacity of the service's
/// own table in the data path (0 when it keeps none: `stick.on = "none"`).
pub fn header(svc: &Svc, size: u32, used: usize) -> String {
    format!(
        "# table: {}, type: {}, size:{size}, used:{used}\n",
        svc.cfg.name,
        table_type(svc),
    )
}

/// One entry: `0x<id>: key=10.77.0.3 use=0 exp=<ms left> server_id=<n> server_key=<name>`.
/// The id is a stable hash of the key (HAProxy prints a memory address there).
pub fn line(svc: &Svc, k: &StickKey, e: &StickEntry, now_ns: u64) -> String {
    let expire = svc.cfg.stick.expire.as_nanos() as u64;
    let idle = now_ns.saturating_sub(e.last_seen_ns);
    let exp_ms = if expire == 0 {
        0
    } else {
        expire.saturating_sub(idle) / 1_000_000
    };
    let id = affinity_hash(&k.addr, k.port, k.family) as u64 | ((k.service as u64) << 32);
    let (sid, skey) = match svc.server_by_id(e.backend) {
        Some(s) => (s.puid.to_string(), s.cfg.name.as_str()),
        None => ("0".into(), "-"),
    };
    format!(
        "0x{id:012x}: key={} use=0 exp={exp_ms} server_id={sid} server_key={skey}\n",
        key_text(k)
    )
}

/// `show table NAME [filter]`.
pub fn show(dp: &Datapath, svc: &Svc, filter: &Filter) -> Result<String, DatapathError> {
    let all = dp.stick_entries_of(svc.id)?;
    let mine = entries_of(&all, svc);
    let now = coarse_now_ns();
    let mut out = header(svc, dp.stick_capacity_of(svc.id).unwrap_or(0), mine.len());
    for (k, e) in mine.iter().filter(|(k, e)| filter.matches(svc, k, e)) {
        out.push_str(&line(svc, k, e, now));
    }
    Ok(out)
}

/// `clear table NAME [filter]`: how many entries were removed.
pub fn clear(dp: &mut Datapath, svc: &Svc, filter: &Filter) -> Result<usize, DatapathError> {
    let all = dp.stick_entries_of(svc.id)?;
    let mut n = 0;
    for (k, e) in entries_of(&all, svc) {
        if filter.matches(svc, &k, &e) && dp.stick_delete(&k)? {
            n += 1;
        }
    }
    Ok(n)
}

/// Which server `client` goes to now, and why.
pub fn where_is(dp: &Datapath, svc: &Svc, client: IpAddr) -> Result<String, DatapathError> {
    if client.is_ipv4() != svc.cfg.vip.is_ipv4() {
        return Ok(format!(
            "{client} is not of the family of {} ({}); no packet of it can reach this service\n",
            svc.cfg.name, svc.cfg.vip
        ));
    }
    let m = masked(svc, client);
    let key = StickKey::new(addr16(m), svc.id as u16, 0, svc.family());
    let hash = affinity_hash(&key.addr, 0, key.family);
    let name = |b: u32| {
        svc.server_by_id(b)
            .map(|s| s.cfg.name.clone())
            .unwrap_or_else(|| "-".into())
    };
    if svc.cfg.stick.on == StickOn::Src
        && let Some(e) = dp.stick_get(&key)?
    {
        let now = coarse_now_ns();
        let expire = svc.cfg.stick.expire.as_nanos() as u64;
        let idle_ms = now.saturating_sub(e.last_seen_ns) / 1_000_000;
        let fresh = expire == 0 || now.saturating_sub(e.last_seen_ns) <= expire;
        let state = dp.backend(e.backend)?.state;
        let usable = state == BACKEND_UP || state == BACKEND_DRAIN;
        if fresh && usable {
            return Ok(format!(
                "{client} -> {} (pinned by stick entry key={m}, idle {idle_ms} ms)\n",
                name(e.backend)
            ));
        }
        let why = if !fresh { "expired" } else { "its server is down" };
        let next = maglev_pick(svc, hash);
        let verdict = if !fresh || svc.cfg.redispatch {
            format!(
                "{} (stick entry for {} {why}; re-picked by hash)",
                name(next),
                name(e.backend)
            )
        } else {
            format!(
                "{} (pinned, server down, redispatch off: packets go there and fail)",
                name(e.backend)
            )
        };
        return Ok(format!("{client} -> {verdict}\n"));
    }
    let b = maglev_pick(svc, hash);
    if b == NO_BACKEND {
        return Ok(format!(
            "{client} -> none (no server of {} is up)\n",
            svc.cfg.name
        ));
    }
    let how = match svc.cfg.stick.on {
        StickOn::Src => {
            "no stick entry yet; by hash, pinned by its first packet that proves a handshake (a TCP ACK) or datagram"
        }
        StickOn::SrcPort => "by hash of the address; each source port gets its own entry",
        StickOn::None => "by 5-tuple hash; this service keeps no table (shown for source port 0)",
    };
    Ok(format!("{client} -> {} ({how})\n", name(b)))
}

/// The server the service's current Maglev table gives `hash` (what the data path reads).
fn maglev_pick(svc: &Svc, hash: u32) -> u32 {
    if svc.table.is_empty() {
        return NO_BACKEND;
    }
    svc.table[(hash % svc.table.len() as u32) as usize]
}

/// Every service's table of the pinned stick tables at `pin`, on handles of their own (walks
/// need no lock of the agent's).
pub fn open_pinned(pin: &std::path::Path) -> anyhow::Result<StickTables> {
    Ok(StickTables::from_pin(pin)?)
}

/// Every entry of every service's table of the pinned stick tables at `pin`.
pub fn read_all(pin: &std::path::Path) -> anyhow::Result<Vec<(StickKey, StickEntry)>> {
    Ok(open_pinned(pin)?.entries()?)
}

/// What one sweep did.
#[derive(Debug, Default)]
pub struct Swept {
    /// Entries walked.
    pub seen: usize,
    /// Entries deleted.
    pub deleted: usize,
    /// Live entries created or refreshed at or after `touched_since` (for the peers).
    pub touched: Vec<(StickKey, StickEntry)>,
    /// Live entries per service id (after the deletions).
    pub used: std::collections::HashMap<u16, usize>,
}

/// One sweep over every service's table: delete entries idle longer than their service's
/// expire, and entries of services that no longer exist; collect the live entries touched since
/// `touched_since`, if given. Works on its own map handles (one batched read of each table,
/// then the deletions) so the agent keeps answering.
pub fn sweep<'a>(
    tables: impl IntoIterator<Item = &'a mut StickMap>,
    expiries: &std::collections::HashMap<u16, u64>,
    touched_since: Option<u64>,
    batch: usize,
    mut between_batches: impl FnMut(),
) -> Result<Swept, aya::maps::MapError> {
    let mut out = Swept::default();
    for stick in tables {
        sweep_table(
            stick,
            expiries,
            touched_since,
            batch,
            &mut between_batches,
            &mut out,
        )?;
    }
    Ok(out)
}

fn sweep_table(
    stick: &mut StickMap,
    expiries: &std::collections::HashMap<u16, u64>,
    touched_since: Option<u64>,
    batch: usize,
    between_batches: &mut impl FnMut(),
    out: &mut Swept,
) -> Result<(), aya::maps::MapError> {
    let now = coarse_now_ns();
    let mut doomed = Vec::new();
    let all = crate::map_batch::read_all(stick, 4096)?;
    between_batches();
    for (k, e) in all {
        out.seen += 1;
        let dead = match expiries.get(&k.service) {
            None => true,
            Some(0) => false,
            Some(exp) => now.saturating_sub(e.last_seen_ns) > *exp,
        };
        if dead {
            doomed.push((k, e.last_seen_ns));
        } else {
            *out.used.entry(k.service).or_default() += 1;
            if touched_since.is_some_and(|t| e.last_seen_ns >= t) {
                out.touched.push((k, e));
            }
        }
        if out.seen.is_multiple_of(batch) {
            between_batches();
        }
    }
    for (i, (k, seen_ns)) in doomed.iter().enumerate() {
        // Re-check: the client may have come back since the walk.
        match stick.get(k, 0) {
            Ok(e) if e.last_seen_ns == *seen_ns => {
                if stick.remove(k).is_ok() {
                    out.deleted += 1;
                }
            }
            // Came back: still live.
            Ok(_) => *out.used.entry(k.service).or_default() += 1,
            Err(_) => {}
        }
        if (i + 1) % batch == 0 {
            between_batches();
        }
    }
    Ok(())
}
