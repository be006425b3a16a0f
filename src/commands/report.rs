//! What the subcommands print that more than one of them shares: the run summary and the
//! thread-count label.

use crate::pipeline::{RunLatency, RunSummary};

/// The end-of-run report on stdout.
pub fn print_summary(s: &RunSummary, latency: &mut RunLatency) {
    println!(
        "summary: frames {} OK {} NG {} late {} missed {} faults {} overflows {} (parts {}; fail-safe rejected {} passed {}) skipped {} untriggered {} stalls {} reject pulses {} merged {} gap-delayed {} output errors {} lost messages {}",
        s.frames,
        s.counts.ok,
        s.counts.ng,
        s.counts.late,
        s.counts.missed,
        s.counts.faults,
        s.counts.overflows,
        s.counts.parts,
        s.counts.failsafe_rejected,
        s.counts.failsafe_passed,
        s.skipped,
        s.untriggered,
        s.stalls,
        s.counts.pulses,
        s.counts.merged,
        s.counts.gap_delayed,
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

/// A progress line on stderr for commands that count towards a target (`collect`,
/// `calibrate`): a bar, the count, the rate and the time left; without a target, the count.
pub struct Progress {
    total: Option<u64>,
    what: &'static str,
    started: std::time::Instant,
    /// Redrawn in place on a terminal; else one line per tenth (logs, pipes).
    terminal: bool,
    shown_tenths: std::cell::Cell<u64>,
}

impl Progress {
    pub fn new(total: Option<u64>, what: &'static str) -> Self {
        Progress {
            total,
            what,
            started: std::time::Instant::now(),
            terminal: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            shown_tenths: std::cell::Cell::new(0),
        }
    }

    /// Redraws the line for `n` done.
    pub fn show(&self, n: u64) {
        use std::io::Write as _;
        let secs = self.started.elapsed().as_secs_f64();
        let rate = if secs > 0.0 { n as f64 / secs } else { 0.0 };
        let (start, end) = if self.terminal {
            ("\r", "   ")
        } else {
            let tenths = self.total.map_or(n / 10, |t| n * 10 / t.max(1));
            if n > 0 && tenths <= self.shown_tenths.get() && n != 1 {
                return;
            }
            self.shown_tenths.set(tenths);
            ("", "\n")
        };
        match self.total {
            Some(t) => {
                let done = (n * 30 / t.max(1)).min(30) as usize;
                let left = if rate > 0.0 {
                    format!(", {} left", clock_text(t.saturating_sub(n) as f64 / rate))
                } else {
                    String::new()
                };
                eprint!(
                    "{start}[{:<30}] {n}/{t} {} ({rate:.1}/s{left}){end}",
                    "#".repeat(done),
                    self.what
                );
            }
            None => eprint!(
                "{start}{n} {} ({rate:.1}/s, Ctrl-C to finish){end}",
                self.what
            ),
        }
        let _ = std::io::stderr().flush();
    }

    /// Ends the line.
    pub fn finish(&self) {
        if self.terminal {
            eprintln!();
        }
    }
}

/// `1m05s`, `42s`.
fn clock_text(secs: f64) -> String {
    let s = secs.round() as u64;
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}
