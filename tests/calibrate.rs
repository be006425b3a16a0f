//! Threshold calibration: the conformal rule, its edge cases, the calibration file (hash binding,
//! atomic write, previous kept), the plot, and the binary (calibrate, run with it, SIGHUP reload).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use partguard::calibrate::{
    best_f1_threshold, conformal_threshold, plot_histogram, sibling, Calibration, CalibrationError,
    ScoreStats,
};

mod common;

fn one_to(n: usize) -> Vec<f32> {
    // shuffled on purpose: the rule must sort
    let mut v: Vec<f32> = (1..=n).map(|i| i as f32).collect();
    v.reverse();
    v
}

#[test]
fn conformal_rule_picks_the_right_order_statistic() {
    let s = one_to(99);
    let c = conformal_threshold(&s, 0.1).unwrap();
    assert_eq!((c.k, c.threshold, c.n), (90, 90.0, 99)); // ceil(100 * 0.9) = 90
    assert!((c.expected_false_reject_rate - 0.10).abs() < 1e-12);
    assert!(c.guaranteed);
    let c = conformal_threshold(&s, 0.05).unwrap();
    assert_eq!(c.k, 95); // exactly 95, not 96 from float rounding
    let c = conformal_threshold(&s, 0.013).unwrap();
    assert_eq!(c.k, 99); // ceil(98.7)
    assert!(c.expected_false_reject_rate <= 0.013);
    // The bound sits above the expectation and shrinks with n.
    let small = conformal_threshold(&one_to(99), 0.1).unwrap();
    let large = conformal_threshold(&one_to(9999), 0.1).unwrap();
    assert!(small.false_reject_rate_upper95 > small.expected_false_reject_rate);
    assert!(large.false_reject_rate_upper95 < small.false_reject_rate_upper95);
    assert!(
        large.false_reject_rate_upper95 < 0.11,
        "{}",
        large.false_reject_rate_upper95
    );
}

#[test]
fn too_few_parts_for_alpha_fall_back_to_the_maximum_without_guarantee() {
    // n + 1 = 10 < 1/alpha = 100
    let c = conformal_threshold(&one_to(9), 0.01).unwrap();
    assert!(!c.guaranteed);
    assert_eq!((c.k, c.threshold), (9, 9.0));
    // n + 1 = 1/alpha exactly: k = n, still guaranteed
    let c = conformal_threshold(&one_to(99), 0.01).unwrap();
    assert!(c.guaranteed);
    assert_eq!(c.k, 99);
    let c = conformal_threshold(&[0.3], 0.5).unwrap();
    assert_eq!((c.k, c.threshold), (1, 0.3));
}

#[test]
fn bad_inputs_are_errors() {
    assert!(matches!(
        conformal_threshold(&[], 0.1),
        Err(CalibrationError::NoScores)
    ));
    assert!(matches!(
        conformal_threshold(&[0.1], 0.0),
        Err(CalibrationError::BadAlpha(a)) if a == 0.0
    ));
    assert!(matches!(
        conformal_threshold(&[0.1], 1.0),
        Err(CalibrationError::BadAlpha(a)) if a == 1.0
    ));
    assert!(matches!(
        conformal_threshold(&[0.1, f32::NAN], 0.1),
        Err(CalibrationError::NonFiniteScore(_))
    ));
}

#[test]
fn best_f1_threshold_separates_when_possible() {
    let (t, f1) = best_f1_threshold(&[0.1, 0.2, 0.3], &[0.5, 0.6]).unwrap();
    assert!((0.3..0.5).contains(&t), "{t}");
    assert_eq!(f1, 1.0);
    assert_eq!(best_f1_threshold(&[0.1], &[]), None);
}

fn sample_calibration(sha: &str) -> Calibration {
    let scores = [0.1f32, 0.2, 0.3];
    Calibration {
        threshold: 0.3,
        method: "conformal".into(),
        alpha: 0.25,
        margin: 0.0,
        n: 3,
        k: 3,
        guaranteed: true,
        expected_false_reject_rate: 0.25,
        false_reject_rate_upper95: 0.63,
        created: "2026-11-28T12:00:00Z".into(),
        source: "test".into(),
        model_path: "m.onnx".into(),
        model_sha256: sha.into(),
        scores: ScoreStats::of(&scores),
        camera_controls: [
            ("auto_exposure".to_string(), "\"Manual Mode\"".to_string()),
            ("exposure_time_absolute".to_string(), "120".to_string()),
        ]
        .into(),
    }
}

#[test]
fn calibration_is_refused_for_another_model() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cal.toml");
    sample_calibration("aaaa1111").save(&path).unwrap();
    assert_eq!(
        Calibration::load_for_model(&path, Path::new("m.onnx"), "aaaa1111").unwrap(),
        sample_calibration("aaaa1111")
    );
    let err = Calibration::load_for_model(&path, Path::new("other.onnx"), "bbbb2222").unwrap_err();
    assert!(matches!(err, CalibrationError::ModelMismatch { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("another model") && msg.contains("other.onnx") && msg.contains("recalibrate"),
        "{msg}"
    );
}

#[test]
fn a_failed_write_leaves_the_old_calibration_and_a_good_one_keeps_the_previous() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cal.toml");
    sample_calibration("first").save(&path).unwrap();
    let before = std::fs::read(&path).unwrap();
    // The temporary file cannot be created: the write is interrupted before the rename.
    std::fs::create_dir(sibling(&path, "tmp")).unwrap();
    let err = sample_calibration("second").save(&path).unwrap_err();
    // The error names the file that failed (the temporary one) and keeps the cause.
    match &err {
        CalibrationError::Write { path: failed, .. } => assert_eq!(failed, &sibling(&path, "tmp")),
        other => panic!("expected a write error, got {other}"),
    }
    assert!(std::error::Error::source(&err).is_some());
    assert!(err
        .to_string()
        .contains("previous calibration is unchanged"));
    assert_eq!(std::fs::read(&path).unwrap(), before);
    std::fs::remove_dir(sibling(&path, "tmp")).unwrap();
    // A successful write replaces it and keeps the old one as .prev.
    sample_calibration("second").save(&path).unwrap();
    assert_eq!(Calibration::load(&path).unwrap().model_sha256, "second");
    assert_eq!(
        Calibration::load(&sibling(&path, "prev"))
            .unwrap()
            .model_sha256,
        "first"
    );
    // A truncated file is a clear parse error.
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, &text[..text.len() / 2]).unwrap();
    assert!(matches!(
        Calibration::load(&path),
        Err(CalibrationError::Parse { .. })
    ));
}

#[test]
fn plot_is_a_decodable_png() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("hist.png");
    plot_histogram(&p, &[0.1, 0.12, 0.13, 0.2], &[0.5, 0.7], 0.3).unwrap();
    let img = image::open(&p).unwrap().into_rgb8();
    assert_eq!(img.dimensions(), (800, 400));
    // the threshold line is drawn in blue somewhere
    assert!(img.pixels().any(|p| p.0 == [30, 60, 220]));
    assert!(
        img.pixels().any(|p| p.0 == [40, 160, 60]) && img.pixels().any(|p| p.0 == [210, 50, 40])
    );
}

fn config(dir: &Path, source: &Path, looping: bool) -> PathBuf {
    let rate = 4.0 / common::scale() as f64;
    common::config::TestConfig::replay(source, &format!("loop = {looping}\nrate_hz = {rate}"))
        .decision("calibration = \"line.cal.toml\"")
        .reject("kind = \"simulated\"\npulse_ms = 10")
        .sections(&format!(
            "[timing]\ndelay_ms = {}\n\n[log]\nstatus_interval_s = 0\n",
            1000 * common::scale()
        ))
        .write(&dir.join("line.toml"))
}

#[test]
fn calibrate_then_run_with_it_and_reload_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &common::samples(), false);
    // Without the file, run says what to do.
    let out = common::partguard("info")
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("run `partguard calibrate"));

    let plot = dir.path().join("hist.png");
    let out = common::partguard("info")
        .args(["calibrate", "--config"])
        .arg(&cfg)
        .args(["--alpha", "0.25", "--plot"])
        .arg(&plot)
        .arg("--defects")
        .arg(common::samples())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 4 good samples: k = ceil(5 * 0.75) = 4 -> the highest good score, guaranteed (n + 1 >= 1/alpha)
    assert!(
        stdout.contains("skipped 4 frames labelled as defects"),
        "{stdout}"
    );
    assert!(stdout.contains("= good score #4 of 4"), "{stdout}");
    assert!(
        stdout.contains("expected false-reject rate 20.000%"),
        "{stdout}"
    );
    assert!(
        stdout.contains("of 4 detected at this threshold"),
        "{stdout}"
    );
    assert!(image::open(&plot).is_ok());
    let cal = Calibration::load(&dir.path().join("line.cal.toml")).unwrap();
    assert_eq!(cal.n, 4);

    // run uses it: every good sample passes (threshold = the highest good score).
    let out = common::partguard("info")
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("from calibration"));
    for l in stdout.lines().filter(|l| l.contains(" good/")) {
        assert!(l.contains(" OK "), "{l}");
    }

    // SIGHUP: a new calibration with threshold 0 makes every part NG, with no frame lost.
    let cfg = config(
        dir.path(),
        &common::root().join("examples/samples/bottle/good"),
        true,
    );
    let mut child = common::partguard("info")
        .args(["run", "--config"])
        .arg(&cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let mut reloaded_at = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if !line.starts_with("part") {
            continue;
        }
        seen.push(line.clone());
        if seen.len() == 3 {
            let mut c = Calibration::load(&dir.path().join("line.cal.toml")).unwrap();
            c.threshold = 0.0;
            c.save(&dir.path().join("line.cal.toml")).unwrap();
            unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
            reloaded_at = Some(seen.len());
        }
        if seen.len() >= 12 {
            break;
        }
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    drop(lines);
    let _ = child.wait();
    let seqs: Vec<u64> = seen
        .iter()
        .map(|l| l.split_whitespace().nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (0..seqs.len() as u64).collect::<Vec<_>>(),
        "frames were dropped: {seen:?}"
    );
    assert!(reloaded_at.is_some());
    assert!(seen[..3].iter().all(|l| l.contains(" OK ")), "{seen:?}");
    assert!(
        seen[8..].iter().all(|l| l.contains(" NG ")),
        "reload did not take effect: {seen:?}"
    );
}

#[test]
fn run_warns_when_the_camera_controls_differ_from_the_calibrations() {
    use partguard::config::Config;
    use partguard::infer::Engine as _;
    use partguard::line::Line;
    let dir = tempfile::tempdir().unwrap();
    let engine = partguard::infer::TractEngine::load(&common::f32_model()).unwrap();
    let info = engine.info().clone();
    let cal_path = dir.path().join("cal.toml");
    let mut cal = sample_calibration(&info.file_sha256);
    cal.model_path = info.path.clone();
    cal.save(&cal_path).unwrap();
    let text = format!(
        "[source]\nkind = \"replay\"\npath = \"{}\"\n[model]\npath = \"{}\"\n[decision]\ncalibration = \"{}\"\n[reject]\nkind = \"simulated\"\npulse_ms = 50\n",
        common::samples().display(),
        common::f32_model().display(),
        cal_path.display()
    );
    let cfg = Config::parse(&text, Path::new("x.toml"), dir.path()).unwrap();
    let line = Line::new(&cfg);
    let decision = line.decision(&info).unwrap();
    // The calibration file kept the controls it was made under.
    assert_eq!(
        decision.camera_controls,
        sample_calibration("x").camera_controls
    );
    let same = decision.camera_controls.clone();
    assert!(line.control_drift(&same, &info, &decision).is_empty());
    let mut moved = same.clone();
    moved.insert("exposure_time_absolute".into(), "300".into());
    let w = line.control_drift(&moved, &info, &decision);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("exposure_time_absolute: now 300, was 120") && w[0].contains("recalibrate"),
        "{w:?}"
    );
}

#[test]
fn a_missing_calibration_file_says_how_to_make_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("none.cal.toml");
    let err = Calibration::load(&path).unwrap_err();
    assert!(
        matches!(&err, CalibrationError::Missing { path: p } if p == &path),
        "{err}"
    );
    assert!(
        err.to_string().contains("run `partguard calibrate"),
        "{err}"
    );
}
