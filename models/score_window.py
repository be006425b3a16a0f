"""The image score's mean-filter window, judged like the verdict: held-out good images and validation
defects only (no test image).

    python models/score_window.py runs/table/*/run

The score is the maximum of the anomaly map after a WxW mean filter (the graph's head; 21 in DRAEM).
A wide window averages a scratch 1-2 px wide away (a 21-px line covers ~7% of a 21x21 window); a
narrow one follows single noisy pixels of good parts. For each run (a train.py output folder with
final.pt, config.json and its held-out split), this computes the anomaly maps of the training
images, the held-out good images and the same validation defects as verdict.py once, then for every
window: validation AUROC, share of validation defects above the highest held-out good score, and
share of held-out good images above every training image. The last lines give each window's mean
over the runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from net import AnomalyNet, build, image_score, inspected_region  # noqa: E402
from train import defect_scale, input_hw, list_images, load_rgb  # noqa: E402
from verdict import Verdict, auroc, faint_set, judge, validation_set  # noqa: E402

WINDOWS = [21, 15, 11, 7, 5, 3]


class Maps:
    """Anomaly maps [N, 1, H, W] of some images and the part's region on each (net.inspected_region)."""

    def __init__(self, model: AnomalyNet, images: np.ndarray):
        amaps, regions = [], []
        with torch.no_grad():
            for i in range(0, len(images), 16):
                x = torch.from_numpy(images[i : i + 16]).permute(0, 3, 1, 2)
                amap, rec = model.anomaly_map(x)
                amaps.append(amap)
                regions.append(inspected_region(x, rec))
        self.amaps, self.regions = torch.cat(amaps), torch.cat(regions)

    def score(self, k: int, on_part: bool = False) -> np.ndarray:
        """The graph's image score through a k x k window, over the whole map or the part's region."""
        return image_score(self.amaps, k, self.regions if on_part else None).numpy()


class RunMaps:
    """A run's anomaly maps (final.pt, f32, PyTorch) for its training images, its held-out good images
    and their validation defects; the scores for any window follow without another forward pass."""

    def __init__(self, run: Path):
        cfg = json.loads((run / "config.json").read_text())
        ck = torch.load(run / "final.pt", weights_only=False, map_location="cpu")
        model = build(dict(cfg, score_window=21))
        model.load_state_dict(ck["model"])
        model.eval()
        hw = input_hw(cfg, [])
        data = Path(cfg["data"])
        held = set(cfg["holdout_files"])
        paths = list_images(data)
        a = cfg.get("alignment")
        train = np.stack([load_rgb(p, hw, a) for p in paths if str(p.relative_to(data)) not in held])
        hold = np.stack([load_rgb(data / f, hw, a) for f in cfg["holdout_files"]])
        self.all_images = np.concatenate([train, hold])
        self.train, self.hold = Maps(model, train), Maps(model, hold)
        scale = defect_scale(cfg, paths)  # derived, so runs made before it was recorded get it too
        defects, self.kinds = validation_set(hold, int(cfg["seed"]), scale)
        self.defect = Maps(model, defects)
        faint, self.faint_labels = faint_set(hold, int(cfg["seed"]), scale=scale)
        self.faint = Maps(model, faint)

    def verdict(self, k: int, on_part: bool = False) -> Verdict:
        """verdict.judge with the score taken through a k x k window, over the part's region or not."""
        return judge(self.all_images, self.train.score(k, on_part), self.hold.score(k, on_part),
                     self.defect.score(k, on_part), self.kinds,
                     (self.faint.score(k, on_part), self.faint_labels))


def judge_run(run: Path) -> dict[int, tuple[float, float, float]]:
    m = RunMaps(run)
    out = {}
    for k in WINDOWS:
        v = m.verdict(k)
        out[k] = (v.validation_auroc, v.detected, v.unseen_above_training)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, nargs="+", help="train.py output folders")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results = {}
    for run in args.runs:
        results[run] = judge_run(run)
        row = "  ".join(f"{k}: {a:.3f} {100 * d:.0f}% {100 * u:.0f}%" for k, (a, d, u) in results[run].items())
        print(f"{run}: {row}", flush=True)
    print("window: mean validation AUROC, mean defects detected, mean held-out good above training max")
    means = {}
    for k in WINDOWS:
        a, d, u = (np.mean([r[k][i] for r in results.values()]) for i in range(3))
        means[k] = a
        print(f"{k:>3}x{k:<3} {a:.4f}  {100 * d:.0f}%  {100 * u:.0f}%")
    # the rule (models/README.md): highest mean validation AUROC; a tie goes to the wider window
    best = max(WINDOWS, key=lambda k: (round(means[k], 4), k))
    print(f"chosen score window: {best}")


if __name__ == "__main__":
    main()
