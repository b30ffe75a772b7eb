//! Lifetime and bad input: shutdown, grace, parent death, reaping,
//! timeouts, broken first stages, corrupt and forged streams.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use spore::{CallError, ConnectError, Fault, OutputStream};
use spore_proto::{Frame, Header, handles};

use spore_test_support::funcs::*;
use spore_test_support::{
    Fixture, Stopped, pid_alive, pid_exists, processes_named, start_master, wait_gone,
};

fn fixture() -> Fixture {
    Fixture::new(env!("CARGO_BIN_EXE_spore-fixture"))
}

#[tokio::test]
async fn shutdown_reaps_the_child_and_later_calls_fail_at_once() {
    let fx = fixture();
    let router = fx.router();
    for first_stage in [false, true] {
        let ctx = router.local().first_stage(first_stage).await.unwrap();
        let pid = ctx.pid().unwrap();
        ctx.shutdown().await;
        // Reaped, not a zombie.
        let deadline = Instant::now() + Duration::from_secs(5);
        while pid_exists(pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(!pid_exists(pid), "child {pid} still exists after shutdown");
        let start = Instant::now();
        let err = ctx.call(add, (1, 1)).await.unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(1));
        match &err {
            CallError::Undeliverable { reason, .. } => {
                assert!(
                    reason.contains(&format!("no route to {}, my ID is 0", ctx.id())),
                    "{reason}"
                )
            }
            other => panic!("unexpected {other}"),
        }
    }
}

#[tokio::test]
async fn a_hung_child_ends_itself_after_the_grace_period() {
    let fx = fixture();
    let router = fx
        .builder()
        .shutdown_grace(Duration::from_millis(300))
        .build()
        .unwrap();
    let ctx = router.local().await.unwrap();
    let hung = ctx.call_async(sleep_ms, (120_000,));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let start = Instant::now();
    ctx.shutdown().await;
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    let err = hung.await.unwrap_err();
    assert!(
        matches!(&err, CallError::Disconnected { context, .. } if context == "local.1"),
        "{err}"
    );
}

#[tokio::test]
async fn output_is_forwarded_line_by_line_without_loss_at_exit() {
    let fx = fixture();
    let router = fx.router();
    let ctx = router.local().first_stage(true).await.unwrap();
    // 1 MiB in one write, as one line: arrives in 64 KiB pieces.
    assert_eq!(ctx.call(write_stdout, (1 << 20,)).await.unwrap(), 1 << 20);
    assert_eq!(
        ctx.call(print_lines, (2000, "tail".into())).await.unwrap(),
        2000
    );
    ctx.call(eprint, ("to stderr".into(),)).await.unwrap();
    ctx.shutdown().await;
    let out = fx.lines(ctx.name(), OutputStream::Stdout);
    let big: usize = out
        .iter()
        .filter(|l| l.starts_with('x'))
        .map(|l| l.len())
        .sum();
    assert_eq!(big, 1 << 20);
    let tail: Vec<&String> = out.iter().filter(|l| l.starts_with("tail")).collect();
    assert_eq!(tail.len(), 2000, "lines lost at exit");
    assert!(
        tail.iter()
            .enumerate()
            .all(|(i, l)| **l == format!("tail line {i}"))
    );
    let err = fx.wait_lines(
        ctx.name(),
        OutputStream::Stderr,
        Duration::from_secs(5),
        |l| !l.is_empty(),
    );
    assert_eq!(err, ["to stderr"]);
}

#[tokio::test]
async fn user_code_sees_dev_null_as_stdin_and_no_stream_fds() {
    let fx = fixture();
    let router = fx.router();
    let ctx = router.local().first_stage(true).await.unwrap();
    assert_eq!(ctx.call(read_stdin, ()).await.unwrap(), 0);
    let fds = ctx.call(open_fds, ()).await.unwrap();
    assert!(fds.iter().any(|f| f == "0->/dev/null"), "{fds:?}");
    assert!(fds.iter().any(|f| f.starts_with("1->pipe:")), "{fds:?}");
    router.shutdown().await;
}

#[tokio::test]
async fn contexts_are_fresh_processes_with_their_own_randomness() {
    let fx = fixture();
    let router = fx.router();
    let a = router.local().await.unwrap();
    let b = router.local().await.unwrap();
    assert_ne!(a.pid(), b.pid());
    assert_ne!(
        a.call(random_u64, ()).await.unwrap(),
        b.call(random_u64, ()).await.unwrap()
    );
    router.shutdown().await;
}

#[tokio::test]
async fn a_child_that_dies_during_a_call_wakes_the_caller_with_its_name() {
    let fx = fixture();
    let router = fx.router();
    let ctx = router.local().await.unwrap();
    let other = router.local().await.unwrap();
    let pid = ctx.pid().unwrap();
    let err = ctx.call(exit_now, (3,)).await.unwrap_err();
    match &err {
        CallError::Disconnected { context, detail } => {
            assert_eq!(context, "local.1");
            assert!(detail.contains("EOF"), "{detail}");
        }
        other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().starts_with("local.1 disconnected"), "{err}");
    assert!(wait_gone(pid, Duration::from_secs(5)).is_some());
    // Nothing else in the tree is disturbed.
    assert_eq!(other.call(add, (2, 2)).await.unwrap(), 4);
    router.shutdown().await;
}

#[test]
fn dropping_the_router_reaps_every_child() {
    let fx = fixture();
    let router = fx.router();
    let a = router.local().connect_blocking().unwrap();
    let b = router.local().first_stage(true).connect_blocking().unwrap();
    let pids = [a.pid().unwrap(), b.pid().unwrap()];
    drop(router);
    for pid in pids {
        assert!(!pid_exists(pid), "child {pid} left behind after drop");
    }
    // Handles outlive the router; calls fail cleanly.
    assert!(a.call_blocking(add, (1, 1)).is_err());
}

#[test]
fn children_exit_when_the_master_is_killed() {
    for first_stage in [false, true] {
        let (mut master, pids) = start_master(env!("CARGO_BIN_EXE_spore-fixture"), first_stage, 1);
        let child = pids[0];
        assert!(pid_alive(child));
        master.kill().unwrap();
        master.wait().unwrap();
        let gone = wait_gone(child, Duration::from_secs(5));
        assert!(
            gone.is_some(),
            "child {child} survived its master (first_stage={first_stage})"
        );
    }
}

#[tokio::test]
async fn a_first_stage_never_fed_times_out_and_is_killed() {
    let fx = fixture();
    let router = fx.router();
    let start = Instant::now();
    let err = router
        .local()
        .first_stage(true)
        .name("never-fed-7f3a")
        .connect_timeout(Duration::from_millis(700))
        .fault(Fault::NeverFeed)
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectError::Timeout { .. }), "{err}");
    assert!(
        err.to_string().contains("never-fed-7f3a") && err.to_string().contains("timed out"),
        "{err}"
    );
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(
        processes_named("never-fed-7f3a"),
        Vec::<u32>::new(),
        "first stage not reaped"
    );
}

#[tokio::test]
async fn a_truncated_payload_fails_clearly_and_is_reaped() {
    let fx = fixture();
    let router = fx.router();
    let err = router
        .local()
        .first_stage(true)
        .name("truncated-7f3a")
        .fault(Fault::TruncatePayload)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ConnectError::FirstStage { .. }), "{text}");
    assert!(text.contains("truncated"), "{text}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_named("truncated-7f3a").is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(processes_named("truncated-7f3a"), Vec::<u32>::new());
    // The router is unharmed.
    let ctx = router.local().first_stage(true).await.unwrap();
    assert_eq!(ctx.call(add, (1, 2)).await.unwrap(), 3);
    router.shutdown().await;
}

#[tokio::test]
async fn garbage_instead_of_a_payload_header_fails_cleanly() {
    let fx = fixture();
    let router = fx.router();
    let err = router
        .local()
        .first_stage(true)
        .name("garbage-7f3a")
        .fault(Fault::GarbageHeader)
        .connect_timeout(Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectError::FirstStage { .. }), "{err}");
}

#[test]
fn a_first_stage_fed_dev_zero_fails_within_seconds() {
    let start = Instant::now();
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(spore::FIRST_STAGE)
        .arg("spore:zero")
        .stdin(std::fs::File::open("/dev/zero").unwrap())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(stdout.contains("SPORE-FAIL"), "{stdout}");
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_message_to_an_unknown_handle_gets_a_dead_reply() {
    let fx = fixture();
    let router = fx.router();
    let ctx = router.local().await.unwrap();
    let err = spore::fault::request(&ctx, 4242, vec![1, 2, 3])
        .await
        .unwrap_err();
    match err {
        CallError::Undeliverable { reason, .. } => {
            assert_eq!(reason, "invalid handle 4242 in local.1")
        }
        other => panic!("unexpected {other}"),
    }
    assert_eq!(ctx.call(add, (1, 2)).await.unwrap(), 3);
    router.shutdown().await;
}

fn frame_bytes(f: &Frame) -> serde_bytes::ByteBuf {
    let mut b = BytesMut::new();
    f.encode_into(&mut b);
    serde_bytes::ByteBuf::from(b.to_vec())
}

#[tokio::test]
async fn garbage_on_a_stream_closes_only_that_stream() {
    let fx = fixture();
    let router = fx.router();
    let bad = router.local().await.unwrap();
    let good = router.local().await.unwrap();
    let garbage = serde_bytes::ByteBuf::from(b"\x00garbage, not a frame".to_vec());
    // The garbage lands before the reply, so the call sees the stream die.
    let err = bad.call(write_raw, (garbage,)).await.unwrap_err();
    match &err {
        CallError::Disconnected { context, detail } => {
            assert_eq!(context, "local.1");
            assert!(detail.contains("corruption detected"), "{detail}");
        }
        other => panic!("unexpected {other}"),
    }
    assert!(wait_gone(bad.pid().unwrap(), Duration::from_secs(5)).is_some());
    assert_eq!(good.call(add, (5, 5)).await.unwrap(), 10);
    router.shutdown().await;
}

#[tokio::test]
async fn an_oversized_frame_is_refused_and_the_stream_survives() {
    let fx = fixture();
    let router = fx.builder().max_message_size(4096).build().unwrap();
    let ctx = router.local().await.unwrap();
    // A frame from the child, to a handle of its own, over the master's
    // limit: the master skips it unbuffered and answers with a dead message.
    ctx.call(write_frame, (0, 77, 5000, 10_000))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ctx.call(add, (1, 2)).await.unwrap(), 3);
    router.shutdown().await;
}

#[tokio::test]
async fn a_frame_truncated_by_the_childs_death_is_an_eof_not_a_panic() {
    let fx = fixture();
    let router = fx.router();
    let ctx = router.local().await.unwrap();
    let f = Frame::new(
        Header::new(0, ctx.id(), handles::FORWARD_LOG),
        vec![0u8; 1000],
    );
    let mut bytes = frame_bytes(&f);
    bytes.truncate(500);
    let err = ctx.call(write_raw_and_exit, (bytes,)).await.unwrap_err();
    assert!(
        matches!(&err, CallError::Disconnected { detail, .. } if detail.contains("EOF")),
        "{err}"
    );
    let other = router.local().await.unwrap();
    assert_eq!(other.call(add, (1, 2)).await.unwrap(), 3);
    router.shutdown().await;
}

/// A20: a connect in progress ends at once with `Aborted` when the router
/// shuts down, its child reaped; connects after shutdown are refused.
#[tokio::test]
async fn shutting_the_router_down_during_a_connect_cancels_it() {
    let fx = fixture();
    let router = fx.router();
    let start = Instant::now();
    let connect = router
        .local()
        .first_stage(true)
        .name("cancelled-9c2e")
        .connect_timeout(Duration::from_secs(60))
        .fault(Fault::NeverFeed)
        .into_future();
    let connect = tokio::spawn(connect);
    // Let the first stage start and announce itself.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        processes_named("cancelled-9c2e").len(),
        1,
        "first stage not started"
    );
    router.shutdown().await;
    let err = connect.await.unwrap().unwrap_err();
    assert!(matches!(err, ConnectError::Aborted(_)), "{err}");
    assert!(
        err.to_string().contains("cancelled-9c2e") && err.to_string().contains("shut down"),
        "{err}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(
        processes_named("cancelled-9c2e"),
        Vec::<u32>::new(),
        "cancelled child not reaped"
    );
    let err = router.local().await.unwrap_err();
    assert!(matches!(err, ConnectError::Aborted(_)), "{err}");
}

/// Plays the parent by hand: the first stage's stdin is `child_in`, its
/// stdout `child_out`; the test writes to `to_child` and reads `from_child`.
/// It pauses between writes so the first stage and then the image really
/// meet partial input (EAGAIN on a non-blocking descriptor, short reads on
/// tiny buffers), then makes one call returning 1 MiB through the stream.
fn drive_first_stage_by_hand(
    child_in: std::os::fd::OwnedFd,
    child_out: std::os::fd::OwnedFd,
    to_child: std::os::fd::OwnedFd,
    from_child: std::os::fd::OwnedFd,
) {
    use std::io::{Read, Write};
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(spore::FIRST_STAGE)
        .arg("spore:byhand.1")
        .stdin(Stdio::from(child_in))
        .stdout(Stdio::from(child_out))
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut w = std::fs::File::from(to_child);
    let mut r = std::fs::File::from(from_child);
    // Line by line without buffering past the marker: frames follow it.
    let read_line = |r: &mut std::fs::File| {
        let mut line = Vec::new();
        let mut byte = [0u8];
        while r.read(&mut byte).unwrap() == 1 {
            line.push(byte[0]);
            if byte[0] == b'\n' {
                break;
            }
        }
        String::from_utf8(line).unwrap()
    };
    let line = read_line(&mut r);
    assert!(line.starts_with("SPORE-READY 1 "), "{line:?}");
    let image = std::fs::read(env!("CARGO_BIN_EXE_spore-fixture")).unwrap();
    let pause = || std::thread::sleep(Duration::from_millis(100));
    w.write_all(format!("raw {}\n", image.len()).as_bytes())
        .unwrap();
    pause();
    let (head, rest) = image.split_at(image.len() / 2);
    w.write_all(head).unwrap();
    pause();
    w.write_all(rest).unwrap();
    pause();
    let config = spore_proto::messages::ChildConfig {
        context_id: 1,
        name: "byhand.1".into(),
        parent_id: 0,
        parent_ids: vec![0],
        log_level: 0,
        max_message_size: spore_proto::DEFAULT_MAX_MESSAGE_SIZE,
        debug: false,
        unidirectional: false,
        shutdown_grace_ms: 1000,
        heartbeat_ms: 0,
        build_id: spore::build_id(),
    };
    let frame = Frame::new(
        Header::new(1, 0, handles::CONFIGURE),
        postcard::to_stdvec(&config).unwrap(),
    );
    let mut bytes = BytesMut::new();
    frame.encode_into(&mut bytes);
    w.write_all(&bytes[..10]).unwrap();
    pause();
    w.write_all(&bytes[10..]).unwrap();
    let line = read_line(&mut r);
    assert_eq!(
        line,
        spore_proto::handshake::up_line(&spore::build_id()),
        "first stage said {line:?}"
    );

    // One call whose 1 MiB reply has to squeeze through the stream.
    const REPLY_TO: u32 = 5000;
    const SIZE: u64 = 1 << 20;
    let mut payload = postcard::to_stdvec(&spore_proto::messages::CallRequest {
        chain: None,
        function: "spore_test_support::funcs::bytes_of",
    })
    .unwrap();
    payload.extend(postcard::to_stdvec(&(SIZE,)).unwrap());
    let call = Frame::new(
        Header::new(1, 0, handles::CALL_FUNCTION).with_reply_to(REPLY_TO),
        payload,
    );
    let mut bytes = BytesMut::new();
    call.encode_into(&mut bytes);
    w.write_all(&bytes).unwrap();
    let mut decoder = spore_proto::Decoder::new(spore_proto::DEFAULT_MAX_MESSAGE_SIZE);
    let mut buf = BytesMut::new();
    let reply = loop {
        match decoder.decode(&mut buf).unwrap() {
            Some(spore_proto::DecodeEvent::Frame(f)) if f.header.handle == REPLY_TO => break f,
            Some(_) => continue, // forwarded logs and the like
            None => {
                let mut chunk = [0u8; 4096];
                let n = r.read(&mut chunk).unwrap();
                assert!(n > 0, "stream ended before the reply");
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    };
    assert_eq!(reply.payload[0], spore_proto::messages::REPLY_OK);
    let body: serde_bytes::ByteBuf = postcard::from_bytes(&reply.payload[1..]).unwrap();
    assert_eq!(body.len() as u64, SIZE);

    // EOF on its stream (both ends may be one socket): the child exits at
    // once, successfully.
    drop((w, r));
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}

/// A19: the stream arrives non-blocking (as some parents hand it over).
#[test]
fn the_first_stage_and_the_child_cope_with_non_blocking_stdin() {
    use rustix::pipe::{PipeFlags, pipe_with};
    // CLOEXEC: the child must not inherit the test's ends, or it never sees EOF.
    let (child_in, to_child) = pipe_with(PipeFlags::CLOEXEC).unwrap();
    let (from_child, child_out) = pipe_with(PipeFlags::CLOEXEC).unwrap();
    let flags = rustix::fs::fcntl_getfl(&child_in).unwrap();
    rustix::fs::fcntl_setfl(&child_in, flags | rustix::fs::OFlags::NONBLOCK).unwrap();
    drive_first_stage_by_hand(child_in, child_out, to_child, from_child);
}

/// A19: a socket stream with the smallest buffers the kernel allows.
#[test]
fn the_first_stage_and_the_child_cope_with_tiny_socket_buffers() {
    use rustix::net::sockopt;
    // std's pair is CLOEXEC, like the pipes above.
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    for fd in [&ours, &theirs] {
        sockopt::set_socket_send_buffer_size(fd, 1).unwrap();
        sockopt::set_socket_recv_buffer_size(fd, 1).unwrap();
    }
    let (ours, theirs) = (
        std::os::fd::OwnedFd::from(ours),
        std::os::fd::OwnedFd::from(theirs),
    );
    let theirs_too = theirs.try_clone().unwrap();
    let ours_too = ours.try_clone().unwrap();
    drive_first_stage_by_hand(theirs, theirs_too, ours, ours_too);
}

#[tokio::test]
async fn an_idle_child_stays_up_across_many_heartbeat_windows() {
    // The pings keep a healthy stream alive while nothing else flows.
    let fx = fixture();
    let router = fx
        .builder()
        .heartbeat(Some(Duration::from_millis(200)))
        .build()
        .unwrap();
    let a = router.local().await.unwrap();
    let b = router.local().via(&a).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(a.call(add, (1, 2)).await.unwrap(), 3);
    assert_eq!(b.call(add, (2, 2)).await.unwrap(), 4);
    router.shutdown().await;
}

#[tokio::test]
async fn a_silent_context_is_declared_down_within_the_heartbeat_window() {
    // B24: a stopped context sends nothing and its pipes stay open. Its
    // parent declares it (and what is below it) lost, and the context
    // below it, whose parent fell silent, exits by itself.
    let fx = fixture();
    let window = Duration::from_millis(500);
    let router = fx
        .builder()
        .heartbeat(Some(window))
        .shutdown_grace(Duration::from_millis(200))
        .build()
        .unwrap();
    let a = router.local().await.unwrap();
    let b = router.local().via(&a).await.unwrap();
    let b_pid = b.pid().expect("announced from below");
    let pending = b.call_async(sleep_ms, (60_000,));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let stopped_at = Instant::now();
    let _stopped = Stopped::new(a.pid().unwrap());
    let detail = tokio::time::timeout(Duration::from_secs(20), a.lost())
        .await
        .expect("the silent context was never declared down");
    let took = stopped_at.elapsed();
    assert!(detail.contains("heartbeat window"), "{detail}");
    // Never sooner than the window after the last byte, which was at most
    // one ping interval (a quarter window) before the stop.
    assert!(took >= window * 3 / 4, "declared down after {took:?}");
    assert!(b.lost().await.contains("heartbeat window"));
    match pending.await {
        Err(CallError::Disconnected { detail, .. }) => {
            assert!(detail.contains("heartbeat window"), "{detail}")
        }
        other => panic!("the call in the grandchild ended with {other:?}"),
    }
    // The grandchild noticed its parent's silence and exited.
    assert!(
        wait_gone(b_pid, Duration::from_secs(20)).is_some(),
        "the grandchild {b_pid} outlived its silent parent"
    );
    router.shutdown().await;
}
