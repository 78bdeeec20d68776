//! The instance lock: one agent per set of pins.

use std::{
    fs::File,
    io::Write as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};

/// Held while the agent runs: a second agent for the same pins refuses to start.
pub struct InstanceLock {
    _file: File,
    pub path: PathBuf,
}

/// Lock file of the agent that owns the pins under `bpffs_dir`.
pub fn lock_path(bpffs_dir: &Path) -> PathBuf {
    let flat: String = bpffs_dir
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    PathBuf::from("/run/xlb").join(format!("agent{flat}.lock"))
}

pub fn lock_instance(bpffs_dir: &Path) -> Result<InstanceLock> {
    let path = lock_path(bpffs_dir);
    std::fs::create_dir_all(path.parent().expect("has a parent")).context("cannot create /run/xlb")?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let pid = std::fs::read_to_string(&path).unwrap_or_default();
            bail!(
                "another xlb agent (pid {}) already runs the data path pinned at {}; stop it first, \
                 or give this one another `bpffs_dir`",
                pid.trim(),
                bpffs_dir.display()
            );
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()));
        }
    }
    file.set_len(0).ok();
    let _ = write!(file, "{}", std::process::id());
    Ok(InstanceLock { _file: file, path })
}
