//! Remote functions the tests call in fixture contexts.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[spore::remote]
pub fn add(a: i32, b: i32) -> i32 {
    a + b
}

#[spore::remote]
pub fn greet(name: String, times: u32) -> Vec<String> {
    (0..times).map(|i| format!("hello {name} #{i}")).collect()
}

#[spore::remote]
pub async fn async_echo(s: String, delay_ms: u64) -> String {
    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    s
}

#[spore::remote]
pub fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[derive(Debug, thiserror::Error)]
#[error("config file is broken")]
pub struct ConfigError {
    #[source]
    source: std::io::Error,
}

#[spore::remote]
pub fn fails_with_chain() -> Result<u32, ConfigError> {
    Err(ConfigError {
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file: /etc/x.conf"),
    })
}

#[spore::remote]
pub fn panics(msg: String) -> u32 {
    panic!("deliberate: {msg}")
}

#[spore::remote]
pub async fn panics_async() -> u32 {
    panic!("deliberate async panic")
}

/// Serializes to an error: postcard needs sequence lengths.
#[derive(Debug)]
pub struct Unserializable;

impl Serialize for Unserializable {
    fn serialize<S: serde::Serializer>(&self, _s: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(
            "Unserializable refuses to serialize",
        ))
    }
}

impl<'de> Deserialize<'de> for Unserializable {
    fn deserialize<D: serde::Deserializer<'de>>(_d: D) -> Result<Self, D::Error> {
        Ok(Unserializable)
    }
}

#[spore::remote]
pub fn unserializable() -> Unserializable {
    Unserializable
}

#[spore::remote]
pub fn takes_string(s: String) -> usize {
    s.len()
}

#[spore::remote]
pub fn bytes_of(n: u64) -> serde_bytes::ByteBuf {
    serde_bytes::ByteBuf::from(vec![0xA5u8; n as usize])
}

#[spore::remote]
pub fn len_of(b: serde_bytes::ByteBuf) -> u64 {
    b.len() as u64
}

#[spore::remote]
pub fn print_lines(n: u32, tag: String) -> u32 {
    for i in 0..n {
        println!("{tag} line {i}");
    }
    n
}

#[spore::remote]
pub fn write_stdout(n: u64) -> u64 {
    use std::io::Write;
    let buf = vec![b'x'; n as usize];
    let mut out = std::io::stdout().lock();
    out.write_all(&buf).unwrap();
    out.write_all(b"\n").unwrap();
    out.flush().unwrap();
    n
}

#[spore::remote]
pub fn eprint(msg: String) {
    eprintln!("{msg}");
}

#[spore::remote]
pub fn read_stdin() -> Result<usize, std::io::Error> {
    use std::io::Read;
    let mut v = Vec::new();
    std::io::stdin().read_to_end(&mut v)?;
    Ok(v.len())
}

#[spore::remote]
pub fn exit_now(code: i32) {
    std::process::exit(code)
}

#[spore::remote]
pub fn log_event(level: String, msg: String) {
    match level.as_str() {
        "error" => tracing::error!(answer = 42, "{msg}"),
        "warn" => tracing::warn!("{msg}"),
        "info" => tracing::info!("{msg}"),
        "debug" => tracing::debug!("{msg}"),
        _ => tracing::trace!("{msg}"),
    }
}

#[spore::remote]
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish()
}

#[spore::remote]
pub fn open_fds() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| {
                let e = e.ok()?;
                let target = std::fs::read_link(e.path()).ok()?;
                Some(format!(
                    "{}->{}",
                    e.file_name().to_string_lossy(),
                    target.display()
                ))
            })
            .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Writes raw bytes onto this child's stream to its parent.
#[spore::remote]
pub fn write_raw(bytes: serde_bytes::ByteBuf) -> Result<(), std::io::Error> {
    spore::fault::write_raw_to_parent(&bytes)
}

/// Writes raw bytes, then exits at once.
#[spore::remote]
pub fn write_raw_and_exit(bytes: serde_bytes::ByteBuf) {
    let _ = spore::fault::write_raw_to_parent(&bytes);
    std::process::exit(0)
}

/// Writes one well-formed frame with a `len`-byte payload straight onto the
/// stream to the parent.
#[spore::remote]
pub fn write_frame(dst: u32, handle: u32, reply_to: u32, len: u32) -> Result<(), std::io::Error> {
    let header = spore_proto::Header::new(dst, 0, handle).with_reply_to(reply_to);
    let frame = spore_proto::Frame::new(header, vec![0u8; len as usize]);
    let mut b = bytes::BytesMut::new();
    frame.encode_into(&mut b);
    spore::fault::write_raw_to_parent(&b)
}

/// What a context reports about a context it started itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    pub id: u32,
    pub name: String,
    pub pid: u32,
}

/// Starts `n` local children of this context (through the first stage when
/// `first_stage`), checks each answers, and reports them. They stay up.
#[spore::remote]
pub async fn start_children(
    n: u32,
    first_stage: bool,
) -> Result<Vec<Started>, Box<dyn std::error::Error + Send + Sync>> {
    let router = spore::Router::current().ok_or("not a child context")?;
    let mut out = Vec::new();
    for _ in 0..n {
        let ctx = router.local().first_stage(first_stage).await?;
        assert_eq!(
            ctx.call(add, (ctx.id() as i32, 1)).await?,
            ctx.id() as i32 + 1
        );
        out.push(Started {
            id: ctx.id(),
            name: ctx.name().to_owned(),
            pid: ctx.pid().unwrap_or_default(),
        });
    }
    Ok(out)
}

/// Sends `1..=n` to `out`, then closes it when `close`.
#[spore::remote]
pub fn send_numbers(out: spore::Sender<u32>, n: u32, close: bool) -> Result<u32, spore::SendError> {
    for i in 1..=n {
        out.send(&i)?;
    }
    if close {
        out.close();
    }
    Ok(n)
}

/// Sends strings to a channel (of whatever type the receiver expects).
#[spore::remote]
pub fn send_strings(
    out: spore::Sender<String>,
    values: Vec<String>,
) -> Result<(), spore::SendError> {
    for v in &values {
        out.send(v)?;
    }
    Ok(())
}

/// Returns the context it was given, with its ID and name as seen here.
#[spore::remote]
pub fn echo_context(ctx: spore::Context) -> (spore::Context, u32, String) {
    let (id, name) = (ctx.id(), ctx.name().to_owned());
    (ctx, id, name)
}

/// Starts a child of this context and returns a handle on it.
#[spore::remote]
pub async fn start_child_handle() -> Result<spore::Context, spore::ConnectError> {
    let router = spore::Router::current().expect("a child context");
    router.local().await
}

/// A request to [`serve_echo`]: where to answer, and the value.
pub type EchoRequest = (spore::Sender<u32>, u32);

/// Starts an echo service in this context: each request is answered with
/// its value after `delay_ms`. Returns the service's address.
#[spore::remote]
pub async fn serve_echo(delay_ms: u64) -> spore::Sender<EchoRequest> {
    let router = spore::Router::current().expect("a child context");
    let mut requests = router.receiver::<EchoRequest>();
    let address = requests.sender();
    tokio::spawn(async move {
        while let Ok((reply, value)) = requests.recv().await {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            let _ = reply.send(&value);
        }
    });
    address
}

/// Asks an echo service that lives in `host` and waits for the answer; the
/// wait ends with an error if `host` is lost.
#[spore::remote]
pub async fn ask_echo(
    service: spore::Sender<EchoRequest>,
    host: spore::Context,
    value: u32,
) -> Result<u32, spore::RecvError> {
    let router = spore::Router::current().expect("a child context");
    let mut answer = router.receiver_from::<u32>(&host);
    service
        .send(&(answer.sender(), value))
        .expect("a small request");
    answer.recv().await
}

/// Calls `add(1, 2)` in `ctx` from this context.
#[spore::remote]
pub async fn add_in(ctx: spore::Context) -> Result<i32, spore::CallError> {
    ctx.call(add, (1, 2)).await
}

static STEPS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Records `tag` in this context's step log after `delay_ms`; fails instead
/// when `fail`.
#[spore::remote]
pub fn push_step(tag: String, delay_ms: u64, fail: bool) -> Result<(), String> {
    std::thread::sleep(Duration::from_millis(delay_ms));
    STEPS.lock().unwrap().push(tag.clone());
    if fail {
        Err(format!("step {tag} failed"))
    } else {
        Ok(())
    }
}

/// The step log of this context.
#[spore::remote]
pub fn steps() -> Vec<String> {
    STEPS.lock().unwrap().clone()
}

/// Writes this context's pid to `path` after `delay_ms`.
#[spore::remote]
pub fn write_pid_after(path: String, delay_ms: u64) -> Result<(), std::io::Error> {
    std::thread::sleep(Duration::from_millis(delay_ms));
    std::fs::write(path, std::process::id().to_string())
}

/// The size of the executable this context runs.
#[spore::remote]
pub fn exe_len() -> Result<u64, std::io::Error> {
    Ok(std::fs::metadata("/proc/self/exe")?.len())
}

/// Returns its arguments: in the shape of a `Sender`, a forged one.
#[spore::remote]
pub fn pair(a: u32, b: u32) -> (u32, u32) {
    (a, b)
}

/// Waits on a receiver whose respondent is `host`, with nothing ever sent
/// to `host` from here; returns how the wait ended.
#[spore::remote]
pub async fn wait_for_loss_of(host: spore::Context) -> String {
    let router = spore::Router::current().expect("a child context");
    let mut rx = router.receiver_from::<u32>(&host);
    match rx.recv().await {
        Ok(v) => format!("a value: {v}"),
        Err(e) => e.to_string(),
    }
}

/// The real uid this context runs as.
#[spore::remote]
pub fn my_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// The network namespace this context lives in (`/proc/self/ns/net`).
#[spore::remote]
pub fn net_namespace() -> Result<String, std::io::Error> {
    Ok(std::fs::read_link("/proc/self/ns/net")?
        .display()
        .to_string())
}

/// Whether this context has a controlling terminal (`/dev/tty` opens).
#[spore::remote]
pub fn has_controlling_terminal() -> bool {
    std::fs::File::open("/dev/tty").is_ok()
}

/// A service that records what it receives and which contexts it was told
/// are lost (`tests/services.rs`).
pub struct Recorder {
    router: spore::Router,
    seen: std::sync::Mutex<Vec<(spore::ContextId, Vec<u8>)>>,
    lost: std::sync::Mutex<Vec<(spore::ContextId, String)>>,
}

impl spore::Service for Recorder {
    const HANDLE: u32 = 290;
    const NAME: &'static str = "test-recorder";
    fn start(router: spore::Router) -> Self {
        Recorder {
            router,
            seen: Default::default(),
            lost: Default::default(),
        }
    }
    fn deliver(&self, from: spore::ContextId, payload: bytes::Bytes) {
        // "echo:" asks for the rest to be sent back to the sender's recorder.
        if let Some(rest) = payload.strip_prefix(b"echo:") {
            let _ = self
                .router
                .send_to_service::<Recorder>(from, [b"echoed:".as_slice(), rest].concat());
        }
        self.seen.lock().unwrap().push((from, payload.to_vec()));
    }
    fn contexts_lost(&self, lost: &[spore::ContextId], detail: &str) {
        let mut l = self.lost.lock().unwrap();
        l.extend(lost.iter().map(|id| (*id, detail.to_owned())));
    }
}
spore::service!(Recorder);

impl Recorder {
    /// What it received so far, from whom.
    pub fn seen(&self) -> Vec<(spore::ContextId, Vec<u8>)> {
        self.seen.lock().unwrap().clone()
    }
    /// The contexts it was told are lost.
    pub fn lost(&self) -> Vec<(spore::ContextId, String)> {
        self.lost.lock().unwrap().clone()
    }
}

/// What this context's [`Recorder`] has received.
#[spore::remote]
pub fn recorder_seen() -> Vec<(spore::ContextId, Vec<u8>)> {
    spore::Router::current()
        .expect("a child context")
        .service::<Recorder>()
        .seen()
}

/// Sends `payload` from this context to the [`Recorder`] in `to`.
#[spore::remote]
pub fn recorder_send(to: spore::ContextId, payload: Vec<u8>) -> Result<(), spore::SendError> {
    spore::Router::current()
        .expect("a child context")
        .send_to_service::<Recorder>(to, payload)
}

// Process functions for `tests/processes.rs`.
use spore_process::{Pid, Reason};

/// Answers `(from, n)` with `n`, forever.
#[spore_process::process]
pub async fn echo_proc() {
    loop {
        let (from, n): (Pid, u64) = spore_process::receive().await;
        spore_process::send(from, n);
    }
}

/// Sends `words` to `to`, then ends with `reason`.
#[spore_process::process]
pub async fn say_then_exit(to: Pid, words: String, reason: Reason) -> Reason {
    spore_process::send(to, words);
    reason
}

/// Waits (trapping exits if asked), reporting every EXIT it gets to
/// `report` as text.
#[spore_process::process]
pub async fn idle_proc(trap: bool, report: Option<Pid>) {
    spore_process::trap_exit(trap);
    loop {
        let exit: spore_process::Exit = spore_process::receive().await;
        if let Some(r) = report {
            spore_process::send(r, format!("EXIT {} {}", exit.from, exit.reason));
        }
    }
}

/// Links itself to `pid`, tells `report` how it went, then waits.
#[spore_process::process]
pub async fn link_and_report(pid: Pid, report: Pid) {
    let outcome = spore_process::link(pid).await;
    spore_process::send(report, format!("{outcome:?}"));
    std::future::pending::<()>().await
}

/// A message that refuses to decode when its number is odd: stands for a
/// receiver whose idea of a type differs from the sender's.
#[derive(Debug, PartialEq, serde::Serialize)]
pub struct Picky(pub u32);

impl<'de> serde::Deserialize<'de> for Picky {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u32::deserialize(d)?;
        if n % 2 == 1 {
            return Err(serde::de::Error::custom(format!("{n} is odd")));
        }
        Ok(Picky(n))
    }
}

/// Sends `Picky(n)` to `to`.
#[spore_process::process]
pub async fn send_picky(to: Pid, n: u32) {
    spore_process::send(to, Picky(n));
}

// A gen_server and a supervised worker for `tests/otp.rs`.
use spore_process::call::ReplyTo;
use spore_process::gen_server::{CallResult, Flow, GenServer};

/// A key-value store that misbehaves on demand, started in fixture
/// contexts with `gen_server::start_in`. Its argument is the observer its
/// `terminate` and `handle_info` report to.
#[derive(Default)]
pub struct Store {
    map: std::collections::BTreeMap<String, u64>,
    observer: Option<Pid>,
    /// A call held until a [`StoreCast::Release`].
    held: Option<ReplyTo>,
}

/// [`Store`]'s requests.
#[derive(Debug, Serialize, Deserialize)]
pub enum StoreCall {
    Get(String),
    Put(String, u64),
    /// Sends the caller `0..n` (as `u32`) before replying: messages that
    /// arrive during the call.
    ChatterThenReply(u32),
    /// Holds the call (answered by a [`StoreCast::Release`]), after
    /// telling `notify`, if given, that it holds it.
    Hold(Option<Pid>),
    /// Ends the server with this reason, without a reply.
    Stop(Reason),
    /// How many monitors the server has on it (the caller's, during the
    /// call, is one).
    MonitoredBy,
}

/// [`Store`]'s answers.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub enum StoreReply {
    Value(Option<u64>),
    Ok,
    Count(usize),
    Released,
}

/// [`Store`]'s casts.
#[derive(Debug, Serialize, Deserialize)]
pub enum StoreCast {
    Put(String, u64),
    /// Answers the held call (late, if its caller gave up).
    Release,
}

/// What [`Store`]'s `terminate` tells the observer.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct StoreTerminated {
    pub server: Pid,
    pub reason: Reason,
}

/// What [`Store`]'s `handle_info` tells the observer of a `String` it
/// got.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct StoreInfo(pub String);

impl GenServer for Store {
    type Args = Option<Pid>;
    type Call = StoreCall;
    type Reply = StoreReply;
    type Cast = StoreCast;

    async fn init(observer: Option<Pid>) -> Result<Self, Reason> {
        Ok(Store {
            observer,
            ..Store::default()
        })
    }

    async fn handle_call(&mut self, req: StoreCall, from: ReplyTo) -> CallResult<StoreReply> {
        match req {
            StoreCall::Get(k) => CallResult::Reply(StoreReply::Value(self.map.get(&k).copied())),
            StoreCall::Put(k, v) => CallResult::Reply(StoreReply::Value(self.map.insert(k, v))),
            StoreCall::ChatterThenReply(n) => {
                for i in 0..n {
                    spore_process::send(from.pid(), i);
                }
                CallResult::Reply(StoreReply::Ok)
            }
            StoreCall::Hold(notify) => {
                self.held = Some(from);
                if let Some(n) = notify {
                    spore_process::send(n, "holding".to_string());
                }
                CallResult::NoReply
            }
            StoreCall::Stop(reason) => CallResult::Stop {
                reason,
                reply: None,
            },
            StoreCall::MonitoredBy => {
                let me = spore_process::self_pid();
                let info = spore_process::process_info(me).expect("alive");
                CallResult::Reply(StoreReply::Count(info.monitored_by.len()))
            }
        }
    }

    async fn handle_cast(&mut self, msg: StoreCast) -> Flow {
        match msg {
            StoreCast::Put(k, v) => {
                self.map.insert(k, v);
            }
            StoreCast::Release => {
                if let Some(from) = self.held.take() {
                    spore_process::call::reply(&from, StoreReply::Released);
                }
            }
        }
        Flow::Continue
    }

    async fn handle_info(&mut self, msg: &mut spore_process::Envelope) -> Flow {
        if let (Some(s), Some(o)) = (msg.take::<String>(), self.observer) {
            spore_process::send(o, StoreInfo(s));
        }
        Flow::Continue
    }

    async fn terminate(&mut self, reason: &Reason) {
        if let Some(o) = self.observer {
            let server = spore_process::self_pid();
            spore_process::send(
                o,
                StoreTerminated {
                    server,
                    reason: reason.clone(),
                },
            );
        }
    }
}

spore_process::remote_gen_server!(Store);

/// Makes a [`sup_worker`] end with this reason.
#[derive(Debug, Serialize, Deserialize)]
pub struct Crash(pub Reason);

/// A supervised worker (spawn it trapping exits, so that its supervisor's
/// `shutdown` is a message even before it first runs). It ends with the
/// reason of a [`Crash`] it gets. An exit signal it answers as told: with
/// `comply`, it reports "stop ID" to `report` and ends with the signal's
/// reason; otherwise it reports "ignored ID" and goes on.
#[spore_process::process]
pub async fn sup_worker(id: String, report: Pid, comply: bool) -> Reason {
    loop {
        let ev = spore_process::receive_match(|m| {
            m.take::<Crash>()
                .map(Ok)
                .or_else(|| m.take::<spore_process::Exit>().map(Err))
        })
        .await;
        match ev {
            Ok(Crash(reason)) => return reason,
            Err(exit) if comply => {
                spore_process::send(report, format!("stop {id}"));
                return exit.reason;
            }
            Err(_) => spore_process::send(report, format!("ignored {id}")),
        }
    }
}

/// Watches context `ctx` with `monitor_context` and forwards the event it
/// gets to `report`.
#[spore_process::process]
pub async fn watch_context(ctx: spore::ContextId, report: Pid) {
    spore_process::monitor_context(ctx);
    spore_process::send(report, "watching".to_string());
    let ev: spore_process::ContextEvent = spore_process::receive().await;
    spore_process::send(report, ev);
}

/// Takes the global name `name`, tells `report` how it went (as a
/// `Result<(), GlobalError>`), then runs until it gets a `()`.
#[spore_process::process]
pub async fn hold_global_name(name: String, report: Pid) {
    let me = spore_process::self_pid();
    let outcome = spore_process::global::register(&name, me).await;
    spore_process::send(report, outcome);
    spore_process::receive::<()>().await;
}

/// Looks the global name `name` up and sends `report` the answer (as a
/// `Result<Option<Pid>, GlobalError>`).
#[spore_process::process]
pub async fn look_up_global_name(name: String, report: Pid) {
    let found = spore_process::global::whereis(&name).await;
    spore_process::send(report, found);
}

/// Sends every `spore::Context` it gets back to `report`.
#[spore_process::process]
pub async fn bounce_context(report: Pid) {
    loop {
        let ctx: spore::Context = spore_process::receive().await;
        spore_process::send(report, ctx);
    }
}

/// What a [`puppet`] process is told to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Act {
    /// `trap_exit(on)`.
    Trap(bool),
    /// Send `text` to `to`.
    Say(Pid, String),
    /// `exit_self(reason)`.
    Exit(Reason),
    /// Answer "alive" to the reporter.
    Ping,
}

/// A process that does what it is told ([`Act`]) and reports everything
/// else it receives — texts, EXIT messages — to `report` as text, in the
/// order it got them.
#[spore_process::process]
pub async fn puppet(report: Pid) -> Result<(), Reason> {
    use spore_process::{Envelope, Exit, send};
    enum Got {
        Act(Act),
        Text(String),
        Exit(Exit),
    }
    let pick = |m: &mut Envelope| {
        if let Some(a) = m.take::<Act>() {
            return Some(Got::Act(a));
        }
        if let Some(t) = m.take::<String>() {
            return Some(Got::Text(t));
        }
        m.take::<Exit>().map(Got::Exit)
    };
    loop {
        match spore_process::receive_match(pick).await {
            Got::Act(Act::Trap(on)) => {
                spore_process::trap_exit(on);
            }
            Got::Act(Act::Say(to, text)) => send(to, text),
            Got::Act(Act::Exit(reason)) => return Err(reason),
            Got::Act(Act::Ping) => send(report, "alive".to_string()),
            Got::Text(t) => send(report, t),
            Got::Exit(e) => send(report, format!("EXIT {} {}", e.from, e.reason)),
        }
    }
}
