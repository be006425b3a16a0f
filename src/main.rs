//! The `partguard` binary: argument parsing only; the library does the work.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use partguard::commands;
use partguard::commands::bench::BenchArgs;
use partguard::commands::calibrate::CalibrateArgs;
use partguard::commands::collect::CollectArgs;
use partguard::commands::eval::EvalArgs;
use partguard::commands::run::RunArgs;
use partguard::config::Config;

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
    Run(RunArgs),
    /// Validate the config, open the model and the devices, and print what was found.
    Check,
    /// Put every configured output (reject, alarm, ready) in its safe state and exit. For the
    /// service manager after any exit, a crash or SIGKILL included (`ExecStopPost=` in the unit).
    SafeState,
    /// Score a labelled folder (MVTec AD layout or `good`/defect subfolders) through the line's
    /// stages: CSV, image and pixel AUROC.
    Eval(EvalArgs),
    /// Learn the threshold from good parts: run the configured source, take the conformal threshold for
    /// a target false-reject rate, and write a calibration file tied to the model.
    Calibrate(CalibrateArgs),
    /// Save what the model will see (the [roi] crop of each frame, full resolution, PNG) from the
    /// configured source into a training folder with a manifest: one image per part with a
    /// [trigger], else frames thinned by --every-ms and --min-change.
    Collect(CollectArgs),
    /// Per-stage latency (convert, preprocess, inference, decision) over the configured source.
    Bench(BenchArgs),
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
    let command = cli.command.unwrap_or(Command::Run(RunArgs::default()));
    let (cfg, name) = load_config(&cli.config)?;
    init_logging(match command {
        Command::Eval(_) => "info",
        _ => &cfg.log.level,
    });
    let config_path = cli.config.as_deref();
    match command {
        Command::Run(args) => {
            log::info!("config: {name}");
            partguard::service::init_from_env();
            let stop = stop_on_signals();
            let reload = Arc::new(AtomicBool::new(false));
            if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone())
            {
                log::warn!("cannot install the SIGHUP handler (calibration reload): {e}");
            }
            commands::run::run(&cfg, &args, &stop, &reload).map(|_| ())
        }
        Command::Check => commands::check::check(&cfg, &name),
        Command::SafeState => commands::safe_state::safe_state(&cfg),
        Command::Eval(args) => commands::eval::eval(&cfg, &args).map(|_| ()),
        Command::Calibrate(args) => {
            commands::calibrate::calibrate(&cfg, config_path, &args, &stop_on_signals()).map(|_| ())
        }
        Command::Collect(args) => {
            commands::collect::collect(&cfg, &args, &stop_on_signals()).map(|_| ())
        }
        Command::Bench(args) => commands::bench::bench_command(&cfg, config_path, &args),
    }
}
