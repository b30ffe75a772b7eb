//! Contexts over ssh, with the system's OpenSSH client, against the test
//! bed's private sshd on 127.0.0.1 (testbed/setup.sh).

use spore::{ConnectError, HostKeyPolicy, Ssh, SshFailure, Sudo};
use spore_test_support::funcs::*;
use spore_test_support::{
    Fixture, Testbed, children_of, parent_of, pid_exists, proc_names, processes_named, uid_of,
    wait_gone,
};

fn fixture() -> Fixture {
    Fixture::new(env!("CARGO_BIN_EXE_spore-fixture"))
}

/// The test bed's sshd on loopback, as its login user, no key named. The
/// fixture image is dynamically linked; the target is this machine.
fn loopback(tb: &Testbed) -> Ssh {
    Ssh::host(tb.get("SPORE_TB_SSH_HOST"))
        .port(tb.get("SPORE_TB_SSH_PORT").parse().unwrap())
        .user(tb.get("SPORE_TB_SSH_USER"))
        .known_hosts(tb.get("SPORE_TB_SSH_KNOWN_HOSTS"))
        .arg("-o")
        .arg(format!("KexAlgorithms={}", tb.get("SPORE_TB_SSH_KEX")))
        .same_libraries(true)
}

/// [`loopback`] with the test bed's plain key.
fn to_loopback(tb: &Testbed) -> Ssh {
    loopback(tb).identity_file(tb.get("SPORE_TB_SSH_KEY"))
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
    let err = router.ssh(password_only(&tb)).await.unwrap_err();
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

/// A cache directory of the test's own on the target (the test bed's sshd
/// takes XDG_CACHE_HOME from the client), removed at the end.
struct PrivateCache(std::path::PathBuf);

impl PrivateCache {
    fn new(label: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("spore-cache-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Self(dir)
    }

    /// ssh options that point the target's cache here.
    fn on(&self, ssh: Ssh) -> Ssh {
        ssh.arg("-o")
            .arg(format!("SetEnv=XDG_CACHE_HOME={}", self.0.display()))
    }

    fn spore_dir(&self) -> std::path::PathBuf {
        self.0.join("spore")
    }

    /// The entries the target keeps, by name, with their sizes.
    fn entries(&self) -> Vec<(String, u64)> {
        let mut v: Vec<_> = std::fs::read_dir(self.spore_dir())
            .map(|rd| {
                rd.map(|e| {
                    let e = e.unwrap();
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        e.metadata().unwrap().len(),
                    )
                })
                .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

impl Drop for PrivateCache {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sha256_of(path: &std::path::Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_owned()
}

/// Replaces a cache entry's bytes, keeping its owner and mode.
fn tamper(path: &std::path::Path) {
    use std::io::{Seek, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(std::io::SeekFrom::Start(200)).unwrap();
    f.write_all(b"tampered").unwrap();
}

#[tokio::test]
async fn repeat_contact_sends_hashes_not_the_image_and_a_bad_cache_is_replaced() {
    let Some(tb) = Testbed::require("repeat_contact_sends_hashes") else {
        return;
    };
    let fx = fixture();
    let router = fx.router();
    let cache = PrivateCache::new("repeat");
    let image = std::path::Path::new(env!("CARGO_BIN_EXE_spore-fixture"));
    let image_hash = sha256_of(image);
    let stage_hash = {
        let stage = cache.0.with_extension("stage");
        std::fs::write(&stage, spore::FIRST_STAGE).unwrap();
        let hash = sha256_of(&stage);
        let _ = std::fs::remove_file(&stage);
        hash
    };
    let connect = |ssh: Ssh| {
        let router = &router;
        async move {
            let ctx = router.ssh(ssh).await.unwrap();
            assert_eq!(ctx.call(add, (1, 2)).await.unwrap(), 3);
            let sent = ctx.bytes_written();
            ctx.shutdown().await;
            sent
        }
    };
    let image_size = std::fs::metadata(image).unwrap().len();

    // First contact: the first stage and the (compressed) image go over,
    // and the target keeps both, named by hash, in a private directory.
    let first = connect(cache.on(to_loopback(&tb))).await;
    assert!(first > 100_000, "first contact sent {first} bytes");
    let entries = cache.entries();
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        names.contains(&image_hash.as_str()) && names.contains(&stage_hash.as_str()),
        "{entries:?}"
    );
    assert_eq!(entries.len(), 2, "{entries:?}");
    let meta = std::fs::metadata(cache.spore_dir()).unwrap();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    assert_eq!(meta.uid(), uid_of(tb.get("SPORE_TB_SSH_USER")));
    let image_entry = cache.spore_dir().join(&image_hash);
    assert_eq!(std::fs::metadata(&image_entry).unwrap().len(), image_size);

    // Repeat contact: the command line, the hashes and the configuration.
    let again = connect(cache.on(to_loopback(&tb))).await;
    eprintln!("bytes sent: first contact {first}, repeat contact {again}");
    assert!(again <= 2048, "repeat contact sent {again} bytes");

    // A tampered image is found out, discarded and sent again.
    tamper(&image_entry);
    let after_tamper = connect(cache.on(to_loopback(&tb))).await;
    assert!(after_tamper > 100_000, "{after_tamper}");
    assert_eq!(sha256_of(&image_entry), image_hash, "replaced");
    // So is a tampered first stage: it alone is sent again.
    let stage_entry = cache.spore_dir().join(&stage_hash);
    tamper(&stage_entry);
    let after_stage = connect(cache.on(to_loopback(&tb))).await;
    assert!(
        after_stage > spore::FIRST_STAGE.len() as u64 && after_stage < 20_000,
        "{after_stage}"
    );
    assert_eq!(sha256_of(&stage_entry), stage_hash, "replaced");
    assert_eq!(connect(cache.on(to_loopback(&tb))).await, again);

    // Turned off by the caller: everything is sent, nothing is kept.
    let before = cache.entries();
    let ctx = router
        .ssh(cache.on(to_loopback(&tb)))
        .cache(false)
        .await
        .unwrap();
    let off = ctx.bytes_written();
    ctx.shutdown().await;
    assert!(off > 100_000, "{off}");
    assert_eq!(cache.entries(), before);
    // Forgotten on request: both entries go; the next contact sends both
    // and the target keeps them again.
    let ctx = router.ssh(cache.on(to_loopback(&tb))).await.unwrap();
    let forget = ctx.call(spore::builtins::forget_cached_image, ());
    assert_eq!(forget.await.unwrap(), 2);
    ctx.shutdown().await;
    assert_eq!(cache.entries(), []);
    let refilled = connect(cache.on(to_loopback(&tb))).await;
    assert!(refilled > 100_000, "{refilled}");
    assert_eq!(cache.entries(), before);
    // A directory others may read is no cache: nothing is read or kept.
    std::fs::set_permissions(cache.spore_dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let open_dir = connect(cache.on(to_loopback(&tb))).await;
    assert!(open_dir > 100_000, "{open_dir}");
    assert_eq!(cache.entries(), before);
    router.shutdown().await;
}

/// The test bed's chatty login (bash with a ~/.bashrc that prints or asks,
/// as `SPORE_TB_LOGIN` says).
fn chatty(tb: &Testbed, behaviour: &str) -> Ssh {
    to_loopback(tb)
        .user(tb.get("SPORE_TB_USER_C"))
        .arg("-o")
        .arg(format!("SetEnv=SPORE_TB_LOGIN={behaviour}"))
}

#[tokio::test]
async fn a_login_banner_is_skipped_and_a_login_prompt_times_out_quoting_it() {
    let Some(tb) = Testbed::require("a_login_banner_is_skipped") else {
        return;
    };
    let fx = fixture();
    let router = fx.router();
    // The banner: lines on stdout, one on stderr, and an unfinished line
    // that the first stage's own marker completes.
    let ctx = router.ssh(chatty(&tb, "banner")).await.unwrap();
    assert_eq!(
        ctx.call(my_uid, ()).await.unwrap(),
        uid_of(tb.get("SPORE_TB_USER_C"))
    );
    let stderr = fx.wait_lines(
        ctx.name(),
        spore::OutputStream::Stderr,
        std::time::Duration::from_secs(5),
        |l| l.iter().any(|l| l.contains("a banner line on stderr")),
    );
    assert!(
        stderr.iter().any(|l| l.contains("a banner line on stderr")),
        "{stderr:?}"
    );
    // The prompt waits for an answer that never comes: after the connect
    // timeout, the error quotes it.
    let started = std::time::Instant::now();
    let err = router
        .ssh(chatty(&tb, "prompt"))
        .connect_timeout(std::time::Duration::from_secs(3))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ConnectError::Timeout { last_lines, .. }
            if last_lines.iter().any(|l| l.contains("Verification code:"))),
        "{err}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(6),
        "no hang"
    );
    router.shutdown().await;
}

/// Starts `connect` and, until it returns, records every process whose
/// command line holds `marker`, with its parent; returns its result and
/// those processes.
async fn watching<T>(
    marker: &str,
    connect: impl std::future::Future<Output = T>,
) -> (T, Vec<(u32, u32)>) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (seen, done, marker) = (seen.clone(), done.clone(), marker.to_owned());
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let mut s = seen.lock().unwrap();
                for pid in processes_named(&marker) {
                    if !s.iter().any(|&(p, _)| p == pid) {
                        s.push((pid, parent_of(pid)));
                    }
                }
                drop(s);
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        })
    };
    let out = connect.await;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    watcher.join().unwrap();
    let pids = seen.lock().unwrap().clone();
    (out, pids)
}

/// A17 and A18 over ssh, directly and through an intermediate: a login
/// that ends at once gives an EOF error quoting what it said; a missing
/// ssh gives "failed to start"; a login that never answers times out
/// after connect_timeout, and the ssh client is killed and reaped, by the
/// master or by the intermediate that ran it. Through the chain, each
/// error is wrapped with the context where it happened.
#[tokio::test]
async fn a_target_that_exits_or_never_answers_fails_clearly_directly_and_through_a_chain() {
    let Some(tb) = Testbed::require("a_target_that_exits_or_never_answers") else {
        return;
    };
    let fx = fixture();
    let router = fx.router();
    let mid = router.local().name("mid").await.unwrap();
    let quotes_login = |e: &ConnectError| {
        matches!(e, ConnectError::Eof { last_lines, .. }
            if last_lines.iter().any(|l| l.contains("closed for maintenance")))
    };
    let err = router.ssh(chatty(&tb, "closed")).await.unwrap_err();
    assert!(quotes_login(&err), "{err}");
    assert!(err.to_string().contains("EOF on stream"), "{err}");
    let err = router
        .ssh(chatty(&tb, "closed"))
        .via(&mid)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ConnectError::Via { via, cause } if via == "mid" && quotes_login(cause)),
        "{err}"
    );

    let no_ssh = || to_loopback(&tb).program("/nonexistent/spore-test-ssh");
    let err = router.ssh(no_ssh()).await.unwrap_err();
    assert!(
        matches!(&err, ConnectError::Spawn { program, .. } if program == "/nonexistent/spore-test-ssh"),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("failed to start /nonexistent/spore-test-ssh for ssh."),
        "{err}"
    );
    let err = router.ssh(no_ssh()).via(&mid).await.unwrap_err();
    assert!(
        matches!(&err, ConnectError::Via { via, cause }
            if via == "mid" && matches!(**cause, ConnectError::Spawn { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("failed to start"), "{err}");

    // Never answers: the login asks for a code no one gives.
    for through_mid in [false, true] {
        let marker = format!("never-answers-{through_mid}-{}", std::process::id());
        let mut connect = router
            .ssh(chatty(&tb, "prompt"))
            .name(marker.clone())
            .connect_timeout(std::time::Duration::from_secs(2));
        if through_mid {
            connect = connect.via(&mid);
        }
        let started = std::time::Instant::now();
        let (result, pids) = watching(&marker, std::future::IntoFuture::into_future(connect)).await;
        let err = result.unwrap_err();
        let waited = started.elapsed();
        let cause = match &err {
            ConnectError::Via { via, cause } if through_mid && via == "mid" => &**cause,
            e if !through_mid => e,
            e => panic!("not wrapped with the intermediate: {e}"),
        };
        assert!(
            matches!(cause, ConnectError::Timeout { last_lines, .. }
                if last_lines.iter().any(|l| l.contains("Verification code:"))),
            "{err}"
        );
        assert!(
            waited >= std::time::Duration::from_secs(2)
                && waited < std::time::Duration::from_secs(5),
            "{waited:?}"
        );
        // The ssh client ran (it carries the context's name) and is gone:
        // killed and reaped, not a zombie. On the target, what the login
        // went on to start ends as soon as it finds its stream closed.
        let runner = if through_mid {
            mid.pid().unwrap()
        } else {
            std::process::id()
        };
        assert!(
            pids.iter().any(|&(_, parent)| parent == runner),
            "no ssh client seen for {marker}: {pids:?}"
        );
        for (pid, parent) in pids {
            if parent == runner {
                assert!(
                    !pid_exists(pid),
                    "ssh client {pid} ({:?}) still there after the timeout",
                    proc_names(pid)
                );
            } else {
                assert!(
                    wait_gone(pid, std::time::Duration::from_secs(5)).is_some(),
                    "{pid} ({:?}) on the target still running",
                    proc_names(pid)
                );
            }
        }
    }
    // The intermediate is left with no children of its own.
    assert_eq!(children_of(mid.pid().unwrap()), Vec::<u32>::new());
    assert_eq!(mid.call(add, (1, 2)).await.unwrap(), 3);
    router.shutdown().await;
}

/// The test bed's sshd on loopback with no usable key: password only.
fn password_only(tb: &Testbed) -> Ssh {
    loopback(tb)
        .arg("-o")
        .arg("IdentitiesOnly=yes")
        .arg("-o")
        .arg("IdentityFile=/dev/null")
        .arg("-o")
        .arg("IdentityAgent=none")
}

#[tokio::test]
async fn passwords_and_key_passphrases_go_to_ssh_through_a_terminal_of_its_own() {
    let Some(tb) = Testbed::require("passwords_and_key_passphrases") else {
        return;
    };
    let fx = fixture();
    let router = fx.router();
    let user = tb.get("SPORE_TB_SSH_USER");
    let ctx = router
        .ssh(password_only(&tb).password(tb.get("SPORE_TB_SSH_PASSWORD")))
        .await
        .unwrap();
    assert_eq!(ctx.call(my_uid, ()).await.unwrap(), uid_of(user));
    // The context runs with no terminal: ssh's was spore's own.
    assert!(!ctx.call(has_controlling_terminal, ()).await.unwrap());
    let err = router
        .ssh(password_only(&tb).password("wrong"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ConnectError::PasswordIncorrect { method, .. } if method == "ssh"),
        "{err}"
    );
    // An encrypted key, with its passphrase.
    let keyed = |ssh: Ssh| {
        ssh.identity_file(tb.get("SPORE_TB_SSH_KEY_ENCRYPTED"))
            .arg("-o")
            .arg("IdentitiesOnly=yes")
            .arg("-o")
            .arg("IdentityAgent=none")
    };
    let ctx = router
        .ssh(keyed(loopback(&tb)).passphrase(tb.get("SPORE_TB_SSH_KEY_PASSPHRASE")))
        .await
        .unwrap();
    assert_eq!(ctx.call(add, (2, 3)).await.unwrap(), 5);
    // A wrong passphrase leaves the password, which was not given.
    let err = router
        .ssh(keyed(loopback(&tb)).passphrase("wrong"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            ConnectError::PasswordRequired { .. } | ConnectError::PasswordIncorrect { .. }
        ),
        "{err}"
    );
    router.shutdown().await;
}

#[tokio::test]
async fn controlmaster_connections_are_shared_as_for_plain_ssh() {
    let Some(tb) = Testbed::require("controlmaster_connections_are_shared") else {
        return;
    };
    let socket = std::env::temp_dir().join(format!("spore-cm-{}", std::process::id()));
    let control = |ssh: Ssh| {
        ssh.arg("-o")
            .arg("ControlMaster=auto")
            .arg("-o")
            .arg(format!("ControlPath={}", socket.display()))
            .arg("-o")
            .arg("ControlPersist=60")
    };
    /// Stops the master ssh left running by ControlPersist, whatever happens.
    struct StopMaster<'a>(&'a std::path::Path, Vec<String>);
    impl Drop for StopMaster<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ssh")
                .args(&self.1)
                .arg("-o")
                .arg(format!("ControlPath={}", self.0.display()))
                .args(["-O", "exit", "spore-cm"])
                .output();
        }
    }
    let _stop = StopMaster(&socket, Vec::new());
    let fx = fixture();
    let router = fx.router();
    let first = router.ssh(control(to_loopback(&tb))).await.unwrap();
    assert_eq!(first.call(add, (1, 1)).await.unwrap(), 2);
    // The master is up, and a second context rides on it.
    let check = std::process::Command::new("ssh")
        .arg("-o")
        .arg(format!("ControlPath={}", socket.display()))
        .args(["-O", "check", "spore-cm"])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let second = router.ssh(control(to_loopback(&tb))).await.unwrap();
    assert_eq!(second.call(add, (2, 2)).await.unwrap(), 4);
    router.shutdown().await;
}

/// An ssh-agent this test started (on a socket of its own), holding the
/// test bed's plain key; killed by pid on drop.
struct Agent {
    process: std::process::Child,
    dir: std::path::PathBuf,
}

impl Agent {
    fn start(key: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("spore-agent-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("agent");
        let process = std::process::Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let agent = Self { process, dir };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !socket.exists() {
            assert!(std::time::Instant::now() < deadline, "ssh-agent not up");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let added = std::process::Command::new("ssh-add")
            .arg(key)
            .env("SSH_AUTH_SOCK", &socket)
            .output()
            .unwrap();
        assert!(
            added.status.success(),
            "{}",
            String::from_utf8_lossy(&added.stderr)
        );
        agent
    }

    fn socket(&self) -> std::path::PathBuf {
        self.dir.join("agent")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// C8: keys from an agent work as for plain ssh: with no key file named,
/// the login succeeds through the agent (named the way ssh's own config
/// names one, IdentityAgent), and fails without it.
#[tokio::test]
async fn an_agents_keys_log_in_as_for_plain_ssh() {
    let Some(tb) = Testbed::require("an_agents_keys_log_in") else {
        return;
    };
    let agent = Agent::start(tb.get("SPORE_TB_SSH_KEY"));
    let fx = fixture();
    let router = fx.router();
    let no_keys = || {
        loopback(&tb)
            .arg("-o")
            .arg("PasswordAuthentication=no")
            .arg("-o")
            .arg("KbdInteractiveAuthentication=no")
    };
    let with_agent = no_keys()
        .arg("-o")
        .arg(format!("IdentityAgent={}", agent.socket().display()));
    let ctx = router.ssh(with_agent).await.unwrap();
    assert_eq!(
        ctx.call(my_uid, ()).await.unwrap(),
        uid_of(tb.get("SPORE_TB_SSH_USER"))
    );
    let err = router
        .ssh(no_keys().arg("-o").arg("IdentityAgent=none"))
        .await
        .unwrap_err();
    // The server offers passwords too: no key, so a password was needed.
    assert!(
        matches!(
            &err,
            ConnectError::PasswordRequired { .. }
                | ConnectError::Ssh {
                    failure: SshFailure::AuthFailed,
                    ..
                }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("Permission denied"), "{err}");
    router.shutdown().await;
}
