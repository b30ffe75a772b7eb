//! The supervisor (BEHAVIOURS.md B16–B19), with real processes in one
//! context. Children report "start <id>" and "stop <id>" to the test
//! process, so the tests check the order of stops and restarts.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use spore_process::call::CallError;
use spore_process::supervisor::{
    self, ChildCount, ChildError, ChildKind, ChildRef, ChildSpec, Restart, Shutdown, StartError,
    StartInfo, Strategy, SupSpec,
};
use spore_process::*;

/// Runs `fut` as a process of a fresh node and returns what it returns;
/// fails if it takes more than 30 s (a supervisor that waits forever).
fn run<T: Send + 'static>(fut: impl std::future::Future<Output = T> + Send + 'static) -> T {
    let node = Node::new();
    let out = node
        .run_blocking(async {
            tokio::time::timeout(Duration::from_secs(30), fut)
                .await
                .expect("the test took more than 30 s")
        })
        .expect("the test's process ended early");
    node.stop();
    out
}

/// Makes a test child end with this reason.
#[derive(Debug, Serialize, Deserialize)]
struct Crash(Reason);

/// How a test child answers its supervisor's `shutdown`.
#[derive(Clone, Copy, Debug, PartialEq)]
enum OnShutdown {
    /// Reports "stop <id>" and ends with the reason.
    Comply,
    /// Reports "ignored <id>" and goes on.
    Ignore,
    /// Reports "stop <id>" after this long, then ends with the reason.
    Slow(Duration),
}

/// A child that traps exits from birth (so also one stopped before it
/// first ran), reports "start <id>" at its first line, ends with the reason
/// of a [`Crash`] it gets, and answers an exit signal as `on_shutdown` says.
fn child(id: &str, to: Pid, on_shutdown: OnShutdown) -> ChildSpec {
    let name = id.to_owned();
    ChildSpec::new(id, move |_| {
        let id = name.clone();
        let body = async move {
            send(to, format!("start {id}"));
            loop {
                let ev = receive_match(|m| {
                    m.take::<Crash>()
                        .map(Ok)
                        .or_else(|| m.take::<Exit>().map(Err))
                })
                .await;
                match ev {
                    Ok(Crash(reason)) => return reason,
                    Err(Exit { reason, .. }) => match on_shutdown {
                        OnShutdown::Comply => {
                            send(to, format!("stop {id}"));
                            return reason;
                        }
                        OnShutdown::Ignore => send(to, format!("ignored {id}")),
                        OnShutdown::Slow(d) => {
                            tokio::time::sleep(d).await;
                            send(to, format!("stop {id}"));
                            return reason;
                        }
                    },
                }
            }
        };
        async move {
            let opts = SpawnOptions::new().link().trap_exit();
            Ok(spawn_opt(body, opts).expect("no name to clash").0)
        }
    })
}

/// A compliant child reporting to the caller.
fn worker(id: &str) -> ChildSpec {
    child(id, self_pid(), OnShutdown::Comply)
}

/// The next `n` reports, in order (5 s at most for each).
async fn events(n: usize) -> Vec<String> {
    let mut v = Vec::new();
    for _ in 0..n {
        match receive_timeout::<String>(Duration::from_secs(5)).await {
            Some(s) => v.push(s),
            None => panic!("only {v:?} came, {n} expected"),
        }
    }
    v
}

/// No report within 100 ms.
async fn no_more_events() {
    if let Some(s) = receive_timeout::<String>(Duration::from_millis(100)).await {
        panic!("unexpected report {s:?}");
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

async fn pid_of(sup: Pid, id: &str) -> Option<Pid> {
    supervisor::which_children(sup)
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.id == id)
        .expect("a child with this id")
        .pid
}

async fn down_of(mref: Ref) -> Reason {
    receive_match(|m| m.take_if::<Down>(|d| d.mref == mref))
        .await
        .reason
}

/// Ends child `pid` with `reason` (killed with `exit(kill)` for `Killed`)
/// and returns once it is dead; the supervisor has its EXIT queued by then.
async fn end_child(pid: Pid, reason: Reason) {
    let mref = monitor(pid);
    if reason == Reason::Killed {
        exit(pid, Reason::Kill);
    } else {
        send(pid, Crash(reason.clone()));
    }
    assert_eq!(down_of(mref).await, reason);
}

async fn start(spec: SupSpec) -> Pid {
    supervisor::start_link(spec)
        .await
        .expect("the supervisor starts")
}

fn error(s: &str) -> Reason {
    Reason::error(s)
}

// B16

#[test]
fn one_for_one_restarts_only_the_child_that_ended() {
    run(async {
        let sup = start(SupSpec::one_for_one(vec![
            worker("a"),
            worker("b"),
            worker("c"),
        ]))
        .await;
        assert_eq!(events(3).await, strings(&["start a", "start b", "start c"]));
        let (a, b, c) = (
            pid_of(sup, "a").await,
            pid_of(sup, "b").await,
            pid_of(sup, "c").await,
        );
        end_child(b.unwrap(), error("boom")).await;
        assert_eq!(events(1).await, strings(&["start b"]));
        no_more_events().await;
        assert_eq!(pid_of(sup, "a").await, a);
        assert_eq!(pid_of(sup, "c").await, c);
        let new_b = pid_of(sup, "b").await;
        assert!(new_b.is_some() && new_b != b);
        assert!(is_alive(new_b.unwrap()));
    });
}

#[test]
fn one_for_all_stops_the_others_in_reverse_order_and_starts_all_in_order() {
    run(async {
        let sup = start(SupSpec::one_for_all(vec![
            worker("a"),
            worker("b"),
            worker("c"),
            worker("d"),
        ]))
        .await;
        assert_eq!(events(4).await.len(), 4);
        let old: Vec<Option<Pid>> = vec![
            pid_of(sup, "a").await,
            pid_of(sup, "b").await,
            pid_of(sup, "c").await,
            pid_of(sup, "d").await,
        ];
        end_child(old[1].unwrap(), error("boom")).await;
        assert_eq!(
            events(7).await,
            strings(&[
                "stop d", "stop c", "stop a", "start a", "start b", "start c", "start d"
            ])
        );
        no_more_events().await;
        for (i, id) in ["a", "b", "c", "d"].iter().enumerate() {
            let now = pid_of(sup, id).await;
            assert!(now.is_some() && now != old[i], "{id} was restarted");
            assert!(!is_alive(old[i].unwrap()));
        }
    });
}

#[test]
fn rest_for_one_restarts_the_child_and_those_started_after_it() {
    run(async {
        let sup = start(SupSpec::rest_for_one(vec![
            worker("a"),
            worker("b"),
            worker("c"),
            worker("d"),
        ]))
        .await;
        assert_eq!(events(4).await.len(), 4);
        let a = pid_of(sup, "a").await;
        let b = pid_of(sup, "b").await.unwrap();
        end_child(b, error("boom")).await;
        assert_eq!(
            events(5).await,
            strings(&["stop d", "stop c", "start b", "start c", "start d"])
        );
        no_more_events().await;
        assert_eq!(pid_of(sup, "a").await, a, "a, started before b, runs on");
    });
}

#[test]
fn a_dynamic_supervisor_starts_children_on_demand_from_one_spec_and_restarts_them_with_their_argument()
 {
    run(async {
        let me = self_pid();
        let template = ChildSpec::new("conn", move |info: StartInfo| async move {
            let port: u16 = info.arg()?;
            Ok(spawn_link(async move {
                send(me, format!("start {port} after {}", info.restarts));
                let Crash(reason) = receive().await;
                reason
            }))
        });
        let sup = start(SupSpec::dynamic(template).intensity(10, Duration::from_secs(5))).await;
        assert!(supervisor::which_children(sup).await.unwrap().is_empty());

        let p1 = supervisor::start_child(sup, 8001u16).await.unwrap();
        let p2 = supervisor::start_child(sup, 8002u16).await.unwrap();
        assert_eq!(
            events(2).await,
            strings(&["start 8001 after 0", "start 8002 after 0"])
        );
        let children = supervisor::which_children(sup).await.unwrap();
        assert_eq!(
            children.iter().map(|c| c.pid).collect::<Vec<_>>(),
            vec![Some(p1), Some(p2)]
        );
        assert!(children.iter().all(|c| c.id == "conn"));
        assert_eq!(
            supervisor::count_children(sup).await.unwrap(),
            ChildCount {
                specs: 1,
                active: 2,
                supervisors: 0,
                workers: 2
            }
        );

        // Restarted with the same argument.
        end_child(p1, error("boom")).await;
        assert_eq!(events(1).await, strings(&["start 8001 after 1"]));
        let pids: Vec<Pid> = supervisor::which_children(sup)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.pid.unwrap())
            .collect();
        assert_eq!(pids.len(), 2);
        assert!(pids.contains(&p2) && !pids.contains(&p1));

        // A dynamic child stopped by terminate_child (by pid) leaves.
        supervisor::terminate_child(sup, p2).await.unwrap();
        assert!(!is_alive(p2));
        assert_eq!(supervisor::which_children(sup).await.unwrap().len(), 1);

        // Stopping stops the rest.
        let last = supervisor::which_children(sup).await.unwrap()[0]
            .pid
            .unwrap();
        supervisor::stop(sup, Reason::Normal).await.unwrap();
        assert!(!is_alive(last));
    });
}

#[test]
fn a_dynamic_supervisor_stops_all_its_children_at_once_then_waits_for_each() {
    run(async {
        let me = self_pid();
        let template = ChildSpec::new("slow", move |info: StartInfo| async move {
            let n: u32 = info.arg()?;
            Ok(spawn_link(async move {
                trap_exit(true);
                let _: Exit = receive().await;
                tokio::time::sleep(Duration::from_millis(400)).await;
                send(me, format!("stop {n}"));
            }))
        })
        .restart(Restart::Temporary);
        let sup = start(SupSpec::dynamic(template)).await;
        for n in 0..4u32 {
            supervisor::start_child(sup, n).await.unwrap();
        }
        let t = Instant::now();
        supervisor::stop(sup, Reason::Normal).await.unwrap();
        let took = t.elapsed();
        // All four stopped in parallel: about 400 ms, not 1600.
        assert!(took >= Duration::from_millis(400), "{took:?}");
        assert!(took < Duration::from_millis(1200), "{took:?}");
        let mut got = events(4).await;
        got.sort();
        assert_eq!(got, strings(&["stop 0", "stop 1", "stop 2", "stop 3"]));
    });
}

// B17

#[test]
fn restart_types_decide_by_the_exit_reason() {
    let reasons = [
        Reason::Normal,
        Reason::Shutdown,
        Reason::ShutdownWith("maintenance".into()),
        Reason::Killed,
        error("boom"),
    ];
    for restart in [Restart::Permanent, Restart::Transient, Restart::Temporary] {
        for reason in reasons.clone() {
            let restarted = match restart {
                Restart::Permanent => true,
                Restart::Transient => matches!(reason, Reason::Killed | Reason::Error(_)),
                Restart::Temporary => false,
            };
            run(async move {
                let sup = start(SupSpec::one_for_one(vec![
                    worker("w").restart(restart),
                    worker("other"),
                ]))
                .await;
                assert_eq!(events(2).await.len(), 2);
                let w = pid_of(sup, "w").await.unwrap();
                end_child(w, reason.clone()).await;
                let children = supervisor::which_children(sup).await.unwrap();
                let entry = children.iter().find(|c| c.id == "w");
                let case = format!("{restart:?} after {reason}");
                if restarted {
                    assert_eq!(events(1).await, strings(&["start w"]), "{case}");
                    let entry = entry.expect("still listed");
                    assert!(entry.pid.is_some() && entry.pid != Some(w), "{case}");
                    assert_eq!(entry.restarts, 1, "{case}");
                } else {
                    no_more_events().await;
                    match restart {
                        // Temporary children leave the list.
                        Restart::Temporary => assert!(entry.is_none(), "{case}"),
                        // Others stay, stopped.
                        _ => assert_eq!(entry.expect("still listed").pid, None, "{case}"),
                    }
                }
                assert_eq!(children.len(), if entry.is_some() { 2 } else { 1 });
                assert!(pid_of(sup, "other").await.is_some());
            });
        }
    }
}

#[test]
fn a_temporary_child_stopped_by_the_supervisor_leaves_the_list_too() {
    run(async {
        let sup = start(SupSpec::one_for_all(vec![
            worker("t").restart(Restart::Temporary),
            worker("p"),
        ]))
        .await;
        assert_eq!(events(2).await.len(), 2);
        // A one_for_all restart stops the temporary child and does not
        // start it again.
        end_child(pid_of(sup, "p").await.unwrap(), error("boom")).await;
        assert_eq!(events(2).await, strings(&["stop t", "start p"]));
        let ids: Vec<String> = supervisor::which_children(sup)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(ids, strings(&["p"]));
    });
}

// B18

#[test]
fn more_restarts_than_the_default_intensity_stop_the_supervisor_with_shutdown() {
    run(async {
        trap_exit(true);
        let sup = start(SupSpec::one_for_one(vec![worker("a"), worker("b")])).await;
        let sup_mon = monitor(sup);
        assert_eq!(events(2).await.len(), 2);
        let b = pid_of(sup, "b").await.unwrap();
        // 1 restart in 5 s is allowed.
        end_child(pid_of(sup, "a").await.unwrap(), error("one")).await;
        assert_eq!(events(1).await, strings(&["start a"]));
        let a = pid_of(sup, "a").await.unwrap();
        // A second one is not: b is stopped, a is not restarted.
        end_child(a, error("two")).await;
        assert_eq!(events(1).await, strings(&["stop b"]));
        assert_eq!(down_of(sup_mon).await, Reason::Shutdown);
        assert!(!is_alive(b) && !is_alive(a));
        no_more_events().await;
        // The parent (trapping) got the EXIT.
        assert_eq!(
            receive::<Exit>().await,
            Exit {
                from: sup,
                reason: Reason::Shutdown
            }
        );
        assert_eq!(processes(), vec![self_pid()], "nothing is left running");
    });
}

#[test]
fn intensity_counts_restarts_within_the_period_only() {
    run(async {
        trap_exit(true);
        let sup =
            start(SupSpec::one_for_one(vec![worker("a")]).intensity(2, Duration::from_millis(300)))
                .await;
        let sup_mon = monitor(sup);
        assert_eq!(events(1).await.len(), 1);
        // Two restarts, a pause longer than the period, two more: fine.
        for _ in 0..2 {
            end_child(pid_of(sup, "a").await.unwrap(), error("x")).await;
            assert_eq!(events(1).await, strings(&["start a"]));
        }
        tokio::time::sleep(Duration::from_millis(350)).await;
        for _ in 0..2 {
            end_child(pid_of(sup, "a").await.unwrap(), error("x")).await;
            assert_eq!(events(1).await, strings(&["start a"]));
        }
        assert!(is_alive(sup));
        // A third within the period is one too many.
        end_child(pid_of(sup, "a").await.unwrap(), error("x")).await;
        assert_eq!(down_of(sup_mon).await, Reason::Shutdown);
        no_more_events().await;
    });
}

#[test]
fn intensity_zero_allows_no_restart() {
    run(async {
        trap_exit(true);
        let sup =
            start(SupSpec::one_for_one(vec![worker("a")]).intensity(0, Duration::from_secs(5)))
                .await;
        let sup_mon = monitor(sup);
        assert_eq!(events(1).await.len(), 1);
        end_child(pid_of(sup, "a").await.unwrap(), error("x")).await;
        assert_eq!(down_of(sup_mon).await, Reason::Shutdown);
        no_more_events().await;
    });
}

#[test]
fn a_one_for_all_restart_counts_once() {
    run(async {
        trap_exit(true);
        let sup = start(SupSpec::one_for_all(vec![
            worker("a"),
            worker("b"),
            worker("c"),
        ]))
        .await;
        let sup_mon = monitor(sup);
        assert_eq!(events(3).await.len(), 3);
        // Three children restarted: one restart, within the default 1.
        end_child(pid_of(sup, "b").await.unwrap(), error("one")).await;
        assert_eq!(events(5).await.len(), 5);
        assert!(is_alive(sup));
        assert!(pid_of(sup, "a").await.is_some());
        // The second event is one too many.
        end_child(pid_of(sup, "a").await.unwrap(), error("two")).await;
        assert_eq!(events(2).await, strings(&["stop c", "stop b"]));
        assert_eq!(down_of(sup_mon).await, Reason::Shutdown);
    });
}

#[test]
fn a_failing_restart_is_retried_and_counts_toward_the_intensity() {
    run(async {
        trap_exit(true);
        let me = self_pid();
        // Starts the first time only.
        let flaky = ChildSpec::new("flaky", move |info: StartInfo| async move {
            send(me, format!("attempt {}", info.restarts));
            if info.restarts > 0 {
                return Err(error("cannot start"));
            }
            Ok(spawn_link(async {
                let Crash(r) = receive().await;
                r
            }))
        });
        let sup =
            start(SupSpec::one_for_one(vec![flaky]).intensity(3, Duration::from_secs(5))).await;
        let sup_mon = monitor(sup);
        assert_eq!(events(1).await, strings(&["attempt 0"]));
        end_child(pid_of(sup, "flaky").await.unwrap(), error("x")).await;
        // Restart 1 fails, retried as restarts 2 and 3, then 4 is too many.
        assert_eq!(
            events(3).await,
            strings(&["attempt 1", "attempt 2", "attempt 3"])
        );
        assert_eq!(down_of(sup_mon).await, Reason::Shutdown);
        no_more_events().await;
    });
}

// B19

#[test]
fn stop_stops_children_in_reverse_order_and_returns_when_all_are_dead() {
    run(async {
        let me = self_pid();
        let sup = start(SupSpec::one_for_one(vec![
            worker("a"),
            child("b", me, OnShutdown::Slow(Duration::from_millis(200))),
            worker("c"),
        ]))
        .await;
        assert_eq!(events(3).await.len(), 3);
        let mut mons = Vec::new();
        for id in ["a", "b", "c"] {
            mons.push(monitor(pid_of(sup, id).await.unwrap()));
        }
        supervisor::stop(sup, Reason::Normal).await.unwrap();
        // Every child's DOWN is already here when stop returns.
        for mref in mons {
            let down =
                receive_match_timeout(Duration::ZERO, |m| m.take_if::<Down>(|d| d.mref == mref))
                    .await;
            assert_eq!(
                down.expect("dead before stop returned").reason,
                Reason::Shutdown
            );
        }
        assert_eq!(events(3).await, strings(&["stop c", "stop b", "stop a"]));
        assert!(!is_alive(sup));
        assert_eq!(processes(), vec![me]);
        // The caller, the parent, was not affected by a normal stop.
        assert!(receive_timeout::<Exit>(Duration::ZERO).await.is_none());
    });
}

#[test]
fn brutal_kill_kills_at_once() {
    run(async {
        let me = self_pid();
        let sup = start(SupSpec::one_for_one(vec![
            child("k", me, OnShutdown::Ignore).shutdown(Shutdown::BrutalKill),
        ]))
        .await;
        assert_eq!(events(1).await.len(), 1);
        let k = pid_of(sup, "k").await.unwrap();
        let mref = monitor(k);
        let t = Instant::now();
        supervisor::terminate_child(sup, "k").await.unwrap();
        // Not the 5 s a worker's default timeout would take.
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        assert_eq!(
            receive_match_timeout(Duration::ZERO, |m| m.take_if::<Down>(|d| d.mref == mref))
                .await
                .expect("dead when terminate_child returns")
                .reason,
            Reason::Killed
        );
        // It never saw a shutdown to ignore.
        no_more_events().await;
        // Still listed, stopped.
        assert_eq!(pid_of(sup, "k").await, None);
    });
}

#[test]
fn a_timeout_waits_that_long_then_kills_a_child_that_ignores_shutdown() {
    run(async {
        let me = self_pid();
        let t_shutdown = Duration::from_millis(300);
        let sup = start(SupSpec::one_for_one(vec![
            child("stubborn", me, OnShutdown::Ignore).shutdown(Shutdown::Timeout(t_shutdown)),
            child("polite", me, OnShutdown::Comply)
                .shutdown(Shutdown::Timeout(Duration::from_secs(5))),
        ]))
        .await;
        assert_eq!(events(2).await.len(), 2);

        // A child that stops when asked is not waited for.
        let polite = pid_of(sup, "polite").await.unwrap();
        let mref = monitor(polite);
        let t = Instant::now();
        supervisor::terminate_child(sup, "polite").await.unwrap();
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        assert_eq!(down_of(mref).await, Reason::Shutdown);
        assert_eq!(events(1).await, strings(&["stop polite"]));

        // One that ignores it is killed after T, never sooner.
        let stubborn = pid_of(sup, "stubborn").await.unwrap();
        let mref = monitor(stubborn);
        let t = Instant::now();
        supervisor::terminate_child(sup, "stubborn").await.unwrap();
        let took = t.elapsed();
        assert_eq!(events(1).await, strings(&["ignored stubborn"]));
        assert_eq!(down_of(mref).await, Reason::Killed);
        assert!(
            took >= t_shutdown,
            "killed after {took:?}, before {t_shutdown:?}"
        );
        assert!(took < t_shutdown + Duration::from_secs(1), "{took:?}");
    });
}

#[test]
fn infinity_waits_as_long_as_the_child_takes() {
    run(async {
        let me = self_pid();
        let sup = start(SupSpec::one_for_one(vec![
            child("slow", me, OnShutdown::Slow(Duration::from_millis(400)))
                .shutdown(Shutdown::Infinity),
        ]))
        .await;
        assert_eq!(events(1).await.len(), 1);
        let mref = monitor(pid_of(sup, "slow").await.unwrap());
        let t = Instant::now();
        supervisor::terminate_child(sup, "slow").await.unwrap();
        assert!(t.elapsed() >= Duration::from_millis(400));
        assert_eq!(down_of(mref).await, Reason::Shutdown, "not killed");
        assert_eq!(events(1).await, strings(&["stop slow"]));
    });
}

#[test]
fn stopping_kills_children_that_ignore_shutdown_and_still_waits_for_every_death() {
    run(async {
        let me = self_pid();
        let t = Duration::from_millis(200);
        let sup = start(SupSpec::one_for_one(vec![
            child("a", me, OnShutdown::Ignore).shutdown(Shutdown::Timeout(t)),
            child("b", me, OnShutdown::Ignore).shutdown(Shutdown::Timeout(t)),
        ]))
        .await;
        assert_eq!(events(2).await.len(), 2);
        let a = monitor(pid_of(sup, "a").await.unwrap());
        let b = monitor(pid_of(sup, "b").await.unwrap());
        let start = Instant::now();
        supervisor::stop(sup, Reason::Normal).await.unwrap();
        // One after the other: T each.
        assert!(start.elapsed() >= 2 * t, "{:?}", start.elapsed());
        for mref in [b, a] {
            let down =
                receive_match_timeout(Duration::ZERO, |m| m.take_if::<Down>(|d| d.mref == mref))
                    .await;
            assert_eq!(
                down.expect("dead before stop returned").reason,
                Reason::Killed
            );
        }
        assert_eq!(events(2).await, strings(&["ignored b", "ignored a"]));
    });
}

#[test]
fn an_exit_from_the_parent_stops_the_children_and_the_supervisor_with_its_reason() {
    run(async {
        let me = self_pid();
        let parent = spawn(async move {
            let sup = supervisor::start_link(SupSpec::one_for_one(vec![
                child("a", me, OnShutdown::Comply),
                child("b", me, OnShutdown::Comply),
            ]))
            .await
            .unwrap();
            send(me, sup);
            let () = receive().await;
            Err::<(), _>(Reason::error("parent gone"))
        });
        let sup: Pid = receive().await;
        let sup_mon = monitor(sup);
        assert_eq!(events(2).await, strings(&["start a", "start b"]));
        send(parent, ());
        assert_eq!(down_of(sup_mon).await, Reason::error("parent gone"));
        assert_eq!(events(2).await, strings(&["stop b", "stop a"]));
    });
}

#[test]
fn an_exit_signal_from_a_process_that_is_not_the_parent_is_ignored() {
    run(async {
        let sup = start(SupSpec::one_for_one(vec![worker("a")])).await;
        assert_eq!(events(1).await.len(), 1);
        let stranger = spawn(async move {
            exit(sup, Reason::Shutdown);
        });
        let mref = monitor(stranger);
        down_of(mref).await;
        assert!(supervisor::which_children(sup).await.is_ok());
        assert!(is_alive(sup));
        no_more_events().await;
    });
}

#[test]
fn a_nested_supervisor_stops_its_children_before_the_parent_goes_on() {
    run(async {
        let me = self_pid();
        let inner = SupSpec::one_for_one(vec![
            child("x", me, OnShutdown::Comply),
            child("y", me, OnShutdown::Comply),
        ]);
        let sup = start(SupSpec::one_for_one(vec![
            worker("a"),
            ChildSpec::supervisor("inner", inner),
            worker("c"),
        ]))
        .await;
        assert_eq!(
            events(4).await,
            strings(&["start a", "start x", "start y", "start c"])
        );
        let children = supervisor::which_children(sup).await.unwrap();
        assert_eq!(children[1].kind, ChildKind::Supervisor);
        assert_eq!(children[1].shutdown, Shutdown::Infinity);
        assert_eq!(
            supervisor::count_children(sup).await.unwrap(),
            ChildCount {
                specs: 3,
                active: 3,
                supervisors: 1,
                workers: 2
            }
        );
        supervisor::stop(sup, Reason::Normal).await.unwrap();
        assert_eq!(
            events(4).await,
            strings(&["stop c", "stop y", "stop x", "stop a"])
        );
        assert_eq!(processes(), vec![me]);
    });
}

// Bad input

#[test]
fn a_child_that_fails_to_start_fails_the_supervisor_cleanly_naming_it() {
    run(async {
        let me = self_pid();
        let sup_name = "failing";
        let bad = ChildSpec::new("c", |_| async { Err(Reason::error("no database")) });
        let got = supervisor::start_link(
            SupSpec::one_for_one(vec![worker("a"), worker("b"), bad, worker("d")]).name(sup_name),
        )
        .await;
        assert_eq!(
            got,
            Err(StartError::Child {
                id: "c".into(),
                reason: Reason::error("no database")
            })
        );
        let msg = got.unwrap_err().to_string();
        assert!(
            msg.contains("\"c\"") && msg.contains("no database"),
            "{msg}"
        );
        // a and b were started then stopped in reverse order; d never ran.
        assert_eq!(
            events(4).await,
            strings(&["start a", "start b", "stop b", "stop a"])
        );
        no_more_events().await;
        // Nothing left: the caller (not trapping) survived, unlinked.
        assert_eq!(processes(), vec![me]);
        assert!(process_info(me).unwrap().links.is_empty());
        assert_eq!(whereis(sup_name), None);
    });
}

#[test]
fn a_start_function_that_panics_is_a_failed_start() {
    run(async {
        let bad = ChildSpec::new("p", |_| async { panic!("start blew up") });
        let got = supervisor::start_link(SupSpec::one_for_one(vec![worker("a"), bad])).await;
        match got {
            Err(StartError::Child {
                id,
                reason: Reason::Panic(m),
            }) => {
                assert_eq!(id, "p");
                assert!(m.contains("start blew up"), "{m}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(events(2).await, strings(&["start a", "stop a"]));
        assert_eq!(processes(), vec![self_pid()]);
    });
}

#[test]
fn duplicate_child_ids_are_refused() {
    run(async {
        let got =
            supervisor::start_link(SupSpec::one_for_one(vec![worker("a"), worker("a")])).await;
        assert_eq!(got, Err(StartError::DuplicateId("a".into())));
        no_more_events().await;
        assert_eq!(processes(), vec![self_pid()]);

        let sup = start(SupSpec::one_for_one(vec![worker("a")])).await;
        assert_eq!(events(1).await.len(), 1);
        let a = pid_of(sup, "a").await.unwrap();
        assert_eq!(
            supervisor::start_child(sup, worker("a")).await,
            Err(ChildError::AlreadyStarted {
                id: "a".into(),
                pid: a
            })
        );
        supervisor::terminate_child(sup, "a").await.unwrap();
        assert_eq!(events(1).await, strings(&["stop a"]));
        assert_eq!(
            supervisor::start_child(sup, worker("a")).await,
            Err(ChildError::AlreadyPresent("a".into()))
        );
        no_more_events().await;
    });
}

#[test]
fn bad_specs_are_refused() {
    run(async {
        let zero_period = SupSpec::one_for_one(vec![worker("a")]).intensity(1, Duration::ZERO);
        assert!(matches!(
            supervisor::start_link(zero_period).await,
            Err(StartError::BadSpec(_))
        ));
        let two_templates = SupSpec::new(Strategy::Dynamic, vec![worker("a"), worker("b")]);
        assert!(matches!(
            supervisor::start_link(two_templates).await,
            Err(StartError::BadSpec(_))
        ));
        let taken = spawn(std::future::pending::<()>());
        register("taken", taken).unwrap();
        assert_eq!(
            supervisor::start_link(SupSpec::one_for_one(vec![worker("a")]).name("taken")).await,
            Err(StartError::AlreadyStarted {
                name: "taken".into(),
                owner: taken
            })
        );
        no_more_events().await;
    });
}

#[test]
fn requests_about_unknown_children_or_of_the_wrong_kind_are_refused() {
    run(async {
        let sup = start(SupSpec::one_for_one(vec![worker("a")])).await;
        assert_eq!(events(1).await.len(), 1);
        let nope = Err(ChildError::NotFound(ChildRef::Id("nope".into())));
        assert_eq!(
            supervisor::restart_child(sup, "nope").await,
            nope.clone().map(|()| sup)
        );
        assert_eq!(supervisor::terminate_child(sup, "nope").await, nope);
        assert_eq!(supervisor::delete_child(sup, "nope").await, nope);
        assert_eq!(
            supervisor::terminate_child(sup, self_pid()).await,
            Err(ChildError::NotFound(ChildRef::Pid(self_pid())))
        );
        // An argument is for a dynamic supervisor.
        assert!(matches!(
            supervisor::start_child(sup, 1u32).await,
            Err(ChildError::Unsupported(_))
        ));
        // A running child cannot be restarted or deleted.
        assert_eq!(
            supervisor::restart_child(sup, "a").await,
            Err(ChildError::Running("a".into()))
        );
        assert_eq!(
            supervisor::delete_child(sup, "a").await,
            Err(ChildError::Running("a".into()))
        );

        let dynamic = start(SupSpec::dynamic(ChildSpec::new(
            "d",
            |info: StartInfo| async move {
                let n: u32 = info.arg()?;
                Ok(spawn_link(async move {
                    let () = receive().await;
                    let _ = n;
                }))
            },
        )))
        .await;
        assert!(matches!(
            supervisor::start_child(dynamic, worker("x")).await,
            Err(ChildError::Unsupported(_))
        ));
        for r in [
            supervisor::delete_child(dynamic, "d").await,
            supervisor::terminate_child(dynamic, "d").await,
            supervisor::restart_child(dynamic, "d").await.map(|_| ()),
        ] {
            assert!(matches!(r, Err(ChildError::Unsupported(_))), "{r:?}");
        }
        // An argument of the wrong type fails the start, naming both types.
        match supervisor::start_child(dynamic, "text".to_string()).await {
            Err(ChildError::Start { id, reason }) => {
                assert_eq!(id, "d");
                let m = reason.to_string();
                assert!(m.contains("String") && m.contains("u32"), "{m}");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            supervisor::which_children(dynamic)
                .await
                .unwrap()
                .is_empty()
        );
        no_more_events().await;
    });
}

#[test]
fn calls_to_a_supervisor_that_is_gone_fail_with_noproc() {
    run(async {
        let sup = start(SupSpec::one_for_one(vec![])).await;
        supervisor::stop(sup, Reason::Normal).await.unwrap();
        let noproc = |e: &CallError| e.reason() == Some(&Reason::Noproc);
        assert!(noproc(&supervisor::which_children(sup).await.unwrap_err()));
        assert!(noproc(&supervisor::count_children(sup).await.unwrap_err()));
        assert!(noproc(
            &supervisor::stop(sup, Reason::Normal).await.unwrap_err()
        ));
        match supervisor::restart_child(sup, "a").await {
            Err(ChildError::Call(e)) => assert!(noproc(&e)),
            other => panic!("{other:?}"),
        }
        assert!(supervisor::which_children("no such name").await.is_err());
    });
}

#[test]
fn a_start_function_that_returns_an_unlinked_pid_gets_it_linked_by_the_supervisor() {
    run(async {
        let me = self_pid();
        let unlinked = ChildSpec::new("u", move |_| async move {
            Ok(spawn(async move {
                send(me, "start u".to_string());
                let Crash(r) = receive().await;
                r
            }))
        });
        let sup = start(SupSpec::one_for_one(vec![unlinked])).await;
        assert_eq!(events(1).await, strings(&["start u"]));
        let u = pid_of(sup, "u").await.unwrap();
        assert_eq!(process_info(u).unwrap().links, vec![sup]);
        // So its crash is seen and it is restarted.
        end_child(u, error("boom")).await;
        assert_eq!(events(1).await, strings(&["start u"]));
        // And stopping the supervisor stops it.
        let u = pid_of(sup, "u").await.unwrap();
        supervisor::stop(sup, Reason::Normal).await.unwrap();
        assert!(!is_alive(u));
    });
}

// The rest of the API

#[test]
fn terminate_restart_and_delete_a_static_child() {
    run(async {
        let sup = start(SupSpec::one_for_one(vec![worker("a"), worker("b")])).await;
        assert_eq!(events(2).await.len(), 2);
        supervisor::terminate_child(sup, "a").await.unwrap();
        assert_eq!(events(1).await, strings(&["stop a"]));
        // Terminating a stopped child is fine.
        supervisor::terminate_child(sup, ChildRef::Id("a".into()))
            .await
            .unwrap();
        assert_eq!(pid_of(sup, "a").await, None);
        assert_eq!(
            supervisor::count_children(sup).await.unwrap(),
            ChildCount {
                specs: 2,
                active: 1,
                supervisors: 0,
                workers: 2
            }
        );
        let a = supervisor::restart_child(sup, "a").await.unwrap();
        assert_eq!(events(1).await, strings(&["start a"]));
        assert_eq!(pid_of(sup, "a").await, Some(a));
        // By pid, too.
        supervisor::terminate_child(sup, a).await.unwrap();
        assert_eq!(events(1).await, strings(&["stop a"]));
        supervisor::delete_child(sup, "a").await.unwrap();
        let ids: Vec<String> = supervisor::which_children(sup)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(ids, strings(&["b"]));
        // A new child goes at the end, and stops first.
        let me = self_pid();
        supervisor::start_child(sup, child("z", me, OnShutdown::Comply))
            .await
            .unwrap();
        assert_eq!(events(1).await, strings(&["start z"]));
        let failing = ChildSpec::new("f", |_| async { Err(Reason::error("nope")) });
        assert_eq!(
            supervisor::start_child(sup, failing).await,
            Err(ChildError::Start {
                id: "f".into(),
                reason: Reason::error("nope")
            })
        );
        assert_eq!(supervisor::which_children(sup).await.unwrap().len(), 2);
        supervisor::stop(sup, Reason::Normal).await.unwrap();
        assert_eq!(events(2).await, strings(&["stop z", "stop b"]));
    });
}

#[test]
fn a_supervisor_is_reachable_by_its_name() {
    run(async {
        let sup = start(SupSpec::one_for_one(vec![worker("a")]).name("top")).await;
        assert_eq!(whereis("top"), Some(sup));
        assert_eq!(supervisor::which_children("top").await.unwrap().len(), 1);
        supervisor::stop("top", Reason::Normal).await.unwrap();
        assert_eq!(whereis("top"), None);
    });
}

#[test]
fn the_start_function_is_told_how_the_last_incarnation_ended_to_place_the_next() {
    run(async {
        let me = self_pid();
        // A placement function: after a lost context (`noconnection`), it
        // would start the child elsewhere; here it reports its choice.
        let placed = ChildSpec::new("placed", move |info: StartInfo| async move {
            let place = match &info.last_exit {
                Some(Reason::Noconnection) => "elsewhere",
                _ => "here",
            };
            let last = info.last_pid;
            let restarts = info.restarts;
            Ok(spawn_link(async move {
                send(me, (place.to_string(), restarts, last));
                let Crash(r) = receive().await;
                r
            }))
        });
        let sup =
            start(SupSpec::one_for_one(vec![placed]).intensity(5, Duration::from_secs(5))).await;
        assert_eq!(
            receive::<(String, u32, Option<Pid>)>().await,
            ("here".into(), 0, None)
        );
        let first = pid_of(sup, "placed").await.unwrap();
        end_child(first, Reason::Noconnection).await;
        assert_eq!(
            receive::<(String, u32, Option<Pid>)>().await,
            ("elsewhere".into(), 1, Some(first))
        );
        let second = pid_of(sup, "placed").await.unwrap();
        end_child(second, error("plain crash")).await;
        assert_eq!(
            receive::<(String, u32, Option<Pid>)>().await,
            ("here".into(), 2, Some(second))
        );
    });
}
