//! OTP's supervisor: a process that starts children, watches them, restarts
//! them by a strategy, and stops them in order.
//!
//! A supervisor is started with [`start_link`] from a [`SupSpec`]: a
//! [`Strategy`], a restart intensity, and [`ChildSpec`]s. Each child spec
//! has an id and a *start function*, which runs inside the supervisor
//! process and returns the pid of a child linked to it (the supervisor
//! links it itself if the start function did not). The start function is
//! told, in a [`StartInfo`], the child's id, how many times it was started
//! before, and how its last incarnation ended; a start function that
//! chooses where the child runs (a *placement function*) can use it to
//! restart a child whose context was lost (its EXIT says
//! [`Reason::Noconnection`]) in another context.
//!
//! The rules are Erlang's:
//!
//! - **Strategies**: [`Strategy::OneForOne`] restarts the child that ended;
//!   [`Strategy::OneForAll`] stops all the others (in reverse start order)
//!   and starts them all again (in start order); [`Strategy::RestForOne`]
//!   does that with the child that ended and those started after it;
//!   [`Strategy::Dynamic`] (OTP's `simple_one_for_one`) has one spec and
//!   starts children from it on demand with [`start_child`], passing an
//!   argument to the start function ([`StartInfo::arg`]); a dynamic child
//!   is restarted with the same argument.
//! - **Restart types** ([`Restart`]): a permanent child is always
//!   restarted; a transient one only after an abnormal exit (not `normal`,
//!   `shutdown` or `{shutdown, _}`); a temporary one never, and it leaves
//!   the child list when it ends.
//! - **Intensity**: more than `intensity` restarts within `period` (by
//!   default 1 in 5 s) make the supervisor stop all its children and exit
//!   with `shutdown`. A one_for_all or rest_for_one event counts once. A
//!   start function that fails during a restart is retried later, after
//!   the supervisor has looked at its mailbox, and each retry counts as a
//!   restart.
//! - **Shutdown** ([`Shutdown`]): children stop in reverse start order, one
//!   at a time (a dynamic supervisor's all at once, as OTP does). The
//!   supervisor monitors the child, unlinks it, and: `BrutalKill` sends
//!   `kill`; `Timeout(T)` sends `shutdown` and, if the child's DOWN has not
//!   come after T, `kill`; `Infinity` sends `shutdown` and waits. A child
//!   is dead when its DOWN has arrived: a supervisor exits, and [`stop`]
//!   returns, only then.
//! - The supervisor traps exits. An exit signal from its parent (the
//!   process that called [`start_link`]) makes it stop its children and
//!   exit with the same reason; one from any other process that is not a
//!   child is ignored.
//!
//! The API talks to the supervisor with [`crate::call`] (by pid, by name
//! here, or by its name in another context: [`Dest::At`]) and waits as
//! long as the supervisor takes (OTP's `infinity`); it fails at once with
//! the supervisor's exit reason if it ends, or with `noproc`.
//!
//! A child that ends abnormally is logged at `info` level (the supervisor
//! handles it); a failed start, a child that did not stop as asked, and
//! reaching the restart intensity are logged as errors.
//!
//! ```
//! use std::time::Duration;
//! use spore_process::supervisor::{self, ChildSpec, Restart, SupSpec};
//! use spore_process::*;
//!
//! let node = Node::new();
//! node.run_blocking(async {
//!     // A worker that ends with an error when it gets 0.
//!     let worker = ChildSpec::process("worker", |info| async move {
//!         println!("started, {} times before", info.restarts);
//!         loop {
//!             let n: u32 = receive().await;
//!             if n == 0 {
//!                 return Err(Reason::error("got 0"));
//!             }
//!         }
//!     });
//!     let sup = supervisor::start_link(SupSpec::one_for_one(vec![worker]))
//!         .await
//!         .expect("the supervisor starts");
//!
//!     let first = supervisor::which_children(sup).await.unwrap()[0].pid.unwrap();
//!     let mref = monitor(first);
//!     send(first, 0u32);
//!     let down = receive_match(|m| m.take_if::<Down>(|d| d.mref == mref)).await;
//!     assert_eq!(down.reason, Reason::error("got 0"));
//!
//!     // Restarted: a new pid under the same id.
//!     let children = supervisor::which_children(sup).await.unwrap();
//!     assert_eq!(children[0].id, "worker");
//!     assert_eq!(children[0].restart, Restart::Permanent);
//!     assert_ne!(children[0].pid, Some(first));
//!
//!     // Returns when the worker is dead, then the supervisor.
//!     supervisor::stop(sup, Reason::Normal).await.unwrap();
//! })
//! .unwrap();
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskCx, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::api::{
    current, demonitor, exit, link, monitor, receive_match, receive_match_timeout, self_pid, send,
    spawn_link, spawn_opt, unlink,
};
use crate::call::{self, CallError, Dest, Request};
use crate::node::{SpawnError, SpawnOptions, panic_reason};
use crate::types::{Down, Exit, Message, Pid, ProcessResult, Reason, Ref, type_tag};

/// The restart intensity a [`SupSpec`] has unless told otherwise: at most
/// 1 restart…
pub const DEFAULT_INTENSITY: u32 = 1;
/// …within 5 s (OTP's defaults).
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(5);

/// How long API calls wait for the supervisor: as long as it takes (it may
/// be stopping children), unless it ends.
const FOREVER: Duration = Duration::MAX;

/// What a start function returns: the pid of the child it started, linked
/// to the caller (the supervisor), or why it could not start it.
pub type StartFuture = Pin<Box<dyn Future<Output = Result<Pid, Reason>> + Send + 'static>>;

/// A start function, as a [`ChildSpec`] keeps it: called in the supervisor
/// process each time the child is started.
pub type StartFn = Arc<dyn Fn(StartInfo) -> StartFuture + Send + Sync + 'static>;

/// When a child is restarted after it ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Restart {
    /// Always (the default).
    #[default]
    Permanent,
    /// Only after an abnormal exit: not after `normal`, `shutdown` or
    /// `{shutdown, _}`.
    Transient,
    /// Never; the child leaves the child list when it ends.
    Temporary,
}

impl Restart {
    /// Whether a child of this type that ended with `reason` is restarted.
    pub fn restarts_after(self, reason: &Reason) -> bool {
        match self {
            Restart::Permanent => true,
            Restart::Transient => !reason.is_clean(),
            Restart::Temporary => false,
        }
    }
}

/// How a supervisor stops a child.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Shutdown {
    /// `exit(child, kill)`: at once, without the child knowing.
    BrutalKill,
    /// `exit(child, shutdown)`, then `kill` if the child has not ended
    /// after this long (never sooner). A worker's default is 5 s.
    Timeout(Duration),
    /// `exit(child, shutdown)`, and wait for it to end, however long that
    /// takes: a supervisor child's default, as it stops its own children.
    Infinity,
}

/// What a child is, for [`count_children`] and the default [`Shutdown`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChildKind {
    /// Any process that is not a supervisor (the default).
    #[default]
    Worker,
    /// A supervisor: stopped with [`Shutdown::Infinity`] unless told
    /// otherwise.
    Supervisor,
}

/// What a supervisor does when a child ends and is to be restarted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Strategy {
    /// Restart that child only.
    OneForOne,
    /// Stop all the other children (reverse start order), then start all
    /// of them again (start order).
    OneForAll,
    /// Stop the children started after that one (reverse start order), then
    /// start it and them again (start order).
    RestForOne,
    /// OTP's `simple_one_for_one`: one child spec, no child at first;
    /// [`start_child`] starts one with an argument. Restarts are one for
    /// one, with the same argument; children stop all at once.
    Dynamic,
}

/// What a start function is told about the child it starts.
#[derive(Clone, Debug)]
pub struct StartInfo {
    /// The child's id (the spec's id, for children of a dynamic
    /// supervisor).
    pub id: String,
    /// How many times the supervisor tried to start this child before
    /// (0 the first time; restarts and failed starts count).
    pub restarts: u32,
    /// How the previous incarnation ended (its exit reason, or why its
    /// start failed); `None` the first time. `Some(Reason::Noconnection)`
    /// means its context was lost: a placement function may choose another
    /// context.
    pub last_exit: Option<Reason>,
    /// The pid of the previous incarnation, if there was one (its
    /// [`Pid::context`] is where it ran).
    pub last_pid: Option<Pid>,
    arg: Option<ChildArg>,
}

impl StartInfo {
    /// The argument [`start_child`] gave to this child of a dynamic
    /// supervisor, as an `A`. An error (usable as the start function's
    /// failure with `?`) if there is none or it is not an `A`.
    pub fn arg<A: Message>(&self) -> Result<A, Reason> {
        let Some(arg) = &self.arg else {
            return Err(Reason::error(format!(
                "child {:?} has no argument: only children started by start_child on a dynamic supervisor have one",
                self.id
            )));
        };
        if arg.tag != type_tag::<A>() {
            return Err(Reason::error(format!(
                "the argument of child {:?} is a {}, not a {}",
                self.id,
                arg.type_name,
                std::any::type_name::<A>()
            )));
        }
        match postcard::from_bytes(&arg.bytes) {
            Ok(a) => Ok(a),
            Err(e) => Err(Reason::error(format!(
                "the argument of child {:?} does not decode as a {}: {e}",
                self.id, arg.type_name
            ))),
        }
    }

    /// Whether the child has an argument (it is a dynamic supervisor's).
    pub fn has_arg(&self) -> bool {
        self.arg.is_some()
    }
}

/// One child of a supervisor: its id, how to start it, when to restart it,
/// how to stop it.
///
/// ```
/// use std::time::Duration;
/// use spore_process::supervisor::{ChildSpec, Restart, Shutdown};
/// use spore_process::*;
///
/// // The supervisor spawns and links the process itself.
/// let simple = ChildSpec::process("cache", |_info| async {
///     loop {
///         let _: String = receive().await;
///     }
/// })
/// .restart(Restart::Transient)
/// .shutdown(Shutdown::Timeout(Duration::from_secs(1)));
///
/// // A start function: may fail, may choose where the child runs.
/// let custom = ChildSpec::new("db", |info| async move {
///     if info.restarts > 100 {
///         return Err(Reason::error("gave up"));
///     }
///     Ok(spawn_link(async { let () = receive().await; }))
/// });
/// assert_eq!(custom.id(), "db");
/// # let _ = simple;
/// ```
#[derive(Clone)]
pub struct ChildSpec {
    id: String,
    start: StartFn,
    restart: Restart,
    shutdown: Option<Shutdown>,
    kind: ChildKind,
}

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSpec")
            .field("id", &self.id)
            .field("restart", &self.restart)
            .field("shutdown", &self.shutdown_how())
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl ChildSpec {
    /// A child started by `start`, which runs in the supervisor process
    /// and returns the pid of a child linked to it (with [`spawn_link`],
    /// or a `start_link` of a gen_server or supervisor). If the pid is not
    /// linked, the supervisor links it. A panic in `start` is a failed
    /// start (as an exception in OTP's start function is).
    ///
    /// Permanent, a worker, stopped with a 5 s timeout, unless told
    /// otherwise.
    pub fn new<S, F>(id: impl Into<String>, start: S) -> ChildSpec
    where
        S: Fn(StartInfo) -> F + Send + Sync + 'static,
        F: Future<Output = Result<Pid, Reason>> + Send + 'static,
    {
        ChildSpec::with_start_fn(id, Arc::new(move |info| Box::pin(start(info))))
    }

    /// [`ChildSpec::new`] with a start function already boxed.
    pub fn with_start_fn(id: impl Into<String>, start: StartFn) -> ChildSpec {
        ChildSpec {
            id: id.into(),
            start,
            restart: Restart::Permanent,
            shutdown: None,
            kind: ChildKind::Worker,
        }
    }

    /// A child that is a process of the supervisor's context running the
    /// future `body` returns: the supervisor spawns and links it, so
    /// starting it never fails.
    pub fn process<B, F>(id: impl Into<String>, body: B) -> ChildSpec
    where
        B: Fn(StartInfo) -> F + Send + Sync + 'static,
        F: Future + Send + 'static,
        F::Output: ProcessResult,
    {
        ChildSpec::with_start_fn(
            id,
            Arc::new(move |info| {
                let fut = body(info);
                Box::pin(async move { Ok(spawn_link(fut)) })
            }),
        )
    }

    /// A child that is a supervisor of `spec`, started with [`start_link`]
    /// (its start fails if `spec`'s does). A [`ChildKind::Supervisor`],
    /// stopped with [`Shutdown::Infinity`] unless told otherwise.
    pub fn supervisor(id: impl Into<String>, spec: SupSpec) -> ChildSpec {
        ChildSpec::new(id, move |_| {
            let spec = spec.clone();
            async move { start_link(spec).await.map_err(Reason::from) }
        })
        .kind(ChildKind::Supervisor)
    }

    /// When to restart the child.
    pub fn restart(mut self, restart: Restart) -> ChildSpec {
        self.restart = restart;
        self
    }

    /// How to stop the child.
    pub fn shutdown(mut self, shutdown: Shutdown) -> ChildSpec {
        self.shutdown = Some(shutdown);
        self
    }

    /// What the child is (a supervisor's default shutdown is
    /// [`Shutdown::Infinity`]).
    pub fn kind(mut self, kind: ChildKind) -> ChildSpec {
        self.kind = kind;
        self
    }

    /// The child's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn shutdown_how(&self) -> Shutdown {
        self.shutdown.unwrap_or(match self.kind {
            ChildKind::Worker => Shutdown::Timeout(Duration::from_secs(5)),
            ChildKind::Supervisor => Shutdown::Infinity,
        })
    }
}

/// What a supervisor is: its strategy, restart intensity, name, and
/// children (for a dynamic one, the one spec its children are made from).
///
/// ```
/// use std::time::Duration;
/// use spore_process::supervisor::{ChildSpec, SupSpec};
///
/// let worker = |id: &str| ChildSpec::process(id, |_| async {});
/// let spec = SupSpec::rest_for_one(vec![worker("db"), worker("cache"), worker("web")])
///     .intensity(3, Duration::from_secs(10))
///     .name("front");
/// # let _ = spec;
/// ```
#[derive(Clone, Debug)]
pub struct SupSpec {
    strategy: Strategy,
    children: Vec<ChildSpec>,
    intensity: u32,
    period: Duration,
    name: Option<String>,
}

impl SupSpec {
    /// A supervisor of `children` (started in this order) by `strategy`.
    /// A [`Strategy::Dynamic`] supervisor takes exactly one spec (see
    /// [`SupSpec::dynamic`]). Intensity 1 restart in 5 s.
    pub fn new(strategy: Strategy, children: Vec<ChildSpec>) -> SupSpec {
        SupSpec {
            strategy,
            children,
            intensity: DEFAULT_INTENSITY,
            period: DEFAULT_PERIOD,
            name: None,
        }
    }

    /// [`Strategy::OneForOne`].
    pub fn one_for_one(children: Vec<ChildSpec>) -> SupSpec {
        SupSpec::new(Strategy::OneForOne, children)
    }

    /// [`Strategy::OneForAll`].
    pub fn one_for_all(children: Vec<ChildSpec>) -> SupSpec {
        SupSpec::new(Strategy::OneForAll, children)
    }

    /// [`Strategy::RestForOne`].
    pub fn rest_for_one(children: Vec<ChildSpec>) -> SupSpec {
        SupSpec::new(Strategy::RestForOne, children)
    }

    /// A [`Strategy::Dynamic`] supervisor whose children are all started
    /// from `template` by [`start_child`] with an argument.
    pub fn dynamic(template: ChildSpec) -> SupSpec {
        SupSpec::new(Strategy::Dynamic, vec![template])
    }

    /// At most `restarts` restarts within `period`; one more makes the
    /// supervisor stop its children and exit with `shutdown`. The period
    /// must not be zero.
    pub fn intensity(mut self, restarts: u32, period: Duration) -> SupSpec {
        self.intensity = restarts;
        self.period = period;
        self
    }

    /// Registers the supervisor under `name` in its context (starting it
    /// fails if the name is taken).
    pub fn name(mut self, name: impl Into<String>) -> SupSpec {
        self.name = Some(name.into());
        self
    }

    /// What is wrong with the spec, if anything.
    fn check(&self) -> Result<(), StartError> {
        if self.period.is_zero() {
            return Err(StartError::BadSpec(
                "the intensity period must be more than zero".into(),
            ));
        }
        if self.strategy == Strategy::Dynamic && self.children.len() != 1 {
            return Err(StartError::BadSpec(format!(
                "a dynamic supervisor takes exactly one child spec, not {}",
                self.children.len()
            )));
        }
        let mut seen = rustc_hash::FxHashSet::default();
        for c in &self.children {
            if !seen.insert(c.id.as_str()) {
                return Err(StartError::DuplicateId(c.id.clone()));
            }
        }
        Ok(())
    }
}

/// One child, as [`which_children`] describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildInfo {
    /// Its id (a dynamic supervisor's children all have the spec's).
    pub id: String,
    /// Its pid while it runs; `None` if it is stopped (or being
    /// restarted).
    pub pid: Option<Pid>,
    /// Its start failed during a restart; the supervisor tries again.
    pub restarting: bool,
    /// What it is.
    pub kind: ChildKind,
    /// When it is restarted.
    pub restart: Restart,
    /// How it is stopped.
    pub shutdown: Shutdown,
    /// How many times the supervisor started it (or tried to) before its
    /// current incarnation.
    pub restarts: u32,
}

/// The numbers of children, as [`count_children`] gives them (OTP's
/// `count_children`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildCount {
    /// Child specs (1 for a dynamic supervisor).
    pub specs: usize,
    /// Children running.
    pub active: usize,
    /// Children that are supervisors, running or not.
    pub supervisors: usize,
    /// Children that are workers, running or not.
    pub workers: usize,
}

/// A child, for [`terminate_child`]: by id, or by pid (a dynamic
/// supervisor's children only by pid).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChildRef {
    /// The child with this id.
    Id(String),
    /// The child with this pid.
    Pid(Pid),
}

impl From<&str> for ChildRef {
    fn from(id: &str) -> Self {
        ChildRef::Id(id.to_owned())
    }
}

impl From<String> for ChildRef {
    fn from(id: String) -> Self {
        ChildRef::Id(id)
    }
}

impl From<Pid> for ChildRef {
    fn from(pid: Pid) -> Self {
        ChildRef::Pid(pid)
    }
}

impl fmt::Display for ChildRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChildRef::Id(id) => write!(f, "{id:?}"),
            ChildRef::Pid(pid) => write!(f, "{pid}"),
        }
    }
}

/// A supervisor did not start ([`start_link`]). Nothing it started is left
/// running.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum StartError {
    /// A child did not start; the children started before it were stopped
    /// (in reverse order).
    #[error("the supervisor did not start: child {id:?} failed to start: {reason}")]
    Child {
        /// The child's id.
        id: String,
        /// Why its start failed.
        reason: Reason,
    },
    /// Two child specs have this id.
    #[error("the supervisor did not start: two children have the id {0:?}")]
    DuplicateId(String),
    /// The spec is not valid (see the message).
    #[error("the supervisor did not start: {0}")]
    BadSpec(String),
    /// The name asked for belongs to another process, which keeps it.
    #[error("the supervisor did not start: the name {name:?} is already registered to {owner}")]
    AlreadyStarted {
        /// The name.
        name: String,
        /// Its owner.
        owner: Pid,
    },
    /// The supervisor ended while starting, with this reason (it was
    /// killed).
    #[error("the supervisor ended while starting: {0}")]
    Exit(Reason),
}

impl From<StartError> for Reason {
    /// OTP's `{shutdown, {failed_to_start_child, Id, Reason}}`: the reason a
    /// supervisor that did not start ends with.
    fn from(e: StartError) -> Reason {
        match e {
            StartError::Exit(reason) => reason,
            StartError::Child { id, reason } => {
                Reason::ShutdownWith(format!("failed to start child {id:?}: {reason}"))
            }
            other => Reason::ShutdownWith(other.to_string()),
        }
    }
}

/// A request about one child failed ([`start_child`], [`restart_child`],
/// [`terminate_child`], [`delete_child`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ChildError {
    /// A child with this id runs already.
    #[error("child {id:?} is already running as {pid}")]
    AlreadyStarted {
        /// The id.
        id: String,
        /// The running child.
        pid: Pid,
    },
    /// A stopped child with this id is in the list: restart it, or delete
    /// it first.
    #[error("a stopped child {0:?} is already present")]
    AlreadyPresent(String),
    /// No such child.
    #[error("the supervisor has no child {0}")]
    NotFound(ChildRef),
    /// The child runs (it must be stopped first).
    #[error("child {0:?} is running")]
    Running(String),
    /// The child is being restarted (its start failed; the supervisor
    /// tries again).
    #[error("child {0:?} is being restarted")]
    Restarting(String),
    /// The child's start function failed; the child was not added.
    #[error("child {id:?} failed to start: {reason}")]
    Start {
        /// The id.
        id: String,
        /// Why.
        reason: Reason,
    },
    /// Not for this kind of supervisor (see the message).
    #[error("{0}")]
    Unsupported(String),
    /// A [`ChildSpec`] holds a function: it can only be given to a
    /// supervisor in the caller's context (this one is named).
    #[error(
        "a ChildSpec holds a start function: it cannot be sent to supervisor {0}, which is in another context"
    )]
    NotLocal(String),
    /// The supervisor could not be asked (it ended, or does not exist).
    #[error(transparent)]
    #[serde(skip)]
    Call(CallError),
}

impl From<CallError> for ChildError {
    fn from(e: CallError) -> Self {
        ChildError::Call(e)
    }
}

/// What [`start_child`] takes: a [`ChildSpec`] for a supervisor with a
/// static strategy, or any message as the argument of a dynamic
/// supervisor's new child.
pub trait NewChild: wire::Sealed {}
impl<T: wire::Sealed> NewChild for T {}

mod wire {
    //! The supervisor's messages.
    use super::*;

    pub trait Sealed {
        fn into_request(self) -> NewChildReq;
    }

    impl Sealed for ChildSpec {
        fn into_request(self) -> NewChildReq {
            NewChildReq::Spec(LocalSpec(self))
        }
    }

    impl<A: Message> Sealed for A {
        fn into_request(self) -> NewChildReq {
            let bytes = match postcard::to_stdvec(&self) {
                Ok(b) => Bytes::from(b),
                Err(e) => return NewChildReq::BadArg(e.to_string()),
            };
            NewChildReq::Arg(ChildArg {
                tag: type_tag::<A>(),
                type_name: std::any::type_name::<A>().to_owned(),
                bytes,
            })
        }
    }

    /// A dynamic child's argument, as the supervisor keeps it to restart
    /// the child with it.
    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub struct ChildArg {
        pub tag: u64,
        pub type_name: String,
        pub bytes: Bytes,
    }

    /// What [`start_child`] asks for.
    #[derive(Debug, Serialize, Deserialize)]
    pub enum NewChildReq {
        Spec(LocalSpec),
        Arg(ChildArg),
        /// An argument that did not encode (the reason).
        BadArg(String),
    }

    /// A child spec on its way to a supervisor of the same context: it
    /// never leaves as bytes (it holds a function).
    pub struct LocalSpec(pub ChildSpec);

    impl fmt::Debug for LocalSpec {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            self.0.fmt(f)
        }
    }

    const NOT_SENDABLE: &str = "a ChildSpec holds a start function and does not leave its context";

    impl Serialize for LocalSpec {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom(NOT_SENDABLE))
        }
    }

    impl<'de> Deserialize<'de> for LocalSpec {
        fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
            Err(serde::de::Error::custom(NOT_SENDABLE))
        }
    }

    /// A request to the supervisor (with [`call`]).
    #[derive(Debug, Serialize, Deserialize)]
    pub enum Cmd {
        StartChild(NewChildReq),
        RestartChild(String),
        TerminateChild(ChildRef),
        DeleteChild(String),
        WhichChildren,
        CountChildren,
    }

    /// [`stop`]: stop the children, then exit with this reason.
    #[derive(Debug, Serialize, Deserialize)]
    pub struct Stop {
        pub reason: Reason,
    }

    /// From the supervisor to itself: try again to start the child with
    /// this key (its start failed during a restart).
    #[derive(Debug, Serialize, Deserialize)]
    pub struct TryAgain {
        pub key: u64,
    }

    /// From a starting supervisor to its parent (OTP's init_ack).
    #[derive(Debug, Serialize, Deserialize)]
    pub struct InitAck {
        pub sup: Pid,
        pub result: Result<(), StartError>,
    }
}

use wire::{ChildArg, Cmd, InitAck, LocalSpec, NewChildReq, TryAgain};

// ---------------------------------------------------------------------------
// The API

/// Starts a supervisor of `spec`, linked to the caller, and returns once it
/// has started its children in order. If a child does not start, the
/// children started before it are stopped in reverse order, the supervisor
/// ends, and the error names the child; nothing is left running and the
/// caller stays unlinked from it. The caller is the supervisor's parent:
/// if it ends, the supervisor stops its children and ends too.
pub async fn start_link(spec: SupSpec) -> Result<Pid, StartError> {
    spec.check()?;
    let parent = self_pid();
    let mut opts = SpawnOptions::new().link().monitor().trap_exit();
    if let Some(name) = &spec.name {
        opts = opts.name(name.clone());
    }
    let (sup, mref) = match spawn_opt(supervisor(spec, parent), opts) {
        Ok((pid, mref)) => (pid, mref.expect("a monitor was asked for")),
        Err(SpawnError::NameTaken { name, owner }) => {
            return Err(StartError::AlreadyStarted { name, owner });
        }
        Err(e) => return Err(StartError::Exit(Reason::error(e))),
    };
    let got = receive_match(|m| {
        if let Some(ack) = m.take_if::<InitAck>(|a| a.sup == sup) {
            return Some(Ok(ack.result));
        }
        m.take_if::<Down>(|d| d.mref == mref).map(|d| Err(d.reason))
    })
    .await;
    match got {
        Ok(Ok(())) => {
            demonitor(mref, true);
            Ok(sup)
        }
        Ok(Err(e)) => {
            // It unlinked itself and ends: return when it is gone.
            receive_match(|m| m.take_if::<Down>(|d| d.mref == mref)).await;
            Err(e)
        }
        Err(reason) => {
            // Killed while starting. A caller that traps exits does not
            // need the EXIT as well (OTP's start_link flushes it too).
            unlink(sup);
            let _ = receive_match_timeout(Duration::ZERO, |m| m.take_if::<Exit>(|e| e.from == sup))
                .await;
            Err(StartError::Exit(reason))
        }
    }
}

/// Adds and starts a child: for a supervisor with a static strategy, a
/// [`ChildSpec`] (its id must be new; the supervisor must be in the
/// caller's context); for a [`Strategy::Dynamic`] one, an argument, which
/// the start function reads with [`StartInfo::arg`] (and gets again when
/// the child is restarted). If the start fails, nothing is added.
pub async fn start_child(sup: impl Into<Dest>, child: impl NewChild) -> Result<Pid, ChildError> {
    let sup = sup.into();
    let req = child.into_request();
    if let NewChildReq::Spec(_) = &req {
        let there = match &sup {
            Dest::Pid(pid) => Some(pid.context()),
            Dest::At(ctx, _) => Some(*ctx),
            Dest::Name(_) => None,
        };
        if there.is_some_and(|ctx| ctx != current("start_child").0.context()) {
            return Err(ChildError::NotLocal(sup.to_string()));
        }
    }
    call::call::<Cmd, Result<Pid, ChildError>>(sup, Cmd::StartChild(req), Some(FOREVER)).await?
}

/// Starts again the stopped child `id` (one that ended without being
/// restarted, or was stopped with [`terminate_child`]). Not for a dynamic
/// supervisor.
pub async fn restart_child(sup: impl Into<Dest>, id: &str) -> Result<Pid, ChildError> {
    call::call::<Cmd, Result<Pid, ChildError>>(sup, Cmd::RestartChild(id.to_owned()), Some(FOREVER))
        .await?
}

/// Stops a child as its [`Shutdown`] says and returns once it is dead. The
/// child stays in the list, stopped (a temporary one, or a dynamic
/// supervisor's, is removed). Stopping a stopped child is fine.
pub async fn terminate_child(
    sup: impl Into<Dest>,
    child: impl Into<ChildRef>,
) -> Result<(), ChildError> {
    call::call::<Cmd, Result<(), ChildError>>(sup, Cmd::TerminateChild(child.into()), Some(FOREVER))
        .await?
}

/// Removes the stopped child `id` from the list. Not for a running child,
/// nor for a dynamic supervisor.
pub async fn delete_child(sup: impl Into<Dest>, id: &str) -> Result<(), ChildError> {
    call::call::<Cmd, Result<(), ChildError>>(sup, Cmd::DeleteChild(id.to_owned()), Some(FOREVER))
        .await?
}

/// The children, in start order.
pub async fn which_children(sup: impl Into<Dest>) -> Result<Vec<ChildInfo>, CallError> {
    call::call(sup, Cmd::WhichChildren, Some(FOREVER)).await
}

/// How many children there are, running or not, of each kind.
pub async fn count_children(sup: impl Into<Dest>) -> Result<ChildCount, CallError> {
    call::call(sup, Cmd::CountChildren, Some(FOREVER)).await
}

/// Stops the supervisor: it stops its children (reverse start order) and
/// ends with `reason`. Returns once the supervisor is dead, so once every
/// child is. A linked caller that does not trap exits ends too unless
/// `reason` is `normal`, as in Erlang. An error if the supervisor did not
/// exist (`noproc`) or ended with another reason.
pub async fn stop(sup: impl Into<Dest>, reason: Reason) -> Result<(), CallError> {
    let request = wire::Stop {
        reason: reason.clone(),
    };
    call::stop_and_wait(sup.into(), request, &reason, None).await
}

// ---------------------------------------------------------------------------
// The supervisor process

/// Where a child is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Running(Pid),
    /// Its start failed during a restart; a [`TryAgain`] is on its way.
    Restarting,
    Stopped,
}

struct Child {
    spec: Arc<ChildSpec>,
    state: State,
    /// Start attempts so far.
    attempts: u32,
    last_exit: Option<Reason>,
    last_pid: Option<Pid>,
    arg: Option<ChildArg>,
}

impl Child {
    fn new(spec: Arc<ChildSpec>, arg: Option<ChildArg>) -> Child {
        Child {
            spec,
            state: State::Stopped,
            attempts: 0,
            last_exit: None,
            last_pid: None,
            arg,
        }
    }

    fn info(&self) -> ChildInfo {
        ChildInfo {
            id: self.spec.id.clone(),
            pid: match self.state {
                State::Running(pid) => Some(pid),
                _ => None,
            },
            restarting: self.state == State::Restarting,
            kind: self.spec.kind,
            restart: self.spec.restart,
            shutdown: self.spec.shutdown_how(),
            restarts: self.attempts.saturating_sub(1),
        }
    }
}

/// A supervisor's state, in its process.
struct Sup {
    parent: Pid,
    /// How logs name it.
    name: String,
    strategy: Strategy,
    /// A dynamic supervisor's one spec.
    template: Option<Arc<ChildSpec>>,
    /// By key: keys grow in start order (a static child keeps its key
    /// across restarts).
    children: BTreeMap<u64, Child>,
    by_pid: FxHashMap<Pid, u64>,
    next_key: u64,
    intensity: u32,
    period: Duration,
    /// When the recent restarts happened, oldest first.
    restarts: VecDeque<Instant>,
}

/// What the supervisor waits for.
enum Event {
    Exit(Exit),
    Call(Request<Cmd>),
    Stop(Reason),
    TryAgain(u64),
}

/// The supervisor process: starts the children, tells the parent, serves.
async fn supervisor(spec: SupSpec, parent: Pid) -> Reason {
    let me = self_pid();
    let mut sup = Sup {
        parent,
        name: spec.name.clone().unwrap_or_else(|| me.to_string()),
        strategy: spec.strategy,
        template: None,
        children: BTreeMap::new(),
        by_pid: FxHashMap::default(),
        next_key: 0,
        intensity: spec.intensity,
        period: spec.period,
        restarts: VecDeque::new(),
    };
    if spec.strategy == Strategy::Dynamic {
        sup.template = spec.children.into_iter().next().map(Arc::new);
    } else {
        for c in spec.children {
            let key = sup.new_key();
            sup.children.insert(key, Child::new(Arc::new(c), None));
        }
    }
    if let Err(e) = sup.init().await {
        unlink(parent);
        send(
            parent,
            InitAck {
                sup: me,
                result: Err(e.clone()),
            },
        );
        return Reason::from(e);
    }
    send(
        parent,
        InitAck {
            sup: me,
            result: Ok(()),
        },
    );
    sup.serve().await
}

impl Sup {
    fn new_key(&mut self) -> u64 {
        self.next_key += 1;
        self.next_key
    }

    /// Starts the static children in order; on a failure, stops those
    /// started (reverse order).
    async fn init(&mut self) -> Result<(), StartError> {
        let keys: Vec<u64> = self.children.keys().copied().collect();
        for key in keys {
            if let Err(reason) = self.start(key).await {
                let id = self.children[&key].spec.id.clone();
                tracing::error!(
                    "supervisor {}: child {id:?} failed to start: {reason}",
                    self.name
                );
                self.terminate_all().await;
                return Err(StartError::Child { id, reason });
            }
        }
        Ok(())
    }

    /// Serves until the supervisor ends; returns its exit reason.
    async fn serve(&mut self) -> Reason {
        loop {
            let event = receive_match(|m| {
                if let Some(e) = m.take::<Exit>() {
                    return Some(Event::Exit(e));
                }
                if let Some(r) = m.take::<Request<Cmd>>() {
                    return Some(Event::Call(r));
                }
                if let Some(s) = m.take::<wire::Stop>() {
                    return Some(Event::Stop(s.reason));
                }
                m.take::<TryAgain>().map(|t| Event::TryAgain(t.key))
            })
            .await;
            let end = match event {
                Event::Exit(Exit { from, reason }) => {
                    if let Some(&key) = self.by_pid.get(&from) {
                        self.child_exited(key, from, reason).await
                    } else if from == self.parent {
                        Some(reason)
                    } else {
                        // An old child's, or from a process that is not
                        // ours: ignored, as OTP does.
                        None
                    }
                }
                Event::Call(req) => {
                    self.handle_call(req).await;
                    None
                }
                Event::Stop(reason) => Some(reason),
                Event::TryAgain(key) => {
                    let restarting = self
                        .children
                        .get(&key)
                        .is_some_and(|c| c.state == State::Restarting);
                    if restarting {
                        self.restart(key).await
                    } else {
                        None
                    }
                }
            };
            if let Some(reason) = end {
                self.terminate_all().await;
                return reason;
            }
        }
    }

    /// Runs child `key`'s start function and records the outcome: on
    /// success the child runs (linked); on failure its state is left as it
    /// was, for the caller to decide.
    async fn start(&mut self, key: u64) -> Result<Pid, Reason> {
        let child = self.children.get_mut(&key).expect("a known child");
        let info = StartInfo {
            id: child.spec.id.clone(),
            restarts: child.attempts,
            last_exit: child.last_exit.clone(),
            last_pid: child.last_pid,
            arg: child.arg.clone(),
        };
        child.attempts += 1;
        let start = child.spec.start.clone();
        let started = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| start(info))) {
            Ok(fut) => CatchUnwind(fut).await,
            Err(payload) => Err(panic_reason(payload)),
        };
        let child = self.children.get_mut(&key).expect("a known child");
        match started {
            Ok(pid) => {
                if !is_linked(pid) {
                    // OTP requires the start function to link; a child it
                    // did not link is linked here. Trapping exits, this
                    // cannot fail: a child already dead gives an EXIT
                    // `noproc`.
                    let _ = link(pid).await;
                }
                let child = self.children.get_mut(&key).expect("a known child");
                child.state = State::Running(pid);
                self.by_pid.insert(pid, key);
                Ok(pid)
            }
            Err(reason) => {
                child.last_exit = Some(reason.clone());
                Err(reason)
            }
        }
    }

    /// Child `key` (running as `pid`) ended with `reason`. Returns the
    /// supervisor's own exit reason if it must end.
    async fn child_exited(&mut self, key: u64, pid: Pid, reason: Reason) -> Option<Reason> {
        self.by_pid.remove(&pid);
        let child = self.children.get_mut(&key).expect("a known child");
        child.state = State::Stopped;
        child.last_pid = Some(pid);
        child.last_exit = Some(reason.clone());
        let restart = child.spec.restart;
        if !reason.is_clean() {
            tracing::info!(
                "supervisor {}: child {:?} ({pid}) ended: {reason}",
                self.name,
                child.spec.id
            );
        }
        if restart.restarts_after(&reason) {
            self.restart(key).await
        } else {
            self.forget_if_done(key);
            None
        }
    }

    /// A child that ended or was stopped: a temporary one, or a dynamic
    /// supervisor's, leaves the list.
    fn forget_if_done(&mut self, key: u64) {
        let gone = self.strategy == Strategy::Dynamic
            || self
                .children
                .get(&key)
                .is_some_and(|c| c.spec.restart == Restart::Temporary);
        if gone {
            self.children.remove(&key);
        }
    }

    /// Restarts child `key` (not running) by the strategy, if the intensity
    /// allows; else returns `shutdown`, the supervisor's exit reason.
    async fn restart(&mut self, key: u64) -> Option<Reason> {
        if !self.add_restart() {
            tracing::error!(
                "supervisor {}: more than {} restarts in {:?} (child {:?}): shutting down",
                self.name,
                self.intensity,
                self.period,
                self.children[&key].spec.id
            );
            return Some(Reason::Shutdown);
        }
        match self.strategy {
            Strategy::OneForOne | Strategy::Dynamic => {
                if let Err(reason) = self.start(key).await {
                    self.try_again_later(key, &reason);
                }
            }
            Strategy::OneForAll => {
                let others: Vec<u64> = self.children.keys().rev().copied().collect();
                for k in others {
                    self.stop_child(k).await;
                }
                self.start_from(0).await;
            }
            Strategy::RestForOne => {
                let after: Vec<u64> = self
                    .children
                    .range(key + 1..)
                    .rev()
                    .map(|(k, _)| *k)
                    .collect();
                for k in after {
                    self.stop_child(k).await;
                }
                self.start_from(key).await;
            }
        }
        None
    }

    /// Starts, in order, every child from key `from` on that does not run
    /// (a group restart). Stops at a failure, leaving that child to be
    /// tried again.
    async fn start_from(&mut self, from: u64) {
        let keys: Vec<u64> = self.children.range(from..).map(|(k, _)| *k).collect();
        for k in keys {
            if matches!(self.children[&k].state, State::Running(_)) {
                continue;
            }
            if let Err(reason) = self.start(k).await {
                self.try_again_later(k, &reason);
                return;
            }
        }
    }

    fn try_again_later(&mut self, key: u64, reason: &Reason) {
        let child = self.children.get_mut(&key).expect("a known child");
        tracing::error!(
            "supervisor {}: child {:?} failed to restart: {reason}; trying again",
            self.name,
            child.spec.id
        );
        child.state = State::Restarting;
        send(self_pid(), TryAgain { key });
    }

    /// Records a restart now; whether the intensity still allows it.
    fn add_restart(&mut self) -> bool {
        let now = Instant::now();
        while let Some(&t) = self.restarts.front() {
            if now.duration_since(t) < self.period {
                break;
            }
            self.restarts.pop_front();
        }
        self.restarts.push_back(now);
        self.restarts.len() <= self.intensity as usize
    }

    /// Stops child `key` if it runs, and returns once it is dead; a
    /// temporary child (or a dynamic supervisor's) leaves the list.
    async fn stop_child(&mut self, key: u64) {
        let Some(child) = self.children.get_mut(&key) else {
            return;
        };
        if let State::Running(pid) = child.state {
            let spec = child.spec.clone();
            let reason = shutdown(&[pid], &spec, &self.name).await.remove(0);
            self.by_pid.remove(&pid);
            let child = self.children.get_mut(&key).expect("a known child");
            child.last_pid = Some(pid);
            child.last_exit = Some(reason);
        }
        let child = self.children.get_mut(&key).expect("a known child");
        child.state = State::Stopped;
        self.forget_if_done(key);
    }

    /// Stops every child: in reverse start order, one at a time; a dynamic
    /// supervisor's all at once. Returns once all are dead.
    async fn terminate_all(&mut self) {
        if let (Strategy::Dynamic, Some(template)) = (self.strategy, self.template.clone()) {
            let pids: Vec<Pid> = self
                .children
                .values()
                .rev()
                .filter_map(|c| match c.state {
                    State::Running(pid) => Some(pid),
                    _ => None,
                })
                .collect();
            shutdown(&pids, &template, &self.name).await;
            self.children.clear();
            self.by_pid.clear();
            return;
        }
        let keys: Vec<u64> = self.children.keys().rev().copied().collect();
        for k in keys {
            self.stop_child(k).await;
        }
    }

    fn find_id(&self, id: &str) -> Option<u64> {
        self.children
            .iter()
            .find(|(_, c)| c.spec.id == id)
            .map(|(k, _)| *k)
    }

    fn not_for_dynamic(&self, what: &str) -> Result<(), ChildError> {
        if self.strategy == Strategy::Dynamic {
            Err(ChildError::Unsupported(format!(
                "{what} is not for a dynamic supervisor ({})",
                self.name
            )))
        } else {
            Ok(())
        }
    }

    async fn handle_call(&mut self, req: Request<Cmd>) {
        let Request { from, body } = req;
        match body {
            Cmd::StartChild(what) => {
                let r = self.start_new(what).await;
                call::reply(&from, r);
            }
            Cmd::RestartChild(id) => {
                let r = self.restart_stopped(&id).await;
                call::reply(&from, r);
            }
            Cmd::TerminateChild(which) => {
                let r = self.terminate(which).await;
                call::reply(&from, r);
            }
            Cmd::DeleteChild(id) => {
                let r = self.delete(&id);
                call::reply(&from, r);
            }
            Cmd::WhichChildren => {
                let list: Vec<ChildInfo> = self.children.values().map(Child::info).collect();
                call::reply(&from, list);
            }
            Cmd::CountChildren => {
                let mut n = ChildCount {
                    specs: if self.strategy == Strategy::Dynamic {
                        1
                    } else {
                        self.children.len()
                    },
                    active: self.by_pid.len(),
                    supervisors: 0,
                    workers: 0,
                };
                for c in self.children.values() {
                    match c.spec.kind {
                        ChildKind::Worker => n.workers += 1,
                        ChildKind::Supervisor => n.supervisors += 1,
                    }
                }
                call::reply(&from, n);
            }
        }
    }

    async fn start_new(&mut self, what: NewChildReq) -> Result<Pid, ChildError> {
        let (spec, arg) = match (what, &self.template) {
            (NewChildReq::Spec(LocalSpec(spec)), None) => {
                if let Some(k) = self.find_id(&spec.id) {
                    return Err(match self.children[&k].state {
                        State::Running(pid) => ChildError::AlreadyStarted { id: spec.id, pid },
                        State::Restarting => ChildError::Restarting(spec.id),
                        State::Stopped => ChildError::AlreadyPresent(spec.id),
                    });
                }
                (Arc::new(spec), None)
            }
            (NewChildReq::Arg(arg), Some(template)) => (template.clone(), Some(arg)),
            (NewChildReq::BadArg(e), Some(template)) => {
                return Err(ChildError::Start {
                    id: template.id.clone(),
                    reason: Reason::error(format!("the argument did not encode: {e}")),
                });
            }
            (NewChildReq::Spec(_), Some(_)) => {
                return Err(ChildError::Unsupported(format!(
                    "supervisor {} is dynamic: start_child takes the new child's argument, not a ChildSpec",
                    self.name
                )));
            }
            (NewChildReq::Arg(_) | NewChildReq::BadArg(_), None) => {
                return Err(ChildError::Unsupported(format!(
                    "supervisor {} is not dynamic: start_child takes a ChildSpec, not an argument",
                    self.name
                )));
            }
        };
        let id = spec.id.clone();
        let key = self.new_key();
        self.children.insert(key, Child::new(spec, arg));
        match self.start(key).await {
            Ok(pid) => Ok(pid),
            Err(reason) => {
                self.children.remove(&key);
                tracing::error!(
                    "supervisor {}: child {id:?} failed to start: {reason}",
                    self.name
                );
                Err(ChildError::Start { id, reason })
            }
        }
    }

    async fn restart_stopped(&mut self, id: &str) -> Result<Pid, ChildError> {
        self.not_for_dynamic("restart_child")?;
        let key = self
            .find_id(id)
            .ok_or_else(|| ChildError::NotFound(id.into()))?;
        match self.children[&key].state {
            State::Running(_) => Err(ChildError::Running(id.to_owned())),
            State::Restarting => Err(ChildError::Restarting(id.to_owned())),
            State::Stopped => self.start(key).await.map_err(|reason| ChildError::Start {
                id: id.to_owned(),
                reason,
            }),
        }
    }

    async fn terminate(&mut self, which: ChildRef) -> Result<(), ChildError> {
        let key = match &which {
            ChildRef::Pid(pid) => self.by_pid.get(pid).copied(),
            ChildRef::Id(id) => {
                self.not_for_dynamic("terminate_child by id (give the child's pid)")?;
                self.find_id(id)
            }
        };
        let key = key.ok_or(ChildError::NotFound(which))?;
        self.stop_child(key).await;
        Ok(())
    }

    fn delete(&mut self, id: &str) -> Result<(), ChildError> {
        self.not_for_dynamic("delete_child")?;
        let key = self
            .find_id(id)
            .ok_or_else(|| ChildError::NotFound(id.into()))?;
        match self.children[&key].state {
            State::Running(_) => Err(ChildError::Running(id.to_owned())),
            State::Restarting => Err(ChildError::Restarting(id.to_owned())),
            State::Stopped => {
                self.children.remove(&key);
                Ok(())
            }
        }
    }
}

/// Stops `pids` (children of `spec`) as OTP's supervisor does and returns
/// once every one is dead, with the reason each ended with. Each is
/// monitored and unlinked (an EXIT already queued means it had ended:
/// its reason is taken from it), then sent `kill` or `shutdown`; with a
/// timeout, those whose DOWN has not come when it has passed are killed.
async fn shutdown(pids: &[Pid], spec: &ChildSpec, sup: &str) -> Vec<Reason> {
    let how = spec.shutdown_how();
    let mut reasons: Vec<Option<Reason>> = vec![None; pids.len()];
    let mut waiting: FxHashMap<Ref, usize> = FxHashMap::default();
    for (i, &pid) in pids.iter().enumerate() {
        let mref = monitor(pid);
        unlink(pid);
        let ended =
            receive_match_timeout(Duration::ZERO, |m| m.take_if::<Exit>(|e| e.from == pid)).await;
        match ended {
            Some(e) => reasons[i] = Some(e.reason),
            None => exit(
                pid,
                match how {
                    Shutdown::BrutalKill => Reason::Kill,
                    _ => Reason::Shutdown,
                },
            ),
        }
        waiting.insert(mref, i);
    }
    // Taken after every signal was sent: the wait is never shorter.
    let mut deadline = match how {
        Shutdown::Timeout(t) => Some(Instant::now() + t),
        _ => None,
    };
    while !waiting.is_empty() {
        let is_ours =
            |m: &mut crate::Envelope| m.take_if::<Down>(|d| waiting.contains_key(&d.mref));
        let down = match deadline {
            None => Some(receive_match(is_ours).await),
            Some(d) => {
                receive_match_timeout(d.saturating_duration_since(Instant::now()), is_ours).await
            }
        };
        match down {
            Some(down) => {
                let i = waiting.remove(&down.mref).expect("one of ours");
                reasons[i].get_or_insert(down.reason);
            }
            None => {
                for &i in waiting.values() {
                    exit(pids[i], Reason::Kill);
                }
                deadline = None;
            }
        }
    }
    let permanent = spec.restart == Restart::Permanent;
    let reasons: Vec<Reason> = reasons
        .into_iter()
        .map(|r| r.expect("every child's DOWN came"))
        .collect();
    for (pid, reason) in pids.iter().zip(&reasons) {
        let as_asked = match reason {
            Reason::Killed => how == Shutdown::BrutalKill,
            Reason::Shutdown if how != Shutdown::BrutalKill => true,
            Reason::Normal | Reason::Shutdown | Reason::ShutdownWith(_) => !permanent,
            _ => false,
        };
        if !as_asked {
            tracing::error!(
                "supervisor {sup}: child {:?} ({pid}) did not stop as asked ({how:?}): it ended with {reason}",
                spec.id
            );
        }
    }
    reasons
}

/// Whether the calling process is linked to `pid`.
fn is_linked(pid: Pid) -> bool {
    let (_, me) = current("supervisor");
    me.st
        .borrow()
        .ext_ref()
        .is_some_and(|e| e.links.contains(&pid))
}

/// A start function's future, with a panic in it turned into a failed
/// start (an [`crate::exit_self`] in it still ends the supervisor: it
/// leaves the future pending and the supervisor ends after that poll).
struct CatchUnwind(StartFuture);

impl Future for CatchUnwind {
    type Output = Result<Pid, Reason>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskCx<'_>) -> Poll<Self::Output> {
        let fut = &mut self.0;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(p) => p,
            Err(payload) => Poll::Ready(Err(panic_reason(payload))),
        }
    }
}
