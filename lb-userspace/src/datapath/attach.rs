//! The XDP links: attach the data path to its interface with a link pinned under `bpffs_dir`
//! (so it keeps forwarding when the agent exits), make the pinned link of an earlier run run
//! this program (atomic: no packet is missed), replace a link that no longer fits, and the pass
//! program test topologies need. Detaching is `pins::remove_pins`: `BPF_LINK_DETACH`, then unpinning.

use std::path::{Path, PathBuf};

use aya::programs::{
    XdpMode,
    links::{FdLink, PinnedLink},
    xdp::XdpLink,
};
use lb_common::{MAP_META, meta};

use crate::datapath::{Datapath, DatapathError, LoadOptions, Result, map_err, prog_err};

/// What attaching did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attached {
    /// A new link, in this mode.
    New(&'static str),
    /// The pinned link of an earlier run now runs this program (atomic replacement).
    Replaced,
}

impl Datapath {
    /// Attach the data path to `ifname`. With a pin directory, an XDP link pinned there by an
    /// earlier run is updated in place to run this program (atomic: no packet is missed);
    /// otherwise a new link is made (native mode first unless `generic`) and pinned, so the data
    /// path keeps forwarding when the agent exits.
    pub fn attach(&mut self, ifname: &str, generic: bool) -> Result<Attached> {
        let link_pin = self.pin_dir.as_ref().map(|d| d.join("link"));
        let mode = if generic {
            meta::MODE_GENERIC
        } else {
            meta::MODE_NATIVE
        };
        let ifindex = ifindex_of(ifname)?;
        let reuse = match link_pin.as_ref().filter(|p| p.exists()) {
            Some(pin) => self.pinned_link_fits(pin, ifname, ifindex, mode)?,
            None => false,
        };
        let attached = if reuse {
            let pin = link_pin.as_ref().expect("checked above");
            match self.replace_program_of_link(pin) {
                Err(DatapathError::Program { source, .. }) if is_severed(&source) => {
                    log::warn!(
                        "the pinned XDP link at {} is severed ({source}); attaching afresh to {ifname}",
                        pin.display()
                    );
                    remove_link_pin(pin)?;
                    self.attach_new(ifname, generic, link_pin.as_ref())?
                }
                other => other?,
            }
        } else {
            self.attach_new(ifname, generic, link_pin.as_ref())?
        };
        self.meta
            .set(meta::IFINDEX, ifindex as u64, 0)
            .map_err(map_err(MAP_META))?;
        self.meta.set(meta::MODE, mode, 0).map_err(map_err(MAP_META))?;
        Ok(attached)
    }

    /// Whether the link pinned at `pin` can run the new program: it must run on `ifindex`
    /// in the XDP mode the config asks. If not (its interface went away, the config names
    /// another interface or mode), its pin is removed — which detaches it — with one warning.
    fn pinned_link_fits(&self, pin: &Path, ifname: &str, ifindex: u32, mode: u64) -> Result<bool> {
        let on = crate::datapath::pins::link_ifindex(pin).map_err(|e| DatapathError::Link {
            path: pin.to_path_buf(),
            what: e.to_string(),
        })?;
        let recorded_mode = self.meta.get(&meta::MODE, 0).map_err(map_err(MAP_META))?;
        let word = |m| {
            if m == meta::MODE_GENERIC {
                "generic"
            } else {
                "native"
            }
        };
        let why = match on {
            None => Some("it is not an XDP link".to_string()),
            Some(0) => Some("it is severed: its interface went away".to_string()),
            Some(i) if i != ifindex => Some(format!(
                "it runs on interface index {i}, the config names {ifname} (index {ifindex})"
            )),
            Some(_) if recorded_mode != 0 && recorded_mode != mode => Some(format!(
                "it was made in {} XDP mode, the config asks {}",
                word(recorded_mode),
                word(mode)
            )),
            Some(_) => None,
        };
        let Some(why) = why else {
            return Ok(true);
        };
        log::warn!(
            "pinned XDP link {}: {why}; removing it and attaching afresh to {ifname} (maps kept)",
            pin.display()
        );
        remove_link_pin(pin)?;
        Ok(false)
    }

    /// Make the link pinned at `pin` run this program (atomic: no packet is missed).
    fn replace_program_of_link(&mut self, pin: &Path) -> Result<Attached> {
        let link_err = |what: String| DatapathError::Link {
            path: pin.to_path_buf(),
            what,
        };
        let prog = self.program(lb_common::PROG_XLB)?;
        let pinned = PinnedLink::from_pin(pin).map_err(|e| link_err(e.to_string()))?;
        let fd_link: FdLink = pinned.into();
        let xdp_link = XdpLink::try_from(fd_link).map_err(|e| link_err(e.to_string()))?;
        let id = prog.attach_to_link(xdp_link).map_err(prog_err("xlb"))?;
        // Own the link as a plain fd: dropping it closes the fd, the pin keeps it alive.
        let link = prog.take_link(id).map_err(prog_err("xlb"))?;
        let _fd: FdLink = link
            .try_into()
            .map_err(|e: aya::programs::links::LinkError| link_err(e.to_string()))?;
        Ok(Attached::Replaced)
    }

    /// A new link on `ifname` (native mode first unless `generic`), pinned at `link_pin`.
    fn attach_new(&mut self, ifname: &str, generic: bool, link_pin: Option<&PathBuf>) -> Result<Attached> {
        let prog = self.program(lb_common::PROG_XLB)?;
        let busy = |e: &aya::programs::ProgramError| matches!(e, aya::programs::ProgramError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::EBUSY));
        let refuse = |e| DatapathError::Busy {
            ifname: ifname.to_string(),
            source: Box::new(e),
        };
        let (id, mode) = if generic {
            let id = prog
                .attach(ifname, XdpMode::Skb)
                .map_err(|e| if busy(&e) { refuse(e) } else { prog_err("xlb")(e) })?;
            (id, "generic")
        } else {
            match prog.attach(ifname, XdpMode::Driver) {
                Ok(id) => (id, "native"),
                Err(e) if busy(&e) => return Err(refuse(e)),
                Err(e) => {
                    log::warn!(
                        "native XDP refused on {ifname} ({e}); falling back to generic XDP (slower). \
                         Set xdp_mode = \"generic\" to make this explicit"
                    );
                    let id = prog
                        .attach(ifname, XdpMode::Skb)
                        .map_err(|e| if busy(&e) { refuse(e) } else { prog_err("xlb")(e) })?;
                    (id, "generic")
                }
            }
        };
        let link = prog.take_link(id).map_err(prog_err("xlb"))?;
        if let Some(pin) = link_pin {
            let pin = pin.clone();
            let fd: FdLink =
                link.try_into()
                    .map_err(|e: aya::programs::links::LinkError| DatapathError::Link {
                        path: pin.clone(),
                        what: e.to_string(),
                    })?;
            fd.pin(&pin).map_err(|e| DatapathError::Link {
                path: pin.clone(),
                what: e.to_string(),
            })?;
        } else {
            // No pins: keep the link for the life of this process (tests).
            std::mem::forget(link);
        }
        Ok(Attached::New(mode))
    }
}

/// Attach the `xlb_pass` program (XDP_PASS) to `ifname` in native mode, for the life of the
/// interface. For test topologies: veth delivers XDP_TX frames to its peer only when the peer
/// runs an XDP program too. Call it from a thread inside the interface's namespace.
pub fn attach_pass_program(ifname: &str) -> Result<()> {
    let mut dp = Datapath::load(&LoadOptions::default())?;
    let prog = dp.program(lb_common::PROG_PASS)?;
    let id = prog
        .attach(ifname, XdpMode::Driver)
        .map_err(prog_err(lb_common::PROG_PASS))?;
    let link = prog.take_link(id).map_err(prog_err(lb_common::PROG_PASS))?;
    // The link lives until the interface goes away.
    std::mem::forget(link);
    Ok(())
}

/// The index of interface `ifname` in this network namespace.
fn ifindex_of(ifname: &str) -> Result<u32> {
    Ok(crate::net::link::lookup(ifname)?.index)
}

/// `bpf_link_update` on a link whose interface is gone: ENOLINK.
fn is_severed(e: &aya::programs::ProgramError) -> bool {
    matches!(e, aya::programs::ProgramError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::ENOLINK))
}

fn remove_link_pin(pin: &Path) -> Result<()> {
    std::fs::remove_file(pin).map_err(|source| DatapathError::Io {
        what: "cannot remove the pinned XDP link",
        path: pin.to_path_buf(),
        source,
    })
}
