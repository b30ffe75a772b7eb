//! A message in a mailbox, of any type, decoded on first ask when it came
//! from another context.

use std::any::Any;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::types::{Message, type_tag};

/// One message in a process's mailbox, as a selective receive sees it.
///
/// A message sent in this context is kept as the value that was sent. One
/// from another context is kept as bytes with its type's tag until a
/// receiver asks for that type; it is decoded then, once. If it does not
/// decode (the two ends disagree on the type), it turns into an
/// [`Undecodable`] message in the same place, and a warning is logged:
/// nothing crashes, and the receiver can pick it up as any other message.
pub struct Envelope {
    /// The value, or a [`Remote`] message's bytes; `None` once a receive's
    /// matcher took it. One box for every kind keeps an envelope at two
    /// words: a mailbox holds many.
    body: Option<Box<dyn Any + Send>>,
}

/// A message from another context, not decoded yet.
struct Remote {
    tag: u64,
    bytes: Bytes,
}

/// A message from another context that did not decode as the type it was
/// sent as. It stays in the mailbox in the place of the message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Undecodable {
    /// The type the receiver asked for (which the sender's tag named).
    pub type_name: String,
    /// What the decoder said.
    pub detail: String,
}

impl Envelope {
    pub(crate) fn local<M: Message>(m: M) -> Self {
        Self {
            body: Some(Box::new(m)),
        }
    }

    pub(crate) fn remote(tag: u64, bytes: Bytes) -> Self {
        Self {
            body: Some(Box::new(Remote { tag, bytes })),
        }
    }

    pub(crate) fn taken() -> Self {
        Self { body: None }
    }

    /// Whether the message is a `T` (without decoding it).
    pub fn is<T: Message>(&self) -> bool {
        self.body.as_ref().is_some_and(|b| {
            b.is::<T>()
                || b.downcast_ref::<Remote>()
                    .is_some_and(|r| r.tag == type_tag::<T>())
        })
    }

    /// The message as a `T`, if it is one (decoding it if it came from
    /// another context).
    pub fn get<T: Message>(&mut self) -> Option<&T> {
        if let Some(v) = self.decode::<T>() {
            self.body = Some(Box::new(v));
        }
        self.body.as_ref()?.downcast_ref()
    }

    /// Takes the message out if it is a `T`. A receive's matcher that takes
    /// a message consumes it.
    pub fn take<T: Message>(&mut self) -> Option<T> {
        match self.body.take()?.downcast::<T>() {
            Ok(v) => Some(*v),
            Err(b) => {
                self.body = Some(b);
                self.decode::<T>()
            }
        }
    }

    /// Takes the message out if it is a `T` for which `pred` holds.
    pub fn take_if<T: Message>(&mut self, pred: impl FnOnce(&T) -> bool) -> Option<T> {
        if self.get::<T>().is_some_and(pred) {
            self.take()
        } else {
            None
        }
    }

    pub(crate) fn is_taken(&self) -> bool {
        self.body.is_none()
    }

    /// Bytes this message holds (the value itself, not what it points to).
    pub(crate) fn size(&self) -> usize {
        match &self.body {
            Some(b) => match b.downcast_ref::<Remote>() {
                Some(r) => r.bytes.len(),
                None => std::mem::size_of_val(&**b),
            },
            None => 0,
        }
    }

    /// Decodes a message from another context that is tagged as a `T`,
    /// taking it out of the envelope. One that does not decode stays, as
    /// an [`Undecodable`] (and a warning is logged).
    fn decode<T: Message>(&mut self) -> Option<T> {
        let remote = self.body.as_ref()?.downcast_ref::<Remote>()?;
        if remote.tag != type_tag::<T>() {
            return None;
        }
        let decode =
            || postcard::take_from_bytes::<T>(&remote.bytes).map(|(v, rest)| (v, rest.len()));
        // Contexts and Senders in the message bind to this node's router.
        let decoded = match crate::node::local() {
            Some(local) => match &local.shared.router {
                Some(router) => router.decoding(decode),
                None => decode(),
            },
            None => decode(),
        };
        let detail = match decoded {
            Ok((v, 0)) => {
                self.body = None;
                return Some(v);
            }
            Ok((_, trailing)) => format!("{trailing} unexpected trailing bytes"),
            Err(e) => e.to_string(),
        };
        let type_name = std::any::type_name::<T>().to_owned();
        tracing::warn!(
            "a message from another context tagged as {type_name} does not decode as one: {detail}"
        );
        self.body = Some(Box::new(Undecodable { type_name, detail }));
        None
    }
}

impl std::fmt::Debug for Envelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.body {
            Some(b) => match b.downcast_ref::<Remote>() {
                Some(Remote { tag, bytes }) => {
                    write!(f, "Envelope(remote {tag:#x}, {} bytes)", bytes.len())
                }
                None => f.write_str("Envelope(local)"),
            },
            None => f.write_str("Envelope(taken)"),
        }
    }
}
