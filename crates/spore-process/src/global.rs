//! Global names: unique across the whole tree (Erlang's `global`).
//!
//! One name server, a process in the master context, holds every global
//! name; each operation is a [`call`](fn@crate::call::call) to it from
//! wherever the caller runs. It monitors every registered process, so a
//! name is freed when its process ends, and when its context is lost (the
//! monitor's DOWN says `noconnection`). Unlike a context's own names
//! ([`register`](crate::register)), a process may hold several global
//! names.
//!
//! To call a server by its global name, look it up and call the pid, as
//! OTP's `gen` does for `{global, Name}`: if it ends before answering, the
//! call fails with its reason. Each lookup is a round trip to the master.
//!
//! ```
//! use spore_process::*;
//!
//! Node::new().run_blocking(async {
//!     let me = self_pid();
//!     global::register("printer", me).await.unwrap();
//!     assert_eq!(global::whereis("printer").await.unwrap(), Some(me));
//!     // Unique across the tree: a second owner is refused.
//!     let other = spawn(async { receive::<()>().await });
//!     let err = global::register("printer", other).await.unwrap_err();
//!     assert_eq!(err, global::GlobalError::Taken { name: "printer".into(), owner: me });
//!     global::send("printer", 7u32).await.unwrap();
//!     assert_eq!(receive::<u32>().await, 7);
//! })
//! .unwrap();
//! ```

use std::collections::HashMap;
use std::rc::Rc;

use serde::{Deserialize, Serialize};

use crate::call::{CallError, Request, call, reply};
use crate::node::Local;
use crate::types::{Down, Message, Pid, Ref};
use crate::{SpawnOptions, demonitor, monitor, receive_match};

/// The serial of the global name server's pid, reserved in every context
/// (only the master's ever runs).
pub(crate) const SERVER_SERIAL: u64 = 1;

/// A global name operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum GlobalError {
    /// The name belongs to another process.
    #[error("the global name {name:?} is taken by {owner}")]
    Taken {
        /// The name asked for.
        name: String,
        /// Who has it.
        owner: Pid,
    },
    /// No process has this global name.
    #[error("no process has the global name {0:?}")]
    Unknown(String),
    /// The name server in the master could not be asked (its context is
    /// lost, or it did not answer in time).
    #[error("the global name server did not answer: {0}")]
    Unavailable(#[from] CallError),
}

#[derive(Debug, Serialize, Deserialize)]
enum Op {
    Register { name: String, pid: Pid },
    Unregister { name: String },
    Whereis { name: String },
    Registered,
}

/// Gives `pid` the global name `name`: it becomes unique in the whole tree
/// until `pid` ends, its context is lost, or it is unregistered.
/// A process may hold several global names.
///
/// # Panics
///
/// Outside a process.
pub async fn register(name: &str, pid: Pid) -> Result<(), GlobalError> {
    let op = Op::Register {
        name: name.to_owned(),
        pid,
    };
    ask::<Result<(), Pid>>(op)
        .await?
        .map_err(|owner| GlobalError::Taken {
            name: name.to_owned(),
            owner,
        })
}

/// Frees the global name `name`, returning who had it.
///
/// # Panics
///
/// Outside a process.
pub async fn unregister(name: &str) -> Result<Pid, GlobalError> {
    let op = Op::Unregister {
        name: name.to_owned(),
    };
    ask::<Option<Pid>>(op)
        .await?
        .ok_or_else(|| GlobalError::Unknown(name.to_owned()))
}

/// The process with the global name `name`, if any.
///
/// # Panics
///
/// Outside a process.
pub async fn whereis(name: &str) -> Result<Option<Pid>, GlobalError> {
    let op = Op::Whereis {
        name: name.to_owned(),
    };
    ask(op).await
}

/// Sends `msg` to the process with the global name `name`; an unknown name
/// is an error ([`GlobalError::Unknown`]), as with local names.
///
/// # Panics
///
/// Outside a process.
pub async fn send<M: Message>(name: &str, msg: M) -> Result<(), GlobalError> {
    match whereis(name).await? {
        Some(pid) => {
            crate::send(pid, msg);
            Ok(())
        }
        None => Err(GlobalError::Unknown(name.to_owned())),
    }
}

/// Every global name with its process, sorted by name.
///
/// # Panics
///
/// Outside a process.
pub async fn registered() -> Result<Vec<(String, Pid)>, GlobalError> {
    ask(Op::Registered).await
}

/// Asks the name server, starting it first if it lives here.
async fn ask<R: Message>(op: Op) -> Result<R, GlobalError> {
    let server = {
        let (local, _) = crate::api::current("global");
        let server = server_pid(&local);
        ensure_server(&local, server);
        server
    };
    Ok(call(server, op, None).await?)
}

/// The name server's pid: in the master (or, in a node outside any tree,
/// in its own context).
fn server_pid(local: &Local) -> Pid {
    let context = match &local.shared.router {
        Some(_) => spore::MASTER_ID,
        None => local.context(),
    };
    Pid {
        context,
        serial: SERVER_SERIAL,
    }
}

/// Starts the name server if `to` is its pid in this context and it is not
/// running: it starts on first use, from here or from another context.
pub(crate) fn ensure_server(local: &Rc<Local>, to: Pid) {
    if to != server_pid(local) || to.context != local.context() || local.lookup(to).is_some() {
        return;
    }
    if let Err(e) = local.spawn(to, serve(), &SpawnOptions::new(), None) {
        tracing::error!("the global name server did not start: {e}");
    }
}

/// One name held: by whom, and the monitor that frees it.
struct Held {
    pid: Pid,
    mref: Ref,
}

async fn serve() -> ! {
    let mut names: HashMap<String, Held> = HashMap::new();
    loop {
        let next = receive_match(|m| {
            if let Some(req) = m.take::<Request<Op>>() {
                return Some(Ok(req));
            }
            m.take::<Down>().map(Err)
        })
        .await;
        let req = match next {
            Ok(req) => req,
            Err(down) => {
                // Its process ended or its context was lost.
                names.retain(|_, held| held.mref != down.mref);
                continue;
            }
        };
        match req.body {
            Op::Register { name, pid } => {
                let answer = match names.get(&name) {
                    Some(held) => Err(held.pid),
                    None => {
                        let mref = monitor(pid);
                        names.insert(name, Held { pid, mref });
                        Ok(())
                    }
                };
                reply(&req.from, answer);
            }
            Op::Unregister { name } => {
                let was = names.remove(&name).map(|held| {
                    demonitor(held.mref, true);
                    held.pid
                });
                reply(&req.from, was);
            }
            Op::Whereis { name } => reply(&req.from, names.get(&name).map(|h| h.pid)),
            Op::Registered => {
                let mut all: Vec<(String, Pid)> =
                    names.iter().map(|(n, h)| (n.clone(), h.pid)).collect();
                all.sort();
                reply(&req.from, all);
            }
        }
    }
}
