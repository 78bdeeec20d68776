//! The runtime API's unix socket on disk: mode 0600 from the moment it exists at its path, and
//! never at the cost of a file that is not a socket.
//!
//! `bind` makes the socket inside a fresh 0700 directory next to the configured path, sets
//! 0600 there, then renames it into place. `rename` is atomic, so the path never holds a
//! socket with any other mode (a bind at the path itself, then chmod, leaves a window in which
//! the socket has the umask's mode). Changing the process umask around `bind` would do the
//! same, but the umask is process-wide and the agent has other threads creating files.

use std::{
    os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, PermissionsExt as _},
    os::unix::net::UnixListener,
    path::{Path, PathBuf},
};

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error(
        "admin_socket {path}: a file that is not a socket is there; xlb does not delete it: move \
         it away or set admin_socket to another path"
    )]
    NotASocket { path: PathBuf },
    #[error("admin_socket {path}: {what}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
}

fn io(path: &Path, what: &'static str) -> impl FnOnce(std::io::Error) -> SocketError {
    let path = path.to_path_buf();
    move |source| SocketError::Io { path, what, source }
}

/// Refuses a path that holds anything but a socket (a stale socket of an earlier agent is
/// fine: `bind` replaces it). Called before the data path is attached, so a bad path stops the
/// agent before it changes anything.
pub fn check_path(path: &Path) -> Result<(), SocketError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_socket() => Err(SocketError::NotASocket {
            path: path.to_path_buf(),
        }),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(path, "cannot inspect it")(e)),
    }
}

/// Listens on `path` with mode 0600 (see the module's comment). A stale socket at `path` is
/// replaced; anything else there is refused and left alone.
pub fn bind(path: &Path) -> Result<UnixListener, SocketError> {
    check_path(path)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(io(dir, "cannot create its directory"))?;
    let private = dir.join(format!(".xlb-admin-{}", std::process::id()));
    // A leftover of a crashed agent that had the same pid: ours to remove.
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(io(&private, "cannot create a private directory to bind in"))?;
    let result = bind_in(&private, path);
    let _ = std::fs::remove_dir_all(&private);
    result
}

fn bind_in(private: &Path, path: &Path) -> Result<UnixListener, SocketError> {
    let tmp = private.join("s");
    let l = UnixListener::bind(&tmp).map_err(io(path, "cannot listen"))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .map_err(io(path, "cannot set mode 0600"))?;
    // The check again, as close to the rename as it gets: rename would replace any file.
    check_path(path)?;
    std::fs::rename(&tmp, path).map_err(io(path, "cannot move the socket into place"))?;
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("xlb-admin-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn admin_socket_refuses_a_regular_file_and_leaves_it_untouched() {
        let d = dir("file");
        let p = d.join("admin.sock");
        std::fs::write(&p, "precious").unwrap();
        let e = bind(&p).unwrap_err().to_string();
        assert!(
            e.contains("a file that is not a socket is there; xlb does not delete it"),
            "{e}"
        );
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "precious");
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1, "nothing left behind");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn admin_socket_is_0600_and_replaces_a_stale_socket() {
        let d = dir("mode");
        let p = d.join("admin.sock");
        drop(UnixListener::bind(&p).unwrap()); // stale: nobody listens
        let l = bind(&p).unwrap();
        let m = std::fs::symlink_metadata(&p).unwrap();
        assert!(m.file_type().is_socket());
        assert_eq!(m.mode() & 0o7777, 0o600);
        // It is the listening socket.
        let _c = std::os::unix::net::UnixStream::connect(&p).unwrap();
        let _ = l.accept().unwrap();
        assert_eq!(
            std::fs::read_dir(&d).unwrap().count(),
            1,
            "the private directory is gone"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// The socket must never exist at its path before it is 0600: it may only arrive there by
    /// a rename (inotify IN_MOVED_TO), never be created there (IN_CREATE) by `bind` and
    /// chmod'ed afterwards.
    #[test]
    fn admin_socket_appears_at_its_path_only_by_rename() {
        let d = dir("inotify");
        let p = d.join("admin.sock");
        let c = std::ffi::CString::new(d.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: plain syscalls on an fd we own.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        assert!(fd >= 0);
        let wd = unsafe { libc::inotify_add_watch(fd, c.as_ptr(), libc::IN_CREATE | libc::IN_MOVED_TO) };
        assert!(wd >= 0);
        let _l = bind(&p).unwrap();
        let mut buf = [0u8; 4096];
        // SAFETY: reading into our buffer.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        unsafe { libc::close(fd) };
        assert!(n > 0, "no inotify event");
        let mut events = Vec::new();
        let mut off = 0usize;
        while off + 16 <= n as usize {
            let mask = u32::from_ne_bytes(buf[off + 4..off + 8].try_into().unwrap());
            let len = u32::from_ne_bytes(buf[off + 12..off + 16].try_into().unwrap()) as usize;
            let name = String::from_utf8_lossy(&buf[off + 16..off + 16 + len]);
            events.push((name.trim_end_matches('\0').to_string(), mask));
            off += 16 + len;
        }
        let at_path: Vec<u32> = events
            .iter()
            .filter(|(n, _)| n == "admin.sock")
            .map(|(_, m)| *m)
            .collect();
        assert_eq!(at_path, vec![libc::IN_MOVED_TO], "events: {events:?}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
