//! `partguard run`: inspect parts until the source ends or SIGINT/SIGTERM.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::config::{Config, DEFAULT_DELAY_MS};
use crate::line::{Line, Pacing};
use crate::pipeline::{run as run_line, Reloader, RunSummary};
use crate::Error;

/// Arguments of `partguard run`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RunArgs {
    /// Stop after this many frames.
    #[arg(long)]
    pub frames: Option<u64>,
    /// Write the statistics as JSON to this file (at each status interval and at the end).
    #[arg(long)]
    pub stats_json: Option<PathBuf>,
    /// After the source ends, keep the page, `/metrics` and MQTT up this many seconds (or until
    /// SIGINT/SIGTERM) so the final counts can be read.
    #[arg(long, value_name = "SECONDS")]
    pub linger: Option<f64>,
}

/// Inspects until the source ends or `stop` is set (SIGINT/SIGTERM); `reload` (SIGHUP) re-reads
/// the calibration between two frames. Prints a summary.
pub fn run(
    cfg: &Config,
    args: &RunArgs,
    stop: &AtomicBool,
    reload: &AtomicBool,
) -> Result<RunSummary, Error> {
    let line = Line::new(cfg);
    let clock = line.clock();
    // The outputs go to their safe state first, before anything slow can fail.
    let io = line.io(clock.clone())?;
    if cfg.timing.delay_ms.is_none() && cfg.timing.delay_ticks.is_none() {
        log::warn!(
            "[timing] names no delay: rejects fire {DEFAULT_DELAY_MS} ms after capture; set timing.delay_ms for your line (README, Reject timing)"
        );
    }
    let engine = line.engine()?;
    let decision = line.decision(engine.info())?;
    log::info!("threshold {} from {}", decision.threshold, decision.origin);
    let info = engine.info().clone();
    let source = line.source(Pacing::Configured)?;
    log::info!("source: {}", source.describe());
    line.control_drift(&source.controls_in_force(), &info, &decision);
    let mut inspector =
        line.inspector(source, engine, decision.threshold, decision.good_p99, clock);
    let mut opts = line.run_options(args.frames, args.stats_json.clone());
    opts.archive = line.archive()?;
    let telemetry = line.telemetry(&info, &decision, &inspector.source.describe())?;
    opts.telemetry = telemetry.as_ref().map(|(t, _)| t.clone());
    // SIGHUP re-reads the calibration file between two frames.
    let reloader = Reloader {
        flag: reload,
        load: Box::new(|| {
            line.decision(&info)
                .map(|d| (d.threshold, d.good_p99, d.origin))
                .map_err(|e| e.to_string())
        }),
    };
    let (summary, mut latency) = run_line(&mut inspector, io, opts, stop, Some(&reloader))?;
    crate::commands::report::print_summary(&summary, &mut latency);
    if let Some((_, service)) = telemetry {
        if let Some(secs) = args.linger.filter(|s| *s > 0.0) {
            log::info!(
                "the run has ended; the page and /metrics stay up {secs} s (Ctrl-C ends it)"
            );
            let until = std::time::Instant::now() + std::time::Duration::from_secs_f64(secs);
            while std::time::Instant::now() < until && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
        service.stop();
    }
    Ok(summary)
}
