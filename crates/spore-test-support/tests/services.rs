//! Services: a library's endpoint on a well-known handle in every context,
//! started on first use or on the first message for it.

use std::time::{Duration, Instant};

use spore::CallError;
use spore_test_support::Fixture;
use spore_test_support::funcs::*;

fn fixture() -> Fixture {
    Fixture::new(env!("CARGO_BIN_EXE_spore-fixture"))
}

/// Polls `f` until it returns `Some` or 5 s pass.
async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn messages_reach_a_service_in_order_both_ways_with_their_verified_source() {
    let fx = fixture();
    let router = fx.router();
    let a = router.local().await.unwrap();
    let b = router.local().via(&a).await.unwrap();
    let mine = router.service::<Recorder>();

    // Down: the child's service starts on the first message for it.
    for i in 0..100u8 {
        router.send_to_service::<Recorder>(b.id(), vec![i]).unwrap();
    }
    router
        .send_to_service::<Recorder>(b.id(), b"echo:hi".to_vec())
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let seen = loop {
        let s = b.call(recorder_seen, ()).await.unwrap();
        if s.len() >= 101 || Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let want: Vec<(u32, Vec<u8>)> = (0..100u8)
        .map(|i| (0, vec![i]))
        .chain([(0, b"echo:hi".to_vec())])
        .collect();
    assert_eq!(seen, want, "in order, each from the master (0)");

    // Up: from the grandchild to the master, source verified on the way.
    b.call(recorder_send, (0, b"up".to_vec())).await.unwrap();
    let got = eventually("the echo and the message from b", || {
        let s = mine.seen();
        (s.len() == 2).then_some(s)
    })
    .await;
    assert_eq!(
        got,
        vec![(b.id(), b"echoed:hi".to_vec()), (b.id(), b"up".to_vec())]
    );
    router.shutdown().await;
}

#[tokio::test]
async fn a_service_learns_of_lost_contexts_anywhere_below() {
    let fx = fixture();
    let router = fx.router();
    let a = router.local().await.unwrap();
    let b = router.local().via(&a).await.unwrap();
    let mine = router.service::<Recorder>();
    let pid = a.pid().unwrap();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let lost = eventually("both contexts reported lost", || {
        let l = mine.lost();
        (l.len() == 2).then_some(l)
    })
    .await;
    let mut ids: Vec<u32> = lost.iter().map(|(id, _)| *id).collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![a.id(), b.id()]);
    assert!(lost.iter().all(|(_, d)| !d.is_empty()), "{lost:?}");
    router.shutdown().await;
}

#[tokio::test]
async fn a_message_for_a_handle_no_service_has_is_refused_with_a_reason() {
    let fx = fixture();
    let router = fx.router();
    let a = router.local().await.unwrap();
    let err = spore::fault::request(&a, 299, b"x".to_vec())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CallError::Undeliverable { reason, .. } if reason.contains("no service on handle 299")),
        "{err}"
    );
    // And an oversized message to a service fails at the sender, naming it.
    let big = vec![0u8; router.max_message_size() as usize + 1];
    let err = router.send_to_service::<Recorder>(a.id(), big).unwrap_err();
    assert!(err.to_string().contains("290"), "{err}");
    router.shutdown().await;
}
