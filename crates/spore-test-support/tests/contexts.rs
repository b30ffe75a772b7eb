//! Integration tests over real child processes: calls, errors, output,
//! lifetime. Every test that starts contexts runs for both start methods
//! (direct exec and the first stage) where it matters.

use std::time::Duration;

use spore::{CallError, OutputStream, RemoteErrorKind};
use spore_test_support::funcs::*;
use spore_test_support::{Fixture, proc_names};

fn fixture() -> Fixture {
    Fixture::new(env!("CARGO_BIN_EXE_spore-fixture"))
}

const METHODS: [bool; 2] = [false, true];

#[tokio::test]
async fn calls_return_typed_results_through_both_start_methods() {
    let fx = fixture();
    let router = fx.router();
    for first_stage in METHODS {
        let ctx = router.local().first_stage(first_stage).await.unwrap();
        assert_eq!(ctx.call(add, (2, 40)).await.unwrap(), 42);
        assert_eq!(
            ctx.call(greet, ("spore".into(), 2)).await.unwrap(),
            ["hello spore #0", "hello spore #1"]
        );
        assert_eq!(ctx.call(async_echo, ("hi".into(), 1)).await.unwrap(), "hi");
        let facts = ctx.call(spore::builtins::facts, ()).await.unwrap();
        assert_eq!(facts.name, ctx.name());
        assert_eq!(Some(facts.pid), ctx.pid());
        assert_ne!(facts.pid, std::process::id());
        // The process named itself after the context.
        let (comm, cmdline) = proc_names(facts.pid);
        assert_eq!(
            comm,
            format!("spore:{}", ctx.name()),
            "first_stage={first_stage}"
        );
        assert!(
            cmdline.starts_with(&format!("spore:{}", ctx.name())),
            "{cmdline:?}"
        );
    }
    router.shutdown().await;
}

#[tokio::test]
async fn the_first_stage_takes_raw_and_compressed_images() {
    let fx = fixture();
    let router = fx.router();
    let zstd = router.local().first_stage(true).await.unwrap();
    let raw = router
        .local()
        .first_stage(true)
        .compress(false)
        .await
        .unwrap();
    assert_eq!(zstd.call(add, (1, 2)).await.unwrap(), 3);
    assert_eq!(raw.call(add, (1, 2)).await.unwrap(), 3);
    let image = std::fs::metadata(env!("CARGO_BIN_EXE_spore-fixture"))
        .unwrap()
        .len();
    // The raw bootstrap carries the whole image; the zstd one much less.
    assert!(
        raw.bytes_written() > image,
        "{} <= {image}",
        raw.bytes_written()
    );
    assert!(
        zstd.bytes_written() < image / 2,
        "{} vs {image}",
        zstd.bytes_written()
    );
    router.shutdown().await;
}

#[tokio::test]
async fn init_works_inside_the_users_tokio_main() {
    let router = spore::Router::builder()
        .image(env!("CARGO_BIN_EXE_spore-fixture-tokio"))
        .build()
        .unwrap();
    for first_stage in METHODS {
        let ctx = router.local().first_stage(first_stage).await.unwrap();
        assert_eq!(ctx.call(add, (20, 22)).await.unwrap(), 42);
        assert_eq!(ctx.call(async_echo, ("x".into(), 1)).await.unwrap(), "x");
    }
    router.shutdown().await;
}

#[tokio::test]
async fn context_ids_start_at_one_and_names_follow() {
    let fx = fixture();
    let router = fx.router();
    let a = router.local().await.unwrap();
    let b = router.local().first_stage(true).await.unwrap();
    assert_eq!((a.id(), a.name()), (1, "local.1"));
    assert_eq!((b.id(), b.name()), (2, "local.2"));
    router.shutdown().await;
}

#[tokio::test]
async fn many_outstanding_calls_and_no_reply_calls() {
    let fx = fixture();
    let router = fx.router();
    let ctx = router.local().await.unwrap();
    let pending: Vec<_> = (0..2000).map(|i| ctx.call_async(add, (i, 1))).collect();
    for (i, p) in pending.into_iter().enumerate() {
        assert_eq!(p.await.unwrap(), i as i32 + 1);
    }
    // Async functions run concurrently: 20 calls sleeping 200 ms take far
    // less than 20 * 200 ms.
    let start = std::time::Instant::now();
    let sleepers: Vec<_> = (0..20)
        .map(|i| ctx.call_async(async_echo, (format!("{i}"), 200)))
        .collect();
    for s in sleepers {
        s.await.unwrap();
    }
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    ctx.call_no_reply(print_lines, (1, "noreply".into()))
        .unwrap();
    fx.wait_lines(
        ctx.name(),
        OutputStream::Stdout,
        Duration::from_secs(10),
        |l| !l.is_empty(),
    );
    assert_eq!(
        fx.lines(ctx.name(), OutputStream::Stdout),
        ["noreply line 0"]
    );
    router.shutdown().await;
}

#[test]
fn blocking_api_works_without_a_runtime() {
    let fx = fixture();
    let router = fx.router();
    let ctx = router.local().connect_blocking().unwrap();
    assert_eq!(ctx.call_blocking(add, (1, 2)).unwrap(), 3);
    assert_eq!(ctx.call_async(sleep_ms, (5,)).wait().unwrap(), 5);
    router.shutdown_blocking();
}

#[tokio::test]
async fn remote_errors_carry_context_type_message_chain() {
    let fx = fixture();
    let router = fx.router();
    let ctx = router.local().await.unwrap();
    let err = ctx.call(fails_with_chain, ()).await.unwrap_err();
    let r = err.remote().expect("a remote error");
    assert_eq!(r.kind, RemoteErrorKind::Returned);
    assert_eq!(r.context, "local.1");
    assert!(r.type_name.ends_with("ConfigError"), "{}", r.type_name);
    assert_eq!(r.message, "config file is broken");
    assert_eq!(r.chain, ["no such file: /etc/x.conf"]);
    assert!(r.function.ends_with("funcs::fails_with_chain"));
    let text = err.to_string();
    assert!(
        text.contains("local.1") && text.contains("no such file"),
        "{text}"
    );
    router.shutdown().await;
}

#[tokio::test]
async fn panics_are_reported_with_location_and_the_context_keeps_serving() {
    let fx = fixture();
    let router = fx.router();
    let ctx = router.local().await.unwrap();
    for _ in 0..3 {
        let err = ctx.call(panics, ("boom".into(),)).await.unwrap_err();
        let r = err.remote().unwrap();
        assert_eq!(r.kind, RemoteErrorKind::Panicked);
        assert_eq!(r.message, "deliberate: boom");
        let loc = r.location.as_deref().unwrap();
        assert!(loc.contains("funcs.rs:"), "{loc}");
        let err = ctx.call(panics_async, ()).await.unwrap_err();
        assert_eq!(err.remote().unwrap().kind, RemoteErrorKind::Panicked);
        assert_eq!(ctx.call(add, (1, 1)).await.unwrap(), 2);
    }
    // The panic message did not leak to the child's stderr.
    assert!(fx.lines("local.1", OutputStream::Stderr).is_empty());
    router.shutdown().await;
}

#[tokio::test]
async fn unknown_function_bad_arguments_and_unserializable_results() {
    #[spore::remote]
    fn only_in_the_test_binary() -> u32 {
        7
    }
    let fx = fixture();
    let router = fx.router();
    let ctx = router.local().await.unwrap();

    let err = ctx.call(only_in_the_test_binary, ()).await.unwrap_err();
    let r = err.remote().unwrap();
    assert_eq!(r.kind, RemoteErrorKind::NoSuchFunction);
    assert!(
        r.message.starts_with("no such function ") && r.message.ends_with(" in local.1"),
        "{}",
        r.message
    );

    // A u64 where a String is expected.
    let name = <__spore_remote_takes_string as spore::RemoteFunction>::NAME;
    let err = ctx
        .call_named::<(u64, u64), usize>(name, &(u64::MAX, 3))
        .await
        .unwrap_err();
    let r = err.remote().unwrap();
    assert_eq!(r.kind, RemoteErrorKind::BadArguments, "{err}");
    assert!(r.message.contains("takes_string"), "{}", r.message);

    let err = ctx.call(unserializable, ()).await.unwrap_err();
    let r = err.remote().unwrap();
    assert_eq!(r.kind, RemoteErrorKind::Unserializable);
    assert!(
        r.message
            .contains("funcs::Unserializable could not be serialized"),
        "{}",
        r.message
    );

    // The reply type does not match what the caller expects.
    let name = <__spore_remote_add as spore::RemoteFunction>::NAME;
    let err = ctx
        .call_named::<(i32, i32), String>(name, &(300, 1))
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::Decode { .. }), "{err}");

    assert_eq!(ctx.call(add, (1, 1)).await.unwrap(), 2);
    router.shutdown().await;
}

#[tokio::test]
async fn message_size_limit_is_enforced_both_ways_and_inherited() {
    let fx = fixture();
    let router = fx.builder().max_message_size(64 * 1024).build().unwrap();
    let ctx = router.local().await.unwrap();
    let facts = ctx.call(spore::builtins::facts, ()).await.unwrap();
    assert_eq!(facts.max_message_size, 64 * 1024);

    let big = serde_bytes::ByteBuf::from(vec![1u8; 100 * 1024]);
    let err = ctx.call(len_of, (big,)).await.unwrap_err();
    assert!(matches!(err, CallError::TooLarge { .. }));
    assert!(
        err.to_string()
            .contains("message too large (max 65536 bytes"),
        "{err}"
    );

    let err = ctx.call(bytes_of, (100 * 1024,)).await.unwrap_err();
    let r = err.remote().unwrap();
    assert_eq!(r.kind, RemoteErrorKind::TooLarge);
    assert!(
        r.message.contains("message too large (max 65536 bytes"),
        "{}",
        r.message
    );

    assert_eq!(ctx.call(bytes_of, (1000,)).await.unwrap().len(), 1000);
    router.shutdown().await;
}

#[tokio::test]
async fn large_replies_arrive_intact() {
    let fx = fixture();
    let router = fx.router();
    let ctx = router.local().await.unwrap();
    let b = ctx.call(bytes_of, (64 << 20,)).await.unwrap();
    assert_eq!(b.len(), 64 << 20);
    assert!(b.iter().all(|&x| x == 0xA5));
    let n = ctx
        .call(len_of, (serde_bytes::ByteBuf::from(vec![3u8; 8 << 20]),))
        .await
        .unwrap();
    assert_eq!(n, 8 << 20);
    router.shutdown().await;
}

#[tokio::test]
async fn a_call_chain_runs_in_order_and_its_first_error_sticks_until_reset() {
    let fx = fixture();
    let router = fx.router();
    let a = router.local().await.unwrap();
    let chain = a.chain();
    // The first step is slow: the chain still runs them in order.
    chain
        .call_no_reply(push_step, ("one".into(), 50, false))
        .unwrap();
    chain
        .call_no_reply(push_step, ("two".into(), 0, true))
        .unwrap();
    chain
        .call_no_reply(push_step, ("three".into(), 0, false))
        .unwrap();
    let err = chain
        .call(push_step, ("four".into(), 0, false))
        .await
        .unwrap_err();
    let remote = err.remote().unwrap_or_else(|| panic!("{err}"));
    assert!(
        remote.function.ends_with("::push_step") && remote.message == "step two failed",
        "{err}"
    );
    // Other chains and plain calls are unaffected.
    a.chain()
        .call(push_step, ("five".into(), 0, false))
        .await
        .unwrap();
    a.call(push_step, ("six".into(), 0, false)).await.unwrap();
    // Still stuck until reset; after it, the chain runs again.
    assert!(chain.call(add, (1, 1)).await.is_err());
    chain.reset().await.unwrap();
    assert_eq!(chain.call(add, (1, 1)).await.unwrap(), 2);
    chain
        .call(push_step, ("seven".into(), 0, false))
        .await
        .unwrap();
    assert_eq!(
        a.call(steps, ()).await.unwrap(),
        ["one", "two", "five", "six", "seven"]
    );
    router.shutdown().await;
}

#[tokio::test]
async fn thousands_of_queued_chain_calls_that_fail_at_once_are_answered_in_order() {
    let fx = fixture();
    let router = fx.router();
    let a = router.local().await.unwrap();
    let chain = a.chain();
    // A slow first call: everything after it queues in a.
    chain
        .call_no_reply(push_step, ("slow".into(), 200, false))
        .unwrap();
    let mut last = None;
    for _ in 0..3000 {
        drop(chain.call_named::<_, ()>("no::such::function", &()));
        last = Some(chain.call_named::<_, ()>("spore::reset_chain", &()));
    }
    last.unwrap().await.unwrap();
    assert_eq!(chain.call(add, (1, 1)).await.unwrap(), 2);
    assert_eq!(a.call(add, (2, 2)).await.unwrap(), 4, "a is unharmed");
    router.shutdown().await;
}
