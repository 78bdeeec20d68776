//! `xlb`: the agent (`run`), config check, detach, a client for the runtime API, and the backend
//! hosts' decapsulator (`decap`).
//! Parses arguments and dispatches; the work lives in the library.

use std::{
    io::{Read as _, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use clap::{CommandFactory as _, Parser, Subcommand};
use xlb::control::api;

#[derive(Parser)]
#[command(
    name = "xlb",
    version,
    about = "XDP L4 load balancer with source affinity",
    disable_help_subcommand = true
)]
struct Cli {
    /// Enter this network namespace (from `ip netns add`) first, keeping the host's mounts.
    #[arg(long, global = true, value_name = "NAME")]
    netns: Option<String>,
    /// Runtime API socket (default: the config's admin_socket with -c, else /run/xlb/admin.sock).
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the agent: load and attach the data path, health checks, runtime API.
    Run {
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate a config file; touches nothing. Exit 0 when valid, 1 when not.
    Check {
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Remove the data path and its pins (this empties the stick table).
    Detach {
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// `show table|stat|info|servers state|frontends ...` (runtime API).
    Show {
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        words: Vec<String>,
    },
    /// `set server S/V state|weight ...` (runtime API).
    Set {
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        words: Vec<String>,
    },
    /// `clear table NAME [key ADDR | data.server_id eq N]` (runtime API).
    Clear {
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        words: Vec<String>,
    },
    /// `where SERVICE ADDR`: which server a client goes to now, and why.
    Where {
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        words: Vec<String>,
    },
    /// `disable frontend SERVICE` | `disable announce` (runtime API): withdraw a VIP, or all.
    Disable {
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        words: Vec<String>,
    },
    /// `enable frontend SERVICE` | `enable announce` (runtime API): announce again.
    Enable {
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        words: Vec<String>,
    },
    /// Convert an haproxy.cfg into an xlb config (TOML on stdout; warnings on stderr).
    Import {
        #[arg(value_name = "HAPROXY_CFG")]
        file: PathBuf,
        /// Write the xlb config here instead of stdout.
        #[arg(short, long, value_name = "OUT")]
        output: Option<PathBuf>,
        /// This instance's name in a `peers` section (default: global's `localpeer`, else the host name).
        #[arg(long, value_name = "NAME")]
        local_peer: Option<String>,
    },
    /// The runtime API's own help.
    Help {
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Print the completion script for SHELL (the package installs bash's, zsh's and fish's).
    Completions { shell: clap_complete::Shell },
    /// Write the man pages (xlb.1, and xlb-run.1 ... for each subcommand) into DIR.
    Manpages {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// For backend hosts: strip the balancer's IPIP/GUE headers from packets to this host's VIPs.
    Decap {
        #[command(subcommand)]
        cmd: DecapCmd,
    },
}

#[derive(Subcommand)]
enum DecapCmd {
    /// Attach to an interface: decapsulate IPIP (and GUE with --gue-port) to these VIPs.
    Attach {
        #[arg(short, long, value_name = "IF")]
        interface: String,
        /// A VIP this host serves (on lo); repeat for more.
        #[arg(long = "vip", value_name = "ADDR", required = true)]
        vips: Vec<std::net::IpAddr>,
        /// The balancer's GUE port; without it only IPIP is decapsulated.
        #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
        gue_port: Option<u16>,
        /// Where to run: xdp for a NIC whose driver runs XDP in place; tc (ingress, Linux 6.6+)
        /// for veth and other devices that copy packets to run XDP on them.
        #[arg(long, value_enum, default_value_t = xlb::datapath::decap::Hook::Xdp)]
        hook: xlb::datapath::decap::Hook,
    },
    /// Detach from an interface (removes its pins and counters).
    Detach {
        #[arg(short, long, value_name = "IF")]
        interface: String,
    },
    /// VIPs, GUE port and counters of one interface, or of every attached one.
    Show {
        #[arg(short, long, value_name = "IF")]
        interface: Option<String>,
    },
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let cli = Cli::parse();
    if let Some(ns) = &cli.netns {
        // Before any thread exists: every thread inherits the namespace.
        if let Err(e) = xlb::net::netns::enter(ns) {
            eprintln!("xlb: {e}");
            return ExitCode::from(1);
        }
    }
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xlb: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let socket = cli.socket;
    let base = xlb::datapath::decap::base_dir(cli.netns.as_deref());
    let (verb, config, words) = match cli.cmd {
        Cmd::Run { config } => {
            xlb::agent::run(&config)?;
            return Ok(ExitCode::SUCCESS);
        }
        Cmd::Check { config } => return Ok(check(&config)),
        Cmd::Detach { config } => {
            xlb::agent::detach(&config)?;
            return Ok(ExitCode::SUCCESS);
        }
        Cmd::Show { config, words } => ("show", config, words),
        Cmd::Set { config, words } => ("set", config, words),
        Cmd::Clear { config, words } => ("clear", config, words),
        Cmd::Where { config, words } => ("where", config, words),
        Cmd::Disable { config, words } => ("disable", config, words),
        Cmd::Enable { config, words } => ("enable", config, words),
        Cmd::Help { config } => ("help", config, Vec::new()),
        Cmd::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "xlb", &mut std::io::stdout());
            return Ok(ExitCode::SUCCESS);
        }
        Cmd::Manpages { dir } => {
            clap_mangen::generate_to(Cli::command(), &dir)
                .map_err(|e| anyhow::anyhow!("cannot write the man pages into {}: {e}", dir.display()))?;
            return Ok(ExitCode::SUCCESS);
        }
        Cmd::Import {
            file,
            output,
            local_peer,
        } => return import(&file, output.as_deref(), local_peer),
        Cmd::Decap { cmd } => {
            decap(cmd, &base)?;
            return Ok(ExitCode::SUCCESS);
        }
    };
    let socket = match (socket, config) {
        (Some(s), _) => s,
        (None, Some(c)) => xlb::config::load(&c)?.global.admin_socket,
        (None, None) => PathBuf::from(xlb::config::DEFAULT_ADMIN_SOCKET),
    };
    let mut line = verb.to_string();
    for w in &words {
        line.push(' ');
        line.push_str(w);
    }
    api_call(&socket, &line)
}

fn check(path: &Path) -> ExitCode {
    match xlb::config::load(path) {
        Ok(cfg) => {
            let servers: usize = cfg.services.iter().map(|s| s.servers.len()).sum();
            println!(
                "{}: valid ({} services, {servers} servers, interface {})",
                path.display(),
                cfg.services.len(),
                cfg.global.interface
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{:#}", anyhow::Error::from(e));
            ExitCode::from(1)
        }
    }
}

/// `xlb import`: the config to `output` (or stdout), the warnings to stderr.
fn import(file: &Path, output: Option<&Path>, local_peer: Option<String>) -> anyhow::Result<ExitCode> {
    let local_peer = local_peer.or_else(xlb::import::host_name);
    let imported = xlb::import::import_file(file, local_peer.as_deref())?;
    let shown = file.display().to_string();
    for w in &imported.warnings {
        eprintln!("{}", w.display_in(&shown));
    }
    match output {
        Some(out) => std::fs::write(out, &imported.toml)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.display()))?,
        None => print!("{}", imported.toml),
    }
    Ok(ExitCode::SUCCESS)
}

fn decap(cmd: DecapCmd, base: &Path) -> anyhow::Result<()> {
    use xlb::datapath::decap;
    match cmd {
        DecapCmd::Attach {
            interface,
            vips,
            gue_port,
            hook,
        } => {
            let req = decap::AttachRequest {
                ifname: &interface,
                vips: &vips,
                gue_port,
                hook,
                base,
            };
            let how = decap::attach(&req)?;
            let gue = gue_port.map_or("off".to_string(), |p| format!("UDP port {p}"));
            println!(
                "decapsulating on {interface} ({how}): {} VIPs, GUE {gue}",
                vips.len()
            );
        }
        DecapCmd::Detach { interface } => {
            decap::detach(&interface, base)?;
            println!("detached from {interface}");
        }
        DecapCmd::Show { interface } => {
            let names = match interface {
                Some(i) => vec![i],
                None => decap::attached(base)?,
            };
            if names.is_empty() {
                println!("not attached anywhere (nothing pinned under {})", base.display());
            }
            for name in names {
                print!("{}", decap_report(&decap::status(&name, base)?));
            }
        }
    }
    Ok(())
}

/// `xlb decap show` for one interface.
fn decap_report(a: &xlb::datapath::decap::Attachment) -> String {
    let vips: Vec<String> = a.vips.iter().map(|v| v.to_string()).collect();
    let link = if a.ifindex == 0 {
        "severed: its interface went away; detach it".to_string()
    } else {
        format!("index {}", a.ifindex)
    };
    let gue = a.gue_port.map_or("off".to_string(), |p| format!("UDP port {p}"));
    let mut out = format!(
        "{} ({link})\n  hook: {}\n  vips: {}\n  gue: {gue}\n",
        a.ifname,
        a.hook,
        vips.join(" ")
    );
    for (name, n) in a.counters.named() {
        out.push_str(&format!("  {name}: {n}\n"));
    }
    out
}

/// Send one command line, print the answer, and exit with its status: the agent ends the
/// answer with a status line, asked for by [`api::STATUS_REQUEST`]. An answer without one (the
/// agent refused the line before running it, or it was cut short) exits 1.
fn api_call(socket: &Path, line: &str) -> anyhow::Result<ExitCode> {
    let mut s = UnixStream::connect(socket).map_err(|e| {
        anyhow::anyhow!(
            "cannot reach the agent at {}: {e}. Is `xlb run` running? (--socket PATH or -c FILE to point elsewhere)",
            socket.display()
        )
    })?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    s.write_all(format!("{} {line}\n", api::STATUS_REQUEST).as_bytes())?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    let (text, status) = api::split_status(&answer).unwrap_or((&answer, 1));
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        // `xlb show table | head`: a closed pipe is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
        r => r?,
    }
    Ok(ExitCode::from(status))
}
