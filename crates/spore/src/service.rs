//! Services: libraries built on spore that own a well-known handle in every
//! context (the process layer is one). A service is started once per
//! router, either when that router's code first asks for it
//! ([`Router::service`]) or when the first message for its handle arrives
//! from another context, so a message never finds a context that "has no
//! such service yet".

use std::any::Any;
use std::sync::Arc;

use bytes::Bytes;
use spore_proto::{ContextId, Frame, Header, handles};

use crate::router::{Inner, Router};

/// A library's endpoint on a well-known handle, present in every context
/// of a tree (every context runs the same build, so every context has it).
///
/// Register it with [`service!`](crate::service!). Messages to it travel
/// like any other frame: in order between two contexts, source-verified,
/// within the size limit; one-way (nothing answers a message that cannot
/// be delivered). Contexts that are lost are reported to it, wherever in
/// the tree they were, as soon as this context learns of it (the same
/// news that ends [`crate::Context::lost`]).
///
/// ```
/// use std::sync::Mutex;
///
/// struct Echo {
///     router: spore::Router,
///     seen: Mutex<Vec<(spore::ContextId, Vec<u8>)>>,
/// }
///
/// impl spore::Service for Echo {
///     const HANDLE: u32 = 250;
///     const NAME: &'static str = "echo";
///     fn start(router: spore::Router) -> Self {
///         Echo { router, seen: Mutex::new(Vec::new()) }
///     }
///     fn deliver(&self, from: spore::ContextId, payload: bytes::Bytes) {
///         self.seen.lock().unwrap().push((from, payload.to_vec()));
///     }
/// }
/// spore::service!(Echo);
/// ```
pub trait Service: Send + Sync + Sized + 'static {
    /// Its handle: one of [`FIRST_SERVICE`]`..=`[`LAST_SERVICE`], unique in
    /// the build (two services on one handle are refused at start-up).
    const HANDLE: u32;
    /// Its name, for logs and errors.
    const NAME: &'static str;

    /// Builds the service for `router` (a handle that does not own the
    /// router: dropping it changes nothing). Called once per router, on the
    /// thread that first needed it, possibly the I/O loop: it must not
    /// block. Start threads or tasks here if the service needs them.
    fn start(router: Router) -> Self;

    /// A message for [`Service::HANDLE`] arrived from context `from`
    /// (verified: a context cannot speak for another). Runs on the I/O
    /// loop: it must return quickly and never block.
    fn deliver(&self, from: ContextId, payload: Bytes);

    /// Contexts were lost, with what was observed. Runs on the I/O loop,
    /// or on the thread that noticed: it must return quickly.
    fn contexts_lost(&self, lost: &[ContextId], detail: &str) {
        let _ = (lost, detail);
    }

    /// A context was started below this one (the master hears of every
    /// context of the tree), with its name. Runs on the I/O loop, or on the
    /// thread that started it: it must return quickly.
    fn context_added(&self, id: ContextId, name: &str) {
        let _ = (id, name);
    }

    /// The router is shutting down or being dropped: let go of it (stop
    /// threads, drop handles). After this, nothing more is delivered.
    fn stop(&self) {}
}

/// The first handle reserved for services.
pub const FIRST_SERVICE: u32 = handles::FIRST_SERVICE;
/// The last handle reserved for services.
pub const LAST_SERVICE: u32 = handles::LAST_SERVICE;

/// A registered service, type-erased (an element of [`SERVICES`]).
#[doc(hidden)]
pub struct ServiceEntry {
    pub handle: u32,
    pub name: &'static str,
    start: fn(Router) -> Arc<dyn Running>,
}

impl ServiceEntry {
    /// The entry for `S`.
    pub const fn of<S: Service>() -> Self {
        Self {
            handle: S::HANDLE,
            name: S::NAME,
            start: start_erased::<S>,
        }
    }
}

fn start_erased<S: Service>(router: Router) -> Arc<dyn Running> {
    Arc::new(S::start(router))
}

/// Every service registered with [`service!`](crate::service!) in this build.
#[doc(hidden)]
#[linkme::distributed_slice]
pub static SERVICES: [ServiceEntry];

/// A started service, as the router holds it.
pub(crate) trait Running: Send + Sync {
    fn deliver(&self, from: ContextId, payload: Bytes);
    fn contexts_lost(&self, lost: &[ContextId], detail: &str);
    fn context_added(&self, id: ContextId, name: &str);
    fn stop(&self);
    fn as_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
}

impl<S: Service> Running for S {
    fn deliver(&self, from: ContextId, payload: Bytes) {
        Service::deliver(self, from, payload)
    }
    fn contexts_lost(&self, lost: &[ContextId], detail: &str) {
        Service::contexts_lost(self, lost, detail)
    }
    fn context_added(&self, id: ContextId, name: &str) {
        Service::context_added(self, id, name)
    }
    fn stop(&self) {
        Service::stop(self)
    }
    fn as_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}

/// The registry entry for `handle`, checking once that no two services
/// share a handle or use one outside the service range.
pub(crate) fn entry(handle: u32) -> Option<&'static ServiceEntry> {
    static TABLE: std::sync::OnceLock<std::collections::HashMap<u32, &'static ServiceEntry>> =
        std::sync::OnceLock::new();
    TABLE
        .get_or_init(|| {
            let mut table = std::collections::HashMap::new();
            for e in SERVICES.iter() {
                if !(FIRST_SERVICE..=LAST_SERVICE).contains(&e.handle) {
                    tracing::error!(
                        "service {} is not started: its handle {} is outside {FIRST_SERVICE}..={LAST_SERVICE}",
                        e.name,
                        e.handle
                    );
                    continue;
                }
                if let Some(other) = table.insert(e.handle, e) {
                    tracing::error!(
                        "services {} and {} both claim handle {}; only {} is started",
                        other.name,
                        e.name,
                        e.handle,
                        e.name
                    );
                }
            }
            table
        })
        .get(&handle)
        .copied()
}

impl Inner {
    /// The running instance of the service on `handle`, started if needed.
    /// `None` if no service of this build has that handle, or the router
    /// is shutting down.
    pub(crate) fn running_service(self: &Arc<Self>, handle: u32) -> Option<Arc<dyn Running>> {
        let entry = entry(handle)?;
        if let Some(s) = self.services.lock().unwrap().get(&handle) {
            return Some(s.clone());
        }
        if self.is_shutting_down() {
            return None;
        }
        // Started outside the lock: starting may use the router.
        let started = (entry.start)(Router::handle_on(self.clone()));
        let mut services = self.services.lock().unwrap();
        // Two threads may race to start it: the first one kept wins, the
        // other instance is stopped and dropped.
        let kept = services
            .entry(handle)
            .or_insert_with(|| started.clone())
            .clone();
        drop(services);
        if !Arc::ptr_eq(&kept, &started) {
            started.stop();
        }
        Some(kept)
    }

    /// Delivers a frame addressed to a service handle.
    pub(crate) fn deliver_to_service(self: &Arc<Self>, frame: Frame) {
        if frame.header.is_dead() {
            tracing::debug!(
                "dropped a dead message to service handle {}",
                frame.header.handle
            );
            return;
        }
        match self.running_service(frame.header.handle) {
            Some(s) => s.deliver(frame.header.src, frame.payload),
            None => {
                let reason = format!(
                    "no service on handle {} in {}",
                    frame.header.handle, self.name
                );
                self.refuse(&frame.header, &reason);
            }
        }
    }

    /// Tells every running service that contexts were lost.
    pub(crate) fn services_lost(&self, lost: &[ContextId], detail: &str) {
        let running: Vec<_> = self.services.lock().unwrap().values().cloned().collect();
        for s in running {
            s.contexts_lost(lost, detail);
        }
    }

    /// Tells every running service that a context was started below.
    pub(crate) fn services_added(&self, id: ContextId, name: &str) {
        let running: Vec<_> = self.services.lock().unwrap().values().cloned().collect();
        for s in running {
            s.context_added(id, name);
        }
    }

    /// Stops and forgets every running service (the router is going away;
    /// services hold a handle on it, so this also breaks that cycle).
    pub(crate) fn stop_services(&self) {
        let running: Vec<_> = self.services.lock().unwrap().drain().collect();
        for (_, s) in running {
            s.stop();
        }
    }
}

impl Router {
    /// This router's instance of service `S`, started on first use.
    ///
    /// # Panics
    ///
    /// If `S` was not registered with [`service!`](crate::service!), or its
    /// handle is outside [`FIRST_SERVICE`]`..=`[`LAST_SERVICE`] or taken by
    /// another service: a mistake in the program, not in its input.
    pub fn service<S: Service>(&self) -> Arc<S> {
        let registered = entry(S::HANDLE).is_some_and(|e| e.name == S::NAME);
        assert!(
            registered,
            "service {} (handle {}) is not registered: add spore::service!({}) next to it",
            S::NAME,
            S::HANDLE,
            std::any::type_name::<S>()
        );
        let running = match self.inner.running_service(S::HANDLE) {
            Some(r) => r,
            // Shutting down: a fresh instance that nothing delivers to.
            None => Arc::new(S::start(Router::handle_on(self.inner.clone()))),
        };
        running
            .as_any()
            .downcast::<S>()
            .unwrap_or_else(|_| panic!("handle {} runs another service", S::HANDLE))
    }

    /// Sends `payload` to service `S` in context `to` (which may be this
    /// one), from this context. One-way: a message that cannot be delivered
    /// is dropped (and logged at debug level); a context that is lost is
    /// reported to every service through [`Service::contexts_lost`].
    pub fn send_to_service<S: Service>(
        &self,
        to: ContextId,
        payload: impl Into<Bytes>,
    ) -> Result<(), crate::SendError> {
        let frame = Frame::new(Header::new(to, self.inner.my_id, S::HANDLE), payload);
        self.inner
            .send(frame)
            .map_err(|reason| crate::SendError::TooLarge {
                context: to,
                handle: S::HANDLE,
                reason,
            })
    }

    /// Runs `decode` so that the [`crate::Context`]s and [`crate::Sender`]s
    /// it deserializes belong to this router. spore does this itself for
    /// call arguments, results and channel messages; a service that
    /// decodes user values from its own frames does it here (in the
    /// master, such values fail to decode otherwise).
    pub fn decoding<R>(&self, decode: impl FnOnce() -> R) -> R {
        crate::router::decoding_with(&self.inner, decode)
    }

    /// This context's ID (0 in the master).
    pub fn my_id(&self) -> ContextId {
        self.inner.my_id
    }

    /// This context's ancestors, nearest first (empty in the master).
    pub fn ancestors(&self) -> &[ContextId] {
        &self.inner.parent_ids
    }

    /// Makes sure this context hears when context `id` is lost (through
    /// [`Service::contexts_lost`] and [`crate::Context::lost`]), even if it
    /// never sent it anything. A context hears of the losses in its own
    /// subtree and of those it sent traffic to; for anything else a probe
    /// travels toward `id`, and each context on the way remembers to pass
    /// the news back. If `id` is already lost, the news comes back at once.
    pub fn watch(&self, id: ContextId) {
        self.inner.note_interest_in(id);
    }

    /// Why context `id` cannot be reached from here, if that is known: it
    /// was lost (what was observed), or, in the master (which knows every
    /// context of the tree), there is no such context. `None` when a
    /// message to it may arrive.
    pub fn unreachable(&self, id: ContextId) -> Option<String> {
        if id == self.inner.my_id {
            return None;
        }
        if let Some(detail) = self.inner.lost_detail(id) {
            return Some(detail);
        }
        (self.inner.is_master() && !self.inner.knows_route(id))
            .then(|| spore_proto::routing::no_route_reason(id, self.inner.my_id))
    }
}

/// Registers a [`Service`] so that every context of this build starts it
/// when first needed. Write it once, next to the type.
#[macro_export]
macro_rules! service {
    ($service:ty) => {
        const _: () = {
            #[$crate::__private::linkme::distributed_slice($crate::__private::SERVICES)]
            #[linkme(crate = $crate::__private::linkme)]
            static ENTRY: $crate::__private::ServiceEntry =
                $crate::__private::ServiceEntry::of::<$service>();
        };
    };
}
