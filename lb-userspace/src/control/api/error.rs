//! Why a command fails, and the status line that tells a program (the CLI) how it ended.

use crate::{
    balancer::ApplyError,
    datapath::{DatapathError, stick_maps::StickMapError},
};

/// The first word of a command line that asks for the answer's status line.
pub const STATUS_REQUEST: &str = "@status";

/// Why a command failed. Its text is the one-line answer (HAProxy's words where HAProxy has
/// them); [`ApiError::exit_status`] is what the CLI exits with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("Empty command. Type 'help' for the list of commands.")]
    Empty,
    #[error("Unknown command: '{command}'. Type 'help' for the list of commands.")]
    Unknown { command: String },
    #[error("No such table: '{name}'. Tables: {tables}.")]
    NoSuchTable { name: String, tables: String },
    #[error("No such backend: '{service}'.")]
    NoSuchBackend { service: String },
    #[error("No such server: '{service}/{server}'.")]
    NoSuchServer { service: String, server: String },
    #[error("No such frontend: '{name}'. Frontends: {frontends}.")]
    NoSuchFrontend { name: String, frontends: String },
    #[error("Announcements are off: the config has no [announce] section.")]
    NoAnnounce,
    #[error("cannot save the disables to {path}: {source}")]
    SaveDisables { path: String, source: std::io::Error },
    /// An argument that does not parse; the text says what is expected.
    #[error("{message}")]
    BadArgument { message: String },
    #[error("failed to apply: {source}")]
    Apply { source: ApplyError },
    #[error("cannot read the data path: {source}")]
    Datapath { source: DatapathError },
    #[error("cannot read the counters: {source}")]
    Counters { source: DatapathError },
    #[error("cannot read the stick tables: {message}")]
    OpenTables { message: String },
    #[error("cannot read the stick table: {source}")]
    ReadTable { source: StickMapError },
    #[error("cannot clear: {source}")]
    Clear { source: aya::maps::MapError },
}

impl ApiError {
    /// The CLI's exit status for this error (success is 0).
    pub fn exit_status(&self) -> u8 {
        1
    }
}

pub(super) fn bad_argument(message: String) -> ApiError {
    ApiError::BadArgument { message }
}

/// The status line that ends an answer to a command line starting with [`STATUS_REQUEST`].
pub fn status_line(result: &Result<(), ApiError>) -> String {
    let status = result.as_ref().map_or_else(ApiError::exit_status, |()| 0);
    format!("{STATUS_REQUEST} {status}\n")
}

/// The answer and its exit status, from a whole answer to a command line that started with
/// [`STATUS_REQUEST`]; `None` when it does not end with a status line (the agent refused the
/// line before running it, or the answer was cut short).
pub fn split_status(answer: &str) -> Option<(&str, u8)> {
    let body = answer.strip_suffix('\n')?;
    let (text, last) = match body.rfind('\n') {
        Some(i) => (&answer[..=i], &body[i + 1..]),
        None => ("", body),
    };
    let status = last
        .strip_prefix(STATUS_REQUEST)?
        .strip_prefix(' ')?
        .parse()
        .ok()?;
    Some((text, status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_without_a_status_line_has_no_status() {
        for answer in [
            "",
            "Command too long: at most 4096 bytes.\n",
            "key=10.0.0.1 use=0 exp=100 server_id=1 server_key=app1\n",
            "@status\n",
            "@status x\n",
            "a\n@status 0",
        ] {
            assert_eq!(split_status(answer), None, "{answer:?}");
        }
    }
}
