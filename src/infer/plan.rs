//! How [`TractEngine`](super::TractEngine) plans a model: the contract's types, tract's own
//! declutter and optimizer, and the rewrites that put the engine's ops ([`super::conv`],
//! [`super::im2col`], [`super::products`], [`super::requantize`], [`super::quantize`],
//! [`super::resize`], [`super::sumpool`], [`super::upsample`]) in place of tract's where they are
//! faster. Each rewrite leaves a node it does not fully understand to tract.

use tract_onnx::prelude::*;

use super::{conv, im2col, products, quantize, requantize, resize, sumpool, upsample};

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

/// The model as [`TractEngine`](super::TractEngine) runs it: [`typed_for_contract`], decluttered, its byte maps
/// upsampled by row copies ([`upsample::RowCopyUpsample`]), optimized, its int8 patches written
/// panel by panel ([`im2col::RowIm2Col`]), its byte maps requantized by table
/// ([`requantize::ByteTable`]), and the other ops below. On x86 cores with AVX-512 VNNI the
/// optimizer gives its int8 products tract's 16x16 tile (the dispatch rung in [`super::tiles`]).
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
