//! Packet loss made on purpose inside one of the test's own namespaces (a backend's), with an
//! nftables table: [`Loss::silent`] drops every packet addressed to the given addresses (a
//! backend that vanished without a RST), [`Loss::random`] drops `in_ten` packets out of ten
//! (`numgen random mod 10 < in_ten`, a lossy link). This kernel has no netem.
//!
//! The rules sit at prerouting, priority raw, so nothing else in the namespace sees a dropped
//! packet. Dropping the [`Loss`] deletes its table (also while unwinding from a panic).

use std::{io::Write as _, net::IpAddr, process::Stdio};

use anyhow::{Context as _, Result, bail};

use crate::netns;

/// The nftables table (family `inet`) the drop rules live in. One per namespace.
pub const TABLE: &str = "xlbloss";

/// An nftables table that drops packets in one namespace until dropped.
pub struct Loss {
    ns: String,
    installed: bool,
}

impl Loss {
    /// Drops every packet to `to` arriving in namespace `ns` (give the VIPs for "traffic to the
    /// VIP", add the host's own addresses to silence its health checks too).
    pub fn silent(ns: &str, to: &[IpAddr]) -> Result<Loss> {
        Loss::install(ns, to, "")
    }

    /// Drops at random `in_ten` out of ten packets to `to` arriving in namespace `ns`.
    pub fn random(ns: &str, to: &[IpAddr], in_ten: u32) -> Result<Loss> {
        if in_ten > 9 {
            bail!("random loss of {in_ten} packets in ten: give 0..=9 (all ten is `Loss::silent`)");
        }
        Loss::install(ns, to, &format!("numgen random mod 10 < {in_ten} "))
    }

    fn install(ns: &str, to: &[IpAddr], condition: &str) -> Result<Loss> {
        if to.is_empty() {
            bail!("no destination address to drop packets to in {ns}");
        }
        let set = |v4: bool| -> String {
            to.iter()
                .filter(|a| a.is_ipv4() == v4)
                .map(IpAddr::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut rules = String::new();
        for (family, v4) in [("ip", true), ("ip6", false)] {
            let addrs = set(v4);
            if !addrs.is_empty() {
                rules += &format!("\t\t{family} daddr {{ {addrs} }} {condition}counter drop\n");
            }
        }
        // `create` fails when the table exists: one loss at a time per namespace.
        let ruleset = format!(
            "create table inet {TABLE}\n\
             table inet {TABLE} {{\n\
             \tchain prerouting {{\n\
             \t\ttype filter hook prerouting priority raw; policy accept;\n\
             {rules}\
             \t}}\n\
             }}\n"
        );
        nft(ns, &["-f", "-"], Some(&ruleset))?;
        Ok(Loss {
            ns: ns.to_string(),
            installed: true,
        })
    }

    /// The namespace the loss is in.
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// Packets dropped so far.
    pub fn dropped(&self) -> Result<u64> {
        let out = nft(&self.ns, &["-j", "list", "table", "inet", TABLE], None)?;
        let json: serde_json::Value = serde_json::from_str(&out).context("parse nft -j output")?;
        Ok(json["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o["rule"]["expr"].as_array())
            .flatten()
            .filter_map(|e| e["counter"]["packets"].as_u64())
            .sum())
    }

    /// Deletes the table now (the packets flow again), reporting a failure.
    pub fn remove(mut self) -> Result<()> {
        self.installed = false;
        nft(&self.ns, &["delete", "table", "inet", TABLE], None).map(drop)
    }
}

impl Drop for Loss {
    fn drop(&mut self) {
        if self.installed {
            // The namespace may already be gone with its table; nothing else to clean.
            let _ = nft(&self.ns, &["delete", "table", "inet", TABLE], None);
        }
    }
}

/// Runs `nft ARGS` inside `ns` (stdin from `input` when given) and returns its stdout.
fn nft(ns: &str, args: &[&str], input: Option<&str>) -> Result<String> {
    let (mut cmd, _ns) = netns::command_in(ns, "nft")?;
    let mut child = cmd
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("run nft (is Debian's nftables installed? `cargo xtask setup` does it)")?;
    let wrote = match (input, child.stdin.take()) {
        (Some(text), Some(mut stdin)) => stdin.write_all(text.as_bytes()),
        _ => Ok(()),
    };
    let out = child.wait_with_output().context("wait for nft")?;
    wrote.context("write the nft ruleset")?;
    if !out.status.success() {
        bail!(
            "nft {} in {ns}: {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
