//! `partguard calibrate`: learns the threshold from good parts through the line's own stages and
//! writes a calibration file tied to the model's hash.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use crate::calibrate::{
    best_f1_threshold, conformal_threshold, plot_histogram, Calibration, ScoreStats,
};
use crate::capture::Label;
use crate::config::{Config, ConfigError};
use crate::line::{Line, Pacing};
use crate::Error;

/// Arguments of `partguard calibrate`.
#[derive(Debug, Clone, clap::Args)]
pub struct CalibrateArgs {
    /// Stop after this many good parts (default: until the source ends or Ctrl-C).
    #[arg(long)]
    pub frames: Option<u64>,
    /// Target false-reject rate of good parts (0.001 = 0.1%).
    #[arg(long, default_value_t = 0.001)]
    pub alpha: f64,
    /// Added to the threshold, in score units.
    #[arg(long, default_value_t = 0.0)]
    pub margin: f32,
    /// Calibration file to write (default: the config's decision.calibration).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Folder of labelled defect images: report their detection rate (never applied). Scored
    /// through the line's own stages (`[roi]` included).
    #[arg(long)]
    pub defects: Option<PathBuf>,
    /// Write a histogram of the scores with the threshold as PNG.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

/// `partguard calibrate`: scores good parts from the configured source and writes the threshold for
/// the target false-reject rate, tied to the model's hash.
pub fn calibrate(
    cfg: &Config,
    config_path: Option<&Path>,
    opts: &CalibrateArgs,
    stop: &AtomicBool,
) -> Result<Calibration, Error> {
    let Some(out) = opts
        .out
        .clone()
        .or_else(|| cfg.decision.calibration.clone())
    else {
        return Err(ConfigError::Field {
            path: config_path.map(Path::to_owned).unwrap_or_default(),
            field: "decision.calibration",
            problem: "is not set; set it, or give --out FILE".into(),
        }
        .into());
    };
    let line = Line::new(cfg);
    let engine = line.engine()?;
    let info = engine.info().clone();
    let source = line.source(Pacing::Configured)?;
    let source_desc = source.describe();
    let camera_controls = source.controls_in_force();
    println!("calibrating from {source_desc}");
    let mut inspector = line.inspector(source, engine, f32::INFINITY, None, line.clock());
    let mut scores = Vec::new();
    let (mut skipped_defects, mut faults) = (0u64, 0u64);
    let total = opts.frames;
    let progress = crate::commands::report::Progress::new(total, "good parts");
    while !stop.load(std::sync::atomic::Ordering::Relaxed)
        && total.is_none_or(|n| (scores.len() as u64) < n)
    {
        let Some(o) = inspector.inspect_next()? else {
            break;
        };
        if o.label == Some(Label::Defect) {
            skipped_defects += 1;
            continue;
        }
        if !o.score.is_finite() {
            faults += 1;
            continue;
        }
        scores.push(o.score);
        let n = scores.len() as u64;
        if n.is_multiple_of(10) || total == Some(n) {
            progress.show(n);
        }
    }
    progress.finish();
    if skipped_defects > 0 {
        println!("skipped {skipped_defects} frames labelled as defects (replay folder names)");
    }
    if faults > 0 {
        println!("skipped {faults} frames that could not be scored (see the log)");
    }
    let conf = conformal_threshold(&scores, opts.alpha)?;
    if !conf.guaranteed {
        println!(
            "WARNING: {} good parts are too few for alpha = {}: n + 1 < 1/alpha, so the threshold is the highest good score and the false-reject guarantee does not hold; collect at least {} good parts",
            conf.n,
            opts.alpha,
            (1.0 / opts.alpha).ceil() as u64 - 1
        );
    }
    let stats = ScoreStats::of(&scores);
    let cal = Calibration {
        threshold: conf.threshold + opts.margin,
        method: "conformal".into(),
        alpha: opts.alpha,
        margin: opts.margin,
        n: conf.n,
        k: conf.k,
        guaranteed: conf.guaranteed,
        expected_false_reject_rate: conf.expected_false_reject_rate,
        false_reject_rate_upper95: conf.false_reject_rate_upper95,
        created: crate::clock::utc_now(),
        source: source_desc,
        model_path: info.path.clone(),
        model_sha256: info.file_sha256.clone(),
        scores: stats.clone(),
        camera_controls,
    };
    println!(
        "good-part scores: n {} min {:.4} median {:.4} p90 {:.4} p99 {:.4} max {:.4} mean {:.4} std {:.4}",
        conf.n, stats.min, stats.p50, stats.p90, stats.p99, stats.max, stats.mean, stats.std
    );
    let margin = if opts.margin != 0.0 {
        format!(" + margin {}", opts.margin)
    } else {
        String::new()
    };
    println!(
        "threshold {:.4} = good score #{} of {} (conformal, alpha {}){margin}",
        cal.threshold, conf.k, conf.n, opts.alpha
    );
    println!(
        "expected false-reject rate {:.3}% ({}), 95% upper bound {:.3}%",
        100.0 * conf.expected_false_reject_rate,
        if conf.guaranteed {
            format!("<= alpha = {}%", 100.0 * opts.alpha)
        } else {
            format!(
                "alpha = {}% is out of reach with {} parts",
                100.0 * opts.alpha,
                conf.n
            )
        },
        100.0 * conf.false_reject_rate_upper95
    );
    println!("(valid for good parts like these; parts the model was trained on score low and make it optimistic)");
    let mut defect_scores = Vec::new();
    if let Some(dir) = &opts.defects {
        // The calibration's engine is already loaded and planned: score the defects with it.
        // Through the same preprocessor as the good parts: the line's region of interest applies.
        let report =
            crate::eval::evaluate(dir, &mut inspector.pre, &mut *inspector.engine, None, false)?;
        defect_scores = report
            .images
            .iter()
            .filter(|s| s.label == Label::Defect)
            .map(|s| s.score)
            .collect();
        let caught = defect_scores.iter().filter(|&&s| s > cal.threshold).count();
        println!(
            "defect samples {}: {caught} of {} detected at this threshold ({:.1}%)",
            dir.display(),
            defect_scores.len(),
            100.0 * caught as f64 / defect_scores.len().max(1) as f64
        );
        if let Some((t, f1)) = best_f1_threshold(&scores, &defect_scores) {
            println!("  the threshold maximising F1 on these samples would be {t:.4} (F1 {f1:.3}); shown only, not applied");
        }
    }
    cal.save(&out)?;
    println!("calibration written to {}", out.display());
    if let Some(plot) = &opts.plot {
        plot_histogram(plot, &scores, &defect_scores, cal.threshold)?;
        println!(
            "histogram written to {} (green: good, red: defects, blue: threshold)",
            plot.display()
        );
    }
    Ok(cal)
}
