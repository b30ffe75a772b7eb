//! Starting a context, whatever the method (`method.rs` says how the
//! process is started): a local child by exec'ing the image directly (the
//! default, fastest) or through the first stage, which every other method
//! uses; then the handshake, the stream and the route.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[cfg(feature = "fault-injection")]
use bytes::Bytes;
use bytes::{BufMut, BytesMut};
use spore_proto::ContextId;
use spore_proto::handshake::{self, CacheState, FAIL_PREFIX, MAX_LINE};
use spore_proto::messages::{ChildConfig, RouteAdded};
use spore_proto::{Frame, Header, handles};
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

use super::method::{PASSWORD_PROMPT, Prompt, SecretKind, prompt_kind};
use super::{FIRST_STAGE, Image, Method, ShellLaunch};
use crate::error::ConnectError;
use crate::router::{ChildEntry, Context, Inner, OutputStream};
use crate::stream::{self, StreamSender};

/// Lines of a child's stderr kept for error messages.
const TAIL_LINES: usize = 20;

/// A pending connection (from [`crate::Router::local`] or
/// [`crate::Router::sudo`]); await it or call [`Connect::connect_blocking`].
///
/// ```no_run
/// # async fn demo(router: &spore::Router) -> Result<(), spore::ConnectError> {
/// let fast = router.local().await?;                        // exec the image directly
/// let staged = router.local().first_stage(true).await?;   // through the POSIX-shell first stage
/// let other = router.sudo(spore::Sudo::user("postgres")).await?;
/// # Ok(()) }
/// ```
#[must_use = "a Connect does nothing until awaited"]
pub struct Connect<'a> {
    pub(crate) router: &'a crate::Router,
    opts: ConnectOptions,
    via: Option<Context>,
}

/// How to start a context; sent as is to an intermediate (`via`).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct ConnectOptions {
    method: Method,
    first_stage: bool,
    raw_payload: bool,
    name: Option<String>,
    connect_timeout: Option<Duration>,
    /// Start it from the image registered for this platform.
    platform: Option<String>,
    /// Whether the target may keep the image in its cache (default: the
    /// method's, on for ssh).
    cache: Option<bool>,
    #[cfg(feature = "fault-injection")]
    #[serde(skip)]
    fault: Option<crate::Fault>,
}

impl<'a> Connect<'a> {
    pub(crate) fn new(router: &'a crate::Router, method: Method) -> Self {
        Self {
            router,
            opts: ConnectOptions {
                method,
                ..ConnectOptions::default()
            },
            via: None,
        }
    }

    /// Start a local child through the first stage over its stream (as
    /// every other method does) instead of exec'ing the image directly.
    pub fn first_stage(mut self, on: bool) -> Self {
        self.opts.first_stage = on;
        self
    }

    /// Whether the first stage receives the image zstd-compressed (the
    /// default, when the target has a `zstd` decoder) or raw. On this machine
    /// raw can be faster: compressing costs more CPU than the stream saves.
    pub fn compress(mut self, on: bool) -> Self {
        self.opts.raw_payload = !on;
        self
    }

    /// Name the context (default `local.<id>` or `sudo.<user>`, after the
    /// name of the context that starts it and a dot, except in the master).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.opts.name = Some(name.into());
        self
    }

    /// Start the child from the image registered for `platform` with
    /// [`crate::RouterBuilder::image_for`] instead of this program's own,
    /// through the first stage. Whichever context starts it fetches the
    /// image up the tree if it does not hold it yet.
    pub fn image_platform(mut self, platform: impl AsRef<str>) -> Self {
        self.opts.platform = Some(crate::images::platform_key(platform.as_ref()));
        self
    }

    /// Whether the target may keep the image in a private cache, so that
    /// the next contact sends its hash instead of the image (on by default
    /// for ssh, off for methods that stay on this machine). The cache is
    /// `${XDG_CACHE_HOME:-$HOME/.cache}/spore`, used only when it is a
    /// directory of the target user's with mode 0700 and `sha256sum` is
    /// there; the target checks an entry's hash before using it, and
    /// replaces a corrupt one. The image still runs from memory.
    pub fn cache(mut self, on: bool) -> Self {
        self.opts.cache = Some(on);
        self
    }

    /// Override the router's connect timeout for this context.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.opts.connect_timeout = Some(d);
        self
    }

    /// Make the bootstrap misbehave, to test the error paths.
    #[cfg(feature = "fault-injection")]
    pub fn fault(mut self, fault: crate::Fault) -> Self {
        self.opts.fault = Some(fault);
        self
    }

    /// Start the context from inside `parent` instead of from this process:
    /// `parent` starts it from its own in-memory image (nothing is sent from
    /// here but the request) and becomes its parent. Every context on the
    /// way learns the route, so calls, logs and output flow as for a direct
    /// child. The name shows the path, e.g. `local.1.local.2`. Every
    /// method works this way (`router.sudo(..).via(&ctx)`).
    ///
    /// ```no_run
    /// # async fn demo(router: &spore::Router) -> Result<(), spore::ConnectError> {
    /// let a = router.local().await?;
    /// let b = router.local().via(&a).await?;      // local.1.local.2
    /// let c = router.local().via(&b).await?;      // local.1.local.2.local.1002
    /// # Ok(()) }
    /// ```
    pub fn via(mut self, parent: &Context) -> Self {
        self.via = Some(parent.clone());
        self
    }

    /// The connect, ready to run on the router's I/O loop.
    pub(crate) fn into_connect(
        self,
    ) -> (
        tokio::runtime::Handle,
        impl Future<Output = Result<Context, ConnectError>> + Send + 'static,
    ) {
        let inner = self.router.inner.clone();
        let rt = inner.rt.clone();
        let (opts, via) = (self.opts, self.via);
        (rt, async move {
            match via {
                None => connect_local(inner, opts).await,
                Some(via) => connect_via(inner, via, opts).await,
            }
        })
    }

    /// Connects, blocking this thread. Do not call from inside an async runtime.
    pub fn connect_blocking(self) -> Result<Context, ConnectError> {
        let (rt, connect) = self.into_connect();
        let (tx, rx) = std::sync::mpsc::channel();
        rt.spawn(async move {
            let _ = tx.send(connect.await);
        });
        rx.recv()
            .unwrap_or_else(|_| Err(ConnectError::Aborted("router shut down".to_owned())))
    }
}

/// What [`start_child`] answers: the new context, or the intermediate's own
/// connect error as a value (so that it arrives typed).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum ChildStart {
    Started { id: ContextId, name: String },
    Failed(ConnectError),
}

/// Runs in the intermediate context: starts a child of it from this
/// process's own image (numbered from this context's block of IDs) and
/// returns its ID and name. The new context is announced upward
/// (ADD_ROUTE) before this returns.
#[crate::remote]
async fn start_child(opts: ConnectOptions) -> ChildStart {
    let Some(inner) = crate::bootstrap::child::inner().cloned() else {
        return ChildStart::Failed(ConnectError::Aborted("not a child context".to_owned()));
    };
    // Streams belong to the I/O loop, whatever thread runs this call.
    match inner.rt.spawn(connect_local(inner.clone(), opts)).await {
        Ok(Ok(ctx)) => ChildStart::Started {
            id: ctx.id,
            name: ctx.name.to_string(),
        },
        Ok(Err(e)) => ChildStart::Failed(e),
        Err(e) => ChildStart::Failed(ConnectError::Aborted(e.to_string())),
    }
}

/// Starts a context through `via`: `via` numbers it from its own block of
/// IDs (so that every context between it and the master can check the
/// route it announces), starts it and announces the route.
async fn connect_via(
    inner: Arc<Inner>,
    via: Context,
    opts: ConnectOptions,
) -> Result<Context, ConnectError> {
    if inner.is_shutting_down() {
        return Err(ConnectError::Aborted(
            "the router is shutting down".to_owned(),
        ));
    }
    let started = tokio::select! {
        r = via.call(start_child, (opts,)) => r,
        () = inner.shutdown_started() => {
            return Err(ConnectError::Aborted(format!(
                "the router shut down while connecting through {}",
                via.name()
            )));
        }
    };
    match started {
        Ok(ChildStart::Started { id, name }) => Ok(inner.context_handle(id, &name)),
        Ok(ChildStart::Failed(cause)) => Err(ConnectError::Via {
            via: via.name().to_owned(),
            cause: Box::new(cause),
        }),
        Err(e) => Err(ConnectError::Unreachable {
            via: via.name().to_owned(),
            detail: e.to_string(),
        }),
    }
}

/// Writes all of `bytes` to `fd`, waiting out a full socket buffer.
async fn write_all(fd: &OwnedFd, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        match rustix::io::write(fd, bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(rustix::io::Errno::AGAIN) => tokio::time::sleep(Duration::from_millis(1)).await,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn setup_error(name: &str, e: std::io::Error) -> ConnectError {
    ConnectError::Io {
        context: name.to_owned(),
        stage: "setup".into(),
        detail: e.to_string(),
    }
}

/// Send buffer asked for on each end of a local stream.
const STREAM_SEND_BUFFER: usize = 4 << 20;

/// Bytes read from the child's stdout during the handshake, kept for errors.
type Tail = Arc<Mutex<VecDeque<String>>>;

fn push_tail(tail: &Tail, line: String) {
    let mut t = tail.lock().unwrap();
    if t.len() == TAIL_LINES {
        t.pop_front();
    }
    t.push_back(line);
}

/// Starts a local child context. Runs on the I/O loop.
pub(crate) async fn connect_local(
    inner: Arc<Inner>,
    mut opts: ConnectOptions,
) -> Result<Context, ConnectError> {
    if inner.is_shutting_down() {
        return Err(ConnectError::Aborted(
            "the router is shutting down".to_owned(),
        ));
    }
    let id = inner.next_context_id().await?;
    let name = opts.name.clone().unwrap_or_else(|| {
        let part = opts.method.name_part(id);
        if inner.is_master() {
            part
        } else {
            format!("{}.{part}", inner.name)
        }
    });
    if opts.method.needs_first_stage() {
        opts.first_stage = true;
    }
    let proc_name = format!("spore:{name}");
    let image_err = |detail| ConnectError::Image {
        context: name.clone(),
        detail,
    };
    let image = match &opts.platform {
        None => Image::load(inner.settings.image.as_deref()).map_err(image_err)?,
        Some(platform) => {
            // Another program's image has no file here: it goes through
            // the first stage, over the stream.
            opts.first_stage = true;
            let compressed = inner.platform_image(platform).await.map_err(image_err)?;
            let label = format!("the image for {platform}");
            Arc::new(Image::from_compressed(label, compressed).map_err(image_err)?)
        }
    };
    // On this machine a dynamically linked image is fine.
    image
        .check_shippable(opts.method.same_machine())
        .map_err(image_err)?;

    let timeout = opts
        .connect_timeout
        .unwrap_or(inner.settings.connect_timeout);
    let cache = opts.first_stage && opts.cache.unwrap_or(opts.method.caches_by_default());
    let shell = if !opts.first_stage {
        None
    } else if cache {
        // Hashing a large image takes a while: not on the I/O loop.
        let img = image.clone();
        let hash = tokio::task::spawn_blocking(move || img.sha256().to_owned())
            .await
            .map_err(|e| setup_error(&name, std::io::Error::other(e.to_string())))?;
        Some(ShellLaunch::cached(&proc_name, &hash))
    } else {
        Some(ShellLaunch::first_stage(&proc_name))
    };
    let (mut cmd, program) = opts
        .method
        .command(&image, shell.as_ref(), &proc_name, timeout);
    // A method that reads secrets only from a terminal gets one of its own,
    // in a session of its own; spore holds the other end.
    // While it connects, spore holds the terminal end open too: with none
    // open (between the exec and the method opening /dev/tty to prompt),
    // reading the controller fails with EIO.
    let (terminal, terminal_open) = if opts.method.prompt() == Some(Prompt::Terminal) {
        let (controller, terminal) = crate::sys::open_pty().map_err(|e| setup_error(&name, e))?;
        let held = terminal.try_clone().map_err(|e| setup_error(&name, e))?;
        crate::sys::set_controlling_terminal(&mut cmd, terminal);
        (Some(controller), Some(held))
    } else {
        (None, None)
    };
    // The stream is a socket pair, not two pipes: a pipe copies in and out
    // under one lock, a socket lets both sides copy at once (about 3x the
    // throughput for large messages here). The child gets its end as stdin
    // and stdout, exactly as a first stage run by ssh would see pipes.
    let socket_pair = || -> std::io::Result<_> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        // Large send buffers: fewer round trips through the I/O loops for
        // large messages. Best effort; the kernel caps it at net.core.wmem_max.
        for end in [&ours, &theirs] {
            let _ = rustix::net::sockopt::set_socket_send_buffer_size(end, STREAM_SEND_BUFFER);
        }
        let theirs_too = theirs.try_clone()?;
        Ok((ours, theirs, theirs_too))
    };
    let (ours, theirs, theirs_too) = socket_pair().map_err(|e| setup_error(&name, e))?;
    cmd.stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::from(OwnedFd::from(theirs_too)))
        .stderr(Stdio::piped());
    let mut process = cmd.spawn().map_err(|e| ConnectError::Spawn {
        context: name.clone(),
        program,
        detail: e.to_string(),
    })?;
    let pid = process.id();
    drop(cmd); // closes our copies of the child's ends
    let stderr: OwnedFd = process.stderr.take().expect("piped").into();
    // Named for what they are to the child: we write its stdin, read its stdout.
    let setup = (|| {
        let stdout = OwnedFd::from(ours);
        let stdin = stdout.try_clone()?;
        Ok::<_, std::io::Error>((
            stdin,
            stream::async_reader(stdout)?,
            stream::async_reader(stderr)?,
        ))
    })();
    let (stdin, stdout, stderr) = match setup {
        Ok(fds) => fds,
        Err(e) => {
            let _ = tokio::task::spawn_blocking(move || super::reap(process, Duration::ZERO)).await;
            return Err(setup_error(&name, e));
        }
    };

    let tail: Tail = Arc::new(Mutex::new(VecDeque::new()));
    // A method that may ask for a secret gets each prompt answered once,
    // on the stream or on its terminal; a prompt for a secret it was not
    // given, or the same one twice, ends the connect at once.
    let (prompts, prompt_rx) = match opts.method.prompt() {
        Some(kind) => {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            (Some((kind, tx)), Some(rx))
        }
        None => (None, None),
    };
    let terminal_held = match &terminal {
        Some(controller) => Some(controller.try_clone().map_err(|e| setup_error(&name, e))?),
        None => None,
    };
    // Where answers go: only a method that may prompt gets one.
    let prompt_rx = match prompt_rx {
        Some(rx) => {
            let answer_fd = match &terminal {
                Some(controller) => controller.try_clone(),
                None => stdin.try_clone(),
            }
            .map_err(|e| setup_error(&name, e))?;
            Some((rx, answer_fd))
        }
        None => None,
    };
    let secrets: Vec<(SecretKind, String)> = [SecretKind::Password, SecretKind::Passphrase]
        .into_iter()
        .filter_map(|k| opts.method.secret(k).map(|s| (k, s.to_owned())))
        .collect();
    let (stderr_prompts, terminal_prompts) = match prompts {
        Some((Prompt::Terminal, tx)) => (None, Some(tx)),
        other => (other, None),
    };
    let stderr_done = spawn_stderr_reader(
        inner.clone(),
        id,
        name.clone(),
        stderr,
        tail.clone(),
        stderr_prompts,
    );
    // The terminal stays open as long as the process runs: closing it
    // would hang it up.
    let terminal_done = match terminal {
        Some(controller) => Some(spawn_stderr_reader(
            inner.clone(),
            id,
            name.clone(),
            stream::async_reader(controller).map_err(|e| setup_error(&name, e))?,
            tail.clone(),
            terminal_prompts.map(|tx| (Prompt::Terminal, tx)),
        )),
        None => None,
    };
    let (prompt_context, method) = (name.clone(), opts.method.label());
    let answer_prompts = async move {
        let Some((mut rx, answer_fd)) = prompt_rx else {
            return std::future::pending().await;
        };
        let mut answered = Vec::new();
        while let Some(kind) = rx.recv().await {
            // Asked again: the secret was wrong.
            if answered.contains(&kind) {
                return ConnectError::PasswordIncorrect {
                    context: prompt_context,
                    method: method.into(),
                    last_lines: Vec::new(),
                };
            }
            let Some((_, secret)) = secrets.iter().find(|(k, _)| *k == kind) else {
                return ConnectError::PasswordRequired {
                    context: prompt_context,
                    method: method.into(),
                    last_lines: Vec::new(),
                };
            };
            if let Err(e) = write_all(&answer_fd, format!("{secret}\n").as_bytes()).await {
                tracing::debug!("writing the {kind:?} failed: {e}");
            }
            answered.push(kind);
        }
        std::future::pending().await
    };

    let stage = Arc::new(Mutex::new("start"));
    let launch_bytes = shell.as_ref().map_or(0, ShellLaunch::size);
    let mut rbuf = BytesMut::new();
    let handshake = handshake(
        &inner,
        id,
        &name,
        &image,
        &opts,
        stdin,
        &stdout,
        &mut rbuf,
        &tail,
        &stage,
        launch_bytes,
    );
    let aborted = || {
        ConnectError::Aborted(format!(
            "the router shut down while connecting to {name} (stage: {})",
            *stage.lock().unwrap()
        ))
    };
    let result = tokio::select! {
        r = tokio::time::timeout(timeout, handshake) => match r {
            Ok(r) => r,
            Err(_) => Err(ConnectError::Timeout {
                context: name.clone(),
                stage: (*stage.lock().unwrap()).into(),
                after: timeout,
                last_lines: Vec::new(),
            }),
        },
        () = inner.shutdown_started() => Err(aborted()),
        e = answer_prompts => Err(e),
    };
    // The terminal was for prompts: no one reads it any more.
    drop(terminal_open);
    let writer = match result {
        Ok(writer) => {
            if let Some(reader) = &terminal_done {
                reader.abort();
            }
            writer
        }
        Err(mut e) => {
            // Kill and reap, then collect what it printed on stderr, and an
            // unfinished line on stdout (a prompt that waits for an answer).
            let _ = tokio::task::spawn_blocking(move || super::reap(process, Duration::ZERO)).await;
            let _ = tokio::time::timeout(Duration::from_millis(500), stderr_done).await;
            if let Some(done) = terminal_done {
                let _ = tokio::time::timeout(Duration::from_millis(500), done).await;
            }
            if !rbuf.is_empty() {
                let unfinished = String::from_utf8_lossy(&rbuf[..rbuf.len().min(MAX_LINE)]);
                push_tail(&tail, unfinished.trim_end().to_owned());
            }
            let lines: Vec<String> = tail.lock().unwrap().iter().cloned().collect();
            if let ConnectError::Eof { last_lines, .. }
            | ConnectError::Timeout { last_lines, .. }
            | ConnectError::PasswordIncorrect { last_lines, .. }
            | ConnectError::PasswordRequired { last_lines, .. } = &mut e
            {
                *last_lines = lines;
            }
            // The method may know what its own diagnostics mean.
            if let ConnectError::Eof { last_lines, .. } = &e {
                if let Some(known) = opts.method.diagnose(&name, last_lines) {
                    return Err(known);
                }
            }
            return Err(e);
        }
    };

    let stream_id = inner.new_stream_id();
    let bytes_written = writer.bytes_written();
    inner.add_stream(stream_id, writer);
    inner.add_route(id, stream_id);
    {
        // Checked under the children lock: shutdown marks itself before it
        // takes this lock, so a child is either seen by shutdown or refused here.
        let mut children = inner.children.lock().unwrap();
        if inner.is_shutting_down() {
            drop(children);
            inner.stream_lost(stream_id, "connect aborted".to_owned());
            let _ = tokio::task::spawn_blocking(move || super::reap(process, Duration::ZERO)).await;
            return Err(aborted());
        }
        let (lost_tx, _) = watch::channel(None);
        children.insert(
            id,
            ChildEntry {
                name: name.clone().into(),
                direct: true,
                detached: false,
                pid,
                process: Some(process),
                stderr_tail: tail,
                lost: lost_tx,
                bytes_written,
                terminal: terminal_held,
            },
        );
    }
    // Announced before its first frame is read and forwarded: ancestors
    // verify every frame's source against the routes they know.
    inner.context_added(&RouteAdded {
        id,
        name: name.clone(),
        pid,
    });
    let reader_inner = inner.clone();
    let max = inner.settings.max_message_size;
    inner.rt.spawn(async move {
        let ev_inner = reader_inner.clone();
        let heartbeat = reader_inner.heartbeat_to(id);
        let end = stream::read_frames(stdout, rbuf, max, heartbeat, move |ev| {
            ev_inner.on_event(ev, stream_id)
        })
        .await;
        if let stream::StreamEnd::Corrupt(e) = &end {
            tracing::error!("stream from context {id}: {e}; closing it");
        }
        reader_inner.stream_lost(stream_id, end.to_string());
    });
    tracing::debug!(context = %name, pid, "context started");
    Ok(Context {
        inner,
        id,
        name: name.into(),
    })
}

/// The handshake; returns the stream's writer. Frame bytes read past the
/// up line stay in `rbuf`.
#[allow(clippy::too_many_arguments)]
async fn handshake(
    inner: &Arc<Inner>,
    id: u32,
    name: &str,
    image: &Arc<Image>,
    opts: &ConnectOptions,
    stdin: OwnedFd,
    stdout: &AsyncFd<OwnedFd>,
    rbuf: &mut BytesMut,
    tail: &Tail,
    stage: &Mutex<&'static str>,
    launch_bytes: usize,
) -> Result<StreamSender, ConnectError> {
    let mut preamble = BytesMut::new();
    let mut sent = launch_bytes;
    if opts.first_stage {
        const READY: &str = "first stage (waiting for SPORE-READY)";
        let mut line = read_first_marker(stdout, rbuf, name, stage, READY, tail).await?;
        if line == handshake::STAGE_LINE {
            // Stage 0 found no (intact) first stage in the target's cache.
            *stage.lock().unwrap() = "stage 0 (sending the first stage)";
            let script = format!("{FIRST_STAGE}{}", handshake::STAGE_END);
            write_all(&stdin, script.as_bytes())
                .await
                .map_err(|e| ConnectError::Io {
                    context: name.to_owned(),
                    stage: "stage 0 (sending the first stage)".into(),
                    detail: e.to_string(),
                })?;
            sent += script.len();
            line = read_marker(stdout, rbuf, name, stage, READY).await?;
        }
        let ready = handshake::parse_ready(&line).ok_or_else(|| {
            push_tail(tail, line.clone());
            ConnectError::Protocol {
                context: name.to_owned(),
                stage: "first stage".into(),
                detail: format!("expected a SPORE-READY line, got {line:?}"),
            }
        })?;
        tracing::debug!(context = %name, os = %ready.os, arch = %ready.arch, cache = ?ready.cache, "first stage ready");
        // Stage 0 named this image to the target's cache.
        let (image, cacheable) = image_for_target(inner, name, image, opts, &ready).await?;
        if cacheable && ready.cache == Some(CacheState::Hit) {
            preamble.put_slice(handshake::CACHED_HEADER.as_bytes());
        } else {
            let (encoding, payload) =
                if !opts.raw_payload && ready.decoders.iter().any(|d| d == "zstd") {
                    let c = image.compressed().map_err(|detail| ConnectError::Image {
                        context: name.to_owned(),
                        detail,
                    })?;
                    ("zstd", c)
                } else {
                    ("raw", image.raw.clone())
                };
            #[cfg(feature = "fault-injection")]
            if let Some(fault) = opts.fault {
                return inject_fault(fault, encoding, payload, stdin, stdout, rbuf, name).await;
            }
            let store = cacheable && ready.cache == Some(CacheState::Miss);
            preamble
                .put_slice(handshake::payload_header(encoding, payload.len(), store).as_bytes());
            preamble.put_slice(&payload);
        }
    }
    let config = ChildConfig {
        context_id: id,
        name: name.to_owned(),
        parent_id: inner.my_id,
        parent_ids: std::iter::once(inner.my_id)
            .chain(inner.parent_ids.iter().copied())
            .collect(),
        log_level: crate::logging::current_level(),
        max_message_size: inner.settings.max_message_size,
        debug: inner.settings.debug,
        unidirectional: inner.settings.unidirectional,
        shutdown_grace_ms: inner.settings.shutdown_grace.as_millis() as u64,
        heartbeat_ms: inner.settings.heartbeat.map_or(0, |w| w.as_millis() as u64),
        build_id: crate::build_id(),
    };
    let config = postcard::to_stdvec(&config).expect("ChildConfig serializes");
    Frame::new(Header::new(id, inner.my_id, handles::CONFIGURE), config).encode_into(&mut preamble);
    let writer = stream::spawn_writer(stdin, preamble.freeze(), name.to_owned())
        .map_err(|e| setup_error(name, e))?;
    // What went to the target before the stream: its command line, and the
    // first stage when stage 0 asked for it.
    writer
        .bytes_written()
        .fetch_add(sent as u64, std::sync::atomic::Ordering::Relaxed);

    let line = read_marker(
        stdout,
        rbuf,
        name,
        stage,
        "handshake (waiting for SPORE-UP)",
    )
    .await?;
    match handshake::parse_up(&line) {
        Some((proto, build))
            if proto == spore_proto::PROTOCOL_VERSION && build == crate::build_id() =>
        {
            Ok(writer)
        }
        Some((proto, build)) => Err(ConnectError::Protocol {
            context: name.to_owned(),
            stage: "handshake".into(),
            detail: format!(
                "the child runs protocol {proto} build {build}, this is protocol {} build {}",
                spore_proto::PROTOCOL_VERSION,
                crate::build_id()
            ),
        }),
        None => Err(ConnectError::Protocol {
            context: name.to_owned(),
            stage: "handshake".into(),
            detail: format!("expected a SPORE-UP line, got {line:?}"),
        }),
    }
}

/// The image to send to a target that reported `ready`, decided before any
/// image byte is sent: `image` when the platforms match, else the image
/// registered for the target's platform. Also says whether it is the image
/// stage 0 named to the target's cache.
async fn image_for_target(
    inner: &Arc<Inner>,
    name: &str,
    image: &Arc<Image>,
    opts: &ConnectOptions,
    ready: &handshake::Ready,
) -> Result<(Arc<Image>, bool), ConnectError> {
    let target = crate::images::platform_of(&ready.os, &ready.arch);
    let ours = opts
        .platform
        .clone()
        .unwrap_or_else(crate::images::this_platform);
    if target == ours {
        return Ok((image.clone(), true));
    }
    let mismatch = |detail: String| ConnectError::PlatformMismatch {
        context: name.to_owned(),
        target: target.clone(),
        image: ours.clone(),
        detail,
    };
    if opts.platform.is_some() {
        return Err(mismatch(format!(
            "image_platform({ours:?}) was asked for; leave it out to pick the image \
             registered for the target"
        )));
    }
    let compressed = inner.platform_image(&target).await.map_err(mismatch)?;
    let other =
        Image::from_compressed(format!("the image for {target}"), compressed).map_err(mismatch)?;
    other
        .check_shippable(opts.method.same_machine())
        .map_err(mismatch)?;
    tracing::debug!(context = %name, platform = %target, "sending the image registered for the target's platform");
    Ok((Arc::new(other), false))
}

/// Reads the first line the target's side of the bootstrap prints. Lines
/// before it (a login shell's banner) are kept for error messages and
/// skipped, as is text before the marker on its line.
async fn read_first_marker(
    stdout: &AsyncFd<OwnedFd>,
    rbuf: &mut BytesMut,
    name: &str,
    tracker: &Mutex<&'static str>,
    stage: &'static str,
    tail: &Tail,
) -> Result<String, ConnectError> {
    /// Banner lines skipped at most; a chattier target is not a shell.
    const MAX_BANNER_LINES: usize = 1000;
    for _ in 0..MAX_BANNER_LINES {
        let line = read_line_or_eof(stdout, rbuf, name, tracker, stage).await?;
        match handshake::find_marker(&line) {
            Some(at) => {
                if at > 0 {
                    push_tail(tail, line[..at].to_owned());
                }
                return marker_or_failure(&line[at..], name);
            }
            None => push_tail(tail, line),
        }
    }
    Err(ConnectError::Protocol {
        context: name.to_owned(),
        stage: stage.into(),
        detail: format!("{MAX_BANNER_LINES} lines and no SPORE- marker"),
    })
}

/// Reads the next handshake line while `stage` names what is awaited; a
/// SPORE-FAIL line becomes the first stage's error.
async fn read_marker(
    stdout: &AsyncFd<OwnedFd>,
    rbuf: &mut BytesMut,
    name: &str,
    tracker: &Mutex<&'static str>,
    stage: &'static str,
) -> Result<String, ConnectError> {
    let line = read_line_or_eof(stdout, rbuf, name, tracker, stage).await?;
    marker_or_failure(&line, name)
}

async fn read_line_or_eof(
    stdout: &AsyncFd<OwnedFd>,
    rbuf: &mut BytesMut,
    name: &str,
    tracker: &Mutex<&'static str>,
    stage: &'static str,
) -> Result<String, ConnectError> {
    *tracker.lock().unwrap() = stage;
    stream::read_line(stdout, rbuf, MAX_LINE)
        .await
        .map_err(|e| ConnectError::Io {
            context: name.to_owned(),
            stage: stage.into(),
            detail: e.to_string(),
        })?
        .ok_or_else(|| ConnectError::Eof {
            context: name.to_owned(),
            stage: stage.into(),
            last_lines: Vec::new(),
        })
}

fn marker_or_failure(line: &str, name: &str) -> Result<String, ConnectError> {
    match line.strip_prefix(FAIL_PREFIX) {
        Some(reason) => Err(ConnectError::FirstStage {
            context: name.to_owned(),
            reason: reason.to_owned(),
        }),
        None => Ok(line.to_owned()),
    }
}

#[cfg(feature = "fault-injection")]
async fn inject_fault(
    fault: crate::Fault,
    encoding: &str,
    payload: Bytes,
    stdin: OwnedFd,
    stdout: &AsyncFd<OwnedFd>,
    rbuf: &mut BytesMut,
    name: &str,
) -> Result<StreamSender, ConnectError> {
    let mut pre = BytesMut::new();
    let close_after = match fault {
        crate::Fault::NeverFeed => {
            // Hold stdin open and never write: the first stage waits until
            // the connect timeout kills it.
            let _keep = stdin;
            std::future::pending::<()>().await;
            unreachable!()
        }
        crate::Fault::TruncatePayload => {
            pre.put_slice(handshake::payload_header(encoding, payload.len(), false).as_bytes());
            pre.put_slice(&payload[..payload.len() / 2]);
            true
        }
        crate::Fault::GarbageHeader => {
            pre.put_slice(b"\x00\xffgarbage that is no header\n");
            pre.put_slice(&payload[..payload.len().min(4096)]);
            false
        }
    };
    let writer = stream::spawn_writer(stdin, pre.freeze(), name.to_owned())
        .map_err(|e| setup_error(name, e))?;
    if close_after {
        drop(writer);
    } else {
        std::mem::forget(writer);
    }
    let tracker = Mutex::new("first stage");
    let line = read_marker(stdout, rbuf, name, &tracker, "first stage").await?;
    Err(ConnectError::Protocol {
        context: name.to_owned(),
        stage: "first stage".into(),
        detail: format!("unexpected line {line:?}"),
    })
}

/// Forwards the child's stderr line by line (it goes straight from the child
/// process to this pipe, so even a crashing child's last words arrive), and
/// keeps the last lines for error messages. With `prompts`, password
/// prompts (which have no newline) are cut out of the output and reported
/// there instead, until the connect no longer listens. Resolves at EOF.
fn spawn_stderr_reader(
    inner: Arc<Inner>,
    id: u32,
    name: String,
    fd: AsyncFd<OwnedFd>,
    tail: Tail,
    mut prompts: Option<(Prompt, tokio::sync::mpsc::UnboundedSender<SecretKind>)>,
) -> tokio::task::JoinHandle<()> {
    inner.rt.clone().spawn(async move {
        let emit = |line: &[u8], keep: bool| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let line = String::from_utf8_lossy(line).into_owned();
            crate::logging::emit_output(&inner, id, &name, OutputStream::Stderr, &line);
            if keep {
                push_tail(&tail, line);
            }
        };
        let prompt = PASSWORD_PROMPT.as_bytes();
        let mut buf = BytesMut::new();
        loop {
            let n = stream::read_some(&fd, &mut buf, 4096).await;
            let eof = !matches!(n, Ok(k) if k > 0);
            if prompts.as_ref().is_some_and(|(_, tx)| tx.is_closed()) {
                prompts = None;
            }
            match &prompts {
                Some((Prompt::Ours, tx)) => {
                    while let Some(pos) = buf.windows(prompt.len()).position(|w| w == prompt) {
                        let rest = buf.split_off(pos + prompt.len());
                        buf.truncate(pos);
                        buf.unsplit(rest);
                        let _ = tx.send(SecretKind::Password);
                    }
                }
                Some((Prompt::Translated | Prompt::Terminal, tx)) => {
                    // The method's own prompt: the unfinished last line.
                    let start = buf.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
                    if let Some(kind) = prompt_kind(&String::from_utf8_lossy(&buf[start..])) {
                        buf.truncate(start);
                        let _ = tx.send(kind);
                    }
                }
                None => {}
            }
            while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                let line = buf.split_to(pos + 1);
                emit(&line[..pos], true);
            }
            // An over-long line goes out in pieces; the rest at EOF whole.
            while buf.len() >= crate::logging::MAX_LINE_PIECE {
                let piece = buf.split_to(crate::logging::MAX_LINE_PIECE);
                emit(&piece, false);
            }
            if eof {
                if !buf.is_empty() {
                    emit(&buf.split(), true);
                }
                return;
            }
        }
    })
}
