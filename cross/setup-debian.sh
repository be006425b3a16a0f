#!/usr/bin/env bash
# Installs the system packages partguard's native build needs on a fresh Debian machine with Rust:
# libclang for the `v4l` crate's bindgen (V4L2 headers come with linux-libc-dev); mosquitto (a real MQTT
# broker) and chromium (a real headless browser) for the tests of `[mqtt]` and the page; openssl makes
# the test CA of the MQTT-over-TLS test.
# Idempotent; run as root (or with sudo).
set -euo pipefail
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
need=()
for pkg in libclang-dev clang linux-libc-dev pkg-config mosquitto mosquitto-clients chromium openssl; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
echo "system packages: ok"
