//! `xlb import haproxy.cfg`: an HAProxy configuration converted into xlb's, with a warning
//! for each line it cannot carry that says why xlb does not need it or what it does instead.
//!
//! `lexer` reads haproxy.cfg's lines into words (quotes, escapes, comments, `.if` blocks);
//! `haproxy` reads the sections into proxies (`defaults` inherited, each keyword xlb can
//! carry kept with its line: `model`, `keywords`, `server`); `convert` makes xlb services of
//! them (`stickiness`, `checks`, `servers`, and `peering` for the `peers` sections), with
//! `address` reading haproxy.cfg's addresses; `emit` writes the TOML; `warnings` holds the
//! warning type and the catalogue of keywords not carried, each with its reason. The output always
//! passes the validation `xlb check` runs (`config::parse`): an import that would not is an
//! error, never a file.

mod address;
mod convert;
mod emit;
mod haproxy;
mod lexer;
mod warnings;

use std::{collections::HashMap, path::Path};

pub use warnings::Warning;

use crate::config::{self, ConfigError};

/// A converted config: the xlb TOML, and the warnings (by line).
#[derive(Debug)]
pub struct Imported {
    pub toml: String,
    pub warnings: Vec<Warning>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {file}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{file}: nothing to convert: no frontend, backend or listen section with servers (xlb import \
         reads HAProxy configuration files)"
    )]
    NothingToConvert { file: String },
    /// A bug of the import: what it wrote does not validate.
    #[error("{file}: the converted config does not validate; please report it with the haproxy.cfg")]
    Invalid {
        file: String,
        #[source]
        source: Box<ConfigError>,
    },
}

/// Convert the haproxy.cfg at `path` (see `import`).
pub fn import_file(path: &Path, local_peer: Option<&str>) -> Result<Imported, ImportError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ImportError::Read {
        file: file.clone(),
        source,
    })?;
    import(&text, &file, local_peer)
}

/// Convert haproxy.cfg `text` (named `file` in the output's comments and errors). `local_peer`
/// names this instance in a `peers` section when `global` has no `localpeer` (HAProxy takes
/// the host name).
pub fn import(text: &str, file: &str, local_peer: Option<&str>) -> Result<Imported, ImportError> {
    let mut warn = warnings::Warnings::default();
    let lines = lexer::lex(text, &mut warn);
    let texts: HashMap<usize, String> = lines.iter().map(|l| (l.number, l.text())).collect();
    let read = haproxy::read(&lines, &mut warn);
    let plan = convert::convert(&read, texts, local_peer, &mut warn);
    if plan.services.is_empty() {
        return Err(ImportError::NothingToConvert {
            file: file.to_string(),
        });
    }
    warn.at(
        0,
        format!(
            "the XDP interface is not in haproxy.cfg: interface = \"{}\" written; set the interface the \
             clients' traffic arrives on",
            emit::PLACEHOLDER_INTERFACE
        ),
    );
    warn.at(
        0,
        "xlb forwards by direct server return: each server must hold its service's VIP on its loopback \
         (e.g. `ip addr add VIP/32 dev lo`, with arp_ignore=1 and arp_announce=2) and answers clients itself",
    );
    let toml = emit::emit(&plan, file);
    config::parse(&toml, file).map_err(|source| ImportError::Invalid {
        file: file.to_string(),
        source: Box::new(source),
    })?;
    Ok(Imported {
        toml,
        warnings: warn.into_sorted(),
    })
}

/// This host's name, HAProxy's default name for the local peer.
pub fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    Some(name.trim().to_string()).filter(|n| !n.is_empty())
}
