//! Part B of BEHAVIOURS.md with the processes in different contexts (B22),
//! and what a lost context means for them (B23). The rules within one
//! context are in `spore-process/tests/local.rs`.

use std::time::Duration;

use spore_process::*;
use spore_test_support::funcs::*;
use spore_test_support::{Fixture, kill_context};

fn fixture() -> Fixture {
    Fixture::new(env!("CARGO_BIN_EXE_spore-fixture"))
}

async fn down_of(mref: Ref) -> Reason {
    receive_match(|m| m.take_if::<Down>(|d| d.mref == mref))
        .await
        .reason
}

#[tokio::test]
async fn a_process_spawned_in_a_child_and_a_grandchild_answers_in_order() {
    let fx = fixture();
    let router = fx.router();
    let a = router.local().await.unwrap();
    let b = router.local().via(&a).await.unwrap();
    let node = Node::of(&router);
    node.run(async move {
        for ctx in [&a, &b] {
            let echo = spawn_in(ctx, echo_proc, ()).await.unwrap();
            assert_eq!(echo.context(), ctx.id());
            let me = self_pid();
            for i in 0..100u64 {
                send(echo, (me, i));
            }
            for i in 0..100u64 {
                assert_eq!(receive::<u64>().await, i, "in order from {}", ctx.name());
            }
        }
    })
    .await
    .unwrap();
    router.shutdown().await;
}

#[tokio::test]
async fn across_contexts_a_message_before_a_crash_comes_before_its_exit_and_down() {
    // B10, B15 and B1 with the crashing process in another context.
    let fx = fixture();
    let router = fx.router();
    let a = router.local().await.unwrap();
    let node = Node::of(&router);
    node.run(async move {
        trap_exit(true);
        let me = self_pid();
        for reason in [Reason::error("boom"), Reason::Shutdown, Reason::Normal] {
            let (child, mref) = spawn_opt_in(
                &a,
                say_then_exit,
                (me, "last words".into(), reason.clone()),
                SpawnOptions::new().link().monitor(),
            )
            .await
            .unwrap();
            let mref = mref.unwrap();
            assert_eq!(receive::<String>().await, "last words");
            let exit = receive::<Exit>().await;
            assert_eq!(
                exit,
                Exit {
                    from: child,
                    reason: reason.clone()
                }
            );
            assert_eq!(down_of(mref).await, reason);
        }
    })
    .await
    .unwrap();
    router.shutdown().await;
}

#[tokio::test]
async fn across_contexts_kill_is_untrappable_and_abnormal_exits_propagate_over_links() {
    // B1, B3, B5 with the processes in different contexts.
    let fx = fixture();
    let router = fx.router();
    let a = router.local().await.unwrap();
    let node = Node::of(&router);
    node.run(async move {
        let me = self_pid();
        let (victim, mref) = spawn_monitor_in(&a, idle_proc, (true, None)).await.unwrap();
        exit(victim, Reason::Kill);
        assert_eq!(down_of(mref).await, Reason::Killed);

        // A trapping remote process gets our exit signal as a message.
        // (Trapping from the start: the signal may arrive before it runs.)
        let (trapper, tmon) = spawn_opt_in(
            &a,
            idle_proc,
            (true, Some(me)),
            SpawnOptions::new().trap_exit().monitor(),
        )
        .await
        .unwrap();
        let tmon = tmon.unwrap();
        exit(trapper, Reason::error("wake up"));
        assert_eq!(receive::<String>().await, format!("EXIT {me} wake up"));
        // A normal exit signal is ignored by a process that does not trap.
        let (plain, pmon) = spawn_monitor_in(&a, idle_proc, (false, None))
            .await
            .unwrap();
        exit(plain, Reason::Normal);
        // ... and an abnormal one ends it with that reason.
        exit(plain, Reason::Shutdown);
        assert_eq!(down_of(pmon).await, Reason::Shutdown);

        // Links work both ways: a remote process links to a local one that
        // then crashes; the remote one (not trapping) ends with the reason.
        let local_victim = spawn(async {
            let () = receive().await;
            Reason::error("local crash")
        });
        let (remote, rmon) = spawn_monitor_in(&a, link_and_report, (local_victim, me))
            .await
            .unwrap();
        assert_eq!(receive::<String>().await, "Ok(())");
        send(local_victim, ());
        assert_eq!(down_of(rmon).await, Reason::error("local crash"));
        let _ = remote;
        exit(trapper, Reason::Kill);
        assert_eq!(down_of(tmon).await, Reason::Killed);
    })
    .await
    .unwrap();
    router.shutdown().await;
}

/// The next text a puppet reported.
async fn heard(what: &str) -> String {
    receive_timeout::<String>(Duration::from_secs(20))
        .await
        .unwrap_or_else(|| panic!("no report from the puppet (waiting for {what})"))
}

#[tokio::test]
async fn across_contexts_exit_normal_trap_exit_and_monitors_follow_erlang() {
    // B2, B4, B7 and B9 with the other process in another context.
    let fx = fixture();
    let router = fx.router();
    let a = router.local().await.unwrap();
    let node = Node::of(&router);
    node.run(async move {
        let me = self_pid();
        // B2: exit(P, normal) leaves a non-trapping P running; P ending
        // itself with normal ends normally.
        let (p, mref) = spawn_monitor_in(&a, puppet, (me,)).await.unwrap();
        exit(p, Reason::Normal);
        send(p, Act::Ping);
        assert_eq!(heard("alive").await, "alive");
        send(p, Act::Exit(Reason::Normal));
        assert_eq!(down_of(mref).await, Reason::Normal);

        // B4: while trapping, exit signals come as EXIT messages in order
        // with the sender's other messages; trap_exit switches back off.
        let (p, mref) = spawn_monitor_in(&a, puppet, (me,)).await.unwrap();
        // An exit signal acts on arrival, so the switch must be done first.
        send(p, Act::Trap(true));
        send(p, Act::Ping);
        assert_eq!(heard("alive").await, "alive");
        send(p, "one".to_string());
        exit(p, Reason::error("first"));
        send(p, "two".to_string());
        exit(p, Reason::Shutdown);
        assert_eq!(heard("one").await, "one");
        assert_eq!(heard("an EXIT").await, format!("EXIT {me} first"));
        assert_eq!(heard("two").await, "two");
        assert_eq!(heard("an EXIT").await, format!("EXIT {me} shutdown"));
        send(p, Act::Trap(false));
        send(p, Act::Ping);
        assert_eq!(heard("alive").await, "alive");
        exit(p, Reason::error("now it kills"));
        assert_eq!(down_of(mref).await, Reason::error("now it kills"));

        // B7: monitors stack; each gives its own DOWN, once.
        let p = spawn_in(&a, puppet, (me,)).await.unwrap();
        let (m1, m2) = (monitor(p), monitor(p));
        assert_ne!(m1, m2);
        exit(p, Reason::Kill);
        let mut downs = [receive::<Down>().await, receive::<Down>().await];
        downs.sort_by_key(|d| d.mref);
        let mut want = [m1, m2];
        want.sort();
        assert_eq!(downs.iter().map(|d| d.mref).collect::<Vec<_>>(), want);
        assert!(
            downs
                .iter()
                .all(|d| d.pid == p && d.reason == Reason::Killed)
        );
        assert_eq!(
            receive_timeout::<Down>(Duration::from_millis(50)).await,
            None
        );

        // B9: demonitor removes the monitor; with flush, a queued DOWN too.
        let p = spawn_in(&a, puppet, (me,)).await.unwrap();
        let quiet = monitor(p);
        assert!(demonitor(quiet, false));
        let flushed = monitor(p);
        send(p, Act::Say(me, "bye".into()));
        send(p, Act::Exit(Reason::error("gone")));
        assert_eq!(heard("bye").await, "bye");
        // The DOWN comes after "bye" from the same context: wait for it to
        // be queued, then flush it away.
        for _ in 0..2000 {
            if process_info(me).unwrap().mailbox_len > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(process_info(me).unwrap().mailbox_len, 1);
        demonitor(flushed, true);
        assert_eq!(process_info(me).unwrap().mailbox_len, 0);
        assert_eq!(
            receive_timeout::<Down>(Duration::from_millis(50)).await,
            None
        );
    })
    .await
    .unwrap();
    router.shutdown().await;
}

#[tokio::test]
async fn across_contexts_selective_receive_sends_and_names_follow_erlang() {
    // B11, B12 and B13 with the other process in another context.
    let fx = fixture();
    let router = fx.router();
    let a = router.local().await.unwrap();
    let node = Node::of(&router);
    node.run(async move {
        let me = self_pid();
        // B11: from another context too, the oldest match is taken and the
        // rest stay in order; 0 polls.
        let p = spawn_in(&a, puppet, (me,)).await.unwrap();
        for text in ["1", "a", "2", "b"] {
            send(p, Act::Say(me, text.into()));
        }
        send(p, Act::Ping);
        let letter = |m: &mut Envelope| {
            m.take_if::<String>(|s| s.chars().all(|c| c.is_alphabetic()) && s != "alive")
        };
        assert_eq!(receive_match(letter).await, "a");
        assert_eq!(receive_match(letter).await, "b");
        assert_eq!(heard("1").await, "1");
        assert_eq!(heard("2").await, "2");
        assert_eq!(heard("alive").await, "alive");
        assert_eq!(receive_timeout::<String>(Duration::ZERO).await, None);

        // B12: sending to a dead pid there is fine; a name nobody has
        // there is dropped silently, as Erlang's {Name, Node} ! Msg is.
        let mref = monitor(p);
        exit(p, Reason::Kill);
        assert_eq!(down_of(mref).await, Reason::Killed);
        send(p, "into the void".to_string());
        send_named_in(a.id(), "nobody", "into the void".to_string());
        assert_eq!(whereis_in(a.id(), "nobody").await, None);

        // B13: a name taken there stays its owner's, and is freed when the
        // owner exits.
        let named = SpawnOptions::new().name("unique");
        let (owner, _) = spawn_opt_in(&a, puppet, (me,), named.clone())
            .await
            .unwrap();
        let err = spawn_opt_in(&a, puppet, (me,), named.clone())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("unique"), "{err}");
        assert_eq!(whereis_in(a.id(), "unique").await, Some(owner));
        let mref = monitor(owner);
        exit(owner, Reason::Kill);
        down_of(mref).await;
        let (second, _) = spawn_opt_in(&a, puppet, (me,), named).await.unwrap();
        assert_eq!(whereis_in(a.id(), "unique").await, Some(second));
    })
    .await
    .unwrap();
    router.shutdown().await;
}

#[tokio::test]
async fn across_contexts_a_dead_pid_gives_noproc_to_link_and_monitor() {
    // B6 and B8 with the dead process in another context.
    let fx = fixture();
    let router = fx.router();
    let a = router.local().await.unwrap();
    let node = Node::of(&router);
    node.run(async move {
        let me = self_pid();
        let (dead, mref) = spawn_monitor_in(&a, say_then_exit, (me, "bye".into(), Reason::Normal))
            .await
            .unwrap();
        assert_eq!(down_of(mref).await, Reason::Normal);
        let _ = receive::<String>().await;
        assert_eq!(link(dead).await, Err(Reason::Noproc));
        assert!(process_info(me).unwrap().links.is_empty(), "no half-link");
        trap_exit(true);
        assert_eq!(link(dead).await, Ok(()));
        assert_eq!(
            receive_timeout::<Exit>(Duration::from_secs(5)).await,
            Some(Exit {
                from: dead,
                reason: Reason::Noproc
            })
        );
        let r = monitor(dead);
        assert_eq!(down_of(r).await, Reason::Noproc);
        // Sending to it is silently fine.
        send(dead, 1u8);
    })
    .await
    .unwrap();
    router.shutdown().await;
}

#[tokio::test]
async fn a_lost_context_gives_noconnection_to_every_monitor_and_link() {
    // B23: the context is killed; its processes' watchers learn it.
    let fx = fixture();
    let router = fx.router();
    let a = router.local().await.unwrap();
    let node = Node::of(&router);
    let ctx = a.clone();
    node.run(async move {
        let me = self_pid();
        trap_exit(true);
        let w1 = spawn_link_in(&ctx, idle_proc, (false, None)).await.unwrap();
        let (w2, m2) = spawn_monitor_in(&ctx, idle_proc, (false, None))
            .await
            .unwrap();
        let m2b = monitor(w2);
        // A local process that does not trap, linked to a remote one, dies.
        let (linked, lmon) = spawn_monitor(async move {
            link(w1).await.unwrap();
            send(me, "linked".to_string());
            std::future::pending::<()>().await
        });
        assert_eq!(receive::<String>().await, "linked");
        kill_context(&ctx);
        assert_eq!(
            receive::<Exit>().await,
            Exit {
                from: w1,
                reason: Reason::Noconnection
            }
        );
        assert_eq!(down_of(m2).await, Reason::Noconnection);
        assert_eq!(down_of(m2b).await, Reason::Noconnection);
        assert_eq!(down_of(lmon).await, Reason::Noconnection);
        assert!(!is_alive(linked));

        // A pid of the lost context: send is fine, monitor and link say
        // noconnection at once.
        send(w2, 1u8);
        let r = monitor(w2);
        assert_eq!(down_of(r).await, Reason::Noconnection);
        trap_exit(false);
        assert_eq!(link(w2).await, Err(Reason::Noconnection));
        // Spawning there fails, naming the loss.
        let err = spawn_in(&ctx, echo_proc, ()).await.unwrap_err();
        assert!(err.to_string().contains("unreachable"), "{err}");
    })
    .await
    .unwrap();
    router.shutdown().await;
}

#[tokio::test]
async fn a_silent_context_gives_noconnection_within_the_heartbeat_window() {
    // B24 for processes: the context is stopped, not killed; its stream
    // stays open but carries nothing, and the heartbeat declares it down.
    let fx = fixture();
    let router = fx
        .builder()
        .heartbeat(Some(Duration::from_millis(400)))
        .shutdown_grace(Duration::from_millis(200))
        .build()
        .unwrap();
    let a = router.local().await.unwrap();
    let node = Node::of(&router);
    let ctx = a.clone();
    node.run(async move {
        trap_exit(true);
        let w1 = spawn_link_in(&ctx, idle_proc, (false, None)).await.unwrap();
        let (_, m2) = spawn_monitor_in(&ctx, idle_proc, (false, None))
            .await
            .unwrap();
        let _stopped = spore_test_support::Stopped::new(ctx.pid().unwrap());
        let exit = receive_timeout::<Exit>(Duration::from_secs(20))
            .await
            .expect("no EXIT from the silent context's process");
        assert_eq!(
            exit,
            Exit {
                from: w1,
                reason: Reason::Noconnection
            }
        );
        assert_eq!(down_of(m2).await, Reason::Noconnection);
        assert!(ctx.lost().await.contains("heartbeat window"));
    })
    .await
    .unwrap();
    router.shutdown().await;
}

#[tokio::test]
async fn context_events_reach_subscribers_and_watchers_anywhere_in_the_tree() {
    // B23's last clause: subscribers to context up/down events are told.
    let fx = fixture();
    let router = std::sync::Arc::new(fx.router());
    let node = Node::of(&router);
    let r = router.clone();
    node.run(async move {
        assert!(!monitor_contexts(true));
        let a = r.local().await.unwrap();
        let b = r.local().via(&a).await.unwrap();
        let c = r.local().await.unwrap();
        for ctx in [&a, &b, &c] {
            assert_eq!(
                receive::<ContextEvent>().await,
                ContextEvent::Up {
                    context: ctx.id(),
                    name: ctx.name().to_owned()
                }
            );
        }
        // A watcher in `a` of its sibling `c`, which `a` never talked to.
        let me = self_pid();
        spawn_in(&a, watch_context, (c.id(), me)).await.unwrap();
        assert_eq!(receive::<String>().await, "watching");
        monitor_context(b.id());
        kill_context(&c);
        // One Down from the subscription here, one forwarded by the watcher.
        for _ in 0..2 {
            match receive_timeout::<ContextEvent>(Duration::from_secs(20)).await {
                Some(ContextEvent::Down { context, detail }) => {
                    assert_eq!(context, c.id());
                    assert!(!detail.is_empty());
                }
                other => panic!("waiting for the Downs of {}: {other:?}", c.name()),
            }
        }
        // Killing `a` loses `b` below it too: the subscriber hears of both,
        // the watcher of `b` once.
        kill_context(&a);
        let mut downs = Vec::new();
        for _ in 0..3 {
            match receive_timeout::<ContextEvent>(Duration::from_secs(20)).await {
                Some(ContextEvent::Down { context, .. }) => downs.push(context),
                other => panic!("after {downs:?}: {other:?}"),
            }
        }
        let extra = receive_timeout::<ContextEvent>(Duration::from_millis(100)).await;
        assert_eq!(extra, None);
        downs.sort();
        let mut want = vec![a.id(), b.id(), b.id()];
        want.sort();
        assert_eq!(downs, want);
        // Lost already, or never heard of: the event comes at once.
        monitor_context(c.id());
        assert!(matches!(
            receive_timeout::<ContextEvent>(Duration::ZERO).await,
            Some(ContextEvent::Down { context, .. }) if context == c.id()
        ));
        monitor_context(4242);
        match receive_timeout::<ContextEvent>(Duration::ZERO).await {
            Some(ContextEvent::Down {
                context: 4242,
                detail,
            }) => {
                assert!(detail.contains("no route to 4242"), "{detail}")
            }
            other => panic!("for an unknown context: {other:?}"),
        }
        assert!(monitor_contexts(false));
    })
    .await
    .unwrap();
    router.shutdown().await;
}

/// Polls the global name `name` until it is free (the name server learns
/// of an end by its own monitor, which may come after the caller's).
async fn global_name_freed(name: &str) -> bool {
    for _ in 0..500 {
        if global::whereis(name).await.unwrap().is_none() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn global_names_are_unique_across_the_tree_and_freed_with_their_process_or_context() {
    // B25.
    let fx = fixture();
    let router = fx.router();
    let a = router.local().await.unwrap();
    let b = router.local().via(&a).await.unwrap();
    let node = Node::of(&router);
    node.run(async move {
        let me = self_pid();
        global::register("boss", me).await.unwrap();
        // Seen from a grandchild.
        spawn_in(&b, look_up_global_name, ("boss".into(), me))
            .await
            .unwrap();
        assert_eq!(
            receive::<Result<Option<Pid>, global::GlobalError>>().await,
            Ok(Some(me))
        );
        // Taken in a child; the same name refused in the grandchild and here.
        let in_a = spawn_in(&a, hold_global_name, ("worker".into(), me))
            .await
            .unwrap();
        assert_eq!(receive::<Result<(), global::GlobalError>>().await, Ok(()));
        let in_b = spawn_in(&b, hold_global_name, ("worker".into(), me))
            .await
            .unwrap();
        assert_eq!(
            receive::<Result<(), global::GlobalError>>().await,
            Err(global::GlobalError::Taken {
                name: "worker".into(),
                owner: in_a
            })
        );
        assert_eq!(
            global::register("worker", me).await,
            Err(global::GlobalError::Taken {
                name: "worker".into(),
                owner: in_a
            })
        );
        assert_eq!(global::whereis("worker").await.unwrap(), Some(in_a));
        assert_eq!(
            global::registered().await.unwrap(),
            vec![("boss".into(), me), ("worker".into(), in_a)]
        );
        // Freed when its process ends: then the grandchild's process gets it.
        send(in_a, ());
        assert!(
            global_name_freed("worker").await,
            "never freed after its process ended"
        );
        send(in_b, ());
        let in_b = spawn_in(&b, hold_global_name, ("worker".into(), me))
            .await
            .unwrap();
        assert_eq!(receive::<Result<(), global::GlobalError>>().await, Ok(()));
        assert_eq!(global::whereis("worker").await.unwrap(), Some(in_b));
        global::send("worker", ()).await.unwrap();
        assert!(global_name_freed("worker").await);
        // Freed when its context is lost.
        spawn_in(&b, hold_global_name, ("lost".into(), me))
            .await
            .unwrap();
        assert_eq!(receive::<Result<(), global::GlobalError>>().await, Ok(()));
        kill_context(&a);
        assert!(
            global_name_freed("lost").await,
            "never freed after its context was lost"
        );
        assert_eq!(
            global::send("lost", ()).await,
            Err(global::GlobalError::Unknown("lost".into()))
        );
        assert_eq!(global::unregister("boss").await, Ok(me));
        assert_eq!(global::registered().await.unwrap(), vec![]);
    })
    .await
    .unwrap();
    router.shutdown().await;
}

#[tokio::test]
async fn a_context_handle_travels_in_messages_and_works_where_it_lands() {
    let fx = fixture();
    let router = fx.router();
    let a = router.local().await.unwrap();
    let b = router.local().await.unwrap();
    let node = Node::of(&router);
    node.run(async move {
        let bouncer = spawn_in(&a, bounce_context, (self_pid(),)).await.unwrap();
        send(bouncer, b.clone());
        let back = receive_match_timeout(Duration::from_secs(20), |m| {
            if let Some(u) = m.take::<Undecodable>() {
                return Some(Err(u));
            }
            m.take::<spore::Context>().map(Ok)
        })
        .await
        .expect("the context handle never came back")
        .expect("the context handle did not decode");
        assert_eq!(back, b);
        assert_eq!(back.call(add, (20, 22)).await.unwrap(), 42);
    })
    .await
    .unwrap();
    router.shutdown().await;
}

#[derive(Clone, Copy)]
struct NotRegistered;
impl ProcessFunction for NotRegistered {
    type Args = ();
    const NAME: &'static str = "nowhere::not_registered";
}

#[tokio::test]
async fn bad_input_across_contexts_is_reported_and_crashes_nothing() {
    let fx = fixture();
    let router = fx.router();
    let a = router.local().await.unwrap();
    let node = Node::of(&router);
    node.run(async move {
        let me = self_pid();
        // A process function the target does not know.
        let err = spawn_in(&a, NotRegistered, ()).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("no process function nowhere::not_registered"),
            "{err}"
        );
        // A message that does not decode in the receiver: it becomes an
        // Undecodable message in its place; the next one decodes.
        spawn_in(&a, send_picky, (me, 3)).await.unwrap();
        spawn_in(&a, send_picky, (me, 4)).await.unwrap();
        let bad = receive_match(|m| {
            let _ = m.get::<Picky>();
            m.take::<Undecodable>()
        })
        .await;
        assert!(bad.type_name.ends_with("Picky"), "{bad:?}");
        // (postcard keeps only a generic text of a type's own decode error.)
        assert!(bad.detail.contains("Deserialization"), "{bad:?}");
        assert_eq!(receive::<Picky>().await, Picky(4));
        // A name taken in the other context.
        let (p, _) = spawn_opt_in(
            &a,
            idle_proc,
            (false, None),
            SpawnOptions::new().name("only"),
        )
        .await
        .unwrap();
        let err = spawn_opt_in(
            &a,
            idle_proc,
            (false, None),
            SpawnOptions::new().name("only"),
        )
        .await
        .unwrap_err();
        assert_eq!(
            err,
            SpawnError::NameTaken {
                name: "only".into(),
                owner: p
            }
        );
        // The context still works.
        let echo = spawn_in(&a, echo_proc, ()).await.unwrap();
        send(echo, (me, 5u64));
        assert_eq!(receive::<u64>().await, 5);
    })
    .await
    .unwrap();
    router.shutdown().await;
}
