//! What the subcommands print that more than one of them shares: the run summary and the
//! thread-count label.

use crate::pipeline::{RunLatency, RunSummary};

/// The end-of-run report on stdout.
pub fn print_summary(s: &RunSummary, latency: &mut RunLatency) {
    println!(
        "summary: frames {} OK {} NG {} late {} missed {} faults {} overflows {} (parts {}; fail-safe rejected {} passed {}) skipped {} untriggered {} stalls {} reject pulses {} merged {} gap-delayed {} output errors {} lost messages {}",
        s.frames,
        s.ok,
        s.ng,
        s.late,
        s.missed,
        s.faults,
        s.overflows,
        s.parts,
        s.failsafe_rejected,
        s.failsafe_passed,
        s.skipped,
        s.untriggered,
        s.stalls,
        s.pulses,
        s.merged,
        s.gap_delayed,
        s.output_errors,
        s.lost_messages
    );
    if s.archived + s.archive_dropped + s.archive_failed > 0 {
        println!(
            "archive: written {} dropped {} failed {}",
            s.archived, s.archive_dropped, s.archive_failed
        );
    }
    for (name, lat) in &latency.stages {
        println!("latency {name}: {lat}");
    }
    println!("reject onset error: {}", latency.onset);
}

/// `model.threads` as the bench prints it: 0 is each engine's default (tract 1, ONNX Runtime one
/// per core).
pub fn threads_label(threads: usize) -> String {
    match threads {
        0 => "default".into(),
        n => n.to_string(),
    }
}
