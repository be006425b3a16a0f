//! Threshold calibration from good parts: the conformal rule for a target false-reject rate, a
//! calibration file tied to the model's content hash, and a histogram plot.
//!
//! With n good scores s_(1) <= ... <= s_(n) and a target false-reject rate alpha, the threshold is
//! s_(k) with k = ceil((n + 1)(1 - alpha)). For a new good part exchangeable with the calibration
//! parts, P(score > threshold) <= 1 - k/(n + 1) <= alpha; that is also the expected false-reject rate,
//! and the rate's own distribution is Beta(n + 1 - k, k), which gives an upper bound.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Calibration faults: each names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum CalibrationError {
    #[error("no good-part scores to calibrate from; run the source over good parts")]
    NoScores,
    #[error("alpha = {0} is not a rate; give 0 < alpha < 1, e.g. 0.001 for 0.1% false rejects")]
    BadAlpha(f64),
    #[error("a good-part score is not finite ({0}); the model produced NaN/inf, fix the model before calibrating")]
    NonFiniteScore(f32),
    #[error("calibration file {path} does not exist; run `partguard calibrate --config FILE` first, or set decision.threshold")]
    Missing { path: PathBuf },
    #[error("cannot read calibration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "calibration file {path} is not valid: {reason}; recalibrate with `partguard calibrate`"
    )]
    Parse { path: PathBuf, reason: String },
    /// `path` is the file that failed: the calibration, its temporary file or its `.prev` copy.
    #[error(
        "cannot write calibration file {path}: {source}; the previous calibration is unchanged"
    )]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("calibration file {path} was made for another model (sha256 {calibrated}…), but {model} has sha256 {actual}…; recalibrate with `partguard calibrate` for this model")]
    ModelMismatch {
        path: PathBuf,
        model: PathBuf,
        calibrated: String,
        actual: String,
    },
}

/// The threshold chosen by [`conformal_threshold`], with what it promises.
#[derive(Debug, Clone, PartialEq)]
pub struct ConformalThreshold {
    pub threshold: f32,
    /// The order statistic used (1-based); `k == n` with `guaranteed == false` when n is too small.
    pub k: usize,
    pub n: usize,
    /// Expected false-reject rate of good parts, 1 - k/(n+1) (before any margin).
    pub expected_false_reject_rate: f64,
    /// 95% upper bound of the false-reject rate (Beta(n+1-k, k) quantile).
    pub false_reject_rate_upper95: f64,
    /// False when n + 1 < 1/alpha: no order statistic reaches alpha; the highest score is used.
    pub guaranteed: bool,
}

/// The conformal threshold for target false-reject rate `alpha` over good-part `scores`.
pub fn conformal_threshold(
    scores: &[f32],
    alpha: f64,
) -> Result<ConformalThreshold, CalibrationError> {
    if !(alpha > 0.0 && alpha < 1.0) {
        return Err(CalibrationError::BadAlpha(alpha));
    }
    if scores.is_empty() {
        return Err(CalibrationError::NoScores);
    }
    if let Some(bad) = scores.iter().find(|s| !s.is_finite()) {
        return Err(CalibrationError::NonFiniteScore(*bad));
    }
    let mut sorted = scores.to_vec();
    sorted.sort_by(f32::total_cmp);
    let n = sorted.len();
    let k_ideal = ((n as f64 + 1.0) * (1.0 - alpha) - 1e-9).ceil() as usize;
    let guaranteed = k_ideal <= n;
    let k = k_ideal.clamp(1, n);
    Ok(ConformalThreshold {
        threshold: sorted[k - 1],
        k,
        n,
        expected_false_reject_rate: 1.0 - k as f64 / (n as f64 + 1.0),
        false_reject_rate_upper95: beta_quantile(0.95, (n + 1 - k) as u64, k as u64),
        guaranteed,
    })
}

/// ln C(n, i) via ln-gamma sums, stable for large n.
fn ln_binom(n: u64, i: u64) -> f64 {
    ln_factorial(n) - ln_factorial(i) - ln_factorial(n - i)
}

fn ln_factorial(n: u64) -> f64 {
    // Stirling series is exact to ~1e-10 beyond 20; sum logs below.
    if n < 20 {
        return (2..=n).map(|i| (i as f64).ln()).sum();
    }
    let x = n as f64;
    x * x.ln() - x + 0.5 * (2.0 * std::f64::consts::PI * x).ln() + 1.0 / (12.0 * x)
        - 1.0 / (360.0 * x.powi(3))
}

/// P(X <= x) for X ~ Beta(a, b) with integer a, b >= 1: P(Binomial(a+b-1, x) >= a).
fn beta_cdf(x: f64, a: u64, b: u64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let m = a + b - 1;
    let (lx, l1x) = (x.ln(), (1.0 - x).ln());
    (a..=m)
        .map(|i| (ln_binom(m, i) + i as f64 * lx + (m - i) as f64 * l1x).exp())
        .sum::<f64>()
        .min(1.0)
}

/// The q-quantile of Beta(a, b) by bisection.
fn beta_quantile(q: f64, a: u64, b: u64) -> f64 {
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if beta_cdf(mid, a, b) < q {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

/// Summary statistics of the calibration scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreStats {
    pub min: f32,
    pub p50: f32,
    pub p90: f32,
    pub p99: f32,
    pub max: f32,
    pub mean: f32,
    pub std: f32,
}

impl ScoreStats {
    pub fn of(scores: &[f32]) -> ScoreStats {
        let mut s = scores.to_vec();
        s.sort_by(f32::total_cmp);
        let q = |p: f64| s[((p * (s.len() - 1) as f64).round() as usize).min(s.len() - 1)];
        let n = s.len() as f64;
        let mean = s.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = s.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        ScoreStats {
            min: s[0],
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            max: s[s.len() - 1],
            mean: mean as f32,
            std: var.sqrt() as f32,
        }
    }
}

/// The calibration file (TOML).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// The threshold `run` applies: the conformal score plus `margin`.
    pub threshold: f32,
    pub method: String,
    pub alpha: f64,
    pub margin: f32,
    pub n: usize,
    pub k: usize,
    pub guaranteed: bool,
    pub expected_false_reject_rate: f64,
    pub false_reject_rate_upper95: f64,
    /// UTC, RFC 3339.
    pub created: String,
    /// Where the good parts came from.
    pub source: String,
    pub model_path: PathBuf,
    /// sha256 of the model file this calibration belongs to.
    pub model_sha256: String,
    pub scores: ScoreStats,
    /// The `[camera.controls]` in force (read back) while the good parts were captured; `run`
    /// warns when the camera's differ.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub camera_controls: crate::capture::controls::ControlsInForce,
}

impl Calibration {
    pub fn load(path: &Path) -> Result<Calibration, CalibrationError> {
        let text = std::fs::read_to_string(path).map_err(|source| {
            let path = path.to_owned();
            match source.kind() {
                std::io::ErrorKind::NotFound => CalibrationError::Missing { path },
                _ => CalibrationError::Read { path, source },
            }
        })?;
        Self::parse(&text, path)
    }

    /// A calibration from its file's text (`path` names it in errors). Never panics on any input
    /// (fuzzed: tests/fuzz).
    pub fn parse(text: &str, path: &Path) -> Result<Calibration, CalibrationError> {
        let cal: Calibration = toml::from_str(text).map_err(|e| CalibrationError::Parse {
            path: path.to_owned(),
            reason: e.to_string().trim_end().replace('\n', " "),
        })?;
        if !cal.threshold.is_finite() {
            return Err(CalibrationError::Parse {
                path: path.to_owned(),
                reason: format!("threshold {} is not finite", cal.threshold),
            });
        }
        Ok(cal)
    }

    /// Loads a calibration and checks it belongs to the model with content hash `model_sha256`.
    pub fn load_for_model(
        path: &Path,
        model: &Path,
        model_sha256: &str,
    ) -> Result<Calibration, CalibrationError> {
        let cal = Self::load(path)?;
        if cal.model_sha256 != model_sha256 {
            return Err(CalibrationError::ModelMismatch {
                path: path.to_owned(),
                model: model.to_owned(),
                calibrated: cal.model_sha256.chars().take(12).collect(),
                actual: model_sha256.chars().take(12).collect(),
            });
        }
        Ok(cal)
    }

    /// Writes atomically: a temporary file beside the target, synced, then renamed over it. The
    /// previous calibration is kept as `FILE.prev`. A failed write leaves the old file intact.
    pub fn save(&self, path: &Path) -> Result<(), CalibrationError> {
        let err = |path: &Path| {
            let path = path.to_owned();
            move |source| CalibrationError::Write { path, source }
        };
        let text = toml::to_string(self).map_err(|e| err(path)(std::io::Error::other(e)))?;
        let tmp = sibling(path, "tmp");
        let mut f = std::fs::File::create(&tmp).map_err(err(&tmp))?;
        let written = f
            .write_all(b"# partguard calibration: written by `partguard calibrate`; `run` refuses it for any other model\n")
            .and_then(|_| f.write_all(text.as_bytes()))
            .and_then(|_| f.sync_all());
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(err(&tmp)(e));
        }
        if path.exists() {
            let prev = sibling(path, "prev");
            std::fs::copy(path, &prev).map_err(err(&prev))?;
        }
        std::fs::rename(&tmp, path).map_err(err(path))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

/// `FILE.ext` beside `FILE` (`cal.toml` -> `cal.toml.prev`).
pub fn sibling(path: &Path, ext: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// The threshold maximising F1 over good (negative) and defect (positive) scores, and that F1.
pub fn best_f1_threshold(good: &[f32], defects: &[f32]) -> Option<(f32, f64)> {
    if defects.is_empty() {
        return None;
    }
    let mut candidates: Vec<f32> = good.iter().chain(defects).copied().collect();
    candidates.sort_by(f32::total_cmp);
    candidates.dedup();
    let mut best: Option<(f32, f64)> = None;
    // Reject when score > t: try t just below each candidate (t = previous candidate) and the minimum.
    for &t in std::iter::once(&f32::NEG_INFINITY).chain(candidates.iter()) {
        let tp = defects.iter().filter(|&&s| s > t).count() as f64;
        let fp = good.iter().filter(|&&s| s > t).count() as f64;
        let fneg = defects.len() as f64 - tp;
        let f1 = if tp == 0.0 {
            0.0
        } else {
            2.0 * tp / (2.0 * tp + fp + fneg)
        };
        if best.is_none_or(|(_, b)| f1 > b) {
            best = Some((t, f1));
        }
    }
    best
}

/// A histogram of good (green) and defect (red) scores with the threshold as a blue line, as PNG.
pub fn plot_histogram(
    path: &Path,
    good: &[f32],
    defects: &[f32],
    threshold: f32,
) -> Result<(), CalibrationError> {
    const W: u32 = 800;
    const H: u32 = 400;
    const BINS: usize = 80;
    let all = good
        .iter()
        .chain(defects)
        .chain(std::iter::once(&threshold));
    let lo = all.clone().copied().fold(f32::INFINITY, f32::min);
    let hi = all.copied().fold(f32::NEG_INFINITY, f32::max);
    let span = (hi - lo).max(1e-6);
    let bin = |s: f32| (((s - lo) / span) * (BINS as f32 - 1.0)).round() as usize;
    let mut hg = [0u32; BINS];
    let mut hd = [0u32; BINS];
    for &s in good {
        hg[bin(s)] += 1;
    }
    for &s in defects {
        hd[bin(s)] += 1;
    }
    let peak = hg.iter().chain(&hd).copied().max().unwrap_or(1).max(1);
    let mut img = image::RgbImage::from_pixel(W, H, image::Rgb([255, 255, 255]));
    let bw = W / BINS as u32;
    for b in 0..BINS {
        for (hist, colour, offset) in [(&hg, [40, 160, 60], 0), (&hd, [210, 50, 40], bw / 2)] {
            let h = (hist[b] as u64 * (H as u64 - 20) / peak as u64) as u32;
            for x in b as u32 * bw + offset..(b as u32 * bw + offset + bw / 2).min(W) {
                for y in H - h..H {
                    img.put_pixel(x, y, image::Rgb(colour));
                }
            }
        }
    }
    let tx = ((((threshold - lo) / span) * (BINS as f32 - 1.0) + 0.5) * bw as f32) as u32;
    for x in tx.saturating_sub(1)..(tx + 2).min(W) {
        for y in 0..H {
            img.put_pixel(x, y, image::Rgb([30, 60, 220]));
        }
    }
    img.save(path).map_err(|e| CalibrationError::Write {
        path: path.to_owned(),
        source: std::io::Error::other(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beta_quantile_matches_closed_forms() {
        // Beta(1, b): CDF 1 - (1-x)^b -> q-quantile 1 - (1-q)^(1/b)
        let want = 1.0 - 0.05f64.powf(1.0 / 10.0);
        assert!((beta_quantile(0.95, 1, 10) - want).abs() < 1e-9);
        // Beta(a, 1): CDF x^a
        assert!((beta_quantile(0.5, 3, 1) - 0.5f64.powf(1.0 / 3.0)).abs() < 1e-9);
    }
}
