//! BIRD 2 daemons of a fleet: the example configs of `examples/` with their site values
//! rewritten ([`render`]), one `bird` per namespace with its own config, control socket, pid
//! file and log ([`Bird`]), and [`birdc`] to ask one of them.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{ChildGuard, HostId, Topology, netns};

/// `examples/bird-balancer.conf`, as shipped.
pub const BALANCER_CONF: &str = include_str!("../../../examples/bird-balancer.conf");
/// `examples/bird-router.conf`, as shipped.
pub const ROUTER_CONF: &str = include_str!("../../../examples/bird-router.conf");

/// `template` with the value of each `define NAME = ...;` line named in `defines` replaced,
/// and its `log syslog all;` line replaced by a log to `log_file`. Every name must be defined
/// in the template exactly once (a renamed constant fails here, not as a silent default).
pub fn render(template: &str, defines: &[(&str, String)], log_file: &Path) -> Result<String> {
    let mut seen = vec![0usize; defines.len()];
    let mut logs = 0;
    let mut out = String::with_capacity(template.len());
    for line in template.lines() {
        let name = line
            .strip_prefix("define ")
            .and_then(|rest| rest.split_once('='))
            .map(|(name, _)| name.trim());
        match name.and_then(|n| defines.iter().position(|(d, _)| *d == n)) {
            Some(i) => {
                seen[i] += 1;
                out.push_str(&format!("define {} = {};", defines[i].0, defines[i].1));
            }
            None if line.trim() == "log syslog all;" => {
                logs += 1;
                out.push_str(&format!("log \"{}\" all;", log_file.display()));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    for ((name, _), n) in defines.iter().zip(&seen) {
        if *n != 1 {
            bail!("the BIRD config template defines {name} {n} times (want exactly once)");
        }
    }
    if logs != 1 {
        bail!("the BIRD config template has {logs} `log syslog all;` lines (want exactly one)");
    }
    Ok(out)
}

/// Runs `birdc -s SOCKET CMD...` inside `ns` and returns what it printed (its first line is
/// BIRD's greeting). An error if birdc fails or BIRD answers with an error line (code 8xxx or
/// 9xxx).
pub fn birdc(ns: &str, socket: &Path, cmd: &str) -> Result<String> {
    let (mut c, _ns) = netns::command_in(ns, "birdc")?;
    c.arg("-s").arg(socket).args(cmd.split_whitespace());
    let out = c
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run birdc in {ns}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "birdc -s {} {cmd} in {ns}: {}: {}{}",
            socket.display(),
            out.status,
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    if let Some(err) = text.lines().find(|l| l.starts_with('8') || l.starts_with('9')) {
        bail!("birdc {cmd} in {ns}: BIRD answered {err}");
    }
    Ok(text)
}

/// One running `bird -f` inside a host's namespace. Dropping it stops the daemon (SIGTERM,
/// SIGKILL after 2 s).
pub struct Bird {
    ns: String,
    socket: PathBuf,
    log: PathBuf,
    process: ChildGuard,
}

impl Bird {
    /// Writes `config` to `DIR/NAME.conf` and starts `bird -f -c DIR/NAME.conf -s DIR/NAME.ctl
    /// -P DIR/NAME.pid` in host `id`'s namespace (stderr to `DIR/NAME.stderr`); returns once its
    /// control socket answers (within 10 s).
    pub fn start(topo: &Topology, id: HostId, dir: &Path, name: &str, config: &str) -> Result<Bird> {
        let conf = dir.join(format!("{name}.conf"));
        let socket = dir.join(format!("{name}.ctl"));
        let pid = dir.join(format!("{name}.pid"));
        let log = dir.join(format!("{name}.log"));
        let stderr_path = dir.join(format!("{name}.stderr"));
        std::fs::write(&conf, config).with_context(|| format!("write {}", conf.display()))?;
        let stderr =
            File::create(&stderr_path).with_context(|| format!("create {}", stderr_path.display()))?;
        let mut cmd = Command::new("bird");
        cmd.arg("-f")
            .arg("-c")
            .arg(&conf)
            .arg("-s")
            .arg(&socket)
            .arg("-P")
            .arg(&pid)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let proc = topo
            .spawn(id, cmd)
            .context("start bird (is Debian's bird2 installed? `cargo xtask setup` installs it)")?;
        let bird = Bird {
            ns: topo.host(id).ns.clone(),
            socket,
            log,
            process: proc,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = bird.process.try_wait() {
                bail!(
                    "bird in {} exited ({st}): {}",
                    bird.ns,
                    std::fs::read_to_string(&stderr_path).unwrap_or_default().trim()
                );
            }
            match bird.birdc("show status") {
                Ok(_) => return Ok(bird),
                Err(e) if Instant::now() >= deadline => {
                    return Err(e.context(format!("bird in {} did not answer in 10 s", bird.ns)));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The namespace the daemon runs in.
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// [`birdc`] on this daemon's control socket.
    pub fn birdc(&self, cmd: &str) -> Result<String> {
        birdc(&self.ns, &self.socket, cmd)
    }

    /// The daemon's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (up to `bound`) until every protocol named in `names` is up with its BGP session
    /// `Established`, as `show protocols` says; returns the last `show protocols`.
    pub fn wait_established(&self, names: &[String], bound: Duration) -> Result<String> {
        let deadline = Instant::now() + bound;
        loop {
            let text = self.birdc("show protocols")?;
            let up = |name: &String| {
                text.lines().any(|l| {
                    let mut cols = l.split_whitespace();
                    cols.next() == Some(name.as_str()) && l.contains("Established")
                })
            };
            if names.iter().all(up) {
                return Ok(text);
            }
            if Instant::now() >= deadline {
                bail!(
                    "BGP sessions {names:?} in {} not established within {bound:?}:\n{text}\nlog:\n{}",
                    self.ns,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_rewrites_defines_and_log() {
        let out = render(
            BALANCER_CONF,
            &[("ROUTER_ID", "10.77.0.3".into()), ("VIP_TABLE", "201".into())],
            Path::new("/tmp/x.log"),
        )
        .unwrap();
        assert!(out.contains("define ROUTER_ID = 10.77.0.3;\n"), "{out}");
        assert!(out.contains("define VIP_TABLE = 201;\n"));
        assert!(out.contains("log \"/tmp/x.log\" all;\n"));
        assert!(!out.contains("log syslog"));
        let missing = render(ROUTER_CONF, &[("NO_SUCH", "1".into())], Path::new("/x"));
        assert!(missing.unwrap_err().to_string().contains("NO_SUCH 0 times"));
    }
}
