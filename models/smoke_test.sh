#!/usr/bin/env bash
# Smoke test of the model pipeline: train -> export -> quantize -> load and run in tract (through the
# partguard binary). A few steps on the shipped sample images at 64x64, so it cannot silently break.
#
#   bash models/smoke_test.sh            # creates .venv-models from models/requirements.txt if needed
#   PYTHON=/path/to/python bash models/smoke_test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
    if [ ! -x .venv-models/bin/python ]; then
        python3 -m venv .venv-models
        .venv-models/bin/pip install -q -r models/requirements.txt
    fi
    PYTHON=.venv-models/bin/python
fi
out=$(mktemp -d)
echo "smoke: working in $out"
trap '[ -n "${KEEP:-}" ] || rm -rf "$out"' EXIT
# the training config is checked: a misspelt key or a wrong type is refused, naming file and key
echo '{"epochs": 1, "lr_milstones": [0.5]}' > "$out/typo.json"
if "$PYTHON" models/train.py --config "$out/typo.json" --data examples/samples/bottle/good \
    --out "$out/typo" 2> "$out/typo.txt"; then
    echo "smoke: a config with an unknown key was accepted" >&2; exit 1
fi
grep -q "typo.json: unknown key(s) lr_milstones" "$out/typo.txt"
echo '{"epochs": "10"}' > "$out/type.json"
if "$PYTHON" models/train.py --config "$out/type.json" --data examples/samples/bottle/good \
    --out "$out/type" 2> "$out/type.txt"; then
    echo "smoke: a config with a string for epochs was accepted" >&2; exit 1
fi
grep -q "type.json: epochs is '10'; it must be of type int" "$out/type.txt"
# The training folder comes from `partguard collect` (the samples replayed as a camera); its
# manifest's camera controls end up in the model and `run` warns when the camera's differ. A replay
# has no controls, so a camera's are written into the manifest here (the VM test records real ones).
cat > "$out/collect.toml" <<EOF
[source]
kind = "replay"
path = "$PWD/examples/samples/bottle/good"
[model]
path = "$PWD/models/bottle_sspcab_f32.onnx"
[decision]
threshold = 0.2
[reject]
kind = "simulated"
pulse_ms = 50
EOF
cargo run --release --quiet -- --config "$out/collect.toml" collect --out "$out/parts" --frames 4
"$PYTHON" - "$out/parts/manifest.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
assert [i["file"] for i in m["sessions"][0]["images"]] == [f"00000{k}.png" for k in range(1, 5)], m
m["sessions"][0]["camera_controls"] = {"brightness": "40", "auto_exposure": '"Manual Mode"'}
json.dump(m, open(sys.argv[1], "w"))
m["label"] = "scratch"
json.dump(m, open(sys.argv[1] + ".scratch", "w"))
PY
mkdir "$out/scratch" && cp "$out"/parts/*.png "$out/scratch/"
mv "$out/parts/manifest.json.scratch" "$out/scratch/manifest.json"
if "$PYTHON" models/train.py --config models/configs/smoke.json --data "$out/scratch" --out "$out/no" \
    2> "$out/scratch.txt"; then
    echo "smoke: training on parts collected as defects was accepted" >&2; exit 1
fi
grep -q "collected as 'scratch'" "$out/scratch.txt"
"$PYTHON" models/train.py --config models/configs/smoke.json --data "$out/parts" \
    --out "$out/run" --precise-bn-batches 4
grep -q '"brightness": "40"' "$out/run/config.json"
test -f "$out/run/last.pt" && test -f "$out/run/final.pt"
# resume: one more epoch from the checkpoint
"$PYTHON" models/train.py --config models/configs/smoke.json --data "$out/parts" \
    --out "$out/run" --epochs 3 --precise-bn-batches 4 > "$out/resume.txt"
grep -q "start_epoch 2" "$out/resume.txt"
# the packed form (what a GPU machine without the dataset trains from) gives the same tensors
"$PYTHON" models/train.py --config models/configs/smoke.json --data examples/samples/bottle/good \
    --test examples/samples/bottle --pack "$out/pack.npz"
"$PYTHON" models/train.py --config models/configs/smoke.json --data "$out/pack.npz" --test "$out/pack.npz" \
    --out "$out/run_npz" --epochs 1 --precise-bn-batches 1 > "$out/npz.txt"
grep -q "test_image_auroc" "$out/npz.txt"
# fine-tuning: weights from the first run's final.pt (its hash recorded), warp and relight
# augmentations on
"$PYTHON" - "$out" <<'PY'
import json, sys
cfg = json.load(open("models/configs/smoke.json"))
cfg.update(init_from=sys.argv[1] + "/run/final.pt", warp_augment=1.5, relight_augment=1.0, relight_prob=1.0,
           relight_target="original", epochs=1)
json.dump(cfg, open(sys.argv[1] + "/ft.json", "w"))
PY
"$PYTHON" models/train.py --config "$out/ft.json" --data examples/samples/bottle/good --out "$out/run_ft" \
    --precise-bn-batches 1 > "$out/ft.txt"
grep -q '"init_sha256"' "$out/run_ft/config.json"
"$PYTHON" models/export.py --run "$out/run" --out "$out" --name smoke --calib examples/samples/bottle/good --n-calib 4
for p in f32 int8; do
    cargo run --release --quiet -- eval --model "$out/smoke_$p.onnx" --data examples/samples/bottle --no-pixel \
        | tee "$out/eval_$p.txt"
    grep -q "image AUROC: " "$out/eval_$p.txt"
done
# the operating-point table, from a checkpoint (PyTorch) and from the exported model (ONNX Runtime)
"$PYTHON" models/evaluate.py --data "$out/pack.npz" "$out/run/final.pt" "$out/smoke_f32.onnx" \
    | tee "$out/evaluate.txt"
test "$(grep -c '99th percentile' "$out/evaluate.txt")" = 2
"$PYTHON" - "$out/smoke_int8.onnx" <<'PY'
import sys, onnx
m = onnx.load(sys.argv[1])
ops = {n.op_type for n in m.graph.node}
meta = {p.key: p.value for p in m.metadata_props}
assert "QLinearConv" in ops, ops
# ReLU fused into QLinearConv, pooling on uint8: the only float Relus left follow the float
# convolutions (each sub-network's first, kept f32 by export.py) and the SSPCAB block's one
producer = {o: n for n in m.graph.node for o in n.output}
float_relu = [n for n in m.graph.node if n.op_type == "Relu"]
after_conv = [n for n in float_relu if producer[n.input[0]].op_type == "Conv"]
assert sum(n.op_type == "Conv" for n in m.graph.node) == 2, ops
assert len(float_relu) - len(after_conv) <= 1, [n.name for n in float_relu]
assert meta["partguard.precision"] == "int8" and meta["partguard.input_shape"] == "1,3,64,64", meta
print("smoke: int8 model has QLinearConv and partguard metadata")
PY
# run on a source whose controls differ from the training images' (a replay: none) warns, naming them
sed "s#$PWD/models/bottle_sspcab_f32.onnx#$out/smoke_f32.onnx#" "$out/collect.toml" > "$out/run.toml"
RUST_LOG=warn cargo run --release --quiet -- --config "$out/run.toml" run --frames 2 \
    > /dev/null 2> "$out/run_warn.txt"
grep -q 'trained under: auto_exposure: now not set, was "Manual Mode"; brightness: now not set, was 40' \
    "$out/run_warn.txt" \
    || { cat "$out/run_warn.txt" >&2; echo "smoke: run did not warn about the camera controls" >&2; exit 1; }
echo "models smoke test: OK"
