"""Operating-point table of trained models: what a line calibrated on good parts would get.

    python models/evaluate.py --data bottle128.npz runs/NAME/final.pt models/bottle_sspcab_int8.onnx

For each model (a `train.py` checkpoint, run in PyTorch, or an exported ONNX file, run in ONNX
Runtime) it scores the good training images and the test split, then prints the image AUROC and,
for thresholds taken from the good training scores (the highest, the 99th and the 95th percentile;
`partguard calibrate` takes a conformal order statistic of good scores, which lands near these),
how many good test parts are rejected and how many defective ones pass. AUROC alone hides that
trade-off: a model can rank better overall and still pass more faint defects at every threshold a
line would use (models/HISTORY.md, "Relight augmentation"). A model can also score its training
images lower than unseen good parts (the fine-tunes, the relight runs and the shipped v3 in
models/README.md do; v2 did not), and then these thresholds understate its false
rejects: on a line, calibrate on parts the model was not trained on.

--data is a `train.py --pack` .npz holding train and test images, or an MVTec-style category folder
(`train/good`, `test/*`) read with the firmware's resize. The release figures come from
`partguard eval` (tract); this script is the quick check while developing a model.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train import auroc, image_scores, input_hw, load_set  # noqa: E402


def torch_scorer(path: Path):
    import torch

    from net import build

    ck = torch.load(path, weights_only=False, map_location="cpu")
    cfg = ck["config"]
    model = build(cfg)
    model.load_state_dict(ck["model"])
    model.eval()
    hw = input_hw(cfg, [])
    return (lambda images: image_scores(model, images, torch.device("cpu"))), hw, cfg.get("alignment")


def onnx_scorer(path: Path):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    size = (int(inp.shape[-2]), int(inp.shape[-1]))

    def score(images: np.ndarray) -> np.ndarray:
        return np.array([
            float(session.run(["score"], {inp.name: im.transpose(2, 0, 1)[None].copy()})[0].reshape(-1)[0])
            for im in images
        ])

    return score, size, None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="packed .npz or MVTec-style category folder")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads for PyTorch")
    ap.add_argument("models", type=Path, nargs="+", help="final.pt / last.pt checkpoints or .onnx files")
    args = ap.parse_args()

    names = None
    if args.data.is_dir():
        from train import list_images

        test_dir = args.data / "test"
        names = [str(p.relative_to(test_dir)) for p in list_images(test_dir)]
    cache: dict[tuple, tuple] = {}
    for path in args.models:
        if not path.is_file():
            sys.exit(f"error: {path} does not exist (a train.py checkpoint or an exported .onnx)")
        if path.suffix == ".onnx":
            score, size, alignment = onnx_scorer(path)
        else:
            import torch

            torch.set_num_threads(args.threads)
            score, size, alignment = torch_scorer(path)
        key = (size, json.dumps(alignment))
        if key not in cache:
            if args.data.is_dir():
                train, _ = load_set(args.data / "train" / "good", size, "train", alignment)
                test, labels = load_set(args.data / "test", size, "test", alignment)
            else:
                train, _ = load_set(args.data, size, "train")
                test, labels = load_set(args.data, size, "test")
            cache[key] = (train, test, labels)
        train, test, labels = cache[key]
        t, s = score(train), score(test)
        good, bad = s[labels == 0], s[labels == 1]
        print(f"{path}: image AUROC {auroc(s, labels):.4f}; good training scores: median {np.median(t):.3f}, "
              f"max {t.max():.3f}; test good max {good.max():.3f}, defective min {bad.min():.3f}")
        order = np.argsort(s)
        label = (lambda i: names[i]) if names else (lambda i: f"test #{i}")
        lowest = [i for i in order if labels[i] == 1][:6]
        highest = [i for i in order[::-1] if labels[i] == 0][:6]
        print("  lowest defective:", ", ".join(f"{label(i)} {s[i]:.3f}" for i in lowest))
        print("  highest good:    ", ", ".join(f"{label(i)} {s[i]:.3f}" for i in highest))
        print(f"  {'threshold from good training scores':<38} {'good rejected':>14} {'defective passed':>17}")
        for name, th in [("highest", np.nextafter(t.max(), np.inf)), ("99th percentile", np.percentile(t, 99)),
                         ("95th percentile", np.percentile(t, 95))]:
            rejected, passed = int((good >= th).sum()), int((bad < th).sum())
            print(f"  {name + f' ({th:.3f})':<38} {f'{rejected}/{len(good)}':>14} {f'{passed}/{len(bad)}':>17}")


if __name__ == "__main__":
    main()
