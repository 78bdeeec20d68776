//! An xlb agent run by a test: its config text ([`config_text`], [`with_peers`] and the peer
//! key), its process ([`spawn_agent`]) and the files it leaves (removed by [`PinsGuard`]).
//! Shared by [`crate::lbenv`], the e2e peers tests and [`crate::fleet`].

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    ChildGuard, Topology,
    lbenv::{Opts, VIP4_HTTP, VIP4_UDP, VIP6_HTTP, api_at, xlb_bin},
};

/// The services of [`crate::lbenv::LbEnv`]'s config: (name, VIP, protocol).
pub const SERVICES: [(&str, SocketAddr, &str); 3] = [
    ("be_app", VIP4_HTTP, "tcp"),
    ("be_app6", VIP6_HTTP, "tcp"),
    ("dns", VIP4_UDP, "udp"),
];

/// Where one agent keeps its admin socket and pins.
pub struct AgentPaths<'a> {
    pub socket: &'a Path,
    pub bpffs: &'a Path,
}

/// An agent's config: `[global]` on `eth0` with `paths`, then each of `services` (entries of
/// [`SERVICES`]) sticking on the source, health-checked as `opts` says (HTTP `/healthz`; a UDP
/// service by TCP on port 80), with the servers `servers(name)` ((i, host): server `app{i+1}`
/// at the host's address of the VIP's family).
pub fn config_text<'h>(
    paths: &AgentPaths,
    opts: &Opts,
    services: &[(&str, SocketAddr, &str)],
    servers: impl Fn(&str) -> Vec<(usize, &'h crate::topology::Host)>,
) -> String {
    let o = opts;
    let mut t = format!(
        "[global]\ninterface = \"eth0\"\nadmin_socket = \"{}\"\nbpffs_dir = \"{}\"\nsweep_interval = \"{}\"\n",
        paths.socket.display(),
        paths.bpffs.display(),
        o.sweep
    );
    if let Some(m) = &o.metrics {
        t.push_str(&format!("metrics = \"{m}\"\n"));
    }
    t.push_str(&crate::routed_backends::encap_source_line(&o.encap_source));
    let extra = if o.health_extra.is_empty() {
        String::new()
    } else {
        format!(", {}", o.health_extra)
    };
    let health = format!(
        "{{ type = \"http\", send = \"GET /healthz\", expect = 200, inter = \"{}\", timeout = \"500ms\", rise = {}, fall = {}{extra} }}",
        o.inter, o.rise, o.fall
    );
    for (name, vip, proto) in services {
        let health = if *proto == "udp" {
            format!(
                "{{ type = \"tcp\", port = 80, inter = \"{}\", timeout = \"500ms\", rise = {}, fall = {} }}",
                o.inter, o.rise, o.fall
            )
        } else {
            health.clone()
        };
        t.push_str(&format!(
            "\n[[service]]\nname = \"{name}\"\nvip = \"{vip}\"\nprotocol = \"{proto}\"\nstick = {{ on = \"src\", size = {}, expire = \"{}\" }}\nredispatch = {}\nhealth = {health}\n",
            o.stick_size, o.expire, o.redispatch,
        ));
        for (i, h) in servers(name) {
            let addr = h.addr_like(vip.ip());
            t.push_str(&format!(
                "[[service.server]]\nname = \"app{}\"\naddress = \"{addr}\"\n",
                i + 1
            ));
            if let Some(f) = o.forward.get(i).filter(|f| **f != crate::lbenv::Forward::L2) {
                t.push_str(&crate::routed_backends::forward_lines(*f));
            }
        }
    }
    t
}

/// Starts `xlb run -c CONFIG --netns NS` (stderr appended to `log`) and waits (20 s at most)
/// until it answers `show info` on `socket`.
pub fn spawn_agent(
    topo: &Topology,
    config: &Path,
    ns: &str,
    socket: &Path,
    log: &Path,
) -> Result<ChildGuard> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("open {}", log.display()))?;
    let mut cmd = Command::new(xlb_bin());
    cmd.args(["run", "-c"])
        .arg(config)
        .args(["--netns", ns])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(out);
    let child = topo.spawn_here(cmd)?;
    let t0 = Instant::now();
    loop {
        if let Some(st) = child.try_wait() {
            bail!(
                "xlb run exited ({st}) before answering:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if api_at(socket, "show info").is_ok_and(|a| a.starts_with("Name: xlb")) {
            return Ok(child);
        }
        if t0.elapsed() > Duration::from_secs(20) {
            bail!(
                "xlb run did not answer within 20 s:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Removes what an agent with pins under `bpffs` leaves behind: its pins and their directory,
/// its instance lock and its announce state file.
pub fn remove_agent_files(bpffs: &Path) {
    let _ = xlb::datapath::remove_pins(bpffs);
    let _ = std::fs::remove_dir_all(bpffs);
    let _ = std::fs::remove_file(xlb::agent::lock_path(bpffs));
    let _ = std::fs::remove_file(xlb::agent::announce_state_path(bpffs));
}

/// Removes an agent's files ([`remove_agent_files`]) when dropped, also on panic.
pub struct PinsGuard(pub PathBuf);

impl Drop for PinsGuard {
    fn drop(&mut self) {
        remove_agent_files(&self.0);
    }
}

/// The port every balancer of a test accepts its peers on.
pub const PEER_PORT: u16 = 7000;

/// A new peer key (32 hex digits) written to `path`, readable by root only; returns the key.
pub fn write_peer_key(path: &Path) -> Result<Vec<u8>> {
    let key: Vec<u8> = xlb::control::peers::wire::random_nonce()?
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        .into_bytes();
    std::fs::write(path, &key).with_context(|| format!("write {}", path.display()))?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    Ok(key)
}

/// `config` with `peer_listen` (`listen`:[`PEER_PORT`]) and `peer_key_file` added to its
/// `[global]`, and a `[[peer]]` per (name, address) of `peers` (at [`PEER_PORT`]).
pub fn with_peers<N: std::fmt::Display>(
    config: &str,
    listen: std::net::Ipv4Addr,
    key_file: &Path,
    peers: &[(N, std::net::Ipv4Addr)],
) -> String {
    let mut t = config.replacen(
        "[global]\n",
        &format!(
            "[global]\npeer_listen = \"{listen}:{PEER_PORT}\"\npeer_key_file = \"{}\"\n",
            key_file.display()
        ),
        1,
    );
    for (name, addr) in peers {
        t.push_str(&format!(
            "\n[[peer]]\nname = \"{name}\"\naddress = \"{addr}:{PEER_PORT}\"\n"
        ));
    }
    t
}
