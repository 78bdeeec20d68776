//! The end-to-end environment: one client host (many source addresses), one LB host running the
//! real agent (`target/release/xlb run --netns`), N backend hosts holding the VIPs on `lo` and
//! serving HTTP (port 80, `/healthz`) and UDP (port 53), all on one bridge. Dropping it kills the
//! agent, removes its pins, socket and files, then the namespaces.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    BackendServer, ChildGuard, HostId, Topology, agent,
    packet::{Frame, TCP_SYN},
    topology::{VIP4, VIP6},
};

/// What the config of an environment says.
#[derive(Clone, Debug)]
pub struct Opts {
    pub backends: usize,
    pub v4_sources: usize,
    pub v6_sources: usize,
    pub redispatch: bool,
    pub expire: String,
    pub inter: String,
    pub rise: u32,
    pub fall: u32,
    pub stick_size: u32,
    /// Backend hosts to create beyond those in the config (for scenarios that add one).
    pub spare_backends: usize,
    /// The expiry sweeper's interval.
    pub sweep: String,
    /// `metrics = "..."` in [global] (inside the LB namespace).
    pub metrics: Option<String>,
    /// More keys of the TCP services' `health` table, e.g. `observe = "layer4", fastinter =
    /// "200ms"` (passive health); empty for none.
    pub health_extra: String,
    /// The first `routed` backends sit behind a router, each in a subnet of its own
    /// ([`crate::routed_backends`]); the others are on the bridge.
    pub routed: usize,
    /// How the balancer reaches backend i (`forward[i]`; L2 for indices past the end). Every
    /// backend of an environment with an encapsulating server runs `xlb decap`.
    pub forward: Vec<Forward>,
    /// `[global] encap_source`: the LB's own addresses when left empty and a server
    /// encapsulates (filled in by `LbEnv::new`).
    pub encap_source: Vec<IpAddr>,
    /// Where the backends' `xlb decap` runs (`--hook`).
    pub decap_hook: xlb::datapath::decap::Hook,
}

/// A server's `forward` mode in the config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forward {
    L2,
    Ipip,
    Gue,
}

impl Forward {
    /// The config's word for it.
    pub fn word(self) -> &'static str {
        match self {
            Forward::L2 => "l2",
            Forward::Ipip => "ipip",
            Forward::Gue => "gue",
        }
    }
}

impl Opts {
    /// `v4` IPv4 and `v6` IPv6 client sources, the rest as [`Opts::default`]; the other fields
    /// go before it: `Opts { backends: 2, ..Opts::sources(4, 0) }`.
    pub fn sources(v4: usize, v6: usize) -> Opts {
        Opts {
            v4_sources: v4,
            v6_sources: v6,
            ..Default::default()
        }
    }
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            backends: 4,
            v4_sources: 200,
            v6_sources: 50,
            redispatch: true,
            expire: "30m".into(),
            inter: "200ms".into(),
            rise: 2,
            fall: 3,
            stick_size: 10_000,
            spare_backends: 0,
            sweep: "1s".into(),
            metrics: None,
            health_extra: String::new(),
            routed: 0,
            forward: Vec::new(),
            encap_source: Vec::new(),
            decap_hook: xlb::datapath::decap::Hook::Xdp,
        }
    }
}

pub struct LbEnv {
    pub topo: Topology,
    pub client: HostId,
    pub lb: HostId,
    pub backends: Vec<HostId>,
    /// HTTP servers (port 80), by backend index; named app1.. .
    pub http: Vec<BackendServer>,
    /// UDP servers (port 53), by backend index.
    pub udp: Vec<BackendServer>,
    pub sources4: Vec<IpAddr>,
    pub sources6: Vec<IpAddr>,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub bpffs: PathBuf,
    pub opts: Opts,
    agent: std::sync::Mutex<Option<ChildGuard>>,
    log_n: std::sync::atomic::AtomicUsize,
    /// Where `xlb decap` pinned on each backend that runs it (removed on drop).
    pub(crate) decap_bases: Vec<PathBuf>,
}

/// The agent binary: $XLB_BIN (set by `cargo xtask test`) or target/release/xlb.
pub fn xlb_bin() -> PathBuf {
    let p = std::env::var_os("XLB_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/xlb"));
    assert!(
        p.exists(),
        "{} does not exist: build it with `cargo xtask build` (cargo xtask test does)",
        p.display()
    );
    // `cargo test` alone does not rebuild the binary: refuse to test an old one.
    let built = std::fs::metadata(&p)
        .and_then(|m| m.modified())
        .expect("binary mtime");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for dir in ["lb-userspace/src", "lb-ebpf/src", "lb-common/src"] {
        for f in std::fs::read_dir(root.join(dir)).into_iter().flatten().flatten() {
            if f.metadata().and_then(|m| m.modified()).is_ok_and(|t| t > built) {
                panic!(
                    "{} is older than {}: rebuild it with `cargo xtask build` (cargo xtask test does)",
                    p.display(),
                    f.path().display()
                );
            }
        }
    }
    p
}

pub const VIP4_HTTP: SocketAddr = SocketAddr::new(IpAddr::V4(VIP4), 80);
pub const VIP6_HTTP: SocketAddr = SocketAddr::new(IpAddr::V6(VIP6), 80);
pub const VIP4_UDP: SocketAddr = SocketAddr::new(IpAddr::V4(VIP4), 53);

/// The HTTP VIP of `src`'s family.
pub fn http_vip(src: IpAddr) -> SocketAddr {
    if src.is_ipv4() { VIP4_HTTP } else { VIP6_HTTP }
}

/// The environment of test `test_name` with its agent answering; panics with what failed.
pub fn env(test_name: &str, opts: Opts) -> LbEnv {
    let e =
        LbEnv::new(test_name, opts).unwrap_or_else(|e| panic!("building the harness (needs root): {e:#}"));
    e.start_agent()
        .unwrap_or_else(|err| panic!("starting the agent: {err:#}"));
    e
}

impl LbEnv {
    /// Build the topology and backends, write the config; the agent is not started yet.
    pub fn new(test_name: &str, mut opts: Opts) -> Result<LbEnv> {
        crate::require_root();
        let mut topo = Topology::new(test_name)?;
        let client = topo.add_host("client")?;
        let lb = topo.add_host("lb")?;
        let router = crate::routed_backends::add_router(&mut topo, opts.routed)?;
        let mut backends = Vec::new();
        for i in opts.routed..opts.backends + opts.spare_backends {
            backends.push(topo.add_host(&format!("be{}", i + 1))?);
        }
        let sources = topo.add_client_addrs(client, opts.v4_sources, opts.v6_sources)?;
        // Linked hosts come after the client pool's routes (bridged hosts get them as added).
        if let Some(router) = router {
            let routed = crate::routed_backends::add_routed_backends(&mut topo, lb, router, opts.routed)?;
            backends.splice(0..0, routed);
        }
        let (sources4, sources6): (Vec<IpAddr>, Vec<IpAddr>) = sources.into_iter().partition(|a| a.is_ipv4());
        // A veth hands packets on with partial checksums (CHECKSUM_PARTIAL: "the NIC will fill it
        // in"); XDP_TX turns the packet into a raw frame and that promise is lost, so the backend
        // would see a bad TCP checksum and drop it. A real NIC delivers full checksums: make the
        // client's veth do the same.
        topo.exec(client, &["ethtool", "-K", "eth0", "tx", "off"])?;
        // veth hands XDP_TX frames to its peer only when the peer runs an XDP program.
        let port = topo.host(lb).port.clone();
        crate::netns::run_in(topo.switch_ns(), move || {
            xlb::datapath::attach_pass_program(&port)
        })??;
        topo.route_vip_via(client, IpAddr::V4(VIP4), lb)?;
        topo.route_vip_via(client, IpAddr::V6(VIP6), lb)?;
        let mut http = Vec::new();
        let mut udp = Vec::new();
        for (i, b) in backends.iter().enumerate() {
            topo.add_vip_on_lo(*b, IpAddr::V4(VIP4))?;
            topo.add_vip_on_lo(*b, IpAddr::V6(VIP6))?;
            http.push(BackendServer::start(
                &topo,
                *b,
                &format!("app{}", i + 1),
                80,
                Some("/healthz"),
            )?);
            udp.push(BackendServer::start(
                &topo,
                *b,
                &format!("app{}", i + 1),
                53,
                None,
            )?);
        }
        let decap_bases = crate::routed_backends::prepare_encap(&topo, lb, &backends, &mut opts)?;
        let stem = topo.stem().to_string();
        let dir = std::env::temp_dir().join(&stem);
        std::fs::create_dir_all(&dir)?;
        let env = LbEnv {
            config: dir.join("xlb.toml"),
            socket: dir.join("admin.sock"),
            bpffs: PathBuf::from("/sys/fs/bpf").join(&stem),
            dir,
            topo,
            client,
            lb,
            backends,
            http,
            udp,
            sources4,
            sources6,
            opts,
            agent: std::sync::Mutex::new(None),
            log_n: std::sync::atomic::AtomicUsize::new(0),
            decap_bases,
        };
        env.write_config(&env.config_text(env.opts.backends))?;
        Ok(env)
    }

    /// The config for the first `n` backends: be_app (VIP4:80/tcp), be_app6 (VIP6:80/tcp),
    /// dns (VIP4:53/udp, TCP-checked on port 80).
    pub fn config_text(&self, n: usize) -> String {
        self.config_text_with(|_| (0..n).collect())
    }

    /// The config whose service `name` has the backends `servers(name)` (indices into
    /// `backends`; backend i is server `app{i+1}`).
    pub fn config_text_with(&self, servers: impl Fn(&str) -> Vec<usize>) -> String {
        agent::config_text(
            &agent::AgentPaths {
                socket: &self.socket,
                bpffs: &self.bpffs,
            },
            &self.opts,
            &agent::SERVICES,
            |name| {
                servers(name)
                    .into_iter()
                    .map(|i| (i, self.topo.host(self.backends[i])))
                    .collect()
            },
        )
    }

    /// Delete the LB host's interface and make it again (what deleting and re-creating its
    /// network namespace does to a pinned XDP link): same name, MAC and addresses, new ifindex.
    pub fn replug_lb(&mut self) -> Result<()> {
        self.topo.replug(self.lb)?;
        let port = self.topo.host(self.lb).port.clone();
        crate::netns::run_in(self.topo.switch_ns(), move || {
            xlb::datapath::attach_pass_program(&port)
        })??;
        Ok(())
    }

    pub fn write_config(&self, text: &str) -> Result<()> {
        std::fs::write(&self.config, text).with_context(|| format!("write {}", self.config.display()))
    }

    /// Start `xlb run` (it enters the LB namespace itself) and wait until it answers.
    pub fn start_agent(&self) -> Result<()> {
        let n = self.log_n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let log = self.dir.join(format!("agent{n}.log"));
        let child = agent::spawn_agent(
            &self.topo,
            &self.config,
            &self.topo.host(self.lb).ns,
            &self.socket,
            &log,
        )?;
        *self.agent.lock().expect("agent lock") = Some(child);
        Ok(())
    }

    /// kill -9 the agent (the data path keeps forwarding).
    pub fn kill_agent(&self) {
        if let Some(a) = self.agent.lock().expect("agent lock").take() {
            a.kill();
        }
    }

    /// SIGTERM and wait.
    pub fn stop_agent(&self) -> Option<std::process::ExitStatus> {
        let a = self.agent.lock().expect("agent lock").take();
        a.and_then(|a| a.terminate(Duration::from_secs(10)))
    }

    pub fn signal_agent(&self, sig: libc::c_int) {
        if let Some(a) = self.agent.lock().expect("agent lock").as_ref() {
            a.signal(sig);
        }
    }

    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.lock().expect("agent lock").as_ref().map(|a| a.pid())
    }

    /// Everything the agents of this environment logged.
    pub fn agent_log(&self) -> String {
        (0..self.log_n.load(std::sync::atomic::Ordering::SeqCst))
            .map(|i| std::fs::read_to_string(self.dir.join(format!("agent{i}.log"))).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n--- next agent ---\n")
    }

    /// One runtime-API command over the unix socket.
    pub fn api(&self, cmd: &str) -> Result<String> {
        api_at(&self.socket, cmd)
    }

    /// The `xlb` CLI with `--socket`.
    pub fn cli(&self, args: &[&str]) -> Result<std::process::Output> {
        Ok(Command::new(xlb_bin())
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()?)
    }

    /// A fresh TCP connection from `src` to `vip`; the backend that answered.
    pub fn get(&self, src: IpAddr, vip: SocketAddr) -> Result<String> {
        self.topo.http_get(self.client, src, vip, Duration::from_secs(2))
    }

    /// A fresh connection to the IPv4 or IPv6 HTTP VIP matching `src`.
    pub fn get_vip(&self, src: IpAddr) -> Result<String> {
        self.get(src, http_vip(src))
    }

    pub fn udp(&self, src: IpAddr) -> Result<String> {
        self.topo
            .udp_query(self.client, src, VIP4_UDP, Duration::from_secs(2))
    }

    /// `show table NAME` as (client key, server name) pairs.
    pub fn table(&self, service: &str) -> Result<Vec<(String, String)>> {
        let out = self.api(&format!("show table {service}"))?;
        if !out.starts_with("# table:") {
            bail!("show table {service}: {out}");
        }
        Ok(out
            .lines()
            .skip(1)
            .filter_map(|l| {
                let key = l.split("key=").nth(1)?.split_whitespace().next()?;
                let srv = l.split("server_key=").nth(1)?.split_whitespace().next()?;
                Some((key.to_string(), srv.to_string()))
            })
            .collect())
    }

    /// Poll `f` every 100 ms until it returns true or `timeout` passes.
    pub fn wait_until(&self, timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if f() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        f()
    }

    /// The state word (UP, DOWN, DRAIN, MAINT) of `service/server` from `show stat`.
    pub fn server_state(&self, service: &str, server: &str) -> Result<String> {
        stat_state(&self.api("show stat")?, service, server)
    }
}

impl Drop for LbEnv {
    fn drop(&mut self) {
        if let Some(a) = self.agent.lock().map(|mut a| a.take()).unwrap_or(None) {
            a.kill();
        }
        agent::remove_agent_files(&self.bpffs);
        crate::routed_backends::remove_decap_pins(&self.decap_bases);
        if std::thread::panicking() {
            eprintln!(
                "==== agent log ({}) ====\n{}",
                self.dir.display(),
                self.agent_log()
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl LbEnv {
    /// A spoofed-source SYN flood from the client host: `count` SYNs to `dst` (an IPv4 VIP),
    /// each from a distinct address of the harness's spoof pool (10.77.64.0/18). The client
    /// namespace owns the pool (see `Topology::own_spoof_pool`), so the backends' SYN-ACKs come
    /// back to it and its kernel answers each with an RST through the balancer, as the real
    /// owners of spoofed addresses do. Bounded by `count` (at most 16382). Returns how many
    /// were sent.
    pub fn syn_flood(&mut self, count: u32, dst: SocketAddr) -> Result<u32> {
        let IpAddr::V4(dst4) = dst.ip() else {
            bail!("syn_flood sends IPv4 only")
        };
        if count > 16382 {
            bail!("the spoof pool holds 16382 addresses");
        }
        self.topo.own_spoof_pool(self.client)?;
        let base = u32::from(crate::topology::SPOOF_POOL4.0);
        let port = dst.port();
        self.topo.run_in(self.client, move || -> Result<u32> {
            // SAFETY: plain socket calls on a descriptor we own and close.
            unsafe {
                let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW);
                if fd < 0 {
                    bail!("raw socket: {}", std::io::Error::last_os_error());
                }
                let mut sent = 0;
                for i in 0..count {
                    let src = std::net::Ipv4Addr::from(base + 1 + i);
                    let pkt = Frame::tcp(src, 1024 + (i % 60000) as u16, dst4, port, TCP_SYN)
                        .payload(&[])
                        .packet();
                    let sa = libc::sockaddr_in {
                        sin_family: libc::AF_INET as u16,
                        sin_port: 0,
                        sin_addr: libc::in_addr {
                            s_addr: u32::from(dst4).to_be(),
                        },
                        sin_zero: [0; 8],
                    };
                    let n = libc::sendto(
                        fd,
                        pkt.as_ptr().cast(),
                        pkt.len(),
                        0,
                        (&sa as *const libc::sockaddr_in).cast(),
                        std::mem::size_of::<libc::sockaddr_in>() as u32,
                    );
                    if n == pkt.len() as isize {
                        sent += 1;
                    }
                    // Paced (64 per millisecond at most): the SYN-ACKs and RSTs the flood
                    // brings back share the veth queues, and a burst of thousands overflows them.
                    if i % 64 == 63 {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                libc::close(fd);
                Ok(sent)
            }
        })?
    }
}

/// One runtime-API command over the unix socket at `socket` (an agent of one's own).
pub fn api_at(socket: &Path, cmd: &str) -> Result<String> {
    use std::io::{Read as _, Write as _};
    let mut s = std::os::unix::net::UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(format!("{cmd}\n").as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// The state word (UP, DOWN, DRAIN, MAINT) of `service/server` in a `show stat` answer.
pub fn stat_state(stat: &str, service: &str, server: &str) -> Result<String> {
    for l in stat.lines() {
        let f: Vec<&str> = l.split(',').collect();
        if f.len() > 10 && f[0] == service && f[1] == server {
            return Ok(f[10].to_string());
        }
    }
    bail!("{service}/{server} not in show stat:\n{stat}")
}
