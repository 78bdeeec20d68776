//! Processes started for a test: each in its own process group, killed with SIGKILL if the
//! thread that started it dies (`PR_SET_PDEATHSIG`), and terminated when its guard or the
//! topology that started it is dropped.

use std::{
    os::unix::process::CommandExt,
    process::{Child, ChildStderr, ChildStdout, Command, ExitStatus},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

struct Slot {
    pid: u32,
    child: Mutex<Child>,
}

impl Slot {
    fn try_wait(&self) -> Option<ExitStatus> {
        self.child.lock().unwrap().try_wait().ok().flatten()
    }

    /// SIGTERM to the process group, wait up to `grace`, then SIGKILL and reap.
    fn terminate(&self, grace: Duration) -> Option<ExitStatus> {
        {
            let mut c = self.child.lock().unwrap();
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            signal_group(self.pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(st) = self.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill()
    }

    /// Signals the group only while the leader is unreaped, so its pid (the group id) cannot
    /// have been reused.
    fn kill(&self) -> Option<ExitStatus> {
        let mut c = self.child.lock().unwrap();
        if let Ok(Some(st)) = c.try_wait() {
            return Some(st);
        }
        signal_group(self.pid, libc::SIGKILL);
        let _ = c.kill();
        c.wait().ok()
    }
}

fn signal_group(pid: u32, sig: libc::c_int) {
    // SAFETY: plain syscall; the group id is our own child's pid (process_group(0)).
    unsafe { libc::kill(-(pid as libc::pid_t), sig) };
}

/// The processes one topology started (so that its Drop can end those still running).
#[derive(Default)]
pub struct ProcessSet {
    slots: Mutex<Vec<Arc<Slot>>>,
}

impl ProcessSet {
    /// Spawns `cmd` (already prepared, e.g. to enter a namespace) in a new process group with
    /// `PR_SET_PDEATHSIG=SIGKILL`, tracked by this set.
    pub fn spawn(&self, mut cmd: Command) -> Result<ChildGuard> {
        cmd.process_group(0);
        // SAFETY: prctl is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("spawn {:?}", cmd.get_program()))?;
        let slot = Arc::new(Slot {
            pid: child.id(),
            child: Mutex::new(child),
        });
        let mut slots = self.slots.lock().unwrap();
        slots.retain(|s| Arc::strong_count(s) > 1 || s.try_wait().is_none());
        slots.push(slot.clone());
        Ok(ChildGuard { slot })
    }

    /// Terminates every tracked process still running (SIGTERM, then SIGKILL after `grace`).
    pub fn terminate_all(&self, grace: Duration) {
        let slots: Vec<Arc<Slot>> = std::mem::take(&mut *self.slots.lock().unwrap());
        for s in &slots {
            let mut c = s.child.lock().unwrap();
            if let Ok(None) = c.try_wait() {
                signal_group(s.pid, libc::SIGTERM);
            }
        }
        for s in &slots {
            s.terminate(grace);
        }
    }
}

/// A running process. Dropping the guard terminates it (SIGTERM to its process group, SIGKILL
/// after 2 s) and reaps it. Caveat of `PR_SET_PDEATHSIG`: the process is also killed when the
/// THREAD that spawned it exits, so spawn from a thread that outlives the process.
pub struct ChildGuard {
    slot: Arc<Slot>,
}

impl ChildGuard {
    /// The process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.slot.pid
    }

    /// The exit status if it has exited.
    pub fn try_wait(&self) -> Option<ExitStatus> {
        self.slot.try_wait()
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `sig` to the process (not its group).
    pub fn signal(&self, sig: libc::c_int) {
        let mut c = self.slot.child.lock().unwrap();
        if let Ok(None) = c.try_wait() {
            // SAFETY: plain syscall on our own unreaped child.
            unsafe { libc::kill(self.slot.pid as libc::pid_t, sig) };
        }
    }

    /// SIGTERM, then SIGKILL after `grace`; returns the exit status.
    pub fn terminate(&self, grace: Duration) -> Option<ExitStatus> {
        self.slot.terminate(grace)
    }

    /// SIGKILL now; returns the exit status.
    pub fn kill(&self) -> Option<ExitStatus> {
        self.slot.kill()
    }

    /// Takes the child's stdout pipe (if the command had `Stdio::piped()`).
    pub fn take_stdout(&self) -> Option<ChildStdout> {
        self.slot.child.lock().unwrap().stdout.take()
    }

    /// Takes the child's stderr pipe (if the command had `Stdio::piped()`).
    pub fn take_stderr(&self) -> Option<ChildStderr> {
        self.slot.child.lock().unwrap().stderr.take()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.slot.terminate(Duration::from_secs(2));
    }
}
