//! What a run reports: its summary and latencies, the periodic status line, the statistics JSON and
//! the per-part decision line.

use std::path::Path;
use std::sync::atomic::Ordering;

use super::Outcome;
use crate::reject::ActuatorShared;
use crate::schedule::ScheduleCounts;
use crate::stats::{Stage, Stats, Summary};

/// What a run did. Every part ends in exactly one of ok / ng / late / missed / faults / overflows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RunSummary {
    /// Frames inspected by the model.
    pub frames: u64,
    pub parts: u64,
    pub ok: u64,
    pub ng: u64,
    pub late: u64,
    pub missed: u64,
    pub faults: u64,
    pub overflows: u64,
    pub failsafe_rejected: u64,
    pub failsafe_passed: u64,
    /// Unreadable replay images, frames with no trigger, camera stalls.
    pub skipped: u64,
    pub untriggered: u64,
    pub stalls: u64,
    pub pulses: u64,
    pub merged: u64,
    pub gap_delayed: u64,
    pub output_errors: u64,
    /// Messages to the actuator that found its queue full.
    pub lost_messages: u64,
    /// Reject archive: images written, parts not archived because the writer was behind, writes
    /// that failed (disk full, ...).
    pub archived: u64,
    pub archive_dropped: u64,
    pub archive_failed: u64,
}

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
        frames,
        parts: c.parts,
        ok: c.ok,
        ng: c.ng,
        late: c.late,
        missed: c.missed,
        faults: c.faults,
        overflows: c.overflows,
        failsafe_rejected: c.failsafe_rejected,
        failsafe_passed: c.failsafe_passed,
        skipped: stats.skipped,
        untriggered,
        stalls,
        pulses: c.pulses,
        merged: c.merged,
        gap_delayed: c.gap_delayed,
        output_errors,
        lost_messages: shared.lost.load(Ordering::Relaxed),
        ..RunSummary::default()
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
