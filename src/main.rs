//! The `partguard` binary: argument parsing only; the library does the work.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use partguard::commands;
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
    Run {
        /// Stop after this many frames.
        #[arg(long)]
        frames: Option<u64>,
    },
    /// Validate the config, open the model and the devices, and print what was found.
    Check,
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
    /// Per-stage latency (convert, preprocess, inference, decision) over the configured source.
    Bench {
        #[arg(long, default_value_t = 100)]
        frames: u64,
        #[arg(long, default_value_t = 5)]
        warmup: u64,
    },
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

fn init_logging(level: &str) {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp_millis()
        .init();
}

fn real_main(cli: Cli) -> Result<(), partguard::Error> {
    match cli.command.unwrap_or(Command::Run { frames: None }) {
        Command::Run { frames } => {
            let (cfg, name) = load_config(&cli.config)?;
            init_logging(&cfg.log.level);
            log::info!("config: {name}");
            let stop = Arc::new(AtomicBool::new(false));
            for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
                if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
                    log::warn!("cannot install handler for signal {sig}: {e}");
                }
            }
            commands::cmd_run(&cfg, &stop, frames).map(|_| ())
        }
        Command::Check => {
            let (cfg, name) = load_config(&cli.config)?;
            init_logging(&cfg.log.level);
            commands::cmd_check(&cfg, &name)
        }
        Command::Eval {
            data,
            model,
            csv,
            no_pixel,
        } => {
            init_logging("info");
            let (model, threshold) = match model {
                Some(m) => (m, None),
                None => {
                    let (cfg, _) = load_config(&cli.config)?;
                    (cfg.model.path, Some(cfg.decision.threshold))
                }
            };
            commands::cmd_eval(&model, &data, csv.as_deref(), !no_pixel, threshold)
        }
        Command::Bench { frames, warmup } => {
            let (cfg, _) = load_config(&cli.config)?;
            init_logging(&cfg.log.level);
            commands::cmd_bench(&cfg, frames, warmup)
        }
    }
}
