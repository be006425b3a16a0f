"""The inference speed of candidate network shapes, measured before any training (issue 24).

    .venv-models/bin/python benches/network_variants.py --out runs/variants [--only NAME ...]

Each variant is the recipe (`models/configs/default.json`, square 128x128 input) with its shape
keys (`upsample`, `full_res_convs`, ...) set as the variant says. Its network is built with random weights, which give the same graph, operators
and shapes as trained ones, saved as a run (`OUT/NAME/final.pt`) and exported by `export.py`: f32
and int8, calibrated on the sample images. Time them side by side with

    partguard bench --engine tract,onnxruntime --threads 1 --model OUT/NAME_f32.onnx,OUT/NAME_int8.onnx,...

and count their instructions on emulated Cortex-A76/A72 with `benches/emulated_instructions.sh`.
Only a shape that meets the speed goals is worth training on every category; accuracy is then
measured the usual way (models/category_table.py). Nothing here looks at any image but the eight
samples used for int8 calibration.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "models"))
from net import build, count_macs  # noqa: E402
from train import DEFAULTS  # noqa: E402

BILINEAR_2CONV = {"upsample": "bilinear", "full_res_convs": 2}
VARIANTS: dict[str, dict] = {
    # the shipped bottle model's shape (window 21) and the recipe's before 2026-12-02 (window 3)
    "bilinear_2conv_w21": BILINEAR_2CONV | {"score_window": 21},
    "bilinear_2conv": BILINEAR_2CONV,
    # nearest upsampling: a Resize without interpolation
    "nearest_2conv": {"upsample": "nearest", "full_res_convs": 2},
    # one 3x3 convolution per full-resolution block: the largest maps' im2col halved
    "bilinear_1conv": {"upsample": "bilinear", "full_res_convs": 1},
    # the recipe's shape since 2026-12-02 (configs/default.json)
    "nearest_1conv": {"upsample": "nearest", "full_res_convs": 1},
    # the discriminative network at width 16, which fills tract's 8x8 tiles (12 pads to 16)
    "nearest_1conv_d16": {"upsample": "nearest", "full_res_convs": 1, "discr_width": 16},
}

# Export options per variant (int8 form), on top of the network change above.
EXPORT_ARGS: dict[str, list[str]] = {
    # the upsampling in float32 between DequantizeLinear/QuantizeLinear in the int8 model
    "bilinear_2conv_fresize": ["--float-resize"],
    "nearest_1conv_fresize": ["--float-resize"],
}
VARIANTS["bilinear_2conv_fresize"] = VARIANTS["bilinear_2conv"]
VARIANTS["nearest_1conv_fresize"] = VARIANTS["nearest_1conv"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--only", nargs="*", help="variant names (default: all)")
    ap.add_argument("--calib", type=Path, default=ROOT / "examples/samples/bottle")
    args = ap.parse_args()
    recipe = json.loads((ROOT / "models/configs/default.json").read_text())
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    for name, change in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        cfg = dict(DEFAULTS) | recipe | change | {"input_hw": [128, 128], "data": "(untrained)"}
        model = build(cfg).eval()
        # BatchNorm as training leaves it, not at its initial identity (whose all-zero folded
        # biases the ONNX exporter shares between convolutions, which the quantizer refuses).
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                torch.nn.init.uniform_(m.weight, 0.5, 1.5)
                torch.nn.init.uniform_(m.bias, -0.1, 0.1)
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        cfg["macs"] = count_macs(model, 128, 128)
        cfg["params"] = sum(p.numel() for p in model.parameters())
        run = args.out / name
        run.mkdir(exist_ok=True)
        torch.save({"model": model.state_dict(), "epoch": 0, "config": cfg}, run / "final.pt")
        subprocess.run([sys.executable, str(ROOT / "models/export.py"), "--run", str(run), "--out",
                        str(args.out), "--name", name, "--calib", str(args.calib), "--n-calib", "8",
                        "--data-license", "untrained (random weights)", *EXPORT_ARGS.get(name, [])],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print(f"{name:22s} {cfg['macs'] / 1e9:.3f} GMAC  {cfg['params'] / 1e6:.2f} M params  {change}")


if __name__ == "__main__":
    main()
