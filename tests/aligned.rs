//! A model trained on aligned parts (`models/align.py`; metadata `partguard.alignment`) through the
//! binary: the firmware finds the screw, turns it and crops it as training did, and a frame without
//! a part is a fault handed to the fail-safe policy, never a pass.
//!
//! `tests/data/screw_aligned_int8.onnx` is the aligned screw candidate's seed 1 (models/HISTORY.md,
//! "the part aligned"), int8: a test model, not a shipped one (MVTec AD screw, CC BY-NC-SA 4.0).

use std::path::{Path, PathBuf};

mod common;

fn model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/screw_aligned_int8.onnx")
}

/// `good/000.png` and `defect/000.png` (the screw samples), and with `empty` a frame of the tray
/// without a screw (the good sample's border colour everywhere) as `defect/empty.png`.
fn screws(dir: &Path, empty: bool) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/samples/screw");
    for class in ["good", "defect"] {
        std::fs::create_dir_all(dir.join(class)).unwrap();
        std::fs::copy(
            root.join(class).join("000.png"),
            dir.join(class).join("000.png"),
        )
        .unwrap();
    }
    if empty {
        let good = image::open(root.join("good/000.png")).unwrap().into_rgb8();
        let tray = *good.get_pixel(0, 0);
        image::RgbImage::from_pixel(256, 256, tray)
            .save(dir.join("defect/empty.png"))
            .unwrap();
    }
    dir.to_owned()
}

/// The screws (`screws`) and a station config replaying them through the aligned model at
/// threshold 0.5, with `sections` after `[reject]` when given; returns (folder, config).
fn station(dir: &Path, empty: bool, sections: Option<&str>) -> (PathBuf, PathBuf) {
    let data = screws(&dir.join("screws"), empty);
    let mut cfg = common::config::TestConfig::replay(&data, "rate_hz = 0")
        .model(&model())
        .decision("threshold = 0.5");
    if let Some(toml) = sections {
        cfg = cfg.sections(toml);
    }
    let cfg = cfg.write(&dir.join("screw.toml"));
    (data, cfg)
}

fn partguard(cfg: &Path, args: &[&str]) -> std::process::Output {
    let mut c = common::partguard_bin(env!("CARGO_BIN_EXE_partguard"));
    c.env("RUST_LOG", "warn")
        .arg("--config")
        .arg(cfg)
        .args(args);
    c.output().unwrap()
}

#[test]
fn eval_finds_and_turns_the_screw_and_tells_the_defect() {
    let dir = tempfile::tempdir().unwrap();
    let (data, cfg) = station(dir.path(), false, None);
    let csv = dir.path().join("scores.csv");
    let out = partguard(
        &cfg,
        &[
            "eval",
            "--no-pixel",
            "--data",
            data.to_str().unwrap(),
            "--csv",
            csv.to_str().unwrap(),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("2 images (1 good, 1 defective)"),
        "{stdout}"
    );
    assert!(stdout.contains("image AUROC: 1.0000"), "{stdout}");
    // the scores `models/evaluate.py` gives these two test images, int8 through ONNX Runtime on
    // aligned crops: good 0.166, defect 0.807 (runs/candidate_align/screw_s1/model/eval_int8.csv)
    let text = std::fs::read_to_string(&csv).unwrap();
    let score = |name: &str| -> f32 {
        let line = text.lines().find(|l| l.contains(name)).unwrap();
        line.rsplit(',').next().unwrap().parse().unwrap()
    };
    let (good, defect) = (score("good/000.png"), score("defect/000.png"));
    assert!(
        (good - 0.166).abs() < 0.01 && (defect - 0.807).abs() < 0.01,
        "{text}"
    );
}

#[test]
fn a_frame_without_a_part_is_a_fault_and_rejected() {
    let dir = tempfile::tempdir().unwrap();
    // The ejector 1 s behind the camera (~20x one inference of this model on an x86 core; three
    // parts, one after the other), scaled under emulation.
    let archive = dir.path().join("rejects");
    let timing = format!(
        "[timing]\ndelay_ms = {}.0\n\n[archive]\ndir = {:?}\n\n[log]\nstatus_interval_s = 0\n",
        1000 * common::scale(),
        archive
    );
    let (_, cfg) = station(dir.path(), true, Some(&timing));
    let out = partguard(&cfg, &["run"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    let verdict = |file: &str| -> &str {
        let line = stdout
            .lines()
            .find(|l| l.starts_with("part ") && l.ends_with(file))
            .unwrap_or_else(|| panic!("no decision for {file}: {stdout}"));
        line.split_whitespace().nth(2).unwrap()
    };
    assert_eq!(verdict("good/000.png"), "OK", "{stdout}");
    assert_eq!(verdict("defect/000.png"), "NG", "{stdout}");
    assert_eq!(verdict("defect/empty.png"), "FAULT", "{stdout}");
    assert!(stderr.contains("no part found"), "{stderr}");
    assert!(
        stderr.contains("no part found -> rejected (fail-safe policy)"),
        "{stderr}"
    );
    assert!(stdout.contains("NG 1 late 0 missed 0 faults 1"), "{stdout}");
    // The archive shows the rejected screw as the model saw it, turned and cropped, with its map
    // (the crop beside the crop under the heatmap: 2 x 240 by 64), and the empty tray whole (no
    // map: the frame alone).
    let mut sizes: Vec<(String, (u32, u32))> = std::fs::read_dir(&archive)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, image::image_dimensions(&p).unwrap())
        })
        .collect();
    sizes.sort();
    assert_eq!(sizes.len(), 2, "{sizes:?}");
    assert!(
        sizes[0].0.contains("-NG-") && sizes[0].1 == (480, 64),
        "{sizes:?}"
    );
    assert!(
        sizes[1].0.contains("-FAULT-") && sizes[1].1 == (256, 256),
        "{sizes:?}"
    );
}

#[test]
fn check_shows_the_alignment() {
    let dir = tempfile::tempdir().unwrap();
    let (_, cfg) = station(dir.path(), false, None);
    let out = partguard(&cfg, &["check"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(r#"partguard.alignment = {"rotate": true, "box_h": 69, "box_w": 246}"#),
        "{stdout}"
    );
}
