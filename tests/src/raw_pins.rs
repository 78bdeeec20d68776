//! Pinned maps made by hand with raw `bpf()` calls, to test how the agent treats pins it did not
//! write: an older xlb's format, or maps that differ from their format's spec.

use std::{
    ffi::CString,
    os::{fd::FromRawFd as _, fd::OwnedFd, unix::ffi::OsStrExt as _},
    path::Path,
};

use anyhow::{Result, bail};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_OBJ_PIN: libc::c_long = 6;

pub const ARRAY: u32 = 2;
pub const PERCPU_ARRAY: u32 = 6;
pub const LRU_HASH: u32 = 9;
pub const DEVMAP: u32 = 14;

fn bpf(cmd: libc::c_long, attr: &mut [u64; 16]) -> Result<i64> {
    // SAFETY: a zero-filled `union bpf_attr`-sized buffer holding the command's fields.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), std::mem::size_of_val(attr)) };
    if rc < 0 {
        bail!("bpf({cmd}): {}", std::io::Error::last_os_error());
    }
    Ok(rc)
}

/// A new map: (type, key size, value size, max entries), flags 0.
pub fn create(map_type: u32, key: u32, value: u32, max: u32) -> Result<OwnedFd> {
    let mut a = [0u64; 16];
    a[0] = map_type as u64 | (key as u64) << 32;
    a[1] = value as u64 | (max as u64) << 32;
    let fd = bpf(BPF_MAP_CREATE, &mut a)?;
    // SAFETY: BPF_MAP_CREATE returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Write `value` at `key`.
pub fn update(fd: &OwnedFd, key: &[u8], value: &[u8]) -> Result<()> {
    let mut a = [0u64; 16];
    a[0] = std::os::fd::AsRawFd::as_raw_fd(fd) as u64;
    a[1] = key.as_ptr() as u64;
    a[2] = value.as_ptr() as u64;
    bpf(BPF_MAP_UPDATE_ELEM, &mut a)?;
    Ok(())
}

/// Pin the map at `path`.
pub fn pin(fd: &OwnedFd, path: &Path) -> Result<()> {
    let p = CString::new(path.as_os_str().as_bytes())?;
    let mut a = [0u64; 16];
    a[0] = p.as_ptr() as u64;
    a[1] = std::os::fd::AsRawFd::as_raw_fd(fd) as u64;
    bpf(BPF_OBJ_PIN, &mut a)?;
    Ok(())
}
