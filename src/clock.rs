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

// Wall-clock time, for what a person reads (calibration files, archive names); the timing logic
// above never uses it.

/// The current time as RFC 3339 UTC, e.g. `2026-11-28T13:20:05Z`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    utc_from_unix(secs)
}

/// Microseconds since the Unix epoch as an ISO 8601 UTC time with milliseconds
/// (`2026-11-28T21:40:03.125Z`).
pub fn utc_from_unix_us(us: u64) -> String {
    let base = utc_from_unix(us / 1_000_000);
    format!(
        "{}.{:03}Z",
        base.trim_end_matches('Z'),
        (us % 1_000_000) / 1000
    )
}

/// The wall-clock time now, in microseconds since the Unix epoch.
pub fn unix_now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros().min(u128::from(u64::MAX)) as u64)
}

/// `secs` since the Unix epoch as an ISO 8601 UTC time (`2026-11-28T21:40:03Z`).
pub fn utc_from_unix(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_format_is_rfc3339() {
        let s = utc_now();
        assert_eq!(s.len(), 20);
        assert!(s.ends_with('Z') && s.as_bytes()[10] == b'T', "{s}");
        assert_eq!(utc_from_unix(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_from_unix(951_868_799), "2000-02-29T23:59:59Z");
        assert_eq!(utc_from_unix(1_796_083_200), "2026-12-01T00:00:00Z");
    }
}
