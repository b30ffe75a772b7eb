//! Log forwarding: child `tracing` events reach the master's subscriber with
//! the context's name, at the master's level, including start-up records.
//! Its own test binary, because it installs a global subscriber.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use spore_test_support::Fixture;
use spore_test_support::funcs::log_event;
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
        if e.metadata().target() == "spore::remote" {
            let mut f = Fields::default();
            e.record(&mut f);
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

#[test]
fn child_logs_reach_the_master_with_the_context_name() {
    let cap = Capture::default();
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(cap.clone().with_filter(LevelFilter::DEBUG)),
    )
    .unwrap();
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
    assert!(
        !cap.0
            .lock()
            .unwrap()
            .iter()
            .any(|(_, _, m)| m == "too fine")
    );
}
