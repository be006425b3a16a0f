"""The image score over the whole frame or over the part, judged like the verdict: held-out good
images and validation defects only (no test image).

    python models/score_region.py runs/candidate_scale/screw_s16/run ...

For each run (a train.py output folder with final.pt, config.json and its held-out split), the
anomaly maps of its training images, held-out good images and validation defects are computed once
(score_window.RunMaps) and scored twice through the run's own score window: the maximum over the
whole map ("frame") and over the part's region ("part", net.inspected_region). Printed per run and
as means over the runs: validation AUROC, the chips' AUROC, and the pooled sensitivity (the mean of
the transplant figure, the marks' pooled share and the warps' mean share, each found above the
highest held-out good score). `--json F` writes them all. A run without an aligned part scores the
same both ways.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from score_window import RunMaps  # noqa: E402
from verdict import Verdict  # noqa: E402


def pooled_sensitivity(v: Verdict) -> float:
    """The mean of the transplant figure, the marks' pooled share and the warps' mean share."""
    s = v.sensitivity
    marks = np.mean([x for k in ("scratch", "spot") for x in s[k].values()])
    return float(np.mean([np.mean(list(s["transplant"].values())), marks, np.mean(list(s["warp"].values()))]))


def figures(v: Verdict) -> dict:
    return {"validation_auroc": v.validation_auroc, "chip_auroc": v.by_kind.get("chip"),
            "pooled_sensitivity": pooled_sensitivity(v), "threshold": v.threshold,
            "verdict": v.verdict}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, nargs="+", help="train.py output folders")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, help="write every run's figures, both ways, to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for run in args.runs:
        cfg = json.loads((run / "config.json").read_text())
        maps = RunMaps(run)
        k = cfg.get("score_window", 21)
        row = {"run": str(run), "seed": cfg["seed"], "aligned": bool(cfg.get("alignment")),
               "frame": figures(maps.verdict(k, False)), "part": figures(maps.verdict(k, True))}
        rows.append(row)
        print(f"{run}: " + "  ".join(
            f"{w}: validation {row[w]['validation_auroc']:.4f} chips {row[w]['chip_auroc']:.4f} "
            f"pooled {row[w]['pooled_sensitivity']:.3f}" for w in ("frame", "part")), flush=True)
    print(f"means over {len(rows)} runs (frame / part):")
    for key in ("validation_auroc", "chip_auroc", "pooled_sensitivity"):
        f, p = (np.mean([r[w][key] for r in rows]) for w in ("frame", "part"))
        print(f"  {key}: {f:.4f} / {p:.4f}")
    d = [r["part"]["pooled_sensitivity"] - r["frame"]["pooled_sensitivity"] for r in rows]
    print(f"  pooled sensitivity higher with the part on {sum(x > 0 for x in d)} runs, "
          f"lower on {sum(x < 0 for x in d)}, equal on {sum(x == 0 for x in d)}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
