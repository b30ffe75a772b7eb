//! gen_server (BEHAVIOURS.md B20, B21, and its start, stop and bad input),
//! with every process in one context.

use std::collections::BTreeMap;
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use spore_process::call::{CallError, ReplyTo};
use spore_process::gen_server::{self, CallResult, Flow, GenServer, StartError, StartOptions};
use spore_process::*;

/// Runs `fut` as a process of a fresh node and returns what it returns.
fn run<T: Send + 'static>(fut: impl std::future::Future<Output = T> + Send + 'static) -> T {
    let node = Node::new();
    let out = node
        .run_blocking(fut)
        .expect("the test's process ended early");
    node.stop();
    out
}

/// A process that waits forever.
async fn idle() {
    std::future::pending::<()>().await
}

/// The reason of monitor `mref`'s DOWN (which must come within 5 s).
async fn down_of(mref: Ref) -> Reason {
    receive_match_timeout(LONG, |m| m.take_if::<Down>(|d| d.mref == mref))
        .await
        .expect("no DOWN within 5 s")
        .reason
}

/// What `terminate` told this process (which it must within 5 s).
async fn terminated() -> Terminated {
    receive_timeout::<Terminated>(LONG)
        .await
        .expect("terminate did not run within 5 s")
}

const SECOND: Duration = Duration::from_secs(1);
const LONG: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// Captured logs: one subscriber for the whole test binary (the servers log
// from the node's thread), so each test looks only at lines naming its own
// servers (unique names, or a type only it uses).

static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        tracing_subscriber::fmt()
            .with_writer(|| Capture)
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .init();
    });
}

/// The captured lines that contain `needle`.
fn log_lines(needle: &str) -> Vec<String> {
    let logs = LOGS.lock().unwrap();
    String::from_utf8_lossy(&logs)
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

// ---------------------------------------------------------------------------
// A key-value store, with requests to misbehave on demand.

#[derive(Default)]
struct Kv {
    map: BTreeMap<String, i64>,
    /// Told when `terminate` runs.
    observer: Option<Pid>,
    /// What `handle_info` got, in order.
    infos: Vec<String>,
    /// A call answered later.
    later: Option<ReplyTo>,
    panic_in_terminate: bool,
}

#[derive(Clone)]
struct KvArgs {
    observer: Option<Pid>,
    init: InitHow,
    trap: bool,
}

#[derive(Clone)]
enum InitHow {
    Ok,
    Fail(Reason),
    Panic,
    Sleep(Duration),
}

fn args(observer: Pid) -> KvArgs {
    KvArgs {
        observer: Some(observer),
        init: InitHow::Ok,
        trap: false,
    }
}

#[derive(Debug, Serialize, Deserialize)]
enum KvCall {
    Get(String),
    Put(String, i64),
    /// The messages `handle_info` got.
    Infos,
    /// Replies after a delay.
    Slow(Duration),
    /// Never replies.
    Never,
    /// Replies when a `KvCast::Answer` comes.
    Later,
    /// Stops with the reason, replying first if asked.
    Stop(Reason, bool),
    Panic,
    Exit(Reason),
    /// Sends itself `kill`, then calls `exit_self`.
    KillSelfThenExit,
    PanicInTerminate,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum KvReply {
    Value(Option<i64>),
    Infos(Vec<String>),
    Error(String),
    Ok,
}

#[derive(Debug, Serialize, Deserialize)]
enum KvCast {
    Delete(String),
    Answer(i64),
    Stop(Reason),
    Panic,
    Link(Pid),
}

/// What `terminate` tells the observer.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Terminated(Reason);

impl GenServer for Kv {
    type Args = KvArgs;
    type Call = KvCall;
    type Reply = KvReply;
    type Cast = KvCast;

    async fn init(a: KvArgs) -> Result<Self, Reason> {
        if a.trap {
            trap_exit(true);
        }
        match a.init {
            InitHow::Ok => {}
            InitHow::Fail(reason) => return Err(reason),
            InitHow::Panic => panic!("init exploded"),
            InitHow::Sleep(d) => tokio::time::sleep(d).await,
        }
        Ok(Kv {
            observer: a.observer,
            ..Kv::default()
        })
    }

    async fn handle_call(&mut self, req: KvCall, from: ReplyTo) -> CallResult<KvReply> {
        match req {
            KvCall::Get(k) => CallResult::Reply(KvReply::Value(self.map.get(&k).copied())),
            // A request of the right type that the server finds wrong.
            KvCall::Put(k, _) if k.is_empty() => {
                CallResult::Reply(KvReply::Error("empty key".into()))
            }
            KvCall::Put(k, v) => CallResult::Reply(KvReply::Value(self.map.insert(k, v))),
            KvCall::Infos => CallResult::Reply(KvReply::Infos(self.infos.clone())),
            KvCall::Slow(d) => {
                tokio::time::sleep(d).await;
                CallResult::Reply(KvReply::Ok)
            }
            KvCall::Never => CallResult::NoReply,
            KvCall::Later => {
                self.later = Some(from);
                CallResult::NoReply
            }
            KvCall::Stop(reason, reply) => CallResult::Stop {
                reason,
                reply: reply.then_some(KvReply::Ok),
            },
            KvCall::Panic => {
                // After an await: the panic happens in a later poll.
                tokio::task::yield_now().await;
                panic!("handle_call exploded")
            }
            KvCall::Exit(reason) => exit_self(reason).await,
            KvCall::KillSelfThenExit => {
                exit(self_pid(), Reason::Kill);
                exit_self(Reason::error("too late")).await
            }
            KvCall::PanicInTerminate => {
                self.panic_in_terminate = true;
                CallResult::Reply(KvReply::Ok)
            }
        }
    }

    async fn handle_cast(&mut self, msg: KvCast) -> Flow {
        match msg {
            KvCast::Delete(k) => {
                self.map.remove(&k);
            }
            KvCast::Answer(v) => {
                if let Some(from) = self.later.take() {
                    call::reply(&from, KvReply::Value(Some(v)));
                }
            }
            KvCast::Stop(reason) => return Flow::Stop(reason),
            KvCast::Panic => panic!("handle_cast exploded"),
            KvCast::Link(pid) => link(pid).await.unwrap(),
        }
        Flow::Continue
    }

    async fn handle_info(&mut self, msg: &mut Envelope) -> Flow {
        if let Some(s) = msg.take::<String>() {
            if s == "stop" {
                return Flow::Stop(Reason::ShutdownWith("asked".into()));
            }
            self.infos.push(s);
        } else if let Some(e) = msg.take::<Exit>() {
            self.infos.push(format!("EXIT {}", e.reason));
        } else {
            self.infos.push("something else".into());
        }
        Flow::Continue
    }

    async fn terminate(&mut self, reason: &Reason) {
        // Awaits, as a terminate that cleans up may: the server is still
        // alive meanwhile, and a caller is answered only after it.
        tokio::task::yield_now().await;
        if let Some(o) = self.observer {
            send(o, Terminated(reason.clone()));
        }
        if self.panic_in_terminate {
            panic!("terminate exploded");
        }
    }
}

/// A server with the default `handle_cast` and `handle_info`.
struct Deaf;

impl GenServer for Deaf {
    type Args = ();
    type Call = u32;
    type Reply = u32;
    type Cast = ();

    async fn init((): ()) -> Result<Self, Reason> {
        Ok(Deaf)
    }

    async fn handle_call(&mut self, n: u32, _from: ReplyTo) -> CallResult<u32> {
        CallResult::Reply(n + 1)
    }
}

async fn start_kv(observer: Pid, name: Option<&str>) -> Pid {
    let mut opts = StartOptions::new();
    if let Some(n) = name {
        opts = opts.name(n);
    }
    gen_server::start::<Kv>(args(observer), opts).await.unwrap()
}

fn get(k: &str) -> KvCall {
    KvCall::Get(k.into())
}

fn put(k: &str, v: i64) -> KvCall {
    KvCall::Put(k.into(), v)
}

// ---------------------------------------------------------------------------
// B20: calls

#[test]
fn a_kv_store_answers_calls_and_casts_by_pid_and_by_name_and_gets_other_messages_in_order() {
    run(async {
        let me = self_pid();
        let kv = start_kv(me, Some("kv")).await;
        assert_eq!(whereis("kv"), Some(kv));
        assert_eq!(
            gen_server::call::<Kv>(kv, put("a", 1)).await,
            Ok(KvReply::Value(None))
        );
        assert_eq!(
            gen_server::call::<Kv>("kv", put("a", 2)).await,
            Ok(KvReply::Value(Some(1)))
        );
        assert_eq!(
            gen_server::call::<Kv>("kv".to_string(), get("a")).await,
            Ok(KvReply::Value(Some(2)))
        );
        gen_server::call::<Kv>(kv, put("b", 3)).await.unwrap();
        gen_server::cast::<Kv>("kv", KvCast::Delete("a".into()));
        gen_server::cast::<Kv>(kv, KvCast::Delete("b".into()));
        send(kv, "first".to_string());
        send(kv, 7u64);
        send(kv, "second".to_string());
        assert_eq!(
            gen_server::call::<Kv>(kv, get("a")).await,
            Ok(KvReply::Value(None))
        );
        assert_eq!(
            gen_server::call::<Kv>(kv, get("b")).await,
            Ok(KvReply::Value(None))
        );
        assert_eq!(
            gen_server::call::<Kv>(kv, KvCall::Infos).await,
            Ok(KvReply::Infos(vec![
                "first".into(),
                "something else".into(),
                "second".into()
            ]))
        );
        // Nothing is left behind in the caller: no monitor, no message.
        let info = process_info(me).unwrap();
        assert!(
            info.monitors.is_empty() && info.mailbox_len == 0,
            "{info:?}"
        );
        assert!(info.links.is_empty(), "start does not link: {info:?}");
    });
}

#[test]
fn a_call_waits_5_s_by_default() {
    run(async {
        let kv = start_kv(self_pid(), None).await;
        let t = Instant::now();
        let err = gen_server::call::<Kv>(kv, KvCall::Never).await.unwrap_err();
        let took = t.elapsed();
        assert!(
            matches!(err, CallError::Timeout { after, .. } if after == LONG),
            "{err}"
        );
        assert!(took >= LONG && took < LONG + SECOND, "{took:?}");
        assert!(is_alive(kv), "a timeout does not hurt the server");
    });
}

#[test]
fn a_call_fails_at_once_with_the_servers_reason_when_it_dies_during_the_call() {
    run(async {
        let me = self_pid();

        // Killed by someone else while the call waits for its reply.
        let kv = start_kv(me, Some("victim")).await;
        spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            exit(kv, Reason::error("boom"));
        });
        let t = Instant::now();
        let err = gen_server::call::<Kv>("victim", KvCall::Never)
            .await
            .unwrap_err();
        assert_eq!(err.reason(), Some(&Reason::error("boom")));
        assert!(t.elapsed() < SECOND, "{:?}", t.elapsed());

        // Ended by its own callback: stop without reply, panic, exit_self.
        let cases = [
            (
                KvCall::Stop(Reason::error("had enough"), false),
                Reason::error("had enough"),
            ),
            (KvCall::Stop(Reason::Normal, false), Reason::Normal),
            (KvCall::Panic, Reason::Panic("handle_call exploded".into())),
            (KvCall::Exit(Reason::error("bye")), Reason::error("bye")),
        ];
        for (req, reason) in cases {
            let kv = start_kv(me, None).await;
            let t = Instant::now();
            let err = gen_server::call::<Kv>(kv, req).await.unwrap_err();
            assert_eq!(err.reason(), Some(&reason));
            assert!(t.elapsed() < SECOND, "{:?}", t.elapsed());
            // terminate ran, with that reason.
            assert_eq!(terminated().await, Terminated(reason));
        }

        // A signal that ended the server first wins over its exit_self:
        // it ends killed, without terminate (which would have told us
        // before the DOWN that ended the call).
        let kv = start_kv(me, None).await;
        let err = gen_server::call::<Kv>(kv, KvCall::KillSelfThenExit)
            .await
            .unwrap_err();
        assert_eq!(err.reason(), Some(&Reason::Killed));
        assert_eq!(receive_timeout::<Terminated>(Duration::ZERO).await, None);
    });
}

#[test]
fn a_call_to_a_server_that_does_not_exist_fails_at_once_with_noproc() {
    run(async {
        let kv = start_kv(self_pid(), None).await;
        gen_server::stop(kv, Reason::Normal, LONG).await.unwrap();
        terminated().await;
        let t = Instant::now();
        let by_pid = gen_server::call::<Kv>(kv, get("a")).await.unwrap_err();
        let by_name = gen_server::call::<Kv>("nobody", get("a"))
            .await
            .unwrap_err();
        assert_eq!(by_pid.reason(), Some(&Reason::Noproc));
        assert_eq!(by_name.reason(), Some(&Reason::Noproc));
        assert!(by_name.to_string().contains("\"nobody\""), "{by_name}");
        assert!(t.elapsed() < SECOND);
    });
}

#[test]
fn after_a_timeout_the_late_reply_never_appears_and_other_messages_stay_in_order() {
    run(async {
        let me = self_pid();
        let kv = start_kv(me, None).await;
        spawn(async move {
            send(me, "one".to_string());
            tokio::time::sleep(Duration::from_millis(10)).await;
            send(me, "two".to_string());
        });
        let err = gen_server::call_timeout::<Kv>(
            kv,
            KvCall::Slow(Duration::from_millis(100)),
            Duration::from_millis(50),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, CallError::Timeout { after, .. } if after == Duration::from_millis(50)),
            "{err}"
        );
        // The reply is sent at 100 ms; wait well past it.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let info = process_info(me).unwrap();
        assert_eq!(info.mailbox_len, 2, "only the two strings");
        assert!(info.monitors.is_empty());
        assert_eq!(receive::<String>().await, "one");
        assert_eq!(receive::<String>().await, "two");
        // The server is fine and answers the next call.
        assert_eq!(
            gen_server::call::<Kv>(kv, get("x")).await,
            Ok(KvReply::Value(None))
        );
    });
}

#[test]
fn a_server_may_reply_later_with_the_reply_to_it_kept() {
    run(async {
        let me = self_pid();
        let kv = start_kv(me, None).await;
        let caller = spawn(async move {
            let got = gen_server::call::<Kv>(kv, KvCall::Later).await;
            send(me, got.map_err(|e| e.to_string()));
        });
        // The server keeps serving meanwhile.
        gen_server::call::<Kv>(kv, put("k", 1)).await.unwrap();
        assert!(is_alive(caller), "still waiting");
        gen_server::cast::<Kv>(kv, KvCast::Answer(42));
        let got: Option<Result<KvReply, String>> = receive_timeout(LONG).await;
        assert_eq!(got, Some(Ok(KvReply::Value(Some(42)))));
    });
}

// ---------------------------------------------------------------------------
// B21: stop and terminate

#[test]
fn stop_runs_terminate_with_the_reason_and_returns_once_the_server_is_gone() {
    run(async {
        let me = self_pid();
        let reasons = [
            Reason::Normal,
            Reason::Shutdown,
            Reason::ShutdownWith("maintenance".into()),
            Reason::error("retired"),
        ];
        for (i, reason) in reasons.into_iter().enumerate() {
            let name = format!("stop-{i}");
            let kv = start_kv(me, Some(&name)).await;
            let mref = monitor(kv);
            // By pid and by name.
            let target: call::Dest = if i % 2 == 0 {
                kv.into()
            } else {
                name.clone().into()
            };
            gen_server::stop(target, reason.clone(), LONG)
                .await
                .unwrap();
            assert!(!is_alive(kv) && whereis(&name).is_none());
            assert_eq!(terminated().await, Terminated(reason.clone()));
            assert_eq!(down_of(mref).await, reason);
        }
    });
}

#[test]
fn terminate_runs_when_a_callback_stops_the_server_or_panics() {
    run(async {
        let me = self_pid();

        // handle_call stops with a reply: terminate runs before the reply.
        let kv = start_kv(me, None).await;
        let got = gen_server::call::<Kv>(kv, KvCall::Stop(Reason::Shutdown, true)).await;
        assert_eq!(got, Ok(KvReply::Ok));
        let already = receive_timeout::<Terminated>(Duration::ZERO).await;
        assert_eq!(already, Some(Terminated(Reason::Shutdown)));

        // handle_cast and handle_info stop; handle_cast panics.
        let cases = [
            (
                Some(KvCast::Stop(Reason::error("cast"))),
                Reason::error("cast"),
            ),
            (None, Reason::ShutdownWith("asked".into())),
            (
                Some(KvCast::Panic),
                Reason::Panic("handle_cast exploded".into()),
            ),
        ];
        for (cast, reason) in cases {
            let kv = start_kv(me, None).await;
            let mref = monitor(kv);
            match cast {
                Some(cast) => gen_server::cast::<Kv>(kv, cast),
                // handle_info stops on "stop".
                None => send(kv, "stop".to_string()),
            }
            assert_eq!(down_of(mref).await, reason);
            assert_eq!(terminated().await, Terminated(reason));
        }
    });
}

#[test]
fn only_unclean_ends_are_logged_once_naming_the_server_and_the_reason() {
    capture_logs();
    let (bad, panicky) = run(async {
        let me = self_pid();
        // Clean reasons: not logged.
        for (name, reason) in [
            ("b21-normal", Reason::Normal),
            ("b21-shutdown", Reason::Shutdown),
            ("b21-shutdown-with", Reason::ShutdownWith("x".into())),
        ] {
            let kv = start_kv(me, Some(name)).await;
            gen_server::stop(kv, reason, LONG).await.unwrap();
        }
        let kv = start_kv(me, Some("b21-cast-normal")).await;
        let mref = monitor(kv);
        gen_server::cast::<Kv>(kv, KvCast::Stop(Reason::Normal));
        down_of(mref).await;

        // Unclean: logged, once each, with pid, name and reason.
        let bad = start_kv(me, Some("b21-bad")).await;
        gen_server::stop(bad, Reason::error("bad reason"), LONG)
            .await
            .unwrap();
        let panicky = start_kv(me, Some("b21-panic")).await;
        let err = gen_server::call::<Kv>(panicky, KvCall::Panic)
            .await
            .unwrap_err();
        assert!(matches!(err.reason(), Some(Reason::Panic(_))), "{err}");

        // A failed init too.
        for (name, reason) in [
            ("b21-init-shutdown", Reason::Shutdown),
            ("b21-init-bad", Reason::error("no config")),
        ] {
            let a = KvArgs {
                observer: None,
                init: InitHow::Fail(reason),
                trap: false,
            };
            let got = gen_server::start::<Kv>(a, StartOptions::new().name(name)).await;
            assert!(matches!(got, Err(StartError::Init(_))), "{got:?}");
        }
        (bad, panicky)
    });
    assert_eq!(log_lines("\"b21-init-shutdown\""), Vec::<String>::new());
    let lines = log_lines("\"b21-init-bad\"");
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].contains("ERROR") && lines[0].contains("in init: no config"),
        "{}",
        lines[0]
    );
    for name in [
        "b21-normal",
        "b21-shutdown",
        "b21-shutdown-with",
        "b21-cast-normal",
    ] {
        assert_eq!(log_lines(&format!("{name:?}")), Vec::<String>::new());
    }
    let lines = log_lines("\"b21-bad\"");
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].contains("ERROR"), "{}", lines[0]);
    assert!(lines[0].contains(&bad.to_string()), "{}", lines[0]);
    assert!(lines[0].contains("bad reason"), "{}", lines[0]);
    let lines = log_lines("\"b21-panic\"");
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].contains("ERROR"), "{}", lines[0]);
    assert!(lines[0].contains(&panicky.to_string()), "{}", lines[0]);
    assert!(
        lines[0].contains("panic: handle_call exploded"),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains("handle_call"), "{}", lines[0]);
}

#[test]
fn a_trapping_server_ends_with_its_parents_exit_running_terminate() {
    run(async {
        let me = self_pid();
        for reason in [Reason::Shutdown, Reason::error("parent died")] {
            let r = reason.clone();
            let parent = spawn(async move {
                let mut a = args(me);
                a.trap = true;
                let kv = gen_server::start_link::<Kv>(a, StartOptions::new())
                    .await
                    .unwrap();
                send(me, kv);
                let () = receive().await;
                r
            });
            let kv: Pid = receive().await;
            let mref = monitor(kv);
            send(parent, ());
            assert_eq!(down_of(mref).await, reason);
            assert_eq!(terminated().await, Terminated(reason));
        }

        // An EXIT from another linked process is an ordinary message.
        let mut a = args(me);
        a.trap = true;
        let kv = gen_server::start::<Kv>(a, StartOptions::new())
            .await
            .unwrap();
        let other = spawn(async {
            let () = receive().await;
            Reason::error("other died")
        });
        gen_server::cast::<Kv>(kv, KvCast::Link(other));
        gen_server::call::<Kv>(kv, get("sync")).await.unwrap();
        let other_mon = monitor(other);
        send(other, ());
        down_of(other_mon).await;
        assert_eq!(
            gen_server::call::<Kv>(kv, KvCall::Infos).await,
            Ok(KvReply::Infos(vec!["EXIT other died".into()]))
        );

        // A server that does not trap exits is killed by its parent's exit
        // signal, without terminate (as in Erlang).
        let parent = spawn(async move {
            let kv = gen_server::start_link::<Kv>(args(me), StartOptions::new())
                .await
                .unwrap();
            send(me, kv);
            let () = receive().await;
            Reason::error("parent died")
        });
        let kv: Pid = receive().await;
        let mref = monitor(kv);
        send(parent, ());
        assert_eq!(down_of(mref).await, Reason::error("parent died"));
        let none = receive_timeout::<Terminated>(Duration::from_millis(50)).await;
        assert_eq!(none, None);
    });
}

#[test]
fn terminate_that_panics_ends_the_server_with_its_panic_and_stop_says_so() {
    capture_logs();
    let kv = run(async {
        let me = self_pid();
        let kv = start_kv(me, Some("panics-in-terminate")).await;
        gen_server::call::<Kv>(kv, KvCall::PanicInTerminate)
            .await
            .unwrap();
        let err = gen_server::stop(kv, Reason::Normal, LONG)
            .await
            .unwrap_err();
        assert_eq!(
            err.reason(),
            Some(&Reason::Panic("terminate exploded".into()))
        );
        assert_eq!(terminated().await, Terminated(Reason::Normal));
        kv
    });
    let lines = log_lines("\"panics-in-terminate\"");
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].contains(&kv.to_string()), "{}", lines[0]);
    assert!(lines[0].contains("terminate exploded"), "{}", lines[0]);
}

// ---------------------------------------------------------------------------
// Starting

/// What a failed start must leave: the same processes as before, the name
/// free, the caller alive with no link and nothing in its mailbox.
async fn nothing_left(before: &[Pid], name: &str) {
    assert_eq!(processes(), before);
    assert_eq!(whereis(name), None);
    let me = process_info(self_pid()).unwrap();
    assert!(
        me.links.is_empty() && me.monitors.is_empty() && me.mailbox_len == 0,
        "{me:?}"
    );
}

#[test]
fn a_failing_init_makes_start_return_its_reason_and_leaves_nothing_running() {
    run(async {
        let me = self_pid();
        for link in [false, true] {
            for trap in [false, true] {
                trap_exit(trap);
                for (how, reason) in [
                    (
                        InitHow::Fail(Reason::error("no disk")),
                        Reason::error("no disk"),
                    ),
                    (InitHow::Fail(Reason::Shutdown), Reason::Shutdown),
                    (InitHow::Panic, Reason::Panic("init exploded".into())),
                ] {
                    let before = processes();
                    let a = KvArgs {
                        observer: Some(me),
                        init: how,
                        trap: false,
                    };
                    let opts = StartOptions::new().name("failing");
                    let got = if link {
                        gen_server::start_link::<Kv>(a, opts).await
                    } else {
                        gen_server::start::<Kv>(a, opts).await
                    };
                    assert_eq!(got, Err(StartError::Init(reason.clone())));
                    assert_eq!(got.unwrap_err().reason(), Some(&reason));
                    nothing_left(&before, "failing").await;
                    // A moment later still: no EXIT, no DOWN, no terminate.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    nothing_left(&before, "failing").await;
                }
            }
        }
        trap_exit(false);
        // The name is free for the next start.
        let kv = start_kv(me, Some("failing")).await;
        assert_eq!(whereis("failing"), Some(kv));
    });
}

#[test]
fn a_taken_name_starts_nothing_and_the_owner_keeps_it() {
    run(async {
        let owner = spawn(idle());
        register("taken", owner).unwrap();
        let before = processes();
        let got =
            gen_server::start_link::<Kv>(args(self_pid()), StartOptions::new().name("taken")).await;
        assert_eq!(
            got,
            Err(StartError::AlreadyStarted {
                name: "taken".into(),
                owner
            })
        );
        assert_eq!(processes(), before);
        assert_eq!(whereis("taken"), Some(owner));
        assert!(process_info(self_pid()).unwrap().links.is_empty());
    });
}

#[test]
fn an_init_slower_than_the_start_timeout_is_killed() {
    run(async {
        let before = processes();
        let a = KvArgs {
            observer: Some(self_pid()),
            init: InitHow::Sleep(Duration::from_secs(2)),
            trap: false,
        };
        let t = Instant::now();
        let got = gen_server::start_link::<Kv>(
            a,
            StartOptions::new()
                .name("slow")
                .timeout(Duration::from_millis(50)),
        )
        .await;
        assert_eq!(got, Err(StartError::Timeout(Duration::from_millis(50))));
        assert!(t.elapsed() < SECOND, "{:?}", t.elapsed());
        // Killed, unlinked first: the caller (not trapping) lives on (an
        // exit signal to a running process ends it at its next wait).
        nothing_left(&before, "slow").await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        nothing_left(&before, "slow").await;
    });
}

#[test]
fn start_waits_for_init_and_a_server_may_start_without_a_name() {
    run(async {
        let a = KvArgs {
            observer: Some(self_pid()),
            init: InitHow::Sleep(Duration::from_millis(50)),
            trap: false,
        };
        let t = Instant::now();
        let kv = gen_server::start_link::<Kv>(a, StartOptions::new())
            .await
            .unwrap();
        assert!(t.elapsed() >= Duration::from_millis(50));
        let me = process_info(self_pid()).unwrap();
        assert_eq!(me.links, vec![kv]);
        assert!(me.monitors.is_empty() && me.mailbox_len == 0, "{me:?}");
        assert_eq!(process_info(kv).unwrap().name, None);
    });
}

// ---------------------------------------------------------------------------
// Bad input

#[test]
fn a_request_the_server_does_not_understand_crashes_neither_it_nor_the_caller() {
    capture_logs();
    run(async {
        let me = self_pid();
        let kv = start_kv(me, None).await;
        // A request of the right type that the server finds wrong: it
        // answers with an error value.
        assert_eq!(
            gen_server::call::<Kv>(kv, put("", 1)).await,
            Ok(KvReply::Error("empty key".into()))
        );
        // A request of a type it does not take: it goes to handle_info,
        // and the caller times out.
        let short = Duration::from_millis(100);
        let err = gen_server::call_timeout::<Deaf>(kv, 1, short)
            .await
            .unwrap_err();
        assert!(matches!(err, CallError::Timeout { .. }), "{err}");
        assert_eq!(
            gen_server::call::<Kv>(kv, KvCall::Infos).await,
            Ok(KvReply::Infos(vec!["something else".into()]))
        );

        // The default handle_info and handle_cast log a warning and drop it.
        let deaf = gen_server::start::<Deaf>((), StartOptions::new())
            .await
            .unwrap();
        let err = gen_server::call_timeout::<Kv>(deaf, get("a"), short)
            .await
            .unwrap_err();
        assert!(matches!(err, CallError::Timeout { .. }), "{err}");
        send(deaf, "hello".to_string());
        gen_server::cast::<Deaf>(deaf, ());
        assert_eq!(gen_server::call::<Deaf>(deaf, 1).await, Ok(2));
        // No reply leaked into the caller's mailbox.
        assert_eq!(process_info(me).unwrap().mailbox_len, 0);
    });
    let warnings = log_lines("Deaf");
    assert_eq!(warnings.len(), 3, "{warnings:#?}");
    assert!(warnings.iter().all(|l| l.contains("WARN")), "{warnings:#?}");
    assert_eq!(
        warnings
            .iter()
            .filter(|l| l.contains("does not implement handle_cast"))
            .count(),
        1
    );
}

#[test]
fn a_cast_never_fails_even_to_an_unknown_name_or_a_dead_pid() {
    run(async {
        let kv = start_kv(self_pid(), Some("cast-target")).await;
        gen_server::cast::<Kv>("nobody", KvCast::Delete("a".into()));
        gen_server::stop("cast-target", Reason::Normal, LONG)
            .await
            .unwrap();
        gen_server::cast::<Kv>(kv, KvCast::Delete("a".into()));
        gen_server::cast::<Kv>("cast-target", KvCast::Delete("a".into()));
    });
}

#[test]
fn stop_fails_with_noproc_for_a_missing_server_and_times_out_on_a_busy_one() {
    run(async {
        let me = self_pid();
        let err = gen_server::stop("nobody", Reason::Normal, LONG)
            .await
            .unwrap_err();
        assert_eq!(err.reason(), Some(&Reason::Noproc));
        let (dead, mref) = spawn_monitor(async {});
        down_of(mref).await;
        let err = gen_server::stop(dead, Reason::Normal, LONG)
            .await
            .unwrap_err();
        assert_eq!(err.reason(), Some(&Reason::Noproc));

        // Busy for 300 ms with another caller's request.
        let kv = start_kv(me, None).await;
        let mref = monitor(kv);
        spawn(async move {
            let _ = gen_server::call::<Kv>(kv, KvCall::Slow(Duration::from_millis(300))).await;
        });
        tokio::task::yield_now().await;
        let err = gen_server::stop(kv, Reason::Normal, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(matches!(err, CallError::Timeout { .. }), "{err}");
        assert!(is_alive(kv));
        // The request stays queued: the server stops when it gets to it.
        assert_eq!(down_of(mref).await, Reason::Normal);
        assert_eq!(terminated().await, Terminated(Reason::Normal));
        let info = process_info(me).unwrap();
        assert!(
            info.monitors.is_empty() && info.mailbox_len == 0,
            "{info:?}"
        );
    });
}
