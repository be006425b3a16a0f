//! The int8 model's f32 maps quantized to bytes in a loop the compiler vectorizes.
//!
//! tract 0.23 quantizes (`QuantizeLinearU8`) one value at a time through its own
//! `round_ties_to_even` (bit tests and two additions of 2^23 per value), which no compiler
//! vectorizes: 4% of the shipped int8 frame on an emulated Cortex-A76 (models/HISTORY.md, "the
//! int8 products on cores without dot products"). [`VecQuantize`] computes the same
//! `clamp(round_half_even(x * scale) + zero_point, 0, 255)` (the addition wrapping as tract's does
//! in a release build, for products past 2^31) with a rounding that compiles to vector selects
//! (4 values per instruction on aarch64 and on x86-64's baseline): the same value for every f32,
//! NaN and infinities included (`cargo test --lib quantize`, and bit for bit on the
//! models in `tests/model.rs`).

use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::quant::QuantizeLinearU8;
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

/// `y = clamp(round_half_even(x * scale) + zero_point, 0, 255)`, f32 in, u8 out.
#[derive(Debug, Clone, PartialEq)]
pub struct VecQuantize {
    /// The multiplier tract's op holds (the reciprocal of the ONNX scale).
    scale: f32,
    zero_point: u8,
    /// The output fact of the op it replaces.
    fact: TypedFact,
}

impl Eq for VecQuantize {}

impl std::hash::Hash for VecQuantize {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.scale.to_bits().hash(state);
        self.zero_point.hash(state);
        self.fact.hash(state);
    }
}

impl VecQuantize {
    /// The op computing what `op` computes on an f32 input with output fact `fact`.
    pub fn replacing(op: &QuantizeLinearU8, fact: &TypedFact) -> VecQuantize {
        VecQuantize {
            scale: op.scale,
            zero_point: op.zero_point,
            fact: fact.clone(),
        }
    }

    fn quantize(&self, xs: &[f32], ys: &mut [u8]) {
        let zp = i32::from(self.zero_point);
        for (y, &x) in ys.iter_mut().zip(xs) {
            // wrapping as tract's op does in a release build (`as i32` saturates at 2^31)
            *y = (round_half_even(x * self.scale) as i32)
                .wrapping_add(zp)
                .clamp(0, 255) as u8;
        }
    }
}

/// `x.round_ties_even()` in operations every SIMD level has: below 2^23 in magnitude, adding and
/// subtracting 2^23 rounds to an integer, half to even, in the default rounding mode (tract's own
/// way; the choice compiles to a vector select, not a branch); from 2^23 on, and NaN, `x` itself. `round_ties_even` would call
/// `roundevenf` per value on x86-64's baseline (SSE2 has no rounding instruction).
#[inline]
fn round_half_even(x: f32) -> f32 {
    const TWO_23: f32 = 8_388_608.0;
    let magnitude = x.abs();
    if magnitude < TWO_23 {
        ((magnitude + TWO_23) - TWO_23).copysign(x)
    } else {
        x
    }
}

impl Op for VecQuantize {
    fn name(&self) -> StaticName {
        "VecQuantize".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "scale: {} zero_point: {}",
            self.scale, self.zero_point
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for VecQuantize {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = &inputs[0];
        let plain = input.try_as_plain_ram()?;
        let xs = plain.as_slice::<f32>()?;
        let mut out = Tensor::zero::<u8>(input.shape())?;
        let mut plain_out = out.try_as_plain_ram_mut()?;
        self.quantize(xs, plain_out.as_slice_mut::<u8>()?);
        Ok(tvec!(out.into_tvalue()))
    }

    op_out_of_plan!();
}

impl TypedOp for VecQuantize {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(
            inputs[0].datum_type == f32::datum_type(),
            "VecQuantize reads f32, got {:?}",
            inputs[0].datum_type
        );
        Ok(tvec!(self.fact.clone()))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_core::ops::element_wise::ElementWiseMiniOp;

    /// Against tract's own op, on values around every rounding tie, the clamps, 2^23 and beyond,
    /// signed zeros, infinities and NaN, at two scales and zero points. Rounding half away from
    /// zero fails it.
    #[test]
    fn quantizes_as_tract_does() {
        let mut xs: Vec<f32> = (-700..700).map(|i| i as f32 * 0.25).collect();
        xs.extend((-300..300).map(|i| i as f32 * 0.5 + 1e-3));
        xs.extend([
            0.0,
            -0.0,
            8_388_607.5,
            8_388_608.0,
            -8_388_609.0,
            1e8,
            -1e30,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::MIN_POSITIVE,
            1e-45,
        ]);
        // past 2^31 tract's `as i32 + zero_point` overflows (a panic in a debug build, a wrap in
        // release): only where the zero point is 0
        let huge = [1e30f32, f32::INFINITY];
        for (scale, zero_point) in [(1.0f32, 128u8), (0.37, 0), (3.0, 255)] {
            let mut xs = xs.clone();
            if zero_point == 0 {
                xs.extend(huge);
            }
            let theirs = QuantizeLinearU8 { scale, zero_point };
            let input = tensor1(&xs);
            let expected = theirs.eval_out_of_place(&input, None).unwrap();
            let ours = VecQuantize::replacing(&theirs, &u8::fact([xs.len()]));
            let mut ys = vec![0u8; xs.len()];
            ours.quantize(&xs, &mut ys);
            let expected = expected.try_as_plain_ram().unwrap();
            assert_eq!(
                ys,
                expected.as_slice::<u8>().unwrap(),
                "scale {scale} zero point {zero_point}"
            );
        }
    }
}
