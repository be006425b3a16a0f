//! The int8 convolutions' 32-bit products on Arm cores without 8-bit dot products (Cortex-A72).
//!
//! On such a core tract 0.23 multiplies bytes with `arm64simd_mmm_i32_8x8`: every byte widened to
//! 16 bits, then multiplied by element, 64 multiply-adds in ~20 instructions. [`Int8Products`]
//! keeps 16-bit partial sums of four products instead (`smull`, `smlal2`, `smlal`, `smlal2`, then
//! two widening adds: 32 multiply-adds in 6 instructions), with each weight laid out once as a
//! run of 8 equal bytes, against the 8 lanes of tract's own patch panels (`PackedFormat`,
//! `[k][8]` per panel, as `RowIm2Col` writes them).
//!
//! Only the products change hands: the engine feeds them to tract's `OptMatMul` through the
//! `AddUnicast` tract uses when it fuses an addition into a product, in place of its `AddMatMul`,
//! so tract's bias, zero-point sums, scaling, rounding, clamp and store stay as they are, and the
//! values are tract's bit for bit (`tests/model.rs`). A node is taken only where no sum of four
//! products can leave 16 bits, checked on its weights (`export.py`'s 7-bit weights, -64..=64,
//! overflow only if four weights of a group are all -64).

use std::borrow::Cow;
use std::sync::Arc;

use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::matmul::optimized::{
    MapOutputAxisToInput, MatMulOperand, OptMatMul, ProtoFusedSpec,
};
use tract_onnx::tract_core::tract_linalg::mmm::{
    EagerPackedInput, MMMInputValue, PackedExoticFact, PackedMatrixStorage,
};
use tract_onnx::tract_core::tract_linalg::pack::PackedFormat;
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

/// Lanes of n per panel: tract's 8x8 integer kernel on aarch64.
const R: usize = 8;
/// Rows of m per block of weights.
const MB: usize = 4;
/// Values of k per 16-bit partial sum.
const KG: usize = 4;
/// Bytes of one block's weights per group of k: `MB` rows x `KG` values x `R` copies.
const BLOCK_GROUP: usize = MB * KG * R;

/// The products `A x B` of one int8 convolution: `A` its `m x k` weights, `B` the `k x n` patches
/// in tract's panels; out `[m][n]` as 32-bit integers, shaped as the matmul's output.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct Int8Products {
    m: usize,
    k: usize,
    n: usize,
    /// Per block of `MB` rows, per group of `KG` values of k, per row: `KG` runs of `R` copies
    /// of the weight (zero past m or k).
    weights: Arc<Vec<i8>>,
    /// The matmul's output fact, as 32-bit integers.
    fact: TypedFact,
}

impl Int8Products {
    fn groups(&self) -> usize {
        self.k.div_ceil(KG)
    }

    /// The op computing what `op`'s `AddMatMul` computes, and the index of the matmul input it
    /// reads (the patches; `inputs` are its input facts), or `None` where it cannot: anything but one aarch64 int8 kernel with
    /// 8-lane panels on both sides, constant weights, one output matrix with contiguous rows, and
    /// weights whose groups of four products stay inside 16 bits.
    pub fn replacing(op: &OptMatMul, inputs: &[&TypedFact]) -> Option<(Int8Products, usize)> {
        if !cfg!(target_arch = "aarch64") || op.mmm.len() != 1 {
            return None;
        }
        let mmm = &op.mmm[0];
        // the 8x8 kernel without dot products (not the `_dot` one, not SVE's `sve_mmm_i32_8x8`,
        // which read the same panels)
        if mmm.name() != "arm64simd_mmm_i32_8x8" {
            return None;
        }
        let Some(ProtoFusedSpec::AddMatMul {
            geo,
            a,
            b: MatMulOperand::Input(b_ix),
            packings,
        }) = op.micro_ops.first()
        else {
            return None;
        };
        // the weights: baked into the op, or a constant input
        let a: &dyn MMMInputValue = match a {
            MatMulOperand::Const(a) => &**a,
            MatMulOperand::Input(ix) => {
                let konst = inputs.get(*ix)?.konst.as_ref()?;
                if konst.shape().iter().product::<usize>() != 1 {
                    return None;
                }
                konst.try_storage_as::<PackedMatrixStorage>().ok()?.value()
            }
        };
        let uses_b = |spec: &ProtoFusedSpec| match spec {
            ProtoFusedSpec::BinScalar(v, _)
            | ProtoFusedSpec::LeakyRelu(v)
            | ProtoFusedSpec::BinPerRow(v, _, _)
            | ProtoFusedSpec::BinPerCol(v, _, _)
            | ProtoFusedSpec::AddUnicast(_, v, _) => v == b_ix,
            ProtoFusedSpec::AddRowColProducts(r, c) => r == b_ix || c == b_ix,
            _ => false,
        };
        let shape = op.c_fact.shape.as_concrete()?;
        // batch axes only where the output has one matrix
        let batch =
            |map: &MapOutputAxisToInput| map.0.iter().all(|&(c, _)| shape.get(c) == Some(&1));
        if !batch(&geo.c_to_a_axis_mapping)
            || !batch(&geo.c_to_b_axis_mapping)
            || packings.len() != 1
            || packings[0].1.is_some()
            || mmm.internal_type() != i32::datum_type()
            || op.micro_ops[1..].iter().any(uses_b)
            || op.micro_ops[1..]
                .iter()
                .any(|s| matches!(s, ProtoFusedSpec::AddMatMul { .. }))
        {
            return None;
        }
        let is_i8_panels =
            |format: &dyn tract_onnx::tract_core::tract_linalg::mmm::MMMInputFormat| {
                format
                    .downcast_ref::<PackedFormat>()
                    .is_some_and(|p| p.r == R && p.dt.unquantized() == i8::datum_type())
            };
        let (a_format, b_format) = mmm.packings().get(packings[0].0)?;
        if !is_i8_panels(&**a_format) || !is_i8_panels(&**b_format) {
            return None;
        }
        let a = a.downcast_ref::<EagerPackedInput>()?;
        let b = inputs
            .get(*b_ix)?
            .exotic_fact()?
            .downcast_ref::<PackedExoticFact>()?;
        if !is_i8_panels(a.format()) || !is_i8_panels(&*b.format) {
            return None;
        }
        let (m, k) = (a.mn(), a.k());
        let n = b.mn.to_usize().ok()?;
        let (m_axis, n_axis) = (op.c_m_axis?, op.c_n_axis?);
        let unit_elsewhere = shape
            .iter()
            .enumerate()
            .all(|(ax, &d)| ax == m_axis || ax == n_axis || d == 1);
        // [m][n] with n contiguous: nothing but unit axes after n, nor between m and n
        let row_major = m_axis < n_axis && unit_elsewhere;
        if b.k != k
            || m == 0
            || k == 0
            || n == 0
            || shape[m_axis] != m
            || shape[n_axis] != n
            || !row_major
            || a.panel_bytes < k * R
        {
            return None;
        }
        let bytes = a.packed.as_bytes();
        let weight = |row: usize, kk: usize| -> i8 {
            bytes[(row / R) * a.panel_bytes + kk * R + row % R] as i8
        };
        if bytes.len() < m.div_ceil(R) * a.panel_bytes {
            return None;
        }
        let weights = laid_out(m, k, weight)?;
        let fact = i32::datum_type().fact(shape);
        let ours = Int8Products {
            m,
            k,
            n,
            weights: Arc::new(weights),
            fact,
        };
        Some((ours, *b_ix))
    }

    /// The products against `patches` (tract's panels), on tract's pool where it has one.
    fn products(&self, patches: &EagerPackedInput) -> TractResult<Tensor> {
        ensure!(
            patches.k() == self.k && patches.mn() == self.n && patches.panel_bytes >= self.k * R,
            "Int8Products: patches k {} n {} panel {} bytes, expected k {} n {}",
            patches.k(),
            patches.mn(),
            patches.panel_bytes,
            self.k,
            self.n
        );
        let bytes = patches.packed.as_bytes();
        let needed = (self.n.div_ceil(R) - 1) * patches.panel_bytes + self.k * R;
        ensure!(
            bytes.len() >= needed,
            "Int8Products: {} bytes of patches, {needed} needed",
            bytes.len()
        );
        let shape = self
            .fact
            .shape
            .as_concrete()
            .context("Int8Products: symbolic shape")?;
        let mut out = Tensor::zero::<i32>(shape)?;
        let mut plain = out.try_as_plain_ram_mut()?;
        let rows = plain.as_slice_mut::<i32>()?;
        let (panels, panel_bytes) = self.whole_groups(bytes, patches.panel_bytes);
        let write =
            |(b, chunk): (usize, &mut [i32])| self.write_rows(b * MB, chunk, &panels, panel_bytes);
        let block_len = MB * self.n;
        use tract_onnx::tract_core::tract_linalg::multithread::{current_tract_executor, Executor};
        match current_tract_executor() {
            Executor::MultiThread(pool) => {
                use rayon::prelude::*;
                pool.install(|| rows.par_chunks_mut(block_len).enumerate().for_each(write))
            }
            _ => rows.chunks_mut(block_len).enumerate().for_each(write),
        }
        Ok(out)
    }

    /// `op` with its `AddMatMul` replaced by the addition of these products, read from input
    /// `input` (where the patches were).
    pub fn feeding(op: &OptMatMul, input: usize) -> OptMatMul {
        let mut fed = op.clone();
        // SAFETY: the store spec of the kernel's own output axes, as tract builds it when it
        // fuses an addition of a tensor shaped as the output (`OptMatMul::fuse_binary`).
        let view = unsafe { op.mmm[0].c_view(op.c_m_axis, op.c_n_axis) };
        fed.micro_ops[0] = ProtoFusedSpec::AddUnicast(view, input, MapOutputAxisToInput(tvec![]));
        fed
    }

    /// The patch panels as whole groups of k, `groups * KG * R` bytes apart: a copy only where
    /// k is not a multiple of `KG` (every convolution of the recipe's networks has k = 9 C with
    /// C a multiple of 4).
    fn whole_groups<'p>(&self, panels: &'p [u8], panel_bytes: usize) -> (Cow<'p, [u8]>, usize) {
        let len = self.groups() * KG * R;
        if self.k.is_multiple_of(KG) {
            return (Cow::Borrowed(panels), panel_bytes);
        }
        let mut copy = vec![0u8; self.n.div_ceil(R) * len];
        for (p, dst) in copy.chunks_exact_mut(len).enumerate() {
            dst[..self.k * R].copy_from_slice(&panels[p * panel_bytes..][..self.k * R]);
        }
        (Cow::Owned(copy), len)
    }

    /// The rows of `rows` (whole rows of n, from row `first`, a multiple of `MB`), from the patch
    /// panels in `panels` (`panel_bytes` apart, whole groups of k).
    fn write_rows(&self, first: usize, rows: &mut [i32], panels: &[u8], panel_bytes: usize) {
        let (n, groups) = (self.n, self.groups());
        let count = n.div_ceil(R);
        let panel = |p: usize| &panels[p * panel_bytes..][..groups * KG * R];
        for (b, block_rows) in rows.chunks_mut(MB * n).enumerate() {
            let block = first / MB + b;
            let weights = &self.weights[block * groups * BLOCK_GROUP..][..groups * BLOCK_GROUP];
            for p in (0..count).step_by(2) {
                let second = (p + 1).min(count - 1);
                let tile = block_tile(weights, panel(p), panel(second), groups);
                for (mi, row) in block_rows.chunks_exact_mut(n).enumerate() {
                    let lanes = (n - p * R).min(2 * R);
                    row[p * R..][..lanes].copy_from_slice(&tile[mi][..lanes]);
                }
            }
        }
    }
}

/// The `m x k` weights `weight(row, k)` as [`Int8Products::weights`] holds them, or `None` if a
/// group of four could leave 16 bits ([`partial_sums_fit`]).
fn laid_out(m: usize, k: usize, weight: impl Fn(usize, usize) -> i8) -> Option<Vec<i8>> {
    let groups = k.div_ceil(KG);
    let mut weights = vec![0i8; m.div_ceil(MB) * groups * BLOCK_GROUP];
    for row in 0..m {
        let (block, mi) = (row / MB, row % MB);
        for g in 0..groups {
            let group: Vec<i8> = (g * KG..k.min(g * KG + KG))
                .map(|kk| weight(row, kk))
                .collect();
            if !partial_sums_fit(&group) {
                return None;
            }
            for (j, &w) in group.iter().enumerate() {
                let at = (block * groups + g) * BLOCK_GROUP + mi * KG * R + j * R;
                weights[at..at + R].fill(w);
            }
        }
    }
    Some(weights)
}

/// Whether every sum of these weights' products with patch bytes (-128..=127) fits 16 bits, as
/// do its partial sums (each term's extreme has the sign of the sum's).
fn partial_sums_fit(weights: &[i8]) -> bool {
    let (mut hi, mut lo) = (0i32, 0i32);
    for &w in weights {
        let (x, y) = (i32::from(w) * 127, i32::from(w) * -128);
        hi += x.max(y);
        lo += x.min(y);
    }
    hi <= i32::from(i16::MAX) && lo >= i32::from(i16::MIN)
}

/// `MB` rows of products against two panels of `R` lanes: `[row][panel * R + lane]`.
///
/// In assembly: written with intrinsics, LLVM computed all eight partial sums of a group first and
/// spilled accumulators, ~95 instructions per group instead of 56 (16 accumulators `v16`-`v31`,
/// panels `v0`-`v3`, two rows' weights `v4`-`v7`, four 16-bit partial sums `v8`-`v11`).
#[cfg(target_arch = "aarch64")]
fn block_tile(weights: &[i8], b0: &[u8], b1: &[u8], groups: usize) -> [[i32; 2 * R]; MB] {
    assert!(groups > 0 && weights.len() >= groups * BLOCK_GROUP);
    assert!(b0.len() >= groups * KG * R && b1.len() >= groups * KG * R);
    let mut out = [[0i32; 2 * R]; MB];
    // SAFETY: NEON is part of aarch64. Per group the loop reads 32 bytes of each panel and
    // BLOCK_GROUP (128) bytes of weights, `groups` times: inside the slices checked above. It
    // writes 4 x 64 bytes, `out` exactly. Every vector register it uses is declared clobbered.
    unsafe {
        std::arch::asm!(
            "movi v16.4s, #0", "movi v17.4s, #0", "movi v18.4s, #0", "movi v19.4s, #0",
            "movi v20.4s, #0", "movi v21.4s, #0", "movi v22.4s, #0", "movi v23.4s, #0",
            "movi v24.4s, #0", "movi v25.4s, #0", "movi v26.4s, #0", "movi v27.4s, #0",
            "movi v28.4s, #0", "movi v29.4s, #0", "movi v30.4s, #0", "movi v31.4s, #0",
            "2:",
            // k, k + 1 and k + 2, k + 3 of each panel: lanes 0-7 the first, 8-15 the second
            "ld1 {{v0.16b, v1.16b}}, [{p0}], #32",
            "ld1 {{v2.16b, v3.16b}}, [{p1}], #32",
            // rows 0 and 1
            "ld1 {{v4.16b, v5.16b, v6.16b, v7.16b}}, [{w}], #64",
            "smull v8.8h, v0.8b, v4.8b",
            "smull v9.8h, v2.8b, v4.8b",
            "smull v10.8h, v0.8b, v6.8b",
            "smull v11.8h, v2.8b, v6.8b",
            "smlal2 v8.8h, v0.16b, v4.16b",
            "smlal2 v9.8h, v2.16b, v4.16b",
            "smlal2 v10.8h, v0.16b, v6.16b",
            "smlal2 v11.8h, v2.16b, v6.16b",
            "smlal v8.8h, v1.8b, v5.8b",
            "smlal v9.8h, v3.8b, v5.8b",
            "smlal v10.8h, v1.8b, v7.8b",
            "smlal v11.8h, v3.8b, v7.8b",
            "smlal2 v8.8h, v1.16b, v5.16b",
            "smlal2 v9.8h, v3.16b, v5.16b",
            "smlal2 v10.8h, v1.16b, v7.16b",
            "smlal2 v11.8h, v3.16b, v7.16b",
            "saddw v16.4s, v16.4s, v8.4h",
            "saddw2 v17.4s, v17.4s, v8.8h",
            "saddw v18.4s, v18.4s, v9.4h",
            "saddw2 v19.4s, v19.4s, v9.8h",
            "saddw v20.4s, v20.4s, v10.4h",
            "saddw2 v21.4s, v21.4s, v10.8h",
            "saddw v22.4s, v22.4s, v11.4h",
            "saddw2 v23.4s, v23.4s, v11.8h",
            // rows 2 and 3
            "ld1 {{v4.16b, v5.16b, v6.16b, v7.16b}}, [{w}], #64",
            "smull v8.8h, v0.8b, v4.8b",
            "smull v9.8h, v2.8b, v4.8b",
            "smull v10.8h, v0.8b, v6.8b",
            "smull v11.8h, v2.8b, v6.8b",
            "smlal2 v8.8h, v0.16b, v4.16b",
            "smlal2 v9.8h, v2.16b, v4.16b",
            "smlal2 v10.8h, v0.16b, v6.16b",
            "smlal2 v11.8h, v2.16b, v6.16b",
            "smlal v8.8h, v1.8b, v5.8b",
            "smlal v9.8h, v3.8b, v5.8b",
            "smlal v10.8h, v1.8b, v7.8b",
            "smlal v11.8h, v3.8b, v7.8b",
            "smlal2 v8.8h, v1.16b, v5.16b",
            "smlal2 v9.8h, v3.16b, v5.16b",
            "smlal2 v10.8h, v1.16b, v7.16b",
            "smlal2 v11.8h, v3.16b, v7.16b",
            "saddw v24.4s, v24.4s, v8.4h",
            "saddw2 v25.4s, v25.4s, v8.8h",
            "saddw v26.4s, v26.4s, v9.4h",
            "saddw2 v27.4s, v27.4s, v9.8h",
            "saddw v28.4s, v28.4s, v10.4h",
            "saddw2 v29.4s, v29.4s, v10.8h",
            "saddw v30.4s, v30.4s, v11.4h",
            "saddw2 v31.4s, v31.4s, v11.8h",
            "subs {g}, {g}, #1",
            "b.ne 2b",
            "st1 {{v16.4s, v17.4s, v18.4s, v19.4s}}, [{dst}], #64",
            "st1 {{v20.4s, v21.4s, v22.4s, v23.4s}}, [{dst}], #64",
            "st1 {{v24.4s, v25.4s, v26.4s, v27.4s}}, [{dst}], #64",
            "st1 {{v28.4s, v29.4s, v30.4s, v31.4s}}, [{dst}], #64",
            p0 = inout(reg) b0.as_ptr() => _,
            p1 = inout(reg) b1.as_ptr() => _,
            w = inout(reg) weights.as_ptr() => _,
            g = inout(reg) groups => _,
            dst = inout(reg) out.as_mut_ptr() => _,
            out("v0") _, out("v1") _, out("v2") _, out("v3") _,
            out("v4") _, out("v5") _, out("v6") _, out("v7") _,
            out("v8") _, out("v9") _, out("v10") _, out("v11") _,
            out("v16") _, out("v17") _, out("v18") _, out("v19") _,
            out("v20") _, out("v21") _, out("v22") _, out("v23") _,
            out("v24") _, out("v25") _, out("v26") _, out("v27") _,
            out("v28") _, out("v29") _, out("v30") _, out("v31") _,
            options(nostack),
        );
    }
    out
}

/// The same tile, portably (the unit tests off aarch64; the engine takes the op only on aarch64).
#[cfg(not(target_arch = "aarch64"))]
fn block_tile(weights: &[i8], b0: &[u8], b1: &[u8], groups: usize) -> [[i32; 2 * R]; MB] {
    portable_tile(weights, b0, b1, groups)
}

/// The tile's definition, in plain integer arithmetic with the same 16-bit partial sums.
#[cfg(any(test, not(target_arch = "aarch64")))]
fn portable_tile(weights: &[i8], b0: &[u8], b1: &[u8], groups: usize) -> [[i32; 2 * R]; MB] {
    let mut out = [[0i32; 2 * R]; MB];
    for (mi, row) in out.iter_mut().enumerate() {
        for (half, panel) in [b0, b1].into_iter().enumerate() {
            for lane in 0..R {
                let mut sum = 0i32;
                for g in 0..groups {
                    let mut partial = 0i16;
                    for j in 0..KG {
                        let w = weights[g * BLOCK_GROUP + mi * KG * R + j * R];
                        let b = panel[g * KG * R + j * R + lane] as i8;
                        partial = partial.wrapping_add(i16::from(w) * i16::from(b));
                    }
                    sum += i32::from(partial);
                }
                row[half * R + lane] = sum;
            }
        }
    }
    out
}

impl Op for Int8Products {
    fn name(&self) -> StaticName {
        "Int8Products".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "m:{} k:{} n:{}, 16-bit sums of {KG} products",
            self.m, self.k, self.n
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for Int8Products {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let storage = inputs[0].try_storage_as::<PackedMatrixStorage>()?;
        let patches = storage
            .value()
            .downcast_ref::<EagerPackedInput>()
            .context("Int8Products: patches not eagerly packed")?;
        Ok(tvec!(self.products(patches)?.into_tvalue()))
    }

    op_out_of_plan!();
}

impl TypedOp for Int8Products {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(self.fact.clone()))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The op's products against tract's own packing of the patches (8-lane i8 panels aligned
    /// to 16 with a padding record, so panels are longer than k x 8), with k = 27 (not a multiple
    /// of 4: the whole-groups copy), n = 13 (an odd number of panels, the last one partial) and
    /// m = 5 (a partial block of rows), against the plain matrix product.
    #[test]
    fn products_of_tract_packed_patches_are_the_matrix_product() {
        use tract_onnx::prelude::tract_ndarray::Array2;
        let (m, k, n) = (5usize, 27usize, 13usize);
        let w = |row: usize, kk: usize| ((row * 37 + kk * 11) % 129) as i32 - 64;
        let b = |kk: usize, col: usize| ((kk * 71 + col * 23 + 5) % 256) as i32 - 128;
        let weights = laid_out(m, k, |row, kk| w(row, kk) as i8).unwrap();
        let patches = Array2::from_shape_fn((k, n), |(kk, col)| b(kk, col) as i8).into_tensor();
        let format = PackedFormat::new(i8::datum_type(), R, 16).with_end_padding_record(1);
        let packed = format.pack_tensor(&patches, 0, 1).unwrap();
        let packed = packed.downcast_ref::<EagerPackedInput>().unwrap();
        assert!(
            packed.panel_bytes > k * R,
            "{} bytes per panel",
            packed.panel_bytes
        );
        let op = Int8Products {
            m,
            k,
            n,
            weights: Arc::new(weights),
            fact: i32::fact([1, 1, m, n]),
        };
        let out = op.products(packed).unwrap();
        let plain = out.try_as_plain_ram().unwrap();
        let values = plain.as_slice::<i32>().unwrap();
        for row in 0..m {
            for col in 0..n {
                let expected: i32 = (0..k).map(|kk| w(row, kk) * b(kk, col)).sum();
                assert_eq!(values[row * n + col], expected, "row {row} col {col}");
            }
        }
    }

    /// Four of export.py's weights (-64..=64) fit unless all four are -64 (4 x -64 x -128 = 32768;
    /// 4 x 64 x -128 = -32768 fits); 8-bit ones need
    /// smaller neighbours.
    #[test]
    fn sums_of_four_products_fit_16_bits_only_where_they_can() {
        assert!(partial_sums_fit(&[63, 63, 63, 63]));
        assert!(partial_sums_fit(&[64, 64, 64, 64]));
        assert!(partial_sums_fit(&[-64, -64, -64, 63]));
        assert!(partial_sums_fit(&[-64, -64, -64]));
        assert!(!partial_sums_fit(&[-64, -64, -64, -64]));
        assert!(partial_sums_fit(&[-128, 127]));
        assert!(partial_sums_fit(&[-128, 127, 2]));
        assert!(!partial_sums_fit(&[-128, 127, 3]));
        assert!(!partial_sums_fit(&[127, 127, 127]));
    }

    /// The tile against the plain definition `sum_k w(m, k) * b(k, n)`, with weights and patches
    /// across the whole range the op accepts (7-bit weights, any patch byte), k a multiple of 4
    /// and not, and an odd number of panels. A partial sum kept in 8 bits or a lane out of place
    /// fails it.
    #[test]
    fn tiles_are_the_products() {
        for (m, k) in [(4usize, 8usize), (6, 12), (5, 27)] {
            let groups = k.div_ceil(KG);
            let w = |row: usize, kk: usize| ((row * 31 + kk * 17) % 128) as i32 - 64;
            let b = |kk: usize, lane: usize| ((kk * 53 + lane * 29 + 7) % 256) as u8;
            let mut weights = vec![0i8; m.div_ceil(MB) * groups * BLOCK_GROUP];
            for row in 0..m {
                for kk in 0..k {
                    let at = ((row / MB) * groups + kk / KG) * BLOCK_GROUP
                        + (row % MB) * KG * R
                        + (kk % KG) * R;
                    weights[at..at + R].fill(w(row, kk) as i8);
                }
            }
            let panel = |first: usize| -> Vec<u8> {
                let mut p = vec![0u8; groups * KG * R];
                for kk in 0..k {
                    for lane in 0..R {
                        p[kk * R + lane] = b(kk, first + lane);
                    }
                }
                p
            };
            let (p0, p1) = (panel(0), panel(R));
            for block in 0..m.div_ceil(MB) {
                let ws = &weights[block * groups * BLOCK_GROUP..][..groups * BLOCK_GROUP];
                for tile in [
                    block_tile(ws, &p0, &p1, groups),
                    portable_tile(ws, &p0, &p1, groups),
                ] {
                    for (mi, values) in tile.iter().enumerate().take(m - block * MB) {
                        for (lane, &value) in values.iter().enumerate() {
                            let row = block * MB + mi;
                            let expected: i32 = (0..k)
                                .map(|kk| w(row, kk) * i32::from(b(kk, lane) as i8))
                                .sum();
                            assert_eq!(value, expected, "m {m} k {k} row {row} lane {lane}");
                        }
                    }
                }
            }
        }
    }
}
