//! Every subcommand builds the line the same way (`partguard::line::Line`): `eval`, `calibrate
//! --defects` and `bench --line` see the `[roi]` that `run` sees (`model.engine` in `eval`:
//! tests/engines.rs, feature onnxruntime).
//!
//! The frames here are the eight samples set in the middle third of a black canvas three times
//! their width, with `[roi]` on the sample: through the region of interest the model sees exactly
//! the sample; without it, a bottle squeezed to a third of its width.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod common;

/// The samples, each in the middle of a black canvas 3x as wide, under `dir/<class>/<name>`;
/// returns the folder and the `[roi]` that selects the sample.
fn padded_samples(dir: &Path, relabel_good_as: Option<&str>) -> (PathBuf, String) {
    let out = dir.join(relabel_good_as.unwrap_or("padded"));
    let mut roi = String::new();
    for class in ["good", "broken_large", "broken_small", "contamination"] {
        if relabel_good_as.is_some() && class != "good" {
            continue;
        }
        let target = out.join(relabel_good_as.unwrap_or(class));
        std::fs::create_dir_all(&target).unwrap();
        let mut names: Vec<_> = std::fs::read_dir(common::samples().join(class))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for p in names {
            let img = image::open(&p).unwrap().into_rgb8();
            let (w, h) = img.dimensions();
            let mut canvas = image::RgbImage::new(3 * w, h);
            image::imageops::replace(&mut canvas, &img, w as i64, 0);
            canvas.save(target.join(p.file_name().unwrap())).unwrap();
            roi = format!("[roi]\nx = {w}\ny = 0\nwidth = {w}\nheight = {h}\n");
        }
    }
    (out, roi)
}

/// A config replaying `folder` unpaced through the f32 model, with `extra` sections.
fn config(dir: &Path, name: &str, folder: &Path, extra: &str, timing: &str) -> PathBuf {
    common::config::TestConfig::replay(folder, "rate_hz = 0")
        .reject("kind = \"simulated\"\npulse_ms = 5")
        .sections(&format!(
            "{extra}\n[timing]\n{timing}\n\n[log]\nstatus_interval_s = 0\n"
        ))
        .write(&dir.join(name))
}

fn partguard(cfg: Option<&Path>, args: &[&str]) -> std::process::Output {
    let mut c = common::partguard_bin(env!("CARGO_BIN_EXE_partguard"));
    c.env("RUST_LOG", "error");
    if let Some(cfg) = cfg {
        c.arg("--config").arg(cfg);
    }
    let out = c.args(args).output().unwrap();
    assert!(
        out.status.success(),
        "partguard {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `class/file -> score` from an `eval --csv` file.
fn csv_scores(path: &Path) -> BTreeMap<String, f32> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let mut f = l.split(',');
            let p = Path::new(f.next().unwrap());
            let key = format!(
                "{}/{}",
                p.parent().unwrap().file_name().unwrap().to_string_lossy(),
                p.file_name().unwrap().to_string_lossy()
            );
            (key, f.nth(1).unwrap().parse().unwrap())
        })
        .collect()
}

#[test]
fn eval_and_run_score_the_region_of_interest() {
    let dir = tempfile::tempdir().unwrap();
    let (padded, roi) = padded_samples(dir.path(), None);
    // `run` prints each part's score whether or not it was judged in time; the short delay only
    // keeps the run from waiting long for its last part to reach the ejector.
    let cfg = config(dir.path(), "roi.toml", &padded, &roi, "delay_ms = 500.0");
    let (plain_csv, roi_csv) = (dir.path().join("plain.csv"), dir.path().join("roi.csv"));
    let s = common::samples();
    partguard(
        None,
        &[
            "eval",
            "--no-pixel",
            "--data",
            s.to_str().unwrap(),
            "--csv",
            plain_csv.to_str().unwrap(),
        ],
    );
    let out = partguard(
        Some(&cfg),
        &[
            "eval",
            "--no-pixel",
            "--data",
            padded.to_str().unwrap(),
            "--csv",
            roi_csv.to_str().unwrap(),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("region of interest"), "{stdout}");
    let (plain, through_roi) = (csv_scores(&plain_csv), csv_scores(&roi_csv));
    assert_eq!(plain.len(), 8);
    assert_eq!(
        plain.keys().collect::<Vec<_>>(),
        through_roi.keys().collect::<Vec<_>>()
    );
    for (k, v) in &plain {
        // The same pixels reach the model: the same score (one engine, one thread).
        assert!(
            (v - through_roi[k]).abs() < 1e-5,
            "{k}: {v} vs {} through [roi]",
            through_roi[k]
        );
    }
    // `run` on the same config decides on the same scores (its decisions print 4 decimals).
    let run = partguard(Some(&cfg), &["run"]);
    let text = String::from_utf8_lossy(&run.stdout);
    let mut seen = 0;
    for p in common::part_lines(&text) {
        assert!(
            (p.score - plain[p.file]).abs() < 1e-4,
            "run {p:?} vs eval {}",
            plain[p.file]
        );
        seen += 1;
    }
    assert_eq!(seen, 8, "{text}");
}

#[test]
fn calibrate_reports_the_defect_samples_through_the_region_of_interest() {
    let dir = tempfile::tempdir().unwrap();
    let (padded, roi) = padded_samples(dir.path(), None);
    // "Defect" samples that are the good samples: through the region of interest the model sees
    // exactly the good parts it calibrates on, so none scores above the highest of them.
    let (relabelled, _) = padded_samples(dir.path(), Some("relabelled"));
    let cfg = config(
        dir.path(),
        "roi.toml",
        &padded.join("good"),
        &roi,
        "delay_ms = 60000.0",
    );
    let cal = dir.path().join("line.cal.toml");
    // alpha 0.25 with 4 good parts: the threshold is the highest good score.
    let out = partguard(
        Some(&cfg),
        &[
            "calibrate",
            "--alpha",
            "0.25",
            "--out",
            cal.to_str().unwrap(),
            "--defects",
            relabelled.to_str().unwrap(),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("0 of 4 detected"), "{stdout}");
}

#[test]
fn bench_line_inspects_the_region_of_interest() {
    let dir = tempfile::tempdir().unwrap();
    let (padded, roi) = padded_samples(dir.path(), None);
    let good = padded.join("good");
    // Good parts only; without the region of interest every squeezed bottle is rejected. The
    // ejector sits far enough (20 s, scaled under emulation) for any machine to judge in time;
    // each part still waits for it, so the run lasts about that long.
    let timing = format!("delay_ms = {}.0\nmargin_ms = 0.0", 4000 * common::scale());
    let cfg = config(dir.path(), "roi.toml", &good, &roi, &timing);
    let rate = format!("{}", 2.0 / common::scale() as f64);
    let seconds = format!("{}", 2 * common::scale());
    let out = partguard(
        Some(&cfg),
        &["bench", "--line", "--rates", &rate, "--seconds", &seconds],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    // columns: parts/s load parts inspected OK NG late fault ...
    let row: Vec<&str> = stdout
        .lines()
        .find(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .unwrap()
        .split_whitespace()
        .collect();
    let (inspected, ok, ng): (u64, u64, u64) = (
        row[3].parse().unwrap(),
        row[4].parse().unwrap(),
        row[5].parse().unwrap(),
    );
    // Parts judged late on a slow machine are fail-safe rejects, not NG: only the model's
    // verdicts are asserted.
    assert!(inspected > 0 && ok > 0, "{stdout}");
    assert_eq!(
        ng, 0,
        "good parts rejected: the region of interest was not applied\n{stdout}"
    );
}

#[test]
fn bench_line_refuses_a_camera_naming_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::config::TestConfig::new(
        "kind = \"v4l2\"\ndevice = \"/dev/video99\"\nwidth = 640\nheight = 480",
    )
    .write(&dir.path().join("camera.toml"));
    let out = common::partguard_bin(env!("CARGO_BIN_EXE_partguard"))
        .arg("--config")
        .arg(&cfg)
        .args(["bench", "--line", "--rates", "1", "--seconds", "1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&*cfg.to_string_lossy()) && stderr.contains("source.kind"),
        "{stderr}"
    );
}
