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
