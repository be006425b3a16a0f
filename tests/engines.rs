//! tract and ONNX Runtime on the same models and the same sample images (feature `onnxruntime`;
//! the library comes from `ORT_DYLIB_PATH`, e.g. the PyPI wheel's
//! `onnxruntime/capi/libonnxruntime.so.*`: README, Engines).
//!
//! Tolerances, from measurement on the 8 samples (x86_64 AVX2, onnxruntime 1.32.0; aarch64: 2
//! samples under qemu-user, cortex-a76, where both engines agree to 1e-6 in f32 and int8):
//! - f32: score and map within 1e-4 (measured max 4.2e-7 on the score, 3.5e-6 on the map: float
//!   summation order).
//! - int8: score within 0.02, map within 0.15 (measured 6.9e-3 and 0.099 with ONNX Runtime's
//!   graph fusions, 2.1e-3 and 0.115 without): both run integer convolutions, but requantize their
//!   outputs with different rounding (tract: fixed-point multiplier; ONNX Runtime: float scale),
//!   and the first convolutions run in f32 with different summation orders before their outputs
//!   are quantized, so some activations differ by one step and the differences carry through. Every
//!   defective sample stays above every good one in both engines.
#![cfg(feature = "onnxruntime")]

use std::path::{Path, PathBuf};

use partguard::capture::{FrameSource, ReplaySource};
use partguard::infer::{load_engine, Engine, EngineKind, EngineOptions};
use partguard::preprocess::Preprocessor;

mod common;

fn library() -> PathBuf {
    match std::env::var_os("ORT_DYLIB_PATH") {
        Some(p) => PathBuf::from(p),
        None => panic!(
            "ORT_DYLIB_PATH is not set: point it at libonnxruntime.so (pip install onnxruntime==1.32.0; the file is onnxruntime/capi/libonnxruntime.so.1.32.0)"
        ),
    }
}

/// The sample images compared: all 8 natively; under emulation (seconds per inference) the
/// defect with the least margin and a good part.
fn sample_paths() -> Vec<PathBuf> {
    let all = [
        "broken_large/000.png",
        "broken_small/000.png",
        "contamination/000.png",
        "contamination/001.png",
        "good/000.png",
        "good/001.png",
        "good/002.png",
        "good/003.png",
    ];
    all.iter()
        .filter(|n| !common::emulated() || **n == "broken_small/000.png" || **n == "good/000.png")
        .map(|n| common::samples().join(n))
        .collect()
}

/// (name, score, map) of every compared sample with `engine`.
fn outputs(engine: &mut dyn Engine) -> Vec<(String, f32, Vec<f32>)> {
    let mut pre = Preprocessor::new(engine.info().input);
    let mut out = Vec::new();
    for path in sample_paths() {
        let mut source = ReplaySource::open(&path, false, 0.0, 64).unwrap();
        let frame = source.next_frame().unwrap().unwrap();
        pre.convert(&frame).unwrap();
        pre.fill_tensor(frame.width, frame.height, engine.input_mut())
            .unwrap();
        let inf = engine.run().unwrap();
        out.push((path.display().to_string(), inf.score, inf.map.to_vec()));
    }
    out
}

fn ort_options(optimizations: bool) -> EngineOptions {
    EngineOptions {
        library: Some(library()),
        optimizations,
        ..EngineOptions::default()
    }
}

/// Largest |score difference| and |map difference| between two runs over the same samples.
fn compare(model: &Path, optimizations: bool) -> (f32, f32, Vec<(String, f32, f32)>) {
    let mut tract = load_engine(model, EngineKind::Tract, &EngineOptions::default()).unwrap();
    let mut ort = load_engine(model, EngineKind::Onnxruntime, &ort_options(optimizations)).unwrap();
    let a = outputs(tract.as_mut());
    let b = outputs(ort.as_mut());
    assert_eq!(a.len(), b.len());
    let (mut score, mut map) = (0f32, 0f32);
    let mut rows = Vec::new();
    for ((name, sa, ma), (_, sb, mb)) in a.iter().zip(&b) {
        score = score.max((sa - sb).abs());
        for (x, y) in ma.iter().zip(mb) {
            map = map.max((x - y).abs());
        }
        rows.push((name.clone(), *sa, *sb));
    }
    eprintln!(
        "{} (onnxruntime optimizations {}): max |score diff| {score:.3e}, max |map diff| {map:.3e}",
        model.display(),
        if optimizations { "on" } else { "off" }
    );
    for (n, sa, sb) in &rows {
        eprintln!("  {n}: tract {sa:.5} onnxruntime {sb:.5}");
    }
    (score, map, rows)
}

#[test]
fn f32_model_gives_the_same_score_and_map_in_both_engines() {
    let (score, map, _) = compare(&common::f32_model(), true);
    assert!(score <= 1e-4, "score differs by {score}");
    assert!(map <= 1e-4, "map differs by {map}");
}

fn check_int8(optimizations: bool) {
    let model = common::root().join("models/bottle_sspcab_int8.onnx");
    let (score, map, rows) = compare(&model, optimizations);
    assert!(score <= 0.02, "score differs by {score}");
    assert!(map <= 0.15, "map differs by {map}");
    // The ranking holds in both engines: every defect above every good part.
    for engine in [0, 1] {
        let s = |r: &(String, f32, f32)| if engine == 0 { r.1 } else { r.2 };
        let good = rows.iter().filter(|r| r.0.contains("/good/"));
        let highest_good = good.map(s).fold(f32::MIN, f32::max);
        for r in rows.iter().filter(|r| !r.0.contains("/good/")) {
            assert!(
                s(r) > highest_good,
                "engine {engine}: {} scores {} <= a good part's {highest_good}",
                r.0,
                s(r)
            );
        }
    }
}

#[test]
fn int8_model_agrees_without_onnxruntime_fusions() {
    check_int8(false);
}

#[test]
fn int8_model_agrees_with_onnxruntime_fusions() {
    check_int8(true);
}

#[test]
fn a_missing_library_is_a_clear_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("ort.toml");
    let text = partguard::config::BUILTIN_DEFAULT
        .replace("\"samples/bottle\"", &format!("{:?}", common::samples()))
        .replace(
            "\"../models/bottle_sspcab_f32.onnx\"",
            &format!(
                "{:?}\nengine = \"onnxruntime\"\nonnxruntime_library = \"/nonexistent/libonnxruntime.so\"",
                common::f32_model()
            ),
        );
    std::fs::write(&cfg, text).unwrap();
    let out = common::run_with_config(env!("CARGO_BIN_EXE_partguard"), &cfg, &["check"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("engine onnxruntime")
            && stderr.contains("/nonexistent/libonnxruntime.so does not exist"),
        "{stderr}"
    );
}

/// `eval` runs on the configured engine (it used tract whatever `model.engine` said): a library
/// that does not exist fails it, naming the library; the real one scores the samples on ONNX
/// Runtime, within the int8 tolerance of tract's scores.
#[test]
fn eval_runs_on_the_configured_engine() {
    let dir = tempfile::tempdir().unwrap();
    let config = |name: &str, engine: &str| {
        let cfg = dir.path().join(name);
        let text = partguard::config::BUILTIN_DEFAULT
            .replace("\"samples/bottle\"", &format!("{:?}", common::samples()))
            .replace(
                "\"../models/bottle_sspcab_f32.onnx\"",
                &format!(
                    "{:?}\n{engine}",
                    common::root().join("models/bottle_sspcab_int8.onnx")
                ),
            );
        std::fs::write(&cfg, text).unwrap();
        cfg
    };
    let data = common::samples();
    let eval = |cfg: &Path, csv: &Path| {
        common::run_with_config(
            env!("CARGO_BIN_EXE_partguard"),
            cfg,
            &[
                "eval",
                "--no-pixel",
                "--data",
                data.to_str().unwrap(),
                "--csv",
                csv.to_str().unwrap(),
            ],
        )
    };
    let missing = config(
        "missing.toml",
        "engine = \"onnxruntime\"\nonnxruntime_library = \"/nonexistent/libonnxruntime.so\"",
    );
    let out = eval(&missing, &dir.path().join("missing.csv"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "eval ignored model.engine: {stderr}"
    );
    assert!(
        stderr.contains("/nonexistent/libonnxruntime.so"),
        "{stderr}"
    );

    let ort = config(
        "ort.toml",
        &format!(
            "engine = \"onnxruntime\"\nonnxruntime_library = {:?}",
            library()
        ),
    );
    let tract = config("tract.toml", "");
    let (ort_csv, tract_csv) = (dir.path().join("ort.csv"), dir.path().join("tract.csv"));
    let out = eval(&ort, &ort_csv);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(" on onnxruntime"));
    assert!(eval(&tract, &tract_csv).status.success());
    let scores = |p: &Path| -> Vec<f32> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| l.rsplit(',').next().unwrap().parse().unwrap())
            .collect()
    };
    let (a, b) = (scores(&ort_csv), scores(&tract_csv));
    assert_eq!(a.len(), 8);
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 0.02, "onnxruntime {x} vs tract {y}");
    }
}
