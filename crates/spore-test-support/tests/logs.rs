//! Log forwarding: child `tracing` events reach the master's subscriber with
//! the context's name, at the master's level, including start-up records.
//! Its own test binary, because it installs a global subscriber.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use spore_test_support::Fixture;
use spore_test_support::funcs::{add, exe_len, log_event, write_raw};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{Layer, filter::LevelFilter};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<(String, String, String)>>>);

#[derive(Default)]
struct Fields {
    context: String,
    message: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "context" => self.context = format!("{value:?}").trim_matches('"').to_owned(),
            "message" => self.message = format!("{value:?}"),
            _ => {}
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "context" => self.context = value.to_owned(),
            "message" => self.message = value.to_owned(),
            _ => {}
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for Capture {
    fn on_event(&self, e: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        // Records forwarded by children carry their context; the master's
        // own records are filed under "master".
        let target = e.metadata().target();
        if target == "spore::remote" || target.starts_with("spore::") {
            let mut f = Fields::default();
            e.record(&mut f);
            if target != "spore::remote" {
                f.context = "master".to_owned();
            }
            self.0
                .lock()
                .unwrap()
                .push((f.context, e.metadata().level().to_string(), f.message));
        }
    }
}

impl Capture {
    fn wait_for(&self, pred: impl Fn(&(String, String, String)) -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.0.lock().unwrap().iter().any(&pred) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }
}

/// The capture behind this binary's global subscriber (installed once).
fn capture() -> Capture {
    static CAPTURE: std::sync::OnceLock<Capture> = std::sync::OnceLock::new();
    CAPTURE
        .get_or_init(|| {
            let cap = Capture::default();
            tracing::subscriber::set_global_default(
                tracing_subscriber::registry().with(cap.clone().with_filter(LevelFilter::DEBUG)),
            )
            .unwrap();
            cap
        })
        .clone()
}

#[test]
fn child_logs_reach_the_master_with_the_context_name() {
    let cap = capture();
    let fx = Fixture::new(env!("CARGO_BIN_EXE_spore-fixture"));
    let router = fx.router();
    for first_stage in [false, true] {
        let ctx = router
            .local()
            .first_stage(first_stage)
            .connect_blocking()
            .unwrap();
        let name = ctx.name().to_owned();
        // The child's earliest record, emitted before its stream was up.
        assert!(
            cap.wait_for(|(c, l, m)| *c == name
                && l == "DEBUG"
                && m.contains(&format!("context {name} starting"))),
            "start-up record missing: {:?}",
            cap.0.lock().unwrap()
        );
        ctx.call_blocking(log_event, ("info".into(), format!("hello from {name}")))
            .unwrap();
        ctx.call_blocking(log_event, ("error".into(), "bad thing".into()))
            .unwrap();
        ctx.call_blocking(log_event, ("trace".into(), "too fine".into()))
            .unwrap();
        assert!(
            cap.wait_for(|(c, l, m)| *c == name
                && l == "INFO"
                && *m == format!("hello from {name}"))
        );
        assert!(cap.wait_for(|(c, l, m)| *c == name && l == "ERROR" && m == "bad thing answer=42"));
    }
    router.shutdown_blocking();
    // TRACE is below the master's level: the children never sent it.
    // (Only this test's contexts log "too fine".)
    assert!(
        !cap.0
            .lock()
            .unwrap()
            .iter()
            .any(|(_, _, m)| m == "too fine")
    );
}

/// Privileged handles (LOAD_MODULE, FORWARD_MODULE, SHUTDOWN) take messages
/// only from a parent: a child forging them is refused, the refusal is
/// logged where it happens, and nothing is harmed.
#[test]
fn forged_privileged_messages_are_refused_and_logged_where_they_arrive() {
    use spore_proto::messages::ImageReply;
    use spore_proto::{Frame, Header, handles};

    let cap = capture();
    // Another program of this build, registered for this very platform,
    // stands in for another platform's image.
    let platform = spore::this_platform();
    let other = env!("CARGO_BIN_EXE_spore-fixture-tokio");
    let fx = Fixture::new(env!("CARGO_BIN_EXE_spore-fixture"));
    let router = fx.builder().image_for(&platform, other).build().unwrap();
    let a = router.local().connect_blocking().unwrap();
    let b = router.local().via(&a).connect_blocking().unwrap();
    let fake = postcard::to_stdvec(&ImageReply {
        platform: platform.clone(),
        image: Ok(serde_bytes::ByteBuf::from(b"not an image".to_vec())),
    })
    .unwrap();
    let to = |dst: u32, handle: u32, payload: &[u8]| {
        Frame::new(Header::new(dst, b.id(), handle), payload.to_vec())
    };
    let mut bytes = bytes::BytesMut::new();
    for f in [
        to(a.id(), handles::FORWARD_MODULE, &fake),
        to(a.id(), handles::LOAD_MODULE, &fake),
        to(a.id(), handles::SHUTDOWN, &[]),
        to(0, handles::FORWARD_MODULE, &fake),
    ] {
        f.encode_into(&mut bytes);
    }
    b.call_blocking(write_raw, (serde_bytes::ByteBuf::from(bytes.to_vec()),))
        .unwrap();
    let logged = |context: &str, text: String| {
        assert!(
            cap.wait_for(|(c, l, m)| c == context && l == "WARN" && m.contains(&text)),
            "no {text:?} logged by {context}: {:?}",
            cap.0.lock().unwrap()
        );
    };
    let b_id = b.id();
    for what in ["FORWARD_MODULE", "LOAD_MODULE"] {
        logged(
            a.name(),
            format!("local.1 refused {what} from context {b_id}, which is not one of its parents"),
        );
    }
    logged(
        a.name(),
        format!("ignored SHUTDOWN from context {b_id}, which is not one of my parents"),
    );
    logged(
        "master",
        format!(
            "master refused FORWARD_MODULE from context {b_id}, which is not one of its parents"
        ),
    );
    // Nothing was harmed: a still serves, and a context for the other
    // platform started through a runs the real image.
    assert_eq!(a.call_blocking(add, (1, 1)).unwrap(), 2);
    let c = router
        .local()
        .image_platform(&platform)
        .via(&a)
        .connect_blocking()
        .unwrap();
    assert_eq!(
        c.call_blocking(exe_len, ()).unwrap(),
        std::fs::metadata(other).unwrap().len()
    );
    router.shutdown_blocking();
}
