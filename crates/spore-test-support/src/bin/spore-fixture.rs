//! The image of test contexts. Run by spore's tests, not by people.
//!
//! `spore-fixture master [--first-stage] [--depth N] [--detach-last PATH]
//! [--exit]` acts as a master: it starts a chain of N contexts (default 1;
//! each started by the one before), prints `pids P1 P2 …` and sleeps, so a
//! test can SIGKILL it and watch the tree go (see
//! `spore_test_support::start_master`). With `--detach-last`, the last
//! context detaches and then writes its pid to PATH after 300 ms; with
//! `--exit`, the master exits (dropping its router) instead of sleeping.

use std::time::Duration;

fn main() {
    spore::init();
    // Keep the test functions linked into this image.
    let _ = spore_test_support::funcs::add(1, 1);
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("master") => {
            let first_stage = args.iter().any(|a| a == "--first-stage");
            let depth: usize = args
                .iter()
                .position(|a| a == "--depth")
                .and_then(|i| args.get(i + 1)?.parse().ok())
                .unwrap_or(1);
            let router = spore::Router::new().expect("router");
            let mut chain: Vec<spore::Context> = Vec::new();
            for _ in 0..depth {
                let mut connect = router.local().first_stage(first_stage);
                if let Some(parent) = chain.last() {
                    connect = connect.via(parent);
                }
                chain.push(connect.connect_blocking().expect("connect"));
            }
            let pids: Vec<String> = chain
                .iter()
                .map(|c| c.pid().expect("known pid").to_string())
                .collect();
            if let Some(path) = args
                .iter()
                .position(|a| a == "--detach-last")
                .and_then(|i| args.get(i + 1))
            {
                let last = chain.last().expect("a chain");
                last.call_blocking(spore::builtins::detach, ())
                    .expect("detach");
                last.call_no_reply(
                    spore_test_support::funcs::write_pid_after,
                    (path.clone(), 300),
                )
                .expect("call");
            }
            println!("pids {}", pids.join(" "));
            if args.iter().any(|a| a == "--exit") {
                drop(router);
                return;
            }
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
