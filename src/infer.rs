//! Inference with `tract-onnx`: the model is read, checked against the partguard contract, typed,
//! optimized and planned once; per frame it yields an image score and an anomaly map. With the
//! `onnxruntime` feature, `onnxruntime::OrtEngine` runs the same contract through ONNX Runtime
//! (and, with `tensorrt`, TensorRT); [`load_engine`] picks what `model.engine` names.
//!
//! The contract is defined once, in `models/contract.json` ([`contract`]): input `image`
//! `[1, 3, H, W]` f32 RGB; outputs `anomaly_map` `[1, 1, H, W]` f32 and `score` `[1]` f32;
//! `partguard.*` metadata giving the input size and pixel scaling.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tract_linalg::multithread::Executor;
use tract_onnx::prelude::*;

use crate::preprocess::InputSpec;

/// Model faults: each names the file and what to do.
///
/// `reason` in `Corrupt`, `Prepare`, `Run` and `Engine` is the engine's whole error chain on one
/// line: tract's and ONNX Runtime's error types differ, and the line logs one message per fault.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read model {path}: {source}; check model.path")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("model {path} is not a valid ONNX file ({reason}); re-export it (models/README.md) or restore the shipped file")]
    Corrupt { path: PathBuf, reason: String },
    #[error("model {path} does not follow the partguard model contract: {problem}; see models/README.md, section \"Model contract\"")]
    Contract { path: PathBuf, problem: String },
    #[error("model {path} cannot be prepared for inference: {reason}")]
    Prepare { path: PathBuf, reason: String },
    #[error("inference failed on model {path}: {reason}")]
    Run { path: PathBuf, reason: String },
    #[error("model {path} produced a non-finite score ({score}); the part is treated as a fault")]
    NonFinite { path: PathBuf, score: f32 },
    #[error("model {path}, engine {engine}: {reason}")]
    Engine {
        path: PathBuf,
        engine: &'static str,
        reason: String,
    },
}

pub mod contract;
pub mod conv;
pub mod im2col;
#[cfg(feature = "onnxruntime")]
pub mod onnxruntime;
pub mod plan;
pub mod products;
pub mod quantize;
pub mod requantize;
pub mod resize;
pub mod sumpool;
pub mod tiles;
pub mod upsample;

pub use contract::model_info_from_bytes;
use contract::read_contract;
pub use plan::{f32_convolutions_direct, prepare_for_tract, typed_for_contract};

/// For the engine's ops on 2-D maps: a 2-D kernel over channels-first maps at stride 1.
fn is_2d_unit_stride(spec: &tract_onnx::tract_core::ops::cnn::PoolSpec) -> bool {
    use tract_onnx::tract_core::ops::nn::DataFormat;
    spec.kernel_shape.len() == 2
        && matches!(spec.data_format, DataFormat::NCHW | DataFormat::CHW)
        && spec.strides().iter().all(|&s| s == 1)
}

/// For the engine's ops on 2-D maps: (C, H, W) of a concrete `[1,] C, H, W` fact (one image).
fn one_chw_image(fact: &TypedFact) -> Option<(usize, usize, usize)> {
    let shape = fact.shape.as_concrete()?;
    let rank = shape.len();
    if rank < 3 || shape[..rank - 3].iter().product::<usize>() != 1 {
        return None;
    }
    Some((shape[rank - 3], shape[rank - 2], shape[rank - 1]))
}

/// For the engine's ops on 2-D maps: `fact`'s shape with its last two axes `hw`, of type `dt`.
fn with_last_two_axes(
    fact: &TypedFact,
    dt: DatumType,
    (h, w): (usize, usize),
) -> TractResult<TypedFact> {
    let rank = fact.rank();
    tract_onnx::tract_core::internal::ensure!(
        rank >= 2,
        "a 2-D map needs at least 2 axes, got {:?}",
        fact.shape
    );
    let mut shape = fact.shape.to_tvec();
    shape[rank - 2] = h.into();
    shape[rank - 1] = w.into();
    Ok(dt.fact(shape))
}

/// Which inference engine runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// tract (pure Rust, always built in).
    #[default]
    Tract,
    /// ONNX Runtime's CPU provider (feature `onnxruntime`).
    Onnxruntime,
    /// ONNX Runtime with TensorRT, then CUDA, then CPU (feature `tensorrt`, Jetson).
    Tensorrt,
}

impl EngineKind {
    pub const ALL: [EngineKind; 3] = [
        EngineKind::Tract,
        EngineKind::Onnxruntime,
        EngineKind::Tensorrt,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Tract => "tract",
            EngineKind::Onnxruntime => "onnxruntime",
            EngineKind::Tensorrt => "tensorrt",
        }
    }

    pub fn parse(s: &str) -> Option<EngineKind> {
        Self::ALL.into_iter().find(|k| k.name() == s)
    }

    /// Whether this binary was built with the engine.
    pub fn built_in(self) -> bool {
        match self {
            EngineKind::Tract => true,
            EngineKind::Onnxruntime => cfg!(feature = "onnxruntime"),
            EngineKind::Tensorrt => cfg!(feature = "tensorrt"),
        }
    }

    /// The cargo feature that builds the engine in.
    pub fn feature(self) -> &'static str {
        match self {
            EngineKind::Tract => "(none)",
            EngineKind::Onnxruntime => "onnxruntime",
            EngineKind::Tensorrt => "tensorrt",
        }
    }
}

/// Settings of the ONNX Runtime engines (ignored by tract).
#[derive(Debug, Clone, PartialEq)]
pub struct EngineOptions {
    /// `libonnxruntime.so`; `None`: `ORT_DYLIB_PATH`.
    pub library: Option<PathBuf>,
    /// Threads for one inference (0: the engine's default: tract 1, ONNX Runtime one per core).
    pub threads: usize,
    /// ONNX Runtime graph optimizations (fusions).
    pub optimizations: bool,
    pub tensorrt_fp16: bool,
    pub tensorrt_int8: bool,
    pub tensorrt_cache: PathBuf,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            library: None,
            threads: 0,
            optimizations: true,
            tensorrt_fp16: true,
            tensorrt_int8: false,
            tensorrt_cache: PathBuf::from("/var/lib/partguard/tensorrt-cache"),
        }
    }
}

/// Loads the model with the engine `kind`.
pub fn load_engine(
    path: &Path,
    kind: EngineKind,
    options: &EngineOptions,
) -> Result<Box<dyn Engine>, ModelError> {
    if !kind.built_in() {
        return Err(ModelError::Engine {
            path: path.to_owned(),
            engine: kind.name(),
            reason: format!(
                "this partguard was built without it; rebuild with `--features {}` or use engine \"tract\"",
                kind.feature()
            ),
        });
    }
    match kind {
        EngineKind::Tract => Ok(Box::new(TractEngine::load_with_threads(
            path,
            options.threads,
        )?)),
        #[cfg(feature = "onnxruntime")]
        EngineKind::Onnxruntime | EngineKind::Tensorrt => {
            use onnxruntime::{OrtEngine, OrtSettings, Provider};
            let provider = if kind == EngineKind::Tensorrt {
                Provider::TensorRt {
                    fp16: options.tensorrt_fp16,
                    int8: options.tensorrt_int8,
                    cache_dir: options.tensorrt_cache.clone(),
                }
            } else {
                Provider::Cpu
            };
            let settings = OrtSettings {
                library: options.library.clone(),
                threads: options.threads,
                optimizations: options.optimizations,
                provider,
            };
            Ok(Box::new(OrtEngine::load(path, &settings)?))
        }
        #[cfg(not(feature = "onnxruntime"))]
        _ => {
            let _ = options;
            Err(ModelError::Engine {
                path: path.to_owned(),
                engine: kind.name(),
                reason: "not built in".into(),
            })
        }
    }
}

/// What the model's file and metadata say about it.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub path: PathBuf,
    /// sha256 of the whole file: what a calibration is tied to.
    pub file_sha256: String,
    pub input: InputSpec,
    pub metadata: BTreeMap<String, String>,
}

impl ModelInfo {
    pub fn meta(&self, key: &str) -> &str {
        self.metadata.get(key).map(String::as_str).unwrap_or("?")
    }
}

/// One inference: the image score and the anomaly map (row-major, `width` x `height`).
#[derive(Debug)]
pub struct Inference<'a> {
    pub score: f32,
    pub map: &'a [f32],
    pub width: usize,
    pub height: usize,
}

/// An inference engine: fill `input_mut`, then `run`.
pub trait Engine: Send {
    fn info(&self) -> &ModelInfo;
    /// The input tensor's values, NCHW, to be filled by the preprocessor.
    fn input_mut(&mut self) -> &mut [f32];
    fn run(&mut self) -> Result<Inference<'_>, ModelError>;
}

pub struct TractEngine {
    info: ModelInfo,
    state: TypedSimpleState,
    /// What the preprocessor fills; copied into `input` at each run, so handing it out never fails.
    staging: Vec<f32>,
    input: Arc<Tensor>,
    map: Vec<f32>,
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads only the model's metadata and contract (for `check` and calibration files).
pub fn read_model_info(path: &Path) -> Result<ModelInfo, ModelError> {
    read_contract(path).map(|(_, _, info)| info)
}

impl TractEngine {
    /// Loads, checks, types, optimizes and plans the model once; runs it on the calling thread.
    pub fn load(path: &Path) -> Result<TractEngine, ModelError> {
        TractEngine::load_with_threads(path, 1)
    }

    /// As [`TractEngine::load`], with tract's matrix products split over a private pool of
    /// `threads` threads (0 or 1: none, everything on the calling thread). The other operators
    /// stay on the calling thread.
    pub fn load_with_threads(path: &Path, threads: usize) -> Result<TractEngine, ModelError> {
        let (_bytes, proto, info) = read_contract(path)?;
        let prepare = |e: TractError| ModelError::Prepare {
            path: path.to_owned(),
            reason: format!("{e:#}"),
        };
        let (w, h) = (info.input.width, info.input.height);
        let model = tract_onnx::onnx()
            .model_for_proto_model(&proto)
            .map_err(|e| ModelError::Corrupt {
                path: path.to_owned(),
                reason: format!("{e:#}"),
            })?;
        let model = prepare_for_tract(model, (h, w)).map_err(prepare)?;
        let mut options = RunOptions::default();
        if threads > 1 {
            let pool = rayon::ThreadPoolBuilder::new()
                .thread_name(|n| format!("tract-{n}"))
                .num_threads(threads)
                .build()
                .map_err(|e| ModelError::Prepare {
                    path: path.to_owned(),
                    reason: format!(
                        "cannot start {threads} inference threads (model.threads): {e}"
                    ),
                })?;
            options.executor = Some(Executor::MultiThread(Arc::new(pool)));
        }
        let plan = model
            .into_runnable_with_options(&options)
            .map_err(prepare)?;
        let state = plan.spawn().map_err(prepare)?;
        let mut engine = TractEngine {
            info,
            state,
            staging: vec![0.0; 3 * w * h],
            input: Arc::new(Tensor::zero::<f32>(&[1, 3, h, w]).map_err(prepare)?),
            map: vec![0.0; w * h],
        };
        // One run on zeros checks the output shapes now rather than on the first part.
        engine.run_raw().map_err(|e| ModelError::Contract {
            path: path.to_owned(),
            problem: e,
        })?;
        Ok(engine)
    }

    fn run_raw(&mut self) -> Result<f32, String> {
        // tract has released its reference after the previous run, so this does not copy the tensor.
        let tensor = Arc::make_mut(&mut self.input);
        let view = tensor
            .to_plain_array_view_mut::<f32>()
            .map_err(|e| format!("input tensor: {e:#}"))?;
        match view.into_slice() {
            Some(dst) if dst.len() == self.staging.len() => dst.copy_from_slice(&self.staging),
            _ => {
                return Err(
                    "the input tensor is not one contiguous f32 buffer of the model's size".into(),
                )
            }
        }
        let outputs = self
            .state
            .run(tvec![TValue::from_const(self.input.clone())])
            .map_err(|e| format!("{e:#}"))?;
        let (w, h) = (self.info.input.width, self.info.input.height);
        let map = outputs[0]
            .to_plain_array_view::<f32>()
            .map_err(|e| format!("anomaly_map: {e:#}"))?;
        if map.shape() != [1, 1, h, w] {
            return Err(format!(
                "output anomaly_map has shape {:?}, expected [1, 1, {h}, {w}]",
                map.shape()
            ));
        }
        let score = outputs[1]
            .to_plain_array_view::<f32>()
            .map_err(|e| format!("score: {e:#}"))?;
        if score.len() != 1 {
            return Err(format!(
                "output score has shape {:?}, expected [1]",
                score.shape()
            ));
        }
        let score_value = score.iter().next().copied().unwrap_or(f32::NAN);
        for (dst, src) in self.map.iter_mut().zip(map.iter()) {
            *dst = *src;
        }
        Ok(score_value)
    }
}

impl Engine for TractEngine {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn input_mut(&mut self) -> &mut [f32] {
        &mut self.staging
    }

    fn run(&mut self) -> Result<Inference<'_>, ModelError> {
        let score = self.run_raw().map_err(|reason| ModelError::Run {
            path: self.info.path.clone(),
            reason,
        })?;
        checked(&self.info, score, &self.map)
    }
}

/// What every engine returns after a run: a finite score and map, or a fault.
fn checked<'a>(info: &ModelInfo, score: f32, map: &'a [f32]) -> Result<Inference<'a>, ModelError> {
    if !score.is_finite() || map.iter().any(|v| !v.is_finite()) {
        return Err(ModelError::NonFinite {
            path: info.path.clone(),
            score,
        });
    }
    Ok(Inference {
        score,
        map,
        width: info.input.width,
        height: info.input.height,
    })
}
