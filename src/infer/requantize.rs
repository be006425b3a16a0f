//! The int8 model's byte maps requantized through a table instead of through f32.
//!
//! The int8 model (ONNX QOperator, as `export.py` writes it) joins the discriminative network's
//! skip connections in f32: each byte map is dequantized (`DequantizeLinearF32`), the maps are
//! concatenated, and the result is quantized again (`QuantizeLinearU8`) with the concatenation's
//! own scale. Each output byte is a function of one input byte, so [`ByteTable`] computes it with
//! a 256-entry table built by tract's own two ops, and the concatenation joins bytes: no f32 on
//! the way, the same bytes (`tests/model.rs`). Where an f32 convolution's ReLU (`max(x, 0)`)
//! feeds a quantization with zero point 0, the ReLU is left out: the quantization's clamp at 0
//! gives the same byte for every negative value, NaN included.
//!
//! Under emulation (qemu, where each f32 operation is a library call) the dequantize, concatenate
//! and quantize chain was ~3% of the shipped int8 frame on a Cortex-A76 and the two ReLUs ~1%
//! (models/HISTORY.md, "the byte resizes in integers").

use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::array::TypedConcat;
use tract_onnx::tract_core::ops::binary::OptBinByScalar;
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::quant::{DequantizeLinearF32, QuantizeLinearU8};
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

/// `y = table[x]`, byte in, byte out.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct ByteTable {
    table: [u8; 256],
}

impl ByteTable {
    /// The table of `quantize(dequantize(x))` for every byte `x`, computed by the two ops
    /// themselves, so that it holds exactly their values.
    pub fn through(dequantize: &DequantizeLinearF32, quantize: &dyn EvalOp) -> TractResult<Self> {
        let every = Tensor::from_shape::<u8>(&[256], &(0..=255).collect::<Vec<u8>>())?;
        let ctx = EvalContext::out_of_plan();
        let f32s = dequantize.eval(&ctx, tvec!(every.into_tvalue()))?;
        let bytes = quantize.eval(&ctx, f32s)?.remove(0).into_tensor();
        ensure!(
            bytes.datum_type() == u8::datum_type() && bytes.len() == 256,
            "ByteTable: the quantization gave {:?} x {}, not 256 bytes",
            bytes.datum_type(),
            bytes.len()
        );
        let mut table = [0u8; 256];
        table.copy_from_slice(bytes.as_bytes());
        Ok(ByteTable { table })
    }

    /// `dst[i] = table[src[i]]`.
    fn look_up(&self, src: &[u8], dst: &mut [u8]) {
        let done = look_up_by_16(&self.table, src, dst);
        for (d, &s) in dst[done..].iter_mut().zip(&src[done..]) {
            *d = self.table[s as usize];
        }
    }
}

/// [`ByteTable::look_up`]'s first `len / 16 * 16` bytes, 16 at a time: the table as four 64-byte
/// `tbl`/`tbx` lookups (an index past a lookup's 64 bytes gives 0 in `tbl`, leaves the byte as it
/// is in `tbx`); returns how many it wrote.
#[cfg(target_arch = "aarch64")]
fn look_up_by_16(table: &[u8; 256], src: &[u8], dst: &mut [u8]) -> usize {
    use std::arch::aarch64::{
        vdupq_n_u8, vld1q_u8, vld1q_u8_x4, vqtbl4q_u8, vqtbx4q_u8, vst1q_u8, vsubq_u8,
    };
    let len = src.len().min(dst.len());
    let mut done = 0;
    // SAFETY: NEON is part of aarch64; the table's 256 bytes are read as four runs of 64; 16
    // bytes read from `src` and written to `dst` at `done`, with `done + 16 <= len`.
    unsafe {
        let part = |i: usize| vld1q_u8_x4(table.as_ptr().add(64 * i));
        let (t0, t1, t2, t3) = (part(0), part(1), part(2), part(3));
        let step = vdupq_n_u8(64);
        while len - done >= 16 {
            let x0 = vld1q_u8(src.as_ptr().add(done));
            let x1 = vsubq_u8(x0, step);
            let x2 = vsubq_u8(x1, step);
            let x3 = vsubq_u8(x2, step);
            let y = vqtbl4q_u8(t0, x0);
            let y = vqtbx4q_u8(y, t1, x1);
            let y = vqtbx4q_u8(y, t2, x2);
            let y = vqtbx4q_u8(y, t3, x3);
            vst1q_u8(dst.as_mut_ptr().add(done), y);
            done += 16;
        }
    }
    done
}

/// Elsewhere the plain loop does it all.
#[cfg(not(target_arch = "aarch64"))]
fn look_up_by_16(_table: &[u8; 256], _src: &[u8], _dst: &mut [u8]) -> usize {
    0
}

impl Op for ByteTable {
    fn name(&self) -> StaticName {
        "ByteTable".into()
    }

    op_as_typed_op!();
}

impl EvalOp for ByteTable {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        ensure!(
            input.datum_type() == u8::datum_type(),
            "ByteTable: input {:?}, made for u8",
            input.datum_type()
        );
        let mut out = vec![0u8; input.len()];
        self.look_up(input.as_bytes(), &mut out);
        let out = tract_ndarray::ArrayD::from_shape_vec(input.shape(), out)?.into_tensor();
        Ok(tvec!(out.into_tvalue()))
    }

    op_out_of_plan!();
}

impl TypedOp for ByteTable {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(u8::fact(inputs[0].shape.clone())))
    }

    as_op!();
}

/// Rewrites, on the optimized model, every quantization of a concatenation of dequantized byte
/// maps into tables and a concatenation of bytes, and drops a ReLU before a quantization with
/// zero point 0.
pub fn requantize_bytes(model: &mut TypedModel) -> TractResult<()> {
    Rewriter::<()>::default()
        .with_rule_for::<ElementWiseOp>("bytes requantized by table", |_ctx, model, node, _, op| {
            let Some(quantize) = op.0.downcast_ref::<QuantizeLinearU8>() else {
                return Ok(None);
            };
            let Some(prev) = model.single_prec(node.id)? else {
                return Ok(None);
            };
            if model.single_succ(prev.id)?.is_none() || prev.outputs.len() != 1 {
                return Ok(None);
            }
            if let Some(concat) = prev.op_as::<TypedConcat>() {
                return concat_of_bytes(model, node, op, prev, concat);
            }
            if quantize.zero_point == 0 && is_relu(model, prev)? {
                let mut patch = TypedModelPatch::default();
                let input = patch.tap_model(model, prev.inputs[0])?;
                let out = patch.wire_node(&node.name, op.clone(), &[input])?[0];
                patch.shunt_outside(model, node.id.into(), out)?;
                return Ok(Some(patch));
            }
            Ok(None)
        })
        .rewrite(&(), model)
}

/// `quantize(concat(dequantize_i(x_i)))` as `concat(table_i(x_i))`, where every input of the
/// concatenation is a byte map dequantized.
fn concat_of_bytes(
    model: &TypedModel,
    quantize_node: &TypedNode,
    quantize: &ElementWiseOp,
    concat_node: &TypedNode,
    concat: &TypedConcat,
) -> TractResult<Option<TypedModelPatch>> {
    let mut sources = vec![];
    for input in &concat_node.inputs {
        let producer = model.node(input.node);
        let Some(dequantize) = producer.op_as::<DequantizeLinearF32>() else {
            return Ok(None);
        };
        if model.outlet_fact(producer.inputs[0])?.datum_type != u8::datum_type() {
            return Ok(None);
        }
        sources.push((producer, dequantize));
    }
    let mut patch = TypedModelPatch::default();
    let mut bytes = tvec!();
    for (producer, dequantize) in sources {
        let table = ByteTable::through(dequantize, quantize)?;
        let x = patch.tap_model(model, producer.inputs[0])?;
        let name = format!("{}.table", producer.name);
        bytes.push(patch.wire_node(name, table, &[x])?[0]);
    }
    let out = patch.wire_node(&concat_node.name, concat.clone(), &bytes)?[0];
    patch.shunt_outside(model, quantize_node.id.into(), out)?;
    Ok(Some(patch))
}

/// Whether `node` is `max(x, 0)` on f32 with a constant 0.
fn is_relu(model: &TypedModel, node: &TypedNode) -> TractResult<bool> {
    let Some(op) = node.op_as::<OptBinByScalar>() else {
        return Ok(false);
    };
    if op.binop.name() != "Max" || node.inputs.len() != 2 {
        return Ok(false);
    }
    if model.outlet_fact(node.inputs[0])?.datum_type != f32::datum_type() {
        return Ok(false);
    }
    let zero = model.outlet_fact(node.inputs[1])?.konst.clone();
    Ok(zero.is_some_and(|k| {
        k.datum_type() == f32::datum_type()
            && k.try_as_plain_ram()
                .ok()
                .and_then(|k| {
                    k.as_slice::<f32>()
                        .ok()
                        .map(|s| s.iter().all(|&v| v == 0.0))
                })
                .unwrap_or(false)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table holds tract's own dequantize-then-quantize value for every byte, including the
    /// clamps at both ends.
    #[test]
    fn the_table_holds_tract_own_requantization() {
        for (scale, zp, out_scale, out_zp) in [
            (0.05f32, 0, 31.6f32, 0u8),
            (0.0148, 3, 44.17, 12),
            (0.5, 128, 2.0, 0),
            (1.0, 0, 2.0, 100),
        ] {
            let dequantize = DequantizeLinearF32 {
                scale,
                zero_point: zp,
            };
            let quantize = ElementWiseOp(
                Box::new(QuantizeLinearU8 {
                    scale: out_scale,
                    zero_point: out_zp,
                }),
                None,
            );
            let table = ByteTable::through(&dequantize, &quantize).unwrap();
            // every byte, in an order that mixes the four quarters, 16 at a time and a tail
            let bytes: Vec<u8> = (0..300u32).map(|i| (i * 97 % 256) as u8).collect();
            let input = Tensor::from_shape::<u8>(&[3, 100], &bytes).unwrap();
            let ctx = EvalContext::out_of_plan();
            let theirs = quantize
                .eval(
                    &ctx,
                    dequantize
                        .eval(&ctx, tvec!(input.clone().into_tvalue()))
                        .unwrap(),
                )
                .unwrap()
                .remove(0);
            let ours = table
                .eval(&ctx, tvec!(input.into_tvalue()))
                .unwrap()
                .remove(0);
            assert_eq!(ours.shape(), theirs.shape());
            assert_eq!(ours.as_bytes(), theirs.as_bytes(), "scale {scale} zp {zp}");
        }
    }
}
