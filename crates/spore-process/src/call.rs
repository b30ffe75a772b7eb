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
//!
//! A call to a name in another context ([`Dest::At`], Erlang's
//! `{Name, Node}`) is OTP's too: the caller monitors the *name* there (the
//! other context resolves it when the monitor arrives: a DOWN `noproc` at
//! once if nothing has it), then sends the request to the name. Signals
//! from one process to a context arrive in order, so the monitor is in
//! place on the process that gets the request. A context that is lost, or
//! is unreachable already, fails the call at once with `noconnection`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use spore::ContextId;

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
///
/// ```
/// use spore_process::call::Dest;
///
/// // In context 3, the process registered as "kv" there.
/// let kv = Dest::at(3, "kv");
/// assert_eq!(kv, Dest::At(3, "kv".to_string()));
/// assert_eq!(kv.to_string(), "\"kv\" in context 3");
/// // Here.
/// assert_eq!(Dest::from("kv"), Dest::Name("kv".to_string()));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dest {
    /// A process, in any context.
    Pid(Pid),
    /// The process registered under this name in the caller's context.
    Name(String),
    /// The process registered under this name in that context (Erlang's
    /// `{Name, Node}`), resolved there when the request arrives. The
    /// caller's own context is the same as [`Dest::Name`].
    At(ContextId, String),
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
    /// The process registered as `name` in context `ctx` ([`Dest::At`]);
    /// `ctx` is a [`spore::Context::id`] or a [`Pid::context`].
    pub fn at(ctx: ContextId, name: impl Into<String>) -> Dest {
        Dest::At(ctx, name.into())
    }

    /// A name in another context, or `None` if it is a pid or a name here.
    fn elsewhere(&self) -> Option<(ContextId, &str)> {
        match self {
            Dest::At(ctx, name) if *ctx != current("call").0.context() => Some((*ctx, name)),
            _ => None,
        }
    }

    /// The process a pid or a name here stands for now (`None`: nothing
    /// has the name). Not for a name elsewhere.
    fn here(&self) -> Option<Pid> {
        match self {
            Dest::Pid(p) => Some(*p),
            Dest::Name(name) | Dest::At(_, name) => whereis(name),
        }
    }

    /// Monitors the process, as OTP's `gen` does before a request, and
    /// returns the monitor and where to send: a pid stays; a name here is
    /// resolved now (`noproc` if nothing has it); a name elsewhere is
    /// monitored there, by name (the DOWN says `noproc` if nothing has it).
    pub(crate) fn monitor(&self) -> Result<(Ref, Dest), CallError> {
        if let Some((ctx, name)) = self.elsewhere() {
            return Ok((crate::remote::monitor_name(ctx, name), self.clone()));
        }
        let pid = self.here().ok_or_else(|| self.ended(Reason::Noproc))?;
        Ok((monitor(pid), Dest::Pid(pid)))
    }

    /// Sends `msg` to the process, if there is one: a message to a name
    /// that nothing has is dropped (a cast never fails).
    pub(crate) fn send<M: Message>(&self, msg: M) {
        if let Some((ctx, name)) = self.elsewhere() {
            return crate::remote::send_named_in(ctx, name, msg);
        }
        if let Some(pid) = self.here() {
            send(pid, msg);
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
            Dest::At(ctx, n) => write!(f, "{n:?} in context {ctx}"),
        }
    }
}

/// A call that got no reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CallError {
    /// The server ended before replying, with this reason (`noproc` if it
    /// did not exist or nothing had its name, `noconnection` if its context
    /// was lost or unreachable).
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
    let (mref, server) = to.monitor()?;
    set_alias(mref, true);
    let from = ReplyTo {
        pid: self_pid(),
        alias: mref,
    };
    server.send(Request { from, body });
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
    let (mref, server) = to.monitor()?;
    server.send(request);
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
