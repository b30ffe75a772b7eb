//! Contexts inside a container, another process's namespaces and a chroot
//! of this machine, against the test bed (testbed/setup.sh): its podman
//! container and its chroot root carry this machine's libraries (the root
//! has no /proc), and its namespace hosts run an sshd whose namespaces
//! nsenter can enter.

use spore::{ConnectError, Enter};
use spore_test_support::funcs::*;
use spore_test_support::{Fixture, Testbed};

fn fixture() -> Fixture {
    Fixture::new(env!("CARGO_BIN_EXE_spore-fixture"))
}

#[tokio::test]
async fn contexts_start_in_a_podman_container_and_can_run_as_another_user() {
    let Some(tb) = Testbed::require("contexts_start_in_a_podman_container") else {
        return;
    };
    let container = tb.get("SPORE_TB_CONTAINER");
    let fx = fixture();
    let router = fx.router();
    let ctx = router
        .enter(Enter::podman(container).same_libraries(true))
        .await
        .unwrap();
    assert_eq!(ctx.name(), format!("podman.{container}"));
    let inside = ctx.call(spore::builtins::facts, ()).await.unwrap();
    let here = spore::builtins::facts();
    assert_ne!(inside.hostname, here.hostname, "not inside the container");
    let nobody = router
        .enter(Enter::podman(container).user("65534").same_libraries(true))
        .await
        .unwrap();
    assert_eq!(nobody.call(my_uid, ()).await.unwrap(), 65534);
    let err = router
        .enter(Enter::podman("spore-no-such-container").same_libraries(true))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ConnectError::Eof { last_lines, .. }
            if last_lines.iter().any(|l| l.contains("spore-no-such-container"))),
        "{err}"
    );
    router.shutdown().await;
}

#[tokio::test]
async fn contexts_start_in_another_processs_namespaces_and_a_chroot_without_proc_says_so() {
    let Some(tb) = Testbed::require("contexts_start_in_another_processs_namespaces") else {
        return;
    };
    let fx = fixture();
    let router = fx.router();
    let root = tb.get("SPORE_TB_GLIBC_ROOT");
    // Not without saying the libraries are there: the image is dynamic.
    let err = router.enter(Enter::chroot(root)).await.unwrap_err();
    assert!(err.to_string().contains("dynamically linked"), "{err}");
    // The test bed's chroot has no /proc: without perl or python there,
    // the first stage needs /proc/self/fd, and says so.
    let err = router
        .enter(Enter::chroot(root).same_libraries(true))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ConnectError::FirstStage { context, reason }
            if context == "chroot.glibc-root" && reason.contains("no /proc/self/fd (mount /proc there)")),
        "{err}"
    );
    // The test bed's host h1 is a network namespace with its own sshd.
    let sshd =
        std::fs::read_to_string(format!("{}/sshd/h1/sshd.pid", tb.get("SPORE_TB_DIR"))).unwrap();
    let pid: u32 = sshd.trim().parse().unwrap();
    let in_h1 = router
        .enter(Enter::nsenter(pid).same_libraries(true))
        .await
        .unwrap();
    let theirs = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_ne!(theirs, ours);
    assert_eq!(
        in_h1.call(net_namespace, ()).await.unwrap(),
        theirs.display().to_string()
    );
    router.shutdown().await;
}
