//! Steps 2 and 6 (see `main`): IP fragments. Only a datagram's first fragment carries the L4
//! header, so only it can be matched to a service (by port) and balanced; it goes the way a
//! whole packet of its flow goes, and records (client, VIP, IP identification, protocol, family) -> (service, backend) in
//! `XLB_FRAGMENTS`. Every later fragment of the datagram looks that record up and goes to the
//! same backend of the same service, so the backend can reassemble the datagram.
//!
//! A later fragment without a record — it came before its first fragment, its record was
//! evicted, or it is not VIP traffic at all (the LB host's own fragmented datagrams) — is passed
//! to the kernel untouched and counted (`fragment_no_record`). The kernel reassembles the host's
//! own datagrams; a VIP fragment is dropped there, as the LB does not hold the VIP (keep IP
//! forwarding off on the LB, or the kernel routes it on). That datagram is lost either way: its
//! pieces can no longer all reach one backend, and the sender retries.

use lb_common::{FragmentKey, FragmentRecord, hash::bytes_of};

use crate::{maps, parse::Flow};

/// The datagram a fragment belongs to, built in this CPU's scratch slot (`maps::FRAG_KEY`).
#[inline(always)]
fn datagram(flow: &Flow) -> Option<&'static FragmentKey> {
    let key = maps::fragment_key_slot()?;
    key.src = bytes_of(flow.src);
    key.dst = bytes_of(flow.dst);
    key.id = flow.frag_id;
    key.proto = flow.proto;
    key.family = flow.family;
    key._pad = 0;
    Some(key)
}

/// A first fragment went to `backend` of `service`: its datagram's later fragments follow.
#[inline(always)]
pub fn record_first(flow: &Flow, service: u32, backend: u32) {
    if let Some(key) = datagram(flow) {
        maps::record_fragment(key, &FragmentRecord { service, backend });
    }
}

/// Where the first fragment of this later fragment's datagram went, if it came through here.
#[inline(always)]
pub fn first_of(flow: &Flow) -> Option<FragmentRecord> {
    maps::fragment_record(datagram(flow)?)
}
