//! The `partguard` binary: argument parsing only; the library does the work.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use partguard::commands;
use partguard::config::Config;
use partguard::infer::EngineKind;

#[derive(Parser)]
#[command(
    name = "partguard",
    version,
    about = "Line-side visual inspection: camera -> anomaly model -> reject output"
)]
struct Cli {
    /// Config file (TOML). Without it, the built-in default: sample images replayed through the
    /// shipped model onto a simulated reject line.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Inspect parts until the source ends or SIGINT/SIGTERM (the default).
    Run {
        /// Stop after this many frames.
        #[arg(long)]
        frames: Option<u64>,
        /// Write the statistics as JSON to this file (at each status interval and at the end).
        #[arg(long)]
        stats_json: Option<PathBuf>,
    },
    /// Validate the config, open the model and the devices, and print what was found.
    Check,
    /// Put every configured output (reject, alarm, ready) in its safe state and exit. For the
    /// service manager after any exit, a crash or SIGKILL included (`ExecStopPost=` in the unit).
    SafeState,
    /// Score a labelled folder (MVTec AD layout or `good`/defect subfolders): CSV, image and pixel AUROC.
    Eval {
        /// Folder of images; `good` subfolders are good parts, any other folder a defect.
        #[arg(long)]
        data: PathBuf,
        /// Model to evaluate (default: the config's model).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Write per-image scores here.
        #[arg(long)]
        csv: Option<PathBuf>,
        /// Skip the pixel AUROC (faster).
        #[arg(long)]
        no_pixel: bool,
    },
    /// Learn the threshold from good parts: run the configured source, take the conformal threshold for
    /// a target false-reject rate, and write a calibration file tied to the model.
    Calibrate {
        /// Stop after this many good parts (default: until the source ends or Ctrl-C).
        #[arg(long)]
        frames: Option<u64>,
        /// Target false-reject rate of good parts (0.001 = 0.1%).
        #[arg(long, default_value_t = 0.001)]
        alpha: f64,
        /// Added to the threshold, in score units.
        #[arg(long, default_value_t = 0.0)]
        margin: f32,
        /// Calibration file to write (default: the config's decision.calibration).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Folder of labelled defect images: report their detection rate (never applied).
        #[arg(long)]
        defects: Option<PathBuf>,
        /// Write a histogram of the scores with the threshold as PNG.
        #[arg(long)]
        plot: Option<PathBuf>,
    },
    /// Per-stage latency (convert, preprocess, inference, decision) over the configured source.
    Bench {
        #[arg(long, default_value_t = 100)]
        frames: u64,
        #[arg(long, default_value_t = 5)]
        warmup: u64,
        /// Reject timing instead: onset error of reject pulses against their deadlines, the whole
        /// threaded line on simulated outputs, replaying the config's folder at each of --rates.
        #[arg(long)]
        line: bool,
        /// Parts per second for --line.
        #[arg(long, value_delimiter = ',', default_value = "10,30,60")]
        rates: Vec<f64>,
        /// Seconds per rate for --line.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Also run each rate with this many busy-looping competing threads (0: only without load).
        #[arg(long, default_value_t = 0)]
        load: usize,
        /// Reject pulse width for --line (short, so parts at 60/s get separate pulses).
        #[arg(long, default_value_t = 5.0)]
        pulse_ms: f64,
        /// Engines to compare on the same frames: tract, onnxruntime, tensorrt (comma-separated;
        /// default: the config's model.engine). With tract and onnxruntime, prints their ratio.
        #[arg(long, value_delimiter = ',', value_parser = parse_engine)]
        engine: Vec<EngineKind>,
        /// Models to bench (comma-separated; default: the config's model.path).
        #[arg(long, value_delimiter = ',')]
        model: Vec<PathBuf>,
        /// Engine threads to bench (comma-separated; default: the config's model.threads; with
        /// --pick: 1 and all cores but one).
        #[arg(long, value_delimiter = ',')]
        threads: Vec<usize>,
        /// Write the fastest engine and thread count (and model, among several --model) into the
        /// config file's [model] (comments kept). Default engines: every one built in.
        #[arg(long)]
        pick: bool,
    },
}

fn parse_engine(s: &str) -> Result<EngineKind, String> {
    EngineKind::parse(s)
        .ok_or_else(|| format!("unknown engine {s:?}; use tract, onnxruntime or tensorrt"))
}

fn load_config(path: &Option<PathBuf>) -> Result<(Config, String), partguard::Error> {
    Ok(match path {
        Some(p) => (Config::load(p)?, p.display().to_string()),
        None => (
            Config::builtin()?,
            "(built-in default: examples/partguard.toml)".into(),
        ),
    })
}

fn main() {
    let cli = Cli::parse();
    let code = match real_main(cli) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    };
    std::process::exit(code);
}

/// A flag set by SIGINT or SIGTERM.
fn stop_on_signals() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            log::warn!("cannot install handler for signal {sig}: {e}");
        }
    }
    stop
}

fn init_logging(level: &str) {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp_millis()
        .init();
}

fn real_main(cli: Cli) -> Result<(), partguard::Error> {
    match cli.command.unwrap_or(Command::Run {
        frames: None,
        stats_json: None,
    }) {
        Command::Run { frames, stats_json } => {
            let (cfg, name) = load_config(&cli.config)?;
            init_logging(&cfg.log.level);
            log::info!("config: {name}");
            partguard::service::init_from_env();
            let stop = stop_on_signals();
            let reload = Arc::new(AtomicBool::new(false));
            if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone())
            {
                log::warn!("cannot install the SIGHUP handler (calibration reload): {e}");
            }
            commands::cmd_run(&cfg, &stop, &reload, frames, stats_json).map(|_| ())
        }
        Command::Check => {
            let (cfg, name) = load_config(&cli.config)?;
            init_logging(&cfg.log.level);
            commands::cmd_check(&cfg, &name)
        }
        Command::SafeState => {
            let (cfg, _) = load_config(&cli.config)?;
            init_logging(&cfg.log.level);
            commands::cmd_safe_state(&cfg)
        }
        Command::Eval {
            data,
            model,
            csv,
            no_pixel,
        } => {
            init_logging("info");
            match model {
                Some(m) => commands::cmd_eval(&m, &data, csv.as_deref(), !no_pixel, None),
                None => {
                    let (cfg, _) = load_config(&cli.config)?;
                    commands::cmd_eval(
                        &cfg.model.path,
                        &data,
                        csv.as_deref(),
                        !no_pixel,
                        Some(&cfg),
                    )
                }
            }
        }
        Command::Calibrate {
            frames,
            alpha,
            margin,
            out,
            defects,
            plot,
        } => {
            let (cfg, _) = load_config(&cli.config)?;
            init_logging(&cfg.log.level);
            let Some(out) = out.or_else(|| cfg.decision.calibration.clone()) else {
                return Err(partguard::config::ConfigError::Field {
                    path: cli.config.clone().unwrap_or_default(),
                    field: "decision.calibration",
                    problem: "is not set; set it, or give --out FILE".into(),
                }
                .into());
            };
            let opts = commands::CalibrateOptions {
                frames,
                alpha,
                margin,
                out,
                defects,
                plot,
            };
            commands::cmd_calibrate(&cfg, &opts, &stop_on_signals()).map(|_| ())
        }
        Command::Bench {
            frames,
            warmup,
            line,
            rates,
            seconds,
            load,
            pulse_ms,
            engine,
            model,
            threads,
            pick,
        } => {
            let (cfg, _) = load_config(&cli.config)?;
            init_logging(&cfg.log.level);
            if line {
                commands::cmd_bench_line(
                    &cfg,
                    &commands::LineBench {
                        rates,
                        seconds,
                        load,
                        pulse_ms,
                    },
                )
            } else {
                let plan = commands::BenchPlan {
                    frames,
                    warmup,
                    engines: engine,
                    models: model,
                    threads,
                };
                match (pick, &cli.config) {
                    (false, _) => commands::cmd_bench(&cfg, &plan).map(|_| ()),
                    (true, Some(path)) => commands::cmd_bench_pick(&cfg, path, &plan).map(|_| ()),
                    (true, None) => Err(partguard::config::ConfigError::Field {
                        path: PathBuf::from("(built-in default)"),
                        field: "model",
                        problem: "cannot be written by bench --pick without a config file; \
                                  give one with --config FILE"
                            .into(),
                    }
                    .into()),
                }
            }
        }
    }
}
