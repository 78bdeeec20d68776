//! A switched L2 segment of network namespaces: one "switch" namespace holding a Linux bridge,
//! and host namespaces each joined to it by a veth pair (`eth0` on the host side).
//!
//! Address plan (every topology is isolated, so all of them use the same plan):
//!
//! | what | IPv4 | IPv6 | MAC |
//! |---|---|---|---|
//! | host number N (1, 2, ...) | 10.77.0.N/24 | fd77::N/64 | 02:77:00:00:00:N |
//! | client source pool ([`Topology::add_client_addrs`]) | 10.77.16.0/20 | fd77:1::/64 | |
//! | spoof pool ([`Topology::route_spoof_pool`]) | 10.77.64.0/18 | fd77:2::/64 | |
//! | VIPs (chosen by tests, e.g. [`VIP4`], [`VIP6`]) | 10.77.200.0/24 | fd77:200::/64 | |
//! | K-th point-to-point link ([`Topology::add_linked_host`]): near end, far host | 10.77.(100+K).1 and .2/24 | fd77:(100+K)::1 and ::2/64 | far host: 02:77:00:00:00:N |
//!
//! Nothing routes outside 10.77.0.0/16 and fd77::/16: there is no default route anywhere.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    process::Command,
    sync::OnceLock,
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::{
    client, names,
    netns::{self, NsWorker},
    process::{ChildGuard, ProcessSet},
};

mod addressing;

/// A VIP inside the harness's plan (10.77.200.1).
pub const VIP4: Ipv4Addr = Ipv4Addr::new(10, 77, 200, 1);
/// A VIP inside the harness's plan (fd77:200::1).
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0x200, 0, 0, 0, 0, 0, 1);
/// The client source pool, IPv4: 10.77.16.0/20 (up to 4094 addresses).
pub const CLIENT_POOL4: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 77, 16, 0), 20);
/// The client source pool, IPv6: fd77:1::/64.
pub const CLIENT_POOL6: (Ipv6Addr, u8) = (Ipv6Addr::new(0xfd77, 1, 0, 0, 0, 0, 0, 0), 64);
/// Spoofed sources for flood tests, IPv4: 10.77.64.0/18 (routed back to the client).
pub const SPOOF_POOL4: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 77, 64, 0), 18);
/// Spoofed sources for flood tests, IPv6: fd77:2::/64 (routed back to the client).
pub const SPOOF_POOL6: (Ipv6Addr, u8) = (Ipv6Addr::new(0xfd77, 2, 0, 0, 0, 0, 0, 0), 64);

/// The name of the bridge inside the switch namespace.
pub const BRIDGE: &str = "br0";
/// The name of every host's interface (inside its own namespace).
pub const HOST_IF: &str = "eth0";

/// Index of a host in its topology.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HostId(pub usize);

/// One host namespace.
#[derive(Clone, Debug)]
pub struct Host {
    /// Its role as given to [`Topology::add_host`] ("client", "lb", "be1", ...).
    pub role: String,
    /// Host number N (addresses end in N).
    pub n: u8,
    /// Network namespace name (`/var/run/netns/<ns>`).
    pub ns: String,
    /// Interface name inside `ns` ([`HOST_IF`]).
    pub ifname: String,
    /// Interface index of `ifname` inside `ns`.
    pub ifindex: u32,
    /// MAC address of `ifname` (02:77:00:00:00:N).
    pub mac: [u8; 6],
    /// Primary IPv4 address (10.77.0.N/24; on a linked host, 10.77.(100+K).2/24).
    pub ipv4: Ipv4Addr,
    /// Primary IPv6 address (fd77::N/64; on a linked host, fd77:(100+K)::2/64).
    pub ipv6: Ipv6Addr,
    /// The other end of the veth: on the bridge (in the switch namespace), or, for a linked
    /// host, the interface in the host it is linked to.
    pub port: String,
    /// Joined by [`Topology::add_linked_host`], not to the bridge.
    pub linked: bool,
}

impl Host {
    /// The primary address of the same family as `like`.
    pub fn addr_like(&self, like: IpAddr) -> IpAddr {
        match like {
            IpAddr::V4(_) => self.ipv4.into(),
            IpAddr::V6(_) => self.ipv6.into(),
        }
    }

    /// `aa:bb:..` form of the MAC.
    pub fn mac_str(&self) -> String {
        mac_str(&self.mac)
    }
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_str(m: &[u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// The namespaces, links and processes of one test. Dropping it (also while unwinding from a
/// panic) terminates the processes started through it, stops its workers and deletes every
/// namespace it created (which deletes the veths and the bridge).
pub struct Topology {
    test_name: String,
    stem: String,
    switch_ns: String,
    created: Vec<String>,
    hosts: Vec<Host>,
    workers: Vec<OnceLock<NsWorker>>,
    /// Routes every host (also hosts added later) gets: (prefix, len, via host), except `via`.
    routes: Vec<(IpAddr, u8, HostId)>,
    procs: ProcessSet,
}

/// MAC, IPv4 and IPv6 address of bridged host number `n`.
fn bridged_addrs(n: u8) -> ([u8; 6], Ipv4Addr, Ipv6Addr) {
    (
        [0x02, 0x77, 0, 0, 0, n],
        Ipv4Addr::new(10, 77, 0, n),
        Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, n as u16),
    )
}

/// The index of [`HOST_IF`] inside namespace `ns`.
fn host_ifindex(ns: &str) -> Result<u32> {
    let ifindex = netns::run_in(ns, || {
        let c = std::ffi::CString::new(HOST_IF).expect("no NUL");
        // SAFETY: valid C string.
        unsafe { libc::if_nametoindex(c.as_ptr()) }
    })?;
    if ifindex == 0 {
        bail!("{HOST_IF} not found in {ns}");
    }
    Ok(ifindex)
}

/// Panics unless running as root: the privileged tests must fail loudly, never skip.
pub fn require_root() {
    // SAFETY: plain syscall.
    if unsafe { libc::geteuid() } != 0 {
        panic!(
            "this test needs root and BPF (network namespaces, veth, XDP): run it as root \
             (CI runs as root)"
        );
    }
}

static SWEEP: std::sync::Once = std::sync::Once::new();

impl Topology {
    /// An empty topology: the switch namespace with its bridge. Namespace names are unique per
    /// process and call (`xlbt-<pid>-<n>-<test_name>-<role>`). The first call in a process
    /// also sweeps namespaces that dead runs left behind ([`names::sweep_stale`]).
    pub fn new(test_name: &str) -> Result<Topology> {
        // SAFETY: plain syscall.
        if unsafe { libc::geteuid() } != 0 {
            bail!("the netns harness needs root (and BPF for the load balancer)");
        }
        SWEEP.call_once(|| {
            if let Err(e) = names::sweep_stale() {
                eprintln!("harness: sweeping stale namespaces: {e:#}");
            }
        });
        let stem = names::new_stem(test_name);
        let switch_ns = names::ns_name(&stem, "sw");
        let mut t = Topology {
            test_name: test_name.to_string(),
            stem,
            switch_ns: switch_ns.clone(),
            created: Vec::new(),
            hosts: Vec::new(),
            workers: Vec::new(),
            routes: Vec::new(),
            procs: ProcessSet::default(),
        };
        t.add_ns(&switch_ns)?;
        // br_netfilter (loaded on the host) would send bridged frames through iptables.
        for k in [
            "bridge-nf-call-iptables",
            "bridge-nf-call-ip6tables",
            "bridge-nf-call-arptables",
        ] {
            let key = format!("net.bridge.{k}");
            let exists = netns::run_in(&switch_ns, {
                let p = format!("/proc/sys/net/bridge/{k}");
                move || std::path::Path::new(&p).exists()
            })?;
            if exists {
                netns::sysctl(&switch_ns, &[(key.as_str(), "0")])?;
            }
        }
        netns::sysctl(&switch_ns, &[("net.ipv6.conf.default.disable_ipv6", "1")])?;
        netns::ip_batch(
            &switch_ns,
            &[
                "link set lo up".into(),
                format!(
                    "link add {BRIDGE} type bridge stp_state 0 forward_delay 0 \
                     mcast_snooping 0"
                ),
                format!("link set {BRIDGE} address 02:77:00:00:ff:fe"),
                format!("link set {BRIDGE} up"),
            ],
        )?;
        Ok(t)
    }

    fn add_ns(&mut self, ns: &str) -> Result<()> {
        // `ip netns add` sets up the shared /var/run/netns mount on first use; keep this
        // process's calls from racing on that.
        static ADD: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let guard = ADD.lock().unwrap_or_else(|e| e.into_inner());
        netns::ip(&["netns", "add", ns])?;
        drop(guard);
        self.created.push(ns.to_string());
        Ok(())
    }

    /// The test name given to [`Topology::new`].
    pub fn test_name(&self) -> &str {
        &self.test_name
    }

    /// The common start of this topology's namespace names.
    pub fn stem(&self) -> &str {
        &self.stem
    }

    /// The switch namespace (holds [`BRIDGE`] and the bridge-side veth ends).
    pub fn switch_ns(&self) -> &str {
        &self.switch_ns
    }

    /// Every namespace this topology created (switch first).
    pub fn namespaces(&self) -> &[String] {
        &self.created
    }

    /// The next host's id and number, and its namespace, created with the sysctls every host
    /// gets (`rp_filter` off, no DAD, no router advertisements).
    fn new_host_ns(&mut self, role: &str) -> Result<(HostId, u8, String)> {
        let id = HostId(self.hosts.len());
        let n = u8::try_from(self.hosts.len() + 1)
            .ok()
            .filter(|n| *n < 250)
            .context("too many hosts")?;
        let ns = names::ns_name(&self.stem, role);
        if self.created.contains(&ns) {
            bail!("role {role} used twice in this topology");
        }
        self.add_ns(&ns)?;
        netns::sysctl(
            &ns,
            &[
                ("net.ipv4.conf.all.rp_filter", "0"),
                ("net.ipv4.conf.default.rp_filter", "0"),
                ("net.ipv6.conf.all.accept_dad", "0"),
                ("net.ipv6.conf.default.accept_dad", "0"),
                ("net.ipv6.conf.default.accept_ra", "0"),
                ("net.ipv6.conf.all.accept_ra", "0"),
            ],
        )?;
        Ok((id, n, ns))
    }

    /// Adds a host namespace joined to the bridge: `eth0` with 10.77.0.N/24, fd77::N/64
    /// (nodad), MAC 02:77:00:00:00:N, GRO on at both veth ends, `rp_filter` off, no default
    /// route. Routes registered earlier (client pools) are added to it too.
    pub fn add_host(&mut self, role: &str) -> Result<HostId> {
        let (id, n, ns) = self.new_host_ns(role)?;
        let port = names::if_name(&format!("p{n}-"), role);
        let (mac, ipv4, ipv6) = bridged_addrs(n);
        let ifindex = self.plug(&ns, &port, n)?;
        self.hosts.push(Host {
            role: role.to_string(),
            n,
            ns,
            ifname: HOST_IF.to_string(),
            ifindex,
            mac,
            ipv4,
            ipv6,
            port,
            linked: false,
        });
        self.workers.push(OnceLock::new());
        Ok(id)
    }

    /// GRO on or off at the bridge's end of host `id`'s veth pair. On, the port merges the TCP
    /// segments host `id` sends into one packet before the bridge forwards them, which no
    /// physical switch does: a balancer's XDP program then sees packets far larger than the
    /// link's MTU.
    pub fn set_port_gro(&self, id: HostId, on: bool) -> Result<()> {
        let port = &self.hosts[id.0].port;
        netns::exec(
            &self.switch_ns,
            &["ethtool", "-K", port, "gro", if on { "on" } else { "off" }],
        )?;
        Ok(())
    }

    /// Deletes bridged host `id`'s `eth0` (and so its veth pair) and makes it again as
    /// `add_host` did: same names, MACs and addresses, a new ifindex. What an XDP program
    /// attached to the old interface sees: its interface went away.
    pub fn replug(&mut self, id: HostId) -> Result<()> {
        let h = &self.hosts[id.0];
        if h.linked {
            bail!("replug: {} is not on the bridge", h.role);
        }
        let (ns, port, n) = (h.ns.clone(), h.port.clone(), h.n);
        netns::ip(&["-n", &ns, "link", "del", HOST_IF])?;
        self.hosts[id.0].ifindex = self.plug(&ns, &port, n)?;
        Ok(())
    }

    /// The veth pair of bridged host number `n` (namespace `ns`, bridge port `port`), its
    /// addresses and routes; returns the host side's ifindex.
    fn plug(&self, ns: &str, port: &str, n: u8) -> Result<u32> {
        let (mac, ipv4, ipv6) = bridged_addrs(n);
        netns::ip(&[
            "-n",
            &self.switch_ns,
            "link",
            "add",
            port,
            "type",
            "veth",
            "peer",
            "name",
            HOST_IF,
            "netns",
            ns,
        ])?;
        netns::ip_batch(
            &self.switch_ns,
            &[
                format!("link set {port} address 02:77:00:00:01:{n:02x}"),
                format!("link set {port} master {BRIDGE}"),
                format!("link set {port} up"),
            ],
        )?;
        let mut cmds = vec![
            "link set lo up".to_string(),
            format!("link set {HOST_IF} address {}", mac_str(&mac)),
            format!("link set {HOST_IF} up"),
            format!("addr add {ipv4}/24 dev {HOST_IF}"),
            format!("addr add {ipv6}/64 dev {HOST_IF} nodad"),
        ];
        for (prefix, len, via) in &self.routes {
            let gw = self.hosts[via.0].addr_like(*prefix);
            cmds.push(format!("route replace {prefix}/{len} via {gw}"));
        }
        netns::ip_batch(ns, &cmds)?;
        netns::exec(ns, &["ethtool", "-K", HOST_IF, "gro", "on"])?;
        netns::exec(&self.switch_ns, &["ethtool", "-K", port, "gro", "on"])?;
        host_ifindex(ns)
    }

    /// Adds a host that is not on the bridge: joined to host `to` by a veth pair of its own
    /// (`eth0` in the new host, `to_if` in `to`), on the K-th link subnet of the address plan
    /// (K = links added before). `to` gets .1 and forwarding; the new host gets .2, MAC
    /// 02:77:00:00:00:N, GRO on, and routes to 10.77.0.0/16 and fd77::/16 via `to`.
    pub fn add_linked_host(&mut self, role: &str, to: HostId, to_if: &str) -> Result<HostId> {
        let k = u8::try_from(self.hosts.iter().filter(|h| h.linked).count())
            .ok()
            .filter(|k| *k < 50)
            .context("too many linked hosts")?;
        if to_if.is_empty() || to_if.len() > 15 {
            bail!("interface name {to_if:?} must have 1 to 15 bytes");
        }
        let (id, n, ns) = self.new_host_ns(role)?;
        let near_ns = self.host(to).ns.clone();
        let subnet = 100 + k;
        let mac = [0x02, 0x77, 0, 0, 0, n];
        let (near4, far4) = (Ipv4Addr::new(10, 77, subnet, 1), Ipv4Addr::new(10, 77, subnet, 2));
        let (near6, far6) = (
            Ipv6Addr::new(0xfd77, subnet as u16, 0, 0, 0, 0, 0, 1),
            Ipv6Addr::new(0xfd77, subnet as u16, 0, 0, 0, 0, 0, 2),
        );
        netns::ip(&[
            "-n", &near_ns, "link", "add", to_if, "type", "veth", "peer", "name", HOST_IF, "netns", &ns,
        ])?;
        netns::ip_batch(
            &near_ns,
            &[
                format!("link set {to_if} address 02:77:00:00:02:{n:02x}"),
                format!("link set {to_if} up"),
                format!("addr add {near4}/24 dev {to_if}"),
                format!("addr add {near6}/64 dev {to_if} nodad"),
            ],
        )?;
        self.enable_forwarding(to)?;
        netns::ip_batch(
            &ns,
            &[
                "link set lo up".to_string(),
                format!("link set {HOST_IF} address {}", mac_str(&mac)),
                format!("link set {HOST_IF} up"),
                format!("addr add {far4}/24 dev {HOST_IF}"),
                format!("addr add {far6}/64 dev {HOST_IF} nodad"),
                format!("route replace 10.77.0.0/16 via {near4}"),
                format!("route replace fd77::/16 via {near6}"),
            ],
        )?;
        netns::exec(&ns, &["ethtool", "-K", HOST_IF, "gro", "on"])?;
        netns::exec(&near_ns, &["ethtool", "-K", to_if, "gro", "on"])?;
        let ifindex = host_ifindex(&ns)?;
        self.hosts.push(Host {
            role: role.to_string(),
            n,
            ns,
            ifname: HOST_IF.to_string(),
            ifindex,
            mac,
            ipv4: far4,
            ipv6: far6,
            port: to_if.to_string(),
            linked: true,
        });
        self.workers.push(OnceLock::new());
        Ok(id)
    }

    /// The host `id`.
    pub fn host(&self, id: HostId) -> &Host {
        &self.hosts[id.0]
    }

    /// All hosts, in order of creation.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// The host with `role`, if any.
    pub fn by_role(&self, role: &str) -> Option<HostId> {
        self.hosts.iter().position(|h| h.role == role).map(HostId)
    }

    /// Runs `f` on a fresh thread inside the host's namespace (network namespace only) and
    /// returns its result. Panics in `f` are resumed here.
    pub fn run_in<T: Send>(&self, id: HostId, f: impl FnOnce() -> T + Send) -> Result<T> {
        netns::run_in(&self.host(id).ns, f)
    }

    /// The host's persistent worker thread (started on first use, joined on drop).
    pub fn worker(&self, id: HostId) -> Result<&NsWorker> {
        let cell = &self.workers[id.0];
        if let Some(w) = cell.get() {
            return Ok(w);
        }
        let w = NsWorker::new(&self.host(id).ns)?;
        Ok(cell.get_or_init(|| w))
    }

    /// Starts `cmd` inside the host's namespace (entered between fork and exec, host mounts
    /// kept). The process is terminated when the guard or this topology is dropped, and killed
    /// if the spawning thread dies (see [`ChildGuard`]).
    pub fn spawn(&self, id: HostId, mut cmd: Command) -> Result<ChildGuard> {
        let _ns = netns::prepare(&mut cmd, &self.host(id).ns)?;
        self.procs.spawn(cmd)
    }

    /// Starts `cmd` in the caller's own namespace, tracked for cleanup like [`Topology::spawn`]
    /// (for programs that enter a namespace themselves, like `xlb run --netns NS`).
    pub fn spawn_here(&self, cmd: Command) -> Result<ChildGuard> {
        self.procs.spawn(cmd)
    }

    /// Runs `args` inside the host's namespace (`ip netns exec`) and returns stdout; an error
    /// carries stderr.
    pub fn exec(&self, id: HostId, args: &[&str]) -> Result<String> {
        netns::exec(&self.host(id).ns, args)
    }

    /// Runs `ip -n NS -batch -` with `lines` in the host's namespace.
    pub fn ip_batch(&self, id: HostId, lines: &[String]) -> Result<()> {
        netns::ip_batch(&self.host(id).ns, lines)
    }

    /// Sets sysctls in the host's namespace (`("net.ipv4.tcp_tw_reuse", "1")`, ...).
    pub fn sysctl(&self, id: HostId, settings: &[(&str, &str)]) -> Result<()> {
        netns::sysctl(&self.host(id).ns, settings)
    }

    /// From `client`'s namespace: a fresh TCP connection from `src`, `GET /`, returns the
    /// `X-Served-By` header (see [`client::http_get`]).
    pub fn http_get(
        &self,
        client: HostId,
        src: IpAddr,
        dst: SocketAddr,
        timeout: Duration,
    ) -> Result<String> {
        self.worker(client)?
            .run(move || client::http_get(src, dst, timeout))
    }

    /// From `client`'s namespace: a fresh TCP connection from `src`, `GET path`, returns the
    /// whole response (see [`client::http_request`]).
    pub fn http_request(
        &self,
        client: HostId,
        src: IpAddr,
        dst: SocketAddr,
        path: &str,
        timeout: Duration,
    ) -> Result<client::HttpResponse> {
        let path = path.to_string();
        self.worker(client)?
            .run(move || client::http_request(src, dst, &path, timeout))
    }

    /// From `client`'s namespace: one UDP datagram from `src`, returns the reply (see
    /// [`client::udp_query`]).
    pub fn udp_query(
        &self,
        client: HostId,
        src: IpAddr,
        dst: SocketAddr,
        timeout: Duration,
    ) -> Result<String> {
        self.worker(client)?
            .run(move || client::udp_query(src, dst, timeout))
    }

    /// Tears everything down now (what Drop does) and reports the first error.
    pub fn cleanup(mut self) -> Result<()> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<()> {
        self.procs.terminate_all(Duration::from_secs(2));
        for w in self.workers.drain(..) {
            drop(w);
        }
        let mut first_err = None;
        // Hosts first (their eth0 goes with them), the switch last.
        for ns in self.created.drain(..).rev() {
            if let Err(e) = netns::ip(&["netns", "del", &ns])
                && netns::ns_path(&ns).exists()
            {
                eprintln!("harness: deleting namespace {ns}: {e:#}");
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = self.teardown();
    }
}

// A topology is shared by reference between client threads.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Topology>();
    send_sync::<crate::BackendServer>();
    send_sync::<NsWorker>();
};
