//! What the subcommands do; `main.rs` only parses arguments and calls these.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use crate::archive::Archive;
use crate::calibrate::{
    best_f1_threshold, conformal_threshold, plot_histogram, utc_now, Calibration, CalibrationError,
    ScoreStats,
};
use crate::capture::{
    CaptureError, FrameSource, Label, PixelFormat, ReopeningSource, ReplaySource, V4l2Source,
};
use crate::clock::{Clock, MonotonicClock};
use crate::config::{
    write_model_choice, Config, ConfigError, EncoderEdges, ModelChoice, OutputLineConfig,
    SourceConfig, DEFAULT_DELAY_MS,
};
use crate::eval::evaluate;
use crate::infer::{load_engine, Engine, EngineKind, ModelInfo, TractEngine};
use crate::input::{CdevInput, EdgeInput, Edges, SocketTrigger};
use crate::output::{open_output, open_reject, Level, OutputError, OutputSpec};
use crate::pipeline::{
    run, Inspector, LineIo, Reloader, RunLatency, RunOptions, RunSummary, TriggerSettings,
};
use crate::reject::{ActuatorSettings, Outputs, SafeOutput};
use crate::schedule::{Delay, SchedulerSettings};
use crate::stats::Stage;
use crate::Error;

/// A V4L2 frame later than this is reported as a camera stall.
const FRAME_TIMEOUT: Duration = Duration::from_secs(2);

/// Opens the configured frame source. `force_loop` makes a replay loop (for `bench`).
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
            let (path, device, width, height, buffers, input) = (
                device.clone(),
                device.clone(),
                *width,
                *height,
                *buffers,
                *input,
            );
            let open = move || -> Result<Box<dyn FrameSource>, CaptureError> {
                Ok(Box::new(V4l2Source::open(
                    &device,
                    width,
                    height,
                    format,
                    buffers,
                    input,
                    FRAME_TIMEOUT,
                )?))
            };
            // The first open fails loudly (a wrong device or format is a setup error); after
            // that, a camera that fails is reopened with backoff (0.5 s doubling to 10 s).
            let first = open()?;
            Box::new(ReopeningSource::new(
                path,
                first,
                Box::new(open),
                Duration::from_millis(500),
                Duration::from_secs(10),
            ))
        }
    })
}

/// The threshold in force: from the calibration file (checked against the model's hash) or the
/// config's `decision.threshold`. Returns it with a description of where it came from.
pub fn resolve_threshold(cfg: &Config, model: &ModelInfo) -> Result<(f32, String), Error> {
    resolve_decision(cfg, model).map(|(t, origin, _)| (t, origin))
}

/// [`resolve_threshold`], plus the calibration's p99 good score when there is a calibration.
pub fn resolve_decision(
    cfg: &Config,
    model: &ModelInfo,
) -> Result<(f32, String, Option<f32>), Error> {
    match (&cfg.decision.calibration, cfg.decision.threshold) {
        (Some(path), _) => {
            if !path.exists() {
                return Err(CalibrationError::Read {
                    path: path.clone(),
                    reason: "no such file; run `partguard calibrate --config FILE` first, or set decision.threshold".into(),
                }
                .into());
            }
            let cal = Calibration::load_for_model(path, &model.path, &model.file_sha256)?;
            Ok((
                cal.threshold,
                format!(
                    "calibration {} ({}, alpha {}, n {}, {})",
                    path.display(),
                    cal.method,
                    cal.alpha,
                    cal.n,
                    cal.created
                ),
                Some(cal.scores.p99),
            ))
        }
        (None, Some(t)) => Ok((t, "decision.threshold".into(), None)),
        (None, None) => Err(crate::config::ConfigError::Field {
            path: "config".into(),
            field: "decision",
            problem: "needs `threshold` or `calibration`".into(),
        }
        .into()),
    }
}

/// The reject scheduler's settings from `[reject]` and `[timing]`.
pub fn scheduler_settings(cfg: &Config) -> SchedulerSettings {
    let t = &cfg.timing;
    let ms = |v: f64| Duration::from_secs_f64(v / 1000.0);
    let delay = match t.delay_ticks {
        Some(ticks) => Delay::Ticks {
            ticks,
            margin: t.margin_ticks,
        },
        None => Delay::Time {
            delay: ms(t.delay_ms.unwrap_or(DEFAULT_DELAY_MS)),
            margin: ms(t.margin_ms),
        },
    };
    SchedulerSettings {
        delay,
        pulse: ms(cfg.reject.pulse_ms),
        min_gap: ms(t.min_gap_ms),
        queue_size: t.queue_size,
        policy: t.policy,
        alarm_hold: ms(t.alarm_hold_ms),
    }
}

/// Opens every output (each already in its safe state) and input the config names.
pub fn open_line_io(cfg: &Config, clock: Arc<dyn Clock>) -> Result<LineIo, Error> {
    let reject = SafeOutput {
        pin: open_reject(&cfg.reject, clock.clone())?,
        safe: Level::from(cfg.reject.safe_state),
    };
    log::info!(
        "reject output: {} (safe state {:?})",
        reject.pin.describe(),
        cfg.reject.safe_state
    );
    let extra = |role: &'static str, o: &Option<OutputLineConfig>| -> Result<_, Error> {
        o.as_ref()
            .map(|o| {
                let pin = open_output(OutputSpec::line(role, o), clock.clone())?;
                log::info!("{role} output: {}", pin.describe());
                Ok(SafeOutput {
                    pin,
                    safe: Level::from(o.safe_state),
                })
            })
            .transpose()
    };
    let alarm = extra("alarm", &cfg.alarm)?;
    let ready = extra("ready", &cfg.ready)?;
    let heartbeat = cfg
        .ready
        .as_ref()
        .filter(|r| r.heartbeat_ms > 0.0)
        .map(|r| Duration::from_secs_f64(r.heartbeat_ms / 1000.0));
    let trigger = match &cfg.trigger {
        Some(t) => {
            let input: Box<dyn EdgeInput> = match (&t.socket, &t.chip, &t.line) {
                (Some(path), _, _) => Box::new(SocketTrigger::bind(path)?),
                (None, Some(chip), Some(line)) => Box::new(CdevInput::open(
                    "trigger",
                    chip,
                    line,
                    t.active_low,
                    Edges::Rising,
                )?),
                // Config::validate refuses this already.
                (None, chip, _) => {
                    return Err(OutputError::NoSuchLine {
                        role: "trigger",
                        chip: chip.clone().unwrap_or_default(),
                        line: "(none given)".into(),
                    }
                    .into())
                }
            };
            log::info!("trigger input: {}", input.describe());
            Some(input)
        }
        None => None,
    };
    let encoder = match &cfg.encoder {
        Some(e) => {
            let edges = match e.edges {
                EncoderEdges::Rising => Edges::Rising,
                EncoderEdges::Both => Edges::Both,
            };
            let input = CdevInput::open("encoder", &e.chip, &e.line, false, edges)?;
            log::info!("encoder input: {}", input.describe());
            Some(Box::new(input) as Box<dyn EdgeInput>)
        }
        None => None,
    };
    Ok(LineIo {
        outputs: Outputs {
            reject,
            alarm,
            ready,
            heartbeat,
        },
        trigger,
        encoder,
    })
}

/// `partguard safe-state`: every configured output opened (which already drives it to its safe
/// level) and set to its safe level once more, then released. Fails, naming the line, when a line
/// is held by a running partguard: that process keeps its outputs safe itself.
pub fn cmd_safe_state(cfg: &Config) -> Result<(), Error> {
    let clock: Arc<dyn Clock> = Arc::new(MonotonicClock);
    let mut outputs = vec![(
        "reject",
        open_reject(&cfg.reject, clock.clone())?,
        Level::from(cfg.reject.safe_state),
    )];
    for (role, o) in [("alarm", &cfg.alarm), ("ready", &cfg.ready)] {
        if let Some(o) = o {
            let pin = open_output(OutputSpec::line(role, o), clock.clone())?;
            outputs.push((role, pin, Level::from(o.safe_state)));
        }
    }
    for (role, mut pin, level) in outputs {
        pin.set(level)?;
        println!("{role}: {} -> {level:?} (safe state)", pin.describe());
    }
    Ok(())
}

/// [`RunOptions`] from the config.
pub fn run_options(
    cfg: &Config,
    max_frames: Option<u64>,
    stats_json: Option<std::path::PathBuf>,
) -> RunOptions {
    let ms = |v: f64| Duration::from_secs_f64(v / 1000.0);
    RunOptions {
        actuator: ActuatorSettings {
            schedule: scheduler_settings(cfg),
            fifo_priority: cfg.realtime.fifo_priority,
            cpu: cfg.realtime.actuator_cpu,
        },
        trigger: cfg.trigger.as_ref().map(|t| TriggerSettings {
            debounce: ms(t.debounce_ms),
            window: ms(t.frame_window_ms),
        }),
        inference_cpu: cfg.realtime.inference_cpu,
        print_decisions: cfg.log.print_decisions,
        status_interval: (cfg.log.status_interval_s > 0.0)
            .then(|| Duration::from_secs_f64(cfg.log.status_interval_s)),
        max_frames,
        stats_json,
        archive: None,
        archive_faults: cfg.archive.as_ref().is_some_and(|a| a.faults),
    }
}

/// `partguard run`: inspect until the source ends or SIGINT/SIGTERM; prints a summary.
pub fn cmd_run(
    cfg: &Config,
    stop: &AtomicBool,
    reload: &AtomicBool,
    max_frames: Option<u64>,
    stats_json: Option<std::path::PathBuf>,
) -> Result<RunSummary, Error> {
    let clock: Arc<dyn Clock> = Arc::new(MonotonicClock);
    // The outputs go to their safe state first, before anything slow can fail.
    let io = open_line_io(cfg, clock.clone())?;
    if cfg.timing.delay_ms.is_none() && cfg.timing.delay_ticks.is_none() {
        log::warn!(
            "[timing] names no delay: rejects fire {DEFAULT_DELAY_MS} ms after capture; set timing.delay_ms for your line (README, Reject timing)"
        );
    }
    let engine = open_engine(cfg)?;
    log_model(&*engine);
    let (threshold, origin, p99) = resolve_decision(cfg, engine.info())?;
    log::info!("threshold {threshold} from {origin}");
    let info = engine.info().clone();
    let source = open_source(&cfg.source, false)?;
    log::info!("source: {}", source.describe());
    let mut inspector = Inspector::new(source, engine, threshold, clock);
    inspector.pre.set_roi(cfg.roi);
    inspector.drift = p99.map(|p| crate::drift::DriftMonitor::new(p, 0.01));
    let mut opts = run_options(cfg, max_frames, stats_json);
    if let Some(a) = &cfg.archive {
        let archive = Archive::open(a.settings())?;
        log::info!(
            "reject archive: {} (at most {} images, {} MiB)",
            archive.dir().display(),
            a.max_images,
            a.max_megabytes
        );
        opts.archive = Some(archive);
    }
    // SIGHUP re-reads the calibration file between two frames.
    let reloader = Reloader {
        flag: reload,
        load: Box::new(|| {
            resolve_decision(cfg, &info)
                .map(|(t, _, p99)| (t, p99))
                .map_err(|e| e.to_string())
        }),
    };
    let (summary, mut latency) = run(&mut inspector, io, opts, stop, Some(&reloader))?;
    print_summary(&summary, &mut latency);
    Ok(summary)
}

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

/// Loads the configured model with the configured engine (`model.engine`).
pub fn open_engine(cfg: &Config) -> Result<Box<dyn Engine>, Error> {
    Ok(load_engine(
        &cfg.model.path,
        cfg.model.engine,
        &cfg.model.engine_options(),
    )?)
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
    let engine = open_engine(cfg)?;
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
    if let Some(roi) = cfg.roi {
        println!("region of interest: {roi} (only this rectangle goes to the model)");
    }
    if let Some(a) = &cfg.archive {
        let archive = Archive::open(a.settings())?;
        println!(
            "reject archive: {} (writable; keeps at most {} images, {} MiB)",
            archive.dir().display(),
            a.max_images,
            a.max_megabytes
        );
    }
    drop(source);
    let io = open_line_io(cfg, Arc::new(MonotonicClock))?;
    println!(
        "reject output: {} (in safe state {:?}, active_low {}, pulse {} ms)",
        io.outputs.reject.pin.describe(),
        cfg.reject.safe_state,
        cfg.reject.active_low,
        cfg.reject.pulse_ms
    );
    for (role, o) in [("alarm", &io.outputs.alarm), ("ready", &io.outputs.ready)] {
        if let Some(o) = o {
            println!("{role} output: {} (in safe state)", o.pin.describe());
        }
    }
    if let Some(t) = &io.trigger {
        println!("trigger input: {}", t.describe());
    }
    if let Some(e) = &io.encoder {
        println!("encoder input: {}", e.describe());
    }
    let timing = match scheduler_settings(cfg).delay {
        Delay::Time { delay, margin } => format!(
            "reject {:.1} ms after {}, decision due {:.1} ms before",
            delay.as_secs_f64() * 1000.0,
            if cfg.trigger.is_some() {
                "the trigger"
            } else {
                "capture"
            },
            margin.as_secs_f64() * 1000.0
        ),
        Delay::Ticks { ticks, margin } => format!(
            "reject {ticks} encoder ticks after {}, decision due {margin} ticks before",
            if cfg.trigger.is_some() {
                "the trigger"
            } else {
                "capture"
            }
        ),
    };
    println!(
        "timing: {timing}; parts not judged in time: {:?}; queue {} parts",
        cfg.timing.policy, cfg.timing.queue_size
    );
    let (threshold, origin) = resolve_threshold(cfg, i)?;
    println!("threshold: {threshold} (from {origin})");
    println!("check: OK");
    Ok(())
}

/// `partguard eval`: scores a labelled folder; prints image (and pixel) AUROC.
pub fn cmd_eval(
    model: &Path,
    data: &Path,
    csv: Option<&Path>,
    pixel: bool,
    cfg: Option<&Config>,
) -> Result<(), Error> {
    let mut engine = TractEngine::load(model)?;
    log_model(&engine);
    let threshold = match cfg {
        Some(c) => Some(resolve_threshold(c, engine.info())?.0),
        None => None,
    };
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

/// What one `bench` pass measured.
#[derive(Debug, Clone)]
pub struct BenchResult {
    pub model: std::path::PathBuf,
    pub engine: EngineKind,
    /// The engine's `model.threads` for this run (0: its default).
    pub threads: usize,
    pub inference: crate::stats::Summary,
    pub frames_per_s: f64,
}

/// What `partguard bench` (without `--line`) runs: every model on every engine at every thread
/// count, on the same frames of the configured source.
#[derive(Debug, Clone, Default)]
pub struct BenchPlan {
    pub frames: u64,
    pub warmup: u64,
    /// Default: the config's `model.engine`.
    pub engines: Vec<EngineKind>,
    /// Default: the config's `model.path`.
    pub models: Vec<std::path::PathBuf>,
    /// Default: the config's `model.threads`.
    pub threads: Vec<usize>,
}

/// The thread counts `bench --pick` tries when none are given: 1, and every core but one (the
/// capture, actuator and trigger threads keep a core).
pub fn default_pick_threads() -> Vec<usize> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut t = vec![1, cores.saturating_sub(1).max(1)];
    t.dedup();
    t
}

/// `partguard bench`: per-stage latency over `plan.frames` frames from the configured source,
/// for every model x engine x thread count in `plan`; with more than one, a summary table, and the
/// tract/onnxruntime inference time ratio per model (at the same thread count).
pub fn cmd_bench(cfg: &Config, plan: &BenchPlan) -> Result<Vec<BenchResult>, Error> {
    let engines = or_config(&plan.engines, cfg.model.engine);
    let models = or_config(&plan.models, cfg.model.path.clone());
    let threads = or_config(&plan.threads, cfg.model.threads);
    let mut results = Vec::new();
    for model in &models {
        for &kind in &engines {
            for &t in &threads {
                let mut options = cfg.model.engine_options();
                options.threads = t;
                let engine = load_engine(model, kind, &options)?;
                log_model(&*engine);
                let label = threads_label(t);
                println!("== {} on {}, threads {label}", model.display(), kind.name());
                results.push(bench_one(cfg, engine, kind, t, plan.frames, plan.warmup)?);
            }
        }
    }
    if results.len() > 1 {
        println!();
        println!(
            "{:<40} {:<12} {:>7} {:>12} {:>12} {:>10}",
            "model", "engine", "threads", "median (ms)", "p99 (ms)", "frames/s"
        );
        for r in &results {
            println!(
                "{:<40} {:<12} {:>7} {:>12.2} {:>12.2} {:>10.1}",
                r.model.file_name().unwrap_or_default().to_string_lossy(),
                r.engine.name(),
                threads_label(r.threads),
                r.inference.median_us as f64 / 1000.0,
                r.inference.p99_us as f64 / 1000.0,
                r.frames_per_s
            );
        }
        for model in &models {
            for &t in &threads {
                let median = |k: EngineKind| {
                    results
                        .iter()
                        .find(|r| r.model == *model && r.engine == k && r.threads == t)
                        .map(|r| r.inference.median_us as f64)
                };
                if let (Some(tr), Some(o)) =
                    (median(EngineKind::Tract), median(EngineKind::Onnxruntime))
                {
                    println!(
                        "ratio tract/onnxruntime (inference median) for {}, threads {}: {:.2}",
                        model.file_name().unwrap_or_default().to_string_lossy(),
                        threads_label(t),
                        tr / o.max(1.0)
                    );
                }
            }
        }
    }
    Ok(results)
}

/// The bench plan's list, or the config's single value when the list is empty.
fn or_config<T: Clone>(list: &[T], config: T) -> Vec<T> {
    if list.is_empty() {
        vec![config]
    } else {
        list.to_vec()
    }
}

/// Whether two paths name the same file (however spelled: relative to the working folder or to the
/// config file, through links).
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// `model.threads` as the bench prints it: 0 is each engine's default (tract 1, ONNX Runtime one
/// per core).
fn threads_label(threads: usize) -> String {
    match threads {
        0 => "default".into(),
        n => n.to_string(),
    }
}

/// The fastest result by median inference time (ties: the first, i.e. the earlier engine and the
/// fewer threads).
pub fn fastest(results: &[BenchResult]) -> Option<&BenchResult> {
    results.iter().reduce(|best, r| {
        if r.inference.median_us < best.inference.median_us {
            r
        } else {
            best
        }
    })
}

/// `partguard bench --pick`: [`cmd_bench`] over the plan (default: every engine built in, thread
/// counts [`default_pick_threads`]), then the fastest engine and thread count (and model, when
/// several were given) written into the config file's `[model]`. A different model than the
/// config's needs its own threshold: with a fixed `decision.threshold` only the config's model is
/// eligible; with a calibration file the message says to run `calibrate`, and `run` refuses a
/// calibration made for another model until then.
pub fn cmd_bench_pick(
    cfg: &Config,
    config_path: &std::path::Path,
    plan: &BenchPlan,
) -> Result<ModelChoice, Error> {
    let mut plan = plan.clone();
    if plan.engines.is_empty() {
        plan.engines = EngineKind::ALL
            .into_iter()
            .filter(|k| k.built_in())
            .collect();
    }
    if plan.threads.is_empty() {
        plan.threads = default_pick_threads();
    }
    // A fixed threshold belongs to the config's model: with one, only that model may be picked (the
    // others are not measured). A calibration file names its model's hash, so `run` refuses it for
    // another model until the line is calibrated again: with one, any model may be picked.
    let fixed_threshold = cfg.decision.calibration.is_none();
    if fixed_threshold && !plan.models.is_empty() {
        plan.models.retain(|m| same_file(m, &cfg.model.path));
        if plan.models.is_empty() {
            return Err(ConfigError::Field {
                path: config_path.to_owned(),
                field: "decision.threshold",
                problem: format!(
                    "is a fixed threshold for {}, so bench --pick keeps that model and it was not \
                     among --model; to switch models, calibrate for the new one (partguard \
                     calibrate) and set decision.calibration",
                    cfg.model.path.display()
                ),
            }
            .into());
        }
    }
    let results = cmd_bench(cfg, &plan)?;
    let Some(best) = fastest(&results) else {
        return Err(ConfigError::Field {
            path: config_path.to_owned(),
            field: "model",
            problem: "could not be chosen: bench --pick measured nothing".into(),
        }
        .into());
    };
    let same_model = same_file(&best.model, &cfg.model.path);
    let choice = ModelChoice {
        engine: best.engine,
        threads: best.threads,
        path: (!same_model)
            .then(|| std::fs::canonicalize(&best.model).unwrap_or(best.model.clone())),
    };
    write_model_choice(config_path, &choice)?;
    println!(
        "picked: {} on {} with {} thread(s), median {:.2} ms; written to [model] of {}",
        best.model.display(),
        best.engine.name(),
        best.threads,
        best.inference.median_us as f64 / 1000.0,
        config_path.display()
    );
    if !same_model {
        println!(
            "the model changed: run `partguard --config {} calibrate` before `run` \
             (a threshold belongs to one model)",
            config_path.display()
        );
    }
    Ok(choice)
}

fn bench_one(
    cfg: &Config,
    engine: Box<dyn Engine>,
    kind: EngineKind,
    threads: usize,
    frames: u64,
    warmup: u64,
) -> Result<BenchResult, Error> {
    let model = engine.info().path.clone();
    // As fast as the stages go: a replay's line rate would cap the throughput.
    let mut source_cfg = cfg.source.clone();
    if let SourceConfig::Replay { rate_hz, .. } = &mut source_cfg {
        *rate_hz = 0.0;
    }
    let source = open_source(&source_cfg, true)?;
    println!(
        "bench: {} frames after {} warm-up, source {}",
        frames,
        warmup,
        source.describe()
    );
    // The threshold only labels the outcomes here; a calibration for another model does not apply.
    let threshold = resolve_threshold(cfg, engine.info()).map_or(f32::INFINITY, |(t, _)| t);
    let mut inspector = Inspector::new(source, engine, threshold, Arc::new(MonotonicClock));
    inspector.pre.set_roi(cfg.roi);
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
    let frames_per_s = s.frames as f64 / wall.as_secs_f64();
    println!(
        "throughput: {:.1} frames/s ({} frames in {:.2} s, stages one after the other)",
        frames_per_s,
        s.frames,
        wall.as_secs_f64()
    );
    Ok(BenchResult {
        model,
        engine: kind,
        threads,
        inference: s.summary(Stage::Inference),
        frames_per_s,
    })
}

/// What `partguard bench --line` is asked to do.
#[derive(Debug, Clone)]
pub struct LineBench {
    pub rates: Vec<f64>,
    pub seconds: f64,
    /// Competing busy threads for the second pass of each rate (0: no second pass).
    pub load: usize,
    pub pulse_ms: f64,
}

/// Busy threads that compete for the CPUs until dropped (integer and memory work, no sleeping).
struct CpuLoad {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl CpuLoad {
    fn start(n: usize) -> CpuLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|i| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut buf = vec![0u64; 1 << 20];
                    let mut x = i as u64 + 1;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        for v in buf.iter_mut() {
                            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                            *v ^= x;
                        }
                    }
                    std::hint::black_box(&buf);
                })
            })
            .collect();
        CpuLoad { stop, threads }
    }
}

impl Drop for CpuLoad {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// `partguard bench --line`: the whole threaded line (replay at each rate -> model -> scheduler ->
/// simulated reject output) and the onset error of every reject pulse against its deadline.
pub fn cmd_bench_line(cfg: &Config, b: &LineBench) -> Result<(), Error> {
    let SourceConfig::Replay {
        path, preload_mib, ..
    } = &cfg.source
    else {
        return Err(crate::config::ConfigError::Field {
            path: "config".into(),
            field: "source.kind",
            problem: "must be \"replay\" for `bench --line` (it paces a folder at each rate)"
                .into(),
        }
        .into());
    };
    let clock: Arc<dyn Clock> = Arc::new(MonotonicClock);
    let mut schedule = scheduler_settings(cfg);
    schedule.pulse = Duration::from_secs_f64(b.pulse_ms / 1000.0);
    let Delay::Time { delay, margin } = schedule.delay else {
        return Err(crate::config::ConfigError::Field {
            path: "config".into(),
            field: "timing.delay_ticks",
            problem: "`bench --line` measures time-mode delays; give timing.delay_ms".into(),
        }
        .into());
    };
    println!(
        "bench --line: delay {:.0} ms, margin {:.0} ms, pulse {} ms, policy {:?}, actuator SCHED_FIFO priority {}, {} s per rate",
        delay.as_secs_f64() * 1000.0,
        margin.as_secs_f64() * 1000.0,
        b.pulse_ms,
        schedule.policy,
        cfg.realtime.fifo_priority,
        b.seconds
    );
    println!(
        "{:>6} {:>5} {:>6} {:>9} {:>5} {:>5} {:>6} {:>6} {:>7} {:>7} {:>11} {:>11} {:>11}",
        "parts/s",
        "load",
        "parts",
        "inspected",
        "OK",
        "NG",
        "late",
        "fault",
        "pulses",
        "merged",
        "onset med",
        "onset p99",
        "onset max"
    );
    let loads: Vec<usize> = if b.load > 0 { vec![0, b.load] } else { vec![0] };
    for &rate in &b.rates {
        for &load in &loads {
            let engine = open_engine(cfg)?;
            let (threshold, _) = resolve_threshold(cfg, engine.info())?;
            let source = ReplaySource::open(path, true, rate, *preload_mib)?;
            let mut inspector = Inspector::new(Box::new(source), engine, threshold, clock.clone());
            let reject = crate::output::SimulatedLine::new(clock.clone(), 1 << 16);
            let io = LineIo {
                outputs: Outputs {
                    reject: SafeOutput {
                        pin: Box::new(reject),
                        safe: Level::Inactive,
                    },
                    alarm: None,
                    ready: None,
                    heartbeat: None,
                },
                trigger: None,
                encoder: None,
            };
            let mut opts = run_options(cfg, None, None);
            opts.actuator.schedule = schedule;
            opts.print_decisions = false;
            opts.status_interval = None;
            // max_frames counts inspected frames; stop on time instead.
            let stop = AtomicBool::new(false);
            let _load = CpuLoad::start(load);
            let (s, lat) = std::thread::scope(|scope| {
                let stop = &stop;
                scope.spawn(move || {
                    std::thread::sleep(Duration::from_secs_f64(b.seconds));
                    stop.store(true, std::sync::atomic::Ordering::Release);
                });
                run(&mut inspector, io, opts, stop, None)
            })?;
            let ms = |us: u32| us as f64 / 1000.0;
            println!(
                "{:>6.0} {:>5} {:>6} {:>9} {:>5} {:>5} {:>6} {:>6} {:>7} {:>7} {:>8.3} ms {:>8.3} ms {:>8.3} ms",
                rate,
                load,
                s.parts,
                s.frames,
                s.ok,
                s.ng,
                s.late,
                s.faults,
                s.pulses,
                s.merged,
                ms(lat.onset.median_us),
                ms(lat.onset.p99_us),
                ms(lat.onset.max_us)
            );
        }
    }
    println!(
        "onset = reject output set active minus the part's due time (capture + delay), per pulse start; \
         parts the model could not keep up with are fail-safe (fault/late) and still fire at their deadline"
    );
    Ok(())
}

/// What `partguard calibrate` is asked to do.
#[derive(Debug, Clone)]
pub struct CalibrateOptions {
    /// Stop after this many good frames (None: until the source ends or Ctrl-C).
    pub frames: Option<u64>,
    /// Target false-reject rate of good parts.
    pub alpha: f64,
    /// Added to the conformal threshold (score units).
    pub margin: f32,
    /// Where to write the calibration.
    pub out: std::path::PathBuf,
    /// A folder of labelled defect images to report detection against (never applied).
    pub defects: Option<std::path::PathBuf>,
    /// Histogram PNG.
    pub plot: Option<std::path::PathBuf>,
}

/// `partguard calibrate`: scores good parts from the configured source and writes the threshold for
/// the target false-reject rate, tied to the model's hash.
pub fn cmd_calibrate(
    cfg: &Config,
    opts: &CalibrateOptions,
    stop: &AtomicBool,
) -> Result<Calibration, Error> {
    use std::io::Write as _;
    let engine = open_engine(cfg)?;
    log_model(&*engine);
    let info = engine.info().clone();
    let source = open_source(&cfg.source, false)?;
    let source_desc = source.describe();
    println!("calibrating from {source_desc}");
    let mut inspector = Inspector::new(source, engine, f32::INFINITY, Arc::new(MonotonicClock));
    inspector.pre.set_roi(cfg.roi);
    let mut scores = Vec::new();
    let (mut skipped_defects, mut faults) = (0u64, 0u64);
    let total = opts.frames;
    while !stop.load(std::sync::atomic::Ordering::Relaxed)
        && total.is_none_or(|n| (scores.len() as u64) < n)
    {
        let Some(o) = inspector.inspect_next()? else {
            break;
        };
        if o.label == Some(Label::Defect) {
            skipped_defects += 1;
            continue;
        }
        if !o.score.is_finite() {
            faults += 1;
            continue;
        }
        scores.push(o.score);
        let n = scores.len() as u64;
        if n.is_multiple_of(10) || total == Some(n) {
            match total {
                Some(t) => {
                    let done = (n * 30 / t.max(1)).min(30) as usize;
                    eprint!("\r[{:<30}] {n}/{t} good parts", "#".repeat(done));
                }
                None => eprint!("\r{n} good parts (Ctrl-C to finish)"),
            }
            let _ = std::io::stderr().flush();
        }
    }
    eprintln!();
    if skipped_defects > 0 {
        println!("skipped {skipped_defects} frames labelled as defects (replay folder names)");
    }
    if faults > 0 {
        println!("skipped {faults} frames that could not be scored (see the log)");
    }
    let conf = conformal_threshold(&scores, opts.alpha)?;
    if !conf.guaranteed {
        println!(
            "WARNING: {} good parts are too few for alpha = {}: n + 1 < 1/alpha, so the threshold is the highest good score and the false-reject guarantee does not hold; collect at least {} good parts",
            conf.n,
            opts.alpha,
            (1.0 / opts.alpha).ceil() as u64 - 1
        );
    }
    let stats = ScoreStats::of(&scores);
    let cal = Calibration {
        threshold: conf.threshold + opts.margin,
        method: "conformal".into(),
        alpha: opts.alpha,
        margin: opts.margin,
        n: conf.n,
        k: conf.k,
        guaranteed: conf.guaranteed,
        expected_false_reject_rate: conf.expected_false_reject_rate,
        false_reject_rate_upper95: conf.false_reject_rate_upper95,
        created: utc_now(),
        source: source_desc,
        model_path: info.path.clone(),
        model_sha256: info.file_sha256.clone(),
        scores: stats.clone(),
    };
    println!(
        "good-part scores: n {} min {:.4} median {:.4} p90 {:.4} p99 {:.4} max {:.4} mean {:.4} std {:.4}",
        conf.n, stats.min, stats.p50, stats.p90, stats.p99, stats.max, stats.mean, stats.std
    );
    let margin = if opts.margin != 0.0 {
        format!(" + margin {}", opts.margin)
    } else {
        String::new()
    };
    println!(
        "threshold {:.4} = good score #{} of {} (conformal, alpha {}){margin}",
        cal.threshold, conf.k, conf.n, opts.alpha
    );
    println!(
        "expected false-reject rate {:.3}% ({}), 95% upper bound {:.3}%",
        100.0 * conf.expected_false_reject_rate,
        if conf.guaranteed {
            format!("<= alpha = {}%", 100.0 * opts.alpha)
        } else {
            format!(
                "alpha = {}% is out of reach with {} parts",
                100.0 * opts.alpha,
                conf.n
            )
        },
        100.0 * conf.false_reject_rate_upper95
    );
    println!("(valid for good parts like these; parts the model was trained on score low and make it optimistic)");
    let mut defect_scores = Vec::new();
    if let Some(dir) = &opts.defects {
        // The calibration's engine is already loaded and planned: score the defects with it.
        let report = crate::eval::evaluate(dir, &mut *inspector.engine, None, false)?;
        defect_scores = report
            .images
            .iter()
            .filter(|s| s.label == Label::Defect)
            .map(|s| s.score)
            .collect();
        let caught = defect_scores.iter().filter(|&&s| s > cal.threshold).count();
        println!(
            "defect samples {}: {caught} of {} detected at this threshold ({:.1}%)",
            dir.display(),
            defect_scores.len(),
            100.0 * caught as f64 / defect_scores.len().max(1) as f64
        );
        if let Some((t, f1)) = best_f1_threshold(&scores, &defect_scores) {
            println!("  the threshold maximising F1 on these samples would be {t:.4} (F1 {f1:.3}); shown only, not applied");
        }
    }
    cal.save(&opts.out)?;
    println!("calibration written to {}", opts.out.display());
    if let Some(plot) = &opts.plot {
        plot_histogram(plot, &scores, &defect_scores, cal.threshold)?;
        println!(
            "histogram written to {} (green: good, red: defects, blue: threshold)",
            plot.display()
        );
    }
    Ok(cal)
}
