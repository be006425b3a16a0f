#!/usr/bin/env bash
# Sets up a fresh Debian machine for the aarch64 build and its emulated tests, on top of
# cross/setup-debian.sh: the rustup target, the cross gcc and arm64 libc, qemu-user (runs the test
# suite as aarch64) and qemu-system-arm (the whole-system test). Idempotent; run as root or with sudo.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bash "$here/setup-debian.sh"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
need=()
for pkg in gcc-aarch64-linux-gnu libc6-dev-arm64-cross linux-libc-dev-arm64-cross qemu-user \
    qemu-system-arm binutils-aarch64-linux-gnu; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
rustup target list --installed | grep -qx aarch64-unknown-linux-gnu ||
    rustup target add aarch64-unknown-linux-gnu
echo "aarch64 toolchain: ok ($(aarch64-linux-gnu-gcc -dumpversion), $(qemu-aarch64 --version | head -1))"
