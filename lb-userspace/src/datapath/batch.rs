//! Reading a whole hash map, deleting many of its entries and writing many slots of an array in
//! batches (`BPF_MAP_LOOKUP_BATCH`, `BPF_MAP_DELETE_BATCH`, `BPF_MAP_UPDATE_BATCH`, Linux 5.6+):
//! one system call per few thousand entries instead of one or two per entry, which is what
//! walking or sweeping a million-entry stick table, or writing a 65537-slot Maglev table,
//! costs otherwise. aya 0.14 has no batch operations, hence this small module. On a kernel
//! without them it falls back to aya's per-entry calls.

use std::os::fd::AsFd as _;

use aya::{
    maps::{Array, HashMap, IterableMap as _, MapData, MapError},
    sys::SyscallError,
};

/// The kernel's internal "operation not supported" (`ENOTSUPP`, not in libc): what a batch
/// command on a map type without batch operations returns.
const ENOTSUPP: i32 = 524;

/// Errors that mean "this kernel has no batch operations for this map": fall back to one
/// system call per entry. (EINVAL: a kernel older than 5.6 does not know the command.)
fn no_batch_ops(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL) | Some(libc::ENOTSUP) | Some(ENOTSUPP)
    )
}

/// Every entry of `map`, read `chunk` entries per call (the kernel may return fewer). Entries
/// added or removed during the walk may or may not be seen, as with any walk of a live map.
pub fn read_all<K, V>(map: &HashMap<MapData, K, V>, chunk: usize) -> Result<Vec<(K, V)>, MapError>
where
    K: aya::Pod + Default,
    V: aya::Pod + Default,
{
    let mut out = Vec::new();
    for_each_chunk(map, chunk, |kv| {
        out.extend_from_slice(kv);
        true
    })?;
    Ok(out)
}

/// Walk `map` as [`read_all`] does, handing each call's entries to `f` as they come; `f`
/// returns false to stop the walk.
pub fn for_each_chunk<K, V>(
    map: &HashMap<MapData, K, V>,
    chunk: usize,
    mut f: impl FnMut(&[(K, V)]) -> bool,
) -> Result<(), MapError>
where
    K: aya::Pod + Default,
    V: aya::Pod + Default,
{
    let fd = map.map().fd().as_fd();
    let mut keys = vec![K::default(); chunk.max(1)];
    let mut values = vec![V::default(); chunk.max(1)];
    let mut pairs = Vec::with_capacity(chunk.max(1));
    // The batch token of hash maps is a bucket index (u32); room for a u64.
    let (mut token_in, mut token_out) = (0u64, 0u64);
    let mut first = true;
    loop {
        let from = (!first).then_some(&token_in);
        let (n, r) = crate::datapath::sys::lookup_batch(fd, from, &mut token_out, &mut keys, &mut values);
        match r.as_ref().err().and_then(|e| e.raw_os_error()) {
            None | Some(libc::ENOENT) => {
                pairs.clear();
                pairs.extend(keys[..n].iter().copied().zip(values[..n].iter().copied()));
                if (n > 0 && !f(&pairs)) || r.is_err() {
                    return Ok(()); // ENOENT: that was the last batch
                }
            }
            // One bucket holds more entries than the buffer: a bigger one.
            Some(libc::ENOSPC) => {
                let len = keys.len() * 2;
                keys.resize(len, K::default());
                values.resize(len, V::default());
                continue;
            }
            Some(_) => {
                let e = r.expect_err("an error");
                // No batch operations here (old kernel): walk entry by entry.
                if first && no_batch_ops(&e) {
                    f(&walk(map)?);
                    return Ok(());
                }
                return Err(MapError::IoError(e));
            }
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

/// Delete `keys` from `map`, one `BPF_MAP_DELETE_BATCH` per run of keys the map still holds. A
/// key it no longer holds (expired, evicted by the data path, deleted by another walk) is
/// skipped: the kernel stops at it, and the deletion goes on after it. Returns how many entries
/// were deleted. The one routine that deletes stick entries (`clear table`, the sweep, the
/// agent's single deletions through `delete_one`).
pub fn delete_all<K, V>(map: &mut HashMap<MapData, K, V>, keys: &[K]) -> Result<usize, MapError>
where
    K: aya::Pod,
    V: aya::Pod,
{
    let mut deleted = 0;
    let mut rest = keys;
    while !rest.is_empty() {
        let n = match crate::datapath::sys::delete_batch(map.map().fd().as_fd(), rest) {
            Ok(n) => n,
            Err(e) if deleted == 0 && rest.len() == keys.len() && no_batch_ops(&e) => {
                return delete_each(map, keys);
            }
            Err(io_error) => {
                return Err(SyscallError {
                    call: "bpf_map_delete_batch",
                    io_error,
                }
                .into());
            }
        };
        deleted += n;
        // `rest[n]`, if any, was not in the map.
        rest = rest.get(n + 1..).unwrap_or_default();
    }
    Ok(deleted)
}

/// Delete one entry; false when the map did not hold it.
pub fn delete_one<K, V>(map: &mut HashMap<MapData, K, V>, key: &K) -> Result<bool, MapError>
where
    K: aya::Pod,
    V: aya::Pod,
{
    match map.remove(key) {
        Ok(()) => Ok(true),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(MapError::KeyNotFound) => Ok(false),
        Err(e) => Err(e),
    }
}

/// `delete_all` on a kernel without batch operations: one system call per key.
fn delete_each<K, V>(map: &mut HashMap<MapData, K, V>, keys: &[K]) -> Result<usize, MapError>
where
    K: aya::Pod,
    V: aya::Pod,
{
    let mut deleted = 0;
    for k in keys {
        deleted += usize::from(delete_one(map, k)?);
    }
    Ok(deleted)
}

/// Write `values[i]` into slot `slots[i]` of `array`, a few thousand per system call (one call
/// per slot on a kernel without batch operations).
pub fn set_slots<V: aya::Pod>(
    array: &mut Array<MapData, V>,
    slots: &[u32],
    values: &[V],
) -> Result<(), MapError> {
    const CHUNK: usize = 8192;
    assert_eq!(slots.len(), values.len(), "one value per slot");
    let mut done = 0;
    while done < slots.len() {
        let end = (done + CHUNK).min(slots.len());
        let fd = array.map().fd().as_fd();
        let (n, r) = crate::datapath::sys::update_batch(fd, &slots[done..end], &values[done..end]);
        match r {
            Ok(()) => done = end,
            Err(e) if done == 0 && n == 0 && no_batch_ops(&e) => break,
            Err(e) => return Err(MapError::IoError(e)),
        }
    }
    // No batch operations here (old kernel): one call per slot.
    for (k, v) in slots[done..].iter().zip(&values[done..]) {
        array.set(*k, *v, 0)?;
    }
    Ok(())
}
