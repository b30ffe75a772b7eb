//! Starting contexts: the parent's side of the bootstrap (spawn, first
//! stage, handshake), the child's side ([`child`]), and reaping.

pub(crate) mod child;
mod connect;
pub(crate) mod image;
mod method;

use std::time::{Duration, Instant};

pub use connect::Connect;
pub(crate) use image::Image;
pub(crate) use method::Method;
pub use method::{Doas, Enter, HostKeyPolicy, Ssh, SshFailure, Su, Sudo};

/// The first stage: a POSIX shell program run as `sh -c FIRST_STAGE NAME
/// [HASH CACHE]`. See docs/PROTOCOL.md for what it does, byte by byte.
pub const FIRST_STAGE: &str = include_str!("first_stage.sh");

/// The first stage's SHA-256: its name in a target's cache (stage 0
/// checks it before running a cached copy).
pub(crate) fn first_stage_sha256() -> &'static str {
    static STAGE_SHA256: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    STAGE_SHA256.get_or_init(|| image::sha256_hex(FIRST_STAGE.as_bytes()))
}

/// Stage 0, run as `sh -c STAGE0 NAME STAGE-HASH IMAGE-HASH` when the
/// target may keep a cache: it runs the first stage from the target's cache
/// (after checking its hash), or asks for it and keeps it there.
pub const STAGE0: &str = include_str!("stage0.sh");

/// A POSIX shell program and its arguments, as `sh -c SCRIPT ARGS…` runs
/// them (`$0` is the first argument).
pub(crate) struct ShellLaunch {
    pub(crate) script: &'static str,
    pub(crate) args: Vec<String>,
}

impl ShellLaunch {
    /// The first stage itself, with no cache: `sh -c FIRST_STAGE NAME`.
    pub(crate) fn first_stage(proc_name: &str) -> Self {
        Self {
            script: FIRST_STAGE,
            args: vec![proc_name.to_owned()],
        }
    }

    /// Stage 0, asking the target's cache for the first stage and for the
    /// image with hash `image_sha256`.
    pub(crate) fn cached(proc_name: &str, image_sha256: &str) -> Self {
        Self {
            script: STAGE0,
            args: vec![
                proc_name.to_owned(),
                first_stage_sha256().to_owned(),
                image_sha256.to_owned(),
            ],
        }
    }

    /// The arguments of `/bin/sh`: `-c SCRIPT ARGS…`.
    pub(crate) fn argv(&self) -> impl Iterator<Item = &str> {
        ["-c", self.script]
            .into_iter()
            .chain(self.args.iter().map(String::as_str))
    }

    /// One string for a remote shell (ssh): `/bin/sh -c 'SCRIPT' 'ARG'…`.
    /// The scripts hold no single quote, so they travel quoted as they are.
    pub(crate) fn remote_command(&self) -> String {
        let mut cmd = format!("/bin/sh -c '{}'", self.script);
        for arg in &self.args {
            cmd.push(' ');
            cmd.push_str(&method::shell_quote(arg));
        }
        cmd
    }

    /// Bytes handed to the target to start it: the program and its arguments.
    pub(crate) fn size(&self) -> usize {
        self.script.len() + self.args.iter().map(String::len).sum::<usize>()
    }
}

/// Waits for `process` to exit for up to `grace`, then kills and reaps it.
pub(crate) fn reap(process: std::process::Child, grace: Duration) {
    reap_all(vec![process], grace);
}

/// Reaps every process, giving them together up to `grace` to exit on their
/// own before SIGKILL. Never leaves a zombie.
pub(crate) fn reap_all(mut processes: Vec<std::process::Child>, grace: Duration) {
    let deadline = Instant::now() + grace;
    let mut pause = Duration::from_micros(200);
    loop {
        processes.retain_mut(|p| !matches!(p.try_wait(), Ok(Some(_)) | Err(_)));
        if processes.is_empty() || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
    for mut p in processes {
        let _ = p.kill();
        let _ = p.wait();
    }
}
