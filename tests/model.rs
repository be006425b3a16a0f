//! The real tract model on real sample images, and models that break the contract.

mod common;

use common::values::{assert_same_values, bits_differ, run_flat, varied_image};

use std::path::{Path, PathBuf};

use partguard::capture::{FrameSource, Label, ReplaySource};
use partguard::infer::{Engine, ModelError, TractEngine};
use partguard::preprocess::Preprocessor;

fn shipped(precision: &str) -> PathBuf {
    common::root().join(format!("models/bottle_sspcab_{precision}.onnx"))
}

/// Scores of the sample images: (good, defective).
fn sample_scores(engine: &mut TractEngine) -> (Vec<f32>, Vec<f32>) {
    let mut src = ReplaySource::open(&common::samples(), false, 0.0, 64).unwrap();
    let mut pre = Preprocessor::new(engine.info().input);
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    while let Some(frame) = src.next_frame().unwrap() {
        let label = frame.label().unwrap();
        pre.run(&frame, engine.input_mut()).unwrap();
        let inf = engine.run().unwrap();
        assert_eq!(inf.map.len(), inf.width * inf.height);
        assert!(
            inf.map.iter().all(|v| (0.0..=1.0).contains(v)),
            "anomaly map outside [0, 1]"
        );
        match label {
            Label::Good => good.push(inf.score),
            Label::Defect => bad.push(inf.score),
        }
    }
    (good, bad)
}

/// The shipped model's image AUROC on MVTec AD bottle is about 0.99 (models/README.md); on the
/// eight samples it separates every defect, the hairline crack broken_small/000 included (f32
/// 0.125 against at most 0.111 for a good sample, int8 0.162 against 0.129), so all four are
/// asserted.
#[test]
fn shipped_models_score_every_defect_above_every_good_sample() {
    for precision in ["f32", "int8"] {
        let mut engine = TractEngine::load(&shipped(precision)).unwrap();
        assert_eq!(engine.info().meta("partguard.precision"), precision);
        let (good, bad) = sample_scores(&mut engine);
        assert_eq!((good.len(), bad.len()), (4, 4));
        let max_good = good.iter().cloned().fold(f32::MIN, f32::max);
        // order: broken_large/000, broken_small/000, contamination/000, contamination/001
        for (i, name) in [
            (0, "broken_large/000"),
            (1, "broken_small/000"),
            (2, "contamination/000"),
            (3, "contamination/001"),
        ] {
            assert!(
                bad[i] > max_good,
                "{precision}: {name} scored {} <= good {good:?}",
                bad[i]
            );
        }
        let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
        assert!(
            mean(&bad) > mean(&good) + 0.1,
            "{precision}: defects {bad:?} vs good {good:?}"
        );
    }
}

#[test]
fn int8_tracks_f32_on_the_samples() {
    let (g32, b32) = sample_scores(&mut TractEngine::load(&shipped("f32")).unwrap());
    let (g8, b8) = sample_scores(&mut TractEngine::load(&shipped("int8")).unwrap());
    for (a, b) in g32.iter().chain(&b32).zip(g8.iter().chain(&b8)) {
        assert!((a - b).abs() < 0.1, "int8 score {b} vs f32 {a}");
    }
}

#[test]
fn the_same_frame_gives_the_same_score_every_time() {
    let mut engine = TractEngine::load(&shipped("int8")).unwrap();
    let (g1, b1) = sample_scores(&mut engine);
    let (g2, b2) = sample_scores(&mut engine);
    assert_eq!((g1, b1), (g2, b2));
}

#[test]
fn corrupt_model_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(shipped("int8")).unwrap();
    let cut = dir.path().join("truncated.onnx");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    let garbage = dir.path().join("garbage.onnx");
    std::fs::write(&garbage, b"this is not a protobuf \xff\xff\xff").unwrap();
    for p in [cut, garbage] {
        let err = TractEngine::load(&p).err().unwrap();
        assert!(
            matches!(err, ModelError::Corrupt { .. }),
            "{}: {err}",
            p.display()
        );
        assert!(err.to_string().contains(&p.display().to_string()));
    }
    let err = TractEngine::load(Path::new("/nonexistent/model.onnx"))
        .err()
        .unwrap();
    match &err {
        ModelError::Read { source, .. } => assert_eq!(source.kind(), std::io::ErrorKind::NotFound),
        other => panic!("expected a read error, got {other}"),
    }
    assert!(
        std::error::Error::source(&err).is_some(),
        "the cause is kept"
    );
}

#[test]
fn models_that_break_the_contract_are_refused_with_the_reason() {
    let cases = [
        ("wrong_input_name.onnx", "expected exactly [\"image\"]"),
        ("missing_score_output.onnx", "(missing \"score\")"),
        ("no_metadata.onnx", "partguard.input_shape"),
        ("wrong_output_shape.onnx", "expected [1, 1, 8, 8]"),
    ];
    for (file, needle) in cases {
        let p = common::root().join("tests/data").join(file);
        let err = TractEngine::load(&p).err().unwrap();
        let msg = err.to_string();
        assert!(matches!(err, ModelError::Contract { .. }), "{file}: {msg}");
        assert!(
            msg.contains(needle) && msg.contains("models/README.md"),
            "{file}: {msg}"
        );
    }
}

/// Per-sample outputs: (file name, score, map mean, map max).
fn outputs(engine: &mut TractEngine) -> Vec<(String, f32, f32, f32)> {
    let mut src = ReplaySource::open(&common::samples(), false, 0.0, 64).unwrap();
    let mut pre = Preprocessor::new(engine.info().input);
    let mut out = Vec::new();
    while let Some(frame) = src.next_frame().unwrap() {
        let origin = frame.origin.unwrap();
        let name = format!(
            "{}/{}",
            origin
                .parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy(),
            origin.file_name().unwrap().to_string_lossy()
        );
        pre.run(&frame, engine.input_mut()).unwrap();
        let inf = engine.run().unwrap();
        let mean = inf.map.iter().sum::<f32>() / inf.map.len() as f32;
        let max = inf.map.iter().cloned().fold(0.0f32, f32::max);
        out.push((name, inf.score, mean, max));
    }
    out
}

/// Largest differences allowed between this platform and the x86_64 reference
/// (`tests/data/x86_64_reference.txt`, written with tract's AVX2+FMA kernels), per precision:
/// (score, map mean, map max). tract picks its kernels per CPU, and the machines this suite runs
/// on differ. Measured spread over the 8 samples (`TRACT_CPU_ISA=<edit> cargo test --release
/// --test model outputs_match -- --nocapture` on an AMD EPYC with AVX-512 VNNI, 2026-12-01):
///
/// | kernels (TRACT_CPU_ISA)                         | f32 score / map max | int8 score / map mean / map max |
/// |-------------------------------------------------|---------------------|---------------------------------|
/// | AVX2+FMA (`-avx512vnni,-avxvnni,-avx512f,-avx512fp16`) | 0 / 0        | 0 / 0 / 0 (the reference's)     |
/// | AVX-512 with VNNI (as probed) or without        | 8.9e-8 / 3.9e-7     | 2.1e-4 / 1.3e-5 / 2.7e-3        |
/// | generic (also `-fma,-avx2,-avx,-f16c`)          | 2.4e-7 / 7.7e-7     | 1.2e-3 / 4.4e-4 / 6e-8          |
/// | aarch64 Cortex-A76 (dotprod) and A72, qemu-user (cross/test-aarch64.sh in CI, 2026-12-02) | 2.1e-7 / 6.0e-7 | 0 / 0 / 0 |
///
/// In int8 a float difference of 1e-7 before a quantized layer can move an activation by one
/// quantization step, which carries through: the tolerance is about 4x the widest spread measured.
fn tolerance(precision: &str) -> (f32, f32, f32) {
    match precision {
        "f32" => (1e-5, 1e-5, 1e-5),
        _ => (5e-3, 2e-3, 1e-2),
    }
}

/// The shipped models give the same outputs on this platform as on x86_64 (exactly there; within
/// the stated tolerance on aarch64, where tract runs other kernels). The reference was written on
/// x86_64 by `PARTGUARD_WRITE_REFERENCE=1 cargo test --release --test model reference`.
#[test]
fn outputs_match_the_x86_64_reference() {
    let path = common::root().join("tests/data/x86_64_reference.txt");
    if std::env::var_os("PARTGUARD_WRITE_REFERENCE").is_some() {
        if cfg!(not(target_arch = "x86_64")) {
            panic!("the reference is written on x86_64");
        }
        let mut text = String::from("# precision sample score map_mean map_max (x86_64, tract)\n");
        for precision in ["f32", "int8"] {
            let mut engine = TractEngine::load(&shipped(precision)).unwrap();
            for (name, s, mean, max) in outputs(&mut engine) {
                text.push_str(&format!(
                    "{precision} {name} {s:.9e} {mean:.9e} {max:.9e}\n"
                ));
            }
        }
        std::fs::write(&path, text).unwrap();
    }
    let reference = std::fs::read_to_string(&path).unwrap();
    let mut worst = std::collections::BTreeMap::new();
    let mut outside = Vec::new();
    for precision in ["f32", "int8"] {
        let mut engine = TractEngine::load(&shipped(precision)).unwrap();
        let got = outputs(&mut engine);
        let (ts, tmean, tmax) = tolerance(precision);
        for (name, s, mean, max) in got {
            let line = reference
                .lines()
                .find(|l| l.starts_with(&format!("{precision} {name} ")))
                .unwrap_or_else(|| panic!("{precision} {name} missing from the reference"));
            let v: Vec<f32> = line
                .split_whitespace()
                .skip(2)
                .map(|x| x.parse().unwrap())
                .collect();
            let d = ((s - v[0]).abs(), (mean - v[1]).abs(), (max - v[2]).abs());
            let w = worst.entry(precision).or_insert((0.0f32, 0.0f32, 0.0f32));
            *w = (w.0.max(d.0), w.1.max(d.1), w.2.max(d.2));
            if !(d.0 <= ts && d.1 <= tmean && d.2 <= tmax) {
                outside.push(format!(
                    "{precision} {name}: score {s} vs {}, map mean {mean} vs {}, max {max} vs {}",
                    v[0], v[1], v[2]
                ));
            }
        }
    }
    // The measured differences, for the record (cross/test-aarch64.sh prints them).
    eprintln!("largest |this platform - x86_64| (score, map mean, map max): {worst:?}");
    assert!(
        outside.is_empty(),
        "outside the tolerance:\n{}",
        outside.join("\n")
    );
}

/// Score and anomaly map of the first sample in path order (broken_large/000).
fn first_sample(engine: &mut TractEngine) -> (f32, Vec<f32>) {
    let mut src = ReplaySource::open(&common::samples(), false, 0.0, 64).unwrap();
    let frame = src.next_frame().unwrap().unwrap();
    let mut pre = Preprocessor::new(engine.info().input);
    pre.run(&frame, engine.input_mut()).unwrap();
    let inf = engine.run().unwrap();
    (inf.score, inf.map.to_vec())
}

/// The largest element-wise difference between two anomaly maps.
fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "maps of different sizes");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max)
}

/// `model.threads` > 1 splits tract's matrix products over a pool; every output element is still
/// computed by one thread in the same order, so the results are the same as on one thread.
#[test]
fn multithreaded_tract_gives_the_single_threaded_results() {
    let mut one = TractEngine::load(&shipped("int8")).unwrap();
    let mut three = TractEngine::load_with_threads(&shipped("int8"), 3).unwrap();
    let (s1, m1) = first_sample(&mut one);
    let (s3, m3) = first_sample(&mut three);
    let worst = max_abs_diff(&m1, &m3);
    assert!(
        (s1 - s3).abs() <= 1e-6 && worst <= 1e-6,
        "1 thread: score {s1}; 3 threads: score {s3}; map max diff {worst}"
    );
    assert!(s1 > 0.3, "broken_large/000 scored {s1}");
}

/// The upstream reproducers of tract's int8 costs (`benches/tract_qconv_repro.py`, models/README
/// "Quantization") stay valid models: they load under the contract, and each int8 file computes
/// what its f32 twin does, within its 0.05 activation step averaged over the channels.
#[test]
fn upstream_reproducers_follow_the_contract_and_int8_tracks_f32() {
    let map_of = |path: &Path| {
        let mut engine = TractEngine::load(path).unwrap();
        let input = engine.info().input;
        assert_eq!(
            (input.width, input.height),
            (128, 128),
            "{}",
            path.display()
        );
        first_sample(&mut engine)
    };
    for name in ["tract_conv3x3", "tract_upsample", "tract_bilinear"] {
        let file = |p: &str| common::root().join(format!("tests/data/{name}_{p}.onnx"));
        let (s_f32, m_f32) = map_of(&file("f32"));
        let (s_int8, m_int8) = map_of(&file("int8"));
        let worst = max_abs_diff(&m_f32, &m_int8);
        assert!(
            worst <= 0.03 && (s_f32 - s_int8).abs() <= 0.01 && s_f32 > 0.1,
            "{name}: score f32 {s_f32} int8 {s_int8}, map max diff {worst}"
        );
    }
}

/// tract's own plan and the engine's (`prepare_for_tract`) for the model at `path`, for an input
/// of `hw`. tract's plan takes the engine's f32 3x3 convolutions where this core does (x86-64):
/// they are within rounding of tract's, not bit for bit
/// (`f32_convolutions_direct_stay_within_rounding_of_tract`), so that the other ops can be
/// compared bit for bit.
fn plain_and_prepared(
    path: &Path,
    hw: (usize, usize),
) -> (
    tract_onnx::prelude::TypedModel,
    tract_onnx::prelude::TypedModel,
) {
    use tract_onnx::prelude::*;
    let load = || tract_onnx::onnx().model_for_path(path).unwrap();
    let mut plain = partguard::infer::typed_for_contract(load(), hw)
        .and_then(|m| m.into_decluttered())
        .unwrap();
    partguard::infer::f32_convolutions_direct(&mut plain).unwrap();
    let plain = plain.into_optimized().unwrap();
    let prepared = partguard::infer::prepare_for_tract(load(), hw).unwrap();
    (plain, prepared)
}

/// Whether this core has AVX-512 or AVX2 with FMA, where the engine computes the f32 3x3
/// convolutions itself.
fn direct_convolutions_here() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            || (std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// On x86-64 cores with AVX-512 or AVX2 the engine computes the f32 3x3 convolutions directly (`F32Conv3x3`), summing
/// in another order than tract: the shipped models' anomaly maps and scores stay within f32
/// rounding of tract's own plan; the int8 model's f32 convolutions, and every one on other
/// cores, stay tract's.
#[test]
fn f32_convolutions_direct_stay_within_rounding_of_tract() {
    use tract_onnx::prelude::*;
    let image = tract_ndarray::Array4::from_shape_fn((1, 3, 128, 128), |(_, c, y, x)| {
        ((x * 7 + y * 3 + c * 50 + ((x / 16 + y / 16) % 2) * 90) % 256) as f32 / 255.0
    });
    for (path, convs) in [
        (shipped("f32"), 42),
        (shipped("int8"), 0),
        (common::root().join("tests/data/tract_conv3x3_f32.onnx"), 2),
    ] {
        let label = path.display().to_string();
        let load = || tract_onnx::onnx().model_for_path(&path).unwrap();
        let plain = partguard::infer::typed_for_contract(load(), (128, 128))
            .and_then(|m| m.into_optimized())
            .unwrap();
        let prepared = partguard::infer::prepare_for_tract(load(), (128, 128)).unwrap();
        let taken = count_ops(&prepared, "F32Conv3x3");
        assert_eq!(
            taken,
            if direct_convolutions_here() { convs } else { 0 },
            "{label}"
        );
        let (a, b) = (run_flat(plain, &image), run_flat(prepared, &image));
        assert_eq!(a.len(), b.len(), "{label}");
        let (map_a, map_b) = (&a[..a.len() - 1], &b[..b.len() - 1]);
        let worst = max_abs_diff(map_a, map_b);
        let mean = map_a
            .iter()
            .zip(map_b)
            .map(|(x, y)| (x - y).abs())
            .sum::<f32>()
            / map_a.len() as f32;
        let score = (a[a.len() - 1] - b[b.len() - 1]).abs();
        eprintln!(
            "{label}: {taken} convolutions taken; map max diff {worst:e}, mean {mean:e}, score \
             diff {score:e}"
        );
        if taken == 0 {
            assert_eq!(bits_differ(&a, &b), 0, "{label}");
        }
        // rounding, a few units in the 7th digit carried through the layers (measured 9.5e-7 on
        // the shipped map, 0 on its score)
        let (max_tol, mean_tol, score_tol) = (1e-5, 1e-6, 1e-5);
        assert!(
            worst <= max_tol && mean <= mean_tol && score <= score_tol,
            "{label}: map max {worst:e} mean {mean:e}, score {score:e}"
        );
    }
}

/// How many nodes of `model` run the operator called `name`.
fn count_ops(model: &tract_onnx::prelude::TypedModel, name: &str) -> usize {
    model
        .nodes()
        .iter()
        .filter(|n| n.op().name() == name)
        .count()
}

/// The engine's preparation upsamples the int8 model's byte maps by row copies instead of tract's
/// element-by-element NearestUpsample, and computes exactly what tract's own plan computes.
#[test]
fn byte_maps_upsampled_by_row_copies_give_tract_own_values() {
    use tract_onnx::prelude::*;
    let path = common::root().join("tests/data/tract_upsample_int8.onnx");
    let (plain, prepared) = plain_and_prepared(&path, (128, 128));
    let ops = |m: &TypedModel| -> Vec<String> {
        m.nodes()
            .iter()
            .map(|n| n.op().name().to_string())
            .collect()
    };
    assert!(
        ops(&plain).iter().any(|o| o == "NearestUpsample"),
        "{:?}",
        ops(&plain)
    );
    assert!(
        !ops(&prepared).iter().any(|o| o == "NearestUpsample"),
        "{:?}",
        ops(&prepared)
    );
    assert!(
        ops(&prepared).iter().any(|o| o == "RowCopyUpsample"),
        "{:?}",
        ops(&prepared)
    );
    // a varied image: a ramp in each channel
    let image = tract_ndarray::Array4::from_shape_fn((1, 3, 128, 128), |(_, c, y, x)| {
        ((x * 2 + y * 3 + c * 50) % 256) as f32 / 255.0
    });
    assert_same_values("maps", plain, prepared, &image);
}

/// The engine's preparation writes the int8 convolutions' patches into the matmul's panels panel by
/// panel instead of tract's value-by-value `Im2col` (and quantizes the f32 maps in a vectorized
/// loop instead of tract's scalar one), and computes exactly what tract's own plan
/// computes: on the two-convolution reproducer, the shipped bottle model (128x128) and the aligned
/// screw model (64x240, whose deeper maps are 30 and 15 wide: rows that end inside a panel).
#[test]
fn int8_patches_written_by_panels_give_tract_own_values() {
    for file in [
        "tests/data/tract_conv3x3_int8.onnx",
        "models/bottle_sspcab_int8.onnx",
        "tests/data/screw_aligned_int8.onnx",
    ] {
        let path = common::root().join(file);
        let info = partguard::infer::read_model_info(&path).unwrap();
        let (h, w) = (info.input.height, info.input.width);
        let (plain, prepared) = plain_and_prepared(&path, (h, w));
        let im2col = count_ops(&plain, "Im2col");
        assert!(im2col > 0, "{file}: tract's plan has no Im2col");
        let left: Vec<String> = prepared
            .nodes()
            .iter()
            .filter(|n| n.op().name() == "Im2col")
            .map(|n| {
                format!(
                    "{} {:?} <- {:?}",
                    n.name,
                    n.op(),
                    prepared.outlet_fact(n.inputs[0])
                )
            })
            .collect();
        assert!(left.is_empty(), "{file}: Im2col left: {left:?}");
        assert_eq!(count_ops(&prepared, "RowIm2Col"), im2col, "{file}");
        // and quantizes the f32 maps in a vectorized loop (those not requantized by table)
        let quantize = count_ops(&plain, "QuantizeLinearU8");
        assert!(quantize > 0, "{file}: tract's plan has no QuantizeLinearU8");
        assert_eq!(count_ops(&prepared, "QuantizeLinearU8"), 0, "{file}");
        assert!(count_ops(&prepared, "VecQuantize") > 0, "{file}");
        assert_same_values(file, plain, prepared, &varied_image(h, w));
    }
}

/// On aarch64 cores without 8-bit dot products (Cortex-A72, under `QEMU_CPU=cortex-a72`) the
/// engine's preparation computes the int8 convolutions' products with 16-bit partial sums and feeds
/// them to tract's own matmul, and computes exactly what tract's own plan computes, on the same
/// three int8 models as above. Elsewhere (x86, dot-product cores) tract's kernels read other
/// layouts and no node is taken.
#[test]
fn int8_products_by_partial_sums_give_tract_own_values() {
    use tract_onnx::prelude::*;
    #[cfg(target_arch = "aarch64")]
    let without_dot = !std::arch::is_aarch64_feature_detected!("dotprod");
    #[cfg(not(target_arch = "aarch64"))]
    let without_dot = false;
    for file in [
        "tests/data/tract_conv3x3_int8.onnx",
        "models/bottle_sspcab_int8.onnx",
        "tests/data/screw_aligned_int8.onnx",
    ] {
        let path = common::root().join(file);
        let info = partguard::infer::read_model_info(&path).unwrap();
        let (h, w) = (info.input.height, info.input.width);
        let (plain, prepared) = plain_and_prepared(&path, (h, w));
        let products = count_ops(&prepared, "Int8Products");
        if !without_dot {
            assert_eq!(products, 0, "{file}");
            continue;
        }
        // every int8 convolution's matmul: one per tract Im2col
        assert_eq!(products, count_ops(&plain, "Im2col"), "{file}");
        let image = tract_ndarray::Array4::from_shape_fn((1, 3, h, w), |(_, c, y, x)| {
            ((x * 13 + y * 7 + c * 60 + ((x / 5 + y / 3) % 2) * 70) % 256) as f32 / 255.0
        });
        assert_same_values(file, plain, prepared, &image);
    }
}

/// The engine's preparation resizes row by row instead of tract's value-by-value `Resize` (the
/// shipped network's bilinear upsamplings) and computes exactly what tract's own plan computes,
/// on the shipped bottle model and on the upstream reproducer, in int8 (byte maps, resized in
/// integers) and in f32.
#[test]
fn bilinear_resizes_row_by_row_give_tract_own_values() {
    use tract_onnx::prelude::*;
    for precision in ["int8", "f32"] {
        for path in [
            shipped(precision),
            common::root().join(format!("tests/data/tract_bilinear_{precision}.onnx")),
        ] {
            let precision = format!("{precision} {}", path.display());
            let (plain, prepared) = plain_and_prepared(&path, (128, 128));
            let resizes = count_ops(&plain, "Resize");
            assert!(resizes > 0, "{precision}: tract's plan has no Resize");
            assert_eq!(
                count_ops(&prepared, "Resize"),
                0,
                "{precision}: Resize left"
            );
            assert_eq!(count_ops(&prepared, "RowResize"), resizes, "{precision}");
            // byte maps (plain bytes to tract) resized in integers, f32 ones in f32
            for node in prepared.nodes() {
                if node.op().name() != "RowResize" {
                    continue;
                }
                let bytes =
                    prepared.outlet_fact(node.inputs[0]).unwrap().datum_type == DatumType::U8;
                let in_integers = node.op().info().unwrap().concat().contains("in integers");
                assert_eq!(in_integers, bytes, "{precision}: {}", node.name);
            }
            if precision.starts_with("int8") {
                let bytes = prepared
                    .nodes()
                    .iter()
                    .filter(|n| n.op().name() == "RowResize")
                    .filter(|n| {
                        prepared.outlet_fact(n.inputs[0]).unwrap().datum_type == DatumType::U8
                    })
                    .count();
                assert!(bytes > 0, "{precision}: no byte map resized");
            }
            let image = tract_ndarray::Array4::from_shape_fn((1, 3, 128, 128), |(_, c, y, x)| {
                ((x * 5 + y * 9 + c * 70 + ((x / 8 + y / 8) % 2) * 60) % 256) as f32 / 255.0
            });
            assert_same_values(&precision, plain, prepared, &image);
        }
    }
}

/// The engine's preparation sums the score window row by row instead of tract's window-by-window
/// `OptSumPool`, and computes exactly what tract's own plan computes: on the shipped bottle model
/// (21x21 window) in int8 and f32, and on the aligned screw model (the recipe's 3x3 window, maps
/// 64 x 240).
#[test]
fn score_window_summed_row_by_row_gives_tract_own_values() {
    use tract_onnx::prelude::*;
    for path in [
        shipped("int8"),
        shipped("f32"),
        common::root().join("tests/data/screw_aligned_int8.onnx"),
    ] {
        let info = partguard::infer::read_model_info(&path).unwrap();
        let (h, w) = (info.input.height, info.input.width);
        let (plain, prepared) = plain_and_prepared(&path, (h, w));
        let file = path.display();
        assert_eq!(count_ops(&plain, "OptSumPool"), 1, "{file}");
        assert_eq!(
            count_ops(&prepared, "OptSumPool"),
            0,
            "{file}: OptSumPool left"
        );
        assert_eq!(count_ops(&prepared, "RowSumPool"), 1, "{file}");
        let image = tract_ndarray::Array4::from_shape_fn((1, 3, h, w), |(_, c, y, x)| {
            ((x * 11 + y * 5 + c * 40 + ((x / 6 + y / 6) % 2) * 80) % 256) as f32 / 255.0
        });
        assert_same_values(&file.to_string(), plain, prepared, &image);
    }
}

/// The engine's preparation requantizes the int8 model's skip connections (byte maps dequantized,
/// concatenated and quantized again) by table, leaves out the ReLUs that feed a quantization at
/// zero point 0, and computes exactly what tract's own plan computes.
#[test]
fn byte_maps_requantized_by_table_give_tract_own_values() {
    use tract_onnx::prelude::*;
    let path = shipped("int8");
    let (plain, prepared) = plain_and_prepared(&path, (128, 128));
    let concats_of_dequantized = |m: &TypedModel| {
        m.nodes()
            .iter()
            .filter(|n| n.op().name() == "Concat")
            .filter(|n| {
                n.inputs
                    .iter()
                    .any(|i| m.node(i.node).op().name() == "DequantizeLinearF32")
            })
            .count()
    };
    assert!(concats_of_dequantized(&plain) > 0, "tract's plan has none");
    assert_eq!(concats_of_dequantized(&prepared), 0, "one left");
    assert!(count_ops(&prepared, "ByteTable") >= 2 * concats_of_dequantized(&plain));
    let relus = |m: &TypedModel| count_ops(m, "OptMaxByScalar");
    assert!(relus(&prepared) < relus(&plain), "no ReLU left out");
    let image = tract_ndarray::Array4::from_shape_fn((1, 3, 128, 128), |(_, c, y, x)| {
        ((x * 3 + y * 13 + c * 90 + ((x / 10 + y / 10) % 2) * 70) % 256) as f32 / 255.0
    });
    assert_same_values("int8 requantized", plain, prepared, &image);
}
