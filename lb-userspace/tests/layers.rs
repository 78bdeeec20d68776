//! The agent's layout holds (see `src/lib.rs`): each group imports only from the groups above
//! it, and only `agent` spawns tasks on the agent's runtime or holds the balancer's lock. Read
//! from the sources, so a change that breaks the rule fails here, not in review.

use std::{
    fs,
    path::{Path, PathBuf},
};

/// The groups, lowest first: a group may import from those before it.
const LAYERS: [&str; 8] = [
    "net", "config", "import", "datapath", "health", "balancer", "control", "agent",
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file below `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// The group a file belongs to (the first folder below `src/`), if it is in one.
fn group_of(file: &Path) -> Option<&'static str> {
    let first = file.strip_prefix(src()).ok()?.components().next()?;
    let name = first.as_os_str().to_str()?;
    LAYERS.iter().copied().find(|g| *g == name)
}

/// The top-level names after each `crate::` in `text`: `crate::a::b` gives `a`, and
/// `crate::{a::x, b}` gives `a` and `b`.
fn crate_paths(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(list) = rest.strip_prefix('{') {
            // Split the braced list at its top-level commas.
            let (mut depth, mut item) = (0, String::new());
            for c in list.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.push(first_segment(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            out.push(first_segment(&item));
        } else {
            out.push(first_segment(rest));
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

fn first_segment(path: &str) -> String {
    path.trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// A file compiled only for tests: its parent module declares it under `#[cfg(test)]`.
fn test_only(file: &Path) -> bool {
    let stem = file.file_stem().unwrap().to_str().unwrap();
    let dir = file.parent().unwrap();
    let parent = if stem == "mod" {
        return false;
    } else if dir.join("mod.rs").exists() {
        dir.join("mod.rs")
    } else {
        dir.with_extension("rs")
    };
    let text = fs::read_to_string(parent).unwrap_or_default();
    text.contains(&format!("#[cfg(test)]\nmod {stem};"))
}

/// The part of a file that is built outside tests (everything before its first `#[cfg(test)]`
/// item; by our habit the test module comes last).
fn non_test_part(text: &str) -> &str {
    text.split("#[cfg(test)]").next().unwrap()
}

/// The groups above `group` in the layer order that `text` (a file of `group`) uses.
fn upward_imports(group: &str, text: &str) -> Vec<String> {
    let rank = LAYERS.iter().position(|g| *g == group).unwrap();
    crate_paths(text)
        .into_iter()
        .filter(|used| LAYERS.iter().position(|g| g == used).is_some_and(|r| r > rank))
        .collect()
}

#[test]
fn each_group_imports_only_from_the_groups_above_it() {
    let mut wrong = Vec::new();
    for file in rust_files(&src()) {
        let Some(group) = group_of(&file) else { continue };
        let text = fs::read_to_string(&file).unwrap();
        for used in upward_imports(group, &text) {
            wrong.push(format!("{} ({group}) uses crate::{used}", file.display()));
        }
    }
    assert!(wrong.is_empty(), "layer rule broken:\n{}", wrong.join("\n"));
}

#[test]
fn only_the_agent_spawns_tasks_or_holds_the_balancers_lock() {
    let mut wrong = Vec::new();
    for file in rust_files(&src()) {
        // `net` runs its netlink requests on a short-lived runtime of its own (net::link).
        if matches!(group_of(&file), None | Some("agent") | Some("net")) || test_only(&file) {
            continue;
        }
        let text = fs::read_to_string(&file).unwrap();
        for pattern in SPAWN_OR_LOCK {
            if non_test_part(&text).contains(pattern) {
                wrong.push(format!("{}: {pattern}", file.display()));
            }
        }
    }
    assert!(wrong.is_empty(), "outside agent/:\n{}", wrong.join("\n"));
}

/// What spawning on the agent's runtime or holding the balancer's lock looks like in a source.
const SPAWN_OR_LOCK: [&str; 4] = ["tokio::spawn", "spawn_blocking", "task::spawn", "Mutex<Balancer>"];

/// The checks above find what they look for (or they would pass on anything).
#[test]
fn the_checks_see_what_they_look_for() {
    let text = "use crate::{agent::x, net::{a, b}, config};\nlet z = crate::control::d();";
    assert_eq!(crate_paths(text), ["agent", "net", "config", "control"]);
    assert_eq!(upward_imports("balancer", text), ["agent", "control"]);
    assert!(upward_imports("agent", text).is_empty());
    assert!(test_only(&src().join("health/tests.rs")));
    assert!(!test_only(&src().join("health/probe.rs")));
    assert_eq!(group_of(&src().join("control/peers/wire.rs")), Some("control"));
    let spawning = "fn f() { tokio::spawn(g()); }\n#[cfg(test)]\nmod tests {}";
    assert!(SPAWN_OR_LOCK.iter().any(|p| non_test_part(spawning).contains(p)));
    assert!(!non_test_part("fn f() {}\n#[cfg(test)]\nmod tests { tokio::spawn(g()); }").contains("spawn"));
}
