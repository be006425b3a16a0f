//! The TOML configuration: source, model, decision, reject output, logging.
//!
//! Relative paths are resolved against the directory of the config file, so a config and the files it
//! names can move together. Every error names the file and the field, and says what to do.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::gpio::{LineId, OutputKind, SafeState};

mod camera;
mod plant;
mod validate;
pub use camera::CameraConfig;
pub use plant::{broker_address, HttpConfig, MqttConfig};

/// What went wrong reading or checking a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}; check the path given to --config")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `reason` is the TOML parser's message on one line (it points at the line and column).
    #[error("config file {path} is not valid: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("config file {path}: field `{field}` {problem}")]
    Field {
        path: PathBuf,
        field: &'static str,
        problem: String,
    },
    #[error("cannot write config file {path}: {source}; the file is unchanged")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What `bench --pick` writes into `[model]`: the engine, its threads and, when another model won,
/// that model's path.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelChoice {
    pub engine: crate::infer::EngineKind,
    pub threads: usize,
    pub path: Option<PathBuf>,
}

/// Writes `choice` into the `[model]` table of the config file at `path`, keeping every other line,
/// comment and layout as it is. The new text is parsed and checked as a config before it replaces
/// the file (written to a temporary file beside it, then renamed), so a failure leaves the file as
/// it was.
pub fn write_model_choice(path: &Path, choice: &ModelChoice) -> Result<(), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut doc: toml_edit::DocumentMut =
        text.parse()
            .map_err(|e: toml_edit::TomlError| ConfigError::Parse {
                path: path.to_owned(),
                reason: e.to_string().trim_end().replace('\n', " "),
            })?;
    let model = doc
        .get_mut("model")
        .and_then(|m| m.as_table_like_mut())
        .ok_or_else(|| ConfigError::Field {
            path: path.to_owned(),
            field: "model",
            problem: "is missing or not a table; add a [model] section first".into(),
        })?;
    model.insert("engine", toml_edit::value(choice.engine.name()));
    model.insert("threads", toml_edit::value(choice.threads as i64));
    if let Some(p) = &choice.path {
        model.insert("path", toml_edit::value(p.display().to_string()));
    }
    let new_text = doc.to_string();
    let base = path.parent().unwrap_or(Path::new("."));
    Config::parse(&new_text, path, base)?;
    let write_err = |source: std::io::Error| ConfigError::Write {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("toml.partguard-tmp");
    std::fs::write(&tmp, new_text).map_err(write_err)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        write_err(e)
    })
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The file it was read from, for errors found after loading (not a TOML field).
    #[serde(skip)]
    pub file: PathBuf,
    pub source: SourceConfig,
    /// V4L2 controls locked at every camera open (ignored, with a warning, for a replay).
    #[serde(default)]
    pub camera: CameraConfig,
    /// Optional region of interest: only this rectangle of each frame goes to the model.
    #[serde(default)]
    pub roi: Option<crate::preprocess::Roi>,
    pub model: ModelConfig,
    pub decision: DecisionConfig,
    pub reject: RejectConfig,
    /// Where the ejector is and what happens to parts not judged in time.
    #[serde(default)]
    pub timing: TimingConfig,
    /// Optional photo-eye: each (debounced) edge is one part.
    #[serde(default)]
    pub trigger: Option<TriggerConfig>,
    /// Optional conveyor encoder: delays in ticks instead of milliseconds.
    #[serde(default)]
    pub encoder: Option<EncoderConfig>,
    /// Optional alarm output (stack light, PLC input): active while fail-safe events happen.
    #[serde(default)]
    pub alarm: Option<OutputLineConfig>,
    /// Optional ready output: active (or toggling, the heartbeat) while the station inspects.
    #[serde(default)]
    pub ready: Option<OutputLineConfig>,
    #[serde(default)]
    pub realtime: RealtimeConfig,
    #[serde(default)]
    pub log: LogConfig,
    /// Optional reject archive: images of rejected parts with their heatmaps, in a bounded ring.
    #[serde(default)]
    pub archive: Option<ArchiveConfig>,
    /// Optional page on the device with its JSON API and Prometheus `/metrics`.
    #[serde(default)]
    pub http: Option<HttpConfig>,
    /// Optional MQTT results to the plant's broker.
    #[serde(default)]
    pub mqtt: Option<MqttConfig>,
}

/// The reject archive (`src/archive.rs`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ArchiveConfig {
    /// Folder of the ring (created if missing).
    pub dir: PathBuf,
    /// Most images kept; the oldest are deleted first.
    #[serde(default = "default_archive_images")]
    pub max_images: usize,
    /// Most disk space kept, in MiB; the oldest are deleted first.
    #[serde(default = "default_archive_mib")]
    pub max_megabytes: f64,
    /// Also archive parts that could not be judged (inference faults).
    #[serde(default = "default_true")]
    pub faults: bool,
}

fn default_archive_images() -> usize {
    1000
}
fn default_archive_mib() -> f64 {
    500.0
}

impl ArchiveConfig {
    pub fn settings(&self) -> crate::archive::ArchiveSettings {
        crate::archive::ArchiveSettings {
            dir: self.dir.clone(),
            max_images: self.max_images,
            max_bytes: (self.max_megabytes * 1024.0 * 1024.0) as u64,
        }
    }
}

/// Reject timing: `delay_ms` or `delay_ticks` (with an `[encoder]`), and the fail-safe policy.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TimingConfig {
    /// Time from capture (or trigger) until the part is at the ejector.
    #[serde(default)]
    pub delay_ms: Option<f64>,
    /// Encoder ticks from capture (or trigger) until the part is at the ejector.
    #[serde(default)]
    pub delay_ticks: Option<u64>,
    /// The decision must be made this long before the part reaches the ejector (time mode).
    #[serde(default = "default_margin_ms")]
    pub margin_ms: f64,
    /// The same in encoder ticks (encoder mode).
    #[serde(default)]
    pub margin_ticks: u64,
    /// Least off time of the ejector between two pulses; closer rejects merge.
    #[serde(default)]
    pub min_gap_ms: f64,
    /// Parts tracked between camera and ejector at once; more is a fault.
    #[serde(default = "default_queue_size")]
    pub queue_size: usize,
    /// What happens to a part not judged in time: "reject" (default) or "pass" (with alarm).
    #[serde(default)]
    pub policy: crate::schedule::Policy,
    /// The alarm output stays on this long after the last fail-safe event.
    #[serde(default = "default_alarm_hold_ms")]
    pub alarm_hold_ms: f64,
}

impl Default for TimingConfig {
    fn default() -> Self {
        TimingConfig {
            delay_ms: None,
            delay_ticks: None,
            margin_ms: default_margin_ms(),
            margin_ticks: 0,
            min_gap_ms: 0.0,
            queue_size: default_queue_size(),
            policy: Default::default(),
            alarm_hold_ms: default_alarm_hold_ms(),
        }
    }
}

/// Delay used when `[timing]` names none.
pub const DEFAULT_DELAY_MS: f64 = 1000.0;

fn default_margin_ms() -> f64 {
    20.0
}
fn default_queue_size() -> usize {
    64
}
fn default_alarm_hold_ms() -> f64 {
    2000.0
}

/// A photo-eye on a GPIO input (gpiocdev).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TriggerConfig {
    /// GPIO photo-eye: chip and line (give these, or `socket`).
    #[serde(default)]
    pub chip: Option<String>,
    #[serde(default)]
    pub line: Option<LineId>,
    /// Software trigger: a UNIX datagram socket partguard creates; each datagram is one part in
    /// position (indexing tables, robot cells: a PLC gateway or the cell's controller sends it).
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// The part is present when the input is low.
    #[serde(default)]
    pub active_low: bool,
    /// Edges closer than this to the last accepted one are bounce.
    #[serde(default = "default_debounce_ms")]
    pub debounce_ms: f64,
    /// A frame captured within this long after the trigger is that part's frame; none is a
    /// missed frame.
    #[serde(default = "default_frame_window_ms")]
    pub frame_window_ms: f64,
}

fn default_debounce_ms() -> f64 {
    2.0
}
fn default_frame_window_ms() -> f64 {
    100.0
}

/// Which encoder edges count.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum EncoderEdges {
    #[default]
    Rising,
    Both,
}

/// A conveyor encoder's pulse output on a GPIO input (gpiocdev).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EncoderConfig {
    pub chip: String,
    pub line: LineId,
    #[serde(default)]
    pub edges: EncoderEdges,
}

/// An extra output (`[alarm]`, `[ready]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OutputLineConfig {
    pub kind: OutputKind,
    #[serde(default)]
    pub chip: Option<String>,
    #[serde(default)]
    pub line: Option<LineId>,
    #[serde(default)]
    pub active_low: bool,
    #[serde(default = "default_safe_state")]
    pub safe_state: SafeState,
    /// `[ready]` only: toggle every this many ms while healthy (0: steady active). `[alarm]`
    /// refuses it.
    #[serde(default)]
    pub heartbeat_ms: f64,
}

/// Real-time scheduling of the reject actuator thread (needs CAP_SYS_NICE or an rtprio limit).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RealtimeConfig {
    /// SCHED_FIFO priority 1..=99 for the actuator thread; 0 leaves it SCHED_OTHER.
    #[serde(default = "default_fifo_priority")]
    pub fifo_priority: u8,
    /// Pin the actuator thread to this CPU.
    #[serde(default)]
    pub actuator_cpu: Option<usize>,
    /// Pin the inference thread to this CPU.
    #[serde(default)]
    pub inference_cpu: Option<usize>,
}

impl Default for RealtimeConfig {
    fn default() -> Self {
        RealtimeConfig {
            fifo_priority: default_fifo_priority(),
            actuator_cpu: None,
            inference_cpu: None,
        }
    }
}

fn default_fifo_priority() -> u8 {
    80
}

/// Where frames come from.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SourceConfig {
    /// A folder of images replayed in name order (recursively); the label of each image is its
    /// folder's name (`good` is a good part, any other name a defect).
    Replay {
        path: PathBuf,
        #[serde(default, rename = "loop")]
        looping: bool,
        /// Frames per second; 0 replays as fast as the loop runs.
        #[serde(default)]
        rate_hz: f64,
        /// Decode every image at start (so the loop never touches the disk) when they fit this budget.
        #[serde(default = "default_preload_mib")]
        preload_mib: usize,
    },
    /// A V4L2 camera.
    V4l2 {
        device: PathBuf,
        width: u32,
        height: u32,
        /// `auto`, `YUYV`, `MJPG`, `GREY` or `RGB3` (the V4L2 fourcc).
        #[serde(default = "default_format")]
        format: String,
        #[serde(default = "default_buffers")]
        buffers: u32,
        /// V4L2 input index to select (e.g. an HDMI input); the driver's current one when absent.
        #[serde(default)]
        input: Option<u32>,
    },
}

fn default_preload_mib() -> usize {
    512
}
fn default_format() -> String {
    "auto".into()
}
fn default_buffers() -> u32 {
    4
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// ONNX file following the contract in `models/README.md`.
    pub path: PathBuf,
    /// `tract` (default), `onnxruntime` or `tensorrt` (cargo features of the same names).
    #[serde(default)]
    pub engine: crate::infer::EngineKind,
    /// ONNX Runtime library (`libonnxruntime.so`); default: the `ORT_DYLIB_PATH` variable.
    #[serde(default)]
    pub onnxruntime_library: Option<PathBuf>,
    /// Threads the engine may use for one inference (0: the engine's default: tract 1, ONNX
    /// Runtime one per core). tract > 1 runs its matrix products on a pool of that many threads.
    #[serde(default)]
    pub threads: usize,
    /// ONNX Runtime graph optimizations (default on; off gives int8 results equal to tract's).
    #[serde(default = "default_true")]
    pub onnxruntime_optimizations: bool,
    /// TensorRT: FP16 kernels (default on), INT8 kernels (default off), engine cache folder.
    #[serde(default = "default_true")]
    pub tensorrt_fp16: bool,
    #[serde(default)]
    pub tensorrt_int8: bool,
    #[serde(default = "default_tensorrt_cache")]
    pub tensorrt_cache: PathBuf,
}

fn default_tensorrt_cache() -> PathBuf {
    PathBuf::from("/var/lib/partguard/tensorrt-cache")
}

impl ModelConfig {
    /// The engine settings of this section.
    pub fn engine_options(&self) -> crate::infer::EngineOptions {
        crate::infer::EngineOptions {
            library: self.onnxruntime_library.clone(),
            threads: self.threads,
            optimizations: self.onnxruntime_optimizations,
            tensorrt_fp16: self.tensorrt_fp16,
            tensorrt_int8: self.tensorrt_int8,
            tensorrt_cache: self.tensorrt_cache.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DecisionConfig {
    /// Image score above which a part is rejected (without a calibration file).
    #[serde(default)]
    pub threshold: Option<f32>,
    /// Calibration file written by `partguard calibrate` (threshold tied to the model's hash).
    #[serde(default)]
    pub calibration: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RejectConfig {
    pub kind: OutputKind,
    /// gpiocdev: the chip, e.g. `/dev/gpiochip0` or `gpiochip0`.
    #[serde(default)]
    pub chip: Option<String>,
    /// gpiocdev: line offset on the chip, or the line's name (e.g. `PQ.05` on a Jetson).
    /// rpi: the BCM GPIO number.
    #[serde(default)]
    pub line: Option<LineId>,
    /// The ejector fires when the pin is low.
    #[serde(default)]
    pub active_low: bool,
    #[serde(default = "default_safe_state")]
    pub safe_state: SafeState,
    /// Width of a reject pulse.
    pub pulse_ms: f64,
}

fn default_safe_state() -> SafeState {
    SafeState::Inactive
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `error`, `warn`, `info`, `debug` or `trace`; `RUST_LOG` overrides it.
    #[serde(default = "default_level")]
    pub level: String,
    /// Seconds between status lines during `run`; 0 turns them off.
    #[serde(default = "default_status")]
    pub status_interval_s: f64,
    /// Print one line per inspected part.
    #[serde(default = "default_true")]
    pub print_decisions: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: default_level(),
            status_interval_s: default_status(),
            print_decisions: true,
        }
    }
}

fn default_level() -> String {
    "info".into()
}
fn default_status() -> f64 {
    5.0
}
fn default_true() -> bool {
    true
}

/// The example config shipped in `examples/partguard.toml`, used when no `--config` is given.
pub const BUILTIN_DEFAULT: &str = include_str!("../../examples/partguard.toml");

impl Config {
    /// Reads and checks a config file; relative paths become relative to the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, path, base)
    }

    /// The built-in default: the shipped example, with paths relative to the source tree's
    /// `examples/` directory.
    pub fn builtin() -> Result<Config, ConfigError> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        Self::parse(BUILTIN_DEFAULT, &dir.join("partguard.toml"), &dir)
    }

    /// Parses config text; `path` is only used in messages, `base` resolves relative paths.
    pub fn parse(text: &str, path: &Path, base: &Path) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            reason: e.to_string().trim_end().replace('\n', " "),
        })?;
        cfg.file = path.to_owned();
        cfg.resolve(base);
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn resolve(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        match &mut self.source {
            SourceConfig::Replay { path, .. } => fix(path),
            SourceConfig::V4l2 { .. } => {}
        }
        fix(&mut self.model.path);
        if let Some(l) = &mut self.model.onnxruntime_library {
            fix(l);
        }
        fix(&mut self.model.tensorrt_cache);
        if let Some(c) = &mut self.decision.calibration {
            fix(c);
        }
        if let Some(a) = &mut self.archive {
            fix(&mut a.dir);
        }
        if let Some(m) = &mut self.mqtt {
            m.resolve(base);
        }
    }
}
