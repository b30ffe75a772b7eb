//! Channels and context handles across the tree: Senders and Contexts in
//! arguments and results, Receiver ends, Select.

use std::time::Duration;

use spore::{RecvError, Select};

use spore_test_support::Fixture;
use spore_test_support::funcs::*;

fn fixture() -> Fixture {
    Fixture::new(env!("CARGO_BIN_EXE_spore-fixture"))
}

#[tokio::test]
async fn a_sender_passed_down_the_tree_sends_values_then_closes() {
    let fx = fixture();
    let router = fx.router();
    let a = router.local().await.unwrap();
    let b = router.local().via(&a).await.unwrap();
    for ctx in [&a, &b] {
        let mut rx = router.receiver::<u32>();
        assert_eq!(
            ctx.call(send_numbers, (rx.sender(), 3, true))
                .await
                .unwrap(),
            3
        );
        for want in 1..=3 {
            assert_eq!(rx.recv().await.unwrap(), want, "from {}", ctx.name());
        }
        let end = rx.recv().await.unwrap_err();
        assert!(
            matches!(&end, RecvError::Closed { context, .. } if context == "master"),
            "{end}"
        );
        // The end sticks, and the handle is gone.
        assert_eq!(rx.recv().await.unwrap_err(), end);
    }
    router.shutdown().await;
}

#[tokio::test]
async fn a_message_that_does_not_decode_is_reported_and_the_channel_stays_open() {
    let fx = fixture();
    let router = fx.router();
    let a = router.local().await.unwrap();
    let mut rx = router.receiver::<u32>();
    // The remote side believes the channel carries strings: a program
    // whose types differ from the receiver's.
    let _: () = a
        .call_named(
            name_of(send_strings),
            &(rx.sender(), vec!["not a number".to_owned()]),
        )
        .await
        .unwrap();
    let err = rx.recv().await.unwrap_err();
    assert!(
        matches!(&err, RecvError::Decode { type_name, .. } if *type_name == "u32"),
        "{err}"
    );
    assert!(!err.is_end());
    a.call(send_numbers, (rx.sender(), 1, false)).await.unwrap();
    assert_eq!(rx.recv().await.unwrap(), 1);
    router.shutdown().await;
}

fn name_of<F: spore::RemoteFunction>(_: F) -> &'static str {
    F::NAME
}

#[tokio::test]
async fn context_handles_travel_in_arguments_and_results_as_the_same_context() {
    let fx = fixture();
    let router = fx.router();
    let a = router.local().await.unwrap();
    let b = router.local().await.unwrap();
    // b's handle goes to a and comes back: a knows it by ID and name.
    let (back, id_in_a, name_in_a) = a.call(echo_context, (b.clone(),)).await.unwrap();
    assert_eq!((id_in_a, name_in_a.as_str()), (b.id(), b.name()));
    assert_eq!(back, b, "the returned handle is the same context");
    assert_eq!(back.call(add, (2, 2)).await.unwrap(), 4);
    // A context started by a child, returned as a handle: the master calls it.
    let grandchild = a.call(start_child_handle, ()).await.unwrap();
    assert_eq!(
        grandchild.name(),
        format!("local.1.local.{}", grandchild.id())
    );
    assert_eq!(Some(grandchild.clone()), router.context(grandchild.id()));
    assert_eq!(grandchild.call(add, (3, 4)).await.unwrap(), 7);
    router.shutdown().await;
}

#[tokio::test]
async fn a_receiver_waiting_on_a_lost_context_ends_naming_it() {
    let fx = fixture();
    let router = fx.router();
    let a = router.local().await.unwrap();
    let mut rx = router.receiver_from::<u32>(&a);
    a.call(send_numbers, (rx.sender(), 1, false)).await.unwrap();
    a.call_no_reply(exit_now, (0,)).unwrap();
    assert_eq!(
        rx.recv().await.unwrap(),
        1,
        "values sent before the loss arrive"
    );
    let end = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("the receiver hung after its respondent was lost")
        .unwrap_err();
    assert!(
        matches!(&end, RecvError::Lost { detail, .. } if detail.starts_with("local.1 disconnected")),
        "{end}"
    );
    // A receiver made after the loss ends at once.
    let mut late = router.receiver_from::<u32>(&a);
    assert!(matches!(late.recv().await, Err(RecvError::Lost { .. })));
}

#[tokio::test]
async fn select_yields_from_every_receiver_and_oneshot_removes_each_after_it_fires() {
    let fx = fixture();
    let router = fx.router();
    let a = router.local().await.unwrap();
    let (x, y) = (router.receiver::<u32>(), router.receiver::<u32>());
    let (sx, sy) = (x.sender(), y.sender());
    let mut select = Select::oneshot();
    let kx = select.add(x);
    let ky = select.add(y);
    a.call(send_numbers, (sy, 2, false)).await.unwrap();
    a.call(send_numbers, (sx, 1, false)).await.unwrap();
    let mut got = vec![select.recv().await.unwrap(), select.recv().await.unwrap()];
    got.sort_by_key(|(k, _)| *k);
    assert_eq!(got, [(kx, Ok(1)), (ky, Ok(1))]);
    // Both fired once and are gone: y's second value is not seen here.
    assert!(select.is_empty());
    assert_eq!(select.recv().await.unwrap_err(), RecvError::Empty);

    // A plain select keeps receivers; a closed one yields its end once and goes.
    let mut select = Select::new();
    let z = router.receiver::<u32>();
    let sz = z.sender();
    let kz = select.add(z);
    a.call(send_numbers, (sz, 2, true)).await.unwrap();
    assert_eq!(select.recv().await.unwrap(), (kz, Ok(1)));
    assert_eq!(select.recv().await.unwrap(), (kz, Ok(2)));
    let (k, end) = select.recv().await.unwrap();
    assert!(k == kz && matches!(end, Err(RecvError::Closed { .. })));
    assert!(select.is_empty());
    router.shutdown().await;
}

#[tokio::test]
async fn select_times_out_and_closing_it_wakes_the_waiter() {
    let fx = fixture();
    let router = fx.router();
    let mut select = Select::<u32>::new();
    select.add(router.receiver());
    let err = select
        .recv_timeout(Duration::from_millis(50))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        RecvError::Timeout {
            after: Duration::from_millis(50)
        }
    );
    let closer = select.closer();
    let waiter = tokio::spawn(async move { select.recv().await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    closer.close();
    let woke = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("closing did not wake the waiter")
        .unwrap();
    assert_eq!(woke.unwrap_err(), RecvError::SelectClosed);
}

#[tokio::test]
async fn at_shutdown_every_receiver_ends() {
    let fx = fixture();
    let router = fx.router();
    let mut rx = router.receiver::<u32>();
    let waiter = tokio::spawn(async move { rx.recv().await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(router);
    let end = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("a receiver outlived its router")
        .unwrap()
        .unwrap_err();
    assert!(end.is_end(), "{end}");
}

#[tokio::test]
async fn a_sender_for_a_protocol_handle_is_refused_when_decoded() {
    let fx = fixture();
    let router = fx.router();
    let a = router.local().await.unwrap();
    let b = router.local().await.unwrap();
    // a hands the master "a Sender for b's SHUTDOWN handle".
    let forged: Result<spore::Sender<u32>, _> = a
        .call_named(name_of(pair), &(b.id(), spore_proto::handles::SHUTDOWN))
        .await;
    let err = forged.unwrap_err();
    assert!(
        matches!(&err, spore::CallError::Decode { detail, .. } if detail.contains("handles below 1000 are the protocol's")),
        "{err}"
    );
    assert_eq!(b.call(add, (1, 1)).await.unwrap(), 2, "b is unharmed");
    router.shutdown().await;
}
