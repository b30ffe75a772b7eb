//! Runs the first stage's own test suite (src/bootstrap/first_stage_test.sh):
//! every decoder, interpreter and shell path against a static test program,
//! truncated and garbage input, and — as root — noexec mounts and
//! vm.memfd_noexec in private namespaces.

use std::process::Command;

#[test]
fn the_first_stage_passes_its_suite_under_every_shell_and_path() {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/bootstrap/first_stage_test.sh"
    );
    let out = Command::new("bash")
        .arg(script)
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Skipped groups are announced loudly by the script; show them.
    for line in stdout.lines().filter(|l| l.contains("skipping")) {
        eprintln!("first_stage_test.sh: {line}");
    }
    assert!(
        out.status.success(),
        "first_stage_test.sh failed:\n{stdout}\n{stderr}"
    );
    let summary = stdout.lines().last().unwrap_or_default();
    assert!(summary.ends_with(" 0 failed"), "{summary}");
    if std::env::var_os("CI").is_some() {
        assert!(
            !stdout.contains("skipping"),
            "nothing may skip in CI:\n{stdout}"
        );
    }
}
