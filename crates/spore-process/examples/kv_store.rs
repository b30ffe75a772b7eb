//! A key-value store as a gen_server in one context, called from others:
//! from this program (the master) and from a client process in a second
//! context, by the name the store has in its own context (`Dest::At`,
//! Erlang's `{Name, Node}`).
//!
//! ```sh
//! cargo run -p spore-process --example kv_store
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use spore::{ContextId, Router};
use spore_process::call::{Dest, ReplyTo};
use spore_process::gen_server::{self, CallResult, Flow, GenServer, StartOptions};
use spore_process::*;

/// The store: its map, and who to tell when it stops.
struct Kv {
    map: BTreeMap<String, String>,
    observer: Pid,
}

#[derive(Debug, Serialize, Deserialize)]
enum KvCall {
    Get(String),
    /// Answers with the value it replaces.
    Put(String, String),
    Len,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum KvReply {
    Value(Option<String>),
    Len(usize),
}

/// A key to delete (a cast: no answer).
#[derive(Debug, Serialize, Deserialize)]
struct Delete(String);

impl GenServer for Kv {
    /// The first entries and the observer: they travel to the store's
    /// context, so they serialize.
    type Args = (Vec<(String, String)>, Pid);
    type Call = KvCall;
    type Reply = KvReply;
    type Cast = Delete;

    async fn init((entries, observer): Self::Args) -> Result<Self, Reason> {
        Ok(Kv {
            map: entries.into_iter().collect(),
            observer,
        })
    }

    async fn handle_call(&mut self, req: KvCall, _from: ReplyTo) -> CallResult<KvReply> {
        CallResult::Reply(match req {
            KvCall::Get(k) => KvReply::Value(self.map.get(&k).cloned()),
            KvCall::Put(k, v) => KvReply::Value(self.map.insert(k, v)),
            KvCall::Len => KvReply::Len(self.map.len()),
        })
    }

    async fn handle_cast(&mut self, Delete(key): Delete) -> Flow {
        self.map.remove(&key);
        Flow::Continue
    }

    async fn terminate(&mut self, reason: &Reason) {
        let here = self_pid();
        send(
            self.observer,
            format!(
                "the store {here} stops ({reason}), keys left: {}",
                self.map.len()
            ),
        );
    }
}

// Any context running this program can now start a Kv.
spore_process::remote_gen_server!(Kv);

/// A client in another context: calls the store by its name there, and
/// reports what it saw to `report`.
#[spore_process::process]
async fn client(store_ctx: ContextId, report: Pid) {
    let kv = Dest::at(store_ctx, "kv");
    let here = self_pid();
    let old =
        gen_server::call::<Kv>(kv.clone(), KvCall::Put("from".into(), here.to_string())).await;
    let len = gen_server::call::<Kv>(kv, KvCall::Len).await;
    send(
        report,
        format!(
            "client {here} in context {}: put \"from\" (was {}); the store now has {}",
            here.context(),
            show(old),
            show(len)
        ),
    );
}

fn show(v: Result<KvReply, call::CallError>) -> String {
    match v {
        Ok(KvReply::Value(Some(v))) => format!("{v:?}"),
        Ok(KvReply::Value(None)) => "nothing".into(),
        Ok(KvReply::Len(n)) => format!("{n} keys"),
        Err(e) => format!("error: {e}"),
    }
}

fn main() {
    // First: in a context started from this program, this never returns.
    spore::init();
    if let Err(e) = run() {
        eprintln!("kv_store: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let router = Router::new()?;
    let store_ctx = router.local().connect_blocking()?;
    let client_ctx = router.local().connect_blocking()?;

    let outcome = Node::of(&router).run_blocking({
        let (store_ctx, client_ctx) = (store_ctx.clone(), client_ctx.clone());
        async move {
            let me = self_pid();
            let entries = vec![("colour".to_string(), "green".to_string())];
            let opts = StartOptions::new().name("kv");
            let store = gen_server::start_in::<Kv>(&store_ctx, (entries, me), opts)
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "the store runs on {} as {store}, named \"kv\" there",
                store_ctx.name()
            );

            // From here, by its name there.
            let kv = Dest::at(store_ctx.id(), "kv");
            let get = |k: &str| KvCall::Get(k.into());
            let colour = gen_server::call::<Kv>(kv.clone(), get("colour")).await;
            println!("master: colour is {}", show(colour));
            let put = KvCall::Put("colour".into(), "blue".into());
            let old = gen_server::call::<Kv>(kv.clone(), put).await;
            println!("master: colour set to \"blue\" (was {})", show(old));

            // From a process in another context.
            spawn_in(&client_ctx, client, (store_ctx.id(), me))
                .await
                .map_err(|e| e.to_string())?;
            println!("{}", receive::<String>().await);

            gen_server::cast::<Kv>(kv.clone(), Delete("colour".into()));
            let colour = gen_server::call::<Kv>(kv.clone(), get("colour")).await;
            println!("master: after deleting it, colour is {}", show(colour));

            // A name nothing has there fails at once, naming it.
            let missing = gen_server::call::<Kv>(Dest::at(store_ctx.id(), "nobody"), KvCall::Len);
            println!("master: {}", show(missing.await));

            gen_server::stop(kv, Reason::Normal, std::time::Duration::from_secs(5))
                .await
                .map_err(|e| e.to_string())?;
            println!("{}", receive::<String>().await);
            Ok::<(), String>(())
        }
    });
    router.shutdown_blocking();
    match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.into()),
        Err(reason) => Err(format!("the main process ended: {reason}").into()),
    }
}
