#!/usr/bin/env bash
# ONNX Runtime for the `onnxruntime` feature's tests: libonnxruntime.so from the PyPI wheels
# (x86_64 for the native tests, aarch64 for the tests under qemu-user), nothing built.
#
#   bash cross/setup-onnxruntime.sh      -> target/onnxruntime/{x86_64,aarch64}/libonnxruntime.so.VERSION
#                                           target/onnxruntime/qemu-prefix (for qemu-aarch64 -L)
#
# onnxruntime for aarch64 reads /proc/cpuinfo at start and crashes on the host's x86 one under
# qemu-user; qemu looks up every file it opens under its -L prefix first, so the prefix holds a
# Cortex-A76 cpuinfo (Raspberry Pi 5) beside links to the aarch64 libraries of the cross toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
version="${ORT_VERSION:-1.32.0}"
out="target/onnxruntime"
mkdir -p "$out"

fetch() { # platform arch
    local platform="$1" arch="$2"
    local lib="$out/$arch/libonnxruntime.so.$version"
    [ -f "$lib" ] && return 0
    mkdir -p "$out/wheels" "$out/$arch"
    python3 -m pip download -q "onnxruntime==$version" --platform "$platform" \
        --python-version 3.11 --only-binary=:all: --no-deps -d "$out/wheels"
    python3 - "$out/wheels" "$arch" "$lib" "$version" <<'EOF'
import pathlib, sys, zipfile
wheels, arch, lib, version = sys.argv[1:]
wheel = next(p for p in pathlib.Path(wheels).glob(f"onnxruntime-{version}-*{arch}.whl"))
with zipfile.ZipFile(wheel) as z:
    pathlib.Path(lib).write_bytes(z.read(f"onnxruntime/capi/libonnxruntime.so.{version}"))
EOF
}

fetch manylinux_2_28_x86_64 x86_64
fetch manylinux_2_28_aarch64 aarch64

# One prefix per emulated core: onnxruntime picks its kernels from the cpuinfo (a Cortex-A72's has no
# dot product; onnxruntime's SDOT kernels under QEMU_CPU=cortex-a72 die with SIGILL).
make_prefix() { # folder, cpu part, cpu variant, features
    mkdir -p "$1/proc"
    for d in lib lib64 usr; do
        [ -e "/usr/aarch64-linux-gnu/$d" ] && ln -sfn "/usr/aarch64-linux-gnu/$d" "$1/$d"
    done
    for cpu in 0 1 2 3; do
        printf 'processor\t: %s\nBogoMIPS\t: 108.00\n' "$cpu"
        printf 'Features\t: %s\n' "$4"
        printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: %s\nCPU part\t: %s\nCPU revision\t: 1\n\n' "$3" "$2"
    done >"$1/proc/cpuinfo"
}
prefix="$out/qemu-prefix"
make_prefix "$prefix" 0xd0b 0x4 "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"
make_prefix "$out/qemu-prefix-a72" 0xd08 0x0 "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"
echo "onnxruntime $version: $(ls "$out"/x86_64/libonnxruntime.so.* "$out"/aarch64/libonnxruntime.so.*)"
echo "qemu prefixes with a Cortex-A76 / Cortex-A72 /proc/cpuinfo: $prefix, $out/qemu-prefix-a72"
