//! The only module with `unsafe`. Every block states why it is sound.
//!
//! Everything else goes through rustix's safe wrappers; what is here is what
//! rustix cannot express safely: filling a `BytesMut`'s spare capacity,
//! rewriting the process's argv area, and a `pre_exec` hook (between fork
//! and exec) that sets a controlling terminal.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use bytes::BytesMut;

/// Buffers at least this large are backed by transparent huge pages where
/// the kernel allows it: one fault per 2 MiB instead of per 4 KiB.
const HUGE_PAGES_FROM: usize = 4 << 20;

/// Asks the kernel to back `region` with transparent huge pages (a hint;
/// failure changes nothing). Only whole pages inside `region` are advised.
fn advise_huge_pages(region: &mut [std::mem::MaybeUninit<u8>]) {
    const PAGE: usize = 4096;
    let start = (region.as_mut_ptr() as usize).next_multiple_of(PAGE);
    let end = (region.as_mut_ptr() as usize + region.len()) & !(PAGE - 1);
    if end > start {
        // SAFETY: [start, end) lies inside `region`, memory this borrow owns
        // exclusively; MADV_HUGEPAGE only changes how the kernel backs those
        // pages, never their contents or whether they are mapped.
        let _ = unsafe {
            rustix::mm::madvise(
                start as *mut std::ffi::c_void,
                end - start,
                rustix::mm::Advice::LinuxHugepage,
            )
        };
    }
}

/// An empty buffer with room for `capacity` bytes; a large one is backed by
/// huge pages (see [`HUGE_PAGES_FROM`]).
pub(crate) fn buffer(capacity: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(capacity);
    if capacity >= HUGE_PAGES_FROM {
        advise_huge_pages(v.spare_capacity_mut());
    }
    v
}

/// Reads at most `max` bytes from `fd` into the spare capacity of `buf`,
/// growing it if needed, without zero-filling first. Returns the number of
/// bytes read (0 at end of file).
pub(crate) fn read_into(fd: impl AsFd, buf: &mut BytesMut, max: usize) -> io::Result<usize> {
    if buf.capacity() - buf.len() < max {
        buf.reserve(max);
        if max >= HUGE_PAGES_FROM {
            advise_huge_pages(buf.spare_capacity_mut());
        }
    }
    let spare = buf.spare_capacity_mut();
    let limit = spare.len().min(max);
    let (filled, _) = rustix::io::read(fd, &mut spare[..limit])?;
    let n = filled.len();
    // SAFETY: `read` initialised exactly the first `n` bytes of the spare
    // capacity (it returned them as `filled`), and `n <= limit <= spare.len()`,
    // so the new length covers only initialised memory within capacity.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// Registers `fd` with the current tokio runtime's reactor for `interest`
/// only (a reader that also asked for writability would wake on every
/// change of the socket's send buffer).
pub(crate) fn register(
    fd: OwnedFd,
    interest: tokio::io::Interest,
) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: `OwnedFd` owns an open descriptor, closes it only when dropped
    // (which happens inside the AsyncFd's drop, after deregistration), and
    // `as_raw_fd` always returns that same descriptor, which is exactly what
    // `register_with_interest` requires.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, interest) }
        .map_err(|e| e.into_parts().1)
}

/// A descriptor registered with the reactor for as long as it is borrowed.
pub(crate) struct BorrowedRegistration<'fd> {
    registered: tokio::io::unix::AsyncFd<std::os::fd::RawFd>,
    _fd: std::marker::PhantomData<BorrowedFd<'fd>>,
}

impl std::ops::Deref for BorrowedRegistration<'_> {
    type Target = tokio::io::unix::AsyncFd<std::os::fd::RawFd>;
    fn deref(&self) -> &Self::Target {
        &self.registered
    }
}

/// Registers a borrowed descriptor for `interest` until the result is
/// dropped: for waiting on an fd only now and then (a writer waiting for
/// room), without waking on its readiness the rest of the time.
pub(crate) fn register_borrowed(
    fd: BorrowedFd<'_>,
    interest: tokio::io::Interest,
) -> io::Result<BorrowedRegistration<'_>> {
    use std::os::fd::AsRawFd;
    // SAFETY: the borrow keeps the descriptor open and referring to the same
    // file description for `'fd`, and the registration cannot outlive `'fd`
    // (its lifetime is tied to the borrow). A `RawFd` always returns itself
    // from `as_raw_fd`, and dropping it closes nothing.
    let registered =
        unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd.as_raw_fd(), interest) }
            .map_err(|e| e.into_parts().1)?;
    Ok(BorrowedRegistration {
        registered,
        _fd: std::marker::PhantomData,
    })
}

/// Names the process `name`: the kernel's `comm` (what `ps -o comm`, `top`
/// and `pgrep` show, cut to 15 bytes) and the argv area (what `ps -f` shows),
/// overwritten in place when it is long enough.
pub(crate) fn set_process_name(name: &str) {
    if let Ok(c) = std::ffi::CString::new(
        name.as_bytes()
            .iter()
            .copied()
            .take(15)
            .collect::<Vec<u8>>(),
    ) {
        let _ = rustix::thread::set_name(&c);
    }
    let _ = overwrite_argv(name);
}

/// Overwrites the original argv strings with `name` followed by NULs, the
/// way setproctitle does, using the bounds the kernel reports in
/// /proc/self/stat (fields 48 and 49: arg_start, arg_end).
fn overwrite_argv(name: &str) -> io::Result<()> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // The command name (field 2) may contain spaces; fields after it start
    // past the last ')'.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3, so field N is at index N - 3.
    let parse = |n: usize| -> Option<usize> { fields.get(n - 3)?.parse().ok() };
    let (Some(start), Some(end)) = (parse(48), parse(49)) else {
        return Err(io::Error::other(
            "arg_start/arg_end not found in /proc/self/stat",
        ));
    };
    if start == 0 || end <= start || end - start > 1 << 20 {
        return Err(io::Error::other("implausible argv bounds"));
    }
    let len = end - start;
    let mut bytes = vec![0u8; len];
    let n = name.len().min(len - 1);
    bytes[..n].copy_from_slice(&name.as_bytes()[..n]);
    // SAFETY: [arg_start, arg_end) is the process's own argv string area,
    // mapped writable in our stack for the life of the process (the kernel
    // reports it for exactly this use). We write exactly `len` bytes inside
    // it. Rust's std copied argv into its own storage at start-up, so no Rust
    // reference aliases this memory; the only readers are the kernel (for
    // /proc/<pid>/cmdline) and C code reading argv, which sees a valid
    // NUL-terminated string.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), start as *mut u8, len) };
    Ok(())
}

/// A new pseudo-terminal: the controller (spore's end) and the terminal
/// (the end a child gets as its controlling terminal), both close-on-exec.
pub(crate) fn open_pty() -> io::Result<(OwnedFd, OwnedFd)> {
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    let controller = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    grantpt(&controller)?;
    unlockpt(&controller)?;
    let path = ptsname(&controller, Vec::new())?;
    let terminal = rustix::fs::open(
        path.as_c_str(),
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    Ok((controller, terminal))
}

/// Makes `terminal` the controlling terminal of the process `cmd` starts,
/// in a new session: what it opens as `/dev/tty` (to prompt for a secret)
/// is then spore's pty, while its stdin and stdout stay the stream. The fd
/// itself is close-on-exec; the session keeps the terminal.
pub(crate) fn set_controlling_terminal(cmd: &mut std::process::Command, terminal: OwnedFd) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the hook runs in the child between fork and exec. It makes
    // two system calls (setsid, ioctl TIOCSCTTY), both async-signal-safe,
    // and neither allocates nor takes a lock; `terminal` is only borrowed.
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::setsid()?;
            rustix::process::ioctl_tiocsctty(&terminal)?;
            Ok(())
        });
    }
}
