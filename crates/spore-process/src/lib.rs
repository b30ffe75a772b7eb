//! Erlang's process model on spore: lightweight processes with mailboxes,
//! in any context of the tree, with selective receive, links, monitors,
//! names and exit signals that follow Erlang's rules exactly.
//!
//! A process is an async block run by its context's [`Node`]. Inside it,
//! the free functions of this crate are Erlang's BIFs: [`self_pid`],
//! [`spawn`], [`send`], [`receive`], [`link`], [`monitor`], [`exit`],
//! [`trap_exit`], [`register`]…
//!
//! ```
//! use spore_process::*;
//!
//! let node = Node::new();
//! let reason = node.run_blocking(async {
//!     trap_exit(true);
//!     let worker = spawn_link(async {
//!         let job: u32 = receive().await;
//!         if job == 0 {
//!             return Err(Reason::error("job 0 is not a job"));
//!         }
//!         Ok(())
//!     });
//!     send(worker, 0u32);
//!     let Exit { from, reason } = receive::<Exit>().await;
//!     assert_eq!(from, worker);
//!     reason
//! });
//! assert_eq!(reason, Ok(Reason::error("job 0 is not a job")));
//! ```
//!
//! On top of them, [`call`] is OTP's request and reply (`gen:call`) and
//! [`gen_server`] is OTP's gen_server: a process serving calls and casts
//! through the callbacks of a [`gen_server::GenServer`] implementation.
//!
//! # How processes run
//!
//! Every process of a context runs on that context's process thread
//! (`spore-proc`), as a task of a current-thread runtime: spawning costs
//! an allocation or two, a message between two processes is a push onto a
//! queue, and every signal between processes of one context is handled
//! in the order it was sent. A process gives the thread back at each
//! `.await` that is not ready; a process that computes for long without
//! awaiting holds up the others (move such work to a thread, as with any
//! async runtime). A panic in a process ends that process only, with
//! [`Reason::Panic`]; this crate needs `panic = "unwind"` (the default).
//!
//! # Across contexts
//!
//! Pids name a context and a process there; [`send`], [`link`],
//! [`monitor`] and [`exit`] work the same whichever context the other
//! process lives in. Names are per context: [`send_named_in`] and
//! [`whereis_in`] reach a name in another context, and
//! [`call::Dest::At`] calls one (so do [`gen_server`]'s functions);
//! [`global`] names are unique across the tree. When a context is lost,
//! every link to a process there gets an exit signal `noconnection` and
//! every monitor a DOWN `noconnection`. [`monitor_context`] and
//! [`monitor_contexts`] report contexts coming and going as
//! [`ContextEvent`] messages; a context that falls silent is declared lost
//! after the router's heartbeat window
//! ([`spore::RouterBuilder::heartbeat`]).
#![warn(missing_docs)]

mod api;
pub mod call;
mod contexts;
mod envelope;
pub mod gen_server;
pub mod global;
mod idle;
mod node;
mod registry;
mod remote;
pub mod supervisor;
mod types;

pub use api::{
    NameError, Node, ProcessInfo, SendError, Status, demonitor, exit, exit_self, is_alive, link,
    monitor, process_info, processes, receive, receive_match, receive_match_timeout,
    receive_timeout, register, self_pid, send, send_named, send_wait, spawn, spawn_link,
    spawn_monitor, spawn_opt, trap_exit, try_send, unlink, unregister, whereis,
};
pub use contexts::{ContextEvent, monitor_context, monitor_contexts};
pub use envelope::{Envelope, Undecodable};
pub use node::{SpawnError, SpawnOptions};
pub use registry::{ProcessFunction, registered_processes};
pub use remote::{
    PROCESS_HANDLE, send_named_in, spawn_in, spawn_link_in, spawn_monitor_in, spawn_opt_in,
    whereis_in,
};
pub use types::{Down, Exit, Message, Pid, ProcessResult, Reason, Ref};

/// Registers an `async fn` as a process function: any context of the tree
/// running this build can then be asked to spawn it, by name, with its
/// arguments serialized ([`spawn_in`] and its variants). Its arguments must
/// be owned serde types; its output is what a process may return (`()`,
/// [`Reason`], `Result<(), E>`, or `!`). The function stays callable
/// locally: `spawn(worker(7))`.
///
/// ```
/// #[spore_process::process]
/// async fn worker(id: u32) {
///     let job: String = spore_process::receive().await;
///     println!("worker {id}: {job}");
/// }
///
/// # use spore_process::ProcessFunction;
/// # fn name_of<F: ProcessFunction>(_: F) -> &'static str { F::NAME }
/// assert!(name_of(worker).ends_with("::worker"));
/// ```
pub use spore_macros::process;

/// Makes a [`gen_server::GenServer`] startable in any context of the tree
/// ([`gen_server::start_in`], [`gen_server::start_link_in`]): implements
/// [`gen_server::RemoteGenServer`] for the type and registers the server's
/// process function under a name made of the module path and the type, as
/// [`process`] registers a function. Invoke it once per server type, beside
/// its `impl GenServer` (a generic type once per instance used remotely);
/// the type's `Args` must be a [`Message`] (they travel). See
/// [`gen_server::start_in`] for an example.
#[macro_export]
macro_rules! remote_gen_server {
    ($server:ty) => {
        impl $crate::gen_server::RemoteGenServer for $server {
            const NAME: &'static str = ::core::concat!(
                ::core::module_path!(),
                "::",
                ::core::stringify!($server),
                " (gen_server)"
            );
        }

        const _: () = {
            #[::spore_process::__private::linkme::distributed_slice(
                ::spore_process::__private::PROCESS_FUNCTIONS
            )]
            #[linkme(crate = ::spore_process::__private::linkme)]
            static ENTRY: ::spore_process::__private::ProcessEntry =
                ::spore_process::__private::ProcessEntry {
                    name: <$server as $crate::gen_server::RemoteGenServer>::NAME,
                    start: $crate::gen_server::start_registered::<$server>,
                };
        };
    };
}

#[doc(hidden)]
pub mod __private {
    pub use crate::registry::{
        BoxProcess, PROCESS_FUNCTIONS, ProcessEntry, decode_args, into_process,
    };
    pub use linkme;
}
