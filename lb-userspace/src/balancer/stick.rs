//! The stick table as operators see it: HAProxy's `show table` lines, filters, `clear table`,
//! the expiry sweep, and "where does this client go?".
//!
//! Walks of the whole table (`show table`, `show stat`, `clear table`, the sweep) run on a map
//! handle of their own ([`open_pinned`]) and read it through [`entries`], never under the
//! agent's lock: at a million entries one read takes a good part of a second.

use std::{collections::HashMap, net::IpAddr};

use aya::maps::MapError;

use lb_common::{BACKEND_DRAIN, BACKEND_UP, NO_BACKEND, StickEntry, StickKey, hash::affinity_hash};

use crate::{
    balancer::Svc,
    config::StickOn,
    datapath::batch::delete_all,
    datapath::stick_maps::{StickMap, StickTables},
    datapath::{Datapath, DatapathError, coarse_now_ns},
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

    /// Whether entry `k`/`e` of `svc` passes the filter.
    pub fn matches(&self, svc: &Svc, k: &StickKey, e: &StickEntry) -> bool {
        match self {
            Filter::All => true,
            Filter::Key(a) => k.addr == StickKey::for_client(*a, 0, 0, svc.cfg.stick.prefixes()).addr,
            Filter::ServerId(n) => svc.server_by_id(e.backend).is_some_and(|s| s.puid == *n),
        }
    }
}

fn key_text(k: &StickKey) -> String {
    match (k.port, k.client_addr()) {
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

/// One entry as `show table` shows it (in text or JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct EntryView<'a> {
    /// A stable hash of the key (HAProxy prints a memory address there).
    pub id: u64,
    /// The client: its address (or prefix), with the source port when the table keeps one.
    pub key: String,
    /// Milliseconds left before it expires (0: the service's entries never expire).
    pub exp_ms: u64,
    /// The server's 1-based position in its service (0: no server of the service).
    pub server_id: u32,
    /// The server's name (`-`: no server of the service).
    pub server_key: &'a str,
}

/// What `show table` shows of entry `k`/`e` of `svc` at `now_ns`.
pub fn view<'a>(svc: &'a Svc, k: &StickKey, e: &StickEntry, now_ns: u64) -> EntryView<'a> {
    let expire = svc.cfg.stick.expire.as_nanos() as u64;
    let idle = now_ns.saturating_sub(e.last_seen_ns);
    let exp_ms = if expire == 0 {
        0
    } else {
        expire.saturating_sub(idle) / 1_000_000
    };
    let (server_id, server_key) = match svc.server_by_id(e.backend) {
        Some(s) => (s.puid, s.cfg.name.as_str()),
        None => (0, "-"),
    };
    EntryView {
        id: affinity_hash(&k.addr, k.port, k.family) as u64 | ((k.service as u64) << 32),
        key: key_text(k),
        exp_ms,
        server_id,
        server_key,
    }
}

/// One entry: `0x<id>: key=10.77.0.3 use=0 exp=<ms left> server_id=<n> server_key=<name>`.
pub fn line(svc: &Svc, k: &StickKey, e: &StickEntry, now_ns: u64) -> String {
    let v = view(svc, k, e, now_ns);
    format!(
        "0x{:012x}: key={} use=0 exp={} server_id={} server_key={}\n",
        v.id, v.key, v.exp_ms, v.server_id, v.server_key
    )
}

/// `show table NAME [filter]` from `all` (every entry of the service's table, which holds
/// `capacity`): the header, then one line per matching entry, made as they are consumed.
pub fn show<'a>(
    all: &[(StickKey, StickEntry)],
    svc: &'a Svc,
    capacity: u32,
    filter: &'a Filter,
) -> impl Iterator<Item = String> + 'a {
    let mine = entries_of(all, svc);
    let now = coarse_now_ns();
    std::iter::once(header(svc, capacity, mine.len())).chain(
        mine.into_iter()
            .filter(move |(k, e)| filter.matches(svc, k, e))
            .map(move |(k, e)| line(svc, &k, &e, now)),
    )
}

/// `clear table NAME [filter]` on the service's own table: how many entries were removed
/// (an entry that expired or was evicted since the read is not counted).
pub fn clear(map: &mut StickMap, svc: &Svc, filter: &Filter) -> Result<usize, MapError> {
    let all = entries(map)?;
    let doomed: Vec<StickKey> = entries_of(&all, svc)
        .into_iter()
        .filter(|(k, e)| filter.matches(svc, k, e))
        .map(|(k, _)| k)
        .collect();
    delete_all(map, &doomed)
}

/// Entries per (service id, backend id), from `all`.
pub fn count(all: &[(StickKey, StickEntry)]) -> HashMap<(u16, u32), usize> {
    let mut n = HashMap::new();
    for (k, e) in all {
        *n.entry((k.service, e.backend)).or_default() += 1;
    }
    n
}

/// Which server `client` goes to now, and why.
pub fn where_is(dp: &Datapath, svc: &Svc, client: IpAddr) -> Result<String, DatapathError> {
    if client.is_ipv4() != svc.cfg.vip.is_ipv4() {
        return Ok(format!(
            "{client} is not of the family of {} ({}); no packet of it can reach this service\n",
            svc.cfg.name, svc.cfg.vip
        ));
    }
    let key = StickKey::for_client(client, svc.id as u16, 0, svc.cfg.stick.prefixes());
    let m = key.client_addr();
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
        let backend = dp.backend(e.backend)?;
        let stale = !backend.serves(svc.id);
        let usable = backend.state == BACKEND_UP || backend.state == BACKEND_DRAIN;
        if fresh && !stale && usable {
            return Ok(format!(
                "{client} -> {} (pinned by stick entry key={m}, idle {idle_ms} ms)\n",
                name(e.backend)
            ));
        }
        let why = if !fresh {
            "expired"
        } else if stale {
            "names a removed server"
        } else {
            "its server is down"
        };
        let next = maglev_pick(svc, hash);
        let verdict = if !fresh || stale || svc.cfg.redispatch {
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

/// Every entry of one table: the one place that reads a table whole (in batches).
pub fn entries(map: &StickMap) -> Result<Vec<(StickKey, StickEntry)>, MapError> {
    crate::datapath::batch::read_all(map, 4096)
}

/// Every entry of every service's table of the pinned stick tables at `pin`.
pub fn read_all(pin: &std::path::Path) -> anyhow::Result<Vec<(StickKey, StickEntry)>> {
    Ok(open_pinned(pin)?.entries()?)
}

/// Every entry of every service's table of the pinned stick tables at `pin`, handed to `f` a
/// few thousand at a time as the walk reads them (`f` returns false to stop it).
pub fn read_in_chunks(
    pin: &std::path::Path,
    mut f: impl FnMut(&[(StickKey, StickEntry)]) -> bool,
) -> anyhow::Result<()> {
    let tables = open_pinned(pin)?;
    let mut more = true;
    for (_, table) in tables.iter() {
        crate::datapath::batch::for_each_chunk(&table.map, 4096, |kv| {
            more = f(kv);
            more
        })?;
        if !more {
            break;
        }
    }
    Ok(())
}

/// Doomed entries re-checked, then deleted in one batch. A client that comes back between
/// its entry's re-check and the deletion loses the entry (as one coming back between a
/// re-check and a single deletion did); a run of 1024 lookups keeps that window near a
/// millisecond while one system call still deletes a thousand entries.
const RECHECK_RUN: usize = 1024;

/// Re-check `run` (entries the walk found doomed, as it saw them) and delete,
/// in one batch per table, those not seen again since: a client may have come back (or been
/// re-pinned) since the walk, and its entry then lives on (counted in `used`). An entry is in
/// its own service's table. Returns how many were deleted (one the data path evicted meanwhile
/// is not counted).
fn recheck_and_delete(
    tables: &mut StickTables,
    run: &[(StickKey, StickEntry)],
    used: &mut std::collections::HashMap<(u16, u32), usize>,
) -> Result<usize, MapError> {
    let mut doomed: std::collections::BTreeMap<u16, Vec<StickKey>> = Default::default();
    for (k, seen) in run {
        let Some(table) = tables.get(k.service as u32) else {
            continue;
        };
        match table.map.get(k, 0) {
            Ok(e) if e.last_seen_ns == seen.last_seen_ns => doomed.entry(k.service).or_default().push(*k),
            // Came back: still live.
            Ok(e) => *used.entry((k.service, e.backend)).or_default() += 1,
            Err(_) => {}
        }
    }
    let mut deleted = 0;
    for (service, keys) in doomed {
        if let Some(table) = tables.get_mut(service as u32) {
            deleted += delete_all(&mut table.map, &keys)?;
        }
    }
    Ok(deleted)
}

/// What one sweep did.
#[derive(Debug, Default)]
pub struct Swept {
    /// Entries walked.
    pub seen: usize,
    /// Entries deleted (expired or stale).
    pub deleted: usize,
    /// Of those, entries deleted because their service or server is gone.
    pub stale: usize,
    /// Whether the stale rules ran (false when the configuration changed during the walk).
    pub purged: bool,
    /// Live entries created or refreshed at or after `touched_since` (for the peers).
    pub touched: Vec<(StickKey, StickEntry)>,
    /// Live entries per (service id, backend id) (after the deletions).
    pub used: std::collections::HashMap<(u16, u32), usize>,
}

/// One sweep over every service's table: delete entries idle longer than their service's
/// expire, and stale entries — of a service that no longer exists, or naming a backend that
/// does not serve the entry's service (a removed server, an id since reused) — but the stale
/// ones only if `still_current()` says after the walk that `policy` still describes the
/// configuration. Collects the live entries touched since `touched_since`, if given. Works on
/// handles of its own (one batched read of each table, then batched deletions) so the agent keeps
/// answering.
pub fn sweep(
    tables: &mut StickTables,
    policy: &crate::balancer::SweepPolicy,
    touched_since: Option<u64>,
    batch: usize,
    mut between_batches: impl FnMut(),
    still_current: impl FnOnce() -> bool,
) -> Result<Swept, MapError> {
    let now = coarse_now_ns();
    let mut expired = Vec::new();
    let mut stale = Vec::new();
    let mut out = Swept::default();
    for (_, table) in tables.iter() {
        let all = entries(&table.map)?;
        between_batches();
        for (k, e) in all {
            out.seen += 1;
            let owner = policy.owner.get(&e.backend);
            match policy.expire.get(&k.service) {
                Some(exp) if owner == Some(&k.service) => {
                    if *exp != 0 && now.saturating_sub(e.last_seen_ns) > *exp {
                        expired.push((k, e));
                    } else {
                        *out.used.entry((k.service, e.backend)).or_default() += 1;
                        if touched_since.is_some_and(|t| e.last_seen_ns >= t) {
                            out.touched.push((k, e));
                        }
                    }
                }
                _ => stale.push((k, e)),
            }
            if out.seen.is_multiple_of(batch) {
                between_batches();
            }
        }
    }
    out.purged = still_current();
    if !out.purged {
        for (k, e) in &stale {
            *out.used.entry((k.service, e.backend)).or_default() += 1;
        }
        stale.clear();
    }
    let mut done = 0;
    for (list, is_stale) in [(&stale, true), (&expired, false)] {
        for run in list.chunks(RECHECK_RUN.min(batch.max(1))) {
            let deleted = recheck_and_delete(tables, run, &mut out.used)?;
            out.deleted += deleted;
            if is_stale {
                out.stale += deleted;
            }
            // As many calls as one per `batch` entries re-checked.
            let before = done / batch;
            done += run.len();
            for _ in before..done / batch {
                between_batches();
            }
        }
    }
    Ok(out)
}
