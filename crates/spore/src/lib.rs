//! spore: programs that start copies of themselves as child *contexts* —
//! local processes, through sudo, su or doas, over ssh, in containers,
//! namespaces and chroots, and chains of these — with nothing installed on
//! the target, and call their own functions in them.
//!
//! ```no_run
//! #[spore::remote]
//! fn add(a: i32, b: i32) -> i32 {
//!     a + b
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     spore::init(); // in a child, this never returns
//!     let router = spore::Router::new()?;
//!     let ctx = router.local().await?;
//!     assert_eq!(ctx.call(add, (2, 3)).await?, 5);
//!     router.shutdown().await;
//!     Ok(())
//! }
//! ```
//!
//! How it works: [`Router::local`] starts this same executable as a child
//! (directly, or through a POSIX-shell first stage that receives the image
//! over stdin and runs it from memory). Parent and child then speak framed
//! messages over the child's stdin/stdout ([`spore_proto`]). A call is a
//! CALL_FUNCTION message naming a function registered with
//! [`macro@remote`]; the reply comes back to a handle of the caller.
//! Children forward their `tracing` events and their stdout/stderr lines to
//! the master, and exit as soon as their parent's stream closes.
//!
//! See docs/ARCHITECTURE.md for the design and its invariants.
#![warn(missing_docs)]

extern crate self as spore;

mod bootstrap;
pub mod builtins;
mod call;
mod call_chain;
mod channel;
mod error;
mod images;
mod logging;
mod pool;
mod router;
mod service;
mod stream;
mod sys;

pub use bootstrap::{
    Connect, Doas, Enter, FIRST_STAGE, HostKeyPolicy, STAGE0, Ssh, SshFailure, Su, Sudo,
};
pub use call::{CallError, RemoteFunction, RemoteResult, registered_functions};
pub use call_chain::CallChain;
pub use channel::{Receiver, RecvError, Select, SelectCloser, SendError, Sender};
pub use error::ConnectError;
pub use images::this_platform;
pub use router::{
    Context, DEFAULT_HEARTBEAT, OutputLine, OutputStream, PendingCall, Router, RouterBuilder,
};
pub use service::{FIRST_SERVICE, LAST_SERVICE, Service};
pub use spore_proto::ContextId;
/// The master's context ID: the root of every tree.
pub use spore_proto::MASTER_ID;
pub use spore_proto::messages::{RemoteError, RemoteErrorKind};

/// Registers a function so that other contexts running this build can call it.
///
/// The function must not be generic and its arguments must be owned,
/// serde-serializable types; its result must be serializable. If its return
/// type is spelled `Result<T, E>` (any path ending in `Result`), an `Err` is
/// sent back as a [`CallError::Remote`] carrying the error's type, message
/// and `source()` chain, and the caller receives `T`. `async fn`s run as
/// tasks on the context's worker runtime; other functions run on its bounded
/// blocking pool. A panic is caught and reported with its location; the
/// context keeps serving.
///
/// The function stays callable locally as before (`add(1, 2)`); its name
/// also works as the first argument of [`Context::call`].
///
/// ```
/// #[spore::remote]
/// fn add(a: i32, b: i32) -> i32 { a + b }
///
/// #[spore::remote]
/// async fn read(path: String) -> Result<String, std::io::Error> {
///     std::fs::read_to_string(path)
/// }
///
/// assert_eq!(add(1, 2), 3);
/// # use spore::RemoteFunction;
/// # fn name_of<F: RemoteFunction>(_: F) -> &'static str { F::NAME }
/// assert!(name_of(add).ends_with("::add"));
/// ```
pub use spore_macros::remote;

/// Call first in `main`. In a process started as a spore context this runs
/// the context and never returns (the rest of `main` is never run there);
/// in the program the user started, it returns at once.
///
/// It also answers the first stage's `--spore-probe` check.
pub fn init() {
    let mut args = std::env::args_os();
    let _argv0 = args.next();
    match args.next() {
        Some(a) if a == spore_proto::handshake::CHILD_ARG => bootstrap::child::run(),
        Some(a) if a == spore_proto::handshake::PROBE_ARG => {
            println!("{}", spore_proto::handshake::PROBE_REPLY);
            std::process::exit(0)
        }
        _ => {}
    }
}

/// Detaches this child context from its parent (DETACHING): the parent and
/// the master no longer shut it down or kill it, and when they exit it
/// keeps running until its last running call returns. Its stderr then goes
/// to /dev/null and it reaches no ancestor any more. It also leaves the
/// parent's session, so a terminal's signals no longer reach it.
///
/// Call it in a child (from a remote function), or from the parent as
/// `ctx.call(spore::builtins::detach, ()).await`. Fails in a process that
/// is not a child context.
///
/// ```no_run
/// #[spore::remote]
/// fn run_overnight() -> std::io::Result<()> {
///     spore::detach()?;
///     // ... long work that must survive the master ...
///     Ok(())
/// }
/// ```
pub fn detach() -> std::io::Result<()> {
    bootstrap::child::detach()
}

/// Whether this process is running as a child context.
pub fn is_child() -> bool {
    bootstrap::child::inner().is_some()
}

/// This build's identity, checked at handshake: every context of a tree
/// must run the same build.
pub fn build_id() -> String {
    format!(
        "{}-p{}",
        env!("CARGO_PKG_VERSION"),
        spore_proto::PROTOCOL_VERSION
    )
}

/// Ways to make a bootstrap misbehave, for testing the error paths.
#[cfg(feature = "fault-injection")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Never send the payload after SPORE-READY.
    NeverFeed,
    /// Send half the announced payload, then close the stream.
    TruncatePayload,
    /// Send garbage instead of the payload header line.
    GarbageHeader,
}

/// Test-only hooks for forging traffic (feature `fault-injection`).
#[cfg(feature = "fault-injection")]
pub mod fault {
    /// In a child context: writes raw bytes onto the stream to the parent,
    /// bypassing the router, to test how the parent handles forged or
    /// corrupt traffic.
    pub fn write_raw_to_parent(bytes: &[u8]) -> std::io::Result<()> {
        crate::bootstrap::child::write_raw_to_parent(bytes)
    }

    /// Sends `payload` to `handle` in `ctx` with a reply handle and waits
    /// for the answer (a dead message becomes [`crate::CallError::Undeliverable`]).
    pub async fn request(
        ctx: &crate::Context,
        handle: u32,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, crate::CallError> {
        ctx.raw_request(handle, payload).await
    }
}

#[doc(hidden)]
pub mod __private {
    pub use crate::call::{
        BoxFuture, Failure, Invoke, REMOTE_FUNCTIONS, RemoteEntry, RemoteResult, decode_args,
        encode_result, encode_value,
    };
    pub use crate::service::{SERVICES, ServiceEntry};
    pub use linkme;
}
