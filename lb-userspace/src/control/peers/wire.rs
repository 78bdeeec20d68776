//! The peers' wire protocol, without I/O: a mutual challenge on the shared key, then frames of
//! update lines, each carrying a sequence number and an HMAC-SHA256 under a key of its own
//! connection.
//!
//! ```text
//! sender (connects)                          receiver (peer_listen)
//!   xlb-peers 3 <nonce S>               ->
//!                                       <-   <nonce R> <proof R>
//!   <proof S>                           ->
//!   <seq> <len> <mac>\n<len bytes>      ->   (frames, seq = 0, 1, 2, ...)
//! ```
//!
//! - Nonces are 16 random bytes, chosen afresh by each side for each connection; every binary
//!   field travels as lower-case hex.
//! - proof R = HMAC(key, "xlb-peers 3 receiver" ‖ S ‖ R), proof S = HMAC(key, "xlb-peers 3
//!   sender" ‖ S ‖ R): each side proves it holds the key on the other side's fresh nonce, so a
//!   recorded handshake is worth nothing, and the sender sends nothing to an impostor.
//! - Frames are MAC'd with session = HMAC(key, "xlb-peers 3 session" ‖ S ‖ R), over
//!   seq (8 bytes, big endian) ‖ len (4 bytes, big endian) ‖ payload. A frame recorded on one
//!   connection fails on any other (another session key); within one, a frame replayed,
//!   reordered or left out arrives with the wrong sequence number.
//! - The payload is whole update lines (see `peers::Update`), at most [`MAX_FRAME`] bytes; an
//!   empty one is allowed. After the whole table a sender teaches on each connection comes
//!   one line `teach-complete <entries>` ([`teach_complete`]): the receiver then holds the
//!   sender's table (version 3; version 2 had no such line, and is refused with
//!   [`WireError::Version`]: every peer runs the same protocol).

use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;

/// The protocol's first word and version.
pub const PROTOCOL: &str = "xlb-peers 3";
/// The first word of every version's hello.
const PROTOCOL_NAME: &str = "xlb-peers";
/// The line that ends a sender's whole table, before the number of entries it taught.
const TEACH_COMPLETE: &str = "teach-complete";
/// Random bytes each side contributes to a connection.
pub const NONCE_LEN: usize = 16;
/// Longest payload of one frame.
pub const MAX_FRAME: usize = 64 * 1024;
/// Longest handshake or frame header line, newline included (the longest is the challenge:
/// 32 + 1 + 64 hex digits, or the hello: 12 + 32).
pub const MAX_HEADER: usize = 128;

const MAC_LEN: usize = 32;
const LABEL_RECEIVER: &[u8] = b"xlb-peers 3 receiver";
const LABEL_SENDER: &[u8] = b"xlb-peers 3 sender";
const LABEL_SESSION: &[u8] = b"xlb-peers 3 session";

pub type Nonce = [u8; NONCE_LEN];

/// Why a handshake or a frame is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("does not speak {PROTOCOL:?} (first line {line:?})")]
    Hello { line: String },
    #[error("speaks {theirs:?}, this xlb speaks {PROTOCOL:?}: run the same xlb release on every peer")]
    Version { theirs: String },
    #[error("malformed {what}: {line:?}")]
    Malformed { what: &'static str, line: String },
    #[error("the other side does not hold the peer key (bad proof in the handshake)")]
    BadProof,
    #[error("frame {seq}: {len} bytes, more than the {MAX_FRAME} allowed")]
    TooLong { seq: u64, len: usize },
    #[error("frame out of sequence: expected {expected}, got {got} (replayed, reordered or lost)")]
    Sequence { expected: u64, got: u64 },
    #[error("frame {seq}: payload of {got} bytes, header said {len}")]
    Truncated { seq: u64, len: usize, got: usize },
    #[error("frame {seq}: bad MAC (altered, or not from this connection)")]
    BadMac { seq: u64 },
}

impl WireError {
    /// True when the other side failed to prove the key (rather than sent something malformed).
    pub fn is_auth_failure(&self) -> bool {
        matches!(
            self,
            WireError::Hello { .. }
                | WireError::Version { .. }
                | WireError::BadProof
                | WireError::BadMac { .. }
        )
    }
}

/// A fresh random nonce (the kernel's CSPRNG).
pub fn random_nonce() -> std::io::Result<Nonce> {
    let mut n = [0u8; NONCE_LEN];
    let mut filled = 0;
    while filled < n.len() {
        // SAFETY: writes at most the remaining length into our buffer.
        let r = unsafe { libc::getrandom(n[filled..].as_mut_ptr().cast(), n.len() - filled, 0) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += r as usize;
    }
    Ok(n)
}

fn mac(key: &[u8], parts: &[&[u8]]) -> Hmac<Sha256> {
    let mut m = <Hmac<Sha256>>::new_from_slice(key).expect("HMAC takes a key of any length");
    for p in parts {
        m.update(p);
    }
    m
}

fn tag(key: &[u8], parts: &[&[u8]]) -> [u8; MAC_LEN] {
    mac(key, parts).finalize().into_bytes().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn malformed(what: &'static str, line: &str) -> WireError {
    WireError::Malformed {
        what,
        line: line.chars().take(MAX_HEADER).collect(),
    }
}

/// The sender's first line.
pub fn hello(sender: &Nonce) -> String {
    format!("{PROTOCOL} {}\n", hex(sender))
}

/// The sender's nonce from its first line (without the newline).
pub fn parse_hello(line: &str) -> Result<Nonce, WireError> {
    let mut words = line.split(' ');
    if let (Some(PROTOCOL_NAME), Some(version)) = (words.next(), words.next())
        && format!("{PROTOCOL_NAME} {version}") != PROTOCOL
    {
        return Err(WireError::Version {
            theirs: format!("{PROTOCOL_NAME} {}", version.chars().take(16).collect::<String>()),
        });
    }
    line.strip_prefix(PROTOCOL)
        .and_then(|rest| rest.strip_prefix(' '))
        .and_then(unhex::<NONCE_LEN>)
        .ok_or_else(|| WireError::Hello {
            line: line.chars().take(MAX_HEADER).collect(),
        })
}

/// The receiver's answer to a hello: its nonce and its proof.
pub fn challenge(key: &[u8], sender: &Nonce, receiver: &Nonce) -> String {
    let proof = tag(key, &[LABEL_RECEIVER, sender, receiver]);
    format!("{} {}\n", hex(receiver), hex(&proof))
}

/// The sender checks the receiver's answer; the receiver's nonce.
pub fn check_challenge(key: &[u8], sender: &Nonce, line: &str) -> Result<Nonce, WireError> {
    let (r, proof) = line
        .split_once(' ')
        .and_then(|(r, p)| Some((unhex::<NONCE_LEN>(r)?, unhex::<MAC_LEN>(p)?)))
        .ok_or_else(|| malformed("challenge", line))?;
    mac(key, &[LABEL_RECEIVER, sender, &r])
        .verify_slice(&proof)
        .map_err(|_| WireError::BadProof)?;
    Ok(r)
}

/// The sender's proof (its second line).
pub fn response(key: &[u8], sender: &Nonce, receiver: &Nonce) -> String {
    format!("{}\n", hex(&tag(key, &[LABEL_SENDER, sender, receiver])))
}

/// The receiver checks the sender's proof.
pub fn check_response(key: &[u8], sender: &Nonce, receiver: &Nonce, line: &str) -> Result<(), WireError> {
    let proof = unhex::<MAC_LEN>(line).ok_or_else(|| malformed("response", line))?;
    mac(key, &[LABEL_SENDER, sender, receiver])
        .verify_slice(&proof)
        .map_err(|_| WireError::BadProof)
}

fn session_key(key: &[u8], sender: &Nonce, receiver: &Nonce) -> [u8; MAC_LEN] {
    tag(key, &[LABEL_SESSION, sender, receiver])
}

fn frame_tag(session: &[u8], seq: u64, payload: &[u8]) -> Hmac<Sha256> {
    mac(
        session,
        &[&seq.to_be_bytes(), &(payload.len() as u32).to_be_bytes(), payload],
    )
}

/// The sender's side of an authenticated connection: seals frames in sequence.
pub struct FrameWriter {
    session: [u8; MAC_LEN],
    seq: u64,
}

impl FrameWriter {
    pub fn new(key: &[u8], sender: &Nonce, receiver: &Nonce) -> FrameWriter {
        FrameWriter {
            session: session_key(key, sender, receiver),
            seq: 0,
        }
    }

    /// Header and payload of the next frame. `payload` is at most [`MAX_FRAME`] bytes (split
    /// longer text with [`split_frames`]).
    pub fn seal(&mut self, payload: &[u8]) -> Vec<u8> {
        assert!(payload.len() <= MAX_FRAME, "frame payload over MAX_FRAME");
        let t: [u8; MAC_LEN] = frame_tag(&self.session, self.seq, payload)
            .finalize()
            .into_bytes()
            .into();
        let mut out = format!("{} {} {}\n", self.seq, payload.len(), hex(&t)).into_bytes();
        out.extend_from_slice(payload);
        self.seq += 1;
        out
    }
}

/// A frame's header, parsed but not yet trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameHeader {
    pub seq: u64,
    pub len: usize,
    mac: [u8; MAC_LEN],
}

/// The receiver's side of an authenticated connection: opens frames in sequence.
pub struct FrameReader {
    session: [u8; MAC_LEN],
    seq: u64,
}

impl FrameReader {
    pub fn new(key: &[u8], sender: &Nonce, receiver: &Nonce) -> FrameReader {
        FrameReader {
            session: session_key(key, sender, receiver),
            seq: 0,
        }
    }

    /// Parse a header line (without the newline): the payload length to read next. Refuses a
    /// length over [`MAX_FRAME`] and a sequence number other than the next one.
    pub fn header(&self, line: &str) -> Result<FrameHeader, WireError> {
        let w: Vec<&str> = line.split(' ').collect();
        let [seq, len, mac] = w[..] else {
            return Err(malformed("frame header", line));
        };
        let (Ok(seq), Ok(len), Some(mac)) = (seq.parse::<u64>(), len.parse::<usize>(), unhex(mac)) else {
            return Err(malformed("frame header", line));
        };
        if seq != self.seq {
            return Err(WireError::Sequence {
                expected: self.seq,
                got: seq,
            });
        }
        if len > MAX_FRAME {
            return Err(WireError::TooLong { seq, len });
        }
        Ok(FrameHeader { seq, len, mac })
    }

    /// Check `payload` against its header; on success the next frame must carry the next
    /// sequence number.
    pub fn open(&mut self, h: &FrameHeader, payload: &[u8]) -> Result<(), WireError> {
        if h.seq != self.seq {
            return Err(WireError::Sequence {
                expected: self.seq,
                got: h.seq,
            });
        }
        if payload.len() != h.len {
            return Err(WireError::Truncated {
                seq: h.seq,
                len: h.len,
                got: payload.len(),
            });
        }
        frame_tag(&self.session, h.seq, payload)
            .verify_slice(&h.mac)
            .map_err(|_| WireError::BadMac { seq: h.seq })?;
        self.seq += 1;
        Ok(())
    }
}

/// The line that ends the whole table a sender teaches on a connection (`entries`: update lines
/// in it), sent in a frame like them, so authenticated like them.
pub fn teach_complete(entries: u64) -> String {
    format!("{TEACH_COMPLETE} {entries}\n")
}

/// The number of entries of a teach-complete line, or None for any other line.
pub fn parse_teach_complete(line: &str) -> Option<u64> {
    line.strip_prefix(TEACH_COMPLETE)?
        .strip_prefix(' ')?
        .trim_end()
        .parse()
        .ok()
}

/// `text` (whole lines) cut at line ends into payloads of at most [`MAX_FRAME`] bytes. A line
/// longer than that (never produced by `peers::encode`) would be cut; the receiver then
/// counts it malformed.
pub fn split_frames(text: &str) -> Vec<&[u8]> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    while start < b.len() {
        let mut end = (start + MAX_FRAME).min(b.len());
        if end < b.len()
            && let Some(nl) = b[start..end].iter().rposition(|c| *c == b'\n')
        {
            end = start + nl + 1;
        }
        out.push(&b[start..end]);
        start = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef-shared-peer-key";

    /// A full handshake between two sides holding `sender_key` and `receiver_key`.
    fn handshake(sender_key: &[u8], receiver_key: &[u8]) -> Result<(FrameWriter, FrameReader), WireError> {
        let s = random_nonce().unwrap();
        let hello = hello(&s);
        let s_seen = parse_hello(hello.trim_end())?;
        let r = random_nonce().unwrap();
        let ch = challenge(receiver_key, &s_seen, &r);
        let r_seen = check_challenge(sender_key, &s, ch.trim_end())?;
        let resp = response(sender_key, &s, &r_seen);
        check_response(receiver_key, &s_seen, &r, resp.trim_end())?;
        Ok((
            FrameWriter::new(sender_key, &s, &r_seen),
            FrameReader::new(receiver_key, &s_seen, &r),
        ))
    }

    /// Split a sealed frame into its header line and payload.
    fn parts(frame: &[u8]) -> (String, Vec<u8>) {
        let nl = frame.iter().position(|c| *c == b'\n').unwrap();
        (
            String::from_utf8(frame[..nl].to_vec()).unwrap(),
            frame[nl + 1..].to_vec(),
        )
    }

    fn open(r: &mut FrameReader, frame: &[u8]) -> Result<Vec<u8>, WireError> {
        let (h, p) = parts(frame);
        let h = r.header(&h)?;
        r.open(&h, &p)?;
        Ok(p)
    }

    #[test]
    fn frames_round_trip_in_sequence() {
        let (mut w, mut r) = handshake(KEY, KEY).unwrap();
        for text in [
            "be_app 10.0.0.1 0 app1 5\n",
            "",
            "dns 10.0.0.2 0 ns1 0\ndns 10.0.0.3 0 ns2 0\n",
        ] {
            assert_eq!(open(&mut r, &w.seal(text.as_bytes())).unwrap(), text.as_bytes());
        }
    }

    #[test]
    fn handshake_with_another_key_fails_on_both_sides() {
        // The receiver holds another key: the sender refuses its proof.
        assert_eq!(
            handshake(KEY, b"another key of 16+ bytes").err(),
            Some(WireError::BadProof)
        );
        // The sender's proof under a wrong key: the receiver refuses it.
        let s = random_nonce().unwrap();
        let r = random_nonce().unwrap();
        let resp = response(b"another key of 16+ bytes", &s, &r);
        assert_eq!(
            check_response(KEY, &s, &r, resp.trim_end()),
            Err(WireError::BadProof)
        );
        // A proof made for other nonces (recorded from another connection) is refused too.
        let old = response(KEY, &s, &random_nonce().unwrap());
        assert_eq!(
            check_response(KEY, &s, &r, old.trim_end()),
            Err(WireError::BadProof)
        );
    }

    #[test]
    fn old_protocol_and_garbage_hellos_are_refused() {
        for line in ["xlb-peers 1", "xlb-peers 2", "xlb-peers 2 zz"] {
            let e = parse_hello(line).unwrap_err();
            assert!(matches!(e, WireError::Version { .. }), "{line:?}: {e}");
            assert!(e.to_string().contains("run the same xlb release"), "{e}");
            assert!(e.is_auth_failure());
        }
        for line in ["be_app 10.0.0.1 0 app1 0", "xlb-peers", "xlb-peers 3 zz", ""] {
            let e = parse_hello(line).unwrap_err();
            assert!(matches!(e, WireError::Hello { .. }), "{line:?}: {e}");
            assert!(e.is_auth_failure());
        }
    }

    #[test]
    fn teach_complete_line_round_trips_and_is_no_update() {
        let line = teach_complete(1_000_000);
        assert_eq!(line, "teach-complete 1000000\n");
        assert_eq!(parse_teach_complete(line.trim_end()), Some(1_000_000));
        for other in [
            "be_app 10.0.0.1 0 app1 0",
            "teach-complete",
            "teach-complete x",
            "teach-completed 3",
            "",
        ] {
            assert_eq!(parse_teach_complete(other), None, "{other:?}");
        }
        assert!(crate::control::peers::Update::parse(line.trim_end()).is_err());
    }

    #[test]
    fn altered_payload_or_header_fails_the_mac() {
        let (mut w, mut r) = handshake(KEY, KEY).unwrap();
        let f = w.seal(b"be_app 10.0.0.1 0 app1 0\n");
        let (h, mut p) = parts(&f);
        p[20] = b'2';
        let hdr = r.header(&h).unwrap();
        assert_eq!(r.open(&hdr, &p), Err(WireError::BadMac { seq: 0 }));
        // The MAC of an unchanged frame still opens: a refused frame does not advance.
        assert!(open(&mut r, &f).is_ok());
    }

    #[test]
    fn replayed_reordered_or_dropped_frames_are_refused() {
        let (mut w, mut r) = handshake(KEY, KEY).unwrap();
        let f0 = w.seal(b"a 10.0.0.1 0 s 0\n");
        let f1 = w.seal(b"a 10.0.0.2 0 s 0\n");
        let f2 = w.seal(b"a 10.0.0.3 0 s 0\n");
        // Reordered (1 before 0), i.e. 0 dropped.
        assert_eq!(
            open(&mut r, &f1),
            Err(WireError::Sequence { expected: 0, got: 1 })
        );
        open(&mut r, &f0).unwrap();
        // Replayed.
        assert_eq!(
            open(&mut r, &f0),
            Err(WireError::Sequence { expected: 1, got: 0 })
        );
        open(&mut r, &f1).unwrap();
        // A header whose number is changed to pass the sequence check fails the MAC.
        let (h, p) = parts(&f0);
        let forged = h.replacen('0', "2", 1);
        let hdr = r.header(&forged).unwrap();
        assert_eq!(r.open(&hdr, &p), Err(WireError::BadMac { seq: 2 }));
        open(&mut r, &f2).unwrap();
    }

    #[test]
    fn a_frame_from_another_connection_fails_the_mac() {
        let (mut w1, _) = handshake(KEY, KEY).unwrap();
        let (_, mut r2) = handshake(KEY, KEY).unwrap();
        let f = w1.seal(b"be_app 10.0.0.1 0 app1 0\n");
        assert_eq!(open(&mut r2, &f), Err(WireError::BadMac { seq: 0 }));
    }

    #[test]
    fn truncated_or_malformed_input_is_refused() {
        let (mut w, mut r) = handshake(KEY, KEY).unwrap();
        let f = w.seal(b"be_app 10.0.0.1 0 app1 0\n");
        let (h, p) = parts(&f);
        let hdr = r.header(&h).unwrap();
        assert_eq!(
            r.open(&hdr, &p[..p.len() - 1]),
            Err(WireError::Truncated {
                seq: 0,
                len: p.len(),
                got: p.len() - 1
            })
        );
        for bad in [
            &h[..h.len() - 1],
            "0 25",
            "",
            "x 25 00",
            &h.replacen(' ', "  ", 1),
        ] {
            assert!(
                matches!(r.header(bad), Err(WireError::Malformed { .. })),
                "{bad:?}"
            );
        }
        let too_long = format!("0 {} {}", MAX_FRAME + 1, hex(&[0u8; MAC_LEN]));
        assert_eq!(
            r.header(&too_long),
            Err(WireError::TooLong {
                seq: 0,
                len: MAX_FRAME + 1
            })
        );
        assert!(matches!(
            check_challenge(KEY, &[0; NONCE_LEN], "abc"),
            Err(WireError::Malformed { .. })
        ));
        assert!(matches!(
            check_response(KEY, &[0; NONCE_LEN], &[0; NONCE_LEN], "abc"),
            Err(WireError::Malformed { .. })
        ));
        assert!(hello(&[0; NONCE_LEN]).len() <= MAX_HEADER);
        assert!(challenge(KEY, &[0; NONCE_LEN], &[0; NONCE_LEN]).len() <= MAX_HEADER);
    }

    #[test]
    fn split_frames_cuts_at_line_ends_within_the_limit() {
        let line = "be_app 10.0.0.1 0 app1 1234\n";
        let text = line.repeat(MAX_FRAME / line.len() * 3);
        let frames = split_frames(&text);
        assert!(frames.len() >= 3);
        assert!(frames.iter().all(|f| f.len() <= MAX_FRAME && f.ends_with(b"\n")));
        assert_eq!(frames.concat(), text.as_bytes());
        assert!(split_frames("").is_empty());
    }
}
