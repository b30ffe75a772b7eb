//! Typed payloads of the well-known handles (serde + postcard).

use serde::{Deserialize, Serialize};

use crate::ContextId;

/// Sent by a parent as the first frame to a new child ([`crate::handles::CONFIGURE`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildConfig {
    /// The parent's build identity; the child refuses to run on a mismatch.
    /// First, so that a child of another build can read it (and say so)
    /// even when the rest of the layout differs.
    pub build_id: String,
    /// The child's own ID.
    pub context_id: ContextId,
    /// The child's name, e.g. `local.1`; the process is named `spore:<name>`.
    pub name: String,
    /// The parent's ID.
    pub parent_id: ContextId,
    /// All ancestors' IDs, nearest first, ending with the master.
    pub parent_ids: Vec<ContextId>,
    /// Maximum log level forwarded: 0 off, 1 error, 2 warn, 3 info, 4 debug, 5 trace.
    pub log_level: u8,
    /// Maximum message payload size, inherited down the tree.
    pub max_message_size: u32,
    /// Extra diagnostics (backtraces in remote errors, broker tracing).
    pub debug: bool,
    /// How long a child waits for running calls after SHUTDOWN before it
    /// exits anyway, in milliseconds.
    pub shutdown_grace_ms: u64,
    /// Unidirectional routing: messages from one child's subtree to
    /// another's are refused. Inherited by every descendant.
    pub unidirectional: bool,
    /// Heartbeat window in milliseconds: a parent or child silent this long
    /// is declared down; 0 turns the check off. Inherited.
    pub heartbeat_ms: u64,
}

/// ADD_ROUTE payload: a context below the sender now exists. Each ancestor
/// records that `id` is reached through the stream the announcement came
/// from, then announces it to its own parent (as the sender).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteAdded {
    /// The new context.
    pub id: ContextId,
    /// Its name, e.g. `local.1.local.2`.
    pub name: String,
    /// Its process ID on its own machine.
    pub pid: u32,
}

/// DEL_ROUTE payload: contexts below the sender are gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutesLost {
    /// The lost contexts.
    pub ids: Vec<ContextId>,
    /// What was observed (e.g. "EOF on stream").
    pub reason: String,
}

/// Answer to ALLOCATE_ID: the IDs `start .. start + count` now belong to
/// the asker, to number the contexts it starts. Only the master hands them
/// out, so IDs never collide anywhere in the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdBlock {
    /// The first ID of the block.
    pub start: ContextId,
    /// How many IDs.
    pub count: u32,
}

/// GET_MODULE payload: a context asks its parent for the image of a
/// platform (to start a context there); the answer comes to its
/// LOAD_MODULE handle as an [`ImageReply`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRequest {
    /// The platform, `<os>-<arch>` as `uname -s` (lowercased) and `uname -m`
    /// print them, e.g. `linux-x86_64`.
    pub platform: String,
}

/// LOAD_MODULE (an answer to GET_MODULE) and FORWARD_MODULE (pushed ahead
/// of need) payload: a platform's image, zstd-compressed, or why there is none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageReply {
    /// The platform asked for.
    pub platform: String,
    /// The compressed image, or the reason it cannot be had.
    pub image: Result<serde_bytes::ByteBuf, String>,
}

/// Head of a CALL_FUNCTION payload; the postcard-encoded argument tuple follows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRequest<'a> {
    /// Registered name of the function (`module::path::fn`).
    #[serde(borrow)]
    pub function: &'a str,
    /// The pipelined call chain this call belongs to, if any: calls of one
    /// chain (from one caller) run in order, and after one fails every
    /// later one fails with its error until the chain is reset.
    pub chain: Option<u64>,
}

/// The function name that, called in a chain, resets it (clears its stored
/// error) instead of running anything.
pub const RESET_CHAIN: &str = "spore::reset_chain";

/// First byte of a call reply: the encoded result follows.
pub const REPLY_OK: u8 = 0;
/// First byte of a call reply: a postcard [`RemoteError`] follows.
pub const REPLY_ERR: u8 = 1;

/// What went wrong in a remote call, on the remote side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RemoteErrorKind {
    /// The function returned `Err`.
    Returned,
    /// The function panicked.
    Panicked,
    /// No function of that name is registered in the context.
    NoSuchFunction,
    /// The arguments did not decode as the function's parameter types.
    BadArguments,
    /// The result could not be serialized.
    Unserializable,
    /// The reply would exceed the message-size limit.
    TooLarge,
}

/// A failure inside a remote context, with everything needed to act on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteError {
    /// Name of the context where it happened.
    pub context: String,
    /// The function that was called.
    pub function: String,
    /// What kind of failure.
    pub kind: RemoteErrorKind,
    /// Rust type of the error (`panic` for panics).
    pub type_name: String,
    /// The error's message (`Display`).
    pub message: String,
    /// Messages of the error's `source()` chain, outermost first.
    pub chain: Vec<String>,
    /// `file:line:column` of a panic, when known.
    pub location: Option<String>,
    /// A captured backtrace, when enabled (debug flag or `RUST_BACKTRACE`).
    pub backtrace: Option<String>,
}

/// Where a forwarded line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogOrigin {
    /// A `tracing` event.
    Tracing,
    /// A line the context wrote to its stdout.
    Stdout,
    /// A line the context wrote to its stderr.
    Stderr,
}

/// Payload of [`crate::handles::FORWARD_LOG`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// Where it came from.
    pub origin: LogOrigin,
    /// 1 error .. 5 trace (as in [`ChildConfig::log_level`]).
    pub level: u8,
    /// The event's target (module path) in the child.
    pub target: String,
    /// The message, with the event's other fields appended as `key=value`.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example in docs/PROTOCOL.md, §3 `CONFIGURE`.
    #[test]
    fn child_config_encodes_as_documented() {
        let cfg = ChildConfig {
            context_id: 1,
            name: "local.1".into(),
            parent_id: 0,
            parent_ids: vec![0],
            log_level: 3,
            max_message_size: 134_217_728,
            debug: false,
            unidirectional: false,
            shutdown_grace_ms: 5000,
            heartbeat_ms: 60_000,
            build_id: "0.1.0-p1".into(),
        };
        let hex: String = postcard::to_stdvec(&cfg)
            .unwrap()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let documented =
            "08 302e312e302d7031 01 07 6c6f63616c2e31 00 01 00 03 80808040 00 8827 00 e0d403";
        assert_eq!(hex, documented.replace(' ', ""));
    }

    #[test]
    fn call_request_borrows_and_leaves_the_arguments() {
        let mut buf = postcard::to_stdvec(&CallRequest {
            function: "m::f",
            chain: None,
        })
        .unwrap();
        buf.extend_from_slice(&[1, 2, 3]);
        let (req, rest): (CallRequest, _) = postcard::take_from_bytes(&buf).unwrap();
        assert_eq!(req.function, "m::f");
        assert_eq!(rest, &[1, 2, 3]);
    }
}
