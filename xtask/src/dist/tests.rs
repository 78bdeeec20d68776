//! `cargo xtask install` into a temporary root, file by file; `systemd-analyze verify` on the
//! unit it installed; the package `cargo xtask package` built (`cargo xtask test` builds it and
//! names it in `XLB_DEB`) read with `dpkg-deb`: the same files, the conffile, the unit's scripts.

use std::{
    collections::BTreeMap,
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use super::{BIN, COMPLETIONS, CONFIG, MAN_DIR, UNIT, install};

fn repo() -> PathBuf {
    crate::workspace_root()
}

/// The release binary: $XLB_BIN (set by `cargo xtask test`) or target/release/xlb.
fn xlb() -> PathBuf {
    let p = std::env::var_os("XLB_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/release/xlb"));
    assert!(
        p.exists(),
        "{} does not exist: build it with `cargo xtask build` (cargo xtask test does)",
        p.display()
    );
    p
}

/// A directory of this test's own, removed when dropped (also on panic).
struct TempRoot(PathBuf);

impl TempRoot {
    fn new(name: &str) -> TempRoot {
        let dir = std::env::temp_dir().join(format!("xlb-xtask-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempRoot(dir)
    }
}

impl Drop for TempRoot {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A root with everything installed.
fn installed(name: &str) -> TempRoot {
    let root = TempRoot::new(name);
    install(&repo(), &xlb(), &root.0).unwrap_or_else(|e| panic!("install: {e:#}"));
    root
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The subcommands `xlb --help` lists.
fn subcommands() -> Vec<String> {
    let help = text(&run(Command::new(xlb()).arg("--help")).stdout);
    let list = commands_in(&help);
    assert!(list.len() >= 10 && list.contains(&"run".into()), "{help}");
    list
}

/// The subcommands a `--help` text lists under "Commands:".
fn commands_in(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// The subcommands of subcommand `s` (`xlb decap attach`, ...), which get pages of their own
/// (`xlb-decap-attach.1`); their `help` gets none.
fn nested_subcommands(s: &str) -> Vec<String> {
    let help = text(&run(Command::new(xlb()).args([s, "--help"])).stdout);
    commands_in(&help).into_iter().filter(|n| n != "help").collect()
}

/// Every file under `dir` (relative path -> mode bits).
fn files(dir: &Path) -> BTreeMap<String, u32> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, u32>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let md = fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                walk(base, &p, out);
            } else {
                let rel = p.strip_prefix(base).unwrap().display().to_string();
                out.insert(rel, md.permissions().mode() & 0o7777);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn gunzip(path: &Path) -> String {
    let out = run(Command::new("gzip").arg("-dc").arg(path));
    assert!(
        out.status.success(),
        "gzip -dc {}: {}",
        path.display(),
        text(&out.stderr)
    );
    text(&out.stdout)
}

#[test]
fn install_puts_every_file_in_place_and_keeps_an_existing_config() {
    let root = installed("files");
    let r = &root.0;
    let subs = subcommands();

    // Exactly these files, with these modes.
    let mut want: BTreeMap<String, u32> = [(BIN, 0o755), (UNIT, 0o644), (CONFIG, 0o644)]
        .into_iter()
        .chain(COMPLETIONS.iter().map(|(_, p)| (*p, 0o644)))
        .map(|(p, m)| (p.to_string(), m))
        .collect();
    want.insert(format!("{MAN_DIR}/xlb.1.gz"), 0o644);
    for s in &subs {
        want.insert(format!("{MAN_DIR}/xlb-{s}.1.gz"), 0o644);
        for n in nested_subcommands(s) {
            want.insert(format!("{MAN_DIR}/xlb-{s}-{n}.1.gz"), 0o644);
        }
    }
    assert_eq!(files(r), want);

    // The binary runs; unit and config are the repository's.
    let v = run(Command::new(r.join(BIN)).arg("--version"));
    assert!(text(&v.stdout).starts_with("xlb "), "{}", text(&v.stdout));
    assert_eq!(
        fs::read(r.join(UNIT)).unwrap(),
        fs::read(repo().join("dist/xlb.service")).unwrap()
    );
    assert_eq!(
        fs::read(r.join(CONFIG)).unwrap(),
        fs::read(repo().join("examples/xlb.toml")).unwrap()
    );

    // Each completion script offers every subcommand, in its shell's own form.
    for (shell, path) in COMPLETIONS {
        let script = fs::read_to_string(r.join(path)).unwrap();
        for s in &subs {
            let offered = match shell {
                "bash" => format!("xlb,{s})"),
                "zsh" => format!("'{s}:"),
                _ => format!("-a \"{s}\""),
            };
            assert!(
                script.contains(&offered),
                "{shell} completion lacks {s} ({offered})"
            );
        }
    }

    // The man pages: xlb(1) with its sections, naming every subcommand's page.
    let page = gunzip(&r.join(MAN_DIR).join("xlb.1.gz"));
    for section in [
        ".TH xlb 1",
        ".SH NAME",
        ".SH SYNOPSIS",
        ".SH OPTIONS",
        ".SH SUBCOMMANDS",
    ] {
        assert!(page.contains(section), "xlb.1 lacks {section}:\n{page}");
    }
    for s in &subs {
        assert!(
            page.contains(&format!("xlb\\-{s}(1)")),
            "xlb.1 does not name xlb-{s}(1)"
        );
        let sub = gunzip(&r.join(MAN_DIR).join(format!("xlb-{s}.1.gz")));
        assert!(
            sub.contains(".SH NAME") && sub.contains(".SH SYNOPSIS"),
            "xlb-{s}.1:\n{sub}"
        );
    }
    let run_page = gunzip(&r.join(MAN_DIR).join("xlb-run.1.gz"));
    assert!(
        run_page.contains("\\-\\-config"),
        "xlb-run.1 shows -c/--config:\n{run_page}"
    );

    // Installed again over an operator's configuration: the configuration stays.
    fs::write(r.join(CONFIG), "# the operator's\n").unwrap();
    install(&repo(), &xlb(), r).unwrap();
    assert_eq!(fs::read_to_string(r.join(CONFIG)).unwrap(), "# the operator's\n");
    assert_eq!(files(r), want, "a second install adds nothing");
}

/// `systemd-analyze verify` on `unit` (its `/usr/bin/xlb` pointing at `root`'s copy: the
/// command must exist) with the man pages under `root`: Ok, or what it said.
fn verify_unit(root: &Path, unit: &str) -> Result<String, String> {
    let dir = root.join("verify");
    fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("xlb.service");
    let bin = root.join(BIN).display().to_string();
    fs::write(&copy, unit.replace("/usr/bin/xlb", &bin)).unwrap();
    let out = run(Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .env("MANPATH", root.join("usr/share/man")));
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    // It exits 0 on warnings (an unknown key, a value it cannot parse): any word is a failure.
    if out.status.success() && said.trim().is_empty() {
        Ok(said)
    } else {
        Err(format!("{}: {said}", out.status))
    }
}

#[test]
fn installed_unit_passes_systemd_analyze_verify() {
    let root = installed("verify");
    let unit = fs::read_to_string(root.0.join(UNIT)).unwrap();
    if let Err(e) = verify_unit(&root.0, &unit) {
        panic!("systemd-analyze verify on the installed xlb.service: {e}");
    }
    for line in [
        "Type=notify",
        "ExecStartPre=/usr/bin/xlb check -c /etc/xlb/xlb.toml",
        "ExecStart=/usr/bin/xlb run -c /etc/xlb/xlb.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "RuntimeDirectory=xlb",
    ] {
        assert!(unit.lines().any(|l| l == line), "the unit lacks {line}");
    }
}

#[test]
fn systemd_analyze_verify_refuses_a_broken_unit() {
    // The check above is only worth something if it fails: a misspelt key, a bad value, a
    // command that is not there, and a man page that is not installed.
    let root = installed("broken");
    let unit = fs::read_to_string(root.0.join(UNIT)).unwrap();
    for (from, to) in [
        ("Type=notify", "Typ=notify"),
        ("Restart=on-failure", "Restart=sometimes"),
        ("/bin/kill", "/bin/no-such-kill"),
        ("man:xlb(1)", "man:xlb-nonesuch(1)"),
    ] {
        assert!(unit.contains(from), "{from}");
        let broken = unit.replacen(from, to, 1);
        assert!(verify_unit(&root.0, &broken).is_err(), "verify passed with {to}");
    }
}

/// The package: $XLB_DEB (set by `cargo xtask test`), else the newest target/debian/xlb_*.deb,
/// which must not be older than the binary it packages.
fn deb() -> PathBuf {
    if let Some(p) = std::env::var_os("XLB_DEB") {
        return PathBuf::from(p);
    }
    let newest = fs::read_dir(repo().join("target/debian"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("xlb_"))
        })
        .max_by_key(|p| fs::metadata(p).and_then(|m| m.modified()).ok())
        .unwrap_or_else(|| {
            panic!("no target/debian/xlb_*.deb: run `cargo xtask package` (cargo xtask test does)")
        });
    let mtime = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).unwrap();
    assert!(
        mtime(&newest) >= mtime(&xlb()),
        "{} is older than the binary: run `cargo xtask package` (cargo xtask test does)",
        newest.display()
    );
    newest
}

fn dpkg_deb(args: &[&str], deb: &Path) -> String {
    let out = run(Command::new("dpkg-deb").args(args).arg(deb));
    assert!(out.status.success(), "dpkg-deb {args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn package_holds_the_installed_files() {
    let deb = deb();
    let root = installed("package");

    // `dpkg-deb --contents`: path -> mode, files only (the directories are implied).
    let contents = dpkg_deb(&["--contents"], &deb);
    let mut packaged = BTreeMap::new();
    for line in contents.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (perms, owner, path) = (f[0], f[1], f[f.len() - 1]);
        assert_eq!(owner, "0/0", "{line}");
        if let Some(bits) = perms.strip_prefix('-') {
            let mode = bits.chars().fold(0u32, |m, c| (m << 1) | u32::from(c != '-'));
            packaged.insert(path.trim_start_matches("./").to_string(), mode);
        }
    }
    // The package's own extra: its copyright file.
    assert!(
        packaged.remove("usr/share/doc/xlb/copyright").is_some(),
        "{contents}"
    );
    assert_eq!(
        packaged,
        files(&root.0),
        "the package and the install differ:\n{contents}"
    );

    // Byte for byte the same, but for the binary (cargo-deb strips it): it runs.
    let unpacked = TempRoot::new("unpacked");
    let out = run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked.0));
    assert!(out.status.success(), "dpkg-deb -x: {}", text(&out.stderr));
    for path in files(&root.0).keys().filter(|p| p.as_str() != BIN) {
        assert_eq!(
            fs::read(unpacked.0.join(path)).unwrap(),
            fs::read(root.0.join(path)).unwrap(),
            "{path} differs between the package and the install"
        );
    }
    let v = run(Command::new(unpacked.0.join(BIN)).arg("--version"));
    assert!(text(&v.stdout).starts_with("xlb "), "{}", text(&v.stderr));

    // `dpkg-deb --info`: the name, the conffile, and the unit's handling by the scripts.
    let info = dpkg_deb(&["--info"], &deb);
    assert!(info.contains(" Package: xlb\n"), "{info}");
    assert!(info.contains(" Depends: libc6"), "{info}");
    let control = |name: &str| {
        let out = run(Command::new("sh").arg("-c").arg(format!(
            "dpkg-deb --ctrl-tarfile '{}' | tar -xOf - ./{name}",
            deb.display()
        )));
        assert!(
            out.status.success(),
            "{name} in the package: {}",
            text(&out.stderr)
        );
        text(&out.stdout)
    };
    assert_eq!(control("conffiles"), "/etc/xlb/xlb.toml\n");
    let postinst = control("postinst");
    assert!(postinst.contains("daemon-reload"), "{postinst}");
    // Upgrades restart a running agent (the data path forwards meanwhile); a first install
    // neither enables nor starts it: the example configuration is not the operator's.
    assert!(postinst.contains("try-restart xlb.service"), "{postinst}");
    assert!(!postinst.contains("deb-systemd-invoke start"), "{postinst}");
    assert!(control("prerm").contains("stop xlb.service"));
}
