//! Process functions: `async fn`s registered with
//! [`macro@crate::process`], which any context of the tree (running the
//! same build) can be asked to spawn, by name, with serde arguments.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;

use serde::{Serialize, de::DeserializeOwned};

use crate::types::{ProcessResult, Reason};

/// A process function, as [`macro@crate::process`] registers it.
/// Implemented by the marker type the macro generates; users only name the
/// function (`spawn_in(&ctx, worker, (7,))`).
pub trait ProcessFunction: Copy {
    /// The argument tuple, e.g. `(u32, Pid)` (a 1-tuple is `(T,)`).
    type Args: Serialize + DeserializeOwned + Send + 'static;
    /// The registered name, `module::path::function`.
    const NAME: &'static str;
}

/// A process's future, boxed.
#[doc(hidden)]
pub type BoxProcess<R> = Pin<Box<dyn Future<Output = R> + Send + 'static>>;

/// One registered process function (an element of [`PROCESS_FUNCTIONS`]).
#[doc(hidden)]
pub struct ProcessEntry {
    pub name: &'static str,
    /// Decodes the arguments and builds the process's future.
    pub start: fn(&[u8]) -> Result<BoxProcess<Reason>, String>,
}

/// Every process function registered in this build.
#[doc(hidden)]
#[linkme::distributed_slice]
pub static PROCESS_FUNCTIONS: [ProcessEntry];

#[doc(hidden)]
pub fn into_process<F>(f: F) -> BoxProcess<Reason>
where
    F: Future + Send + 'static,
    F::Output: ProcessResult,
{
    Box::pin(async move { f.await.into_reason() })
}

/// Decodes the argument tuple, insisting the whole payload is consumed.
#[doc(hidden)]
pub fn decode_args<A: DeserializeOwned>(function: &str, bytes: &[u8]) -> Result<A, String> {
    match postcard::take_from_bytes::<A>(bytes) {
        Ok((a, [])) => Ok(a),
        Ok((_, rest)) => Err(format!(
            "arguments for {function} have {} unexpected trailing bytes",
            rest.len()
        )),
        Err(e) => Err(format!(
            "arguments for {function} do not decode as {}: {e}",
            std::any::type_name::<A>()
        )),
    }
}

pub(crate) fn lookup(name: &str) -> Option<&'static ProcessEntry> {
    static TABLE: OnceLock<HashMap<&'static str, &'static ProcessEntry>> = OnceLock::new();
    TABLE
        .get_or_init(|| PROCESS_FUNCTIONS.iter().map(|e| (e.name, e)).collect())
        .get(name)
        .copied()
}

/// Names of every process function registered in this build, sorted.
pub fn registered_processes() -> Vec<&'static str> {
    let mut v: Vec<_> = PROCESS_FUNCTIONS.iter().map(|e| e.name).collect();
    v.sort_unstable();
    v
}
