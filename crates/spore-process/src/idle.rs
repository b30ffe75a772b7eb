//! How the node's thread waits for work: when work has lately come back
//! soon after the thread ran out of it, the thread spins for a moment,
//! giving its CPU to any other thread that wants it, before it sleeps.
//!
//! Work from other threads (a frame from another context, a command from
//! a [`crate::Node`] handle) wakes the node's thread. Waking a thread that
//! sleeps costs microseconds (more on a virtual machine, where a halted
//! virtual CPU is woken through the hypervisor), and a message exchange
//! with another context wakes a node once per message. So when the node's
//! last idle spell was shorter than [`SPIN`], its thread first waits up to
//! that long, watching for the wake-up, so that the waker only has to flip
//! a flag. It waits in `sched_yield`, not in a busy loop: a thread that
//! has work on the same CPU (the I/O loop with the next frame, another
//! context's threads) runs first, so a busy machine loses no CPU time to
//! it, while an idle CPU is what it spends. A node whose work comes rarely
//! sleeps at once. (BEAM's schedulers busy-wait before they sleep for the
//! same reason.)

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context as TaskCx, Poll, Wake, Waker};
use std::time::{Duration, Instant};

/// The longest the node's thread waits for work before it sleeps. Longer
/// than a round trip between two contexts of one machine, so that a
/// conversation between processes there keeps both nodes awake.
const SPIN: Duration = Duration::from_micros(50);

/// What the runtime's park hooks share with the node's main future.
pub(crate) struct Idle {
    /// Set when the node's main future is woken: there is work.
    woken: AtomicBool,
    /// When the thread last ran out of work, in nanoseconds since `epoch`.
    idle_since: AtomicU64,
    /// Whether to spin before the next sleep: the last idle spell was
    /// shorter than [`SPIN`].
    spin: AtomicBool,
    epoch: Instant,
}

impl Idle {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            woken: AtomicBool::new(false),
            idle_since: AtomicU64::new(0),
            spin: AtomicBool::new(false),
            epoch: Instant::now(),
        })
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// The runtime is about to sleep (its `on_thread_park` hook): first
    /// wait for work up to [`SPIN`], if it came back that soon last time.
    pub(crate) fn before_park(&self) {
        let start = self.now();
        self.idle_since.store(start, Ordering::Relaxed);
        if !self.spin.load(Ordering::Relaxed) {
            return;
        }
        let limit = start + SPIN.as_nanos() as u64;
        while !self.woken.load(Ordering::Acquire) && self.now() < limit {
            std::thread::yield_now();
        }
    }

    /// The runtime woke (its `on_thread_unpark` hook): wait before the next
    /// sleep if this idle spell was short.
    pub(crate) fn after_unpark(&self) {
        let idle = self.now() - self.idle_since.load(Ordering::Relaxed);
        self.spin
            .store(idle < SPIN.as_nanos() as u64, Ordering::Relaxed);
    }
}

/// The node's main future, its wake-ups recorded in [`Idle`] (the park
/// hook cannot see the runtime's own flag).
pub(crate) struct WakeRecorded<F> {
    fut: Pin<Box<F>>,
    idle: Arc<Idle>,
    /// The waker `fut` is polled with, and the runtime's that it forwards
    /// to.
    waker: Option<(Waker, Waker)>,
}

impl<F> WakeRecorded<F> {
    pub(crate) fn new(fut: F, idle: Arc<Idle>) -> Self {
        Self {
            fut: Box::pin(fut),
            idle,
            waker: None,
        }
    }
}

/// Records a wake-up in [`Idle`], then passes it on.
struct Forward {
    idle: Arc<Idle>,
    to: Waker,
}

impl Wake for Forward {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.idle.woken.store(true, Ordering::Release);
        self.to.wake_by_ref();
    }
}

impl<F: Future> Future for WakeRecorded<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskCx<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let current = this
            .waker
            .as_ref()
            .is_some_and(|(_, to)| to.will_wake(cx.waker()));
        if !current {
            let forward = Waker::from(Arc::new(Forward {
                idle: this.idle.clone(),
                to: cx.waker().clone(),
            }));
            this.waker = Some((forward, cx.waker().clone()));
        }
        // Cleared before the poll: a wake-up during it is work for after.
        this.idle.woken.store(false, Ordering::Relaxed);
        let (forward, _) = this.waker.as_ref().expect("set above");
        this.fut.as_mut().poll(&mut TaskCx::from_waker(forward))
    }
}
