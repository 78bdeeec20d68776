//! Headless Chromium (Debian's `chromium`, which `cargo xtask setup` installs) run by a test: it
//! loads a page inside a host's namespace, lets its scripts run for a bounded virtual time, and
//! returns the rendered DOM; it can save a screenshot too. Killed (its whole process group) if
//! it has not finished in [`DEADLINE`]; its profile lives in a directory of the test's.

use std::{
    io::Read as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use crate::{HostId, Topology};

/// How long one Chromium run may take before it is killed.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// One page load.
pub struct PageLoad<'a> {
    pub url: &'a str,
    /// Virtual time the page's scripts get (timers run in it; network fetches pause it).
    pub virtual_time: Duration,
    /// Where to save a screenshot of the window (`width`, `height`), if anywhere.
    pub screenshot: Option<(&'a Path, u32, u32)>,
    /// A directory of the test's: Chromium's profile and HOME go below it.
    pub scratch: &'a Path,
}

/// The path of the `chromium` binary, or a panic that says how to get it (a missing browser
/// fails the test: it never skips).
fn chromium() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("chromium"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("no chromium on PATH: run `cargo xtask setup`, which installs Debian's chromium")
    })
}

/// Loads `load.url` in headless Chromium inside `host`'s namespace (where the agent's metrics
/// listener is) and returns the DOM after the virtual time; panics with Chromium's stderr if
/// it fails or overruns [`DEADLINE`].
pub fn dump_dom(topo: &Topology, host: HostId, load: &PageLoad) -> String {
    let profile = load.scratch.join("chromium-profile");
    std::fs::create_dir_all(&profile).unwrap();
    let stderr_path = load.scratch.join("chromium.stderr");
    let stderr = std::fs::File::create(&stderr_path).unwrap();
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        // As root, Chromium refuses to start with its sandbox.
        "--no-sandbox",
        "--disable-gpu",
        "--no-proxy-server",
        "--no-first-run",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .arg(format!("--virtual-time-budget={}", load.virtual_time.as_millis()))
    .arg("--dump-dom")
    .env("HOME", load.scratch)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(stderr);
    if let Some((path, width, height)) = load.screenshot {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let _ = std::fs::remove_file(path);
        cmd.arg(format!("--screenshot={}", path.display()))
            .arg(format!("--window-size={width},{height}"));
    }
    cmd.arg(load.url);
    let child = topo.spawn(host, cmd).expect("start chromium");
    let mut stdout = child.take_stdout().expect("piped stdout");
    // Read while it runs (a DOM larger than the pipe would otherwise block it).
    let reader = std::thread::spawn(move || {
        let mut dom = String::new();
        let _ = stdout.read_to_string(&mut dom);
        dom
    });
    let said = || std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let Some(status) = child.wait_timeout(DEADLINE) else {
        child.kill();
        panic!(
            "chromium did not finish within {DEADLINE:?}; killed. Its stderr:\n{}",
            said()
        );
    };
    let dom = reader.join().expect("stdout reader");
    assert!(
        status.success() && dom.contains("</html>"),
        "chromium {status} on {}; stdout:\n{dom}\nstderr:\n{}",
        load.url,
        said()
    );
    dom
}
