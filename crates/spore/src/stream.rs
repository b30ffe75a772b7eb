//! Byte-stream I/O: one reader task and one writer task per stream, on the
//! broker's event loop. Payloads are never copied on the way out (vectored
//! writes of header + payload `Bytes`), and a large incoming frame is read
//! straight into one contiguous buffer that becomes its payload.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use spore_proto::{DecodeEvent, Decoder, Frame, HEADER_LEN};
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;

use crate::sys;

/// Reads are issued for at least this many bytes.
pub(crate) const READ_CHUNK: usize = 128 * 1024;
/// At most this many iovecs per `writev` (well under IOV_MAX).
const MAX_IOVECS: usize = 128;

/// Makes `fd` non-blocking.
pub(crate) fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(fd)?;
    rustix::fs::fcntl_setfl(fd, flags | rustix::fs::OFlags::NONBLOCK)?;
    Ok(())
}

/// Makes `fd` non-blocking and registers it with the current runtime for
/// reading.
pub(crate) fn async_reader(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    set_nonblocking(&fd)?;
    sys::register(fd, tokio::io::Interest::READABLE)
}

/// The sending half of a stream, shared by everyone who routes to it.
///
/// Whoever sends while the stream is idle writes at once from its own
/// thread: a call costs no wake-up of the I/O loop. Frames sent while
/// another thread is writing are queued and go out in that thread's next
/// `writev` (so writes batch under load). When the pipe is full, the writer
/// task on the I/O loop takes over and waits for room.
#[derive(Debug, Clone)]
pub(crate) struct StreamSender {
    shared: Arc<Shared>,
    /// Dropped with the last clone: tells the writer task to finish.
    _senders: Arc<SendersGone>,
    done: tokio::sync::watch::Receiver<bool>,
}

#[derive(Debug)]
struct Shared {
    /// Non-blocking; registered with the reactor only while the writer task
    /// waits for room (see `flush_waiting`).
    fd: OwnedFd,
    state: Mutex<WriteState>,
    wake_task: Notify,
    bytes_written: Arc<AtomicU64>,
    label: String,
}

#[derive(Debug, Default)]
struct WriteState {
    out: Outbox,
    writer: Writer,
    /// A write failed: the stream is dead, nothing more is queued.
    failed: bool,
    /// Every sender is gone: flush what is queued, then close.
    senders_gone: bool,
    /// When a sending thread last wrote directly.
    last_direct: Option<Instant>,
}

/// Who is writing the queued output. Invariant: `Idle` implies an empty queue.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Writer {
    #[default]
    Idle,
    /// A sending thread, inside [`StreamSender::send`].
    Sender,
    /// The writer task, waiting for room in the pipe or socket.
    Task,
}

#[derive(Debug)]
struct SendersGone(Arc<Shared>);

impl Drop for SendersGone {
    fn drop(&mut self) {
        self.0.state.lock().unwrap().senders_gone = true;
        self.0.wake_task.notify_one();
    }
}

/// A sending thread writes at most this many rounds before handing a
/// still-busy stream to the writer task: it must not be kept writing for others forever.
const SENDER_ROUNDS: usize = 4;

/// A frame sent this soon after a direct write is left to the writer task,
/// to batch with those that follow. Well under a call's round trip, so
/// one-at-a-time calls are always written directly.
const BURST_WINDOW: Duration = Duration::from_micros(10);

impl StreamSender {
    /// Writes or queues a frame; gives it back when the stream is dead.
    pub(crate) fn send(&self, frame: Frame) -> Result<(), Frame> {
        let shared = &self.shared;
        let mut st = shared.state.lock().unwrap();
        if st.failed {
            return Err(frame);
        }
        st.out.push_frame(frame);
        if st.writer != Writer::Idle {
            return Ok(()); // the current writer picks it up
        }
        // Frames sent in quick succession (a burst of calls or replies) go
        // to the writer task, which sends them together: one wake-up of the
        // I/O loop for the burst instead of one system call per frame.
        let now = Instant::now();
        if st
            .last_direct
            .is_some_and(|t| now.duration_since(t) < BURST_WINDOW)
        {
            st.writer = Writer::Task;
            drop(st);
            shared.wake_task.notify_one();
            return Ok(());
        }
        st.last_direct = Some(now);
        st.writer = Writer::Sender;
        for _ in 0..SENDER_ROUNDS {
            let mut batch = st.out.take();
            drop(st);
            let (n, res) = write_now(&shared.fd, &mut batch);
            shared.bytes_written.fetch_add(n as u64, Ordering::Relaxed);
            st = shared.state.lock().unwrap();
            st.out.put_back(batch);
            match res {
                Ok(_) if st.out.is_empty() => {
                    st.writer = Writer::Idle;
                    return Ok(());
                }
                Ok(_) => continue, // others queued while we wrote
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    shared.fail(st, &e);
                    return Ok(());
                }
            }
        }
        st.writer = Writer::Task;
        drop(st);
        shared.wake_task.notify_one();
        Ok(())
    }

    /// Bytes written to the stream so far (shared, live).
    pub(crate) fn bytes_written(&self) -> Arc<AtomicU64> {
        self.shared.bytes_written.clone()
    }

    /// Gives up on the stream (its reader ended): shuts the socket both ways
    /// so a writer waiting for room stops now and the peer sees EOF, even if
    /// clones of this sender are still around.
    pub(crate) fn abort(&self) {
        let _ = rustix::net::shutdown(&self.shared.fd, rustix::net::Shutdown::Both);
    }

    /// Drops this sender and waits until the writer has written everything
    /// queued and closed the stream (other clones must be gone too).
    pub(crate) async fn closed(self) {
        let mut done = self.done;
        drop((self.shared, self._senders));
        let _ = done.wait_for(|d| *d).await;
    }
}

impl Shared {
    /// The stream is dead: drop what is queued and shut the socket both
    /// ways, so its reader ends too and the router fails every call waiting
    /// on it (frames lost here are never silently lost to a caller).
    fn fail(&self, mut st: MutexGuard<'_, WriteState>, e: &io::Error) {
        st.failed = true;
        st.writer = Writer::Idle;
        st.out = Outbox::default();
        drop(st);
        self.wake_task.notify_one();
        let _ = rustix::net::shutdown(&self.fd, rustix::net::Shutdown::Both);
        tracing::debug!("stream to {} closed on write: {e}", self.label);
    }
}

/// Writes from `batch` without blocking until it is empty (`Ok`), the
/// descriptor would block, or a write fails; also returns the bytes written.
fn write_now(fd: &OwnedFd, batch: &mut Outbox) -> (usize, io::Result<()>) {
    let mut total = 0;
    while !batch.is_empty() {
        match batch.writev(fd) {
            Ok(n) => total += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (total, Err(e)),
        }
    }
    (total, Ok(()))
}

/// Starts the writer task for `fd` and returns its sender. `preamble` is
/// written first (handshake bytes queued before frames). The task ends, and
/// the fd closes, when every sender is dropped or a write fails.
pub(crate) fn spawn_writer(
    fd: OwnedFd,
    preamble: Bytes,
    label: String,
) -> io::Result<StreamSender> {
    set_nonblocking(&fd)?;
    let mut state = WriteState::default();
    if !preamble.is_empty() {
        state.out.push(preamble);
        state.writer = Writer::Task;
    }
    let shared = Arc::new(Shared {
        fd,
        state: Mutex::new(state),
        wake_task: Notify::new(),
        bytes_written: Arc::default(),
        label,
    });
    let (done_tx, done) = tokio::sync::watch::channel(false);
    let task_shared = shared.clone();
    tokio::spawn(async move {
        writer_task(&task_shared).await;
        // A socket stream is also read through another descriptor of the
        // same socket: closing ours alone would not tell the peer. Pipes
        // refuse this (ENOTSOCK) and need nothing more.
        let _ = rustix::net::shutdown(&task_shared.fd, rustix::net::Shutdown::Write);
        // The last reference closes the fd once every sender is gone too.
        drop(task_shared);
        let _ = done_tx.send(true);
    });
    Ok(StreamSender {
        _senders: Arc::new(SendersGone(shared.clone())),
        shared,
        done,
    })
}

/// Writes whenever a sender hands the stream over (the pipe was full), and
/// finishes once the stream failed or every sender is gone and all is written.
async fn writer_task(shared: &Shared) {
    loop {
        let notified = shared.wake_task.notified();
        let my_turn = {
            let st = shared.state.lock().unwrap();
            match st.writer {
                _ if st.failed => return,
                Writer::Task => true,
                // Idle means nothing is queued (see `Writer`).
                Writer::Idle if st.senders_gone => return,
                Writer::Idle | Writer::Sender => false,
            }
        };
        if !my_turn {
            notified.await;
            continue;
        }
        if let Err(e) = flush_waiting(shared).await {
            shared.fail(shared.state.lock().unwrap(), &e);
            return;
        }
    }
}

/// The writer task's turn: write until the queue is empty, waiting for room.
async fn flush_waiting(shared: &Shared) -> io::Result<()> {
    // Registered only while it must wait: a socket reports room after every
    // read its peer makes, and an always-registered writer would wake the
    // I/O loop for each.
    let mut registered = None;
    loop {
        let mut batch = {
            let mut st = shared.state.lock().unwrap();
            if st.out.is_empty() {
                st.writer = Writer::Idle;
                return Ok(());
            }
            st.out.take()
        };
        let (n, res) = write_now(&shared.fd, &mut batch);
        shared.bytes_written.fetch_add(n as u64, Ordering::Relaxed);
        shared.state.lock().unwrap().out.put_back(batch);
        match res {
            Ok(()) => {
                // Producers may keep this loop busy forever: let the other
                // streams on this I/O loop have their turn.
                tokio::task::consume_budget().await;
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        let fd = match &registered {
            Some(fd) => fd,
            None => registered.insert(sys::register_borrowed(
                shared.fd.as_fd(),
                tokio::io::Interest::WRITABLE,
            )?),
        };
        // Wait for room. Clearing the readiness we were handed is safe:
        // tokio keeps any that arrived since, and the next write tells.
        let mut guard = fd.writable().await?;
        guard.clear_ready();
    }
}

/// Pending output as a queue of byte chunks (headers and payloads).
#[derive(Debug, Default)]
struct Outbox {
    chunks: VecDeque<Bytes>,
}

impl Outbox {
    fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Takes the queued chunks, leaving this outbox empty (for appending
    /// while they are written).
    fn take(&mut self) -> Outbox {
        Outbox {
            chunks: std::mem::take(&mut self.chunks),
        }
    }

    /// Puts what is left of a taken batch back in front of what was queued since.
    fn put_back(&mut self, mut batch: Outbox) {
        if batch.is_empty() {
            return;
        }
        batch.chunks.append(&mut self.chunks);
        self.chunks = batch.chunks;
    }

    /// One `writev` of the front chunks; consumes what was written.
    fn writev(&mut self, fd: &OwnedFd) -> io::Result<usize> {
        let slices: Vec<IoSlice<'_>> = self
            .chunks
            .iter()
            .take(MAX_IOVECS)
            .map(|c| IoSlice::new(c))
            .collect();
        let n = rustix::io::writev(fd, &slices)?;
        self.consume(n);
        Ok(n)
    }

    fn push(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.chunks.push_back(b);
        }
    }

    fn push_frame(&mut self, f: Frame) {
        // Small payloads are copied next to their header: fewer iovecs.
        let small = f.payload.len() <= 256;
        let mut head =
            BytesMut::with_capacity(HEADER_LEN + if small { f.payload.len() } else { 0 });
        f.header.encode(&mut head);
        if small {
            head.extend_from_slice(&f.payload);
            self.push(head.freeze());
        } else {
            self.push(head.freeze());
            self.push(f.payload);
        }
    }

    fn consume(&mut self, mut n: usize) {
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
    /// Nothing arrived for a whole heartbeat window (the peer is stopped,
    /// hung, or the network between us is gone).
    Silent(Duration),
}

impl std::fmt::Display for StreamEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamEnd::Eof => f.write_str("EOF on stream"),
            StreamEnd::Error(e) => write!(f, "read error: {e}"),
            StreamEnd::Corrupt(e) => write!(f, "{e}"),
            StreamEnd::Silent(window) => write!(
                f,
                "no bytes for {window:?} (the heartbeat window): the peer is stopped, hung or unreachable"
            ),
        }
    }
}

/// A stream's liveness check: ping the peer every quarter `window`, and
/// declare it down when nothing at all (frames or parts of frames) has
/// arrived for `window`.
pub(crate) struct Heartbeat<P> {
    pub(crate) window: Duration,
    /// Sends one heartbeat frame to the peer.
    pub(crate) ping: P,
}

/// Reads frames from `fd` until it ends, handing each decoded event to
/// `on_event`. `buf` may already hold bytes read during the handshake.
/// With a heartbeat, a peer that sends nothing for its window ends the
/// stream with [`StreamEnd::Silent`] even though the connection is open.
pub(crate) async fn read_frames<P: FnMut()>(
    fd: AsyncFd<OwnedFd>,
    mut buf: BytesMut,
    max_message_size: u32,
    mut heartbeat: Option<Heartbeat<P>>,
    mut on_event: impl FnMut(DecodeEvent),
) -> StreamEnd {
    let mut decoder = Decoder::new(max_message_size);
    let far = Duration::from_secs(86_400 * 365);
    let (window, every) = match &heartbeat {
        Some(h) => (h.window, h.window / 4),
        None => (far, far),
    };
    let now = tokio::time::Instant::now();
    let mut last_read = now;
    let mut next_ping = now + every;
    let timer = tokio::time::sleep_until(next_ping.min(last_read + window));
    tokio::pin!(timer);
    loop {
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(ev)) => on_event(ev),
                Ok(None) => break,
                Err(e) => return StreamEnd::Corrupt(e),
            }
        }
        let want = decoder.wanted(&buf).max(READ_CHUNK);
        tokio::select! {
            // Bytes that are waiting count before the verdict on silence.
            biased;
            res = read_some(&fd, &mut buf, want) => match res {
                Ok(0) => return StreamEnd::Eof,
                Ok(_) => last_read = tokio::time::Instant::now(),
                Err(e) => return StreamEnd::Error(e),
            },
            // `read_some` is cancel-safe: what it read is already in `buf`.
            () = &mut timer, if heartbeat.is_some() => {
                let now = tokio::time::Instant::now();
                if now >= last_read + window {
                    return StreamEnd::Silent(window);
                }
                if now >= next_ping {
                    if let Some(h) = heartbeat.as_mut() {
                        (h.ping)();
                    }
                    next_ping = now + every;
                }
                timer.as_mut().reset(next_ping.min(last_read + window));
            }
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
            Ok(Ok(n)) if n > 0 && n < max => {
                // A short read drained the fd: wait for the next edge rather
                // than spend a read on EAGAIN. (Readiness that arrived since
                // is kept: tokio clears only the readiness it handed out.)
                guard.clear_ready();
                return Ok(n);
            }
            Ok(res) => return res,
            Err(_would_block) => continue,
        }
    }
}

/// Reads one `\n`-terminated line (without it, or a `\r` before it) of at most `max` bytes from
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
            // ssh ends its diagnostics with "\r\n".
            let text = line[..pos].strip_suffix(b"\r").unwrap_or(&line[..pos]);
            return Ok(Some(String::from_utf8_lossy(text).into_owned()));
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
