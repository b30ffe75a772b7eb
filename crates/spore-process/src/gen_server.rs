//! OTP's gen_server: a process that holds a state and serves requests,
//! written as the callbacks of a [`GenServer`] implementation.
//!
//! [`start`] or [`start_link`] spawns the server and waits until its
//! [`GenServer::init`] has finished; the server then takes its messages
//! one by one, in arrival order:
//! - a [`call`] (a [`crate::call::Request`] of its [`GenServer::Call`]
//!   type) goes to [`GenServer::handle_call`], which replies at once, later
//!   (with [`crate::call::reply`] and the [`ReplyTo`] it kept), or stops;
//! - a [`cast`] (its [`GenServer::Cast`] type) goes to
//!   [`GenServer::handle_cast`];
//! - a [`stop`] runs [`GenServer::terminate`] and ends the server;
//! - anything else (EXIT and DOWN messages, plain messages, requests of
//!   another type) goes to [`GenServer::handle_info`].
//!
//! ```
//! use std::collections::HashMap;
//! use std::time::Duration;
//!
//! use serde::{Deserialize, Serialize};
//! use spore_process::call::ReplyTo;
//! use spore_process::gen_server::{self, CallResult, Flow, GenServer, StartOptions};
//! use spore_process::{Node, Reason};
//!
//! /// A key-value store.
//! struct Kv(HashMap<String, u64>);
//!
//! #[derive(Serialize, Deserialize)]
//! enum Req {
//!     Get(String),
//!     Put(String, u64),
//! }
//!
//! impl GenServer for Kv {
//!     type Args = Vec<(String, u64)>;
//!     type Call = Req;
//!     type Reply = Option<u64>;
//!     /// A key to delete.
//!     type Cast = String;
//!
//!     async fn init(initial: Self::Args) -> Result<Self, Reason> {
//!         Ok(Kv(initial.into_iter().collect()))
//!     }
//!
//!     async fn handle_call(&mut self, req: Req, _from: ReplyTo) -> CallResult<Option<u64>> {
//!         CallResult::Reply(match req {
//!             Req::Get(k) => self.0.get(&k).copied(),
//!             Req::Put(k, v) => self.0.insert(k, v),
//!         })
//!     }
//!
//!     async fn handle_cast(&mut self, key: String) -> Flow {
//!         self.0.remove(&key);
//!         Flow::Continue
//!     }
//! }
//!
//! let node = Node::new();
//! node.run_blocking(async {
//!     let initial = vec![("a".to_string(), 1)];
//!     let kv = gen_server::start::<Kv>(initial, StartOptions::new().name("kv"))
//!         .await
//!         .unwrap();
//!     // By pid or by name.
//!     let old = gen_server::call::<Kv>(kv, Req::Put("b".into(), 2)).await;
//!     assert_eq!(old, Ok(None));
//!     gen_server::cast::<Kv>("kv", "a".to_string());
//!     let a = gen_server::call::<Kv>("kv", Req::Get("a".into())).await;
//!     assert_eq!(a, Ok(None));
//!     gen_server::stop(kv, Reason::Normal, Duration::from_secs(5))
//!         .await
//!         .unwrap();
//! })
//! .unwrap();
//! ```
//!
//! # Async callbacks
//!
//! The callbacks are async: the trait declares them as functions
//! returning `impl Future<Output = …> + Send`, and an implementation may
//! write them as plain `async fn` (as above). The `Send` bound is what
//! makes the server's process future `Send`, as every process must be: the
//! compiler checks it where the `impl` is written, and a callback that
//! holds something `!Send` (an `Rc`, a `RefCell` guard) across an `.await`
//! does not compile there. While a callback awaits, the server takes no
//! other message (as in Erlang, where a callback blocks its server);
//! a callback may `receive` itself, which takes messages from the server's
//! mailbox.
//!
//! # Ending
//!
//! A server ends when a callback asks it to ([`CallResult::Stop`],
//! [`Flow::Stop`]), when [`stop`] is called, when a callback panics or
//! calls [`crate::exit_self`], or, if it traps exits, when its parent (the
//! process that called [`start_link`]) ends: it gets that EXIT and ends
//! with the same reason, as in OTP. In each of these cases
//! [`GenServer::terminate`] runs with the reason first, then the server
//! ends with that reason. A panic is caught around the callback (the
//! callback's future is dropped, never polled again), so `terminate` sees
//! the state as the callback left it when it panicked; if `terminate`
//! itself panics, the server ends with that panic.
//!
//! `normal`, `shutdown` and `{shutdown, _}` ([`Reason::is_clean`]) are
//! quiet; any other reason is logged once with `tracing::error!`, naming the
//! server (pid, registered name, type) and the reason.
//!
//! An exit signal the server does not trap (`exit(server, reason)`, a
//! linked process's crash) or `kill` ends it at once, without
//! `terminate`, as in Erlang; nothing is logged then (whoever sent the
//! signal knows).
//!
//! # Starting
//!
//! [`start_link`] links the caller and the server before the server runs.
//! If `init` fails (returns `Err`, panics, exits) the server unlinks from
//! the caller, tells it, and ends with the reason; `start_link` returns
//! [`StartError::Init`] once the server is gone and its name is free. So
//! no link to the dead server remains and no EXIT message is left in the
//! caller's mailbox, whether the caller traps exits or not: this is what
//! OTP 26's `proc_lib:start_link` does for a caller that traps exits
//! (it unlinks and flushes the EXIT); a caller that does not trap exits,
//! which OTP would kill with the reason when it is not `normal`, gets the
//! `Err` instead. A taken name starts nothing
//! ([`StartError::AlreadyStarted`]; the owner keeps the name). With a start
//! timeout ([`StartOptions::timeout`], none by default, as OTP's
//! `infinity`), a server whose `init` takes longer is killed (after the
//! unlink) and [`StartError::Timeout`] returned.
//!
//! # Messages of the wrong type
//!
//! Calls and casts are typed by the server's [`GenServer::Call`] and
//! [`GenServer::Cast`] types: naming the server's type at the call site
//! (`call::<Kv>(…)`) makes the compiler check the request. A request of
//! another type that reaches the server anyway (a [`call`] naming another
//! server type, a [`crate::call::call`] with a wrong body, a message from
//! a build that disagrees) is not one it understands: it goes to
//! `handle_info`, whose default logs a warning and drops it. The server
//! keeps running and the caller gets [`CallError::Timeout`] when its
//! timeout passes. A request of the right type that the server finds wrong
//! is the server's business: reply with an error value (make the reply
//! type a `Result`).

use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::api::{
    demonitor, exit, process_info, receive_match, receive_match_timeout, self_pid, send, spawn_opt,
    unlink,
};
use crate::call::{CallError, Dest, ReplyTo, Request};
use crate::envelope::Envelope;
use crate::node::{SpawnError, SpawnOptions, panic_reason, take_exit_self};
use crate::registry::ProcessFunction;
use crate::remote::spawn_opt_in;
use crate::types::{Down, Exit, Message, Pid, Reason, Ref};

/// A gen_server's callbacks. The implementing type is the server's state.
///
/// Every callback is async and its future must be `Send`; implement them
/// as `async fn` (see the [module](self)'s documentation and example). A
/// callback that holds something `!Send` across an `.await` is rejected
/// where it is written ("future cannot be sent between threads safely"):
///
/// ```compile_fail
/// # use std::rc::Rc;
/// # use spore_process::{Reason, call::ReplyTo, gen_server::{CallResult, GenServer}};
/// struct Counter(u64);
///
/// impl GenServer for Counter {
///     type Args = ();
///     type Call = ();
///     type Reply = u64;
///     type Cast = ();
///
///     async fn init((): ()) -> Result<Self, Reason> {
///         Ok(Counter(0))
///     }
///
///     async fn handle_call(&mut self, (): (), _from: ReplyTo) -> CallResult<u64> {
///         let not_send = Rc::new(1);
///         tokio::task::yield_now().await;
///         self.0 += *not_send;
///         CallResult::Reply(self.0)
///     }
/// }
/// ```
pub trait GenServer: Sized + Send + 'static {
    /// What [`start`] passes to [`GenServer::init`]. It moves into the
    /// new process, in this context: it need not serialize (unless the
    /// server is started in another context: [`RemoteGenServer`]).
    type Args: Send + 'static;
    /// The requests [`call`] sends.
    type Call: Message;
    /// The answers to them.
    type Reply: Message;
    /// The messages [`cast`] sends.
    type Cast: Message;

    /// Builds the state, in the new process, before [`start`] returns. An
    /// `Err` (or a panic) makes [`start`] return [`StartError::Init`] with
    /// the reason, and the server ends with it.
    fn init(args: Self::Args) -> impl Future<Output = Result<Self, Reason>> + Send;

    /// Handles a [`call`]: return [`CallResult::Reply`] to answer now,
    /// [`CallResult::NoReply`] to answer later with
    /// [`crate::call::reply`]`(&from, …)` (from this process or any other),
    /// or [`CallResult::Stop`] to end the server.
    fn handle_call(
        &mut self,
        request: Self::Call,
        from: ReplyTo,
    ) -> impl Future<Output = CallResult<Self::Reply>> + Send;

    /// Handles a [`cast`]. The default logs a warning and drops the
    /// message: a server that takes casts implements it.
    fn handle_cast(&mut self, msg: Self::Cast) -> impl Future<Output = Flow> + Send {
        drop(msg);
        tracing::warn!(
            "gen_server {} ({}) got a cast but does not implement handle_cast; dropped",
            self_pid(),
            std::any::type_name::<Self>()
        );
        std::future::ready(Flow::Continue)
    }

    /// Handles any other message: EXIT messages (when the server traps
    /// exits), DOWN messages, plain messages, requests of a type the server
    /// does not take. Take the value out with [`Envelope::take`]. The
    /// default logs a warning and drops the message (OTP's default).
    fn handle_info(&mut self, msg: &mut Envelope) -> impl Future<Output = Flow> + Send {
        tracing::warn!(
            "gen_server {} ({}) got a message it does not handle ({msg:?}); dropped",
            self_pid(),
            std::any::type_name::<Self>()
        );
        std::future::ready(Flow::Continue)
    }

    /// Runs when the server ends by its own decision, by [`stop`], by a
    /// panic in a callback, or by an EXIT from its parent (see the
    /// [module](self)'s documentation), with the reason it ends with. Not
    /// run when an exit signal kills it. The default does nothing.
    fn terminate(&mut self, reason: &Reason) -> impl Future<Output = ()> + Send {
        let _ = reason;
        std::future::ready(())
    }
}

/// What [`GenServer::handle_call`] decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallResult<R> {
    /// Answer the caller with this.
    Reply(R),
    /// Do not answer now: the callback kept the [`ReplyTo`] and answers
    /// later with [`crate::call::reply`] (or never, and the caller times
    /// out).
    NoReply,
    /// End the server with `reason`: [`GenServer::terminate`] runs, then
    /// the caller gets `reply` if there is one (else its call fails with
    /// `reason`), then the server ends.
    Stop {
        /// Why the server ends.
        reason: Reason,
        /// The answer to the caller, sent after `terminate`.
        reply: Option<R>,
    },
}

/// What [`GenServer::handle_cast`] and [`GenServer::handle_info`] decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flow {
    /// Take the next message.
    Continue,
    /// End the server with this reason ([`GenServer::terminate`] runs
    /// first).
    Stop(Reason),
}

/// Options for [`start`] and [`start_link`].
#[derive(Clone, Debug, Default)]
pub struct StartOptions {
    name: Option<String>,
    timeout: Option<Duration>,
}

impl StartOptions {
    /// No name, no timeout.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the server under `name` (in the context it runs in)
    /// before `init` runs. Starting fails if the name is taken; the name is freed when
    /// the server ends, also when its `init` fails.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Gives up on an `init` that has not finished after `timeout`: the
    /// server is killed and [`StartError::Timeout`] returned. Without it,
    /// starting waits as long as `init` takes.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// Starting a server failed. Nothing is left running and the name, if one
/// was asked for, is not registered to the failed server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The name is registered to another process, which keeps it (OTP's
    /// `{already_started, Pid}`).
    #[error("the name {name:?} is already registered to {owner}")]
    AlreadyStarted {
        /// The name.
        name: String,
        /// Its owner.
        owner: Pid,
    },
    /// `init` failed with this reason (it returned it, panicked, or the
    /// server was ended by a signal while in `init`).
    #[error("the server's init failed: {0}")]
    Init(Reason),
    /// `init` did not finish within [`StartOptions::timeout`]; the server
    /// was killed.
    #[error("the server's init did not finish within {0:?}")]
    Timeout(Duration),
    /// The process could not be spawned.
    #[error(transparent)]
    Spawn(SpawnError),
}

impl StartError {
    /// The reason `init` failed with, if it did.
    pub fn reason(&self) -> Option<&Reason> {
        match self {
            StartError::Init(r) => Some(r),
            _ => None,
        }
    }
}

/// A cast as it travels: wrapped, so that it is never taken for a plain
/// message of the same type.
#[derive(Serialize, Deserialize)]
struct Cast<T> {
    body: T,
}

/// [`stop`]'s request (OTP's system message `terminate`).
#[derive(Serialize, Deserialize)]
struct StopRequest {
    reason: Reason,
}

/// The server tells its starter how `init` went.
#[derive(Serialize, Deserialize)]
struct InitAck {
    server: Pid,
    result: Result<(), Reason>,
}

/// Starts a server of type `S` in this context, not linked to the caller,
/// and returns its pid once [`GenServer::init`] has succeeded. See the
/// [module](self)'s documentation for the failures.
pub async fn start<S: GenServer>(args: S::Args, opts: StartOptions) -> Result<Pid, StartError> {
    start_opt::<S>(args, opts, false).await
}

/// [`start`], linked to the caller, which becomes the server's parent: a
/// server that traps exits ends (running `terminate`) when it gets its
/// parent's EXIT. If `init` fails, no link remains and no EXIT message is
/// left for the caller (see the [module](self)'s documentation).
pub async fn start_link<S: GenServer>(
    args: S::Args,
    opts: StartOptions,
) -> Result<Pid, StartError> {
    start_opt::<S>(args, opts, true).await
}

async fn start_opt<S: GenServer>(
    args: S::Args,
    opts: StartOptions,
    link: bool,
) -> Result<Pid, StartError> {
    let starter = self_pid();
    let parent = link.then_some(starter);
    let spawned = spawn_opt(serve::<S>(args, starter, parent), opts.spawn(link));
    await_init(spawned, opts.timeout).await
}

/// A [`GenServer`] that can be started in another context ([`start_in`],
/// [`start_link_in`]): its `Args` travel there, so they are a
/// [`Message`]. Implement it with [`crate::remote_gen_server!`], which also
/// registers the server's process function (as
/// [`macro@crate::process`] registers one) so that every context running
/// this build can start the server by that name.
pub trait RemoteGenServer: GenServer<Args: Message> {
    /// The name the server's process function is registered under.
    const NAME: &'static str;
}

/// The registered process function of a [`RemoteGenServer`] (what
/// [`crate::remote_gen_server!`] registers): decodes the arguments a
/// [`start_in`] sent and runs the server.
#[doc(hidden)]
pub fn start_registered<S: RemoteGenServer>(
    bytes: &[u8],
) -> Result<crate::registry::BoxProcess<Reason>, String> {
    let (args, starter, parent): ServeArgs<S> = crate::registry::decode_args(S::NAME, bytes)?;
    Ok(Box::pin(serve::<S>(args, starter, parent)))
}

/// What a server's process gets: the `init` arguments, the starter, and
/// the parent (the starter, if linked).
type ServeArgs<S> = (<S as GenServer>::Args, Pid, Option<Pid>);

/// Names a [`RemoteGenServer`]'s process function for
/// [`crate::spawn_opt_in`].
struct Serve<S>(PhantomData<fn() -> S>);

impl<S> Clone for Serve<S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S> Copy for Serve<S> {}

impl<S: RemoteGenServer> ProcessFunction for Serve<S> {
    type Args = ServeArgs<S>;
    const NAME: &'static str = S::NAME;
}

/// [`start`] in context `ctx` (this one included): the server runs there,
/// not linked to the caller, and this returns its pid once its
/// [`GenServer::init`] has succeeded there. A name in `opts` is registered
/// there (call it with [`Dest::At`]). Fails as [`start`] does, and with
/// [`StartError::Spawn`] if the context cannot spawn it (it is lost, or is
/// not this context or a descendant: only a context's ancestors may spawn
/// in it).
///
/// The server type must be registered with [`crate::remote_gen_server!`]:
///
/// ```
/// use spore_process::call::{Dest, ReplyTo};
/// use spore_process::gen_server::{self, CallResult, GenServer, StartOptions};
/// use spore_process::{Node, Reason};
///
/// /// Counts what it is told to add.
/// struct Counter(u64);
///
/// impl GenServer for Counter {
///     /// The first value: it travels to the server's context.
///     type Args = u64;
///     type Call = u64;
///     type Reply = u64;
///     type Cast = ();
///
///     async fn init(first: u64) -> Result<Self, Reason> {
///         Ok(Counter(first))
///     }
///
///     async fn handle_call(&mut self, n: u64, _from: ReplyTo) -> CallResult<u64> {
///         self.0 += n;
///         CallResult::Reply(self.0)
///     }
/// }
///
/// spore_process::remote_gen_server!(Counter);
///
/// async fn count_in(ctx: &spore::Context) -> Result<u64, Box<dyn std::error::Error>> {
///     let opts = StartOptions::new().name("counter");
///     gen_server::start_in::<Counter>(ctx, 10, opts).await?;
///     // From any context, by name:
///     Ok(gen_server::call::<Counter>(Dest::at(ctx.id(), "counter"), 5).await?)
/// }
/// # let _ = count_in;
/// ```
pub async fn start_in<S: RemoteGenServer>(
    ctx: &spore::Context,
    args: S::Args,
    opts: StartOptions,
) -> Result<Pid, StartError> {
    start_opt_in::<S>(ctx, args, opts, false).await
}

/// [`start_in`], linked to the caller, which becomes the server's parent
/// as with [`start_link`] (a supervisor's start function may use it to
/// place a gen_server in any context).
pub async fn start_link_in<S: RemoteGenServer>(
    ctx: &spore::Context,
    args: S::Args,
    opts: StartOptions,
) -> Result<Pid, StartError> {
    start_opt_in::<S>(ctx, args, opts, true).await
}

async fn start_opt_in<S: RemoteGenServer>(
    ctx: &spore::Context,
    args: S::Args,
    opts: StartOptions,
    link: bool,
) -> Result<Pid, StartError> {
    let starter = self_pid();
    let parent = link.then_some(starter);
    let serve = Serve::<S>(PhantomData);
    let spawned = spawn_opt_in(ctx, serve, (args, starter, parent), opts.spawn(link)).await;
    await_init(spawned, opts.timeout).await
}

impl StartOptions {
    /// How the server's process is spawned: monitored by the starter (to
    /// see it end during `init`), linked if asked, named if asked.
    fn spawn(&self, link: bool) -> SpawnOptions {
        let mut spawn = SpawnOptions::new().monitor();
        if link {
            spawn = spawn.link();
        }
        if let Some(name) = &self.name {
            spawn = spawn.name(name.clone());
        }
        spawn
    }
}

/// Waits for the `init` of the server just `spawned` (monitored, maybe
/// linked), at most `timeout`: its pid once `init` succeeded, or the
/// failure, with nothing left running, no link and no EXIT from it left.
async fn await_init(
    spawned: Result<(Pid, Option<Ref>), SpawnError>,
    timeout: Option<Duration>,
) -> Result<Pid, StartError> {
    let (server, mref) = spawned.map_err(|e| match e {
        SpawnError::NameTaken { name, owner } => StartError::AlreadyStarted { name, owner },
        e => StartError::Spawn(e),
    })?;
    let mref = mref.expect("a monitor was asked for");
    // No timeout: Duration::MAX sleeps for decades.
    let timeout = timeout.unwrap_or(Duration::MAX);
    let got = receive_match_timeout(timeout, move |m| {
        if let Some(ack) = m.take_if::<InitAck>(|a| a.server == server) {
            return Some(Started::Ack(ack.result));
        }
        m.take_if::<Down>(|d| d.mref == mref)
            .map(|d| Started::Down(d.reason))
    })
    .await;
    match got {
        Some(Started::Ack(Ok(()))) => {
            demonitor(mref, true);
            Ok(server)
        }
        Some(Started::Ack(Err(reason))) => {
            // The server unlinked itself and ends now: wait until it is
            // gone (and its name free).
            flush_exit(server).await;
            await_down(mref).await;
            Err(StartError::Init(reason))
        }
        Some(Started::Down(reason)) => {
            // Ended by a signal during init. Over the link, a caller that
            // traps exits got an EXIT, flushed here; one that does not was
            // killed with it (unless it was `normal`), as in Erlang.
            flush_exit(server).await;
            Err(StartError::Init(reason))
        }
        None => {
            // Unlink first, or the kill would come back over the link.
            unlink(server);
            exit(server, Reason::Kill);
            flush_exit(server).await;
            await_down(mref).await;
            Err(StartError::Timeout(timeout))
        }
    }
}

/// What a starter waits for.
enum Started {
    Ack(Result<(), Reason>),
    Down(Reason),
}

/// Removes the link to `pid` and an EXIT from it already queued.
async fn flush_exit(pid: Pid) {
    unlink(pid);
    let _ = receive_match_timeout(Duration::ZERO, |m| m.take_if::<Exit>(|e| e.from == pid)).await;
}

/// Waits for the DOWN of monitor `mref`.
async fn await_down(mref: Ref) {
    let _: Down = receive_match(|m| m.take_if::<Down>(|d| d.mref == mref)).await;
}

/// Calls `server` (a pid, a name registered in this context, or one in
/// another context: [`Dest::At`]) with
/// `request` and waits for the reply, at most 5 s
/// ([`crate::call::DEFAULT_TIMEOUT`], OTP's default).
///
/// Fails at once with the server's exit reason if it ends before it
/// replies, or with `noproc` if it does not exist (or no process has that
/// name; for a name in another context, `noconnection` if that context is
/// lost). After a timeout, a reply that comes later is dropped on arrival:
/// it never reaches the caller's mailbox. Other messages that arrive during
/// the call stay queued, in order.
pub async fn call<S: GenServer>(
    server: impl Into<Dest>,
    request: S::Call,
) -> Result<S::Reply, CallError> {
    crate::call::call(server, request, None).await
}

/// [`call`] with another timeout than 5 s.
pub async fn call_timeout<S: GenServer>(
    server: impl Into<Dest>,
    request: S::Call,
    timeout: Duration,
) -> Result<S::Reply, CallError> {
    crate::call::call(server, request, Some(timeout)).await
}

/// Sends `msg` to `server` (a pid, a name here, or one in another context)
/// for its [`GenServer::handle_cast`], and returns at once. Never fails, as
/// OTP's `gen_server:cast`: a cast to a dead pid or to a name nobody has is
/// dropped silently.
pub fn cast<S: GenServer>(server: impl Into<Dest>, msg: S::Cast) {
    server.into().send(Cast { body: msg });
}

/// Stops `server` (a pid, a name here, or one in another context): it takes
/// the request in turn after the messages already queued, runs
/// [`GenServer::terminate`] with `reason` and ends with it. Returns once
/// the server is gone (OTP's `gen_server:stop`).
///
/// Fails with [`CallError::Exit`] if the server does not exist (`noproc`)
/// or ended with another reason (its `terminate` panicked, or it ended
/// otherwise meanwhile), and with [`CallError::Timeout`] if it is not gone
/// after `timeout` (`Duration::MAX` waits for ever, as OTP's `infinity`);
/// the request then stays in its mailbox. A server cannot stop itself this
/// way (it would wait for its own end): return [`Flow::Stop`] or
/// [`CallResult::Stop`] instead.
pub async fn stop(
    server: impl Into<Dest>,
    reason: Reason,
    timeout: Duration,
) -> Result<(), CallError> {
    let timeout = (timeout != Duration::MAX).then_some(timeout);
    let request = StopRequest {
        reason: reason.clone(),
    };
    crate::call::stop_and_wait(server.into(), request, &reason, timeout).await
}

/// A message as the server loop sorts it.
enum Incoming<S: GenServer> {
    Call(Request<S::Call>),
    Cast(S::Cast),
    Stop(Reason),
    ParentExit(Reason),
    Info(Envelope),
}

/// Sorts the oldest message: every message is taken, in arrival order.
fn classify<S: GenServer>(m: &mut Envelope, parent: Option<Pid>) -> Option<Incoming<S>> {
    if let Some(r) = m.take::<Request<S::Call>>() {
        return Some(Incoming::Call(r));
    }
    if let Some(c) = m.take::<Cast<S::Cast>>() {
        return Some(Incoming::Cast(c.body));
    }
    if let Some(s) = m.take::<StopRequest>() {
        return Some(Incoming::Stop(s.reason));
    }
    if let Some(parent) = parent {
        if let Some(e) = m.take_if::<Exit>(|e| e.from == parent) {
            return Some(Incoming::ParentExit(e.reason));
        }
    }
    Some(Incoming::Info(std::mem::replace(m, Envelope::taken())))
}

/// The server process: `init`, tell the starter, then the loop.
async fn serve<S: GenServer>(args: S::Args, starter: Pid, parent: Option<Pid>) -> Reason {
    let mut state = match caught(S::init(args)).await {
        Ok(Ok(state)) => state,
        Ok(Err(reason)) => return init_failed::<S>(reason, starter, parent),
        Err(reason) => return init_failed::<S>(reason, starter, parent),
    };
    send(
        starter,
        InitAck {
            server: self_pid(),
            result: Ok(()),
        },
    );
    loop {
        let msg = receive_match(move |m| classify::<S>(m, parent)).await;
        let (reason, reply, during) = match msg {
            Incoming::Call(Request { from, body }) => {
                match caught(state.handle_call(body, from)).await {
                    Ok(CallResult::Reply(r)) => {
                        crate::call::reply(&from, r);
                        continue;
                    }
                    Ok(CallResult::NoReply) => continue,
                    Ok(CallResult::Stop { reason, reply }) => {
                        (reason, reply.map(|r| (from, r)), "in handle_call")
                    }
                    Err(reason) => (reason, None, "in handle_call"),
                }
            }
            Incoming::Cast(body) => match caught(state.handle_cast(body)).await {
                Ok(Flow::Continue) => continue,
                Ok(Flow::Stop(reason)) => (reason, None, "in handle_cast"),
                Err(reason) => (reason, None, "in handle_cast"),
            },
            Incoming::Info(mut env) => match caught(state.handle_info(&mut env)).await {
                Ok(Flow::Continue) => continue,
                Ok(Flow::Stop(reason)) => (reason, None, "in handle_info"),
                Err(reason) => (reason, None, "in handle_info"),
            },
            Incoming::Stop(reason) => (reason, None, "on a stop request"),
            Incoming::ParentExit(reason) => (reason, None, "on its parent's EXIT"),
        };
        return terminate(&mut state, reason, reply, during).await;
    }
}

/// `init` failed: unlink from the parent (so that it is neither killed nor
/// sent an EXIT), tell the starter, end with `reason`.
fn init_failed<S: GenServer>(reason: Reason, starter: Pid, parent: Option<Pid>) -> Reason {
    if let Some(parent) = parent {
        unlink(parent);
    }
    send(
        starter,
        InitAck {
            server: self_pid(),
            result: Err(reason.clone()),
        },
    );
    if !reason.is_clean() {
        report::<S>(&reason, "in init");
    }
    reason
}

/// Runs `terminate`, sends the last reply, logs an unclean end; returns
/// the reason the server ends with.
async fn terminate<S: GenServer>(
    state: &mut S,
    reason: Reason,
    reply: Option<(ReplyTo, S::Reply)>,
    during: &str,
) -> Reason {
    let (reason, during) = match caught(state.terminate(&reason)).await {
        Ok(()) => (reason, during),
        Err(reason) => (reason, "in terminate"),
    };
    if let Some((from, r)) = reply {
        crate::call::reply(&from, r);
    }
    if !reason.is_clean() {
        report::<S>(&reason, during);
    }
    reason
}

/// Logs a server's unclean end, once.
fn report<S>(reason: &Reason, during: &str) {
    let me = self_pid();
    let name = process_info(me).and_then(|i| i.name);
    let who = match &name {
        Some(n) => format!("{me} {n:?}"),
        None => me.to_string(),
    };
    tracing::error!(
        server = %me,
        name = name.as_deref().unwrap_or(""),
        "gen_server {who} ({}) terminating {during}: {reason}",
        std::any::type_name::<S>()
    );
}

/// Polls `fut` to its end, catching a panic in it or an
/// [`crate::exit_self`] it awaited (taken back, so the server runs on to
/// `terminate` and then ends with that reason): the future is then
/// dropped, never polled again.
async fn caught<F: Future>(fut: F) -> Result<F::Output, Reason> {
    let mut fut = pin!(fut);
    std::future::poll_fn(move |cx| {
        let polled = std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx)));
        if let Some(reason) = take_exit_self() {
            return Poll::Ready(Err(reason));
        }
        match polled {
            Ok(Poll::Ready(out)) => Poll::Ready(Ok(out)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(panic_reason(payload))),
        }
    })
    .await
}
