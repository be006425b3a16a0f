//! `partguard eval`: scores a labelled folder through the line's own stages (the config's `[roi]`,
//! `model.engine` and threads); prints image (and pixel) AUROC.

use std::path::PathBuf;

use crate::capture::Label;
use crate::config::Config;
use crate::eval::evaluate;
use crate::line::Line;
use crate::Error;

/// Arguments of `partguard eval`.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// Folder of images; `good` subfolders are good parts, any other folder a defect.
    #[arg(long)]
    pub data: PathBuf,
    /// Model to evaluate (default: the config's model). The config's engine, threads and `[roi]`
    /// still apply; its threshold does not (it belongs to the config's model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Write per-image scores here.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Skip the pixel AUROC (faster).
    #[arg(long)]
    pub no_pixel: bool,
}

/// Scores every image under `args.data`; with the config's own model, also counts the good parts
/// rejected and the defects passed at the threshold in force.
pub fn eval(cfg: &Config, args: &EvalArgs) -> Result<crate::eval::EvalReport, Error> {
    let line = Line::new(cfg);
    let (mut engine, threshold) = match &args.model {
        Some(m) => (
            line.engine_with(m, cfg.model.engine, cfg.model.threads)?,
            None,
        ),
        None => {
            let engine = line.engine()?;
            let t = line.decision(engine.info())?.threshold;
            (engine, Some(t))
        }
    };
    let mut pre = line.preprocessor(engine.info());
    let report = evaluate(
        &args.data,
        &mut pre,
        &mut *engine,
        args.csv.as_deref(),
        !args.no_pixel,
    )?;
    let good = report
        .images
        .iter()
        .filter(|s| s.label == Label::Good)
        .count();
    println!(
        "eval {}: {} images ({} good, {} defective), model {} on {}{}",
        args.data.display(),
        report.images.len(),
        good,
        report.images.len() - good,
        engine.info().path.display(),
        cfg.model.engine.name(),
        cfg.roi
            .map(|r| format!(", region of interest {r}"))
            .unwrap_or_default()
    );
    match report.image_auroc {
        Some(a) => println!("image AUROC: {a:.4}"),
        None => println!("image AUROC: n/a (needs good and defective images)"),
    }
    match report.pixel_auroc {
        Some(a) => println!("pixel AUROC: {a:.4} ({} masks)", report.masks_used),
        None if !args.no_pixel => {
            println!("pixel AUROC: n/a (no MVTec-style ground_truth masks found)")
        }
        None => {}
    }
    if let Some(t) = threshold {
        let (mut fr, mut miss) = (0, 0);
        for s in &report.images {
            let rejected = s.score > t;
            match s.label {
                Label::Good if rejected => fr += 1,
                Label::Defect if !rejected => miss += 1,
                _ => {}
            }
        }
        println!("at threshold {t}: {fr} good parts rejected, {miss} defective parts passed");
    }
    if let Some(csv) = &args.csv {
        println!("scores written to {}", csv.display());
    }
    Ok(report)
}
