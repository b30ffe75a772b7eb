//! Processes across contexts: the node as a spore service (handle
//! [`PROCESS_HANDLE`]), the signals on the wire, and what a lost context
//! means for the processes that watched it (`noconnection`).
//!
//! A frame to the service is a postcard [`Wire`] followed, for a message,
//! by the message's own postcard bytes (kept as they are until the
//! receiver asks for that type). Frames between two contexts keep their
//! order, so signals from one process to another do too.

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use spore::ContextId;

use crate::api::{Node, current, noproc_link, receive_match};
use crate::envelope::Envelope;
use crate::node::{self, Local, NodeHandle, Proc, SpawnError, SpawnOptions, Watched};
use crate::registry::ProcessFunction;
use crate::types::{Message, Pid, Reason, Ref, type_tag};

/// The process layer's well-known service handle.
pub const PROCESS_HANDLE: u32 = 200;

/// A signal between processes of two contexts.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Wire {
    /// A message; its bytes follow the header in the frame.
    Msg {
        from: Pid,
        to: Pid,
        tag: u64,
    },
    /// A message to a registered name; dropped if nothing has that name.
    MsgNamed {
        from: Pid,
        name: String,
        tag: u64,
    },
    /// A message to an alias of `to`; dropped unless the alias is active.
    MsgAlias {
        from: Pid,
        to: Pid,
        alias: Ref,
        tag: u64,
    },
    /// `from` linked itself to `to`; `to`'s node answers with `LinkReply`.
    Link {
        from: Pid,
        to: Pid,
    },
    /// The answer to `Link`: whether `of` was alive (and is now linked).
    LinkReply {
        to: Pid,
        of: Pid,
        ok: bool,
    },
    Unlink {
        from: Pid,
        to: Pid,
    },
    Exit {
        from: Pid,
        to: Pid,
        reason: Reason,
        link: bool,
    },
    Monitor {
        from: Pid,
        to: Pid,
        mref: Ref,
    },
    Demonitor {
        from: Pid,
        to: Pid,
        mref: Ref,
    },
    Down {
        to: Pid,
        mref: Ref,
        pid: Pid,
        reason: Reason,
    },
    /// Spawn registered process function `function` here, set up as
    /// `opts` asks; answered with `Spawned` before the process first runs.
    Spawn {
        from: Pid,
        req: Ref,
        function: String,
        #[serde(with = "serde_bytes")]
        args: Vec<u8>,
        opts: WireSpawnOptions,
    },
    /// The answer to `Spawn`, echoing the link and monitor it set up.
    Spawned {
        to: Pid,
        req: Ref,
        result: Result<Pid, WireSpawnError>,
        link: bool,
        monitor: Option<Ref>,
    },
    /// `from` monitors the process registered as `name` here (OTP's
    /// monitor of `{Name, Node}`): the name is resolved on arrival, and
    /// then it is a `Monitor` of that process; nothing has the name: a
    /// `Down` `noproc` at once (its pid is serial 0 of this context).
    MonitorName {
        from: Pid,
        name: String,
        mref: Ref,
    },
    /// Removes monitor `mref` of `from` from the process registered as
    /// `name` here.
    DemonitorName {
        from: Pid,
        name: String,
        mref: Ref,
    },
    /// Which process is registered as `name` here? Answered with
    /// `WhereIsReply`.
    WhereIs {
        from: Pid,
        req: Ref,
        name: String,
    },
    /// The answer to `WhereIs`.
    WhereIsReply {
        to: Pid,
        req: Ref,
        pid: Option<Pid>,
    },
}

/// [`SpawnOptions`] as a `Spawn` carries them; the monitor's reference is
/// made by the caller.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WireSpawnOptions {
    link: bool,
    monitor: Option<Ref>,
    name: Option<String>,
    trap_exit: bool,
    mailbox_bound: Option<u64>,
}

/// Why a `Spawn` failed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum WireSpawnError {
    NameTaken { name: String, owner: Pid },
    Failed(String),
}

impl Wire {
    /// The process this signal claims to come from, which must live in
    /// the context that sent the frame. (`Spawned` and `WhereIsReply`
    /// claim none: each is taken only as the answer its addressee waits
    /// for from that context.)
    fn sender(&self) -> Option<Pid> {
        Some(match self {
            Wire::Msg { from, .. }
            | Wire::MsgNamed { from, .. }
            | Wire::MsgAlias { from, .. }
            | Wire::Link { from, .. }
            | Wire::Unlink { from, .. }
            | Wire::Exit { from, .. }
            | Wire::Monitor { from, .. }
            | Wire::Demonitor { from, .. }
            | Wire::Spawn { from, .. }
            | Wire::MonitorName { from, .. }
            | Wire::DemonitorName { from, .. }
            | Wire::WhereIs { from, .. } => *from,
            Wire::LinkReply { of, .. } => *of,
            Wire::Down { pid, .. } => *pid,
            Wire::Spawned { .. } | Wire::WhereIsReply { .. } => return None,
        })
    }
}

/// The node as the router's service.
pub(crate) struct NodeService {
    handle: Arc<NodeHandle>,
}

impl NodeService {
    pub(crate) fn node(&self) -> Node {
        Node::from_handle(self.handle.clone())
    }
}

impl spore::Service for NodeService {
    const HANDLE: u32 = PROCESS_HANDLE;
    const NAME: &'static str = "spore-process";

    fn start(router: spore::Router) -> Self {
        let context = router.my_id();
        NodeService {
            handle: node::start(context, Some(router)),
        }
    }

    fn deliver(&self, from: ContextId, payload: Bytes) {
        self.handle.shared.post(Box::new(move |local: &Rc<Local>| {
            on_frame(local, from, payload)
        }));
    }

    fn contexts_lost(&self, lost: &[ContextId], detail: &str) {
        let lost = lost.to_vec();
        let detail = detail.to_owned();
        self.handle.shared.post(Box::new(move |local: &Rc<Local>| {
            contexts_lost(local, &lost, &detail)
        }));
    }

    fn context_added(&self, id: ContextId, name: &str) {
        let name = name.to_owned();
        self.handle.shared.post(Box::new(move |local: &Rc<Local>| {
            crate::contexts::added(local, id, &name)
        }));
    }

    fn stop(&self) {
        self.handle.shared.stop();
    }
}

spore::service!(NodeService);

/// Sends a signal (and a message's bytes) to `to`'s context.
fn post(local: &Rc<Local>, to: ContextId, wire: &Wire, body: Option<&[u8]>) {
    let Some(router) = &local.shared.router else {
        return undeliverable(local, to, wire, "this process node is in no tree");
    };
    if let Some(detail) = router.unreachable(to) {
        return undeliverable(
            local,
            to,
            wire,
            &format!("context {to} is unreachable: {detail}"),
        );
    }
    let mut payload = match postcard::to_stdvec(wire) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("a process signal did not encode: {e}");
            return;
        }
    };
    if let Some(body) = body {
        payload.extend_from_slice(body);
    }
    if let Err(e) = router.send_to_service::<NodeService>(to, payload) {
        tracing::warn!("a process signal to context {to} was not sent: {e}");
    }
}

/// A message's type tag and postcard bytes; `None` (logged, naming the
/// type and `to`) if it does not encode.
fn encode<M: Message>(msg: &M, to: &dyn std::fmt::Display) -> Option<(u64, Vec<u8>)> {
    match postcard::to_stdvec(msg) {
        Ok(body) => Some((type_tag::<M>(), body)),
        Err(e) => {
            tracing::error!(
                "a {} for {to} did not encode and was not sent: {e}",
                std::any::type_name::<M>()
            );
            None
        }
    }
}

/// Sends a message to a process in another context (to an alias of it,
/// if `alias` is given).
pub(crate) fn send<M: Message>(local: &Rc<Local>, from: Pid, to: Pid, alias: Option<Ref>, msg: M) {
    let Some((tag, body)) = encode(&msg, &to) else {
        return;
    };
    let wire = match alias {
        None => Wire::Msg { from, to, tag },
        Some(alias) => Wire::MsgAlias {
            from,
            to,
            alias,
            tag,
        },
    };
    post(local, to.context, &wire, Some(&body));
}

pub(crate) fn exit_signal(local: &Rc<Local>, from: Pid, to: Pid, reason: Reason, link: bool) {
    post(
        local,
        to.context,
        &Wire::Exit {
            from,
            to,
            reason,
            link,
        },
        None,
    );
}

pub(crate) fn unlink(local: &Rc<Local>, from: Pid, to: Pid) {
    post(local, to.context, &Wire::Unlink { from, to }, None);
}

pub(crate) fn monitor(local: &Rc<Local>, from: Pid, to: Pid, mref: Ref) {
    post(local, to.context, &Wire::Monitor { from, to, mref }, None);
}

pub(crate) fn demonitor(local: &Rc<Local>, from: Pid, to: Pid, mref: Ref) {
    post(local, to.context, &Wire::Demonitor { from, to, mref }, None);
}

/// Monitors the process registered as `name` in context `ctx` (not this
/// one): the name is resolved there when the monitor arrives (OTP's
/// monitor of `{Name, Node}`). The DOWN says `noproc` if nothing had the
/// name, `noconnection` if the context is or becomes unreachable.
pub(crate) fn monitor_name(ctx: ContextId, name: &str) -> Ref {
    let (local, me) = current("call");
    let mref = local.new_ref();
    me.st
        .borrow_mut()
        .ext()
        .monitors
        .insert(mref, Watched::Name(ctx, name.into()));
    let wire = Wire::MonitorName {
        from: me.pid,
        name: name.to_owned(),
        mref,
    };
    post(&local, ctx, &wire, None);
    mref
}

pub(crate) fn demonitor_name(
    local: &Rc<Local>,
    from: Pid,
    ctx: ContextId,
    name: Box<str>,
    mref: Ref,
) {
    let wire = Wire::DemonitorName {
        from,
        name: name.into(),
        mref,
    };
    post(local, ctx, &wire, None);
}

/// Sends `msg` to the process registered as `name` in context `ctx` (this
/// one included): Erlang's `{Name, Node} ! Msg`. Never fails and never
/// waits. If nothing has that name there, or the context is lost, the
/// message is dropped silently, as Erlang drops it (ERTS does so even for
/// `{Name, node()}`); unlike [`crate::send_named`], where an unknown name
/// is an error as Erlang's `Name ! Msg` is. Messages from one process to
/// one name keep their order, and keep it with the sender's other signals
/// to that context.
///
/// `ctx` is a context's ID: [`spore::Context::id`], or the context of a
/// [`Pid`] ([`Pid::context`]).
///
/// ```
/// use spore_process::*;
///
/// Node::new().run_blocking(async {
///     let inbox = spawn_opt(
///         async {
///             let n: u32 = receive().await;
///             assert_eq!(n, 7);
///         },
///         SpawnOptions::new().name("inbox"),
///     )
///     .unwrap()
///     .0;
///     let here = self_pid().context();
///     send_named_in(here, "nobody", 1u32); // dropped, no error
///     send_named_in(here, "inbox", 7u32);
///     let mref = monitor(inbox);
///     let down = receive_match(|m| m.take_if::<Down>(|d| d.mref == mref)).await;
///     assert_eq!(down.reason, Reason::Normal);
/// })
/// .unwrap();
/// ```
pub fn send_named_in<M: Message>(ctx: ContextId, name: &str, msg: M) {
    let (local, me) = current("send_named_in");
    if ctx == local.context() {
        if let Some(p) = local.registered(name) {
            local.deliver(&p, Envelope::local(msg));
        }
        return;
    }
    let Some((tag, body)) = encode(&msg, &format_args!("{name:?} in context {ctx}")) else {
        return;
    };
    let wire = Wire::MsgNamed {
        from: me.pid,
        name: name.to_owned(),
        tag,
    };
    post(&local, ctx, &wire, Some(&body));
}

/// The process registered as `name` in context `ctx` (this one included),
/// asked there: a request and its answer on the wire (Erlang's
/// `rpc:call(Node, erlang, whereis, [Name])`). `None` if nothing has that
/// name there, and also if the context is lost or unreachable before it
/// answers. The answer may be out of date when it arrives, as any
/// `whereis` answer may: to talk to a named process, send to the name
/// ([`send_named_in`]) or call it ([`crate::call::Dest::At`]).
pub async fn whereis_in(ctx: ContextId, name: &str) -> Option<Pid> {
    {
        let (local, _) = current("whereis_in");
        if ctx == local.context() {
            return local.registered(name).map(|p| p.pid);
        }
    }
    let name = name.to_owned();
    ask(ctx, "whereis_in", move |from, req| Wire::WhereIs {
        from,
        req,
        name,
    })
    .await
    .unwrap_or(None)
}

/// The answer to a request this process sent another context ([`ask`]).
#[derive(Debug, Serialize, Deserialize)]
struct Answer<T> {
    req: Ref,
    value: T,
}

/// A request whose context was lost, or unreachable, before it answered.
#[derive(Debug, Serialize, Deserialize)]
struct Unanswered {
    req: Ref,
    detail: String,
}

/// Sends the request `wire(me, req)` to context `to` and waits for its
/// [`Answer`], or for why none will come (the context is or becomes
/// unreachable). `what` names the API for its panic outside a process.
async fn ask<T: Message>(
    to: ContextId,
    what: &str,
    wire: impl FnOnce(Pid, Ref) -> Wire,
) -> Result<T, String> {
    let req = {
        let (local, me) = current(what);
        let req = local.new_ref();
        me.st.borrow_mut().ext().asking.insert(req, to);
        post(&local, to, &wire(me.pid, req), None);
        req
    };
    receive_match(|e: &mut Envelope| {
        if let Some(a) = e.take_if::<Answer<T>>(|a| a.req == req) {
            return Some(Ok(a.value));
        }
        e.take_if::<Unanswered>(|u| u.req == req)
            .map(|u| Err(u.detail))
    })
    .await
}

/// The process `to` if it waits for the answer to request `req` from
/// context `src`; it waits no more (one answer per request).
fn asker(local: &Rc<Local>, src: ContextId, to: Pid, req: Ref) -> Option<Rc<Proc>> {
    let p = local.lookup(to)?;
    let waits =
        p.st.borrow_mut()
            .ext_mut()
            .is_some_and(|e| e.asking.get(&req) == Some(&src) && e.asking.remove(&req).is_some());
    waits.then_some(p)
}

/// Request `req` of `to`, sent to context `src`, will not be answered.
fn unanswered(local: &Rc<Local>, src: ContextId, to: Pid, req: Ref, detail: String) {
    if let Some(p) = asker(local, src, to, req) {
        local.deliver(&p, Envelope::local(Unanswered { req, detail }));
    }
}

pub(crate) fn down(local: &Rc<Local>, to: Pid, mref: Ref, pid: Pid, reason: Reason) {
    post(
        local,
        to.context,
        &Wire::Down {
            to,
            mref,
            pid,
            reason,
        },
        None,
    );
}

/// The answer to a link, as the linking process waits for it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LinkAnswer {
    of: Pid,
    outcome: Result<(), Reason>,
}

/// Links the calling process to `pid` in another context: the link is in
/// place on this side first, then the other side answers whether `pid`
/// was alive.
pub(crate) async fn link(pid: Pid) -> Result<(), Reason> {
    {
        let local = node::local().expect("called in a process");
        let me = local.current().expect("called in a process");
        {
            let mut st = me.st.borrow_mut();
            let ext = st.ext();
            if ext.links.contains(&pid) {
                return Ok(());
            }
            ext.links.insert(pid);
            ext.awaiting_link = Some(pid);
        }
        post(
            &local,
            pid.context,
            &Wire::Link {
                from: me.pid,
                to: pid,
            },
            None,
        );
    }
    let answer =
        crate::api::receive_match(|e: &mut Envelope| e.take_if::<LinkAnswer>(|a| a.of == pid))
            .await;
    let local = node::local().expect("called in a process");
    let me = local.current().expect("called in a process");
    me.st.borrow_mut().ext().awaiting_link = None;
    match answer.outcome {
        Ok(()) => Ok(()),
        Err(reason) => {
            let had = me.st.borrow_mut().ext().links.remove(&pid);
            if !had {
                // The link already ended (an exit signal came first).
                return Ok(());
            }
            if reason == Reason::Noproc {
                noproc_link(&me, pid)
            } else {
                Err(reason)
            }
        }
    }
}

/// Hands a link answer to the process waiting for it.
fn answer_link(local: &Rc<Local>, to: Pid, of: Pid, outcome: Result<(), Reason>) {
    if let Some(p) = local.lookup(to) {
        let waiting =
            p.st.borrow()
                .ext_ref()
                .is_some_and(|e| e.awaiting_link == Some(of));
        if waiting {
            local.deliver(&p, Envelope::local(LinkAnswer { of, outcome }));
        }
    }
}

/// A frame for the process service arrived from context `src`.
fn on_frame(local: &Rc<Local>, src: ContextId, payload: Bytes) {
    let (wire, rest) = match postcard::take_from_bytes::<Wire>(&payload) {
        Ok((w, rest)) => (w, payload.len() - rest.len()),
        Err(e) => {
            tracing::warn!("an undecodable process signal from context {src} was dropped: {e}");
            return;
        }
    };
    if let Some(claimed) = wire.sender().filter(|p| p.context != src) {
        tracing::warn!(
            "a process signal from context {src} claiming to be from {claimed} was dropped: {wire:?}"
        );
        return;
    }
    // A call to the global name server starts it (monitor, then request).
    if let Wire::Monitor { to, .. } | Wire::Msg { to, .. } = &wire {
        crate::global::ensure_server(local, *to);
    }
    match wire {
        Wire::Msg { to, tag, .. } => {
            if let Some(p) = local.lookup(to) {
                local.deliver(&p, Envelope::remote(tag, payload.slice(rest..)));
            }
        }
        Wire::MsgAlias { to, alias, tag, .. } => {
            if let Some(p) = local.lookup(to) {
                local.deliver_to_alias(&p, alias, Envelope::remote(tag, payload.slice(rest..)));
            }
        }
        Wire::MsgNamed { name, tag, .. } => match local.registered(&name) {
            Some(p) => local.deliver(&p, Envelope::remote(tag, payload.slice(rest..))),
            None => tracing::debug!(
                "a message from context {src} to the unregistered name {name:?} was dropped"
            ),
        },
        Wire::Link { from, to } => {
            let ok = match local.lookup(to) {
                Some(p) if p.st.borrow().alive => {
                    p.st.borrow_mut().ext().links.insert(from);
                    true
                }
                _ => false,
            };
            post(
                local,
                src,
                &Wire::LinkReply {
                    to: from,
                    of: to,
                    ok,
                },
                None,
            );
        }
        Wire::LinkReply { to, of, ok } => {
            let outcome = if ok { Ok(()) } else { Err(Reason::Noproc) };
            answer_link(local, to, of, outcome);
        }
        Wire::Unlink { from, to } => {
            if let Some(p) = local.lookup(to) {
                if let Some(e) = p.st.borrow_mut().ext_mut() {
                    e.links.remove(&from);
                }
            }
        }
        Wire::Exit {
            from,
            to,
            reason,
            link,
        } => {
            if let Some(p) = local.lookup(to) {
                local.exit_signal(&p, from, reason, link);
            }
        }
        Wire::Monitor { from, to, mref } => match local.lookup(to) {
            Some(p) => {
                p.st.borrow_mut().ext().monitored_by.insert(mref, from);
            }
            None => down(local, from, mref, to, Reason::Noproc),
        },
        Wire::Demonitor { to, mref, .. } => {
            if let Some(p) = local.lookup(to) {
                unmonitored(&p, mref);
            }
        }
        Wire::Down {
            to,
            mref,
            pid,
            reason,
        } => local.down(to, mref, pid, reason),
        Wire::Spawn {
            from,
            req,
            function,
            args,
            opts,
        } => {
            let (link, monitor) = (opts.link, opts.monitor);
            let result = spawn_here(local, src, from, &function, &args, opts);
            let answer = Wire::Spawned {
                to: from,
                req,
                result,
                link,
                monitor,
            };
            post(local, src, &answer, None);
        }
        Wire::Spawned {
            to,
            req,
            result,
            link,
            monitor,
        } => {
            let Some(p) = asker(local, src, to, req) else {
                return;
            };
            if let Ok(child) = &result {
                // Before anything the child sends can arrive: its exit
                // signal or DOWN finds the link or monitor in place.
                let mut st = p.st.borrow_mut();
                if link {
                    st.ext().links.insert(*child);
                }
                if let Some(mref) = monitor {
                    st.ext().monitors.insert(mref, Watched::Pid(*child));
                }
            }
            local.deliver(&p, Envelope::local(Answer { req, value: result }));
        }
        Wire::MonitorName { from, name, mref } => match local.registered(&name) {
            Some(p) => {
                p.st.borrow_mut().ext().monitored_by.insert(mref, from);
            }
            None => {
                let nobody = Pid::none(local.context());
                down(local, from, mref, nobody, Reason::Noproc)
            }
        },
        Wire::DemonitorName { name, mref, .. } => {
            // If the name moved on to another process since, that one
            // holds no such monitor and nothing is removed; the process
            // that unregistered it keeps the monitor until it ends, and
            // the caller, which no longer holds it, drops that DOWN.
            if let Some(p) = local.registered(&name) {
                unmonitored(&p, mref);
            }
        }
        Wire::WhereIs { from, req, name } => {
            let pid = local.registered(&name).map(|p| p.pid);
            post(local, src, &Wire::WhereIsReply { to: from, req, pid }, None);
        }
        Wire::WhereIsReply { to, req, pid } => {
            if let Some(p) = asker(local, src, to, req) {
                local.deliver(&p, Envelope::local(Answer { req, value: pid }));
            }
        }
    }
}

/// Removes monitor `mref` from those on `p`.
fn unmonitored(p: &Proc, mref: Ref) {
    if let Some(e) = p.st.borrow_mut().ext_mut() {
        e.monitored_by.remove(&mref);
    }
}

/// Spawns process function `function` here for `from` (in context `src`),
/// linked to or monitored by it as `opts` asks, before it first runs.
fn spawn_here(
    local: &Rc<Local>,
    src: ContextId,
    from: Pid,
    function: &str,
    args: &[u8],
    opts: WireSpawnOptions,
) -> Result<Pid, WireSpawnError> {
    let here = local.context();
    let router = local.shared.router.as_ref();
    let allowed = src == here || router.is_some_and(|r| r.ancestors().contains(&src));
    if !allowed {
        tracing::warn!("context {src} may not spawn {function} in context {here}: refused");
        return Err(WireSpawnError::Failed(format!(
            "context {src} may not spawn processes in context {here}: only its ancestors may (as only they may call its functions)"
        )));
    }
    let entry = crate::registry::lookup(function).ok_or_else(|| {
        WireSpawnError::Failed(format!(
            "no process function {function} is registered in context {here} (every context must run the same build)"
        ))
    })?;
    let fut = (entry.start)(args).map_err(WireSpawnError::Failed)?;
    let spawn_opts = SpawnOptions {
        name: opts.name,
        trap_exit: opts.trap_exit,
        mailbox_bound: opts.mailbox_bound.map(|b| b as usize),
        ..SpawnOptions::default()
    };
    let pid = local.shared.next_pid();
    local
        .spawn(pid, fut, &spawn_opts, None)
        .map_err(|e| match e {
            SpawnError::NameTaken { name, owner } => WireSpawnError::NameTaken { name, owner },
            other => WireSpawnError::Failed(other.to_string()),
        })?;
    if let Some(p) = local.lookup(pid) {
        let mut st = p.st.borrow_mut();
        if opts.link {
            st.ext().links.insert(from);
        }
        if let Some(mref) = opts.monitor {
            st.ext().monitored_by.insert(mref, from);
        }
    }
    Ok(pid)
}

/// Spawns process function `f` with `args` in context `ctx` (this one
/// included), set up as `opts` asks: linked to or monitored by the caller
/// before it first runs, even in another context (a child that dies at
/// once is still reported). Only a context's ancestors may spawn in it, as
/// only they may call its functions.
pub async fn spawn_opt_in<F: ProcessFunction>(
    ctx: &spore::Context,
    _f: F,
    args: F::Args,
    opts: SpawnOptions,
) -> Result<(Pid, Option<Ref>), SpawnError> {
    let failed = |detail: String| SpawnError::Remote {
        context: ctx.name().to_owned(),
        detail,
    };
    let args = postcard::to_stdvec(&args).map_err(|e| failed(format!("arguments: {e}")))?;
    let target = ctx.id();
    let mref = {
        let (local, me) = current("spawn_in");
        if target == local.context() {
            let entry = crate::registry::lookup(F::NAME)
                .ok_or_else(|| failed(format!("no process function {}", F::NAME)))?;
            let fut = (entry.start)(&args).map_err(failed)?;
            let pid = local.shared.next_pid();
            let mref = local.spawn(pid, fut, &opts, Some(&me))?;
            return Ok((pid, mref));
        }
        opts.monitor.then(|| local.new_ref())
    };
    let wire_opts = WireSpawnOptions {
        link: opts.link,
        monitor: mref,
        name: opts.name.clone(),
        trap_exit: opts.trap_exit,
        mailbox_bound: opts.mailbox_bound.map(|b| b as u64),
    };
    let answer = ask(target, "spawn_in", |from, req| Wire::Spawn {
        from,
        req,
        function: F::NAME.to_owned(),
        args,
        opts: wire_opts,
    })
    .await;
    match answer {
        Ok(Ok(pid)) => Ok((pid, mref)),
        Ok(Err(WireSpawnError::NameTaken { name, owner })) => {
            Err(SpawnError::NameTaken { name, owner })
        }
        Ok(Err(WireSpawnError::Failed(detail))) | Err(detail) => Err(failed(detail)),
    }
}

/// [`spawn_opt_in`] with default options.
pub async fn spawn_in<F: ProcessFunction>(
    ctx: &spore::Context,
    f: F,
    args: F::Args,
) -> Result<Pid, SpawnError> {
    Ok(spawn_opt_in(ctx, f, args, SpawnOptions::new()).await?.0)
}

/// [`spawn_opt_in`], linked to the caller.
pub async fn spawn_link_in<F: ProcessFunction>(
    ctx: &spore::Context,
    f: F,
    args: F::Args,
) -> Result<Pid, SpawnError> {
    Ok(spawn_opt_in(ctx, f, args, SpawnOptions::new().link())
        .await?
        .0)
}

/// [`spawn_opt_in`], monitored by the caller.
pub async fn spawn_monitor_in<F: ProcessFunction>(
    ctx: &spore::Context,
    f: F,
    args: F::Args,
) -> Result<(Pid, Ref), SpawnError> {
    let (pid, mref) = spawn_opt_in(ctx, f, args, SpawnOptions::new().monitor()).await?;
    Ok((pid, mref.expect("a monitor was asked for")))
}

/// A signal that cannot reach its context `ctx`: what the sender would
/// have been told had it arrived, told now (`noconnection`).
fn undeliverable(local: &Rc<Local>, ctx: ContextId, wire: &Wire, detail: &str) {
    match wire {
        Wire::Monitor { from, to, mref } => local.down(*from, *mref, *to, Reason::Noconnection),
        Wire::MonitorName { from, mref, .. } => {
            local.down(*from, *mref, Pid::none(ctx), Reason::Noconnection)
        }
        Wire::Link { from, to } => answer_link(local, *from, *to, Err(Reason::Noconnection)),
        Wire::Spawn { from, req, .. } | Wire::WhereIs { from, req, .. } => {
            unanswered(local, ctx, *from, *req, detail.to_owned())
        }
        _ => tracing::debug!(
            "a process signal for an unreachable context was dropped ({detail}): {wire:?}"
        ),
    }
}

/// Contexts were lost: every link to a process there gets an exit signal
/// `noconnection`, every monitor of one (or of a name there) a DOWN
/// `noconnection`, a link waiting for its answer fails with it, and a
/// request waiting for its answer learns that none will come.
fn contexts_lost(local: &Rc<Local>, lost: &[ContextId], detail: &str) {
    tracing::debug!(
        "process node of context {}: contexts {lost:?} lost ({detail})",
        local.context()
    );
    let gone = |p: &Pid| lost.contains(&p.context);
    let procs: Vec<_> = local.procs.borrow().values().cloned().collect();
    for p in procs {
        let (links, monitors, awaiting, asking) = {
            let mut st = p.st.borrow_mut();
            let Some(ext) = st.ext_mut() else { continue };
            ext.monitored_by.retain(|_, w| !gone(w));
            let links: Vec<Pid> = ext.links.iter().copied().filter(gone).collect();
            let monitors: Vec<(Ref, Pid)> = ext
                .monitors
                .iter()
                .filter(|(_, w)| lost.contains(&w.context()))
                .map(|(r, w)| (*r, w.pid()))
                .collect();
            let asking: Vec<(Ref, ContextId)> = ext
                .asking
                .iter()
                .filter(|(_, ctx)| lost.contains(ctx))
                .map(|(r, ctx)| (*r, *ctx))
                .collect();
            (links, monitors, ext.awaiting_link.filter(gone), asking)
        };
        if let Some(of) = awaiting {
            answer_link(local, p.pid, of, Err(Reason::Noconnection));
        }
        for (req, ctx) in asking {
            let why = format!("context {ctx} was lost: {detail}");
            unanswered(local, ctx, p.pid, req, why);
        }
        for (mref, target) in monitors {
            local.down(p.pid, mref, target, Reason::Noconnection);
        }
        for linked in links {
            local.exit_signal(&p, linked, Reason::Noconnection, true);
        }
    }
    crate::contexts::lost(local, lost, detail);
}
