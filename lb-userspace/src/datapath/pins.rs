//! The data path's pins under `bpffs_dir`: which format they are, whether they fit this
//! program, how the state of an older format is carried into a new one, and removing them
//! (`xlb detach`); and bpffs itself, mounted when a fresh machine has none.
//!
//! Layout: `<bpffs_dir>/maps/<MAP>` for every map and `<bpffs_dir>/link` for the XDP link.
//! `MAP_META` records the format (`PIN_FORMAT`); pins without it are format 1 (xlb up to
//! c887b59). A format this binary does not know, or pins that differ from their format's
//! spec, are refused with every difference listed — never adopted and misread.
//!
//! Migration from format 1: the old maps are moved (pinned again) to `maps_format1` (bpffs
//! allows no dot in a name; the running program keeps using the maps themselves), fresh maps
//! are pinned under `maps/`, and what
//! cannot be rebuilt from the config is copied over: the id of every name (`MAP_NAMES`), the
//! servers' runtime states and MACs (`MAP_BACKENDS`) and every stick entry. Once the new
//! program runs, `maps_format1` is removed. An agent stopped half-way finds `maps_format1`
//! again at its next start and redoes the migration from it.
//!
//! Migration from formats 2 to 4: format 5 differs from each only in `MAP_GLOBAL_STATS` (the
//! data path's own counters: 17 entries; format 2 held 21 with the agent's derived ones mixed
//! in, format 3 held 12, without `insert_ring_full`, format 4 held 13, without the `encap_*`
//! ones) and in the encapsulation maps, which they lack (`ENCAP_MAPS`: the load pins fresh,
//! empty ones, and fills the stage; their backends are all `FORWARD_L2`, the 0 of
//! `Backend::forward`, so their program never reaches the stage). Every other map is adopted
//! as it is —
//! names, servers, both Maglev slots and every service's stick table with its entries — and the
//! old `MAP_GLOBAL_STATS` is unpinned (the running program keeps counting into it until the new
//! one replaces it), so the load pins a fresh one: the global counters start again from 0. An
//! agent stopped half-way finds the old format's marker with the old map, none, or the new one,
//! and goes on from there. (`MAP_INSERTS`, new in format 4, is never pinned.)

use std::path::{Path, PathBuf};

use aya::maps::{Array, HashMap, Map, MapData, MapInfo};
use aya_obj::generated::{BPF_F_RDONLY_PROG, bpf_map_type};
use lb_common::{
    ALL_MAPS, Backend, MAP_BACKENDS, MAP_ENCAP, MAP_ENCAP_HANDOFF, MAP_ENCAP_STAGE, MAP_GLOBAL_STATS,
    MAP_META, MAP_NAMES, MAP_STICK_SINGLE, MAX_BACKENDS, MAX_SERVICES, NameSlot, PIN_FORMAT, StickEntry,
    StickKey, meta,
};

use crate::datapath::error::DatapathError;

/// Where the maps of an interrupted or pending format-1 migration are kept.
pub const FORMAT1_DIR: &str = "maps_format1";

// BPF map types, as `MapInfo::map_type` and the object report them.
const ARRAY: u32 = bpf_map_type::BPF_MAP_TYPE_ARRAY as u32;
const PERCPU_ARRAY: u32 = bpf_map_type::BPF_MAP_TYPE_PERCPU_ARRAY as u32;
const LRU_HASH: u32 = bpf_map_type::BPF_MAP_TYPE_LRU_HASH as u32;
const DEVMAP: u32 = bpf_map_type::BPF_MAP_TYPE_DEVMAP as u32;

/// What a map is, as the kernel reports it for a pin and as the object defines it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapSpec {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
}

impl MapSpec {
    fn of_pin(name: &'static str, path: &Path) -> Result<MapSpec, DatapathError> {
        let info = MapInfo::from_pin(path).map_err(|source| DatapathError::Map { name, source })?;
        Ok(MapSpec {
            map_type: info.map_type().map(|t| t as u32).unwrap_or(u32::MAX),
            key_size: info.key_size(),
            value_size: info.value_size(),
            max_entries: info.max_entries(),
            flags: info.map_flags(),
        })
    }

    /// How `self` (pinned) differs from `want`, one phrase per field. The stick table's size
    /// is the operator's choice, not part of the format.
    fn differences(&self, name: &str, want: &MapSpec) -> Vec<String> {
        let mut out = Vec::new();
        let mut cmp = |what: &str, have: u32, want: u32| {
            if have != want {
                out.push(format!("{name}: {what} {have} changed to {want}"));
            }
        };
        cmp("map type", self.map_type, want.map_type);
        cmp("key size", self.key_size, want.key_size);
        cmp("value size", self.value_size, want.value_size);
        if name != MAP_STICK_SINGLE {
            cmp("max_entries", self.max_entries, want.max_entries);
        }
        // The kernel makes every devmap read-only for programs by itself.
        let added = if self.map_type == DEVMAP {
            BPF_F_RDONLY_PROG
        } else {
            0
        };
        cmp("flags", self.flags & !added, want.flags);
        out
    }
}

/// The spec of every map this program defines, from the object itself.
pub fn object_specs(object: &[u8]) -> Result<Vec<(&'static str, MapSpec)>, DatapathError> {
    let obj = aya_obj::Object::parse(object).map_err(|e| DatapathError::Format {
        what: format!("cannot parse the eBPF object: {e}"),
    })?;
    ALL_MAPS
        .iter()
        .map(|name| {
            let m = obj.maps.get(*name).ok_or_else(|| DatapathError::Format {
                what: format!("the eBPF object defines no map {name}"),
            })?;
            Ok((
                *name,
                MapSpec {
                    map_type: m.map_type(),
                    key_size: m.key_size(),
                    value_size: m.value_size(),
                    max_entries: m.max_entries(),
                    flags: m.map_flags(),
                },
            ))
        })
        .collect()
}

/// The maps of format 1 (xlb up to c887b59), as that program defined them.
fn format1_specs() -> Vec<(&'static str, MapSpec)> {
    let s = |map_type, key_size, value_size, max_entries| MapSpec {
        map_type,
        key_size,
        value_size,
        max_entries,
        flags: 0,
    };
    vec![
        ("XLB_VIPS", s(ARRAY, 4, 32, 2048)),
        ("XLB_VIP_ACTIVE", s(ARRAY, 4, 4, 1)),
        ("XLB_SERVICES", s(ARRAY, 4, 40, 32)),
        ("XLB_ACTIVE", s(ARRAY, 4, 4, 32)),
        ("XLB_MAGLEV", s(ARRAY, 4, 4, 32 * 2 * 65537)),
        ("XLB_BACKENDS", s(ARRAY, 4, 20, 4096)),
        ("XLB_STICK", s(LRU_HASH, 24, 16, 0)),
        ("XLB_TX_PORTS", s(DEVMAP, 4, 8, 64)),
        ("XLB_GSTATS", s(PERCPU_ARRAY, 4, 8, 17)),
        ("XLB_SSTATS", s(PERCPU_ARRAY, 4, 72, 32)),
        ("XLB_BSTATS", s(PERCPU_ARRAY, 4, 16, 4096)),
        ("XLB_NAMES", s(ARRAY, 4, 64, 32 + 4096)),
        ("XLB_LIMITS", s(ARRAY, 4, 8, 1)),
        ("XLB_NEW_ENTRIES", s(PERCPU_ARRAY, 4, 16, 1)),
    ]
}

/// The maps formats 2 to 4 lack: a migration from them pins fresh ones.
const ENCAP_MAPS: [&str; 3] = [MAP_ENCAP, MAP_ENCAP_STAGE, MAP_ENCAP_HANDOFF];

/// The older formats that differ from this one only in `MAP_GLOBAL_STATS` (and the missing
/// `ENCAP_MAPS`), and its entries there: format 2 (xlb up to 011ecc8: counted and derived
/// counters, 21 of them), format 3 (up to d968612: 12 counted ones) and format 4 (up to
/// 8c5e4e7: 13).
const OLDER_GLOBAL_STATS: [(u64, u32); 3] = [(2, 21), (3, 12), (4, 13)];

/// `MAP_GLOBAL_STATS` as format `format` (one of [`OLDER_GLOBAL_STATS`]) defined it.
fn older_global_stats(format: u64) -> Option<MapSpec> {
    let (_, max_entries) = OLDER_GLOBAL_STATS.iter().find(|(f, _)| *f == format)?;
    Some(MapSpec {
        map_type: PERCPU_ARRAY,
        key_size: 4,
        value_size: 8,
        max_entries: *max_entries,
        flags: 0,
    })
}

/// What is pinned under a `maps` directory.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// Nothing: a first start.
    Nothing,
    /// Pins of this format, checked against the object.
    Current,
    /// Pins of format 1, checked against that format's spec: migrate them.
    Format1(PathBuf),
    /// Pins of format 2, 3 or 4 (the number), checked against that format's spec: adopt them,
    /// all but the global counters (`migrate_global_stats`).
    OlderCounters(u64),
}

/// Look at `<dir>/maps` (and a pending `<dir>/maps_format1`) and say what is there, or refuse
/// with every difference between the pins and what their format says they are.
pub fn inspect(dir: &Path, object: &[u8]) -> Result<Found, DatapathError> {
    let maps = dir.join("maps");
    let old = dir.join(FORMAT1_DIR);
    if old.exists() {
        // The new maps record the link's interface once the new program runs: a migration that
        // got that far only missed removing the old pins. Anything less is redone.
        let finished = read_meta(&maps, meta::FORMAT)?.is_some_and(|f| f >= 2)
            && read_meta(&maps, meta::IFINDEX)?.is_some_and(|i| i != 0);
        if !finished {
            check(&old, &format1_specs(), 1)?;
            return Ok(Found::Format1(old));
        }
        remove_old(&old).map_err(|source| DatapathError::Io {
            what: "cannot remove the migrated pins",
            path: old.clone(),
            source,
        })?;
    }
    let present: Vec<String> = match std::fs::read_dir(&maps) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    if present.is_empty() {
        return Ok(Found::Nothing);
    }
    let format = match read_meta(&maps, meta::FORMAT)? {
        Some(f) => f,
        None if format1_specs()
            .iter()
            .all(|(n, _)| present.iter().any(|p| p == n)) =>
        {
            check(&maps, &format1_specs(), 1)?;
            return Ok(Found::Format1(maps));
        }
        None => {
            return Err(DatapathError::Format {
                what: format!(
                    "{} holds some of xlb's maps ({}) but no {MAP_META}: not a set this xlb knows. \
                     Remove them with `xlb detach -c FILE` (this empties the stick table)",
                    maps.display(),
                    present.join(", ")
                ),
            });
        }
    };
    if let Some(old) = older_global_stats(format) {
        check(&maps, &older_specs(&maps, object, old)?, format)?;
        return Ok(Found::OlderCounters(format));
    }
    if format != PIN_FORMAT {
        let who = if format > PIN_FORMAT {
            "a newer"
        } else {
            "an older"
        };
        return Err(DatapathError::Format {
            what: format!(
                "the pins under {} are format {format}, written by {who} xlb; this xlb reads format \
                 {PIN_FORMAT} (and migrates formats 1 to 4). Run the xlb that wrote them",
                maps.display()
            ),
        });
    }
    check(&maps, &object_specs(object)?, PIN_FORMAT)?;
    Ok(Found::Current)
}

/// The maps of format 2, 3 or 4 as pinned under `maps`: this object's, but `MAP_GLOBAL_STATS`
/// is the old format's (`old`), or this object's, or absent (a migration stopped after it
/// unpinned or replaced it); each of `ENCAP_MAPS` is absent, or this object's (pinned by a
/// migration that stopped before it recorded the new format).
fn older_specs(
    maps: &Path,
    object: &[u8],
    old: MapSpec,
) -> Result<Vec<(&'static str, MapSpec)>, DatapathError> {
    let mut specs = object_specs(object)?;
    let path = maps.join(MAP_GLOBAL_STATS);
    let pinned = match path.exists() {
        true => Some(MapSpec::of_pin(MAP_GLOBAL_STATS, &path)?),
        false => None,
    };
    specs.retain_mut(|(name, spec)| {
        if ENCAP_MAPS.contains(name) {
            return maps.join(*name).exists();
        }
        if *name != MAP_GLOBAL_STATS {
            return true;
        }
        match pinned {
            None => false,
            Some(p) if p == *spec => false,
            Some(_) => {
                *spec = old;
                true
            }
        }
    });
    Ok(specs)
}

/// Turn format-2, 3 or 4 pins under `maps` (checked by `inspect`) into this format: unpin
/// the old `MAP_GLOBAL_STATS`, if it is still there, so the load pins a fresh one. The caller
/// records the new format once the maps are loaded.
pub fn migrate_global_stats(maps: &Path, format: u64) -> Result<(), DatapathError> {
    let path = maps.join(MAP_GLOBAL_STATS);
    if !path.exists() || Some(MapSpec::of_pin(MAP_GLOBAL_STATS, &path)?) != older_global_stats(format) {
        return Ok(());
    }
    std::fs::remove_file(&path).map_err(|source| DatapathError::Io {
        what: "cannot unpin the older format's global counters",
        path,
        source,
    })
}

/// Compare every pinned map under `maps` with `specs`; one error lists every difference.
fn check(maps: &Path, specs: &[(&'static str, MapSpec)], format: u64) -> Result<(), DatapathError> {
    let mut diffs = Vec::new();
    for (name, want) in specs {
        let path = maps.join(name);
        if !path.exists() {
            diffs.push(format!("{name}: missing"));
            continue;
        }
        diffs.extend(MapSpec::of_pin(name, &path)?.differences(name, want));
    }
    if diffs.is_empty() {
        return Ok(());
    }
    Err(DatapathError::PinMismatch {
        path: maps.to_path_buf(),
        format,
        what: diffs.join("; "),
    })
}

/// `MAP_META[slot]` of the pins under `maps`, or None when there is no `MAP_META`.
fn read_meta(maps: &Path, slot: u32) -> Result<Option<u64>, DatapathError> {
    let path = maps.join(MAP_META);
    if !path.exists() {
        return Ok(None);
    }
    let err = |source| DatapathError::Map {
        name: MAP_META,
        source,
    };
    let values: Array<MapData, u64> = Map::Array(MapData::from_pin(&path).map_err(err)?)
        .try_into()
        .map_err(err)?;
    Ok(Some(values.get(&slot, 0).map_err(err)?))
}

/// What a migration carries from the old pins into the new maps.
#[derive(Debug, Default)]
pub struct Carried {
    pub names: Vec<(u32, NameSlot)>,
    pub backends: Vec<(u32, Backend)>,
    pub stick: Vec<(StickKey, StickEntry)>,
}

/// Read what survives a migration from format-1 pins under `old` (checked by `inspect`).
/// Format 1's `Backend` has the same size and fields, with zero where `service` now is.
pub fn read_format1(old: &Path) -> Result<Carried, DatapathError> {
    let open = |name: &'static str| {
        MapData::from_pin(old.join(name)).map_err(|source| DatapathError::Map { name, source })
    };
    let err = |name: &'static str| move |source| DatapathError::Map { name, source };
    let names: Array<MapData, NameSlot> = Map::Array(open(MAP_NAMES)?).try_into().map_err(err(MAP_NAMES))?;
    let backends: Array<MapData, Backend> = Map::Array(open(MAP_BACKENDS)?)
        .try_into()
        .map_err(err(MAP_BACKENDS))?;
    let stick: HashMap<MapData, StickKey, StickEntry> = Map::LruHashMap(open(MAP_STICK_SINGLE)?)
        .try_into()
        .map_err(err(MAP_STICK_SINGLE))?;
    let mut out = Carried::default();
    for i in 0..MAX_SERVICES + MAX_BACKENDS {
        let n = names.get(&i, 0).map_err(err(MAP_NAMES))?;
        if n.name[0] != 0 {
            out.names.push((i, n));
        }
    }
    for i in 0..MAX_BACKENDS {
        let b = backends.get(&i, 0).map_err(err(MAP_BACKENDS))?;
        if b.state != 0 {
            out.backends.push((i, Backend { service: 0, ..b }));
        }
    }
    out.stick = crate::datapath::batch::read_all(&stick, 4096).map_err(err(MAP_STICK_SINGLE))?;
    Ok(out)
}

/// Move every map pinned under `from` to `to` (bpffs cannot rename directories): pinned again
/// at the new path, then unpinned at the old one.
pub fn move_pins(from: &Path, to: &Path) -> Result<(), DatapathError> {
    let io = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| DatapathError::Io { what, path, source }
    };
    std::fs::create_dir_all(to).map_err(io("cannot create", to))?;
    let pins = std::fs::read_dir(from)
        .and_then(|rd| {
            rd.map(|e| e.map(|e| e.path()))
                .collect::<std::io::Result<Vec<_>>>()
        })
        .map_err(io("cannot read", from))?;
    for path in pins {
        let name = path.file_name().expect("a directory entry has a name");
        let map = MapData::from_pin(&path).map_err(|source| DatapathError::Map {
            name: "pinned map",
            source,
        })?;
        map.pin(to.join(name)).map_err(|e| DatapathError::Io {
            what: "cannot pin again at",
            path: to.join(name),
            source: std::io::Error::other(e.to_string()),
        })?;
        std::fs::remove_file(&path).map_err(io("cannot unpin", &path))?;
    }
    std::fs::remove_dir(from).map_err(io("cannot remove", from))
}

/// Remove the pins of a finished migration.
pub fn remove_old(old: &Path) -> std::io::Result<()> {
    // Listed first, removed after: bpffs may skip entries removed during its readdir.
    let pins = std::fs::read_dir(old)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<Vec<_>>>()?;
    for pin in pins {
        std::fs::remove_file(pin)?;
    }
    std::fs::remove_dir(old)
}

/// The interface the XDP link pinned at `pin` runs on: `Some(0)` when it is severed (its
/// interface went away), `None` when the pin is not an XDP link. aya 0.14 does not expose the
/// link info's XDP part.
pub fn link_ifindex(pin: &Path) -> std::io::Result<Option<u32>> {
    Ok(match net_link(pin)? {
        Some((crate::datapath::sys::NetHook::Xdp, ifindex)) => Some(ifindex),
        _ => None,
    })
}

/// The hook (XDP or tcx) and interface of the link pinned at `pin` (`sys::net_link`).
pub fn net_link(pin: &Path) -> std::io::Result<Option<(crate::datapath::sys::NetHook, u32)>> {
    use std::os::{fd::AsFd as _, unix::ffi::OsStrExt as _};
    let path = std::ffi::CString::new(pin.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("pin path holds a NUL byte"))?;
    let link = crate::datapath::sys::obj_get(&path)?;
    crate::datapath::sys::net_link(link.as_fd())
}

/// Remove the pinned link (which detaches the program) and every pinned map under `dir`.
pub fn remove_pins(dir: &Path) -> Result<(), DatapathError> {
    let io = |what: &'static str, path: PathBuf| move |source| DatapathError::Io { what, path, source };
    let link = dir.join("link");
    if link.exists() {
        detach_link(&link);
        std::fs::remove_file(&link).map_err(io("cannot remove pinned link", link.clone()))?;
    }
    for sub in ["maps", crate::datapath::pins::FORMAT1_DIR] {
        let maps = dir.join(sub);
        if maps.exists() {
            remove_pinned_maps(&maps)?;
        }
    }
    if dir.exists() {
        std::fs::remove_dir(dir).map_err(io("cannot remove", dir.to_path_buf()))?;
    }
    Ok(())
}

/// Detach the link pinned at `pin` from its hook before its pin goes: without it, the program
/// stays attached until the kernel frees the pin's inode, a moment after `xlb detach` has said
/// it is detached. A link that cannot be opened or detached (its interface gone, an older
/// kernel) is only unpinned, as before, with a warning.
fn detach_link(pin: &Path) {
    let detached = std::ffi::CString::new(pin.as_os_str().as_encoded_bytes())
        .map_err(std::io::Error::other)
        .and_then(|path| crate::datapath::sys::obj_get(&path))
        .and_then(|fd| crate::datapath::sys::link_detach(std::os::fd::AsFd::as_fd(&fd)));
    if let Err(e) = detached {
        log::warn!(
            "cannot detach the link pinned at {} ({e}); removing its pin, which detaches it once the kernel frees it",
            pin.display()
        );
    }
}

/// Remove every pin under `maps` (xlb's maps directory) and the directory.
pub(crate) fn remove_pinned_maps(maps: &Path) -> Result<(), DatapathError> {
    crate::datapath::pins::remove_old(maps).map_err(|source| DatapathError::Io {
        what: "cannot remove pinned maps under",
        path: maps.to_path_buf(),
        source,
    })
}

/// Mount bpffs at /sys/fs/bpf when it is not mounted (fresh machines).
pub fn ensure_bpffs() -> std::io::Result<()> {
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf") && l.contains("bpf"))
    {
        return Ok(());
    }
    std::fs::create_dir_all("/sys/fs/bpf")?;
    let src = c"bpffs";
    let target = c"/sys/fs/bpf";
    let fstype = c"bpf";
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
