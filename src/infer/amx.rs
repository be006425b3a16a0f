//! Which AMX kernel tract runs the int8 convolutions with on x86 cores that have AMX.
//!
//! tract 0.23 has two AMX int8 kernels, `avx512amx_mmm_i32_16x16` and `avx512amx_mmm_i32_8x8`, and
//! its dispatch tier (`amx_int8_preferred` in tract-linalg's `x86_64/mmm.rs`) takes the 8x8
//! wherever m (output channels) is under 16, "on small problems where tile padding dominates".
//! Our convolutions are not small problems: n is a whole feature map (16,384 positions at 128 x
//! 128), so setup is spread over thousands of tiles, and the 8x8 kernel is the slow one. Measured
//! on the shipped int8 model (Xeon with AMX, one thread, `profile_model`): the discriminative
//! network's 12-channel layers at 128 x 128 (m 12, k 108, n 16,384) take 4.45 ms with the 8x8,
//! 4.8 G multiply-adds a second, while a 16-channel layer of the same map with the 16x16 (m 16, k
//! 288, n 16,384) runs 108 G a second.
//!
//! [`AmxTier`] is one more rung on tract's own dispatch ladder (`tract_linalg::mmm_tiers`, the
//! registry tract's architectures declare their opinions in): above tract's AMX tier, it names the
//! 16x16 for every 32-bit integer product with more than one column, whatever m. The kernels
//! share their packing (`PackedAmxA`, `PackedI8K4`) and both accumulate exactly, so the values are
//! tract's bit for bit; only the tile changes. It applies where tract's AMX tier does (AMX int8
//! granted by the kernel, AVX-512 VNNI, AVX2, FMA); `TRACT_CPU_ISA=-amx-int8` takes both away,
//! and `PARTGUARD_AMX_TILE=tract` leaves the choice to tract (`tests/amx.rs` compares the two).

use tract_linalg::isa::{Arch, Isa, IsaSet};
use tract_linalg::mmm::{Query, Suitable};
use tract_linalg::mmm_tiers::MmmTier;
use tract_onnx::tract_core::internal::DatumType;

/// The kernel this tier names, by tract's name for it.
pub const KERNEL: &str = "avx512amx_mmm_i32_16x16";

/// Above tract's `avx512amx-int8` (7) and `avx512amx-bf16` (8, which answers f32 only).
const PRECEDENCE: u8 = 9;

/// Whether the tier speaks on a machine: where tract's own AMX int8 tier does.
fn applies(isa: &IsaSet) -> bool {
    isa.has(Isa::X86_64Avx2)
        && isa.has(Isa::X86_64Fma)
        && isa.has(Isa::X86_64Avx512f)
        && isa.has(Isa::X86_64Avx512Vnni)
        && isa.has(Isa::X86_64AmxInt8)
}

/// The environment variable that, set to `tract`, leaves the choice to tract's own tiers (read
/// when a model is optimized).
pub const ENV: &str = "PARTGUARD_AMX_TILE";

/// The 16x16 for 32-bit integer products with more than one column; no opinion otherwise (a
/// matrix-vector product, and every float product, stay with tract's tiers).
fn preferred(_: &IsaSet, acc: DatumType, query: &Query, _: &[Suitable]) -> Option<&'static str> {
    if std::env::var_os(ENV).is_some_and(|v| v == "tract") {
        return None;
    }
    (acc == DatumType::I32 && query.n != Some(1)).then_some(KERNEL)
}

/// The rung, registered in tract's tier registry when the program is linked.
pub struct AmxTier;

impl AmxTier {
    /// The tier's name in tract's ladder (as `RUST_LOG=tract_linalg=debug` lists it).
    pub const NAME: &'static str = "partguard-amx-int8-16x16";
}

inventory::submit! {
    MmmTier {
        arch: Some(Arch::X86_64),
        precedence: PRECEDENCE,
        name: AmxTier::NAME,
        applies,
        preferred,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_linalg::mmm_tiers;

    #[test]
    fn the_tier_is_on_the_x86_ladder_above_tracts_amx_tier() {
        let ladder: Vec<&str> = mmm_tiers::for_isa(
            &IsaSet::of_arch(Arch::X86_64)
                .with(Isa::X86_64Avx2)
                .with(Isa::X86_64Fma)
                .with(Isa::X86_64Avx512f)
                .with(Isa::X86_64Avx512Vnni)
                .with(Isa::X86_64AmxInt8),
        )
        .iter()
        .map(|t| t.name)
        .collect();
        let ours = ladder.iter().position(|n| *n == AmxTier::NAME);
        let tracts = ladder.iter().position(|n| *n == "avx512amx-int8");
        assert!(ours.is_some() && ours < tracts, "ladder: {ladder:?}");
    }
}
