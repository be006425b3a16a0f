//! The score window (an average pool at stride 1), one output row at a time, with tract's own
//! arithmetic.
//!
//! tract 0.23's `OptSumPool` sums each output's window on its own (`Iterator::sum` over the
//! window's valid taps, then times the reciprocal of their count): 441 scalar additions per value
//! for the shipped network's 21x21 window, 8% of the shipped int8 frame on x86 (models/HISTORY.md,
//! "the score window row by row"). [`RowSumPool`] adds the same taps in the same order (kernel
//! row, then kernel column; taps outside the map skipped) for a whole output row at once, so the
//! additions run over contiguous slices the compiler vectorizes. The values are the same, bit for
//! bit (`tests/model.rs`, and the unit test below against tract's own op).

use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::OptSumPool;
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

/// tract's `OptSumPool` for f32 maps `[1,] C, H, W`, stride 1, no dilation, the divisor (where it
/// normalizes) the count of taps inside the map.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct RowSumPool {
    channels: usize,
    input: (usize, usize),
    kernel: (usize, usize),
    pad_before: (usize, usize),
    output: (usize, usize),
    normalize: bool,
}

impl RowSumPool {
    /// The op that computes what `op` computes on `input`, where it can.
    pub fn replacing(op: &OptSumPool, input: &TypedFact) -> Option<RowSumPool> {
        let spec = &op.pool_spec;
        if op.count_include_pad
            || input.datum_type != f32::datum_type()
            || !super::is_2d_unit_stride(spec)
            || spec.dilations().iter().any(|&d| d != 1)
        {
            return None;
        }
        let (channels, h, w) = super::one_chw_image(input)?;
        let padding = spec.computed_padding(&[h, w]);
        let output = (padding[0].convoluted, padding[1].convoluted);
        let kernel = (spec.kernel_shape[0], spec.kernel_shape[1]);
        if h == 0 || w == 0 || output.0 == 0 || output.1 == 0 || kernel.0 == 0 || kernel.1 == 0 {
            return None;
        }
        Some(RowSumPool {
            channels,
            input: (h, w),
            kernel,
            pad_before: (padding[0].pad_before, padding[1].pad_before),
            output,
            normalize: op.normalize,
        })
    }

    /// Every output value of `src` (`C x H x W`) into `out` (`C x OH x OW`).
    fn pool(&self, src: &[f32], out: &mut [f32]) {
        let (h, w) = self.input;
        let (oh, ow) = self.output;
        let (kh, kw) = self.kernel;
        let (pt, pl) = self.pad_before;
        // what `Iterator::sum` starts from, as tract's sum does
        let zero: f32 = std::iter::empty::<f32>().sum();
        // how many taps of each window lie inside the map, across and down
        let inside = |o: usize, k: usize, pad: usize, len: usize| {
            (0..k)
                .filter(|&t| (o + t).checked_sub(pad).is_some_and(|i| i < len))
                .count()
        };
        let across: Vec<usize> = (0..ow).map(|ox| inside(ox, kw, pl, w)).collect();
        for (plane, out) in src.chunks_exact(h * w).zip(out.chunks_exact_mut(oh * ow)) {
            for (oy, acc) in out.chunks_exact_mut(ow).enumerate() {
                acc.fill(zero);
                for ky in 0..kh {
                    // input row oy + ky - pt, if inside the map
                    let Some(iy) = (oy + ky).checked_sub(pt).filter(|&iy| iy < h) else {
                        continue;
                    };
                    let row = &plane[iy * w..(iy + 1) * w];
                    for kx in 0..kw {
                        // outputs whose tap kx lands inside the row: ox + kx - pl in 0..w
                        let lo = pl.saturating_sub(kx);
                        let hi = ow.min((w + pl).saturating_sub(kx));
                        if lo >= hi {
                            continue;
                        }
                        let taps = &row[lo + kx - pl..hi + kx - pl];
                        for (a, &v) in acc[lo..hi].iter_mut().zip(taps) {
                            *a += v;
                        }
                    }
                }
                if self.normalize {
                    // tract: the sum times the reciprocal of the window's count of taps
                    let down = inside(oy, kh, pt, h);
                    for (a, &n) in acc.iter_mut().zip(&across) {
                        *a *= ((down * n) as f32).recip();
                    }
                }
            }
        }
    }
}

impl Op for RowSumPool {
    fn name(&self) -> StaticName {
        "RowSumPool".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{}x{}x{} window {}x{} -> {}x{}{}",
            self.channels,
            self.input.0,
            self.input.1,
            self.kernel.0,
            self.kernel.1,
            self.output.0,
            self.output.1,
            if self.normalize { ", mean" } else { ", sum" }
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for RowSumPool {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = &inputs[0];
        let (h, w) = self.input;
        let (oh, ow) = self.output;
        let plain = input.try_as_plain_ram()?;
        let src = plain.as_slice::<f32>()?;
        ensure!(
            src.len() == self.channels * h * w,
            "RowSumPool: {} values for {}x{h}x{w}",
            src.len(),
            self.channels
        );
        let mut out = vec![0f32; self.channels * oh * ow];
        self.pool(src, &mut out);
        let rank = input.rank();
        let mut shape: TVec<usize> = input.shape().into();
        (shape[rank - 2], shape[rank - 1]) = (oh, ow);
        Ok(tvec!(tract_ndarray::ArrayD::from_shape_vec(&*shape, out)?
            .into_tensor()
            .into_tvalue()))
    }

    op_out_of_plan!();
}

impl TypedOp for RowSumPool {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(super::with_last_two_axes(
            inputs[0],
            f32::datum_type(),
            self.output
        )?))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_core::ops::cnn::{PaddingSpec, PoolSpec, SumPool};
    use tract_onnx::tract_core::ops::nn::DataFormat;

    /// Bit for bit tract's own `OptSumPool`, with windows larger than the map's edges allow (so
    /// the counts vary along both axes), same-size and valid padding, mean and sum.
    #[test]
    fn pools_as_tract_does_bit_for_bit() {
        let (c, h, w) = (2, 9, 11);
        let values: Vec<f32> = (0..c * h * w)
            .map(|i| ((i * 37 % 101) as f32 - 40.0) * 0.173)
            .collect();
        let input = Tensor::from_shape(&[1, c, h, w], &values).unwrap();
        for (kernel, padding) in [
            ([5, 3], PaddingSpec::SameUpper),
            ([21, 21], PaddingSpec::SameUpper),
            ([3, 4], PaddingSpec::Valid),
        ] {
            for normalize in [true, false] {
                let mut model = TypedModel::default();
                let source = model.add_source("x", f32::fact([1, c, h, w])).unwrap();
                let spec = PoolSpec::new(
                    DataFormat::NCHW,
                    kernel.iter().copied().collect(),
                    padding.clone(),
                    None,
                    None,
                    c,
                    c,
                );
                let pool = SumPool {
                    pool_spec: spec,
                    count_include_pad: false,
                    normalize,
                };
                let out = model.wire_node("pool", pool, &[source]).unwrap();
                model.select_output_outlets(&out).unwrap();
                let model = model.into_optimized().unwrap();
                let node = model
                    .nodes()
                    .iter()
                    .find(|n| n.op_is::<OptSumPool>())
                    .expect("tract's plan has an OptSumPool");
                let case = format!("{kernel:?} {padding:?} normalize {normalize}");
                let ours = RowSumPool::replacing(
                    node.op_as::<OptSumPool>().unwrap(),
                    model.outlet_fact(node.inputs[0]).unwrap(),
                )
                .unwrap_or_else(|| panic!("{case}: not replaced"));
                let theirs = model
                    .into_runnable()
                    .unwrap()
                    .run(tvec![input.clone().into_tvalue()])
                    .unwrap()
                    .remove(0);
                let ours = ours
                    .eval(
                        &EvalContext::out_of_plan(),
                        tvec![input.clone().into_tvalue()],
                    )
                    .unwrap()
                    .remove(0);
                assert_eq!(theirs.shape(), ours.shape(), "{case}");
                assert_eq!(theirs.as_bytes(), ours.as_bytes(), "{case}");
            }
        }
    }
}
