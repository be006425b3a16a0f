//! What the subcommands do; `main.rs` only parses arguments and calls these.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use crate::capture::{FrameSource, PixelFormat, ReplaySource, V4l2Source};
use crate::clock::{Clock, MonotonicClock};
use crate::config::{Config, SourceConfig};
use crate::eval::evaluate;
use crate::infer::{Engine, TractEngine};
use crate::output::{open_reject, Level};
use crate::pipeline::{run, Inspector, RunOptions, RunSummary};
use crate::reject::PulseSettings;
use crate::stats::Stage;
use crate::Error;

/// A V4L2 frame later than this is reported as a camera stall.
const FRAME_TIMEOUT: Duration = Duration::from_secs(2);

/// Opens the configured frame source. `looping` forces a replay to loop (for `bench`).
pub fn open_source(cfg: &SourceConfig, force_loop: bool) -> Result<Box<dyn FrameSource>, Error> {
    Ok(match cfg {
        SourceConfig::Replay {
            path,
            looping,
            rate_hz,
            preload_mib,
        } => Box::new(ReplaySource::open(
            path,
            *looping || force_loop,
            *rate_hz,
            *preload_mib,
        )?),
        SourceConfig::V4l2 {
            device,
            width,
            height,
            format,
            buffers,
            input,
        } => {
            let format = PixelFormat::parse_config(format).flatten();
            Box::new(V4l2Source::open(
                device,
                *width,
                *height,
                format,
                *buffers,
                *input,
                FRAME_TIMEOUT,
            )?)
        }
    })
}

fn pulse_settings(cfg: &Config) -> PulseSettings {
    PulseSettings {
        width: Duration::from_secs_f64(cfg.reject.pulse_ms / 1000.0),
        safe: Level::from(cfg.reject.safe_state),
    }
}

/// `partguard run`: inspect until the source ends or SIGINT/SIGTERM; prints a summary.
pub fn cmd_run(
    cfg: &Config,
    stop: &AtomicBool,
    max_frames: Option<u64>,
) -> Result<RunSummary, Error> {
    let clock: Arc<dyn Clock> = Arc::new(MonotonicClock);
    // The line goes to its safe state first, before anything slow can fail.
    let line = open_reject(&cfg.reject, clock.clone())?;
    log::info!(
        "reject output: {} (safe state {:?})",
        line.describe(),
        cfg.reject.safe_state
    );
    let engine = TractEngine::load(&cfg.model.path)?;
    log_model(&engine);
    let source = open_source(&cfg.source, false)?;
    log::info!("source: {}", source.describe());
    let mut inspector = Inspector::new(source, Box::new(engine), cfg.decision.threshold, clock);
    let opts = RunOptions {
        pulse: pulse_settings(cfg),
        print_decisions: cfg.log.print_decisions,
        status_interval: (cfg.log.status_interval_s > 0.0)
            .then(|| Duration::from_secs_f64(cfg.log.status_interval_s)),
        max_frames,
    };
    let (summary, _line) = run(&mut inspector, line, opts, stop)?;
    let lat = inspector.stats.summary(Stage::Total);
    println!(
        "summary: frames {} OK {} NG {} faults {} skipped {} reject pulses {} queue overflows {} output errors {}",
        summary.frames,
        summary.ok,
        summary.ng,
        summary.faults,
        summary.skipped,
        summary.pulses,
        summary.queue_overflows,
        summary.output_errors
    );
    println!("latency capture-to-decision: {lat}");
    Ok(summary)
}

fn log_model(engine: &dyn Engine) {
    let i = engine.info();
    log::info!(
        "model: {} ({} {}, input {}x{}, sha256 {}…)",
        i.path.display(),
        i.meta("partguard.model_name"),
        i.meta("partguard.precision"),
        i.input.width,
        i.input.height,
        &i.file_sha256[..12]
    );
}

/// `partguard check`: opens everything the config names and says what it found.
pub fn cmd_check(cfg: &Config, config_name: &str) -> Result<(), Error> {
    println!("config {config_name}: valid");
    let engine = TractEngine::load(&cfg.model.path)?;
    let i = engine.info();
    println!("model {}: loaded and planned", i.path.display());
    for key in [
        "partguard.model_name",
        "partguard.model_version",
        "partguard.precision",
        "partguard.input_shape",
        "partguard.architecture",
        "partguard.sspcab",
        "partguard.data_license",
    ] {
        println!("  {key} = {}", i.meta(key));
    }
    println!("  file sha256 = {}", i.file_sha256);
    let source = open_source(&cfg.source, false)?;
    println!("source: {} (opened)", source.describe());
    drop(source);
    let line = open_reject(&cfg.reject, Arc::new(MonotonicClock))?;
    println!(
        "reject output: {} (in safe state {:?}, active_low {}, pulse {} ms)",
        line.describe(),
        cfg.reject.safe_state,
        cfg.reject.active_low,
        cfg.reject.pulse_ms
    );
    println!("threshold: {}", cfg.decision.threshold);
    println!("check: OK");
    Ok(())
}

/// `partguard eval`: scores a labelled folder; prints image (and pixel) AUROC.
pub fn cmd_eval(
    model: &Path,
    data: &Path,
    csv: Option<&Path>,
    pixel: bool,
    threshold: Option<f32>,
) -> Result<(), Error> {
    let mut engine = TractEngine::load(model)?;
    log_model(&engine);
    let report = evaluate(data, &mut engine, csv, pixel)?;
    let good = report
        .images
        .iter()
        .filter(|s| s.label == crate::capture::Label::Good)
        .count();
    println!(
        "eval {}: {} images ({} good, {} defective), model {}",
        data.display(),
        report.images.len(),
        good,
        report.images.len() - good,
        model.display()
    );
    match report.image_auroc {
        Some(a) => println!("image AUROC: {a:.4}"),
        None => println!("image AUROC: n/a (needs good and defective images)"),
    }
    match report.pixel_auroc {
        Some(a) => println!("pixel AUROC: {a:.4} ({} masks)", report.masks_used),
        None if pixel => println!("pixel AUROC: n/a (no MVTec-style ground_truth masks found)"),
        None => {}
    }
    if let Some(t) = threshold {
        let (mut fr, mut miss) = (0, 0);
        for s in &report.images {
            let rejected = s.score > t;
            match s.label {
                crate::capture::Label::Good if rejected => fr += 1,
                crate::capture::Label::Defect if !rejected => miss += 1,
                _ => {}
            }
        }
        println!("at threshold {t}: {fr} good parts rejected, {miss} defective parts passed");
    }
    if let Some(csv) = csv {
        println!("scores written to {}", csv.display());
    }
    Ok(())
}

/// `partguard bench`: per-stage latency over `frames` frames from the configured source.
pub fn cmd_bench(cfg: &Config, frames: u64, warmup: u64) -> Result<(), Error> {
    let engine = TractEngine::load(&cfg.model.path)?;
    log_model(&engine);
    let source = open_source(&cfg.source, true)?;
    println!(
        "bench: {} frames after {} warm-up, source {}",
        frames,
        warmup,
        source.describe()
    );
    let mut inspector = Inspector::new(
        source,
        Box::new(engine),
        cfg.decision.threshold,
        Arc::new(MonotonicClock),
    );
    for _ in 0..warmup {
        if inspector.inspect_next()?.is_none() {
            break;
        }
    }
    inspector.stats = Default::default();
    let t0 = std::time::Instant::now();
    for _ in 0..frames {
        if inspector.inspect_next()?.is_none() {
            break;
        }
    }
    let wall = t0.elapsed();
    let s = &mut inspector.stats;
    println!(
        "{:<22} {:>10} {:>10} {:>10} {:>10}",
        "stage (ms)", "min", "median", "p99", "max"
    );
    for stage in [
        Stage::Convert,
        Stage::Preprocess,
        Stage::Inference,
        Stage::Decision,
    ] {
        let m = s.summary(stage);
        let ms = |us: u32| us as f64 / 1000.0;
        println!(
            "{:<22} {:>10.3} {:>10.3} {:>10.3} {:>10.3}",
            stage.name(),
            ms(m.min_us),
            ms(m.median_us),
            ms(m.p99_us),
            ms(m.max_us)
        );
    }
    println!(
        "throughput: {:.1} frames/s ({} frames in {:.2} s, one thread)",
        s.frames as f64 / wall.as_secs_f64(),
        s.frames,
        wall.as_secs_f64()
    );
    Ok(())
}
