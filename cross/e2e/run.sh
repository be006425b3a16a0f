#!/usr/bin/env bash
# Whole-system test: boots Debian's arm64 kernel under qemu-system-aarch64 (-M virt, cortex-a72)
# with the vivid V4L2 driver and the PL061 GPIO controller. In the guest, examples/vivid_feed.rs
# shows real good and defective part images, one after the other, on vivid's HDMI loop and
# triggers the real static aarch64 partguard binary (`run`, /dev/video0 HDMI input, reject on
# /dev/gpiochip0 line 3) once per image. The host checks, through QEMU's pl061_set_output trace,
# one reject pulse per defective image and none for good ones, in order, at the configured delay
# after each trigger and of the configured width (cross/e2e/verify.py).
# Needs cross/setup-aarch64.sh and cross/build-aarch64.sh. Prints the guest console on failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$PWD"
work="target/e2e"
cache="$work/cache"
mkdir -p "$cache"
# The shipped binary: the static one cross/build-aarch64.sh put in the tarball's folder (the one in
# target/aarch64-unknown-linux-gnu/release is relinked dynamically by the aarch64 test builds).
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
bin="target/dist/partguard-$version-aarch64/partguard"
[ -x "$bin" ] || { echo "e2e: build the aarch64 binary first (cross/build-aarch64.sh)" >&2; exit 1; }
# The guest has no C library: the feeder is linked static too (final link only, like the binary).
cargo rustc --release --quiet --target aarch64-unknown-linux-gnu --example vivid_feed -- \
    -C target-feature=+crt-static
feed="target/aarch64-unknown-linux-gnu/release/examples/vivid_feed"
# The parts, in the order shown: labels are the folder names (good = good part).
images="good/000.png broken_large/000.png good/001.png contamination/000.png contamination/001.png"

# Kernel and busybox from Debian's arm64 archive (the kernel version is whatever the metapackage
# names today: old ABIs vanish from the archive).
if [ ! -d "$cache/kernel" ] || [ ! -d "$cache/busybox" ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    dpkg --print-foreign-architectures | grep -qx arm64 || $SUDO dpkg --add-architecture arm64
    $SUDO apt-get update -qq
    kpkg="$(apt-cache depends linux-image-arm64:arm64 | sed -n 's/.*Depends: \(linux-image-[0-9].*-arm64\).*/\1/p' | head -1)"
    (cd "$cache" && rm -f ./*.deb && apt-get download "$kpkg:arm64" busybox-static:arm64 2>/dev/null)
    rm -rf "$cache/kernel" "$cache/busybox"
    dpkg -x "$cache"/linux-image-*.deb "$cache/kernel"
    dpkg -x "$cache"/busybox-static_*.deb "$cache/busybox"
fi
kernel="$(ls "$cache"/kernel/boot/vmlinuz-*)"

run="$work/run"
rm -rf "$run"
mkdir -p "$run/results"
files=()
for i in $images; do files+=("e2e/$i=examples/samples/bottle/$i"); done
echo $images >"$run/images.txt"
python3 cross/e2e/initramfs.py "$run/initramfs.cpio.gz" "$cache/kernel" "$cache/busybox/bin/busybox" \
    vivid 9p 9pnet_virtio virtio_mmio -- \
    init=cross/e2e/init.sh e2e/partguard="$bin" e2e/vivid_feed="$feed" e2e/e2e.toml=cross/e2e/e2e.toml e2e/collect.toml=cross/e2e/collect.toml \
    e2e/bottle_sspcab_f32.onnx=models/bottle_sspcab_f32.onnx e2e/images.txt="$run/images.txt" "${files[@]}"

start=$(date +%s)
set +e
timeout 900 qemu-system-aarch64 -M virt -cpu cortex-a72 -smp 2 -m 1024 -accel tcg -nographic \
    -no-reboot -nic none -kernel "$kernel" -initrd "$run/initramfs.cpio.gz" \
    -append "console=ttyAMA0 rdinit=/init panic=-1 quiet" \
    -fsdev local,id=res,path="$run/results",security_model=none \
    -device virtio-9p-device,fsdev=res,mount_tag=results \
    -msg timestamp=on -trace pl061_set_output -D "$run/trace.log" >"$run/console.log" 2>&1
qrc=$?
set -e
wall=$(( $(date +%s) - start ))
fail() {
    echo "e2e FAILED: $*" >&2
    echo "---- guest console ----" >&2; cat "$run/console.log" >&2
    for f in guest-env.txt check.txt dark.txt bright.txt missing.txt range.txt feed.log feed.txt run.txt run.log busy.txt; do
        [ -f "$run/results/$f" ] && { echo "---- $f ----" >&2; cat "$run/results/$f" >&2; }
    done
    exit 1
}
[ "$qrc" -eq 0 ] || fail "qemu exited with $qrc after $wall s"
[ "$(cat "$run/results/check.rc" 2>/dev/null)" = 0 ] || fail "partguard check failed"
[ "$(cat "$run/results/feed.rc" 2>/dev/null)" = 0 ] || fail "vivid_feed failed"
[ "$(cat "$run/results/run.rc" 2>/dev/null)" = 0 ] || fail "partguard run failed"
python3 cross/e2e/verify.py "$run" || fail "the reject line does not match partguard's decisions"
echo "e2e: OK in $wall s (boot + check + $(wc -w <"$run/images.txt") part images through vivid's loop, emulated cortex-a72)"
