//! Request and reply between processes (OTP's `gen:call`), the base of
//! gen_server and of the supervisor's API.
//!
//! The caller monitors the server and sends a [`Request`] carrying a
//! [`ReplyTo`]: its pid and a fresh reference that is active as an
//! *alias* while it waits. The server answers with [`reply`], addressed to
//! that alias. The call ends with the reply, with the server's exit reason
//! as soon as it dies (or `noproc` if it did not exist), or with a
//! timeout. Then the alias is deactivated, so a reply that comes later is
//! dropped on arrival and never reaches the caller's mailbox; other
//! messages that arrived meanwhile stay queued in order.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::api::{current, demonitor, monitor, receive_match_timeout, self_pid, send, whereis};
use crate::types::{Down, Message, Pid, Reason, Ref};

/// How long a call waits by default (OTP's 5 s).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Who to answer: the caller and the alias its reply must be sent to.
/// Serializes, so a server may keep it and answer later, from anywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReplyTo {
    pid: Pid,
    alias: Ref,
}

impl ReplyTo {
    /// The calling process.
    pub fn pid(&self) -> Pid {
        self.pid
    }
}

/// A request as the server receives it: the caller's body, and who to
/// answer with [`reply`].
#[derive(Debug, Serialize, Deserialize)]
pub struct Request<T> {
    /// Who to answer.
    pub from: ReplyTo,
    /// What was asked.
    pub body: T,
}

/// The answer to a [`Request`], as it travels.
#[derive(Debug, Serialize, Deserialize)]
struct Reply<T> {
    alias: Ref,
    value: T,
}

/// Where a call goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dest {
    /// A process, in any context.
    Pid(Pid),
    /// The process registered under this name in the caller's context.
    Name(String),
}

impl From<Pid> for Dest {
    fn from(p: Pid) -> Self {
        Dest::Pid(p)
    }
}

impl From<&str> for Dest {
    fn from(n: &str) -> Self {
        Dest::Name(n.to_owned())
    }
}

impl From<String> for Dest {
    fn from(n: String) -> Self {
        Dest::Name(n)
    }
}

impl Dest {
    /// The process it names: `noproc` for a name nothing has here.
    pub(crate) fn resolve(&self) -> Result<Pid, CallError> {
        match self {
            Dest::Pid(p) => Ok(*p),
            Dest::Name(n) => whereis(n).ok_or_else(|| self.ended(Reason::Noproc)),
        }
    }

    /// The error for a server that ended with `reason`.
    fn ended(&self, reason: Reason) -> CallError {
        CallError::Exit {
            server: self.to_string(),
            reason,
        }
    }
}

impl std::fmt::Display for Dest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dest::Pid(p) => write!(f, "{p}"),
            Dest::Name(n) => write!(f, "{n:?}"),
        }
    }
}

/// A call that got no reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CallError {
    /// The server ended before replying, with this reason (`noproc` if it
    /// did not exist, `noconnection` if its context was lost).
    #[error("the call to {server} failed: the server ended ({reason})")]
    Exit {
        /// The server called.
        server: String,
        /// Why it ended.
        reason: Reason,
    },
    /// No reply within the timeout. A reply that comes later is dropped.
    #[error("the call to {server} got no reply within {after:?}")]
    Timeout {
        /// The server called.
        server: String,
        /// The timeout.
        after: Duration,
    },
}

impl CallError {
    /// The server's exit reason, if it ended.
    pub fn reason(&self) -> Option<&Reason> {
        match self {
            CallError::Exit { reason, .. } => Some(reason),
            CallError::Timeout { .. } => None,
        }
    }
}

/// Sends `body` to `to` as a [`Request`] and waits for the reply, at most
/// `timeout` ([`DEFAULT_TIMEOUT`] if `None`). See the module's documentation
/// for what can end it.
pub async fn call<Req: Message, Rep: Message>(
    to: impl Into<Dest>,
    body: Req,
    timeout: Option<Duration>,
) -> Result<Rep, CallError> {
    let to = to.into();
    let after = timeout.unwrap_or(DEFAULT_TIMEOUT);
    let server = to.resolve()?;
    let mref = monitor(server);
    set_alias(mref, true);
    let from = ReplyTo {
        pid: self_pid(),
        alias: mref,
    };
    send(server, Request { from, body });
    let got = receive_match_timeout(after, |m| {
        if let Some(r) = m.take_if::<Reply<Rep>>(|r| r.alias == mref) {
            return Some(Ok(r.value));
        }
        m.take_if::<Down>(|d| d.mref == mref).map(|d| Err(d.reason))
    })
    .await;
    set_alias(mref, false);
    demonitor(mref, true);
    match got {
        Some(Ok(v)) => Ok(v),
        Some(Err(reason)) => Err(to.ended(reason)),
        None => Err(CallError::Timeout {
            server: to.to_string(),
            after,
        }),
    }
}

/// Sends `request` (which asks `to` to end with `reason`) and waits for it
/// to end, at most `timeout` (`None`: for ever): `Ok` once it ended with
/// that reason; its other reason, `noproc`, or a timeout otherwise. The
/// stop of gen_server and of the supervisor.
pub(crate) async fn stop_and_wait<M: Message>(
    to: Dest,
    request: M,
    reason: &Reason,
    timeout: Option<Duration>,
) -> Result<(), CallError> {
    let pid = to.resolve()?;
    let mref = monitor(pid);
    send(pid, request);
    let after = timeout.unwrap_or(Duration::MAX);
    match receive_match_timeout(after, |m| m.take_if::<Down>(|d| d.mref == mref)).await {
        Some(down) if down.reason == *reason => Ok(()),
        Some(down) => Err(to.ended(down.reason)),
        None => {
            demonitor(mref, true);
            Err(CallError::Timeout {
                server: to.to_string(),
                after,
            })
        }
    }
}

/// Answers a [`Request`]: sends `value` to the caller's alias. If the
/// caller gave up (timeout, or it ended), the reply is dropped.
pub fn reply<T: Message>(to: &ReplyTo, value: T) {
    let (local, me) = current("reply");
    let msg = Reply {
        alias: to.alias,
        value,
    };
    match local.lookup(to.pid) {
        Some(p) => local.deliver_to_alias(&p, to.alias, crate::envelope::Envelope::local(msg)),
        None if to.pid.context != local.context() => {
            crate::remote::send(&local, me.pid, to.pid, Some(to.alias), msg)
        }
        None => {}
    }
}

/// Activates or deactivates `alias` for the calling process.
fn set_alias(alias: Ref, on: bool) {
    let (_, me) = current("call");
    let mut st = me.st.borrow_mut();
    if on {
        st.ext().aliases.insert(alias);
    } else if let Some(e) = st.ext_mut() {
        e.aliases.remove(&alias);
    }
}
