//! Part alignment: the part found in the frame, turned to its axis and cropped to the box the model
//! was trained on, exactly as `models/align.py` does in training (a "fixture" or "position
//! adjustment" step in machine-vision terms). The model's metadata `partguard.alignment` carries the
//! box; the pose is found anew in every frame.
//!
//! 1. The part: pixels whose colour differs from the median colour of the frame's outermost pixels
//!    by more than 0.3 in some channel, with its holes filled (background the frame's edge cannot
//!    reach through background, 4-connected). No part when under 5% of the pixels qualify, or when
//!    it fills the frame, or has fewer than 16 pixels.
//! 2. Its pose: centroid; principal axis from the second moments; the axis points to the end with
//!    the shorter tail of projections (third moment <= 0: a screw's head goes right).
//! 3. The box (the model's, in camera pixels) around the centroid, turned by the axis when the
//!    alignment rotates, is sampled bilinearly into the model's input as Pillow's
//!    `Image.transform(AFFINE, BILINEAR)` does (values truncated, no antialiasing); outside the
//!    frame, the border's median colour. Without a part: the box centred on the frame, unturned.
//!
//! Everything runs on buffers kept while the frame size stays: no allocation per frame. Hand-written,
//! like the resize, for exactness with training: an image crate's affine warp (imageproc's) rounds
//! and fills differently, and the model would see other pixels than it was trained on.

use super::Roi;

/// The box a model was trained on (`models/align.py` `Alignment`; metadata `partguard.alignment`,
/// JSON, e.g. `{"rotate": true, "box_h": 69, "box_w": 246}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alignment {
    /// Turn each part to its principal axis.
    pub rotate: bool,
    /// The box's height in camera pixels (across the axis when rotating).
    pub box_h: u32,
    /// The box's width in camera pixels (along the axis when rotating).
    pub box_w: u32,
}

impl Alignment {
    /// The alignment in a model's metadata value; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Alignment, String> {
        let a: Alignment = serde_json::from_str(text).map_err(|e| {
            format!("{e}; expected e.g. {{\"rotate\": true, \"box_h\": 69, \"box_w\": 246}}")
        })?;
        if a.box_h == 0 || a.box_w == 0 || a.box_h > 1 << 15 || a.box_w > 1 << 15 {
            return Err(format!(
                "box {}x{} (HxW) must be 1 to 32768 pixels a side",
                a.box_h, a.box_w
            ));
        }
        Ok(a)
    }
}

/// Where the part lies in a frame (pixel coordinates, x right, y down).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pose {
    pub cx: f64,
    pub cy: f64,
    /// The principal axis in radians, from the light end to the heavy end.
    pub angle: f64,
}

/// Channel difference from the background above which a pixel is the part (verdict.CHIP_LEVEL).
const PART_LEVEL: f32 = 0.3;
/// Below this share of part pixels the part is taken to fill the frame.
const PART_MIN_SHARE: f64 = 0.05;

/// Finds the part in frames and resamples its box; owns its buffers.
#[derive(Debug, Default)]
pub struct Aligner {
    /// Per pixel of the region: 1 part, 0 background, 2 background reached from the edge.
    mask: Vec<u8>,
    queue: Vec<u32>,
    fill: [u8; 3],
    /// The last warp: output -> frame coefficients and the output's size.
    last: ([f64; 6], usize, usize),
}

impl Aligner {
    /// The part's pose in the `roi` of `rgb` (RGB24 rows of `stride_px` pixels; the region must lie
    /// inside), coordinates relative to the region; None where no part is found. Also keeps the
    /// border's median colour for [`Aligner::warp`].
    pub fn pose(&mut self, rgb: &[u8], stride_px: usize, roi: Roi) -> Option<Pose> {
        let (w, h) = (roi.width as usize, roi.height as usize);
        let px = |x: usize, y: usize| {
            let i = ((roi.y as usize + y) * stride_px + roi.x as usize + x) * 3;
            [rgb[i], rgb[i + 1], rgb[i + 2]]
        };
        let median = border_median(w, h, px);
        // Python: round(median * 255), ties to even
        self.fill = median.map(|m| (m * 255.0).round_ties_even().clamp(0.0, 255.0) as u8);
        // per channel and value: does it differ from the background by more than PART_LEVEL?
        let mut differs = [[false; 256]; 3];
        for (c, lut) in differs.iter_mut().enumerate() {
            for (v, d) in lut.iter_mut().enumerate() {
                *d = (v as f32 / 255.0 - median[c]).abs() > PART_LEVEL;
            }
        }
        self.mask.clear();
        self.mask.resize(w * h, 0);
        let mut found = 0usize;
        for y in 0..h {
            for x in 0..w {
                let p = px(x, y);
                let part = (0..3).any(|c| differs[c][p[c] as usize]);
                self.mask[y * w + x] = part as u8;
                found += part as usize;
            }
        }
        if (found as f64) / ((w * h) as f64) < PART_MIN_SHARE {
            return None; // the part fills the frame
        }
        self.fill_holes(w, h);
        // moments of the part (mask 0 = a hole, 1 = part; 2 = background)
        let (mut n, mut sx, mut sy) = (0usize, 0f64, 0f64);
        for (i, &m) in self.mask.iter().enumerate() {
            if m != 2 {
                n += 1;
                sx += (i % w) as f64;
                sy += (i / w) as f64;
            }
        }
        if n == w * h || n < 16 {
            return None;
        }
        let (cx, cy) = (sx / n as f64, sy / n as f64);
        let mut m = [0f64; 7]; // xx, xy, yy, xxx, xxy, xyy, yyy
        for (i, _) in self.mask.iter().enumerate().filter(|(_, &v)| v != 2) {
            let (dx, dy) = ((i % w) as f64 - cx, (i / w) as f64 - cy);
            m[0] += dx * dx;
            m[1] += dx * dy;
            m[2] += dy * dy;
            m[3] += dx * dx * dx;
            m[4] += dx * dx * dy;
            m[5] += dx * dy * dy;
            m[6] += dy * dy * dy;
        }
        // the major axis of the covariance [[xx, xy], [xy, yy]]
        let theta = 0.5 * (2.0 * m[1]).atan2(m[0] - m[2]);
        let (mut ux, mut uy) = (theta.cos(), theta.sin());
        let third = ux * ux * ux * m[3]
            + 3.0 * ux * ux * uy * m[4]
            + 3.0 * ux * uy * uy * m[5]
            + uy * uy * uy * m[6];
        if third > 0.0 {
            (ux, uy) = (-ux, -uy); // the light end has the long tail of projections: to the left
        }
        Some(Pose {
            cx,
            cy,
            angle: uy.atan2(ux),
        })
    }

    /// Marks with 2 the background reachable from the frame's edge through background (4-connected):
    /// what is left (0 or 1) is the part with its holes filled.
    fn fill_holes(&mut self, w: usize, h: usize) {
        self.queue.clear();
        let mask = &mut self.mask;
        let queue = &mut self.queue;
        let mut seed = |i: usize, mask: &mut Vec<u8>| {
            if mask[i] == 0 {
                mask[i] = 2;
                queue.push(i as u32);
            }
        };
        for x in 0..w {
            seed(x, mask);
            seed((h - 1) * w + x, mask);
        }
        for y in 0..h {
            seed(y * w, mask);
            seed(y * w + w - 1, mask);
        }
        let mut head = 0;
        while head < queue.len() {
            let i = queue[head] as usize;
            head += 1;
            let (x, y) = (i % w, i / w);
            let mut visit = |j: usize| {
                if mask[j] == 0 {
                    mask[j] = 2;
                    queue.push(j as u32);
                }
            };
            if x > 0 {
                visit(i - 1);
            }
            if x + 1 < w {
                visit(i + 1);
            }
            if y > 0 {
                visit(i - w);
            }
            if y + 1 < h {
                visit(i + w);
            }
        }
    }

    /// Samples the box of `a` around `pose` (None: centred on the region, unturned) from the `roi`
    /// of `rgb` into `dst` (`out_w` x `out_h` RGB24). Call [`Aligner::pose`] on the same frame first
    /// (it finds the colour used outside the frame).
    #[allow(clippy::too_many_arguments)]
    pub fn warp(
        &mut self,
        rgb: &[u8],
        stride_px: usize,
        roi: Roi,
        a: Alignment,
        pose: Option<Pose>,
        dst: &mut [u8],
        out_w: usize,
        out_h: usize,
    ) {
        let (w, h) = (roi.width as usize, roi.height as usize);
        let (cx, cy, angle) = match pose {
            Some(p) => (p.cx, p.cy, if a.rotate { p.angle } else { 0.0 }),
            None => (w as f64 / 2.0, h as f64 / 2.0, 0.0),
        };
        let (c, s) = (angle.cos(), angle.sin());
        let (bw, bh) = (a.box_w as f64, a.box_h as f64);
        let (sx, sy) = (bw / out_w as f64, bh / out_h as f64);
        // output (x, y) -> frame (a0 x + a1 y + a2, a3 x + a4 y + a5), as align.apply hands Pillow
        let k = [
            c * sx,
            -s * sy,
            cx - c * bw / 2.0 + s * bh / 2.0,
            s * sx,
            c * sy,
            cy - s * bw / 2.0 - c * bh / 2.0,
        ];
        self.last = (k, out_w, out_h);
        let at = |x: usize, y: usize| ((roi.y as usize + y) * stride_px + roi.x as usize + x) * 3;
        for yo in 0..out_h {
            let yc = yo as f64 + 0.5;
            for xo in 0..out_w {
                let xc = xo as f64 + 0.5;
                let out = &mut dst[(yo * out_w + xo) * 3..(yo * out_w + xo) * 3 + 3];
                let xin = k[0] * xc + k[1] * yc + k[2];
                let yin = k[3] * xc + k[4] * yc + k[5];
                // Pillow's bilinear_filter32RGB (Geometry.c)
                if !(0.0..w as f64).contains(&xin) || !(0.0..h as f64).contains(&yin) {
                    out.copy_from_slice(&self.fill);
                    continue;
                }
                let (xf, yf) = (xin - 0.5, yin - 0.5);
                let (x, y) = (xf.floor() as i64, yf.floor() as i64);
                let (dx, dy) = (xf - x as f64, yf - y as f64);
                let clip_x = |v: i64| v.clamp(0, w as i64 - 1) as usize;
                let (x0, x1) = (clip_x(x), clip_x(x + 1));
                let row0 = y.clamp(0, h as i64 - 1) as usize;
                let row1 = (y + 1 >= 0 && y + 1 < h as i64).then_some((y + 1) as usize);
                for ch in 0..3 {
                    let lerp = |r: usize| {
                        let (a, b) = (rgb[at(x0, r) + ch] as f64, rgb[at(x1, r) + ch] as f64);
                        a + (b - a) * dx
                    };
                    let v1 = lerp(row0);
                    let v2 = row1.map_or(v1, lerp);
                    out[ch] = (v1 + (v2 - v1) * dy) as u8;
                }
            }
        }
    }

    /// Where the point (`x`, `y`) of the region (continuous pixel coordinates: pixel i spans i to
    /// i + 1) lies in the last warp's output, in the same coordinates; None outside the box.
    pub fn output_point(&self, x: f64, y: f64) -> Option<(f64, f64)> {
        let ([a, b, c, d, e, f], w, h) = self.last;
        let det = a * e - b * d;
        if det == 0.0 {
            return None;
        }
        let (u, v) = (x - c, y - f);
        let (ox, oy) = ((e * u - b * v) / det, (a * v - d * u) / det);
        ((0.0..w as f64).contains(&ox) && (0.0..h as f64).contains(&oy)).then_some((ox, oy))
    }
}

/// The median colour (0-1, per channel) of the region's outermost pixels, as numpy's median of
/// the first row, last row, first column and last column (corners counted twice): the middle
/// value, or the mean of the two middle values.
fn border_median(w: usize, h: usize, px: impl Fn(usize, usize) -> [u8; 3]) -> [f32; 3] {
    let mut hist = [[0u32; 256]; 3];
    let mut add = |p: [u8; 3]| {
        for c in 0..3 {
            hist[c][p[c] as usize] += 1;
        }
    };
    for x in 0..w {
        add(px(x, 0));
        add(px(x, h - 1));
    }
    for y in 0..h {
        add(px(0, y));
        add(px(w - 1, y));
    }
    let n = 2 * (w + h);
    hist.map(|counts| {
        // the values at sorted positions (n - 1) / 2 and n / 2
        let nth = |k: usize| {
            let mut seen = 0usize;
            for (v, &cnt) in counts.iter().enumerate() {
                seen += cnt as usize;
                if seen > k {
                    return v as f32 / 255.0;
                }
            }
            1.0
        };
        (nth((n - 1) / 2) + nth(n / 2)) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(w: usize, h: usize, bg: u8) -> Vec<u8> {
        vec![bg; w * h * 3]
    }

    fn whole(w: usize, h: usize) -> Roi {
        Roi {
            x: 0,
            y: 0,
            width: w as u32,
            height: h as u32,
        }
    }

    #[test]
    fn a_bar_with_a_heavy_end_points_to_it() {
        // a horizontal bar 40 x 6 with a head 8 x 14 at its left end, dark on light
        let (w, h) = (80, 40);
        let mut img = frame(w, h, 200);
        for y in 0..h {
            for x in 0..w {
                let bar = (17..23).contains(&y) && (20..60).contains(&x);
                let head = (13..27).contains(&y) && (20..28).contains(&x);
                if bar || head {
                    img[(y * w + x) * 3..(y * w + x) * 3 + 3].fill(30);
                }
            }
        }
        let mut a = Aligner::default();
        let p = a.pose(&img, w, whole(w, h)).expect("a part");
        assert!((p.cy - 19.5).abs() < 1e-9, "{p:?}");
        assert!(p.cx < 40.0, "the centroid leans to the head: {p:?}");
        // pointing left (angle pi), towards the head
        assert!((p.angle.abs() - std::f64::consts::PI).abs() < 1e-6, "{p:?}");
        assert_eq!(a.fill, [200; 3]);
        // turned, the head comes out on the right of the crop
        let al = Alignment {
            rotate: true,
            box_h: 16,
            box_w: 48,
        };
        let mut out = vec![0u8; 48 * 16 * 3];
        a.warp(&img, w, whole(w, h), al, Some(p), &mut out, 48, 16);
        let dark = |x: usize, y: usize| out[(y * 48 + x) * 3] < 100;
        assert!(
            dark(38, 2) && !dark(4, 2) && dark(4, 8),
            "head right, thin end left"
        );
        // and back: the output pixel (38, 2) came from the frame point that maps to it
        let [k0, k1, k2, k3, k4, k5] = a.last.0;
        let (fx, fy) = (k0 * 38.5 + k1 * 2.5 + k2, k3 * 38.5 + k4 * 2.5 + k5);
        let (ox, oy) = a.output_point(fx, fy).unwrap();
        assert!((ox - 38.5).abs() < 1e-9 && (oy - 2.5).abs() < 1e-9);
        assert_eq!(
            a.output_point(0.5, 0.5),
            None,
            "the frame's corner is outside the box"
        );
    }

    #[test]
    fn a_hole_is_part_of_the_part_and_a_filled_frame_has_no_pose() {
        let (w, h) = (40, 40);
        let mut img = frame(w, h, 200);
        for y in 10..30 {
            for x in 10..30 {
                let ring = !(15..25).contains(&y) || !(15..25).contains(&x);
                if ring {
                    img[(y * w + x) * 3..(y * w + x) * 3 + 3].fill(20);
                }
            }
        }
        let mut a = Aligner::default();
        a.pose(&img, w, whole(w, h)).expect("a part");
        let inside = a.mask.iter().filter(|&&m| m != 2).count();
        assert_eq!(inside, 400, "the ring with its hole filled");
        assert_eq!(a.pose(&frame(w, h, 90), w, whole(w, h)), None);
    }

    #[test]
    fn metadata_is_checked() {
        let a = Alignment::parse(r#"{"rotate": true, "box_h": 69, "box_w": 246}"#).unwrap();
        assert_eq!((a.rotate, a.box_h, a.box_w), (true, 69, 246));
        assert!(Alignment::parse(r#"{"rotate": true, "box_h": 0, "box_w": 246}"#).is_err());
        assert!(Alignment::parse(r#"{"rotate": 1}"#).is_err());
        assert!(Alignment::parse("").is_err());
    }
}
