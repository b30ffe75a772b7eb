//! Pipelined call chains: calls to one context that run there in order,
//! where the first failure sticks until the chain is reset.

use spore_proto::handles;
use spore_proto::messages::RESET_CHAIN;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::router::{PendingCall, encode_call};
use crate::{CallError, Context, RemoteFunction};

/// A pipelined chain of calls to one context.
///
/// The calls of a chain run in the context one after another, in the
/// order they were sent, without the caller waiting for each reply: send a
/// series of steps with [`CallChain::call_no_reply`] and wait only for the
/// last. Once a call of the chain fails, every later call of it fails at
/// once with that same error (naming the call that failed), until
/// [`CallChain::reset`]. Plain calls and other chains to the same context
/// are unaffected. When the last clone of a chain is dropped, the context
/// forgets it (after the calls already sent).
///
/// ```no_run
/// #[spore::remote]
/// fn mkdir(path: String) -> std::io::Result<()> { std::fs::create_dir(path) }
/// #[spore::remote]
/// fn write(path: String, text: String) -> std::io::Result<()> { std::fs::write(path, text) }
///
/// # async fn demo(ctx: &spore::Context) -> Result<(), spore::CallError> {
/// let chain = ctx.chain();
/// chain.call_no_reply(mkdir, ("/tmp/demo".into(),))?;
/// // Runs after mkdir; fails with mkdir's error if mkdir failed.
/// chain.call(write, ("/tmp/demo/a".into(), "hello".into())).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct CallChain(Arc<Chain>);

#[derive(Debug)]
struct Chain {
    ctx: Context,
    id: u64,
}

impl Drop for Chain {
    fn drop(&mut self) {
        // The context keeps a chain that failed until it is reset.
        let _ = send::<_, ()>(self, RESET_CHAIN, &(), false).sent();
    }
}

impl Context {
    /// Starts a new pipelined call chain to this context.
    pub fn chain(&self) -> CallChain {
        CallChain(Arc::new(Chain {
            id: self.inner.next_chain.fetch_add(1, Ordering::Relaxed),
            ctx: self.clone(),
        }))
    }
}

impl CallChain {
    /// The context the chain calls.
    pub fn context(&self) -> &Context {
        &self.0.ctx
    }

    /// Sends a call of the chain and returns it to await later.
    pub fn call_async<F: RemoteFunction>(&self, _f: F, args: F::Args) -> PendingCall<F::Output> {
        send(&self.0, F::NAME, &args, true)
    }

    /// [`CallChain::call_async`] by registered name, for callers that only
    /// know the name at run time (see [`Context::call_named`]).
    pub fn call_named<A: serde::Serialize, R: serde::de::DeserializeOwned>(
        &self,
        function: &'static str,
        args: &A,
    ) -> PendingCall<R> {
        send(&self.0, function, args, true)
    }

    /// Calls `f` as the chain's next step and waits for its result.
    pub async fn call<F: RemoteFunction>(
        &self,
        f: F,
        args: F::Args,
    ) -> Result<F::Output, CallError> {
        self.call_async(f, args).await
    }

    /// Sends `f` as the chain's next step without waiting. If it fails,
    /// the error is logged in the context and every later call of the
    /// chain fails with it.
    pub fn call_no_reply<F: RemoteFunction>(&self, _f: F, args: F::Args) -> Result<(), CallError> {
        send::<_, ()>(&self.0, F::NAME, &args, false).sent()
    }

    /// Clears the chain's stored error, in order: calls sent after the
    /// reset run again; calls sent before it still see the error.
    pub async fn reset(&self) -> Result<(), CallError> {
        send(&self.0, RESET_CHAIN, &(), true).await
    }
}

/// Sends a call of `chain`.
fn send<A: serde::Serialize, R: serde::de::DeserializeOwned>(
    chain: &Chain,
    function: &'static str,
    args: &A,
    want_reply: bool,
) -> PendingCall<R> {
    chain.ctx.inner.request(
        chain.ctx.id,
        chain.ctx.name.clone(),
        handles::CALL_FUNCTION,
        function,
        encode_call(function, Some(chain.id), args),
        want_reply,
    )
}
