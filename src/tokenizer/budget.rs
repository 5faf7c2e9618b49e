//! A memory budget for one thread. A chat template is code from the model file, and
//! minijinja's fuel counts instructions, not bytes: `{% set s.v = s.v ~ s.v %}` 64 times asks
//! for 2^64 bytes in 64 loop turns. The global allocator counts what a budgeted thread holds;
//! past its budget the thread stops inside the allocator — an allocation cannot fail
//! gracefully (Rust aborts), and a thread cannot be killed — and [`run`], which waits for it
//! from another thread, returns [`OverBudget`] and abandons it with what it holds. A thread
//! stopped while it holds a lock (stderr's, in a panic hook) keeps it: budgets must leave
//! room for the work, not pinch it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::time::Duration;

/// The system allocator, counting the bytes of threads that run under [`run`].
pub struct Counting;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

thread_local! {
    /// 0: no budget (every thread but those [`run`] starts).
    static BUDGET: Cell<usize> = const { Cell::new(0) };
    static HELD: Cell<usize> = const { Cell::new(0) };
    /// Set when the thread stops at its budget; points into an `Arc` the thread keeps.
    static TRIPPED: Cell<*const AtomicBool> = const { Cell::new(std::ptr::null()) };
}

fn charge(n: usize) {
    // `try_with`: an allocation during thread teardown finds no budget, which is right.
    let over = BUDGET
        .try_with(|b| {
            let budget = b.get();
            budget != 0
                && HELD.with(|h| {
                    let held = h.get().saturating_add(n);
                    h.set(held);
                    held > budget
                })
        })
        .unwrap_or(false);
    if over {
        let flag = TRIPPED.with(Cell::get);
        // SAFETY: set by `run` to an `Arc` the thread holds until it ends, which it never
        // does from here.
        if let Some(flag) = unsafe { flag.as_ref() } {
            flag.store(true, Ordering::Release);
        }
        // No allocation from here on: sleeping is a system call.
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

fn refund(n: usize) {
    let _ = BUDGET.try_with(|b| {
        if b.get() != 0 {
            HELD.with(|h| h.set(h.get().saturating_sub(n)));
        }
    });
}

// SAFETY: every call is passed on to `System` unchanged; `charge` and `refund` only touch
// thread-local counters (const-initialised, no destructor, so no allocation) and never unwind.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        charge(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        charge(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        refund(layout.size());
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            charge(new_size - layout.size());
        } else {
            refund(layout.size() - new_size);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Why a budgeted thread was abandoned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverBudget {
    /// It held more than `budget` bytes of heap at once.
    Heap { budget: usize },
    /// It ran longer than its deadline (a loop that allocates nothing, e.g. a template's
    /// `1e9 * ()`, which iterates a billion empty sequences).
    Time { deadline: Duration },
}

/// Runs `f` on a thread of its own (with `stack` bytes of stack) that may hold at most
/// `budget` bytes of heap at once and run for `deadline`. Past either, the thread is
/// abandoned — stopped with its memory taken, or still running — and this returns
/// `Err(OverBudget)`; `None` inside is a panic of `f`.
pub fn run<T: Send + 'static>(
    budget: usize,
    deadline: Duration,
    stack: usize,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<Option<T>, OverBudget> {
    let start = std::time::Instant::now();
    let tripped = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&tripped);
    let (tx, rx) = channel();
    let spawned = std::thread::Builder::new()
        .name("budgeted".into())
        .stack_size(stack)
        .spawn(move || {
            TRIPPED.with(|t| t.set(Arc::as_ptr(&flag)));
            BUDGET.with(|b| b.set(budget));
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok();
            BUDGET.with(|b| b.set(0));
            let _ = tx.send(out);
            drop(flag);
        });
    if spawned.is_err() {
        return Ok(None);
    }
    loop {
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(out) => return Ok(out),
            Err(RecvTimeoutError::Disconnected) => return Ok(None),
            Err(RecvTimeoutError::Timeout) if tripped.load(Ordering::Acquire) => {
                return Err(OverBudget::Heap { budget });
            }
            Err(RecvTimeoutError::Timeout) if start.elapsed() > deadline => {
                return Err(OverBudget::Time { deadline });
            }
            Err(RecvTimeoutError::Timeout) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_past_its_budget_is_stopped_and_one_within_it_returns() {
        let long = Duration::from_secs(60);
        let got = run(64 << 20, long, 1 << 20, || {
            let mut s = String::from("x");
            for _ in 0..64 {
                s = format!("{s}{s}");
            }
            s.len()
        });
        assert_eq!(got, Err(OverBudget::Heap { budget: 64 << 20 }));
        let fits = run(64 << 20, long, 1 << 20, || vec![1u8; 1 << 20].len());
        assert_eq!(fits, Ok(Some(1 << 20)));
        // A panic inside is a result, not the caller's panic (with room for the panic hook,
        // which symbolises a backtrace while it holds the lock of stderr).
        assert_eq!(
            run(256 << 20, long, 1 << 20, || panic!("inside")),
            Ok(None::<()>)
        );
        // A thread that runs on without allocating is abandoned at its deadline.
        let short = Duration::from_millis(200);
        let t = std::time::Instant::now();
        let spin = run(64 << 20, short, 1 << 20, || {
            let t = std::time::Instant::now();
            while t.elapsed() < Duration::from_secs(5) {
                std::hint::spin_loop();
            }
        });
        assert_eq!(spin, Err(OverBudget::Time { deadline: short }));
        assert!(t.elapsed() < Duration::from_secs(2));
    }
}
