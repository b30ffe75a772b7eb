//! Remote functions built into every spore image, whatever program it is.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};
use spore_proto::messages::LogOrigin;

/// What a context reports about itself (see [`facts`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    /// The context's name.
    pub name: String,
    /// The machine's hostname.
    pub hostname: String,
    /// `uname -s`.
    pub os: String,
    /// `uname -m`.
    pub arch: String,
    /// `uname -r`.
    pub kernel: String,
    /// The context's process ID.
    pub pid: u32,
    /// Resident set size in KiB.
    pub rss_kib: u64,
    /// The message-size limit in force in the context.
    pub max_message_size: u32,
}

/// Reports the context's name, host, platform, pid and memory use.
#[crate::remote]
pub fn facts() -> Facts {
    let u = rustix::system::uname();
    let s = |c: &std::ffi::CStr| c.to_string_lossy().into_owned();
    let (name, max) = match crate::bootstrap::child::inner() {
        Some(i) => (i.name.clone(), i.settings.max_message_size),
        None => ("master".to_owned(), spore_proto::DEFAULT_MAX_MESSAGE_SIZE),
    };
    Facts {
        name,
        hostname: s(u.nodename()),
        os: s(u.sysname()),
        arch: s(u.machine()),
        kernel: s(u.release()),
        pid: std::process::id(),
        rss_kib: rss_kib(std::process::id()).unwrap_or(0),
        max_message_size: max,
    }
}

/// Detaches the context from its parent (see [`crate::detach`]).
#[crate::remote]
pub fn detach() -> std::io::Result<()> {
    crate::detach()
}

/// Removes this context's image and spore's first stage from the cache of
/// the user it runs as (`$XDG_CACHE_HOME/spore`, by default
/// `~/.cache/spore`), so that the next contact sends both again; entries of
/// other images stay. Returns how many entries it removed (0 when there is
/// no cache).
#[crate::remote]
pub fn forget_cached_image() -> std::io::Result<u32> {
    let dir = match (std::env::var_os("XDG_CACHE_HOME"), std::env::var_os("HOME")) {
        (Some(x), _) if !x.is_empty() => std::path::PathBuf::from(x),
        (_, Some(h)) => std::path::Path::new(&h).join(".cache"),
        _ => return Ok(0),
    }
    .join("spore");
    // The running image is the one that came from the cache (or was sent):
    // its hash names its entry.
    let image = std::fs::read("/proc/self/exe")
        .map_err(|e| std::io::Error::new(e.kind(), format!("/proc/self/exe: {e}")))?;
    let mut removed = 0;
    for name in [
        crate::bootstrap::image::sha256_hex(&image),
        crate::bootstrap::first_stage_sha256().to_owned(),
    ] {
        let path = dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("{}: {e}", path.display()),
                ));
            }
        }
    }
    Ok(removed)
}

/// Does nothing; a call of it measures the round trip.
#[crate::remote]
pub fn noop() {}

/// The resident set size of process `pid` in KiB, from /proc.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// How a command run by [`run`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunStatus {
    /// Exit code, when it exited.
    pub code: Option<i32>,
    /// Signal number, when a signal ended it.
    pub signal: Option<i32>,
}

impl RunStatus {
    /// Exited with status 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (Some(c), _) => write!(f, "exit status {c}"),
            (None, Some(s)) => write!(f, "killed by signal {s}"),
            (None, None) => f.write_str("unknown status"),
        }
    }
}

/// Runs `argv` in the context (stdin is /dev/null). Its stdout and stderr
/// lines are forwarded as the context's output before this returns, so they
/// arrive ahead of the result.
#[crate::remote]
pub fn run(argv: Vec<String>) -> Result<RunStatus, std::io::Error> {
    use std::os::unix::process::ExitStatusExt;
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command"))?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| std::io::Error::new(e.kind(), format!("failed to start {program}: {e}")))?;
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let err_thread = std::thread::spawn(move || forward_lines(stderr, LogOrigin::Stderr));
    forward_lines(stdout, LogOrigin::Stdout);
    let _ = err_thread.join();
    let status = child.wait()?;
    Ok(RunStatus {
        code: status.code(),
        signal: status.signal(),
    })
}

fn forward_lines(r: impl std::io::Read, origin: LogOrigin) {
    let mut r = BufReader::new(r);
    let mut line = Vec::new();
    loop {
        line.clear();
        match r.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                match crate::bootstrap::child::inner() {
                    Some(inner) => crate::bootstrap::child::send_line(inner, origin, &line),
                    None => println!("{}", String::from_utf8_lossy(&line)),
                }
            }
        }
    }
}
