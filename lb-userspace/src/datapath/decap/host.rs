//! `xlb decap attach|detach|show` on a host. One directory per interface under a base
//! directory on bpffs (`base_dir`): `link` (the pinned XDP or tcx link: the program stays
//! attached when `xlb` exits) and `maps/` (the VIPs, the GUE port, the counters). Detaching is
//! removing that directory; attaching again needs a detach first, so settings never change
//! under a running program half-way.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use aya::{
    maps::{Array, HashMap, Map, MapData, PerCpuArray},
    programs::{
        LinkOrder, TcAttachType, XdpMode,
        links::FdLink,
        tc::{SchedClassifierLink, TcAttachOptions},
    },
};
use lb_common::{DecapConfig, DecapVip, FAMILY_V4, MAP_DECAP_CONFIG, MAP_DECAP_STATS, MAP_DECAP_VIPS};

use crate::datapath::{
    decap::{Decap, DecapCounters, DecapError, Hook, Result, map_err, prog_err, read_counters},
    sys::NetHook,
};

/// Where `xlb decap` pins, per network namespace: `/sys/fs/bpf/xlb-decap/host` in the host's,
/// `/sys/fs/bpf/xlb-decap/netns-NAME` in namespace NAME (interface names repeat across
/// namespaces). Below it, a directory per interface.
pub fn base_dir(netns: Option<&str>) -> PathBuf {
    let root = Path::new("/sys/fs/bpf/xlb-decap");
    match netns {
        Some(ns) => root.join(format!("netns-{ns}")),
        None => root.join("host"),
    }
}

/// What `xlb decap attach` is asked.
#[derive(Clone, Debug)]
pub struct AttachRequest<'a> {
    pub ifname: &'a str,
    pub vips: &'a [IpAddr],
    /// The GUE UDP port (as the balancer's config says); `None`: IPIP only.
    pub gue_port: Option<u16>,
    pub hook: Hook,
    /// The base directory (`base_dir`); the interface's own directory is made below it.
    pub base: &'a Path,
}

/// A decapsulator attached to an interface, read back from its pins.
#[derive(Clone, Debug)]
pub struct Attachment {
    pub ifname: String,
    /// Its interface's index; 0 when the interface went away (the link is severed).
    pub ifindex: u32,
    pub hook: Hook,
    pub vips: Vec<IpAddr>,
    pub gue_port: Option<u16>,
    pub counters: DecapCounters,
}

/// Attach the decapsulator to `req.ifname` at `req.hook` (XDP: native, generic if the driver
/// refuses; tc: a tcx link at ingress, first on the hook) and pin it. Refuses an unknown
/// interface, no VIPs, a VIP that is not a unicast address, an interface already decapsulating,
/// and, at XDP, one that runs another XDP program. Returns how it is attached, in words.
pub fn attach(req: &AttachRequest) -> Result<&'static str> {
    check_vips(req.vips)?;
    let ifindex = crate::net::link::lookup(req.ifname)?.index;
    let dir = req.base.join(req.ifname);
    crate::datapath::pins::ensure_bpffs().map_err(|source| DecapError::Io {
        what: "cannot mount bpffs at",
        path: "/sys/fs/bpf".into(),
        source,
    })?;
    let link_pin = dir.join("link");
    if link_pin.exists() {
        match crate::datapath::pins::net_link(&link_pin) {
            Ok(Some((_, on))) if on == ifindex => {
                return Err(DecapError::AlreadyAttached {
                    ifname: req.ifname.to_string(),
                    dir,
                });
            }
            found => log::warn!(
                "the pinned link under {} no longer runs on {} ({found:?}: its interface went away); replacing it",
                dir.display(),
                req.ifname
            ),
        }
    }
    if dir.exists() {
        // Pins of an interface that went away, or of an attach cut short.
        remove_dir(&dir)?;
    }
    let attached = attach_pinned(req, &dir);
    if attached.is_err() && dir.exists() {
        // Leave nothing half-made; the error that stopped us is the one to report.
        let _ = remove_dir(&dir);
        remove_empty_bases(req.base);
    }
    for vip in req.vips {
        warn_unless_local(*vip);
    }
    attached
}

fn attach_pinned(req: &AttachRequest, dir: &Path) -> Result<&'static str> {
    let mut decap = Decap::load(Some(dir))?;
    decap.add_vips(req.vips)?;
    decap.set_gue_port(req.gue_port)?;
    let (fd, how) = match req.hook {
        Hook::Xdp => attach_xdp(&mut decap, req.ifname)?,
        Hook::Tc => attach_tc(&mut decap, req.ifname)?,
    };
    let pin = dir.join("link");
    fd.pin(&pin).map_err(|e| DecapError::Link {
        path: pin.clone(),
        what: e.to_string(),
    })?;
    Ok(how)
}

fn attach_xdp(decap: &mut Decap, ifname: &str) -> Result<(FdLink, &'static str)> {
    let prog = decap.xdp()?;
    let busy = |e: aya::programs::ProgramError| match &e {
        aya::programs::ProgramError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::EBUSY) => {
            DecapError::Busy {
                ifname: ifname.to_string(),
                source: Box::new(e),
            }
        }
        _ => prog_err(e),
    };
    let (id, how) = match prog.attach(ifname, XdpMode::Driver) {
        Ok(id) => (id, "native XDP"),
        Err(e) => {
            let e = busy(e);
            if matches!(e, DecapError::Busy { .. }) {
                return Err(e);
            }
            log::warn!("native XDP refused on {ifname} ({e}); attaching in generic mode (slower)");
            (prog.attach(ifname, XdpMode::Skb).map_err(busy)?, "generic XDP")
        }
    };
    let link = prog.take_link(id).map_err(prog_err)?;
    let fd = FdLink::try_from(link).map_err(|e| DecapError::Link {
        path: ifname.into(),
        what: format!("not an XDP link: {e}"),
    })?;
    Ok((fd, how))
}

/// A tcx link, first on the interface's ingress hook: the programs after it see the inner
/// packet. (No fallback to a netlink filter before Linux 6.6: it cannot be pinned as a link.)
fn attach_tc(decap: &mut Decap, ifname: &str) -> Result<(FdLink, &'static str)> {
    let prog = decap.tc()?;
    let tcx = |source| DecapError::Tcx {
        ifname: ifname.to_string(),
        source: Box::new(source),
    };
    let id = prog
        .attach_with_options(
            ifname,
            TcAttachType::Ingress,
            TcAttachOptions::TcxOrder(LinkOrder::first()),
        )
        .map_err(tcx)?;
    let link: SchedClassifierLink = prog.take_link(id).map_err(prog_err)?;
    let fd = FdLink::try_from(link).map_err(|e| DecapError::Link {
        path: ifname.into(),
        what: format!("not a tcx link: {e}"),
    })?;
    Ok((fd, "tc ingress"))
}

/// Detach the decapsulator from `ifname`: remove its pins (the link with them).
pub fn detach(ifname: &str, base: &Path) -> Result<()> {
    let dir = base.join(ifname);
    if !dir.exists() {
        return Err(DecapError::NotAttached {
            ifname: ifname.to_string(),
            dir,
        });
    }
    remove_dir(&dir)?;
    remove_empty_bases(base);
    Ok(())
}

/// The namespace's directory goes with its last interface, and `/sys/fs/bpf/xlb-decap` with
/// its last namespace (each stays while it holds anything: `remove_dir` takes only an empty
/// directory).
fn remove_empty_bases(base: &Path) {
    let _ = std::fs::remove_dir(base);
    if let Some(root) = base.parent() {
        let _ = std::fs::remove_dir(root);
    }
}

/// The interfaces with a decapsulator pinned under `base`, by name.
pub fn attached(base: &Path) -> Result<Vec<String>> {
    let io = |source| DecapError::Io {
        what: "cannot list",
        path: base.to_path_buf(),
        source,
    };
    if !base.exists() {
        return Ok(Vec::new());
    }
    let mut names = Vec::new();
    for entry in std::fs::read_dir(base).map_err(io)? {
        let entry = entry.map_err(io)?;
        if entry.path().join("link").exists() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// The decapsulator on `ifname`, read from its pins.
pub fn status(ifname: &str, base: &Path) -> Result<Attachment> {
    let dir = base.join(ifname);
    let link = dir.join("link");
    if !link.exists() {
        return Err(DecapError::NotAttached {
            ifname: ifname.to_string(),
            dir,
        });
    }
    let (hook, ifindex) = match crate::datapath::pins::net_link(&link).map_err(|source| DecapError::Io {
        what: "cannot read the pinned link",
        path: link.clone(),
        source,
    })? {
        Some((NetHook::Xdp, i)) => (Hook::Xdp, i),
        Some((NetHook::Tcx, i)) => (Hook::Tc, i),
        None => {
            return Err(DecapError::Link {
                path: link,
                what: "neither an XDP nor a tcx link".into(),
            });
        }
    };
    let maps = dir.join("maps");
    let vips: HashMap<MapData, DecapVip, u8> = pinned(&maps, MAP_DECAP_VIPS)?;
    let config: Array<MapData, DecapConfig> = pinned(&maps, MAP_DECAP_CONFIG)?;
    let stats: PerCpuArray<MapData, u64> = pinned(&maps, MAP_DECAP_STATS)?;
    let mut addrs = Vec::new();
    for key in vips.keys() {
        let key = key.map_err(map_err(MAP_DECAP_VIPS))?;
        addrs.push(vip_of(&key));
    }
    addrs.sort();
    let port = u16::from_be(config.get(&0, 0).map_err(map_err(MAP_DECAP_CONFIG))?.gue_port);
    Ok(Attachment {
        ifname: ifname.to_string(),
        ifindex,
        hook,
        vips: addrs,
        gue_port: (port != 0).then_some(port),
        counters: read_counters(&stats)?,
    })
}

/// The map pinned at `maps/name`, typed.
fn pinned<M>(maps: &Path, name: &'static str) -> Result<M>
where
    M: TryFrom<Map, Error = aya::maps::MapError>,
{
    let data = MapData::from_pin(maps.join(name)).map_err(map_err(name))?;
    let map = Map::from_map_data(data).map_err(map_err(name))?;
    M::try_from(map).map_err(map_err(name))
}

fn vip_of(key: &DecapVip) -> IpAddr {
    if key.family == FAMILY_V4 {
        IpAddr::from([key.addr[0], key.addr[1], key.addr[2], key.addr[3]])
    } else {
        IpAddr::from(key.addr)
    }
}

/// Every VIP must be a unicast address a client can reach, given in its own family.
fn check_vips(vips: &[IpAddr]) -> Result<()> {
    if vips.is_empty() {
        return Err(DecapError::NoVips);
    }
    for vip in vips {
        let why = match vip {
            v if v.is_unspecified() || v.is_multicast() || v.is_loopback() => {
                "it is not a unicast address a client can send to"
            }
            IpAddr::V4(v) if v.is_broadcast() => "it is the broadcast address",
            IpAddr::V6(v) if v.to_ipv4_mapped().is_some() => {
                "it is an IPv4-mapped IPv6 address: give the IPv4 address itself"
            }
            _ => continue,
        };
        return Err(DecapError::BadVip { vip: *vip, why });
    }
    Ok(())
}

/// The stack delivers a decapsulated packet only to an address of this host: say so when a VIP
/// is not on `lo` (it may be elsewhere on purpose, so this only warns).
fn warn_unless_local(vip: IpAddr) {
    match crate::net::link::addresses("lo") {
        Ok(addrs) if addrs.contains(&vip) => {}
        Ok(_) => log::warn!(
            "VIP {vip} is not on lo: the stack drops decapsulated packets to an address it does not \
             own. Add it (ip addr add {vip}/{} dev lo) unless it is on another interface",
            if vip.is_ipv4() { 32 } else { 128 }
        ),
        Err(e) => log::warn!("cannot read the addresses of lo to check VIP {vip}: {e}"),
    }
}

fn remove_dir(dir: &Path) -> Result<()> {
    crate::datapath::pins::remove_pins(dir).map_err(|e| DecapError::RemovePins {
        dir: dir.to_path_buf(),
        source: Box::new(e),
    })
}
