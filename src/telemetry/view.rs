//! What the telemetry thread keeps from the part results: the last decisions, the part rate, the
//! per-stage histograms and the MQTT counters. Owned by the telemetry thread; the HTTP handlers
//! read it under a lock no line thread ever takes.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::PartRecord;
use crate::decide::Verdict;
use crate::stats::LatencyHistogram;

/// Decisions kept for the page and `/api/decisions`.
pub const DECISIONS_KEPT: usize = 600;

/// Upper bounds of the score histogram's buckets.
pub const SCORE_BOUNDS: [f64; 14] = [
    0.02, 0.04, 0.06, 0.08, 0.1, 0.12, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0,
];

/// MQTT publishing, as the publisher counts it.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct MqttCounts {
    pub connected: bool,
    /// Part results handed to the broker connection.
    pub published: u64,
    /// Part results dropped because the buffer was full while the broker was away.
    pub dropped: u64,
    /// Part results waiting for the broker.
    pub buffered: usize,
    pub status_messages: u64,
    pub reconnects: u64,
}

#[derive(Default)]
pub struct View {
    pub decisions: VecDeque<PartRecord>,
    /// Results taken from the line's queue.
    pub received: u64,
    pub convert: LatencyHistogram,
    pub preprocess: LatencyHistogram,
    pub inference: LatencyHistogram,
    pub total: LatencyHistogram,
    /// Scores of judged parts: per-bucket counts (the last above every bound), sum, count.
    pub score_buckets: [u64; SCORE_BOUNDS.len() + 1],
    pub score_sum: f64,
    pub score_count: u64,
    /// Parts per second over the last few seconds.
    pub rate: f64,
    rate_mark: Option<(Instant, u64)>,
    pub last_part: Option<Instant>,
    pub mqtt: MqttCounts,
}

impl View {
    pub fn new() -> View {
        View {
            decisions: VecDeque::with_capacity(DECISIONS_KEPT),
            ..View::default()
        }
    }

    pub fn observe(&mut self, r: &PartRecord, now: Instant) {
        if self.decisions.len() == DECISIONS_KEPT {
            self.decisions.pop_front();
        }
        self.decisions.push_back(*r);
        self.received += 1;
        self.last_part = Some(now);
        // Stage times of parts the model judged (a fail-safe part has none to speak of).
        if matches!(r.verdict, Verdict::Pass | Verdict::Reject) {
            self.convert.record_us(u64::from(r.convert_us));
            self.preprocess.record_us(u64::from(r.preprocess_us));
            self.inference.record_us(u64::from(r.inference_us));
            self.total.record_us(u64::from(r.total_us));
        }
        if r.score.is_finite() {
            let s = f64::from(r.score);
            let i = SCORE_BOUNDS.partition_point(|&b| b < s);
            self.score_buckets[i] += 1;
            self.score_sum += s;
            self.score_count += 1;
        }
    }

    /// Updates the part rate from the line's part count (called about once a second).
    pub fn tick(&mut self, parts: u64, now: Instant) {
        match self.rate_mark {
            Some((t, n)) if now.duration_since(t) >= Duration::from_secs(2) => {
                let dt = now.duration_since(t).as_secs_f64();
                self.rate = parts.saturating_sub(n) as f64 / dt;
                self.rate_mark = Some((now, parts));
            }
            Some(_) => {}
            None => self.rate_mark = Some((now, parts)),
        }
    }
}
