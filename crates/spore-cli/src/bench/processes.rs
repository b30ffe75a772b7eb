//! `spore bench processes`: the process layer's numbers (spawn, memory per
//! process, message passing, gen_server calls, crash to DOWN, crash to
//! restart under a supervisor), each on a fresh node.
//!
//! A "crash" is a process ending itself abnormally the way its code
//! usually does, `exit_self(reason).await` (which does not unwind).
//! `crash_panic_to_down_us` measures a `panic!` instead: unwinding and
//! catching it, without the panic hook's report (the bench's hook skips
//! its own panics; the default hook would write each to stderr, with a
//! backtrace when `RUST_BACKTRACE` is set, which costs far more).

use std::cell::Cell;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use spore_process::call::ReplyTo;
use spore_process::gen_server::{self, CallResult, GenServer, StartOptions};
use spore_process::supervisor::{self, ChildSpec, SupSpec};
use spore_process::{
    Down, Node, Pid, Reason, Status, exit_self, process_info, receive, receive_match, self_pid,
    send, spawn, spawn_monitor,
};

use super::Report;

/// Sizes of one run; `--quick` shrinks them to a smoke test.
struct Sizes {
    spawn_n: usize,
    spawn_runs: usize,
    million: usize,
    pingpong_n: usize,
    throughput_n: usize,
    call_n: usize,
    runs: usize,
    crashes: usize,
    remote_n: usize,
}

const FULL: Sizes = Sizes {
    spawn_n: 100_000,
    spawn_runs: 5,
    million: 1_000_000,
    pingpong_n: 200_000,
    throughput_n: 2_000_000,
    call_n: 100_000,
    runs: 7,
    crashes: 2000,
    remote_n: 20_000,
};

const QUICK: Sizes = Sizes {
    spawn_n: 10_000,
    spawn_runs: 1,
    million: 100_000,
    pingpong_n: 10_000,
    throughput_n: 100_000,
    call_n: 10_000,
    runs: 1,
    crashes: 100,
    remote_n: 1000,
};

pub async fn run(opts: &super::Options) -> anyhow::Result<ExitCode> {
    let s = if opts.quick { QUICK } else { FULL };
    let want =
        |key: &str| opts.only.is_empty() || opts.only.iter().any(|p| key.starts_with(p.as_str()));
    let mut r = Report::new();

    // Memory first, while the allocator holds nothing freed by earlier runs.
    if want("spawn_us") || want("bytes_per_process") {
        let mut spawn_us = Vec::new();
        let mut bytes = Vec::new();
        for _ in 0..s.spawn_runs {
            let (secs, grew) = spawn_idle(s.spawn_n).await?;
            spawn_us.push(secs * 1e6 / s.spawn_n as f64);
            bytes.push(grew as f64 / s.spawn_n as f64);
        }
        r.median("spawn_us", spawn_us);
        // The first run is the one that had to grow the heap.
        r.single("bytes_per_process", bytes[0]);
    }
    if want("spawn_1m_s") || want("rss_1m_mib") {
        let (secs, _) = spawn_idle(s.million).await?;
        r.single("spawn_1m_s", secs * (1_000_000.0 / s.million as f64));
        r.single("rss_1m_mib", peak_rss_kib()? as f64 / 1024.0);
    }
    if want("pingpong_local_us") {
        let mut v = Vec::new();
        for _ in 0..s.runs {
            v.push(pingpong_us(s.pingpong_n).await?);
        }
        r.median("pingpong_local_us", v);
    }
    if want("throughput_local_msgs_per_s") {
        let mut v = Vec::new();
        for _ in 0..s.runs {
            v.push(throughput(s.throughput_n).await?);
        }
        r.median("throughput_local_msgs_per_s", v);
    }
    for (key, pairs) in [("pingpong_remote_us", 1), ("pingpong_remote_3pairs_us", 3)] {
        if want(key) {
            let mut v = Vec::new();
            for _ in 0..s.runs {
                v.push(pingpong_remote_us(s.remote_n, pairs).await?);
            }
            r.median(key, v);
        }
    }
    if want("call_local_us") {
        let mut v = Vec::new();
        for _ in 0..s.runs {
            v.push(call_us(s.call_n).await?);
        }
        r.median("call_local_us", v);
    }
    if want("crash_to_down_us") {
        r.median("crash_to_down_us", crash_to_down_us(s.crashes).await?);
    }
    if want("crash_panic_to_down_us") {
        r.median(
            "crash_panic_to_down_us",
            crash_panic_to_down_us(s.crashes).await?,
        );
    }
    if want("crash_to_restart_us") {
        r.median("crash_to_restart_us", crash_to_restart_us(s.crashes).await?);
    }
    r.print(opts.json);
    Ok(ExitCode::SUCCESS)
}

/// Spawns `n` processes that wait in a receive, on a fresh node; returns
/// the seconds until the last one waits and the RSS growth in bytes.
async fn spawn_idle(n: usize) -> anyhow::Result<(f64, u64)> {
    let node = Node::new();
    let out = node
        .run(async move {
            let before = rss_bytes();
            let t = Instant::now();
            let mut last = self_pid();
            for _ in 0..n {
                last = spawn(async {
                    let () = receive().await;
                });
            }
            // Processes run in spawn order: when the last one waits, all do.
            while process_info(last).map(|i| i.status) != Some(Status::Waiting) {
                tokio::task::yield_now().await;
            }
            let secs = t.elapsed().as_secs_f64();
            (secs, rss_bytes().saturating_sub(before))
        })
        .await
        .map_err(|reason| anyhow::anyhow!("the spawning process ended: {reason}"))?;
    node.stop();
    Ok(out)
}

/// µs per round trip of a message between two processes.
async fn pingpong_us(n: usize) -> anyhow::Result<f64> {
    on_fresh_node(async move {
        let me = self_pid();
        let echo = spawn(async move {
            loop {
                let (from, i): (Pid, u64) = receive().await;
                send(from, i);
            }
        });
        for i in 0..1000u64 {
            send(echo, (me, i));
            let _: u64 = receive().await;
        }
        let t = Instant::now();
        for i in 0..n as u64 {
            send(echo, (me, i));
            let got: u64 = receive().await;
            debug_assert_eq!(got, i);
        }
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    })
    .await
}

/// Messages per second from one process to another, until the receiver
/// has taken the last one.
async fn throughput(n: usize) -> anyhow::Result<f64> {
    on_fresh_node(async move {
        let me = self_pid();
        let rx = spawn(async move {
            for _ in 0..n {
                let _: u64 = receive().await;
            }
            send(me, ());
        });
        let t = Instant::now();
        for i in 0..n as u64 {
            send(rx, i);
        }
        let () = receive().await;
        n as f64 / t.elapsed().as_secs_f64()
    })
    .await
}

/// Answers `(from, n)` with `n`, forever (in the other context of the
/// remote ping-pong).
#[spore_process::process]
async fn bench_echo() {
    loop {
        let (from, i): (Pid, u64) = receive().await;
        send(from, i);
    }
}

/// µs per round trip between a process here and one in a local child
/// context, with `pairs` such pairs (each child context its own) going at
/// once: the time until every pair has made `n` round trips, over `n`. A
/// fresh router and contexts per run. Three pairs keep this machine's
/// CPUs busy (eight threads take turns), which is where a node that waits
/// for work before it sleeps must not take CPU time from the others.
async fn pingpong_remote_us(n: usize, pairs: usize) -> anyhow::Result<f64> {
    let router = spore::Router::new()?;
    let mut contexts = Vec::with_capacity(pairs);
    for _ in 0..pairs {
        contexts.push(router.local().await?);
    }
    let node = Node::of(&router);
    let out = node
        .run(async move {
            let me = self_pid();
            let mut players = Vec::with_capacity(pairs);
            for ctx in &contexts {
                let echo = spore_process::spawn_in(ctx, bench_echo, ())
                    .await
                    .map_err(|e| e.to_string())?;
                players.push(spawn(async move {
                    round_trips(echo, n / 10).await;
                    send(me, ());
                    let () = receive().await;
                    round_trips(echo, n).await;
                    send(me, ());
                }));
            }
            // Every pair warmed up: start them together.
            for _ in 0..pairs {
                let () = receive().await;
            }
            let t = Instant::now();
            for p in &players {
                send(*p, ());
            }
            for _ in 0..pairs {
                let () = receive().await;
            }
            Ok::<f64, String>(t.elapsed().as_secs_f64() * 1e6 / n as f64)
        })
        .await
        .map_err(|reason| anyhow::anyhow!("the measuring process ended: {reason}"))?
        .map_err(|e| anyhow::anyhow!("{e}"));
    router.shutdown().await;
    out
}

/// `n` round trips with `echo`.
async fn round_trips(echo: Pid, n: usize) {
    let me = self_pid();
    for i in 0..n as u64 {
        send(echo, (me, i));
        let got: u64 = receive().await;
        debug_assert_eq!(got, i);
    }
}

/// A gen_server answering each number with itself.
struct Echo;

impl GenServer for Echo {
    type Args = ();
    type Call = u64;
    type Reply = u64;
    type Cast = ();

    async fn init((): ()) -> Result<Self, Reason> {
        Ok(Echo)
    }

    async fn handle_call(&mut self, n: u64, _from: ReplyTo) -> CallResult<u64> {
        CallResult::Reply(n)
    }
}

/// µs per gen_server call (request, reply, and the caller's monitor and
/// alias set up and removed) between two processes of one node. By
/// registered name, as otp_bench.py must call otpylib's gen_server.
async fn call_us(n: usize) -> anyhow::Result<f64> {
    on_fresh_node(async move {
        gen_server::start::<Echo>((), StartOptions::new().name("bench_echo"))
            .await
            .map_err(|e| anyhow::anyhow!("starting the server: {e}"))?;
        let call = |i| gen_server::call::<Echo>("bench_echo", i);
        for i in 0..1000u64 {
            call(i).await?;
        }
        let t = Instant::now();
        for i in 0..n as u64 {
            let got = call(i).await?;
            debug_assert_eq!(got, i);
        }
        Ok(t.elapsed().as_secs_f64() * 1e6 / n as f64)
    })
    .await?
}

thread_local! {
    /// When the crashing process crashed (all processes share a thread).
    static CRASHED_AT: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// µs from a monitored process ending abnormally (`exit_self`) to its DOWN
/// being received, `n` times.
async fn crash_to_down_us(n: usize) -> anyhow::Result<Vec<f64>> {
    on_fresh_node(async move {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let (victim, mref) = spawn_monitor(async {
                let () = receive().await;
                CRASHED_AT.set(Some(Instant::now()));
                exit_self(Reason::error("crash")).await;
            });
            v.push(until_down(victim, mref).await);
        }
        v
    })
    .await
}

/// The message of the bench's own panics, which its panic hook skips.
const BENCH_PANIC: &str = "spore bench: a deliberate crash";

/// µs from a monitored process panicking to its DOWN being received, `n`
/// times, without the panic hook's report.
async fn crash_panic_to_down_us(n: usize) -> anyhow::Result<Vec<f64>> {
    skip_bench_panics_in_hook();
    on_fresh_node(async move {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let (victim, mref) = spawn_monitor(async {
                let () = receive().await;
                CRASHED_AT.set(Some(Instant::now()));
                panic!("{BENCH_PANIC}");
            });
            v.push(until_down(victim, mref).await);
        }
        v
    })
    .await
}

/// Tells `victim` to crash and waits for the DOWN of `mref`: µs since it
/// crashed.
async fn until_down(victim: Pid, mref: spore_process::Ref) -> f64 {
    send(victim, ());
    let _: Down = receive_match(|m| m.take_if::<Down>(|d| d.mref == mref)).await;
    let at = CRASHED_AT.take().expect("the process crashed");
    at.elapsed().as_secs_f64() * 1e6
}

/// Installs a panic hook that skips [`BENCH_PANIC`] and hands every other
/// panic to the hook that was there before.
fn skip_bench_panics_in_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied());
            if message != Some(BENCH_PANIC) {
                previous(info);
            }
        }));
    });
}

thread_local! {
    /// When the supervised child last started running.
    static STARTED_AT: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// µs from a permanent child of a one_for_one supervisor ending abnormally
/// to its restarted incarnation running its first line, `n` times (after a
/// few unmeasured ones). The intensity is high enough never to be reached.
async fn crash_to_restart_us(n: usize) -> anyhow::Result<Vec<f64>> {
    const WARMUP: usize = 10;
    on_fresh_node(async move {
        let me = self_pid();
        let victim = ChildSpec::process("victim", move |_| async move {
            STARTED_AT.set(Some(Instant::now()));
            send(me, self_pid());
            let () = receive().await;
            CRASHED_AT.set(Some(Instant::now()));
            exit_self(Reason::error("crash")).await;
        });
        let spec = SupSpec::one_for_one(vec![victim]).intensity(1_000_000, Duration::from_secs(5));
        let sup = supervisor::start_link(spec).await?;
        let mut child: Pid = receive().await;
        let mut v = Vec::with_capacity(n);
        for i in 0..WARMUP + n {
            send(child, ());
            child = receive().await;
            let crashed = CRASHED_AT.take().expect("the child crashed");
            let started = STARTED_AT.take().expect("the child was restarted");
            if i >= WARMUP {
                v.push(started.duration_since(crashed).as_secs_f64() * 1e6);
            }
        }
        supervisor::stop(sup, Reason::Normal).await?;
        anyhow::Ok(v)
    })
    .await?
}

/// Runs `fut` in a process of a fresh node, then stops the node.
async fn on_fresh_node<T: Send + 'static>(
    fut: impl std::future::Future<Output = T> + Send + 'static,
) -> anyhow::Result<T> {
    let node = Node::new();
    let out = node
        .run(fut)
        .await
        .map_err(|reason| anyhow::anyhow!("the measuring process ended: {reason}"));
    node.stop();
    out
}

/// This process's resident memory in bytes (0 if /proc says nothing).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * rustix::param::page_size() as u64)
}

/// The peak resident memory of this process (VmHWM), in KiB.
fn peak_rss_kib() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmHWM in /proc/self/status"))
}
