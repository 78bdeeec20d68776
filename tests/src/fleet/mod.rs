//! A fleet behind ECMP: the network around several balancers (issue 11).
//!
//! ```text
//!   client ──(own veth)── router ──┐            one bridge (the switch namespace):
//!   1000 IPv4 + 200 IPv6            ├── lb1, lb2, lb3   each with its own BIRD (BGP + BFD)
//!   sources                         └── be1 .. be4      VIPs on lo (DSR), reply via the router
//! ```
//!
//! The router runs BIRD with `examples/bird-router.conf` (dynamic BGP neighbours, `merge paths`
//! into its main table, BFD) and hashes flows on L4 ports (`fib_multipath_hash_policy=1`, v4 and
//! v6). Each balancer runs BIRD with `examples/bird-balancer.conf`, which announces what is in
//! the balancer's kernel table [`VIP_TABLE`] with protocol [`XLB_PROTO`]: the routes xlb's agent
//! publishes for the VIPs it announces. [`Fleet::with_agents`] runs an xlb agent on each
//! balancer (see [`agents`]) with HTTP backends answering with their names; without agents
//! ([`Fleet::new`]), [`Fleet::announce`] and [`Fleet::withdraw`] put and remove the same routes
//! by hand.
//!
//! Hosts are numbered as in [`crate::topology`]: router 10.77.0.1, balancers .2-.4, backends
//! .5-.8, the client on the router's own link (10.77.100.2). Balancers and backends route the
//! harness's ranges (10.77.0.0/16, fd77::/16) via the router; nothing routes anywhere else.
//! Dropping a [`Fleet`] stops its BIRD daemons, deletes its namespaces and its files.

pub mod agents;
pub mod bird;
pub mod syns;

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    BackendServer, HostId, Topology,
    client::KeepAlive,
    lbenv::http_vip,
    netns::ip,
    topology::{CLIENT_POOL4, CLIENT_POOL6, HOST_IF, VIP4, VIP6},
};
pub use agents::{Agent, AgentOpts};
pub use bird::{Bird, birdc};

/// Balancers in a fleet.
pub const BALANCERS: usize = 3;
/// Backends in a fleet.
pub const BACKENDS: usize = 4;
/// The client's IPv4 sources.
pub const V4_SOURCES: usize = 1000;
/// The client's IPv6 sources.
pub const V6_SOURCES: usize = 200;
/// The kernel table a balancer's announced VIPs are kept in (`define VIP_TABLE` of the example).
pub const VIP_TABLE: u32 = 200;
/// The route protocol of those routes (`define XLB_PROTO` of the example).
pub const XLB_PROTO: u8 = 250;
/// The BGP protocols of a balancer's BIRD (`examples/bird-balancer.conf`).
pub const BALANCER_SESSIONS: [&str; 2] = ["upstream4", "upstream6"];

/// How long BGP and BFD get to come up when a fleet starts.
const SESSIONS_UP: Duration = Duration::from_secs(30);

/// A directory of a fleet's files (configs, control sockets, logs), removed on drop.
struct FleetDir(PathBuf);

impl Drop for FleetDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The VIPs of a fleet's services (HTTP on port 80).
pub const VIPS: [IpAddr; 2] = [IpAddr::V4(VIP4), IpAddr::V6(VIP6)];

/// How long one HTTP exchange from the client may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(2);

/// The namespaces, daemons and addresses of one fleet. Fields drop in order: the agents and
/// backends first, then the BIRD daemons, then the namespaces, then the files.
pub struct Fleet {
    /// Each balancer's agent, by balancer index (none without [`Fleet::with_agents`]).
    pub agents: Vec<Agent>,
    /// Each backend's HTTP server (port 80, `/healthz`), named app1.. (none without agents).
    pub http: Vec<BackendServer>,
    /// The router's BIRD.
    pub router_bird: Bird,
    /// Each balancer's BIRD, by balancer index.
    pub balancer_birds: Vec<Bird>,
    pub topo: Topology,
    pub router: HostId,
    pub client: HostId,
    pub balancers: Vec<HostId>,
    pub backends: Vec<HostId>,
    /// The client's sources: [`V4_SOURCES`] IPv4 addresses, then [`V6_SOURCES`] IPv6 ones.
    pub sources: Vec<IpAddr>,
    dir: FleetDir,
}

impl Fleet {
    /// Builds the fleet, starts every BIRD and returns once each balancer's BGP sessions are
    /// established and the router has a BFD session up to each of them (v4 and v6).
    pub fn new(test_name: &str) -> Result<Fleet> {
        let mut topo = Topology::new(test_name)?;
        let router = topo.add_host("router")?;
        topo.enable_forwarding(router)?;
        topo.sysctl(
            router,
            &[
                ("net.ipv4.fib_multipath_hash_policy", "1"),
                ("net.ipv6.fib_multipath_hash_policy", "1"),
            ],
        )?;
        let balancers = (1..=BALANCERS)
            .map(|i| topo.add_host(&format!("lb{i}")))
            .collect::<Result<Vec<_>>>()?;
        let backends = (1..=BACKENDS)
            .map(|i| topo.add_host(&format!("be{i}")))
            .collect::<Result<Vec<_>>>()?;
        let client = topo.add_linked_host("client", router, "toclient")?;
        let sources = Topology::client_pool(V4_SOURCES, V6_SOURCES)?;
        topo.add_addrs(client, &sources)?;
        topo.tune_client(client)?;

        let (r4, r6) = (topo.host(router).ipv4, topo.host(router).ipv6);
        let (c4, c6) = (topo.host(client).ipv4, topo.host(client).ipv6);
        topo.ip_batch(
            router,
            &[
                format!("route replace {}/{} via {c4}", CLIENT_POOL4.0, CLIENT_POOL4.1),
                format!("route replace {}/{} via {c6}", CLIENT_POOL6.0, CLIENT_POOL6.1),
            ],
        )?;
        let via_router = [
            format!("route replace 10.77.0.0/16 via {r4}"),
            format!("route replace fd77::/16 via {r6}"),
        ];
        for id in balancers.iter().chain(&backends) {
            topo.ip_batch(*id, &via_router)?;
        }
        for be in &backends {
            topo.add_vip_on_lo(*be, VIP4.into())?;
            topo.add_vip_on_lo(*be, VIP6.into())?;
        }

        let dir = FleetDir(std::env::temp_dir().join(topo.stem()));
        std::fs::create_dir_all(&dir.0).with_context(|| format!("mkdir {}", dir.0.display()))?;
        let router_conf = bird::render(
            bird::ROUTER_CONF,
            &[("ROUTER_ID", r4.to_string())],
            &dir.0.join("router.log"),
        )?;
        let router_bird = Bird::start(&topo, router, &dir.0, "router", &router_conf)?;
        let mut balancer_birds = Vec::new();
        for (i, lb) in balancers.iter().enumerate() {
            let name = format!("lb{}", i + 1);
            let conf = bird::render(
                bird::BALANCER_CONF,
                &[
                    ("ROUTER_ID", topo.host(*lb).ipv4.to_string()),
                    ("ROUTER4", r4.to_string()),
                    ("ROUTER6", r6.to_string()),
                    ("VIP_TABLE", VIP_TABLE.to_string()),
                    ("XLB_PROTO", XLB_PROTO.to_string()),
                ],
                &dir.0.join(format!("{name}.log")),
            )?;
            balancer_birds.push(Bird::start(&topo, *lb, &dir.0, &name, &conf)?);
        }
        let fleet = Fleet {
            agents: Vec::new(),
            http: Vec::new(),
            router_bird,
            balancer_birds,
            topo,
            router,
            client,
            balancers,
            backends,
            sources,
            dir,
        };
        let sessions = BALANCER_SESSIONS.map(String::from);
        for b in &fleet.balancer_birds {
            b.wait_established(&sessions, SESSIONS_UP)?;
        }
        fleet.wait_bfd_up(2 * BALANCERS, SESSIONS_UP)?;
        Ok(fleet)
    }

    /// [`Fleet::new`] with an xlb agent on each balancer (see [`agents`]) and an HTTP backend
    /// on each backend host; returns once the router has every balancer as a next hop for both
    /// VIPs (after the agents' warm-up or teach).
    pub fn with_agents(test_name: &str, opts: AgentOpts) -> Result<Fleet> {
        let mut fleet = Fleet::new(test_name)?;
        // See `LbEnv::new`: the client's segments cross native XDP, which drops the checksum
        // offload state; a veth hands XDP_TX frames on only to a peer that runs XDP.
        fleet
            .topo
            .exec(fleet.client, &["ethtool", "-K", HOST_IF, "tx", "off"])?;
        for (i, be) in fleet.backends.iter().enumerate() {
            let name = format!("app{}", i + 1);
            fleet.http.push(BackendServer::start(
                &fleet.topo,
                *be,
                &name,
                80,
                Some("/healthz"),
            )?);
        }
        let key_file = fleet.dir().join("peer.key");
        crate::agent::write_peer_key(&key_file)?;
        let named: Vec<(String, std::net::Ipv4Addr)> = fleet
            .balancers
            .iter()
            .enumerate()
            .map(|(i, lb)| (format!("lb{}", i + 1), fleet.topo.host(*lb).ipv4))
            .collect();
        for (i, lb) in fleet.balancers.iter().enumerate() {
            let port = fleet.topo.host(*lb).port.clone();
            crate::netns::run_in(fleet.topo.switch_ns(), move || {
                xlb::datapath::attach_pass_program(&port)
            })??;
            let peers: Vec<_> = named.iter().filter(|(n, _)| *n != named[i].0).cloned().collect();
            let agent = Agent::configure(
                &fleet.topo,
                fleet.topo.stem(),
                fleet.dir(),
                &named[i].0,
                &fleet.topo.host(*lb).ns,
                named[i].1,
                &peers,
                &key_file,
                &fleet.backends,
                &opts,
            )?;
            fleet.agents.push(agent);
        }
        for agent in &fleet.agents {
            agent.start(&fleet.topo)?;
        }
        let all: Vec<usize> = (0..BALANCERS).collect();
        for vip in VIPS {
            fleet.wait_next_hops(vip, &all, SESSIONS_UP)?;
        }
        Ok(fleet)
    }

    /// One runtime-API command on balancer `lb`'s agent.
    pub fn api(&self, lb: usize, cmd: &str) -> Result<String> {
        self.agents.get(lb).context("no such agent")?.api(cmd)
    }

    /// kill -9 balancer `lb`'s agent (its routes and data path stay).
    pub fn kill_agent(&self, lb: usize) {
        self.agents[lb].kill();
    }

    /// (Re)starts balancer `lb`'s agent and waits until it answers.
    pub fn start_agent(&self, lb: usize) -> Result<()> {
        self.agents[lb].start(&self.topo)
    }

    /// From the client namespace, a fresh connection from `src` to the HTTP VIP of its
    /// family (the router's hash picks the balancer); the backend that answered.
    pub fn get_vip(&self, src: IpAddr) -> Result<String> {
        self.topo.http_get(self.client, src, http_vip(src), HTTP_TIMEOUT)
    }

    /// A keep-alive connection from `src` (in the client namespace) to the HTTP VIP of its
    /// family; its requests may be sent from any thread.
    pub fn keep_alive(&self, src: IpAddr) -> Result<KeepAlive> {
        self.topo
            .worker(self.client)?
            .run(move || KeepAlive::open(src, http_vip(src), HTTP_TIMEOUT))
    }

    /// The router's routing tables (`ip -4 route` and `ip -6 route`), as text.
    pub fn router_table(&self) -> Result<String> {
        let ns = &self.topo.host(self.router).ns;
        Ok(ip(&["-n", ns, "-4", "route", "show"])? + &ip(&["-n", ns, "-6", "route", "show"])?)
    }

    /// What to print at an interesting moment: the router's routes to the VIPs, then
    /// `show peers` and `show frontends` of each balancer whose agent answers.
    pub fn report(&self, moment: &str) -> String {
        let mut out = format!("==== {moment} ====\nrouter:\n");
        for vip in VIPS {
            match self.router_route(vip) {
                Ok(r) if r.trim().is_empty() => out.push_str(&format!("(no route to {vip})\n")),
                Ok(r) => out.push_str(&r),
                Err(e) => out.push_str(&format!("ip route: {e:#}\n")),
            }
        }
        for (i, a) in self.agents.iter().enumerate() {
            for cmd in ["show peers", "show frontends"] {
                let text = a.api(cmd).unwrap_or_else(|e| format!("({e:#})\n"));
                out.push_str(&format!("lb{} `{cmd}`:\n{text}", i + 1));
            }
        }
        out
    }

    /// The directory of this fleet's configs, control sockets and logs.
    pub fn dir(&self) -> &Path {
        &self.dir.0
    }

    /// Balancer `lb`'s address of the family of `like` (the router's next hop for it).
    pub fn balancer_addr(&self, lb: usize, like: IpAddr) -> IpAddr {
        self.topo.host(self.balancers[lb]).addr_like(like)
    }

    /// What xlb's agent does to announce `vip` from balancer `lb`: the route
    /// `VIP/32|128 dev eth0 scope link proto 250 table 200` in the balancer's namespace.
    pub fn announce(&self, lb: usize, vip: IpAddr) -> Result<()> {
        self.topo.ip_batch(
            self.balancers[lb],
            &[format!(
                "route replace {vip}/{} dev {HOST_IF} scope link proto {XLB_PROTO} table {VIP_TABLE}",
                host_len(vip)
            )],
        )
    }

    /// What xlb's agent does to withdraw `vip` from balancer `lb`: deletes that route.
    pub fn withdraw(&self, lb: usize, vip: IpAddr) -> Result<()> {
        self.topo.ip_batch(
            self.balancers[lb],
            &[format!(
                "route del {vip}/{} proto {XLB_PROTO} table {VIP_TABLE}",
                host_len(vip)
            )],
        )
    }

    /// Takes balancer `lb`'s link down at the switch: its host vanishes from the segment
    /// without a word (no BGP notification, no withdrawal); only BFD can tell.
    pub fn cut_link(&self, lb: usize) -> Result<()> {
        self.set_switch_port(lb, "down")
    }

    /// Brings balancer `lb`'s link back up at the switch (after [`Fleet::cut_link`]).
    pub fn restore_link(&self, lb: usize) -> Result<()> {
        self.set_switch_port(lb, "up")
    }

    fn set_switch_port(&self, lb: usize, state: &str) -> Result<()> {
        let port = &self.topo.host(self.balancers[lb]).port;
        ip(&["-n", self.topo.switch_ns(), "link", "set", port, state]).map(drop)
    }

    /// The router's route to `vip` as `ip route show` prints it (empty if there is none).
    pub fn router_route(&self, vip: IpAddr) -> Result<String> {
        let (family, prefix) = (family_flag(vip), format!("{vip}/{}", host_len(vip)));
        let ns = &self.topo.host(self.router).ns;
        ip(&["-n", ns, family, "route", "show", "exact", &prefix])
    }

    /// The next hops of the router's route to `vip`, sorted (none if there is no route).
    pub fn router_next_hops(&self, vip: IpAddr) -> Result<Vec<IpAddr>> {
        let (family, prefix) = (family_flag(vip), format!("{vip}/{}", host_len(vip)));
        let ns = &self.topo.host(self.router).ns;
        let out = ip(&["-n", ns, "-j", family, "route", "show", "exact", &prefix])?;
        let routes: serde_json::Value =
            serde_json::from_str(&out).with_context(|| format!("parse ip -j route: {out}"))?;
        let mut hops = Vec::new();
        for r in routes.as_array().into_iter().flatten() {
            let gateways = match r["nexthops"].as_array() {
                Some(nh) => nh.iter().map(|h| &h["gateway"]).collect(),
                None => vec![&r["gateway"]],
            };
            for g in gateways {
                let g = g
                    .as_str()
                    .with_context(|| format!("a next hop without gateway: {r}"))?;
                hops.push(g.parse().with_context(|| format!("gateway {g}"))?);
            }
        }
        hops.sort();
        Ok(hops)
    }

    /// Waits (up to `bound`, polling every few milliseconds) until the router's next hops to
    /// `vip` are exactly those of the balancers `lbs`; returns how long that took.
    pub fn wait_next_hops(&self, vip: IpAddr, lbs: &[usize], bound: Duration) -> Result<Duration> {
        let mut want: Vec<IpAddr> = lbs.iter().map(|lb| self.balancer_addr(*lb, vip)).collect();
        want.sort();
        let start = Instant::now();
        loop {
            let got = self.router_next_hops(vip)?;
            if got == want {
                return Ok(start.elapsed());
            }
            if start.elapsed() >= bound {
                bail!(
                    "the router's next hops to {vip} are {got:?}, not {want:?}, after {bound:?}\n\
                     {}\nrouter's BIRD:\n{}",
                    self.router_route(vip).unwrap_or_default(),
                    self.router_bird.birdc("show protocols").unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits (up to `bound`) until the router's BIRD has `count` BFD sessions up.
    fn wait_bfd_up(&self, count: usize, bound: Duration) -> Result<()> {
        let deadline = Instant::now() + bound;
        loop {
            let text = self.router_bird.birdc("show bfd sessions")?;
            let up = text
                .lines()
                .filter(|l| l.split_whitespace().nth(2) == Some("Up"))
                .count();
            if up >= count {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{up} of {count} BFD sessions up on the router after {bound:?}:\n{text}\n{}",
                    self.router_bird.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn host_len(a: IpAddr) -> u8 {
    if a.is_ipv4() { 32 } else { 128 }
}

fn family_flag(a: IpAddr) -> &'static str {
    if a.is_ipv4() { "-4" } else { "-6" }
}
