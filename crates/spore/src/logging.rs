//! Logs and output across the tree: a `tracing` layer in every child that
//! forwards events (at the parent's level, so filtered records never cross
//! the wire), and their re-emission in the master with the context's name.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use spore_proto::messages::{LogOrigin, LogRecord};
use spore_proto::{Frame, Header, MASTER_ID, handles};
use tokio::sync::mpsc;
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;

use crate::router::{Inner, OutputLine, OutputStream};

/// Output lines longer than this are forwarded in pieces of this size.
pub(crate) const MAX_LINE_PIECE: usize = 64 * 1024;

/// Records queued by the layer and not yet handed to the router.
static PENDING: AtomicUsize = AtomicUsize::new(0);

/// This process's effective maximum level, as a wire number (0 off .. 5 trace).
pub(crate) fn current_level() -> u8 {
    match LevelFilter::current().into_level() {
        None => 0,
        Some(tracing::Level::ERROR) => 1,
        Some(tracing::Level::WARN) => 2,
        Some(tracing::Level::INFO) => 3,
        Some(tracing::Level::DEBUG) => 4,
        Some(tracing::Level::TRACE) => 5,
    }
}

fn level_filter(n: u8) -> LevelFilter {
    match n {
        0 => LevelFilter::OFF,
        1 => LevelFilter::ERROR,
        2 => LevelFilter::WARN,
        3 => LevelFilter::INFO,
        4 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    }
}

fn level_number(l: &tracing::Level) -> u8 {
    match *l {
        tracing::Level::ERROR => 1,
        tracing::Level::WARN => 2,
        tracing::Level::INFO => 3,
        tracing::Level::DEBUG => 4,
        tracing::Level::TRACE => 5,
    }
}

struct ForwardLayer {
    tx: mpsc::UnboundedSender<LogRecord>,
}

#[derive(Default)]
struct MessageVisitor {
    message: String,
    fields: String,
}

impl Visit for MessageVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        use std::fmt::Write;
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for ForwardLayer {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut v = MessageVisitor::default();
        event.record(&mut v);
        let meta = event.metadata();
        let rec = LogRecord {
            origin: LogOrigin::Tracing,
            level: level_number(meta.level()),
            target: meta.target().to_owned(),
            message: v.message + &v.fields,
        };
        PENDING.fetch_add(1, Ordering::SeqCst);
        if self.tx.send(rec).is_err() {
            PENDING.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Installs the forwarding subscriber in a child; records wait in the
/// returned queue until the stream is up (so start-up records are kept).
pub(crate) fn install_forwarder(level: u8) -> mpsc::UnboundedReceiver<LogRecord> {
    let (tx, rx) = mpsc::unbounded_channel();
    let subscriber =
        tracing_subscriber::registry().with(ForwardLayer { tx }.with_filter(level_filter(level)));
    let _ = tracing::subscriber::set_global_default(subscriber);
    rx
}

/// Drains the child's log queue into FORWARD_LOG frames.
pub(crate) async fn forward_logs(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<LogRecord>) {
    while let Some(rec) = rx.recv().await {
        send_record(&inner, &rec);
        PENDING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Waits (up to a second) until every queued record was handed to the router.
pub(crate) async fn flush_logs() {
    for _ in 0..1000 {
        if PENDING.load(Ordering::SeqCst) == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Sends one record of this context to the master.
pub(crate) fn send_record(inner: &Arc<Inner>, rec: &LogRecord) {
    send_record_of(inner, inner.my_id, rec);
}

/// Sends one record to the master on behalf of `context` (this one, or a
/// child whose stderr this context reads).
fn send_record_of(inner: &Arc<Inner>, context: u32, rec: &LogRecord) {
    let Ok(payload) = postcard::to_stdvec(rec) else {
        return;
    };
    let _ = inner.send(Frame::new(
        Header::new(MASTER_ID, context, handles::FORWARD_LOG),
        payload,
    ));
}

/// FORWARD_LOG in the master: re-emit with the context's name.
pub(crate) fn on_forward_log(inner: &Arc<Inner>, frame: Frame) {
    let rec: LogRecord = match postcard::from_bytes(&frame.payload) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(
                "undecodable log record from context {}: {e}",
                frame.header.src
            );
            return;
        }
    };
    let id = frame.header.src;
    let name = inner.context_name(id);
    match rec.origin {
        LogOrigin::Stdout => emit_output(inner, id, &name, OutputStream::Stdout, &rec.message),
        LogOrigin::Stderr => emit_output(inner, id, &name, OutputStream::Stderr, &rec.message),
        LogOrigin::Tracing => {
            let (context, target, message) =
                (name.as_str(), rec.target.as_str(), rec.message.as_str());
            match rec.level {
                1 => {
                    tracing::error!(target: "spore::remote", context, remote_target = target, "{message}")
                }
                2 => {
                    tracing::warn!(target: "spore::remote", context, remote_target = target, "{message}")
                }
                3 => {
                    tracing::info!(target: "spore::remote", context, remote_target = target, "{message}")
                }
                4 => {
                    tracing::debug!(target: "spore::remote", context, remote_target = target, "{message}")
                }
                _ => {
                    tracing::trace!(target: "spore::remote", context, remote_target = target, "{message}")
                }
            }
        }
    }
}

/// Hands one output line to the router's output hook, or logs it.
pub(crate) fn emit_output(
    inner: &Arc<Inner>,
    id: u32,
    name: &str,
    stream: OutputStream,
    line: &str,
) {
    if !inner.parent_ids.is_empty() {
        // Not the master (a child's stderr, read by its parent here): the
        // line travels up as the child's own once the child is announced
        // (ancestors drop frames from contexts they do not know); before
        // that, during its start-up, as this context's log line.
        if inner.knows_route(id) {
            let origin = match stream {
                OutputStream::Stdout => LogOrigin::Stdout,
                OutputStream::Stderr => LogOrigin::Stderr,
            };
            let rec = LogRecord {
                origin,
                level: 3,
                target: String::new(),
                message: line.to_owned(),
            };
            send_record_of(inner, id, &rec);
        } else {
            tracing::info!(target: "spore::output", context = name, "{line}");
        }
        return;
    }
    match &inner.output {
        Some(sink) => sink.send(OwnedLine {
            context: name.to_owned(),
            context_id: id,
            stream,
            line: line.to_owned(),
        }),
        None => {
            let s = match stream {
                OutputStream::Stdout => "stdout",
                OutputStream::Stderr => "stderr",
            };
            tracing::info!(target: "spore::output", context = name, stream = s, "{line}");
        }
    }
}

/// An output line on its way to the hook's thread.
struct OwnedLine {
    context: String,
    context_id: u32,
    stream: OutputStream,
    line: String,
}

/// Runs the user's output hook on a thread of its own, in the order lines
/// arrived: user code never runs on the I/O loop, and a slow hook delays
/// only other output, never messages.
pub(crate) struct OutputSink {
    tx: std::sync::Mutex<Option<std::sync::mpsc::Sender<OwnedLine>>>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl OutputSink {
    pub(crate) fn start(hook: crate::router::OutputHook) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel::<OwnedLine>();
        let thread = std::thread::Builder::new()
            .name("spore-output".to_owned())
            .spawn(move || {
                for l in rx {
                    hook(OutputLine {
                        context: &l.context,
                        context_id: l.context_id,
                        stream: l.stream,
                        line: &l.line,
                    });
                }
            })?;
        Ok(Self {
            tx: std::sync::Mutex::new(Some(tx)),
            thread: std::sync::Mutex::new(Some(thread)),
        })
    }

    fn send(&self, line: OwnedLine) {
        if let Some(tx) = &*self.tx.lock().unwrap() {
            let _ = tx.send(line);
        }
    }

    /// Delivers every line queued so far, then stops the thread.
    pub(crate) fn finish(&self) {
        drop(self.tx.lock().unwrap().take());
        if let Some(t) = self.thread.lock().unwrap().take() {
            // The hook itself may drop the router: never join oneself.
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}
