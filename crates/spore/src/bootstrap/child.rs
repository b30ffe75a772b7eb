//! The child's side: what `spore::init()` runs when the image was started
//! as a context. It never returns.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::os::fd::OwnedFd;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use spore_proto::messages::{
    CallRequest, ChildConfig, LogOrigin, LogRecord, RESET_CHAIN, RemoteError, RemoteErrorKind,
};
use spore_proto::{ContextId, Frame, HEADER_LEN, Header, handles};
use tokio::sync::Notify;

use crate::call::{self, Failure, Invoke, failure};
use crate::pool::CallPool;
use crate::router::{Identity, Inner, Settings};
use crate::{stream, sys};

/// The parent's stream always has this ID in a child.
const PARENT_STREAM: u32 = 0;
/// Largest CONFIGURE payload accepted.
const MAX_CONFIG: u32 = 1 << 20;

/// State only a child has.
struct ChildState {
    inner: Arc<Inner>,
    /// Runs blocking remote functions.
    pool: CallPool,
    inflight: AtomicUsize,
    idle: Notify,
    /// Set by [`detach`]: the context outlives its parent.
    detached: std::sync::atomic::AtomicBool,
    /// Pipelined call chains with calls queued or a stored error.
    chains: Mutex<HashMap<ChainKey, Chain>>,
    cfg: ChildConfig,
}

static CHILD: OnceLock<ChildState> = OnceLock::new();

/// At most this many blocking remote functions run at once.
const MAX_BLOCKING_THREADS: usize = 512;

fn fatal(msg: impl std::fmt::Display) -> ! {
    let _ = writeln!(std::io::stderr(), "spore child: {msg}");
    std::process::exit(70)
}

/// Reads exactly `n` bytes from fd 0, never more: what follows belongs to
/// the frame stream.
fn read_exact_stdin(n: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match rustix::io::read(rustix::stdio::stdin(), &mut buf[got..]) {
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("stream ended after {got} of {n} bytes"),
                ));
            }
            Ok(k) => got += k,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(buf)
}

fn read_config() -> ChildConfig {
    let head = read_exact_stdin(HEADER_LEN)
        .unwrap_or_else(|e| fatal(format!("reading the config frame: {e}")));
    let header = Header::parse(&head).unwrap_or_else(|e| fatal(format!("config frame: {e}")));
    if header.handle != handles::CONFIGURE || header.len > MAX_CONFIG {
        fatal(format!(
            "expected a CONFIGURE frame of at most {MAX_CONFIG} bytes, got handle {} with {} bytes",
            header.handle, header.len
        ));
    }
    let body = read_exact_stdin(header.len as usize)
        .unwrap_or_else(|e| fatal(format!("reading the config: {e}")));
    // The build comes first: a parent of another build is named as such,
    // not as an undecodable config.
    if let Ok((build, _)) = postcard::take_from_bytes::<String>(&body) {
        if build != crate::build_id() {
            fatal(format!(
                "parent build {build} differs from this image's build {}",
                crate::build_id()
            ));
        }
    }
    postcard::from_bytes(&body).unwrap_or_else(|e| fatal(format!("undecodable config: {e}")))
}

/// Runs this process as a child context. Never returns.
pub(crate) fn run() -> ! {
    // The stream may arrive non-blocking (whoever started us may have set
    // O_NONBLOCK on it); the start-up reads below are blocking reads.
    if let Ok(flags) = rustix::fs::fcntl_getfl(rustix::stdio::stdin()) {
        let _ =
            rustix::fs::fcntl_setfl(rustix::stdio::stdin(), flags - rustix::fs::OFlags::NONBLOCK);
    }
    let cfg = read_config();
    if cfg.build_id != crate::build_id() {
        fatal(format!(
            "parent build {} differs from this image's build {}",
            cfg.build_id,
            crate::build_id()
        ));
    }
    sys::set_process_name(&format!("spore:{}", cfg.name));

    // Move the stream off fds 0 and 1 (close-on-exec, so user subprocesses
    // never inherit it), give user code /dev/null as stdin and a pipe as
    // stdout that the I/O loop forwards. stderr stays as it is: a pipe the
    // parent reads directly, so even a crash's last words get out.
    let setup = || -> std::io::Result<(OwnedFd, OwnedFd, OwnedFd)> {
        let stream_in = rustix::io::fcntl_dupfd_cloexec(rustix::stdio::stdin(), 3)?;
        let stream_out = rustix::io::fcntl_dupfd_cloexec(rustix::stdio::stdout(), 3)?;
        let null = rustix::fs::open(
            "/dev/null",
            rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?;
        rustix::stdio::dup2_stdin(&null)?;
        let (cap_r, cap_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        rustix::stdio::dup2_stdout(&cap_w)?;
        Ok((stream_in, stream_out, cap_r))
    };
    let (stream_in, stream_out, capture) =
        setup().unwrap_or_else(|e| fatal(format!("setting up stdio: {e}")));
    #[cfg(feature = "fault-injection")]
    if let Ok(raw) = rustix::io::fcntl_dupfd_cloexec(&stream_out, 3) {
        let _ = RAW_STREAM.set(raw);
    }

    let logs = crate::logging::install_forwarder(cfg.log_level);
    install_panic_hook();
    tracing::debug!(pid = std::process::id(), "context {} starting", cfg.name);

    let io_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| fatal(format!("I/O runtime: {e}")));
    let worker_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("spore-worker")
        .enable_all()
        .build()
        .unwrap_or_else(|e| fatal(format!("worker runtime: {e}")));

    // Confirm: from here on only frames flow on the stream.
    let up = spore_proto::handshake::up_line(&crate::build_id());
    if let Err(e) = rustix::io::write(&stream_out, up.as_bytes()) {
        fatal(format!("writing SPORE-UP: {e}"));
    }

    let settings = Settings {
        max_message_size: cfg.max_message_size,
        shutdown_grace: Duration::from_millis(cfg.shutdown_grace_ms),
        debug: cfg.debug,
        unidirectional: cfg.unidirectional,
        heartbeat: (cfg.heartbeat_ms > 0).then(|| Duration::from_millis(cfg.heartbeat_ms)),
        ..Settings::default()
    };
    let identity = Identity {
        my_id: cfg.context_id,
        name: cfg.name.clone(),
        parent_ids: cfg.parent_ids.clone(),
        parent_stream: Some(PARENT_STREAM),
    };
    let inner = Inner::new(
        identity,
        settings,
        io_rt.handle().clone(),
        Some(worker_rt.handle().clone()),
        None,
    );
    inner.add_internal(handles::CALL_FUNCTION, on_call);
    inner.add_internal(handles::SHUTDOWN, on_shutdown);
    inner.add_route_handlers();
    inner.add_image_handlers();
    let max = cfg.max_message_size;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let state = ChildState {
        inner: inner.clone(),
        pool: CallPool::new(
            MAX_BLOCKING_THREADS,
            cores,
            Some(worker_rt.handle().clone()),
        ),
        inflight: AtomicUsize::new(0),
        idle: Notify::new(),
        chains: Mutex::new(HashMap::new()),
        detached: std::sync::atomic::AtomicBool::new(false),
        cfg,
    };
    if CHILD.set(state).is_err() {
        fatal("child state initialised twice");
    }

    // The I/O loop gets a thread of its own: `init()` may be called from
    // inside the user's runtime (`#[tokio::main]`), where blocking on another
    // runtime is not allowed. The calling thread just waits.
    let io_thread = std::thread::Builder::new()
        .name("spore-io".to_owned())
        .spawn(move || serve(io_rt, inner, stream_in, stream_out, capture, logs, max));
    match io_thread {
        Ok(t) => {
            let _ = t.join();
            std::process::exit(0)
        }
        Err(e) => fatal(format!("starting the I/O thread: {e}")),
    }
}

/// The child's I/O loop: runs until the parent's stream ends, then exits.
fn serve(
    io_rt: tokio::runtime::Runtime,
    inner: Arc<Inner>,
    stream_in: OwnedFd,
    stream_out: OwnedFd,
    capture: OwnedFd,
    logs: tokio::sync::mpsc::UnboundedReceiver<LogRecord>,
    max: u32,
) -> ! {
    io_rt.block_on(async move {
        let fd_in =
            stream::async_reader(stream_in).unwrap_or_else(|e| fatal(format!("stream: {e}")));
        let writer = stream::spawn_writer(stream_out, Bytes::new(), "parent".to_owned())
            .unwrap_or_else(|e| fatal(format!("stream: {e}")));
        inner.add_stream(PARENT_STREAM, writer);
        tokio::spawn(crate::logging::forward_logs(inner.clone(), logs));
        let capture =
            stream::async_reader(capture).unwrap_or_else(|e| fatal(format!("stdout capture: {e}")));
        tokio::spawn(forward_stdout(inner.clone(), capture));
        let ev_inner = inner.clone();
        let heartbeat = (inner.parent_ids.first()).and_then(|&p| inner.heartbeat_to(p));
        let end = stream::read_frames(fd_in, BytesMut::new(), max, heartbeat, move |ev| {
            ev_inner.on_event(ev, PARENT_STREAM)
        })
        .await;
        // The parent is gone (or sent garbage): nobody is left to serve.
        if let stream::StreamEnd::Corrupt(e) = &end {
            let _ = writeln!(
                std::io::stderr(),
                "spore child {}: {e}; exiting",
                inner.name
            );
        }
        if CHILD
            .get()
            .is_some_and(|c| c.detached.load(Ordering::SeqCst))
        {
            orphaned(&inner, end.to_string()).await;
        }
        std::process::exit(0)
    })
}

thread_local! {
    /// Set by the panic hook while a call runs on this thread.
    static PANIC: RefCell<Option<Failure>> = const { RefCell::new(None) };
    static IN_CALL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !IN_CALL.get() {
            return default(info);
        }
        let msg = if let Some(s) = info.payload().downcast_ref::<&str>() {
            (*s).to_owned()
        } else if let Some(s) = info.payload().downcast_ref::<String>() {
            s.clone()
        } else {
            "panic with a non-string payload".to_owned()
        };
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
        let debug = CHILD.get().is_some_and(|c| c.cfg.debug);
        let bt = std::backtrace::Backtrace::capture();
        let bt = if debug || bt.status() == std::backtrace::BacktraceStatus::Captured {
            Some(if debug {
                std::backtrace::Backtrace::force_capture().to_string()
            } else {
                bt.to_string()
            })
        } else {
            None
        };
        let mut f = failure(RemoteErrorKind::Panicked, "panic", msg);
        f.location = location;
        f.backtrace = bt;
        PANIC.with(|p| *p.borrow_mut() = Some(f));
    }));
}

fn panic_failure() -> Failure {
    PANIC
        .with(|p| p.borrow_mut().take())
        .unwrap_or_else(|| failure(RemoteErrorKind::Panicked, "panic", "panic"))
}

/// Runs `f` marked as "in a call", so the panic hook records instead of printing.
fn in_call<R>(f: impl FnOnce() -> R) -> R {
    let was = IN_CALL.replace(true);
    let r = f();
    IN_CALL.set(was);
    r
}

type Outcome = Result<Vec<u8>, Failure>;

/// A call accepted for running.
struct Job {
    header: Header,
    function: String,
    args: Bytes,
}

/// A pipelined chain: its caller and its ID.
type ChainKey = (ContextId, u64);

/// The calls of one chain, run one at a time in arrival order.
#[derive(Default)]
struct Chain {
    running: bool,
    /// The first failure since the last reset: every later call fails with it.
    error: Option<Failure>,
    queue: VecDeque<Job>,
}

/// CALL_FUNCTION: check the caller, then run the function off the I/O loop
/// (in its chain's order, if it belongs to one).
fn on_call(inner: &Arc<Inner>, frame: Frame) {
    let Some(state) = CHILD.get() else { return };
    let header = frame.header;
    // Only a parent (or this context) may make it run code: never a child
    // or a sibling.
    if !inner.parent_ids.contains(&header.src) && header.src != inner.my_id {
        let reason = format!(
            "{} refused CALL_FUNCTION from context {}, which is not one of its parents",
            inner.name, header.src
        );
        tracing::warn!("{reason}");
        if let Some(dead) = Frame::dead_reply(&header, inner.my_id, &reason) {
            inner.route(dead);
        }
        return;
    }
    if inner.is_shutting_down() {
        let reason = format!("{} is shutting down", inner.name);
        if let Some(dead) = Frame::dead_reply(&header, inner.my_id, &reason) {
            inner.route(dead);
        }
        return;
    }
    let (job, chain) = match postcard::take_from_bytes::<CallRequest>(&frame.payload) {
        Ok((req, rest)) => {
            let offset = frame.payload.len() - rest.len();
            let job = Job {
                header,
                function: req.function.to_owned(),
                args: frame.payload.slice(offset..),
            };
            (job, req.chain)
        }
        Err(e) => {
            let f = failure(
                RemoteErrorKind::BadArguments,
                "CallRequest",
                format!("undecodable call request: {e}"),
            );
            reply(inner, &header, "?", Err(f));
            return;
        }
    };
    let Some(chain) = chain else {
        run_job(inner, job, None);
        return;
    };
    let key = (header.src, chain);
    let start = {
        let mut chains = state.chains.lock().unwrap();
        let entry = chains.entry(key).or_default();
        entry.queue.push_back(job);
        !std::mem::replace(&mut entry.running, true)
    };
    if start {
        advance_chain(inner, key, None);
    }
}

/// What to do with the next call of a chain.
enum ChainStep {
    Run(Job),
    Fail(Job, Failure),
    Reset(Job),
}

/// Moves chain `key` on after its running call ended (with `failed`, if it
/// failed) or when its first call arrives: replies at once to calls that
/// fail with the chain's stored error or reset it, and starts the next one
/// that must run.
fn advance_chain(inner: &Arc<Inner>, key: ChainKey, mut failed: Option<Failure>) {
    let Some(state) = CHILD.get() else { return };
    loop {
        let step = {
            let mut chains = state.chains.lock().unwrap();
            let Some(chain) = chains.get_mut(&key) else {
                return;
            };
            if let Some(f) = failed.take() {
                chain.error.get_or_insert(f);
            }
            match chain.queue.pop_front() {
                None => {
                    chain.running = false;
                    if chain.error.is_none() {
                        chains.remove(&key);
                    }
                    return;
                }
                Some(job) if job.function == RESET_CHAIN => {
                    chain.error = None;
                    ChainStep::Reset(job)
                }
                Some(job) => match &chain.error {
                    Some(e) => ChainStep::Fail(job, e.clone()),
                    None => ChainStep::Run(job),
                },
            }
        };
        match step {
            ChainStep::Run(job) => match run_job(inner, job, Some(key)) {
                // Started: it moves the chain on when it ends.
                None => return,
                // Answered at once (no such function): go on here, not
                // by recursing, however many such calls are queued.
                Some(f) => failed = Some(f),
            },
            ChainStep::Fail(job, e) => reply(inner, &job.header, &job.function, Err(e)),
            ChainStep::Reset(job) => {
                let ok = call::encode_value(()).expect("() always serializes");
                reply(inner, &job.header, RESET_CHAIN, Ok(ok));
            }
        }
    }
}

/// Looks the function up and runs it: blocking functions on the pool,
/// async ones on the worker runtime, which finish the call. A function that
/// does not exist is answered here, and its failure returned.
fn run_job(inner: &Arc<Inner>, job: Job, chain: Option<ChainKey>) -> Option<Failure> {
    let state = CHILD.get()?;
    let Job {
        header,
        function,
        args,
    } = job;
    let Some(entry) = call::lookup(&function) else {
        let f = failure(
            RemoteErrorKind::NoSuchFunction,
            "NoSuchFunction",
            format!("no such function {function} in {}", inner.name),
        );
        let f = Box::new(located(inner, &function, *f));
        reply(inner, &header, &function, Err(f.clone()));
        return Some(f);
    };
    let worker = inner
        .worker
        .clone()
        .expect("children have a worker runtime");
    state.inflight.fetch_add(1, Ordering::SeqCst);
    let inner = inner.clone();
    match &entry.invoke {
        Invoke::Blocking(f) => {
            let f = *f;
            state.pool.submit(move || {
                let out = in_call(|| std::panic::catch_unwind(AssertUnwindSafe(|| f(&args))));
                finish_call(&inner, &header, &function, flatten(out), chain);
            });
        }
        Invoke::Async(f) => {
            let fut = f(args);
            worker.spawn(async move {
                let out = AssertUnwindSafe(InCall(fut)).catch_unwind().await;
                finish_call(&inner, &header, &function, flatten(out), chain);
            });
        }
    }
    None
}

/// Polls a future with the "in a call" flag set on the polling thread.
struct InCall<F>(F);

impl<F: std::future::Future + Unpin> std::future::Future for InCall<F> {
    type Output = F::Output;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        in_call(|| std::pin::Pin::new(&mut self.0).poll(cx))
    }
}

fn flatten(out: std::thread::Result<Result<Vec<u8>, Failure>>) -> Outcome {
    match out {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(f)) => Err(f),
        Err(_) => Err(panic_failure()),
    }
}

fn finish_call(
    inner: &Arc<Inner>,
    header: &Header,
    function: &str,
    out: Outcome,
    chain: Option<ChainKey>,
) {
    let out = out.map_err(|f| Box::new(located(inner, function, *f)));
    let failed = match (&out, chain) {
        (Err(f), Some(_)) => Some(f.clone()),
        _ => None,
    };
    reply(inner, header, function, out);
    if let Some(key) = chain {
        advance_chain(inner, key, failed);
    }
    if let Some(state) = CHILD.get() {
        if state.inflight.fetch_sub(1, Ordering::SeqCst) == 1 {
            state.idle.notify_waiters();
        }
    }
}

fn reply(inner: &Arc<Inner>, header: &Header, function: &str, out: Outcome) {
    let max = inner.settings.max_message_size as usize;
    let payload = match out {
        Ok(v) if v.len() <= max => v,
        Ok(v) => call::encode_error(&located(
            inner,
            function,
            *failure(
                RemoteErrorKind::TooLarge,
                "TooLarge",
                format!(
                    "the reply {}",
                    spore_proto::too_large_reason(v.len() as u64, max as u32)
                ),
            ),
        )),
        Err(failure) => {
            if header.reply_to == 0 {
                tracing::warn!(
                    "{function} (called without reply) failed: {}: {}",
                    failure.type_name,
                    failure.message
                );
                return;
            }
            call::encode_error(&located(inner, function, *failure))
        }
    };
    if header.reply_to == 0 {
        return;
    }
    let frame = Frame::new(
        Header::new(header.src, inner.my_id, header.reply_to),
        payload,
    );
    inner.route(frame);
}

/// Fills in where a failure happened, unless it already says (a chain's
/// stored error names the call that failed).
fn located(inner: &Inner, function: &str, f: RemoteError) -> RemoteError {
    RemoteError {
        context: if f.context.is_empty() {
            inner.name.clone()
        } else {
            f.context
        },
        function: if f.function.is_empty() {
            function.to_owned()
        } else {
            f.function
        },
        ..f
    }
}

/// SHUTDOWN: stop taking calls, pass it on, let running calls finish within
/// the grace period, flush output, exit.
fn on_shutdown(inner: &Arc<Inner>, frame: Frame) {
    if !inner.parent_ids.contains(&frame.header.src) && frame.header.src != inner.my_id {
        tracing::warn!(
            "ignored SHUTDOWN from context {}, which is not one of my parents",
            frame.header.src
        );
        return;
    }
    if inner.begin_shutdown() {
        return;
    }
    let grace = inner.settings.shutdown_grace;
    // Whatever user code does, the process ends after the grace period.
    std::thread::spawn(move || {
        std::thread::sleep(grace);
        std::process::exit(0);
    });
    inner.shutdown_children();
    let inner = inner.clone();
    inner.rt.clone().spawn(async move {
        if let Some(state) = CHILD.get() {
            loop {
                let idle = state.idle.notified();
                if state.inflight.load(Ordering::SeqCst) == 0 {
                    break;
                }
                idle.await;
            }
        }
        inner.fail_all_handles(&format!("{} shut down", inner.name));
        // Close our stdout so the capture reader drains and ends.
        let _ = std::io::stdout().flush();
        if let Ok(null) = rustix::fs::open(
            "/dev/null",
            rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        ) {
            let _ = rustix::stdio::dup2_stdout(&null);
        }
        STDOUT_DONE.notified().await;
        crate::logging::flush_logs().await;
        // Drop the stream so its writer flushes what is queued and closes.
        if let Some(w) = inner.take_stream(PARENT_STREAM) {
            w.closed().await;
        }
        std::process::exit(0);
    });
}

static STDOUT_DONE: Notify = Notify::const_new();

/// Forwards what user code writes to stdout, line by line, to the master.
async fn forward_stdout(inner: Arc<Inner>, fd: tokio::io::unix::AsyncFd<OwnedFd>) {
    let mut buf = BytesMut::new();
    loop {
        let n = stream::read_some(&fd, &mut buf, stream::READ_CHUNK).await;
        let eof = !matches!(n, Ok(k) if k > 0);
        while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            let line = buf.split_to(pos + 1);
            send_line(&inner, LogOrigin::Stdout, &line[..pos]);
        }
        while buf.len() >= crate::logging::MAX_LINE_PIECE || (eof && !buf.is_empty()) {
            let piece = buf.split_to(buf.len().min(crate::logging::MAX_LINE_PIECE));
            send_line(&inner, LogOrigin::Stdout, &piece);
        }
        if eof {
            STDOUT_DONE.notify_one();
            return;
        }
    }
}

/// Sends one output line to the master as a FORWARD_LOG record.
pub(crate) fn send_line(inner: &Arc<Inner>, origin: LogOrigin, line: &[u8]) {
    let rec = LogRecord {
        origin,
        level: 3,
        target: String::new(),
        message: String::from_utf8_lossy(line).into_owned(),
    };
    crate::logging::send_record(inner, &rec);
}

/// Detaches this context from its parent: it tells its parent (DETACHING),
/// leaves the parent's session, and from then on outlives it.
pub(crate) fn detach() -> std::io::Result<()> {
    let state = CHILD.get().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::Unsupported, "not a child context")
    })?;
    if state.detached.swap(true, Ordering::SeqCst) {
        return Ok(());
    }
    // Signals to the parent's process group (a terminal's ^C) no longer
    // reach it. Fails only for a session leader, which is already apart.
    let _ = rustix::process::setsid();
    let inner = &state.inner;
    let parent = *inner.parent_ids.first().expect("a child has a parent");
    inner
        .send(Frame::new(
            Header::new(parent, inner.my_id, handles::DETACHING),
            Bytes::new(),
        ))
        .map_err(std::io::Error::other)
}

/// A detached context lost its parent: waits on the ancestors wake, stderr
/// (a pipe to the parent) is replaced by /dev/null, and the context runs
/// until its last running call returns.
async fn orphaned(inner: &Arc<Inner>, detail: String) {
    let Some(state) = CHILD.get() else { return };
    if let Ok(null) = rustix::fs::open(
        "/dev/null",
        rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) {
        let _ = rustix::stdio::dup2_stderr(&null);
    }
    let detail = format!(
        "{} is detached and its parent is gone: {detail}",
        inner.name
    );
    inner.stream_lost(PARENT_STREAM, detail.clone());
    inner.forget_lost(&inner.parent_ids, &detail, PARENT_STREAM);
    inner.fail_outside(&detail);
    loop {
        let idle = state.idle.notified();
        if state.inflight.load(Ordering::SeqCst) == 0 {
            break;
        }
        idle.await;
    }
    let _ = std::io::stdout().flush();
}

/// The child's router, when this process is a child context.
pub(crate) fn inner() -> Option<&'static Arc<Inner>> {
    CHILD.get().map(|c| &c.inner)
}

/// A second handle on the parent stream, for tests that forge bytes.
#[cfg(feature = "fault-injection")]
static RAW_STREAM: OnceLock<OwnedFd> = OnceLock::new();

/// Writes `bytes` straight onto the stream to the parent, bypassing the
/// router (the fd is non-blocking: retried until all is written).
#[cfg(feature = "fault-injection")]
pub(crate) fn write_raw_to_parent(mut bytes: &[u8]) -> std::io::Result<()> {
    let fd = RAW_STREAM
        .get()
        .ok_or_else(|| std::io::Error::other("not a child context"))?;
    while !bytes.is_empty() {
        match rustix::io::write(fd, bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(rustix::io::Errno::AGAIN) => std::thread::sleep(Duration::from_micros(100)),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
