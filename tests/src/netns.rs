//! Entering network namespaces: on a dedicated thread ([`run_in`], [`spawn_in`], [`NsWorker`]),
//! in a child process before `exec` ([`command_in`]), or through `ip netns exec` ([`exec`]).
//!
//! Only the network namespace is entered (`setns(CLONE_NEWNET)`); the mount namespace is
//! the host's, so bpffs pins made in a namespace outlive the thread or process that made them.
//! A thread that entered a namespace never runs anything else afterwards: it ends with its job.

use std::{
    fs::File,
    io::Write,
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::PathBuf,
    process::{Command, Stdio},
    sync::mpsc,
    thread::{self, JoinHandle},
};

use anyhow::{Context, Result, bail};

/// Where `ip netns add NAME` bind-mounts a namespace.
pub fn ns_path(ns: &str) -> PathBuf {
    PathBuf::from("/var/run/netns").join(ns)
}

fn open_ns(ns: &str) -> Result<File> {
    File::open(ns_path(ns)).with_context(|| format!("open network namespace {ns}"))
}

/// Moves the CALLING THREAD into network namespace `ns`. Only call it on a thread made for
/// that purpose (never on a test thread or a pooled thread): it cannot be undone.
pub fn enter(ns: &str) -> Result<()> {
    let f = open_ns(ns)?;
    // SAFETY: plain syscall on a valid fd.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("setns into {ns}"));
    }
    Ok(())
}

/// Runs `f` on a fresh scoped thread inside `ns` and returns its result; a panic in `f` is
/// resumed on the caller's thread. The thread ends with `f`.
pub fn run_in<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> Result<T> {
    thread::scope(|s| {
        let h = s.spawn(move || -> Result<T> {
            enter(ns)?;
            Ok(f())
        });
        match h.join() {
            Ok(r) => r,
            Err(p) => std::panic::resume_unwind(p),
        }
    })
}

/// Spawns a named thread that enters `ns`, then runs `f`. Returns once the thread is inside
/// the namespace (or failed to get there).
pub fn spawn_in<T: Send + 'static>(
    ns: &str,
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>> {
    let (tx, rx) = mpsc::sync_channel::<Result<()>>(1);
    let ns_owned = ns.to_string();
    let h = thread::Builder::new()
        .name(name.chars().take(15).collect())
        .spawn(move || {
            let r = enter(&ns_owned);
            let ok = r.is_ok();
            let _ = tx.send(r);
            if !ok {
                // The caller gets the error; this thread must not run `f` outside the ns.
                panic!("could not enter network namespace {ns_owned}");
            }
            f()
        })
        .context("spawn thread")?;
    match rx.recv() {
        Ok(Ok(())) => Ok(h),
        Ok(Err(e)) => {
            let _ = h.join();
            Err(e)
        }
        Err(_) => bail!("thread for namespace {ns} died before entering it"),
    }
}

type Job = Box<dyn FnOnce() + Send + 'static>;

/// A thread parked inside a network namespace that runs closures sent to it, one at a time.
/// Cheaper than a thread per call. Dropping it ends and joins the thread.
pub struct NsWorker {
    ns: String,
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl NsWorker {
    /// Starts the worker thread and waits until it is inside `ns`.
    pub fn new(ns: &str) -> Result<NsWorker> {
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = spawn_in(ns, &format!("nsw-{ns}"), move || {
            for job in rx {
                job();
            }
        })?;
        Ok(NsWorker {
            ns: ns.to_string(),
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// The namespace this worker lives in.
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// Runs `f` inside the namespace and returns its result. A panic in `f` is resumed on the
    /// caller's thread (the worker survives it).
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (rtx, rrx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            let _ = rtx.send(r);
        });
        self.tx
            .as_ref()
            .expect("worker running")
            .send(job)
            .unwrap_or_else(|_| panic!("netns worker for {} is gone", self.ns));
        match rrx.recv() {
            Ok(Ok(v)) => v,
            Ok(Err(p)) => std::panic::resume_unwind(p),
            Err(_) => panic!("netns worker for {} died", self.ns),
        }
    }
}

impl Drop for NsWorker {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A `Command` for `program` that enters network namespace `ns` in the child between `fork`
/// and `exec` (network namespace only: the host's mounts stay visible). The returned `File`
/// (the namespace handle) must be kept alive until the command is spawned.
pub fn command_in(ns: &str, program: &str) -> Result<(Command, File)> {
    let mut cmd = Command::new(program);
    let f = prepare(&mut cmd, ns)?;
    Ok((cmd, f))
}

/// Makes `cmd` enter `ns` in the child before `exec` (see [`command_in`]). Keep the returned
/// handle until `cmd` has been spawned.
pub fn prepare(cmd: &mut Command, ns: &str) -> Result<File> {
    let f = open_ns(ns)?;
    let fd = f.as_raw_fd();
    // SAFETY: only async-signal-safe syscalls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(f)
}

/// Runs `args[0] args[1..]` inside `ns` through `ip netns exec` and returns its stdout; a
/// non-zero exit is an error that carries stderr.
pub fn exec(ns: &str, args: &[&str]) -> Result<String> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).args(args);
    output(cmd, &format!("in {ns}: {}", args.join(" ")))
}

/// Runs `ip -n NS -batch -` with `lines` (one `ip` command each, without the leading `ip`).
pub fn ip_batch(ns: &str, lines: &[String]) -> Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let mut child = Command::new("ip")
        .args(["-n", ns, "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawn ip -batch")?;
    let mut stdin = child.stdin.take().expect("piped");
    let text = lines.join("\n") + "\n";
    let w = stdin.write_all(text.as_bytes());
    drop(stdin);
    let out = child.wait_with_output().context("wait for ip -batch")?;
    w.context("write ip -batch input")?;
    if !out.status.success() {
        let first = lines.first().map(String::as_str).unwrap_or("");
        bail!(
            "ip -n {ns} -batch failed ({}), first command `{first}` of {}: {}",
            out.status,
            lines.len(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs `ip ARGS` (in the root namespace unless ARGS has `-n NS`) and returns stdout.
pub fn ip(args: &[&str]) -> Result<String> {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    output(cmd, &format!("ip {}", args.join(" ")))
}

fn output(mut cmd: Command, what: &str) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("spawn {what}"))?;
    if !out.status.success() {
        bail!(
            "{what}: {} : {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn sysctl_path(key: &str) -> PathBuf {
    if key.contains('/') {
        PathBuf::from("/proc/sys").join(key.trim_start_matches('/'))
    } else {
        PathBuf::from("/proc/sys").join(key.replace('.', "/"))
    }
}

/// Sets sysctls inside `ns`: each `(key, value)` is written to `/proc/sys/<key>` (dots become
/// slashes; a key that contains `/` is taken as a path, for interface names with dots) from a
/// thread that entered `ns` (the `net.*` sysctls belong to the writer's network namespace).
pub fn sysctl(ns: &str, settings: &[(&str, &str)]) -> Result<()> {
    let owned: Vec<(String, String)> = settings
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    run_in(ns, move || -> Result<()> {
        for (k, v) in &owned {
            let path = sysctl_path(k);
            std::fs::write(&path, v).with_context(|| format!("sysctl {k}={v} in {ns}"))?;
        }
        Ok(())
    })?
}

/// Reads a sysctl inside `ns` (trimmed).
pub fn sysctl_get(ns: &str, key: &str) -> Result<String> {
    let path = sysctl_path(key);
    run_in(ns, move || std::fs::read_to_string(&path))?
        .map(|s| s.trim().to_string())
        .with_context(|| format!("read sysctl {key} in {ns}"))
}
