//! partguard: line-side visual inspection firmware.
//!
//! Data flows one way, one module per stage:
//! [`capture`] -> [`preprocess`] -> [`infer`] -> [`decide`] -> [`schedule`] (when the part reaches
//! the ejector) -> [`reject`]/[`gpio`] outputs, driven by [`pipeline`] (capture, inference and actuator
//! threads). [`gpio`] also reads the photo-eye trigger and the encoder; [`clock`] and [`gpio`] put time
//! and GPIO behind small traits with real and simulated implementations, [`realtime`] asks for
//! SCHED_FIFO, [`service`] speaks systemd's notify protocol (readiness, watchdog). [`config`] reads the TOML file, [`eval`] scores labelled folders, [`calibrate`] learns
//! the threshold from good parts, [`drift`] watches it, [`telemetry`] serves the page, `/metrics` and
//! MQTT beside the line, [`commands`] holds what the subcommands of
//! the binary do, each building its stages from the config through [`mod@line`], the one composition
//! root.

pub mod archive;
pub mod calibrate;
pub mod capture;
pub mod clock;
pub mod collect;
pub mod commands;
pub mod config;
pub mod decide;
pub mod drift;
pub mod eval;
pub mod gpio;
pub mod infer;
pub mod line;
pub mod pipeline;
pub mod preprocess;
pub mod realtime;
pub mod reject;
pub mod schedule;
pub mod service;
pub mod stats;
pub mod telemetry;

/// Any partguard failure, by subsystem, so camera, model and GPIO faults stay apart.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Capture(#[from] capture::CaptureError),
    #[error(transparent)]
    Model(#[from] infer::ModelError),
    #[error(transparent)]
    Gpio(#[from] gpio::GpioError),
    #[error(transparent)]
    Stage(#[from] pipeline::StageError),
    #[error(transparent)]
    Eval(#[from] eval::EvalError),
    #[error(transparent)]
    Calibration(#[from] calibrate::CalibrationError),
    #[error(transparent)]
    Archive(#[from] archive::ArchiveError),
    #[error(transparent)]
    Telemetry(#[from] telemetry::TelemetryError),
    #[error(transparent)]
    Collect(#[from] collect::CollectError),
}

impl Error {
    /// Process exit status: 2 for a configuration problem, 1 for anything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) => 2,
            _ => 1,
        }
    }
}
