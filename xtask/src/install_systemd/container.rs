//! A real systemd (the host's `/lib/systemd/systemd`) booted as PID 1 of private namespaces, as
//! systemd-nspawn boots a container, but over the host's own file system: new PID, mount, UTS,
//! IPC and cgroup namespaces inside a network namespace of the test's topology, with a
//! delegated cgroup2 subtree of the test's own. With `container=` in its environment (systemd's
//! container interface) it leaves alone what only a host's init sets up (the clock, kernel
//! modules, the core pattern, the root mount's propagation); its own UTS namespace takes the
//! hostname it sets.
//!
//! Nothing of the host changes: inside, `/` is remounted read-only (a per-mount flag of the
//! container's copy of the mount), `/run`, `/tmp` and `/var/tmp` are fresh tmpfs, and `/usr`
//! and `/etc` are overlays with an install root ([`crate::dist::install`]'s `DIR`) above the
//! host's directories (`/etc` writable into the container's `/run`). systemd loads units only
//! from the root's `units/` and `usr/lib/systemd/system/` (`SYSTEMD_UNIT_PATH`), so it starts
//! nothing of the host's; `--unit=xlbt.target` names the test's empty target. Dropping
//! [`Systemd`] kills every process of the subtree (`cgroup.kill`: the container's PID 1 too,
//! which ends its namespaces and mounts) and removes the subtree, also on panic.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use harness::{ChildGuard, HostId, Topology};

/// The container's PID 1 until it execs systemd: its private mounts, then systemd with only the
/// environment it is given.
const INIT: &str = r#"set -eu
# systemd's sockets and state, the unit's RuntimeDirectory, the journal.
mount -t tmpfs -o mode=0755 xlbt-run /run
mkdir -p /run/xlbt/root /run/xlbt/etc.upper /run/xlbt/etc.work /run/systemd/journald.conf.d
printf '[Journal]\nStorage=volatile\nReadKMsg=no\nForwardToWall=no\nForwardToConsole=no\n' \
    > /run/systemd/journald.conf.d/xlbt.conf
# The install root, still reachable once /tmp is covered.
mount --bind "$XLBT_ROOT" /run/xlbt/root
# The root's usr/ (bin/xlb, the unit, man pages) over the host's, read-only.
mount -t overlay -o lowerdir=/run/xlbt/root/usr:/usr xlbt-usr /usr
# The root's etc/ (xlb/xlb.toml) over the host's; what is written goes to /run.
mount -t overlay -o lowerdir=/run/xlbt/root/etc:/etc,upperdir=/run/xlbt/etc.upper,workdir=/run/xlbt/etc.work xlbt-etc /etc
# PrivateTmp= makes its directories here.
mount -t tmpfs xlbt-tmp /tmp
mount -t tmpfs xlbt-tmp /var/tmp
# cgroup2 as the cgroup namespace shows it: the delegated subtree is its root.
mount -t cgroup2 cgroup2 /sys/fs/cgroup
# What systemd would write to the console goes to a file.
touch /run/xlbt/console
mount --bind /run/xlbt/console /dev/console
# The container's copy of the root mount, read-only (the host's stays as it is).
mount -o remount,bind,ro /
exec env -i container=xlbt SYSTEMD_UNIT_PATH=/run/xlbt/root/units:/run/xlbt/root/usr/lib/systemd/system \
    /lib/systemd/systemd --unit=xlbt.target --show-status=no
"#;

/// Units of the test, written under the install root's `units/`: the default target and the
/// two targets every service with default dependencies needs, empty (so the host's
/// `sysinit.target.wants/` are never read), and the journal, so `systemctl status` and
/// `journalctl` show what the agent logged.
pub const TEST_UNITS: [(&str, &str); 3] = [
    (
        "xlbt.target",
        "[Unit]\nDescription=xlb systemd test\nDefaultDependencies=no\nWants=systemd-journald.socket systemd-journald.service\n",
    ),
    (
        "sysinit.target",
        "[Unit]\nDescription=sysinit (empty: xlb systemd test)\nDefaultDependencies=no\n",
    ),
    (
        "basic.target",
        "[Unit]\nDescription=basic (empty: xlb systemd test)\nDefaultDependencies=no\n",
    ),
];

/// The host's journald units, linked into `units/`.
const JOURNALD: [&str; 3] = [
    "systemd-journald.service",
    "systemd-journald.socket",
    "systemd-journald-dev-log.socket",
];

/// A systemd running as PID 1 of its own namespaces.
pub struct Systemd {
    /// The host's pid of the container's PID 1.
    pid: u32,
    /// The delegated cgroup2 subtree (on the host's cgroup2 mount).
    cgroup: PathBuf,
    /// `unshare`, the parent of PID 1 (killed with it).
    unshare: Option<ChildGuard>,
    log: PathBuf,
}

impl Systemd {
    /// Boots systemd inside `host`'s network namespace over the install root `root` (which gets
    /// the test's units), in the cgroup `name` below this process's own; waits until it has
    /// reached its target. Panics with what failed.
    pub fn boot(topo: &Topology, host: HostId, root: &Path, name: &str) -> Systemd {
        let units = root.join("units");
        std::fs::create_dir_all(&units).unwrap();
        for (file, text) in TEST_UNITS {
            std::fs::write(units.join(file), text).unwrap();
        }
        for unit in JOURNALD {
            let link = units.join(unit);
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(Path::new("/lib/systemd/system").join(unit), link).unwrap();
        }
        let cgroup = own_cgroup2().join(name);
        std::fs::create_dir(&cgroup).unwrap_or_else(|e| panic!("mkdir {}: {e}", cgroup.display()));
        let log = root.with_extension("systemd.log");
        let mut sd = Systemd {
            pid: 0,
            cgroup,
            unshare: None,
            log: log.clone(),
        };
        // Into the subtree first, so that the cgroup namespace's root is the subtree.
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "echo $$ > \"$XLBT_CGROUP/cgroup.procs\" && exec unshare --pid --fork --kill-child \
             --mount --propagation private --mount-proc --uts --ipc --cgroup sh -c \"$XLBT_INIT\"",
        ])
        .env("XLBT_CGROUP", &sd.cgroup)
        .env("XLBT_ROOT", root)
        .env("XLBT_INIT", INIT)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(log.with_extension("stderr")).unwrap());
        let unshare = topo
            .spawn(host, cmd)
            .unwrap_or_else(|e| panic!("start unshare: {e:#}"));
        let t0 = Instant::now();
        sd.pid = loop {
            if let Some(st) = unshare.try_wait() {
                panic!("the container exited ({st}) while booting:\n{}", sd.said());
            }
            let children = format!("/proc/{0}/task/{0}/children", unshare.pid());
            let child = std::fs::read_to_string(children).unwrap_or_default();
            if let Some(pid) = child.split_whitespace().next().and_then(|p| p.parse().ok()) {
                break pid;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "no PID 1 after 10 s:\n{}",
                sd.said()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        sd.unshare = Some(unshare);
        // systemd's private socket appears once it manages; then wait for its target.
        while !sd.path("/run/systemd/private").exists() || sd.comm() != "systemd" {
            if let Some(st) = sd.unshare.as_ref().and_then(|u| u.try_wait()) {
                panic!("the container exited ({st}) while booting:\n{}", sd.said());
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "systemd not up after 20 s:\n{}",
                sd.said()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let up = sd.run(&["systemctl", "is-system-running", "--wait"]);
        let state = String::from_utf8_lossy(&up.stdout).trim().to_string();
        assert_eq!(state, "running", "systemd booted {state:?}:\n{}", sd.said());
        sd
    }

    /// The host's pid of the container's PID 1.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The host's path of `path` inside the container.
    pub fn path(&self, path: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.pid)).join(path.trim_start_matches('/'))
    }

    /// `args` run inside the container's mount and PID namespaces (so `systemctl` finds its
    /// manager and PIDs are the container's); bounded by `timeout 30`.
    pub fn run(&self, args: &[&str]) -> Output {
        let out = Command::new("timeout")
            .args([
                "30",
                "nsenter",
                "--target",
                &self.pid.to_string(),
                "--mount",
                "--pid",
                "--",
            ])
            .args(args)
            .env("SYSTEMD_COLORS", "0")
            .env("SYSTEMD_PAGER", "")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("nsenter {args:?}: {e}"));
        if out.status.code() == Some(124) {
            panic!("{args:?} did not finish within 30 s:\n{}", self.said());
        }
        out
    }

    /// `systemctl ARGS`, which must succeed; its stdout.
    pub fn systemctl(&self, args: &[&str]) -> String {
        let mut all = vec!["systemctl", "--no-pager"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "systemctl {args:?} failed ({}): {}{text}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.journal()
        );
        text
    }

    /// `systemctl show UNIT -p NAME`'s value.
    pub fn property(&self, unit: &str, name: &str) -> String {
        self.systemctl(&["show", unit, "-p", name, "--value"])
            .trim()
            .to_string()
    }

    /// The whole journal of the container.
    pub fn journal(&self) -> String {
        let out = self.run(&["journalctl", "--no-pager", "-o", "short-monotonic"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The host's pids of the processes of `unit` (a service of `system.slice`).
    pub fn unit_pids(&self, unit: &str) -> Vec<u32> {
        let procs = self.cgroup.join("system.slice").join(unit).join("cgroup.procs");
        std::fs::read_to_string(procs)
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// PID 1's command name (`sh` until it execs systemd).
    fn comm(&self) -> String {
        std::fs::read_to_string(format!("/proc/{}/comm", self.pid))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// What the container's init and systemd said, for a failure's message.
    fn said(&self) -> String {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        format!(
            "init's stdout:\n{}\ninit's stderr:\n{}",
            read(&self.log),
            read(&self.log.with_extension("stderr"))
        )
    }
}

impl Drop for Systemd {
    fn drop(&mut self) {
        // Every process of the subtree, PID 1 first among equals: its namespaces and mounts
        // end with it. Then the subtree's directories, deepest first.
        let _ = std::fs::write(self.cgroup.join("cgroup.kill"), "1");
        let t0 = Instant::now();
        while populated(&self.cgroup) && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Some(u) = self.unshare.take() {
            u.kill();
        }
        remove_tree(&self.cgroup);
    }
}

/// Whether `cgroup` (or a descendant) still holds a process.
fn populated(cgroup: &Path) -> bool {
    std::fs::read_to_string(cgroup.join("cgroup.events"))
        .map(|e| e.lines().any(|l| l == "populated 1"))
        .unwrap_or(false)
}

/// Removes the (empty) cgroup `dir` and its descendants, deepest first.
fn remove_tree(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    if let Err(e) = std::fs::remove_dir(dir) {
        eprintln!("systemd test: cannot remove cgroup {}: {e}", dir.display());
    }
}

/// This process's cgroup on the host's cgroup2 mount (`/sys/fs/cgroup` on a unified host,
/// `/sys/fs/cgroup/unified` on a hybrid one).
fn own_cgroup2() -> PathBuf {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS ... - FSTYPE SOURCE SUPER
    let mount = mountinfo
        .lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            (right.split_whitespace().next()? == "cgroup2").then(|| left.split_whitespace().nth(4))?
        })
        .expect(
            "no cgroup2 mount on this host: systemd needs one (mount -t cgroup2 none /sys/fs/cgroup/unified)",
        );
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let path = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("no cgroup2 line in /proc/self/cgroup");
    Path::new(mount).join(path.trim_start_matches('/'))
}
