//! `--netns NAME`: enter a network namespace made by `ip netns add`, keeping the host's mounts.
//!
//! Unlike `ip netns exec`, which also unshares the mount namespace and remounts /sys (hiding
//! the host's bpffs, so pins would die with the process), this switches only the network
//! namespace. It must run before any thread is spawned: threads inherit it.

use std::{fs::File, os::fd::AsRawFd as _, path::PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("network namespace {name:?} not found at {path} (list them with `ip netns list`): {source}")]
    Open {
        name: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot enter network namespace {name:?} (needs root or CAP_SYS_ADMIN): {source}")]
    Enter {
        name: String,
        #[source]
        source: std::io::Error,
    },
}

/// Move the calling thread (and so every thread it spawns later) into namespace `name`.
pub fn enter(name: &str) -> Result<(), NetnsError> {
    let path = PathBuf::from("/var/run/netns").join(name);
    let f = File::open(&path).map_err(|source| NetnsError::Open {
        name: name.into(),
        path: path.clone(),
        source,
    })?;
    // SAFETY: a valid fd of a namespace file; CLONE_NEWNET only.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(NetnsError::Enter {
            name: name.into(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}
