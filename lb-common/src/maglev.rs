//! Maglev lookup tables (Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load
//! Balancer", NSDI 2016).
//!
//! Each server has a permutation of the M slots, given by `offset` and `skip` derived from its
//! name: slot j of its permutation is `(offset + j * skip) mod M` (M prime, so every skip in
//! 1..M walks all slots). Servers take turns; on its turn a server claims the next slot of its
//! permutation that nobody holds yet, until all M slots are held.
//!
//! Weights: in each round a server of weight w takes w turns, so shares follow the weights; a
//! weight-0 server takes none.
//!
//! Deterministic: the permutations come from a fixed hash of the server names (never a seeded
//! std hasher), and the turn order is the servers sorted by name (then id). The same servers
//! give the same table whatever their order in the config, on every machine.

use std::vec::Vec;

use crate::{NO_BACKEND, hash::name_hash};

/// One server as Maglev sees it.
#[derive(Clone, Copy, Debug)]
pub struct MaglevServer<'a> {
    /// Identity for the permutation (stable across restarts and machines).
    pub name: &'a str,
    /// The value written into the slots this server holds.
    pub id: u32,
    pub weight: u32,
}

const SEED_OFFSET: u32 = 0x5eed_0001;
const SEED_SKIP: u32 = 0x5eed_0002;

/// Trial division; M is at most a few million.
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    if n < 4 {
        return true;
    }
    if n.is_multiple_of(2) {
        return false;
    }
    let mut d = 3u32;
    while (d as u64) * (d as u64) <= n as u64 {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

/// Build a table of `m` slots (`m` prime). Every slot holds a server id, or `NO_BACKEND` when
/// no server has a weight above 0.
pub fn build(servers: &[MaglevServer<'_>], m: u32) -> Vec<u32> {
    assert!(is_prime(m), "Maglev table size {m} must be prime");
    let mut order: Vec<&MaglevServer<'_>> = servers.iter().filter(|s| s.weight > 0).collect();
    order.sort_by(|a, b| a.name.cmp(b.name).then(a.id.cmp(&b.id)));
    let mut table = std::vec![NO_BACKEND; m as usize];
    if order.is_empty() {
        return table;
    }
    let m64 = m as u64;
    // (current position in the permutation, skip) per server; position starts at offset.
    let mut pos: Vec<u64> = Vec::with_capacity(order.len());
    let mut skip: Vec<u64> = Vec::with_capacity(order.len());
    for s in &order {
        pos.push(name_hash(s.name.as_bytes(), SEED_OFFSET) as u64 % m64);
        skip.push(name_hash(s.name.as_bytes(), SEED_SKIP) as u64 % (m64 - 1) + 1);
    }
    let mut filled = 0u32;
    'fill: loop {
        for (i, s) in order.iter().enumerate() {
            for _ in 0..s.weight {
                // Next free slot of this server's permutation.
                let mut p = pos[i];
                while table[p as usize] != NO_BACKEND {
                    p += skip[i];
                    if p >= m64 {
                        p -= m64;
                    }
                }
                table[p as usize] = s.id;
                p += skip[i];
                if p >= m64 {
                    p -= m64;
                }
                pos[i] = p;
                filled += 1;
                if filled == m {
                    break 'fill;
                }
            }
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{format, string::String, vec};

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("server-{i}")).collect()
    }

    fn servers<'a>(names: &'a [String], weights: &[u32]) -> Vec<MaglevServer<'a>> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| MaglevServer {
                name: n,
                id: i as u32,
                weight: weights[i % weights.len()],
            })
            .collect()
    }

    fn shares(t: &[u32], n: usize) -> Vec<usize> {
        let mut c = vec![0usize; n];
        for id in t {
            c[*id as usize] += 1;
        }
        c
    }

    const M: u32 = 65537;

    #[test]
    fn primes() {
        assert!(is_prime(65537) && is_prime(655373) && is_prime(3) && is_prime(2));
        assert!(!is_prime(65536) && !is_prime(1) && !is_prime(0) && !is_prime(9));
    }

    #[test]
    fn shares_follow_weights_within_one_percent() {
        for (n, weights) in [
            (1usize, vec![1u32]),
            (2, vec![1]),
            (3, vec![1]),
            (7, vec![1]),
            (10, vec![1]),
            (100, vec![1]),
            (1000, vec![1]),
            (3, vec![1, 2, 3]),
            (12, vec![1, 2, 3]),
            (99, vec![2, 5, 1]),
        ] {
            let nm = names(n);
            let s = servers(&nm, &weights);
            let t = build(&s, M);
            let total: u32 = s.iter().map(|x| x.weight).sum();
            for (i, got) in shares(&t, n).into_iter().enumerate() {
                let ideal = M as f64 * s[i].weight as f64 / total as f64;
                let err = (got as f64 - ideal).abs() / ideal;
                assert!(
                    err <= 0.01,
                    "n={n} weights={weights:?}: server {i} has {got} slots, ideal {ideal:.1} ({:.2}% off)",
                    err * 100.0
                );
            }
        }
    }

    #[test]
    fn removing_one_server_moves_at_most_one_nth_plus_one_percent() {
        for n in [5usize, 10, 100, 1000] {
            let nm = names(n);
            let all = servers(&nm, &[1]);
            let before = build(&all, M);
            for gone in [0usize, n / 2, n - 1] {
                let rest: Vec<_> = all.iter().copied().filter(|s| s.id != gone as u32).collect();
                let after = build(&rest, M);
                let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
                let bound = (1.0 / n as f64 + 0.01) * M as f64;
                assert!(
                    moved as f64 <= bound,
                    "n={n}, removed {gone}: {moved} slots moved, bound {bound:.0}"
                );
                // Adding it back restores the table exactly.
                assert_eq!(build(&all, M), before);
            }
        }
    }

    #[test]
    fn input_order_does_not_matter() {
        let nm = names(50);
        let s = servers(&nm, &[1, 2]);
        let mut r = s.clone();
        r.reverse();
        r.swap(3, 17);
        assert_eq!(build(&s, M), build(&r, M));
    }

    /// Balancers of one fleet give their servers ids of their own (each agent's history of
    /// reloads differs), yet must send a client to the same server: slot for slot, the tables
    /// name the same server whatever the ids.
    #[test]
    fn every_slot_names_the_same_server_whatever_ids_the_balancers_gave() {
        let nm = names(20);
        let a = servers(&nm, &[1, 3, 2]);
        let mut b = a.clone();
        for (i, s) in b.iter_mut().enumerate() {
            s.id = 1000 - 7 * i as u32;
        }
        fn name_of<'a>(servers: &[MaglevServer<'a>], id: u32) -> &'a str {
            servers.iter().find(|s| s.id == id).unwrap().name
        }
        let (ta, tb) = (build(&a, M), build(&b, M));
        assert_ne!(ta, tb, "the ids differ");
        for (slot, (x, y)) in ta.iter().zip(&tb).enumerate() {
            assert_eq!(name_of(&a, *x), name_of(&b, *y), "slot {slot}");
        }
    }

    #[test]
    fn weight_zero_and_empty() {
        let nm = names(3);
        let s = servers(&nm, &[1, 0, 1]);
        let t = build(&s, 7919);
        assert!(!t.contains(&1), "a weight-0 server gets no slots");
        assert!(build(&servers(&nm, &[0]), 7919).iter().all(|x| *x == NO_BACKEND));
        assert!(build(&[], 7919).iter().all(|x| *x == NO_BACKEND));
    }

    #[test]
    fn golden_prefix() {
        // Computed once by this implementation: a change here changes every deployment's table.
        let nm: Vec<String> = ["app1", "app2", "app3"]
            .iter()
            .map(|s| String::from(*s))
            .collect();
        let t = build(&servers(&nm, &[1]), M);
        assert_eq!(&t[..16], &GOLDEN);
    }

    const GOLDEN: [u32; 16] = [0, 1, 1, 0, 2, 1, 1, 0, 0, 2, 1, 0, 0, 1, 2, 0];
}
