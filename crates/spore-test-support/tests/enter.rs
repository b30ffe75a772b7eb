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

/// A process (`sleep`) in a mount namespace of its own, after `setup` (a
/// shell script with `args` as `$0`, `$1`…) changed its mounts; killed on
/// drop, with the directory it was given to remove.
struct MountNamespace {
    process: std::process::Child,
    dir: Option<std::path::PathBuf>,
}

impl MountNamespace {
    fn start(setup: &str, args: &[&std::ffi::OsStr], dir: Option<std::path::PathBuf>) -> Self {
        let mut process = std::process::Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(format!("{setup} && echo ready && exec sleep 600"))
            .args(args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(process.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let ns = Self { process, dir };
        assert_eq!(line, "ready\n", "mount namespace setup failed: {setup}");
        ns
    }

    /// Where `uname` says the machine is an aarch64: a target of another
    /// platform, for nsenter.
    fn foreign_platform() -> Self {
        let dir = std::env::temp_dir().join(format!("spore-foreign-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fake = dir.join("uname");
        std::fs::write(
            &fake,
            "#!/bin/sh\ncase $1 in -m) echo aarch64;; -sm) echo Linux aarch64;; *) echo Linux;; esac\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let uname = std::fs::canonicalize("/bin/uname").unwrap();
        Self::start(
            r#"mount --bind "$0" "$1""#,
            &[fake.as_os_str(), uname.as_os_str()],
            Some(dir),
        )
    }

    fn pid(&self) -> u32 {
        self.process.id()
    }
}

impl Drop for MountNamespace {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// C1 on the test bed's minimal root, which holds a static busybox and
/// nothing else (no libc, no perl, no python): a static image starts
/// there, through the pure-shell first stage, which needs /proc. The root
/// gets one in a mount namespace of the test's own, which a context
/// enters first (nsenter) to chroot from. The image passes through the
/// root's /tmp and is removed from it before it runs.
#[tokio::test]
async fn a_static_image_starts_in_a_root_with_only_busybox() {
    let test = "a_static_image_starts_in_a_root_with_only_busybox";
    let Some(tb) = Testbed::require(test) else {
        return;
    };
    let Some(image) = spore_test_support::static_fixture(test) else {
        return;
    };
    let root = tb.get("SPORE_TB_BUSYBOX_ROOT");
    let with_proc = MountNamespace::start(
        r#"mount -t proc proc "$0/proc""#,
        &[std::ffi::OsStr::new(root)],
        None,
    );
    let fx = Fixture::new(&image);
    let router = fx.router();
    // No same_libraries anywhere: the image is static.
    let mid = router.enter(Enter::nsenter(with_proc.pid())).await.unwrap();
    let ctx = router.enter(Enter::chroot(root)).via(&mid).await.unwrap();
    assert_eq!(ctx.call(add, (2, 3)).await.unwrap(), 5);
    let inside = ctx
        .call(
            spore::builtins::run,
            (vec![
                "/bin/sh".to_owned(),
                "-c".to_owned(),
                "[ ! -e /usr ] && [ ! -e /lib ] && [ -x /bin/busybox ]".to_owned(),
            ],),
        )
        .await
        .unwrap();
    assert!(inside.success(), "not inside the busybox root: {inside}");
    let left: Vec<_> = std::fs::read_dir(format!("{root}/tmp"))
        .unwrap()
        .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.starts_with(".spore"))
        .collect();
    assert_eq!(
        left,
        Vec::<String>::new(),
        "the image was left in the root's /tmp"
    );
    router.shutdown().await;
}

#[tokio::test]
async fn a_target_of_another_platform_gets_its_registered_image_or_nothing() {
    let Some(_tb) = Testbed::require("a_target_of_another_platform") else {
        return;
    };
    let foreign = MountNamespace::foreign_platform();
    let fx = fixture();
    // Nothing registered for linux-aarch64: refused before any image byte,
    // saying how to supply one.
    let router = fx.router();
    let err = router
        .enter(Enter::nsenter(foreign.pid()).same_libraries(true))
        .await
        .unwrap_err();
    match &err {
        ConnectError::PlatformMismatch {
            target,
            image,
            detail,
            ..
        } => {
            assert_eq!(target, "linux-aarch64");
            assert_eq!(image, &spore::this_platform());
            assert!(
                detail.contains(r#"image_for("aarch64-unknown-linux-musl", PATH)"#),
                "{err}"
            );
        }
        _ => panic!("{err}"),
    }
    assert!(err.to_string().contains("nothing was sent"), "{err}");
    router.shutdown().await;
    // Registered by target triple: that image is sent instead. (Another
    // program of this build stands in for an aarch64 build; the fake
    // uname is all that is foreign here.)
    let other = env!("CARGO_BIN_EXE_spore-fixture-tokio");
    let router = fx
        .builder()
        .image_for("aarch64-unknown-linux-gnu", other)
        .build()
        .unwrap();
    let ctx = router
        .enter(Enter::nsenter(foreign.pid()).same_libraries(true))
        .await
        .unwrap();
    assert_eq!(
        ctx.call(exe_len, ()).await.unwrap(),
        std::fs::metadata(other).unwrap().len()
    );
    router.shutdown().await;
}
