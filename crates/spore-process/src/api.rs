//! The process API: free functions for code running in a process (as in
//! Erlang), and [`Node`] for code outside any process.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context as TaskCx, Poll};
use std::time::Duration;

use spore::ContextId;

use crate::envelope::Envelope;
use crate::node::{self, Local, NodeHandle, Proc, SpawnError, SpawnOptions, Watched};
use crate::types::{Exit, Message, Never, Pid, ProcessResult, Reason, Ref};

/// The node and the process running now.
///
/// # Panics
///
/// Outside a process: the process API is for code running in one (start
/// one with [`Node::spawn`] or [`Node::run`]).
pub(crate) fn current(what: &str) -> (Rc<Local>, Rc<Proc>) {
    node::with_current(|c| match c {
        Some((local, p)) => (local.clone(), p.clone()),
        None => outside(what),
    })
}

/// The panic of the process API called outside a process.
#[cold]
fn outside(what: &str) -> ! {
    panic!(
        "spore_process::{what} was called outside a process; run the code in one (Node::spawn, Node::run)"
    )
}

/// The pid of the calling process (Erlang's `self()`).
///
/// # Panics
///
/// Outside a process, as every function of this module except those of
/// [`Node`].
pub fn self_pid() -> Pid {
    current("self_pid").1.pid
}

/// Starts a process running `fut` in this context and returns its pid. It
/// runs when the caller next waits (at its next `.await` that is not
/// ready), as every process of the context shares one thread.
///
/// ```
/// # use spore_process::*;
/// # Node::new().run_blocking(async {
/// let child = spawn(async {
///     let n: u32 = receive().await;
///     assert_eq!(n, 7);
/// });
/// send(child, 7u32);
/// # });
/// ```
pub fn spawn<F>(fut: F) -> Pid
where
    F: Future + Send + 'static,
    F::Output: ProcessResult,
{
    spawn_opt(fut, SpawnOptions::new())
        .expect("spawning without a name cannot fail")
        .0
}

/// [`spawn`], linked to the caller before the new process runs: if it dies
/// at once, the caller still gets its exit signal.
pub fn spawn_link<F>(fut: F) -> Pid
where
    F: Future + Send + 'static,
    F::Output: ProcessResult,
{
    spawn_opt(fut, SpawnOptions::new().link())
        .expect("spawning without a name cannot fail")
        .0
}

/// [`spawn`], monitored by the caller before the new process runs: if it
/// dies at once, the caller still gets its DOWN.
pub fn spawn_monitor<F>(fut: F) -> (Pid, Ref)
where
    F: Future + Send + 'static,
    F::Output: ProcessResult,
{
    let (pid, mref) =
        spawn_opt(fut, SpawnOptions::new().monitor()).expect("spawning without a name cannot fail");
    (pid, mref.expect("a monitor was asked for"))
}

/// [`spawn`] with options: link, monitor (the reference is returned), a
/// name (fails if it is taken: nothing is started and the owner keeps it),
/// trap_exit, a mailbox bound.
pub fn spawn_opt<F>(fut: F, opts: SpawnOptions) -> Result<(Pid, Option<Ref>), SpawnError>
where
    F: Future + Send + 'static,
    F::Output: ProcessResult,
{
    let (local, me) = current("spawn");
    let pid = local.shared.next_pid();
    let mref = local.spawn(pid, fut, &opts, Some(&me))?;
    Ok((pid, mref))
}

/// Sends `msg` to `to`. Never fails and never waits: sending to a process
/// that is gone (here or in another context) silently does nothing, as in
/// Erlang. Messages from one process to another arrive in the order sent.
pub fn send<M: Message>(to: Pid, msg: M) {
    node::with_current(|c| match c {
        Some((local, me)) => send_from(local, me.pid, to, msg),
        None => outside("send"),
    })
}

pub(crate) fn send_from<M: Message>(local: &Rc<Local>, from: Pid, to: Pid, msg: M) {
    if to.context != local.context() {
        return crate::remote::send(local, from, to, None, msg);
    }
    if let Some(p) = local.lookup(to) {
        local.deliver(&p, Envelope::local(msg));
    }
}

/// Sending failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// No process is registered under this name in this context.
    #[error("no process is registered as {0:?}")]
    UnknownName(String),
    /// The receiver's mailbox is bounded and full ([`try_send`]).
    #[error("the mailbox of {0} is full")]
    Full(Pid),
}

/// Sends `msg` to the process registered as `name` in this context. Unlike
/// sending to a pid, an unknown name is an error (Erlang's `badarg`).
pub fn send_named<M: Message>(name: &str, msg: M) -> Result<(), SendError> {
    let (local, me) = current("send_named");
    let to = local
        .names
        .borrow()
        .get(name)
        .copied()
        .ok_or_else(|| SendError::UnknownName(name.to_owned()))?;
    send_from(&local, me.pid, to, msg);
    Ok(())
}

/// [`send`], refusing with [`SendError::Full`] (and giving the message
/// back) when `to` lives in this context and its bounded mailbox is full.
pub fn try_send<M: Message>(to: Pid, msg: M) -> Result<(), (SendError, M)> {
    let (local, me) = current("try_send");
    if let Some(p) = local.lookup(to) {
        if p.st.borrow().is_full() {
            return Err((SendError::Full(to), msg));
        }
    }
    send_from(&local, me.pid, to, msg);
    Ok(())
}

/// [`send`], waiting while `to` lives in this context and its bounded
/// mailbox is full: backpressure for a producer faster than its consumer.
pub async fn send_wait<M: Message>(to: Pid, msg: M) {
    let mut msg = Some(msg);
    std::future::poll_fn(|cx| {
        let (local, me) = current("send_wait");
        if let Some(p) = local.lookup(to) {
            let mut st = p.st.borrow_mut();
            if st.is_full() {
                st.ext().room_waiters.push(cx.waker().clone());
                return Poll::Pending;
            }
        }
        send_from(&local, me.pid, to, msg.take().expect("sent once"));
        Poll::Ready(())
    })
    .await
}

/// Waits for the oldest message of type `T` and takes it; messages of
/// other types stay in the mailbox, in order.
pub async fn receive<T: Message>() -> T {
    Receive::new(|e: &mut Envelope| e.take::<T>(), None)
        .await
        .expect("no timeout")
}

/// [`receive`] giving up after `timeout` (`None`); a zero timeout only
/// looks at what is already there.
pub async fn receive_timeout<T: Message>(timeout: Duration) -> Option<T> {
    Receive::new(|e: &mut Envelope| e.take::<T>(), Some(timeout)).await
}

/// Selective receive: waits for the oldest message `matcher` accepts.
///
/// `matcher` is shown each message in arrival order. It accepts one by
/// returning `Some` (the message is removed), and may take the value out
/// with [`Envelope::take`]. Messages it does not accept stay where they
/// are, in order, for a later receive.
///
/// ```
/// # use spore_process::*;
/// # Node::new().run_blocking(async {
/// let me = self_pid();
/// send(me, "first".to_string());
/// send(me, 42u32);
/// // Take the number, leave the string.
/// let n = receive_match(|m| m.take::<u32>()).await;
/// assert_eq!(n, 42);
/// assert_eq!(receive::<String>().await, "first");
/// # });
/// ```
pub async fn receive_match<R>(matcher: impl FnMut(&mut Envelope) -> Option<R> + Unpin) -> R {
    Receive::new(matcher, None).await.expect("no timeout")
}

/// [`receive_match`] giving up after `timeout` (`None`); a zero timeout
/// only looks at what is already there.
pub async fn receive_match_timeout<R>(
    timeout: Duration,
    matcher: impl FnMut(&mut Envelope) -> Option<R> + Unpin,
) -> Option<R> {
    Receive::new(matcher, Some(timeout)).await
}

/// The receive future. It holds nothing tied to the thread, so a
/// process's future stays `Send`; the mailbox is the current process's.
pub(crate) struct Receive<F> {
    matcher: F,
    /// Messages before this index were shown to the matcher and refused:
    /// a wake-up only shows the new ones.
    scanned: usize,
    timeout: Option<Duration>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<F> Receive<F> {
    pub(crate) fn new(matcher: F, timeout: Option<Duration>) -> Self {
        Self {
            matcher,
            scanned: 0,
            timeout,
            sleep: None,
        }
    }
}

impl<R, F: FnMut(&mut Envelope) -> Option<R> + Unpin> Future for Receive<F> {
    type Output = Option<R>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskCx<'_>) -> Poll<Option<R>> {
        let (_local, proc) = current("receive");
        let mut i = self.scanned;
        loop {
            // The message is moved out while the matcher looks at it, so
            // the matcher may use the process API (even send to itself).
            let mut env = {
                let mut st = proc.st.borrow_mut();
                if i >= st.mailbox.len() {
                    break;
                }
                std::mem::replace(&mut st.mailbox[i], Envelope::taken())
            };
            let got = (self.matcher)(&mut env);
            let mut st = proc.st.borrow_mut();
            if got.is_some() || env.is_taken() {
                if i == 0 {
                    st.mailbox.pop_front();
                } else if i < st.mailbox.len() {
                    st.mailbox.remove(i);
                }
                st.took_one();
                if got.is_some() {
                    self.scanned = i;
                    return Poll::Ready(got);
                }
            } else {
                if i < st.mailbox.len() {
                    st.mailbox[i] = env;
                }
                i += 1;
            }
        }
        self.scanned = i;
        match self.timeout {
            Some(t) if t.is_zero() => return Poll::Ready(None),
            Some(t) => {
                let sleep = self
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(t)));
                if sleep.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(None);
                }
            }
            None => {}
        }
        proc.st.borrow_mut().waiting = true;
        Poll::Pending
    }
}

/// Links the caller and `pid`: when either ends with a reason other than
/// `normal`, the other gets an exit signal (which ends it, unless it traps
/// exits). At most one link per pair; linking twice is the same as once.
///
/// If `pid` does not exist: a caller that traps exits gets an
/// [`Exit`] message with reason `noproc` (and `Ok`); any other caller gets
/// `Err(Reason::Noproc)`. No half-link remains either way.
pub async fn link(pid: Pid) -> Result<(), Reason> {
    let remote = {
        let (local, me) = current("link");
        if pid == me.pid {
            return Ok(());
        }
        pid.context != local.context()
    };
    if remote {
        return crate::remote::link(pid).await;
    }
    let (local, me) = current("link");
    match local.lookup(pid) {
        Some(p) => {
            p.st.borrow_mut().ext().links.insert(me.pid);
            me.st.borrow_mut().ext().links.insert(pid);
            Ok(())
        }
        None => noproc_link(&me, pid),
    }
}

/// The answer to a link to a process that does not exist.
pub(crate) fn noproc_link(me: &Proc, pid: Pid) -> Result<(), Reason> {
    let mut st = me.st.borrow_mut();
    if st.trap_exit {
        st.push(Envelope::local(Exit {
            from: pid,
            reason: Reason::Noproc,
        }));
        Ok(())
    } else {
        Err(Reason::Noproc)
    }
}

/// Removes the link between the caller and `pid`, if any. Idempotent.
/// After it, no exit signal travels over that link.
pub fn unlink(pid: Pid) {
    let (local, me) = current("unlink");
    let had = me
        .st
        .borrow_mut()
        .ext_mut()
        .is_some_and(|e| e.links.remove(&pid));
    if !had {
        return;
    }
    if let Some(p) = local.lookup(pid) {
        if let Some(e) = p.st.borrow_mut().ext_mut() {
            e.links.remove(&me.pid);
        }
    } else if pid.context != local.context() {
        crate::remote::unlink(&local, me.pid, pid);
    }
}

/// Monitors `pid`: when it ends, the caller gets one [`crate::Down`] with
/// this reference and its reason. Each call is a new monitor. Monitoring a
/// process that does not exist never fails: its DOWN (`noproc`) arrives at
/// once.
pub fn monitor(pid: Pid) -> Ref {
    let (local, me) = current("monitor");
    let mref = local.new_ref();
    me.st
        .borrow_mut()
        .ext()
        .monitors
        .insert(mref, Watched::Pid(pid));
    if pid.context != local.context() {
        crate::remote::monitor(&local, me.pid, pid, mref);
    } else if let Some(p) = local.lookup(pid) {
        p.st.borrow_mut().ext().monitored_by.insert(mref, me.pid);
    } else {
        local.down(me.pid, mref, pid, Reason::Noproc);
    }
    mref
}

/// Removes monitor `mref`; returns whether it was still active. With
/// `flush`, a DOWN for it already in the mailbox is removed too, so none
/// is ever received after this call.
pub fn demonitor(mref: Ref, flush: bool) -> bool {
    let (local, me) = current("demonitor");
    let watched = me
        .st
        .borrow_mut()
        .ext_mut()
        .and_then(|e| e.monitors.remove(&mref));
    let was_active = watched.is_some();
    if let Some(watched) = watched {
        local.unwatch(me.pid, mref, watched);
    }
    if flush {
        let mut st = me.st.borrow_mut();
        let before = st.mailbox.len();
        st.mailbox
            .retain_mut(|e| e.get::<crate::Down>().is_none_or(|d| d.mref != mref));
        if st.mailbox.len() != before {
            st.took_one();
        }
    }
    was_active
}

/// Sends an exit signal with `reason` to `pid` (Erlang's `exit/2`):
/// - `Reason::Kill` ends it whatever it does (its links and monitors see
///   `killed`);
/// - `Reason::Normal` is ignored unless `pid` is the caller, which then
///   ends `normal`;
/// - any other reason ends it, unless it traps exits: then it gets an
///   [`Exit`] message.
///
/// The caller itself, if it is `pid`, ends at its next `.await`.
pub fn exit(pid: Pid, reason: Reason) {
    let (local, me) = current("exit");
    if let Some(p) = local.lookup(pid) {
        local.exit_signal(&p, me.pid, reason, false);
    } else if pid.context != local.context() {
        crate::remote::exit_signal(&local, me.pid, pid, reason, false);
    }
}

/// Ends the calling process with `reason` (Erlang's `exit/1`): await it,
/// `exit_self(reason).await`, and nothing after it runs. Its links get exit
/// signals and its monitors DOWN with that reason. Its output is the never
/// type `!` (spelt as stable Rust allows), so it fits wherever a value is
/// expected, as `return` does.
///
/// ```
/// # use spore_process::*;
/// # Node::new().run_blocking(async {
/// let (worker, mref) = spawn_monitor(async {
///     let job: u32 = receive().await;
///     if job == 0 {
///         exit_self(Reason::error("job 0 is not a job")).await;
///     }
///     // … the job …
/// });
/// send(worker, 0u32);
/// let down = receive::<Down>().await;
/// assert_eq!((down.mref, down.reason), (mref, Reason::error("job 0 is not a job")));
/// # });
/// ```
///
/// It does not unwind (unwinding a stack costs microseconds): the future
/// never finishes, and the process ends as soon as the poll that awaited
/// it returns. The process's future is dropped then, before its links and
/// monitors are told, so its destructors run as they would after a panic
/// and what they send arrives first. Code that runs beside it in that same
/// poll, such as another branch of a `join!` or `select!`, still runs
/// until the poll returns; whatever it does, the process ends with
/// `reason` (or with the reason of a signal that ended it first). In a
/// gen_server callback it makes the server stop with `reason`, running
/// `terminate` first.
///
/// There is no synchronous form, as a process is async code: plain code
/// that decides the process must end returns that decision to the async
/// code that called it (a `Result` whose error is a [`Reason`] is what a
/// process may return), or panics, which ends the process with
/// [`Reason::Panic`].
///
/// # Panics
///
/// When awaited outside a process.
pub async fn exit_self(reason: Reason) -> Never {
    {
        let (_, me) = current("exit_self");
        node::exit_self(&me, reason);
    }
    std::future::pending().await
}

/// Sets whether the caller traps exits; returns the previous setting.
/// While on, exit signals (other than `kill` sent with [`exit`]) arrive as
/// [`Exit`] messages, in order with the sender's other messages.
pub fn trap_exit(on: bool) -> bool {
    let (_, me) = current("trap_exit");
    std::mem::replace(&mut me.st.borrow_mut().trap_exit, on)
}

/// Registering or unregistering a name failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The name belongs to another process, which keeps it.
    #[error("the name {name:?} is already registered to {owner}")]
    Taken {
        /// The name.
        name: String,
        /// Its owner.
        owner: Pid,
    },
    /// The process already has a name (a process has at most one).
    #[error("{pid} is already registered as {name:?}")]
    AlreadyNamed {
        /// The process.
        pid: Pid,
        /// Its name.
        name: String,
    },
    /// The process does not exist (or lives in another context: names are
    /// per context; see global names for names across the tree).
    #[error("{0} is not a live process of this context")]
    Noproc(Pid),
    /// Nothing is registered under this name.
    #[error("no process is registered as {0:?}")]
    NotRegistered(String),
}

/// Registers `pid` (a live process of this context) under `name`. The
/// name is freed when the process ends.
pub fn register(name: &str, pid: Pid) -> Result<(), NameError> {
    let (local, _) = current("register");
    let p = local.lookup(pid).ok_or(NameError::Noproc(pid))?;
    if let Some(owner) = local.names.borrow().get(name) {
        return Err(NameError::Taken {
            name: name.to_owned(),
            owner: *owner,
        });
    }
    let mut st = p.st.borrow_mut();
    if let Some(existing) = st.ext_ref().and_then(|e| e.name.clone()) {
        return Err(NameError::AlreadyNamed {
            pid,
            name: existing.to_string(),
        });
    }
    let name: Rc<str> = Rc::from(name);
    st.ext().name = Some(name.clone());
    local.names.borrow_mut().insert(name, pid);
    Ok(())
}

/// Removes the name `name`; returns the process it named.
pub fn unregister(name: &str) -> Result<Pid, NameError> {
    let (local, _) = current("unregister");
    let pid = local
        .names
        .borrow_mut()
        .remove(name)
        .ok_or_else(|| NameError::NotRegistered(name.to_owned()))?;
    if let Some(p) = local.lookup(pid) {
        if let Some(e) = p.st.borrow_mut().ext_mut() {
            e.name = None;
        }
    }
    Ok(pid)
}

/// The process registered as `name` in this context.
pub fn whereis(name: &str) -> Option<Pid> {
    let (local, _) = current("whereis");
    local.names.borrow().get(name).copied()
}

/// Whether `pid` is a live process of this context (Erlang's
/// `is_process_alive`: for pids of other contexts it is `false`; monitor
/// them instead).
pub fn is_alive(pid: Pid) -> bool {
    let (local, _) = current("is_alive");
    local.lookup(pid).is_some()
}

/// What a process is doing, as [`process_info`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// It is the process running now (the caller).
    Running,
    /// Parked in a receive, waiting for a message.
    Waiting,
    /// Ready to run, or waiting on something other than its mailbox.
    Runnable,
}

/// A snapshot of a process (Erlang's `process_info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    /// The process.
    pub pid: Pid,
    /// Its registered name.
    pub name: Option<String>,
    /// What it is doing.
    pub status: Status,
    /// Messages in its mailbox.
    pub mailbox_len: usize,
    /// The processes it is linked to (sorted).
    pub links: Vec<Pid>,
    /// The monitors it holds: reference and monitored process (sorted). A
    /// monitor of a name in another context (a [`crate::call::call`] to
    /// [`crate::call::Dest::At`]) shows serial 0 of that context: which
    /// process has the name is known there.
    pub monitors: Vec<(Ref, Pid)>,
    /// The processes monitoring it (sorted, one entry per monitor).
    pub monitored_by: Vec<Pid>,
    /// Whether it traps exits.
    pub trap_exit: bool,
    /// Bytes of its process state and mailbox entries (messages' own heap
    /// data and the future's state are not counted).
    pub memory: usize,
}

/// A snapshot of `pid`, a process of this context; `None` if it is not
/// alive.
pub fn process_info(pid: Pid) -> Option<ProcessInfo> {
    let (local, me) = current("process_info");
    let p = local.lookup(pid)?;
    let st = p.st.borrow();
    let ext = st.ext_ref();
    let mut links: Vec<Pid> = ext
        .map(|e| e.links.iter().copied().collect())
        .unwrap_or_default();
    links.sort_unstable();
    let mut monitors: Vec<(Ref, Pid)> = ext
        .map(|e| e.monitors.iter().map(|(r, w)| (*r, w.pid())).collect())
        .unwrap_or_default();
    monitors.sort_unstable();
    let mut monitored_by: Vec<Pid> = ext
        .map(|e| e.monitored_by.values().copied().collect())
        .unwrap_or_default();
    monitored_by.sort_unstable();
    let status = if p.pid == me.pid {
        Status::Running
    } else if st.waiting {
        Status::Waiting
    } else {
        Status::Runnable
    };
    let memory = std::mem::size_of::<Proc>()
        + st.mailbox.capacity() * std::mem::size_of::<Envelope>()
        + st.mailbox.iter().map(Envelope::size).sum::<usize>()
        + ext.map_or(0, |e| {
            std::mem::size_of_val(e)
                + e.links.capacity() * std::mem::size_of::<Pid>()
                + e.monitors.capacity() * std::mem::size_of::<(Ref, Watched)>()
                + e.monitored_by.capacity() * std::mem::size_of::<(Ref, Pid)>()
        });
    Some(ProcessInfo {
        pid,
        name: ext.and_then(|e| e.name.as_deref().map(str::to_owned)),
        status,
        mailbox_len: st.mailbox.len(),
        links,
        monitors,
        monitored_by,
        trap_exit: st.trap_exit,
        memory,
    })
}

/// Every live process of this context, by pid.
pub fn processes() -> Vec<Pid> {
    let (local, _) = current("processes");
    let mut v: Vec<Pid> = local.procs.borrow().values().map(|p| p.pid).collect();
    v.sort_unstable();
    v
}

/// A context's process node: where its processes run (one thread,
/// `spore-proc`). Use it from code that is not a process, to start
/// processes and talk to them; inside a process use the free functions.
///
/// ```
/// use spore_process::{Node, receive, self_pid, send, spawn};
///
/// let node = Node::new();
/// let answer = node.run_blocking(async {
///     let me = self_pid();
///     spawn(async move { send(me, 6 * 7u32) });
///     receive::<u32>().await
/// });
/// assert_eq!(answer, Ok(42));
/// ```
#[derive(Clone)]
pub struct Node {
    handle: Arc<NodeHandle>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("context", &self.handle.shared.context)
            .finish()
    }
}

impl Default for Node {
    fn default() -> Self {
        Self::new()
    }
}

impl Node {
    /// A node of its own, in no tree: its processes reach only each
    /// other, and its pids say context 0. For programs that use processes
    /// without contexts; otherwise use [`Node::of`].
    pub fn new() -> Node {
        Node {
            handle: node::start(0, None),
        }
    }

    /// The node of `router`'s context, started on first use; processes
    /// there reach processes in every context of the tree.
    pub fn of(router: &spore::Router) -> Node {
        router.service::<crate::remote::NodeService>().node()
    }

    /// The node of the running code: the calling process's, or, in a child
    /// context, that context's. `None` in a master outside any process (use
    /// [`Node::of`] there).
    pub fn current() -> Option<Node> {
        if let Some(local) = node::local() {
            if let Some(handle) = local.shared.handle.lock().unwrap().upgrade() {
                return Some(Node { handle });
            }
        }
        spore::Router::current().map(|r| Node::of(&r))
    }

    pub(crate) fn from_handle(handle: Arc<NodeHandle>) -> Node {
        Node { handle }
    }

    /// The context this node belongs to.
    pub fn context(&self) -> ContextId {
        self.handle.shared.context
    }

    /// Starts a process running `fut`; returns its pid at once.
    pub fn spawn<F>(&self, fut: F) -> Result<Pid, SpawnError>
    where
        F: Future + Send + 'static,
        F::Output: ProcessResult,
    {
        let shared = &self.handle.shared;
        let pid = shared.next_pid();
        let posted = shared.post(Box::new(move |local: &Rc<Local>| {
            let _ = local.spawn(pid, fut, &SpawnOptions::new(), None);
        }));
        if posted {
            Ok(pid)
        } else {
            Err(SpawnError::Stopped(shared.context))
        }
    }

    /// Sends `msg` to `to` from outside any process.
    pub fn send<M: Message>(&self, to: Pid, msg: M) {
        let from = Pid::none(self.context());
        self.handle.shared.post(Box::new(move |local: &Rc<Local>| {
            send_from(local, from, to, msg)
        }));
    }

    /// Runs `fut` in a new process and waits for its result: `Err` with
    /// the reason if the process ended without one (it panicked, was
    /// killed, or exited).
    pub async fn run<F>(&self, fut: F) -> Result<F::Output, Reason>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (tx, rx) = node::run_channel::<F::Output>();
        let on_exit = tx.clone();
        let pid = self.handle.shared.next_pid();
        let posted = self.handle.shared.post(Box::new(move |local: &Rc<Local>| {
            let body = async move {
                let out = fut.await;
                if let Some(tx) = tx.lock().unwrap().take() {
                    let _ = tx.send(Ok(out));
                }
            };
            if local.spawn(pid, body, &SpawnOptions::new(), None).is_ok() {
                if let Some(p) = local.lookup(pid) {
                    local.on_exit(
                        &p,
                        Box::new(move |reason| {
                            if let Some(tx) = on_exit.lock().unwrap().take() {
                                let _ = tx.send(Err(reason.clone()));
                            }
                        }),
                    );
                }
            }
        }));
        if !posted {
            return Err(Reason::Noproc);
        }
        rx.await.unwrap_or(Err(Reason::Noproc))
    }

    /// [`Node::run`] for code without async: blocks this thread. Do not
    /// call it from inside an async runtime or a process.
    pub fn run_blocking<F>(&self, fut: F) -> Result<F::Output, Reason>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        futures_lite_block_on(self.run(fut))
    }

    /// Stops the node: every process ends with `shutdown` and the thread
    /// exits. Later spawns fail with [`SpawnError::Stopped`].
    pub fn stop(&self) {
        self.handle.shared.stop();
    }
}

/// Blocks on a future that only needs to be woken (a oneshot receiver).
fn futures_lite_block_on<T>(fut: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime to wait on")
        .block_on(fut)
}
