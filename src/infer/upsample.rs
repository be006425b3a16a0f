//! Nearest upsampling of the int8 model's byte maps, as row copies.
//!
//! tract 0.23 upsamples anything but f32 element by element, with index arithmetic per output
//! value: ~40x slower than its f32 row copy (`tests/data/tract_upsample_*.onnx`, models/HISTORY.md
//! "tract's two int8 gaps"). [`RowCopyUpsample`] is tract's `NearestUpsample` restricted to
//! integer scales on the last two axes, for any element type: each input row is widened once and
//! copied to the rows below it. The engine puts it in place of every `NearestUpsample` whose
//! input is not f32 (f32 keeps tract's own row copy); the values are the same, bit for bit
//! (`tests/model.rs`).

use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::nn::NearestUpsample;
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

/// Output `[.., y, x] = input[.., y / rows, x / cols]`; the leading axes are kept.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct RowCopyUpsample {
    /// Scale on the second-to-last axis (height).
    pub rows: usize,
    /// Scale on the last axis (width).
    pub cols: usize,
}

impl RowCopyUpsample {
    /// The op that computes what `op` computes, where it can: scales of 1 on every axis but the
    /// last two, at least 2 dimensions.
    pub fn replacing(op: &NearestUpsample) -> Option<RowCopyUpsample> {
        let n = op.scales.len();
        if n < 2 || op.scales[..n - 2].iter().any(|&s| s != 1) {
            return None;
        }
        let (rows, cols) = (op.scales[n - 2], op.scales[n - 1]);
        (rows >= 1 && cols >= 1).then_some(RowCopyUpsample { rows, cols })
    }

    fn upsample<T: Datum + Copy>(&self, input: &Tensor) -> TractResult<Tensor> {
        let shape = input.shape();
        let rank = shape.len();
        ensure!(
            rank >= 2,
            "RowCopyUpsample needs at least 2 axes, got {shape:?}"
        );
        let (h, w) = (shape[rank - 2], shape[rank - 1]);
        let mut out_shape: TVec<usize> = shape.into();
        out_shape[rank - 2] = h * self.rows;
        out_shape[rank - 1] = w * self.cols;
        let plain = input.try_as_plain_ram()?;
        let src = plain.as_slice::<T>()?;
        let Some(&first) = src.first() else {
            return Tensor::from_shape::<T>(&out_shape, &[]);
        };
        let ow = w * self.cols;
        let mut out = vec![first; src.len() * self.rows * self.cols];
        for (src_row, dst_rows) in src
            .chunks_exact(w)
            .zip(out.chunks_exact_mut(ow * self.rows))
        {
            let (wide, below) = dst_rows.split_at_mut(ow);
            widen_row(src_row, wide, self.cols);
            for row in below.chunks_exact_mut(ow) {
                row.copy_from_slice(wide);
            }
        }
        // moved into the tensor, not copied (`Tensor::from_shape` copies its slice)
        Ok(tract_ndarray::ArrayD::from_shape_vec(&*out_shape, out)?.into_tensor())
    }
}

/// `dst[x] = src[x / cols]`; the common scale of 2 in a form the compiler vectorizes.
fn widen_row<T: Copy>(src: &[T], dst: &mut [T], cols: usize) {
    if cols == 2 {
        for (pair, &v) in dst.chunks_exact_mut(2).zip(src) {
            pair[0] = v;
            pair[1] = v;
        }
    } else {
        for (run, &v) in dst.chunks_exact_mut(cols).zip(src) {
            run.fill(v);
        }
    }
}

impl Op for RowCopyUpsample {
    fn name(&self) -> StaticName {
        "RowCopyUpsample".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("rows x{} cols x{}", self.rows, self.cols)])
    }

    op_as_typed_op!();
}

impl EvalOp for RowCopyUpsample {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let out = dispatch_copy!(Self::upsample(input.datum_type())(self, &input))?;
        Ok(tvec!(out.into_tvalue()))
    }

    op_out_of_plan!();
}

impl TypedOp for RowCopyUpsample {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let rank = inputs[0].rank();
        ensure!(rank >= 2, "RowCopyUpsample needs at least 2 axes");
        let mut shape = inputs[0].shape.to_tvec();
        shape[rank - 2] = shape[rank - 2].clone() * self.rows;
        shape[rank - 1] = shape[rank - 1].clone() * self.cols;
        Ok(tvec!(inputs[0].datum_type.fact(shape)))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widens_and_repeats_rows_for_any_scale() {
        let input =
            Tensor::from_shape::<u8>(&[1, 2, 2, 3], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
                .unwrap();
        let input_values: Vec<u8> = (1..=12).collect();
        for (rows, cols) in [(2, 2), (1, 3), (3, 1), (4, 2)] {
            let ours = RowCopyUpsample { rows, cols }
                .upsample::<u8>(&input)
                .unwrap();
            let shape = ours.shape().to_vec();
            assert_eq!(shape, [1, 2, 2 * rows, 3 * cols]);
            let ours = ours.try_as_plain_ram().unwrap();
            let values = ours.as_slice::<u8>().unwrap();
            for (i, &v) in values.iter().enumerate() {
                let (x, y, c) = (
                    i % shape[3],
                    (i / shape[3]) % shape[2],
                    i / (shape[3] * shape[2]),
                );
                let expected = input_values[(c * 2 + y / rows) * 3 + x / cols];
                assert_eq!(v, expected, "rows {rows} cols {cols} at {i}");
            }
        }
    }
}
