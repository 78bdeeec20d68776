//! Builds the XDP programs (`lb-ebpf`) for `bpfel-unknown-none` with the nightly toolchain and
//! hands their objects to the crate (`include_bytes_aligned!`): the balancer (`xlb.bpf.o`) and
//! the backend hosts' decapsulator (`xlb-decap.bpf.o`, an object of its own), and for the
//! benchmarks the balancer again without passive health's packet code (`xlb-without-passive.bpf.o`,
//! feature `passive` off: a few seconds more; nothing but the benchmarks refers to it, so the
//! `xlb` binary does not carry it).
//!
//! The eBPF build uses its own target dir, `target/bpf`, shared by every profile of this crate,
//! so it stays incremental: a change in `lb-userspace` alone never rebuilds it.
//! `cargo xtask setup` installs what it needs (rust-src, bpf-linker in `target/xlb-tools/bin`).
//! `XLB_SKIP_EBPF=1` embeds an empty object instead (for work on the user side only; loading
//! then fails with a message that says so).

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap().to_path_buf();
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    let objects = [("xlb", "xlb.bpf.o"), ("xlb-decap", "xlb-decap.bpf.o")];
    let baseline = "xlb-without-passive.bpf.o";
    for p in [
        "lb-ebpf/src",
        "lb-ebpf/Cargo.toml",
        "lb-common/src",
        "lb-common/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    println!("cargo:rerun-if-env-changed=XLB_SKIP_EBPF");

    if env::var("XLB_SKIP_EBPF").is_ok_and(|v| v == "1") {
        println!("cargo:warning=XLB_SKIP_EBPF=1: embedding empty eBPF objects");
        for object in objects.map(|(_, o)| o).into_iter().chain([baseline]) {
            std::fs::write(out_dir.join(object), b"").unwrap();
        }
        return;
    }
    let copy = |obj: PathBuf, out: PathBuf| {
        std::fs::copy(&obj, &out)
            .unwrap_or_else(|e| panic!("copy {} -> {}: {e}", obj.display(), out.display()));
    };
    // The baseline first: both builds leave their `xlb` at the same path.
    let built = build_ebpf(&root, &["--bin", "xlb", "--no-default-features"]);
    copy(built.join("xlb"), out_dir.join(baseline));
    let built = build_ebpf(&root, &[]);
    for (bin, object) in objects {
        copy(built.join(bin), out_dir.join(object));
    }
}

/// Build the binaries of `lb-ebpf` (every one, unless `args` says otherwise); the directory that
/// holds their objects.
fn build_ebpf(root: &Path, args: &[&str]) -> PathBuf {
    let tools = root.join("target/xlb-tools/bin");
    let path = format!("{}:{}", tools.display(), env::var("PATH").unwrap_or_default());
    let target_dir = root.join("target/bpf");
    let mut cmd = Command::new("rustup");
    cmd.args([
        "run",
        "nightly",
        "cargo",
        "build",
        "--release",
        "--package",
        "lb-ebpf",
    ])
    .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
    .args(args)
    .arg("--target-dir")
    .arg(&target_dir)
    .current_dir(root)
    .env("PATH", path)
    .env(
        "CARGO_ENCODED_RUSTFLAGS",
        [
            "--cfg=bpf_target_arch=\"x86_64\"",
            "-Cdebuginfo=2",
            "-Clink-arg=--btf",
            // Loads and stores of any alignment (a BPF feature of LLVM 22): without it, LLVM
            // splits each load or store it cannot prove aligned, such as a packet field's, into
            // single bytes. The kernel takes them (no strict alignment on x86-64, the only
            // target built for). 13 % fewer instructions in the main program, 14 % in the
            // encapsulation stage (bench/RESULTS.md, "Unaligned loads and stores").
            "-Clink-arg=--cpu-features=+allows-misaligned-mem-access",
        ]
        .join("\x1f"),
    );
    // The outer cargo's settings must not leak into the nightly build.
    for key in [
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTUP_TOOLCHAIN",
        "CARGO_PROFILE_RELEASE_DEBUG",
        "CARGO_MAKEFLAGS",
    ] {
        cmd.env_remove(key);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run rustup to build lb-ebpf: {e}"));
    if !status.success() {
        panic!(
            "building the eBPF program (lb-ebpf) failed ({status}). If bpf-linker or rust-src is \
             missing, run `cargo xtask setup` first; otherwise the compiler output above says what broke."
        );
    }
    target_dir.join("bpfel-unknown-none/release")
}
