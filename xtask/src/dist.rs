//! `cargo xtask install [--root DIR]` and `cargo xtask package`: the files of an installed xlb.
//!
//! The binary, its systemd unit (`dist/xlb.service`), the example configuration (never written
//! over an operator's), shell completions and man pages. The binary prints the last two itself
//! from its clap definitions (`xlb completions SHELL`, `xlb manpages DIR`), so they always match
//! it. The Debian package (cargo-deb; `[package.metadata.deb]` in lb-userspace/Cargo.toml) holds
//! the same files: the binary, unit and configuration by its own asset list, the completions and
//! man pages from the tree [`write_docs`] stages under [`STAGE`]. The tests (`dist/tests.rs`)
//! check both against each other.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

/// Where each file goes, relative to the root it is installed under.
pub const BIN: &str = "usr/bin/xlb";
pub const UNIT: &str = "usr/lib/systemd/system/xlb.service";
pub const CONFIG: &str = "etc/xlb/xlb.toml";
pub const MAN_DIR: &str = "usr/share/man/man1";
/// (shell, where its completion script goes): the directories each shell loads on demand.
pub const COMPLETIONS: [(&str, &str); 3] = [
    ("bash", "usr/share/bash-completion/completions/xlb"),
    ("zsh", "usr/share/zsh/vendor-completions/_xlb"),
    ("fish", "usr/share/fish/vendor_completions.d/xlb.fish"),
];

/// The sources in the repository.
const UNIT_SOURCE: &str = "dist/xlb.service";
const CONFIG_SOURCE: &str = "examples/xlb.toml";
/// The generated files the package takes, below the workspace root (the package's asset list
/// names it).
pub const STAGE: &str = "target/xlb-dist";

/// Installs every file under `dest` (`/` for the machine itself) with the built binary `xlb`.
pub fn install(repo: &Path, xlb: &Path, dest: &Path) -> Result<()> {
    put(&xlb_bytes(xlb)?, &dest.join(BIN), 0o755)?;
    put(&read(&repo.join(UNIT_SOURCE))?, &dest.join(UNIT), 0o644)?;
    let config = dest.join(CONFIG);
    if config.exists() {
        eprintln!("xtask: install: {} kept (it exists)", config.display());
    } else {
        put(&read(&repo.join(CONFIG_SOURCE))?, &config, 0o644)?;
    }
    write_docs(xlb, dest)?;
    if dest == Path::new("/") {
        eprintln!(
            "xtask: installed. Next: edit /etc/xlb/xlb.toml (`xlb check -c /etc/xlb/xlb.toml`), then\n  \
             systemctl daemon-reload && systemctl enable --now xlb\n\
             (an agent already running takes the new binary with `systemctl try-restart xlb`; the \
             data path forwards meanwhile)"
        );
    }
    Ok(())
}

/// Writes the completion scripts and the gzipped man pages that `xlb` prints, under `dest`.
pub fn write_docs(xlb: &Path, dest: &Path) -> Result<()> {
    for (shell, path) in COMPLETIONS {
        let out = run_xlb(xlb, &["completions", shell])?;
        put(&out, &dest.join(path), 0o644)?;
    }
    let man = dest.join(MAN_DIR);
    mkdir(&man)?;
    let pages = man.display().to_string();
    run_xlb(xlb, &["manpages", &pages])?;
    for entry in fs::read_dir(&man).with_context(|| format!("read {}", man.display()))? {
        let page = entry?.path();
        if page.extension().is_some_and(|e| e == "1") {
            // Debian's way: gzip -9n (no name or time stamp inside, so builds compare equal).
            let st = Command::new("gzip")
                .args(["-9nf"])
                .arg(&page)
                .status()
                .context("could not run gzip")?;
            if !st.success() {
                bail!("gzip {} failed ({st})", page.display());
            }
            fs::set_permissions(page.with_extension("1.gz"), fs::Permissions::from_mode(0o644))?;
            eprintln!("xtask: install: {}.gz", page.display());
        }
    }
    Ok(())
}

/// `cargo xtask package`: the completions and man pages staged under [`STAGE`], then
/// `cargo deb --no-build` over the release binary already built. Returns the package's path.
pub fn package(repo: &Path, xlb: &Path, mut cargo: Command) -> Result<PathBuf> {
    let stage = repo.join(STAGE);
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("remove {}", stage.display()))?;
    }
    write_docs(xlb, &stage)?;
    cargo.args(["deb", "-p", "lb-userspace", "--no-build", "--output"]);
    cargo.arg(repo.join("target/debian"));
    eprintln!("xtask: cargo deb -p lb-userspace --no-build");
    let out = cargo
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("could not run `cargo deb` (cargo xtask setup installs cargo-deb)")?;
    if !out.status.success() {
        bail!("cargo deb failed ({})", out.status);
    }
    // cargo-deb prints the package's path, and nothing else, on stdout.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let deb = stdout
        .lines()
        .rev()
        .find(|l| l.trim_end().ends_with(".deb"))
        .map(|l| PathBuf::from(l.trim()))
        .with_context(|| format!("cargo deb printed no package path:\n{stdout}"))?;
    Ok(deb)
}

fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("read {}", path.display()))
}

fn xlb_bytes(xlb: &Path) -> Result<Vec<u8>> {
    read(xlb).context("build it first (`cargo xtask build`)")
}

/// `xlb ARGS`' stdout; an error carries its stderr.
fn run_xlb(xlb: &Path, args: &[&str]) -> Result<Vec<u8>> {
    let out = Command::new(xlb)
        .args(args)
        .output()
        .with_context(|| format!("could not run {}", xlb.display()))?;
    if !out.status.success() {
        bail!(
            "`{} {}` failed ({}): {}",
            xlb.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

fn mkdir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("mkdir -p {}", dir.display()))
}

/// Writes `bytes` to `path` with `mode`, through a new file renamed over the old one: a running
/// `xlb` is replaced, not written into (which the kernel refuses: ETXTBSY).
fn put(bytes: &[u8], path: &Path, mode: u32) -> Result<()> {
    mkdir(
        path.parent()
            .context("a file to install has a parent directory")?,
    )?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".xtask-new");
    let tmp = PathBuf::from(tmp);
    fs::write(&tmp, bytes).with_context(|| format!("write {}", tmp.display()))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("rename {} to {}", tmp.display(), path.display()))?;
    eprintln!("xtask: install: {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests;
