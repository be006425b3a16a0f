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
echo '{"upsample": "cubic"}' > "$out/mode.json"
if "$PYTHON" models/train.py --config "$out/mode.json" --data examples/samples/bottle/good \
    --out "$out/mode" 2> "$out/mode.txt"; then
    echo "smoke: a config with upsample \"cubic\" was accepted" >&2; exit 1
fi
grep -q "mode.json: upsample is 'cubic'; use one of bilinear, nearest" "$out/mode.txt"
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
# verdict.py's rules, the held-out split, the input shape and the synthesis at a non-square shape
"$PYTHON" models/test_recipe.py
# four images: nothing can be held out, and the verdict says so
grep -q "verdict: retrain with more images (fewer than 8 images" "$out/run/train.log"
# a grey camera with a wide frame (GREY, 3:2): grey PNGs, the model's input keeps the aspect ratio
# (96x64 at input_size 96), the held-out images get a verdict, and the firmware runs the model
"$PYTHON" - "$out/grey" <<'PY'
import sys
from pathlib import Path
from PIL import Image
out = Path(sys.argv[1])
for folder in ["good", "contamination"]:
    (out / folder).mkdir(parents=True)
src = sorted(Path("examples/samples/bottle").glob("*/*.png"))
good = [p for p in src if p.parent.name == "good"]
for i in range(12):  # 12 grey 3:2 crops of the good samples
    with Image.open(good[i % len(good)]) as im:
        x = 40 * (i // len(good))
        im.convert("L").crop((x, 100, x + 600, 500)).save(out / "good" / f"{i:03d}.png")
for i, p in enumerate(q for q in src if q.parent.name != "good"):
    with Image.open(p) as im:
        im.convert("L").crop((0, 100, 600, 500)).save(out / "contamination" / f"{i:03d}.png")
PY
# (with the network's other shape options, nearest upsampling and one full-resolution convolution,
# so train -> export -> firmware runs them too)
echo '{"input_size": 96, "recon_width": 8, "discr_width": 8, "steps": 3, "batch_size": 4, "texture_bank": 4,
       "upsample": "nearest", "full_res_convs": 1}' > "$out/grey.json"
"$PYTHON" models/train.py --config "$out/grey.json" --data "$out/grey/good" --out "$out/grey_run" \
    --precise-bn-batches 1 > "$out/grey_train.txt"
grep -q "input 64x96 (HxW) images 8 (+4 held out)" "$out/grey_train.txt"
grep -q "^validation AUROC " "$out/grey_train.txt"
grep -q "^verdict: " "$out/grey_train.txt"
test "$(ls "$out/grey_run/holdout/good" | wc -l)" = 4
# the weights' exponential average: the same training (the last step's weights, kept beside as
# final_last.pt, are the plain run's bit for bit), another model
"$PYTHON" -c "import json, sys; c = json.load(open(sys.argv[1])); c['weight_average'] = 0.5; \
json.dump(c, open(sys.argv[2], 'w'))" "$out/grey.json" "$out/grey_avg.json"
"$PYTHON" models/train.py --config "$out/grey_avg.json" --data "$out/grey/good" --out "$out/grey_avg" \
    --precise-bn-batches 1 > "$out/grey_avg.txt"
grep -q "the model: the weights' exponential average (decay 0.5 per step)" "$out/grey_avg.txt"
"$PYTHON" - "$out" <<'PY'
import sys, torch
load = lambda f: torch.load(f"{sys.argv[1]}/{f}", weights_only=False)["model"]
plain, last, avg = load("grey_run/final.pt"), load("grey_avg/final_last.pt"), load("grey_avg/final.pt")
assert all(torch.equal(plain[k], last[k]) for k in plain), "weight_average changed the training"
assert any(not torch.equal(plain[k], avg[k]) for k in plain), "the average is the last step's weights"
PY
"$PYTHON" models/export.py --run "$out/grey_run" --out "$out" --name grey --calib "$out/grey/good" --n-calib 4
"$PYTHON" -c "import onnx, sys; m = onnx.load(sys.argv[1]); \
assert {p.key: p.value for p in m.metadata_props}['partguard.input_shape'] == '1,3,64,96'" "$out/grey_int8.onnx"
cargo run --release --quiet -- eval --model "$out/grey_int8.onnx" --data "$out/grey" --no-pixel \
    | tee "$out/eval_grey.txt"
grep -q "16 images (12 good, 4 defective)" "$out/eval_grey.txt"
grep -q "image AUROC: " "$out/eval_grey.txt"
# the score head's window, judged on held-out good images and validation defects, then re-exported
"$PYTHON" models/score_window.py "$out/grey_run" | tee "$out/window.txt"
grep -q "^  3x3 " "$out/window.txt"
"$PYTHON" models/export.py --run "$out/grey_run" --out "$out/w5" --name grey --calib "$out/grey/good" \
    --n-calib 4 --score-window 5
"$PYTHON" -c "import onnx, sys; m = onnx.load(sys.argv[1]); \
assert {p.key: p.value for p in m.metadata_props}['partguard.score'] == 'max of 5x5 mean-filtered anomaly map'" \
    "$out/w5/grey_int8.onnx"
echo "models smoke test: OK"
