//! Which tile tract runs the int8 convolutions with on x86 cores with AVX-512 VNNI or AMX.
//!
//! tract 0.23 has an 8x8 and a 16x16 int8 kernel for each of AVX-512 VNNI
//! (`avx512vnni_mmm_i32_*`) and AMX (`avx512amx_mmm_i32_*`). Its dispatch tiers (`*_preferred`
//! in tract-linalg's `x86_64/mmm.rs`) take the 8x8 wherever m (output channels) is under 16, and
//! for VNNI also wherever the core has one 512-bit FMA port, the 8x8 having "lower per-call
//! setup" on small problems. Our convolutions are not small problems: n is a whole feature map
//! (16,384 positions at 128 x 128), and what dominates the 8x8 there is a cost per tile of ~1-1.5
//! us, paid four times as often as with the 16x16: `perf annotate` puts most of the 8x8 kernel's
//! samples on the non-VEX `movd`/`movq` of its epilogue amid AVX code (an SSE/AVX transition);
//! the 16x16 kernels use the VEX forms. Measured on the shipped int8 model (Xeon, one thread,
//! `examples/profile_model`): the discriminative network's 12-channel layers at 128 x 128 (m 12,
//! k 108-216, n 16,384) take 2.5-4.5 ms each with tract's AMX 8x8 and 6.1-6.7 ms with its VNNI
//! 8x8, 0.5-0.8 ms with the 16x16 of either; the whole model 29.6 -> 15.5 ms (AMX), 49.6 -> 20.0
//! ms (VNNI without AMX).
//!
//! The tier below is one more rung on tract's own dispatch ladder (`tract_linalg::mmm_tiers`,
//! the registry tract's architectures declare their kernel choices in), above tract's VNNI and
//! AMX tiers: it names the 16x16 (AMX where the kernel grants it, VNNI otherwise) for every
//! 32-bit integer product with more than one column. The two tiles of one instruction set share
//! their packing and accumulate exactly, so the values are tract's bit for bit
//! (`tests/tiles.rs`); only the tile changes. Cores without AVX-512 VNNI (AVX2 only, AVX-VNNI)
//! have no 16x16 int8 kernel in tract and keep its choice. `PARTGUARD_INT8_TILE=tract` leaves
//! every choice to tract.

use tract_linalg::isa::{Arch, Isa, IsaSet};
use tract_linalg::mmm::{Query, Suitable};
use tract_linalg::mmm_tiers::MmmTier;
use tract_onnx::tract_core::internal::DatumType;

/// The environment variable that, set to `tract`, leaves the choice to tract's own tiers (read
/// when a model is optimized).
pub const ENV: &str = "PARTGUARD_INT8_TILE";

/// The tier's name in tract's ladder (as `RUST_LOG=tract_linalg=debug` lists the ladder).
pub const NAME: &str = "partguard-int8-16x16";

/// tract's 16x16 int8 kernel on a core with AMX int8 (granted by the OS).
pub const AMX_16X16: &str = "avx512amx_mmm_i32_16x16";

/// tract's 16x16 int8 kernel on a core with AVX-512 VNNI.
pub const VNNI_16X16: &str = "avx512vnni_mmm_i32_16x16";

/// Whether the tier speaks on a machine: where tract's AVX-512 VNNI tier does (its AMX tier needs
/// that and AMX int8).
fn applies(isa: &IsaSet) -> bool {
    isa.has(Isa::X86_64Avx2)
        && isa.has(Isa::X86_64Fma)
        && isa.has(Isa::X86_64Avx512f)
        && isa.has(Isa::X86_64Avx512Vnni)
}

/// The 16x16 for 32-bit integer products with more than one column; no opinion otherwise (a
/// matrix-vector product, and every float product, stay with tract's tiers).
fn preferred(isa: &IsaSet, acc: DatumType, query: &Query, _: &[Suitable]) -> Option<&'static str> {
    if acc != DatumType::I32 || query.n == Some(1) {
        return None;
    }
    if std::env::var_os(ENV).is_some_and(|v| v == "tract") {
        return None;
    }
    Some(if isa.has(Isa::X86_64AmxInt8) {
        AMX_16X16
    } else {
        VNNI_16X16
    })
}

// The rung, registered in tract's tier registry when the program is linked: above tract's
// `avx512amx-int8` (precedence 7) and `avx512amx-bf16` (8, which answers f32 only).
inventory::submit! {
    MmmTier {
        arch: Some(Arch::X86_64),
        precedence: 9,
        name: NAME,
        applies,
        preferred,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_linalg::mmm_tiers;

    fn names(isa: IsaSet) -> Vec<&'static str> {
        mmm_tiers::for_isa(&isa).iter().map(|t| t.name).collect()
    }

    #[test]
    fn the_tier_sits_above_tracts_on_cores_with_avx512_vnni() {
        let vnni = IsaSet::of_arch(Arch::X86_64)
            .with(Isa::X86_64Avx2)
            .with(Isa::X86_64Fma)
            .with(Isa::X86_64Avx512f)
            .with(Isa::X86_64Avx512Vnni);
        for isa in [vnni, vnni.with(Isa::X86_64AmxInt8)] {
            let ladder = names(isa);
            assert_eq!(ladder.first(), Some(&NAME), "{ladder:?}");
        }
        let avx2 = IsaSet::of_arch(Arch::X86_64)
            .with(Isa::X86_64Avx2)
            .with(Isa::X86_64Fma);
        assert!(!names(avx2).contains(&NAME));
        assert!(!names(IsaSet::of_arch(Arch::Aarch64)).contains(&NAME));
    }
}
