#!/usr/bin/env bash
# Guest instructions per inference of the shipped models under qemu-user, on emulated Cortex-A76
# and Cortex-A72: a stable proxy for board speed (issue 24), next to the emulated wall time.
# Each model runs `partguard bench` twice, with F1 and F2 frames, under the instruction-counting
# plugin (benches/qemu_insn_plugin.c); (count(F2) - count(F1)) / (F2 - F1) is one frame's
# instructions (convert + preprocess + inference + decision), without loading and planning.
#   bash benches/emulated_instructions.sh [MODEL ...]     (default: the shipped f32 and int8)
# Needs the aarch64 binary (cross/build-aarch64.sh) and qemu-user. ENGINES="tract onnxruntime"
# adds ONNX Runtime, one thread like tract: it needs a dynamically linked build
# (cargo build --release --target aarch64-unknown-linux-gnu --features onnxruntime) and the
# aarch64 library with its qemu prefix (cross/setup-onnxruntime.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${PARTGUARD_AARCH64:-target/aarch64-unknown-linux-gnu/release/partguard}"
[ -x "$bin" ] || { echo "build the aarch64 binary first (cross/build-aarch64.sh)" >&2; exit 1; }
plugin="target/qemu-plugins/libinsn.so"
mkdir -p "$(dirname "$plugin")"
gcc -shared -fPIC -O2 -o "$plugin" benches/qemu_insn_plugin.c
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(models/bottle_sspcab_f32.onnx models/bottle_sspcab_int8.onnx)
f1="${F1:-1}"
f2="${F2:-3}"
engines=(${ENGINES:-tract})
ort="$PWD/target/onnxruntime"
count() { # CPU ENGINE MODEL FRAMES -> "instructions inference_median_ms"
    local out prefix="$ort/qemu-prefix"
    # ONNX Runtime reads /proc/cpuinfo: the prefix holds the emulated core's.
    [ "$1" = cortex-a72 ] && prefix="$ort/qemu-prefix-a72"
    out="$(RUST_LOG=error QEMU_CPU="$1" QEMU_LD_PREFIX="$prefix" \
        ORT_DYLIB_PATH="$ort/aarch64/libonnxruntime.so.1.32.0" \
        qemu-aarch64 -plugin "$plugin" -d plugin "$bin" bench \
        --engine "$2" --threads 1 --model "$3" --frames "$4" --warmup 0 2>&1)"
    echo "$(sed -n 's/^guest instructions: //p' <<<"$out") $(awk '$1 == "inference" {print $3}' <<<"$out" | head -1)"
}
printf '%-12s %-12s %-28s %16s %14s\n' cpu engine model "instr/frame" "emulated ms"
for cpu in cortex-a76 cortex-a72; do
    for e in "${engines[@]}"; do
        for m in "${models[@]}"; do
            read -r n1 _ <<<"$(count "$cpu" "$e" "$m" "$f1")"
            read -r n2 ms <<<"$(count "$cpu" "$e" "$m" "$f2")"
            printf '%-12s %-12s %-28s %16d %14s\n' "$cpu" "$e" "$(basename "$m")" \
                $(( (n2 - n1) / (f2 - f1) )) "$ms"
        done
    done
done
