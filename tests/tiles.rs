//! On x86 cores with AVX-512 VNNI (and AMX) the engine runs every int8 convolution with tract's
//! 16x16 int8 tile (`partguard::infer::tiles`), where tract itself picks its 8x8 tile for fewer
//! than 16 output channels; the values are the same bit for bit. Its own test binary: it sets
//! `PARTGUARD_INT8_TILE` between two preparations of the same model, and runs itself again with
//! the core's AMX taken away (`TRACT_CPU_ISA=-amx-int8`, read once per process) for the VNNI leg.

mod common;

use common::values::{assert_same_values, varied_image};
use partguard::infer::tiles;
use tract_onnx::prelude::*;

const TEST: &str = "int8_convolutions_run_16x16_tiles_with_tracts_values";

/// The int8 kernel each matrix product of `model` runs, by tract's name.
fn int8_kernels(model: &TypedModel) -> Vec<String> {
    model
        .nodes()
        .iter()
        .filter(|n| n.op().name() == "OptMatMul")
        .filter_map(|n| {
            let debug = format!("{:?}", n.op());
            let at = debug.find("_mmm_i32_")?;
            let start = debug[..at]
                .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(0, |i| i + 1);
            let name: String = debug[start..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            Some(name)
        })
        .collect()
}

#[cfg(target_arch = "x86_64")]
fn expected_kernel() -> Option<&'static str> {
    if !std::arch::is_x86_feature_detected!("avx512vnni") {
        return None;
    }
    let amx_removed = std::env::var("TRACT_CPU_ISA").is_ok_and(|v| v.contains("-amx-int8"));
    Some(
        if tract_linalg::x86_64::amx::has_amx_int8() && !amx_removed {
            tiles::AMX_16X16
        } else {
            tiles::VNNI_16X16
        },
    )
}

#[cfg(not(target_arch = "x86_64"))]
fn expected_kernel() -> Option<&'static str> {
    None
}

#[test]
fn int8_convolutions_run_16x16_tiles_with_tracts_values() {
    let Some(kernel) = expected_kernel() else {
        eprintln!("no AVX-512 VNNI on this core: tract's tiers choose, as without partguard's");
        return;
    };
    for file in [
        "models/bottle_sspcab_int8.onnx",
        "tests/data/screw_aligned_int8.onnx",
    ] {
        let path = common::root().join(file);
        let info = partguard::infer::read_model_info(&path).unwrap();
        let hw = (info.input.height, info.input.width);
        let prepare = || {
            let model = tract_onnx::onnx().model_for_path(&path).unwrap();
            partguard::infer::prepare_for_tract(model, hw).unwrap()
        };
        std::env::remove_var(tiles::ENV);
        let ours = prepare();
        std::env::set_var(tiles::ENV, "tract");
        let tracts = prepare();
        std::env::remove_var(tiles::ENV);

        let (k_ours, k_tracts) = (int8_kernels(&ours), int8_kernels(&tracts));
        assert!(!k_ours.is_empty(), "{file}: no int8 product");
        assert!(k_ours.iter().all(|k| k == kernel), "{file}: {k_ours:?}");
        assert!(
            k_tracts.iter().any(|k| k.ends_with("_8x8")),
            "{file}: tract's own choice has no 8x8 tile: {k_tracts:?}"
        );

        let label = format!("{file}, the 16x16 tile against tract's choice");
        assert_same_values(&label, ours, tracts, &varied_image(hw.0, hw.1));
    }
    // The VNNI leg on a core with AMX: this test again, in a process that does not see the AMX.
    if kernel == tiles::AMX_16X16 {
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new(exe)
            .args(["--exact", TEST, "--nocapture", "--test-threads", "1"])
            .env("TRACT_CPU_ISA", "-amx-int8")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "the VNNI leg failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
