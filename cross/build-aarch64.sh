#!/usr/bin/env bash
# Builds the release aarch64 binary (static, stripped) and the deployment tarball:
#   target/aarch64-unknown-linux-gnu/release/partguard
#   target/dist/partguard-<version>-aarch64.tar.gz  (binary, example config, model, systemd unit,
#   install script, licenses)
# Needs `bash cross/setup-aarch64.sh` first.
set -euo pipefail
cd "$(dirname "$0")/.."
target=aarch64-unknown-linux-gnu
# +crt-static on the final link only: the dependencies are the ones the aarch64 tests use.
cargo rustc --release --target "$target" --bin partguard -- -C target-feature=+crt-static
bin="target/$target/release/partguard"
aarch64-linux-gnu-strip "$bin"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
name="partguard-$version-aarch64"
stage="target/dist/$name"
rm -rf "$stage"
mkdir -p "$stage/models" "$stage/samples"
cp "$bin" "$stage/"
cp models/bottle_sspcab_f32.onnx models/bottle_sspcab_int8.onnx "$stage/models/"
cp models/README.md "$stage/models/MODEL-CARD.md"
cp -r examples/samples/bottle "$stage/samples/"
cp examples/samples/README.md examples/samples/LICENSE-MVTec-AD.txt "$stage/samples/"
cp cross/partguard.service cross/install.sh LICENSE-MIT LICENSE-APACHE "$stage/"
# The example config with paths for the installed layout (/etc/partguard, /usr/local/share/partguard).
sed -e 's#^path = "samples/bottle"#path = "/usr/local/share/partguard/samples/bottle"#' \
    -e 's#^path = "../models/bottle_sspcab_f32.onnx"#path = "/usr/local/share/partguard/models/bottle_sspcab_f32.onnx"#' \
    examples/partguard.toml >"$stage/partguard.toml"
tar -C target/dist -czf "target/dist/$name.tar.gz" "$name"
if aarch64-linux-gnu-readelf -l "$stage/partguard" | grep -q INTERP; then
    echo "error: $stage/partguard is dynamically linked; the boards need the static binary" >&2
    exit 1
fi
linkage=static
echo "binary: $bin ($(stat -c %s "$bin") bytes, aarch64, $linkage, stripped)"
echo "tarball: target/dist/$name.tar.gz ($(stat -c %s "target/dist/$name.tar.gz") bytes)"
