//! The values processes exchange: pids, references, exit reasons, and the
//! EXIT and DOWN messages.

use std::fmt;

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use spore::ContextId;

/// Anything a process can send: serializable (it may cross to another
/// context), sendable between threads, owned.
///
/// Implemented for every type that qualifies. A receiver picks messages by
/// type ([`crate::receive`]); across contexts the type travels as a hash of
/// its name, so both ends must use the same type (every context of a tree
/// runs the same build).
pub trait Message: Serialize + DeserializeOwned + Send + 'static {}
impl<T: Serialize + DeserializeOwned + Send + 'static> Message for T {}

/// A process, in any context of the tree: the context's ID and a serial
/// number that context never gives out again.
///
/// Displays as Erlang does, `<context.serial>`. Serializes, so pids travel
/// in messages and call arguments.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Pid {
    pub(crate) context: ContextId,
    pub(crate) serial: u64,
}

impl Pid {
    /// The context the process lives in.
    pub fn context(&self) -> ContextId {
        self.context
    }

    /// Its number in that context (never reused there).
    pub fn serial(&self) -> u64 {
        self.serial
    }

    /// Serial 0 of `context`: no process. Stands for the sender of a
    /// message from outside any process, and for the process a name in
    /// another context stood for when that is not known.
    pub(crate) fn none(context: ContextId) -> Pid {
        Pid { context, serial: 0 }
    }
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}.{}>", self.context, self.serial)
    }
}

impl fmt::Debug for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A reference unique in the tree: names a monitor (and the replies of a
/// gen_server call). Displays as `#Ref<context.serial>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Ref {
    pub(crate) context: ContextId,
    pub(crate) serial: u64,
}

impl fmt::Display for Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#Ref<{}.{}>", self.context, self.serial)
    }
}

impl fmt::Debug for Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a process ended, or the reason of an exit signal: Erlang's reasons.
///
/// Only [`Reason::Normal`] is ignored by a linked process that does not
/// trap exits; every other reason ends it with the same reason.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Reason {
    /// The process finished (its function returned).
    Normal,
    /// Asked to stop (by a supervisor, or by itself).
    Shutdown,
    /// Erlang's `{shutdown, Detail}`: asked to stop, with a detail. Like
    /// `Shutdown`, not a crash (not restarted by a transient supervisor).
    ShutdownWith(String),
    /// Only as a signal: `exit(pid, Reason::Kill)` ends the process whether
    /// it traps exits or not, and its links and monitors see `Killed`. A
    /// process that ends itself with `Kill` propagates `Kill`, which its
    /// links may trap.
    Kill,
    /// The process was killed by `exit(pid, Reason::Kill)`.
    Killed,
    /// The process did not exist (linking to or monitoring a dead pid).
    Noproc,
    /// Its context was lost, or stopped answering.
    Noconnection,
    /// The process panicked: the panic's message (its location goes to
    /// stderr with the panic hook's report).
    Panic(String),
    /// Any other reason, as text: an error a process ended with.
    Error(String),
}

impl Reason {
    /// An [`Reason::Error`] with `detail`.
    pub fn error(detail: impl fmt::Display) -> Self {
        Reason::Error(detail.to_string())
    }

    /// Whether this is exactly `normal`.
    pub fn is_normal(&self) -> bool {
        matches!(self, Reason::Normal)
    }

    /// Whether this is `normal`, `shutdown` or `{shutdown, _}`: the reasons
    /// a transient child is not restarted after, and a gen_server does not
    /// report as a crash.
    pub fn is_clean(&self) -> bool {
        matches!(
            self,
            Reason::Normal | Reason::Shutdown | Reason::ShutdownWith(_)
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Normal => f.write_str("normal"),
            Reason::Shutdown => f.write_str("shutdown"),
            Reason::ShutdownWith(d) => write!(f, "{{shutdown, {d}}}"),
            Reason::Kill => f.write_str("kill"),
            Reason::Killed => f.write_str("killed"),
            Reason::Noproc => f.write_str("noproc"),
            Reason::Noconnection => f.write_str("noconnection"),
            Reason::Panic(m) => write!(f, "panic: {m}"),
            Reason::Error(m) => f.write_str(m),
        }
    }
}

impl fmt::Debug for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Reason {}

/// The message a process that traps exits gets for an exit signal
/// (Erlang's `{'EXIT', From, Reason}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    /// Who sent it: the linked process that ended, or the caller of `exit`.
    pub from: Pid,
    /// Its reason.
    pub reason: Reason,
}

/// The message a monitor delivers once, when the monitored process ends
/// (Erlang's `{'DOWN', Ref, process, Pid, Reason}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Down {
    /// The monitor's reference, as [`crate::monitor`] returned it.
    pub mref: Ref,
    /// The monitored process. For a monitor of a name in another context
    /// (a call to [`crate::call::Dest::At`]), the process that had the
    /// name; serial 0 of that context if none had it or the context was
    /// lost.
    pub pid: Pid,
    /// Why it ended: its exit reason, `noproc` if it did not exist, or
    /// `noconnection` if its context was lost.
    pub reason: Reason,
}

/// What a process function may return: `()` ends it `normal`, a [`Reason`]
/// ends it with that reason, and `Result<(), E>` ends it `normal` or with
/// the error as reason.
pub trait ProcessResult {
    /// The exit reason this result means.
    fn into_reason(self) -> Reason;
}

impl ProcessResult for () {
    fn into_reason(self) -> Reason {
        Reason::Normal
    }
}

impl ProcessResult for Reason {
    fn into_reason(self) -> Reason {
        self
    }
}

impl<E: Into<Reason>> ProcessResult for Result<(), E> {
    fn into_reason(self) -> Reason {
        match self {
            Ok(()) => Reason::Normal,
            Err(e) => e.into(),
        }
    }
}

/// Names the never type `!` on stable Rust: a process that never returns
/// (`async { loop { … } }`, or one that ends in a panic) has output `!`
/// under edition 2024, and must still be spawnable.
pub trait FnOutput {
    /// The function's output type.
    type Output;
}
impl<O> FnOutput for fn() -> O {
    type Output = O;
}
/// The never type, `!`.
pub type Never = <fn() -> ! as FnOutput>::Output;

impl ProcessResult for Never {
    fn into_reason(self) -> Reason {
        match self {}
    }
}

/// A stable tag for type `T` across the contexts of one build: the FNV-1a
/// hash of its name (the same source compiles to the same name on every
/// platform; `TypeId` need not).
pub(crate) fn type_tag<T: ?Sized>() -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in std::any::type_name::<T>().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
