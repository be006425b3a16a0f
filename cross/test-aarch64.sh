#!/usr/bin/env bash
# Runs the test suite as aarch64 under qemu-user on real board cores (needs cross/setup-aarch64.sh):
#   cortex-a76 (Raspberry Pi 5): the whole suite;
#   cortex-a72 (Raspberry Pi 4): the model tests (tract picks other kernels there: no dot product).
# qemu's default "max" CPU has SVE, which no target board has, so QEMU_CPU is always set.
# Emulated, one inference takes seconds: PARTGUARD_TEST_TIME_SCALE (default 40) stretches the
# real-time tests' part rates, delays and windows alike (tests/common/mod.rs).
# Usage: cross/test-aarch64.sh [full|model]   (default: both CPUs as above)
set -euo pipefail
cd "$(dirname "$0")/.."
export PARTGUARD_TEST_TIME_SCALE="${PARTGUARD_TEST_TIME_SCALE:-40}"
target=aarch64-unknown-linux-gnu
what="${1:-all}"
if [ "$what" = all ] || [ "$what" = full ]; then
    echo "== aarch64 (QEMU_CPU=cortex-a76): whole test suite, time scale $PARTGUARD_TEST_TIME_SCALE"
    QEMU_CPU=cortex-a76 cargo test --release --target "$target"
fi
if [ "$what" = all ] || [ "$what" = model ]; then
    echo "== aarch64 (QEMU_CPU=cortex-a72): model tests"
    QEMU_CPU=cortex-a72 cargo test --release --target "$target" --test model -- --nocapture
fi
