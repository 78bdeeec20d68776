//! Keeping a benchmark's thread on one CPU while it compares programs (`hit_path`, `encap`).

use anyhow::{Result, bail};

/// Keeps the calling thread on the CPU it runs on until dropped, so that every round of a
/// same-run comparison times its programs on the same CPU (a run never moves, but the thread
/// could between runs, and this machine's two CPUs do not time alike: unpinned, whole runs of
/// the comparison drifted by a percent).
pub struct PinnedToThisCpu {
    before: libc::cpu_set_t,
}

impl PinnedToThisCpu {
    pub fn new() -> Result<Self> {
        // SAFETY: `cpu_set_t` is plain bits; the calls get its size and a valid pointer.
        unsafe {
            let mut before: libc::cpu_set_t = std::mem::zeroed();
            let size = std::mem::size_of::<libc::cpu_set_t>();
            if libc::sched_getaffinity(0, size, &mut before) != 0 {
                bail!("sched_getaffinity: {}", std::io::Error::last_os_error());
            }
            let cpu = libc::sched_getcpu();
            if cpu < 0 {
                bail!("sched_getcpu: {}", std::io::Error::last_os_error());
            }
            let mut one: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu as usize, &mut one);
            if libc::sched_setaffinity(0, size, &one) != 0 {
                bail!("sched_setaffinity: {}", std::io::Error::last_os_error());
            }
            Ok(Self { before })
        }
    }
}

impl Drop for PinnedToThisCpu {
    fn drop(&mut self) {
        // SAFETY: as in `new`; restoring the mask the thread had.
        unsafe {
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &self.before);
        }
    }
}
