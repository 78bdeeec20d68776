//! `xlb run`: load, attach, then run small tokio tasks until SIGTERM:
//! health transitions -> table rebuilds; neighbour-table changes -> backend MACs; the runtime
//! API socket; the expiry sweeper; the replicator (new entries to the peers as they happen);
//! SIGHUP reloads; the VIP routes (`announcer`); passive health (`passive`: the data path's
//! handshake signals, compared every 200 ms, suspicions to the checker). On exit the XDP link, maps and VIP routes
//! stay: the data path keeps forwarding, the VIPs stay announced and the next agent adopts the
//! stick table.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Instant,
};

use anyhow::{Context as _, Result};
use tokio::sync::{Notify, broadcast, mpsc, watch};

mod announcer;
mod api_server;
mod hooks;
mod instance_lock;
mod neighbours;
mod passive;
mod reload;
mod replicator;
mod service_manager;
mod sweeper;

pub use announcer::state_path as announce_state_path;
use api_server::{api_loop, bind_socket};
pub use instance_lock::{InstanceLock, lock_instance, lock_path};
use neighbours::{NeighbourWatch, follow_neighbours, probe_unresolved, resolve_at_start, watch_neighbours};
use reload::reload;
use replicator::replicator;
use sweeper::sweeper;

use crate::{
    balancer::{Balancer, CheckChanges},
    config::{self, Config},
    control::{peers, state::AgentState},
    datapath::{self, Datapath, Inserts, LoadOptions},
    health::{HealthChecker, Transition},
};

type Shared = Arc<Mutex<Balancer>>;

/// Everything before the runtime starts: validate, lock, load (adopting pins), program the
/// maps, attach. Then run until a terminating signal.
pub fn run(config_path: &Path) -> Result<()> {
    let begun = Instant::now();
    log::info!("xlb: starting with {}", config_path.display());
    let cfg = config::load(config_path)?;
    config::check_interfaces(&cfg)?;
    crate::control::admin_socket::check_path(&cfg.global.admin_socket)?;
    datapath::ensure_bpffs().context("bpffs is not mounted at /sys/fs/bpf and mounting it failed")?;
    let _lock = lock_instance(&cfg.global.bpffs_dir)?;
    let dp = Datapath::load(&LoadOptions {
        pin_dir: Some(cfg.global.bpffs_dir.clone()),
        ..Default::default()
    })?;
    let adopted = dp.adopted();
    log::info!("xlb: data path loaded in {:?}", begun.elapsed());
    let mut dp = dp;
    dp.set_new_entry_cap(cfg.global.max_new_entries_per_cpu)?;
    let inserts = dp.take_inserts()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let (mut neighbours, table) = rt.block_on(watch_neighbours())?;
    let started = Instant::now();
    let (mut b, checks) = Balancer::new(cfg.clone(), dp, table)?;
    rt.block_on(resolve_at_start(&mut b, &mut neighbours))?;
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
        inserts,
        started,
        config_path.to_path_buf(),
        cfg,
    ))
}

async fn serve(
    b: Balancer,
    checks: CheckChanges,
    neighbours: NeighbourWatch,
    inserts: Inserts,
    started: Instant,
    config_path: PathBuf,
    cfg: Config,
) -> Result<()> {
    let shared: Shared = Arc::new(Mutex::new(b));
    let (shutdown_tx, shutdown) = watch::channel(false);
    let (tx, mut transitions) = mpsc::unbounded_channel::<Transition>();
    let (mut hc, check_runner) = HealthChecker::new(tx);
    let health_task = tokio::spawn(check_runner.run());
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
    // The peers' full-teach count (how many configured peers have taught this agent their
    // whole table), which ends the announcements' warm-up early.
    let taught = match &peer_list {
        Some(list) => list.taught(),
        None => watch::channel(0usize).1,
    };
    let frontends = announcer::frontends(&cfg, started, taught)?;
    let state = Arc::new(AgentState::new(
        started,
        hc.view(),
        peer_list.clone(),
        frontends.clone(),
    ));

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
    // What the peers and the metrics ask of the agent (work under the lock).
    let hooks = Arc::new(hooks::Hooks {
        shared: shared.clone(),
        state: state.clone(),
        stick_pin: stick_pin.clone(),
    });
    let mut peer_tasks = Vec::new();
    let replication = if let Some(list) = peer_list {
        // Room for a few seconds of streamed batches (one a millisecond at most) while a
        // sender teaches a large table; a sender further behind skips batches (counted).
        let (batches, _) = broadcast::channel::<peers::Batch>(4096);
        for i in 0..list.list.len() {
            peer_tasks.push(tokio::spawn(peers::sender(
                hooks.clone(),
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
                hooks.clone(),
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
    let inserts = datapath::AsyncInserts::new(inserts).context("cannot watch the data path's ring")?;
    let replicator_task = tokio::spawn(replicator(
        shared.clone(),
        inserts,
        replication.clone(),
        shutdown.clone(),
    ));
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
    let neigh_task = tokio::spawn(follow_neighbours(
        shared.clone(),
        state.clone(),
        neighbours,
        shutdown.clone(),
    ));
    let metrics_task = cfg.global.metrics.map(|addr| {
        let metrics = crate::control::metrics::serve(addr, hooks.clone(), shutdown.clone());
        tokio::spawn(metrics)
    });
    let announce_task = match frontends {
        Some(f) => Some(announcer::spawn(&cfg, shared.clone(), f, shutdown.clone())?),
        None => None,
    };
    log::info!("xlb: runtime API on {}", socket.display());
    // Attached, and the API's socket is bound: a connection from now on is answered.
    service_manager::ready();

    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut current = cfg;
    let mut passive = passive::PassiveWatch::default();
    let mut passive_tick = tokio::time::interval(crate::health::passive::READ_EVERY);
    passive_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = passive_tick.tick() => passive.round(&shared, &mut hc).await,
            Some(t) = transitions.recv() => {
                let mut b = shared.lock().expect("balancer lock");
                if let Err(e) = b.on_health(&t.key.0, &t.key.1, t.to, &t.reason) {
                    log::error!("{}/{}: applying health change failed: {e}", t.key.0, t.key.1);
                }
                state.poke_announcer();
            }
            _ = hup.recv() => {
                service_manager::reloading();
                match reload(&config_path, &current, &shared) {
                    Ok((cfg, checks)) => {
                        apply_checks(&mut hc, checks);
                        current = cfg;
                        if !shared.lock().expect("balancer lock").retired.is_empty() {
                            sweep_now.notify_one();
                        }
                        probe_unresolved(&shared);
                        state.poke_announcer();
                        log::info!("xlb: configuration reloaded from {}", config_path.display());
                    }
                    Err(e) => log::error!("xlb: reload refused, running configuration kept: {e:#}"),
                }
                service_manager::ready();
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    service_manager::stopping();
    log::info!(
        "xlb: stopping; the data path keeps forwarding (pins stay under {})",
        current.global.bpffs_dir.display()
    );
    let _ = shutdown_tx.send(true);
    hc.shutdown().await;
    let _ = health_task.await;
    let _ = api_task.await;
    let _ = sweep_task.await;
    let _ = replicator_task.await;
    let _ = neigh_task.await;
    if let Some(t) = announce_task {
        let _ = t.await;
    }
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

/// `xlb detach`: remove the pinned link (the program stops) and the pinned maps.
pub fn detach(config_path: &Path) -> Result<()> {
    let cfg = config::load(config_path)?;
    let lock = lock_instance(&cfg.global.bpffs_dir)
        .context("an agent is running for these pins; stop it (SIGTERM) before `xlb detach`")?;
    datapath::remove_pins(&cfg.global.bpffs_dir)?;
    announcer::detach(&cfg)?;
    let _ = std::fs::remove_file(&lock.path);
    println!(
        "xlb: detached from {}; pins under {} removed",
        cfg.global.interface,
        cfg.global.bpffs_dir.display()
    );
    Ok(())
}
