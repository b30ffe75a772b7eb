//! Starting contexts: the parent's side of the bootstrap (spawn, first
//! stage, handshake), the child's side ([`child`]), and reaping.

pub(crate) mod child;
mod connect;
mod image;
mod method;

use std::time::{Duration, Instant};

pub use connect::Connect;
pub(crate) use image::Image;
pub(crate) use method::Method;
pub use method::{Enter, HostKeyPolicy, Ssh, SshFailure, Su, Sudo};

/// The first stage: a POSIX shell program run as `sh -c FIRST_STAGE NAME`.
/// See docs/PROTOCOL.md for what it does, byte by byte.
pub const FIRST_STAGE: &str = include_str!("first_stage.sh");

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
