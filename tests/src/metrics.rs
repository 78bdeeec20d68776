//! The agent's metrics endpoint as a scraper sees it, and the checks every scrape passes:
//! `promtool check metrics` and one block per family.

use std::io::{Read as _, Write as _};

use crate::lbenv::LbEnv;

/// The HTTP answer (head and body) of `GET /metrics` at `addr`, from inside the LB's namespace.
pub fn scrape(e: &LbEnv, addr: &str) -> String {
    get(e, addr, "/metrics")
}

/// The HTTP answer (head and body) of `GET PATH` at `addr`, from inside the LB's namespace.
pub fn get(e: &LbEnv, addr: &str, path: &str) -> String {
    let (addr, request) = (
        addr.to_string(),
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"),
    );
    e.topo
        .run_in(e.lb, move || {
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            s.set_read_timeout(Some(std::time::Duration::from_secs(15)))
                .unwrap();
            s.write_all(request.as_bytes()).unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        })
        .unwrap()
}

/// The exposition text of an HTTP answer from [`scrape`], after checking its status, its
/// `Content-Type`, what `promtool check metrics` says of it and that each family is one block.
pub fn checked_text(answer: &str) -> &str {
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(
        answer.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
        "{answer}"
    );
    let text = answer.split_once("\r\n\r\n").unwrap().1;
    promtool_check_metrics(text);
    families_are_contiguous(text);
    text
}

/// The value of the sample that `prefix` (name and labels, then a space) starts.
pub fn sample(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("metrics lack {prefix}:\n{text}"))
        .parse()
        .unwrap()
}

/// `promtool check metrics` (Debian's `prometheus` package, which `cargo xtask setup` installs)
/// finds no problem in `text`. A missing promtool fails the test: it never skips.
pub fn promtool_check_metrics(text: &str) {
    let mut p = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run promtool ({e}): run `cargo xtask setup`, which installs Debian's prometheus package")
        });
    p.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = p.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics ({}): {said}\non:\n{text}",
        out.status
    );
}

/// Each family's `# HELP` and `# TYPE` come once, right before all of its samples.
pub fn families_are_contiguous(text: &str) {
    let mut done: Vec<&str> = Vec::new();
    let mut current = "";
    for l in text.lines() {
        let name = match l.strip_prefix("# HELP ") {
            Some(h) => h.split(' ').next().unwrap(),
            None if l.starts_with('#') => continue,
            None => l.split(['{', ' ']).next().unwrap(),
        };
        if name != current {
            assert!(!done.contains(&name), "{name} comes twice:\n{text}");
            assert!(
                l.starts_with("# HELP "),
                "{l} is not under its family's # HELP:\n{text}"
            );
            done.push(name);
            current = name;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::families_are_contiguous;

    /// The shape of the old hand-written output: one family's samples between another's.
    #[test]
    #[should_panic(expected = "xlb_service_packets_total comes twice")]
    fn interleaved_samples_are_caught() {
        families_are_contiguous(
            "# HELP xlb_service_packets_total p\n# TYPE xlb_service_packets_total counter\n\
             xlb_service_packets_total{service=\"a\"} 1\n\
             # HELP xlb_service_bytes_total b\n# TYPE xlb_service_bytes_total counter\n\
             xlb_service_bytes_total{service=\"a\"} 1\n\
             xlb_service_packets_total{service=\"b\"} 1\n",
        );
    }

    #[test]
    #[should_panic(expected = "is not under its family's # HELP")]
    fn a_family_without_help_is_caught() {
        families_are_contiguous("# TYPE xlb_stick_table_used gauge\nxlb_stick_table_used 1\n");
    }

    #[test]
    fn one_block_per_family_passes() {
        families_are_contiguous(
            "# HELP a_total x\n# TYPE a_total counter\na_total{s=\"1\"} 1\na_total{s=\"2\"} 1\n\
             # HELP b y\n# TYPE b gauge\nb 2\n",
        );
    }
}
