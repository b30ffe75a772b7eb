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

use crate::api::{Node, noproc_link};
use crate::envelope::Envelope;
use crate::node::{self, Local, NodeHandle};
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
}

impl Wire {
    /// The process this signal claims to come from, which must live in
    /// the context that sent the frame.
    fn sender(&self) -> Pid {
        match self {
            Wire::Msg { from, .. }
            | Wire::MsgNamed { from, .. }
            | Wire::MsgAlias { from, .. }
            | Wire::Link { from, .. }
            | Wire::Unlink { from, .. }
            | Wire::Exit { from, .. }
            | Wire::Monitor { from, .. }
            | Wire::Demonitor { from, .. } => *from,
            Wire::LinkReply { of, .. } => *of,
            Wire::Down { pid, .. } => *pid,
        }
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

    fn stop(&self) {
        self.handle.shared.stop();
    }
}

spore::service!(NodeService);

/// Sends a signal (and a message's bytes) to `to`'s context.
fn post(local: &Local, to: ContextId, wire: &Wire, body: Option<&[u8]>) {
    let Some(router) = &local.shared.router else {
        tracing::debug!("a signal to context {to} from a node in no tree is dropped: {wire:?}");
        return;
    };
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
    if wire.sender().context != src {
        tracing::warn!(
            "a process signal from context {src} claiming to be from {} was dropped: {wire:?}",
            wire.sender()
        );
        return;
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
        for (mref, target) in monitors {
            local.down(p.pid, mref, target, Reason::Noconnection);
        }
        for linked in links {
            local.exit_signal(&p, linked, Reason::Noconnection, true);
        }
    }
}
