//! Part B of BEHAVIOURS.md with every process in one context. (The same
//! rules across contexts are in `spore-test-support/tests/processes.rs`.)

use std::time::{Duration, Instant};

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

/// Anything a test process can receive, in arrival order.
#[derive(Debug, PartialEq)]
enum Ev {
    Text(String),
    Exit(Exit),
    Down(Down),
}

async fn next_event() -> Ev {
    receive_match(|m| {
        m.take::<String>()
            .map(Ev::Text)
            .or_else(|| m.take::<Exit>().map(Ev::Exit))
            .or_else(|| m.take::<Down>().map(Ev::Down))
    })
    .await
}

async fn down_of(mref: Ref) -> Reason {
    receive_match(|m| m.take_if::<Down>(|d| d.mref == mref))
        .await
        .reason
}

/// Waits until `pid` is gone (polling, for processes we cannot monitor).
async fn yield_until(mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "condition not met in 5 s");
        tokio::task::yield_now().await;
    }
}

// B1
#[test]
fn only_normal_is_ignored_by_a_linked_process_that_does_not_trap() {
    let cases = [
        (Reason::Normal, None),
        (Reason::Shutdown, Some(Reason::Shutdown)),
        (
            Reason::ShutdownWith("maintenance".into()),
            Some(Reason::ShutdownWith("maintenance".into())),
        ),
        (Reason::error("boom"), Some(Reason::error("boom"))),
        // A process that ends itself with `kill` propagates `kill`.
        (Reason::Kill, Some(Reason::Kill)),
    ];
    for (reason, partner_dies_with) in cases {
        run(async move {
            let partner = spawn(idle());
            let partner_mon = monitor(partner);
            let r = reason.clone();
            let (dier, dier_mon) = spawn_monitor(async move {
                link(partner).await.unwrap();
                let _: () = receive().await;
                r
            });
            send(dier, ());
            assert_eq!(down_of(dier_mon).await, reason);
            match partner_dies_with {
                None => {
                    assert!(is_alive(partner), "{reason}: normal must be ignored");
                    assert!(receive_timeout::<Down>(Duration::ZERO).await.is_none());
                }
                Some(want) => assert_eq!(down_of(partner_mon).await, want, "for {reason}"),
            }
        });
    }
}

// B2
#[test]
fn exit_normal_leaves_others_running_and_ends_the_caller_itself() {
    run(async {
        let p = spawn(idle());
        exit(p, Reason::Normal);
        tokio::task::yield_now().await;
        assert!(is_alive(p));
        let (me_too, mref) = spawn_monitor(async {
            exit(self_pid(), Reason::Normal);
            // Ends at its next wait.
            idle().await
        });
        assert_eq!(down_of(mref).await, Reason::Normal);
        assert!(!is_alive(me_too));
        let (_, mref) = spawn_monitor(async {
            exit_self(Reason::Normal).await;
        });
        assert_eq!(down_of(mref).await, Reason::Normal);
    });
}

/// Sends `msg` to `to` when dropped (from a process, dead or alive).
struct SendOnDrop(Pid, &'static str);

impl Drop for SendOnDrop {
    fn drop(&mut self) {
        send(self.0, self.1.to_string());
    }
}

#[test]
fn exit_self_ends_the_process_at_once_and_drops_its_future() {
    run(async {
        let me = self_pid();
        let (p, mref) = spawn_monitor(async move {
            let _guard = SendOnDrop(me, "dropped");
            send(me, "before".to_string());
            exit_self(Reason::error("done")).await;
        });
        assert_eq!(next_event().await, Ev::Text("before".into()));
        // The future was dropped (its destructors ran) before the DOWN.
        assert_eq!(next_event().await, Ev::Text("dropped".into()));
        assert_eq!(
            next_event().await,
            Ev::Down(Down {
                mref,
                pid: p,
                reason: Reason::error("done")
            })
        );
    });
}

#[test]
fn exit_self_beside_other_code_in_one_poll_still_ends_the_process() {
    run(async {
        let me = self_pid();
        let (_, mref) = spawn_monitor(async move {
            // The other branch is ready and wins the select; the exit was
            // decided when exit_self was first polled.
            tokio::select! {
                biased;
                _ = exit_self(Reason::error("decided")) => {}
                () = std::future::ready(()) => {}
            }
            send(me, "after the select".to_string());
            idle().await
        });
        assert_eq!(next_event().await, Ev::Text("after the select".into()));
        assert_eq!(down_of(mref).await, Reason::error("decided"));
    });
}

#[test]
fn a_signal_that_ended_the_process_first_wins_over_exit_self() {
    run(async {
        let (_, mref) = spawn_monitor(async {
            exit(self_pid(), Reason::Kill);
            exit_self(Reason::error("too late")).await;
        });
        assert_eq!(down_of(mref).await, Reason::Killed);
    });
}

// B3
#[test]
fn kill_is_untrappable_and_seen_as_killed_while_a_self_kill_propagates_as_trappable_kill() {
    run(async {
        trap_exit(true);
        let (victim, mref) = spawn_monitor(async {
            trap_exit(true);
            idle().await
        });
        link(victim).await.unwrap();
        exit(victim, Reason::Kill);
        assert_eq!(down_of(mref).await, Reason::Killed);
        assert_eq!(
            receive::<Exit>().await,
            Exit {
                from: victim,
                reason: Reason::Killed
            }
        );
        assert!(!is_alive(victim));

        // A trapping process linked to one that exits itself with `kill`
        // gets an ordinary EXIT with `kill` and survives.
        let me = self_pid();
        let (survivor, survivor_mon) = spawn_monitor(async move {
            trap_exit(true);
            let dier = spawn_link(async {
                exit_self(Reason::Kill).await;
            });
            let got = receive::<Exit>().await;
            assert_eq!(
                got,
                Exit {
                    from: dier,
                    reason: Reason::Kill
                }
            );
            send(me, "survived".to_string());
            idle().await
        });
        assert_eq!(receive::<String>().await, "survived");
        assert!(is_alive(survivor));
        exit(survivor, Reason::Kill);
        assert_eq!(down_of(survivor_mon).await, Reason::Killed);
    });
}

// B4
#[test]
fn trap_exit_switches_at_any_time_and_exit_messages_keep_their_place() {
    run(async {
        let me = self_pid();
        assert!(!trap_exit(true));
        let sender = spawn(async move {
            send(me, "one".to_string());
            send(me, "two".to_string());
            exit(me, Reason::error("stop"));
            send(me, "three".to_string());
        });
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(next_event().await);
        }
        assert_eq!(
            got,
            vec![
                Ev::Text("one".into()),
                Ev::Text("two".into()),
                Ev::Exit(Exit {
                    from: sender,
                    reason: Reason::error("stop")
                }),
                Ev::Text("three".into()),
            ]
        );
        // Off again: the same signal now ends the process.
        let (p, mref) = spawn_monitor(async {
            trap_exit(true);
            let _: () = receive().await;
            assert!(trap_exit(false));
            let _: () = receive().await;
            unreachable!("the exit signal ends it first");
        });
        send(p, ());
        tokio::task::yield_now().await;
        exit(p, Reason::error("now it counts"));
        send(p, ());
        assert_eq!(down_of(mref).await, Reason::error("now it counts"));
    });
}

// B5
#[test]
fn links_are_bidirectional_single_and_idempotent_and_unlink_is_too() {
    run(async {
        let me = self_pid();
        let other = spawn(idle());
        link(other).await.unwrap();
        link(other).await.unwrap();
        assert_eq!(process_info(me).unwrap().links, vec![other]);
        assert_eq!(process_info(other).unwrap().links, vec![me]);
        unlink(other);
        unlink(other);
        assert!(process_info(me).unwrap().links.is_empty());
        assert!(process_info(other).unwrap().links.is_empty());
        // Unlinked: its crash no longer reaches us.
        let mref = monitor(other);
        exit(other, Reason::error("crash"));
        assert_eq!(down_of(mref).await, Reason::error("crash"));
        assert!(is_alive(me));

        // Bidirectional: the link made by the other side kills us too.
        let (victim, vmon) = spawn_monitor(async {
            let _: Pid = receive().await;
            idle().await
        });
        let linker = spawn(async move {
            link(victim).await.unwrap();
            exit_self(Reason::error("linker died")).await;
        });
        send(victim, linker);
        assert_eq!(down_of(vmon).await, Reason::error("linker died"));
    });
}

// B6
#[test]
fn linking_to_a_dead_pid_gives_noproc_and_leaves_no_half_link() {
    run(async {
        let (dead, mref) = spawn_monitor(async {});
        down_of(mref).await;
        assert_eq!(link(dead).await, Err(Reason::Noproc));
        assert!(process_info(self_pid()).unwrap().links.is_empty());
        trap_exit(true);
        assert_eq!(link(dead).await, Ok(()));
        assert_eq!(
            receive_timeout::<Exit>(Duration::ZERO).await,
            Some(Exit {
                from: dead,
                reason: Reason::Noproc
            })
        );
        assert!(process_info(self_pid()).unwrap().links.is_empty());
    });
}

// B7
#[test]
fn monitors_stack_and_each_gives_one_down() {
    run(async {
        let p = spawn(async {
            let _: () = receive().await;
            Reason::error("done")
        });
        let (a, b) = (monitor(p), monitor(p));
        assert_ne!(a, b);
        assert_eq!(process_info(p).unwrap().monitored_by.len(), 2);
        send(p, ());
        let mut downs = vec![receive::<Down>().await, receive::<Down>().await];
        downs.sort_by_key(|d| d.mref);
        assert_eq!(
            downs,
            vec![
                Down {
                    mref: a,
                    pid: p,
                    reason: Reason::error("done")
                },
                Down {
                    mref: b,
                    pid: p,
                    reason: Reason::error("done")
                },
            ]
        );
        assert_eq!(
            receive_timeout::<Down>(Duration::from_millis(20)).await,
            None
        );
    });
}

// B8
#[test]
fn monitoring_a_dead_pid_gives_noproc_at_once() {
    run(async {
        let (dead, mref) = spawn_monitor(async {});
        down_of(mref).await;
        let r = monitor(dead);
        assert_eq!(
            receive_timeout::<Down>(Duration::ZERO).await,
            Some(Down {
                mref: r,
                pid: dead,
                reason: Reason::Noproc
            })
        );
        assert_eq!(receive_timeout::<Down>(Duration::ZERO).await, None);
        // A pid no process ever had.
        let never = spawn(async {});
        let never = Pid::clone(&never);
        let _ = never;
    });
}

// B9
#[test]
fn demonitor_removes_the_monitor_and_flush_removes_a_queued_down() {
    run(async {
        let p = spawn(idle());
        let mref = monitor(p);
        assert!(demonitor(mref, false));
        assert!(!demonitor(mref, false));
        exit(p, Reason::Kill);
        assert_eq!(
            receive_timeout::<Down>(Duration::from_millis(20)).await,
            None
        );

        let q = spawn(async {});
        let mref = monitor(q);
        send(self_pid(), "after".to_string());
        // Let q end: its DOWN is queued.
        yield_until(|| !is_alive(q)).await;
        assert_eq!(process_info(self_pid()).unwrap().mailbox_len, 2);
        assert!(!demonitor(mref, true));
        assert_eq!(receive_timeout::<Down>(Duration::ZERO).await, None);
        assert_eq!(receive::<String>().await, "after");
    });
}

// B10
#[test]
fn a_message_sent_before_a_crash_arrives_before_the_exit_and_the_down() {
    run(async {
        trap_exit(true);
        let me = self_pid();
        let (child, mref) = spawn_opt(
            async move {
                send(me, "last words".to_string());
                panic!("crashed on purpose")
            },
            SpawnOptions::new().link().monitor(),
        )
        .unwrap();
        let mref = mref.unwrap();
        let first = next_event().await;
        assert_eq!(first, Ev::Text("last words".into()));
        let mut rest = vec![next_event().await, next_event().await];
        rest.sort_by_key(|e| matches!(e, Ev::Down(_)));
        let reason = Reason::Panic("crashed on purpose".into());
        assert_eq!(
            rest,
            vec![
                Ev::Exit(Exit {
                    from: child,
                    reason: reason.clone()
                }),
                Ev::Down(Down {
                    mref,
                    pid: child,
                    reason
                }),
            ]
        );
    });
}

// B11
#[test]
fn selective_receive_takes_the_oldest_match_and_keeps_the_rest_in_order() {
    run(async {
        let me = self_pid();
        for i in 0..6u32 {
            send(me, i);
        }
        send(me, "text".to_string());
        let odd = receive_match(|m| m.take_if::<u32>(|n| n % 2 == 1)).await;
        assert_eq!(odd, 1);
        assert_eq!(receive::<String>().await, "text");
        let mut rest = Vec::new();
        while let Some(n) = receive_timeout::<u32>(Duration::ZERO).await {
            rest.push(n);
        }
        assert_eq!(rest, vec![0, 2, 3, 4, 5]);
        // A timeout of 0 polls; a timeout fires when nothing matches.
        send(me, 7u64);
        let t = Instant::now();
        assert_eq!(
            receive_timeout::<u32>(Duration::from_millis(50)).await,
            None
        );
        assert!(t.elapsed() >= Duration::from_millis(50));
        assert_eq!(receive_timeout::<u64>(Duration::ZERO).await, Some(7));
        // A match that arrives while waiting ends the wait at once.
        spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            send(me, 9u32);
        });
        assert_eq!(
            receive_timeout::<u32>(Duration::from_secs(5)).await,
            Some(9)
        );
    });
}

// B12
#[test]
fn sending_to_a_dead_pid_is_fine_and_to_an_unknown_name_is_an_error() {
    run(async {
        let (dead, mref) = spawn_monitor(async {});
        down_of(mref).await;
        send(dead, "into the void".to_string());
        assert_eq!(
            send_named("nobody", 1u8),
            Err(SendError::UnknownName("nobody".into()))
        );
        let p = spawn(async {
            let s: String = receive().await;
            assert_eq!(s, "by name");
        });
        register("svc", p).unwrap();
        let mref = monitor(p);
        send_named("svc", "by name".to_string()).unwrap();
        assert_eq!(down_of(mref).await, Reason::Normal);
        assert_eq!(
            send_named("svc", 1u8),
            Err(SendError::UnknownName("svc".into()))
        );
    });
}

// B13
#[test]
fn names_are_unique_one_per_process_and_freed_on_exit() {
    run(async {
        let first = spawn(idle());
        let second = spawn(idle());
        register("db", first).unwrap();
        assert_eq!(
            register("db", second),
            Err(NameError::Taken {
                name: "db".into(),
                owner: first
            })
        );
        assert_eq!(
            spawn_opt(idle(), SpawnOptions::new().name("db")).unwrap_err(),
            SpawnError::NameTaken {
                name: "db".into(),
                owner: first
            }
        );
        assert_eq!(whereis("db"), Some(first));
        assert_eq!(
            register("other", first),
            Err(NameError::AlreadyNamed {
                pid: first,
                name: "db".into()
            })
        );
        assert_eq!(unregister("db"), Ok(first));
        assert_eq!(unregister("db"), Err(NameError::NotRegistered("db".into())));
        register("db", second).unwrap();
        let mref = monitor(second);
        exit(second, Reason::Shutdown);
        down_of(mref).await;
        assert_eq!(whereis("db"), None);

        // Killed before it first ran: the name is free at once.
        let (named, _) = spawn_opt(idle(), SpawnOptions::new().name("early")).unwrap();
        assert_eq!(whereis("early"), Some(named));
        exit(named, Reason::Kill);
        assert_eq!(whereis("early"), None);
        register("early", first).unwrap();
        let dead = spawn(async {});
        yield_until(|| !is_alive(dead)).await;
        assert_eq!(register("x", dead), Err(NameError::Noproc(dead)));
    });
}

// B14
#[test]
fn a_process_killed_before_its_first_run_is_dead() {
    run(async {
        let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = ran.clone();
        let (p, mref) = spawn_monitor(async move {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        exit(p, Reason::Kill);
        assert!(!is_alive(p));
        assert!(!processes().contains(&p));
        assert_eq!(process_info(p), None);
        assert_eq!(down_of(mref).await, Reason::Killed);
        tokio::task::yield_now().await;
        assert!(
            !ran.load(std::sync::atomic::Ordering::SeqCst),
            "it never ran"
        );
    });
}

// B15
#[test]
fn spawn_link_and_spawn_monitor_report_a_child_that_dies_at_once() {
    run(async {
        trap_exit(true);
        let child = spawn_link(async { Reason::error("instant") });
        assert_eq!(
            receive::<Exit>().await,
            Exit {
                from: child,
                reason: Reason::error("instant")
            }
        );
        let (child, mref) = spawn_monitor(async {
            panic!("instant panic");
        });
        assert_eq!(
            receive::<Down>().await,
            Down {
                mref,
                pid: child,
                reason: Reason::Panic("instant panic".into())
            }
        );
    });
}

#[test]
fn a_panic_ends_only_its_process_with_its_message() {
    let node = Node::new();
    let got = node.run_blocking(async {
        let (_, mref) = spawn_monitor(async {
            let v: Vec<u8> = Vec::new();
            let _ = v[3];
        });
        down_of(mref).await
    });
    match got {
        Ok(Reason::Panic(m)) => assert!(m.contains("index out of bounds"), "{m}"),
        other => panic!("{other:?}"),
    }
    // The node still works.
    assert_eq!(node.run_blocking(async { 5 }), Ok(5));
    assert_eq!(
        node.run_blocking(async { panic!("run's own process") }),
        Err::<(), _>(Reason::Panic("run's own process".into()))
    );
    node.stop();
}

#[test]
fn process_info_and_the_process_list_describe_live_processes() {
    run(async {
        let me = self_pid();
        let p = spawn(async {
            trap_exit(true);
            idle().await
        });
        tokio::task::yield_now().await;
        register("watched", p).unwrap();
        link(p).await.unwrap();
        let mref = monitor(p);
        send(p, 1u8);
        send(p, 2u8);
        let info = process_info(p).unwrap();
        assert_eq!(info.pid, p);
        assert_eq!(info.name.as_deref(), Some("watched"));
        assert_eq!(info.mailbox_len, 2);
        assert_eq!(info.links, vec![me]);
        assert_eq!(info.monitored_by, vec![me]);
        assert!(info.trap_exit);
        assert_eq!(info.status, Status::Runnable);
        assert!(info.memory > 0);
        let mine = process_info(me).unwrap();
        assert_eq!(mine.status, Status::Running);
        assert_eq!(mine.monitors, vec![(mref, p)]);
        assert_eq!(processes(), vec![me, p]);
    });
}

#[test]
fn a_bounded_mailbox_refuses_try_send_and_makes_send_wait_wait() {
    run(async {
        let me = self_pid();
        let (consumer, _) = spawn_opt(
            async move {
                let _: () = receive().await;
                for _ in 0..5 {
                    let n: u32 = receive().await;
                    send(me, n);
                }
            },
            SpawnOptions::new().mailbox_bound(2),
        )
        .unwrap();
        assert!(try_send(consumer, 0u32).is_ok());
        assert!(try_send(consumer, 1u32).is_ok());
        let (err, back) = try_send(consumer, 2u32).unwrap_err();
        assert_eq!((err, back), (SendError::Full(consumer), 2));
        let producer = spawn(async move {
            send_wait(consumer, 2u32).await;
            send_wait(consumer, 3u32).await;
            send_wait(consumer, 4u32).await;
        });
        tokio::task::yield_now().await;
        assert!(is_alive(producer), "it waits for room");
        // Plain send is never refused (over the bound), as in Erlang.
        send(consumer, ());
        let mut got = Vec::new();
        for _ in 0..5 {
            got.push(receive::<u32>().await);
        }
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
    });
}

#[test]
fn the_process_api_outside_a_process_panics_with_a_clear_message() {
    let err = std::panic::catch_unwind(self_pid).unwrap_err();
    let msg = err.downcast_ref::<String>().unwrap();
    assert!(msg.contains("called outside a process"), "{msg}");
}

#[test]
fn a_node_spawns_and_sends_from_outside_and_stops() {
    let node = Node::new();
    let (tx, rx) = std::sync::mpsc::channel();
    let p = node
        .spawn(async move {
            let n: u32 = receive().await;
            tx.send(n).unwrap();
        })
        .unwrap();
    node.send(p, 11u32);
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(11));
    node.stop();
    assert!(matches!(node.spawn(async {}), Err(SpawnError::Stopped(0))));
    assert_eq!(node.run_blocking(async { 1 }), Err(Reason::Noproc));
}

/// A server answering `u32` requests with their double after `delay_ms`,
/// or ending with an error on 0.
async fn doubler() {
    loop {
        let req: call::Request<(u32, u64)> = receive().await;
        let (n, delay_ms) = req.body;
        if delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        }
        if n == 0 {
            exit_self(Reason::error("zero")).await;
        }
        call::reply(&req.from, n * 2);
    }
}

#[test]
fn a_call_returns_the_reply_by_pid_and_by_name() {
    run(async {
        let server = spawn(doubler());
        register("doubler", server).unwrap();
        let by_pid: u32 = call::call(server, (21u32, 0u64), None).await.unwrap();
        let by_name: u32 = call::call("doubler", (4u32, 0u64), None).await.unwrap();
        assert_eq!((by_pid, by_name), (42, 8));
        // Nothing is left behind: no monitor, no message.
        let me = process_info(self_pid()).unwrap();
        assert!(me.monitors.is_empty() && me.mailbox_len == 0, "{me:?}");
    });
}

#[test]
fn a_call_fails_at_once_when_the_server_dies_or_does_not_exist() {
    run(async {
        let server = spawn(doubler());
        let t = Instant::now();
        let err = call::call::<_, u32>(server, (0u32, 0u64), None)
            .await
            .unwrap_err();
        assert_eq!(err.reason(), Some(&Reason::error("zero")));
        assert!(t.elapsed() < Duration::from_secs(1));
        let err = call::call::<_, u32>(server, (1u32, 0u64), None)
            .await
            .unwrap_err();
        assert_eq!(err.reason(), Some(&Reason::Noproc));
        let err = call::call::<_, u32>("nobody", (1u32, 0u64), None)
            .await
            .unwrap_err();
        assert_eq!(err.reason(), Some(&Reason::Noproc));
        assert!(err.to_string().contains("\"nobody\""), "{err}");
    });
}

#[test]
fn after_a_timeout_the_late_reply_never_appears_and_other_messages_stay_in_order() {
    run(async {
        let me = self_pid();
        let server = spawn(doubler());
        spawn(async move {
            send(me, "one".to_string());
            tokio::time::sleep(Duration::from_millis(10)).await;
            send(me, "two".to_string());
        });
        let err = call::call::<_, u32>(server, (5u32, 100u64), Some(Duration::from_millis(50)))
            .await
            .unwrap_err();
        assert!(matches!(err, call::CallError::Timeout { .. }), "{err}");
        // The reply comes at 100 ms; wait past it.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let info = process_info(me).unwrap();
        assert_eq!(info.mailbox_len, 2, "only the two strings");
        assert!(info.monitors.is_empty());
        assert_eq!(receive::<String>().await, "one");
        assert_eq!(receive::<String>().await, "two");
        // The server is fine and answers the next call.
        let n: u32 = call::call(server, (3u32, 0u64), None).await.unwrap();
        assert_eq!(n, 6);
    });
}

#[test]
fn a_name_at_the_callers_own_context_is_a_name_here() {
    // Dest::At, send_named_in and whereis_in with this context: the same
    // as a name here, except that sending to an unknown name is dropped
    // silently, as Erlang's `{Name, node()} ! Msg` is.
    run(async {
        let here = self_pid().context();
        let server = spawn(doubler());
        register("doubler", server).unwrap();
        let n: u32 = call::call(call::Dest::at(here, "doubler"), (21u32, 0u64), None)
            .await
            .unwrap();
        assert_eq!(n, 42);
        assert_eq!(whereis_in(here, "doubler").await, Some(server));
        assert_eq!(whereis_in(here, "nobody").await, None);
        let err = call::call::<_, u32>(call::Dest::at(here, "nobody"), (1u32, 0u64), None)
            .await
            .unwrap_err();
        assert_eq!(err.reason(), Some(&Reason::Noproc));
        assert!(err.to_string().contains("\"nobody\" in context 0"), "{err}");

        send_named_in(here, "nobody", "dropped".to_string());
        let (p, mref) = spawn_monitor(async {
            let s: String = receive().await;
            assert_eq!(s, "by name");
        });
        register("svc", p).unwrap();
        send_named_in(here, "svc", "by name".to_string());
        assert_eq!(down_of(mref).await, Reason::Normal);
        let me = process_info(self_pid()).unwrap();
        assert!(me.monitors.is_empty() && me.mailbox_len == 0, "{me:?}");
    });
}

#[test]
fn a_name_in_another_context_from_a_node_in_no_tree_is_unreachable_at_once() {
    // A node of its own reaches no other context: a call to a name there
    // fails at once with noconnection, whereis_in answers None, and a
    // message is dropped. Nothing is left behind.
    run(async {
        let elsewhere = self_pid().context() + 1;
        let err = call::call::<_, u32>(call::Dest::at(elsewhere, "doubler"), (1u32, 0u64), None)
            .await
            .unwrap_err();
        assert_eq!(err.reason(), Some(&Reason::Noconnection));
        assert!(
            err.to_string().contains("\"doubler\" in context 1"),
            "{err}"
        );
        assert_eq!(whereis_in(elsewhere, "doubler").await, None);
        send_named_in(elsewhere, "doubler", 1u8);
        let err = gen_server::stop(
            call::Dest::at(elsewhere, "x"),
            Reason::Normal,
            Duration::MAX,
        )
        .await
        .unwrap_err();
        assert_eq!(err.reason(), Some(&Reason::Noconnection));
        let me = process_info(self_pid()).unwrap();
        assert!(me.monitors.is_empty() && me.mailbox_len == 0, "{me:?}");
    });
}

#[test]
fn outside_a_tree_every_other_context_is_down_at_once() {
    run(async {
        let me = self_pid();
        monitor_context(me.context() + 1);
        match receive_timeout::<ContextEvent>(Duration::ZERO).await {
            Some(ContextEvent::Down { context, detail }) => {
                assert_eq!(context, me.context() + 1);
                assert!(detail.contains("in no tree"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
        // Its own context is never down while it runs.
        monitor_context(me.context());
        assert_eq!(receive_timeout::<ContextEvent>(Duration::ZERO).await, None);
        assert!(!monitor_contexts(true));
        assert!(monitor_contexts(true));
        assert!(monitor_contexts(false));
    });
}

#[test]
fn global_names_in_one_context_are_freed_with_their_process() {
    run(async {
        let (worker, mref) = spawn_monitor(async { receive::<()>().await });
        global::register("a", worker).await.unwrap();
        global::register("b", worker).await.unwrap(); // several names, one process
        assert_eq!(
            global::registered().await.unwrap(),
            vec![("a".into(), worker), ("b".into(), worker)]
        );
        assert_eq!(global::unregister("b").await, Ok(worker));
        assert_eq!(
            global::unregister("b").await,
            Err(global::GlobalError::Unknown("b".into()))
        );
        send(worker, ());
        receive_match(|m| m.take_if::<Down>(|d| d.mref == mref)).await;
        assert_eq!(global::whereis("a").await, Ok(None));
        // A dead pid holds a name only until the server's monitor says so.
        global::register("c", worker).await.unwrap();
        assert_eq!(global::whereis("c").await, Ok(None));
        assert_eq!(
            global::send("a", 1u8).await,
            Err(global::GlobalError::Unknown("a".into()))
        );
    });
}
