//! Counters and per-stage latency statistics over a fixed window (no allocation while running).

use std::time::Duration;

use crate::schedule::ScheduleCounts;

const WINDOW: usize = 4096;

/// The last `WINDOW` samples of one stage's latency, in microseconds.
pub struct LatencyWindow {
    samples: Box<[u32; WINDOW]>,
    scratch: Box<[u32; WINDOW]>,
    len: usize,
    next: usize,
    min: u32,
    max: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Summary {
    pub count: usize,
    pub min_us: u32,
    pub median_us: u32,
    pub p99_us: u32,
    pub max_us: u32,
}

impl Default for LatencyWindow {
    fn default() -> Self {
        LatencyWindow {
            samples: Box::new([0; WINDOW]),
            scratch: Box::new([0; WINDOW]),
            len: 0,
            next: 0,
            min: u32::MAX,
            max: 0,
        }
    }
}

impl LatencyWindow {
    pub fn record(&mut self, d: Duration) {
        let us = d.as_micros().min(u32::MAX as u128) as u32;
        self.samples[self.next] = us;
        self.next = (self.next + 1) % WINDOW;
        self.len = (self.len + 1).min(WINDOW);
        self.min = self.min.min(us);
        self.max = self.max.max(us);
    }

    /// min and max over the whole run; median and p99 over the window.
    pub fn summary(&mut self) -> Summary {
        if self.len == 0 {
            return Summary::default();
        }
        let s = &mut self.scratch[..self.len];
        s.copy_from_slice(&self.samples[..self.len]);
        s.sort_unstable();
        let pick = |q: f64| s[((q * (s.len() - 1) as f64).round() as usize).min(s.len() - 1)];
        Summary {
            count: self.len,
            min_us: self.min,
            median_us: pick(0.5),
            p99_us: pick(0.99),
            max_us: self.max,
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |us: u32| us as f64 / 1000.0;
        write!(
            f,
            "min {:.3} ms, median {:.3} ms, p99 {:.3} ms, max {:.3} ms (n={})",
            ms(self.min_us),
            ms(self.median_us),
            ms(self.p99_us),
            ms(self.max_us),
            self.count
        )
    }
}

/// The stages timed per frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Convert,
    Preprocess,
    Inference,
    Decision,
    /// Capture timestamp to decision.
    Total,
}

impl Stage {
    pub const ALL: [Stage; 5] = [
        Stage::Convert,
        Stage::Preprocess,
        Stage::Inference,
        Stage::Decision,
        Stage::Total,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Stage::Convert => "convert",
            Stage::Preprocess => "preprocess",
            Stage::Inference => "inference",
            Stage::Decision => "decision",
            Stage::Total => "capture-to-decision",
        }
    }
}

/// Run statistics: part counts and stage latencies.
#[derive(Default)]
pub struct Stats {
    pub frames: u64,
    pub ok: u64,
    pub ng: u64,
    pub faults: u64,
    pub skipped: u64,
    latency: [LatencyWindow; 5],
}

impl Stats {
    pub fn record(&mut self, stage: Stage, d: Duration) {
        self.latency[stage as usize].record(d);
    }
    pub fn summary(&mut self, stage: Stage) -> Summary {
        self.latency[stage as usize].summary()
    }
    /// Replaces one stage's window (stages timed on another thread).
    pub fn set_window(&mut self, stage: Stage, window: LatencyWindow) {
        self.latency[stage as usize] = window;
    }
}

/// Rate-limits a repeated log message: at most one line per `period`, carrying how many were
/// suppressed since the last one. Counting never stops; only the log is thinned.
#[derive(Debug, Clone, Copy)]
pub struct LogThrottle {
    period: Duration,
    next: Option<Duration>,
    suppressed: u64,
}

impl LogThrottle {
    pub const fn new(period: Duration) -> Self {
        LogThrottle {
            period,
            next: None,
            suppressed: 0,
        }
    }

    /// `Some(suppressed since the last line)` when a line may be logged at `now`.
    pub fn allow(&mut self, now: Duration) -> Option<u64> {
        if self.next.is_some_and(|n| now < n) {
            self.suppressed += 1;
            return None;
        }
        self.next = Some(now + self.period);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// " (N more like it)" for a throttled log line.
pub fn suppressed(more: u64) -> String {
    if more == 0 {
        String::new()
    } else {
        format!(" ({more} more like it in the last second)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_over_known_samples() {
        let mut w = LatencyWindow::default();
        for us in 1..=100u64 {
            w.record(Duration::from_micros(us));
        }
        let s = w.summary();
        assert_eq!((s.min_us, s.max_us, s.count), (1, 100, 100));
        assert_eq!(s.median_us, 51); // index round(0.5 * 99) = 50 -> value 51
        assert_eq!(s.p99_us, 99);
    }
}

/// What a run did: the reject scheduler's counts per part (every part ends in exactly one of ok /
/// ng / late / missed / faults / overflows) and the line's counts around them. Serialized flat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RunSummary {
    /// Frames inspected by the model.
    pub frames: u64,
    #[serde(flatten)]
    pub counts: ScheduleCounts,
    /// Unreadable replay images, frames with no trigger, camera stalls.
    pub skipped: u64,
    pub untriggered: u64,
    pub stalls: u64,
    pub output_errors: u64,
    /// Messages to the actuator that found its queue full.
    pub lost_messages: u64,
    /// Reject archive: images written, parts not archived because the writer was behind, writes
    /// that failed (disk full, ...).
    pub archived: u64,
    pub archive_dropped: u64,
    pub archive_failed: u64,
}

/// Upper bounds of [`LatencyHistogram`]'s buckets, in microseconds (the last bucket is +Inf).
pub const HISTOGRAM_BOUNDS_US: [u32; 16] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 10_000_000,
];

/// A latency histogram over the whole run with fixed buckets ([`HISTOGRAM_BOUNDS_US`]), for
/// Prometheus: allocation-free, cumulative counts are computed when read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// Samples per bucket (not cumulative); the last is above every bound.
    pub buckets: [u64; HISTOGRAM_BOUNDS_US.len() + 1],
    pub sum_us: u64,
    pub count: u64,
}

impl LatencyHistogram {
    pub fn record_us(&mut self, us: u64) {
        let i = HISTOGRAM_BOUNDS_US.partition_point(|&b| u64::from(b) < us);
        self.buckets[i] += 1;
        self.sum_us += us;
        self.count += 1;
    }

    pub fn record(&mut self, d: Duration) {
        self.record_us(d.as_micros().min(u128::from(u64::MAX)) as u64);
    }
}

#[cfg(test)]
mod histogram_tests {
    use super::*;

    #[test]
    fn samples_land_in_the_bucket_whose_bound_holds_them() {
        let mut h = LatencyHistogram::default();
        h.record_us(50);
        h.record_us(51);
        h.record_us(20_000_000);
        assert_eq!(h.buckets[0], 1);
        assert_eq!(h.buckets[1], 1);
        assert_eq!(h.buckets[HISTOGRAM_BOUNDS_US.len()], 1);
        assert_eq!((h.count, h.sum_us), (3, 20_000_101));
    }
}
