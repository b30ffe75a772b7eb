//! Trees of contexts: contexts started through other contexts, routes
//! learned and forgotten on the way, loss of an intermediate.

use std::time::Duration;

use spore::{CallError, ConnectError, OutputStream};

use spore_test_support::funcs::*;
use spore_test_support::{Fixture, parent_of, pid_alive, start_master, wait_gone};

fn fixture() -> Fixture {
    Fixture::new(env!("CARGO_BIN_EXE_spore-fixture"))
}

/// Makes `ctx` write `frames` onto its stream to its parent, bypassing its
/// router: what a compromised or buggy child could send.
async fn forge(ctx: &spore::Context, frames: &[spore_proto::Frame]) {
    let mut bytes = bytes::BytesMut::new();
    for f in frames {
        f.encode_into(&mut bytes);
    }
    ctx.call(write_raw, (serde_bytes::ByteBuf::from(bytes.to_vec()),))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_chain_of_three_answers_at_every_depth_and_each_parent_starts_its_child() {
    let fx = fixture();
    let router = fx.router();
    let a = router.local().await.unwrap();
    let b = router.local().via(&a).await.unwrap();
    let before = a.bytes_written();
    // Through the first stage: the image travels from b to c, not from here.
    let c = router.local().first_stage(true).via(&b).await.unwrap();
    let sent_for_c = a.bytes_written() - before;
    // a is the master's first child; b is numbered from the first block
    // of IDs a got (2..1002), c from the block b got through a.
    assert_eq!([a.id(), b.id(), c.id()], [1, 2, 1002]);
    assert_eq!(
        [a.name(), b.name(), c.name()],
        ["local.1", "local.1.local.2", "local.1.local.2.local.1002"]
    );
    for ctx in [&a, &b, &c] {
        assert_eq!(ctx.call(add, (2, 3)).await.unwrap(), 5, "{}", ctx.name());
    }
    let pids = [a.pid().unwrap(), b.pid().unwrap(), c.pid().unwrap()];
    assert_eq!(parent_of(pids[0]), std::process::id());
    assert_eq!(parent_of(pids[1]), pids[0], "b is a's child");
    assert_eq!(parent_of(pids[2]), pids[1], "c is b's child");
    assert!(
        sent_for_c < 16 * 1024,
        "the master sent {sent_for_c} bytes to start c: the image must come from b"
    );
    router.shutdown().await;
    for pid in pids {
        assert!(
            wait_gone(pid, Duration::from_secs(10)).is_some(),
            "{pid} outlived the router's shutdown"
        );
    }
}

#[tokio::test]
async fn output_and_logs_of_a_grandchild_reach_the_master_under_its_name() {
    let fx = fixture();
    let router = fx.router();
    let a = router.local().await.unwrap();
    let b = router.local().via(&a).await.unwrap();
    b.call(print_lines, (3, "deep".into())).await.unwrap();
    b.call(eprint, ("deep on stderr".into(),)).await.unwrap();
    let out = fx.wait_lines(
        b.name(),
        OutputStream::Stdout,
        Duration::from_secs(5),
        |l| l.len() >= 3,
    );
    assert_eq!(out, ["deep line 0", "deep line 1", "deep line 2"]);
    let err = fx.wait_lines(
        b.name(),
        OutputStream::Stderr,
        Duration::from_secs(5),
        |l| l.iter().any(|l| l == "deep on stderr"),
    );
    assert!(err.iter().any(|l| l == "deep on stderr"), "{err:?}");
    // Nothing of it was attributed to the intermediate.
    assert!(fx.lines(a.name(), OutputStream::Stdout).is_empty());
}

#[tokio::test]
async fn losing_the_intermediate_wakes_calls_below_it_and_ends_the_subtree() {
    let fx = fixture();
    let router = fx.router();
    let a = router.local().await.unwrap();
    let b = router.local().via(&a).await.unwrap();
    let c = router.local().via(&b).await.unwrap();
    let c_pid = c.pid().unwrap();
    let pending = c.call_async(sleep_ms, (60_000,));
    b.call_no_reply(exit_now, (3,)).unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .expect("the call below the lost intermediate hung")
        .unwrap_err();
    assert!(
        matches!(&err, CallError::Disconnected { context, .. } if context == c.name()),
        "{err}"
    );
    assert!(
        wait_gone(c_pid, Duration::from_secs(5)).is_some(),
        "c outlived its parent"
    );
    // Later calls fail at once; the rest of the tree is unharmed.
    assert!(c.call(add, (1, 1)).await.is_err());
    assert_eq!(a.call(add, (1, 1)).await.unwrap(), 2);
    router.shutdown().await;
}

#[tokio::test]
async fn a_grandchild_shuts_down_on_request_and_its_parent_reaps_it() {
    let fx = fixture();
    let router = fx.router();
    let a = router.local().await.unwrap();
    let b = router.local().via(&a).await.unwrap();
    let b_pid = b.pid().unwrap();
    tokio::time::timeout(Duration::from_secs(10), b.shutdown())
        .await
        .expect("shutdown of a grandchild hung");
    assert!(!pid_alive(b_pid), "b still running after shutdown");
    assert!(b.call(add, (1, 1)).await.is_err());
    assert_eq!(a.call(add, (2, 2)).await.unwrap(), 4);
    router.shutdown().await;
}

#[tokio::test]
async fn a_failed_start_through_an_intermediate_names_both() {
    let fx = fixture();
    let router = fx.router();
    let a = router.local().await.unwrap();
    let err = router
        .local()
        .via(&a)
        .name("never-fed-below")
        .first_stage(true)
        .connect_timeout(Duration::from_millis(1))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ConnectError::Via { .. }), "{text}");
    assert!(
        text.contains("local.1") && text.contains("never-fed-below") && text.contains("timed out"),
        "{text}"
    );
    assert_eq!(a.call(add, (1, 2)).await.unwrap(), 3);
    router.shutdown().await;
}

/// A child announces a context it does not have. The master believes it,
/// but a message to that context must not bounce between the two forever:
/// the child refuses to send it back up and answers "no route".
#[tokio::test]
async fn a_forged_route_cannot_make_a_message_loop() {
    use spore_proto::messages::RouteAdded;
    use spore_proto::{Frame, Header, handles};

    let fx = fixture();
    let router = fx.router();
    let a = router.local().await.unwrap();
    // a gets a block of IDs from the master (by starting a child), then
    // announces an ID of that block that no context has.
    let started = a.call(start_children, (1, false)).await.unwrap();
    let ghost_id = started[0].id + 1;
    let forged = RouteAdded {
        id: ghost_id,
        name: "forged".into(),
        pid: 1,
    };
    let frame = Frame::new(
        Header::new(0, a.id(), handles::ADD_ROUTE),
        postcard::to_stdvec(&forged).unwrap(),
    );
    forge(&a, &[frame]).await;
    let ghost = router
        .context(ghost_id)
        .expect("the master learned the route");
    assert_eq!(ghost.name(), "forged");
    let err = tokio::time::timeout(Duration::from_secs(5), ghost.call(add, (1, 1)))
        .await
        .expect("the message looped instead of being refused")
        .unwrap_err();
    assert!(
        matches!(&err, CallError::Undeliverable { reason, .. } if reason.contains(&format!("no route to {ghost_id}, my ID is 1"))),
        "{err}"
    );
    assert_eq!(a.call(add, (1, 2)).await.unwrap(), 3);
    router.shutdown().await;
}

/// ADD_ROUTE and DEL_ROUTE are only taken from below, and only for what
/// lies below the sender: a child cannot make its parent forget the
/// parent's own parent, claim an ancestor, or take over or drop a
/// sibling's route.
#[tokio::test]
async fn route_updates_that_name_an_ancestor_are_refused() {
    use spore_proto::messages::{RouteAdded, RoutesLost};
    use spore_proto::{Frame, Header, handles};

    let fx = fixture();
    let router = fx.router();
    let a = router.local().await.unwrap();
    let b = router.local().via(&a).await.unwrap();
    let b_sibling = router.local().via(&a).await.unwrap();
    let claim = |id: u32| RouteAdded {
        id,
        name: "mine?".into(),
        pid: 1,
    };
    let lost = RoutesLost {
        ids: vec![0, a.id(), b_sibling.id()],
        reason: "forged".into(),
    };
    let to_a =
        |handle: u32, payload: Vec<u8>| Frame::new(Header::new(a.id(), b.id(), handle), payload);
    let add_route = |id| to_a(handles::ADD_ROUTE, postcard::to_stdvec(&claim(id)).unwrap());
    // From b, to a: "the master / a's other child lives below me", then
    // "the master, a and a's other child are gone"; and to the master: an
    // ID it never handed out lives below b.
    let never_allocated = 4_000_000;
    let mut to_master = add_route(never_allocated);
    to_master.header.dst = 0;
    // And to the master, past a: "a is gone".
    let a_lost = RoutesLost {
        ids: vec![a.id()],
        reason: "forged".into(),
    };
    let mut a_gone = to_a(handles::DEL_ROUTE, postcard::to_stdvec(&a_lost).unwrap());
    a_gone.header.dst = 0;
    let frames = [
        add_route(0),
        add_route(b_sibling.id()),
        to_a(handles::DEL_ROUTE, postcard::to_stdvec(&lost).unwrap()),
        to_master,
        a_gone,
    ];
    forge(&b, &frames).await;
    // a claims an ID from the block of another child of the master, one
    // that child has not used yet.
    let x = router.local().await.unwrap();
    let x_child = x.call(start_children, (1, false)).await.unwrap();
    let unused_of_x = x_child[0].id + 1;
    let mut claim_x = Frame::new(
        Header::new(0, a.id(), handles::ADD_ROUTE),
        postcard::to_stdvec(&claim(unused_of_x)).unwrap(),
    );
    claim_x.header.auth = a.id();
    forge(&a, &[claim_x]).await;
    assert!(
        router.context(unused_of_x).is_none(),
        "a took over an ID of x's"
    );
    // Everything still answers: a still routes upward to the master and
    // to its other child, which is still known and not lost.
    assert_eq!(a.call(add, (1, 2)).await.unwrap(), 3);
    assert_eq!(b.call(add, (2, 2)).await.unwrap(), 4);
    assert_eq!(b_sibling.call(add, (3, 3)).await.unwrap(), 6);
    assert_eq!(a.call(add_in, (b_sibling.clone(),)).await.unwrap(), 3);
    assert!(router.context(never_allocated).is_none());
    router.shutdown().await;
}

/// The master is SIGKILLed: every context of a 3-deep tree is gone within
/// moments, at every depth (each sees EOF from its parent and exits).
#[test]
fn killing_the_master_ends_a_three_deep_tree() {
    for first_stage in [false, true] {
        let (mut master, pids) = start_master(env!("CARGO_BIN_EXE_spore-fixture"), first_stage, 3);
        for &pid in &pids {
            assert!(pid_alive(pid), "{pid} not running before the kill");
        }
        master.kill().unwrap();
        master.wait().unwrap();
        for (depth, pid) in pids.into_iter().enumerate() {
            let gone = wait_gone(pid, Duration::from_secs(5));
            assert!(
                gone.is_some(),
                "the context at depth {} (pid {pid}) survived its master (first_stage={first_stage})",
                depth + 1
            );
        }
    }
}

/// A7: every frame's src and auth must be reached through the stream it
/// arrived on. A child speaking for its parent, a sibling or the master,
/// or claiming another's authority, is dropped (and logged); honest frames
/// on the same stream still arrive, and nothing else is disturbed.
#[tokio::test]
async fn frames_with_a_forged_source_are_dropped_and_harm_nothing() {
    use spore_proto::messages::{LogOrigin, LogRecord};
    use spore_proto::{Frame, Header, handles};

    let fx = fixture();
    let router = fx.router();
    let a = router.local().await.unwrap();
    let b = router.local().via(&a).await.unwrap();
    let sibling = router.local().await.unwrap();
    let line = |src: u32, auth: u32, message: &str| {
        let mut h = Header::new(0, src, handles::FORWARD_LOG);
        h.auth = auth;
        let rec = LogRecord {
            origin: LogOrigin::Stdout,
            level: 3,
            target: String::new(),
            message: message.to_owned(),
        };
        Frame::new(h, postcard::to_stdvec(&rec).unwrap())
    };
    forge(
        &b,
        &[
            line(a.id(), a.id(), "forged as parent"),
            line(sibling.id(), sibling.id(), "forged as sibling"),
            line(0, 0, "forged as master"),
            line(b.id(), 0, "forged authority"),
            line(b.id(), b.id(), "honest from b"),
        ],
    )
    .await;
    // (A parent may speak for its descendants: they are reached through
    // it, and it started them. It may not speak for its own parent.)
    forge(
        &a,
        &[
            line(0, 0, "a forged as master"),
            line(sibling.id(), sibling.id(), "a forged as its sibling"),
            line(a.id(), a.id(), "honest from a"),
        ],
    )
    .await;
    fx.wait_lines(
        b.name(),
        OutputStream::Stdout,
        Duration::from_secs(5),
        |l| l.iter().any(|l| l == "honest from b"),
    );
    fx.wait_lines(
        a.name(),
        OutputStream::Stdout,
        Duration::from_secs(5),
        |l| l.iter().any(|l| l == "honest from a"),
    );
    // Give anything forged time to arrive if it were going to.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let all: Vec<String> = ["master", a.name(), b.name(), sibling.name()]
        .into_iter()
        .flat_map(|c| fx.lines(c, OutputStream::Stdout))
        .collect();
    assert!(all.iter().any(|l| l == "honest from b"), "{all:?}");
    assert!(all.iter().any(|l| l == "honest from a"), "{all:?}");
    assert!(!all.iter().any(|l| l.contains("forged")), "{all:?}");
    for ctx in [&a, &b, &sibling] {
        assert_eq!(ctx.call(add, (1, 1)).await.unwrap(), 2, "{}", ctx.name());
    }
    router.shutdown().await;
}

/// A child can never make its parent run code: CALL_FUNCTION is taken only
/// from a parent. A forged call from below is refused and logged, and the
/// function never runs.
#[tokio::test]
async fn a_child_cannot_make_its_parent_run_code() {
    use spore_proto::messages::CallRequest;
    use spore_proto::{Frame, Header, handles};

    let fx = fixture();
    let router = fx.router();
    let a = router.local().await.unwrap();
    let b = router.local().via(&a).await.unwrap();
    let mut payload = postcard::to_stdvec(&CallRequest {
        chain: None,
        function: "spore_test_support::funcs::print_lines",
    })
    .unwrap();
    payload.extend(postcard::to_stdvec(&(1u32, "pwned".to_owned())).unwrap());
    let call = Frame::new(
        Header::new(a.id(), b.id(), handles::CALL_FUNCTION).with_reply_to(4242),
        payload,
    );
    forge(&b, &[call]).await;
    // The master's own call runs (and proves the forged one was handled first).
    assert_eq!(a.call(print_lines, (1, "legit".into())).await.unwrap(), 1);
    let lines = fx.wait_lines(
        a.name(),
        OutputStream::Stdout,
        Duration::from_secs(5),
        |l| l.iter().any(|l| l == "legit line 0"),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lines = [lines, fx.lines(a.name(), OutputStream::Stdout)].concat();
    assert!(lines.iter().any(|l| l == "legit line 0"), "{lines:?}");
    assert!(!lines.iter().any(|l| l.contains("pwned")), "{lines:?}");
    assert_eq!(b.call(add, (1, 1)).await.unwrap(), 2);
    router.shutdown().await;
}

#[tokio::test]
async fn contexts_started_by_children_get_ids_from_blocks_that_never_collide() {
    let fx = fixture();
    let router = fx.router();
    let a = router.local().await.unwrap();
    let b = router.local().await.unwrap();
    assert_eq!([a.id(), b.id()], [1, 2], "the first child is 1");
    // a and b each start children of their own, at the same time as the
    // master starts more: every ID is unique across the tree.
    let from_a = a.call_async(start_children, (3, false));
    let from_b = b.call_async(start_children, (2, true));
    let c = router.local().await.unwrap();
    let d = router.local().via(&a).await.unwrap();
    let (from_a, from_b) = (from_a.await.unwrap(), from_b.await.unwrap());
    let mut ids: Vec<u32> = [a.id(), b.id(), c.id(), d.id()]
        .into_iter()
        .chain(from_a.iter().chain(&from_b).map(|s| s.id))
        .collect();
    ids.sort_unstable();
    let total = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), total, "colliding IDs: {ids:?}");
    // A child numbers all its children (also those the master asks it to
    // start) from one block: one round trip for all of them.
    let mut a_ids: Vec<u32> = from_a.iter().map(|s| s.id).chain([d.id()]).collect();
    a_ids.sort_unstable();
    assert_eq!(
        a_ids,
        [a_ids[0], a_ids[0] + 1, a_ids[0] + 2, a_ids[0] + 3],
        "{from_a:?}"
    );
    for s in from_a.iter() {
        assert_eq!(s.name, format!("local.1.local.{}", s.id));
        assert_eq!(
            parent_of(s.pid),
            a.pid().unwrap(),
            "{} is a's child",
            s.name
        );
    }
    // The master learned every one of them and can call them directly.
    for s in from_a.iter().chain(&from_b) {
        let ctx = router.context(s.id).expect("announced to the master");
        assert_eq!(ctx.name(), s.name);
        assert_eq!(ctx.call(add, (s.id as i32, 0)).await.unwrap(), s.id as i32);
    }
    let pids: Vec<u32> = from_a.iter().chain(&from_b).map(|s| s.pid).collect();
    router.shutdown().await;
    for pid in pids {
        assert!(
            wait_gone(pid, Duration::from_secs(10)).is_some(),
            "{pid} outlived the router's shutdown"
        );
    }
}

/// `answer` is [`ask_echo`] failing because `host` was lost.
fn assert_lost(answer: Result<u32, CallError>, host: &spore::Context) {
    let err = answer.expect_err("no answer can come");
    let remote = err.remote().unwrap_or_else(|| panic!("{err}"));
    assert!(
        remote.type_name.ends_with("RecvError")
            && remote
                .message
                .contains(&format!("{} disconnected", host.name())),
        "{err}"
    );
}

#[tokio::test]
async fn a_wait_on_a_sibling_or_a_siblings_child_wakes_when_it_is_lost() {
    let fx = fixture();
    let router = fx.router();
    let a = router.local().await.unwrap();
    let b = router.local().await.unwrap();
    let b_child = router.local().via(&b).await.unwrap();
    // Sibling traffic works: a asks a service living in b, and in b's child.
    for host in [&b, &b_child] {
        let service = host.call(serve_echo, (0,)).await.unwrap();
        assert_eq!(
            a.call(ask_echo, (service, host.clone(), 5)).await.unwrap(),
            5,
            "{}",
            host.name()
        );
    }
    // a waits on b's child, which never answers in time; b (its parent,
    // a's sibling) dies: both are lost and a's wait ends naming b's child.
    let slow = b_child.call(serve_echo, (60_000,)).await.unwrap();
    let waiting = a.call_async(ask_echo, (slow, b_child.clone(), 7));
    tokio::time::sleep(Duration::from_millis(50)).await;
    b.call_no_reply(exit_now, (0,)).unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("a's wait on its sibling's child hung");
    assert_lost(answer, &b_child);
    // The sibling case: c waits on d, d dies.
    let c = router.local().await.unwrap();
    let d = router.local().await.unwrap();
    let slow = d.call(serve_echo, (60_000,)).await.unwrap();
    let waiting = c.call_async(ask_echo, (slow.clone(), d.clone(), 8));
    tokio::time::sleep(Duration::from_millis(50)).await;
    d.call_no_reply(exit_now, (0,)).unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("c's wait on its sibling hung");
    assert_lost(answer, &d);
    // A context that never talked to d asks it after its loss: the master
    // has no route for the request, and tells the asker d is lost.
    let e = router.local().await.unwrap();
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        e.call(ask_echo, (slow, d.clone(), 9)),
    )
    .await
    .expect("asking a lost context hung");
    assert_lost(answer, &d);
    router.shutdown().await;
}

/// The message of a remote error, or what the call returned instead.
fn remote_message(r: Result<i32, CallError>) -> String {
    match r {
        Err(CallError::Remote(e)) => e.message,
        other => panic!("expected a remote error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_child_cannot_make_its_sibling_run_code() {
    let fx = fixture();
    let router = fx.router();
    let a = router.local().await.unwrap();
    let b = router.local().await.unwrap();
    let msg = remote_message(a.call(add_in, (b.clone(),)).await);
    assert!(
        msg.contains(
            "local.2 refused CALL_FUNCTION from context 1, which is not one of its parents"
        ),
        "{msg}"
    );
    // Its own child it can call.
    let a_child = router.local().via(&a).await.unwrap();
    assert_eq!(a.call(add_in, (a_child,)).await.unwrap(), 3);
    router.shutdown().await;
}

#[tokio::test]
async fn unidirectional_mode_refuses_sibling_traffic_at_every_level() {
    let fx = fixture();
    let router = fx.builder().unidirectional(true).build().unwrap();
    let a = router.local().await.unwrap();
    let b = router.local().await.unwrap();
    let a1 = router.local().via(&a).await.unwrap();
    let a2 = router.local().via(&a).await.unwrap();
    let msg = remote_message(a.call(add_in, (b.clone(),)).await);
    assert!(
        msg.contains("message from local.1 to local.2 refused by unidirectional routing in master"),
        "{msg}"
    );
    // Inherited: a refuses traffic between its own children.
    let msg = remote_message(a1.call(add_in, (a2.clone(),)).await);
    assert!(
        msg.contains(&format!(
            "message from {} to {} refused by unidirectional routing in local.1",
            a1.name(),
            a2.name()
        )),
        "{msg}"
    );
    // Channels too: a sibling's service is out of reach, and the asker
    // is not left waiting forever once the service's host is gone.
    let service = b.call(serve_echo, (0,)).await.unwrap();
    let asking = a.call_async(ask_echo, (service, b.clone(), 1));
    tokio::time::sleep(Duration::from_millis(100)).await;
    b.shutdown().await;
    let answer = tokio::time::timeout(Duration::from_secs(10), asking)
        .await
        .expect("the refused request left the asker hanging");
    assert_lost(answer, &b);
    // Down the tree and up to the master everything works.
    assert_eq!(a.call(add_in, (a1.clone(),)).await.unwrap(), 3);
    for ctx in [&a, &a1, &a2] {
        assert_eq!(ctx.call(add, (1, 1)).await.unwrap(), 2);
    }
    router.shutdown().await;
}

#[test]
fn a_detached_context_survives_its_master_and_ends_after_its_work() {
    let dir = std::env::temp_dir().join(format!("spore-detach-{}", std::process::id()));
    let _ = std::fs::remove_file(&dir);
    let path = dir.to_str().unwrap();
    // The master starts a -> b, b detaches and starts a 300 ms job, then
    // the master drops its router and exits.
    let (mut master, pids) = spore_test_support::start_master_with(
        env!("CARGO_BIN_EXE_spore-fixture"),
        2,
        &["--detach-last", path, "--exit"],
    );
    let status = master.wait().unwrap();
    assert!(status.success(), "the master failed: {status}");
    let (a, b) = (pids[0], pids[1]);
    assert!(
        wait_gone(a, Duration::from_secs(5)).is_some(),
        "the intermediate outlived the master"
    );
    assert!(pid_alive(b), "the detached context died with its master");
    // Its job finishes, then it exits.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !dir.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let written = std::fs::read_to_string(&dir).expect("the detached job never finished");
    let _ = std::fs::remove_file(&dir);
    assert_eq!(written, b.to_string());
    assert!(
        wait_gone(b, Duration::from_secs(10)).is_some(),
        "the detached context did not exit after its last call"
    );
}

#[tokio::test]
async fn images_for_other_platforms_travel_up_the_tree_once_and_are_cached_at_each_hop() {
    // Another program of the same build, registered as the image for this
    // very platform, stands in for another platform's image (the targets
    // must report its platform; enter.rs fakes a foreign one).
    let platform = spore::this_platform();
    let other = env!("CARGO_BIN_EXE_spore-fixture-tokio");
    let other_len = std::fs::metadata(other).unwrap().len();
    let fx = fixture();
    let router = fx.builder().image_for(&platform, other).build().unwrap();
    let a = router.local().await.unwrap();
    let b = router.local().via(&a).await.unwrap();
    let before = a.bytes_written();
    let c1 = router
        .local()
        .image_platform(&platform)
        .via(&b)
        .await
        .unwrap();
    let first = a.bytes_written() - before;
    assert!(
        first > 100_000,
        "the image went down to b once: {first} bytes"
    );
    assert_eq!(c1.call(exe_len, ()).await.unwrap(), other_len);
    // Again from b, and from a and its new child: all from the caches of
    // the hops below the master.
    let before = a.bytes_written();
    let c2 = router
        .local()
        .image_platform(&platform)
        .via(&b)
        .await
        .unwrap();
    let c3 = router
        .local()
        .image_platform(&platform)
        .via(&a)
        .await
        .unwrap();
    let again = a.bytes_written() - before;
    assert!(again < 16 * 1024, "the master sent {again} bytes again");
    for c in [&c2, &c3] {
        assert_eq!(
            c.call(exe_len, ()).await.unwrap(),
            other_len,
            "{}",
            c.name()
        );
    }
    // An unknown platform fails naming it, where, and what to do.
    let err = router
        .local()
        .image_platform("nowhere-z80")
        .via(&b)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no image for platform nowhere-z80 in master")
            && err.contains(&format!(
                r#"RouterBuilder::image_for("z80-unknown-nowhere-musl", PATH) (registered: {platform})"#
            )),
        "{err}"
    );
    // Pushed ahead of need: starting a context then costs no image bytes,
    // and pushing it twice sends it once.
    let d = router.local().await.unwrap();
    d.forward_image(&platform).await.unwrap();
    // A call's answer means everything sent before it was written.
    d.call(add, (0, 0)).await.unwrap();
    let pushed = d.bytes_written();
    d.forward_image(&platform).await.unwrap();
    let e = router
        .local()
        .image_platform(&platform)
        .via(&d)
        .await
        .unwrap();
    let after = d.bytes_written() - pushed;
    assert!(after < 16 * 1024, "{after} bytes after the push");
    assert_eq!(e.call(exe_len, ()).await.unwrap(), other_len);
    router.shutdown().await;
}

#[tokio::test]
async fn the_message_size_limit_is_inherited_and_enforced_at_every_depth() {
    const MAX: u32 = 64 * 1024;
    let fx = fixture();
    let router = fx.builder().max_message_size(MAX).build().unwrap();
    let a = router.local().await.unwrap();
    let b = router.local().via(&a).await.unwrap();
    let c = a.call(start_child_handle, ()).await.unwrap();
    for ctx in [&b, &c] {
        let facts = ctx.call(spore::builtins::facts, ()).await.unwrap();
        assert_eq!(facts.max_message_size, MAX, "{}", ctx.name());
        let big = serde_bytes::ByteBuf::from(vec![0u8; 100_000]);
        let err = ctx.call(len_of, (big,)).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("message too large (max 65536 bytes"),
            "{err}"
        );
        let err = ctx.call(bytes_of, (100_000,)).await.unwrap_err();
        let remote = err.remote().unwrap_or_else(|| panic!("{err}"));
        assert_eq!(remote.kind, spore::RemoteErrorKind::TooLarge, "{err}");
        assert_eq!(remote.context, ctx.name());
        assert_eq!(ctx.call(bytes_of, (1000,)).await.unwrap().len(), 1000);
    }
    router.shutdown().await;
}

#[tokio::test]
async fn a_receiver_waiting_on_a_sibling_it_never_talked_to_ends_when_it_is_lost() {
    let fx = fixture();
    let router = fx.router();
    let a = router.local().await.unwrap();
    let b = router.local().await.unwrap();
    let b_child = router.local().via(&b).await.unwrap();
    for (host, killed) in [(&b_child, &b_child), (&b, &b)] {
        let waiting = a.call_async(wait_for_loss_of, (host.clone(),));
        tokio::time::sleep(Duration::from_millis(100)).await;
        killed.call_no_reply(exit_now, (0,)).unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .unwrap_or_else(|_| panic!("the wait on {} hung", host.name()))
            .unwrap();
        assert!(
            ended.contains(&format!("{} disconnected", host.name())),
            "{ended}"
        );
    }
    // Made after the loss: it ends at once too.
    let ended = tokio::time::timeout(
        Duration::from_secs(10),
        a.call(wait_for_loss_of, (b.clone(),)),
    )
    .await
    .expect("a wait on an already lost context hung")
    .unwrap();
    assert!(ended.contains("local.2 disconnected"), "{ended}");
    router.shutdown().await;
}
