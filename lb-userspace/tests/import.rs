//! `xlb import`: every haproxy.cfg of `tests/import/corpus/` (the seed article's configurations,
//! 01 to 07, and real-world-shaped files written for this test) converts to exactly the xlb
//! config and the warnings stored beside it (`NN-name.toml`, `NN-name.warnings`), and every
//! config it writes passes what `xlb check` runs (`config::load`), once the peer key file its
//! TODO asks for exists.
//!
//! After a deliberate change of the output, regenerate the expectations with
//! `XLB_BLESS=1 cargo test -p lb-userspace --test import` and review the diff.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/import/corpus")
}

/// The corpus's haproxy.cfg files, sorted.
fn configs() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(corpus())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cfg"))
        .collect();
    out.sort();
    out
}

/// The warnings as `xlb import` prints them.
fn warnings_text(name: &str, imported: &xlb::import::Imported) -> String {
    imported
        .warnings
        .iter()
        .map(|w| format!("{}\n", w.display_in(name)))
        .collect()
}

/// `expected` and `got` are equal, or the test fails showing the first line that differs.
fn same(what: &Path, expected: &str, got: &str) -> Result<(), String> {
    if expected == got {
        return Ok(());
    }
    let (e, g): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), got.lines().collect());
    let i = (0..e.len().max(g.len()))
        .find(|&i| e.get(i) != g.get(i))
        .unwrap_or(0);
    Err(format!(
        "{} differs at line {}:\n  expected: {:?}\n  got:      {:?}\n(XLB_BLESS=1 rewrites the expectations)",
        what.display(),
        i + 1,
        e.get(i),
        g.get(i)
    ))
}

#[test]
fn the_corpus_converts_to_its_expected_configs_and_warnings() {
    let bless = std::env::var_os("XLB_BLESS").is_some();
    let configs = configs();
    // The peer key file the output's TODO asks the operator to make, made here.
    let dir = std::env::temp_dir().join(format!("xlb-import-corpus-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let key = dir.join("peer.key");
    fs::write(&key, "0123456789abcdef0123456789abcdef\n").unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    assert!(
        configs.len() >= 22,
        "the corpus holds {} files; 7 of the seed's and at least 15 more",
        configs.len()
    );
    let mut failures = Vec::new();
    for cfg in &configs {
        let name = cfg.file_name().unwrap().to_str().unwrap();
        let text = fs::read_to_string(cfg).unwrap();
        let imported = xlb::import::import(&text, name, None).unwrap_or_else(|e| panic!("{name}: {e:#?}"));
        // What `xlb check` runs, with the key file made where the output names it.
        let written = dir.join(name).with_extension("toml");
        let with_key = imported
            .toml
            .replace("\"/etc/xlb/peer.key\"", &format!("\"{}\"", key.display()));
        fs::write(&written, with_key).unwrap();
        if let Err(e) = xlb::config::load(&written) {
            failures.push(format!("{name}: the output does not validate: {e}"));
        }
        let warnings = warnings_text(name, &imported);
        for (ext, got) in [("toml", &imported.toml), ("warnings", &warnings)] {
            let path = cfg.with_extension(ext);
            if bless {
                fs::write(&path, got).unwrap();
                continue;
            }
            let expected = fs::read_to_string(&path).unwrap_or_default();
            if let Err(e) = same(&path, &expected, got) {
                failures.push(e);
            }
        }
    }
    fs::remove_dir_all(&dir).unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Every line the corpus warns about is a line of its haproxy.cfg, and no corpus file converts
/// without a warning (each holds something xlb does not carry).
#[test]
fn warnings_point_at_lines_of_the_file() {
    for cfg in configs() {
        let text = fs::read_to_string(&cfg).unwrap();
        let imported = xlb::import::import(&text, "haproxy.cfg", None).unwrap();
        let lines = text.lines().count();
        assert!(imported.warnings.len() > 2, "{}", cfg.display());
        for w in &imported.warnings {
            assert!(w.line <= lines, "{}: {w}", cfg.display());
        }
    }
}

#[test]
fn nothing_to_convert_is_an_error() {
    let e = xlb::import::import(
        "global\n    daemon\n\ndefaults\n    mode tcp\n",
        "haproxy.cfg",
        None,
    )
    .unwrap_err();
    assert!(e.to_string().contains("nothing to convert"), "{e}");
    let e = xlb::import::import("[global]\ninterface = \"eth0\"\n", "xlb.toml", None).unwrap_err();
    assert!(e.to_string().contains("nothing to convert"), "{e}");
}

/// The command: the config on stdout (or -o), the warnings on stderr, exit 0; exit 1 on a
/// file it cannot read or with nothing to convert; and `xlb check` takes what it wrote.
#[test]
fn the_command_prints_the_config_and_the_warnings() {
    let xlb = env!("CARGO_BIN_EXE_xlb");
    let cfg = corpus().join("04-seed-balance-source.cfg");
    let out = Command::new(xlb).arg("import").arg(&cfg).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected_toml = fs::read_to_string(cfg.with_extension("toml")).unwrap();
    let shown = cfg.display().to_string();
    let expected_warnings = fs::read_to_string(cfg.with_extension("warnings"))
        .unwrap()
        .replace("04-seed-balance-source.cfg", &shown);
    // The header names the file as given.
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        expected_toml.replace("from 04-seed-balance-source.cfg", &format!("from {shown}"))
    );
    assert_eq!(String::from_utf8(out.stderr).unwrap(), expected_warnings);

    let dir = std::env::temp_dir().join(format!("xlb-import-test-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let written = dir.join("xlb.toml");
    let out = Command::new(xlb)
        .arg("import")
        .arg(&cfg)
        .arg("-o")
        .arg(&written)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
    let check = Command::new(xlb)
        .arg("check")
        .arg("-c")
        .arg(&written)
        .output()
        .unwrap();
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    let nothing = dir.join("empty.cfg");
    fs::write(&nothing, "global\n    daemon\n").unwrap();
    for bad in [nothing.as_path(), dir.join("absent.cfg").as_path()] {
        let out = Command::new(xlb).arg("import").arg(bad).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", bad.display());
        assert!(out.stdout.is_empty());
    }
    fs::remove_dir_all(&dir).unwrap();
}
