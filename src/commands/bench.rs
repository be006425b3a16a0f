//! `partguard bench`: per-stage latency of every model x engine x thread count on the same frames,
//! and `--pick`, which writes the fastest into the config.

use std::path::{Path, PathBuf};

use crate::commands::bench_line::{bench_line, LineBench};
use crate::commands::report::threads_label;
use crate::config::{write_model_choice, Config, ConfigError, ModelChoice};
use crate::infer::{Engine, EngineKind};
use crate::line::{Line, Pacing};
use crate::stats::Stage;
use crate::Error;

/// Arguments of `partguard bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    #[arg(long, default_value_t = 100)]
    pub frames: u64,
    #[arg(long, default_value_t = 5)]
    pub warmup: u64,
    /// Reject timing instead: onset error of reject pulses against their deadlines, the whole
    /// threaded line on simulated outputs, replaying the config's folder at each of --rates.
    #[arg(long)]
    pub line: bool,
    /// Parts per second for --line.
    #[arg(long, value_delimiter = ',', default_value = "10,30,60")]
    pub rates: Vec<f64>,
    /// Seconds per rate for --line.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Also run each rate with this many busy-looping competing threads (0: only without load).
    #[arg(long, default_value_t = 0)]
    pub load: usize,
    /// Reject pulse width for --line (short, so parts at 60/s get separate pulses).
    #[arg(long, default_value_t = 5.0)]
    pub pulse_ms: f64,
    /// Engines to compare on the same frames: tract, onnxruntime, tensorrt (comma-separated;
    /// default: the config's model.engine). With tract and onnxruntime, prints their ratio.
    #[arg(long, value_delimiter = ',', value_parser = parse_engine)]
    pub engine: Vec<EngineKind>,
    /// Models to bench (comma-separated; default: the config's model.path).
    #[arg(long, value_delimiter = ',')]
    pub model: Vec<PathBuf>,
    /// Engine threads to bench (comma-separated; default: the config's model.threads; with
    /// --pick: 1 and all cores but one).
    #[arg(long, value_delimiter = ',')]
    pub threads: Vec<usize>,
    /// Write the fastest engine and thread count (and model, among several --model) into the
    /// config file's `[model]` (comments kept). Default engines: every one built in.
    #[arg(long)]
    pub pick: bool,
}

fn parse_engine(s: &str) -> Result<EngineKind, String> {
    EngineKind::parse(s)
        .ok_or_else(|| format!("unknown engine {s:?}; use tract, onnxruntime or tensorrt"))
}

/// `partguard bench` as the command line asks: `--line`, `--pick` or the plain stage bench.
pub fn bench_command(
    cfg: &Config,
    config_path: Option<&Path>,
    args: &BenchArgs,
) -> Result<(), Error> {
    if args.line {
        return bench_line(
            cfg,
            &LineBench {
                rates: args.rates.clone(),
                seconds: args.seconds,
                load: args.load,
                pulse_ms: args.pulse_ms,
            },
        );
    }
    let plan = BenchPlan {
        frames: args.frames,
        warmup: args.warmup,
        engines: args.engine.clone(),
        models: args.model.clone(),
        threads: args.threads.clone(),
    };
    match (args.pick, config_path) {
        (false, _) => bench(cfg, &plan).map(|_| ()),
        (true, Some(path)) => bench_pick(cfg, path, &plan).map(|_| ()),
        (true, None) => Err(ConfigError::Field {
            path: PathBuf::from("(built-in default)"),
            field: "model",
            problem: "cannot be written by bench --pick without a config file; \
                      give one with --config FILE"
                .into(),
        }
        .into()),
    }
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
pub fn bench(cfg: &Config, plan: &BenchPlan) -> Result<Vec<BenchResult>, Error> {
    let line = Line::new(cfg);
    let engines = or_config(&plan.engines, cfg.model.engine);
    let models = or_config(&plan.models, cfg.model.path.clone());
    let threads = or_config(&plan.threads, cfg.model.threads);
    let mut results = Vec::new();
    for model in &models {
        for &kind in &engines {
            for &t in &threads {
                let engine = line.engine_with(model, kind, t)?;
                let label = threads_label(t);
                println!("== {} on {}, threads {label}", model.display(), kind.name());
                results.push(bench_one(&line, engine, kind, t, plan.frames, plan.warmup)?);
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

/// `partguard bench --pick`: [`fn@bench`] over the plan (default: every engine built in, thread
/// counts [`default_pick_threads`]), then the fastest engine and thread count (and model, when
/// several were given) written into the config file's `[model]`. A different model than the
/// config's needs its own threshold: with a fixed `decision.threshold` only the config's model is
/// eligible; with a calibration file the message says to run `calibrate`, and `run` refuses a
/// calibration made for another model until then.
pub fn bench_pick(
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
    let results = bench(cfg, &plan)?;
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
    line: &Line<'_>,
    engine: Box<dyn Engine>,
    kind: EngineKind,
    threads: usize,
    frames: u64,
    warmup: u64,
) -> Result<BenchResult, Error> {
    let model = engine.info().path.clone();
    // As fast as the stages go: a replay's line rate would cap the throughput.
    let source = line.source(Pacing::UnpacedLoop)?;
    println!(
        "bench: {} frames after {} warm-up, source {}",
        frames,
        warmup,
        source.describe()
    );
    // The threshold only labels the outcomes here; a calibration for another model does not apply.
    let threshold = line
        .decision(engine.info())
        .map_or(f32::INFINITY, |d| d.threshold);
    let mut inspector = line.inspector(source, engine, threshold, None, line.clock());
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
