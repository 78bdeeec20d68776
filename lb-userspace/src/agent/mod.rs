//! `xlb run`: load, attach, then run small tokio tasks until SIGTERM:
//! health transitions -> table rebuilds; neighbour-table changes -> backend MACs; the runtime
//! API socket; the expiry sweeper; SIGHUP reloads. On exit the XDP link and maps stay pinned:
//! the data path keeps forwarding and the next agent adopts the stick table.

use std::{
    fs::File,
    io::Write as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::UnixListener,
    sync::{Notify, broadcast, mpsc, watch},
};

use crate::{
    balancer::stick,
    balancer::{Balancer, CheckChanges},
    config::{self, Config},
    control::api,
    control::peers,
    control::state::AgentState,
    datapath::{self, Datapath, LoadOptions},
    health::{HealthChecker, Transition},
    net::neigh,
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
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let pid = std::fs::read_to_string(&path).unwrap_or_default();
            bail!(
                "another xlb agent (pid {}) already runs the data path pinned at {}; stop it first, \
                 or give this one another `bpffs_dir`",
                pid.trim(),
                bpffs_dir.display()
            );
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()));
        }
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
    crate::control::admin_socket::check_path(&cfg.global.admin_socket)?;
    datapath::ensure_bpffs().context("bpffs is not mounted at /sys/fs/bpf and mounting it failed")?;
    let _lock = lock_instance(&cfg.global.bpffs_dir)?;
    let dp = Datapath::load(&LoadOptions {
        pin_dir: Some(cfg.global.bpffs_dir.clone()),
    })?;
    let adopted = dp.adopted();
    let mut dp = dp;
    dp.set_new_entry_cap(cfg.global.max_new_entries_per_cpu)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let (mut neighbours, table) = rt.block_on(watch_neighbours())?;
    let started = Instant::now();
    let (mut b, checks) = Balancer::new(cfg.clone(), dp, table)?;
    rt.block_on(resolve_at_start(&mut b, &mut neighbours.changes))?;
    let generic = cfg.global.xdp_mode == config::XdpMode::Generic;
    let own_mac = crate::net::link::lookup(&cfg.global.interface)
        .and_then(|l| l.ethernet_mac())
        .with_context(|| format!("cannot read the MAC of {}", cfg.global.interface))?;
    b.dp.set_own_mac(own_mac)?;
    let attached = b.dp.attach(&cfg.global.interface, generic)?;
    b.dp.finish_migration()?;
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
    rt.block_on(serve(
        b,
        checks,
        neighbours,
        started,
        config_path.to_path_buf(),
        cfg,
    ))
}

/// The subscription to the neighbour table: its netlink connection (a task) and its changes.
struct NeighbourWatch {
    conn: tokio::task::JoinHandle<()>,
    changes: neigh::Watch,
}

/// Subscribe to the neighbour table, spawn the subscription's connection, then dump the table
/// (in that order, so no change falls in between).
async fn watch_neighbours() -> Result<(NeighbourWatch, neigh::Table)> {
    let (conn, changes) = neigh::subscribe()?;
    let conn = tokio::spawn(conn);
    let mut table = neigh::Table::default();
    for n in changes.dump().await? {
        table.update(&n);
    }
    Ok((NeighbourWatch { conn, changes }, table))
}

/// Before the agent serves: probe the addresses of servers without a MAC and take the answers
/// that come within a second (usually a millisecond), so a fresh agent starts with its servers
/// UP. Those still without one stay DOWN until their address resolves.
async fn resolve_at_start(b: &mut Balancer, watch: &mut neigh::Watch) -> Result<()> {
    let missing = b.unresolved();
    if missing.is_empty() {
        return Ok(());
    }
    neigh::probe(&missing.iter().map(|(_, a)| *a).collect::<Vec<_>>());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while !b.unresolved().is_empty() {
        match tokio::time::timeout_at(deadline, watch.next()).await {
            Ok(Some(n)) => b.on_neighbour(&n)?,
            _ => break,
        }
    }
    for (server, addr) in b.unresolved() {
        log::warn!("{server}: no MAC for {addr} in the neighbour table yet; DOWN until it resolves");
    }
    Ok(())
}

async fn serve(
    b: Balancer,
    checks: CheckChanges,
    neighbours: NeighbourWatch,
    started: Instant,
    config_path: PathBuf,
    cfg: Config,
) -> Result<()> {
    let shared: Shared = Arc::new(Mutex::new(b));
    let (shutdown_tx, shutdown) = watch::channel(false);
    let (tx, mut transitions) = mpsc::unbounded_channel::<Transition>();
    let mut hc = HealthChecker::new(tx);
    apply_checks(&mut hc, checks);
    let peer_list = if cfg.global.peers.is_empty() {
        None
    } else {
        // `config::load` refuses [[peer]] without a key, and checked the file; read it again
        // here, where it is used.
        let key_file = cfg
            .global
            .peer_key_file
            .as_deref()
            .context("[[peer]] is listed without peer_key_file")?;
        let key = config::read_peer_key(&config_path.display().to_string(), key_file)?;
        let capacity = cfg.services.iter().map(|s| s.stick.size as usize).sum();
        Some(peers::Peers::new(&cfg.global.peers, key, capacity))
    };
    let state = Arc::new(AgentState::new(started, hc.view(), peer_list.clone()));

    let socket = cfg.global.admin_socket.clone();
    let listener = bind_socket(&socket)?;
    let stick_pin = cfg
        .global
        .bpffs_dir
        .join("maps")
        .join(lb_common::MAP_STICK_TABLES);
    let api_task = tokio::spawn(api_loop(
        listener,
        shared.clone(),
        state.clone(),
        stick_pin.clone(),
        shutdown.clone(),
    ));
    let mut peer_tasks = Vec::new();
    let replication = if let Some(list) = peer_list {
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
    } else {
        None
    };
    // A reload that removes services or servers wakes the sweeper, which purges their stick
    // entries at once (outside the lock) and then lets their ids be handed out again.
    let sweep_now = Arc::new(Notify::new());
    let sweep_task = tokio::spawn(sweeper(
        shared.clone(),
        state.clone(),
        stick_pin,
        cfg.global.sweep_interval,
        replication,
        sweep_now.clone(),
        shutdown.clone(),
    ));
    let neigh_task = tokio::spawn(follow_neighbours(shared.clone(), neighbours, shutdown.clone()));
    let metrics_task = cfg.global.metrics.map(|addr| {
        let metrics = crate::control::metrics::serve(addr, shared.clone(), state.clone(), shutdown.clone());
        tokio::spawn(metrics)
    });
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
                        if !shared.lock().expect("balancer lock").retired.is_empty() {
                            sweep_now.notify_one();
                        }
                        probe_unresolved(&shared);
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
    let _ = neigh_task.await;
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
        ("peer_key_file", a.peer_key_file != b.peer_key_file),
    ];
    let what: Vec<&str> = changed
        .iter()
        .filter(|(_, c)| *c)
        .map(|(name, _)| *name)
        .collect();
    what.join(", ")
}

/// The runtime API's listener (0600 from the moment it exists; see `admin_socket`).
fn bind_socket(path: &Path) -> Result<UnixListener> {
    let l = crate::control::admin_socket::bind(path)?;
    l.set_nonblocking(true)
        .with_context(|| format!("admin_socket {}: cannot make it non-blocking", path.display()))?;
    Ok(UnixListener::from_std(l)?)
}

async fn api_loop(
    l: UnixListener,
    shared: Shared,
    state: Arc<AgentState>,
    stick_pin: PathBuf,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            r = l.accept() => match r {
                Ok((stream, _)) => {
                    tokio::spawn(api_conn(stream, shared.clone(), state.clone(), stick_pin.clone()));
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

/// How long the client may take to read each part of an answer before it is dropped.
const API_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// One connection: one line in (bounded in size and time), one answer out, close.
///
/// The command runs on a blocking thread: first under the balancer's lock for what needs the
/// balancer only ([`api::prepare`], quick), then without the lock for a table walk, whose
/// answer streams to the client in chunks as it is made ([`api::Prepared::finish`]).
async fn api_conn(
    stream: tokio::net::UnixStream,
    shared: Shared,
    state: Arc<AgentState>,
    stick_pin: PathBuf,
) {
    let (r, mut w) = stream.into_split();
    let mut line = Vec::new();
    let mut reader = BufReader::new(r).take(api::MAX_LINE as u64 + 1);
    let read = tokio::time::timeout(Duration::from_secs(10), reader.read_until(b'\n', &mut line)).await;
    let refused = match read {
        Err(_) => Some("Timeout: no command received within 10 s.\n".to_string()),
        Ok(Err(e)) => Some(format!("Read error: {e}\n")),
        Ok(Ok(_)) if line.len() > api::MAX_LINE => {
            Some(format!("Command too long: at most {} bytes.\n", api::MAX_LINE))
        }
        Ok(Ok(_)) => std::str::from_utf8(&line).is_err().then(|| {
            "Unknown command: input is not text. Type 'help' for the list of commands.\n".to_string()
        }),
    };
    if let Some(answer) = refused {
        let _ = w.write_all(answer.as_bytes()).await;
        let _ = w.shutdown().await;
        return;
    }
    let text = String::from_utf8_lossy(&line)
        .trim_end_matches(['\r', '\n'])
        .to_string();
    let (chunks, mut answer) = mpsc::channel::<Vec<u8>>(4);
    let job = tokio::task::spawn_blocking(move || {
        let prepared = api::prepare(&mut shared.lock().expect("balancer lock"), &state, &text);
        let mut out = ChunkSender {
            chunks,
            buf: Vec::new(),
        };
        prepared.finish(&stick_pin, &mut out)?;
        std::io::Write::flush(&mut out)
    });
    while let Some(chunk) = answer.recv().await {
        match tokio::time::timeout(API_WRITE_TIMEOUT, w.write_all(&chunk)).await {
            Ok(Ok(())) => {}
            // The client went away or stopped reading: the walk stops at its next chunk.
            _ => break,
        }
    }
    drop(answer);
    if let Err(e) = job.await {
        let _ = w.write_all(format!("Internal error: {e}\n").as_bytes()).await;
    }
    let _ = w.shutdown().await;
}

/// An answer written on a blocking thread, handed to the connection's task in chunks.
struct ChunkSender {
    chunks: mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
}

impl ChunkSender {
    const CHUNK: usize = 64 * 1024;
}

impl std::io::Write for ChunkSender {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= Self::CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.chunks
            .blocking_send(std::mem::take(&mut self.buf))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
    }
}

/// Every `interval`, and at once after a reload that retired ids: delete idle and stale
/// entries (on its own map handle, in batches, off the async thread) and send the entries
/// created or refreshed since the last pass to the peers.
async fn sweeper(
    shared: Shared,
    state: Arc<AgentState>,
    stick_pin: PathBuf,
    interval: Duration,
    replication: Option<(Arc<peers::Peers>, broadcast::Sender<peers::Batch>)>,
    sweep_now: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut since = datapath::coarse_now_ns();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = sweep_now.notified() => {}
            _ = shutdown.changed() => return,
        }
        let policy = shared.lock().expect("balancer lock").sweep_policy();
        let pin = stick_pin.clone();
        let start = datapath::coarse_now_ns();
        let touched_since = replication.as_ref().map(|_| since);
        let (s, p) = (shared.clone(), policy.clone());
        let r = tokio::task::spawn_blocking(move || -> Result<(stick::Swept, Duration)> {
            let t0 = Instant::now();
            let mut tables = stick::open_pinned(&pin)?;
            let current = || s.lock().expect("balancer lock").generation == p.generation;
            let swept = stick::sweep(
                &mut tables,
                &p,
                touched_since,
                10_000,
                std::thread::yield_now,
                current,
            )?;
            Ok((swept, t0.elapsed()))
        })
        .await;
        match r {
            Ok(Ok((swept, took))) => {
                if swept.deleted > 0 {
                    log::info!(
                        "sweeper: {} entries deleted of {} in {took:?} ({} of removed services or servers)",
                        swept.deleted,
                        swept.seen,
                        swept.stale
                    );
                }
                state.set_table_used(swept.used);
                if swept.purged {
                    shared.lock().expect("balancer lock").release_retired(&policy);
                }
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
    }
}

/// Probe the addresses of servers without a MAC (the answers come through the neighbour
/// watch). Sending never blocks; it happens after the lock is released.
fn probe_unresolved(shared: &Shared) {
    let missing = shared.lock().expect("balancer lock").unresolved();
    if !missing.is_empty() {
        neigh::probe(&missing.iter().map(|(_, a)| *a).collect::<Vec<_>>());
    }
}

/// Follow the neighbour table: each change goes to the balancer (a new MAC is written to the
/// backends at that address at once). Every second, addresses still without a MAC are probed
/// again. When the subscription ends (its socket failed, e.g. overflowed), subscribe again and
/// take a fresh dump, so no change stays missed.
async fn follow_neighbours(shared: Shared, mut nw: NeighbourWatch, mut shutdown: watch::Receiver<bool>) {
    let mut retry = tokio::time::interval(Duration::from_secs(1));
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Probe rounds each server without a MAC has been through: it is warned about at the fifth.
    let mut rounds: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
    loop {
        tokio::select! {
            change = nw.changes.next() => match change {
                Some(n) => {
                    if let Err(e) = shared.lock().expect("balancer lock").on_neighbour(&n) {
                        log::error!("neighbour {}: writing the new MAC failed: {e}", n.addr);
                    }
                }
                None => {
                    log::warn!("neighbour table: the netlink subscription ended; subscribing again");
                    nw.conn.abort();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    match resubscribe(&shared).await {
                        Ok(fresh) => nw = fresh,
                        Err(e) => {
                            log::error!("neighbour table: {e:#}; MACs no longer follow it until a restart");
                            return;
                        }
                    }
                }
            },
            _ = retry.tick() => {
                let missing = shared.lock().expect("balancer lock").unresolved();
                rounds.retain(|server, _| missing.iter().any(|(m, _)| m == server));
                if missing.is_empty() {
                    continue;
                }
                neigh::probe(&missing.iter().map(|(_, a)| *a).collect::<Vec<_>>());
                for (server, addr) in &missing {
                    let n = rounds.entry(server.clone()).or_default();
                    *n += 1;
                    if *n == 5 {
                        log::warn!("{server}: {addr} does not resolve (no neighbour entry); DOWN until it does");
                    }
                }
            }
            _ = shutdown.changed() => {
                nw.conn.abort();
                return;
            }
        }
    }
}

/// A new subscription, and every entry of the table now given to the balancer.
async fn resubscribe(shared: &Shared) -> Result<NeighbourWatch> {
    let (nw, table) = watch_neighbours().await?;
    let mut b = shared.lock().expect("balancer lock");
    for (addr, ifindex, mac) in table.entries() {
        b.on_neighbour(&neigh::Neighbour {
            addr,
            ifindex,
            mac: Some(mac),
        })?;
    }
    Ok(nw)
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
