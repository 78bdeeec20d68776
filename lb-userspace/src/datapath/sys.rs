//! The few `bpf(2)` commands aya 0.14 does not wrap: a batched lookup, update and delete,
//! deleting an element of a map aya hands out no delete for (an array-of-maps slot), opening a
//! pin, reading an XDP or tcx link's interface, and detaching a link. The one place in xlb that makes the raw system call; `union bpf_attr`,
//! the command numbers and `struct bpf_link_info` are the kernel's, as aya-obj generates them.

use std::{
    ffi::CStr,
    io,
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
};

use aya_obj::generated::{bpf_attr, bpf_cmd, bpf_link_info, bpf_link_type};

/// `bpf(cmd, attr)`: the command's return value, or the OS error.
fn sys_bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<i64> {
    // SAFETY: `attr` is a whole `union bpf_attr`; every pointer the callers put in it refers to
    // memory of the size the command expects, alive for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut bpf_attr,
            std::mem::size_of::<bpf_attr>(),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn zeroed() -> bpf_attr {
    // SAFETY: `union bpf_attr` holds only integers: all zero is the value the kernel expects
    // for every field a command does not use.
    unsafe { std::mem::zeroed() }
}

/// `BPF_MAP_LOOKUP_BATCH`: up to `keys.len()` entries of the hash map `map` after `token_in`
/// (None: from the start) into `keys` and `values`, the resume token into `token_out`. Returns
/// how many were written and the call's result (ENOENT: that was the last batch; the count
/// still holds).
pub fn lookup_batch<K, V>(
    map: BorrowedFd<'_>,
    token_in: Option<&u64>,
    token_out: &mut u64,
    keys: &mut [K],
    values: &mut [V],
) -> (usize, io::Result<()>) {
    let count = keys.len().min(values.len());
    let mut attr = zeroed();
    attr.batch.in_batch = token_in.map_or(0, |t| t as *const u64 as u64);
    attr.batch.out_batch = token_out as *mut u64 as u64;
    attr.batch.keys = keys.as_mut_ptr() as u64;
    attr.batch.values = values.as_mut_ptr() as u64;
    attr.batch.count = count as u32;
    attr.batch.map_fd = map.as_raw_fd() as u32;
    let r = sys_bpf(bpf_cmd::BPF_MAP_LOOKUP_BATCH, &mut attr).map(|_| ());
    // SAFETY: the kernel wrote `count` back into the batch member it was given.
    let n = unsafe { attr.batch.count } as usize;
    (n.min(count), r)
}

/// `BPF_MAP_DELETE_BATCH`: delete `keys` (each of the map's key size) from `map`, in order.
/// The kernel stops at the first key it cannot delete. `Ok(n)`: the first `n` keys were
/// deleted, and when `n < keys.len()`, `keys[n]` was not in the map (ENOENT). Any other error
/// is returned as it is (how many were deleted before it is then unknown).
pub fn delete_batch<K>(map: BorrowedFd<'_>, keys: &[K]) -> io::Result<usize> {
    let mut attr = zeroed();
    attr.batch.keys = keys.as_ptr() as u64;
    attr.batch.count = keys.len() as u32;
    attr.batch.map_fd = map.as_raw_fd() as u32;
    match sys_bpf(bpf_cmd::BPF_MAP_DELETE_BATCH, &mut attr) {
        Ok(_) => Ok(keys.len()),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            // SAFETY: the kernel wrote how many it deleted back into the batch member it was
            // given (it zeroes it before the first deletion, so an ENOENT always comes with it).
            let n = unsafe { attr.batch.count } as usize;
            Ok(n.min(keys.len()))
        }
        Err(e) => Err(e),
    }
}

/// `BPF_MAP_UPDATE_BATCH`: write `values[i]` at `keys[i]` (each of the map's key and value
/// size) in `map`, in order, with flags 0 (create or replace). Returns how many were written
/// before the first failure, with that failure (the count holds either way).
pub fn update_batch<K, V>(map: BorrowedFd<'_>, keys: &[K], values: &[V]) -> (usize, io::Result<()>) {
    let count = keys.len().min(values.len());
    let mut attr = zeroed();
    attr.batch.keys = keys.as_ptr() as u64;
    attr.batch.values = values.as_ptr() as u64;
    attr.batch.count = count as u32;
    attr.batch.map_fd = map.as_raw_fd() as u32;
    let r = sys_bpf(bpf_cmd::BPF_MAP_UPDATE_BATCH, &mut attr).map(|_| ());
    // SAFETY: the kernel wrote how many it processed back into the batch member it was given.
    let n = unsafe { attr.batch.count } as usize;
    (n.min(count), r)
}

/// `BPF_MAP_DELETE_ELEM` of `key` (of the map's key size) in `map`; false when it was absent.
pub fn delete_elem<K>(map: BorrowedFd<'_>, key: &K) -> io::Result<bool> {
    let mut attr = zeroed();
    attr.__bindgen_anon_2.map_fd = map.as_raw_fd() as u32;
    attr.__bindgen_anon_2.key = key as *const K as u64;
    match sys_bpf(bpf_cmd::BPF_MAP_DELETE_ELEM, &mut attr) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// `BPF_OBJ_GET`: a descriptor of whatever is pinned at `path`.
pub fn obj_get(path: &CStr) -> io::Result<OwnedFd> {
    let mut attr = zeroed();
    attr.__bindgen_anon_4.pathname = path.as_ptr() as u64;
    let fd = sys_bpf(bpf_cmd::BPF_OBJ_GET, &mut attr)?;
    // SAFETY: BPF_OBJ_GET returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `BPF_LINK_DETACH`: the link's program leaves its hook now, whoever still holds the link.
/// (Removing a link's last pin releases it only when the kernel gets round to freeing the pin's
/// inode, later and on another CPU.)
pub fn link_detach(link: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = zeroed();
    attr.link_detach.link_fd = link.as_raw_fd() as u32;
    sys_bpf(bpf_cmd::BPF_LINK_DETACH, &mut attr).map(|_| ())
}

/// The hook of a link on an interface: XDP or tcx (tc, Linux 6.6+).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetHook {
    Xdp,
    Tcx,
}

/// The hook an XDP or tcx link is on, and its interface (0 when it is severed: the interface
/// went away); `None` for any other link.
pub fn net_link(link: BorrowedFd<'_>) -> io::Result<Option<(NetHook, u32)>> {
    // SAFETY: `struct bpf_link_info` holds only integers; all zero is a valid value.
    let mut info: bpf_link_info = unsafe { std::mem::zeroed() };
    let mut attr = zeroed();
    attr.info.bpf_fd = link.as_raw_fd() as u32;
    attr.info.info_len = std::mem::size_of::<bpf_link_info>() as u32;
    attr.info.info = &mut info as *mut bpf_link_info as u64;
    sys_bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(match info.type_ {
        // SAFETY: for an XDP link the kernel fills the union's `xdp` member.
        t if t == bpf_link_type::BPF_LINK_TYPE_XDP as u32 => {
            Some((NetHook::Xdp, unsafe { info.__bindgen_anon_1.xdp.ifindex }))
        }
        // SAFETY: for a tcx link the kernel fills the union's `tcx` member.
        t if t == bpf_link_type::BPF_LINK_TYPE_TCX as u32 => {
            Some((NetHook::Tcx, unsafe { info.__bindgen_anon_1.tcx.ifindex }))
        }
        _ => None,
    })
}
