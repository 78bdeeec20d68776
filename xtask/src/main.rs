//! Developer tasks for xlb: toolchain bootstrap, build, test, demo, bench, install, package.
//!
//! Every command first runs `setup`, which is idempotent: a second run finds everything in
//! place and says so. Nothing here needs anything but rustup's `stable` and `nightly`
//! toolchains, the network to crates.io and Debian (first run only), and root for the tests.

mod dist;
#[cfg(test)]
mod install_systemd;
mod setup;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "xlb developer tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what building and testing need (rust-src, bpf-linker, Debian packages). Idempotent.
    Setup,
    /// Build the eBPF object and target/release/xlb.
    Build,
    /// fmt check, clippy, then every test (unit, BPF_PROG_TEST_RUN, netns end-to-end). Needs root.
    Test {
        /// Extra arguments passed to the test binaries (e.g. a test name filter).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Run the demo: a load balancer, four backends and clients in network namespaces;
    /// `demo fleet`: three balancers behind a router (BGP, ECMP), one lost and back.
    Demo {
        /// Which story: none for the single balancer, `fleet` for the fleet.
        which: Option<String>,
    },
    /// Run the benchmarks: datapath | table | maglev | e2e | all (all but fleet and failover) |
    /// fleet | failover | hit-path.
    Bench {
        #[arg(default_value = "all")]
        which: String,
        /// Extra arguments passed to the bench runner (e.g. `--json FILE`).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Build, then install xlb, its systemd unit, the example /etc/xlb/xlb.toml (kept if there),
    /// completions and man pages under ROOT.
    Install {
        #[arg(long, default_value = "/", value_name = "ROOT")]
        root: PathBuf,
    },
    /// Build, then make the Debian package (cargo-deb) of the same files; prints its path.
    Package,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    let tools = setup::ensure(&root)?;
    match cli.cmd {
        Cmd::Setup => Ok(()),
        Cmd::Build => build(&root, &tools),
        Cmd::Test { args } => test(&root, &tools, &args),
        Cmd::Demo { which } => {
            build(&root, &tools)?;
            let args: Vec<String> = which.into_iter().collect();
            run_release_bin(&root, &tools, "xlb-demo", &args)
        }
        Cmd::Bench { which, args } => {
            build(&root, &tools)?;
            let mut a = vec![which];
            a.extend(args);
            run_release_bin(&root, &tools, "xlb-bench", &a)
        }
        Cmd::Install { root: dest } => {
            build(&root, &tools)?;
            dist::install(&root, &root.join("target/release/xlb"), &dest)
        }
        Cmd::Package => {
            build(&root, &tools)?;
            let deb = dist::package(&root, &root.join("target/release/xlb"), cargo(&root, &tools))?;
            println!("{}", deb.display());
            Ok(())
        }
    }
}

/// The repository root (the parent of this crate's directory).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// A `cargo` command with bpf-linker's directory first on PATH, run from the workspace root.
fn cargo(root: &Path, tools: &setup::Tools) -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root).env("PATH", tools.path_env());
    cmd
}

fn status(mut cmd: Command, what: &str) -> Result<()> {
    eprintln!("xtask: {what}");
    let st = cmd.status().with_context(|| format!("failed to start: {what}"))?;
    if !st.success() {
        bail!("{what} failed ({st})");
    }
    Ok(())
}

fn build(root: &Path, tools: &setup::Tools) -> Result<()> {
    let mut cmd = cargo(root, tools);
    cmd.args([
        "build",
        "--release",
        "--workspace",
        "--exclude",
        "lb-ebpf",
        "--bins",
    ]);
    status(cmd, "cargo build --release (eBPF object + xlb)")
}

fn test(root: &Path, tools: &setup::Tools, args: &[String]) -> Result<()> {
    let mut cmd = cargo(root, tools);
    cmd.args(["fmt", "--all", "--check"]);
    status(cmd, "cargo fmt --check")?;

    let mut cmd = cargo(root, tools);
    cmd.args(["clippy", "--all-targets", "--", "-D", "warnings"]);
    status(cmd, "cargo clippy --all-targets -- -D warnings")?;

    build(root, tools)?;
    // The package of that build, for the packaging tests (xtask/src/dist/tests.rs).
    let deb = dist::package(root, &root.join("target/release/xlb"), cargo(root, tools))?;

    // Release profile for the tests too: the agent binary the end-to-end tests run is the
    // release one, and one profile means one compile of every dependency.
    let mut cmd = cargo(root, tools);
    cmd.args(["test", "--release"])
        .env("XLB_BIN", root.join("target/release/xlb"))
        .env("XLB_DEB", &deb);
    if !args.is_empty() {
        cmd.arg("--").args(args);
    }
    status(
        cmd,
        "cargo test --release (unit, BPF_PROG_TEST_RUN, netns end-to-end)",
    )?;
    leak_check()
}

/// After the tests: nothing they created may remain (namespaces, pins). Harness names are
/// `xlbt-<creator pid>-...` (also `xlb decap`'s `netns-xlbt-…` pin directories); a name whose
/// creator has exited is a leak. (One whose creator still runs belongs to something else in
/// progress, such as a demo in another terminal.)
fn leak_check() -> Result<()> {
    let leaked = |name: &str| {
        name.strip_prefix("xlbt-")
            .and_then(|r| r.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
    };
    let mut leaks = Vec::new();
    if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if leaked(name) {
                leaks.push(format!("network namespace {name}"));
            }
        }
    }
    if let Ok(rd) = std::fs::read_dir("/sys/fs/bpf") {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if leaked(&name) {
                leaks.push(format!("bpffs pin /sys/fs/bpf/{name}"));
            }
        }
    }
    // `xlb decap` pins per namespace under /sys/fs/bpf/xlb-decap/netns-NAME.
    if let Ok(rd) = std::fs::read_dir("/sys/fs/bpf/xlb-decap") {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.strip_prefix("netns-").is_some_and(leaked) {
                leaks.push(format!("bpffs pins /sys/fs/bpf/xlb-decap/{name}"));
            }
        }
    }
    if leaks.is_empty() {
        eprintln!("xtask: leak check: no namespace or pin left behind by the tests");
        Ok(())
    } else {
        bail!("the tests left behind: {}", leaks.join(", "))
    }
}

fn run_release_bin(root: &Path, tools: &setup::Tools, bin: &str, args: &[String]) -> Result<()> {
    let path = root.join("target/release").join(bin);
    let mut cmd = Command::new(&path);
    cmd.current_dir(root)
        .args(args)
        .env("PATH", tools.path_env())
        .env("XLB_BIN", root.join("target/release/xlb"));
    status(cmd, &format!("{} {}", path.display(), args.join(" ")))
}
