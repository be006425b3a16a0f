//! The composition root: every subcommand builds its stages from the [`Config`] here, so the
//! source, the region of interest, the engine and its threads, the threshold (fixed or calibrated),
//! the archive and the line's inputs and outputs are resolved in exactly one place.
//!
//! `run`, `check`, `eval`, `calibrate`, `bench`, `bench --line` and `safe-state` all go through a
//! [`Line`]: what `run` sees on the line is what `eval` and `calibrate` measure.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::archive::Archive;
use crate::calibrate::Calibration;
use crate::capture::controls::{self, ControlsInForce};
use crate::capture::V4l2Source;
use crate::capture::{CaptureError, FrameSource, PixelFormat, ReopeningSource, ReplaySource};
use crate::clock::{Clock, MonotonicClock};
use crate::config::{
    Config, ConfigError, EncoderEdges, OutputLineConfig, SourceConfig, DEFAULT_DELAY_MS,
};
use crate::drift::DriftMonitor;
use crate::gpio::{open_output, GpioError, Level, OutputSpec};
use crate::gpio::{CdevInput, EdgeInput, Edges, SocketTrigger};
use crate::infer::{load_engine, Engine, EngineKind, ModelInfo};
use crate::pipeline::{Inspector, LineIo, RunOptions, TriggerSettings};
use crate::preprocess::Preprocessor;
use crate::reject::{ActuatorSettings, Outputs, SafeOutput};
use crate::schedule::{Delay, SchedulerSettings};
use crate::telemetry::{StationInfo, Telemetry, TelemetryService};
use crate::Error;

/// A V4L2 frame later than this is reported as a camera stall.
const FRAME_TIMEOUT: Duration = Duration::from_secs(2);

/// How the replay source is paced for a caller.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pacing {
    /// As the config says (`run`, `calibrate`, `check`).
    Configured,
    /// As fast as the stages go, looping (`bench`: a line rate would cap the throughput).
    UnpacedLoop,
    /// At this many frames per second, looping (`bench --line`).
    LoopAt(f64),
}

/// The threshold in force and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub threshold: f32,
    /// "decision.threshold", or the calibration file with its method, alpha, n and date.
    pub origin: String,
    /// The calibration's p99 good score (the drift monitor's reference); None without one.
    pub good_p99: Option<f32>,
    /// The camera controls the calibration's good parts were captured under (empty without one).
    pub camera_controls: ControlsInForce,
}

/// The inspection line a config describes, built stage by stage on demand.
pub struct Line<'c> {
    pub cfg: &'c Config,
}

impl<'c> Line<'c> {
    pub fn new(cfg: &'c Config) -> Self {
        Line { cfg }
    }

    /// The configured model on the configured engine (`model.engine`, `model.threads`).
    pub fn engine(&self) -> Result<Box<dyn Engine>, Error> {
        let m = &self.cfg.model;
        self.engine_with(&m.path, m.engine, m.threads)
    }

    /// Another model, engine or thread count with the config's other engine options (`bench`,
    /// `eval --model`).
    pub fn engine_with(
        &self,
        model: &Path,
        kind: EngineKind,
        threads: usize,
    ) -> Result<Box<dyn Engine>, Error> {
        let mut options = self.cfg.model.engine_options();
        options.threads = threads;
        let engine = load_engine(model, kind, &options)?;
        log_model(&*engine, kind);
        Ok(engine)
    }

    /// The configured frame source.
    pub fn source(&self, pacing: Pacing) -> Result<Box<dyn FrameSource>, Error> {
        Ok(match &self.cfg.source {
            SourceConfig::Replay {
                path,
                looping,
                rate_hz,
                preload_mib,
            } => {
                let (looping, rate) = match pacing {
                    Pacing::Configured => (*looping, *rate_hz),
                    Pacing::UnpacedLoop => (true, 0.0),
                    Pacing::LoopAt(rate) => (true, rate),
                };
                if !self.cfg.camera.controls.is_empty() {
                    log::warn!(
                        "[camera.controls] ignored: the source is a replay folder, not a camera"
                    );
                }
                Box::new(ReplaySource::open(path, looping, rate, *preload_mib)?)
            }
            SourceConfig::V4l2 { .. } if matches!(pacing, Pacing::LoopAt(_)) => {
                return Err(ConfigError::Field {
                    path: self.cfg.file.clone(),
                    field: "source.kind",
                    problem:
                        "must be \"replay\" for `bench --line` (it paces a folder at each rate)"
                            .into(),
                }
                .into())
            }
            SourceConfig::V4l2 {
                device,
                width,
                height,
                format,
                buffers,
                input,
            } => {
                let format = PixelFormat::parse_config(format).flatten();
                let controls = self.cfg.camera.controls.clone();
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
                        &controls,
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

    /// The preprocessor for `model`, cropping to `[roi]` when the config has one.
    pub fn preprocessor(&self, model: &ModelInfo) -> Preprocessor {
        let mut pre = Preprocessor::new(model.input);
        pre.set_roi(self.cfg.roi);
        pre
    }

    /// The threshold in force for `model`: from the calibration file (checked against the model's
    /// hash) or `decision.threshold`.
    pub fn decision(&self, model: &ModelInfo) -> Result<Decision, Error> {
        let d = &self.cfg.decision;
        match (&d.calibration, d.threshold) {
            (Some(path), _) => {
                let cal = Calibration::load_for_model(path, &model.path, &model.file_sha256)?;
                Ok(Decision {
                    threshold: cal.threshold,
                    origin: format!(
                        "calibration {} ({}, alpha {}, n {}, {})",
                        path.display(),
                        cal.method,
                        cal.alpha,
                        cal.n,
                        cal.created
                    ),
                    good_p99: Some(cal.scores.p99),
                    camera_controls: cal.camera_controls,
                })
            }
            (None, Some(t)) => Ok(Decision {
                threshold: t,
                origin: "decision.threshold".into(),
                good_p99: None,
                camera_controls: ControlsInForce::new(),
            }),
            (None, None) => Err(ConfigError::Field {
                path: self.cfg.file.clone(),
                field: "decision",
                problem: "needs `threshold` or `calibration`".into(),
            }
            .into()),
        }
    }

    /// Warns (and returns the warnings) when the camera controls in force differ from those the
    /// model was trained under (its `partguard.camera_controls` metadata, from the collect
    /// manifest) or the calibration was made under: a changed exposure or white balance moves
    /// every score.
    pub fn control_drift(
        &self,
        in_force: &ControlsInForce,
        model: &ModelInfo,
        decision: &Decision,
    ) -> Vec<String> {
        let mut warnings = Vec::new();
        let trained = model.meta("partguard.camera_controls");
        if let Ok(trained) = serde_json::from_str::<ControlsInForce>(trained) {
            let diff = controls::differences(in_force, &trained);
            if !diff.is_empty() {
                warnings.push(format!(
                    "camera controls differ from those the model was trained under: {}; scores may move: retrain or restore the settings",
                    diff.join("; ")
                ));
            }
        }
        if let Some(path) = &self.cfg.decision.calibration {
            let diff = controls::differences(in_force, &decision.camera_controls);
            if !diff.is_empty() {
                warnings.push(format!(
                    "camera controls differ from those {} was calibrated under: {}; recalibrate or restore the settings",
                    path.display(),
                    diff.join("; ")
                ));
            }
        }
        for w in &warnings {
            log::warn!("{w}");
        }
        warnings
    }

    /// One part at a time on the calling thread: `source` -> the ROI preprocessor -> `engine` ->
    /// `threshold`, with the drift monitor when `good_p99` is known.
    pub fn inspector(
        &self,
        source: Box<dyn FrameSource>,
        engine: Box<dyn Engine>,
        threshold: f32,
        good_p99: Option<f32>,
        clock: Arc<dyn Clock>,
    ) -> Inspector {
        let pre = self.preprocessor(engine.info());
        let mut inspector = Inspector::new(source, engine, threshold, clock);
        inspector.pre = pre;
        inspector.drift = good_p99.map(|p| DriftMonitor::new(p, 0.01));
        inspector
    }

    /// The reject scheduler's settings from `[reject]` and `[timing]`.
    pub fn scheduler(&self) -> SchedulerSettings {
        let cfg = self.cfg;
        let t = &cfg.timing;
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

    /// The photo-eye's debounce and frame window, when `[trigger]` is configured.
    pub fn trigger_settings(&self) -> Option<TriggerSettings> {
        self.cfg.trigger.as_ref().map(|t| TriggerSettings {
            debounce: ms(t.debounce_ms),
            window: ms(t.frame_window_ms),
        })
    }

    /// The threaded line's options (actuator, trigger, threads, logging) from the config.
    pub fn run_options(&self, max_frames: Option<u64>, stats_json: Option<PathBuf>) -> RunOptions {
        let cfg = self.cfg;
        RunOptions {
            actuator: ActuatorSettings {
                schedule: self.scheduler(),
                fifo_priority: cfg.realtime.fifo_priority,
                cpu: cfg.realtime.actuator_cpu,
            },
            trigger: self.trigger_settings(),
            inference_cpu: cfg.realtime.inference_cpu,
            print_decisions: cfg.log.print_decisions,
            status_interval: (cfg.log.status_interval_s > 0.0)
                .then(|| Duration::from_secs_f64(cfg.log.status_interval_s)),
            max_frames,
            stats_json,
            archive: None,
            archive_faults: cfg.archive.as_ref().is_some_and(|a| a.faults),
            telemetry: None,
        }
    }

    /// The page, `/metrics` and MQTT, when `[http]` or `[mqtt]` is configured: the line's handle
    /// and the running telemetry thread (its port bound, so a busy port fails here).
    pub fn telemetry(
        &self,
        model: &ModelInfo,
        decision: &Decision,
        source: &str,
    ) -> Result<Option<(Telemetry, TelemetryService)>, Error> {
        let cfg = self.cfg;
        if cfg.http.is_none() && cfg.mqtt.is_none() {
            return Ok(None);
        }
        let info = StationInfo {
            version: env!("CARGO_PKG_VERSION"),
            model_name: model.meta("partguard.model_name").to_owned(),
            model_version: model.meta("partguard.model_version").to_owned(),
            precision: model.meta("partguard.precision").to_owned(),
            model_sha256: model.file_sha256.clone(),
            engine: cfg.model.engine.name().to_owned(),
            threads: cfg.model.threads,
            source: source.to_owned(),
            archive_dir: cfg.archive.as_ref().map(|a| a.dir.clone()),
        };
        let telemetry = Telemetry::new(info, decision.origin.clone());
        let service = TelemetryService::start(&telemetry, cfg.http.as_ref(), cfg.mqtt.as_ref())?;
        Ok(Some((telemetry, service)))
    }

    /// The reject archive, when `[archive]` is configured (its folder checked writable).
    pub fn archive(&self) -> Result<Option<Archive>, Error> {
        match &self.cfg.archive {
            Some(a) => {
                let archive = Archive::open(a.settings())?;
                log::info!(
                    "reject archive: {} (at most {} images, {} MiB)",
                    archive.dir().display(),
                    a.max_images,
                    a.max_megabytes
                );
                Ok(Some(archive))
            }
            None => Ok(None),
        }
    }

    /// Every output the config names (`[reject]`, `[alarm]`, `[ready]`), each driven to its safe
    /// level as it is opened.
    pub fn outputs(&self, clock: Arc<dyn Clock>) -> Result<Outputs, Error> {
        let cfg = self.cfg;
        let reject = SafeOutput {
            pin: open_output(
                OutputSpec {
                    role: "reject",
                    kind: cfg.reject.kind,
                    chip: cfg.reject.chip.as_deref(),
                    line: cfg.reject.line.as_ref(),
                    active_low: cfg.reject.active_low,
                    safe_state: cfg.reject.safe_state,
                },
                clock.clone(),
            )?,
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
                    let spec = OutputSpec {
                        role,
                        kind: o.kind,
                        chip: o.chip.as_deref(),
                        line: o.line.as_ref(),
                        active_low: o.active_low,
                        safe_state: o.safe_state,
                    };
                    let pin = open_output(spec, clock.clone())?;
                    log::info!("{role} output: {}", pin.describe());
                    Ok(SafeOutput {
                        pin,
                        safe: Level::from(o.safe_state),
                    })
                })
                .transpose()
        };
        Ok(Outputs {
            reject,
            alarm: extra("alarm", &cfg.alarm)?,
            ready: extra("ready", &cfg.ready)?,
            heartbeat: cfg
                .ready
                .as_ref()
                .filter(|r| r.heartbeat_ms > 0.0)
                .map(|r| ms(r.heartbeat_ms)),
        })
    }

    /// The photo-eye (or software) trigger input, when `[trigger]` is configured.
    pub fn trigger(&self) -> Result<Option<Box<dyn EdgeInput>>, Error> {
        Ok(match &self.cfg.trigger {
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
                        return Err(GpioError::NoSuchLine {
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
        })
    }

    /// Opens every output (each already in its safe state) and input the config names.
    pub fn io(&self, clock: Arc<dyn Clock>) -> Result<LineIo, Error> {
        let cfg = self.cfg;
        // The outputs first: they go to their safe state before anything slow can fail.
        let outputs = self.outputs(clock)?;
        let trigger = self.trigger()?;
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
            outputs,
            trigger,
            encoder,
        })
    }

    /// A clock for the line's stages: the monotonic system clock.
    pub fn clock(&self) -> Arc<dyn Clock> {
        Arc::new(MonotonicClock)
    }
}

fn ms(v: f64) -> Duration {
    Duration::from_secs_f64(v / 1000.0)
}

fn log_model(engine: &dyn Engine, kind: EngineKind) {
    let i = engine.info();
    log::info!(
        "model: {} ({} {}, input {}x{}, engine {}, sha256 {}…)",
        i.path.display(),
        i.meta("partguard.model_name"),
        i.meta("partguard.precision"),
        i.input.width,
        i.input.height,
        kind.name(),
        &i.file_sha256[..12.min(i.file_sha256.len())]
    );
}
