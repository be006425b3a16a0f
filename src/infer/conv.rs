//! The f32 3x3 convolutions computed directly over a padded copy of the map, with AVX-512 or AVX2.
//!
//! tract 0.23 runs the f32 networks' 3x3 convolutions at 14-34 GMAC/s on an AVX-512 core
//! (`DirectSpatialConv` at 128x128, lazy-im2col matmuls elsewhere; models/HISTORY.md, "tract's
//! f32 on x86"), ONNX Runtime the whole network at ~57. [`F32Conv3x3`] computes a convolution
//! with no patch matrix: the input is copied once into zero-padded planes `(H + 2) x (W + 2)`,
//! so that the nine taps of every output position, taken in the padded map's row-major order,
//! are nine contiguous runs of the same plane (`o + dy * (W + 2) + dx`). A block of 32 positions
//! (two registers) times a tile of up to 8 output channels is summed in registers over every
//! input channel and tap (each weight broadcast from memory into a fused multiply-add), then the
//! two padding columns of each row are dropped.
//!
//! The sums run in another order than tract's, so the values differ from tract's in the last
//! bits (f32 rounding), not bit for bit as the engine's other ops (`tests/model.rs` bounds the
//! difference on the shipped model). Taken only on x86-64 cores with AVX-512 (`avx512f`), or AVX2
//! with FMA (two channels at a time, in 16 registers); the portable kernel below computes the
//! same blocks for the tests on any machine.

use std::sync::Arc;

use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat};
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

/// Output positions summed together: two 16-lane registers.
const BLOCK: usize = 32;
/// The most output channels summed together (2 x 8 accumulators of the 32 AVX-512 registers).
const MAX_TILE: usize = 8;

/// tract's f32 `Conv` for one image `[1,] C, H, W`, kernel 3x3 OIHW, stride 1, no dilation, one
/// group, one pixel of zero padding on every side (the output the input's size).
#[derive(Debug, Clone)]
pub struct F32Conv3x3 {
    /// The kernel that sums the blocks.
    vector: Kernel,
    channels: usize,
    outputs: usize,
    hw: (usize, usize),
    /// The output channels' tiles: (first channel, count), at most [`MAX_TILE`] each.
    tiles: Vec<(usize, usize)>,
    /// Per tile, `[channel][tap][tile's output channel]` (taps row by row), tiles one after the
    /// other: the tile starting at output channel `m0` begins at `m0 * channels * 9`.
    weights: Arc<[f32]>,
    /// One per output channel.
    bias: Arc<[f32]>,
}

/// Equal ops compute the same values: weights and bias compared bit for bit (so `Eq` holds).
impl PartialEq for F32Conv3x3 {
    fn eq(&self, other: &Self) -> bool {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        (
            self.vector,
            self.channels,
            self.outputs,
            self.hw,
            &self.tiles,
        ) == (
            other.vector,
            other.channels,
            other.outputs,
            other.hw,
            &other.tiles,
        ) && bits(&self.weights) == bits(&other.weights)
            && bits(&self.bias) == bits(&other.bias)
    }
}

impl Eq for F32Conv3x3 {}

impl F32Conv3x3 {
    /// The op that computes what `op` computes on `input` with `kernel` and `bias` (constants),
    /// where it can and where this core has AVX-512 or AVX2 with FMA.
    pub fn replacing(
        op: &Conv,
        input: &TypedFact,
        kernel: &Tensor,
        bias: &Tensor,
    ) -> Option<F32Conv3x3> {
        Self::with_kernel(op, input, kernel, bias, best_kernel()?)
    }

    /// [`Self::replacing`] with the vector kernel `vector`.
    fn with_kernel(
        op: &Conv,
        input: &TypedFact,
        kernel: &Tensor,
        bias: &Tensor,
        vector: Kernel,
    ) -> Option<F32Conv3x3> {
        let spec = &op.pool_spec;
        if op.q_params.is_some()
            || op.group != 1
            || op.kernel_fmt != KernelFormat::OIHW
            || input.datum_type != f32::datum_type()
            || kernel.datum_type() != f32::datum_type()
            || bias.datum_type() != f32::datum_type()
            || spec.kernel_shape.as_slice() != [3, 3]
            || !super::is_2d_unit_stride(spec)
            || spec.dilations().iter().any(|&d| d != 1)
        {
            return None;
        }
        let (channels, h, w) = super::one_chw_image(input)?;
        let padding = spec.computed_padding(&[h, w]);
        if padding
            .iter()
            .any(|p| p.pad_before != 1 || p.pad_after != 1)
            || (padding[0].convoluted, padding[1].convoluted) != (h, w)
            || h == 0
            || w == 0
        {
            return None;
        }
        let outputs = op.output_channels();
        if kernel.shape() != [outputs, channels, 3, 3] {
            return None;
        }
        let k = kernel.try_as_plain_ram().ok()?;
        let k = k.as_slice::<f32>().ok()?;
        let b = bias.try_as_plain_ram().ok()?;
        let b = b.as_slice::<f32>().ok()?;
        let bias: Vec<f32> = match b.len() {
            0 => vec![0.0; outputs],
            1 => vec![b[0]; outputs],
            n if n == outputs => b.to_vec(),
            _ => return None,
        };
        // tiles as even as they can be: 12 -> 6 + 6, 16 -> 8 + 8, 20 -> 7 + 7 + 6
        let n_tiles = outputs.div_ceil(MAX_TILE);
        let mut tiles = Vec::with_capacity(n_tiles);
        let mut m0 = 0;
        for t in 0..n_tiles {
            let mt = (outputs - m0).div_ceil(n_tiles - t);
            tiles.push((m0, mt));
            m0 += mt;
        }
        let mut weights = Vec::with_capacity(outputs * channels * 9);
        for &(m0, mt) in &tiles {
            for c in 0..channels {
                for tap in 0..9 {
                    weights.extend((m0..m0 + mt).map(|m| k[(m * channels + c) * 9 + tap]));
                }
            }
        }
        Some(F32Conv3x3 {
            vector,
            channels,
            outputs,
            hw: (h, w),
            tiles,
            weights: weights.into(),
            bias: bias.into(),
        })
    }

    /// The padded map's row length.
    fn row(&self) -> usize {
        self.hw.1 + 2
    }

    /// The blocks of output positions (in the padded map's rows, two junk columns each).
    fn blocks(&self) -> usize {
        (self.hw.0 * self.row()).div_ceil(BLOCK)
    }

    /// One padded plane's length: the map with its border, and room for the last block's taps.
    fn plane(&self) -> usize {
        (self.hw.0 + 2) * self.row() + BLOCK + 2
    }

    /// `src` (`C x H x W`) into zero-padded planes (a one-pixel border, then zeros) in `xp`,
    /// which keeps its zeros from one run to the next: only the interior is written.
    fn pad_into(&self, src: &[f32], xp: &mut Vec<f32>) {
        let (h, w) = self.hw;
        let (row, plane) = (self.row(), self.plane());
        if xp.len() != self.channels * plane {
            xp.clear();
            xp.resize(self.channels * plane, 0.0);
        }
        for (c, map) in src.chunks_exact(h * w).enumerate() {
            for (y, line) in map.chunks_exact(w).enumerate() {
                let at = c * plane + (y + 1) * row + 1;
                xp[at..at + w].copy_from_slice(line);
            }
        }
    }

    /// Block `b`'s sums for every output channel into `sums` (`[channel][BLOCK]`).
    fn block(&self, xp: &[f32], b: usize, sums: &mut [f32]) {
        let geo = Geometry {
            channels: self.channels,
            plane: self.plane(),
            row: self.row(),
            o0: b * BLOCK,
        };
        for &(m0, mt) in &self.tiles {
            let w = &self.weights[m0 * self.channels * 9..(m0 + mt) * self.channels * 9];
            let bias = &self.bias[m0..m0 + mt];
            let out = &mut sums[m0 * BLOCK..(m0 + mt) * BLOCK];
            match self.vector {
                Kernel::Portable => tile_portable(&geo, xp, w, bias, out),
                // SAFETY: `vector` is a kernel `best_kernel` found on this core (or a test's,
                // which checks first); the kernels check the slices' lengths before any load.
                #[cfg(target_arch = "x86_64")]
                Kernel::Avx512 => unsafe { avx512::tile(&geo, xp, w, bias, out) },
                #[cfg(target_arch = "x86_64")]
                Kernel::Avx2 => unsafe { avx2::tile(&geo, xp, w, bias, out) },
            }
        }
    }

    /// The convolution of `src` (`C x H x W`) into `out` (`M x H x W`), on tract's pool where it
    /// has one, with the buffers of `scratch`.
    fn convolve(&self, src: &[f32], out: &mut [f32], scratch: &mut Scratch) {
        let (h, w) = self.hw;
        let row = self.row();
        self.pad_into(src, &mut scratch.padded);
        let chunk = self.outputs * BLOCK;
        scratch.sums.resize(self.blocks() * chunk, 0.0);
        let xp = &scratch.padded;
        let write = |(b, sums): (usize, &mut [f32])| self.block(xp, b, sums);
        use tract_onnx::tract_core::tract_linalg::multithread::{current_tract_executor, Executor};
        match current_tract_executor() {
            Executor::MultiThread(pool) => {
                use rayon::prelude::*;
                pool.install(|| {
                    scratch
                        .sums
                        .par_chunks_mut(chunk)
                        .enumerate()
                        .for_each(write)
                })
            }
            _ => scratch.sums.chunks_mut(chunk).enumerate().for_each(write),
        }
        // drop the padding columns: position o = y * row + x, kept where x < w; a row's
        // positions run through whole blocks, each block holding BLOCK of them per channel
        for (m, plane) in out.chunks_exact_mut(h * w).enumerate() {
            for (y, line) in plane.chunks_exact_mut(w).enumerate() {
                let mut x = 0;
                while x < w {
                    let o = y * row + x;
                    let (b, at) = (o / BLOCK, o % BLOCK);
                    let n = (w - x).min(BLOCK - at);
                    let from = b * chunk + m * BLOCK + at;
                    line[x..x + n].copy_from_slice(&scratch.sums[from..from + n]);
                    x += n;
                }
            }
        }
    }

    /// The op's output for `inputs`, with the buffers of `scratch`.
    fn eval_with(&self, scratch: &mut Scratch, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = &inputs[0];
        let (h, w) = self.hw;
        let plain = input.try_as_plain_ram()?;
        let src = plain.as_slice::<f32>()?;
        ensure!(
            src.len() == self.channels * h * w,
            "F32Conv3x3: {} values for {}x{h}x{w}",
            src.len(),
            self.channels
        );
        let rank = input.rank();
        let mut shape: TVec<usize> = input.shape().into();
        shape[rank - 3] = self.outputs;
        // SAFETY: every value is written by `convolve` (each output row, x from 0 to w)
        let mut out = unsafe { Tensor::uninitialized::<f32>(&shape)? };
        let mut plain_out = out.try_as_plain_ram_mut()?;
        self.convolve(src, plain_out.as_slice_mut::<f32>()?, scratch);
        Ok(tvec!(out.into_tvalue()))
    }
}

/// The buffers a convolution reuses from one frame to the next (tract keeps one per plan and
/// node): the padded planes, whose borders stay zero, and the blocks' sums.
#[derive(Debug, Clone, Default)]
struct Scratch {
    padded: Vec<f32>,
    sums: Vec<f32>,
}

impl OpState for Scratch {
    fn eval(
        &mut self,
        _ctx: &EvalContext,
        op: &dyn Op,
        inputs: TVec<TValue>,
    ) -> TractResult<TVec<TValue>> {
        let op = op
            .downcast_ref::<F32Conv3x3>()
            .context("F32Conv3x3's buffers given another op")?;
        op.eval_with(self, inputs)
    }

    fn reset_lanes(&mut self, _lanes: &[LaneId]) -> TractResult<()> {
        Ok(()) // nothing carried from one frame to the next but buffers
    }
}

/// Where a block's taps are: input channels, a padded plane's length, its row length, the block's
/// first position.
struct Geometry {
    channels: usize,
    plane: usize,
    row: usize,
    o0: usize,
}

impl Geometry {
    /// The offset of tap `t` (row by row) from an output position in the padded plane.
    fn tap(&self, t: usize) -> usize {
        (t / 3) * self.row + t % 3
    }

    /// Panics unless every value a vector kernel reads or writes for a tile of `mt` channels lies
    /// inside `xp`, `w` and `out`: what makes their unchecked loads and stores sound.
    #[cfg(target_arch = "x86_64")]
    fn assert_fits(&self, xp: &[f32], w: &[f32], mt: usize, out: &[f32]) {
        let last = (self.channels - 1) * self.plane + self.o0 + self.tap(8) + BLOCK;
        assert!(last <= xp.len() && w.len() == self.channels * 9 * mt && out.len() == mt * BLOCK);
    }
}

/// The block's sums for a tile of `bias.len()` output channels, one value at a time.
fn tile_portable(geo: &Geometry, xp: &[f32], w: &[f32], bias: &[f32], out: &mut [f32]) {
    let mt = bias.len();
    for (m, &b) in bias.iter().enumerate() {
        out[m * BLOCK..(m + 1) * BLOCK].fill(b);
    }
    for c in 0..geo.channels {
        for t in 0..9 {
            let taps = &xp[c * geo.plane + geo.o0 + geo.tap(t)..][..BLOCK];
            for m in 0..mt {
                let wv = w[(c * 9 + t) * mt + m];
                for (o, &v) in out[m * BLOCK..(m + 1) * BLOCK].iter_mut().zip(taps) {
                    *o = v.mul_add(wv, *o);
                }
            }
        }
    }
}

/// The vector kernels this core can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    /// [`tile_portable`], for the tests.
    #[cfg_attr(not(test), allow(dead_code))]
    Portable,
    /// 16 lanes, 32 registers: a tile's 8 x 32 sums in registers.
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// 8 lanes, 16 registers: two channels x 32 positions at a time.
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

/// The fastest kernel this core has, if any.
fn best_kernel() -> Option<Kernel> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Some(Kernel::Avx512);
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Some(Kernel::Avx2);
        }
    }
    None
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Geometry, BLOCK};
    use std::arch::x86_64::*;

    /// [`super::tile_portable`] with the tile's sums in registers, for tiles of 1 to 8 channels.
    ///
    /// # Safety
    /// The core must have AVX-512F.
    pub(super) unsafe fn tile(
        geo: &Geometry,
        xp: &[f32],
        w: &[f32],
        bias: &[f32],
        out: &mut [f32],
    ) {
        match bias.len() {
            1 => tile_of::<1>(geo, xp, w, bias, out),
            2 => tile_of::<2>(geo, xp, w, bias, out),
            3 => tile_of::<3>(geo, xp, w, bias, out),
            4 => tile_of::<4>(geo, xp, w, bias, out),
            5 => tile_of::<5>(geo, xp, w, bias, out),
            6 => tile_of::<6>(geo, xp, w, bias, out),
            7 => tile_of::<7>(geo, xp, w, bias, out),
            8 => tile_of::<8>(geo, xp, w, bias, out),
            n => unreachable!("tiles hold 1 to 8 channels, not {n}"),
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn tile_of<const MT: usize>(
        geo: &Geometry,
        xp: &[f32],
        w: &[f32],
        bias: &[f32],
        out: &mut [f32],
    ) {
        geo.assert_fits(xp, w, MT, out);
        let mut lo = [_mm512_setzero_ps(); MT];
        let mut hi = [_mm512_setzero_ps(); MT];
        for m in 0..MT {
            lo[m] = _mm512_set1_ps(bias[m]);
            hi[m] = lo[m];
        }
        let taps: [usize; 9] = std::array::from_fn(|t| geo.tap(t));
        for c in 0..geo.channels {
            let base = xp.as_ptr().add(c * geo.plane + geo.o0);
            let wc = w.as_ptr().add(c * 9 * MT);
            for (t, &off) in taps.iter().enumerate() {
                let p0 = _mm512_loadu_ps(base.add(off));
                let p1 = _mm512_loadu_ps(base.add(off + 16));
                for m in 0..MT {
                    let wv = _mm512_set1_ps(*wc.add(t * MT + m));
                    lo[m] = _mm512_fmadd_ps(p0, wv, lo[m]);
                    hi[m] = _mm512_fmadd_ps(p1, wv, hi[m]);
                }
            }
        }
        for m in 0..MT {
            _mm512_storeu_ps(out.as_mut_ptr().add(m * BLOCK), lo[m]);
            _mm512_storeu_ps(out.as_mut_ptr().add(m * BLOCK + 16), hi[m]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Geometry, BLOCK};
    use std::arch::x86_64::*;

    /// [`super::tile_portable`] two channels at a time, their 2 x 32 sums in registers.
    ///
    /// # Safety
    /// The core must have AVX2 and FMA.
    pub(super) unsafe fn tile(
        geo: &Geometry,
        xp: &[f32],
        w: &[f32],
        bias: &[f32],
        out: &mut [f32],
    ) {
        let mt = bias.len();
        geo.assert_fits(xp, w, mt, out);
        let mut m = 0;
        while m < mt {
            if m + 1 < mt {
                pair::<2>(geo, xp, w, mt, m, bias, out);
                m += 2;
            } else {
                pair::<1>(geo, xp, w, mt, m, bias, out);
                m += 1;
            }
        }
    }

    /// Channels `m..m + P` of a tile of `mt`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn pair<const P: usize>(
        geo: &Geometry,
        xp: &[f32],
        w: &[f32],
        mt: usize,
        m: usize,
        bias: &[f32],
        out: &mut [f32],
    ) {
        let mut acc = [[_mm256_setzero_ps(); 4]; P];
        for (p, acc) in acc.iter_mut().enumerate() {
            *acc = [_mm256_set1_ps(bias[m + p]); 4];
        }
        for c in 0..geo.channels {
            let base = xp.as_ptr().add(c * geo.plane + geo.o0);
            let wc = w.as_ptr().add(c * 9 * mt + m);
            for t in 0..9 {
                let at = base.add(geo.tap(t));
                let x = [
                    _mm256_loadu_ps(at),
                    _mm256_loadu_ps(at.add(8)),
                    _mm256_loadu_ps(at.add(16)),
                    _mm256_loadu_ps(at.add(24)),
                ];
                for (p, acc) in acc.iter_mut().enumerate() {
                    let wv = _mm256_set1_ps(*wc.add(t * mt + p));
                    for (a, &x) in acc.iter_mut().zip(&x) {
                        *a = _mm256_fmadd_ps(x, wv, *a);
                    }
                }
            }
        }
        for (p, acc) in acc.iter().enumerate() {
            for (q, a) in acc.iter().enumerate() {
                _mm256_storeu_ps(out.as_mut_ptr().add((m + p) * BLOCK + 8 * q), *a);
            }
        }
    }
}

impl Op for F32Conv3x3 {
    fn name(&self) -> StaticName {
        "F32Conv3x3".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{}x{}x{} -> {}, tiles {:?}, {:?}",
            self.channels,
            self.hw.0,
            self.hw.1,
            self.outputs,
            self.tiles.iter().map(|t| t.1).collect::<Vec<_>>(),
            self.vector
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for F32Conv3x3 {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        self.eval_with(&mut Scratch::default(), inputs)
    }

    fn state(&self, _ctx: &EvalContext) -> TractResult<Option<Box<dyn OpState>>> {
        Ok(Some(Box::new(Scratch::default())))
    }

    op_out_of_plan!();
}

impl TypedOp for F32Conv3x3 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let rank = inputs[0].rank();
        ensure!(
            rank >= 3,
            "F32Conv3x3: a map needs 3 axes, got {:?}",
            inputs[0].shape
        );
        let mut shape = inputs[0].shape.to_tvec();
        shape[rank - 3] = self.outputs.into();
        Ok(tvec!(f32::fact(shape)))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_core::ops::cnn::{PaddingSpec, PoolSpec};
    use tract_onnx::tract_core::ops::nn::DataFormat;

    fn conv(c: usize, m: usize) -> Conv {
        Conv {
            pool_spec: PoolSpec {
                data_format: DataFormat::NCHW,
                kernel_shape: tvec![3, 3],
                padding: PaddingSpec::Explicit(tvec![1, 1], tvec![1, 1]),
                dilations: None,
                strides: None,
                input_channels: c,
                output_channels: m,
            },
            kernel_fmt: KernelFormat::OIHW,
            group: 1,
            q_params: None,
        }
    }

    /// Values in -1..1 that differ from place to place, from a seed.
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// Every kernel this core can run, the portable one first.
    fn kernels() -> Vec<Kernel> {
        #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
        let mut all = vec![Kernel::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                all.push(Kernel::Avx512);
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                all.push(Kernel::Avx2);
            }
        }
        all
    }

    /// The engine's convolution against tract's own `Conv`, within f32 rounding, for maps whose
    /// rows are not whole blocks, tiles of 3, 6 and 8 channels and more input channels than a
    /// block of taps: with the portable kernel everywhere, with AVX-512 and AVX2 where the core has
    /// them.
    #[test]
    fn convolves_as_tract_does_within_rounding() {
        for (i, &(c, m, h, w)) in [
            (3, 16, 10, 13),
            (6, 12, 9, 8),
            (16, 3, 16, 16),
            (20, 20, 5, 37),
            (1, 1, 1, 1),
        ]
        .iter()
        .enumerate()
        {
            let x = Tensor::from_shape(&[1, c, h, w], &values(c * h * w, i as u64)).unwrap();
            let k = Tensor::from_shape(&[m, c, 3, 3], &values(m * c * 9, 100 + i as u64)).unwrap();
            let b = Tensor::from_shape(&[m], &values(m, 200 + i as u64)).unwrap();
            let op = conv(c, m);
            let theirs = op
                .eval(
                    &EvalContext::out_of_plan(),
                    tvec![x.clone().into(), k.clone().into(), b.clone().into()],
                )
                .unwrap();
            let theirs = theirs[0].to_plain_array_view::<f32>().unwrap();
            let theirs: Vec<f32> = theirs.iter().copied().collect();
            let fact = f32::fact([1, c, h, w]);
            let src: Vec<f32> = x
                .to_plain_array_view::<f32>()
                .unwrap()
                .iter()
                .copied()
                .collect();
            for vector in kernels() {
                let ours = F32Conv3x3::with_kernel(&op, &fact, &k, &b, vector).unwrap();
                let mut out = vec![f32::NAN; m * h * w];
                let mut scratch = Scratch::default();
                ours.convolve(&src, &mut out, &mut scratch);
                // again with the buffers of the first run, as a plan runs frame after frame
                out.fill(f32::NAN);
                ours.convolve(&src, &mut out, &mut scratch);
                let worst = out
                    .iter()
                    .zip(&theirs)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                // sums of up to 180 products of values below 1: rounding, not a wrong tap
                assert!(worst < 1e-5, "{c}x{h}x{w} -> {m} {vector:?}: {worst}");
            }
        }
    }

    /// Convolutions it does not compute are left to tract.
    #[test]
    fn takes_only_3x3_same_size_f32_convolutions() {
        let k = Tensor::from_shape(&[4, 2, 3, 3], &values(72, 1)).unwrap();
        let b = Tensor::from_shape(&[4], &values(4, 2)).unwrap();
        let fact = f32::fact([1, 2, 8, 8]);
        assert!(F32Conv3x3::with_kernel(&conv(2, 4), &fact, &k, &b, Kernel::Portable).is_some());
        let mut strided = conv(2, 4);
        strided.pool_spec.strides = Some(tvec![2, 2]);
        assert!(F32Conv3x3::with_kernel(&strided, &fact, &k, &b, Kernel::Portable).is_none());
        let mut valid = conv(2, 4);
        valid.pool_spec.padding = PaddingSpec::Valid;
        assert!(F32Conv3x3::with_kernel(&valid, &fact, &k, &b, Kernel::Portable).is_none());
        let mut grouped = conv(2, 4);
        grouped.group = 2;
        assert!(F32Conv3x3::with_kernel(&grouped, &fact, &k, &b, Kernel::Portable).is_none());
        let bytes = u8::fact([1, 2, 8, 8]);
        assert!(F32Conv3x3::with_kernel(&conv(2, 4), &bytes, &k, &b, Kernel::Portable).is_none());
    }
}
