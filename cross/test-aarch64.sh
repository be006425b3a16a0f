#!/usr/bin/env bash
# Runs the test suite as aarch64 under qemu-user on real board cores (needs cross/setup-aarch64.sh).
# qemu's default "max" CPU has SVE, which no target board has, so QEMU_CPU is always set:
# cortex-a76 (Raspberry Pi 5) and cortex-a72 (Raspberry Pi 4: no dot product, other tract kernels).
#
#   cross/test-aarch64.sh        CI set (about 10 min on 2 cores):
#     cortex-a76: unit tests; config, convert, preprocess, replay, schedule; the model tests (both
#                 shipped models on the samples, outputs against the x86_64 reference); the reject
#                 actuator thread in real time; the aarch64 binary's check and error paths;
#     cortex-a72: the outputs against the x86_64 reference, the engine's int8 ops against tract's,
#                 one thread against three;
#     onnxruntime engine (feature onnxruntime, dynamically linked, PyPI aarch64 libonnxruntime.so):
#                 tract vs ONNX Runtime on two samples, f32 and int8 (tests/engines.rs).
#   cross/test-aarch64.sh full   the whole suite on cortex-a76, then the model tests on cortex-a72
#                                (about 45 min: emulated, one inference takes ~12 s).
#
# Emulated time runs ~100x slower for the model, so PARTGUARD_TEST_TIME_SCALE (default 100)
# stretches the real-time tests' part rates, delays and windows alike (tests/common/mod.rs). The
# CI set leaves out the tests whose line must keep pace with inference (tests/reject.rs's pipeline
# runs, the default run, calibrate/SIGHUP, the allocation count): they run natively in CI and here
# with `full`.
set -euo pipefail
cd "$(dirname "$0")/.."
export PARTGUARD_TEST_TIME_SCALE="${PARTGUARD_TEST_TIME_SCALE:-100}"
# The tests that run the binary start it under the emulator too (qemu-user does not follow exec).
export PARTGUARD_TEST_RUNNER="${PARTGUARD_TEST_RUNNER:-$(command -v qemu-aarch64)}"
target=aarch64-unknown-linux-gnu
t() { cargo test --release --target "$target" "$@"; }
# The onnxruntime engine against tract (feature onnxruntime), with the PyPI wheel's aarch64
# libonnxruntime.so (cross/setup-onnxruntime.sh). It reads /proc/cpuinfo and crashes on the host's
# x86 one: the qemu prefix holds a Cortex-A76 cpuinfo beside the cross toolchain's libraries.
# The test builds are dynamically linked (only the release binary is static, cross/build-aarch64.sh),
# so this one shares every dependency with the rest of the suite.
onnxruntime() {
    echo "== aarch64 onnxruntime engine (dynamically linked), QEMU_CPU=cortex-a76"
    bash cross/setup-onnxruntime.sh
    ORT_DYLIB_PATH="$PWD/target/onnxruntime/aarch64/libonnxruntime.so.1.32.0" \
        QEMU_LD_PREFIX="$PWD/target/onnxruntime/qemu-prefix" QEMU_CPU=cortex-a76 \
        t --features onnxruntime --test engines -- --nocapture
}
case "${1:-ci}" in
ci)
    echo "== aarch64, QEMU_CPU=cortex-a76"
    export QEMU_CPU=cortex-a76
    t --lib --bins --test config --test convert --test preprocess --test replay --test schedule --test trigger --test aligned
    t --test model -- --nocapture
    t --test reject actuator
    t --test cli -- check_reports config_errors missing_camera
    echo "== aarch64, QEMU_CPU=cortex-a72"
    QEMU_CPU=cortex-a72 t --test model -- --nocapture outputs_match int8_patches int8_products multithreaded
    onnxruntime
    ;;
full)
    echo "== aarch64, QEMU_CPU=cortex-a76: whole suite, time scale $PARTGUARD_TEST_TIME_SCALE"
    QEMU_CPU=cortex-a76 t
    echo "== aarch64, QEMU_CPU=cortex-a72: model tests"
    QEMU_CPU=cortex-a72 t --test model -- --nocapture
    onnxruntime
    ;;
*)
    echo "usage: $0 [ci|full]" >&2
    exit 2
    ;;
esac
