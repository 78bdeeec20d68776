//! The xlb agents of a fleet ([`super::Fleet::with_agents`]): one `xlb run` per balancer,
//! attached (XDP) to its `eth0`, with its own config, admin socket and bpffs dir; the two VIP
//! services (v4 and v6, HTTP on 80, sticking on the source) over the four backends, health
//! checked; `[announce] table = 200` so its BIRD exports what it announces; the two other
//! balancers as peers (full mesh, one key file). Dropping an [`Agent`] kills it and removes its
//! pins, lock file and announce state.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::Mutex,
};

use anyhow::{Context as _, Result};

use crate::{
    ChildGuard, Topology,
    agent::{self, AgentPaths, PinsGuard},
    lbenv,
};

/// What the fleet's agents are configured with.
#[derive(Clone, Debug)]
pub struct AgentOpts {
    /// `[announce] warmup`: how long a (re)started agent waits for its peers' teach at most.
    pub warmup: String,
    /// Health checks: interval, rise and fall.
    pub inter: String,
    pub rise: u32,
    pub fall: u32,
    /// The stick tables' expiry.
    pub expire: String,
}

impl Default for AgentOpts {
    fn default() -> Self {
        AgentOpts {
            warmup: "5s".into(),
            inter: "200ms".into(),
            rise: 2,
            fall: 2,
            expire: "30m".into(),
        }
    }
}

/// One balancer's agent: its files and, while it runs, its process.
pub struct Agent {
    /// The balancer's namespace (the agent enters it itself: `xlb run --netns`).
    pub ns: String,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub bpffs: PathBuf,
    /// The agent's stderr (every run of it, appended).
    pub log: PathBuf,
    process: Mutex<Option<ChildGuard>>,
    _files: PinsGuard,
}

impl Agent {
    /// Writes balancer `name`'s config into `dir` (the agent is not started): `me` its address,
    /// `peers` the other balancers (name, address), `key_file` the fleet's peer key.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn configure(
        topo: &Topology,
        stem: &str,
        dir: &Path,
        name: &str,
        ns: &str,
        me: Ipv4Addr,
        peers: &[(String, Ipv4Addr)],
        key_file: &Path,
        backends: &[crate::HostId],
        opts: &AgentOpts,
    ) -> Result<Agent> {
        let socket = dir.join(format!("{name}.sock"));
        let bpffs = PathBuf::from("/sys/fs/bpf").join(format!("{stem}-{name}"));
        let files = PinsGuard(bpffs.clone());
        let lb_opts = lbenv::Opts {
            inter: opts.inter.clone(),
            rise: opts.rise,
            fall: opts.fall,
            expire: opts.expire.clone(),
            ..Default::default()
        };
        let text = agent::config_text(
            &AgentPaths {
                socket: &socket,
                bpffs: &bpffs,
            },
            &lb_opts,
            &agent::SERVICES[..2],
            |_| {
                backends
                    .iter()
                    .enumerate()
                    .map(|(i, b)| (i, topo.host(*b)))
                    .collect()
            },
        );
        let mut text = agent::with_peers(&text, me, key_file, peers);
        text.push_str(&format!(
            "\n[announce]\ntable = {}\nwarmup = \"{}\"\n",
            super::VIP_TABLE,
            opts.warmup
        ));
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, text).with_context(|| format!("write {}", config.display()))?;
        Ok(Agent {
            ns: ns.to_string(),
            log: dir.join(format!("{name}-agent.log")),
            config,
            socket,
            bpffs,
            process: Mutex::new(None),
            _files: files,
        })
    }

    /// Starts the agent (kill -9 first if it runs) and waits until it answers.
    pub fn start(&self, topo: &Topology) -> Result<()> {
        self.kill();
        let child = agent::spawn_agent(topo, &self.config, &self.ns, &self.socket, &self.log)?;
        *self.process.lock().expect("agent lock") = Some(child);
        Ok(())
    }

    /// kill -9: routes, pins and the data path stay as they are.
    pub fn kill(&self) {
        if let Some(p) = self.process.lock().expect("agent lock").take() {
            p.kill();
        }
    }

    /// The agent's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.lock().expect("agent lock").as_ref().map(|p| p.pid())
    }

    /// Whether the agent's process runs.
    pub fn is_running(&self) -> bool {
        self.process
            .lock()
            .expect("agent lock")
            .as_ref()
            .is_some_and(|p| p.try_wait().is_none())
    }

    /// One runtime-API command.
    pub fn api(&self, cmd: &str) -> Result<String> {
        lbenv::api_at(&self.socket, cmd).with_context(|| format!("`{cmd}` on {}", self.socket.display()))
    }

    /// Everything the agent logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("==== agent log {} ====\n{}", self.log.display(), self.log_text());
        }
    }
}
