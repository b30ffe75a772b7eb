//! Test fixtures for spore: remote functions for tests, a router factory
//! that uses the `spore-fixture` image, and process helpers.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use spore::{OutputStream, Router};

pub mod funcs;

/// Builds routers whose children run the fixture image, and records what
/// their children print.
#[derive(Clone)]
pub struct Fixture {
    image: String,
    /// Every output line received: (context, stream, line).
    pub output: Arc<Mutex<Vec<(String, OutputStream, String)>>>,
}

impl Fixture {
    /// `image` is `env!("CARGO_BIN_EXE_spore-fixture")` of the calling test.
    pub fn new(image: &str) -> Self {
        Self {
            image: image.to_owned(),
            output: Arc::default(),
        }
    }

    /// A router builder with the fixture image and output capture.
    pub fn builder(&self) -> spore::RouterBuilder {
        let out = self.output.clone();
        Router::builder()
            .image(&self.image)
            .connect_timeout(Duration::from_secs(20))
            .on_output(move |l| {
                out.lock()
                    .unwrap()
                    .push((l.context.to_owned(), l.stream, l.line.to_owned()))
            })
    }

    /// A router with defaults.
    pub fn router(&self) -> Router {
        self.builder().build().expect("router")
    }

    /// Lines captured so far from `context` on `stream`.
    pub fn lines(&self, context: &str, stream: OutputStream) -> Vec<String> {
        self.output
            .lock()
            .unwrap()
            .iter()
            .filter(|(c, s, _)| c == context && *s == stream)
            .map(|(_, _, l)| l.clone())
            .collect()
    }

    /// Waits up to `timeout` for `pred` over the captured lines of `context`.
    pub fn wait_lines(
        &self,
        context: &str,
        stream: OutputStream,
        timeout: Duration,
        pred: impl Fn(&[String]) -> bool,
    ) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let lines = self.lines(context, stream);
            if pred(&lines) || Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Kills a context's process with SIGKILL (a direct child of this
/// process's router).
pub fn kill_context(ctx: &spore::Context) {
    let pid = ctx.pid().expect("a direct child");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).expect("a process ID"),
        rustix::process::Signal::KILL,
    )
    .unwrap_or_else(|e| panic!("SIGKILL to context {} ({pid}): {e}", ctx.name()));
}

/// Whether `pid` exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X"))
        }
        Err(_) => false,
    }
}

/// Whether `pid` exists at all, zombie or not.
pub fn pid_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Waits until `pid` is gone (or a zombie); returns how long it took, or
/// `None` if it was still alive after `timeout`.
pub fn wait_gone(pid: u32, timeout: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if !pid_alive(pid) {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    None
}

/// Sends SIGSTOP to `pid` now and SIGCONT when dropped, so that a failing
/// test leaves no stopped process behind.
pub struct Stopped(u32);

impl Stopped {
    /// Stops `pid` (a process the test started).
    pub fn new(pid: u32) -> Self {
        signal(pid, rustix::process::Signal::STOP);
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        if pid_exists(self.0) {
            signal(self.0, rustix::process::Signal::CONT);
        }
    }
}

/// Sends `sig` to `pid`, ignoring a process that is already gone.
pub fn signal(pid: u32, sig: rustix::process::Signal) {
    let _ = rustix::process::kill_process(rustix::process::Pid::from_raw(pid as i32).unwrap(), sig);
}

/// The processes whose command line contains `needle` (zombies have none).
pub fn processes_named(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

/// The parent of `pid` (0 once it is gone).
pub fn parent_of(pid: u32) -> u32 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let (_, rest) = stat.rsplit_once(')')?;
            rest.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// The children of `pid`, zombies included (from every thread's
/// `/proc/<pid>/task/<tid>/children`).
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut v: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// The name a process gave itself (`/proc/<pid>/comm`) and its command line.
pub fn proc_names(pid: u32) -> (String, String) {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    (comm.trim_end().to_owned(), cmdline.trim_end().to_owned())
}

/// Starts the fixture image as a master (`spore-fixture master`) that builds
/// a chain of `depth` contexts (each started by the one before), and returns
/// the master process and the pids of the chain, outermost first. Kill the
/// master to see what happens to its tree.
pub fn start_master(
    image: &str,
    first_stage: bool,
    depth: usize,
) -> (std::process::Child, Vec<u32>) {
    start_master_with(
        image,
        depth,
        if first_stage { &["--first-stage"] } else { &[] },
    )
}

/// [`start_master`] with more arguments for `spore-fixture master`.
pub fn start_master_with(
    image: &str,
    depth: usize,
    args: &[&str],
) -> (std::process::Child, Vec<u32>) {
    use std::io::BufRead;
    let mut cmd = std::process::Command::new(image);
    cmd.arg("master")
        .arg("--depth")
        .arg(depth.to_string())
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit());
    let mut master = cmd.spawn().expect("the fixture runs");
    let mut line = String::new();
    std::io::BufReader::new(master.stdout.take().expect("piped"))
        .read_line(&mut line)
        .expect("the fixture master reports");
    let pids: Vec<u32> = line
        .strip_prefix("pids")
        .unwrap_or_else(|| panic!("bad report {line:?}"))
        .split_whitespace()
        .map(|p| p.parse().unwrap_or_else(|_| panic!("bad report {line:?}")))
        .collect();
    assert_eq!(pids.len(), depth, "bad report {line:?}");
    (master, pids)
}

/// The facts of the test bed that `testbed/setup.sh` sets up (users, sudo
/// rules, sshd, namespace hosts, containers), read from its env file.
pub struct Testbed {
    vars: std::collections::HashMap<String, String>,
}

/// Where `testbed/setup.sh` writes its env file.
pub const TESTBED_ENV: &str = "/var/lib/spore-testbed/env";

impl Testbed {
    /// The test bed, if it is set up. Without it, outside CI, the test is
    /// skipped with a loud message on stderr; in CI (`CI` set) a missing
    /// test bed fails the test: nothing may skip there.
    pub fn require(test: &str) -> Option<Testbed> {
        match std::fs::read_to_string(TESTBED_ENV) {
            Ok(text) => Some(Testbed {
                vars: text
                    .lines()
                    .filter(|l| !l.starts_with('#'))
                    .filter_map(|l| l.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
            }),
            Err(e) if std::env::var_os("CI").is_some() => {
                panic!(
                    "{test}: the test bed is missing in CI ({TESTBED_ENV}: {e}); .ci/run sets it up"
                )
            }
            Err(e) => {
                eprintln!(
                    "\n*** SKIPPED {test}: no test bed ({TESTBED_ENV}: {e}). \
                     Run `sudo testbed/setup.sh` (as root) to run it. ***\n"
                );
                None
            }
        }
    }

    /// A value of the env file, e.g. `SPORE_TB_USER_A`.
    pub fn get(&self, key: &str) -> &str {
        self.vars
            .get(key)
            .unwrap_or_else(|| panic!("the test bed's env file has no {key}"))
    }
}

/// The statically linked build of the fixture that `scripts/test` makes
/// (`SPORE_STATIC_FIXTURE`), for targets without this machine's libraries.
/// Without it, outside CI, the test is skipped with a loud message; in CI
/// it fails.
pub fn static_fixture(test: &str) -> Option<String> {
    match std::env::var("SPORE_STATIC_FIXTURE") {
        Ok(path) if std::path::Path::new(&path).is_file() => Some(path),
        other => {
            let why = match other {
                Ok(path) => format!("SPORE_STATIC_FIXTURE={path} is no file"),
                Err(_) => "SPORE_STATIC_FIXTURE is not set".to_owned(),
            };
            if std::env::var_os("CI").is_some() {
                panic!("{test}: {why} in CI; scripts/test builds it");
            }
            eprintln!(
                "\n*** SKIPPED {test}: {why}. Run the tests with scripts/test, which \
                 builds the static fixture. ***\n"
            );
            None
        }
    }
}

/// The uid of `user`, from /etc/passwd.
pub fn uid_of(user: &str) -> u32 {
    std::fs::read_to_string("/etc/passwd")
        .unwrap()
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&user)).then(|| f[2].parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no user {user}"))
}
