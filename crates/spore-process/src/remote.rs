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
use crate::node::{self, Local, NodeHandle, SpawnError, SpawnOptions};
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
    /// the context that sent the frame. (`Spawned` claims none: it is
    /// taken only as the answer its addressee waits for from that context.)
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
            | Wire::Spawn { from, .. } => *from,
            Wire::LinkReply { of, .. } => *of,
            Wire::Down { pid, .. } => *pid,
            Wire::Spawned { .. } => return None,
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
        return undeliverable(local, wire, "this process node is in no tree");
    };
    if let Some(detail) = router.unreachable(to) {
        return undeliverable(
            local,
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

/// Sends a message to a process in another context (to an alias of it,
/// if `alias` is given).
pub(crate) fn send<M: Message>(local: &Rc<Local>, from: Pid, to: Pid, alias: Option<Ref>, msg: M) {
    let body = match postcard::to_stdvec(&msg) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(
                "a {} for {to} did not encode and was not sent: {e}",
                std::any::type_name::<M>()
            );
            return;
        }
    };
    let tag = type_tag::<M>();
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
        Wire::MsgNamed { name, tag, .. } => {
            let to = local.names.borrow().get(name.as_str()).copied();
            match to.and_then(|to| local.lookup(to)) {
                Some(p) => local.deliver(&p, Envelope::remote(tag, payload.slice(rest..))),
                None => tracing::debug!(
                    "a message from context {src} to the unregistered name {name:?} was dropped"
                ),
            }
        }
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
                if let Some(e) = p.st.borrow_mut().ext_mut() {
                    e.monitored_by.remove(&mref);
                }
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
            let Some(p) = local.lookup(to) else { return };
            let waiting =
                p.st.borrow()
                    .ext_ref()
                    .is_some_and(|e| e.awaiting_spawn == Some((req, src)));
            if !waiting {
                return;
            }
            if let Ok(child) = &result {
                // Before anything the child sends can arrive: its exit
                // signal or DOWN finds the link or monitor in place.
                let mut st = p.st.borrow_mut();
                if link {
                    st.ext().links.insert(*child);
                }
                if let Some(mref) = monitor {
                    st.ext().monitors.insert(mref, *child);
                }
            }
            local.deliver(&p, Envelope::local(SpawnAnswer { req, result }));
        }
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

/// The answer to a spawn in another context, as the spawning process
/// waits for it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SpawnAnswer {
    req: Ref,
    result: Result<Pid, WireSpawnError>,
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
    let (req, mref) = {
        let (local, me) = current("spawn_in");
        if target == local.context() {
            let entry = crate::registry::lookup(F::NAME)
                .ok_or_else(|| failed(format!("no process function {}", F::NAME)))?;
            let fut = (entry.start)(&args).map_err(failed)?;
            let pid = local.shared.next_pid();
            let mref = local.spawn(pid, fut, &opts, Some(&me))?;
            return Ok((pid, mref));
        }
        let req = local.new_ref();
        let mref = opts.monitor.then(|| local.new_ref());
        me.st.borrow_mut().ext().awaiting_spawn = Some((req, target));
        let wire = Wire::Spawn {
            from: me.pid,
            req,
            function: F::NAME.to_owned(),
            args,
            opts: WireSpawnOptions {
                link: opts.link,
                monitor: mref,
                name: opts.name.clone(),
                trap_exit: opts.trap_exit,
                mailbox_bound: opts.mailbox_bound.map(|b| b as u64),
            },
        };
        post(&local, target, &wire, None);
        (req, mref)
    };
    let answer = receive_match(|e: &mut Envelope| e.take_if::<SpawnAnswer>(|a| a.req == req)).await;
    let (_, me) = current("spawn_in");
    me.st.borrow_mut().ext().awaiting_spawn = None;
    match answer.result {
        Ok(pid) => Ok((pid, mref)),
        Err(WireSpawnError::NameTaken { name, owner }) => {
            Err(SpawnError::NameTaken { name, owner })
        }
        Err(WireSpawnError::Failed(detail)) => Err(failed(detail)),
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

/// A signal that cannot reach its context: what the sender would have
/// been told had it arrived, told now (`noconnection`).
fn undeliverable(local: &Rc<Local>, wire: &Wire, detail: &str) {
    match wire {
        Wire::Monitor { from, to, mref } => local.down(*from, *mref, *to, Reason::Noconnection),
        Wire::Link { from, to } => answer_link(local, *from, *to, Err(Reason::Noconnection)),
        Wire::Spawn { from, req, .. } => {
            if let Some(p) = local.lookup(*from) {
                local.deliver(
                    &p,
                    Envelope::local(SpawnAnswer {
                        req: *req,
                        result: Err(WireSpawnError::Failed(detail.to_owned())),
                    }),
                );
            }
        }
        _ => tracing::debug!(
            "a process signal for an unreachable context was dropped ({detail}): {wire:?}"
        ),
    }
}

/// Contexts were lost: every link to a process there gets an exit signal
/// `noconnection`, every monitor of one a DOWN `noconnection`, and a link
/// waiting for its answer fails with it.
fn contexts_lost(local: &Rc<Local>, lost: &[ContextId], detail: &str) {
    tracing::debug!(
        "process node of context {}: contexts {lost:?} lost ({detail})",
        local.context()
    );
    let gone = |p: &Pid| lost.contains(&p.context);
    let procs: Vec<_> = local.procs.borrow().values().cloned().collect();
    for p in procs {
        let (links, monitors, awaiting) = {
            let mut st = p.st.borrow_mut();
            let Some(ext) = st.ext_mut() else { continue };
            ext.monitored_by.retain(|_, w| !gone(w));
            let links: Vec<Pid> = ext.links.iter().copied().filter(gone).collect();
            let monitors: Vec<(Ref, Pid)> = ext
                .monitors
                .iter()
                .filter(|(_, t)| gone(t))
                .map(|(r, t)| (*r, *t))
                .collect();
            (links, monitors, ext.awaiting_link.filter(gone))
        };
        if let Some(of) = awaiting {
            answer_link(local, p.pid, of, Err(Reason::Noconnection));
        }
        let spawn =
            p.st.borrow()
                .ext_ref()
                .and_then(|e| e.awaiting_spawn)
                .filter(|(_, ctx)| lost.contains(ctx));
        if let Some((req, ctx)) = spawn {
            let result = Err(WireSpawnError::Failed(format!(
                "context {ctx} was lost: {detail}"
            )));
            local.deliver(&p, Envelope::local(SpawnAnswer { req, result }));
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
