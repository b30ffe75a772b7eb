//! Reliability of ssh contexts whose host drops off the network in the
//! middle of calls, against the test bed's namespace host spore-h1
//! (testbed/setup.sh). Twenty rounds, alternating the two ways
//! `testbed/hostctl.sh` cuts a host off: silent drop (iptables) and link
//! down. In each round every waiter on the lost context must get an error
//! naming it within ssh's keepalive window, the master must stay healthy,
//! a new connection must work once the host is back, and nothing may be
//! left running on either side.
//!
//! Neither kind of cut ends the TCP connection by itself: packets just
//! vanish (a downed link gives the host's side soft errors, which TCP
//! retries through). What ends the stream on this side is ssh's own
//! keepalive (`Ssh::keepalive`): ssh exits when its probes go unanswered.
//! The host's side cannot learn of it while cut off: its context runs on
//! until the host is back and the dead connection's retransmissions reach
//! the other end again (this side's orphaned socket delivers its FIN, or
//! answers sshd's data with a reset); the test waits for that, bounded.
//! Each round restores the host about a second after the loss, well within
//! the ~2 minutes this side's kernel keeps retransmitting on an orphaned
//! socket; after a longer outage the host's side would linger until sshd's
//! own retransmissions (or TCP keepalive) end its connection.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use spore::{CallError, Context, RecvError, Router, Ssh};
use spore_test_support::funcs::*;
use spore_test_support::{Fixture, Testbed, uid_of};

/// The host this test cuts off (ssh.rs cuts h2; test binaries run one after
/// another, so the two never meet).
const HOST: &str = "spore-h1";
/// The hostctl.sh of this source tree: the one the env file names is that of
/// the tree setup.sh last ran from, which may predate `down`.
const HOSTCTL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testbed/hostctl.sh");
const ROUNDS: usize = 20;
/// ssh probes a silent server every second (its smallest interval) and gives
/// up after two unanswered probes.
const KEEPALIVE: (u32, u32) = (1, 2);
/// Longer than the whole test: only the loss of their context ends these calls.
const FOREVER_MS: u64 = 600_000;
/// Blocking and async remote calls in flight when the host is cut off.
const CALLS_OF_EACH_KIND: usize = 2;
/// How long the host's side may take to notice the dead connection once the
/// host is back (see the module's doc); generous, as a hang detector.
const REMOTE_EXIT_BOUND: Duration = Duration::from_secs(30);

/// The bound on the time from cut to the last waiter's error: the keepalive
/// window plus a margin for a noisy machine. It detects hangs; it is not a
/// benchmark.
fn error_bound() -> Duration {
    Duration::from_secs(u64::from(KEEPALIVE.0 * KEEPALIVE.1) + 5)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Cutoff {
    SilentDrop,
    LinkDown,
}

impl Cutoff {
    fn action(self) -> &'static str {
        match self {
            Cutoff::SilentDrop => "cut",
            Cutoff::LinkDown => "down",
        }
    }
}

/// Runs `hostctl.sh ACTION spore-h1` off the runtime's threads (the waiters'
/// clocks must not stall behind it) and insists it worked.
async fn hostctl(action: &'static str) {
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(HOSTCTL)
            .args([action, HOST])
            .output()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("{HOSTCTL}: {e}"));
    assert!(
        out.status.success(),
        "hostctl.sh {action} {HOST}: {}; {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Restores the host whatever happens to the test (undoes both kinds of cut).
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = std::process::Command::new(HOSTCTL)
            .args(["restore", HOST])
            .stdout(std::process::Stdio::null())
            .status();
    }
}

/// A process, told apart from a later one that reuses its pid by its start
/// time (clock ticks after boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Proc {
    pid: u32,
    start: u64,
}

/// What /proc/PID/stat says: state, parent, start time.
fn stat(pid: u32) -> Option<(String, u32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces: field 3 first.
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    Some((
        fields.first()?.to_string(),
        fields.get(1)?.parse().ok()?,
        fields.get(19)?.parse().ok()?,
    ))
}

impl Proc {
    fn of(pid: u32) -> Option<Proc> {
        stat(pid).map(|(_, _, start)| Proc { pid, start })
    }

    /// In the process table, zombie or not.
    fn exists(self) -> bool {
        stat(self.pid).is_some_and(|(_, _, start)| start == self.start)
    }

    /// Exists and is not a zombie.
    fn running(self) -> bool {
        stat(self.pid).is_some_and(|(state, _, start)| start == self.start && state != "Z")
    }

    fn describe(self) -> String {
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", self.pid)).unwrap_or_default();
        format!("{} ({})", self.pid, comm.trim_end())
    }
}

/// The processes on the host that serve one ssh context: the context, the
/// login shell that runs it and the sshd session processes, up to (not
/// including) the host's listening sshd `listener`.
fn host_side(context_pid: u32, listener: u32) -> Vec<Proc> {
    let mut chain = Vec::new();
    let mut pid = context_pid;
    while pid != listener {
        let (_, ppid, start) =
            stat(pid).unwrap_or_else(|| panic!("process {pid} under {HOST}'s sshd is gone"));
        chain.push(Proc { pid, start });
        assert!(
            ppid > 1 && chain.len() < 8,
            "context process {context_pid} does not descend from {HOST}'s sshd {listener}"
        );
        pid = ppid;
    }
    chain
}

/// Every process whose parent is this test process and whose name is `ssh`:
/// the ssh clients the router started (it spawns them from this process).
fn local_ssh_clients() -> Vec<u32> {
    let me = std::process::id();
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&pid| stat(pid).is_some_and(|(_, ppid, _)| ppid == me))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim_end() == "ssh")
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// The unix sockets `pid` has open, as its /proc/PID/fd/N read (e.g.
/// `socket:[123]`). ssh moves its stdin and stdout (the stream, a socket
/// pair) off fds 0 and 1, so they are found by kind.
fn unix_sockets_of(pid: u32) -> Vec<String> {
    let unix: Vec<String> = std::fs::read_to_string(format!("/proc/{pid}/net/unix"))
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| Some(format!("socket:[{}]", l.split_whitespace().nth(6)?)))
        .collect();
    let mut found: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some(
                std::fs::read_link(e.ok()?.path())
                    .ok()?
                    .display()
                    .to_string(),
            )
        })
        .filter(|l| unix.contains(l))
        .collect();
    found.sort();
    found.dedup();
    found
}

/// The processes that have `link` (as /proc/PID/fd/N reads, e.g.
/// `socket:[123]`) open, with the fd.
fn holders(link: &str) -> Vec<String> {
    let mut found = Vec::new();
    for pid in std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
    {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.filter_map(|e| e.ok()) {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.display().to_string() == link) {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                found.push(format!(
                    "{pid} ({}) fd {}",
                    comm.trim_end(),
                    fd.file_name().to_string_lossy()
                ));
            }
        }
    }
    found
}

/// spore contexts (named `spore:…`) running as `uid` in the network
/// namespace `netns` (a `net:[…]` link, as in /proc/PID/ns/net).
fn contexts_in_namespace(uid: u32, netns: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| Proc::of(*pid).is_some_and(Proc::running))
        .filter(|pid| std::fs::metadata(format!("/proc/{pid}")).is_ok_and(|m| m.uid() == uid))
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|l| l.display().to_string() == netns)
        })
        .filter_map(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            comm.starts_with("spore:")
                .then(|| format!("{pid} ({})", comm.trim_end()))
        })
        .collect()
}

/// Polls until none of `procs` runs; how long that took, or what still runs
/// after `bound`.
async fn wait_all_gone(procs: &[Proc], bound: Duration) -> Result<Duration, Vec<String>> {
    let start = Instant::now();
    loop {
        let running: Vec<String> = procs
            .iter()
            .filter(|p| p.running())
            .map(|p| p.describe())
            .collect();
        if running.is_empty() {
            return Ok(start.elapsed());
        }
        if start.elapsed() > bound {
            return Err(running);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The test bed's ssh config (hosts spore-h1..h3).
fn via_config(tb: &Testbed, host: &str) -> Ssh {
    Ssh::host(host)
        .config_file(tb.get("SPORE_TB_SSH_CONFIG"))
        .same_libraries(true)
}

fn h1_ssh(tb: &Testbed) -> Ssh {
    via_config(tb, HOST).keepalive(KEEPALIVE.0, KEEPALIVE.1)
}

/// How one waiter ended: its name, when, and the error's text.
type Ended = (String, Instant, String);

/// What one round measured.
struct RoundTimes {
    /// From the cut to the last waiter's error.
    to_error: Duration,
    /// From the restore to the end of every process of the old connection on
    /// the host.
    host_side_exit: Duration,
    /// The loss quotes ssh's own keepalive timeout ("Timeout, server …
    /// not responding."): what ended the stream.
    ssh_timed_out: bool,
}

/// Contexts and facts every round uses.
struct Bed {
    tb: Testbed,
    router: Router,
    /// Started before the first round: they must answer in every round.
    local: Context,
    h2: Context,
    h2_ssh_pid: u32,
    /// The pid of h1's listening sshd.
    h1_listener: u32,
    h1_addr: String,
}

/// One round: calls in flight on h1, h1 cut off by `mode`, every waiter's
/// error, the master's health, the restore, a new connection, the cleanup.
async fn round(bed: &Bed, n: usize, mode: Cutoff) -> RoundTimes {
    let Bed { tb, router, .. } = bed;
    let h1 = router.ssh(h1_ssh(tb)).await.expect("connect to h1");
    let name = h1.name().to_owned();
    let ssh_client = Proc::of(h1.pid().expect("a direct child")).expect("ssh runs");
    let facts = h1.call(spore::builtins::facts, ()).await.unwrap();
    let host_procs = host_side(facts.pid, bed.h1_listener);

    // Waiters of every kind: blocking and async calls, a channel whose
    // answer must come from h1, and the loss itself.
    let mut waiters: Vec<(String, tokio::task::JoinHandle<Ended>)> = Vec::new();
    for i in 0..CALLS_OF_EACH_KIND {
        let waiter = format!("sleep_ms #{i}");
        let call = h1.call_async(sleep_ms, (FOREVER_MS,));
        waiters.push((waiter.clone(), call_waiter(waiter, &name, call)));
        let waiter = format!("async_echo #{i}");
        let call = h1.call_async(async_echo, (format!("echo {i}"), FOREVER_MS));
        waiters.push((waiter.clone(), call_waiter(waiter, &name, call)));
    }
    let service = h1.call(serve_echo, (FOREVER_MS,)).await.unwrap();
    let mut answer = router.receiver_from::<u32>(&h1);
    service.send(&(answer.sender(), 7)).unwrap();
    {
        let name = name.clone();
        let waiter = tokio::spawn(async move {
            let err = answer
                .recv()
                .await
                .expect_err("an answer that never comes, came");
            let at = Instant::now();
            assert!(
                matches!(&err, RecvError::Lost { detail, .. } if detail.contains(&name)),
                "channel: not the loss of {name}: {err:?}"
            );
            ("channel".to_owned(), at, err.to_string())
        });
        waiters.push(("channel".to_owned(), waiter));
    }
    {
        let h1 = h1.clone();
        let waiter = tokio::spawn(async move {
            let detail = h1.lost().await;
            ("lost()".to_owned(), Instant::now(), detail)
        });
        waiters.push(("lost()".to_owned(), waiter));
    }
    // One stream carries every frame in order: once this answer is back, h1
    // has every call above and runs them.
    assert_eq!(h1.call(add, (1, 2)).await.unwrap(), 3);

    // ssh's end of the stream: who holds it, should the stream not end.
    let ssh_stream = unix_sockets_of(ssh_client.pid);
    hostctl(mode.action()).await;
    let cut_at = Instant::now();
    // Wait past the bound, so that a slow end is measured rather than only
    // reported as missing.
    let deadline = tokio::time::Instant::from_std(cut_at + error_bound() + Duration::from_secs(20));
    let mut ended = Vec::new();
    let mut pending = Vec::new();
    for (waiter, w) in waiters {
        match tokio::time::timeout_at(deadline, w).await {
            Ok(Ok(e)) => ended.push(e),
            Ok(Err(panic)) => std::panic::resume_unwind(panic.into_panic()),
            Err(_) => pending.push(waiter),
        }
    }
    if !pending.is_empty() {
        // Whoever restores the host meanwhile (testbed/setup.sh and check.sh
        // do) lets the connection live on: no error is then right.
        let status = std::process::Command::new(HOSTCTL)
            .args(["status", HOST])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        // ssh's own view of its connection, if it still runs.
        let sockets = std::process::Command::new("ss")
            .args(["-tnoip", "dst", &bed.h1_addr])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        panic!(
            "round {n} ({mode:?}): a hang: {:?} after the cut, no error yet for {pending:?}; \
             {HOST} is now {status:?} (\"up\": someone restored it meanwhile); \
             ended: {ended:?}; ssh client {} {}; holders of its stream end {ssh_stream:?}: {:?}; \
             {HOST} side: {:?}; sockets to {HOST}:\n{sockets}",
            cut_at.elapsed(),
            ssh_client.describe(),
            if ssh_client.running() {
                "still runs"
            } else {
                "has ended"
            },
            ssh_stream.iter().map(|l| holders(l)).collect::<Vec<_>>(),
            host_procs
                .iter()
                .map(|p| (p.describe(), p.running()))
                .collect::<Vec<_>>(),
        );
    }
    let to_error = ended
        .iter()
        .map(|(_, at, _)| at.duration_since(cut_at))
        .max()
        .unwrap();
    assert!(
        to_error <= error_bound(),
        "round {n} ({mode:?}): the last waiter's error came {to_error:?} after the cut, \
         over {:?}: {ended:?}",
        error_bound()
    );
    if n < 2 {
        let procs: Vec<String> = host_procs.iter().map(|p| p.describe()).collect();
        println!("  round {n} ({mode:?}) on {HOST}: {}", procs.join(" < "));
        for (waiter, at, err) in &ended {
            println!(
                "  round {n} ({mode:?}) {waiter} after {:?}: {err}",
                at.duration_since(cut_at)
            );
        }
    }
    // The ssh client ended and is reaped: the loss is reported after that.
    assert!(
        !ssh_client.exists(),
        "round {n}: ssh client {} is still there after the loss",
        ssh_client.describe()
    );
    // A call on the lost context fails at once.
    let quick = Instant::now();
    let err = h1.call(add, (1, 1)).await.unwrap_err();
    assert!(err.to_string().contains(&name), "{err}");
    assert!(quick.elapsed() < Duration::from_secs(2), "{err}");

    // The master is healthy while the host is still cut off: contexts it
    // had answer, and a new ssh context to another host works.
    assert_eq!(
        bed.local.call(add, (n as i32, 1)).await.unwrap(),
        n as i32 + 1
    );
    assert_eq!(bed.h2.call(add, (n as i32, 2)).await.unwrap(), n as i32 + 2);
    let other = router
        .ssh(via_config(tb, "spore-h2"))
        .await
        .expect("a new context on h2 while h1 is cut off");
    assert_eq!(other.call(add, (2, 3)).await.unwrap(), 5);
    let other_ssh = Proc::of(other.pid().unwrap()).unwrap();
    other.shutdown().await;
    assert!(!other_ssh.exists(), "h2's second ssh client is left");

    hostctl("restore").await;
    // The host's side of the dead connection, polled from now on while the
    // new connection is tried.
    let host_exit = {
        let procs = host_procs.clone();
        tokio::spawn(async move { wait_all_gone(&procs, REMOTE_EXIT_BOUND).await })
    };

    let again = router
        .ssh(h1_ssh(tb))
        .await
        .unwrap_or_else(|e| panic!("round {n} ({mode:?}): no new connection to h1: {e}"));
    assert_eq!(again.call(add, (40, 2)).await.unwrap(), 42);
    let again_ssh = Proc::of(again.pid().unwrap()).unwrap();
    let again_pid = again.call(spore::builtins::facts, ()).await.unwrap().pid;
    let again_host_procs = host_side(again_pid, bed.h1_listener);
    again.shutdown().await;
    assert!(!again_ssh.exists(), "round {n}: the new ssh client is left");
    if let Err(left) = wait_all_gone(&again_host_procs, Duration::from_secs(10)).await {
        panic!("round {n}: the new connection, shut down, left on {HOST}: {left:?}");
    }

    let host_side_exit = match host_exit.await.unwrap() {
        // Polling started right after the restore.
        Ok(after) => after,
        Err(left) => panic!(
            "round {n} ({mode:?}): {REMOTE_EXIT_BOUND:?} after the restore, the lost \
             connection's processes still run on {HOST}: {left:?}"
        ),
    };
    // The only ssh client left on this side is h2's, started before round 1.
    assert_eq!(local_ssh_clients(), vec![bed.h2_ssh_pid], "round {n}");
    RoundTimes {
        to_error,
        host_side_exit,
        ssh_timed_out: ended
            .iter()
            .any(|(waiter, _, detail)| waiter == "lost()" && detail.contains("not responding")),
    }
}

/// Waits for a call that only the loss of `context` can end, and checks
/// that it ends with an error naming `context`.
fn call_waiter<T>(
    waiter: String,
    context: &str,
    call: spore::PendingCall<T>,
) -> tokio::task::JoinHandle<Ended>
where
    T: serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let context = context.to_owned();
    tokio::spawn(async move {
        let err = call.await.expect_err("a call that never returns, returned");
        let at = Instant::now();
        assert!(
            matches!(&err, CallError::Disconnected { context: c, .. } if *c == context),
            "{waiter}: not a disconnection of {context}: {err:?}"
        );
        assert!(err.to_string().contains(&context), "{err}");
        (waiter, at, err.to_string())
    })
}

fn stats(v: &[Duration]) -> String {
    let mut v = v.to_vec();
    v.sort();
    format!(
        "median {:?}, min {:?}, max {:?} (n={})",
        v[v.len() / 2],
        v[0],
        v[v.len() - 1],
        v.len()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_cut_off_mid_calls_fails_every_waiter_in_time_and_leaves_nothing_running() {
    let Some(tb) = Testbed::require("a_host_cut_off_mid_calls") else {
        return;
    };
    let _restore = Restore;
    hostctl("restore").await;
    let started = Instant::now();
    let fx = Fixture::new(env!("CARGO_BIN_EXE_spore-fixture"));
    let router = fx.router();
    let local = router.local().await.unwrap();
    let h2 = router.ssh(via_config(&tb, "spore-h2")).await.unwrap();
    let h2_ssh_pid = h2.pid().unwrap();
    let listener_file = format!("{}/sshd/h1/sshd.pid", tb.get("SPORE_TB_DIR"));
    let h1_listener = std::fs::read_to_string(&listener_file)
        .unwrap_or_else(|e| panic!("{listener_file}: {e}"))
        .trim()
        .parse()
        .unwrap();
    let h1_netns = std::fs::read_link(format!("/proc/{h1_listener}/ns/net"))
        .unwrap()
        .display()
        .to_string();
    let ssh_uid = uid_of(tb.get("SPORE_TB_SSH_USER"));
    let h1_addr = tb.get("SPORE_TB_H1_ADDR").to_owned();
    let bed = Bed {
        tb,
        router,
        local,
        h2,
        h2_ssh_pid,
        h1_listener,
        h1_addr,
    };

    let mut times: BTreeMap<Cutoff, Vec<RoundTimes>> = BTreeMap::new();
    for n in 0..ROUNDS {
        let mode = if n % 2 == 0 {
            Cutoff::SilentDrop
        } else {
            Cutoff::LinkDown
        };
        let t = round(&bed, n, mode).await;
        println!(
            "round {n:2} {mode:?}: last error {:?} after the cut; host side gone {:?} after the restore",
            t.to_error, t.host_side_exit
        );
        times.entry(mode).or_default().push(t);
    }
    for (mode, t) in &times {
        let to_error: Vec<Duration> = t.iter().map(|t| t.to_error).collect();
        let exit: Vec<Duration> = t.iter().map(|t| t.host_side_exit).collect();
        println!("{mode:?}: time to error {}", stats(&to_error));
        println!("{mode:?}: host side gone after restore {}", stats(&exit));
        println!(
            "{mode:?}: ssh's keepalive timeout quoted in {} of {} losses",
            t.iter().filter(|t| t.ssh_timed_out).count(),
            t.len()
        );
    }

    bed.router.shutdown().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !local_ssh_clients().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(local_ssh_clients(), Vec::<u32>::new(), "ssh clients left");
    // Whatever ran in h1 as the login user: no context may be left there.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !contexts_in_namespace(ssh_uid, &h1_netns).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        contexts_in_namespace(ssh_uid, &h1_netns),
        Vec::<String>::new(),
        "contexts left on {HOST}"
    );
    println!("{ROUNDS} rounds in {:?}", started.elapsed());
}
