//! Time behind a small trait, so the timing logic runs on the real monotonic clock in the product
//! and on a simulated one in tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A monotonic clock. `now` is measured from an arbitrary fixed origin; for [`MonotonicClock`] it
/// is `CLOCK_MONOTONIC`, the clock V4L2 stamps frames with.
pub trait Clock: Send + Sync {
    fn now(&self) -> Duration;
    /// Returns once `now() >= deadline`.
    fn sleep_until(&self, deadline: Duration);
}

/// `CLOCK_MONOTONIC`, the same time base as V4L2 kernel timestamps.
#[derive(Debug, Clone, Copy, Default)]
pub struct MonotonicClock;

pub fn monotonic_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

impl Clock for MonotonicClock {
    fn now(&self) -> Duration {
        monotonic_now()
    }
    fn sleep_until(&self, deadline: Duration) {
        let ts = libc::timespec {
            tv_sec: deadline.as_secs() as libc::time_t,
            tv_nsec: deadline.subsec_nanos() as libc::c_long,
        };
        // Absolute sleep: no drift from the time spent computing the remaining interval.
        loop {
            // SAFETY: the timespec outlives the call; a null remainder is allowed with TIMER_ABSTIME.
            let rc = unsafe {
                libc::clock_nanosleep(
                    libc::CLOCK_MONOTONIC,
                    libc::TIMER_ABSTIME,
                    &ts,
                    std::ptr::null_mut(),
                )
            };
            if rc != libc::EINTR {
                break;
            }
        }
    }
}

/// Simulated time for deterministic tests: it moves only when told to, or when a sleeper sleeps.
#[derive(Debug, Clone, Default)]
pub struct SimClock {
    nanos: Arc<AtomicU64>,
}

impl SimClock {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn advance(&self, by: Duration) {
        self.nanos.fetch_add(by.as_nanos() as u64, Ordering::SeqCst);
    }
    pub fn set(&self, t: Duration) {
        self.nanos.store(t.as_nanos() as u64, Ordering::SeqCst);
    }
}

impl Clock for SimClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::SeqCst))
    }
    fn sleep_until(&self, deadline: Duration) {
        self.nanos
            .fetch_max(deadline.as_nanos() as u64, Ordering::SeqCst);
    }
}
