//! The peers' protocol on a byte stream, as `tokio-util` decoders: handshake lines and frame
//! headers through [`LinesCodec`] (bounded to [`wire::MAX_HEADER`]), a frame's payload by the
//! length its header gives, checked by its [`FrameReader`] before it is handed out. The text on
//! the wire is `wire`'s, unchanged; nothing here decides what is authentic.

use std::convert::Infallible;

use tokio_util::{
    bytes::BytesMut,
    codec::{Decoder, LinesCodec, LinesCodecError},
};

use super::{
    session::ConnError,
    wire::{self, FrameHeader, FrameReader, WireError},
};

/// Lines of at most [`wire::MAX_HEADER`] bytes (newline excluded), as text. A line cut short by
/// the end of the stream is not a line: the other side closed.
pub struct Lines(LinesCodec);

impl Lines {
    pub fn new() -> Lines {
        Lines(LinesCodec::new_with_max_length(wire::MAX_HEADER))
    }
}

impl Decoder for Lines {
    type Item = String;
    type Error = ConnError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<String>, ConnError> {
        self.0.decode(src).map_err(|e| match e {
            LinesCodecError::MaxLineLengthExceeded => ConnError::LineTooLong(wire::MAX_HEADER),
            // `LinesCodec` reads no stream: its only I/O error is a line that is not UTF-8.
            LinesCodecError::Io(_) => ConnError::Wire(WireError::Malformed {
                what: "line (not text)",
                line: String::new(),
            }),
        })
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<String>, ConnError> {
        match self.decode(src)? {
            None if !src.is_empty() => Err(ConnError::Closed),
            line => Ok(line),
        }
    }
}

/// The frames of an authenticated connection: each payload once its MAC and sequence number
/// check out (see [`FrameReader`]); the first that does not ends the stream with its error.
pub struct Frames {
    lines: Lines,
    reader: FrameReader,
    /// The header read, while its payload has not all arrived.
    header: Option<FrameHeader>,
}

impl Frames {
    /// After the handshake: `lines` (holding what was read past it) and the connection's reader.
    pub fn new(lines: Lines, reader: FrameReader) -> Frames {
        Frames {
            lines,
            reader,
            header: None,
        }
    }
}

impl Decoder for Frames {
    type Item = Vec<u8>;
    type Error = ConnError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Vec<u8>>, ConnError> {
        let header = match self.header.take() {
            Some(h) => h,
            None => match self.lines.decode(src)? {
                Some(line) => self.reader.header(&line)?,
                None => return Ok(None),
            },
        };
        if src.len() < header.len {
            src.reserve(header.len - src.len());
            self.header = Some(header);
            return Ok(None);
        }
        let payload = src.split_to(header.len);
        self.reader.open(&header, &payload)?;
        Ok(Some(payload.to_vec()))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Vec<u8>>, ConnError> {
        match self.decode(src)? {
            None if self.header.is_some() => {
                Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into())
            }
            None if !src.is_empty() => Err(ConnError::Closed),
            frame => Ok(frame),
        }
    }
}

/// What the sender expects from the receiver after the handshake: nothing. Any byte is an
/// error; the end of the stream means the receiver went away.
pub struct Nothing;

impl Decoder for Nothing {
    type Item = Infallible;
    type Error = ConnError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Infallible>, ConnError> {
        if src.is_empty() {
            return Ok(None);
        }
        Err(ConnError::Wire(WireError::Malformed {
            what: "data from the receiver",
            line: String::new(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::peers::wire::{FrameWriter, random_nonce};

    const KEY: &[u8] = b"0123456789abcdef-shared-peer-key";

    fn pair() -> (FrameWriter, FrameReader) {
        let (s, r) = (random_nonce().unwrap(), random_nonce().unwrap());
        (FrameWriter::new(KEY, &s, &r), FrameReader::new(KEY, &s, &r))
    }

    #[test]
    fn frames_arriving_in_pieces_are_decoded_whole_and_checked() {
        let (mut w, r) = pair();
        let mut bytes = w.seal(b"be_app 10.0.0.1 0 app1 5\n");
        bytes.extend(w.seal(b""));
        bytes.extend(w.seal(b"dns 10.0.0.2 0 ns1 0\n"));
        let mut frames = Frames::new(Lines::new(), r);
        let mut src = BytesMut::new();
        let mut got = Vec::new();
        // One byte at a time: every split point of header and payload.
        for b in bytes {
            src.extend_from_slice(&[b]);
            while let Some(p) = frames.decode(&mut src).unwrap() {
                got.push(String::from_utf8(p).unwrap());
            }
        }
        assert_eq!(got, ["be_app 10.0.0.1 0 app1 5\n", "", "dns 10.0.0.2 0 ns1 0\n"]);
        assert!(frames.decode_eof(&mut src).unwrap().is_none());
    }

    #[test]
    fn an_altered_frame_is_an_error_and_a_cut_one_at_the_end_too() {
        let (mut w, r) = pair();
        let mut bytes = w.seal(b"be_app 10.0.0.1 0 app1 5\n");
        *bytes.last_mut().unwrap() = b' ';
        let mut frames = Frames::new(Lines::new(), r);
        let e = frames.decode(&mut BytesMut::from(&bytes[..])).unwrap_err();
        assert!(matches!(e, ConnError::Wire(WireError::BadMac { seq: 0 })), "{e}");

        let (mut w, r) = pair();
        let bytes = w.seal(b"be_app 10.0.0.1 0 app1 5\n");
        let mut frames = Frames::new(Lines::new(), r);
        let mut src = BytesMut::from(&bytes[..bytes.len() - 1]);
        assert!(frames.decode(&mut src).unwrap().is_none());
        assert!(matches!(frames.decode_eof(&mut src), Err(ConnError::Io(_))));
    }

    #[test]
    fn lines_are_bounded_and_text() {
        let mut src = BytesMut::from(&[b'a'; wire::MAX_HEADER + 1][..]);
        assert!(matches!(
            Lines::new().decode(&mut src),
            Err(ConnError::LineTooLong(_))
        ));
        let mut src = BytesMut::from(&b"\xff\xfe\n"[..]);
        assert!(matches!(
            Lines::new().decode(&mut src),
            Err(ConnError::Wire(WireError::Malformed { .. }))
        ));
        let mut src = BytesMut::from(&b"xlb-peers 2"[..]);
        assert!(matches!(
            Lines::new().decode_eof(&mut src),
            Err(ConnError::Closed)
        ));
        let mut src = BytesMut::from(&[b'a'; wire::MAX_HEADER][..]);
        src.extend_from_slice(b"\n");
        assert_eq!(
            Lines::new().decode(&mut src).unwrap().unwrap().len(),
            wire::MAX_HEADER
        );
        assert!(matches!(
            Nothing.decode(&mut BytesMut::from(&b"x"[..])),
            Err(ConnError::Wire(WireError::Malformed { .. }))
        ));
    }
}
