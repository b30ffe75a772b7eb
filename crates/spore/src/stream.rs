//! Byte-stream I/O: one reader task and one writer task per stream, on the
//! broker's event loop. Payloads are never copied on the way out (vectored
//! writes of header + payload `Bytes`), and a large incoming frame is read
//! straight into one contiguous buffer that becomes its payload.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Buf, Bytes, BytesMut};
use spore_proto::{DecodeEvent, Decoder, Frame, HEADER_LEN};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use crate::sys;

/// Reads are issued for at least this many bytes.
pub(crate) const READ_CHUNK: usize = 128 * 1024;
/// The writer gathers queued frames into one `writev` up to this size.
const WRITE_BATCH: usize = 128 * 1024;
/// At most this many iovecs per `writev` (well under IOV_MAX).
const MAX_IOVECS: usize = 128;

/// Makes `fd` non-blocking and registers it with the current runtime.
pub(crate) fn async_fd(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    let flags = rustix::fs::fcntl_getfl(&fd)?;
    rustix::fs::fcntl_setfl(&fd, flags | rustix::fs::OFlags::NONBLOCK)?;
    sys::register(fd)
}

/// Asks for 1 MiB pipe buffers: fewer wake-ups for large messages. Best
/// effort: the limit in /proc/sys/fs/pipe-max-size may refuse it.
pub(crate) fn grow_pipe(fd: &OwnedFd) {
    let _ = rustix::pipe::fcntl_setpipe_size(fd, 1 << 20);
}

/// The sending half of a stream, shared by everyone who routes to it.
#[derive(Debug, Clone)]
pub(crate) struct StreamSender {
    tx: mpsc::UnboundedSender<Frame>,
    pub(crate) bytes_written: Arc<AtomicU64>,
    done: tokio::sync::watch::Receiver<bool>,
}

impl StreamSender {
    /// Queues a frame; gives it back when the stream is closed.
    pub(crate) fn send(&self, frame: Frame) -> Result<(), Frame> {
        self.tx.send(frame).map_err(|e| e.0)
    }

    /// Drops this sender and waits until the writer has written everything
    /// queued and closed the stream (other clones must be gone too).
    pub(crate) async fn closed(self) {
        let mut done = self.done;
        drop(self.tx);
        let _ = done.wait_for(|d| *d).await;
    }
}

/// Starts the writer task for `fd` and returns its sender. `preamble` is
/// written first (handshake bytes queued before frames). The task ends, and
/// the fd closes, when every sender is dropped or a write fails.
pub(crate) fn spawn_writer(fd: AsyncFd<OwnedFd>, preamble: Bytes, label: String) -> StreamSender {
    let (tx, mut rx) = mpsc::unbounded_channel::<Frame>();
    let bytes_written = Arc::new(AtomicU64::new(0));
    let stats = bytes_written.clone();
    let (done_tx, done) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut out = Outbox::default();
        if !preamble.is_empty() {
            out.push(preamble);
        }
        loop {
            if out.is_empty() {
                match rx.recv().await {
                    Some(f) => out.push_frame(f),
                    None => break,
                }
            }
            // Batch whatever else is already queued.
            while out.len < WRITE_BATCH {
                match rx.try_recv() {
                    Ok(f) => out.push_frame(f),
                    Err(_) => break,
                }
            }
            match write_some(&fd, &mut out).await {
                Ok(n) => {
                    stats.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::debug!("stream to {label} closed on write: {e}");
                    break;
                }
            }
        }
        drop(fd);
        let _ = done_tx.send(true);
    });
    StreamSender {
        tx,
        bytes_written,
        done,
    }
}

async fn write_some(fd: &AsyncFd<OwnedFd>, out: &mut Outbox) -> io::Result<usize> {
    loop {
        let mut guard = fd.writable().await?;
        let res = guard.try_io(|inner| {
            let slices: Vec<IoSlice<'_>> = out
                .chunks
                .iter()
                .take(MAX_IOVECS)
                .map(|c| IoSlice::new(c))
                .collect();
            rustix::io::writev(inner.get_ref(), &slices).map_err(io::Error::from)
        });
        match res {
            Ok(Ok(n)) => {
                out.consume(n);
                return Ok(n);
            }
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
}

/// Pending output as a queue of byte chunks (headers and payloads).
#[derive(Default)]
struct Outbox {
    chunks: VecDeque<Bytes>,
    len: usize,
    headers: BytesMut,
}

impl Outbox {
    fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    fn push(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.len += b.len();
            self.chunks.push_back(b);
        }
    }

    fn push_frame(&mut self, f: Frame) {
        self.headers.reserve(HEADER_LEN);
        f.header.encode(&mut self.headers);
        let h = self.headers.split().freeze();
        // Small payloads are copied next to their header: fewer iovecs.
        if f.payload.len() <= 256 {
            let mut joined = BytesMut::with_capacity(h.len() + f.payload.len());
            joined.extend_from_slice(&h);
            joined.extend_from_slice(&f.payload);
            self.push(joined.freeze());
        } else {
            self.push(h);
            self.push(f.payload);
        }
    }

    fn consume(&mut self, mut n: usize) {
        self.len -= n;
        while n > 0 {
            let front = self.chunks.front_mut().expect("wrote more than queued");
            if front.len() <= n {
                n -= front.len();
                self.chunks.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }
}

/// How a stream's reading side ended.
#[derive(Debug)]
pub(crate) enum StreamEnd {
    /// The peer closed it.
    Eof,
    /// Reading failed.
    Error(io::Error),
    /// The bytes were not frames.
    Corrupt(spore_proto::DecodeError),
}

impl std::fmt::Display for StreamEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamEnd::Eof => f.write_str("EOF on stream"),
            StreamEnd::Error(e) => write!(f, "read error: {e}"),
            StreamEnd::Corrupt(e) => write!(f, "{e}"),
        }
    }
}

/// Reads frames from `fd` until it ends, handing each decoded event to
/// `on_event`. `buf` may already hold bytes read during the handshake.
pub(crate) async fn read_frames(
    fd: AsyncFd<OwnedFd>,
    mut buf: BytesMut,
    max_message_size: u32,
    mut on_event: impl FnMut(DecodeEvent),
) -> StreamEnd {
    let mut decoder = Decoder::new(max_message_size);
    loop {
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(ev)) => on_event(ev),
                Ok(None) => break,
                Err(e) => return StreamEnd::Corrupt(e),
            }
        }
        let want = decoder.wanted(&buf).max(READ_CHUNK);
        match read_some(&fd, &mut buf, want).await {
            Ok(0) => return StreamEnd::Eof,
            Ok(_) => {}
            Err(e) => return StreamEnd::Error(e),
        }
    }
}

/// One non-blocking read of up to `max` bytes, waiting for readiness.
pub(crate) async fn read_some(
    fd: &AsyncFd<OwnedFd>,
    buf: &mut BytesMut,
    max: usize,
) -> io::Result<usize> {
    loop {
        let mut guard = fd.readable().await?;
        match guard.try_io(|inner| sys::read_into(inner.get_ref(), buf, max)) {
            Ok(res) => return res,
            Err(_would_block) => continue,
        }
    }
}

/// Reads one `\n`-terminated line (without it) of at most `max` bytes from
/// the front of `buf`, reading more from `fd` as needed. Bytes after the
/// line stay in `buf`. `None` at EOF.
pub(crate) async fn read_line(
    fd: &AsyncFd<OwnedFd>,
    buf: &mut BytesMut,
    max: usize,
) -> io::Result<Option<String>> {
    loop {
        if let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            let line = buf.split_to(pos + 1);
            return Ok(Some(String::from_utf8_lossy(&line[..pos]).into_owned()));
        }
        if buf.len() > max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("handshake line longer than {max} bytes"),
            ));
        }
        if read_some(fd, buf, 4096).await? == 0 {
            return Ok(None);
        }
    }
}
