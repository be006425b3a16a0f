//! Inference with `tract-onnx`: the model is read, checked against the partguard contract, typed,
//! optimized and planned once; per frame it yields an image score and an anomaly map. With the
//! `onnxruntime` feature, [`onnxruntime::OrtEngine`] runs the same contract through ONNX Runtime
//! (and, with `tensorrt`, TensorRT); [`load_engine`] picks what `model.engine` names.
//!
//! The contract is defined once, in `models/contract.json` ([`contract`]): input `image`
//! [1, 3, H, W] f32 RGB; outputs `anomaly_map` [1, 1, H, W] f32 and `score` [1] f32;
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
pub mod products;
pub mod quantize;
pub mod requantize;
pub mod resize;
pub mod sumpool;
pub mod tiles;
pub mod upsample;

pub use contract::model_info_from_bytes;
use contract::read_contract;

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

/// The model typed for one 1x3xHxW f32 image and the contract's two outputs, not yet optimized.
/// `.into_optimized()` on it is tract's own plan (what an upstream report runs).
pub fn typed_for_contract(
    model: InferenceModel,
    (h, w): (usize, usize),
) -> TractResult<TypedModel> {
    model
        .with_input_fact(0, f32::fact([1, 3, h, w]).into())?
        .with_outputs_by_name(["anomaly_map", "score"])?
        .into_typed()
}

/// The model as [`TractEngine`] runs it: [`typed_for_contract`], decluttered, its byte maps
/// upsampled by row copies ([`upsample::RowCopyUpsample`]), optimized, its int8 patches written
/// panel by panel ([`im2col::RowIm2Col`]), its byte maps requantized by table
/// ([`requantize::ByteTable`]), and the other ops below. On x86 cores with AVX-512 VNNI the
/// optimizer gives its int8 products tract's 16x16 tile (the dispatch rung in [`tiles`]).
/// `examples/profile_model` profiles exactly this.
pub fn prepare_for_tract(model: InferenceModel, hw: (usize, usize)) -> TractResult<TypedModel> {
    let mut model = typed_for_contract(model, hw)?.into_decluttered()?;
    upsample_bytes_by_row_copies(&mut model)?;
    f32_convolutions_direct(&mut model)?;
    let mut model = model.into_optimized()?;
    patches_by_panels(&mut model)?;
    products_by_partial_sums(&mut model)?;
    requantize::requantize_bytes(&mut model)?;
    quantize_vectorized(&mut model)?;
    resizes_by_rows(&mut model)?;
    score_window_by_rows(&mut model)?;
    Ok(model)
}

/// tract sums each value's window on its own (the score window: 441 scalar additions per value at
/// 21x21; models/HISTORY.md, "the score window row by row"); the engine adds the same taps in the
/// same order for a whole row at once ([`sumpool::RowSumPool`]).
fn score_window_by_rows(model: &mut TypedModel) -> TractResult<()> {
    use tract_onnx::tract_core::ops::cnn::OptSumPool;
    Rewriter::<()>::default()
        .with_rule_for::<OptSumPool>("score window row by row", |_ctx, model, node, _name, op| {
            let input = model.outlet_fact(node.inputs[0])?;
            let Some(ours) = sumpool::RowSumPool::replacing(op, input) else {
                return Ok(None);
            };
            TypedModelPatch::replace_single_op(model, node, &node.inputs, ours).map(Some)
        })
        .rewrite(&(), model)
}

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

/// tract resizes (the shipped network's bilinear upsamplings) one value at a time along the last
/// axis (models/HISTORY.md, "bilinear resizes row by row"); the engine does the same arithmetic
/// row by row ([`resize::RowResize`]), byte maps with weights in quarters in integers (tract's
/// values for plain bytes, as the int8 model's maps are). Runs on the optimized model, where
/// `Resize` stays.
fn resizes_by_rows(model: &mut TypedModel) -> TractResult<()> {
    use tract_onnx::tract_core::ops::nn::resize::Resize;
    Rewriter::<()>::default()
        .with_rule_for::<Resize>("resizes row by row", |_ctx, model, node, _name, op| {
            let input = model.outlet_fact(node.inputs[0])?;
            let Some(shape) = input.shape.as_concrete() else {
                return Ok(None);
            };
            let aux = op
                .optional_scales_input
                .or(op.optional_sizes_input)
                .and_then(|ix| node.inputs.get(ix))
                .map(|&outlet| model.outlet_fact(outlet))
                .transpose()?
                .and_then(|fact| fact.konst.clone());
            let Some(ours) =
                aux.and_then(|aux| resize::RowResize::replacing(op, input.datum_type, shape, &aux))
            else {
                return Ok(None);
            };
            TypedModelPatch::replace_single_op(model, node, &node.inputs[..1], ours).map(Some)
        })
        .rewrite(&(), model)
}

/// tract writes the int8 convolutions' patches into the matmul's panels value by value wherever a
/// row crosses a panel (models/HISTORY.md, "the int8 patches written panel by panel"); the engine
/// writes them panel by panel ([`im2col::RowIm2Col`]). Runs on the optimized model, where `Im2Col`
/// appears.
fn patches_by_panels(model: &mut TypedModel) -> TractResult<()> {
    use tract_onnx::tract_core::ops::cnn::conv::Im2Col;
    Rewriter::<()>::default()
        .with_rule_for::<Im2Col>(
            "int8 patches written panel by panel",
            |_ctx, model, node, _name, op| {
                let input = model.outlet_fact(node.inputs[0])?;
                let output = &node.outputs[0].fact;
                let Some(ours) = im2col::RowIm2Col::replacing(op, input, output) else {
                    return Ok(None);
                };
                TypedModelPatch::replace_single_op(model, node, &node.inputs, ours).map(Some)
            },
        )
        .rewrite(&(), model)
}

/// On Arm cores without 8-bit dot products tract multiplies the int8 convolutions' bytes one
/// widened element at a time (models/HISTORY.md, "the int8 products on cores without dot
/// products"); the engine computes the products with 16-bit partial sums
/// ([`products::Int8Products`]) and leaves the rest of the matmul (bias, zero points, scale,
/// store) to tract's own `OptMatMul`. Runs after [`patches_by_panels`]; elsewhere nothing matches.
fn products_by_partial_sums(model: &mut TypedModel) -> TractResult<()> {
    use tract_onnx::tract_core::ops::matmul::optimized::OptMatMul;
    Rewriter::<()>::default()
        .with_rule_for::<OptMatMul>(
            "int8 products by 16-bit partial sums",
            |_ctx, model, node, _name, op| {
                let facts = model.node_input_facts(node.id)?;
                let Some((ours, b_ix)) = products::Int8Products::replacing(op, &facts) else {
                    return Ok(None);
                };
                let mut patch = TypedModelPatch::default();
                let mut inputs = patch.taps(model, &node.inputs)?;
                let name = format!("{}.products", node.name);
                inputs[b_ix] = patch.wire_node(name, ours, &[inputs[b_ix]])?[0];
                let fed = products::Int8Products::feeding(op, b_ix);
                let out = patch.wire_node(&node.name, fed, &inputs)?[0];
                patch.shunt_outside(model, node.id.into(), out)?;
                Ok(Some(patch))
            },
        )
        .rewrite(&(), model)
}

/// tract quantizes the int8 model's f32 maps one value at a time through a rounding no compiler
/// vectorizes; the engine computes the same values in a loop that vectorizes
/// ([`quantize::VecQuantize`]).
fn quantize_vectorized(model: &mut TypedModel) -> TractResult<()> {
    use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
    use tract_onnx::tract_core::ops::quant::QuantizeLinearU8;
    Rewriter::<()>::default()
        .with_rule_for::<ElementWiseOp>("quantize vectorized", |_ctx, model, node, _name, op| {
            let Some(quantize) = op.0.downcast_ref::<QuantizeLinearU8>() else {
                return Ok(None);
            };
            if model.outlet_fact(node.inputs[0])?.datum_type != f32::datum_type() {
                return Ok(None);
            }
            let ours = quantize::VecQuantize::replacing(quantize, &node.outputs[0].fact);
            TypedModelPatch::replace_single_op(model, node, &node.inputs, ours).map(Some)
        })
        .rewrite(&(), model)
}

/// tract runs the f32 3x3 convolutions at 14-34 GMAC/s on an AVX-512 core (models/HISTORY.md,
/// "tract's f32 on x86"); on x86-64 cores with AVX-512 or AVX2 the engine computes them directly
/// over a padded copy of the map
/// ([`conv::F32Conv3x3`], within f32 rounding of tract's values). Runs on the decluttered model,
/// where `Conv` still holds its kernel and bias as constant inputs; elsewhere nothing matches.
/// Not in int8 networks: there their few f32 convolutions (the first ones, 1.5% of the shipped
/// network's MACs) feed a quantization, where another rounding of the sums moves some bytes by a
/// step, and the int8 figures are tract's own bit for bit. Public for the tests, which compare
/// the engine's other ops with tract's plan bit for bit.
pub fn f32_convolutions_direct(model: &mut TypedModel) -> TractResult<()> {
    use tract_onnx::tract_core::ops::cnn::Conv;
    let quantized = model
        .nodes()
        .iter()
        .any(|n| n.op_as::<Conv>().is_some_and(|c| c.q_params.is_some()));
    if quantized {
        return Ok(());
    }
    Rewriter::<()>::default()
        .with_rule_for::<Conv>(
            "f32 3x3 convolutions direct",
            |_ctx, model, node, _name, op| {
                let facts = model.node_input_facts(node.id)?;
                let (Some(kernel), Some(bias)) = (
                    facts.get(1).and_then(|f| f.konst.as_ref()),
                    facts.get(2).and_then(|f| f.konst.as_ref()),
                ) else {
                    return Ok(None);
                };
                let Some(ours) = conv::F32Conv3x3::replacing(op, facts[0], kernel, bias) else {
                    return Ok(None);
                };
                TypedModelPatch::replace_single_op(model, node, &node.inputs[..1], ours).map(Some)
            },
        )
        .rewrite(&(), model)
}

/// tract upsamples anything but f32 (the int8 model's uint8 maps) element by element, ~40x slower
/// than its f32 row copy (models/HISTORY.md, "tract's two int8 gaps"); f32 keeps tract's op.
fn upsample_bytes_by_row_copies(model: &mut TypedModel) -> TractResult<()> {
    use tract_onnx::tract_core::ops::nn::NearestUpsample;
    Rewriter::<()>::default()
        .with_rule_for::<NearestUpsample>(
            "nearest upsample of bytes as row copies",
            |_ctx, model, node, _name, op| {
                if model.outlet_fact(node.inputs[0])?.datum_type == f32::datum_type() {
                    return Ok(None);
                }
                let Some(ours) = upsample::RowCopyUpsample::replacing(op) else {
                    return Ok(None);
                };
                TypedModelPatch::replace_single_op(model, node, &node.inputs, ours).map(Some)
            },
        )
        .rewrite(&(), model)
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
