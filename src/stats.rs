//! Counters and per-stage latency statistics over a fixed window (no allocation while running).

use std::time::Duration;

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
