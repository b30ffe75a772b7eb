//! Contexts over ssh, with the system's OpenSSH client, against the test
//! bed's private sshd on 127.0.0.1 (testbed/setup.sh).

use spore::{ConnectError, HostKeyPolicy, Ssh, SshFailure, Sudo};
use spore_test_support::funcs::*;
use spore_test_support::{Fixture, Testbed, uid_of};

fn fixture() -> Fixture {
    Fixture::new(env!("CARGO_BIN_EXE_spore-fixture"))
}

/// The test bed's sshd on loopback, as its login user, with its key. The
/// fixture image is dynamically linked; the target is this machine.
fn to_loopback(tb: &Testbed) -> Ssh {
    Ssh::host(tb.get("SPORE_TB_SSH_HOST"))
        .port(tb.get("SPORE_TB_SSH_PORT").parse().unwrap())
        .user(tb.get("SPORE_TB_SSH_USER"))
        .identity_file(tb.get("SPORE_TB_SSH_KEY"))
        .known_hosts(tb.get("SPORE_TB_SSH_KNOWN_HOSTS"))
        .arg("-o")
        .arg(format!("KexAlgorithms={}", tb.get("SPORE_TB_SSH_KEX")))
        .same_libraries(true)
}

#[tokio::test]
async fn ssh_starts_a_context_with_nothing_installed_and_chains_on_from_it() {
    let Some(tb) = Testbed::require("ssh_starts_a_context") else {
        return;
    };
    let fx = fixture();
    let router = fx.router();
    let port = tb.get("SPORE_TB_SSH_PORT");
    let ctx = router.ssh(to_loopback(&tb)).await.unwrap();
    assert_eq!(ctx.name(), format!("ssh.127.0.0.1:{port}"));
    let user = tb.get("SPORE_TB_SSH_USER");
    assert_eq!(ctx.call(my_uid, ()).await.unwrap(), uid_of(user));
    assert_eq!(ctx.call(add, (20, 22)).await.unwrap(), 42);
    // From there, sudo (the login user may become spore-b without a password).
    let user_b = tb.get("SPORE_TB_USER_B");
    let deeper = router.sudo(Sudo::user(user_b)).via(&ctx).await.unwrap();
    assert_eq!(deeper.call(my_uid, ()).await.unwrap(), uid_of(user_b));
    router.shutdown().await;
}

#[tokio::test]
async fn ssh_failures_are_typed_and_quote_ssh() {
    let Some(tb) = Testbed::require("ssh_failures_are_typed") else {
        return;
    };
    let fx = fixture();
    let router = fx.router();
    let ssh_err = |e: &ConnectError| match e {
        ConnectError::Ssh { failure, .. } => Some(*failure),
        _ => None,
    };
    // A dynamically linked image is not shipped to another machine.
    let err = router
        .ssh(to_loopback(&tb).same_libraries(false))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("dynamically linked"), "{err}");
    // Nothing listens on port 1.
    let err = router.ssh(to_loopback(&tb).port(1)).await.unwrap_err();
    assert_eq!(ssh_err(&err), Some(SshFailure::ConnectionRefused), "{err}");
    // An empty known-hosts file: the host key is unknown.
    let empty = std::env::temp_dir().join(format!("spore-kh-{}", std::process::id()));
    std::fs::write(&empty, "").unwrap();
    let err = router
        .ssh(to_loopback(&tb).known_hosts(empty.to_str().unwrap()))
        .await
        .unwrap_err();
    assert_eq!(ssh_err(&err), Some(SshFailure::HostKeyUnknown), "{err}");
    // ... which the accept policy records, and then it works.
    let ctx = router
        .ssh(
            to_loopback(&tb)
                .known_hosts(empty.to_str().unwrap())
                .host_key(HostKeyPolicy::Accept),
        )
        .await
        .unwrap();
    assert_eq!(ctx.call(add, (1, 1)).await.unwrap(), 2);
    assert!(!std::fs::read_to_string(&empty).unwrap().is_empty());
    let _ = std::fs::remove_file(&empty);
    // No key: the server would take a password, and none was given.
    let err = router
        .ssh(
            Ssh::host(tb.get("SPORE_TB_SSH_HOST"))
                .port(tb.get("SPORE_TB_SSH_PORT").parse().unwrap())
                .user(tb.get("SPORE_TB_SSH_USER"))
                .known_hosts(tb.get("SPORE_TB_SSH_KNOWN_HOSTS"))
                .arg("-o")
                .arg("IdentitiesOnly=yes")
                .arg("-o")
                .arg("IdentityFile=/dev/null")
                .same_libraries(true),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ConnectError::PasswordRequired { method, last_lines, .. }
            if method == "ssh" && last_lines.iter().any(|l| l.contains("Permission denied"))),
        "{err}"
    );
    router.shutdown().await;
}

/// Tests that use the namespace hosts take this: one of them cuts h2 off.
static HOSTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The test bed's ssh config (hosts spore-h1..h3, h3 behind h2 by ProxyJump).
fn via_config(tb: &Testbed, host: &str) -> Ssh {
    Ssh::host(host)
        .config_file(tb.get("SPORE_TB_SSH_CONFIG"))
        .same_libraries(true)
}

/// The network namespace of the test bed's host `h` (that of its sshd).
fn host_namespace(tb: &Testbed, h: &str) -> String {
    let pid =
        std::fs::read_to_string(format!("{}/sshd/{h}/sshd.pid", tb.get("SPORE_TB_DIR"))).unwrap();
    std::fs::read_link(format!("/proc/{}/ns/net", pid.trim()))
        .unwrap()
        .display()
        .to_string()
}

#[tokio::test]
async fn ssh_reaches_namespace_hosts_and_jumps_through_one_to_the_next() {
    let Some(tb) = Testbed::require("ssh_reaches_namespace_hosts") else {
        return;
    };
    let _hosts = HOSTS.lock().await;
    let fx = fixture();
    let router = fx.router();
    let h1 = router.ssh(via_config(&tb, "spore-h1")).await.unwrap();
    assert_eq!(
        h1.call(net_namespace, ()).await.unwrap(),
        host_namespace(&tb, "h1")
    );
    // h3 is reachable only through h2: ProxyJump from the ssh config.
    let h3 = router.ssh(via_config(&tb, "spore-h3")).await.unwrap();
    assert_eq!(h3.name(), "ssh.spore-h3:22");
    assert_eq!(
        h3.call(net_namespace, ()).await.unwrap(),
        host_namespace(&tb, "h3")
    );
    assert_eq!(h3.call(add, (1, 2)).await.unwrap(), 3);
    router.shutdown().await;
}

/// Restores a host the test cut off, whatever happens to the test.
struct Restore<'a>(&'a Testbed, &'static str);

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        let _ = std::process::Command::new(self.0.get("SPORE_TB_HOSTCTL"))
            .args(["restore", self.1])
            .status();
    }
}

#[tokio::test]
async fn a_host_that_is_cut_off_gives_a_typed_timeout_and_works_again_once_restored() {
    let Some(tb) = Testbed::require("a_host_that_is_cut_off") else {
        return;
    };
    let _hosts = HOSTS.lock().await;
    let hostctl = tb.get("SPORE_TB_HOSTCTL");
    let cut = std::process::Command::new(hostctl)
        .args(["cut", "spore-h2"])
        .status()
        .unwrap();
    assert!(cut.success());
    let restore = Restore(&tb, "spore-h2");
    let fx = fixture();
    let router = fx.router();
    let started = std::time::Instant::now();
    let err = router
        .ssh(via_config(&tb, tb.get("SPORE_TB_H2_ADDR")))
        .connect_timeout(std::time::Duration::from_secs(3))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            ConnectError::Ssh {
                failure: SshFailure::Timeout,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(6),
        "no hang"
    );
    drop(restore);
    let h2 = router
        .ssh(via_config(&tb, tb.get("SPORE_TB_H2_ADDR")))
        .await
        .unwrap();
    assert_eq!(h2.call(add, (2, 2)).await.unwrap(), 4);
    router.shutdown().await;
}
