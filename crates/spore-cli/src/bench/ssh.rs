//! `spore bench --target ssh:HOST`: bootstrap over ssh, on first and on
//! repeat contact, through a new connection and through a ControlMaster
//! connection, beside a bare `ssh HOST true` over each in the same run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use spore::Router;

use super::Report;

/// Where the ssh rows go: the parts of an `ssh:[USER@]HOST[:PORT]` target
/// and the ssh config file, shared by spore's ssh and the bare one.
pub struct Target {
    /// The remote user, if given.
    pub user: Option<String>,
    /// The host (or a `Host` of the ssh config).
    pub host: String,
    /// The port, if given.
    pub port: Option<u16>,
    /// An ssh config file instead of `~/.ssh/config`.
    pub config: Option<PathBuf>,
    /// Ship this dynamically linked executable (the target has this
    /// machine's libraries).
    pub same_libraries: bool,
}

impl Target {
    /// The options both spore's ssh and the bare one get (`-F`, `-p`, `-l`).
    fn common_args(&self) -> Vec<String> {
        let mut a = Vec::new();
        if let Some(f) = &self.config {
            a.extend(["-F".to_owned(), f.display().to_string()]);
        }
        if let Some(p) = self.port {
            a.extend(["-p".to_owned(), p.to_string()]);
        }
        if let Some(u) = &self.user {
            a.extend(["-l".to_owned(), u.clone()]);
        }
        a
    }

    /// spore's ssh method for this target, through `master` when given.
    fn spore(&self, master: Option<&Path>) -> spore::Ssh {
        let mut ssh = spore::Ssh::host(&self.host).same_libraries(self.same_libraries);
        if let Some(f) = &self.config {
            ssh = ssh.config_file(f.display().to_string());
        }
        if let Some(p) = self.port {
            ssh = ssh.port(p);
        }
        if let Some(u) = &self.user {
            ssh = ssh.user(u);
        }
        for a in through(master) {
            ssh = ssh.arg(a);
        }
        ssh
    }

    /// `ssh [options] OPTIONS HOST`, in batch mode, through `master` when
    /// given; the caller adds the remote command.
    fn ssh(&self, master: Option<&Path>, options: &[String]) -> Command {
        let mut c = Command::new("ssh");
        c.args(["-o", "BatchMode=yes"])
            .args(self.common_args())
            .args(through(master))
            .args(options)
            .arg("--")
            .arg(&self.host)
            .stdin(Stdio::null());
        c
    }
}

/// ssh options that use the ControlMaster listening at `master`.
fn through(master: Option<&Path>) -> Vec<String> {
    match master {
        Some(p) => vec![
            "-o".into(),
            "ControlMaster=no".into(),
            "-o".into(),
            format!("ControlPath={}", p.display()),
        ],
        None => Vec::new(),
    }
}

/// A ControlMaster connection this benchmark started (`ssh -M -N`), ended
/// by pid when dropped, with its socket directory.
struct ControlMaster {
    process: Child,
    dir: PathBuf,
}

impl ControlMaster {
    fn start(target: &Target) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("spore-bench-cm-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let socket = dir.join("cm");
        let path = format!("ControlPath={}", socket.display());
        let process = target
            .ssh(
                None,
                &["-M", "-N", "-o", &path, "-o", "ControlPersist=no"].map(String::from),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| anyhow::anyhow!("failed to start ssh: {e}"))?;
        let mut cm = Self { process, dir };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let check = target
                .ssh(None, &["-O", "check", "-o", &path].map(String::from))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()?;
            if check.success() {
                return Ok(cm);
            }
            if let Some(status) = cm.process.try_wait()? {
                let mut said = String::new();
                if let Some(mut e) = cm.process.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut said);
                }
                anyhow::bail!(
                    "ControlMaster ssh to {} exited ({status}): {}",
                    target.host,
                    said.trim()
                );
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "ControlMaster ssh to {} not up after 15 s",
                target.host
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("cm")
    }
}

impl Drop for ControlMaster {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Milliseconds of one bare `ssh HOST true`.
fn bare_ms(target: &Target, master: Option<&Path>) -> anyhow::Result<f64> {
    let t = Instant::now();
    let out = target
        .ssh(master, &[])
        .arg("true")
        .stdout(Stdio::null())
        .output()?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    anyhow::ensure!(
        out.status.success(),
        "bare ssh {} true failed ({}): {}",
        target.host,
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(ms)
}

/// One spore bootstrap: milliseconds until a no-op call has returned, and
/// the bytes written to the context's stream by then.
async fn contact(
    router: &Router,
    target: &Target,
    master: Option<&Path>,
) -> anyhow::Result<(f64, u64)> {
    let t = Instant::now();
    let ctx = router.ssh(target.spore(master)).await?;
    ctx.call(spore::builtins::noop, ()).await?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let bytes = ctx.bytes_written();
    ctx.shutdown().await;
    Ok((ms, bytes))
}

/// Runs the ssh rows `runs` times, interleaved so that noise spreads over
/// all of them alike, and records them in `r`:
///
/// - `ssh_bare_ms`, `ssh_bare_cm_ms`: `ssh HOST true`, new connection and
///   through the ControlMaster;
/// - `ssh_first_ms`, `ssh_first_cm_ms`: spore's bootstrap with the target's
///   cache emptied first (of this image and the first stage only);
/// - `ssh_repeat_ms`, `ssh_repeat_cm_ms`: the same right after, cache kept;
/// - `ssh_first_bytes`, `ssh_repeat_bytes`: bytes written for each;
/// - `ssh_repeat_cm_vs_bare_cm`, `ssh_repeat_cm_vs_bare`: ratios of medians.
pub(super) async fn measure(
    router: &Router,
    target: &Target,
    runs: usize,
    r: &mut Report,
) -> anyhow::Result<()> {
    if runs == 0 {
        return Ok(());
    }
    let cm = ControlMaster::start(target)?;
    let master = cm.socket();
    // Unmeasured: reading and compressing the image happen once per
    // process. The context stays up to empty the cache before each first
    // contact.
    let keeper = router.ssh(target.spore(Some(&master))).await?;
    let forget = || async {
        keeper
            .call(spore::builtins::forget_cached_image, ())
            .await
            .map_err(|e| anyhow::anyhow!("emptying the cache on {}: {e}", target.host))
    };
    let mut v: [Vec<f64>; 6] = Default::default();
    let (mut first_bytes, mut repeat_bytes) = (0, 0);
    for _ in 0..runs {
        v[0].push(bare_ms(target, None)?);
        v[1].push(bare_ms(target, Some(&master))?);
        for (k, m) in [(2, None), (4, Some(master.as_path()))] {
            forget().await?;
            let (ms, bytes) = contact(router, target, m).await?;
            v[k].push(ms);
            first_bytes = bytes;
            let (ms, bytes) = contact(router, target, m).await?;
            v[k + 1].push(ms);
            repeat_bytes = bytes;
        }
    }
    keeper.shutdown().await;
    if repeat_bytes * 10 > first_bytes {
        eprintln!(
            "spore bench: {} keeps no cache for spore (repeat contact sent {repeat_bytes} bytes, \
             first {first_bytes}): is ~/.cache/spore private (0700) and sha256sum there?",
            target.host
        );
    }
    let [bare, bare_cm, first, repeat, first_cm, repeat_cm] = v;
    let bare = r.median("ssh_bare_ms", bare);
    let bare_cm = r.median("ssh_bare_cm_ms", bare_cm);
    r.median("ssh_first_ms", first);
    r.median("ssh_repeat_ms", repeat);
    r.median("ssh_first_cm_ms", first_cm);
    let repeat_cm = r.median("ssh_repeat_cm_ms", repeat_cm);
    r.single("ssh_first_bytes", first_bytes as f64);
    r.single("ssh_repeat_bytes", repeat_bytes as f64);
    if let (Some(bare), Some(bare_cm), Some(repeat_cm)) = (bare, bare_cm, repeat_cm) {
        r.single("ssh_repeat_cm_vs_bare_cm", repeat_cm / bare_cm);
        r.single("ssh_repeat_cm_vs_bare", repeat_cm / bare);
    }
    Ok(())
}
