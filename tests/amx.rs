//! On x86 cores with AMX int8 the engine runs every int8 convolution with tract's 16x16 AMX tile
//! (`partguard::infer::amx`), where tract itself picks its 8x8 tile for fewer than 16 output
//! channels; the values are the same bit for bit. Its own test binary: it sets
//! `PARTGUARD_AMX_TILE` between two preparations of the same model.

mod common;

use tract_onnx::prelude::*;

/// The kernel each 32-bit integer matrix product of `model` runs, by tract's name.
fn int8_kernels(model: &TypedModel) -> Vec<String> {
    model
        .nodes()
        .iter()
        .filter(|n| n.op().name() == "OptMatMul")
        .filter_map(|n| {
            let debug = format!("{:?}", n.op());
            let at = debug.find("avx512amx_mmm_i32_")?;
            let name: String = debug[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            Some(name)
        })
        .collect()
}

fn run_flat(model: TypedModel, image: &tract_ndarray::Array4<f32>) -> Vec<u32> {
    let out = model
        .into_runnable()
        .unwrap()
        .run(tvec![Tensor::from(image.clone()).into()])
        .unwrap();
    out.iter()
        .flat_map(|t| {
            t.to_plain_array_view::<f32>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn int8_convolutions_run_the_16x16_amx_tile_with_tracts_values() {
    #[cfg(target_arch = "x86_64")]
    let amx = tract_linalg::x86_64::amx::has_amx_int8();
    #[cfg(not(target_arch = "x86_64"))]
    let amx = false;
    if !amx {
        eprintln!("no AMX int8 on this core: tract's tiers and ours pick the same kernels");
        return;
    }
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
        std::env::remove_var(partguard::infer::amx::ENV);
        let ours = prepare();
        std::env::set_var(partguard::infer::amx::ENV, "tract");
        let tracts = prepare();
        std::env::remove_var(partguard::infer::amx::ENV);

        let (k_ours, k_tracts) = (int8_kernels(&ours), int8_kernels(&tracts));
        assert!(!k_ours.is_empty(), "{file}: no AMX int8 product");
        assert!(
            k_ours.iter().all(|k| k == partguard::infer::amx::KERNEL),
            "{file}: {k_ours:?}"
        );
        assert!(
            k_tracts.iter().any(|k| k == "avx512amx_mmm_i32_8x8"),
            "{file}: tract's own choice has no 8x8 tile: {k_tracts:?}"
        );

        let image = tract_ndarray::Array4::from_shape_fn((1, 3, hw.0, hw.1), |(_, c, y, x)| {
            ((x * 7 + y * 3 + c * 50 + ((x / 4 + y / 4) % 2) * 90) % 256) as f32 / 255.0
        });
        let (a, b) = (run_flat(ours, &image), run_flat(tracts, &image));
        assert_eq!(a.len(), hw.0 * hw.1 + 1, "{file}");
        let differ = a.iter().zip(&b).filter(|(x, y)| x != y).count();
        assert_eq!(
            differ, 0,
            "{file}: {differ} values differ between the two tiles"
        );
    }
}
