//! End-to-end benchmark (connections per second through xlb vs straight vs HAProxy).

use anyhow::Result;

use super::Report;

pub fn run() -> Result<Report> {
    anyhow::bail!("the e2e benchmark is not implemented yet (issue 6)")
}
