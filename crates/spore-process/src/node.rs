//! The node: one context's processes, run on one thread (`spore-proc`) by a
//! current-thread tokio runtime. Every process is a task there; every
//! signal between two processes of the node is handled synchronously, in
//! the order it is sent, on that thread — so no locks guard a process.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context as TaskCx, Poll, Waker};

use rustc_hash::{FxHashMap, FxHashSet};
use spore::ContextId;
use tokio::sync::{mpsc, oneshot};

use crate::envelope::Envelope;
use crate::idle::{Idle, WakeRecorded};
use crate::types::{Down, Exit, Pid, ProcessResult, Reason, Ref};

/// A command from another thread, run on the node's thread.
pub(crate) type Command = Box<dyn FnOnce(&Rc<Local>) + Send>;

/// What every thread shares about a node.
pub(crate) struct Shared {
    pub(crate) context: ContextId,
    pub(crate) router: Option<spore::Router>,
    inbox: mpsc::UnboundedSender<Option<Command>>,
    next_serial: AtomicU64,
    stopped: AtomicBool,
    /// The user-facing handle, to hand out more of it.
    pub(crate) handle: Mutex<Weak<NodeHandle>>,
}

impl Shared {
    pub(crate) fn next_pid(&self) -> Pid {
        Pid {
            context: self.context,
            serial: self.next_serial.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Runs `f` on the node's thread. `false` if the node has stopped.
    pub(crate) fn post(&self, f: Command) -> bool {
        !self.stopped.load(Ordering::Acquire) && self.inbox.send(Some(f)).is_ok()
    }

    pub(crate) fn stop(&self) {
        if !self.stopped.swap(true, Ordering::AcqRel) {
            let _ = self.inbox.send(None);
        }
    }
}

/// Stops the node when the last user handle goes.
pub(crate) struct NodeHandle {
    pub(crate) shared: Arc<Shared>,
}

impl Drop for NodeHandle {
    fn drop(&mut self) {
        self.shared.stop();
    }
}

/// Starts a node's thread.
pub(crate) fn start(context: ContextId, router: Option<spore::Router>) -> Arc<NodeHandle> {
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        context,
        router,
        inbox: tx,
        // Serial 0 is never a process: a pid with it is never alive.
        // Serial 1 is the global name server's (only the master runs it).
        next_serial: AtomicU64::new(crate::global::SERVER_SERIAL + 1),
        stopped: AtomicBool::new(false),
        handle: Mutex::new(Weak::new()),
    });
    let handle = Arc::new(NodeHandle {
        shared: shared.clone(),
    });
    *shared.handle.lock().unwrap() = Arc::downgrade(&handle);
    let thread_shared = shared.clone();
    std::thread::Builder::new()
        .name("spore-proc".into())
        .spawn(move || run_thread(thread_shared, rx))
        .expect("spawn the spore-proc thread");
    handle
}

fn run_thread(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Option<Command>>) {
    let idle = Idle::new();
    let (park, unpark) = (idle.clone(), idle.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .on_thread_park(move || park.before_park())
        .on_thread_unpark(move || unpark.after_unpark())
        .build()
        .expect("build the process runtime");
    let tasks = tokio::task::LocalSet::new();
    let local = Rc::new(Local::new(shared));
    LOCAL.with(|l| *l.borrow_mut() = Some(local.clone()));
    let main = tasks.run_until(async {
        while let Some(Some(cmd)) = rx.recv().await {
            cmd(&local);
        }
        // Stopping: every process ends with `shutdown`; their tasks then
        // run once more to drop their futures as dead processes.
        local.stop_all();
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
    });
    rt.block_on(WakeRecorded::new(main, idle));
    drop(tasks);
    LOCAL.with(|l| l.borrow_mut().take());
}

thread_local! {
    static LOCAL: RefCell<Option<Rc<Local>>> = const { RefCell::new(None) };
}

/// The node of this thread, if it is a node's thread.
pub(crate) fn local() -> Option<Rc<Local>> {
    LOCAL.with(|l| l.borrow().clone())
}

/// Runs `f` with the node of this thread and its running process, if
/// any, without taking references to them: for the hottest paths (a
/// send). `f` must not poll a process (nothing it calls does: waking a
/// process only schedules it).
pub(crate) fn with_current<R>(f: impl FnOnce(Option<(&Rc<Local>, &Rc<Proc>)>) -> R) -> R {
    LOCAL.with(|l| {
        let l = l.borrow();
        let Some(local) = l.as_ref() else {
            return f(None);
        };
        let current = local.current.borrow();
        f(current.as_ref().map(|p| (local, p)))
    })
}

/// One process.
pub(crate) struct Proc {
    pub(crate) pid: Pid,
    pub(crate) st: RefCell<ProcState>,
}

pub(crate) struct ProcState {
    pub(crate) mailbox: VecDeque<Envelope>,
    /// The process's task, to wake it.
    waker: Option<Waker>,
    /// Parked in a receive: a new message wakes it.
    pub(crate) waiting: bool,
    pub(crate) alive: bool,
    pub(crate) running: bool,
    /// Set when the process is to end when its current poll returns, by a
    /// signal while it ran or by its own [`crate::exit_self`].
    pending_exit: Option<Reason>,
    /// Whether `pending_exit` came from [`crate::exit_self`]. (A flag
    /// beside the reason rather than an enum around it, which made
    /// `ProcState` 8 bytes bigger and, through the allocator, every idle
    /// process about 90 bytes bigger: `bytes_per_process` of `spore bench
    /// processes` shows it.)
    exiting_self: bool,
    pub(crate) trap_exit: bool,
    /// What most processes never use, allocated on first use.
    ext: Option<Box<Ext>>,
}

/// Run with the exit reason when a process ends.
pub(crate) type ExitHook = Box<dyn FnOnce(&Reason)>;

#[derive(Default)]
pub(crate) struct Ext {
    pub(crate) links: FxHashSet<Pid>,
    /// Monitors this process holds: reference → what it watches.
    pub(crate) monitors: FxHashMap<Ref, Watched>,
    /// Monitors on this process: reference → watcher.
    pub(crate) monitored_by: FxHashMap<Ref, Pid>,
    pub(crate) name: Option<Rc<str>>,
    /// The mailbox's bound, if any, and the senders waiting for room.
    pub(crate) bound: Option<usize>,
    pub(crate) room_waiters: Vec<Waker>,
    /// Run when the process ends (used by [`crate::Node::run`]).
    exit_hooks: Vec<ExitHook>,
    /// The process in another context this one waits to hear is linked.
    pub(crate) awaiting_link: Option<Pid>,
    /// Requests to other contexts (a spawn, a `whereis_in`) whose answers
    /// this process waits for: request reference → the context asked. An
    /// answer from any other context, or for no such request, is dropped.
    pub(crate) asking: FxHashMap<Ref, ContextId>,
    /// Active aliases: references that messages may be addressed to
    /// ([`crate::call`] replies). A message to an inactive alias is dropped.
    pub(crate) aliases: FxHashSet<Ref>,
}

/// What a monitor watches.
#[derive(Debug)]
pub(crate) enum Watched {
    /// A process (here or in another context).
    Pid(Pid),
    /// The process registered under this name in another context when the
    /// monitor was set: the name is resolved there (`Wire::MonitorName`),
    /// and kept here to remove the monitor there by name.
    Name(ContextId, Box<str>),
}

impl Watched {
    /// The context of what it watches.
    pub(crate) fn context(&self) -> ContextId {
        match self {
            Watched::Pid(p) => p.context,
            Watched::Name(ctx, _) => *ctx,
        }
    }

    /// The pid it stands for: a name's is serial 0 of its context ("no
    /// process": which process had the name is known only there).
    pub(crate) fn pid(&self) -> Pid {
        match self {
            Watched::Pid(p) => *p,
            Watched::Name(ctx, _) => Pid::none(*ctx),
        }
    }
}

impl ProcState {
    pub(crate) fn ext(&mut self) -> &mut Ext {
        self.ext.get_or_insert_with(Default::default)
    }

    pub(crate) fn ext_ref(&self) -> Option<&Ext> {
        self.ext.as_deref()
    }

    pub(crate) fn ext_mut(&mut self) -> Option<&mut Ext> {
        self.ext.as_deref_mut()
    }

    /// Appends a message and wakes the process if it waits for one.
    pub(crate) fn push(&mut self, env: Envelope) {
        self.mailbox.push_back(env);
        if self.waiting {
            self.waiting = false;
            if let Some(w) = &self.waker {
                w.wake_by_ref();
            }
        }
    }

    pub(crate) fn is_full(&self) -> bool {
        self.ext
            .as_ref()
            .and_then(|e| e.bound)
            .is_some_and(|b| self.mailbox.len() >= b)
    }

    /// A message left the mailbox: wake a sender waiting for room.
    pub(crate) fn took_one(&mut self) {
        if let Some(ext) = &mut self.ext {
            if let Some(w) = ext.room_waiters.pop() {
                w.wake();
            }
        }
    }
}

/// Options for [`crate::spawn_opt`].
#[derive(Clone, Debug, Default)]
pub struct SpawnOptions {
    pub(crate) link: bool,
    pub(crate) monitor: bool,
    pub(crate) name: Option<String>,
    pub(crate) trap_exit: bool,
    pub(crate) mailbox_bound: Option<usize>,
}

impl SpawnOptions {
    /// Default options: not linked, not monitored, no name.
    pub fn new() -> Self {
        Self::default()
    }
    /// Links the new process to the caller before it runs.
    pub fn link(mut self) -> Self {
        self.link = true;
        self
    }
    /// Monitors the new process before it runs; the reference is returned.
    pub fn monitor(mut self) -> Self {
        self.monitor = true;
        self
    }
    /// Registers the new process under `name` before it runs; spawning
    /// fails if the name is taken.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
    /// Starts the process trapping exits.
    pub fn trap_exit(mut self) -> Self {
        self.trap_exit = true;
        self
    }
    /// Bounds the mailbox to `messages`: a sender in this context that
    /// finds it full gets [`crate::SendError::Full`] from
    /// [`crate::try_send`], and [`crate::send_wait`] waits for room. Plain
    /// [`crate::send`] (and signals, and messages from other contexts) are
    /// never refused: Erlang's send does not fail.
    pub fn mailbox_bound(mut self, messages: usize) -> Self {
        self.mailbox_bound = Some(messages.max(1));
        self
    }
}

/// Spawning failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError {
    /// The name asked for is registered to another process.
    #[error("the name {name:?} is already registered to {owner}")]
    NameTaken {
        /// The name.
        name: String,
        /// Its owner, who keeps it.
        owner: Pid,
    },
    /// The node has stopped.
    #[error("the process node of context {0} has stopped")]
    Stopped(ContextId),
    /// Spawning in another context failed (see the message).
    #[error("spawning in {context} failed: {detail}")]
    Remote {
        /// The context asked.
        context: String,
        /// What went wrong.
        detail: String,
    },
}

/// The state of one node, on its thread.
pub(crate) struct Local {
    pub(crate) shared: Arc<Shared>,
    /// `shared.context`, at hand: every send compares pids with it.
    context: ContextId,
    pub(crate) procs: RefCell<FxHashMap<u64, Rc<Proc>>>,
    pub(crate) names: RefCell<FxHashMap<Rc<str>, Pid>>,
    pub(crate) watchers: crate::contexts::ContextWatchers,
    next_ref: Cell<u64>,
    reap_queue: RefCell<VecDeque<(Rc<Proc>, Reason)>>,
    reaping: Cell<bool>,
    current: RefCell<Option<Rc<Proc>>>,
}

impl Local {
    fn new(shared: Arc<Shared>) -> Self {
        Self {
            context: shared.context,
            shared,
            procs: Default::default(),
            names: Default::default(),
            watchers: Default::default(),
            next_ref: Cell::new(1),
            reap_queue: Default::default(),
            reaping: Cell::new(false),
            current: RefCell::new(None),
        }
    }

    pub(crate) fn context(&self) -> ContextId {
        self.context
    }

    pub(crate) fn current(&self) -> Option<Rc<Proc>> {
        self.current.borrow().clone()
    }

    pub(crate) fn new_ref(&self) -> Ref {
        let serial = self.next_ref.get();
        self.next_ref.set(serial + 1);
        Ref {
            context: self.context,
            serial,
        }
    }

    pub(crate) fn lookup(&self, pid: Pid) -> Option<Rc<Proc>> {
        if pid.context != self.context {
            return None;
        }
        self.procs.borrow().get(&pid.serial).cloned()
    }

    /// The live process registered as `name` here.
    pub(crate) fn registered(&self, name: &str) -> Option<Rc<Proc>> {
        let pid = *self.names.borrow().get(name)?;
        self.lookup(pid)
    }

    /// Starts a process running `fut` with pid `pid`, set up as `opts` asks
    /// (with `parent` as the process to link or monitor it). The name is
    /// checked first: a taken name starts nothing.
    pub(crate) fn spawn<F>(
        self: &Rc<Self>,
        pid: Pid,
        fut: F,
        opts: &SpawnOptions,
        parent: Option<&Rc<Proc>>,
    ) -> Result<Option<Ref>, SpawnError>
    where
        F: Future + 'static,
        F::Output: ProcessResult,
    {
        let name: Option<Rc<str>> = opts.name.as_deref().map(Rc::from);
        if let Some(name) = &name {
            if let Some(owner) = self.names.borrow().get(name) {
                return Err(SpawnError::NameTaken {
                    name: name.to_string(),
                    owner: *owner,
                });
            }
        }
        let proc = Rc::new(Proc {
            pid,
            st: RefCell::new(ProcState {
                mailbox: VecDeque::new(),
                waker: None,
                waiting: false,
                alive: true,
                running: false,
                pending_exit: None,
                exiting_self: false,
                trap_exit: opts.trap_exit,
                ext: None,
            }),
        });
        {
            let mut st = proc.st.borrow_mut();
            if let Some(b) = opts.mailbox_bound {
                st.ext().bound = Some(b);
            }
            if let Some(name) = &name {
                st.ext().name = Some(name.clone());
                self.names.borrow_mut().insert(name.clone(), pid);
            }
        }
        self.procs.borrow_mut().insert(pid.serial, proc.clone());
        let mut mref = None;
        if let Some(parent) = parent {
            if opts.link {
                parent.st.borrow_mut().ext().links.insert(pid);
                proc.st.borrow_mut().ext().links.insert(parent.pid);
            }
            if opts.monitor {
                let r = self.new_ref();
                parent
                    .st
                    .borrow_mut()
                    .ext()
                    .monitors
                    .insert(r, Watched::Pid(pid));
                proc.st
                    .borrow_mut()
                    .ext()
                    .monitored_by
                    .insert(r, parent.pid);
                mref = Some(r);
            }
        }
        tokio::task::spawn_local(ProcTask {
            proc,
            fut: Some(Box::pin(fut)),
        });
        Ok(mref)
    }

    /// Appends `env` to `to`'s mailbox, if it is alive (else it is dropped,
    /// as sending to a dead process is).
    pub(crate) fn deliver(&self, to: &Proc, env: Envelope) {
        let mut st = to.st.borrow_mut();
        if st.alive {
            st.push(env);
        }
    }

    /// Appends `env` to `to`'s mailbox if `alias` is one of its active
    /// aliases (else it is dropped: a late reply to a call that gave up).
    pub(crate) fn deliver_to_alias(&self, to: &Proc, alias: Ref, env: Envelope) {
        let mut st = to.st.borrow_mut();
        let active = st.ext_ref().is_some_and(|e| e.aliases.contains(&alias));
        if st.alive && active {
            st.push(env);
        }
    }

    /// An exit signal from `from` reaches `target`; `link` says it is due
    /// to a link (the linked process ended) rather than `exit/2`.
    pub(crate) fn exit_signal(
        self: &Rc<Self>,
        target: &Rc<Proc>,
        from: Pid,
        reason: Reason,
        link: bool,
    ) {
        let mut st = target.st.borrow_mut();
        if !st.alive {
            return;
        }
        if link {
            // A link removed (unlink) before the signal arrived: ignored.
            let had = st.ext.as_mut().is_some_and(|e| e.links.remove(&from));
            if !had {
                return;
            }
        }
        if !link && reason == Reason::Kill {
            drop(st);
            return self.kill(target, Reason::Killed);
        }
        if st.trap_exit {
            st.push(Envelope::local(Exit { from, reason }));
            return;
        }
        drop(st);
        match reason {
            // exit(self(), normal) ends the caller; a normal signal from
            // anyone else is ignored.
            Reason::Normal if from == target.pid && !link => self.kill(target, Reason::Normal),
            Reason::Normal => {}
            reason => self.kill(target, reason),
        }
    }

    /// Ends `target` with `reason`: at once, or, if it is the process
    /// running now, when its current poll returns.
    pub(crate) fn kill(self: &Rc<Self>, target: &Rc<Proc>, reason: Reason) {
        let mut st = target.st.borrow_mut();
        if !st.alive {
            return;
        }
        if st.running {
            st.pending_exit.get_or_insert(reason);
            return;
        }
        drop(st);
        self.reap(target.clone(), reason);
    }

    /// A process ends: it is dead from now on, its name is free, its links
    /// get exit signals and its monitors DOWN. Iterative: a chain of linked
    /// processes does not recurse.
    pub(crate) fn reap(self: &Rc<Self>, proc: Rc<Proc>, reason: Reason) {
        self.reap_queue.borrow_mut().push_back((proc, reason));
        if self.reaping.replace(true) {
            return;
        }
        loop {
            let next = self.reap_queue.borrow_mut().pop_front();
            let Some((proc, reason)) = next else { break };
            self.reap_one(&proc, reason);
        }
        self.reaping.set(false);
    }

    fn reap_one(self: &Rc<Self>, proc: &Rc<Proc>, reason: Reason) {
        let (ext, mailbox, waker, running) = {
            let mut st = proc.st.borrow_mut();
            if !st.alive {
                return;
            }
            st.alive = false;
            st.waiting = false;
            (
                st.ext.take(),
                std::mem::take(&mut st.mailbox),
                st.waker.take(),
                st.running,
            )
        };
        self.procs.borrow_mut().remove(&proc.pid.serial);
        drop(mailbox);
        // Its task finishes (and drops the process's future) when polled.
        if let (Some(w), false) = (waker, running) {
            w.wake();
        }
        let Some(mut ext) = ext else { return };
        if let Some(name) = ext.name.take() {
            self.names.borrow_mut().remove(&name);
        }
        for w in ext.room_waiters.drain(..) {
            w.wake();
        }
        for hook in ext.exit_hooks.drain(..) {
            hook(&reason);
        }
        let pid = proc.pid;
        for linked in ext.links.drain() {
            if let Some(l) = self.lookup(linked) {
                self.exit_signal(&l, pid, reason.clone(), true);
            } else if linked.context != self.context() {
                crate::remote::exit_signal(self, pid, linked, reason.clone(), true);
            }
        }
        for (mref, watched) in ext.monitors.drain() {
            self.unwatch(pid, mref, watched);
        }
        for (mref, watcher) in ext.monitored_by.drain() {
            self.down(watcher, mref, pid, reason.clone());
        }
    }

    /// Removes monitor `mref` (held by `watcher`, no longer in its table)
    /// from what it watches, here or in the other context.
    pub(crate) fn unwatch(self: &Rc<Self>, watcher: Pid, mref: Ref, watched: Watched) {
        match watched {
            Watched::Pid(target) => {
                if let Some(t) = self.lookup(target) {
                    if let Some(e) = t.st.borrow_mut().ext.as_mut() {
                        e.monitored_by.remove(&mref);
                    }
                } else if target.context != self.context() {
                    crate::remote::demonitor(self, watcher, target, mref);
                }
            }
            Watched::Name(ctx, name) => {
                crate::remote::demonitor_name(self, watcher, ctx, name, mref)
            }
        }
    }

    /// Delivers DOWN for monitor `mref` (of `pid`) to `watcher`, once.
    pub(crate) fn down(self: &Rc<Self>, watcher: Pid, mref: Ref, pid: Pid, reason: Reason) {
        if let Some(w) = self.lookup(watcher) {
            let mut st = w.st.borrow_mut();
            let active = st
                .ext
                .as_mut()
                .is_some_and(|e| e.monitors.remove(&mref).is_some());
            if active && st.alive {
                st.push(Envelope::local(Down { mref, pid, reason }));
            }
        } else if watcher.context != self.context() {
            crate::remote::down(self, watcher, mref, pid, reason);
        }
    }

    /// Ends every process with `shutdown` (the node stops).
    fn stop_all(self: &Rc<Self>) {
        let all: Vec<Rc<Proc>> = self.procs.borrow().values().cloned().collect();
        for p in all {
            self.kill(&p, Reason::Shutdown);
        }
    }

    /// Adds a hook run with the exit reason when `proc` ends.
    pub(crate) fn on_exit(&self, proc: &Proc, hook: ExitHook) {
        let mut st = proc.st.borrow_mut();
        if st.alive {
            st.ext().exit_hooks.push(hook);
        } else {
            drop(st);
            hook(&Reason::Noproc);
        }
    }
}

/// A process's task: polls its future with the process set as current,
/// catches panics, and ends the process when the future finishes, panics,
/// or a signal or [`crate::exit_self`] ended it during the poll.
struct ProcTask<R> {
    proc: Rc<Proc>,
    fut: Option<Pin<Box<dyn Future<Output = R>>>>,
}

impl<R: ProcessResult> Future for ProcTask<R> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskCx<'_>) -> Poll<()> {
        let Some(local) = local() else {
            return Poll::Ready(());
        };
        let proc = self.proc.clone();
        {
            let mut st = proc.st.borrow_mut();
            if !st.alive {
                drop(st);
                self.finish(&local);
                return Poll::Ready(());
            }
            if !st.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                st.waker = Some(cx.waker().clone());
            }
            st.running = true;
            st.waiting = false;
        }
        let previous = local.current.replace(Some(proc.clone()));
        let fut = self.fut.as_mut().expect("polled after it finished");
        let polled =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fut.as_mut().poll(cx)));
        let (mut pending, exiting_self) = {
            let mut st = proc.st.borrow_mut();
            (st.pending_exit.take(), std::mem::take(&mut st.exiting_self))
        };
        if exiting_self {
            // Dropped now, while the process is still alive and running,
            // as a panic's unwinding or a return would have dropped what
            // it held: what its destructors send arrives before its links
            // and monitors hear of its end. (A signal that ends it during
            // the drop comes second: the process's own decision stands.)
            self.drop_future();
        }
        *local.current.borrow_mut() = previous;
        {
            let mut st = proc.st.borrow_mut();
            st.running = false;
            let later = st.pending_exit.take();
            st.exiting_self = false;
            pending = pending.or(later);
        }
        let reason = match (polled, pending) {
            (Ok(Poll::Pending), None) => return Poll::Pending,
            (_, Some(pending)) => pending,
            (Ok(Poll::Ready(out)), None) => out.into_reason(),
            (Err(payload), None) => panic_reason(payload),
        };
        local.reap(proc, reason);
        self.finish(&local);
        Poll::Ready(())
    }
}

impl<R> ProcTask<R> {
    /// Drops the process's future with the process still current, so that
    /// drop code may use the process API (as a dead process).
    fn finish(&mut self, local: &Rc<Local>) {
        let previous = local.current.replace(Some(self.proc.clone()));
        self.drop_future();
        *local.current.borrow_mut() = previous;
    }

    /// Drops the process's future (if not yet dropped); a panic in a
    /// destructor changes nothing, the process's end is already decided.
    fn drop_future(&mut self) {
        let fut = self.fut.take();
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(fut)));
    }
}

/// The reason a caught panic ends a process with: [`Reason::Panic`] with
/// its message (its `String` payload moved, not copied, or its `&str`).
pub(crate) fn panic_reason(payload: Box<dyn std::any::Any + Send>) -> Reason {
    Reason::Panic(match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => payload.downcast_ref::<&str>().map_or_else(
            || "a panic with a non-string payload".to_owned(),
            |s| (*s).to_owned(),
        ),
    })
}

/// [`crate::exit_self`]: sets the reason `proc`, the running process, ends
/// with when its current poll returns, unless a signal already decided one.
pub(crate) fn exit_self(proc: &Proc, reason: Reason) {
    let mut st = proc.st.borrow_mut();
    if st.pending_exit.is_none() {
        st.pending_exit = Some(reason);
        st.exiting_self = true;
    }
}

/// Takes back the reason the running process set with
/// [`crate::exit_self`] during the poll that just returned: it keeps
/// running. For gen_server, which turns an `exit_self` in a callback into
/// a stop that runs `terminate` first. An end decided by a signal is not
/// taken: that one is not the process's to handle.
pub(crate) fn take_exit_self() -> Option<Reason> {
    with_current(|current| {
        let mut st = current?.1.st.borrow_mut();
        if !std::mem::take(&mut st.exiting_self) {
            return None;
        }
        st.pending_exit.take()
    })
}

/// The sending side of [`run_channel`], shared by the process and its
/// exit hook: whichever comes first answers.
pub(crate) type RunSender<T> = Arc<Mutex<Option<oneshot::Sender<Result<T, Reason>>>>>;

/// A oneshot for [`crate::Node::run`]: the result, or the reason the
/// process ended without one.
pub(crate) fn run_channel<T: Send + 'static>()
-> (RunSender<T>, oneshot::Receiver<Result<T, Reason>>) {
    let (tx, rx) = oneshot::channel();
    (Arc::new(Mutex::new(Some(tx))), rx)
}
