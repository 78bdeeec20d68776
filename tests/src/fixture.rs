//! A loaded data path set up as the tests and benchmarks need it: six services (VIP4:80/tcp,
//! VIP4:53/udp, VIP6:80/tcp, VIP6:53/udp, VIP4:5353/udp, VIP6:5353/udp), each with four
//! backends. Every map value comes from the agent's own `balancer::program`, so the maps hold
//! what the agent would write. No pins: everything goes away with the value.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use lb_common::{BACKEND_UP, STICK_NONE, STICK_SRC, STICK_SRC_PORT, StickEntry, StickKey};
use xlb::{
    balancer::{
        egress::Egress,
        program::{self, TableServer},
    },
    config::{Forward, Protocol, Stick, StickOn},
    datapath::{Datapath, LoadOptions},
};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

pub const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xaa];
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xcc];
pub const VIP4: [u8; 4] = [10, 0, 0, 10];
pub const VIP6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];
pub const M: u32 = 65537;
/// Services of the fixture (ids 0..SERVICES), four backends each (ids 4s..4s+3).
pub const SERVICES: u32 = 6;
/// The second UDP port of both VIPs (services 4 and 5): a VIP address with two services.
pub const UDP_PORT_2: u16 = 5353;

pub fn be_mac(id: u32) -> [u8; 6] {
    [0x02, 0, 0, 0, 1, id as u8]
}

pub fn client4(n: u8) -> [u8; 4] {
    [10, 77, 1, n]
}

pub fn client6(n: u8) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[0] = 0xfd;
    a[1] = 0x77;
    a[15] = n;
    a
}

pub fn v4(a: [u8; 4]) -> [u8; 16] {
    let mut o = [0u8; 16];
    o[..4].copy_from_slice(&a);
    o
}

pub struct Lb {
    pub dp: Datapath,
    pub states: Vec<u8>,
}

pub struct Svc {
    /// `STICK_SRC`, `STICK_SRC_PORT` or `STICK_NONE`.
    pub stick: u8,
    pub v4_prefix: u8,
    pub v6_prefix: u8,
    pub expire_s: u64,
    pub redispatch: bool,
}

impl Default for Svc {
    fn default() -> Self {
        Svc {
            stick: STICK_SRC,
            v4_prefix: 32,
            v6_prefix: 128,
            expire_s: 1800,
            redispatch: true,
        }
    }
}

impl Lb {
    /// Service 0: VIP4:80/tcp, VIP4:53/udp (service 1), VIP6:80/tcp (service 2), VIP6:53/udp
    /// (service 3), VIP4:5353/udp (service 4), VIP6:5353/udp (service 5); each with four
    /// backends (ids 4s..4s+3), all up, and a stick table of its own of `capacity` entries
    /// (4096 with `new`).
    pub fn new(svc: Svc) -> Lb {
        Self::with_capacity(svc, 4096)
    }

    pub fn with_capacity(svc: Svc, capacity: u32) -> Lb {
        Self::with_stick_sizes(svc, [capacity; SERVICES as usize])
    }

    /// As `new`, with each service's stick table of its own size (index: service id).
    pub fn with_stick_sizes(svc: Svc, sizes: [u32; SERVICES as usize]) -> Lb {
        Self::of_object(svc, sizes, None)
    }

    /// As `with_stick_sizes`, loading `object` (`None`: the data path itself; benchmarks load
    /// `xlb::datapath::OBJECT_WITHOUT_PASSIVE` beside it).
    pub fn of_object(svc: Svc, sizes: [u32; SERVICES as usize], object: Option<&'static [u8]>) -> Lb {
        let mut dp = Datapath::load(&LoadOptions {
            object,
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("loading the XDP program needs root and BPF (run as root): {e}"));
        // What the agent does before attaching: only frames to this MAC are forwarded.
        dp.set_own_mac(LB_MAC).unwrap();
        let stick = Stick {
            on: match svc.stick {
                STICK_SRC => StickOn::Src,
                STICK_SRC_PORT => StickOn::SrcPort,
                STICK_NONE => StickOn::None,
                mode => panic!("no stick mode {mode}"),
            },
            size: 0, // not part of the service value: the tables are made below
            expire: Duration::from_secs(svc.expire_s),
            ipv4_prefix: svc.v4_prefix,
            ipv6_prefix: svc.v6_prefix,
        };
        let service = program::service(&stick, svc.redispatch);
        let (vip4, vip6) = (IpAddr::from(VIP4), IpAddr::from(VIP6));
        let vips = [
            (vip4, 80u16, Protocol::Tcp),
            (vip4, 53, Protocol::Udp),
            (vip6, 80, Protocol::Tcp),
            (vip6, 53, Protocol::Udp),
            (vip4, UDP_PORT_2, Protocol::Udp),
            (vip6, UDP_PORT_2, Protocol::Udp),
        ];
        let mut lb = Lb {
            dp,
            states: vec![BACKEND_UP; 4 * SERVICES as usize],
        };
        let mut vip_list = Vec::new();
        for (sid, (ip, port, protocol)) in vips.into_iter().enumerate() {
            let sid = sid as u32;
            vip_list.push((program::vip_key(SocketAddr::new(ip, port), protocol), sid));
            lb.dp.set_stick_table(sid, sizes[sid as usize]).unwrap();
            lb.dp.set_service(sid, service).unwrap();
            for b in 4 * sid..4 * sid + 4 {
                lb.push_backend(b);
            }
            lb.rebuild(sid);
        }
        lb.dp.install_vips(&vip_list).unwrap();
        dp = lb.dp;
        Lb {
            dp,
            states: lb.states,
        }
    }

    /// Write backend `id` (of service `id / 4`, out by `XDP_TX`) with its state in `states`.
    pub fn push_backend(&mut self, id: u32) {
        let value = program::backend(
            id / 4,
            self.states[id as usize],
            Some(be_mac(id)),
            &Egress::default(),
        );
        self.dp.set_backend(id, value).unwrap();
    }

    /// Make backend `id` a server at `address` reached by `forward` (what the agent writes for
    /// such a server: `MAP_ENCAP`, then the backend with its mode).
    pub fn set_forward(&mut self, id: u32, address: IpAddr, forward: Forward) {
        if let Some(e) = program::encap(address, &forward) {
            self.dp.set_encap(id, e).unwrap();
        }
        let value = lb_common::Backend {
            forward: program::forward_mode(&forward),
            ..program::backend(id / 4, self.states[id as usize], None, &Egress::default())
        };
        self.dp.set_backend(id, value).unwrap();
    }

    /// As `run`, received on interface `ingress` (of the caller's network namespace).
    pub fn run_on(&mut self, frame: &[u8], ingress: u32) -> (u32, Vec<u8>) {
        let r = self.dp.test_run_on("xlb", frame, 1, Some(ingress)).unwrap();
        (r.verdict, r.data)
    }

    /// Maglev over the service's backends that are up (what the agent does).
    pub fn rebuild(&mut self, sid: u32) {
        let table = self.maglev_table(sid);
        self.dp.install_table(sid, &table).unwrap();
    }

    /// The Maglev table `rebuild` installs for service `sid` (backend id per slot).
    pub fn maglev_table(&self, sid: u32) -> Vec<u32> {
        let names: Vec<String> = (0..4).map(|i| format!("app{}", i + 1)).collect();
        let servers: Vec<TableServer> = (0..4)
            .map(|i| TableServer {
                name: &names[i as usize],
                id: 4 * sid + i,
                state: self.states[(4 * sid + i) as usize],
                weight: 1,
            })
            .collect();
        program::maglev_table(&servers, M)
    }

    pub fn set_state(&mut self, id: u32, state: u8) {
        self.states[id as usize] = state;
        self.push_backend(id);
        self.rebuild(id / 4);
    }

    pub fn run(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        let r = self.dp.test_run("xlb", frame, 1).unwrap();
        (r.verdict, r.data)
    }

    pub fn entries(&self) -> Vec<(StickKey, StickEntry)> {
        self.dp.stick_entries().unwrap()
    }

    pub fn entry(&self, service: u16, addr: [u8; 16], family: u8, port: u16) -> Option<StickEntry> {
        self.dp
            .stick_get(&StickKey::new(addr, service, port, family))
            .unwrap()
    }

    /// A global counter, counted by the data path or derived by the agent.
    pub fn gstat(&self, counter: impl Into<lb_common::gstat::Global>) -> u64 {
        self.dp.global_stats().unwrap().get(counter)
    }

    /// Which backend a forwarded frame went to (by its destination MAC), asserting the rest of
    /// the rewrite: source MAC ours, everything after the MACs untouched.
    pub fn forwarded_to(&mut self, frame: &[u8]) -> u32 {
        let (verdict, out) = self.run(frame);
        assert_eq!(
            verdict,
            XDP_TX,
            "expected XDP_TX for {:02x?}",
            &frame[..frame.len().min(64)]
        );
        assert_eq!(out.len(), frame.len());
        assert_eq!(&out[6..12], &LB_MAC, "source MAC must be the LB's");
        assert_eq!(&out[12..], &frame[12..], "only the MACs may change");
        assert_eq!(
            &out[0..5],
            &[0x02, 0, 0, 0, 1],
            "destination MAC must be a backend's: {:02x?}",
            &out[..6]
        );
        out[5] as u32
    }

    pub fn passed_untouched(&mut self, frame: &[u8], what: &str) {
        let (verdict, out) = self.run(frame);
        assert_eq!(verdict, XDP_PASS, "{what}: expected XDP_PASS");
        assert_eq!(out, frame, "{what}: a passed frame must be untouched");
    }
}
