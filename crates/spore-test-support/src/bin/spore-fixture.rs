//! The image of test contexts. Run by spore's tests, not by people.
//!
//! `spore-fixture master [--first-stage]` acts as a master: it starts one
//! child, prints `{"child_pid": N}` and sleeps, so a test can SIGKILL it
//! and watch the child go.

use std::time::Duration;

fn main() {
    spore::init();
    // Keep the test functions linked into this image.
    let _ = spore_test_support::funcs::add(1, 1);
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("master") => {
            let router = spore::Router::new().expect("router");
            let ctx = router
                .local()
                .first_stage(args.iter().any(|a| a == "--first-stage"))
                .connect_blocking()
                .expect("connect");
            let report = spore_test_support::MasterReport {
                child_pid: ctx.pid().expect("direct child"),
            };
            println!("{}", serde_json_line(&report));
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        _ => {
            eprintln!("spore-fixture: the image of spore's test contexts; see spore-test-support");
            std::process::exit(2);
        }
    }
}

fn serde_json_line(r: &spore_test_support::MasterReport) -> String {
    format!("{{\"child_pid\": {}}}", r.child_pid)
}
