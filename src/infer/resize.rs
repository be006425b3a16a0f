//! Resizing of the last two axes, one output row at a time, with tract's own arithmetic.
//!
//! tract 0.23's `Resize` (the shipped network's bilinear upsamplings) casts the map to f32,
//! resamples one axis at a time through a generic loop (on the last axis every output value walks
//! its taps through slices of the plan, ~25 ns per value on x86) and casts back: a third of the
//! shipped int8 frame on x86 (models/HISTORY.md, "bilinear resizes row by row"). [`RowResize`] is
//! the same computation for a `Resize` that changes only the last two axes: the same plans
//! (tract's `plan_axis`), the same f32 operations in the same order (`0 + w0 * a + w1 * b`, zero
//! weights skipped), byte maps read and written as tract's casts do. Only the loops differ: one
//! output row at a time, and a bilinear x2 along the width two outputs per input value. The
//! values are the same, bit for bit (`tests/model.rs`, and the unit test below against tract's
//! own `Resize::eval`).
//!
//! Byte maps resized with weights in quarters (bilinear x2 with half-pixel centres, nearest) are
//! computed in integers (`Quarters`): each output is then an exact multiple of 1/16 of the
//! input bytes, which tract reaches through f32 with no rounding on plain bytes (so the bytes are
//! tract's, bit for bit) and with f32 rounding on quantized ones, whose exact value is rounded
//! half to even here. tract's f32 chain lands on either side of a tie (an exact half), so a
//! quantized output that is a tie may differ from tract's by one step; every other is tract's.
//! Under emulation (qemu, where every f32 operation is a library call) the integer path is what
//! takes the resizes of the shipped int8 frame on a Cortex-A76 from ~9% to 1.2% (models/HISTORY.md,
//! "the byte resizes in integers").

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
    /// The same taps in integer quarters, where every weight is one (byte maps only).
    quarters: Option<Quarters>,
}

/// One axis' taps as integers: output `o` is the sum over `k < window` of `quarter[o * window +
/// k] * input[index[o * window + k]]`, divided by 4.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct QuarterTaps {
    window: usize,
    index: Vec<usize>,
    quarter: Vec<i16>,
}

impl QuarterTaps {
    /// `taps` in quarters where each weight is 0, 1/4, 1/2, 3/4 or 1 and each output's weights add
    /// up to exactly 1 (then the output is a weighted mean that stays in the bytes' range).
    fn of(taps: &Taps) -> Option<QuarterTaps> {
        let quarter = taps
            .weight
            .iter()
            .map(|&w| {
                let q = 4.0 * f32::from_bits(w);
                (q.fract() == 0.0 && (0.0..=4.0).contains(&q)).then_some(q as i16)
            })
            .collect::<Option<Vec<i16>>>()?;
        if !quarter
            .chunks_exact(taps.window)
            .all(|o| o.iter().sum::<i16>() == 4)
        {
            return None;
        }
        Some(QuarterTaps {
            window: taps.window,
            index: taps.index.clone(),
            quarter,
        })
    }
}

/// A byte map's resize in integers: each output is `sum / 4^axes` exactly, the sum taken over
/// the input bytes (as signed or unsigned integers) with the weights in quarters.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct Quarters {
    rows: Option<QuarterTaps>,
    cols: Option<QuarterTaps>,
    /// The width doubled with constant taps (see [`doubling`]), in quarters: [a0, a1, b0, b1].
    doubling: Option<[i16; 4]>,
}

impl RowResize {
    /// The op that computes what `op` computes on an input of `dt` and `shape`, given the
    /// constant scales or sizes input `aux` (as tract's `eval` reads it), where it can: f32 or
    /// byte maps (plain or quantized), only the last two axes resized.
    pub fn replacing(
        op: &Resize,
        dt: DatumType,
        shape: &[usize],
        aux: &Tensor,
    ) -> Option<RowResize> {
        let rank = shape.len();
        if rank < 2 || !(dt == f32::datum_type() || ByteStore::of(dt).is_ok()) {
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
        let (h, w) = (shape[rank - 2], shape[rank - 1]);
        let quarters = (dt != f32::datum_type())
            .then(|| Quarters::of(rows.as_ref(), cols.as_ref(), w))
            .flatten();
        Some(RowResize {
            input: (h, w),
            rows,
            cols,
            quarters,
        })
    }

    fn output_hw(&self) -> (usize, usize) {
        let (h, w) = self.input;
        (
            self.rows.as_ref().map_or(h, Taps::len_out),
            self.cols.as_ref().map_or(w, Taps::len_out),
        )
    }

    /// Resizes `planes` planes of `h x w` values one output row at a time: `read` puts plane `p`
    /// into the f32 buffer it is given, `write` takes output row `y` of plane `p`. The arithmetic
    /// is tract's `resample_axis`, height first: each value starts at 0 and gets `weight * value`
    /// added for each tap of non-zero weight, in the plan's order.
    fn resize_rows(
        &self,
        planes: usize,
        mut read: impl FnMut(usize, &mut [f32]),
        mut write: impl FnMut(usize, usize, &[f32]),
    ) {
        let (h, w) = self.input;
        let (oh, ow) = self.output_hw();
        let mut plane = vec![0f32; h * w];
        let mut tall = vec![0f32; w];
        let mut wide = vec![0f32; ow];
        // the width's taps laid out once: (index, weight) per tap
        let cols: Option<Vec<(usize, f32)>> = self.cols.as_ref().map(|taps| {
            taps.index
                .iter()
                .zip(&taps.weight)
                .map(|(&i, &w)| (i, f32::from_bits(w)))
                .collect()
        });
        let doubling = cols.as_deref().and_then(|cols| doubling(cols, w, ow));
        for p in 0..planes {
            read(p, &mut plane);
            for y in 0..oh {
                // along the height: a weighted sum of input rows (tract: inner = w)
                let row: &[f32] = match &self.rows {
                    None => &plane[y * w..(y + 1) * w],
                    Some(taps) => {
                        tall.fill(0.0);
                        for (i, weight) in taps.of_output(y) {
                            for (d, s) in tall.iter_mut().zip(&plane[i * w..(i + 1) * w]) {
                                *d += weight * s;
                            }
                        }
                        &tall
                    }
                };
                // along the width: a weighted sum of values of the row (tract: inner = 1)
                let Some(cols) = &cols else {
                    write(p, y, row);
                    continue;
                };
                let window = cols.len() / ow;
                let weighted = |taps: &[(usize, f32)]| {
                    let mut v = 0.0f32;
                    for &(i, weight) in taps {
                        if weight != 0.0 {
                            v += weight * row[i];
                        }
                    }
                    v
                };
                match doubling {
                    // the same sums, two outputs per input value, in a loop the compiler vectorizes
                    Some([a0, a1, b0, b1]) => {
                        wide[0] = weighted(&cols[..window]);
                        wide[ow - 1] = weighted(&cols[(ow - 1) * window..]);
                        let inner = wide[1..ow - 1].chunks_exact_mut(2);
                        for ((pair, &l), &r) in inner.zip(row).zip(&row[1..]) {
                            // outputs 2j + 1 and 2j + 2 both read inputs j and j + 1
                            let mut odd = 0.0f32;
                            odd += b0 * l;
                            odd += b1 * r;
                            let mut even = 0.0f32;
                            even += a0 * l;
                            even += a1 * r;
                            pair[0] = odd;
                            pair[1] = even;
                        }
                    }
                    None => {
                        for (d, taps) in wide.iter_mut().zip(cols.chunks_exact(window)) {
                            *d = weighted(taps);
                        }
                    }
                }
                write(p, y, &wide);
            }
        }
    }

    /// The resized tensor of `input` (f32, or bytes plain or quantized), values as tract's Resize
    /// gives them: bytes read as tract casts them to f32, written back as tract casts f32 to them.
    fn resize(&self, input: &Tensor) -> TractResult<Tensor> {
        let dt = input.datum_type();
        let rank = input.rank();
        let (h, w) = self.input;
        let (oh, ow) = self.output_hw();
        let mut shape: TVec<usize> = input.shape().into();
        (shape[rank - 2], shape[rank - 1]) = (oh, ow);
        let planes = input.len() / (h * w).max(1);
        let plain = input.try_as_plain_ram()?;
        if dt == f32::datum_type() {
            let src = plain.as_slice::<f32>()?;
            let mut out = vec![0f32; planes * oh * ow];
            self.resize_rows(
                planes,
                |p, plane| plane.copy_from_slice(&src[p * h * w..(p + 1) * h * w]),
                |p, y, row| out[(p * oh + y) * ow..][..ow].copy_from_slice(row),
            );
            return Ok(tract_ndarray::ArrayD::from_shape_vec(&*shape, out)?.into_tensor());
        }
        // u8, i8 or their quantized forms, or an error
        let store = ByteStore::of(dt)?;
        if let Some(quarters) = &self.quarters {
            let mut out = vec![0u8; planes * oh * ow];
            quarters.resize(self.input, (oh, ow), input.as_bytes(), store, &mut out);
            let mut out = tract_ndarray::ArrayD::from_shape_vec(&*shape, out)?.into_tensor();
            // SAFETY: `dt` is a one-byte type and every byte written is one of its values
            unsafe { out.set_datum_type(dt) };
            return Ok(out);
        }
        // every byte value as tract casts it to f32 (dequantized where the type is quantized)
        let mut all = Tensor::from_shape::<u8>(&[256], &(0..=255).collect::<Vec<u8>>())?;
        // SAFETY: `dt` is one of those four one-byte types, for which every byte is a value
        unsafe { all.set_datum_type(dt) };
        let lut = all.cast_to::<f32>()?;
        let lut = lut.try_as_plain_ram()?;
        let lut = lut.as_slice::<f32>()?;
        let bytes = input.as_bytes();
        let mut out = vec![0u8; planes * oh * ow];
        self.resize_rows(
            planes,
            |p, plane| {
                for (d, &b) in plane.iter_mut().zip(&bytes[p * h * w..(p + 1) * h * w]) {
                    *d = lut[b as usize];
                }
            },
            |p, y, row| store.write(row, &mut out[(p * oh + y) * ow..][..ow]),
        );
        let mut out = tract_ndarray::ArrayD::from_shape_vec(&*shape, out)?.into_tensor();
        // SAFETY: as above, and `store` wrote each byte as tract's cast to `dt` would
        unsafe { out.set_datum_type(dt) };
        Ok(out)
    }
}

impl Quarters {
    /// Where both resized axes' weights are quarters (and at least one axis is resized).
    fn of(rows: Option<&Taps>, cols: Option<&Taps>, w: usize) -> Option<Quarters> {
        if rows.is_none() && cols.is_none() {
            return None;
        }
        let rows = rows.map(QuarterTaps::of);
        let cols = cols.map(QuarterTaps::of);
        if rows.as_ref().is_some_and(Option::is_none) || cols.as_ref().is_some_and(Option::is_none)
        {
            return None;
        }
        let (rows, cols) = (rows.flatten(), cols.flatten());
        let doubling = cols.as_ref().and_then(|c| {
            let taps: Vec<(usize, f32)> = c
                .index
                .iter()
                .zip(&c.quarter)
                .map(|(&i, &q)| (i, q as f32))
                .collect();
            doubling(&taps, w, c.index.len() / c.window).map(|d| d.map(|q| q as i16))
        });
        Some(Quarters {
            rows,
            cols,
            doubling,
        })
    }

    /// Resizes the `h x w` planes of `src` into `out` (`oh x ow` planes), one output row at a
    /// time, stored as `store` says (see [`Quarters::store`]).
    fn resize(
        &self,
        (h, w): (usize, usize),
        (oh, ow): (usize, usize),
        src: &[u8],
        store: ByteStore,
        out: &mut [u8],
    ) {
        let signed = store.signed();
        let shift = 2 * (self.rows.is_some() as u32 + self.cols.is_some() as u32);
        let mut tall = vec![0i16; w];
        let mut wide = vec![0i16; ow];
        let mut plane = vec![0i16; h * w];
        for (bytes, out) in src.chunks_exact(h * w).zip(out.chunks_exact_mut(oh * ow)) {
            if signed {
                plane
                    .iter_mut()
                    .zip(bytes)
                    .for_each(|(d, &b)| *d = b as i8 as i16);
            } else {
                plane
                    .iter_mut()
                    .zip(bytes)
                    .for_each(|(d, &b)| *d = b as i16);
            }
            for (y, out) in out.chunks_exact_mut(ow).enumerate() {
                let row: &[i16] = match &self.rows {
                    None => &plane[y * w..(y + 1) * w],
                    Some(t) => {
                        tall.fill(0);
                        let at = y * t.window..(y + 1) * t.window;
                        for (&i, &q) in t.index[at.clone()].iter().zip(&t.quarter[at]) {
                            if q != 0 {
                                let src = &plane[i * w..(i + 1) * w];
                                tall.iter_mut().zip(src).for_each(|(d, &v)| *d += q * v);
                            }
                        }
                        &tall
                    }
                };
                let sums: &[i16] = match &self.cols {
                    None => row,
                    Some(t) => {
                        let weighted = |o: usize| -> i16 {
                            let at = o * t.window..(o + 1) * t.window;
                            t.index[at.clone()]
                                .iter()
                                .zip(&t.quarter[at])
                                .map(|(&i, &q)| q * row[i])
                                .sum()
                        };
                        match self.doubling {
                            // as the f32 loop: outputs 2j + 1 and 2j + 2 read inputs j and j + 1
                            Some([a0, a1, b0, b1]) => {
                                wide[0] = weighted(0);
                                wide[ow - 1] = weighted(ow - 1);
                                let inner = wide[1..ow - 1].chunks_exact_mut(2);
                                for ((pair, &l), &r) in inner.zip(row).zip(&row[1..]) {
                                    pair[0] = b0 * l + b1 * r;
                                    pair[1] = a0 * l + a1 * r;
                                }
                            }
                            None => wide
                                .iter_mut()
                                .enumerate()
                                .for_each(|(o, d)| *d = weighted(o)),
                        }
                        &wide
                    }
                };
                Quarters::store(sums, shift, store, out);
            }
        }
    }

    /// Writes each `sum / 2^shift` (shift 2 or 4: one or two axes in quarters) as tract's cast
    /// from f32 to `store` writes that exact value: plain bytes truncated towards zero, quantized
    /// ones rounded half to even (their zero point cancels: the weights add up to one).
    fn store(sums: &[i16], shift: u32, store: ByteStore, out: &mut [u8]) {
        let half = 1i16 << (shift - 1);
        match store {
            ByteStore::U8 => out
                .iter_mut()
                .zip(sums)
                .for_each(|(d, &k)| *d = (k >> shift) as u8),
            ByteStore::I8 => out.iter_mut().zip(sums).for_each(|(d, &k)| {
                let t = if k < 0 { -((-k) >> shift) } else { k >> shift };
                *d = t as i8 as u8
            }),
            ByteStore::Quantized { .. } => out
                .iter_mut()
                .zip(sums)
                .for_each(|(d, &k)| *d = ((k + half - 1 + ((k >> shift) & 1)) >> shift) as u8),
        }
    }
}

/// Where the width's plan doubles it with two taps of constant non-zero weights: output 2j reads
/// inputs (j - 1, j) with weights (a0, a1) and output 2j + 1 reads (j, j + 1) with (b0, b1), for
/// every output but the first and the last (which read the edge twice): bilinear x2 with
/// half-pixel centres. Returns [a0, a1, b0, b1].
fn doubling(cols: &[(usize, f32)], w: usize, ow: usize) -> Option<[f32; 4]> {
    if ow != 2 * w || w < 2 || cols.len() != 2 * ow {
        return None;
    }
    let (a0, a1) = (cols[4].1, cols[5].1);
    let (b0, b1) = (cols[2].1, cols[3].1);
    if [a0, a1, b0, b1].contains(&0.0) {
        return None;
    }
    let fits = (1..ow - 1).all(|x| {
        let (j, taps) = (x / 2, &cols[2 * x..2 * x + 2]);
        if x % 2 == 0 {
            taps == [(j - 1, a0), (j, a1)]
        } else {
            taps == [(j, b0), (j + 1, b1)]
        }
    });
    fits.then_some([a0, a1, b0, b1])
}

/// 1.5 * 2^23: adding and subtracting it rounds an f32 within +-2^22 to an integer, half to even.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// How tract 0.23 casts an f32 value to a byte type (`tract-data`, `Tensor::cast_to_dt`): plain
/// bytes with `as` (truncating, saturating); quantized ones rounded half to even after `v / scale +
/// zero_point`, then clamped.
#[derive(Debug, Clone, Copy)]
enum ByteStore {
    U8,
    I8,
    Quantized {
        scale: f32,
        zero_point: f32,
        signed: bool,
    },
}

impl ByteStore {
    fn of(dt: DatumType) -> TractResult<ByteStore> {
        Ok(match dt {
            DatumType::U8 => ByteStore::U8,
            DatumType::I8 => ByteStore::I8,
            DatumType::QU8(_) | DatumType::QI8(_) => {
                let (zero_point, scale) = dt.zp_scale();
                ByteStore::Quantized {
                    scale,
                    zero_point: zero_point as f32,
                    signed: matches!(dt, DatumType::QI8(_)),
                }
            }
            _ => bail!("RowResize: no byte cast for {dt:?}"),
        })
    }

    /// Whether the bytes are signed values.
    fn signed(&self) -> bool {
        match *self {
            ByteStore::U8 => false,
            ByteStore::I8 => true,
            ByteStore::Quantized { signed, .. } => signed,
        }
    }

    fn write(&self, row: &[f32], out: &mut [u8]) {
        match *self {
            ByteStore::U8 => out.iter_mut().zip(row).for_each(|(d, &v)| *d = v as u8),
            ByteStore::I8 => out
                .iter_mut()
                .zip(row)
                .for_each(|(d, &v)| *d = v as i8 as u8),
            ByteStore::Quantized {
                scale,
                zero_point,
                signed,
            } => {
                let (lo, hi) = if signed {
                    (-128.0, 127.0)
                } else {
                    (0.0, 255.0)
                };
                for (d, &v) in out.iter_mut().zip(row) {
                    // tract rounds, then clamps; clamping first gives the same byte (and NaN stays
                    // NaN, cast to 0 as tract's is), and lets the rounding be the branch-free
                    // half-to-even of a value within +-2^22 (tract's `round_ties_to_even` trick)
                    let c = (v / scale + zero_point).clamp(lo, hi);
                    let r = (c + ROUND_MAGIC) - ROUND_MAGIC;
                    *d = if signed { r as i8 as u8 } else { r as u8 };
                }
            }
        }
    }
}

impl Op for RowResize {
    fn name(&self) -> StaticName {
        "RowResize".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let (h, w) = self.input;
        let (oh, ow) = self.output_hw();
        let how = if self.quarters.is_some() {
            ", in integers"
        } else {
            ""
        };
        Ok(vec![format!("{h}x{w} -> {oh}x{ow}{how}")])
    }

    op_as_typed_op!();
}

impl EvalOp for RowResize {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = &inputs[0];
        let rank = input.rank();
        ensure!(
            rank >= 2 && (input.shape()[rank - 2], input.shape()[rank - 1]) == self.input,
            "RowResize: input {:?}, made for {:?} on the last two axes",
            input.shape(),
            self.input
        );
        let out = self.resize(input)?;
        Ok(tvec!(out.into_tvalue()))
    }

    op_out_of_plan!();
}

impl TypedOp for RowResize {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(super::with_last_two_axes(
            inputs[0],
            inputs[0].datum_type,
            self.output_hw()
        )?))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_core::ops::nn::resize::{CoordTransformer, Interpolator, Nearest};

    /// Bit for bit tract's own `Resize::eval`, for each interpolator (window 2 and 4), coordinate
    /// transform, element type (f32, u8, i8, quantized u8 as the int8 model's maps and quantized
    /// i8), for either axis alone, upsampling, downsampling and non-integer scales; but for
    /// quantized maps resized in integers (weights in quarters), which give the exact value
    /// rounded half to even, and differ from tract's only on a tie, by one step.
    #[test]
    fn resizes_as_tract_does() {
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
        let mut signed = bytes.cast_to::<i8>().unwrap().into_owned();
        unsafe {
            signed.set_datum_type(DatumType::QI8(QParams::ZpScale {
                zero_point: -5,
                scale: 0.05,
            }))
        };
        let plain_signed = bytes.cast_to::<i8>().unwrap().into_owned();
        // quantized outputs on a tie that tract's f32 chain rounded the other way
        let (mut ties_moved, mut ties, mut in_integers) = (0, 0, 0);
        for input in [f32s, bytes, quantized, signed, plain_signed] {
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
                        let ours =
                            RowResize::replacing(&op, input.datum_type(), input.shape(), &aux)
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
                        let in_quarters = ours.quarters.is_some();
                        in_integers += usize::from(in_quarters);
                        let (theirs, ours) = (run(&op), run(&ours));
                        assert_eq!(theirs.shape(), ours.shape(), "{case}");
                        assert_eq!(theirs.datum_type(), ours.datum_type(), "{case}");
                        let quantized =
                            matches!(input.datum_type(), DatumType::QU8(_) | DatumType::QI8(_));
                        if !(in_quarters && quantized) {
                            assert_eq!(theirs.as_bytes(), ours.as_bytes(), "{case}");
                            continue;
                        }
                        // the exact value: tract's f32 resize of the stored integers, exact in
                        // f32 with weights in quarters
                        let signed = matches!(input.datum_type(), DatumType::QI8(_));
                        let stored: Vec<f32> = input
                            .as_bytes()
                            .iter()
                            .map(|&b| if signed { b as i8 as f32 } else { b as f32 })
                            .collect();
                        let stored = Tensor::from_shape(input.shape(), &stored).unwrap();
                        let exact = op
                            .eval(
                                &EvalContext::out_of_plan(),
                                tvec![stored.into_tvalue(), aux.clone().into_tvalue()],
                            )
                            .unwrap()
                            .remove(0)
                            .into_tensor();
                        let exact = exact.try_as_plain_ram().unwrap();
                        let exact = exact.as_slice::<f32>().unwrap();
                        let value = |b: u8| if signed { b as i8 as f32 } else { b as f32 };
                        for ((&t, &o), &e) in
                            theirs.as_bytes().iter().zip(ours.as_bytes()).zip(exact)
                        {
                            assert_eq!(value(o), e.round_ties_even(), "{case}: exact {e}");
                            ties += usize::from(e.fract().abs() == 0.5);
                            if t != o {
                                assert_eq!(e.fract().abs(), 0.5, "{case}: {t} vs {o}, exact {e}");
                                assert_eq!((value(t) - value(o)).abs(), 1.0, "{case}");
                                ties_moved += 1;
                            }
                        }
                    }
                }
            }
        }
        // bilinear x2 and nearest (any scale) for the four byte types
        assert!(in_integers >= 4 * 5, "{in_integers} resizes in integers");
        assert!(
            ties > 0,
            "no quantized output on a tie: the rounding is not tested"
        );
        eprintln!("{ties} quantized outputs on a tie, {ties_moved} of them tract rounds otherwise");
    }
}
