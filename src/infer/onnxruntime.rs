//! Inference with ONNX Runtime through the `ort` crate (feature `onnxruntime`; feature `tensorrt`
//! adds NVIDIA's TensorRT and CUDA execution providers for the Jetson).
//!
//! ONNX Runtime is loaded at run time (`ort`'s `load-dynamic`: nothing is downloaded or linked at
//! build time) from `model.onnxruntime_library` or `ORT_DYLIB_PATH`; the PyPI wheel's
//! `onnxruntime/capi/libonnxruntime.so.*` works (1.17 or newer). The model is checked against the
//! same contract as with tract (the same [`ModelInfo`], the same errors), and a session is built
//! once; per frame the input buffer is lent to ONNX Runtime without a copy.
//!
//! With `tensorrt`, the providers are tried in order TensorRT -> CUDA -> CPU. ONNX Runtime would
//! fall back silently; here each registration is told to fail loudly, and every fallback is
//! logged as an error naming what failed, so a Jetson that runs on its CPU says so.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::Session;
use ort::value::TensorRef;

use super::{checked, read_contract, Engine, Inference, ModelError, ModelInfo};

/// The execution provider a session asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Provider {
    /// ONNX Runtime's CPU provider (any board).
    Cpu,
    /// TensorRT (then CUDA, then CPU, each fallback logged as an error).
    TensorRt {
        fp16: bool,
        int8: bool,
        /// Engines and timing caches are kept here: the minutes-long engine build happens once.
        cache_dir: PathBuf,
    },
}

/// How to set up ONNX Runtime.
#[derive(Debug, Clone, PartialEq)]
pub struct OrtSettings {
    /// `libonnxruntime.so`; `None`: the `ORT_DYLIB_PATH` environment variable.
    pub library: Option<PathBuf>,
    /// Intra-op threads (0: ONNX Runtime's default, one per core).
    pub threads: usize,
    /// Graph optimizations (fusions). Off, int8 results equal tract's exactly; on, they differ
    /// slightly (fused requantization) and run faster.
    pub optimizations: bool,
    pub provider: Provider,
}

impl Default for OrtSettings {
    fn default() -> Self {
        OrtSettings {
            library: None,
            threads: 0,
            optimizations: true,
            provider: Provider::Cpu,
        }
    }
}

/// The process's one ONNX Runtime environment (the library can be loaded once per process).
static ENVIRONMENT: OnceLock<(PathBuf, Environment)> = OnceLock::new();

fn environment(path: &Path, library: Option<&Path>) -> Result<&'static Environment, ModelError> {
    let engine_err = |reason: String| ModelError::Engine {
        path: path.to_owned(),
        engine: "onnxruntime",
        reason,
    };
    let lib = match library {
        Some(l) => l.to_owned(),
        None => std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from).ok_or_else(|| {
            engine_err("no ONNX Runtime library given: set model.onnxruntime_library or ORT_DYLIB_PATH to libonnxruntime.so (the PyPI wheel's onnxruntime/capi/libonnxruntime.so.*; README, Engines)".into())
        })?,
    };
    if let Some((loaded, env)) = ENVIRONMENT.get() {
        if *loaded != lib {
            log::warn!(
                "ONNX Runtime is already loaded from {}; {} is not loaded (one library per process)",
                loaded.display(),
                lib.display()
            );
        }
        return Ok(env);
    }
    if !lib.is_file() {
        return Err(engine_err(format!(
            "ONNX Runtime library {} does not exist; point model.onnxruntime_library or ORT_DYLIB_PATH at libonnxruntime.so",
            lib.display()
        )));
    }
    let env = ort::init_from(&lib)
        .map_err(|e| {
            engine_err(format!(
                "cannot load ONNX Runtime from {}: {e}; it must be onnxruntime 1.17 or newer for this CPU",
                lib.display()
            ))
        })?
        .with_name("partguard")
        .build()
        .map_err(|e| {
            engine_err(format!(
                "ONNX Runtime from {} cannot start: {e}",
                lib.display()
            ))
        })?;
    let _ = ENVIRONMENT.set((lib, env));
    ENVIRONMENT
        .get()
        .map(|(_, env)| env)
        .ok_or_else(|| engine_err("ONNX Runtime environment lost".into()))
}

/// An ONNX Runtime session over a model that follows the partguard contract.
pub struct OrtEngine {
    info: ModelInfo,
    session: Session,
    input: Vec<f32>,
    map: Vec<f32>,
    provider: &'static str,
}

impl OrtEngine {
    /// Loads ONNX Runtime (once per process), checks the model's contract, and builds the
    /// session with the configured provider; one run on zeros checks the output shapes.
    pub fn load(path: &Path, settings: &OrtSettings) -> Result<OrtEngine, ModelError> {
        let (_bytes, _proto, info) = read_contract(path)?;
        let env = environment(path, settings.library.as_deref())?;
        let prepare = |reason: String| ModelError::Prepare {
            path: path.to_owned(),
            reason,
        };
        let level = if settings.optimizations {
            GraphOptimizationLevel::All
        } else {
            GraphOptimizationLevel::Disable
        };
        let mut builder = Session::builder(env)
            .map_err(|e| prepare(e.to_string()))?
            .with_optimization_level(level)
            .map_err(|e| prepare(e.to_string()))?;
        if settings.threads > 0 {
            builder = builder
                .with_intra_threads(settings.threads)
                .map_err(|e| prepare(e.to_string()))?;
        }
        let (mut builder, provider) = with_provider(builder, &settings.provider, path);
        let session = builder
            .commit_from_file(path)
            .map_err(|e| prepare(e.to_string()))?;
        let (w, h) = (info.input.width, info.input.height);
        let mut engine = OrtEngine {
            info,
            session,
            input: vec![0.0; 3 * w * h],
            map: vec![0.0; w * h],
            provider,
        };
        engine.run_raw().map_err(|problem| ModelError::Contract {
            path: path.to_owned(),
            problem,
        })?;
        log::info!(
            "onnxruntime: {} with the {provider} execution provider",
            path.display()
        );
        Ok(engine)
    }

    /// The execution provider the session was built with (`CPU`, `CUDA`, `TensorRT`).
    pub fn provider(&self) -> &'static str {
        self.provider
    }

    fn run_raw(&mut self) -> Result<f32, String> {
        let (w, h) = (self.info.input.width, self.info.input.height);
        let input = TensorRef::from_array_view(([1usize, 3, h, w], &self.input[..]))
            .map_err(|e| format!("input image: {e}"))?;
        let outputs = self
            .session
            .run(ort::inputs!["image" => input])
            .map_err(|e| e.to_string())?;
        let map_value = outputs
            .get("anomaly_map")
            .ok_or("the model gave no output anomaly_map")?;
        let (shape, map) = map_value
            .try_extract_tensor::<f32>()
            .map_err(|e| format!("anomaly_map: {e}"))?;
        let dims: Vec<i64> = shape.iter().copied().collect();
        if dims != [1, 1, h as i64, w as i64] {
            return Err(format!(
                "output anomaly_map has shape {dims:?}, expected [1, 1, {h}, {w}]"
            ));
        }
        self.map.copy_from_slice(map);
        let (shape, score) = outputs
            .get("score")
            .ok_or("the model gave no output score")?
            .try_extract_tensor::<f32>()
            .map_err(|e| format!("score: {e}"))?;
        if score.len() != 1 {
            let dims: Vec<i64> = shape.iter().copied().collect();
            return Err(format!("output score has shape {dims:?}, expected [1]"));
        }
        Ok(score[0])
    }
}

/// Registers the provider; with TensorRT each failed registration is logged and the next tried.
fn with_provider(
    builder: SessionBuilder,
    provider: &Provider,
    path: &Path,
) -> (SessionBuilder, &'static str) {
    match provider {
        Provider::Cpu => (builder, "CPU"),
        #[cfg(feature = "tensorrt")]
        Provider::TensorRt {
            fp16,
            int8,
            cache_dir,
        } => {
            use ort::ep;
            if let Err(e) = std::fs::create_dir_all(cache_dir) {
                log::error!(
                    "TensorRT engine cache {}: {e}; engines will be rebuilt at every start (minutes)",
                    cache_dir.display()
                );
            }
            let cache = cache_dir.display().to_string();
            let trt = ep::TensorRT::default()
                .with_fp16(*fp16)
                .with_int8(*int8)
                .with_engine_cache(true)
                .with_engine_cache_path(&cache)
                .with_timing_cache(true)
                .with_timing_cache_path(&cache)
                .build()
                .error_on_failure();
            let builder = match builder.with_execution_providers([trt]) {
                Ok(b) => return (b, "TensorRT"),
                Err(e) => {
                    log::error!(
                        "{}: the TensorRT execution provider is not available ({e}); trying CUDA. Check that this onnxruntime library was built with TensorRT (README, Jetson)",
                        path.display()
                    );
                    e.recover()
                }
            };
            let cuda = ep::CUDA::default().build().error_on_failure();
            match builder.with_execution_providers([cuda]) {
                Ok(b) => (b, "CUDA"),
                Err(e) => {
                    log::error!(
                        "{}: the CUDA execution provider is not available either ({e}); RUNNING ON THE CPU, expect much slower inference",
                        path.display()
                    );
                    (e.recover(), "CPU")
                }
            }
        }
        #[cfg(not(feature = "tensorrt"))]
        Provider::TensorRt { .. } => {
            log::error!(
                "{}: TensorRT was asked for but partguard was built without the `tensorrt` feature; RUNNING ON THE CPU",
                path.display()
            );
            (builder, "CPU")
        }
    }
}

impl Engine for OrtEngine {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn input_mut(&mut self) -> &mut [f32] {
        &mut self.input
    }

    fn run(&mut self) -> Result<Inference<'_>, ModelError> {
        let score = self.run_raw().map_err(|reason| ModelError::Run {
            path: self.info.path.clone(),
            reason,
        })?;
        checked(&self.info, score, &self.map)
    }
}
