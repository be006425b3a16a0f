//! Frame -> model input tensor: pixel-format conversion, resize of the whole frame or of a region of
//! interest (or, for a model trained on aligned parts, the part found and cropped: `align`),
//! scaling, NCHW layout.
//!
//! The resize reproduces Pillow's `Image.resize(..., BILINEAR)` bit for bit (triangle filter widened by
//! the scale factor, 22-bit fixed-point coefficients, horizontal then vertical pass with rounding to
//! 8 bits between), because the model was trained on images resized that way. It is hand-written
//! rather than taken from a resize crate for that exactness and so that, once a frame size has been
//! seen, it runs on buffers allocated once: all buffers are kept and reused while the frame size stays.

mod align;

pub use crate::capture::Roi;
use crate::capture::{to_rgb, CaptureError, Frame};
pub use align::{Aligner, Alignment, Pose};

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Per-output-pixel filter taps for one axis.
#[derive(Debug, Default)]
struct Taps {
    /// (first input index, number of taps) per output pixel.
    bounds: Vec<(usize, usize)>,
    /// `ksize` fixed-point weights per output pixel.
    weights: Vec<i32>,
    ksize: usize,
}

impl Taps {
    fn new(in_size: usize, out_size: usize) -> Taps {
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = filterscale; // bilinear support is 1.0
        let ksize = support.ceil() as usize * 2 + 1;
        let mut bounds = Vec::with_capacity(out_size);
        let mut weights = vec![0i32; out_size * ksize];
        let mut k = vec![0f64; ksize];
        for xx in 0..out_size {
            let center = (xx as f64 + 0.5) * scale;
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = (((center + support + 0.5) as i64).min(in_size as i64) as usize)
                .saturating_sub(xmin);
            let mut ww = 0.0;
            for (x, kx) in k.iter_mut().enumerate().take(xmax) {
                let t = ((x + xmin) as f64 - center + 0.5) / filterscale;
                let w = (1.0 - t.abs()).max(0.0);
                *kx = w;
                ww += w;
            }
            for (x, kx) in k.iter().enumerate().take(xmax) {
                let w = if ww != 0.0 { kx / ww } else { 0.0 };
                let fixed = w * (1u32 << PRECISION_BITS) as f64;
                weights[xx * ksize + x] = if fixed < 0.0 {
                    (fixed - 0.5) as i32
                } else {
                    (fixed + 0.5) as i32
                };
            }
            bounds.push((xmin, xmax));
        }
        Taps {
            bounds,
            weights,
            ksize,
        }
    }
}

#[inline]
fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Pillow-exact bilinear resize of packed RGB24, reusing its buffers while sizes stay the same.
#[derive(Debug, Default)]
pub struct Resizer {
    in_w: usize,
    in_h: usize,
    out_w: usize,
    out_h: usize,
    h: Taps,
    v: Taps,
    /// Horizontally resized rows: in_h x out_w x 3.
    tmp: Vec<u8>,
}

impl Resizer {
    fn prepare(&mut self, in_w: usize, in_h: usize, out_w: usize, out_h: usize) {
        if (in_w, in_h, out_w, out_h) != (self.in_w, self.in_h, self.out_w, self.out_h) {
            self.h = Taps::new(in_w, out_w);
            self.v = Taps::new(in_h, out_h);
            self.tmp = vec![0; in_h * out_w * 3];
            (self.in_w, self.in_h, self.out_w, self.out_h) = (in_w, in_h, out_w, out_h);
        }
    }

    /// Resizes `src` (in_w x in_h RGB24) into `dst` (out_w x out_h RGB24).
    pub fn resize(
        &mut self,
        src: &[u8],
        in_w: usize,
        in_h: usize,
        dst: &mut [u8],
        out_w: usize,
        out_h: usize,
    ) {
        let whole = Roi {
            x: 0,
            y: 0,
            width: in_w as u32,
            height: in_h as u32,
        };
        self.resize_region(src, in_w, whole, dst, out_w, out_h);
    }

    /// Resizes the region `roi` of `src` (RGB24 rows of `stride_px` pixels) into `dst`. The region
    /// must lie inside `src` ([`Roi::check`]).
    pub fn resize_region(
        &mut self,
        src: &[u8],
        stride_px: usize,
        roi: Roi,
        dst: &mut [u8],
        out_w: usize,
        out_h: usize,
    ) {
        let (x0, y0) = (roi.x as usize, roi.y as usize);
        let (in_w, in_h) = (roi.width as usize, roi.height as usize);
        self.prepare(in_w, in_h, out_w, out_h);
        let rounding = 1i64 << (PRECISION_BITS - 1);
        let hk = self.h.ksize;
        for y in 0..in_h {
            let start = ((y0 + y) * stride_px + x0) * 3;
            let row = &src[start..start + in_w * 3];
            let out = &mut self.tmp[y * out_w * 3..(y + 1) * out_w * 3];
            for (xx, &(xmin, n)) in self.h.bounds.iter().enumerate() {
                let w = &self.h.weights[xx * hk..xx * hk + n];
                let mut acc = [rounding; 3];
                for (i, &wi) in w.iter().enumerate() {
                    let p = &row[(xmin + i) * 3..(xmin + i) * 3 + 3];
                    for c in 0..3 {
                        acc[c] += p[c] as i64 * wi as i64;
                    }
                }
                for c in 0..3 {
                    out[xx * 3 + c] = clip8(acc[c]);
                }
            }
        }
        let vk = self.v.ksize;
        let stride = out_w * 3;
        for (yy, &(ymin, n)) in self.v.bounds.iter().enumerate() {
            let w = &self.v.weights[yy * vk..yy * vk + n];
            let out = &mut dst[yy * stride..(yy + 1) * stride];
            for (x, o) in out.iter_mut().enumerate() {
                let mut acc = rounding;
                for (i, &wi) in w.iter().enumerate() {
                    acc += self.tmp[(ymin + i) * stride + x] as i64 * wi as i64;
                }
                *o = clip8(acc);
            }
        }
    }
}

/// How the model wants its input (from the model's metadata).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InputSpec {
    pub width: usize,
    pub height: usize,
    /// tensor value = pixel * scale + offset
    pub scale: f32,
    pub offset: f32,
    /// The part found, turned and cropped in each frame (or region of interest) instead of the
    /// whole of it resized (metadata `partguard.alignment`).
    pub align: Option<Alignment>,
}

/// Converts frames and fills the model's input tensor; owns every buffer it needs.
#[derive(Debug)]
pub struct Preprocessor {
    spec: InputSpec,
    rgb: Vec<u8>,
    small: Vec<u8>,
    resizer: Resizer,
    aligner: Aligner,
    pose: Option<Pose>,
    roi: Option<Roi>,
}

impl Preprocessor {
    pub fn new(spec: InputSpec) -> Self {
        Preprocessor {
            spec,
            rgb: Vec::new(),
            small: vec![0; spec.width * spec.height * 3],
            resizer: Resizer::default(),
            aligner: Aligner::default(),
            pose: None,
            roi: None,
        }
    }

    /// Resize only this region of each frame (None: the whole frame).
    pub fn set_roi(&mut self, roi: Option<Roi>) {
        self.roi = roi;
    }

    /// The region of interest, if one is set.
    pub fn roi(&self) -> Option<Roi> {
        self.roi
    }

    pub fn spec(&self) -> InputSpec {
        self.spec
    }

    /// Step 1: pixel-format conversion into the full-size RGB buffer.
    pub fn convert(&mut self, frame: &Frame<'_>) -> Result<(), CaptureError> {
        let n = frame.width as usize * frame.height as usize * 3;
        if self.rgb.len() != n {
            self.rgb = vec![0; n];
        }
        to_rgb(frame, &mut self.rgb)
    }

    /// Step 2: resize the converted frame (of `width`x`height`), or its region of interest, and
    /// write NCHW floats into `input`, which must hold 3 * model width * model height values.
    /// Fails only when the region of interest does not fit the frame.
    pub fn fill_tensor(
        &mut self,
        width: u32,
        height: u32,
        input: &mut [f32],
    ) -> Result<(), CaptureError> {
        let Preprocessor { rgb, .. } = self;
        let rgb = std::mem::take(rgb);
        let done = self.fill_tensor_from(&rgb, width, height, input);
        self.rgb = rgb;
        done
    }

    /// Step 2 on an RGB image converted elsewhere (the capture thread's frame buffers).
    pub fn fill_tensor_from(
        &mut self,
        rgb: &[u8],
        width: u32,
        height: u32,
        input: &mut [f32],
    ) -> Result<(), CaptureError> {
        let s = self.spec;
        let region = self.roi.unwrap_or(Roi {
            x: 0,
            y: 0,
            width,
            height,
        });
        region.check(width, height)?;
        let plane = s.width * s.height;
        if input.len() != 3 * plane || self.small.len() != 3 * plane {
            return Err(CaptureError::InputSize {
                expected: 3 * plane,
                got: input.len(),
            });
        }
        let stride = width as usize;
        match s.align {
            Some(a) => {
                self.pose = self.aligner.pose(rgb, stride, region);
                let small = &mut self.small;
                self.aligner
                    .warp(rgb, stride, region, a, self.pose, small, s.width, s.height);
            }
            None => {
                let small = &mut self.small;
                self.resizer
                    .resize_region(rgb, stride, region, small, s.width, s.height)
            }
        }
        let (r, rest) = input.split_at_mut(plane);
        let (g, b) = rest.split_at_mut(plane);
        for (i, px) in self.small.chunks_exact(3).enumerate() {
            r[i] = px[0] as f32 * s.scale + s.offset;
            g[i] = px[1] as f32 * s.scale + s.offset;
            b[i] = px[2] as f32 * s.scale + s.offset;
        }
        Ok(())
    }

    /// Where the part was found in the last frame, for a model trained on aligned parts (None:
    /// no part found, or no alignment).
    pub fn pose(&self) -> Option<Pose> {
        self.pose
    }

    /// Where the point (`x`, `y`) of the last frame's region (continuous pixel coordinates, the
    /// region `region_w` x `region_h`) lies in the model's input, in the same coordinates; None
    /// where the model does not see it (outside an aligned model's box). For anomaly maps
    /// (`partguard eval`'s pixel AUROC).
    pub fn input_point(
        &self,
        x: f64,
        y: f64,
        region_w: usize,
        region_h: usize,
    ) -> Option<(f64, f64)> {
        match self.spec.align {
            Some(_) => self.aligner.output_point(x, y),
            None => Some((
                x * self.spec.width as f64 / region_w as f64,
                y * self.spec.height as f64 / region_h as f64,
            )),
        }
    }

    /// Both steps.
    pub fn run(&mut self, frame: &Frame<'_>, input: &mut [f32]) -> Result<(), CaptureError> {
        self.convert(frame)?;
        self.fill_tensor(frame.width, frame.height, input)
    }

    /// The model-sized RGB image of the last frame (for archives and overlays).
    pub fn resized_rgb(&self) -> &[u8] {
        &self.small
    }
}
