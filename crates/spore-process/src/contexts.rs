//! Context up/down events for processes: Erlang's `monitor_node` and
//! `net_kernel:monitor_nodes`, with contexts for nodes.

use std::cell::RefCell;
use std::rc::Rc;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use spore::ContextId;

use crate::api::current;
use crate::envelope::Envelope;
use crate::node::Local;
use crate::types::Pid;

/// A context came or went, as [`monitor_context`] and [`monitor_contexts`]
/// report it (a message in the subscriber's mailbox).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContextEvent {
    /// A context was started below this one (in the master: anywhere in
    /// the tree).
    Up {
        /// Its ID.
        context: ContextId,
        /// Its name, e.g. `local.1.ssh.4`.
        name: String,
    },
    /// A context is lost: unreachable for good (its processes are gone
    /// for this context: links and monitors to them said `noconnection`).
    Down {
        /// Its ID.
        context: ContextId,
        /// What was observed, e.g. "EOF on stream" or the heartbeat verdict.
        detail: String,
    },
}

/// Who is told of which context events, per process node.
#[derive(Debug, Default)]
pub(crate) struct ContextWatchers {
    /// [`monitor_context`]: one `Down` per call, per context.
    one: RefCell<FxHashMap<ContextId, Vec<Pid>>>,
    /// [`monitor_contexts`]: every `Up` and `Down`.
    all: RefCell<Vec<Pid>>,
}

/// Asks for one [`ContextEvent::Down`] when context `id` is lost (Erlang's
/// `monitor_node(Node, true)`). If it is lost already, or unknown to the
/// master, the event comes at once. Each call gives one event; a process
/// that exits first is simply forgotten. The context hears of the loss
/// wherever `id` is in the tree ([`spore::Router::watch`]).
///
/// # Panics
///
/// Outside a process.
pub fn monitor_context(id: ContextId) {
    let (local, me) = current("monitor_context");
    let detail = match &local.shared.router {
        Some(router) => {
            router.watch(id);
            router.unreachable(id)
        }
        None => (id != local.context()).then(|| "this process node is in no tree".to_owned()),
    };
    if let Some(detail) = detail {
        let ev = ContextEvent::Down {
            context: id,
            detail,
        };
        return local.deliver(&me, Envelope::local(ev));
    }
    let mut one = local.watchers.one.borrow_mut();
    let watchers = one.entry(id).or_default();
    // Forget the dead now and then, so that churn cannot grow the list.
    if watchers.len().is_power_of_two() {
        watchers.retain(|p| local.lookup(*p).is_some());
    }
    watchers.push(me.pid);
}

/// Subscribes the calling process to every [`ContextEvent`] (`on`), or
/// unsubscribes it (Erlang's `net_kernel:monitor_nodes`): `Up` for each
/// context started below this one — in the master, anywhere in the
/// tree — and `Down` for each context this one learns is lost. Returns
/// whether it was subscribed before.
///
/// # Panics
///
/// Outside a process.
pub fn monitor_contexts(on: bool) -> bool {
    let (local, me) = current("monitor_contexts");
    let mut all = local.watchers.all.borrow_mut();
    let was = all.contains(&me.pid);
    if on && !was {
        all.retain(|p| local.lookup(*p).is_some());
        all.push(me.pid);
    } else if !on {
        all.retain(|p| *p != me.pid);
    }
    was
}

/// Tells the subscribers that `id` came up.
pub(crate) fn added(local: &Rc<Local>, id: ContextId, name: &str) {
    let ev = ContextEvent::Up {
        context: id,
        name: name.to_owned(),
    };
    tell(local, &local.watchers.all.borrow().clone(), &ev);
}

/// Tells the subscribers, and the watchers of each, that `lost` are gone.
pub(crate) fn lost(local: &Rc<Local>, lost: &[ContextId], detail: &str) {
    let all = local.watchers.all.borrow().clone();
    for &id in lost {
        let ev = ContextEvent::Down {
            context: id,
            detail: detail.to_owned(),
        };
        let once = local.watchers.one.borrow_mut().remove(&id);
        tell(local, &once.unwrap_or_default(), &ev);
        tell(local, &all, &ev);
    }
}

fn tell(local: &Rc<Local>, to: &[Pid], ev: &ContextEvent) {
    for pid in to {
        if let Some(p) = local.lookup(*pid) {
            local.deliver(&p, Envelope::local(ev.clone()));
        }
    }
}
