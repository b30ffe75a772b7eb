//! `spore bench`: the numbers, as programs measure them (never as timed
//! assertions in tests). Medians with min and max.

pub mod processes;
pub mod ssh;

use std::collections::HashMap;
use std::io::BufRead;
use std::process::{ExitCode, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Map, Value, json};
use spore::{Context, Router};

/// Returns `n` bytes, cached per size so only the transfer is measured.
#[spore::remote]
fn bench_bytes(n: u64) -> Bytes {
    static CACHE: OnceLock<Mutex<HashMap<u64, Bytes>>> = OnceLock::new();
    CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap()
        .entry(n)
        .or_insert_with(|| Bytes::from(vec![0x5a; n as usize]))
        .clone()
}

/// Run counts; `--quick` shrinks them to a smoke test.
struct Sizes {
    bootstraps: usize,
    rtt_calls: usize,
    tp1_runs: usize,
    tp64_runs: usize,
    tp64_bytes: u64,
    outstanding: usize,
    cps_runs: usize,
    start_n: usize,
    start_runs: usize,
    /// Children per context at each level of the tree measurement.
    tree_fanout: &'static [usize],
    rss_children: usize,
    death_runs: usize,
    ssh_runs: usize,
}

const FULL: Sizes = Sizes {
    bootstraps: 20,
    rtt_calls: 5000,
    tp1_runs: 30,
    tp64_runs: 7,
    tp64_bytes: 64 << 20,
    outstanding: 10_000,
    cps_runs: 5,
    start_n: 100,
    start_runs: 3,
    tree_fanout: &[10, 10, 10],
    rss_children: 5,
    death_runs: 11,
    ssh_runs: 11,
};

const QUICK: Sizes = Sizes {
    bootstraps: 3,
    rtt_calls: 200,
    tp1_runs: 3,
    tp64_runs: 1,
    tp64_bytes: 8 << 20,
    outstanding: 1000,
    cps_runs: 1,
    start_n: 5,
    start_runs: 1,
    tree_fanout: &[2, 2, 2],
    rss_children: 1,
    death_runs: 2,
    ssh_runs: 1,
};

struct Report {
    out: Map<String, Value>,
    table: Vec<(String, f64, f64, f64)>,
}

impl Report {
    /// Records the median, min and max of `v`; nothing when `v` is empty
    /// (the measurement was not selected).
    /// Returns the median recorded, for ratios between measurements.
    fn median(&mut self, key: &str, mut v: Vec<f64>) -> Option<f64> {
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let (med, min, max) = (v[v.len() / 2], v[0], v[v.len() - 1]);
        self.out.insert(key.to_owned(), json!(round(med)));
        self.out.insert(format!("{key}_min"), json!(round(min)));
        self.out.insert(format!("{key}_max"), json!(round(max)));
        self.table.push((key.to_owned(), med, min, max));
        Some(med)
    }

    fn single(&mut self, key: &str, v: f64) {
        self.out.insert(key.to_owned(), json!(round(v)));
        self.table.push((key.to_owned(), v, v, v));
    }

    /// A report naming the tool and its version.
    fn new() -> Self {
        let mut out = Map::new();
        out.insert("tool".into(), json!("spore"));
        out.insert("version".into(), json!(env!("CARGO_PKG_VERSION")));
        Report {
            out,
            table: Vec::new(),
        }
    }

    /// Prints one JSON object, or a table of median, min and max.
    fn print(self, as_json: bool) {
        if as_json {
            println!("{}", Value::Object(self.out));
        } else {
            println!(
                "{:<28} {:>14} {:>14} {:>14}",
                "metric", "median", "min", "max"
            );
            for (k, med, min, max) in self.table {
                println!("{k:<28} {med:>14.3} {min:>14.3} {max:>14.3}");
            }
        }
    }
}

fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Which numbers `spore bench` measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Suite {
    /// Contexts: bootstrap, calls, throughput, trees, memory, parent death.
    Contexts,
    /// Processes: spawn, memory per process, messages, crash to DOWN.
    Processes,
}

/// What `spore bench` measures and how it reports.
pub struct Options {
    /// Print one JSON object instead of a table.
    pub json: bool,
    /// Fewer runs and smaller sizes.
    pub quick: bool,
    /// Only the measurements whose names start with one of these.
    pub only: Vec<String>,
    /// Also measure bootstrap over ssh to this target.
    pub ssh: Option<ssh::Target>,
}

pub async fn run(opts: &Options) -> anyhow::Result<ExitCode> {
    let (as_json, only) = (opts.json, &opts.only);
    let s = if opts.quick { QUICK } else { FULL };
    let want = |key: &str| only.is_empty() || only.iter().any(|p| key.starts_with(p.as_str()));
    // How often to repeat a measurement: not at all when it is not selected.
    let runs = |key: &str, n: usize| if want(key) { n } else { 0 };
    let mut r = Report::new();
    let router = Router::new()?;

    if let Some(target) = &opts.ssh {
        ssh::measure(&router, target, runs("ssh", s.ssh_runs), &mut r).await?;
    }

    for (key, first_stage) in [
        ("bootstrap_local_ms", false),
        ("bootstrap_firststage_ms", true),
    ] {
        if !want(key) {
            continue;
        }
        let mut times = Vec::new();
        let mut bytes = 0;
        // One unmeasured run: reading and compressing the image happen once per process.
        let warm = router.local().first_stage(first_stage).await?;
        warm.shutdown().await;
        for _ in 0..s.bootstraps {
            let t = Instant::now();
            let ctx = router.local().first_stage(first_stage).await?;
            ctx.call(spore::builtins::noop, ()).await?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
            bytes = ctx.bytes_written();
            ctx.shutdown().await;
        }
        r.median(key, times);
        let bytes_key = if first_stage {
            "bootstrap_bytes"
        } else {
            "bootstrap_bytes_local"
        };
        r.single(bytes_key, bytes as f64);
    }

    let ctx = router.local().await?;
    if want("rtt_us") {
        r.median("rtt_us", rtt_samples(&ctx, s.rtt_calls).await?);
        r.median("wake_floor_us", wake_floor_us(s.rtt_calls)?);
    }
    for (key, n, runs) in [
        ("throughput_1mib_mbps", 1u64 << 20, s.tp1_runs),
        ("throughput_64mib_mbps", s.tp64_bytes, s.tp64_runs),
    ] {
        if want(key) {
            r.median(key, throughput_samples(&ctx, n, runs).await?);
        }
    }

    let mut cps = Vec::new();
    for _ in 0..runs("calls_per_s", s.cps_runs) {
        let t = Instant::now();
        let pending: Vec<_> = (0..s.outstanding)
            .map(|_| ctx.call_async(spore::builtins::noop, ()))
            .collect();
        for p in pending {
            p.await?;
        }
        cps.push(s.outstanding as f64 / t.elapsed().as_secs_f64());
    }
    r.median("calls_per_s", cps);

    // Depth 3 (local/local/local): every frame crosses two intermediates.
    if want("rtt_depth3_us") || want("throughput_1mib_depth3_mbps") {
        let middle = router.local().via(&ctx).await?;
        let deep = router.local().via(&middle).await?;
        if want("rtt_depth3_us") {
            r.median("rtt_depth3_us", rtt_samples(&deep, s.rtt_calls).await?);
        }
        if want("throughput_1mib_depth3_mbps") {
            let v = throughput_samples(&deep, 1 << 20, s.tp1_runs).await?;
            r.median("throughput_1mib_depth3_mbps", v);
        }
    }
    ctx.shutdown().await;

    // Many contexts at once: flat (start_N_local_s), and a tree whose every
    // level is started by the one above (tree_N_start_s, N leaves).
    let tree_leaves: usize = s.tree_fanout.iter().product();
    for (key, fanout) in [
        (format!("start_{}_local_s", s.start_n), vec![s.start_n]),
        (
            format!("tree_{tree_leaves}_start_s"),
            s.tree_fanout.to_vec(),
        ),
    ] {
        let mut v = Vec::new();
        for _ in 0..runs(&key, s.start_runs) {
            v.push(start_tree(&router, &fanout).await?);
        }
        r.median(&key, v);
    }

    let mut rss = Vec::new();
    for _ in 0..runs("child_rss_kib", s.rss_children) {
        let ctx = router.local().await?;
        ctx.call(spore::builtins::noop, ()).await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let pid = ctx.pid().expect("direct child");
        rss.push(spore::builtins::rss_kib(pid).unwrap_or(0) as f64);
        ctx.shutdown().await;
    }
    r.median("child_rss_kib", rss);
    router.shutdown().await;

    for (key, depth) in [("parent_death_exit_ms", 1), ("parent_death_tree_ms", 3)] {
        let mut death = Vec::new();
        for _ in 0..runs(key, s.death_runs) {
            death.push(tokio::task::spawn_blocking(move || parent_death_ms(depth)).await??);
        }
        r.median(key, death);
    }

    r.print(as_json);
    Ok(ExitCode::SUCCESS)
}

/// Starts a tree level by level (`fanout[k]` children under every context
/// of level `k - 1`; level 0 under this process), each context started by
/// its parent and answering one call. Returns the seconds until the last
/// answered, then shuts the tree down.
async fn start_tree(router: &Router, fanout: &[usize]) -> anyhow::Result<f64> {
    let t = Instant::now();
    let mut roots: Vec<Context> = Vec::new();
    let mut parents: Vec<Option<Context>> = vec![None];
    for &n in fanout {
        let mut tasks = tokio::task::JoinSet::new();
        for parent in &parents {
            for _ in 0..n {
                let mut connect = router.local();
                if let Some(p) = parent {
                    connect = connect.via(p);
                }
                let fut = std::future::IntoFuture::into_future(connect);
                tasks.spawn(async move {
                    let ctx = fut.await?;
                    ctx.call(spore::builtins::noop, ()).await?;
                    anyhow::Ok(ctx)
                });
            }
        }
        let mut level = Vec::new();
        while let Some(res) = tasks.join_next().await {
            level.push(res??);
        }
        if roots.is_empty() {
            roots = level.clone();
        }
        parents = level.into_iter().map(Some).collect();
    }
    let secs = t.elapsed().as_secs_f64();
    // Shutting the roots down takes their subtrees with them.
    for c in &roots {
        c.shutdown().await;
    }
    Ok(secs)
}

/// Round trips of a no-op call to `ctx` in µs, after a tenth as many unmeasured.
async fn rtt_samples(ctx: &Context, n: usize) -> anyhow::Result<Vec<f64>> {
    for _ in 0..n / 10 {
        ctx.call(spore::builtins::noop, ()).await?;
    }
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        ctx.call(spore::builtins::noop, ()).await?;
        v.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(v)
}

/// MB/s of calls returning `n` bytes from `ctx`, `runs` times (the reply is
/// built once in the child and cached, so only the transfer is measured).
async fn throughput_samples(ctx: &Context, n: u64, runs: usize) -> anyhow::Result<Vec<f64>> {
    ctx.call(bench_bytes, (n,)).await?;
    let mut v = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let b = ctx.call(bench_bytes, (n,)).await?;
        let secs = t.elapsed().as_secs_f64();
        anyhow::ensure!(b.len() as u64 == n, "short reply: {} of {n} bytes", b.len());
        v.push(n as f64 / secs / 1e6);
    }
    Ok(v)
}

/// The machine's floor for any round trip that sleeps while it waits: one
/// byte there and back over a socket pair between two threads of this
/// process (two wake-ups; a call between contexts needs at least that).
fn wake_floor_us(n: usize) -> anyhow::Result<Vec<f64>> {
    use std::io::{Read, Write};
    let (mut ours, mut theirs) = std::os::unix::net::UnixStream::pair()?;
    let echo = std::thread::spawn(move || {
        let mut b = [0u8; 1];
        while matches!(theirs.read(&mut b), Ok(1)) {
            if theirs.write_all(&b).is_err() {
                break;
            }
        }
    });
    let mut v = Vec::with_capacity(n);
    let mut b = [0u8; 1];
    for _ in 0..n {
        let t = Instant::now();
        ours.write_all(b"x")?;
        ours.read_exact(&mut b)?;
        v.push(t.elapsed().as_secs_f64() * 1e6);
    }
    drop(ours);
    let _ = echo.join();
    Ok(v)
}

/// Starts `spore __bench-master` (which starts a chain of `depth` contexts
/// and prints their pids), SIGKILLs it, and measures how long until every
/// context of the chain is gone. This process is made a child subreaper
/// first, so each orphan is re-parented here and its exit is observed
/// exactly with waitpid.
fn parent_death_ms(depth: usize) -> anyhow::Result<f64> {
    use rustix::process::{
        Pid, Signal, WaitOptions, getpid, kill_process, set_child_subreaper, waitpid,
    };
    set_child_subreaper(Some(getpid()))?;
    let mut master = std::process::Command::new("/proc/self/exe")
        .args(["__bench-master", "--depth", &depth.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut line = String::new();
    std::io::BufReader::new(master.stdout.take().expect("piped")).read_line(&mut line)?;
    let pids: Result<Vec<i32>, _> = line.split_whitespace().map(str::parse).collect();
    let mut tree = match pids {
        Ok(p) if p.len() == depth => p,
        _ => {
            let _ = master.kill();
            let _ = master.wait();
            anyhow::bail!("bench master printed {line:?} instead of {depth} pids");
        }
    };
    let t = Instant::now();
    kill_process(
        Pid::from_raw(master.id() as i32).expect("pid"),
        Signal::KILL,
    )?;
    master.wait()?;
    // Each context is re-parented to us when its parent dies; reap them all.
    let deadline = t + Duration::from_secs(10);
    while !tree.is_empty() {
        match waitpid(None, WaitOptions::NOHANG)? {
            Some((pid, _)) => tree.retain(|p| *p != pid.as_raw_nonzero().get()),
            None if Instant::now() > deadline => {
                anyhow::bail!("contexts {tree:?} outlived their master by 10 s")
            }
            None => std::thread::sleep(Duration::from_micros(50)),
        }
    }
    Ok(t.elapsed().as_secs_f64() * 1e3)
}

/// The `__bench-master` side: a chain of `depth` contexts, their pids on
/// stdout, then wait to be killed.
pub async fn master(depth: usize) -> anyhow::Result<ExitCode> {
    let router = Router::new()?;
    let mut chain: Vec<Context> = Vec::new();
    for _ in 0..depth {
        let mut connect = router.local();
        if let Some(parent) = chain.last() {
            connect = connect.via(parent);
        }
        let ctx = connect.await?;
        ctx.call(spore::builtins::noop, ()).await?;
        chain.push(ctx);
    }
    let pids: Vec<String> = chain
        .iter()
        .map(|c| c.pid().unwrap_or_default().to_string())
        .collect();
    println!("{}", pids.join(" "));
    std::future::pending::<()>().await;
    unreachable!()
}
