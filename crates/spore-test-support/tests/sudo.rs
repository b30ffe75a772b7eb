//! Contexts started through sudo, against the test bed's users and sudo
//! rules (testbed/setup.sh): spore-a may become spore-b without a password
//! and root only with one.

use std::time::Duration;

use spore::{ConnectError, Doas, Su, Sudo};
use spore_test_support::funcs::*;
use spore_test_support::{Fixture, Testbed, uid_of, wait_gone};

fn fixture() -> Fixture {
    Fixture::new(env!("CARGO_BIN_EXE_spore-fixture"))
}

#[tokio::test]
async fn sudo_starts_contexts_as_other_users_directly_and_in_chains() {
    let Some(tb) = Testbed::require("sudo_starts_contexts_as_other_users") else {
        return;
    };
    let (user_a, user_b) = (tb.get("SPORE_TB_USER_A"), tb.get("SPORE_TB_USER_B"));
    let fx = fixture();
    let router = fx.router();
    let b = router.sudo(Sudo::user(user_b)).await.unwrap();
    assert_eq!(b.name(), format!("sudo.{user_b}"));
    assert_eq!(b.call(my_uid, ()).await.unwrap(), uid_of(user_b));
    assert_eq!(b.call(add, (2, 3)).await.unwrap(), 5);
    // As spore-a, then from there (its own sudo rule, no password) as spore-b.
    let a = router.sudo(Sudo::user(user_a)).await.unwrap();
    let ab = router.sudo(Sudo::user(user_b)).via(&a).await.unwrap();
    assert_eq!(ab.name(), format!("sudo.{user_a}.sudo.{user_b}"));
    assert_eq!(a.call(my_uid, ()).await.unwrap(), uid_of(user_a));
    assert_eq!(ab.call(my_uid, ()).await.unwrap(), uid_of(user_b));
    let facts = ab.call(spore::builtins::facts, ()).await.unwrap();
    router.shutdown().await;
    assert!(
        wait_gone(facts.pid, Duration::from_secs(10)).is_some(),
        "the sudo'd grandchild outlived the router's shutdown"
    );
}

#[tokio::test]
async fn sudo_failures_are_typed_and_quote_sudo() {
    let Some(tb) = Testbed::require("sudo_failures_are_typed_and_quote_sudo") else {
        return;
    };
    let user_a = tb.get("SPORE_TB_USER_A");
    let fx = fixture();
    let router = fx.router();
    let err = router
        .sudo(Sudo::user("spore-no-such-user"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ConnectError::Refused { method, last_lines, .. }
            if method == "sudo" && last_lines.iter().any(|l| l.contains("unknown user"))),
        "{err}"
    );
    // spore-a may become root only with a password: none is given.
    let a = router.sudo(Sudo::user(user_a)).await.unwrap();
    let err = router.sudo(Sudo::root()).via(&a).await.unwrap_err();
    // Typed across the hop, and named where it happened.
    assert!(
        matches!(&err, ConnectError::Via { via, cause }
            if *via == a.name() && matches!(**cause, ConnectError::PasswordRequired { .. })),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&format!("through sudo.{user_a}"))
            && text.contains("sudo needs a password and none was given")
            && text.contains("a password is required"),
        "{text}"
    );
    assert_eq!(
        a.call(add, (1, 1)).await.unwrap(),
        2,
        "the intermediate is unharmed"
    );
    router.shutdown().await;
}

#[tokio::test]
async fn sudo_takes_a_password_at_its_own_prompt_and_tells_a_wrong_one() {
    let Some(tb) = Testbed::require("sudo_takes_a_password") else {
        return;
    };
    let (user_a, password) = (
        tb.get("SPORE_TB_USER_A"),
        tb.get("SPORE_TB_USER_A_PASSWORD"),
    );
    let fx = fixture();
    let router = fx.router();
    let a = router.sudo(Sudo::user(user_a)).await.unwrap();
    // spore-a becomes root with its own password.
    let root = router
        .sudo(Sudo::root().password(password))
        .via(&a)
        .await
        .unwrap();
    assert_eq!(root.call(my_uid, ()).await.unwrap(), 0);
    // The prompt never shows up as output.
    assert!(
        !fx.output
            .lock()
            .unwrap()
            .iter()
            .any(|(_, _, l)| l.contains("[spore: password")),
        "the prompt leaked into the output"
    );
    // A wrong one: sudo asks again, and the connect fails at once, typed.
    let err = router
        .sudo(Sudo::root().password("not-the-password"))
        .via(&a)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ConnectError::Via { cause, .. }
            if matches!(&**cause, ConnectError::PasswordIncorrect { method, .. } if method == "sudo")),
        "{err:?}"
    );
    // Debug output never shows a password.
    let shown = format!("{:?}", Sudo::root().password("hunter2"));
    assert!(!shown.contains("hunter2"), "{shown}");
    router.shutdown().await;
}

#[tokio::test]
async fn su_answers_its_translated_prompt_and_tells_missing_and_wrong_passwords() {
    let Some(tb) = Testbed::require("su_answers_its_prompt") else {
        return;
    };
    let (user_a, user_b) = (tb.get("SPORE_TB_USER_A"), tb.get("SPORE_TB_USER_B"));
    let password_b = tb.get("SPORE_TB_USER_B_PASSWORD");
    let fx = fixture();
    let router = fx.router();
    // root needs no password.
    let b = router.su(Su::user(user_b)).await.unwrap();
    assert_eq!(b.name(), format!("su.{user_b}"));
    assert_eq!(b.call(my_uid, ()).await.unwrap(), uid_of(user_b));
    // spore-a does: with it, without it, and a wrong one.
    let a = router.sudo(Sudo::user(user_a)).await.unwrap();
    let ab = router
        .su(Su::user(user_b).password(password_b))
        .via(&a)
        .await
        .unwrap();
    assert_eq!(ab.call(my_uid, ()).await.unwrap(), uid_of(user_b));
    let cause = |e: ConnectError| match e {
        ConnectError::Via { cause, .. } => *cause,
        other => panic!("not through a: {other}"),
    };
    let err = cause(router.su(Su::user(user_b)).via(&a).await.unwrap_err());
    assert!(
        matches!(&err, ConnectError::PasswordRequired { method, .. } if method == "su"),
        "{err}"
    );
    let err = cause(
        router
            .su(Su::user(user_b).password("wrong"))
            .via(&a)
            .await
            .unwrap_err(),
    );
    assert!(
        matches!(&err, ConnectError::PasswordIncorrect { method, .. } if method == "su"),
        "{err}"
    );
    assert!(
        !fx.output
            .lock()
            .unwrap()
            .iter()
            .any(|(_, _, l)| l.contains("Password:")),
        "su's prompt leaked into the output"
    );
    router.shutdown().await;
}

#[tokio::test]
async fn doas_runs_nopass_rules_at_once_and_asks_for_a_password_on_a_terminal_of_its_own() {
    let Some(tb) = Testbed::require("doas_runs_nopass_rules") else {
        return;
    };
    let (user_a, user_b) = (tb.get("SPORE_TB_USER_A"), tb.get("SPORE_TB_USER_B"));
    let fx = fixture();
    let router = fx.router();
    // The test bed's doas rules are spore-a's: start from a context as spore-a.
    let a = router.sudo(Sudo::user(user_a)).await.unwrap();
    let b = router.doas(Doas::user(user_b)).via(&a).await.unwrap();
    assert_eq!(b.name(), format!("sudo.{user_a}.doas.{user_b}"));
    assert_eq!(b.call(my_uid, ()).await.unwrap(), uid_of(user_b));
    // Root needs spore-a's password: none given fails at once.
    let started = std::time::Instant::now();
    let err = router.doas(Doas::root()).via(&a).await.unwrap_err();
    assert!(
        matches!(&err, ConnectError::Via { cause, .. }
            if matches!(**cause, ConnectError::PasswordRequired { ref method, .. } if method == "doas")),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "no wait for a timeout"
    );
    let err = router
        .doas(Doas::root().password("wrong"))
        .via(&a)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ConnectError::Via { cause, .. }
            if matches!(**cause, ConnectError::PasswordIncorrect { .. })),
        "{err}"
    );
    let root = router
        .doas(Doas::root().password(tb.get("SPORE_TB_USER_A_PASSWORD")))
        .via(&a)
        .await
        .unwrap();
    assert_eq!(root.call(my_uid, ()).await.unwrap(), 0);
    assert_eq!(root.call(add, (4, 5)).await.unwrap(), 9);
    router.shutdown().await;
}
