//! The `spore` binary, run for real.

use std::process::{Command, Output};

fn spore(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spore"))
        .args(args)
        .output()
        .expect("spore runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The CONTEXT column of a successful `spore ping`.
fn pinged(out: &Output) -> Vec<String> {
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    stdout
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn ping_without_target_uses_one_local_context() {
    let out = spore(&["ping"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let rows: Vec<&str> = stdout.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{stdout}");
    let cols: Vec<&str> = rows[0].split_whitespace().collect();
    assert_eq!(cols[0], "local.1");
    assert!(cols[5].parse::<u32>().is_ok(), "pid column: {stdout}");
}

#[test]
fn ping_many_and_through_the_first_stage() {
    let out = spore(&["ping", "local:3", "--first-stage"]);
    assert_eq!(pinged(&out), ["local.1", "local.2", "local.3"]);
}

#[test]
fn run_prefixes_output_and_summarises() {
    let out = spore(&["run", "--", "sh", "-c", "echo out; echo err >&2"]);
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains("local.1 | out\n"),
        "{}",
        text(&out.stdout)
    );
    assert!(text(&out.stdout).contains("local.1: exit status 0"));
    assert!(
        text(&out.stderr).contains("local.1 | err\n"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn run_fails_when_the_command_fails_anywhere() {
    let out = spore(&["run", "local:2", "--", "false"]);
    assert!(!out.status.success());
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("local.1: exit status 1") && stdout.contains("local.2: exit status 1"),
        "{stdout}"
    );
    let out = spore(&["run", "--", "/nonexistent/program"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stdout).contains("failed to start /nonexistent/program"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn unknown_methods_and_empty_hops_are_refused_clearly() {
    let out = spore(&["ping", "bogus:1"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("unknown method \"bogus\""),
        "{}",
        text(&out.stderr)
    );
    let out = spore(&["ping", "local//local"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("empty hop"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn ping_and_run_through_chains() {
    let out = spore(&["ping", "local/local/local", "--first-stage"]);
    // local.1 numbers its child from its block (2..1002), local.1.local.2
    // its own from the next block.
    assert_eq!(pinged(&out), ["local.1.local.2.local.1002"]);
    let out = spore(&["run", "local/local:2", "--", "echo", "deep"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    for name in ["local.1.local.2", "local.1.local.3"] {
        assert!(stdout.contains(&format!("{name} | deep\n")), "{stdout}");
        assert!(
            stdout.contains(&format!("{name}: exit status 0")),
            "{stdout}"
        );
    }
}

#[test]
fn bench_quick_prints_every_key_as_json() {
    let out = spore(&["bench", "--quick", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    for key in [
        "bootstrap_local_ms",
        "bootstrap_firststage_ms",
        "rtt_us",
        "throughput_1mib_mbps",
        "throughput_64mib_mbps",
        "calls_per_s",
        "rtt_depth3_us",
        "throughput_1mib_depth3_mbps",
        "child_rss_kib",
        "parent_death_exit_ms",
        "parent_death_tree_ms",
    ] {
        for k in [key.to_owned(), format!("{key}_min"), format!("{key}_max")] {
            assert!(
                v[&k].as_f64().is_some_and(|x| x > 0.0),
                "{k} missing or not positive in {v}"
            );
        }
    }
    assert!(v["bootstrap_bytes"].as_f64().is_some_and(|x| x > 1000.0));
    assert!(v["start_5_local_s"].as_f64().is_some());
    assert!(v["tree_8_start_s"].as_f64().is_some());
}

/// Whether the test bed (testbed/setup.sh) is there; outside CI a missing
/// one skips the test loudly, in CI it fails it.
fn testbed_ready(test: &str) -> bool {
    const ENV: &str = "/var/lib/spore-testbed/env";
    if std::path::Path::new(ENV).exists() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: the test bed is missing in CI ({ENV})"
    );
    eprintln!("\n*** SKIPPED {test}: no test bed ({ENV}); run testbed/setup.sh as root ***\n");
    false
}

#[test]
fn ping_through_sudo_hops() {
    if !testbed_ready("ping_through_sudo_hops") {
        return;
    }
    let out = spore(&["ping", "sudo:spore-b", "local/sudo:spore-a/sudo:spore-b"]);
    let mut names = pinged(&out);
    names.sort();
    assert_eq!(
        names,
        ["local.2.sudo.spore-a.sudo.spore-b", "sudo.spore-b"],
        "{}",
        text(&out.stdout)
    );
    let out = spore(&["ping", "sudo:spore-no-such-user"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("sudo refused to run as spore-no-such-user")
            && stderr.contains("unknown user"),
        "{stderr}"
    );
}

#[test]
fn passwords_come_from_the_environment_or_a_file_and_a_missing_one_is_named() {
    if !testbed_ready("passwords_come_from_the_environment_or_a_file") {
        return;
    }
    // spore-a may become root through doas only with its password.
    let target = "sudo:spore-a/doas";
    let out = spore(&["ping", target]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("doas needs a password") && stderr.contains("--ask-password"),
        "{stderr}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_spore"))
        .args(["ping", target])
        .env("SPORE_PASSWORD", "spore-a-pw")
        .output()
        .unwrap();
    assert_eq!(
        pinged(&out),
        ["sudo.spore-a.doas.root"],
        "{}",
        text(&out.stderr)
    );
    let file = std::env::temp_dir().join(format!("spore-cli-pw-{}", std::process::id()));
    std::fs::write(&file, "spore-a-pw\n").unwrap();
    let out = spore(&["ping", target, "--password-file", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&file);
    assert_eq!(
        pinged(&out),
        ["sudo.spore-a.doas.root"],
        "{}",
        text(&out.stderr)
    );
}
