//! spore's wire protocol, with no I/O.
//!
//! Everything two spore contexts say to each other is a [`Frame`]: a fixed
//! 26-byte [`Header`] followed by `len` payload bytes. The [`Decoder`] turns a
//! byte stream into frames without ever panicking and without ever buffering
//! more than the configured message-size limit. [`handles`] names the
//! well-known destinations, [`messages`] the typed payloads they carry, and
//! [`routing`] decides where a frame goes next.
//!
//! ```
//! use bytes::BytesMut;
//! use spore_proto::{Decoder, DecodeEvent, Frame, Header, handles};
//!
//! let frame = Frame::new(Header::new(1, 0, handles::CALL_FUNCTION), b"hi".as_slice());
//! let mut wire = BytesMut::new();
//! frame.encode_into(&mut wire);
//!
//! let mut decoder = Decoder::new(spore_proto::DEFAULT_MAX_MESSAGE_SIZE);
//! match decoder.decode(&mut wire).unwrap() {
//!     Some(DecodeEvent::Frame(f)) => assert_eq!(&f.payload[..], b"hi"),
//!     other => panic!("unexpected {other:?}"),
//! }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod frame;
pub mod handles;
pub mod handshake;
pub mod messages;
pub mod routing;

pub use frame::{DecodeError, DecodeEvent, Decoder, Encoding, Frame, HEADER_LEN, Header, MAGIC};

/// A context's identity in the tree. The master is always [`MASTER_ID`].
pub type ContextId = u32;

/// The master context's ID.
pub const MASTER_ID: ContextId = 0;

/// The default maximum payload size of one message: 128 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: u32 = 128 * 1024 * 1024;

/// Protocol version, checked at handshake. Bump on any wire change.
pub const PROTOCOL_VERSION: u32 = 3;

/// Text of the error for a message over the size limit, shared by the sender
/// and the receiver so users see one wording.
pub fn too_large_reason(size: u64, max: u32) -> String {
    format!("message too large (max {max} bytes, got {size} bytes)")
}
