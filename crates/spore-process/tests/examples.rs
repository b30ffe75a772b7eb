//! The examples, run as a user runs them: each must succeed and say what
//! happened. `cargo test -p spore-process` builds the examples before the
//! integration tests; this file finds them next to its own binary.

use std::path::PathBuf;
use std::process::{Command, Output};

/// Example `name`'s binary (`target/<profile>/examples/<name>`; this test
/// runs from `target/<profile>/deps`).
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary lives in target/<profile>/deps");
    let path = profile_dir.join("examples").join(name);
    let build = "`cargo test -p spore-process` builds the examples; with only `--test examples` \
                 it does not: build them first (cargo build -p spore-process --examples)";
    let built = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| {
            panic!(
                "example {name} is not built at {}: {e}; {build}",
                path.display()
            )
        });
    let source = format!("{}/examples/{name}.rs", env!("CARGO_MANIFEST_DIR"));
    let edited = std::fs::metadata(&source)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("{source}: {e}"));
    assert!(
        built >= edited,
        "example {name} at {} is older than {source}; {build}",
        path.display()
    );
    path
}

fn run(name: &str, args: &[&str]) -> Output {
    Command::new(example(name))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("example {name} did not run: {e}"))
}

/// Runs example `name`, which must succeed; its stdout lines.
fn lines_of(name: &str, args: &[&str]) -> Vec<String> {
    let out = run(name, args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "example {name} {args:?} failed ({}):\n--- stdout\n{stdout}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().map(str::to_owned).collect()
}

/// The text between `before` and the next `after` in `line`.
fn between<'a>(line: &'a str, before: &str, after: &str) -> &'a str {
    let rest = &line[line
        .find(before)
        .unwrap_or_else(|| panic!("no {before:?} in {line:?}"))
        + before.len()..];
    &rest[..rest
        .find(after)
        .unwrap_or_else(|| panic!("no {after:?} in {line:?}"))]
}

/// The context of a pid as printed, `<C.S>`.
fn context_of(pid: &str) -> &str {
    between(pid, "<", ".")
}

#[test]
fn fleet_restarts_the_worker_of_a_killed_context_in_another_context() {
    let lines = lines_of("fleet", &[]);
    let all = lines.join("\n");
    assert_eq!(
        lines[0], "fleet of 3 contexts: local.1, local.2, local.3",
        "{all}"
    );
    // One worker per context.
    let starts: Vec<&String> = lines.iter().filter(|l| l.starts_with("start w")).collect();
    assert_eq!(starts.len(), 3, "{all}");
    for (i, l) in starts.iter().enumerate() {
        assert!(
            l.starts_with(&format!("start w{n} on local.{n} as <{n}.", n = i + 1)),
            "{all}"
        );
    }
    let kill = lines
        .iter()
        .find(|l| l.starts_with("kill "))
        .unwrap_or_else(|| panic!("no kill:\n{all}"));
    let killed = between(kill, "kill ", " ");
    assert!(kill.ends_with("(the context of w2) with SIGKILL"), "{all}");

    let restart = lines
        .iter()
        .find(|l| l.starts_with("restart w2 on "))
        .unwrap_or_else(|| panic!("no restart of w2:\n{all}"));
    let moved_to = between(restart, "restart w2 on ", " ");
    assert_ne!(moved_to, killed, "{all}");
    assert!(
        restart.ends_with(&format!("on {killed} ended: noconnection)")),
        "{all}"
    );
    // The pid it got is in the context it was placed in.
    let new_pid = between(restart, " as ", " ");
    assert_eq!(format!("local.{}", context_of(new_pid)), moved_to, "{all}");

    // Every worker answers after the restart, w2 from its new context.
    let after: Vec<&String> = lines
        .iter()
        .skip_while(|l| !l.starts_with("restart "))
        .filter(|l| l.ends_with("8 * 8 = 64"))
        .collect();
    assert_eq!(after.len(), 3, "{all}");
    assert!(
        after.contains(&&format!("w2 on {moved_to}: 8 * 8 = 64")),
        "{all}"
    );
    assert_eq!(
        lines.last().map(String::as_str),
        Some("the supervisor stopped its workers, then itself"),
        "{all}"
    );
}

#[test]
fn fleet_takes_targets_and_refuses_bad_ones_naming_them() {
    let lines = lines_of("fleet", &["local:2", "local"]);
    assert_eq!(
        lines[0], "fleet of 3 contexts: local.1, local.2, local.3",
        "{lines:?}"
    );
    for (args, says) in [
        (&["local"][..], "at least two contexts"),
        (&["local:0"][..], "target \"local:0\""),
        (&["bogus:web1"][..], "target \"bogus:web1\""),
        (&["ssh:web1:http"][..], "\"http\" is not a port number"),
    ] {
        let out = run("fleet", args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "fleet {args:?} succeeded");
        assert!(stderr.contains(says), "fleet {args:?}: {stderr}");
    }
}

#[test]
fn kv_store_is_called_from_the_master_and_from_another_context() {
    let lines = lines_of("kv_store", &[]);
    let all = lines.join("\n");
    let store = between(&lines[0], " as ", ",");
    assert!(
        lines[0].starts_with("the store runs on local.")
            && lines[0].ends_with("named \"kv\" there"),
        "{all}"
    );
    let has = |l: &str| lines.iter().any(|x| x == l);
    assert!(has("master: colour is \"green\""), "{all}");
    assert!(
        has("master: colour set to \"blue\" (was \"green\")"),
        "{all}"
    );
    let client = lines
        .iter()
        .find(|l| l.starts_with("client "))
        .unwrap_or_else(|| panic!("the client did not report:\n{all}"));
    assert!(
        client.ends_with("put \"from\" (was nothing); the store now has 2 keys"),
        "{all}"
    );
    assert_ne!(
        context_of(between(client, "client ", " ")),
        context_of(store),
        "the client runs in another context than the store:\n{all}"
    );
    assert!(has("master: after deleting it, colour is nothing"), "{all}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"nobody\" in context") && l.ends_with("(noproc)")),
        "{all}"
    );
    assert_eq!(
        lines.last().cloned(),
        Some(format!("the store {store} stops (normal), keys left: 1")),
        "{all}"
    );
}
