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

/// The test bed's env file (KEY=value lines), read as the tests that use
/// spore-test-support do.
fn testbed_env() -> std::collections::HashMap<String, String> {
    std::fs::read_to_string("/var/lib/spore-testbed/env")
        .expect("the test bed's env file")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// A directory of the test's own, removed at the end.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(label: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("spore-cli-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `spore ARGS` with the environment variables given set and the inventory
/// ones (SPORE_INVENTORY, XDG_CONFIG_HOME) removed unless given.
fn spore_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_spore"));
    cmd.args(args)
        .env_remove("SPORE_INVENTORY")
        .env_remove("XDG_CONFIG_HOME");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("spore runs")
}

#[test]
fn help_describes_inventory_names_and_where_the_file_is() {
    let out = spore(&["--help"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success());
    for want in [
        "`@NAME` names a host or a group of the inventory",
        "--inventory <PATH>",
        "$SPORE_INVENTORY",
        "${XDG_CONFIG_HOME:-$HOME/.config}/spore/inventory.toml",
        "[hosts.db1]\n  via = \"bastion\"",
        "spore run @all -- uptime",
    ] {
        assert!(stdout.contains(want), "--help lacks {want:?}:\n{stdout}");
    }
}

#[test]
fn inventory_names_that_lead_nowhere_are_refused_before_connecting() {
    let dir = TempDir::new("inventory-errors");
    let home = dir.0.to_str().unwrap();
    // No inventory anywhere: each place looked is named.
    let out = spore_env(&["run", "@db", "--", "true"], &[("HOME", home)]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "@db names an inventory host or group, but there is no inventory: no --inventory, \
             SPORE_INVENTORY is not set, and there is no {home}/.config/spore/inventory.toml"
        )),
        "{stderr}"
    );
    // The default place, once the file is there: a typo says where it is.
    std::fs::create_dir_all(dir.0.join(".config/spore")).unwrap();
    let file = dir.0.join(".config/spore/inventory.toml");
    std::fs::write(&file, "[hosts.a]\ntarget = \"local\"\nvai = \"b\"\n").unwrap();
    let out = spore_env(&["ping", "@a"], &[("HOME", home)]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("inventory {}: ", file.display()))
            && stderr.contains("line 3")
            && stderr.contains("unknown field `vai`"),
        "{stderr}"
    );
    // Without @, the inventory is not read at all.
    let out = spore_env(&["run", "local", "--", "true"], &[("HOME", home)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // SPORE_INVENTORY wins over the default place; a local host works
    // without the test bed, named after itself.
    let env_file = dir.0.join("env.toml");
    std::fs::write(
        &env_file,
        "[hosts.here]\ntarget = \"local\"\n[groups]\nboth = [\"here\", \"@both2\"]\nboth2 = [\"here\"]\n",
    )
    .unwrap();
    let env_path = env_file.to_str().unwrap();
    let out = spore_env(
        &["run", "@both", "--", "echo", "hi"],
        &[("HOME", home), ("SPORE_INVENTORY", env_path)],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert_eq!(stdout, "here | hi\nhere: exit status 0\n");
    let out = spore_env(
        &["run", "-i", env_path, "@nope", "--", "true"],
        &[("HOME", home)],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(&format!(
            "inventory {env_path}: no host or group \"nope\" (hosts: here; groups: both, both2)"
        )),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn inventory_groups_run_on_each_host_through_its_via() {
    if !testbed_ready("inventory_groups_run_on_each_host_through_its_via") {
        return;
    }
    let tb = testbed_env();
    let dir = TempDir::new("inventory");
    let file = dir.0.join("inventory.toml");
    // spore-h1 is left alone: another test cuts it off at times. h3's
    // address is reachable from h2 only (the config's ProxyJump is not
    // used: the host is named by address); spore-a's context on h2 cannot
    // read the test key, so it logs in to h3 with the password.
    std::fs::write(
        &file,
        format!(
            r#"
[defaults]
ssh_config = "{config}"
same_libraries = true
connect_timeout = 20

[hosts.h2]
target = "ssh:spore-h2"

[hosts.h3]
via = "h2"
target = "ssh:{h3}"

[groups]
pair = ["h2", "h3"]
all = ["h3", "@pair"]
"#,
            config = tb["SPORE_TB_SSH_CONFIG"],
            h3 = tb["SPORE_TB_H3_ADDR"],
        ),
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let password = ("SPORE_PASSWORD", tb["SPORE_TB_SSH_PASSWORD"].as_str());
    // The network namespace of a test bed host (that of its sshd).
    let namespace = |h: &str| {
        let pid =
            std::fs::read_to_string(format!("{}/sshd/{h}/sshd.pid", tb["SPORE_TB_DIR"])).unwrap();
        std::fs::read_link(format!("/proc/{}/ns/net", pid.trim()))
            .unwrap()
            .display()
            .to_string()
    };
    let (ns2, ns3) = (namespace("h2"), namespace("h3"));
    assert_ne!(ns2, ns3);

    // h3 is named twice (by itself and through @pair): it runs once. Each
    // line is prefixed by the host's name; the status lines come last, in
    // the group's order.
    let run = [
        "run",
        "-i",
        path,
        "@all",
        "--",
        "readlink",
        "/proc/self/ns/net",
    ];
    let out = spore_env(&run, &[password]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    let mut output = lines[..2].to_vec();
    output.sort();
    assert_eq!(
        output,
        [format!("h2 | {ns2}"), format!("h3 | {ns3}")],
        "{stdout}"
    );
    assert_eq!(
        lines[2..],
        ["h3: exit status 0", "h2: exit status 0"],
        "{stdout}"
    );

    // Hops after @NAME go after each host; SPORE_INVENTORY finds the file.
    let out = spore_env(
        &["run", "@h3/sudo:spore-b", "--", "id", "-un"],
        &[password, ("SPORE_INVENTORY", path)],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("h3.sudo.spore-b | spore-b\n")
            && stdout.contains("h3.sudo.spore-b: exit status 0\n"),
        "{stdout}"
    );

    // An unknown group: refused before anything starts, naming what is there.
    let out = spore_env(&["run", "-i", path, "@nope", "--", "true"], &[password]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "inventory {path}: no host or group \"nope\" (hosts: h2, h3; groups: all, pair)"
        )),
        "{stderr}"
    );
}

/// C6: a password given to spore (here through SPORE_PASSWORD, for an ssh
/// login that takes only passwords, a sudo and a doas hop) appears in no
/// process's command line while it connects, nor in anything spore prints
/// at the most verbose log level, whether it is right or wrong.
#[test]
fn passwords_appear_in_no_log_process_list_or_error() {
    if !testbed_ready("passwords_appear_in_no_log_process_list_or_error") {
        return;
    }
    let env = testbed_env();
    let dir = std::env::temp_dir().join(format!("spore-cli-c6-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("ssh_config");
    std::fs::write(
        &config,
        format!(
            "Host spore-pw\n  HostName {}\n  Port {}\n  User {}\n  UserKnownHostsFile {}\n  \
             GlobalKnownHostsFile /dev/null\n  PubkeyAuthentication no\n  IdentityAgent none\n  \
             KexAlgorithms {}\n",
            env["SPORE_TB_SSH_HOST"],
            env["SPORE_TB_SSH_PORT"],
            env["SPORE_TB_SSH_USER"],
            env["SPORE_TB_SSH_KNOWN_HOSTS"],
            env["SPORE_TB_SSH_KEX"],
        ),
    )
    .unwrap();
    let right = env["SPORE_TB_SSH_PASSWORD"].clone();
    assert_eq!(
        right, env["SPORE_TB_USER_A_PASSWORD"],
        "one password for all hops"
    );
    let run = |password: &str| {
        let child = Command::new(env!("CARGO_BIN_EXE_spore"))
            .args(["-vvv", "--same-libraries", "-F"])
            .arg(&config)
            .args([
                "ping",
                "ssh:spore-pw",
                "sudo:spore-a/sudo",
                "sudo:spore-a/doas",
            ])
            .env("SPORE_PASSWORD", password)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Every process's command line, as `ps` shows them, until it ends.
        let mut seen = Vec::new();
        let done = std::sync::atomic::AtomicBool::new(false);
        let out = std::thread::scope(|s| {
            let watch = s.spawn(|| {
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    for e in std::fs::read_dir("/proc").unwrap().flatten() {
                        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
                            let c = String::from_utf8_lossy(&c).replace('\0', " ");
                            if c.contains(password) {
                                seen.push(c);
                            }
                        }
                    }
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            });
            let out = child.wait_with_output().unwrap();
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            watch.join().unwrap();
            out
        });
        (out, seen)
    };
    let (out, seen) = run(&right);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(pinged(&out).len(), 3, "{stdout}");
    assert!(stderr.contains("DEBUG"), "not verbose: {stderr}");
    assert!(!stdout.contains(&right) && !stderr.contains(&right));
    assert_eq!(seen, Vec::<String>::new(), "in a command line");
    let wrong = "wrong-pw-c6d1f0";
    let (out, seen) = run(wrong);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stderr.contains("refused the password") || stderr.contains("incorrect"),
        "{stderr}"
    );
    assert!(
        !stdout.contains(wrong) && !stderr.contains(wrong),
        "{stderr}"
    );
    assert_eq!(seen, Vec::<String>::new(), "in a command line");
    let _ = std::fs::remove_dir_all(&dir);
}
