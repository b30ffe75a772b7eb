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
    body: Body,
}

enum Body {
    Local(Box<dyn Any + Send>),
    Remote {
        tag: u64,
        bytes: Bytes,
    },
    /// Its value was taken by a receive's matcher.
    Taken,
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
            body: Body::Local(Box::new(m)),
        }
    }

    pub(crate) fn remote(tag: u64, bytes: Bytes) -> Self {
        Self {
            body: Body::Remote { tag, bytes },
        }
    }

    pub(crate) fn taken() -> Self {
        Self { body: Body::Taken }
    }

    /// Whether the message is a `T` (without decoding it).
    pub fn is<T: Message>(&self) -> bool {
        match &self.body {
            Body::Local(b) => b.is::<T>(),
            Body::Remote { tag, .. } => *tag == type_tag::<T>(),
            Body::Taken => false,
        }
    }

    /// The message as a `T`, if it is one (decoding it if it came from
    /// another context).
    pub fn get<T: Message>(&mut self) -> Option<&T> {
        self.decode::<T>();
        match &self.body {
            Body::Local(b) => b.downcast_ref(),
            _ => None,
        }
    }

    /// Takes the message out if it is a `T`. A receive's matcher that takes
    /// a message consumes it.
    pub fn take<T: Message>(&mut self) -> Option<T> {
        self.decode::<T>();
        match std::mem::replace(&mut self.body, Body::Taken) {
            Body::Local(b) => match b.downcast::<T>() {
                Ok(v) => Some(*v),
                Err(b) => {
                    self.body = Body::Local(b);
                    None
                }
            },
            other => {
                self.body = other;
                None
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
        matches!(self.body, Body::Taken)
    }

    /// Bytes this message holds (the value itself, not what it points to).
    pub(crate) fn size(&self) -> usize {
        match &self.body {
            Body::Local(b) => std::mem::size_of_val(&**b),
            Body::Remote { bytes, .. } => bytes.len(),
            Body::Taken => 0,
        }
    }

    /// Decodes a message from another context that is tagged as a `T`.
    fn decode<T: Message>(&mut self) {
        let Body::Remote { tag, bytes } = &self.body else {
            return;
        };
        if *tag != type_tag::<T>() {
            return;
        }
        let decode = || match postcard::take_from_bytes::<T>(bytes) {
            Ok((v, [])) => Ok(v),
            Ok((_, rest)) => Err(format!("{} unexpected trailing bytes", rest.len())),
            Err(e) => Err(e.to_string()),
        };
        // Contexts and Senders in the message bind to this node's router.
        let decoded = match crate::node::local() {
            Some(local) => match &local.shared.router {
                Some(router) => router.decoding(decode),
                None => decode(),
            },
            None => decode(),
        };
        self.body = match decoded {
            Ok(v) => Body::Local(Box::new(v)),
            Err(detail) => {
                let type_name = std::any::type_name::<T>().to_owned();
                tracing::warn!(
                    "a message from another context tagged as {type_name} does not decode as one: {detail}"
                );
                Body::Local(Box::new(Undecodable { type_name, detail }))
            }
        };
    }
}

impl std::fmt::Debug for Envelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.body {
            Body::Local(_) => f.write_str("Envelope(local)"),
            Body::Remote { tag, bytes } => {
                write!(f, "Envelope(remote {tag:#x}, {} bytes)", bytes.len())
            }
            Body::Taken => f.write_str("Envelope(taken)"),
        }
    }
}
