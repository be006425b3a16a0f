//! What a run reports: its summary and latencies, the periodic status line, the statistics JSON and
//! the per-part decision line.

use std::path::Path;
use std::sync::atomic::Ordering;

use super::Outcome;
use crate::reject::ActuatorShared;
use crate::schedule::ScheduleCounts;
pub use crate::stats::RunSummary;
use crate::stats::{Stage, Stats, Summary};
use crate::telemetry::{LiveCounts, Telemetry};

/// Latency statistics of a run, per stage and for reject onsets.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RunLatency {
    pub stages: Vec<(&'static str, Summary)>,
    /// Reject pulse onset minus the part's due time (time mode).
    pub onset: Summary,
}

pub(super) fn summarize(
    stats: &Stats,
    shared: &ActuatorShared,
    frames: u64,
    (untriggered, stalls): (u64, u64),
) -> RunSummary {
    let (c, output_errors) = shared
        .report
        .lock()
        .map(|r| (r.counts, r.output_errors))
        .unwrap_or((ScheduleCounts::default(), 0));
    RunSummary {
        untriggered,
        ..summary_of(&c, output_errors, stats, shared, frames, stalls)
    }
}

/// The run's counts from the scheduler's and the inference loop's (archive and untriggered frames
/// left at zero).
fn summary_of(
    c: &ScheduleCounts,
    output_errors: u64,
    stats: &Stats,
    shared: &ActuatorShared,
    frames: u64,
    stalls: u64,
) -> RunSummary {
    RunSummary {
        frames,
        counts: *c,
        skipped: stats.skipped,
        stalls,
        output_errors,
        lost_messages: shared.lost.load(Ordering::Relaxed),
        ..RunSummary::default()
    }
}

/// What the live counts are made of.
pub(super) struct LiveSources<'a> {
    pub(super) stats: &'a Stats,
    pub(super) shared: &'a ActuatorShared,
    pub(super) frames: u64,
    pub(super) stalls: u64,
    pub(super) archive: Option<&'a crate::archive::Archive>,
    pub(super) drift: Option<&'a crate::drift::DriftMonitor>,
    pub(super) threshold: f32,
    pub(super) ended: bool,
}

/// The counts for the telemetry, without waiting: `None` while the actuator holds its report
/// (the next part's copy will do). Allocation-free.
pub(super) fn live_counts(src: LiveSources<'_>) -> Option<LiveCounts> {
    let (c, output_errors, pending, alarm, onset_histogram) = {
        let r = src.shared.report.try_lock().ok()?;
        (
            r.counts,
            r.output_errors,
            r.pending,
            r.alarm,
            r.onset_histogram,
        )
    };
    let archive = src.archive.map(|a| a.counts()).unwrap_or_default();
    Some(LiveCounts {
        summary: RunSummary {
            archived: archive.archived,
            archive_dropped: archive.dropped,
            archive_failed: archive.failed,
            ..summary_of(
                &c,
                output_errors,
                src.stats,
                src.shared,
                src.frames,
                src.stalls,
            )
        },
        threshold: src.threshold,
        alarm,
        reject_pending: pending,
        drift_warnings: src.drift.map_or(0, |d| d.warnings),
        onset_histogram,
        ended: src.ended,
    })
}

/// Hands the live counts to the telemetry, unless the actuator holds its report right now.
pub(super) fn publish_live(t: &Telemetry, src: LiveSources<'_>) {
    if let Some(live) = live_counts(src) {
        t.publish(&live);
    }
}

pub(super) fn latency_of(stats: &mut Stats, shared: &ActuatorShared) -> RunLatency {
    RunLatency {
        stages: Stage::ALL
            .iter()
            .map(|&s| (s.name(), stats.summary(s)))
            .collect(),
        onset: shared
            .report
            .lock()
            .map(|mut r| r.onset_summary())
            .unwrap_or_default(),
    }
}

pub(super) fn status_line(stats: &mut Stats, shared: &ActuatorShared, frames: u64) {
    let lat = stats.summary(Stage::Total);
    let (c, pending, onset) = match shared.report.lock() {
        Ok(mut r) => (r.counts, r.pending, r.onset_summary()),
        Err(_) => return,
    };
    crate::service::status(&format!(
        "parts {} inspected {} OK {} NG {} fail-safe {} pending {}",
        c.parts,
        frames,
        c.ok,
        c.ng,
        c.late + c.missed + c.faults + c.overflows,
        pending
    ));
    log::info!(
        "status: parts {} inspected {} OK {} NG {} late {} missed {} faults {} overflows {} pending {} | capture-to-decision median {:.1} ms | reject onset p99 {:.3} ms",
        c.parts,
        frames,
        c.ok,
        c.ng,
        c.late,
        c.missed,
        c.faults,
        c.overflows,
        pending,
        lat.median_us as f64 / 1000.0,
        onset.p99_us as f64 / 1000.0
    );
}

/// Writes the statistics as JSON (atomically: a temporary file renamed over the target).
pub(super) fn write_json(
    path: &Path,
    summary: &RunSummary,
    stats: &mut Stats,
    shared: &ActuatorShared,
) {
    let latency = latency_of(stats, shared);
    let stages: serde_json::Map<String, serde_json::Value> = latency
        .stages
        .iter()
        .map(|(n, s)| (n.to_string(), serde_json::to_value(s).unwrap_or_default()))
        .collect();
    let doc = serde_json::json!({
        "counts": summary,
        "latency_us": stages,
        "reject_onset_error": latency.onset,
    });
    let tmp = path.with_extension("json.tmp");
    let result = serde_json::to_vec_pretty(&doc)
        .map_err(std::io::Error::other)
        .and_then(|bytes| std::fs::write(&tmp, bytes))
        .and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        log::warn!("cannot write statistics to {}: {e}", path.display());
    }
}

pub(super) fn print_outcome(o: &Outcome<'_>) {
    let name = o.origin.map(|p| {
        let file = p.file_name().unwrap_or_default().to_string_lossy();
        let dir = p
            .parent()
            .and_then(|d| d.file_name())
            .unwrap_or_default()
            .to_string_lossy();
        (dir, file)
    });
    match name {
        Some((dir, file)) => println!(
            "part {:>5}  {:<6} score {:.4}  {dir}/{file}",
            o.sequence,
            o.verdict.as_str(),
            o.score
        ),
        None => println!(
            "part {:>5}  {:<6} score {:.4}",
            o.sequence,
            o.verdict.as_str(),
            o.score
        ),
    }
}
