//! The JIT's second thread: a helper that spins while a run is in progress, so that a split
//! kernel hands its second half over in well under a microsecond, and parks between runs.
//!
//! A general pool (rayon) puts an idle worker to sleep within microseconds, and waking it costs
//! tens of microseconds on a virtual machine: measured here, a `join` of two 30 µs halves took
//! 44 µs when the step spent 20 µs on one thread before it, and 71 µs after 100 µs. A training
//! step alternates split products with single-threaded kernels, so it paid that wake-up at
//! almost every split. Here the helper spins (`spin_loop`, a pause per iteration) from
//! [`Pair::install`] until the run ends and for [`LINGER`] after, so the next step's first
//! split finds it awake, and parks only when the runs stop coming.
//!
//! One job at a time: [`Pair::join`] posts its second closure, runs the first, and waits for
//! the helper to finish the second before it returns (or unwinds), so the posted closure, which
//! borrows the caller's stack, outlives its use.

use std::cell::{Cell, UnsafeCell};
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

/// How long the helper keeps spinning after a run before it parks.
const LINGER: Duration = Duration::from_micros(300);

const IDLE: u8 = 0;
const POSTED: u8 = 1;
const DONE: u8 = 2;

/// A posted job: a pointer to the caller's closure slot and the function that runs it.
type Job = (*mut (), unsafe fn(*mut ()));

struct Shared {
    /// `IDLE` → (caller posts) `POSTED` → (helper ran it) `DONE` → (caller saw it) `IDLE`.
    state: AtomicU8,
    /// Written by the caller only while `state` is `IDLE`, read by the helper only while it is
    /// `POSTED`; the release/acquire pairs on `state` order the two.
    job: UnsafeCell<Option<Job>>,
    /// A run is in progress: spin rather than park.
    active: AtomicBool,
    /// The posted job panicked.
    panicked: AtomicBool,
    quit: AtomicBool,
}

// SAFETY: `job` is the only non-atomic field, and its accesses never overlap (see the field);
// the closure its pointer leads to is `Send` (`Pair::join` requires it).
unsafe impl Sync for Shared {}
// SAFETY: as for `Sync`: the raw pointer in `job` is only a handle on a `Send` closure.
unsafe impl Send for Shared {}

/// The caller's side. Not `Sync`: only the thread that owns it posts jobs, one at a time.
pub struct Pair {
    shared: Arc<Shared>,
    helper: Thread,
    handle: Option<JoinHandle<()>>,
    not_sync: PhantomData<Cell<()>>,
}

impl std::fmt::Debug for Pair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pair").finish_non_exhaustive()
    }
}

fn helper_loop(shared: &Shared) {
    sparsec_ir::fpenv::flush_subnormals_in_this_thread();
    let mut idle_since: Option<Instant> = None;
    loop {
        if shared.state.load(Ordering::Acquire) == POSTED {
            // SAFETY: the caller wrote the job before its release store of `POSTED`, and does
            // not touch it again until it sees `DONE`.
            let job = unsafe { (*shared.job.get()).take() };
            if let Some((data, call)) = job {
                // SAFETY: `call` is the monomorphised runner of the closure type behind `data`,
                // which the caller keeps alive until it sees `DONE`.
                let ran = catch_unwind(AssertUnwindSafe(|| unsafe { call(data) }));
                if ran.is_err() {
                    shared.panicked.store(true, Ordering::Relaxed);
                }
            }
            shared.state.store(DONE, Ordering::Release);
            idle_since = None;
            continue;
        }
        if shared.quit.load(Ordering::Acquire) {
            return;
        }
        if shared.active.load(Ordering::Acquire) {
            idle_since = None;
            std::hint::spin_loop();
            continue;
        }
        let since = *idle_since.get_or_insert_with(Instant::now);
        if since.elapsed() < LINGER {
            std::hint::spin_loop();
        } else {
            // An `unpark` before this returns at once (the token), so no post is missed.
            thread::park();
            idle_since = None;
        }
    }
}

/// Sets `active` back to false when the run ends, also by unwinding.
struct EndRun<'a>(&'a AtomicBool);

impl Drop for EndRun<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Waits for the posted job to be done, also when the caller's own half unwinds.
struct AwaitHelper<'a>(&'a Shared);

impl Drop for AwaitHelper<'_> {
    fn drop(&mut self) {
        while self.0.state.load(Ordering::Acquire) != DONE {
            std::hint::spin_loop();
        }
        self.0.state.store(IDLE, Ordering::Relaxed);
    }
}

impl Pair {
    /// Start the helper thread.
    pub fn new() -> Result<Pair, String> {
        let shared = Arc::new(Shared {
            state: AtomicU8::new(IDLE),
            job: UnsafeCell::new(None),
            active: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            quit: AtomicBool::new(false),
        });
        let theirs = Arc::clone(&shared);
        let handle = thread::Builder::new()
            .name("sparsec-jit-1".into())
            .spawn(move || helper_loop(&theirs))
            .map_err(|e| format!("cannot start the JIT's second thread: {e}"))?;
        Ok(Pair {
            shared,
            helper: handle.thread().clone(),
            handle: Some(handle),
            not_sync: PhantomData,
        })
    }

    /// Run `f` (a run of a program) on this thread with the helper awake for [`Pair::join`].
    pub fn install<R>(&self, f: impl FnOnce() -> R) -> R {
        self.shared.active.store(true, Ordering::Release);
        self.helper.unpark();
        let _end = EndRun(&self.shared.active);
        f()
    }

    /// Run `a` on this thread and `b` on the helper; return when both have.
    pub fn join(&self, a: impl FnOnce(), b: impl FnOnce() + Send) {
        if self.shared.state.load(Ordering::Acquire) != IDLE {
            // Called from inside a join's first half: the helper is taken, so both run here.
            a();
            b();
            return;
        }
        /// Runs the closure in the slot `data` points to, once.
        ///
        /// # Safety
        ///
        /// `data` points to a live `Option<B>` that no one else accesses meanwhile.
        unsafe fn run<B: FnOnce()>(data: *mut ()) {
            // SAFETY: the caller's contract.
            let slot = unsafe { &mut *data.cast::<Option<B>>() };
            if let Some(b) = slot.take() {
                b();
            }
        }
        fn runner_of<B: FnOnce()>(_: &Option<B>) -> unsafe fn(*mut ()) {
            run::<B>
        }
        let mut slot = Some(b);
        let call = runner_of(&slot);
        let data: *mut () = (&mut slot as *mut Option<_>).cast();
        // SAFETY: `state` is `IDLE` (every join waits for `DONE` and resets it before it
        // returns), so the helper does not read `job` now.
        unsafe { *self.shared.job.get() = Some((data, call)) };
        self.shared.state.store(POSTED, Ordering::Release);
        self.helper.unpark();
        {
            // `slot` must outlive the helper's use of it, whatever `a` does.
            let _wait = AwaitHelper(&self.shared);
            a();
        }
        if self.shared.panicked.swap(false, Ordering::Relaxed) {
            panic!("a kernel's second half panicked on the JIT's second thread");
        }
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.shared.quit.store(true, Ordering::Release);
        self.helper.unpark();
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn join_runs_both_halves_on_two_threads_inside_and_outside_a_run() {
        let pair = Pair::new().unwrap();
        let here = thread::current().id();
        let count = AtomicUsize::new(0);
        for active in [true, false] {
            let body = || {
                for _ in 0..1000 {
                    let mut other = None;
                    pair.join(
                        || {
                            count.fetch_add(1, Ordering::Relaxed);
                        },
                        || {
                            count.fetch_add(1, Ordering::Relaxed);
                            other = Some(thread::current().id());
                        },
                    );
                    assert!(other.is_some_and(|id| id != here));
                }
            };
            if active {
                pair.install(body);
            } else {
                body();
            }
        }
        assert_eq!(count.load(Ordering::Relaxed), 4000);
    }

    #[test]
    fn a_join_inside_a_join_runs_on_the_caller() {
        let pair = Pair::new().unwrap();
        let count = AtomicUsize::new(0);
        let bump = || {
            count.fetch_add(1, Ordering::Relaxed);
        };
        pair.join(|| pair.join(bump, bump), bump);
        assert_eq!(count.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn a_panicking_half_is_reported_and_the_pair_goes_on() {
        let pair = Pair::new().unwrap();
        let r = catch_unwind(AssertUnwindSafe(|| pair.join(|| {}, || panic!("half"))));
        assert!(r.is_err());
        let mut ran = false;
        pair.join(|| {}, || ran = true);
        assert!(ran);
    }
}
