//! Replays every fuzz seed and every input a fuzzer ever crashed on (tests/fuzz/{seeds,regressions})
//! through the same harness the fuzz targets use: none may panic. The fuzzers themselves run by hand
//! (tests/fuzz/README.md); this keeps what they found fixed.

#[path = "fuzz/harness.rs"]
mod harness;

use std::path::Path;

const TARGETS: [&str; 4] = ["convert", "config", "model_metadata", "calibration"];

#[test]
fn every_seed_and_every_past_crash_runs_clean() {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz");
    let mut seeds = 0;
    for target in TARGETS {
        let run = harness::by_name(target).unwrap();
        for kind in ["seeds", "regressions"] {
            let dir = base.join(kind).join(target);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries {
                let path = e.unwrap().path();
                if path.file_name().is_some_and(|n| n == ".keep") {
                    continue;
                }
                let data = std::fs::read(&path).unwrap();
                // A panic here names the input: cargo fuzz run --fuzz-dir tests/fuzz TARGET PATH
                eprintln!("{target}: {}", path.display());
                run(&data);
                seeds += usize::from(kind == "seeds");
            }
        }
    }
    assert!(seeds >= 4, "the seed corpora are missing: {seeds} seeds");
}

/// The harness really exercises the code: a valid seed passes the checks, a truncated frame errs.
#[test]
fn the_seeds_are_valid_inputs_of_their_parsers() {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/seeds");
    let model = std::fs::read(base.join("model_metadata/tiny_contract.onnx")).unwrap();
    let info =
        partguard::infer::model_info_from_bytes(Path::new("tiny.onnx"), model.clone()).unwrap();
    assert_eq!((info.input.width, info.input.height), (4, 4));
    let cut =
        partguard::infer::model_info_from_bytes(Path::new("tiny.onnx"), model[..100].to_vec());
    assert!(cut.is_err());
    let cal = std::fs::read_to_string(base.join("calibration/bottle.cal.toml")).unwrap();
    let c = partguard::calibrate::Calibration::parse(&cal, Path::new("x")).unwrap();
    assert!((c.threshold - 0.105).abs() < 1e-3);
}
