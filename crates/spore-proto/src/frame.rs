//! The frame header, the encoder and the bounded decoder.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::ContextId;

/// First byte of every header. Anything else means the stream is corrupt.
pub const MAGIC: u8 = 0xC5;

/// Size of the fixed header in bytes.
pub const HEADER_LEN: usize = 26;

/// How a frame's payload is encoded (second header byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Encoding {
    /// Opaque bytes or a handle-specific layout (see PROTOCOL.md).
    Raw = 0,
    /// serde + postcard: the encoding between Rust contexts of one build.
    Postcard = 1,
    /// MessagePack: reserved for Python contexts.
    MsgPack = 2,
    /// UTF-8 text, e.g. the reason carried by a dead message.
    Utf8 = 3,
}

impl Encoding {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0 => Self::Raw,
            1 => Self::Postcard,
            2 => Self::MsgPack,
            3 => Self::Utf8,
            _ => return None,
        })
    }
}

/// The fixed 26-byte, big-endian frame header.
///
/// Layout: `magic(1) enc(1) dst(4) src(4) auth(4) handle(4) reply_to(4) len(4)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    /// Payload encoding.
    pub encoding: Encoding,
    /// Destination context.
    pub dst: ContextId,
    /// Context that wrote the message.
    pub src: ContextId,
    /// Context whose authority the message claims (usually `src`).
    pub auth: ContextId,
    /// Destination handle inside `dst`.
    pub handle: u32,
    /// Handle in `src` to answer to; `0` for none, [`crate::handles::IS_DEAD`] marks a dead message.
    pub reply_to: u32,
    /// Payload length in bytes.
    pub len: u32,
}

impl Header {
    /// A header from `src` to `(dst, handle)` with no reply handle, postcard
    /// encoding and zero length (set by [`Frame::new`]).
    pub fn new(dst: ContextId, src: ContextId, handle: u32) -> Self {
        Self {
            encoding: Encoding::Postcard,
            dst,
            src,
            auth: src,
            handle,
            reply_to: 0,
            len: 0,
        }
    }

    /// Sets the reply handle.
    pub fn with_reply_to(mut self, reply_to: u32) -> Self {
        self.reply_to = reply_to;
        self
    }

    /// Sets the payload encoding.
    pub fn with_encoding(mut self, encoding: Encoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// True when this is a dead message (its payload is a UTF-8 reason).
    pub fn is_dead(&self) -> bool {
        self.reply_to == crate::handles::IS_DEAD
    }

    /// Writes the 26 header bytes.
    pub fn encode(&self, out: &mut impl BufMut) {
        out.put_u8(MAGIC);
        out.put_u8(self.encoding as u8);
        out.put_u32(self.dst);
        out.put_u32(self.src);
        out.put_u32(self.auth);
        out.put_u32(self.handle);
        out.put_u32(self.reply_to);
        out.put_u32(self.len);
    }

    /// Parses 26 header bytes. Never panics; `bytes` must be at least [`HEADER_LEN`] long.
    pub fn parse(mut bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() < HEADER_LEN {
            return Err(DecodeError::ShortHeader(bytes.len()));
        }
        let magic = bytes.get_u8();
        if magic != MAGIC {
            return Err(DecodeError::BadMagic(magic));
        }
        let enc = bytes.get_u8();
        let encoding = Encoding::from_u8(enc).ok_or(DecodeError::BadEncoding(enc))?;
        Ok(Self {
            encoding,
            dst: bytes.get_u32(),
            src: bytes.get_u32(),
            auth: bytes.get_u32(),
            handle: bytes.get_u32(),
            reply_to: bytes.get_u32(),
            len: bytes.get_u32(),
        })
    }
}

/// One message: header plus payload. The payload is reference-counted so a
/// frame can be forwarded without copying it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The header; `header.len` always equals `payload.len()`.
    pub header: Header,
    /// The payload bytes.
    pub payload: Bytes,
}

impl Frame {
    /// A frame with `payload`, fixing `header.len` to match.
    ///
    /// # Panics
    /// If the payload exceeds `u32::MAX` bytes; callers check the
    /// message-size limit (at most 4 GiB - 1) before building frames.
    pub fn new(mut header: Header, payload: impl Into<Bytes>) -> Self {
        let payload = payload.into();
        header.len = u32::try_from(payload.len()).expect("payload checked against the size limit");
        Self { header, payload }
    }

    /// A dead message answering `to`: addressed to `(to.src, to.reply_to)`,
    /// carrying `reason`. `None` when `to` asked for no reply or is itself
    /// dead (dead messages are never answered, so they cannot loop).
    pub fn dead_reply(to: &Header, my_id: ContextId, reason: &str) -> Option<Self> {
        if to.reply_to == 0 || to.is_dead() {
            return None;
        }
        Some(Self::dead(Header::new(to.src, my_id, to.reply_to), reason))
    }

    /// A dead message to `header`'s destination, carrying `reason` (a
    /// channel's sender closes it this way).
    pub fn dead(header: Header, reason: &str) -> Self {
        let header = header
            .with_reply_to(crate::handles::IS_DEAD)
            .with_encoding(Encoding::Utf8);
        Self::new(header, reason.to_owned())
    }

    /// The reason carried by a dead message (lossy UTF-8).
    pub fn dead_reason(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }

    /// Encodes header and payload into `out` (copies the payload; the I/O
    /// layer uses vectored writes of [`Frame::header_bytes`] and the payload instead).
    pub fn encode_into(&self, out: &mut BytesMut) {
        out.reserve(HEADER_LEN + self.payload.len());
        self.header.encode(out);
        out.extend_from_slice(&self.payload);
    }

    /// The encoded header alone.
    pub fn header_bytes(&self) -> [u8; HEADER_LEN] {
        let mut buf = [0u8; HEADER_LEN];
        self.header.encode(&mut &mut buf[..]);
        buf
    }
}

/// Why a stream was declared corrupt. Any of these closes only that stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The first header byte was not [`MAGIC`].
    #[error("corruption detected: bad magic byte {0:#04x} (expected {MAGIC:#04x})")]
    BadMagic(u8),
    /// The encoding byte is unknown.
    #[error("corruption detected: unknown payload encoding {0}")]
    BadEncoding(u8),
    /// Fewer than 26 bytes were given to [`Header::parse`].
    #[error("short header: {0} of {HEADER_LEN} bytes")]
    ShortHeader(usize),
}

/// What the decoder produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeEvent {
    /// A complete frame.
    Frame(Frame),
    /// A well-formed header announcing a payload over the limit. The decoder
    /// discards that payload as it arrives, without buffering it; the caller
    /// should answer with a dead message.
    Oversized(Header),
}

/// Streaming, bounded frame decoder.
///
/// Feed it the bytes read so far; it consumes whole frames from the front of
/// the buffer. It never allocates: the caller owns the buffer and may ask
/// [`Decoder::wanted`] how many bytes the current frame still needs, which is
/// never more than the limit.
#[derive(Debug, Clone)]
pub struct Decoder {
    max: u32,
    /// Bytes of an oversized payload still to discard.
    skipping: u64,
}

impl Decoder {
    /// A decoder refusing payloads over `max_message_size` bytes.
    pub fn new(max_message_size: u32) -> Self {
        Self {
            max: max_message_size,
            skipping: 0,
        }
    }

    /// The limit this decoder enforces.
    pub fn max_message_size(&self) -> u32 {
        self.max
    }

    /// Decodes at most one event from the front of `buf`.
    ///
    /// Returns `Ok(None)` when more bytes are needed. After an error the
    /// stream must be closed: the decoder makes no attempt to resynchronise.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<DecodeEvent>, DecodeError> {
        if self.skipping > 0 {
            let n = usize::try_from(self.skipping)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            buf.advance(n);
            self.skipping -= n as u64;
            if self.skipping > 0 {
                return Ok(None);
            }
        }
        if buf.len() < HEADER_LEN {
            // Reject garbage as soon as its first byte is visible.
            if let Some(&b) = buf.first() {
                if b != MAGIC {
                    return Err(DecodeError::BadMagic(b));
                }
            }
            return Ok(None);
        }
        let header = Header::parse(&buf[..HEADER_LEN])?;
        if header.len > self.max {
            buf.advance(HEADER_LEN);
            self.skipping = u64::from(header.len);
            let n = usize::try_from(self.skipping)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            buf.advance(n);
            self.skipping -= n as u64;
            return Ok(Some(DecodeEvent::Oversized(header)));
        }
        let total = HEADER_LEN + header.len as usize;
        if buf.len() < total {
            return Ok(None);
        }
        buf.advance(HEADER_LEN);
        let payload = buf.split_to(header.len as usize).freeze();
        Ok(Some(DecodeEvent::Frame(Frame { header, payload })))
    }

    /// How many more bytes the frame at the front of `buf` needs (0 when
    /// unknown or complete). Bounded by the limit, so a reader may reserve
    /// this much to receive a large payload contiguously.
    pub fn wanted(&self, buf: &BytesMut) -> usize {
        if self.skipping > 0 || buf.len() < HEADER_LEN {
            return 0;
        }
        match Header::parse(&buf[..HEADER_LEN]) {
            Ok(h) if h.len <= self.max => (HEADER_LEN + h.len as usize).saturating_sub(buf.len()),
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handles;
    use proptest::prelude::*;

    fn arb_header() -> impl Strategy<Value = Header> {
        (
            0u8..4,
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
        )
            .prop_map(|(enc, dst, src, auth, handle, reply_to)| Header {
                encoding: Encoding::from_u8(enc).unwrap(),
                dst,
                src,
                auth,
                handle,
                reply_to,
                len: 0,
            })
    }

    proptest! {
        #[test]
        fn frames_round_trip_through_any_split(
            frames in proptest::collection::vec(
                (arb_header(), proptest::collection::vec(any::<u8>(), 0..300)), 1..8),
            split in 1usize..64,
        ) {
            let frames: Vec<Frame> = frames.into_iter().map(|(h, p)| Frame::new(h, p)).collect();
            let mut wire = BytesMut::new();
            for f in &frames { f.encode_into(&mut wire); }
            let mut dec = Decoder::new(1024);
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            for chunk in wire.chunks(split) {
                buf.extend_from_slice(chunk);
                while let Some(ev) = dec.decode(&mut buf).unwrap() {
                    match ev { DecodeEvent::Frame(f) => out.push(f), other => panic!("{other:?}") }
                }
            }
            prop_assert_eq!(out, frames);
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn decoder_never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let mut dec = Decoder::new(512);
            let mut buf = BytesMut::from(&bytes[..]);
            for _ in 0..64 {
                match dec.decode(&mut buf) {
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => break,
                }
            }
        }

        #[test]
        fn header_round_trips(h in arb_header(), len in any::<u32>()) {
            let h = Header { len, ..h };
            let mut b = BytesMut::new();
            h.encode(&mut b);
            prop_assert_eq!(b.len(), HEADER_LEN);
            prop_assert_eq!(Header::parse(&b).unwrap(), h);
        }
    }

    #[test]
    fn garbage_first_byte_is_corruption() {
        let mut dec = Decoder::new(1024);
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]);
        let err = dec.decode(&mut buf).unwrap_err();
        assert_eq!(err, DecodeError::BadMagic(b'G'));
        assert!(err.to_string().contains("corruption detected"));
    }

    #[test]
    fn unknown_encoding_is_corruption() {
        let mut buf = BytesMut::new();
        Header::new(1, 0, 5).encode(&mut buf);
        buf[1] = 9;
        let err = Decoder::new(1024).decode(&mut buf).unwrap_err();
        assert_eq!(err, DecodeError::BadEncoding(9));
    }

    #[test]
    fn truncated_frame_waits_for_more() {
        let f = Frame::new(Header::new(1, 0, 5), vec![7u8; 100]);
        let mut wire = BytesMut::new();
        f.encode_into(&mut wire);
        let mut partial = BytesMut::from(&wire[..wire.len() - 1]);
        let mut dec = Decoder::new(1024);
        assert_eq!(dec.decode(&mut partial).unwrap(), None);
        assert_eq!(dec.wanted(&partial), 1);
        partial.extend_from_slice(&wire[wire.len() - 1..]);
        assert_eq!(
            dec.decode(&mut partial).unwrap(),
            Some(DecodeEvent::Frame(f))
        );
    }

    #[test]
    fn oversized_payload_is_skipped_without_buffering() {
        let big = Frame::new(Header::new(1, 0, 5).with_reply_to(1234), vec![1u8; 5000]);
        let small = Frame::new(Header::new(1, 0, 6), b"after".as_slice());
        let mut wire = BytesMut::new();
        big.encode_into(&mut wire);
        small.encode_into(&mut wire);
        let mut dec = Decoder::new(1000);
        let mut buf = BytesMut::new();
        let mut events = Vec::new();
        for chunk in wire.chunks(700) {
            buf.extend_from_slice(chunk);
            // The buffer never holds more than one chunk plus a header's worth.
            assert!(buf.len() <= 700 + HEADER_LEN + 5);
            while let Some(ev) = dec.decode(&mut buf).unwrap() {
                events.push(ev);
            }
        }
        assert_eq!(events.len(), 2);
        assert!(
            matches!(&events[0], DecodeEvent::Oversized(h) if h.len == 5000 && h.reply_to == 1234)
        );
        assert_eq!(events[1], DecodeEvent::Frame(small));
    }

    #[test]
    fn wanted_is_bounded_by_the_limit() {
        let mut buf = BytesMut::new();
        let mut h = Header::new(1, 0, 5);
        h.len = u32::MAX;
        h.encode(&mut buf);
        assert_eq!(Decoder::new(1024).wanted(&buf), 0);
    }

    #[test]
    fn dead_replies_go_back_and_never_loop() {
        let call = Header::new(3, 0, handles::CALL_FUNCTION).with_reply_to(1001);
        let dead = Frame::dead_reply(&call, 3, "invalid handle").unwrap();
        assert_eq!(
            (dead.header.dst, dead.header.handle, dead.header.src),
            (0, 1001, 3)
        );
        assert!(dead.header.is_dead());
        assert_eq!(dead.dead_reason(), "invalid handle");
        assert!(Frame::dead_reply(&dead.header, 0, "again").is_none());
        assert!(Frame::dead_reply(&Header::new(3, 0, 7), 3, "x").is_none());
    }
}
