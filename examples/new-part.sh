#!/usr/bin/env bash
# README "A new part, step by step", as one script: a part type from ../shared/data replayed as if it
# were the line's camera, through check, collect, train, export, calibrate, eval and run.
#
#   bash examples/new-part.sh [CATEGORY_DIR] [WORK_DIR] [RECIPE]
#
# CATEGORY_DIR: an MVTec-style folder (train/good, test/good, test/<defect>); default MPDD
# metal_plate. WORK_DIR: default target/new-part (replaced). RECIPE: the training config, default
# models/configs/default.json (the recipe for any part: 1,200 steps, ~30 min on a 2-core CPU).
# Python: $PYTHON, else .venv-models (created as models/smoke_test.sh does). Each step prints a
# "== step" line; README shows this output.
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:-../shared/data/mpdd/metal_plate}"
[ -d "$data/train/good" ] || {
    echo "new-part: $data has no train/good folder; give a category folder (MVTec layout):" >&2
    echo "  bash examples/new-part.sh ../shared/data/mpdd/metal_plate" >&2
    exit 2
}
data="$(realpath "$data")"
work="${2:-target/new-part}"
recipe="${3:-models/configs/default.json}"
name="$(basename "$data")"
if [ -z "${PYTHON:-}" ]; then
    if [ ! -x .venv-models/bin/python ]; then
        python3 -m venv .venv-models
        .venv-models/bin/pip install -q -r models/requirements.txt
    fi
    PYTHON=.venv-models/bin/python
fi
cargo build --release --quiet
pg="$PWD/target/release/partguard"
rm -rf "$work"
mkdir -p "$work"
work="$(realpath "$work")"
step() { echo; echo "== $*"; }

# The station's config. On the line, [source] is the camera and [camera.controls] locks its
# settings; here the part's good training images stand in for the camera.
station() { # SOURCE_DIR MODEL DECISION_LINE
    cat > "$work/station.toml" <<EOF
[source]
kind = "replay"
path = "$1"
rate_hz = 4
# On the line:
# kind = "v4l2"
# device = "/dev/video0"
# width = 1280
# height = 720
#
# [camera.controls]
# auto_exposure = "manual"
# exposure_time_absolute = 120
# white_balance_automatic = false

[model]
path = "$2"

[decision]
$3

[reject]
kind = "simulated"
pulse_ms = 50

[timing]
delay_ms = 3000

[log]
status_interval_s = 0
EOF
}

station "$data/train/good" "$PWD/models/bottle_sspcab_int8.onnx" "threshold = 0.2"
step "1. check the station (camera, model, reject line)"
(cd "$work" && "$pg" --config station.toml check)

step "2. collect good parts (one image per frame here; with a [trigger], one per part)"
(cd "$work" && "$pg" --config station.toml collect --out parts/good --frames 200 --min-change 1)

step "3. train on them (CPU, recipe $recipe)"
start=$(date +%s)
# Every 40th epoch line is shown; the verdict lines at the end are all shown.
"$PYTHON" models/train.py --config "$recipe" --data "$work/parts/good" --out "$work/run" \
    --threads 2 | awk '!/^epoch/ || (++n % 40 == 1)'
echo "training wall time: $(( $(date +%s) - start )) s"

step "4. export (ONNX f32 + int8 for tract)"
"$PYTHON" models/export.py --run "$work/run" --out "$work/model" --name "$name" \
    --calib "$work/parts/good" --data-license "the part's own images (here: see $data/../SOURCE.txt)"

step "5. calibrate the threshold on good parts the model has not seen"
station "$data/test/good" "$work/model/${name}_int8.onnx" "calibration = \"station.cal.toml\""
(cd "$work" && "$pg" --config station.toml calibrate --alpha 0.05 --defects "$data/test")

step "6. how it separates good from defective parts it has never seen (test split)"
(cd "$work" && "$pg" --config station.toml eval --data "$data/test" --csv eval.csv 2>&1 | grep -v INFO)

step "7. run the line (every test part, good and defective, as the replay orders them)"
station "$data/test" "$work/model/${name}_int8.onnx" "calibration = \"station.cal.toml\""
(cd "$work" && "$pg" --config station.toml run 2>&1 | grep -v "^part \|INFO")
