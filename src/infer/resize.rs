//! Linear resizing of the last two axes, row by row, with tract's own arithmetic.
//!
//! tract 0.23's `Resize` (the shipped network's bilinear upsamplings) resamples one axis at a time
//! through a generic loop: on the last axis every output value walks its taps through slices of
//! the plan, ~25 ns per value on x86 and a third of the shipped int8 frame (models/HISTORY.md,
//! "bilinear resizes row by row"). [`RowResize`] is the same computation for a `Resize` that
//! changes only the last two axes: the same plans (tract's `plan_axis`), the same f32 operations
//! in the same order (`0 + w0 * a + w1 * b`, zero weights skipped), tract's own casts on the way
//! in and out; only the loops differ. The values are the same, bit for bit (`tests/model.rs`).

use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::nn::resize::{AxisPlan, Resize};
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

/// One axis' resampling: output `o` is the sum over `k < window` of `weight[o * window + k] *
/// input[index[o * window + k]]`, taps of weight zero skipped.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct Taps {
    window: usize,
    index: Vec<usize>,
    /// `f32::to_bits`, so that the op hashes and compares as tract's ops must.
    weight: Vec<u32>,
}

impl Taps {
    /// tract's plan, where it only reads inside the axis (the core `Resize` never extrapolates).
    fn of(plan: AxisPlan) -> Option<Taps> {
        if plan.extrapolated.contains(&true) || plan.window == 0 {
            return None;
        }
        Some(Taps {
            window: plan.window,
            index: plan.indices,
            weight: plan.weights.iter().map(|w| w.to_bits()).collect(),
        })
    }

    fn len_out(&self) -> usize {
        self.index.len() / self.window
    }

    /// The taps of output `o` with a non-zero weight, in tract's order.
    fn of_output(&self, o: usize) -> impl Iterator<Item = (usize, f32)> + '_ {
        let at = o * self.window..(o + 1) * self.window;
        self.index[at.clone()]
            .iter()
            .zip(&self.weight[at])
            .map(|(&i, &w)| (i, f32::from_bits(w)))
            .filter(|&(_, w)| w != 0.0)
    }
}

/// tract's `Resize` on a tensor whose last two axes are resized (either may keep its length) and
/// whose other axes are not.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct RowResize {
    /// Input height and width.
    input: (usize, usize),
    /// Along the height; `None` where tract leaves the axis as it is.
    rows: Option<Taps>,
    /// Along the width; `None` where tract leaves the axis as it is.
    cols: Option<Taps>,
}

impl RowResize {
    /// The op that computes what `op` computes on an input of `shape`, given the constant scales
    /// or sizes input `aux` (as tract's `eval` reads it), where it can.
    pub fn replacing(op: &Resize, shape: &[usize], aux: &Tensor) -> Option<RowResize> {
        let rank = shape.len();
        if rank < 2 {
            return None;
        }
        let scales_input = op.optional_scales_input.map(|_| aux);
        let sizes_input = op.optional_sizes_input.map(|_| aux);
        let out = op
            .compute_output_shape(shape, scales_input, sizes_input)
            .ok()?;
        // as tract's `eval`: the scales input when it has one per axis, else output / input
        let scales: TVec<f32> = match scales_input.filter(|s| s.len() == rank) {
            Some(s) => s.try_as_plain_ram().ok()?.as_slice::<f32>().ok()?.into(),
            None => out
                .iter()
                .zip(shape)
                .map(|(o, i)| *o as f32 / *i as f32)
                .collect(),
        };
        let mut plans: TVec<Option<Taps>> = tvec!();
        for axis in 0..rank {
            let (len_in, len_out, scale) = (shape[axis], out[axis], scales[axis]);
            if len_in == len_out && scale == 1.0 {
                plans.push(None);
            } else if axis + 2 < rank || len_in == 0 || len_out == 0 {
                return None;
            } else {
                plans.push(Some(Taps::of(op.plan_axis(scale, len_in, len_out))?));
            }
        }
        let cols = plans.pop()?;
        let rows = plans.pop()?;
        Some(RowResize {
            input: (shape[rank - 2], shape[rank - 1]),
            rows,
            cols,
        })
    }

    fn output_hw(&self) -> (usize, usize) {
        let (h, w) = self.input;
        (
            self.rows.as_ref().map_or(h, Taps::len_out),
            self.cols.as_ref().map_or(w, Taps::len_out),
        )
    }

    /// `src`: planes of `h x w` f32 values, one after the other; returns the resized planes.
    fn resize(&self, src: &[f32]) -> Vec<f32> {
        let (h, w) = self.input;
        let (oh, ow) = self.output_hw();
        let planes = src.len() / (h * w).max(1);
        // along the height: output row y is a weighted sum of input rows (tract: inner = w)
        let tall = match &self.rows {
            None => src.to_vec(),
            Some(taps) => {
                let mut tall = vec![0f32; planes * oh * w];
                for (plane, out) in src.chunks_exact(h * w).zip(tall.chunks_exact_mut(oh * w)) {
                    for (y, row) in out.chunks_exact_mut(w).enumerate() {
                        for (i, weight) in taps.of_output(y) {
                            for (d, s) in row.iter_mut().zip(&plane[i * w..(i + 1) * w]) {
                                *d += weight * s;
                            }
                        }
                    }
                }
                tall
            }
        };
        // along the width: output value x is a weighted sum of values of its row (tract: inner = 1)
        let Some(taps) = &self.cols else {
            return tall;
        };
        let mut out = vec![0f32; planes * oh * ow];
        if taps.window == 2 {
            // the linear case, with its taps laid out once per row
            let pairs: Vec<[(usize, f32); 2]> = (0..ow)
                .map(|x| {
                    let mut pair = [(0, 0.0); 2];
                    for (k, tap) in pair.iter_mut().enumerate() {
                        *tap = (
                            taps.index[2 * x + k],
                            f32::from_bits(taps.weight[2 * x + k]),
                        );
                    }
                    pair
                })
                .collect();
            for (row, out) in tall.chunks_exact(w).zip(out.chunks_exact_mut(ow)) {
                for (d, &[(i0, w0), (i1, w1)]) in out.iter_mut().zip(&pairs) {
                    let mut v = 0.0f32;
                    if w0 != 0.0 {
                        v += w0 * row[i0];
                    }
                    if w1 != 0.0 {
                        v += w1 * row[i1];
                    }
                    *d = v;
                }
            }
        } else {
            for (row, out) in tall.chunks_exact(w).zip(out.chunks_exact_mut(ow)) {
                for (x, d) in out.iter_mut().enumerate() {
                    for (i, weight) in taps.of_output(x) {
                        *d += weight * row[i];
                    }
                }
            }
        }
        out
    }
}

impl Op for RowResize {
    fn name(&self) -> StaticName {
        "RowResize".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let (h, w) = self.input;
        let (oh, ow) = self.output_hw();
        Ok(vec![format!("{h}x{w} -> {oh}x{ow}")])
    }

    op_as_typed_op!();
}

impl EvalOp for RowResize {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = &inputs[0];
        let dt = input.datum_type();
        let rank = input.rank();
        ensure!(
            rank >= 2 && (input.shape()[rank - 2], input.shape()[rank - 1]) == self.input,
            "RowResize: input {:?}, made for {:?} on the last two axes",
            input.shape(),
            self.input
        );
        // tract's own casts in and out, as its Resize does
        let values = input.cast_to::<f32>()?;
        let resized = self.resize(values.try_as_plain_ram()?.as_slice::<f32>()?);
        let mut shape: TVec<usize> = input.shape().into();
        (shape[rank - 2], shape[rank - 1]) = self.output_hw();
        let out = tract_ndarray::ArrayD::from_shape_vec(&*shape, resized)?.into_tensor();
        let out = if dt == f32::datum_type() {
            out
        } else {
            out.cast_to_dt(dt)?.into_owned()
        };
        Ok(tvec!(out.into_tvalue()))
    }

    op_out_of_plan!();
}

impl TypedOp for RowResize {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let rank = inputs[0].rank();
        ensure!(rank >= 2, "RowResize needs at least 2 axes");
        let mut shape = inputs[0].shape.to_tvec();
        let (oh, ow) = self.output_hw();
        shape[rank - 2] = oh.into();
        shape[rank - 1] = ow.into();
        Ok(tvec!(inputs[0].datum_type.fact(shape)))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_core::ops::nn::resize::{CoordTransformer, Interpolator, Nearest};

    /// Bit for bit tract's own `Resize::eval`, for each interpolator (window 2 and 4), coordinate
    /// transform, element type (f32, u8, a quantized u8 as the int8 model's maps) and for either
    /// axis alone, upsampling, downsampling and non-integer scales.
    #[test]
    fn resizes_as_tract_does_bit_for_bit() {
        let (c, h, w) = (3, 7, 9);
        let values: Vec<f32> = (0..c * h * w)
            .map(|i| ((i * 37 + (i / 5) * 11) % 256) as f32)
            .collect();
        let f32s = Tensor::from_shape(&[1, c, h, w], &values).unwrap();
        let bytes = f32s.cast_to::<u8>().unwrap().into_owned();
        // the same bytes read as a quantized map (zero point 3, scale 0.037)
        let mut quantized = bytes.clone();
        unsafe {
            quantized.set_datum_type(DatumType::QU8(QParams::ZpScale {
                zero_point: 3,
                scale: 0.037,
            }))
        };
        for input in [f32s, bytes, quantized] {
            for interpolator in [
                Interpolator::Linear,
                Interpolator::Cubic,
                Interpolator::Nearest,
            ] {
                for coord in [CoordTransformer::HalfPixel, CoordTransformer::AlignCorners] {
                    for scales in [
                        [2.0f32, 2.0],
                        [1.0, 2.0],
                        [2.0, 1.0],
                        [0.5, 1.5],
                        [1.7, 3.0],
                    ] {
                        let op = Resize {
                            coord_transformer: coord.clone(),
                            interpolator: interpolator.clone(),
                            nearest: Nearest::Floor,
                            optional_scales_input: Some(1),
                            optional_sizes_input: None,
                        };
                        let aux =
                            Tensor::from_shape(&[4], &[1.0, 1.0, scales[0], scales[1]]).unwrap();
                        let case = format!(
                            "{:?} {interpolator:?} {coord:?} {scales:?}",
                            input.datum_type()
                        );
                        let ours = RowResize::replacing(&op, input.shape(), &aux)
                            .unwrap_or_else(|| panic!("{case}: not replaced"));
                        let run = |op: &dyn EvalOp| {
                            op.eval(
                                &EvalContext::out_of_plan(),
                                tvec![input.clone().into_tvalue(), aux.clone().into_tvalue()],
                            )
                            .unwrap()
                            .remove(0)
                            .into_tensor()
                        };
                        let (theirs, ours) = (run(&op), run(&ours));
                        assert_eq!(theirs.shape(), ours.shape(), "{case}");
                        assert_eq!(theirs.datum_type(), ours.datum_type(), "{case}");
                        assert_eq!(theirs.as_bytes(), ours.as_bytes(), "{case}");
                    }
                }
            }
        }
    }
}
