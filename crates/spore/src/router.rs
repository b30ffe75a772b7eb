//! The router: handle registry, routing table, streams and contexts of one
//! context, plus the public [`Router`] and [`Context`] handles of the master.

use std::collections::{HashMap, VecDeque};
use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskCx, Poll};
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use spore_proto::messages::{
    CallRequest, IdBlock, REPLY_ERR, REPLY_OK, RemoteError, RouteAdded, RoutesLost,
};
use spore_proto::routing::{NextHop, RouteTable, no_route_reason};
use spore_proto::{ContextId, DecodeEvent, Frame, Header, MASTER_ID, handles};
use tokio::sync::{oneshot, watch};

use crate::call::{CallError, RemoteFunction};
use crate::stream::StreamSender;
use crate::{ConnectError, logging};

pub(crate) type StreamId = u32;

/// How many context IDs the master hands out per ALLOCATE_ID request.
pub(crate) const ID_BLOCK: u32 = 1000;

/// At most this many ID blocks are handed to one child's subtree: a child
/// cannot use up the ID space (that is a million contexts).
pub(crate) const MAX_BLOCKS_PER_CHILD: usize = 1000;

/// Where a message for a local handle goes.
pub(crate) enum Sink {
    /// A pending call's reply: used once, then removed.
    Reply {
        context: ContextId,
        tx: oneshot::Sender<Reply>,
    },
    /// A [`crate::Receiver`]: every message, in order, until it is dropped
    /// or closed. With a respondent, it ends when that context is lost.
    Channel {
        respondent: Option<ContextId>,
        tx: tokio::sync::mpsc::UnboundedSender<Reply>,
    },
    /// Built-in handler, run on the I/O loop; must be quick and never block.
    Internal(fn(&Arc<Inner>, Frame)),
}

impl Sink {
    /// The context this sink waits on, if any.
    fn respondent(&self) -> Option<ContextId> {
        match self {
            Sink::Reply { context, .. } => Some(*context),
            Sink::Channel { respondent, .. } => *respondent,
            Sink::Internal(_) => None,
        }
    }

    /// Wakes whoever waits on this sink with `reason`.
    fn fail(self, reason: &str) {
        match self {
            Sink::Reply { tx, .. } => {
                let _ = tx.send(Reply::Lost(reason.to_owned()));
            }
            Sink::Channel { tx, .. } => {
                let _ = tx.send(Reply::Lost(reason.to_owned()));
            }
            Sink::Internal(_) => {}
        }
    }
}

/// Registering a handle that is already registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("handle {handle} is already registered in {context}")]
pub(crate) struct HandleTaken {
    pub(crate) handle: u32,
    pub(crate) context: String,
}

/// What a pending call receives.
pub(crate) enum Reply {
    Frame(Frame),
    Lost(String),
}

/// What a context knows about a context below it: a direct child (with its
/// process) or a descendant announced by ADD_ROUTE.
pub(crate) struct ChildEntry {
    pub(crate) name: Arc<str>,
    /// A direct child: this context started it and owns its process.
    pub(crate) direct: bool,
    /// It detached (DETACHING): it outlives this context, which neither
    /// shuts it down nor kills it.
    pub(crate) detached: bool,
    pub(crate) pid: u32,
    pub(crate) process: Option<std::process::Child>,
    pub(crate) stderr_tail: Arc<Mutex<VecDeque<String>>>,
    /// `Some(detail)` once the context is lost.
    pub(crate) lost: watch::Sender<Option<String>>,
    pub(crate) bytes_written: Arc<AtomicU64>,
    /// The controller of the terminal the method was given to prompt on
    /// (ssh, doas with a secret). Held open while the entry lives: closing
    /// it would hang up the terminal and send the context SIGHUP.
    #[expect(dead_code, reason = "held open for its lifetime, never read")]
    pub(crate) terminal: Option<std::os::fd::OwnedFd>,
}

impl ChildEntry {
    /// A context further down, known from its ADD_ROUTE.
    fn descendant(name: &str, pid: u32) -> Self {
        Self {
            name: name.into(),
            direct: false,
            detached: false,
            pid,
            process: None,
            stderr_tail: Arc::default(),
            lost: watch::channel(None).0,
            bytes_written: Arc::default(),
            terminal: None,
        }
    }
}

/// Destinations a child's subtree sent traffic to (outside that subtree).
#[derive(Default)]
struct Egress {
    ids: std::collections::HashSet<ContextId>,
    /// Set when the subtree talked to more than [`EGRESS_CAP`] contexts:
    /// it is then told of every loss, and the set is no longer kept.
    all: bool,
}

/// Destinations remembered per child stream; beyond it, every loss is
/// passed down that stream (a child cannot grow this context's memory by
/// sending to made-up IDs).
const EGRESS_CAP: usize = 4096;

impl Egress {
    fn note(&mut self, dst: ContextId) {
        if self.all {
            return;
        }
        if self.ids.len() >= EGRESS_CAP && !self.ids.contains(&dst) {
            self.all = true;
            self.ids = Default::default();
        } else {
            self.ids.insert(dst);
        }
    }

    /// Which of `lost` this subtree must hear of (forgotten here).
    fn take_lost(&mut self, lost: &[ContextId]) -> Vec<ContextId> {
        if self.all {
            return lost.to_vec();
        }
        lost.iter()
            .copied()
            .filter(|id| self.ids.remove(id))
            .collect()
    }
}

/// How long a context waits for any byte from a parent or child before it
/// declares that peer down (Erlang's `net_ticktime` default).
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(60);

/// Tunables shared by a router and inherited by its children.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) max_message_size: u32,
    pub(crate) connect_timeout: Duration,
    pub(crate) shutdown_grace: Duration,
    pub(crate) debug: bool,
    pub(crate) unidirectional: bool,
    /// A peer silent this long is declared down (`None`: never).
    pub(crate) heartbeat: Option<Duration>,
    pub(crate) image: Option<PathBuf>,
    /// Images for other platforms, by platform (master only).
    pub(crate) images: HashMap<String, PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_message_size: spore_proto::DEFAULT_MAX_MESSAGE_SIZE,
            connect_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
            debug: false,
            unidirectional: false,
            heartbeat: Some(DEFAULT_HEARTBEAT),
            image: None,
            images: HashMap::new(),
        }
    }
}

/// Which of a context's output streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    /// The context's stdout.
    Stdout,
    /// The context's stderr.
    Stderr,
}

/// One line a child context wrote to its stdout or stderr.
#[derive(Debug, Clone, Copy)]
pub struct OutputLine<'a> {
    /// The context's name, e.g. `local.1`.
    pub context: &'a str,
    /// The context's ID.
    pub context_id: ContextId,
    /// Which stream.
    pub stream: OutputStream,
    /// The line, without its newline. Lines over 64 KiB arrive in pieces.
    pub line: &'a str,
}

pub(crate) type OutputHook = Arc<dyn Fn(OutputLine<'_>) + Send + Sync>;

/// Who a context is in the tree.
pub(crate) struct Identity {
    pub(crate) my_id: ContextId,
    pub(crate) name: String,
    /// Ancestors, nearest first.
    pub(crate) parent_ids: Vec<ContextId>,
    /// The stream to the parent; `None` in the master.
    pub(crate) parent_stream: Option<StreamId>,
}

/// The state of one context's router. Shared by the I/O loop, the workers
/// and every [`Context`] handle.
pub(crate) struct Inner {
    pub(crate) my_id: ContextId,
    pub(crate) name: String,
    pub(crate) parent_ids: Vec<ContextId>,
    pub(crate) settings: Settings,
    /// The I/O loop.
    pub(crate) rt: tokio::runtime::Handle,
    /// Where user functions run (children only).
    pub(crate) worker: Option<tokio::runtime::Handle>,
    handles: Mutex<HashMap<u32, Sink>>,
    next_handle: AtomicU32,
    streams: Mutex<HashMap<StreamId, StreamSender>>,
    next_stream: AtomicU32,
    routes: Mutex<RouteTable<StreamId>>,
    /// For each stream to a child: the contexts outside that child's
    /// subtree it sent traffic to. When one of them is lost, DEL_ROUTE goes
    /// down that stream too, so waiters there wake (a sibling, a sibling's
    /// child).
    egress: Mutex<HashMap<StreamId, Egress>>,
    pub(crate) children: Mutex<HashMap<ContextId, ChildEntry>>,
    /// The master's next unused context ID.
    next_context: AtomicU32,
    /// Contexts known to be lost, with what was observed. Marked before
    /// waiters are woken, so a waiter registered later still learns it.
    lost: Mutex<HashMap<ContextId, String>>,
    /// The next pipelined call chain's ID.
    pub(crate) next_chain: AtomicU64,
    /// Blocks of IDs handed down each child's stream (ALLOCATE_ID): a
    /// child's ADD_ROUTE is believed only for an ID from one of them.
    granted: Mutex<HashMap<StreamId, Vec<std::ops::Range<ContextId>>>>,
    /// A child's unused IDs from its last ALLOCATE_ID block.
    id_block: tokio::sync::Mutex<std::ops::Range<ContextId>>,
    pub(crate) output: Option<logging::OutputSink>,
    /// Images of other platforms, cached or being fetched.
    pub(crate) images: crate::images::ImageStore,
    /// Set once, when this context starts shutting down; connects in
    /// progress watch it and abort.
    shutting_down: watch::Sender<bool>,
    /// Running services, by handle (see `service.rs`).
    pub(crate) services: Mutex<HashMap<u32, Arc<dyn crate::service::Running>>>,
}

impl Inner {
    pub(crate) fn new(
        identity: Identity,
        settings: Settings,
        rt: tokio::runtime::Handle,
        worker: Option<tokio::runtime::Handle>,
        output: Option<logging::OutputSink>,
    ) -> Arc<Self> {
        let Identity {
            my_id,
            name,
            parent_ids,
            parent_stream,
        } = identity;
        Arc::new(Self {
            my_id,
            name,
            parent_ids,
            settings,
            rt,
            worker,
            handles: Mutex::new(HashMap::new()),
            next_handle: AtomicU32::new(handles::FIRST_DYNAMIC),
            streams: Mutex::new(HashMap::new()),
            // Stream 0 is reserved for the parent.
            next_stream: AtomicU32::new(1),
            routes: Mutex::new(RouteTable::new(my_id, parent_stream)),
            egress: Mutex::new(HashMap::new()),
            children: Mutex::new(HashMap::new()),
            next_context: AtomicU32::new(my_id + 1),
            id_block: tokio::sync::Mutex::new(0..0),
            granted: Mutex::new(HashMap::new()),
            next_chain: AtomicU64::new(1),
            lost: Mutex::new(HashMap::new()),
            output,
            images: Default::default(),
            shutting_down: watch::channel(false).0,
            services: Mutex::new(HashMap::new()),
        })
    }

    /// True once this context has started shutting down.
    pub(crate) fn is_shutting_down(&self) -> bool {
        *self.shutting_down.borrow()
    }

    /// Marks this context as shutting down; returns whether it already was.
    pub(crate) fn begin_shutdown(&self) -> bool {
        self.shutting_down.send_replace(true)
    }

    /// Resolves once this context starts shutting down.
    pub(crate) fn shutdown_started(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.shutting_down.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    /// Registers `sink` on `handle`. Registering a taken handle is an error;
    /// after [`Inner::unregister`] the handle can be registered again.
    pub(crate) fn register(&self, handle: u32, sink: Sink) -> Result<(), HandleTaken> {
        match self.handles.lock().unwrap().entry(handle) {
            std::collections::hash_map::Entry::Occupied(_) => Err(HandleTaken {
                handle,
                context: self.name.clone(),
            }),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(sink);
                Ok(())
            }
        }
    }

    /// Removes whatever is registered on `handle`; returns whether there was one.
    pub(crate) fn unregister(&self, handle: u32) -> bool {
        self.handles.lock().unwrap().remove(&handle).is_some()
    }

    /// Registers a built-in handler on a well-known handle.
    pub(crate) fn add_internal(&self, handle: u32, f: fn(&Arc<Inner>, Frame)) {
        self.register(handle, Sink::Internal(f))
            .expect("well-known handles are registered once, at start-up");
    }

    pub(crate) fn alloc_handle(&self) -> u32 {
        loop {
            let h = self.next_handle.fetch_add(1, Ordering::Relaxed);
            if h >= handles::FIRST_DYNAMIC {
                return h;
            }
            // Wrapped around: skip the reserved range.
            let _ = self.next_handle.compare_exchange(
                h + 1,
                handles::FIRST_DYNAMIC,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// Takes `count` fresh context IDs from the master's counter; `None`
    /// once the ID space is used up. Only the master numbers contexts.
    fn allocate_ids(&self, count: u32) -> Option<ContextId> {
        debug_assert!(self.is_master());
        self.next_context
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                n.checked_add(count)
            })
            .ok()
    }

    /// Whether this is the master (the root of the tree).
    pub(crate) fn is_master(&self) -> bool {
        self.parent_ids.is_empty()
    }

    /// An ID for a new context started by this one. The master numbers
    /// contexts itself; any other context takes IDs from a block its parent
    /// handed it (ALLOCATE_ID), one round trip per [`ID_BLOCK`] contexts.
    pub(crate) async fn next_context_id(self: &Arc<Self>) -> Result<ContextId, ConnectError> {
        let no_id = |detail: String| ConnectError::NoId {
            context: self.name.clone(),
            detail,
        };
        if self.is_master() {
            return self
                .allocate_ids(1)
                .ok_or_else(|| no_id("the master has no context IDs left".to_owned()));
        }
        let mut block = self.id_block.lock().await;
        if block.is_empty() {
            let got = self.fetch_block().await.map_err(no_id)?;
            *block = got.start..got.start.saturating_add(got.count);
        }
        block
            .next()
            .ok_or_else(|| no_id("an empty block of IDs".to_owned()))
    }

    /// A fresh block of IDs: from the master's counter, or asked of the
    /// parent (which asks its own, up to the master).
    async fn fetch_block(self: &Arc<Self>) -> Result<IdBlock, String> {
        if self.is_master() {
            return self
                .allocate_ids(ID_BLOCK)
                .map(|start| IdBlock {
                    start,
                    count: ID_BLOCK,
                })
                .ok_or_else(|| "the master has no context IDs left".to_owned());
        }
        let parent = *self.parent_ids.first().expect("a child has a parent");
        let reply: PendingCall<IdBlock> = self.request(
            parent,
            self.context_name(parent).into(),
            handles::ALLOCATE_ID,
            "ALLOCATE_ID",
            Ok(Vec::new()),
            true,
        );
        reply.await.map_err(|e| e.to_string())
    }

    /// ALLOCATE_ID from a direct child: hands it a fresh block of IDs for
    /// its subtree and remembers it, to check the routes that subtree
    /// announces later.
    pub(crate) fn on_allocate_id(self: &Arc<Self>, frame: Frame) {
        let header = frame.header;
        let Some(stream) = self.direct_stream_of(header.src) else {
            let reason = format!(
                "{} refused ALLOCATE_ID from context {}, which is not its child",
                self.name, header.src
            );
            tracing::warn!("{reason}");
            return self.refuse(&header, &reason);
        };
        let held = self
            .granted
            .lock()
            .unwrap()
            .get(&stream)
            .map_or(0, Vec::len);
        if held >= MAX_BLOCKS_PER_CHILD {
            let reason = format!(
                "{} refused ALLOCATE_ID from {}: its subtree already holds {held} blocks of IDs",
                self.name,
                self.context_name(header.src)
            );
            tracing::warn!("{reason}");
            return self.refuse(&header, &reason);
        }
        let inner = self.clone();
        self.rt.spawn(async move {
            match inner.fetch_block().await {
                Ok(block) => {
                    inner
                        .granted
                        .lock()
                        .unwrap()
                        .entry(stream)
                        .or_default()
                        .push(block.start..block.start.saturating_add(block.count));
                    let payload = crate::call::encode_after(&[REPLY_OK], &block)
                        .expect("an IdBlock always serializes");
                    inner.reply(&header, payload);
                }
                Err(reason) => inner.refuse(&header, &reason),
            }
        });
    }

    /// Whether `id` lies in a block of IDs handed down `stream`.
    fn granted_to(&self, stream: StreamId, id: ContextId) -> bool {
        self.granted
            .lock()
            .unwrap()
            .get(&stream)
            .is_some_and(|blocks| blocks.iter().any(|b| b.contains(&id)))
    }

    /// The stream of `ctx` if it is a direct child of this context.
    fn direct_stream_of(&self, ctx: ContextId) -> Option<StreamId> {
        let stream = self.stream_below(ctx)?;
        (self.direct_child_on(stream) == Some(ctx)).then_some(stream)
    }

    /// Sends `payload` to the reply handle of the request `header`, if it has one.
    pub(crate) fn reply(self: &Arc<Self>, header: &Header, payload: Vec<u8>) {
        if header.reply_to != 0 {
            self.route(Frame::new(
                Header::new(header.src, self.my_id, header.reply_to),
                payload,
            ));
        }
    }

    pub(crate) fn add_stream(&self, id: StreamId, sender: StreamSender) {
        self.streams.lock().unwrap().insert(id, sender);
    }

    pub(crate) fn new_stream_id(&self) -> StreamId {
        self.next_stream.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn take_stream(&self, id: StreamId) -> Option<StreamSender> {
        self.streams.lock().unwrap().remove(&id)
    }

    /// Closes every stream (their last senders go) and fails every pending
    /// call: for a router whose I/O loop has stopped.
    fn close_all_streams(&self, reason: &str) {
        let streams = std::mem::take(&mut *self.streams.lock().unwrap());
        drop(streams);
        self.fail_all_handles(reason);
    }

    /// Makes sure this context hears of `ctx`'s loss: a context outside
    /// this one's subtree is told of only to the subtrees that sent it
    /// traffic, so a probe (a dead message to its `IS_DEAD` handle, which
    /// every context drops silently) goes toward it, and every hop on the
    /// way notes the interest. If it is already lost, the first hop that
    /// knows answers with DEL_ROUTE.
    pub(crate) fn note_interest_in(self: &Arc<Self>, ctx: ContextId) {
        if ctx != self.my_id && !self.is_master() && !self.is_below(ctx) {
            let probe = Frame::dead(
                Header::new(ctx, self.my_id, handles::IS_DEAD),
                "interest probe",
            );
            self.route(probe);
        }
    }

    /// Fails every waiter on a context outside this one's subtree: for a
    /// detached context whose parent is gone, none of them can answer.
    pub(crate) fn fail_outside(&self, reason: &str) {
        let below: std::collections::HashSet<ContextId> = {
            let routes = self.routes.lock().unwrap();
            let children = self.children.lock().unwrap();
            children
                .keys()
                .copied()
                .filter(|id| routes.route(*id).is_some())
                .collect()
        };
        let outside = |s: &Sink| {
            s.respondent()
                .is_some_and(|c| c != self.my_id && !below.contains(&c))
        };
        for sink in self.take_sinks(outside) {
            sink.fail(reason);
        }
    }

    /// What was observed when `ctx` was lost, if this context knows it is.
    pub(crate) fn lost_detail(&self, ctx: ContextId) -> Option<String> {
        self.lost.lock().unwrap().get(&ctx).cloned()
    }

    /// The stream to a child through which `ctx` is reached, if `ctx` is
    /// below this context.
    pub(crate) fn stream_below(&self, ctx: ContextId) -> Option<StreamId> {
        let routes = self.routes.lock().unwrap();
        routes.route(ctx).filter(|s| Some(*s) != routes.parent())
    }

    /// Whether `ctx` is below this context.
    pub(crate) fn is_below(&self, ctx: ContextId) -> bool {
        self.stream_below(ctx).is_some()
    }

    /// Whether `ctx` is a descendant this context routes to.
    pub(crate) fn knows_route(&self, ctx: ContextId) -> bool {
        self.routes.lock().unwrap().route(ctx).is_some()
    }

    pub(crate) fn add_route(&self, ctx: ContextId, stream: StreamId) {
        self.routes.lock().unwrap().add_route(ctx, stream);
    }

    /// Name of a context this one knows, for logs and errors.
    pub(crate) fn context_name(&self, id: ContextId) -> String {
        if id == self.my_id {
            return self.name.clone();
        }
        match self.children.lock().unwrap().get(&id) {
            Some(c) => c.name.to_string(),
            None if id == MASTER_ID => "master".to_owned(),
            None => format!("context {id}"),
        }
    }

    /// Source verification: a frame's `src` and `auth` must both be
    /// contexts reached through the stream it arrived on. A child cannot
    /// speak for its parent, a sibling or this context; a parent cannot
    /// speak for a child. Anything else is dropped and logged.
    fn source_ok(&self, h: &Header, from: StreamId) -> bool {
        let routes = self.routes.lock().unwrap();
        let through = |id| matches!(routes.next_hop(id), NextHop::Stream(s) if s == from);
        let (src_ok, auth_ok) = (through(h.src), through(h.auth));
        drop(routes);
        if !src_ok || !auth_ok {
            let (what, id) = if src_ok {
                ("auth_id", h.auth)
            } else {
                ("src_id", h.src)
            };
            tracing::warn!(
                "{}: dropped a frame to {}:{} from stream {from}: bad {what} {id} (not reached through that stream)",
                self.name,
                h.dst,
                h.handle
            );
        }
        src_ok && auth_ok
    }

    /// Handles one decoded event from stream `from`.
    pub(crate) fn on_event(self: &Arc<Self>, ev: DecodeEvent, from: StreamId) {
        let header = match &ev {
            DecodeEvent::Frame(f) => &f.header,
            DecodeEvent::Oversized(h) => h,
        };
        if !self.source_ok(header, from) {
            return;
        }
        match ev {
            DecodeEvent::Frame(f) => self.route_from(f, Some(from)),
            DecodeEvent::Oversized(h) => {
                let reason = format!(
                    "{} (refused by {})",
                    spore_proto::too_large_reason(u64::from(h.len), self.settings.max_message_size),
                    self.name
                );
                tracing::warn!(
                    stream = from,
                    "dropped a message to {}:{}: {reason}",
                    h.dst,
                    h.handle
                );
                if let Some(dead) = Frame::dead_reply(&h, self.my_id, &reason) {
                    self.route(dead);
                }
            }
        }
    }

    /// Delivers `frame` locally or forwards it toward its destination.
    pub(crate) fn route(self: &Arc<Self>, frame: Frame) {
        self.route_from(frame, None);
    }

    /// [`Inner::route`] for a frame that arrived on stream `arrived_on`. A
    /// frame is never sent back where it came from: a destination that both
    /// sides think lies beyond the other (a stale or forged route) would
    /// otherwise bounce between them forever. It gets "no route" instead.
    fn route_from(self: &Arc<Self>, frame: Frame, arrived_on: Option<StreamId>) {
        let (hop, from_child, to_child) = {
            let routes = self.routes.lock().unwrap();
            let hop = match routes.next_hop(frame.header.dst) {
                NextHop::Stream(s) if Some(s) == arrived_on => NextHop::NoRoute,
                hop => hop,
            };
            let to_child = matches!(hop, NextHop::Stream(s) if Some(s) != routes.parent());
            (
                hop,
                arrived_on.filter(|s| Some(*s) != routes.parent()),
                to_child,
            )
        };
        let dst = frame.header.dst;
        if let (NextHop::Stream(_), Some(from)) = (hop, from_child) {
            if !self.parent_ids.contains(&dst) {
                // Traffic from a child's subtree to a context outside it.
                // (Not to an ancestor: this context goes when one does.)
                self.egress
                    .lock()
                    .unwrap()
                    .entry(from)
                    .or_default()
                    .note(dst);
            }
        }
        if self.settings.unidirectional && from_child.is_some() && to_child {
            return self.refuse_sideways(&frame.header);
        }
        match hop {
            NextHop::Local => self.deliver(frame),
            NextHop::Stream(s) => {
                let sender = self.streams.lock().unwrap().get(&s).cloned();
                let undelivered = match sender {
                    Some(sender) => sender.send(frame).err(),
                    None => Some(frame),
                };
                if let Some(frame) = undelivered {
                    let reason = format!("{} disconnected", self.context_name(frame.header.dst));
                    self.refuse(&frame.header, &reason);
                }
            }
            NextHop::NoRoute => {
                let reason = no_route_reason(dst, self.my_id);
                self.refuse(&frame.header, &reason);
                // A child's subtree talks to a context already lost: it
                // may wait on it (without a reply handle to fail), so it
                // learns the loss now.
                if let (Some(from), Some(detail)) = (from_child, self.lost_detail(dst)) {
                    self.tell_child_lost(from, vec![dst], &detail);
                }
            }
        }
    }

    /// Unidirectional mode: a message from one child's subtree to another's.
    fn refuse_sideways(self: &Arc<Self>, header: &Header) {
        let reason = format!(
            "message from {} to {} refused by unidirectional routing in {}",
            self.context_name(header.src),
            self.context_name(header.dst),
            self.name
        );
        tracing::warn!("{reason}");
        self.refuse(header, &reason);
    }

    /// Answers an undeliverable message with a dead message, if it wants one.
    pub(crate) fn refuse(self: &Arc<Self>, header: &Header, reason: &str) {
        match Frame::dead_reply(header, self.my_id, reason) {
            Some(dead) => self.route(dead),
            // A log record that cannot go up is not logged again: the new
            // record could not go up either.
            None if header.handle == handles::FORWARD_LOG => {}
            None => tracing::debug!(
                "dropped message {}->{}:{}: {reason}",
                header.src,
                header.dst,
                header.handle
            ),
        }
    }

    fn deliver(self: &Arc<Self>, frame: Frame) {
        let handle = frame.header.handle;
        if handle == handles::IS_DEAD {
            // An interest probe (see `note_interest_in`) has done its job
            // on the way here.
            return;
        }
        let mut handles = self.handles.lock().unwrap();
        match handles.get(&handle) {
            Some(Sink::Internal(_)) if frame.header.is_dead() => {
                // Built-in handlers never asked for anything: a dead message
                // here is misrouted or forged. Never act on it.
                drop(handles);
                tracing::debug!("dropped a dead message to built-in handle {handle}");
            }
            Some(Sink::Internal(f)) => {
                let f = *f;
                drop(handles);
                f(self, frame);
            }
            Some(Sink::Reply { .. }) => {
                let Some(Sink::Reply { tx, .. }) = handles.remove(&handle) else {
                    unreachable!()
                };
                drop(handles);
                let _ = tx.send(Reply::Frame(frame));
            }
            Some(Sink::Channel { tx, .. }) => {
                // A receiver dropped between its last poll and this
                // message: the message is dropped with it.
                let _ = tx.send(Reply::Frame(frame));
            }
            None if (handles::FIRST_SERVICE..=handles::LAST_SERVICE).contains(&handle) => {
                drop(handles);
                self.deliver_to_service(frame);
            }
            None => {
                drop(handles);
                let reason = format!("invalid handle {handle} in {}", self.name);
                self.refuse(&frame.header, &reason);
            }
        }
    }

    /// Sends a frame from this context, enforcing the size limit.
    pub(crate) fn send(self: &Arc<Self>, frame: Frame) -> Result<(), String> {
        if frame.payload.len() > self.settings.max_message_size as usize {
            return Err(spore_proto::too_large_reason(
                frame.payload.len() as u64,
                self.settings.max_message_size,
            ));
        }
        self.route(frame);
        Ok(())
    }

    /// A stream ended: forget everything behind it and wake whoever waits on it.
    pub(crate) fn stream_lost(self: &Arc<Self>, stream: StreamId, mut detail: String) {
        if let Some(sender) = self.take_stream(stream) {
            sender.abort();
        }
        let lost = self.routes.lock().unwrap().drop_stream(stream);
        self.egress.lock().unwrap().remove(&stream);
        self.granted.lock().unwrap().remove(&stream);
        if lost.is_empty() {
            return;
        }
        // What the direct child last said on stderr often explains its death.
        let tail: Vec<String> = {
            let children = self.children.lock().unwrap();
            lost.iter()
                .filter_map(|id| children.get(id))
                .find(|c| c.direct)
                .map(|c| {
                    let tail = c.stderr_tail.lock().unwrap();
                    tail.iter()
                        .skip(tail.len().saturating_sub(5))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default()
        };
        if !tail.is_empty() {
            detail = format!("{detail}; last stderr lines: {}", tail.join(" | "));
        }
        self.contexts_lost(&lost, &detail, stream);
    }

    /// Contexts that were reached through `stream` are gone: wake every
    /// call waiting on them, tell the other children that talked to them,
    /// mark them lost, reap the processes that are ours, and tell the
    /// parent (DEL_ROUTE).
    fn contexts_lost(self: &Arc<Self>, lost: &[ContextId], detail: &str, stream: StreamId) {
        self.forget_lost(lost, detail, stream);

        // Reap our own processes first, so that whoever waits for the loss
        // (Context::shutdown, the parent's DEL_ROUTE) finds them gone.
        let processes: Vec<std::process::Child> = {
            let mut children = self.children.lock().unwrap();
            lost.iter()
                .filter_map(|id| children.get_mut(id)?.process.take())
                .collect()
        };
        let must_wait = !processes.is_empty();
        let inner = self.clone();
        let (lost, detail) = (lost.to_vec(), detail.to_owned());
        let grace = self.settings.shutdown_grace;
        let finish = move || {
            crate::bootstrap::reap_all(processes, grace);
            {
                let children = inner.children.lock().unwrap();
                for id in &lost {
                    if let Some(entry) = children.get(id) {
                        tracing::debug!("context {} lost: {detail}", entry.name);
                        entry.lost.send_replace(Some(detail.clone()));
                    }
                }
            }
            inner.tell_parent(
                handles::DEL_ROUTE,
                &RoutesLost {
                    ids: lost,
                    reason: detail,
                },
            );
        };
        if must_wait {
            self.rt.spawn_blocking(finish);
        } else {
            finish();
        }
    }

    /// What every context does when it learns contexts are lost, however
    /// it learned it: remember the loss, wake whatever waits on them, and
    /// pass DEL_ROUTE down every child stream (except `from`, where the
    /// news came from) whose subtree sent them traffic.
    pub(crate) fn forget_lost(self: &Arc<Self>, lost: &[ContextId], detail: &str, from: StreamId) {
        {
            let mut known = self.lost.lock().unwrap();
            for id in lost {
                known.entry(*id).or_insert_with(|| detail.to_owned());
            }
        }
        for sink in self.take_sinks(|s| s.respondent().is_some_and(|c| lost.contains(&c))) {
            sink.fail(detail);
        }
        self.services_lost(lost, detail);
        let mut tell: Vec<(StreamId, Vec<ContextId>)> = Vec::new();
        for (stream, talked_to) in self.egress.lock().unwrap().iter_mut() {
            let ids = talked_to.take_lost(lost);
            if !ids.is_empty() && *stream != from {
                tell.push((*stream, ids));
            }
        }
        for (stream, ids) in tell {
            self.tell_child_lost(stream, ids, detail);
        }
    }

    /// Sends DEL_ROUTE for `ids` down `stream`, to the direct child there.
    fn tell_child_lost(self: &Arc<Self>, stream: StreamId, ids: Vec<ContextId>, detail: &str) {
        let Some(child) = self.direct_child_on(stream) else {
            return;
        };
        let msg = RoutesLost {
            ids,
            reason: detail.to_owned(),
        };
        match postcard::to_stdvec(&msg) {
            Ok(payload) => {
                let _ = self.send(Frame::new(
                    Header::new(child, self.my_id, handles::DEL_ROUTE),
                    payload,
                ));
            }
            Err(e) => tracing::error!("DEL_ROUTE for {child} did not encode: {e}"),
        }
    }

    /// The direct child at the other end of `stream`.
    fn direct_child_on(&self, stream: StreamId) -> Option<ContextId> {
        let routes = self.routes.lock().unwrap();
        self.children
            .lock()
            .unwrap()
            .iter()
            .find(|(id, c)| c.direct && routes.route(**id) == Some(stream))
            .map(|(id, _)| *id)
    }

    /// Sends a route update to the parent, from this context (the master has
    /// no parent and keeps it).
    fn tell_parent(self: &Arc<Self>, handle: u32, msg: &impl serde::Serialize) {
        let Some(&parent) = self.parent_ids.first() else {
            return;
        };
        match postcard::to_stdvec(msg) {
            Ok(payload) => {
                let _ = self.send(Frame::new(Header::new(parent, self.my_id, handle), payload));
            }
            Err(e) => tracing::error!("route update for {parent} did not encode: {e}"),
        }
    }

    /// The liveness check for the stream to `peer` (a parent or a direct
    /// child), pinging it with HEARTBEAT frames; `None` when heartbeats are off.
    pub(crate) fn heartbeat_to(
        self: &Arc<Self>,
        peer: ContextId,
    ) -> Option<crate::stream::Heartbeat<impl FnMut() + use<>>> {
        let window = self.settings.heartbeat?;
        let inner = self.clone();
        Some(crate::stream::Heartbeat {
            window,
            ping: move || {
                let ping = Frame::new(
                    Header::new(peer, inner.my_id, handles::HEARTBEAT),
                    Vec::new(),
                );
                // A dead stream is noticed by its reader; nothing to do here.
                let _ = inner.send(ping);
            },
        })
    }

    /// Registers ADD_ROUTE, DEL_ROUTE and DETACHING (every context has them).
    pub(crate) fn add_route_handlers(&self) {
        // Its arrival is the point: the reader saw bytes.
        self.add_internal(handles::HEARTBEAT, |_, _| {});
        self.add_internal(handles::ADD_ROUTE, |inner, f| inner.on_add_route(f));
        self.add_internal(handles::DEL_ROUTE, |inner, f| inner.on_del_route(f));
        self.add_internal(handles::DETACHING, |inner, f| inner.on_detaching(f));
        self.add_internal(handles::ALLOCATE_ID, |inner, f| inner.on_allocate_id(f));
    }

    /// DETACHING: a direct child will outlive this context.
    fn on_detaching(self: &Arc<Self>, frame: Frame) {
        let src = frame.header.src;
        match self.children.lock().unwrap().get_mut(&src) {
            Some(child) if child.direct => {
                child.detached = true;
                tracing::debug!("{} detached from {}", child.name, self.name);
            }
            _ => tracing::warn!(
                "ignored DETACHING from context {src}, which is not a child of {}",
                self.name
            ),
        }
    }

    /// A new descendant: record it and announce it upward.
    pub(crate) fn context_added(self: &Arc<Self>, added: &RouteAdded) {
        self.tell_parent(handles::ADD_ROUTE, added);
        self.services_added(added.id, &added.name);
    }

    /// Decodes a route update and finds the stream it came through. Only a
    /// context below this one may send one; anything else is logged and
    /// refused (`None`).
    fn route_update<T: serde::de::DeserializeOwned>(
        &self,
        frame: &Frame,
        what: &str,
    ) -> Option<(T, StreamId)> {
        let src = frame.header.src;
        let msg = match postcard::from_bytes(&frame.payload) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("undecodable {what} from context {src}: {e}");
                return None;
            }
        };
        // Each hop re-announces as itself: an update comes from a direct
        // child, which speaks only for its own subtree.
        let direct = self.direct_stream_of(src);
        if direct.is_none() {
            tracing::warn!(
                "{} refused {what} from context {src}, which is not its child",
                self.name
            );
        }
        Some((msg, direct?))
    }

    /// ADD_ROUTE: `id` lives below the sender.
    pub(crate) fn on_add_route(self: &Arc<Self>, frame: Frame) {
        let Some((added, stream)) = self.route_update::<RouteAdded>(&frame, "ADD_ROUTE") else {
            return;
        };
        let id = added.id;
        let refused = if id == self.my_id || self.parent_ids.contains(&id) {
            Some(format!("that is {} or its ancestor", self.name))
        } else if self.lost_detail(id).is_some() {
            Some("that context was lost".to_owned())
        } else if matches!(self.routes.lock().unwrap().route(id), Some(s) if s != stream) {
            Some("it is reached through another stream".to_owned())
        } else if !self.granted_to(stream, id) {
            Some("that ID was not handed to its subtree".to_owned())
        } else {
            None
        };
        if let Some(why) = refused {
            tracing::warn!(
                "{} refused ADD_ROUTE for {id} from context {}: {why}",
                self.name,
                frame.header.src,
            );
            return;
        }
        self.add_route(added.id, stream);
        self.children
            .lock()
            .unwrap()
            .insert(added.id, ChildEntry::descendant(&added.name, added.pid));
        self.context_added(&added);
    }

    /// DEL_ROUTE: contexts below the sender are gone, or (from the parent)
    /// contexts elsewhere in the tree that this subtree talked to.
    pub(crate) fn on_del_route(self: &Arc<Self>, frame: Frame) {
        let src = frame.header.src;
        if self.parent_ids.first() == Some(&src) {
            return self.on_del_route_from_parent(&frame);
        }
        let Some((msg, stream)) = self.route_update::<RoutesLost>(&frame, "DEL_ROUTE") else {
            return;
        };
        // Only routes that run through the sender's stream are its to drop.
        let lost: Vec<ContextId> = {
            let mut routes = self.routes.lock().unwrap();
            msg.ids
                .into_iter()
                .filter(|&id| id != src && routes.route(id) == Some(stream) && routes.del_route(id))
                .collect()
        };
        if !lost.is_empty() {
            self.contexts_lost(&lost, &msg.reason, stream);
        }
    }

    /// DEL_ROUTE from the parent: contexts outside this subtree are gone.
    /// Nothing in the routing table changes (they were reached through the
    /// parent); waiters wake and the news goes on down. The parent cannot
    /// declare this context, its ancestors or its descendants lost.
    fn on_del_route_from_parent(self: &Arc<Self>, frame: &Frame) {
        let msg: RoutesLost = match postcard::from_bytes(&frame.payload) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("undecodable DEL_ROUTE from the parent: {e}");
                return;
            }
        };
        let (lost, parent): (Vec<ContextId>, Option<StreamId>) = {
            let routes = self.routes.lock().unwrap();
            let outside = |id: &ContextId| {
                *id != self.my_id && !self.parent_ids.contains(id) && routes.route(*id).is_none()
            };
            (
                msg.ids.into_iter().filter(outside).collect(),
                routes.parent(),
            )
        };
        if let (false, Some(parent)) = (lost.is_empty(), parent) {
            self.forget_lost(&lost, &msg.reason, parent);
        }
    }

    /// Sends a request to `handle` in `context` and registers a handle
    /// for its reply (a call is a request to CALL_FUNCTION). The reply is
    /// [`REPLY_OK`] + the value, or [`REPLY_ERR`] + a [`RemoteError`];
    /// `function` names the request in errors.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn request<T: DeserializeOwned>(
        self: &Arc<Self>,
        context: ContextId,
        context_name: Arc<str>,
        handle: u32,
        function: &'static str,
        args_encoded: Result<Vec<u8>, postcard::Error>,
        want_reply: bool,
    ) -> PendingCall<T> {
        let fail = |e| PendingCall::failed(e);
        let payload = match args_encoded {
            Ok(p) => p,
            Err(e) => {
                return fail(CallError::Encode {
                    function: function.to_owned(),
                    detail: e.to_string(),
                });
            }
        };
        if payload.len() > self.settings.max_message_size as usize {
            return fail(CallError::TooLarge {
                function: function.to_owned(),
                size: payload.len(),
                max: self.settings.max_message_size,
            });
        }
        let mut header = Header::new(context, self.my_id, handle);
        let mut wait = None;
        if want_reply {
            let handle = self.alloc_handle();
            let (tx, rx) = oneshot::channel();
            self.register(handle, Sink::Reply { context, tx })
                .expect("fresh dynamic handles are unique");
            header = header.with_reply_to(handle);
            wait = Some(CallWait {
                rx,
                handle,
                inner: self.clone(),
                context: context_name,
                function,
            });
        }
        self.route(Frame::new(header, payload));
        PendingCall {
            state: match wait {
                Some(w) => CallState::Waiting(w),
                None => CallState::Done,
            },
            _out: PhantomData,
        }
    }

    fn forget_handle(&self, handle: u32) {
        self.unregister(handle);
    }

    /// Fails every handler registered here with a dead message (A13).
    pub(crate) fn fail_all_handles(&self, reason: &str) {
        for sink in self.take_sinks(|s| !matches!(s, Sink::Internal(_))) {
            sink.fail(reason);
        }
    }

    /// Unregisters and returns every sink matching `pred`.
    fn take_sinks(&self, pred: impl Fn(&Sink) -> bool) -> Vec<Sink> {
        let mut handles = self.handles.lock().unwrap();
        let matching: Vec<u32> = handles
            .iter()
            .filter(|(_, s)| pred(s))
            .map(|(h, _)| *h)
            .collect();
        matching
            .into_iter()
            .filter_map(|h| handles.remove(&h))
            .collect()
    }

    /// Asks every direct child to shut down.
    pub(crate) fn shutdown_children(self: &Arc<Self>) {
        // Direct children only: each passes SHUTDOWN on to its own.
        let ids: Vec<ContextId> = self
            .children
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, c)| c.direct && !c.detached)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let _ = self.send(Frame::new(
                Header::new(id, self.my_id, handles::SHUTDOWN),
                Bytes::new(),
            ));
        }
    }
}

struct CallWait {
    rx: oneshot::Receiver<Reply>,
    handle: u32,
    inner: Arc<Inner>,
    context: Arc<str>,
    function: &'static str,
}

enum CallState {
    Waiting(CallWait),
    Failed(CallError),
    Done,
}

/// A call in flight. Await it (or [`PendingCall::wait`] without async) for
/// the result. Dropping it abandons the reply.
#[must_use = "a call's result is only seen by awaiting the PendingCall"]
pub struct PendingCall<T> {
    state: CallState,
    _out: PhantomData<fn() -> T>,
}

impl<T> PendingCall<T> {
    /// For a call sent without a reply handle: whether it went out.
    pub(crate) fn sent(self) -> Result<(), CallError> {
        match &self.state {
            CallState::Failed(e) => Err(e.clone()),
            _ => Ok(()),
        }
    }
}

impl<T: DeserializeOwned> PendingCall<T> {
    fn failed(e: CallError) -> Self {
        Self {
            state: CallState::Failed(e),
            _out: PhantomData,
        }
    }

    /// Blocks the current thread until the reply arrives. Do not call from
    /// inside an async runtime; await the `PendingCall` there.
    pub fn wait(mut self) -> Result<T, CallError> {
        match std::mem::replace(&mut self.state, CallState::Done) {
            CallState::Waiting(w) => {
                let reply = w.rx.blocking_recv().ok();
                finish(&w.inner, &w.context, w.function, reply)
            }
            CallState::Failed(e) => Err(e),
            CallState::Done => unreachable!("call_no_reply results are not awaited"),
        }
    }
}

fn finish<T: DeserializeOwned>(
    inner: &Arc<Inner>,
    context: &str,
    function: &'static str,
    reply: Option<Reply>,
) -> Result<T, CallError> {
    let frame = match reply {
        Some(Reply::Frame(f)) => f,
        Some(Reply::Lost(detail)) => {
            return Err(CallError::Disconnected {
                context: context.to_owned(),
                detail,
            });
        }
        None => {
            return Err(CallError::Disconnected {
                context: context.to_owned(),
                detail: "router shut down".to_owned(),
            });
        }
    };
    if frame.header.is_dead() {
        return Err(CallError::Undeliverable {
            context: context.to_owned(),
            function: function.to_owned(),
            reason: frame.dead_reason(),
        });
    }
    let decode_err = |detail: String| CallError::Decode {
        context: context.to_owned(),
        function: function.to_owned(),
        detail,
    };
    match frame.payload.first() {
        Some(&REPLY_OK) => decoding_with(inner, || crate::call::decode_exact(&frame.payload[1..]))
            .map_err(|e| decode_err(format!("as {}: {e}", std::any::type_name::<T>()))),
        Some(&REPLY_ERR) => match postcard::from_bytes::<RemoteError>(&frame.payload[1..]) {
            Ok(r) => Err(CallError::Remote(Box::new(r))),
            Err(e) => Err(decode_err(format!("remote error payload: {e}"))),
        },
        _ => Err(decode_err("empty or unknown reply".to_owned())),
    }
}

impl<T: DeserializeOwned> Future for PendingCall<T> {
    type Output = Result<T, CallError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskCx<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        match &mut this.state {
            CallState::Waiting(w) => match Pin::new(&mut w.rx).poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(r) => {
                    let out = finish(&w.inner, &w.context, w.function, r.ok());
                    this.state = CallState::Done;
                    Poll::Ready(out)
                }
            },
            CallState::Failed(_) => {
                let CallState::Failed(e) = std::mem::replace(&mut this.state, CallState::Done)
                else {
                    unreachable!()
                };
                Poll::Ready(Err(e))
            }
            CallState::Done => panic!("PendingCall polled after completion"),
        }
    }
}

impl<T> Drop for PendingCall<T> {
    fn drop(&mut self) {
        if let CallState::Waiting(w) = &self.state {
            w.inner.forget_handle(w.handle);
        }
    }
}

thread_local! {
    /// The router that [`Context`]s and [`crate::Sender`]s decoded on this
    /// thread bind to (set while spore decodes a reply or a message).
    static DECODING: std::cell::RefCell<Option<Arc<Inner>>> = const { std::cell::RefCell::new(None) };
}

/// Runs `decode` with `inner` as the router that decoded handles bind to.
pub(crate) fn decoding_with<R>(inner: &Arc<Inner>, decode: impl FnOnce() -> R) -> R {
    struct Restore(Option<Arc<Inner>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            DECODING.set(self.0.take());
        }
    }
    let _restore = Restore(DECODING.replace(Some(inner.clone())));
    decode()
}

/// The router a handle decoded here binds to: the one decoding (see
/// [`decoding_with`]), else this process's child context (call arguments
/// are decoded there by generated code).
pub(crate) fn decoding_router<E: serde::de::Error>(what: &str) -> Result<Arc<Inner>, E> {
    DECODING
        .with_borrow(Clone::clone)
        .or_else(|| crate::bootstrap::child::inner().cloned())
        .ok_or_else(|| {
            crate::call::decode_error(format!(
                "a {what} can only be decoded by spore: in call arguments, call results \
                 or channel messages"
            ))
        })
}

impl Inner {
    /// A handle on context `id`, named as this router knows it (else as
    /// the sender called it).
    pub(crate) fn context_handle(self: &Arc<Self>, id: ContextId, name: &str) -> Context {
        let known = if id == self.my_id {
            Some(self.name.as_str().into())
        } else {
            self.children
                .lock()
                .unwrap()
                .get(&id)
                .map(|c| c.name.clone())
        };
        Context {
            inner: self.clone(),
            id,
            name: known.unwrap_or_else(|| name.into()),
        }
    }
}

/// A handle to a context: call functions in it, shut it down.
///
/// Cheap to clone. It stays valid after the context is lost; calls then fail
/// at once with [`CallError::Undeliverable`] ("no route").
///
/// A `Context` can be passed in call arguments and results and in channel
/// messages: it arrives as a handle on the same context, bound to the
/// receiving context's router. Handles on the same context compare equal
/// however they were obtained.
#[derive(Clone)]
pub struct Context {
    pub(crate) inner: Arc<Inner>,
    pub(crate) id: ContextId,
    pub(crate) name: Arc<str>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("id", &self.id)
            .field("name", &self.name)
            .finish()
    }
}

impl PartialEq for Context {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner) && self.id == other.id
    }
}

impl Eq for Context {}

impl std::hash::Hash for Context {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.inner).hash(state);
        self.id.hash(state);
    }
}

impl serde::Serialize for Context {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (self.id, &*self.name).serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Context {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (id, name): (ContextId, std::borrow::Cow<'de, str>) =
            serde::Deserialize::deserialize(d)?;
        Ok(decoding_router::<D::Error>("spore::Context")?.context_handle(id, &name))
    }
}

impl Context {
    /// The context's ID (the first child of the master is 1).
    pub fn id(&self) -> ContextId {
        self.id
    }

    /// The context's name, e.g. `local.1`. Its process is named `spore:<name>`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process ID of the context on its machine, when this router knows
    /// it (a context it started, or one announced to it from below). For a
    /// context started through another program (sudo), it is that
    /// program's pid; `spore::builtins::facts` reports the context's own.
    pub fn pid(&self) -> Option<u32> {
        self.inner
            .children
            .lock()
            .unwrap()
            .get(&self.id)
            .map(|c| c.pid)
    }

    /// Bytes written to this context's stream so far, handshake included.
    pub fn bytes_written(&self) -> u64 {
        self.inner
            .children
            .lock()
            .unwrap()
            .get(&self.id)
            .map_or(0, |c| c.bytes_written.load(Ordering::Relaxed))
    }

    /// Calls `f` with `args` in this context and waits for its result.
    ///
    /// ```no_run
    /// #[spore::remote]
    /// fn add(a: i32, b: i32) -> i32 { a + b }
    ///
    /// # async fn demo(ctx: spore::Context) -> Result<(), spore::CallError> {
    /// assert_eq!(ctx.call(add, (1, 2)).await?, 3);
    /// # Ok(()) }
    /// ```
    pub async fn call<F: RemoteFunction>(
        &self,
        f: F,
        args: F::Args,
    ) -> Result<F::Output, CallError> {
        self.call_async(f, args).await
    }

    /// Sends the call now and returns a [`PendingCall`] to await later, so
    /// that many calls can be outstanding at once.
    pub fn call_async<F: RemoteFunction>(&self, _f: F, args: F::Args) -> PendingCall<F::Output> {
        self.call_named(F::NAME, &args)
    }

    /// Calls a function by its registered name, for callers that only know
    /// the name at run time. The types must match the function's signature.
    pub fn call_named<A: serde::Serialize, R: DeserializeOwned>(
        &self,
        function: &'static str,
        args: &A,
    ) -> PendingCall<R> {
        self.inner.request(
            self.id,
            self.name.clone(),
            handles::CALL_FUNCTION,
            function,
            encode_call(function, None, args),
            true,
        )
    }

    /// Sends the call without asking for a reply. Errors in the remote
    /// function are logged there (and forwarded to the master's log).
    pub fn call_no_reply<F: RemoteFunction>(&self, _f: F, args: F::Args) -> Result<(), CallError> {
        let pending: PendingCall<()> = self.inner.request(
            self.id,
            self.name.clone(),
            handles::CALL_FUNCTION,
            F::NAME,
            encode_call(F::NAME, None, &args),
            false,
        );
        pending.sent()
    }

    /// [`Context::call`] for programs without async: blocks this thread.
    pub fn call_blocking<F: RemoteFunction>(
        &self,
        f: F,
        args: F::Args,
    ) -> Result<F::Output, CallError> {
        self.call_async(f, args).wait()
    }

    #[cfg(feature = "fault-injection")]
    pub(crate) async fn raw_request(
        &self,
        handle: u32,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, CallError> {
        let reply_handle = self.inner.alloc_handle();
        let (tx, rx) = oneshot::channel();
        self.inner.handles.lock().unwrap().insert(
            reply_handle,
            Sink::Reply {
                context: self.id,
                tx,
            },
        );
        let header = Header::new(self.id, self.inner.my_id, handle).with_reply_to(reply_handle);
        self.inner.route(Frame::new(header, payload));
        match rx.await {
            Ok(Reply::Frame(f)) if f.header.is_dead() => Err(CallError::Undeliverable {
                context: self.name.to_string(),
                function: format!("handle {handle}"),
                reason: f.dead_reason(),
            }),
            Ok(Reply::Frame(f)) => Ok(f.payload.to_vec()),
            Ok(Reply::Lost(detail)) => Err(CallError::Disconnected {
                context: self.name.to_string(),
                detail,
            }),
            Err(_) => Err(CallError::Disconnected {
                context: self.name.to_string(),
                detail: "router shut down".into(),
            }),
        }
    }

    /// Asks the context to shut down and waits until it is gone (its
    /// process reaped, for a direct child). After the grace period the
    /// context ends itself even if user code hangs.
    pub async fn shutdown(&self) {
        let lost = self
            .inner
            .children
            .lock()
            .unwrap()
            .get(&self.id)
            .map(|c| c.lost.subscribe());
        let _ = self.inner.send(Frame::new(
            Header::new(self.id, self.inner.my_id, handles::SHUTDOWN),
            Bytes::new(),
        ));
        if let Some(mut lost) = lost {
            let _ = lost.wait_for(|l| l.is_some()).await;
        }
    }

    /// Resolves when the context is lost, with what was observed.
    pub async fn lost(&self) -> String {
        let lost = self
            .inner
            .children
            .lock()
            .unwrap()
            .get(&self.id)
            .map(|c| c.lost.subscribe());
        match lost {
            Some(mut rx) => match rx.wait_for(|l| l.is_some()).await {
                Ok(v) => v.clone().unwrap_or_default(),
                Err(_) => "router shut down".to_owned(),
            },
            None => "not a direct child".to_owned(),
        }
    }
}

/// A CALL_FUNCTION payload: the request head, then the argument tuple.
pub(crate) fn encode_call<A: serde::Serialize>(
    function: &str,
    chain: Option<u64>,
    args: &A,
) -> Result<Vec<u8>, postcard::Error> {
    let head = postcard::to_stdvec(&CallRequest { function, chain })?;
    crate::call::encode_after(&head, args)
}

/// Configures a [`Router`].
#[derive(Default)]
pub struct RouterBuilder {
    settings: Settings,
    output: Option<OutputHook>,
}

impl RouterBuilder {
    /// Largest message payload accepted or sent, inherited by every child
    /// (default 128 MiB).
    pub fn max_message_size(mut self, bytes: u32) -> Self {
        self.settings.max_message_size = bytes;
        self
    }

    /// How long a connection may take before the child is killed and the
    /// connect fails (default 30 s).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.settings.connect_timeout = d;
        self
    }

    /// How long a context waits for running calls after SHUTDOWN before it
    /// exits anyway (default 5 s).
    pub fn shutdown_grace(mut self, d: Duration) -> Self {
        self.settings.shutdown_grace = d;
        self
    }

    /// Debug mode: remote errors carry backtraces.
    pub fn debug(mut self, on: bool) -> Self {
        self.settings.debug = on;
        self
    }

    /// Unidirectional mode: contexts cannot reach their siblings or
    /// anything in a sibling's subtree, only their ancestors and their own
    /// descendants. Such messages are refused (with a dead reply naming
    /// source, destination and the refusing context) and logged. Every
    /// context of the tree inherits the mode (default off).
    pub fn unidirectional(mut self, on: bool) -> Self {
        self.settings.unidirectional = on;
        self
    }

    /// A parent or child that sends nothing at all for `window` is declared
    /// down, even if its connection stays open: its contexts are lost
    /// (calls fail, processes get `noconnection`) and a child whose parent
    /// fell silent exits. Each end pings the other every quarter window,
    /// so an idle but healthy stream never trips it. `None` turns the
    /// check off. Inherited by every descendant. Default:
    /// [`DEFAULT_HEARTBEAT`] (60 s).
    ///
    /// ```no_run
    /// # fn main() -> std::io::Result<()> {
    /// let router = spore::Router::builder()
    ///     .heartbeat(Some(std::time::Duration::from_secs(10)))
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn heartbeat(mut self, window: Option<Duration>) -> Self {
        self.settings.heartbeat = window.filter(|w| !w.is_zero());
        self
    }

    /// Start children from this executable instead of `/proc/self/exe`. It
    /// must be a spore program of the same build (tests use a fixture binary).
    pub fn image(mut self, path: impl Into<PathBuf>) -> Self {
        self.settings.image = Some(path.into());
        self
    }

    /// Registers the image for contexts on another platform: a Rust target
    /// triple (`aarch64-unknown-linux-musl`) or `<os>-<arch>` as `uname -s`
    /// (lowercased) and `uname -m` print them (`linux-aarch64`, see
    /// [`crate::this_platform`]). It must be a spore program of the same
    /// build, statically linked for remote machines.
    ///
    /// A first stage reports its platform before any image byte is sent;
    /// when it differs from the image's, the image registered for it is
    /// sent instead, or the connect fails with
    /// [`crate::ConnectError::PlatformMismatch`]. Contexts anywhere in the
    /// tree fetch registered images up the tree; each crosses a stream at
    /// most once.
    ///
    /// ```no_run
    /// let router = spore::Router::builder()
    ///     .image_for("aarch64-unknown-linux-musl", "target/aarch64-unknown-linux-musl/release/app")
    ///     .build()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn image_for(mut self, platform: impl AsRef<str>, path: impl Into<PathBuf>) -> Self {
        self.settings
            .images
            .insert(crate::images::platform_key(platform.as_ref()), path.into());
        self
    }

    /// Receives every line children write to stdout or stderr, in order,
    /// on a thread of its own (a slow hook delays only output). Dropping
    /// the router delivers every line received so far before it returns.
    /// Without a hook, lines are emitted as `tracing` events (target
    /// `spore::output`).
    pub fn on_output(mut self, f: impl Fn(OutputLine<'_>) + Send + Sync + 'static) -> Self {
        self.output = Some(Arc::new(f));
        self
    }

    /// Starts the router's I/O thread.
    pub fn build(self) -> std::io::Result<Router> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = rt.handle().clone();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("spore-io".to_owned())
            .spawn(move || {
                rt.block_on(async {
                    let _ = stop_rx.await;
                });
                // Dropping the runtime drops every stream task and closes
                // every child's stdin: they see EOF and exit.
                rt.shutdown_timeout(Duration::from_millis(100));
            })?;
        let identity = Identity {
            my_id: MASTER_ID,
            name: "master".to_owned(),
            parent_ids: Vec::new(),
            parent_stream: None,
        };
        let output = self.output.map(logging::OutputSink::start).transpose()?;
        let inner = Inner::new(identity, self.settings, handle, None, output);
        inner.add_internal(handles::FORWARD_LOG, logging::on_forward_log);
        inner.add_route_handlers();
        inner.add_image_handlers();
        Ok(Router {
            inner,
            io: Some(IoThread {
                stop: stop_tx,
                thread,
            }),
        })
    }
}

/// The master's entry point: starts contexts and owns them.
///
/// Dropping the router closes every child's stream and reaps every child
/// process (they exit on EOF; stragglers are killed).
///
/// ```no_run
/// #[spore::remote]
/// fn hostname() -> String { std::fs::read_to_string("/etc/hostname").unwrap_or_default() }
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     spore::init();
///     let router = spore::Router::new()?;
///     let ctx = router.local().connect_blocking()?;
///     println!("{}", ctx.call_blocking(hostname, ())?);
///     Ok(())
/// }
/// ```
pub struct Router {
    pub(crate) inner: Arc<Inner>,
    /// The I/O thread this router owns; `None` for [`Router::current`].
    io: Option<IoThread>,
}

struct IoThread {
    stop: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Router {
    /// A router with default settings.
    pub fn new() -> std::io::Result<Router> {
        RouterBuilder::default().build()
    }

    /// A router with custom settings.
    pub fn builder() -> RouterBuilder {
        RouterBuilder::default()
    }

    /// In a child context, a handle on that context's own router: code
    /// running there can start contexts of its own (they become its
    /// children, numbered from blocks of IDs the master hands out, and
    /// announced up the tree so the master can reach them) and reach the
    /// contexts it knows. `None` when this process is not a child context.
    /// Dropping it changes nothing; [`Router::shutdown`] on it shuts down
    /// the children of this context, not the context itself.
    ///
    /// ```no_run
    /// #[spore::remote]
    /// async fn start_helper() -> Result<u32, spore::ConnectError> {
    ///     let router = spore::Router::current().expect("runs in a child context");
    ///     let helper = router.local().await?; // a child of this context
    ///     Ok(helper.id())
    /// }
    /// ```
    pub fn current() -> Option<Router> {
        crate::bootstrap::child::inner().map(|inner| Router::handle_on(inner.clone()))
    }

    /// A handle on `inner` that does not own its I/O thread.
    pub(crate) fn handle_on(inner: Arc<Inner>) -> Router {
        Router { inner, io: None }
    }

    /// Prepares a new local context (a child process on this machine).
    /// Await the result, or call [`crate::Connect::connect_blocking`].
    pub fn local(&self) -> crate::Connect<'_> {
        crate::Connect::new(self, crate::bootstrap::Method::Local)
    }

    /// Prepares a context started through `sudo` as another user, on the
    /// machine of the context that starts it (this one, or the one given to
    /// [`crate::Connect::via`]). It goes through the first stage.
    pub fn sudo(&self, sudo: crate::Sudo) -> crate::Connect<'_> {
        crate::Connect::new(self, crate::bootstrap::Method::Sudo(sudo))
    }

    /// Prepares a context on another machine, reached with the system's
    /// OpenSSH client from this context (or from the one given to
    /// [`crate::Connect::via`]). It goes through the first stage.
    pub fn ssh(&self, ssh: crate::Ssh) -> crate::Connect<'_> {
        crate::Connect::new(self, crate::bootstrap::Method::Ssh(ssh))
    }

    /// Prepares a context started through `su` as another user, on the
    /// machine of the context that starts it. It goes through the first
    /// stage.
    pub fn su(&self, su: crate::Su) -> crate::Connect<'_> {
        crate::Connect::new(self, crate::bootstrap::Method::Su(su))
    }

    /// Prepares a context started through `doas` as another user, on the
    /// machine of the context that starts it. It goes through the first
    /// stage.
    pub fn doas(&self, doas: crate::Doas) -> crate::Connect<'_> {
        crate::Connect::new(self, crate::bootstrap::Method::Doas(doas))
    }

    /// Prepares a context inside a container (podman, docker), another
    /// process's namespaces (nsenter) or a chroot, on the machine of the
    /// context that starts it. It goes through the first stage.
    pub fn enter(&self, enter: crate::Enter) -> crate::Connect<'_> {
        crate::Connect::new(self, crate::bootstrap::Method::Enter(enter))
    }

    /// A handle to context `id`, if this router knows it: one it started,
    /// directly or through another, or one announced to it. A lost context
    /// stays known; calls to it then fail at once.
    pub fn context(&self, id: ContextId) -> Option<Context> {
        let name = self.inner.children.lock().unwrap().get(&id)?.name.clone();
        Some(Context {
            inner: self.inner.clone(),
            id,
            name,
        })
    }

    /// The limit on message size this router enforces.
    pub fn max_message_size(&self) -> u32 {
        self.inner.settings.max_message_size
    }

    /// Shuts every child down and waits until all are gone: each gets
    /// SHUTDOWN, then the grace period, then SIGKILL.
    pub async fn shutdown(&self) {
        let inner = self.inner.clone();
        let owner = self.io.is_some();
        let _ = self.inner.rt.spawn(shutdown_all(inner, owner)).await;
    }

    /// [`Router::shutdown`] for programs without async. Do not call it from
    /// inside an async runtime.
    pub fn shutdown_blocking(&self) {
        let (tx, rx) = std::sync::mpsc::channel();
        let inner = self.inner.clone();
        let owner = self.io.is_some();
        self.inner.rt.spawn(async move {
            shutdown_all(inner, owner).await;
            let _ = tx.send(());
        });
        let _ = rx.recv();
    }
}

/// Shuts down every child of `inner`; `owner` (the router owning the I/O
/// thread, not a [`Router::current`] handle) also marks the context as
/// shutting down, so that connects in progress abort.
async fn shutdown_all(inner: Arc<Inner>, owner: bool) {
    if owner {
        inner.begin_shutdown();
    }
    let waits: Vec<watch::Receiver<Option<String>>> = inner
        .children
        .lock()
        .unwrap()
        .values()
        .filter(|c| c.direct && !c.detached)
        .map(|c| c.lost.subscribe())
        .collect();
    inner.shutdown_children();
    let grace = inner.settings.shutdown_grace + Duration::from_millis(500);
    for mut w in waits {
        let _ = tokio::time::timeout(grace, w.wait_for(|l| l.is_some())).await;
    }
    let processes = take_processes(&inner);
    let _ =
        tokio::task::spawn_blocking(move || crate::bootstrap::reap_all(processes, Duration::ZERO))
            .await;
}

/// The processes of the children this context must end (not the detached).
fn take_processes(inner: &Inner) -> Vec<std::process::Child> {
    inner
        .children
        .lock()
        .unwrap()
        .values_mut()
        .filter(|c| !c.detached)
        .filter_map(|c| c.process.take())
        .collect()
}

impl Drop for Router {
    fn drop(&mut self) {
        let Some(io) = self.io.take() else {
            return;
        };
        self.inner.begin_shutdown();
        self.inner.stop_services();
        let _ = io.stop.send(());
        let _ = io.thread.join();
        self.inner.close_all_streams("the router was dropped");
        if let Some(output) = &self.inner.output {
            output.finish();
        }
        // Streams are closed now: children exit on EOF within milliseconds.
        crate::bootstrap::reap_all(take_processes(&self.inner), Duration::from_millis(500));
    }
}

impl IntoFuture for crate::Connect<'_> {
    type Output = Result<Context, ConnectError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        let (rt, connect) = self.into_connect();
        let task = rt.spawn(connect);
        Box::pin(async move {
            task.await
                .unwrap_or_else(|e| Err(ConnectError::Aborted(e.to_string())))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inner(rt: &tokio::runtime::Runtime) -> Arc<Inner> {
        let identity = Identity {
            my_id: 0,
            name: "master".to_owned(),
            parent_ids: Vec::new(),
            parent_stream: None,
        };
        Inner::new(
            identity,
            Settings::default(),
            rt.handle().clone(),
            None,
            None,
        )
    }

    #[test]
    fn a_subtree_that_talks_to_too_many_contexts_hears_of_every_loss() {
        let mut e = Egress::default();
        e.note(7);
        assert_eq!(e.take_lost(&[7, 8]), [7]);
        assert!(e.take_lost(&[7]).is_empty(), "told once");
        for id in 0..EGRESS_CAP as u32 + 1 {
            e.note(id);
        }
        assert!(e.all && e.ids.is_empty(), "the set stops growing");
        assert_eq!(e.take_lost(&[1, 999_999]), [1, 999_999]);
    }

    #[test]
    fn registering_twice_fails_and_reregistering_after_removal_works() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let inner = inner(&rt);
        let noop: fn(&Arc<Inner>, Frame) = |_, _| {};
        inner.register(1000, Sink::Internal(noop)).unwrap();
        let err = inner.register(1000, Sink::Internal(noop)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "handle 1000 is already registered in master"
        );
        assert!(inner.unregister(1000));
        assert!(!inner.unregister(1000));
        inner.register(1000, Sink::Internal(noop)).unwrap();
    }

    #[test]
    fn at_shutdown_every_waiting_handler_gets_a_dead_message() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let inner = inner(&rt);
        let (tx, rx) = oneshot::channel();
        inner
            .register(1001, Sink::Reply { context: 1, tx })
            .unwrap();
        inner.fail_all_handles("master shut down");
        match rx.blocking_recv() {
            Ok(Reply::Lost(reason)) => assert_eq!(reason, "master shut down"),
            _ => panic!("no dead message"),
        }
        assert!(!inner.unregister(1001));
    }

    #[test]
    fn unknown_handles_and_unknown_contexts_get_dead_replies() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let inner = inner(&rt);
        let (tx, rx) = oneshot::channel();
        inner
            .register(1002, Sink::Reply { context: 0, tx })
            .unwrap();
        // To a handle nobody registered, from ourselves, answer to 1002.
        inner.route(Frame::new(
            Header::new(0, 0, 4321).with_reply_to(1002),
            Bytes::new(),
        ));
        match rx.blocking_recv() {
            Ok(Reply::Frame(f)) => assert_eq!(f.dead_reason(), "invalid handle 4321 in master"),
            _ => panic!("no dead reply"),
        }
        let (tx, rx) = oneshot::channel();
        inner
            .register(1003, Sink::Reply { context: 0, tx })
            .unwrap();
        inner.route(Frame::new(
            Header::new(9, 0, 5).with_reply_to(1003),
            Bytes::new(),
        ));
        match rx.blocking_recv() {
            Ok(Reply::Frame(f)) => assert_eq!(f.dead_reason(), "no route to 9, my ID is 0"),
            _ => panic!("no dead reply"),
        }
    }
}
