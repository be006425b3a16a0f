"""The recipe on every part type: train, export, calibrate and evaluate each category x seed.

    python models/category_table.py --data ../shared/data --out runs/table --seeds 1 2 3

For every folder under --data with `train/good` and `test` (the MVTec AD layout) and every seed, in
seed-major order (so an interrupted table still covers every category):

1. `train.py --config CONFIG --seed S` on `train/good` (15% held out across the collection, see
   verdict.py; the verdict is printed at the end of training);
2. `export.py`: ONNX f32 and int8 (int8 calibrated on the training images);
3. for f32 and int8: `partguard calibrate --alpha 0.01` on the held-out good images (parts the model
   has not seen; no test image), then `partguard eval` on `test` through the same station config:
   image AUROC, pixel AUROC where masks exist, and at the calibrated threshold good parts rejected
   and defects passed.

Nothing here reads a test image before training and calibration are finished, and nothing is chosen
from the test figures. Each finished (category, seed) is one line of OUT/results.jsonl; the run
resumes where it stopped (finished steps are skipped). OUT/table.md is rewritten after each line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "models"))


def categories(data: Path) -> list[Path]:
    found = sorted({p.parent.parent for p in data.glob("**/train/good")})
    return [c for c in found if (c / "test").is_dir()]


def run(cmd: list, log: Path, cwd: Path | None = None) -> str:
    """Runs `cmd`, appends its output to `log`, exits naming the command if it fails."""
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True)
    with open(log, "a") as f:
        f.write(f"$ {' '.join(str(c) for c in cmd)}\n{proc.stdout}{proc.stderr}\n")
    if proc.returncode != 0:
        sys.exit(f"error: {' '.join(str(c) for c in cmd)} failed ({proc.returncode}); see {log}")
    return proc.stdout


STATION = """[source]
kind = "replay"
path = "{holdout}"
rate_hz = 0

[model]
path = "{model}"

[decision]
calibration = "{cal}"

[reject]
kind = "simulated"
pulse_ms = 50

[log]
status_interval_s = 0
"""


def measure(pg: Path, cat: Path, run_dir: Path, model: Path, prec: str, log: Path) -> dict:
    station = model.parent / f"station_{prec}.toml"
    cal = model.parent / f"{prec}.cal.toml"
    station.write_text(STATION.format(holdout=run_dir / "run" / "holdout", model=model, cal=cal))
    run([pg, "--config", station, "calibrate", "--alpha", "0.01"], log)
    args = [pg, "--config", station, "eval", "--data", cat, "--csv", model.parent / f"eval_{prec}.csv"]
    if not (cat / "ground_truth").is_dir():
        args.append("--no-pixel")
    out = run(args, log)
    image = re.search(r"image AUROC: ([0-9.]+)", out)
    pixel = re.search(r"pixel AUROC: ([0-9.]+)", out)
    at = re.search(r"at threshold ([0-9.e-]+): (\d+) good parts rejected, (\d+) defective parts passed", out)
    images = re.search(r"(\d+) images \((\d+) good, (\d+) defective\)", out)
    if not (image and at and images):
        sys.exit(f"error: cannot read partguard eval's output (see {log})")
    return {"image_auroc": float(image.group(1)), "pixel_auroc": float(pixel.group(1)) if pixel else None,
            "threshold": float(at.group(1)), "good_rejected": int(at.group(2)),
            "defects_passed": int(at.group(3)), "n_good": int(images.group(2)),
            "n_defects": int(images.group(3))}


def data_license(cat: Path) -> str:
    """The dataset's license line from the SOURCE.txt beside the category, for the model's metadata."""
    source = cat.parent / "SOURCE.txt"
    lines = source.read_text().splitlines() if source.is_file() else []
    found = [line.strip() for line in lines if "CC BY" in line and cat.name in line] or [
        line.strip() for line in lines if "CC BY" in line] or [
        line.strip() for line in lines if "licen" in line.lower()]
    return f"{cat.parent.name}: {found[0][:160]}" if found else f"{cat.parent.name}: see its SOURCE.txt"


def rejudge(run: Path, window: int, region: str | None = None) -> dict:
    """verdict.py's verdict on the run's final model through a `window` score head over `region`
    (default: the run's own): what train.py printed, recomputed with the current rules."""
    from net import build
    from score_window import RunMaps

    cfg = json.loads((run / "config.json").read_text())
    on_part = build(dict(cfg, score_region=region or cfg.get("score_region", "frame"))).score_on_part
    return dataclasses.asdict(RunMaps(run).verdict(window, on_part))


def head_suffix(args) -> str:
    """The suffix of a re-exported score head's folder and files: "" for the run's own head."""
    return ("" if args.score_window is None else f"_w{args.score_window}") + (
        "" if args.score_region is None else f"_{args.score_region}")


def one(args, cat: Path, seed: int, pg: Path) -> dict:
    name = f"{cat.name}_s{seed}"
    run_dir = args.out / name
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / "table.log"
    cfg_path = run_dir / "run" / "config.json"
    done = cfg_path.is_file() and "verdict" in json.loads(cfg_path.read_text())
    if not done:
        t0 = time.time()
        run([sys.executable, ROOT / "models/train.py", "--config", args.config, "--data", cat / "train/good",
             "--out", run_dir / "run", "--seed", seed, "--threads", args.threads], log)
        (run_dir / "train_seconds").write_text(f"{time.time() - t0:.0f}\n")
    cfg = json.loads(cfg_path.read_text())
    model_dir = run_dir / f"model{head_suffix(args)}"
    if not (model_dir / f"{name}_int8.onnx").is_file():
        head = ([] if args.score_window is None else ["--score-window", args.score_window]) + (
            [] if args.score_region is None else ["--score-region", args.score_region])
        run([sys.executable, ROOT / "models/export.py", "--run", run_dir / "run", "--out", model_dir,
             "--name", name, "--calib", cat / "train/good",
             "--data-license", data_license(cat)] + head, log)
    verdict = rejudge(run_dir / "run", args.score_window or cfg.get("score_window", 21), args.score_region)
    row = {"category": str(cat.relative_to(args.data)), "seed": seed,
           "train_seconds": int((run_dir / "train_seconds").read_text()) if (run_dir / "train_seconds").is_file() else None,
           "n_train": cfg["n_images"], "n_holdout": len(cfg["holdout_files"]), "input_hw": cfg["input_hw"],
           "macs": cfg["macs"], "score_window": args.score_window or cfg.get("score_window", 21),
           "score_region": args.score_region or cfg.get("score_region", "frame"),
           "verdict": verdict}
    for prec in ("f32", "int8"):
        row[prec] = measure(pg, cat, run_dir, model_dir / f"{name}_{prec}.onnx", prec, log)
    return row


def table(rows: list[dict]) -> str:
    out = ["| category | seed | input (HxW), GMAC | train images (+held out) | training | verdict (validation AUROC) "
           "| image AUROC f32 / int8 | pixel AUROC f32 / int8 | int8 at calibrated threshold: good rejected, defects passed |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        v, f, i = r["verdict"], r["f32"], r["int8"]
        pix = f"{f['pixel_auroc']:.4f} / {i['pixel_auroc']:.4f}" if f["pixel_auroc"] is not None else "-"
        mins = f"{r['train_seconds'] / 60:.1f} min" if r["train_seconds"] else "?"
        out.append(
            f"| {r['category']} | {r['seed']} | {r['input_hw'][0]}x{r['input_hw'][1]}, {r['macs'] / 1e9:.2f} "
            f"| {r['n_train']} (+{r['n_holdout']}) | {mins} | {v['verdict']} ({v['validation_auroc']:.3f}) "
            f"| {f['image_auroc']:.4f} / {i['image_auroc']:.4f} | {pix} "
            f"| {i['good_rejected']}/{i['n_good']}, {i['defects_passed']}/{i['n_defects']} (t={i['threshold']:.4f}) |")
    cats = sorted({r["category"] for r in rows})
    out += ["", "| category | runs | median image AUROC f32 / int8 | largest int8-f32 gap |", "|---|---|---|---|"]
    means = []
    for c in cats:
        rs = [r for r in rows if r["category"] == c]
        f32 = statistics.median(r["f32"]["image_auroc"] for r in rs)
        i8 = statistics.median(r["int8"]["image_auroc"] for r in rs)
        gap = max(abs(r["int8"]["image_auroc"] - r["f32"]["image_auroc"]) for r in rs)
        means.append(statistics.mean(r["int8"]["image_auroc"] for r in rs))
        out.append(f"| {c} | {len(rs)} | {f32:.4f} / {i8:.4f} | {gap:.4f} |")
    out.append(f"\nmean int8 image AUROC over the categories: {statistics.mean(means):.4f}")
    agree = sum((r["verdict"]["verdict"] == "usable") == (r["int8"]["image_auroc"] >= 0.95) for r in rows)
    out.append(f"verdict agrees with the test (usable <=> int8 image AUROC >= 0.95): {agree} of {len(rows)} runs")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="folder holding the categories (e.g. ../shared/data)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--config", type=Path, default=ROOT / "models/configs/default.json")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--only", nargs="*", help="category folder names to run (default: all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--partguard", type=Path, default=ROOT / "target/release/partguard")
    ap.add_argument("--rejudge", action="store_true",
                    help="recompute the verdict of the finished runs with the current verdict.py")
    ap.add_argument("--score-window", type=int,
                    help="re-export every run with this score window (no retraining; score_window.py) "
                         "and measure it: results_wN.jsonl, table_wN.md")
    ap.add_argument("--score-region", choices=["frame", "part"],
                    help="re-export every run with the score over this region (no retraining; net.py's "
                         "inspected_region) and measure it: results_part.jsonl, table_part.md")
    args = ap.parse_args()
    args.data, args.out = args.data.resolve(), args.out.resolve()
    pg = args.partguard.resolve()
    if not pg.is_file():
        sys.exit(f"error: {pg} does not exist; build it with `cargo build --release`")
    cats = [c for c in categories(args.data) if not args.only or c.name in args.only]
    if not cats:
        sys.exit(f"error: no category (a folder with train/good and test) under {args.data}")
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = head_suffix(args)
    results = args.out / f"results{suffix}.jsonl"
    rows = [json.loads(line) for line in results.read_text().splitlines()] if results.is_file() else []
    if args.rejudge:
        for r in rows:
            run_dir = args.out / f"{Path(r['category']).name}_s{r['seed']}" / "run"
            r["verdict"] = rejudge(run_dir, r.get("score_window", 21), r.get("score_region"))
        results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    finished = {(r["category"], r["seed"]) for r in rows}
    for seed in args.seeds:
        for cat in cats:
            if (str(cat.relative_to(args.data)), seed) in finished:
                continue
            print(f"== {cat.relative_to(args.data)} seed {seed}", flush=True)
            row = one(args, cat, seed, pg)
            print(json.dumps(row), flush=True)
            with open(results, "a") as f:
                f.write(json.dumps(row) + "\n")
            # every finished run, also those of other seeds run at the same time into the same OUT
            rows = [json.loads(line) for line in results.read_text().splitlines()]
            (args.out / f"table{suffix}.md").write_text(table(rows))
    print(table(rows))


if __name__ == "__main__":
    main()
