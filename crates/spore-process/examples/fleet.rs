//! A supervised fleet: one worker per context, under a supervisor in this
//! program. One context is killed; the supervisor restarts its worker in
//! another context, chosen by a placement function from what the restart
//! is told (the last incarnation ended with `noconnection`).
//!
//! ```sh
//! cargo run -p spore-process --example fleet                  # 3 local contexts
//! cargo run -p spore-process --example fleet -- local:5
//! cargo run -p spore-process --example fleet -- local ssh:web1 ssh:deploy@web2:2222
//! ```
//!
//! Targets are the spore CLI's forms `local`, `local:N` and
//! `ssh:[USER@]HOST[:PORT]`, at least two contexts in all. (The CLI's own
//! parser, `crates/spore-cli/src/target.rs`, is part of the `spore`
//! binary, not of a library, so this example reads these few forms
//! itself.) The example runs as a dynamically linked program: an ssh host
//! must have this machine's platform and libraries.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use spore::{ContextId, Router};
use spore_process::call::{self, Request};
use spore_process::supervisor::{self, ChildSpec, StartInfo, SupSpec};
use spore_process::*;

/// A worker: answers each request `n` with `n * n`.
#[spore_process::process]
async fn worker() {
    loop {
        let req: Request<u64> = receive().await;
        call::reply(&req.from, req.body * req.body);
    }
}

/// Ends the context it runs in at once, as `kill -9` would: nothing is
/// cleaned up, nobody is told. Its parent sees the stream close.
#[spore::remote]
fn die() {
    let me = rustix::process::getpid();
    let _ = rustix::process::kill_process(me, rustix::process::Signal::KILL);
}

/// A worker's start, as its start function tells the main process.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Placed {
    id: String,
    pid: Pid,
}

/// The fleet's contexts and which worker runs where, as the placement
/// function sees them.
struct Fleet {
    contexts: Vec<spore::Context>,
    state: Mutex<FleetState>,
}

#[derive(Default)]
struct FleetState {
    /// Contexts known to be lost.
    lost: Vec<ContextId>,
    /// Where each worker runs.
    host: BTreeMap<String, ContextId>,
}

impl Fleet {
    /// The placement function: a worker starts in its home context, and
    /// is restarted where it ran; if that context was lost (its last
    /// incarnation ended with `noconnection`), in the live context that
    /// runs the fewest workers.
    fn place(&self, info: &StartInfo, home: usize) -> spore::Context {
        let mut st = self.state.lock().unwrap();
        let ran = info.last_pid.map(|p| p.context());
        if let (Some(Reason::Noconnection), Some(ran)) = (&info.last_exit, ran) {
            st.lost.push(ran);
        }
        let chosen = match ran {
            None => self.contexts[home].clone(),
            Some(ran) if !st.lost.contains(&ran) => self.by_id(ran).clone(),
            Some(_) => {
                let load = |c: &&spore::Context| st.host.values().filter(|h| **h == c.id()).count();
                self.contexts
                    .iter()
                    .filter(|c| !st.lost.contains(&c.id()))
                    .min_by_key(load)
                    .expect("a live context")
                    .clone()
            }
        };
        st.host.insert(info.id.clone(), chosen.id());
        chosen
    }

    fn by_id(&self, id: ContextId) -> &spore::Context {
        self.contexts
            .iter()
            .find(|c| c.id() == id)
            .expect("a context of the fleet")
    }

    fn name_of(&self, pid: Pid) -> &str {
        self.by_id(pid.context()).name()
    }
}

/// Worker `i`'s child spec: placed by the fleet, linked to the supervisor,
/// reported to `main` at each start.
fn worker_spec(fleet: &Arc<Fleet>, i: usize, main: Pid) -> ChildSpec {
    let fleet = fleet.clone();
    ChildSpec::new(format!("w{}", i + 1), move |info: StartInfo| {
        let ctx = fleet.place(&info, i);
        let fleet = fleet.clone();
        async move {
            let pid = spawn_link_in(&ctx, worker, ())
                .await
                .map_err(Reason::error)?;
            match (&info.last_pid, &info.last_exit) {
                (Some(last), Some(why)) => println!(
                    "restart {} on {} as {pid} (start {}; its last incarnation {last} on {} ended: {why})",
                    info.id,
                    ctx.name(),
                    info.restarts + 1,
                    fleet.name_of(*last)
                ),
                _ => println!("start {} on {} as {pid}", info.id, ctx.name()),
            }
            send(main, Placed { id: info.id, pid });
            Ok(pid)
        }
    })
}

/// Asks every worker for a square and prints who answered from where.
async fn round(fleet: &Fleet, sup: Pid, n: u64) -> Result<(), String> {
    let children = supervisor::which_children(sup)
        .await
        .map_err(|e| e.to_string())?;
    for child in children {
        let pid = child.pid.ok_or(format!("{} is not running", child.id))?;
        let square: u64 = call::call(pid, n, None)
            .await
            .map_err(|e| format!("{}: {e}", child.id))?;
        println!(
            "{} on {}: {n} * {n} = {square}",
            child.id,
            fleet.name_of(pid)
        );
    }
    Ok(())
}

/// Where contexts start, from the command line.
enum Target {
    Local(usize),
    Ssh(Box<spore::Ssh>),
}

fn parse(arg: &str) -> Result<Target, String> {
    match arg.split_once(':') {
        None if arg == "local" => Ok(Target::Local(1)),
        Some(("local", n)) => match n.parse() {
            Ok(n) if n > 0 => Ok(Target::Local(n)),
            _ => Err(format!(
                "target {arg:?}: local:N needs a number of contexts, at least 1"
            )),
        },
        Some(("ssh", dest)) => {
            let (user, rest) = match dest.split_once('@') {
                Some((u, r)) => (Some(u), r),
                None => (None, dest),
            };
            let (host, port) = match rest.rsplit_once(':') {
                Some((h, p)) => {
                    let port = p
                        .parse()
                        .map_err(|_| format!("target {arg:?}: {p:?} is not a port number"))?;
                    (h, Some(port))
                }
                None => (rest, None),
            };
            if host.is_empty() {
                return Err(format!(
                    "target {arg:?}: ssh needs a host: ssh:[USER@]HOST[:PORT]"
                ));
            }
            // This example's image is linked dynamically: the host must
            // have the same libraries.
            let mut ssh = spore::Ssh::host(host).same_libraries(true);
            if let Some(user) = user {
                ssh = ssh.user(user);
            }
            if let Some(port) = port {
                ssh = ssh.port(port);
            }
            Ok(Target::Ssh(Box::new(ssh)))
        }
        _ => Err(format!(
            "target {arg:?}: this example takes local, local:N and ssh:[USER@]HOST[:PORT]"
        )),
    }
}

fn main() {
    // First: in a context started from this program, this never returns.
    spore::init();
    if let Err(e) = run() {
        eprintln!("fleet: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let targets = if args.is_empty() {
        vec![Target::Local(3)]
    } else {
        args.iter().map(|a| parse(a)).collect::<Result<_, _>>()?
    };

    let router = Router::new()?;
    let mut contexts = Vec::new();
    for target in targets {
        match target {
            Target::Local(n) => {
                for _ in 0..n {
                    contexts.push(router.local().connect_blocking()?);
                }
            }
            Target::Ssh(ssh) => contexts.push(router.ssh(*ssh).connect_blocking()?),
        }
    }
    if contexts.len() < 2 {
        return Err("the fleet needs at least two contexts: one to lose, one to move to".into());
    }
    let names: Vec<&str> = contexts.iter().map(|c| c.name()).collect();
    println!("fleet of {} contexts: {}", contexts.len(), names.join(", "));
    let fleet = Arc::new(Fleet {
        contexts,
        state: Mutex::default(),
    });

    let outcome = Node::of(&router).run_blocking({
        let fleet = fleet.clone();
        async move {
            let me = self_pid();
            let specs = (0..fleet.contexts.len())
                .map(|i| worker_spec(&fleet, i, me))
                .collect();
            let sup = supervisor::start_link(SupSpec::one_for_one(specs))
                .await
                .map_err(|e| e.to_string())?;
            for _ in 0..fleet.contexts.len() {
                receive::<Placed>().await;
            }
            round(&fleet, sup, 7).await?;

            // Lose the second worker's context.
            let victim = supervisor::which_children(sup)
                .await
                .map_err(|e| e.to_string())?
                .into_iter()
                .nth(1)
                .and_then(|c| Some((c.id, c.pid?)))
                .ok_or("the second worker is not running")?;
            let ctx = fleet.by_id(victim.1.context());
            println!(
                "kill {} (the context of {}) with SIGKILL",
                ctx.name(),
                victim.0
            );
            ctx.call_no_reply(die, ()).map_err(|e| e.to_string())?;

            // The supervisor restarts it elsewhere.
            let placed = receive::<Placed>().await;
            println!(
                "{} now runs on {} as {}",
                placed.id,
                fleet.name_of(placed.pid),
                placed.pid
            );
            round(&fleet, sup, 8).await?;

            supervisor::stop(sup, Reason::Normal)
                .await
                .map_err(|e| e.to_string())?;
            println!("the supervisor stopped its workers, then itself");
            Ok::<(), String>(())
        }
    });
    router.shutdown_blocking();
    match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.into()),
        Err(reason) => Err(format!("the fleet's main process ended: {reason}").into()),
    }
}
