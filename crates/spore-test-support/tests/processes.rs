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
