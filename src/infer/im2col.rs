//! The int8 convolutions' patches, written panel by panel into the matrix product's input.
//!
//! tract 0.23 feeds every quantized convolution through an eager `Im2Col`: it copies each patch
//! value into the packed panels the integer matmul reads. Its packing writers copy a row at once
//! only while the row stays inside one panel (8 or 16 values); a 128-pixel row crosses 8-16 panels,
//! and then every value goes through the writer's per-element bookkeeping, k by k over a buffer
//! larger than L2. On x86 with VNNI that was two thirds of the int8 frame (models/HISTORY.md, "the
//! int8 patches written panel by panel").
//!
//! [`RowIm2Col`] writes the same bytes into the same two layouts tract's kernels read
//! (`PackedFormat`: per panel `[k][r]`; `PackedI8K4`: per panel `[k / 4][r][4]`): the map is
//! copied once into a padded map, then each panel is filled from its rows while it sits in L1.
//! The engine puts it in place of every `Im2Col` on bytes it can handle (channels first, one
//! group, one image, two spatial axes, stride 1: every convolution of the recipe's networks);
//! anything else keeps tract's op. The values are the same, bit for bit (`tests/model.rs`).

use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::conv::Im2Col;
use tract_onnx::tract_core::tract_linalg::mmm::{
    EagerPackedInput, MMMInputFormat, MMMInputValue, PackedExoticFact, PackedMatrixStorage,
};
use tract_onnx::tract_core::tract_linalg::pack::{PackedFormat, PackedI8K4};
use tract_onnx::tract_core::{as_op, op_as_typed_op, op_out_of_plan};

/// Where patch value (k, n) lands: `(n / r) * panel_len + k_offset(k) + (n % r) * lane_stride`.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
struct Panels {
    /// Values of n per panel.
    r: usize,
    /// Bytes per panel.
    panel_len: usize,
    /// Alignment of the buffer, in bytes.
    align: usize,
    /// 1 for `PackedFormat` (k outer), 4 for `PackedI8K4` (4 values of k inner).
    lane_stride: usize,
}

impl Panels {
    fn of(format: &dyn MMMInputFormat, k: usize) -> Option<Panels> {
        if let Some(pf) = format.downcast_ref::<PackedFormat>() {
            Some(Panels {
                r: pf.r,
                panel_len: pf.single_panel_len(k),
                align: pf.alignment(),
                lane_stride: 1,
            })
        } else {
            format.downcast_ref::<PackedI8K4>().map(|p4| Panels {
                r: p4.r,
                panel_len: p4.single_panel_len(k),
                align: p4.alignment(),
                lane_stride: 4,
            })
        }
    }

    fn k_offset(&self, k: usize) -> usize {
        if self.lane_stride == 1 {
            k * self.r
        } else {
            (k / 4) * self.r * 4 + k % 4
        }
    }
}

/// One 2-D convolution's patches (stride 1), for a `[1,] C, H, W` byte map.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
struct Patches {
    channels: usize,
    input: (usize, usize),
    kernel: (usize, usize),
    dilations: (usize, usize),
    pad_before: (usize, usize),
    output: (usize, usize),
}

/// tract's `Im2Col` for bytes, written panel by panel from a padded copy of the map.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct RowIm2Col {
    patches: Patches,
    panels: Panels,
    /// The output fact of the op it replaces (the packed input of the matmul that follows).
    fact: TypedFact,
    /// Patch value k of output pixel (yo, xo) is the padded map's byte `yo * pw + xo + offsets[k]`.
    offsets: Vec<usize>,
}

impl Patches {
    /// The padded map's height and width: every patch value of every output pixel inside it.
    fn padded(&self) -> (usize, usize) {
        let ((oh, ow), (kh, kw), (dy, dx)) = (self.output, self.kernel, self.dilations);
        (oh + (kh - 1) * dy, ow + (kw - 1) * dx)
    }
}

impl RowIm2Col {
    fn new(patches: Patches, panels: Panels, fact: TypedFact) -> RowIm2Col {
        let ((kh, kw), (dy, dx)) = (patches.kernel, patches.dilations);
        let (ph, pw) = patches.padded();
        let offsets = (0..patches.channels * kh * kw)
            .map(|k| {
                let (c, ky, kx) = (k / (kh * kw), (k / kw) % kh, k % kw);
                c * ph * pw + ky * dy * pw + kx * dx
            })
            .collect();
        RowIm2Col {
            patches,
            panels,
            fact,
            offsets,
        }
    }

    /// The op that writes what `op` writes, given its input and output facts; `None` where it
    /// cannot (anything but one non-empty image of bytes, channels first, one group, 2 spatial
    /// axes, a concrete shape, stride 1 and one of the two packings).
    pub fn replacing(op: &Im2Col, input: &TypedFact, output: &TypedFact) -> Option<RowIm2Col> {
        let spec = &op.pool_spec;
        if op.group != 1 || input.datum_type.size_of() != 1 || !super::is_2d_unit_stride(spec) {
            return None;
        }
        let (channels, h, w) = super::one_chw_image(input)?;
        let packed = output.exotic_fact()?.downcast_ref::<PackedExoticFact>()?;
        let (kh, kw) = (spec.kernel_shape[0], spec.kernel_shape[1]);
        if packed.k == 0 || packed.k != channels * kh * kw {
            return None;
        }
        let panels = Panels::of(&*packed.format, packed.k)?;
        let padding = spec.computed_padding(&[h, w]);
        let patches = Patches {
            channels,
            input: (h, w),
            kernel: (kh, kw),
            dilations: (spec.dilations()[0], spec.dilations()[1]),
            pad_before: (padding[0].pad_before, padding[1].pad_before),
            output: (padding[0].convoluted, padding[1].convoluted),
        };
        let n = patches.output.0 * patches.output.1;
        if n == 0 || packed.mn.to_usize().ok()? != n {
            return None;
        }
        Some(RowIm2Col::new(patches, panels, output.clone()))
    }

    /// Whether [`RowIm2Col::write`] sets every byte of the packed buffer: every panel full (the
    /// output pixels a multiple of r) and nothing but patch values in a panel (k a multiple of 4
    /// in `PackedI8K4`, no alignment padding). Then the buffer need not be zeroed first (a pass
    /// over up to 4.7 MB per convolution on the shipped model).
    fn fills_every_byte(&self) -> bool {
        let Panels {
            r,
            panel_len,
            lane_stride,
            ..
        } = self.panels;
        let (oh, ow) = self.patches.output;
        let k_len = self.offsets.len();
        (oh * ow).is_multiple_of(r)
            && (lane_stride == 1 || k_len.is_multiple_of(4))
            && panel_len == k_len * r
    }

    /// Every patch value of `input` (`C * H * W` bytes) written into `packed`, `pad` outside
    /// the map. The map is first copied into a padded one, so that every patch value is a plain
    /// read; then the panels are written one after the other, each while it sits in the cache
    /// (tract goes k by k over the whole buffer, larger than L2 on the recipe's 128x128 maps).
    fn write(&self, input: &[u8], pad: u8, packed: &mut [u8]) {
        let Patches {
            channels,
            input: (h, w),
            pad_before: (py, px),
            output: (oh, ow),
            ..
        } = self.patches;
        let Panels {
            r,
            panel_len,
            lane_stride,
            ..
        } = self.panels;
        // padded[c][yy][xx] = input[c][yy - py][xx - px], or pad
        let (ph, pw) = self.patches.padded();
        let mut padded = vec![pad; channels * ph * pw];
        let (rows, cols) = (h.min(ph.saturating_sub(py)), w.min(pw.saturating_sub(px)));
        for (plane, map) in padded
            .chunks_exact_mut(ph * pw)
            .zip(input.chunks_exact(h * w))
        {
            for y in 0..rows {
                plane[(y + py) * pw + px..][..cols].copy_from_slice(&map[y * w..][..cols]);
            }
        }
        let (k_len, offset) = (self.offsets.len(), &self.offsets);
        let n = oh * ow;
        for (p, panel) in packed.chunks_exact_mut(panel_len).enumerate() {
            // the panel's values of n, as segments of output rows
            let (first, last) = (p * r, ((p + 1) * r).min(n));
            let mut at = first;
            while at < last {
                let (yo, xo) = (at / ow, at % ow);
                let len = (ow - xo).min(last - at);
                let lane0 = at - first;
                let base = yo * pw + xo;
                let src = |k: usize| &padded[base + offset[k]..][..len];
                if lane_stride == 1 {
                    for k in 0..k_len {
                        copy_lanes(&mut panel[k * r + lane0..][..len], src(k));
                    }
                } else {
                    // [k / 4][lane][k % 4]: four rows of the patch interleaved
                    let whole = interleave4_segment(
                        &mut panel[lane0 * 4..],
                        r * 4,
                        &padded[base..],
                        &offset[..k_len / 4 * 4],
                        len,
                    );
                    if !whole {
                        for kb in 0..k_len / 4 {
                            let (s0, s1, s2, s3) = (
                                src(4 * kb),
                                src(4 * kb + 1),
                                src(4 * kb + 2),
                                src(4 * kb + 3),
                            );
                            let dst = &mut panel[kb * r * 4 + lane0 * 4..][..len * 4];
                            interleave4(dst, [s0, s1, s2, s3]);
                        }
                    }
                    for k in k_len / 4 * 4..k_len {
                        let dst = &mut panel[self.panels.k_offset(k) + lane0 * 4..];
                        for (j, &v) in src(k).iter().enumerate() {
                            dst[j * 4] = v;
                        }
                    }
                }
                at += len;
            }
        }
    }
}

/// `dst[4 j + i] = rows[i][j]`: four rows of the patch interleaved. On aarch64, 8 lanes (the dot
/// kernels' r) at once: 4 loads and one `st4` in place of 32 byte moves (LLVM vectorizes the
/// plain loop 16 lanes at a time, which a panel's 8 never fill); on x86_64 16 or 8 lanes by SSE2
/// unpacks.
fn interleave4(dst: &mut [u8], rows: [&[u8]; 4]) {
    let lanes = dst.len() / 4;
    assert!(rows.iter().all(|row| row.len() >= lanes));
    let done = interleave4_by_8(dst, rows, lanes);
    let [r0, r1, r2, r3] = rows.map(|row| &row[done..lanes]);
    let quads = r0.iter().zip(r1).zip(r2).zip(r3);
    for (quad, (((&a, &b), &c), &d)) in dst[4 * done..].chunks_exact_mut(4).zip(quads) {
        quad.copy_from_slice(&[a, b, c, d]);
    }
}

/// [`interleave4`]'s first `lanes / 8 * 8` lanes with `st4`; returns how many it wrote.
#[cfg(target_arch = "aarch64")]
fn interleave4_by_8(dst: &mut [u8], rows: [&[u8]; 4], lanes: usize) -> usize {
    use std::arch::aarch64::{uint8x8x4_t, vld1_u8, vst4_u8};
    assert!(dst.len() >= 4 * lanes && rows.iter().all(|row| row.len() >= lanes));
    let mut done = 0;
    while lanes - done >= 8 {
        // SAFETY: NEON is part of aarch64; 8 bytes read from each row at `done` and 32 written
        // to `dst` at 4 * done, inside the lengths checked above (`done + 8 <= lanes`).
        unsafe {
            let at = |i: usize| vld1_u8(rows[i].as_ptr().add(done));
            vst4_u8(
                dst.as_mut_ptr().add(4 * done),
                uint8x8x4_t(at(0), at(1), at(2), at(3)),
            );
        }
        done += 8;
    }
    done
}

/// [`interleave4`]'s first `lanes / 8 * 8` lanes with SSE2 (part of x86_64), 16 then 8 at a
/// time ([`sse2`]); returns how many it wrote. The plain loop compiled to one byte move per value
/// here: the int8 patches were a third of the shipped int8 frame on x86.
#[cfg(target_arch = "x86_64")]
fn interleave4_by_8(dst: &mut [u8], rows: [&[u8]; 4], lanes: usize) -> usize {
    assert!(dst.len() >= 4 * lanes && rows.iter().all(|row| row.len() >= lanes));
    let mut done = 0;
    let out = dst.as_mut_ptr();
    // SAFETY: 16 (then 8) bytes read from each row at `done` and 64 (then 32) written to `dst`
    // at 4 * done, inside the lengths checked above (`done + 16 <= lanes`, `done + 8 <= lanes`).
    unsafe {
        let at = |done: usize| rows.map(|row| row.as_ptr().add(done));
        while lanes - done >= 16 {
            sse2::interleave16(out.add(4 * done), at(done));
            done += 16;
        }
        if lanes - done >= 8 {
            sse2::interleave8(out.add(4 * done), at(done));
            done += 8;
        }
    }
    done
}

/// One panel segment of `lanes` output pixels, every group of four patch values at once:
/// `dst[q * stride + 4 j + i] = src[offsets[4 q + i] + j]` for `j < lanes` (`offsets` holds a
/// multiple of 4 values). Done (true) only for a whole panel of tract's x86 int8 kernels (8 or 16
/// lanes: every segment of a map whose width is a multiple of 16), with the bounds checked once
/// per group instead of through four slices; false, with nothing written, otherwise.
#[cfg(target_arch = "x86_64")]
fn interleave4_segment(
    dst: &mut [u8],
    stride: usize,
    src: &[u8],
    offsets: &[usize],
    lanes: usize,
) -> bool {
    let quads = offsets.len() / 4;
    if !(lanes == 8 || lanes == 16) || quads == 0 || (quads - 1) * stride + 4 * lanes > dst.len() {
        return false;
    }
    let (out, from) = (dst.as_mut_ptr(), src.as_ptr());
    for (q, o) in offsets.chunks_exact(4).enumerate() {
        assert!(o.iter().all(|&o| o + lanes <= src.len()));
        let rows = [o[0], o[1], o[2], o[3]];
        // SAFETY: each read is `lanes` bytes at an offset checked just above; the write ends at
        // `q * stride + 4 * lanes <= (quads - 1) * stride + 4 * lanes <= dst.len()`.
        unsafe {
            let rows = rows.map(|o| from.add(o));
            if lanes == 16 {
                sse2::interleave16(out.add(q * stride), rows);
            } else {
                sse2::interleave8(out.add(q * stride), rows);
            }
        }
    }
    true
}

/// Elsewhere [`interleave4`] does every segment.
#[cfg(not(target_arch = "x86_64"))]
fn interleave4_segment(
    _dst: &mut [u8],
    _stride: usize,
    _src: &[u8],
    _offsets: &[usize],
    _lanes: usize,
) -> bool {
    false
}

/// Four rows of bytes interleaved (`out[4 j + i] = rows[i][j]`) by two rounds of SSE2 unpacks
/// (bytes, then byte pairs).
#[cfg(target_arch = "x86_64")]
mod sse2 {
    use std::arch::x86_64::{
        __m128i, _mm_loadl_epi64, _mm_loadu_si128, _mm_storeu_si128, _mm_unpackhi_epi16,
        _mm_unpackhi_epi8, _mm_unpacklo_epi16, _mm_unpacklo_epi8,
    };

    /// 16 lanes: 64 bytes written.
    ///
    /// # Safety
    /// 16 bytes readable at each of `rows`, 64 writable at `out` (no alignment needed).
    #[inline(always)]
    pub unsafe fn interleave16(out: *mut u8, rows: [*const u8; 4]) {
        // SAFETY: as the caller guarantees; SSE2 is part of x86_64.
        unsafe {
            let [a, b, c, d] = rows.map(|row| _mm_loadu_si128(row.cast::<__m128i>()));
            let (ab_lo, ab_hi) = (_mm_unpacklo_epi8(a, b), _mm_unpackhi_epi8(a, b));
            let (cd_lo, cd_hi) = (_mm_unpacklo_epi8(c, d), _mm_unpackhi_epi8(c, d));
            let out = out.cast::<__m128i>();
            _mm_storeu_si128(out, _mm_unpacklo_epi16(ab_lo, cd_lo));
            _mm_storeu_si128(out.add(1), _mm_unpackhi_epi16(ab_lo, cd_lo));
            _mm_storeu_si128(out.add(2), _mm_unpacklo_epi16(ab_hi, cd_hi));
            _mm_storeu_si128(out.add(3), _mm_unpackhi_epi16(ab_hi, cd_hi));
        }
    }

    /// 8 lanes: 32 bytes written.
    ///
    /// # Safety
    /// 8 bytes readable at each of `rows`, 32 writable at `out` (no alignment needed).
    #[inline(always)]
    pub unsafe fn interleave8(out: *mut u8, rows: [*const u8; 4]) {
        // SAFETY: as the caller guarantees; SSE2 is part of x86_64.
        unsafe {
            let [a, b, c, d] = rows.map(|row| _mm_loadl_epi64(row.cast::<__m128i>()));
            let (ab, cd) = (_mm_unpacklo_epi8(a, b), _mm_unpacklo_epi8(c, d));
            let out = out.cast::<__m128i>();
            _mm_storeu_si128(out, _mm_unpacklo_epi16(ab, cd));
            _mm_storeu_si128(out.add(1), _mm_unpackhi_epi16(ab, cd));
        }
    }
}

/// Elsewhere the plain loop does it all.
#[cfg(not(any(target_arch = "aarch64", target_arch = "x86_64")))]
fn interleave4_by_8(_dst: &mut [u8], _rows: [&[u8]; 4], _lanes: usize) -> usize {
    0
}

/// `dst.copy_from_slice(src)`, with a whole panel row of 8 or 16 bytes (the kernels' r) as one
/// fixed-size copy instead of a call to `memcpy`.
fn copy_lanes(dst: &mut [u8], src: &[u8]) {
    if let (Ok(dst), Ok(src)) = (
        <&mut [u8; 8]>::try_from(&mut *dst),
        <&[u8; 8]>::try_from(src),
    ) {
        *dst = *src;
    } else if let (Ok(dst), Ok(src)) = (
        <&mut [u8; 16]>::try_from(&mut *dst),
        <&[u8; 16]>::try_from(src),
    ) {
        *dst = *src;
    } else {
        dst.copy_from_slice(src);
    }
}

impl Op for RowIm2Col {
    fn name(&self) -> StaticName {
        "RowIm2Col".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let p = &self.patches;
        Ok(vec![format!(
            "{}x{}x{} kernel {}x{} dilation {}x{} -> {}x{}, panels of {} (lane stride {})",
            p.channels,
            p.input.0,
            p.input.1,
            p.kernel.0,
            p.kernel.1,
            p.dilations.0,
            p.dilations.1,
            p.output.0,
            p.output.1,
            self.panels.r,
            self.panels.lane_stride
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for RowIm2Col {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = &inputs[0];
        let pad = match inputs.get(1) {
            Some(pad) => *pad
                .as_bytes()
                .first()
                .context("RowIm2Col: empty pad value")?,
            None => 0,
        };
        let (oh, ow) = self.patches.output;
        let n = oh * ow;
        let panels = n.div_ceil(self.panels.r);
        let (len, align) = ([panels * self.panels.panel_len], self.panels.align);
        let mut data = if self.fills_every_byte() {
            // SAFETY: `write` sets every byte of the buffer before it is read (whole panels, no
            // padding of k or of the panel: `fills_every_byte`, and the test
            // `whole_panels_are_written_to_the_last_byte`); the bytes are plain `u8`.
            unsafe { Tensor::uninitialized_aligned_dt(DatumType::U8, &len, align)? }
        } else {
            // zeroed: tract zeroes the last panel's unused lanes and PackedI8K4's padding of k
            Tensor::zero_aligned_dt(DatumType::U8, &len, align)?
        };
        let (c, (h, w)) = (self.patches.channels, self.patches.input);
        let bytes = input.as_bytes();
        ensure!(
            bytes.len() == c * h * w,
            "RowIm2Col: {} input bytes for {c}x{h}x{w}",
            bytes.len()
        );
        self.write(bytes, pad, data.as_bytes_mut());
        let packed = self
            .fact
            .exotic_fact()
            .and_then(|f| f.downcast_ref::<PackedExoticFact>())
            .context("RowIm2Col: output fact without packing")?
            .clone();
        let value: Box<dyn MMMInputValue> = Box::new(EagerPackedInput {
            fact: packed,
            packed: data.into_blob()?.into(),
            panel_bytes: self.panels.panel_len,
            mn: n,
        });
        let storage = PackedMatrixStorage::new_batched(&[1, 1], tvec![value]);
        Ok(tvec!(storage.into_tensor(input.datum_type()).into_tvalue()))
    }

    op_out_of_plan!();
}

impl TypedOp for RowIm2Col {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(self.fact.clone()))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where `fills_every_byte` says so, `write` leaves no byte of a buffer as it found it
    /// (written twice, over 0x00 and over 0xFF, the two buffers come out equal).
    #[test]
    fn whole_panels_are_written_to_the_last_byte() {
        for (channels, lane_stride, r, w) in [(4usize, 4, 8, 14), (4, 4, 16, 30), (3, 1, 8, 14)] {
            let (h, k_len) = (6, channels * 9);
            let panel_len = k_len * r;
            let op = RowIm2Col::new(
                Patches {
                    channels,
                    input: (h, w),
                    kernel: (3, 3),
                    dilations: (1, 1),
                    pad_before: (1, 1),
                    output: (h, w + 2),
                },
                Panels {
                    r,
                    panel_len,
                    align: 16,
                    lane_stride,
                },
                u8::fact([1, 1]),
            );
            assert!(op.fills_every_byte(), "{channels} channels, r {r}");
            let input: Vec<u8> = (0..channels * h * w).map(|i| (i * 7 % 199) as u8).collect();
            let len = (h * (w + 2)).div_ceil(r) * panel_len;
            let (mut zeros, mut ones) = (vec![0u8; len], vec![0xFFu8; len]);
            op.write(&input, 200, &mut zeros);
            op.write(&input, 200, &mut ones);
            assert_eq!(
                zeros, ones,
                "{channels} channels, lane stride {lane_stride}, r {r}"
            );
        }
    }

    /// Both layouts, against the definition: patch value k = (c, ky, kx) of output pixel n =
    /// (yo, xo) is the input at (yo + ky * dy - py, xo + kx * dx - px), or the pad value outside;
    /// it lands at `(n / r) * panel_len + k_offset(k) + (n % r) * lane_stride`; every other byte
    /// is 0. Rows of 7 pixels straddle the panels, rows of 22 also fill whole panels of 8 and
    /// rows of 46 whole panels of 16 (the interleave's 8- and 16-lane paths), and k = 2 * 2 * 3 =
    /// 12 or 3 * 2 * 3 = 18 (not a multiple of 4) leaves padding lanes.
    #[test]
    fn patches_land_where_the_layouts_say() {
        let pad = 200u8;
        let cases = [
            (2usize, 1, 8, 6),
            (3, 1, 4, 6),
            (2, 4, 8, 6),
            (3, 4, 16, 6),
            (2, 4, 8, 21),
            (3, 4, 16, 45),
            (2, 1, 16, 45),
        ];
        for (channels, lane_stride, r, w) in cases {
            let (h, kh, kw, dy, dx, py, px) = (5, 2, 3, 2, 1, 1, 2);
            let (oh, ow) = (h + 2 * py - (kh - 1) * dy, w + 2 * px - (kw - 1) * dx - 1);
            let k_len = channels * kh * kw;
            let panel_len = if lane_stride == 1 {
                k_len * r
            } else {
                k_len.div_ceil(4) * 4 * r
            };
            let op = RowIm2Col::new(
                Patches {
                    channels,
                    input: (h, w),
                    kernel: (kh, kw),
                    dilations: (dy, dx),
                    pad_before: (py, px),
                    output: (oh, ow),
                },
                Panels {
                    r,
                    panel_len,
                    align: 16,
                    lane_stride,
                },
                u8::fact([1, 1]),
            );
            let input: Vec<u8> = (0..channels * h * w).map(|i| (i * 7 % 199) as u8).collect();
            let n = oh * ow;
            let mut packed = vec![0u8; n.div_ceil(r) * panel_len];
            op.write(&input, pad, &mut packed);
            let mut expected = vec![0u8; packed.len()];
            for k in 0..k_len {
                let (c, ky, kx) = (k / (kh * kw), (k / kw) % kh, k % kw);
                for i in 0..n {
                    let (yo, xo) = (i / ow, i % ow);
                    let y = (yo + ky * dy) as isize - py as isize;
                    let x = (xo + kx * dx) as isize - px as isize;
                    let inside = (0..h as isize).contains(&y) && (0..w as isize).contains(&x);
                    let at = (i / r) * panel_len + op.panels.k_offset(k) + (i % r) * lane_stride;
                    expected[at] = if inside {
                        input[c * h * w + y as usize * w + x as usize]
                    } else {
                        pad
                    };
                }
            }
            assert_eq!(
                packed, expected,
                "{channels} channels, lane stride {lane_stride}, r {r}, width {w}"
            );
        }
    }
}
