//! `spore`: start contexts, ping them, run commands in them, benchmark them.

mod bench;
mod inventory;
mod target;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{ArgAction, Parser, Subcommand};
use spore::{Context, OutputStream, Router};

/// The end of `spore --help`: an inventory file.
const INVENTORY_EXAMPLE: &str = "\
An inventory file (TOML), e.g. ~/.config/spore/inventory.toml:

  [defaults]                      # every host's, unless it sets its own
  same_libraries = true

  [hosts.bastion]
  target = \"ssh:ops@bastion.example.com\"
  identity_file = \"~/.ssh/ops\"

  [hosts.db1]
  via = \"bastion\"                 # bastion's hops come first
  target = \"ssh:db1:2222/sudo:postgres\"
  host_key = \"accept\"             # enforce | accept | ignore
  ssh_args = [\"-o\", \"ServerAliveInterval=5\"]

  [groups]
  db = [\"db1\", \"db2\"]
  all = [\"@db\", \"web1\"]           # groups may hold groups

  spore run @all -- uptime
  spore ping @db1/sudo";

/// Start copies of this program as contexts (local processes, other users,
/// other machines over ssh, containers and namespaces) and work with them.
///
/// A TARGET is hops joined by `/`, each `METHOD[:ARG]`: `local` (one local
/// context), `local:N` (N local contexts), `sudo` (one context as root),
/// `sudo:USER` (as USER), `su` and `su:USER`, `doas` and `doas:USER`,
/// `ssh:[USER@]HOST[:PORT]` (with the system's ssh, its config and agent),
/// `podman:CONTAINER`, `docker:CONTAINER`, `nsenter:PID` and `chroot:PATH`;
/// e.g. `ssh:bastion/ssh:db1/sudo:postgres`. Targets on other machines or
/// file systems need a static build (or `--same-libraries`). With no
/// target, `local` is used.
///
/// `@NAME` names a host or a group of the inventory, as a whole target or
/// its first hop: `spore run @db -- uptime` runs on every host of group
/// `db` (each once, in file order), `@db/sudo:postgres` adds a hop after
/// each. Contexts that end a host's chain are named after it. The inventory
/// is a TOML file: `--inventory PATH`, else $SPORE_INVENTORY, else
/// `${XDG_CONFIG_HOME:-$HOME/.config}/spore/inventory.toml`; it is read
/// only when a target starts with `@`; an example file ends this help
/// (`--help`).
///
/// Host options, for the ssh hops of the host's own target: user, port,
/// identity_file, ssh_config, known_hosts, host_key, compression,
/// keepalive_interval, keepalive_count, ssh_args (a list), cache;
/// same_libraries (ssh and container hops); connect_timeout (seconds, all
/// its hops). An option a host sets that none of its hops takes is an
/// error.
///
/// Passwords: sudo, su and doas hops, and ssh hops whose server asks for
/// one, are given the password from `--ask-password` (read from the
/// terminal), `--password-file`, or the SPORE_PASSWORD environment
/// variable, in that order; with none, a hop that needs one fails and says
/// so.
#[derive(Parser)]
#[command(name = "spore", version, after_long_help = INVENTORY_EXAMPLE)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Start local contexts through the POSIX-shell first stage (as every
    /// other method does) instead of exec'ing the image directly.
    #[arg(long, global = true)]
    first_stage: bool,
    /// The targets have this machine's libraries (the same OS build): ship
    /// this dynamically linked executable to ssh hosts, containers and
    /// chroots anyway (otherwise only a static build goes there).
    #[arg(long, global = true)]
    same_libraries: bool,
    /// Read a password from the terminal (without echo) before connecting,
    /// for the hops that ask for one.
    #[arg(short = 'k', long, global = true)]
    ask_password: bool,
    /// Read the password for the hops that ask for one from the first line
    /// of this file (instead of SPORE_PASSWORD).
    #[arg(long, global = true, value_name = "PATH")]
    password_file: Option<std::path::PathBuf>,
    /// Use this ssh config file for ssh hops instead of `~/.ssh/config`
    /// (`ssh -F`; an inventory host's `ssh_config` wins for its hops).
    #[arg(short = 'F', long, global = true, value_name = "PATH")]
    ssh_config: Option<std::path::PathBuf>,
    /// The inventory file for `@NAME` targets (default: $SPORE_INVENTORY,
    /// else `${XDG_CONFIG_HOME:-$HOME/.config}/spore/inventory.toml`).
    #[arg(short = 'i', long, global = true, value_name = "PATH")]
    inventory: Option<std::path::PathBuf>,
    /// Give up on a context that has not answered after this many seconds
    /// (an inventory host's `connect_timeout` wins for its hops).
    #[arg(long, global = true, value_name = "SECS", default_value_t = 30.0)]
    connect_timeout: f64,
    /// More logging (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = ArgAction::Count)]
    verbose: u8,
}

#[derive(Subcommand)]
enum Command {
    /// Bootstrap each target and print, per context: name, round-trip time
    /// of a no-op call, hostname, arch, kernel, pid and resident memory.
    Ping {
        /// Targets: hops joined by `/`, each `METHOD[:ARG]`, e.g. `local`,
        /// `local:4`, `sudo:postgres`, `local/local/local` (a context started
        /// by a context started by a context; the last hop is pinged),
        /// `@NAME` (an inventory host or group). No target: `local`.
        targets: Vec<String>,
    },
    /// Run a command in each context; its output is printed prefixed by the
    /// context's name, then one exit-status line per context. Exits 1 if any
    /// context failed to start or the command failed in any.
    Run {
        /// Targets, as for `ping`, e.g. `local:2`, `local/local:3` or `@db`.
        targets: Vec<String>,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Measure bootstrap time and bytes, call latency, throughput, calls per
    /// second (also through a local/local/local chain), 100-context start, a
    /// 1000-leaf tree (10x10x10) start,
    /// idle memory and parent-death exit time, and this machine's floor for
    /// a round trip between two threads (`wake_floor_us`).
    /// With `--target ssh:HOST`, also bootstrap over ssh (the `ssh_*` rows):
    /// first contact (the target's cache of this image emptied before) and
    /// repeat contact, through a new connection and through a ControlMaster
    /// connection the benchmark opens, beside a bare `ssh HOST true` over
    /// each, interleaved in the same run; times until a no-op call returned,
    /// bytes written to the context's stream.
    /// Medians with min and max.
    Bench {
        /// What to measure: `contexts` (bootstrap, calls, throughput,
        /// trees, memory, parent death; the default) or `processes` (spawn,
        /// memory per process, message passing, crash to DOWN).
        #[arg(value_enum, default_value_t = bench::Suite::Contexts)]
        suite: bench::Suite,
        /// Also measure bootstrap over ssh to this host:
        /// `ssh:[USER@]HOST[:PORT]` (with `--ssh-config` for another ssh
        /// config file; the host may be a `Host` of it).
        #[arg(long, value_name = "TARGET")]
        target: Option<String>,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Fewer runs and smaller sizes (a smoke test, not a measurement).
        #[arg(long)]
        quick: bool,
        /// Run only the measurements whose names start with one of these
        /// (comma-separated), e.g. `--only rtt,calls`.
        #[arg(long, value_delimiter = ',', value_name = "PREFIX")]
        only: Vec<String>,
    },
    /// Internal: act as a master for the parent-death measurement.
    #[command(name = "__bench-master", hide = true)]
    BenchMaster {
        /// Length of the chain of contexts to start.
        #[arg(long, default_value_t = 1)]
        depth: usize,
    },
}

fn main() -> ExitCode {
    spore::init();
    let cli = Cli::parse();
    let default = match cli.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    // One thread is plenty: spore's I/O runs on its own thread, and this one
    // only waits. (A multi-threaded runtime wakes idle workers to look for
    // work on every reply, which costs more than the call itself.)
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("spore: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match &cli.command {
            Command::Ping { targets } => ping(&cli, targets).await,
            Command::Run { targets, command } => run(&cli, targets, command).await,
            Command::Bench {
                suite,
                json,
                quick,
                only,
                target,
            } => {
                let opts = bench::Options {
                    json: *json,
                    quick: *quick,
                    only: only.clone(),
                    ssh: target
                        .as_deref()
                        .map(|t| bench_target(&cli, t))
                        .transpose()?,
                };
                match suite {
                    bench::Suite::Contexts => bench::run(&opts).await,
                    bench::Suite::Processes => bench::processes::run(&opts).await,
                }
            }
            Command::BenchMaster { depth } => bench::master(*depth).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("spore: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The ssh host `spore bench --target` measures: one `ssh:` hop.
fn bench_target(cli: &Cli, t: &str) -> anyhow::Result<bench::ssh::Target> {
    let chain = target::parse(&[t.to_owned()])?.remove(0);
    match &chain[..] {
        [
            target::Hop {
                method: target::Method::Ssh { user, host, port },
                ..
            },
        ] => Ok(bench::ssh::Target {
            user: user.clone(),
            host: host.clone(),
            port: *port,
            config: cli.ssh_config.clone(),
            same_libraries: cli.same_libraries,
        }),
        _ => anyhow::bail!("bench --target {t:?}: give one ssh host, ssh:[USER@]HOST[:PORT]"),
    }
}

fn builder(cli: &Cli) -> spore::RouterBuilder {
    Router::builder().connect_timeout(Duration::from_secs_f64(cli.connect_timeout))
}

/// Starts every context the targets name (the targets concurrently; in
/// each, hop by hop, each hop's contexts concurrently) and returns the last
/// hops' contexts, in the order of the targets (a group's in file order).
/// Failures are reported and counted, not fatal.
async fn connect_all(
    cli: &Cli,
    router: &Router,
    targets: &[String],
) -> anyhow::Result<(Vec<Context>, usize)> {
    let places = inventory::Places::from_env(cli.inventory.as_deref());
    let chains = inventory::resolve(targets, &places)?;
    let password = password(cli)?;
    let ends = futures_util::future::join_all(
        chains
            .iter()
            .map(|chain| connect_chain(cli, router, chain, password.as_deref())),
    )
    .await;
    let mut contexts = Vec::new();
    let mut failed = 0;
    for (mut ctxs, fails) in ends {
        ctxs.sort_by_key(|c| c.id());
        contexts.extend(ctxs);
        failed += fails;
    }
    Ok((contexts, failed))
}

/// Starts one target's contexts, hop by hop; returns the last hop's
/// contexts and how many connects failed.
async fn connect_chain(
    cli: &Cli,
    router: &Router,
    chain: &target::Chain,
    password: Option<&str>,
) -> (Vec<Context>, usize) {
    let mut failed = 0;
    // The contexts of the previous hop (`None`: this process).
    let mut parents: Vec<Option<Context>> = vec![None];
    for hop in chain {
        let mut tasks = tokio::task::JoinSet::new();
        for parent in &parents {
            for _ in 0..hop.count {
                let mut connect = connect_hop(cli, router, hop, password);
                if let Some(p) = parent {
                    connect = connect.via(p);
                }
                tasks.spawn(std::future::IntoFuture::into_future(connect));
            }
        }
        let mut next = Vec::new();
        while let Some(r) = tasks.join_next().await {
            match r {
                Ok(Ok(ctx)) => next.push(Some(ctx)),
                Ok(Err(e)) => {
                    eprintln!("spore: {e}");
                    if needs_password(&e) {
                        eprintln!(
                            "spore: give a password with --ask-password, --password-file \
                             or SPORE_PASSWORD"
                        );
                    }
                    failed += 1;
                }
                Err(e) => {
                    eprintln!("spore: connect task failed: {e}");
                    failed += 1;
                }
            }
        }
        parents = next;
    }
    (parents.into_iter().flatten().collect(), failed)
}

/// The connect for one context of `hop`, with the hop's inventory options
/// (name, timeout, ssh's) and the command line's flags.
fn connect_hop<'r>(
    cli: &Cli,
    router: &'r Router,
    hop: &target::Hop,
    password: Option<&str>,
) -> spore::Connect<'r> {
    let o = &hop.opts;
    let same_libraries = cli.same_libraries || o.same_libraries == Some(true);
    let mut connect = match &hop.method {
        target::Method::Local => router.local().first_stage(cli.first_stage),
        target::Method::Sudo(user) => {
            let mut sudo = user
                .as_ref()
                .map_or_else(spore::Sudo::root, spore::Sudo::user);
            if let Some(p) = password {
                sudo = sudo.password(p);
            }
            router.sudo(sudo)
        }
        target::Method::Enter(place) => {
            let enter = match place {
                target::Enter::Podman(c) => spore::Enter::podman(c),
                target::Enter::Docker(c) => spore::Enter::docker(c),
                target::Enter::Nsenter(pid) => spore::Enter::nsenter(*pid),
                target::Enter::Chroot(p) => spore::Enter::chroot(p),
            };
            router.enter(enter.same_libraries(same_libraries))
        }
        target::Method::Su(user) => {
            let mut su = user.as_ref().map_or_else(spore::Su::root, spore::Su::user);
            if let Some(p) = password {
                su = su.password(p);
            }
            router.su(su)
        }
        target::Method::Doas(user) => {
            let mut doas = user
                .as_ref()
                .map_or_else(spore::Doas::root, spore::Doas::user);
            if let Some(p) = password {
                doas = doas.password(p);
            }
            router.doas(doas)
        }
        target::Method::Ssh { user, host, port } => {
            let mut ssh = spore::Ssh::host(host);
            if let Some(user) = user {
                ssh = ssh.user(user);
            }
            if let Some(port) = port {
                ssh = ssh.port(*port);
            }
            if let Some(p) = password {
                ssh = ssh.password(p);
            }
            if let Some(f) = &o.identity_file {
                ssh = ssh.identity_file(f);
            }
            if let Some(f) = &o.ssh_config {
                ssh = ssh.config_file(f);
            } else if let Some(f) = &cli.ssh_config {
                ssh = ssh.config_file(f.display().to_string());
            }
            if let Some(f) = &o.known_hosts {
                ssh = ssh.known_hosts(f);
            }
            if let Some(policy) = o.host_key {
                ssh = ssh.host_key(policy);
            }
            if let Some(on) = o.compression {
                ssh = ssh.compression(on);
            }
            if let Some((interval, count)) = o.keepalive {
                ssh = ssh.keepalive(interval, count);
            }
            for arg in &o.ssh_args {
                ssh = ssh.arg(arg);
            }
            let mut connect = router.ssh(ssh.same_libraries(same_libraries));
            if let Some(on) = o.cache {
                connect = connect.cache(on);
            }
            connect
        }
    };
    if let Some(name) = &o.name {
        connect = connect.name(name);
    }
    if let Some(d) = o.connect_timeout {
        connect = connect.connect_timeout(d);
    }
    connect
}

/// Whether a connect failed for want of a password, here or further down.
fn needs_password(e: &spore::ConnectError) -> bool {
    match e {
        spore::ConnectError::PasswordRequired { .. } => true,
        spore::ConnectError::Via { cause, .. } => needs_password(cause),
        _ => false,
    }
}

/// The password for hops that ask for one: from the terminal
/// (`--ask-password`), a file, or SPORE_PASSWORD; `None` without any.
fn password(cli: &Cli) -> anyhow::Result<Option<String>> {
    if cli.ask_password {
        return read_password_from_terminal("spore: password: ").map(Some);
    }
    if let Some(path) = &cli.password_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("--password-file {}: {e}", path.display()))?;
        return Ok(Some(text.lines().next().unwrap_or("").to_owned()));
    }
    Ok(std::env::var("SPORE_PASSWORD").ok())
}

/// Prompts on the terminal (`/dev/tty`, so it works with stdin redirected)
/// and reads a line with echo off; echo comes back whatever happens.
fn read_password_from_terminal(prompt: &str) -> anyhow::Result<String> {
    use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
    use std::io::{BufRead, Write};
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|e| anyhow::anyhow!("--ask-password needs a terminal: /dev/tty: {e}"))?;
    let saved = tcgetattr(&tty)?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    (&tty).write_all(prompt.as_bytes())?;
    tcsetattr(&tty, OptionalActions::Flush, &quiet)?;
    let mut line = String::new();
    let read = std::io::BufReader::new(&tty).read_line(&mut line);
    tcsetattr(&tty, OptionalActions::Flush, &saved)?;
    (&tty).write_all(b"\n")?;
    read?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

async fn ping(cli: &Cli, targets: &[String]) -> anyhow::Result<ExitCode> {
    let router = builder(cli).build()?;
    let (contexts, mut failed) = connect_all(cli, &router, targets).await?;
    let w = contexts
        .iter()
        .map(|c| c.name().len())
        .max()
        .unwrap_or(0)
        .max(12);
    println!(
        "{:<w$} {:>9} {:<20} {:<8} {:<24} {:>8} {:>9}",
        "CONTEXT", "RTT_US", "HOSTNAME", "ARCH", "KERNEL", "PID", "RSS_KIB"
    );
    for ctx in &contexts {
        let start = Instant::now();
        let noop = ctx.call(spore::builtins::noop, ()).await;
        let rtt = start.elapsed();
        match (noop, ctx.call(spore::builtins::facts, ()).await) {
            (Ok(()), Ok(f)) => println!(
                "{:<w$} {:>9.1} {:<20} {:<8} {:<24} {:>8} {:>9}",
                ctx.name(),
                rtt.as_secs_f64() * 1e6,
                f.hostname,
                f.arch,
                f.kernel,
                f.pid,
                f.rss_kib
            ),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("spore: {e}");
                failed += 1;
            }
        }
    }
    router.shutdown().await;
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn run(cli: &Cli, targets: &[String], command: &[String]) -> anyhow::Result<ExitCode> {
    let router = builder(cli)
        .on_output(|l| match l.stream {
            OutputStream::Stdout => println!("{} | {}", l.context, l.line),
            OutputStream::Stderr => eprintln!("{} | {}", l.context, l.line),
        })
        .build()?;
    let (contexts, mut failed) = connect_all(cli, &router, targets).await?;
    let pending: Vec<_> = contexts
        .iter()
        .map(|c| c.call_async(spore::builtins::run, (command.to_vec(),)))
        .collect();
    let mut summary = Vec::new();
    for (ctx, p) in contexts.iter().zip(pending) {
        match p.await {
            Ok(status) => {
                if !status.success() {
                    failed += 1;
                }
                summary.push(format!("{}: {status}", ctx.name()));
            }
            Err(e) => {
                failed += 1;
                summary.push(format!("{}: {e}", ctx.name()));
            }
        }
    }
    router.shutdown().await;
    for line in summary {
        println!("{line}");
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
