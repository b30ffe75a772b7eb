//! Channels between contexts. A [`Receiver`] owns a handle in its context;
//! [`Sender`]s address that handle from anywhere in the tree, travel inside
//! call arguments, results and other messages, and close it with a dead
//! message. [`Select`] waits on many receivers at once.

use std::future::poll_fn;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use spore_proto::{ContextId, Frame, Header, handles};
use tokio::sync::{mpsc, watch};

use crate::router::{Inner, Reply, Sink, decoding_router, decoding_with};
use crate::{Context, Router};

/// The dead-message reason a [`Sender::close`] sends.
const CLOSED_BY_SENDER: &str = "channel closed by its sender";

/// Why a [`Receiver`] or [`Select`] gave no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// A sender closed the channel; nothing more will arrive.
    #[error("channel {handle} in {context} was closed by its sender")]
    Closed {
        /// The receiving context.
        context: String,
        /// The channel's handle.
        handle: u32,
    },
    /// The context the receiver waited on was lost, or this context's
    /// router shut down; nothing more will arrive.
    #[error("channel {handle} in {context} ended: {detail}")]
    Lost {
        /// The receiving context.
        context: String,
        /// The channel's handle.
        handle: u32,
        /// What happened, e.g. "local.2 disconnected: EOF on stream".
        detail: String,
    },
    /// A dead message arrived instead of a value (for example an answer
    /// "no route to 7, my ID is 0" to something sent with this channel as
    /// its reply handle); nothing more will arrive.
    #[error("channel {handle} in {context} got a dead message: {reason}")]
    Dead {
        /// The receiving context.
        context: String,
        /// The channel's handle.
        handle: u32,
        /// The dead message's reason.
        reason: String,
    },
    /// A message did not decode as the channel's type. It is dropped; the
    /// channel stays open.
    #[error("a message on channel {handle} in {context} did not decode as {type_name}: {detail}")]
    Decode {
        /// The receiving context.
        context: String,
        /// The channel's handle.
        handle: u32,
        /// The expected type.
        type_name: &'static str,
        /// The deserializer's complaint.
        detail: String,
    },
    /// Nothing arrived within the timeout.
    #[error("nothing arrived within {after:?}")]
    Timeout {
        /// The timeout.
        after: Duration,
    },
    /// [`Select::recv`] on a select without receivers.
    #[error("select over no receivers: add one first")]
    Empty,
    /// The select was closed through a [`SelectCloser`].
    #[error("the select was closed")]
    SelectClosed,
}

impl RecvError {
    /// Whether the channel has ended (closed, lost or dead): every later
    /// receive gives the same error.
    pub fn is_end(&self) -> bool {
        matches!(
            self,
            RecvError::Closed { .. } | RecvError::Lost { .. } | RecvError::Dead { .. }
        )
    }
}

/// Why [`Sender::send`] sent nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The value could not be serialized.
    #[error("could not serialize a value for channel {handle} in context {context}: {detail}")]
    Encode {
        /// The receiving context's ID.
        context: ContextId,
        /// The channel's handle.
        handle: u32,
        /// The serializer's complaint.
        detail: String,
    },
    /// The encoded value exceeds the message-size limit.
    #[error("a value for channel {handle} in context {context}: {reason}")]
    TooLarge {
        /// The receiving context's ID.
        context: ContextId,
        /// The channel's handle.
        handle: u32,
        /// "message too large (N bytes, max M bytes)".
        reason: String,
    },
}

/// The receiving end of a channel: a handle in this context that any
/// context of the tree can send values of type `T` to, through a
/// [`Sender`]. Values arrive in the order each sender sent them.
///
/// Dropping the receiver unregisters its handle; later messages get a dead
/// reply "invalid handle" (if they asked for one).
///
/// A channel is a capability, as in Mitogen: any context that holds a
/// [`Sender`] for it (or guesses its handle) can send to it or close it,
/// unless unidirectional mode keeps it out of reach. Values are queued
/// without bound until received: keep receiving, or drop the receiver.
///
/// ```no_run
/// #[spore::remote]
/// fn count_to(n: u32, out: spore::Sender<u32>) -> Result<(), spore::SendError> {
///     for i in 1..=n {
///         out.send(&i)?;
///     }
///     out.close();
///     Ok(())
/// }
///
/// # async fn demo(router: &spore::Router, ctx: &spore::Context) -> Result<(), Box<dyn std::error::Error>> {
/// let mut rx = router.receiver::<u32>();
/// ctx.call(count_to, (3, rx.sender())).await?;
/// assert_eq!(rx.recv().await?, 1);
/// assert_eq!(rx.recv().await?, 2);
/// assert_eq!(rx.recv().await?, 3);
/// assert!(matches!(rx.recv().await, Err(spore::RecvError::Closed { .. })));
/// # Ok(()) }
/// ```
pub struct Receiver<T> {
    inner: Arc<Inner>,
    handle: u32,
    rx: mpsc::UnboundedReceiver<Reply>,
    respondent: Option<Arc<str>>,
    /// Set once the channel ended: every later receive repeats it.
    ended: Option<RecvError>,
    _values: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("context", &self.inner.name)
            .field("handle", &self.handle)
            .field("respondent", &self.respondent)
            .finish()
    }
}

impl Router {
    /// A new channel receiving values of type `T` in this router's context.
    pub fn receiver<T: DeserializeOwned>(&self) -> Receiver<T> {
        Receiver::new(&self.inner, None)
    }

    /// A new channel that waits on `respondent`: when that context is lost
    /// (or is already), receiving ends with [`RecvError::Lost`] naming it,
    /// instead of waiting forever.
    pub fn receiver_from<T: DeserializeOwned>(&self, respondent: &Context) -> Receiver<T> {
        Receiver::new(&self.inner, Some(respondent))
    }
}

impl<T: DeserializeOwned> Receiver<T> {
    fn new(inner: &Arc<Inner>, respondent: Option<&Context>) -> Self {
        let handle = inner.alloc_handle();
        let (tx, rx) = mpsc::unbounded_channel();
        inner
            .register(
                handle,
                Sink::Channel {
                    respondent: respondent.map(|c| c.id),
                    tx: tx.clone(),
                },
            )
            .expect("fresh dynamic handles are unique");
        // Checked after registering: a loss is marked before its waiters
        // are woken, so it is seen here or wakes the sink (or both).
        if let Some(detail) = respondent.and_then(|c| inner.lost_detail(c.id)) {
            let _ = tx.send(Reply::Lost(detail));
        }
        if let Some(r) = respondent {
            inner.note_interest_in(r.id);
        }
        Self {
            inner: inner.clone(),
            handle,
            rx,
            respondent: respondent.map(|c| c.name.clone()),
            ended: None,
            _values: PhantomData,
        }
    }

    /// A sender for this channel, to keep or to pass to another context.
    pub fn sender(&self) -> Sender<T> {
        Sender {
            inner: self.inner.clone(),
            context: self.inner.my_id,
            handle: self.handle,
            _values: PhantomData,
        }
    }

    /// The channel's handle in this context.
    pub fn handle(&self) -> u32 {
        self.handle
    }

    /// Waits for the next value. After the channel ended (closed by a
    /// sender, its respondent lost, this router shut down) every call
    /// returns the same error at once.
    pub async fn recv(&mut self) -> Result<T, RecvError> {
        if let Some(e) = &self.ended {
            return Err(e.clone());
        }
        let msg = self.rx.recv().await;
        self.accept(msg)
    }

    /// [`Receiver::recv`], giving up after `after` with [`RecvError::Timeout`].
    pub async fn recv_timeout(&mut self, after: Duration) -> Result<T, RecvError> {
        tokio::time::timeout(after, self.recv())
            .await
            .unwrap_or(Err(RecvError::Timeout { after }))
    }

    /// [`Receiver::recv`] for programs without async: blocks this thread.
    /// Do not call it from inside an async runtime.
    pub fn recv_blocking(&mut self) -> Result<T, RecvError> {
        if let Some(e) = &self.ended {
            return Err(e.clone());
        }
        let msg = self.rx.blocking_recv();
        self.accept(msg)
    }

    /// Ends the channel here: its handle is unregistered and every later
    /// receive gives [`RecvError::Closed`].
    pub fn close(&mut self) {
        self.end(RecvError::Closed {
            context: self.inner.name.clone(),
            handle: self.handle,
        });
    }

    fn poll_next(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<T, RecvError>> {
        if let Some(e) = &self.ended {
            return Poll::Ready(Err(e.clone()));
        }
        self.rx.poll_recv(cx).map(|msg| self.accept(msg))
    }

    /// Turns what arrived into a value or the channel's end.
    fn accept(&mut self, msg: Option<Reply>) -> Result<T, RecvError> {
        let (context, handle) = (self.inner.name.clone(), self.handle);
        let end = match msg {
            Some(Reply::Frame(f)) if f.header.is_dead() => match f.dead_reason() {
                r if r == CLOSED_BY_SENDER => RecvError::Closed { context, handle },
                reason => RecvError::Dead {
                    context,
                    handle,
                    reason,
                },
            },
            Some(Reply::Frame(f)) => {
                return decoding_with(&self.inner, || crate::call::decode_exact(&f.payload))
                    .map_err(|detail| RecvError::Decode {
                        context,
                        handle,
                        type_name: std::any::type_name::<T>(),
                        detail,
                    });
            }
            Some(Reply::Lost(detail)) => RecvError::Lost {
                context,
                handle,
                detail: match &self.respondent {
                    Some(name) => format!("{name} disconnected: {detail}"),
                    None => detail,
                },
            },
            None => RecvError::Lost {
                context,
                handle,
                detail: "the router shut down".to_owned(),
            },
        };
        self.end(end.clone());
        Err(end)
    }

    fn end(&mut self, e: RecvError) {
        if self.ended.is_none() {
            self.inner.unregister(self.handle);
            self.rx.close();
            self.ended = Some(e);
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        if self.ended.is_none() {
            self.inner.unregister(self.handle);
        }
    }
}

/// The sending end of a channel: addresses a [`Receiver`]'s handle in its
/// context. Cheap to clone; serializes, so it can be passed to another
/// context in call arguments, results or channel messages, where it sends
/// through that context's router.
///
/// Sending is one-way: nothing tells the sender whether the value arrived.
pub struct Sender<T> {
    inner: Arc<Inner>,
    context: ContextId,
    handle: u32,
    _values: PhantomData<fn(T)>,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            context: self.context,
            handle: self.handle,
            _values: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("context", &self.context)
            .field("handle", &self.handle)
            .finish()
    }
}

impl<T: Serialize> Sender<T> {
    /// Sends `value` to the channel.
    pub fn send(&self, value: &T) -> Result<(), SendError> {
        let payload = crate::call::encode_after(&[], value).map_err(|e| SendError::Encode {
            context: self.context,
            handle: self.handle,
            detail: e.to_string(),
        })?;
        self.inner
            .send(Frame::new(self.header(), payload))
            .map_err(|reason| SendError::TooLarge {
                context: self.context,
                handle: self.handle,
                reason,
            })
    }
}

impl<T> Sender<T> {
    /// Closes the channel: its receiver gets [`RecvError::Closed`] after
    /// every value sent before.
    pub fn close(&self) {
        let dead = Frame::dead(self.header(), CLOSED_BY_SENDER);
        let _ = self.inner.send(dead);
    }

    /// The ID of the context the receiver lives in.
    pub fn context_id(&self) -> ContextId {
        self.context
    }

    /// The receiver's handle in that context.
    pub fn handle(&self) -> u32 {
        self.handle
    }

    fn header(&self) -> Header {
        Header::new(self.context, self.inner.my_id, self.handle)
    }
}

impl<T> Serialize for Sender<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (self.context, self.handle).serialize(s)
    }
}

impl<'de, T> serde::Deserialize<'de> for Sender<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (context, handle) = <(ContextId, u32)>::deserialize(d)?;
        // A channel is a dynamic handle. A Sender for a protocol handle
        // would let whoever made it speak with the holder's authority
        // (SHUTDOWN, CALL_FUNCTION, FORWARD_MODULE …).
        if handle < handles::FIRST_DYNAMIC {
            return Err(crate::call::decode_error(format!(
                "a spore::Sender for handle {handle} in context {context}: \
                 handles below {} are the protocol's, not channels",
                handles::FIRST_DYNAMIC
            )));
        }
        Ok(Sender {
            inner: decoding_router::<D::Error>("spore::Sender")?,
            context,
            handle,
            _values: PhantomData,
        })
    }
}

/// Waits on many receivers at once and yields whichever has something
/// first (receivers are polled in turn, so none starves).
///
/// A receiver that ends (closed, lost, dead) yields its end once and is
/// removed; in a [`Select::oneshot`] select every receiver is removed after
/// it yielded once.
///
/// ```no_run
/// # async fn demo(router: &spore::Router) -> Result<(), spore::RecvError> {
/// let (a, b) = (router.receiver::<String>(), router.receiver::<String>());
/// let mut select = spore::Select::new();
/// let key_a = select.add(a);
/// let _key_b = select.add(b);
/// let (key, value) = select.recv_timeout(std::time::Duration::from_secs(5)).await?;
/// println!("from {}: {:?}", if key == key_a { "a" } else { "b" }, value);
/// # Ok(()) }
/// ```
pub struct Select<T> {
    entries: Vec<(usize, Receiver<T>)>,
    next_key: usize,
    /// Where the next poll starts, for fairness.
    start: usize,
    oneshot: bool,
    closed: Arc<watch::Sender<bool>>,
}

impl<T: DeserializeOwned> Default for Select<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> std::fmt::Debug for Select<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Select")
            .field("receivers", &self.entries.len())
            .field("oneshot", &self.oneshot)
            .finish()
    }
}

/// Closes a [`Select`] from anywhere: every waiting and later
/// [`Select::recv`] returns [`RecvError::SelectClosed`].
#[derive(Clone, Debug)]
pub struct SelectCloser(Arc<watch::Sender<bool>>);

impl SelectCloser {
    /// Closes the select and wakes whoever waits on it.
    pub fn close(&self) {
        self.0.send_replace(true);
    }
}

impl<T: DeserializeOwned> Select<T> {
    /// An empty select.
    pub fn new() -> Self {
        Self {
            entries: Vec::new(),
            next_key: 0,
            start: 0,
            oneshot: false,
            closed: Arc::new(watch::channel(false).0),
        }
    }

    /// An empty select that removes each receiver after it yielded once.
    pub fn oneshot() -> Self {
        Self {
            oneshot: true,
            ..Self::new()
        }
    }

    /// Adds a receiver; returns the key its values are reported with.
    pub fn add(&mut self, receiver: Receiver<T>) -> usize {
        let key = self.next_key;
        self.next_key += 1;
        self.entries.push((key, receiver));
        key
    }

    /// Takes the receiver with `key` back out.
    pub fn remove(&mut self, key: usize) -> Option<Receiver<T>> {
        let i = self.entries.iter().position(|(k, _)| *k == key)?;
        Some(self.entries.remove(i).1)
    }

    /// How many receivers it waits on.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it waits on none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A handle that closes this select from another task or thread.
    pub fn closer(&self) -> SelectCloser {
        SelectCloser(self.closed.clone())
    }

    /// Waits until any receiver yields: `(key, value or that receiver's
    /// end)`. Fails with [`RecvError::Empty`] when there are no receivers
    /// and [`RecvError::SelectClosed`] once closed.
    pub async fn recv(&mut self) -> Result<(usize, Result<T, RecvError>), RecvError> {
        if self.entries.is_empty() {
            return Err(RecvError::Empty);
        }
        let mut closed = self.closed.subscribe();
        if *closed.borrow_and_update() {
            return Err(RecvError::SelectClosed);
        }
        let (entries, start) = (&mut self.entries, &mut self.start);
        let ready = poll_fn(|cx| {
            let n = entries.len();
            for step in 0..n {
                let i = (*start + step) % n;
                if let Poll::Ready(r) = entries[i].1.poll_next(cx) {
                    *start = i + 1;
                    return Poll::Ready((i, r));
                }
            }
            Poll::Pending
        });
        let (i, r) = tokio::select! {
            biased;
            _ = closed.wait_for(|c| *c) => return Err(RecvError::SelectClosed),
            got = ready => got,
        };
        let key = self.entries[i].0;
        if self.oneshot || matches!(&r, Err(e) if e.is_end()) {
            self.entries.remove(i);
        }
        Ok((key, r))
    }

    /// [`Select::recv`], giving up after `after` with [`RecvError::Timeout`].
    pub async fn recv_timeout(
        &mut self,
        after: Duration,
    ) -> Result<(usize, Result<T, RecvError>), RecvError> {
        tokio::time::timeout(after, self.recv())
            .await
            .unwrap_or(Err(RecvError::Timeout { after }))
    }
}
