//! gen_server and supervisor with their processes in different contexts
//! (BEHAVIOURS.md B16–B21 under B22): a gen_server started in a child
//! context and called from the master, by pid and by name (`Dest::At`);
//! a supervisor in the master whose children run in child contexts,
//! restarted in another context when theirs is killed. The same rules
//! within one context are in `spore-process/tests/{gen_server,supervisor}.rs`.
//!
//! Where a test checks that something has *already* happened, it is
//! because signals from one context arrive in the order they were sent:
//! what a process sends before it ends arrives before the news of its end.

use std::future::Future;
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use spore_process::call::{CallError, Dest};
use spore_process::gen_server::{self, StartError, StartOptions};
use spore_process::supervisor::{self, ChildSpec, Restart, Shutdown, StartInfo, SupSpec};
use spore_process::*;
use spore_test_support::funcs::*;
use spore_test_support::{Fixture, kill_context};

/// How long anything that should come may take before a test fails.
const LONG: Duration = Duration::from_secs(10);

/// Runs `test` as a process of `router`'s node; fails if it ends early or
/// takes more than 60 s (something waits for ever).
async fn run(router: &spore::Router, test: impl Future<Output = ()> + Send + 'static) {
    tokio::time::timeout(Duration::from_secs(60), Node::of(router).run(test))
        .await
        .expect("the test took more than 60 s")
        .expect("the test's process ended early");
}

fn fixture() -> Fixture {
    capture_logs();
    Fixture::new(env!("CARGO_BIN_EXE_spore-fixture"))
}

async fn down_of(mref: Ref) -> Reason {
    receive_match_timeout(LONG, |m| m.take_if::<Down>(|d| d.mref == mref))
        .await
        .expect("no DOWN within 10 s")
        .reason
}

/// The next message of type `T` (which must come within 10 s).
async fn next<T: Message>() -> T {
    receive_timeout::<T>(LONG)
        .await
        .unwrap_or_else(|| panic!("no {} came within 10 s", std::any::type_name::<T>()))
}

/// A message of type `T` already in the mailbox.
async fn queued<T: Message>() -> Option<T> {
    receive_timeout::<T>(Duration::ZERO).await
}

/// Nothing is left in the calling process: no monitor (of a pid, or of a
/// name in another context), no message.
fn nothing_left() {
    let me = process_info(self_pid()).unwrap();
    assert!(me.monitors.is_empty() && me.mailbox_len == 0, "{me:?}");
}

/// Starts a [`Store`] in `ctx`, registered there as `name`, reporting to
/// the caller.
async fn start_store(ctx: &spore::Context, name: &str) -> Pid {
    gen_server::start_in::<Store>(ctx, Some(self_pid()), StartOptions::new().name(name))
        .await
        .unwrap_or_else(|e| panic!("the store {name:?} did not start in {}: {e}", ctx.name()))
}

async fn call(to: impl Into<Dest>, req: StoreCall) -> Result<StoreReply, CallError> {
    gen_server::call::<Store>(to, req).await
}

fn get(k: &str) -> StoreCall {
    StoreCall::Get(k.into())
}

// ---------------------------------------------------------------------------
// Captured logs: one subscriber for the test binary, installed before any
// router is built (a context forwards the records its master's level
// enables); each test looks only at lines naming its own servers.

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

/// Waits (10 s at most) for a captured line containing `needle`.
async fn await_log_line(needle: &str) -> Vec<String> {
    let deadline = Instant::now() + LONG;
    loop {
        let lines = log_lines(needle);
        if !lines.is_empty() || Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------
// B20 and B21 across contexts: a gen_server in a child context.

#[tokio::test]
async fn a_gen_server_in_a_child_context_answers_calls_and_casts_by_pid_and_by_name() {
    let fx = fixture();
    let router = fx.router();
    let a = router.local().await.unwrap();
    run(&router, async move {
        let store = start_store(&a, "store").await;
        assert_eq!(store.context(), a.id());
        let by_name = Dest::at(a.id(), "store");
        let put = |k: &str, v| StoreCall::Put(k.into(), v);
        assert_eq!(call(store, put("a", 1)).await, Ok(StoreReply::Value(None)));
        assert_eq!(
            call(by_name.clone(), put("a", 2)).await,
            Ok(StoreReply::Value(Some(1)))
        );
        gen_server::cast::<Store>(store, StoreCast::Put("b".into(), 3));
        gen_server::cast::<Store>(by_name.clone(), StoreCast::Put("c".into(), 4));
        for (k, v) in [("a", 2), ("b", 3), ("c", 4)] {
            assert_eq!(
                call(by_name.clone(), get(k)).await,
                Ok(StoreReply::Value(Some(v))),
                "key {k}"
            );
        }

        // Messages that arrive during a call stay queued, in order
        // (the server sends them before its reply).
        assert_eq!(
            call(by_name.clone(), StoreCall::ChatterThenReply(5)).await,
            Ok(StoreReply::Ok)
        );
        for i in 0..5u32 {
            assert_eq!(queued::<u32>().await, Some(i));
        }

        // Names in another context: looked up there, sent to there.
        assert_eq!(whereis_in(a.id(), "store").await, Some(store));
        assert_eq!(whereis_in(a.id(), "nobody").await, None);
        send_named_in(a.id(), "nobody", "dropped silently".to_string());
        send_named_in(a.id(), "store", "hello".to_string());
        assert_eq!(next::<StoreInfo>().await, StoreInfo("hello".into()));

        // Every call by name removed its monitor there when it ended:
        // the only monitor on the server is this call's.
        assert_eq!(
            call(by_name, StoreCall::MonitoredBy).await,
            Ok(StoreReply::Count(1))
        );
        nothing_left();
    })
    .await;
    router.shutdown().await;
}

#[tokio::test]
async fn a_call_across_contexts_fails_at_once_with_the_servers_reason_or_noproc() {
    // Each call has the default 5 s timeout: a failure that waited for it
    // would be a Timeout, not the server's reason.
    let fx = fixture();
    let router = fx.router();
    let a = router.local().await.unwrap();
    run(&router, async move {
        // The server ends during the call, by its own decision, called
        // by pid and by name; its terminate runs there first.
        let s1 = start_store(&a, "s1").await;
        let err = call(s1, StoreCall::Stop(Reason::error("boom")))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            CallError::Exit {
                server: s1.to_string(),
                reason: Reason::error("boom")
            }
        );
        assert_eq!(
            queued::<StoreTerminated>().await,
            Some(StoreTerminated {
                server: s1,
                reason: Reason::error("boom")
            })
        );
        let s2 = start_store(&a, "s2").await;
        let bye = Reason::ShutdownWith("by name".into());
        let err = call(Dest::at(a.id(), "s2"), StoreCall::Stop(bye.clone()))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            CallError::Exit {
                server: format!("\"s2\" in context {}", a.id()),
                reason: bye.clone()
            }
        );
        assert_eq!(
            queued::<StoreTerminated>().await,
            Some(StoreTerminated {
                server: s2,
                reason: bye
            })
        );

        // Killed by a signal while it holds the call.
        let s3 = start_store(&a, "s3").await;
        let killer = spawn(async move {
            let _holding: String = receive().await;
            exit(s3, Reason::Kill);
        });
        let err = call(Dest::at(a.id(), "s3"), StoreCall::Hold(Some(killer)))
            .await
            .unwrap_err();
        assert_eq!(err.reason(), Some(&Reason::Killed), "{err}");

        // A name nothing has there, and a dead pid: noproc.
        let err = call(Dest::at(a.id(), "s1"), get("k")).await.unwrap_err();
        assert_eq!(err.reason(), Some(&Reason::Noproc), "{err}");
        let err = call(s1, get("k")).await.unwrap_err();
        assert_eq!(err.reason(), Some(&Reason::Noproc), "{err}");
        nothing_left();
    })
    .await;
    router.shutdown().await;
}

#[tokio::test]
async fn a_call_to_a_server_whose_context_is_lost_fails_with_noconnection() {
    let fx = fixture();
    let router = fx.router();
    let a = router.local().await.unwrap();
    let b = router.local().await.unwrap();
    run(&router, async move {
        let store = start_store(&a, "store").await;
        // Lost during the call: SIGKILL once the server holds it.
        let ctx = a.clone();
        let killer = spawn(async move {
            let _holding: String = receive().await;
            kill_context(&ctx);
        });
        let err = call(Dest::at(a.id(), "store"), StoreCall::Hold(Some(killer)))
            .await
            .unwrap_err();
        assert_eq!(err.reason(), Some(&Reason::Noconnection), "{err}");

        // Known lost: everything fails at once, by name or by pid.
        let err = call(Dest::at(a.id(), "store"), get("k")).await.unwrap_err();
        assert_eq!(err.reason(), Some(&Reason::Noconnection), "{err}");
        let err = call(store, get("k")).await.unwrap_err();
        assert_eq!(err.reason(), Some(&Reason::Noconnection), "{err}");
        let err = gen_server::stop(Dest::at(a.id(), "store"), Reason::Normal, LONG)
            .await
            .unwrap_err();
        assert_eq!(err.reason(), Some(&Reason::Noconnection), "{err}");
        assert_eq!(whereis_in(a.id(), "store").await, None);
        send_named_in(a.id(), "store", "dropped".to_string());
        let err = gen_server::start_in::<Store>(&a, None, StartOptions::new())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, StartError::Spawn(e) if e.to_string().contains("unreachable")),
            "{err}"
        );
        nothing_left();

        // The other context is untouched.
        let other = start_store(&b, "store").await;
        assert_eq!(
            call(Dest::at(b.id(), "store"), get("k")).await,
            Ok(StoreReply::Value(None))
        );
        assert_eq!(whereis_in(b.id(), "store").await, Some(other));
    })
    .await;
    router.shutdown().await;
}

#[tokio::test]
async fn after_a_call_timeout_across_contexts_the_late_reply_never_appears() {
    let fx = fixture();
    let router = fx.router();
    let a = router.local().await.unwrap();
    run(&router, async move {
        let store = start_store(&a, "store").await;
        for dest in [Dest::Pid(store), Dest::at(a.id(), "store")] {
            // The server holds the call until told: it times out.
            let err = gen_server::call_timeout::<Store>(
                dest.clone(),
                StoreCall::Hold(None),
                Duration::from_millis(100),
            )
            .await
            .unwrap_err();
            assert!(matches!(err, CallError::Timeout { .. }), "{err}");
            // Now it replies, late. That reply travels ahead of the
            // next call's, so it has arrived (and was dropped) when
            // the next call returns.
            gen_server::cast::<Store>(dest.clone(), StoreCast::Release);
            assert_eq!(
                call(dest.clone(), get("k")).await,
                Ok(StoreReply::Value(None)),
                "{dest}"
            );
            nothing_left();
        }
        // The monitors of the calls that gave up were removed there
        // too: only this call's is on the server.
        assert_eq!(
            call(store, StoreCall::MonitoredBy).await,
            Ok(StoreReply::Count(1))
        );
    })
    .await;
    router.shutdown().await;
}

#[tokio::test]
async fn stop_across_contexts_runs_terminate_there_and_only_an_unclean_end_is_logged() {
    let fx = fixture();
    let router = fx.router();
    let a = router.local().await.unwrap();
    run(&router, async move {
        // By pid and by name; terminate's report, sent before the
        // server ended, is here when stop returns.
        let cases = [
            ("otp-log-normal", Reason::Normal),
            ("otp-log-shutdown", Reason::Shutdown),
            ("otp-log-crash", Reason::error("otp-log-reason")),
        ];
        for (i, (name, reason)) in cases.into_iter().enumerate() {
            let server = start_store(&a, name).await;
            let dest = if i % 2 == 0 {
                Dest::Pid(server)
            } else {
                Dest::at(a.id(), name)
            };
            gen_server::stop(dest, reason.clone(), LONG)
                .await
                .unwrap_or_else(|e| panic!("stop {name}: {e}"));
            assert_eq!(
                queued::<StoreTerminated>().await,
                Some(StoreTerminated { server, reason }),
                "{name}"
            );
            // Gone, and its name with it.
            assert_eq!(whereis_in(a.id(), name).await, None);
        }
        let err = gen_server::stop(Dest::at(a.id(), "otp-log-normal"), Reason::Normal, LONG)
            .await
            .unwrap_err();
        assert_eq!(err.reason(), Some(&Reason::Noproc), "{err}");
        nothing_left();

        // The unclean end is logged there (and forwarded here) once,
        // naming the server and the reason. A context forwards its
        // records in order, so the clean ends, had they been logged,
        // would be here by then.
        let crash = await_log_line("\"otp-log-crash\"").await;
        assert_eq!(crash.len(), 1, "{crash:?}");
        assert!(crash[0].contains("otp-log-reason"), "{crash:?}");
        assert_eq!(log_lines("\"otp-log-normal\""), Vec::<String>::new());
        assert_eq!(log_lines("\"otp-log-shutdown\""), Vec::<String>::new());
    })
    .await;
    router.shutdown().await;
}

// ---------------------------------------------------------------------------
// B16, B17, B19 across contexts: a supervisor here, its children in child
// contexts.

/// What a child's start function tells the test each time it starts it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Started {
    id: String,
    pid: Pid,
    restarts: u32,
    last_exit: Option<Reason>,
}

/// A child running [`sup_worker`] (trapping exits) in a context chosen
/// from its [`StartInfo`] by a placement function: `home`, unless its
/// last incarnation's context was lost (last exit `noconnection`), then
/// `spare`. Each start is reported to `observer`.
fn remote_child(
    id: &str,
    home: &spore::Context,
    spare: &spore::Context,
    observer: Pid,
    comply: bool,
) -> ChildSpec {
    let (home, spare, name) = (home.clone(), spare.clone(), id.to_owned());
    ChildSpec::new(id, move |info: StartInfo| {
        let ctx = if info.last_exit == Some(Reason::Noconnection) {
            spare.clone()
        } else {
            home.clone()
        };
        let id = name.clone();
        async move {
            let opts = SpawnOptions::new().link().trap_exit();
            let args = (id.clone(), observer, comply);
            let (pid, _) = spawn_opt_in(&ctx, sup_worker, args, opts)
                .await
                .map_err(Reason::error)?;
            let started = Started {
                id,
                pid,
                restarts: info.restarts,
                last_exit: info.last_exit,
            };
            send(observer, started);
            Ok(pid)
        }
    })
}

async fn pids(sup: Pid) -> Vec<(String, Option<Pid>)> {
    supervisor::which_children(sup)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.id, c.pid))
        .collect()
}

#[tokio::test]
async fn one_for_one_restarts_a_remote_child_that_crashed_and_only_it() {
    let fx = fixture();
    let router = fx.router();
    let a = router.local().await.unwrap();
    let b = router.local().await.unwrap();
    run(&router, async move {
        let me = self_pid();
        let sup = supervisor::start_link(SupSpec::one_for_one(vec![
            remote_child("x", &a, &b, me, true),
            remote_child("y", &b, &a, me, true),
        ]))
        .await
        .unwrap();
        let x = next::<Started>().await;
        let y = next::<Started>().await;
        assert_eq!((x.id.as_str(), x.pid.context()), ("x", a.id()));
        assert_eq!((y.id.as_str(), y.pid.context()), ("y", b.id()));

        let mref = monitor(x.pid);
        send(x.pid, Crash(Reason::error("boom")));
        assert_eq!(down_of(mref).await, Reason::error("boom"));
        let x2 = next::<Started>().await;
        assert_eq!(
            x2,
            Started {
                id: "x".into(),
                pid: x2.pid,
                restarts: 1,
                last_exit: Some(Reason::error("boom"))
            }
        );
        assert_eq!(x2.pid.context(), a.id(), "restarted at home");
        assert_ne!(x2.pid, x.pid);
        assert_eq!(
            pids(sup).await,
            [("x".into(), Some(x2.pid)), ("y".into(), Some(y.pid))]
        );

        supervisor::stop(sup, Reason::Normal).await.unwrap();
        assert_eq!(queued::<String>().await.as_deref(), Some("stop y"));
        assert_eq!(queued::<String>().await.as_deref(), Some("stop x"));
        assert_eq!(queued::<Started>().await, None);
    })
    .await;
    router.shutdown().await;
}

#[tokio::test]
async fn a_child_whose_context_is_killed_is_restarted_in_the_context_its_placement_chooses() {
    let fx = fixture();
    let router = fx.router();
    let a = router.local().await.unwrap();
    let b = router.local().await.unwrap();
    let spare = router.local().await.unwrap();
    run(&router, async move {
        let me = self_pid();
        let sup = supervisor::start_link(SupSpec::one_for_one(vec![
            remote_child("x", &a, &spare, me, true),
            remote_child("y", &b, &spare, me, true),
        ]))
        .await
        .unwrap();
        let x = next::<Started>().await;
        let y = next::<Started>().await;
        assert_eq!(x.pid.context(), a.id());

        let mref = monitor(x.pid);
        kill_context(&a);
        assert_eq!(down_of(mref).await, Reason::Noconnection);
        let x2 = next::<Started>().await;
        assert_eq!(
            x2,
            Started {
                id: "x".into(),
                pid: x2.pid,
                restarts: 1,
                last_exit: Some(Reason::Noconnection)
            }
        );
        assert_eq!(x2.pid.context(), spare.id(), "placed in the spare context");
        assert_eq!(
            pids(sup).await,
            [("x".into(), Some(x2.pid)), ("y".into(), Some(y.pid))]
        );

        // The restarted child is supervised as any: stopped last-in,
        // first-out, in its new context.
        supervisor::stop(sup, Reason::Normal).await.unwrap();
        assert_eq!(queued::<String>().await.as_deref(), Some("stop y"));
        assert_eq!(queued::<String>().await.as_deref(), Some("stop x"));
    })
    .await;
    router.shutdown().await;
}

#[tokio::test]
async fn remote_children_stop_in_reverse_order_with_brutal_kill_and_timeout() {
    let fx = fixture();
    let router = fx.router();
    let a = router.local().await.unwrap();
    let b = router.local().await.unwrap();
    run(&router, async move {
        let me = self_pid();
        let timeout = Shutdown::Timeout(LONG);
        let sup = supervisor::start_link(SupSpec::one_for_one(vec![
            remote_child("c0", &b, &b, me, true).shutdown(timeout),
            remote_child("c1", &a, &a, me, true).shutdown(timeout),
            // Would report "stop c2" if it were asked to stop.
            remote_child("c2", &b, &b, me, true).shutdown(Shutdown::BrutalKill),
            // Ignores the shutdown: killed when the timeout has passed.
            remote_child("c3", &a, &a, me, false)
                .shutdown(Shutdown::Timeout(Duration::from_millis(100))),
        ]))
        .await
        .unwrap();
        let mut mrefs = Vec::new();
        for _ in 0..4 {
            let s = next::<Started>().await;
            mrefs.push((s.id, monitor(s.pid)));
        }

        supervisor::stop(sup, Reason::Normal).await.unwrap();
        // Each child is told only once the one after it is dead, and
        // what it sent before it died is here before its death is
        // known: the reports are in stop order, and complete.
        for line in ["ignored c3", "stop c1", "stop c0"] {
            assert_eq!(queued::<String>().await.as_deref(), Some(line));
        }
        assert_eq!(queued::<String>().await, None, "c2 was never asked");
        let mut reasons = Vec::new();
        for (id, mref) in mrefs {
            reasons.push((id, down_of(mref).await));
        }
        assert_eq!(
            reasons,
            [
                ("c0".into(), Reason::Shutdown),
                ("c1".into(), Reason::Shutdown),
                ("c2".into(), Reason::Killed),
                ("c3".into(), Reason::Killed),
            ]
        );
    })
    .await;
    router.shutdown().await;
}

#[tokio::test]
async fn a_temporary_remote_child_leaves_the_child_list_when_it_ends() {
    let fx = fixture();
    let router = fx.router();
    let a = router.local().await.unwrap();
    let b = router.local().await.unwrap();
    run(&router, async move {
        let me = self_pid();
        let sup = supervisor::start_link(SupSpec::one_for_one(vec![
            remote_child("t", &a, &a, me, true).restart(Restart::Temporary),
            remote_child("p", &b, &b, me, true),
        ]))
        .await
        .unwrap();
        let t = next::<Started>().await;
        let p = next::<Started>().await;
        let mref = monitor(t.pid);
        send(t.pid, Crash(Reason::error("boom")));
        assert_eq!(down_of(mref).await, Reason::error("boom"));
        // Its exit signal to the supervisor left its context before its
        // DOWN to us (a node signals links before monitors), so the
        // supervisor has handled it before this call.
        assert_eq!(pids(sup).await, [("p".into(), Some(p.pid))]);
        assert_eq!(queued::<Started>().await, None, "not restarted");
        supervisor::stop(sup, Reason::Normal).await.unwrap();
        assert_eq!(queued::<String>().await.as_deref(), Some("stop p"));
    })
    .await;
    router.shutdown().await;
}
