//! `xlb run`: load, attach, then run small tokio tasks until SIGTERM:
//! health transitions -> table rebuilds; the runtime API socket; the expiry sweeper; SIGHUP
//! reloads. On exit the XDP link and maps stay pinned: the data path keeps forwarding and the
//! next agent adopts the stick table.

use std::{
    fs::File,
    io::Write as _,
    os::{fd::AsRawFd as _, unix::fs::PermissionsExt as _},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::UnixListener,
    sync::{broadcast, mpsc, watch},
};

use crate::{
    api,
    config::{self, Config},
    datapath::{self, Datapath, LoadOptions},
    health::{HealthChecker, Transition},
    peers,
    services::{Balancer, CheckChanges},
    stick_table,
};

type Shared = Arc<Mutex<Balancer>>;

/// Held while the agent runs: a second agent for the same pins refuses to start.
pub struct InstanceLock {
    _file: File,
    pub path: PathBuf,
}

/// Lock file of the agent that owns the pins under `bpffs_dir`.
pub fn lock_path(bpffs_dir: &Path) -> PathBuf {
    let flat: String = bpffs_dir
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    PathBuf::from("/run/xlb").join(format!("agent{flat}.lock"))
}

pub fn lock_instance(bpffs_dir: &Path) -> Result<InstanceLock> {
    let path = lock_path(bpffs_dir);
    std::fs::create_dir_all(path.parent().expect("has a parent")).context("cannot create /run/xlb")?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open lock file {}", path.display()))?;
    // SAFETY: valid fd.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let pid = std::fs::read_to_string(&path).unwrap_or_default();
        bail!(
            "another xlb agent (pid {}) already runs the data path pinned at {}; stop it first, \
             or give this one another `bpffs_dir`",
            pid.trim(),
            bpffs_dir.display()
        );
    }
    file.set_len(0).ok();
    let _ = write!(file, "{}", std::process::id());
    Ok(InstanceLock { _file: file, path })
}

/// Everything before the runtime starts: validate, lock, load (adopting pins), program the
/// maps, attach. Then run until a terminating signal.
pub fn run(config_path: &Path) -> Result<()> {
    let cfg = config::load(config_path)?;
    config::check_interfaces(&cfg)?;
    datapath::ensure_bpffs().context("bpffs is not mounted at /sys/fs/bpf and mounting it failed")?;
    let _lock = lock_instance(&cfg.global.bpffs_dir)?;
    let dp = Datapath::load(&LoadOptions {
        pin_dir: Some(cfg.global.bpffs_dir.clone()),
    })?;
    let adopted = dp.adopted();
    let mut dp = dp;
    dp.set_new_entry_cap(cfg.global.max_new_entries_per_cpu)?;
    let (mut b, checks) = Balancer::new(cfg.clone(), dp)?;
    let generic = cfg.global.xdp_mode == config::XdpMode::Generic;
    let attached = b.dp.attach(&cfg.global.interface, generic)?;
    let used = b.dp.stick_entries().map(|v| v.len()).unwrap_or(0);
    match attached {
        datapath::Attached::Replaced => log::info!(
            "xlb: data path on {} replaced atomically; adopted pinned maps ({} stick entries kept)",
            cfg.global.interface,
            used
        ),
        datapath::Attached::New(mode) => log::info!(
            "xlb: attached to {} ({mode} XDP); maps pinned under {}{}",
            cfg.global.interface,
            cfg.global.bpffs_dir.display(),
            if adopted {
                format!(", {used} stick entries adopted")
            } else {
                String::new()
            }
        ),
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    rt.block_on(serve(b, checks, config_path.to_path_buf(), cfg))
}

async fn serve(b: Balancer, checks: CheckChanges, config_path: PathBuf, cfg: Config) -> Result<()> {
    let shared: Shared = Arc::new(Mutex::new(b));
    let (shutdown_tx, shutdown) = watch::channel(false);
    let (tx, mut transitions) = mpsc::unbounded_channel::<Transition>();
    let mut hc = HealthChecker::new(tx);
    apply_checks(&mut hc, checks);
    shared.lock().expect("balancer lock").checks = Some(hc.view());

    let socket = cfg.global.admin_socket.clone();
    let listener = bind_socket(&socket)?;
    let api_task = tokio::spawn(api_loop(listener, shared.clone(), shutdown.clone()));
    let stick_pin = cfg
        .global
        .bpffs_dir
        .join("maps")
        .join(lb_common::MAP_STICK_TABLES);
    let mut peer_tasks = Vec::new();
    let replication = if cfg.global.peers.is_empty() {
        None
    } else {
        let list = peers::Peers::new(&cfg.global.peers);
        shared.lock().expect("balancer lock").peers = Some(list.clone());
        let (batches, _) = broadcast::channel::<peers::Batch>(256);
        for i in 0..list.list.len() {
            peer_tasks.push(tokio::spawn(peers::sender(
                shared.clone(),
                stick_pin.clone(),
                list.clone(),
                i,
                batches.clone(),
                shutdown.clone(),
            )));
        }
        if let Some(addr) = cfg.global.peer_listen {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen for peers on {addr} (peer_listen)"))?;
            log::info!(
                "xlb: accepting stick-table updates from {} peers on {addr}",
                list.list.len()
            );
            peer_tasks.push(tokio::spawn(peers::listen(
                l,
                shared.clone(),
                list.clone(),
                shutdown.clone(),
            )));
        }
        Some((list, batches))
    };
    let sweep_task = tokio::spawn(sweeper(
        shared.clone(),
        stick_pin,
        cfg.global.sweep_interval,
        replication,
        shutdown.clone(),
    ));
    let metrics_task = cfg
        .global
        .metrics
        .map(|addr| tokio::spawn(crate::metrics::serve(addr, shared.clone(), shutdown.clone())));
    log::info!("xlb: runtime API on {}", socket.display());

    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut current = cfg;
    loop {
        tokio::select! {
            Some(t) = transitions.recv() => {
                let mut b = shared.lock().expect("balancer lock");
                if let Err(e) = b.on_health(&t.key.0, &t.key.1, t.to, &t.reason) {
                    log::error!("{}/{}: applying health change failed: {e}", t.key.0, t.key.1);
                }
            }
            _ = hup.recv() => {
                match reload(&config_path, &current, &shared) {
                    Ok((cfg, checks)) => {
                        apply_checks(&mut hc, checks);
                        current = cfg;
                        log::info!("xlb: configuration reloaded from {}", config_path.display());
                    }
                    Err(e) => log::error!("xlb: reload refused, running configuration kept: {e:#}"),
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    log::info!(
        "xlb: stopping; the data path keeps forwarding (pins stay under {})",
        current.global.bpffs_dir.display()
    );
    let _ = shutdown_tx.send(true);
    hc.shutdown().await;
    let _ = api_task.await;
    let _ = sweep_task.await;
    for t in peer_tasks {
        let _ = t.await;
    }
    if let Some(t) = metrics_task {
        let _ = t.await;
    }
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

fn apply_checks(hc: &mut HealthChecker, c: CheckChanges) {
    for key in c.remove {
        hc.remove(&key);
    }
    for (key, spec, initial) in c.set {
        hc.set(key, spec, initial);
    }
}

fn reload(path: &Path, current: &Config, shared: &Shared) -> Result<(Config, CheckChanges)> {
    let new = config::load(path)?;
    if new.global != current.global {
        bail!(
            "[global] changed ({}); restart the agent to apply it",
            describe_global_change(&current.global, &new.global)
        );
    }
    config::check_interfaces(&new)?;
    let mut b = shared.lock().expect("balancer lock");
    let checks = b.apply(new.clone(), false)?;
    Ok((new, checks))
}

fn describe_global_change(a: &config::Global, b: &config::Global) -> String {
    let changed = [
        ("interface", a.interface != b.interface),
        ("admin_socket", a.admin_socket != b.admin_socket),
        ("bpffs_dir", a.bpffs_dir != b.bpffs_dir),
        ("xdp_mode", a.xdp_mode != b.xdp_mode),
        ("metrics", a.metrics != b.metrics),
        ("sweep_interval", a.sweep_interval != b.sweep_interval),
        (
            "max_new_entries_per_cpu",
            a.max_new_entries_per_cpu != b.max_new_entries_per_cpu,
        ),
        ("peer_listen", a.peer_listen != b.peer_listen),
        ("[[peer]]", a.peers != b.peers),
    ];
    let what: Vec<&str> = changed
        .iter()
        .filter(|(_, c)| *c)
        .map(|(name, _)| *name)
        .collect();
    what.join(", ")
}

fn bind_socket(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    if path.exists() {
        // Only a stale socket can be here: the instance lock proves no agent owns it.
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove stale socket {}", path.display()))?;
    }
    let l = UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

async fn api_loop(l: UnixListener, shared: Shared, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            r = l.accept() => match r {
                Ok((stream, _)) => {
                    tokio::spawn(api_conn(stream, shared.clone()));
                }
                Err(e) => {
                    log::warn!("runtime API: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = shutdown.changed() => return,
        }
    }
}

/// One connection: one line in (bounded in size and time), one answer out, close.
async fn api_conn(stream: tokio::net::UnixStream, shared: Shared) {
    let (r, mut w) = stream.into_split();
    let mut line = Vec::new();
    let mut reader = BufReader::new(r).take(api::MAX_LINE as u64 + 1);
    let read = tokio::time::timeout(Duration::from_secs(10), reader.read_until(b'\n', &mut line)).await;
    let answer = match read {
        Err(_) => "Timeout: no command received within 10 s.\n".to_string(),
        Ok(Err(e)) => format!("Read error: {e}\n"),
        Ok(Ok(_)) if line.len() > api::MAX_LINE => {
            format!("Command too long: at most {} bytes.\n", api::MAX_LINE)
        }
        Ok(Ok(_)) => match std::str::from_utf8(&line) {
            Err(_) => {
                "Unknown command: input is not text. Type 'help' for the list of commands.\n".to_string()
            }
            Ok(text) => {
                let text = text.trim_end_matches(['\r', '\n']).to_string();
                let shared = shared.clone();
                // Map walks can take a while on big tables: off the async thread.
                tokio::task::spawn_blocking(move || {
                    let mut b = shared.lock().expect("balancer lock");
                    api::execute(&mut b, &text)
                })
                .await
                .unwrap_or_else(|e| format!("Internal error: {e}\n"))
            }
        },
    };
    let _ = w.write_all(answer.as_bytes()).await;
    let _ = w.shutdown().await;
}

/// Every `interval`: delete idle entries (on its own map handle, in batches, off the async
/// thread), send the entries created or refreshed since the last pass to the peers, and retry
/// MAC resolution of servers that have none.
async fn sweeper(
    shared: Shared,
    stick_pin: PathBuf,
    interval: Duration,
    replication: Option<(Arc<peers::Peers>, broadcast::Sender<peers::Batch>)>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut since = datapath::coarse_now_ns();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let expiries = shared.lock().expect("balancer lock").expiries();
        let pin = stick_pin.clone();
        let start = datapath::coarse_now_ns();
        let touched_since = replication.as_ref().map(|_| since);
        let r = tokio::task::spawn_blocking(move || -> Result<(stick_table::Swept, Duration)> {
            let t0 = Instant::now();
            let mut tables = stick_table::open_pinned(&pin)?;
            let swept = stick_table::sweep(
                tables.maps_mut(),
                &expiries,
                touched_since,
                10_000,
                std::thread::yield_now,
            )?;
            Ok((swept, t0.elapsed()))
        })
        .await;
        match r {
            Ok(Ok((swept, took))) => {
                if swept.deleted > 0 {
                    log::info!(
                        "sweeper: {} idle entries expired of {} in {took:?}",
                        swept.deleted,
                        swept.seen
                    );
                }
                shared.lock().expect("balancer lock").table_used = swept.used;
                // The clock is coarse (a tick): overlap the windows by one so nothing falls
                // between two passes; an entry sent twice costs a line.
                since = start.saturating_sub(10_000_000);
                if let Some((list, batches)) = &replication {
                    let own = list.own_changes(swept.touched);
                    if !own.is_empty() {
                        let batch = peers::encode(&shared.lock().expect("balancer lock"), &own);
                        let _ = batches.send(Arc::new(batch));
                    }
                }
            }
            Ok(Err(e)) => log::warn!("sweeper: {e:#}"),
            Err(e) => log::warn!("sweeper: {e}"),
        }
        let s = shared.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(e) = s.lock().expect("balancer lock").resolve_missing_macs() {
                log::warn!("neighbour resolution: {e}");
            }
        })
        .await;
    }
}

/// `xlb detach`: remove the pinned link (the program stops) and the pinned maps.
pub fn detach(config_path: &Path) -> Result<()> {
    let cfg = config::load(config_path)?;
    let lock = lock_instance(&cfg.global.bpffs_dir)
        .context("an agent is running for these pins; stop it (SIGTERM) before `xlb detach`")?;
    datapath::remove_pins(&cfg.global.bpffs_dir)?;
    let _ = std::fs::remove_file(&lock.path);
    println!(
        "xlb: detached from {}; pins under {} removed",
        cfg.global.interface,
        cfg.global.bpffs_dir.display()
    );
    Ok(())
}
