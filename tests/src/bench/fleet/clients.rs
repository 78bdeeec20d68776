//! The client side of the fleet's figures and demo: many sources each opening fresh
//! connections through the router ([`backends_by_source`]), and long-lived keep-alive
//! connections whose requests must keep reaching the same backend ([`Held`]). Every call
//! is bounded by a timeout; the work runs on threads inside the client's namespace.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use crate::{
    HostId, Topology,
    client::{self, KeepAlive},
    lbenv::http_vip,
};

/// Threads that open connections at once.
const PARALLEL: usize = 16;
/// Bound of one connection or one request.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The backends each source reached.
pub type Reached = BTreeMap<IpAddr, BTreeSet<String>>;

/// What a round of fresh connections saw.
pub struct Round {
    pub reached: Reached,
    /// Connections that failed (refused, timed out, no answer): the source and the error.
    pub failed: Vec<String>,
}

impl Round {
    /// Sources that reached more than one backend.
    pub fn split(&self) -> usize {
        self.reached.values().filter(|b| b.len() > 1).count()
    }

    /// Each source's backend (the first one it reached).
    pub fn first(&self) -> BTreeMap<IpAddr, String> {
        self.reached
            .iter()
            .filter_map(|(s, b)| Some((*s, b.iter().next()?.clone())))
            .collect()
    }

    /// Sources per backend (a split source counts for each of its backends).
    pub fn per_backend(&self) -> BTreeMap<String, usize> {
        let mut n = BTreeMap::new();
        for b in self.reached.values().flatten() {
            *n.entry(b.clone()).or_default() += 1;
        }
        n
    }
}

/// Sources whose backend in `after` differs from the one in `before` (sources missing from
/// either side are not counted: a failed connection is counted as failed, not as moved).
pub fn moved(before: &BTreeMap<IpAddr, String>, after: &BTreeMap<IpAddr, String>) -> usize {
    before
        .iter()
        .filter(|(s, b)| after.get(*s).is_some_and(|a| a != *b))
        .count()
}

/// `conns` rounds in which every source of `sources` opens a fresh connection (`GET /`,
/// `Connection: close`) to the HTTP VIP of its family from host `client` (sources in
/// parallel; a source's connections are a round apart, each from a new port). The router's L4
/// hash spreads those connections over the balancers.
pub fn backends_by_source(
    topo: &Topology,
    client: HostId,
    sources: &[IpAddr],
    conns: usize,
) -> Result<Round> {
    let mut round = Round {
        reached: Reached::new(),
        failed: Vec::new(),
    };
    for _ in 0..conns {
        one_round(topo, client, sources, &mut round)?;
    }
    Ok(round)
}

fn one_round(topo: &Topology, client: HostId, sources: &[IpAddr], into: &mut Round) -> Result<()> {
    let chunks: Vec<&[IpAddr]> = sources.chunks(sources.len().div_ceil(PARALLEL).max(1)).collect();
    let results = topo.run_in(client, || {
        std::thread::scope(|s| {
            let handles: Vec<_> = chunks
                .iter()
                .map(|chunk| {
                    s.spawn(move || {
                        chunk
                            .iter()
                            .map(|src| (*src, client::http_get(*src, http_vip(*src), TIMEOUT)))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("a client thread panicked"))
                .collect::<Vec<_>>()
        })
    })?;
    for (src, r) in results {
        match r {
            Ok(b) => {
                into.reached.entry(src).or_default().insert(b);
            }
            Err(e) => into.failed.push(format!("{src}: {e:#}")),
        }
    }
    Ok(())
}

/// One long-lived keep-alive connection and the backend that answered its first request.
pub struct Held {
    pub source: IpAddr,
    pub backend: String,
    conn: KeepAlive,
}

impl Held {
    /// Opens one keep-alive connection per source of `sources` (from host `client`) and
    /// sends a first request on each.
    pub fn open(topo: &Topology, client: HostId, sources: &[IpAddr]) -> Result<Vec<Held>> {
        let sources = sources.to_vec();
        topo.run_in(client, move || {
            sources
                .into_iter()
                .map(|src| {
                    let mut conn = KeepAlive::open(src, http_vip(src), TIMEOUT)?;
                    let backend = conn
                        .get(TIMEOUT)
                        .with_context(|| format!("first request from {src}"))?;
                    Ok(Held {
                        source: src,
                        backend,
                        conn,
                    })
                })
                .collect::<Result<Vec<_>>>()
        })?
    }

    /// One more request on the connection: an error if it fails or another backend answers.
    pub fn check(&mut self) -> Result<()> {
        let b = self.conn.get(TIMEOUT)?;
        if b != self.backend {
            bail!("{}: answered by {b}, not {}", self.source, self.backend);
        }
        Ok(())
    }
}

/// A request on every connection of `conns` (in parallel); adds the sources whose request
/// failed to `failed`, with the error (a connection that failed once is not asked again), and
/// returns how many it holds.
pub fn check_all(conns: &mut [Held], failed: &mut BTreeMap<IpAddr, String>) -> usize {
    let per = conns.len().div_ceil(PARALLEL).max(1);
    let bad: Vec<(IpAddr, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = conns
            .chunks_mut(per)
            .map(|chunk| {
                let skip = &*failed;
                s.spawn(move || {
                    chunk
                        .iter_mut()
                        .filter(|c| !skip.contains_key(&c.source))
                        .filter_map(|c| c.check().err().map(|e| (c.source, format!("{e:#}"))))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a keep-alive thread panicked"))
            .collect()
    });
    failed.extend(bad);
    failed.len()
}
