//! The key replication between peers is authenticated with: the `peer_key_file` setting, and
//! the file itself (private to the user running xlb, long enough to be a key).

use std::path::Path;

use super::{ConfigError, Global, error::Place};

/// Shortest peer key accepted, in bytes.
pub const PEER_KEY_MIN: usize = 16;
/// Largest peer key file read: a bigger file is not a key.
pub const PEER_KEY_MAX: usize = 4096;

/// How to make a key, for the error messages.
const PEER_KEY_HOWTO: &str = "make one with `head -c 32 /dev/urandom | base64 > /etc/xlb/peer.key \
     && chmod 600 /etc/xlb/peer.key` and copy the file to every peer";

/// The secret a group of peers shares (the contents of `peer_key_file`). Debug does not show
/// it.
#[derive(Clone, PartialEq, Eq)]
pub struct PeerKey(Vec<u8>);

impl PeerKey {
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for PeerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PeerKey({} bytes)", self.0.len())
    }
}

/// Replication is authenticated or off: `[[peer]]` needs `peer_key_file`, and the key file is
/// named by an absolute path.
pub(super) fn check_peer_key_setting(global: &Global, g: &Place) -> Result<(), ConfigError> {
    match &global.peer_key_file {
        None if !global.peers.is_empty() => Err(g.err(
            "peer_key_file",
            format!(
                "missing; [[peer]] replication is authenticated with a key all peers share: \
                 {PEER_KEY_HOWTO}, then set peer_key_file = \"/etc/xlb/peer.key\""
            ),
        )),
        Some(_) if global.peers.is_empty() => Err(g.err(
            "peer_key_file",
            "set, but no [[peer]] is listed; list the other instances (or remove peer_key_file)",
        )),
        Some(p) if !p.is_absolute() => Err(g.err(
            "peer_key_file",
            format!("{} must be an absolute path, e.g. /etc/xlb/peer.key", p.display()),
        )),
        _ => Ok(()),
    }
}

/// Read the peer key from `path` (named by `peer_key_file` in `config_file`): a regular file
/// owned by the user running xlb, readable by nobody else, holding at least
/// [`PEER_KEY_MIN`] bytes (one trailing newline is not part of the key).
pub fn read_peer_key(config_file: &str, path: &Path) -> Result<PeerKey, ConfigError> {
    use std::{io::Read as _, os::unix::fs::MetadataExt as _};
    let bad = |reason: String| Place::global(config_file).err("peer_key_file", reason);
    let shown = path.display();
    let mut f =
        std::fs::File::open(path).map_err(|e| bad(format!("cannot open {shown}: {e}; {PEER_KEY_HOWTO}")))?;
    let meta = f
        .metadata()
        .map_err(|e| bad(format!("cannot stat {shown}: {e}")))?;
    if !meta.is_file() {
        return Err(bad(format!("{shown} is not a regular file")));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(bad(format!(
            "{shown} is open to other users (mode {:04o}); the key must be readable by its owner \
             only: chmod 600 {shown}",
            meta.mode() & 0o7777
        )));
    }
    // SAFETY: plain syscall.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(bad(format!(
            "{shown} belongs to uid {}, not to the user running xlb (uid {me}): chown {me} {shown}",
            meta.uid()
        )));
    }
    let mut key = Vec::new();
    (&mut f)
        .take(PEER_KEY_MAX as u64 + 1)
        .read_to_end(&mut key)
        .map_err(|e| bad(format!("cannot read {shown}: {e}")))?;
    if key.len() > PEER_KEY_MAX {
        return Err(bad(format!(
            "{shown} is larger than {PEER_KEY_MAX} bytes: not a key file"
        )));
    }
    if key.ends_with(b"\n") {
        key.pop();
        if key.ends_with(b"\r") {
            key.pop();
        }
    }
    if key.len() < PEER_KEY_MIN {
        return Err(bad(format!(
            "{shown} holds a key of {} bytes; at least {PEER_KEY_MIN} are needed: {PEER_KEY_HOWTO}",
            key.len()
        )));
    }
    Ok(PeerKey(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load;

    #[test]
    fn peer_key_file_must_be_private_and_long_enough() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("xlb-peer-key-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("peer.key");
        let write = |bytes: &[u8], mode: u32| {
            std::fs::write(&path, bytes).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        let shown = path.display().to_string();
        write(b"0123456789abcdef0123456789abcdef\n", 0o600);
        let key = read_peer_key("x", &path).unwrap();
        assert_eq!(key.bytes(), b"0123456789abcdef0123456789abcdef");
        assert_eq!(format!("{key:?}"), "PeerKey(32 bytes)");
        write(b"0123456789abcdef0123456789abcdef\n", 0o644);
        let e = read_peer_key("x", &path).unwrap_err().to_string();
        assert!(
            e.contains(&format!(
                "x: [global], field \"peer_key_file\": {shown} is open to other users (mode 0644)"
            )) && e.contains(&format!("chmod 600 {shown}")),
            "{e}"
        );
        write(b"0123456789abcdef", 0o640);
        let e = read_peer_key("x", &path).unwrap_err().to_string();
        assert!(e.contains("(mode 0640)"), "{e}");
        write(b"0123456789abcde\n", 0o600);
        let e = read_peer_key("x", &path).unwrap_err().to_string();
        assert!(
            e.contains(&format!(
                "{shown} holds a key of 15 bytes; at least 16 are needed"
            )),
            "{e}"
        );
        let e = read_peer_key("x", &dir.join("absent.key"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cannot open") && e.contains("head -c 32 /dev/urandom"),
            "{e}"
        );
        // `load` (so `xlb check` and `xlb run`) reads the key file too.
        let config = dir.join("xlb.toml");
        std::fs::write(
            &config,
            format!(
                "[global]\ninterface = \"eth0\"\npeer_key_file = \"{shown}\"\n[[peer]]\nname = \"lb2\"\naddress = \"10.0.0.2:7000\"\n"
            ),
        )
        .unwrap();
        write(b"0123456789abcdef0123456789abcdef\n", 0o604);
        let e = load(&config).unwrap_err().to_string();
        assert!(e.contains("is open to other users (mode 0604)"), "{e}");
        write(b"0123456789abcdef0123456789abcdef\n", 0o400);
        assert_eq!(
            load(&config).unwrap().global.peer_key_file.as_deref(),
            Some(path.as_path())
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
