//! Offline evaluation of a labelled folder: per-image scores (CSV), image AUROC, and pixel AUROC when
//! masks are present in the MVTec AD layout (`ROOT/test/<class>/<n>.png` with
//! `ROOT/ground_truth/<class>/<n>_mask.png`; good images have an all-zero mask).

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::capture::{FrameSource, Label, ReplaySource};
use crate::infer::Engine;
use crate::preprocess::Preprocessor;

/// One evaluated image.
#[derive(Debug, Clone)]
pub struct Scored {
    pub path: PathBuf,
    pub label: Label,
    pub score: f32,
}

#[derive(Debug)]
pub struct EvalReport {
    pub images: Vec<Scored>,
    pub image_auroc: Option<f64>,
    pub pixel_auroc: Option<f64>,
    pub masks_used: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Capture(#[from] crate::capture::CaptureError),
    #[error(transparent)]
    Model(#[from] crate::infer::ModelError),
    #[error("cannot read mask {path}: {source}")]
    Mask {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },
    #[error("mask {path} is {width}x{height}, its image is {image_width}x{image_height}; the ground-truth mask must match its image")]
    MaskSize {
        path: PathBuf,
        width: u32,
        height: u32,
        image_width: usize,
        image_height: usize,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// AUROC by ranks (ties share their average rank). `None` without both classes.
pub fn auroc(scores: &[f32], positive: &[bool]) -> Option<f64> {
    let n_pos = positive.iter().filter(|&&p| p).count();
    let n_neg = positive.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum_pos = 0.0f64;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        rank_sum_pos += idx[i..=j].iter().filter(|&&k| positive[k]).count() as f64 * avg;
        i = j + 1;
    }
    let (p, n) = (n_pos as f64, n_neg as f64);
    Some((rank_sum_pos - p * (p + 1.0) / 2.0) / (p * n))
}

/// Pixel AUROC over many pixels via fine histograms of the two classes (2^16 bins over [0, 1];
/// anomaly maps are probabilities). Exact up to the bin width.
#[derive(Debug)]
pub struct PixelAuroc {
    pos: Vec<u64>,
    neg: Vec<u64>,
}

const BINS: usize = 1 << 16;

impl Default for PixelAuroc {
    fn default() -> Self {
        PixelAuroc {
            pos: vec![0; BINS],
            neg: vec![0; BINS],
        }
    }
}

impl PixelAuroc {
    pub fn add(&mut self, value: f32, positive: bool) {
        let b = ((value.clamp(0.0, 1.0) as f64) * (BINS - 1) as f64).round() as usize;
        if positive {
            self.pos[b] += 1;
        } else {
            self.neg[b] += 1;
        }
    }

    pub fn value(&self) -> Option<f64> {
        let p: u64 = self.pos.iter().sum();
        let n: u64 = self.neg.iter().sum();
        if p == 0 || n == 0 {
            return None;
        }
        // P(score_pos > score_neg) + 0.5 P(equal), bin by bin.
        let mut neg_below = 0u64;
        let mut acc = 0.0f64;
        for b in 0..BINS {
            acc += self.pos[b] as f64 * (neg_below as f64 + 0.5 * self.neg[b] as f64);
            neg_below += self.neg[b];
        }
        Some(acc / (p as f64 * n as f64))
    }
}

/// The test folder and, in the MVTec layout, the ground-truth folder beside it.
fn layout(root: &Path) -> (PathBuf, Option<PathBuf>) {
    if root.join("test").is_dir() {
        let gt = root.join("ground_truth");
        (root.join("test"), gt.is_dir().then_some(gt))
    } else {
        let gt = root
            .parent()
            .map(|p| p.join("ground_truth"))
            .filter(|p| p.is_dir());
        (root.to_owned(), gt)
    }
}

fn load_mask(path: &Path) -> Result<(Vec<u8>, u32, u32), EvalError> {
    let img = image::open(path).map_err(|source| EvalError::Mask {
        path: path.to_owned(),
        source,
    })?;
    let g = img.into_luma8();
    let (w, h) = g.dimensions();
    Ok((g.into_raw(), w, h))
}

/// Bilinear upsampling of the anomaly map to the mask size (half-pixel centres).
fn sample_bilinear(map: &[f32], mw: usize, mh: usize, x: f64, y: f64) -> f32 {
    let fx = (x - 0.5).clamp(0.0, (mw - 1) as f64);
    let fy = (y - 0.5).clamp(0.0, (mh - 1) as f64);
    let (x0, y0) = (fx.floor() as usize, fy.floor() as usize);
    let (x1, y1) = ((x0 + 1).min(mw - 1), (y0 + 1).min(mh - 1));
    let (ax, ay) = ((fx - x0 as f64) as f32, (fy - y0 as f64) as f32);
    let top = map[y0 * mw + x0] * (1.0 - ax) + map[y0 * mw + x1] * ax;
    let bot = map[y1 * mw + x0] * (1.0 - ax) + map[y1 * mw + x1] * ax;
    top * (1.0 - ay) + bot * ay
}

/// Runs every image under `root` through `pre` (the line's preprocessor: its region of interest
/// applies) and the model. With `csv`, writes `path,label,score`. With a region of interest, the
/// pixel AUROC counts the mask pixels inside it (the only ones the model sees).
pub fn evaluate(
    root: &Path,
    pre: &mut Preprocessor,
    engine: &mut dyn Engine,
    csv: Option<&Path>,
    pixel: bool,
) -> Result<EvalReport, EvalError> {
    let (test_dir, gt_dir) = layout(root);
    let mut source = ReplaySource::open(&test_dir, false, 0.0, 0)?;
    let mut images = Vec::new();
    let mut pix = PixelAuroc::default();
    let mut masks_used = 0;
    while let Some(frame) = source.next_frame()? {
        let Some(path) = frame.origin.map(Path::to_path_buf) else {
            continue;
        };
        let label = frame.label().unwrap_or(Label::Defect);
        pre.run(&frame, engine.input_mut())?;
        let inf = engine.run()?;
        images.push(Scored {
            path: path.clone(),
            label,
            score: inf.score,
        });
        let Some(gt) = gt_dir.as_ref().filter(|_| pixel) else {
            continue;
        };
        let (mw, mh) = (inf.width, inf.height);
        let (w, h) = (frame.width as usize, frame.height as usize);
        let class = path
            .parent()
            .and_then(|p| p.file_name())
            .unwrap_or_default();
        let stem = path.file_stem().unwrap_or_default().to_string_lossy();
        let mask_path = gt.join(class).join(format!("{stem}_mask.png"));
        let mask = if label == Label::Good {
            None
        } else if mask_path.is_file() {
            let (m, mwid, mhei) = load_mask(&mask_path)?;
            if (mwid as usize, mhei as usize) != (w, h) {
                return Err(EvalError::MaskSize {
                    path: mask_path,
                    width: mwid,
                    height: mhei,
                    image_width: w,
                    image_height: h,
                });
            }
            Some(m)
        } else {
            log::warn!(
                "eval: no mask {} for a defect image; pixel AUROC skips it",
                mask_path.display()
            );
            continue;
        };
        masks_used += 1;
        // The map covers the region of interest (the whole frame without one; `pre.run` has
        // checked that it fits).
        let (rx, ry, rw, rh) = match pre.roi() {
            Some(r) => (
                r.x as usize,
                r.y as usize,
                r.width as usize,
                r.height as usize,
            ),
            None => (0, 0, w, h),
        };
        // An aligned model saw only its box around the part: a pixel outside it scores 0.
        let spec = pre.spec();
        let (sx, sy) = (
            mw as f64 / spec.width as f64,
            mh as f64 / spec.height as f64,
        );
        for y in ry..ry + rh {
            for x in rx..rx + rw {
                let at = pre.input_point((x - rx) as f64 + 0.5, (y - ry) as f64 + 0.5, rw, rh);
                let v = at.map_or(0.0, |(ix, iy)| {
                    sample_bilinear(inf.map, mw, mh, ix * sx, iy * sy)
                });
                let positive = mask.as_ref().is_some_and(|m| m[y * w + x] > 127);
                pix.add(v, positive);
            }
        }
    }
    if let Some(csv) = csv {
        write_csv(csv, &images)?;
    }
    let scores: Vec<f32> = images.iter().map(|s| s.score).collect();
    let positive: Vec<bool> = images.iter().map(|s| s.label == Label::Defect).collect();
    Ok(EvalReport {
        image_auroc: auroc(&scores, &positive),
        pixel_auroc: if masks_used > 0 { pix.value() } else { None },
        masks_used,
        images,
    })
}

fn write_csv(path: &Path, images: &[Scored]) -> Result<(), EvalError> {
    let err = |source: std::io::Error| EvalError::Write {
        path: path.to_owned(),
        source,
    };
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).map_err(err)?);
    writeln!(f, "path,label,score").map_err(err)?;
    for s in images {
        let label = match s.label {
            Label::Good => "good",
            Label::Defect => "defect",
        };
        writeln!(f, "{},{label},{:.6}", s.path.display(), s.score).map_err(err)?;
    }
    f.flush().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auroc_known_values() {
        assert_eq!(
            auroc(&[0.1, 0.2, 0.8, 0.9], &[false, false, true, true]),
            Some(1.0)
        );
        assert_eq!(
            auroc(&[0.9, 0.8, 0.2, 0.1], &[false, false, true, true]),
            Some(0.0)
        );
        assert_eq!(auroc(&[0.5, 0.5], &[false, true]), Some(0.5));
        // one inversion out of 4 pairs
        assert_eq!(
            auroc(&[0.1, 0.6, 0.5, 0.9], &[false, false, true, true]),
            Some(0.75)
        );
        assert_eq!(auroc(&[0.1, 0.2], &[false, false]), None);
    }

    #[test]
    fn pixel_auroc_matches_rank_auroc() {
        let mut p = PixelAuroc::default();
        let vals = [0.1f32, 0.6, 0.5, 0.9];
        let pos = [false, false, true, true];
        for (v, q) in vals.iter().zip(pos) {
            p.add(*v, q);
        }
        assert_eq!(p.value(), Some(0.75));
    }
}
