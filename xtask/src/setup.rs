//! `cargo xtask setup`: the toolchain and packages, installed once and then reused.
//!
//! Steps, each idempotent and each named in its error:
//! 1. the `nightly` toolchain is present (we never install toolchains: rustup may not reach one);
//! 2. `rust-src` for nightly (`-Z build-std=core` needs it);
//! 3. bpf-linker, built against the nightly toolchain's own libLLVM (same LLVM major as rustc),
//!    into `target/xlb-tools/`, with a stamp naming the library it was built for;
//! 4. the Debian packages the tests, demo and benchmarks run; `bird2` among them, whose own
//!    service is stopped and disabled right after it is installed (see [`quiet_packaged_bird`]);
//! 5. cargo-deb (`cargo xtask package`), into `target/xlb-tools/` beside bpf-linker.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

/// bpf-linker release known to build against LLVM 22 here (see shared/TOOLCHAIN.md).
const BPF_LINKER_VERSION: &str = "0.13.0";

/// cargo-deb release that builds with the stable toolchain here (rust-version 1.85).
const CARGO_DEB_VERSION: &str = "3.8.0";

/// Debian packages: (binary to look for, package that provides it, what needs it).
const DEBIAN_PACKAGES: &[(&str, &str, &str)] = &[
    (
        "ethtool",
        "ethtool",
        "GRO on veth peers so XDP_TX frames are received",
    ),
    ("socat", "socat", "runtime-API tests, as operators type them"),
    ("wrk", "wrk", "end-to-end benchmark load generator"),
    ("haproxy", "haproxy", "end-to-end benchmark baseline"),
    ("ip", "iproute2", "network namespaces, veth, bridge"),
    (
        "bird",
        "bird2",
        "BGP and BFD speaker of the fleet tests (one daemon per namespace they create)",
    ),
    (
        "nft",
        "nftables",
        "packet counters inside the fleet tests' namespaces (its service stays disabled)",
    ),
    (
        "promtool",
        "prometheus",
        "`promtool check metrics` on the agent's metrics endpoint",
    ),
    (
        "systemd-analyze",
        "systemd",
        "`systemd-analyze verify` on the installed xlb.service; systemd itself for its test",
    ),
    (
        "dpkg-shlibdeps",
        "dpkg-dev",
        "the library dependencies of the package `cargo xtask package` builds",
    ),
    (
        "chromium",
        "chromium",
        "the stats page test: headless Chromium renders /stats from a live agent",
    ),
];

/// Where the tools live, for PATH.
pub struct Tools {
    pub bin: PathBuf,
}

impl Tools {
    pub fn path_env(&self) -> String {
        let old = std::env::var("PATH").unwrap_or_default();
        format!("{}:{old}", self.bin.display())
    }
}

pub fn ensure(root: &Path) -> Result<Tools> {
    let tools_dir = root.join("target/xlb-tools");
    let nightly = nightly_info()?;
    rust_src()?;
    let bin = bpf_linker(&tools_dir, &nightly)?;
    debian_packages()?;
    cargo_deb(&tools_dir)?;
    Ok(Tools { bin })
}

struct Nightly {
    sysroot: PathBuf,
    llvm_major: String,
}

fn output(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("setup step '{what}': could not run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "setup step '{what}': {cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn nightly_info() -> Result<Nightly> {
    let step = "nightly toolchain";
    let vv = output(Command::new("rustup").args(["run", "nightly", "rustc", "-vV"]), step)
        .context("the eBPF program needs rustup's `nightly` toolchain; install it with `rustup toolchain install nightly`")?;
    let llvm = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .with_context(|| format!("setup step '{step}': `rustc +nightly -vV` printed no LLVM version"))?;
    let llvm_major = llvm.split('.').next().unwrap_or_default().trim().to_string();
    let sysroot = output(
        Command::new("rustup").args(["run", "nightly", "rustc", "--print", "sysroot"]),
        step,
    )?;
    Ok(Nightly {
        sysroot: PathBuf::from(sysroot.trim()),
        llvm_major,
    })
}

fn rust_src() -> Result<()> {
    let step = "rust-src for nightly";
    let installed = output(
        Command::new("rustup").args(["component", "list", "--toolchain", "nightly", "--installed"]),
        step,
    )?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        eprintln!("setup: rust-src (nightly): already installed");
        return Ok(());
    }
    eprintln!("setup: rust-src (nightly): installing");
    output(
        Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]),
        step,
    )
    .context("rustup could not download rust-src: check the network, then run `cargo xtask setup` again")?;
    Ok(())
}

/// The nightly sysroot's `libLLVM.so.*` (its exact name changes with every nightly).
fn find_libllvm(sysroot: &Path) -> Result<PathBuf> {
    let lib = sysroot.join("lib");
    let mut found = fs::read_dir(&lib)
        .with_context(|| format!("setup step 'bpf-linker': cannot read {}", lib.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM") && n.contains(".so"))
        })
        .collect::<Vec<_>>();
    found.sort();
    found.pop().with_context(|| {
        format!(
            "setup step 'bpf-linker': no libLLVM*.so in {}; the nightly toolchain looks incomplete \
             (try `rustup component add llvm-tools --toolchain nightly` or reinstall nightly)",
            lib.display()
        )
    })
}

/// llvm-sys wants a prefix whose `lib/libLLVM.so` is the library; the built linker then loads
/// it by its file name through its runpath (`<prefix>/lib`), so both names point at it. The
/// prefix outlives the build.
fn link_libllvm(prefix_lib: &Path, libllvm: &Path) -> Result<()> {
    fs::create_dir_all(prefix_lib)
        .with_context(|| format!("setup step 'bpf-linker': mkdir {}", prefix_lib.display()))?;
    let own_name = libllvm
        .file_name()
        .context("setup step 'bpf-linker': libLLVM has no file name")?;
    for name in [std::ffi::OsStr::new("libLLVM.so"), own_name] {
        let link = prefix_lib.join(name);
        if fs::read_link(&link).is_ok_and(|t| t == libllvm) {
            continue;
        }
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(libllvm, &link)
            .with_context(|| format!("setup step 'bpf-linker': symlink {}", link.display()))?;
    }
    Ok(())
}

fn bpf_linker(tools_dir: &Path, nightly: &Nightly) -> Result<PathBuf> {
    let step = "bpf-linker";
    let libllvm = find_libllvm(&nightly.sysroot)?;
    let bin_dir = tools_dir.join("bin");
    let linker = bin_dir.join("bpf-linker");
    let stamp = tools_dir.join("bpf-linker.stamp");
    let want = format!(
        "bpf-linker {BPF_LINKER_VERSION} llvm-{} {}",
        nightly.llvm_major,
        libllvm.display()
    );

    // The linker's runpath is `<prefix>/lib`, and it needs the library by its own file name
    // (its soname); make sure that name is there before asking it for its version.
    let prefix = tools_dir.join(format!("llvm-{}", nightly.llvm_major));
    link_libllvm(&prefix.join("lib"), &libllvm)?;
    let works = Command::new(&linker)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if works && fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == want) {
        eprintln!(
            "setup: bpf-linker: already built for LLVM {} ({})",
            nightly.llvm_major,
            linker.display()
        );
        return Ok(bin_dir);
    }

    eprintln!(
        "setup: bpf-linker: building {BPF_LINKER_VERSION} against {} (LLVM {}); about a minute",
        libllvm.display(),
        nightly.llvm_major
    );

    let st = cargo_install(&format!("bpf-linker@{BPF_LINKER_VERSION}"), tools_dir)
        .arg("--no-default-features")
        .arg("--features")
        .arg(format!("llvm-{}", nightly.llvm_major))
        .env("LLVM_PREFIX", &prefix)
        .status()
        .with_context(|| format!("setup step '{step}': could not run cargo install"))?;
    if !st.success() {
        bail!(
            "setup step '{step}': `cargo install bpf-linker@{BPF_LINKER_VERSION} --features llvm-{}` failed; \
             it needs crates.io and the nightly libLLVM at {}. Fix that, then run `cargo xtask setup` again",
            nightly.llvm_major,
            libllvm.display()
        );
    }
    fs::write(&stamp, format!("{want}\n"))
        .with_context(|| format!("setup step '{step}': write {}", stamp.display()))?;
    Ok(bin_dir)
}

/// `cargo install SPEC --locked --force --root TOOLS_DIR` on the stable toolchain, with neither
/// this workspace's target directory nor its toolchain; the caller adds what else it needs.
fn cargo_install(spec: &str, tools_dir: &Path) -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args([
        "run", "stable", "cargo", "install", spec, "--locked", "--force", "--root",
    ])
    .arg(tools_dir)
    .env_remove("CARGO_TARGET_DIR")
    .env_remove("RUSTUP_TOOLCHAIN");
    cmd
}

fn have(bin: &str) -> bool {
    Command::new("sh")
        .args([
            "-c",
            &format!("command -v {bin} >/dev/null 2>&1 || test -x /usr/sbin/{bin}"),
        ])
        .status()
        .is_ok_and(|s| s.success())
}

fn debian_packages() -> Result<()> {
    let step = "Debian packages";
    let missing: Vec<_> = DEBIAN_PACKAGES.iter().filter(|(bin, _, _)| !have(bin)).collect();
    if missing.is_empty() {
        eprintln!("setup: Debian packages: all present");
        return Ok(());
    }
    let names: Vec<&str> = missing.iter().map(|(_, pkg, _)| *pkg).collect();
    for (_, pkg, why) in &missing {
        eprintln!("setup: Debian packages: installing {pkg} ({why})");
    }
    let apt = |args: &[&str]| -> Result<()> {
        let st = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .with_context(|| format!("setup step '{step}': could not run apt-get (is this Debian?)"))?;
        if !st.success() {
            bail!(
                "setup step '{step}': `apt-get {}` failed; run it by hand as root to see why \
                 (network to the Debian mirror, or not root)",
                args.join(" ")
            );
        }
        Ok(())
    };
    apt(&["update", "-qq"])?;
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend(names.iter().copied());
    apt(&args)?;
    if names.contains(&"bird2") {
        quiet_packaged_bird()?;
    }
    Ok(())
}

/// On a host run by systemd, Debian's `bird2` enables and starts `bird.service` (a daemon in
/// the root namespace with `/etc/bird/bird.conf`) as it is installed. Nothing of xlb uses it:
/// the tests and the demo start their own `bird -c CONF -s SOCKET -P PIDFILE` inside the
/// namespaces they create. Called only right after this setup installed the package, so the
/// service stopped here is the one the package just started, never an operator's.
/// (Without systemd, e.g. in a container whose `policy-rc.d` forbids starts, nothing started.)
fn quiet_packaged_bird() -> Result<()> {
    let step = "Debian packages (bird2)";
    if !Path::new("/run/systemd/system").exists() {
        return Ok(());
    }
    let active = Command::new("systemctl")
        .args(["is-active", "--quiet", "bird.service"])
        .status()
        .is_ok_and(|s| s.success());
    let enabled = Command::new("systemctl")
        .args(["is-enabled", "--quiet", "bird.service"])
        .status()
        .is_ok_and(|s| s.success());
    if !active && !enabled {
        return Ok(());
    }
    eprintln!(
        "setup: bird2: stopping and disabling the bird.service the package started \
         (xlb's tests run their own bird per namespace; enable it again if you want one)"
    );
    output(
        Command::new("systemctl").args(["disable", "--now", "bird.service"]),
        step,
    )?;
    Ok(())
}

/// cargo-deb [`CARGO_DEB_VERSION`] in `<tools>/bin` (on the PATH of every cargo xtask runs, so
/// `cargo deb` finds it); installed again only when that version is not the one there.
fn cargo_deb(tools_dir: &Path) -> Result<()> {
    let step = "cargo-deb";
    let bin = tools_dir.join("bin/cargo-deb");
    let want = format!("cargo-deb {CARGO_DEB_VERSION}");
    let have = Command::new(&bin)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if have.as_deref() == Some(want.as_str()) {
        eprintln!(
            "setup: cargo-deb: {CARGO_DEB_VERSION} already installed ({})",
            bin.display()
        );
        return Ok(());
    }
    eprintln!("setup: cargo-deb: installing {CARGO_DEB_VERSION} (a few minutes, once)");
    let st = cargo_install(&format!("cargo-deb@{CARGO_DEB_VERSION}"), tools_dir)
        .status()
        .with_context(|| format!("setup step '{step}': could not run cargo install"))?;
    if !st.success() {
        bail!(
            "setup step '{step}': `cargo install cargo-deb@{CARGO_DEB_VERSION}` failed; it needs \
             crates.io. Fix that, then run `cargo xtask setup` again"
        );
    }
    Ok(())
}
