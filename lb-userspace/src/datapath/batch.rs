//! Reading a whole hash map in batches (`BPF_MAP_LOOKUP_BATCH`, Linux 5.6+): one system call
//! per few thousand entries instead of two per entry, which is what walking a million-entry
//! stick table costs otherwise. aya 0.14 has no batch operations, hence this small module.
//! On a kernel without them it falls back to aya's per-entry iterator.

use std::os::fd::AsFd as _;

use aya::maps::{HashMap, IterableMap as _, MapData, MapError};

/// Every entry of `map`, read `chunk` entries per call (the kernel may return fewer). Entries
/// added or removed during the walk may or may not be seen, as with any walk of a live map.
pub fn read_all<K, V>(map: &HashMap<MapData, K, V>, chunk: usize) -> Result<Vec<(K, V)>, MapError>
where
    K: aya::Pod + Default,
    V: aya::Pod + Default,
{
    let fd = map.map().fd().as_fd();
    let mut out = Vec::new();
    let mut keys = vec![K::default(); chunk.max(1)];
    let mut values = vec![V::default(); chunk.max(1)];
    // The batch token of hash maps is a bucket index (u32); room for a u64.
    let (mut token_in, mut token_out) = (0u64, 0u64);
    let mut first = true;
    loop {
        let from = (!first).then_some(&token_in);
        let (n, r) = crate::datapath::sys::lookup_batch(fd, from, &mut token_out, &mut keys, &mut values);
        match r.as_ref().err().and_then(|e| e.raw_os_error()) {
            None | Some(libc::ENOENT) => {
                out.extend(keys[..n].iter().copied().zip(values[..n].iter().copied()));
                if r.is_err() {
                    return Ok(out); // ENOENT: that was the last batch
                }
            }
            // One bucket holds more entries than the buffer: a bigger one.
            Some(libc::ENOSPC) => {
                let len = keys.len() * 2;
                keys.resize(len, K::default());
                values.resize(len, V::default());
                continue;
            }
            // No batch operations here (old kernel): walk entry by entry.
            Some(libc::EINVAL) | Some(libc::ENOTSUP) | Some(524) if first => return walk(map),
            Some(_) => return Err(MapError::IoError(r.expect_err("an error"))),
        }
        first = false;
        token_in = token_out;
    }
}

fn walk<K, V>(map: &HashMap<MapData, K, V>) -> Result<Vec<(K, V)>, MapError>
where
    K: aya::Pod,
    V: aya::Pod,
{
    let mut out = Vec::new();
    for r in map.iter() {
        match r {
            Ok(kv) => out.push(kv),
            // Evicted or deleted during the walk.
            Err(MapError::KeyNotFound) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}
