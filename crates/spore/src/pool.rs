//! The bounded pool that runs blocking remote functions off the I/O loop.
//!
//! Why not tokio's `spawn_blocking`: it wakes (or starts) one thread per
//! job, so a burst of short calls wakes dozens of threads that then fight
//! over two cores. Here:
//!
//! - at most `active_limit` threads (the number of cores) are woken for
//!   queued work, and wake-ups chain: a woken thread wakes the next only if
//!   work is still waiting;
//! - a thread that finishes a job takes the next one without sleeping;
//! - a monitor adds a thread (up to `max_threads`) whenever no queued job
//!   has started for [`STALL`] — that is, when the running jobs block
//!   (sleep, I/O, waiting on another call), so a blocked job never holds up
//!   the others for longer than that;
//! - threads idle for [`KEEP_ALIVE`] exit.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// No queued job started for this long: the running ones are blocked.
pub(crate) const STALL: Duration = Duration::from_millis(1);
/// An idle thread exits after this long.
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(10);

type Job = Box<dyn FnOnce() + Send>;

/// A pool of threads for blocking jobs. Cheap to clone.
#[derive(Clone)]
pub(crate) struct CallPool {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Idle threads wait here.
    work: Condvar,
    /// The monitor waits here while the queue is empty.
    monitor: Condvar,
    max_threads: usize,
    active_limit: usize,
    /// Entered on every pool thread, so jobs can use the runtime's handle.
    rt: Option<tokio::runtime::Handle>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    threads: usize,
    idle: usize,
    running: usize,
    /// A wake-up was sent and no thread has taken it yet.
    waking: bool,
    /// A thread is being started.
    spawning: bool,
    /// Jobs started so far: the monitor's measure of progress.
    started: u64,
    /// The monitor thread exists.
    monitor_running: bool,
    /// The monitor checks for stalls every [`STALL`] (else it sleeps).
    monitor_watching: bool,
}

impl CallPool {
    /// A pool of at most `max_threads` threads, of which at most
    /// `active_limit` are woken for queued work unless jobs block.
    pub(crate) fn new(
        max_threads: usize,
        active_limit: usize,
        rt: Option<tokio::runtime::Handle>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                work: Condvar::new(),
                monitor: Condvar::new(),
                max_threads: max_threads.max(1),
                active_limit: active_limit.clamp(1, max_threads.max(1)),
                rt,
            }),
        }
    }

    /// Queues `job`; a pool thread runs it. A panic in it is contained (the
    /// job is expected to catch and report its own).
    pub(crate) fn submit(&self, job: impl FnOnce() + Send + 'static) {
        let shared = &self.shared;
        let mut st = shared.state.lock().unwrap();
        st.queue.push_back(Box::new(job));
        let wake = if st.running + usize::from(st.waking) < shared.active_limit {
            shared.plan_wake(&mut st)
        } else {
            Wake::Nobody
        };
        drop(st);
        // Only a job that got no thread of its own can stall: only then
        // does the monitor need to watch.
        if wake == Wake::Nobody {
            shared.watch();
        } else {
            shared.wake(wake);
        }
    }

    /// Threads in the pool now (for tests and stats).
    #[cfg(test)]
    fn threads(&self) -> usize {
        self.shared.state.lock().unwrap().threads
    }
}

/// What to do, once the state lock is released, to get a thread onto the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    Nobody,
    /// Wake an idle thread.
    Idle,
    /// Start a thread (already counted in `threads`).
    Spawn,
}

impl Shared {
    /// Decides how to get one more thread onto the queue: wake an idle one,
    /// or start one. Done under the lock; [`Shared::wake`] acts on it after,
    /// so the woken thread does not find the lock still held.
    fn plan_wake(&self, st: &mut State) -> Wake {
        if st.idle > 0 {
            if st.waking {
                return Wake::Nobody; // one is on its way; it chains further
            }
            st.waking = true;
            Wake::Idle
        } else if !st.spawning && st.threads < self.max_threads {
            st.spawning = true;
            st.threads += 1;
            Wake::Spawn
        } else {
            Wake::Nobody
        }
    }

    /// Has the monitor watch for stalls (starting it if needed): a queued
    /// job has no thread of its own coming.
    fn watch(self: &Arc<Self>) {
        let mut st = self.state.lock().unwrap();
        let was_watching = std::mem::replace(&mut st.monitor_watching, true);
        let start = !st.monitor_running;
        st.monitor_running = true;
        drop(st);
        if start {
            if !self.start_thread("spore-pool-monitor", Shared::monitor) {
                // Retried by the next job that gets no thread.
                self.state.lock().unwrap().monitor_running = false;
            }
        } else if !was_watching {
            self.monitor.notify_one();
        }
    }

    /// Starts a pool thread running `body`; false if the system refused.
    fn start_thread(self: &Arc<Self>, name: &str, body: fn(Arc<Self>)) -> bool {
        let shared = self.clone();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || body(shared))
            .is_ok()
    }

    fn wake(self: &Arc<Self>, wake: Wake) {
        match wake {
            Wake::Nobody => {}
            Wake::Idle => self.work.notify_one(),
            Wake::Spawn => {
                if !self.start_thread("spore-worker", Shared::worker) {
                    // Out of threads for now: the monitor retries.
                    {
                        let mut st = self.state.lock().unwrap();
                        st.spawning = false;
                        st.threads -= 1;
                    }
                    self.watch();
                }
            }
        }
    }

    fn worker(self: Arc<Self>) {
        let _rt = self.rt.as_ref().map(|h| h.enter());
        let mut st = self.state.lock().unwrap();
        st.spawning = false;
        loop {
            if let Some(job) = st.queue.pop_front() {
                st.running += 1;
                st.started += 1;
                let wake = if !st.queue.is_empty()
                    && st.running + usize::from(st.waking) < self.active_limit
                {
                    self.plan_wake(&mut st)
                } else {
                    Wake::Nobody
                };
                drop(st);
                self.wake(wake);
                let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                st = self.state.lock().unwrap();
                st.running -= 1;
                continue;
            }
            st.idle += 1;
            let (guard, timeout) = self.work.wait_timeout(st, KEEP_ALIVE).unwrap();
            st = guard;
            st.idle -= 1;
            st.waking = false;
            if timeout.timed_out() && st.queue.is_empty() {
                st.threads -= 1;
                return;
            }
        }
    }

    /// While watching, adds a thread whenever queued work makes no progress
    /// for [`STALL`]; stops watching when the queue empties.
    fn monitor(self: Arc<Self>) {
        let mut st = self.state.lock().unwrap();
        loop {
            while !st.monitor_watching {
                st = self.monitor.wait(st).unwrap();
            }
            let seen = st.started;
            // At the thread limit there is nothing to add: look less often.
            let pause = if st.threads >= self.max_threads {
                STALL * 100
            } else {
                STALL
            };
            st = self.monitor.wait_timeout(st, pause).unwrap().0;
            if st.queue.is_empty() {
                st.monitor_watching = false;
            } else if st.started == seen {
                // Every running job is blocked: bring in one more thread,
                // whatever the active limit says.
                st.waking = false;
                let wake = self.plan_wake(&mut st);
                drop(st);
                self.wake(wake);
                st = self.state.lock().unwrap();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::time::Instant;

    #[test]
    fn runs_every_job() {
        let pool = CallPool::new(8, 2, None);
        let done = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = mpsc::channel();
        for _ in 0..10_000 {
            let done = done.clone();
            let tx = tx.clone();
            pool.submit(move || {
                if done.fetch_add(1, Ordering::SeqCst) == 9_999 {
                    tx.send(()).unwrap();
                }
            });
        }
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(done.load(Ordering::SeqCst), 10_000);
        assert!(pool.threads() <= 8);
    }

    #[test]
    fn blocked_jobs_do_not_hold_up_the_others() {
        // Two active threads at most, but ten jobs that all block until
        // the last one runs: only added threads can finish them.
        let pool = CallPool::new(16, 2, None);
        let gate = Arc::new((Mutex::new(0usize), Condvar::new()));
        let (tx, rx) = mpsc::channel();
        let start = Instant::now();
        for _ in 0..10 {
            let gate = gate.clone();
            let tx = tx.clone();
            pool.submit(move || {
                let (count, cv) = &*gate;
                let mut n = count.lock().unwrap();
                *n += 1;
                cv.notify_all();
                drop(cv.wait_while(n, |n| *n < 10).unwrap());
                tx.send(()).unwrap();
            });
        }
        for _ in 0..10 {
            rx.recv_timeout(Duration::from_secs(10))
                .expect("a blocked job held up the rest");
        }
        assert!(pool.threads() >= 10);
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_panicking_job_leaves_the_pool_working() {
        let pool = CallPool::new(1, 1, None);
        pool.submit(|| panic!("contained"));
        let (tx, rx) = mpsc::channel();
        pool.submit(move || tx.send(7).unwrap());
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 7);
    }
}
