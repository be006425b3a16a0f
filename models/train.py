"""Train the partguard anomaly model on a folder of good images.

    python models/train.py --config models/configs/bottle_b16_e250_relight10_s23.json --data DIR/train/good --out runs/bottle

Reproducible: the seed and the full config are written to OUT/config.json. A checkpoint is written
atomically after every epoch (OUT/last.pt); rerunning the same command resumes from it. Progress goes
to stdout and OUT/train.log. With --test DIR (an MVTec-style test folder) the image AUROC is logged every
`eval_every` epochs for monitoring only; the shipped model is the last epoch, never a selected one.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import align  # noqa: E402
from net import SCORE_REGIONS, UPSAMPLE_MODES, AnomalyNet, build, count_macs  # noqa: E402
from synth import (ANOMALY_SCALES, make_anomaly, make_texture_bank, outline_anomaly, part_region,  # noqa: E402
                   random_relight)
from verdict import DefectScale, bilinear, body, faint_set, holdout_indices, judge, validation_set  # noqa: E402

IMG_EXT = {".png", ".jpg", ".jpeg", ".bmp"}

@dataclasses.dataclass
class TrainConfig:
    """The training recipe (a JSON object in `configs/`). Every key is one of these fields, with this
    type; `load_config` refuses unknown keys and wrong types, naming the file and the key."""

    input_size: int = 128  # the longer side of the model's input (the shorter: see keep_aspect)
    keep_aspect: bool = True  # input shape follows the images' aspect ratio (sides multiples of 16; 32 with a stem)
    recon_width: int = 16
    discr_width: int = 16
    sspcab: bool = True
    sspcab_lambda: float = 0.1
    epochs: int = 150
    steps: int = 0  # when > 0: the optimizer-step budget (epochs follow from the image count)
    batch_size: int = 8
    lr: float = 5e-4
    lr_milestones: list = dataclasses.field(default_factory=lambda: [0.8, 0.9])
    seed: int = 7
    threads: int = 2
    flip_augment: bool = True
    warp_augment: float = 0.0
    relight_augment: float = 0.0
    relight_prob: float = 0.5
    relight_gain: float = 0.25
    relight_colour_only: bool = False
    relight_target: str = "relit"
    init_from: Optional[str] = None
    eval_every: int = 10
    workers: int = 0
    texture_bank: int = 0
    holdout: float = 0.15  # share of the good images held back for the verdict (verdict.py)
    score_window: int = 21  # the image score: max of the anomaly map after this mean filter (odd)
    score_region: str = "frame"  # "part": the score's max over the aligned part only (net.inspected_region)
    upsample: str = "bilinear"  # x2 upsampling in both networks: "bilinear" (DRAEM) or "nearest"
    full_res_convs: int = 2  # 3x3 convolutions per block at the input's resolution: 2 (DRAEM) or 1
    stem: int = 0  # > 0: a thin level of this many channels at the input's resolution (net.AnomalyNet)
    align: bool = False  # the part found, turned to its axis and cropped (align.py; the firmware does the same)
    anomaly_on_part: bool = False  # synthetic anomalies only on the part and a margin (synth.part_region)
    anomaly_scale: str = "longer_side"  # what the anomaly masks' sizes follow (synth.perlin_mask)
    shape_anomalies: float = 0.0  # share of an aligned part's samples with an outline anomaly instead (synth.outline_anomaly)
    weight_average: float = 0.0  # > 0: the model is an exponential average of the weights with this decay per step


DEFAULTS = dataclasses.asdict(TrainConfig())
# What train.py adds to OUT/config.json about the run; ignored when such a file is read back.
RECORDED = {"data", "n_images", "params", "macs", "init_sha256", "init_config", "camera_controls",
            "input_hw", "holdout_files", "verdict", "alignment", "defect_scale"}


def load_config(path: Path) -> dict:
    """The recipe in `path` over the defaults, checked against `TrainConfig`: exits with an error that
    names the file and the key on an unknown key, a wrong type or a bad value."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        sys.exit(f"error: cannot read training config {path}: {e}")
    if not isinstance(raw, dict):
        sys.exit(f"error: training config {path} must be a JSON object of settings")
    types = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(raw) - set(types) - RECORDED)
    if unknown:
        sys.exit(f"error: training config {path}: unknown key(s) {', '.join(unknown)}; "
                 f"known keys: {', '.join(types)}")
    ok = {
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "bool": lambda v: isinstance(v, bool),
        "str": lambda v: isinstance(v, str),
        "list": lambda v: isinstance(v, list) and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in v),
        "Optional[str]": lambda v: v is None or isinstance(v, str),
    }
    cfg = dict(DEFAULTS)
    for key, value in raw.items():
        if key in RECORDED:
            continue
        if not ok[types[key]](value):
            sys.exit(f"error: training config {path}: {key} is {value!r}; it must be of type {types[key]}")
        cfg[key] = value
    if cfg["score_window"] < 1 or cfg["score_window"] % 2 == 0:
        sys.exit(f"error: training config {path}: score_window is {cfg['score_window']}; use an odd "
                 "number of pixels (21, 7, 3...)")
    if cfg["score_region"] not in SCORE_REGIONS:
        sys.exit(f"error: training config {path}: score_region is {cfg['score_region']!r}; "
                 f"use one of {', '.join(SCORE_REGIONS)}")
    if cfg["upsample"] not in UPSAMPLE_MODES:
        sys.exit(f"error: training config {path}: upsample is {cfg['upsample']!r}; "
                 f"use one of {', '.join(UPSAMPLE_MODES)}")
    if cfg["full_res_convs"] not in (1, 2):
        sys.exit(f"error: training config {path}: full_res_convs is {cfg['full_res_convs']}; use 1 or 2")
    if cfg["stem"] < 0:
        sys.exit(f"error: training config {path}: stem is {cfg['stem']}; use 0 (none) or a channel count (8)")
    if cfg["anomaly_scale"] not in ANOMALY_SCALES:
        sys.exit(f"error: training config {path}: anomaly_scale is {cfg['anomaly_scale']!r}; "
                 f"use one of {', '.join(ANOMALY_SCALES)}")
    if not 0 <= cfg["shape_anomalies"] <= 1:
        sys.exit(f"error: training config {path}: shape_anomalies is {cfg['shape_anomalies']}; use a share "
                 "from 0 (none) to 1")
    if not 0 <= cfg["weight_average"] < 1:
        sys.exit(f"error: training config {path}: weight_average is {cfg['weight_average']}; use 0 (the last "
                 "step's weights) or a decay per step below 1 (0.995)")
    if cfg["relight_target"] not in ("relit", "original"):
        sys.exit(f"error: training config {path}: relight_target is {cfg['relight_target']!r}; "
                 "use \"relit\" or \"original\"")
    return cfg


def collect_manifest_controls(data: Path) -> dict:
    """The camera controls in force while `partguard collect` took the images in `data` (its
    manifest.json), so the exported model carries them and `partguard run` can warn when the line's
    camera differs. Refuses a folder collected as defects; warns when sessions used different
    settings. Empty without a manifest."""
    path = data / "manifest.json"
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text())
        label, sessions = manifest["label"], manifest["sessions"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        sys.exit(f"error: {path} is not a partguard collect manifest ({e}); move it away or re-collect")
    if label != "good":
        sys.exit(f"error: {data} holds parts collected as '{label}' ({path}); train on good parts only")
    settings = [s.get("camera_controls", {}) for s in sessions if s.get("images")]
    if any(c != settings[-1] for c in settings):
        print(f"warning: the sessions in {path} were collected under different camera controls: "
              f"{settings}; the model learns all of them, the line should use one", file=sys.stderr)
    return settings[-1] if settings else {}


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMG_EXT)


def input_hw(cfg: dict, paths: list[Path]) -> tuple[int, int]:
    """The model's input (height, width). Without `keep_aspect`: `input_size` square. With it, the
    sides follow the images' median aspect ratio, both multiples of 16 (the networks pool 4 times;
    32 with a `stem`, 5 times): the longer side is `input_size` or, where no such multiple for the
    shorter side comes within 7% of the aspect ratio, the largest of `input_size` less one or two
    such multiples that does (else the closest), so a part is never visibly squashed (a 16:9 camera: 64x112; 3:2:
    80x128; 4:3: 96x128). Recorded in the run's config (`input_hw`), which wins when present."""
    if "input_hw" in cfg and cfg["input_hw"]:
        return int(cfg["input_hw"][0]), int(cfg["input_hw"][1])
    long_side = int(cfg["input_size"])
    if not paths or not cfg.get("keep_aspect", True):
        return long_side, long_side
    aspects = []
    for p in paths:
        with Image.open(p) as im:
            aspects.append(im.width / im.height)
    aspect = float(np.median(aspects))
    wide = max(aspect, 1 / aspect)
    candidates = []  # (error of the aspect ratio, long side, short side)
    m = 32 if cfg.get("stem", 0) else 16
    for long_ in (long_side, long_side - m, long_side - 2 * m):
        for short in {max(m, int(long_ / wide // m) * m), max(m, -(-int(long_ / wide) // m) * m)}:
            if m <= short <= long_:
                candidates.append((abs(math.log(long_ / short / wide)), long_, short))
    good = [c for c in candidates if c[0] <= math.log(1.07)]
    _, long_, short = max(good, key=lambda c: (c[1], -c[0])) if good else min(candidates)
    return (short, long_) if aspect >= 1 else (long_, short)


def load_set(path: Path, hw: tuple[int, int], key: str,
             alignment: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images (N,H,W,3 float32 in [0,1]) and labels (1 = defective) from a folder or a packed .npz.

    A folder is read with the firmware's resize (`load_rgb`); labels come from the parent folder name
    (`good` = 0). An .npz written by `--pack` holds the same pixels as uint8, so both give identical
    tensors; it lets training run on a machine without the dataset (e.g. a rented GPU).
    """
    if path.suffix == ".npz":
        with np.load(path) as z:
            imgs, labels = z[f"{key}_images"], z[f"{key}_labels"]
        if tuple(imgs.shape[1:3]) != tuple(hw):
            sys.exit(f"error: {path} holds {imgs.shape[1]}x{imgs.shape[2]} images (HxW), the config wants "
                     f"{hw[0]}x{hw[1]}")
        return imgs.astype(np.float32) / 255.0, labels
    paths = list_images(path)
    if not paths:
        sys.exit(f"error: no images under {path}")
    labels = np.array([0 if p.parent.name == "good" else 1 for p in paths])
    return np.stack([load_rgb(p, hw, alignment) for p in paths]), labels


def load_rgb(path: Path, hw, alignment: dict | None = None) -> np.ndarray:
    """The same resize the firmware does: whole frame to `hw` (height, width; an int: square),
    bilinear (PIL), RGB (a grey image's one channel three times, as the firmware converts GREY),
    scaled to [0,1]. With an `alignment` (a run's recorded `align.Alignment`), the part's aligned
    crop instead (align.py)."""
    h, w = (hw, hw) if isinstance(hw, int) else hw
    with Image.open(path) as im:
        if alignment:
            return align.apply(im, align.Alignment(**alignment), (h, w))
        im = im.convert("RGB").resize((w, h), Image.BILINEAR)
        return np.asarray(im, dtype=np.float32) / 255.0


def fit_alignment(cfg: dict, paths: list[Path]) -> dict | None:
    """The run's alignment (align.fit on up to 64 of the collection's images, spread over it), or
    None: `align` off, or parts that fill the frame. Recorded in the run's config."""
    if not cfg["align"]:
        return None
    if not paths:
        sys.exit("error: \"align\" needs --data to be a folder of images (it finds the part in each frame)")
    sample = paths[:: max(1, len(paths) // 64)]
    found = align.fit([np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255.0 for p in sample])
    return dataclasses.asdict(found) if found else None


def defect_scale(cfg: dict, paths: list[Path]) -> DefectScale:
    """The validation defects' scale for a run (its `alignment` and `input_hw`) on the collection
    `paths`: as large on the part as on the whole frame at the recipe's input (align.defect_scale);
    the plain scale without alignment or images."""
    a = cfg.get("alignment")
    if not a or not paths:
        return DefectScale()
    with Image.open(paths[0]) as im:
        frame_hw = (im.height, im.width)
    whole_hw = input_hw(dict(cfg, input_hw=None), paths)
    return align.defect_scale(align.Alignment(**a), input_hw(cfg, paths), whole_hw, frame_hw)


def random_warp(img: np.ndarray, max_px: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth random geometric warp of an HWC image: a global shift plus a low-frequency displacement.

    Displacements (up to `max_px` pixels each for the shift and for the local field, a 3x3 grid of
    random vectors bilinearly upsampled) move the inner parts of the part against its outline, as a
    part seated slightly off-centre or tilted in its fixture does. Edges are replicated. (Tried on
    MVTec bottle for test/good/019; that image turned out not to be displaced: see models/HISTORY.md.)
    """
    h, w, _ = img.shape
    shift = rng.uniform(-max_px, max_px, size=2)
    coarse = torch.from_numpy(rng.uniform(-max_px, max_px, size=(1, 2, 3, 3)).astype(np.float32))
    field = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=True)[0]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    field = field.numpy()
    return bilinear(img, ys + float(shift[0]) + field[0], xs + float(shift[1]) + field[1])


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    g = torch.exp(-((torch.arange(size) - size // 2) ** 2).float() / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None].repeat(3, 1, 1, 1)


def ssim_loss(a: torch.Tensor, b: torch.Tensor, win: torch.Tensor) -> torch.Tensor:
    pad = win.shape[-1] // 2
    mu_a = F.conv2d(a, win, padding=pad, groups=3)
    mu_b = F.conv2d(b, win, padding=pad, groups=3)
    saa = F.conv2d(a * a, win, padding=pad, groups=3) - mu_a**2
    sbb = F.conv2d(b * b, win, padding=pad, groups=3) - mu_b**2
    sab = F.conv2d(a * b, win, padding=pad, groups=3) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    ssim = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (saa + sbb + c2))
    return 1 - ssim.mean()


def focal_loss(logits: torch.Tensor, mask: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    logp = F.log_softmax(logits, 1)
    target = mask.long()
    logpt = logp.gather(1, target[:, None]).squeeze(1)
    pt = logpt.exp()
    return (-((1 - pt) ** gamma) * logpt).mean()


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Rank-based AUROC (ties get the average rank)."""
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    s = scores[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    pos = labels == 1
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def image_scores(model: AnomalyNet, images: np.ndarray, device: torch.device) -> np.ndarray:
    """The graph's image score for each of `images` (N,H,W,3 in [0,1]), in batches of 16, no grad."""
    scores = []
    with torch.no_grad():
        for i in range(0, len(images), 16):
            x = torch.from_numpy(images[i : i + 16]).permute(0, 3, 1, 2).to(device)
            _, sc = model(x)
            scores.append(sc.cpu().numpy().reshape(-1))
    return np.concatenate(scores)


def evaluate(model: AnomalyNet, test: tuple[np.ndarray, np.ndarray], device: torch.device) -> float:
    images, labels = test
    model.eval()
    scores = image_scores(model, images, device)
    model.train()
    return auroc(scores, labels)


class SyntheticAnomalies(torch.utils.data.Dataset):
    """Training samples: (clean image, image with a synthetic anomaly, mask), CHW / HW tensors.

    An item is keyed by (epoch, slot, image index) and draws from its own generator seeded with
    (seed, epoch, slot), so a run is reproducible whatever the number of loader workers.
    """

    def __init__(self, images: np.ndarray, cfg: dict, textures: np.ndarray | None):
        self.images, self.cfg, self.textures = images, cfg, textures
        # where each image's anomalies may fall (None: anywhere), found once per image
        self.regions = [part_region(img) for img in images] if cfg["anomaly_on_part"] else None
        # each aligned image's part without its shadow, for outline anomalies, found once per image
        self.bodies = ([body(img) for img in images] if cfg["shape_anomalies"] > 0 and cfg.get("alignment")
                       else None)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key):
        epoch, slot, i = key
        rng = np.random.default_rng([int(self.cfg["seed"]), int(epoch), int(slot)])
        img = self.images[i]
        region = self.regions[i] if self.regions is not None else None
        part = self.bodies[i] if self.bodies is not None else None
        if self.cfg["flip_augment"]:
            if rng.random() < 0.5:
                img = img[:, ::-1]
                region = region[:, ::-1] if region is not None else None
                part = part[:, ::-1] if part is not None else None
            if rng.random() < 0.5:
                img = img[::-1]
                region = region[::-1] if region is not None else None
                part = part[::-1] if part is not None else None
            img = np.ascontiguousarray(img)
        if self.cfg["warp_augment"]:
            img = random_warp(img, float(self.cfg["warp_augment"]), rng)
            region = part_region(img) if region is not None else None
            part = body(img) if part is not None else None
        target = img
        if self.cfg["relight_augment"] and rng.random() < float(self.cfg["relight_prob"]):
            img = random_relight(img, float(self.cfg["relight_augment"]), rng,
                                 float(self.cfg["relight_gain"]), bool(self.cfg["relight_colour_only"]))
            # "relit": the reconstruction reproduces the relit part; "original": it maps it back to
            # the part as photographed (the discriminator still labels the relit pixels normal).
            if self.cfg["relight_target"] == "relit":
                target = img
        if part is not None and rng.random() < float(self.cfg["shape_anomalies"]):
            # half of these stay clean too, as in make_anomaly
            a, m = (img, np.zeros(img.shape[:2], np.float32)) if rng.random() < 0.5 else \
                outline_anomaly(img, part, rng)
        else:
            a, m, _ = make_anomaly(img, self.images, rng, self.textures, region, self.cfg["anomaly_scale"])
        return (torch.from_numpy(target).permute(2, 0, 1), torch.from_numpy(a).permute(2, 0, 1),
                torch.from_numpy(m))


class EpochBatches(torch.utils.data.Sampler):
    """Batches of (epoch, slot, index) keys for epochs [start, end): a shuffled pass per epoch."""

    def __init__(self, n: int, bs: int, seed: int, start: int, end: int):
        self.n, self.bs, self.seed, self.start, self.end = n, bs, seed, start, end

    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(self.n / self.bs))

    def __len__(self) -> int:
        return (self.end - self.start) * self.steps_per_epoch()

    def __iter__(self):
        for epoch in range(self.start, self.end):
            perm = np.random.default_rng([self.seed, epoch, 1 << 20]).permutation(self.n)
            for s in range(self.steps_per_epoch()):
                idx = perm[s * self.bs : (s + 1) * self.bs]
                yield [(epoch, s * self.bs + j, int(i)) for j, i in enumerate(idx)]


def loader(ds: SyntheticAnomalies, sampler: EpochBatches, workers: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(ds, batch_sampler=sampler, num_workers=workers,
                                       persistent_workers=False, prefetch_factor=2 if workers else None)


def precise_bn(model: AnomalyNet, ds: SyntheticAnomalies, cfg: dict, batches: int, device: torch.device) -> None:
    """Recomputes BatchNorm statistics as a plain average over `batches` training batches.

    During training the running statistics are an exponential average over the last few noisy
    batches of 8, so the eval-mode network changes markedly from one epoch to the next even at a tiny
    learning rate (measured: test image AUROC 0.66 at epoch 80, 0.92 at epoch 90, lr 5e-5). Averaging
    over many batches of the training distribution (synthetic anomalies included) removes that noise
    (precise BN, Wu & Johnson 2021). Weights are untouched.
    """
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average
    bs = int(cfg["batch_size"])
    # Keys from epochs past the last one: samples no training step saw, same distribution.
    epochs = math.ceil(batches * bs / len(ds))
    sampler = EpochBatches(len(ds), bs, int(cfg["seed"]), int(cfg["epochs"]) + 1000,
                           int(cfg["epochs"]) + 1000 + epochs)
    model.train()
    with torch.no_grad():
        for n, (_, aug_t, _) in enumerate(loader(ds, sampler, int(cfg["workers"]))):
            if n == batches:
                break
            model.forward_train(aug_t.to(device))
    for bn in bns:
        bn.momentum = 0.1


def pack(args, hw: tuple[int, int]) -> None:
    """Writes the training (and test) images, resized as the firmware does, to one .npz (uint8)."""
    train, train_labels = load_set(args.data, hw, "train")
    arrays = {"train_images": np.round(train * 255).astype(np.uint8), "train_labels": train_labels}
    if args.test:
        test, test_labels = load_set(args.test, hw, "test")
        arrays |= {"test_images": np.round(test * 255).astype(np.uint8), "test_labels": test_labels}
    np.savez_compressed(args.pack, **arrays)
    print(f"packed {len(train)} training and {len(arrays.get('test_images', []))} test images "
          f"at {hw[0]}x{hw[1]} (HxW) into {args.pack}")


def load_compatible(path: Path, cfg: dict, device: torch.device) -> dict:
    """A checkpoint whose network (SSPCAB on/off, input size) matches `cfg`; exits naming it if not."""
    ck = torch.load(path, weights_only=False, map_location=device)
    if ck["config"]["sspcab"] != cfg["sspcab"] or input_hw(ck["config"], []) != input_hw(cfg, []):
        sys.exit(f"error: {path} was trained with another network config (sspcab, input_size); "
                 "use another --out or init_from")
    return ck


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, help="JSON file overriding the defaults")
    ap.add_argument("--data", type=Path, required=True,
                    help="folder of good images, or an .npz written by --pack")
    ap.add_argument("--out", type=Path, help="run folder (config, log, checkpoints)")
    ap.add_argument("--test", type=Path, help="MVTec-style test folder or --pack .npz, for monitoring only")
    ap.add_argument("--epochs", type=int, help="override the config's epochs")
    ap.add_argument("--max-images", type=int, help="use only the first N images (smoke tests)")
    ap.add_argument("--precise-bn-batches", type=int, default=200,
                    help="batches averaged for the final BatchNorm statistics (0: keep the running ones)")
    ap.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    ap.add_argument("--time-limit-min", type=float,
                    help="stop after the epoch that crosses this wall time (logged; the run stays resumable)")
    ap.add_argument("--workers", type=int, help="override the config's loader workers (0: in-process)")
    ap.add_argument("--seed", type=int, help="override the config's seed")
    ap.add_argument("--threads", type=int,
                    help="override the config's CPU threads (e.g. when resuming with a core freed)")
    ap.add_argument("--pack", type=Path, help="write --data (and --test) as one .npz and exit")
    args = ap.parse_args()

    cfg = load_config(args.config) if args.config else dict(DEFAULTS)
    if args.epochs is not None:
        cfg["epochs"] = args.epochs
    if args.workers is not None:
        cfg["workers"] = args.workers
    if args.threads is not None:
        cfg["threads"] = args.threads
    if args.seed is not None:
        cfg["seed"] = args.seed
    if cfg["weight_average"] > 0 and args.precise_bn_batches <= 0:
        sys.exit("error: weight_average needs BatchNorm statistics computed for the averaged weights; "
                 "give --precise-bn-batches > 0 (default 200)")
    paths = list_images(args.data) if args.data.is_dir() else []
    alignment = fit_alignment(cfg, paths)
    hw = align.input_hw(align.Alignment(**alignment)) if alignment else input_hw(cfg, paths)
    if alignment and alignment["rotate"]:
        cfg["flip_augment"] = False  # a flip would undo the turn (a screw's head left, its thread mirrored)
    if args.pack:
        if alignment:
            sys.exit("error: --pack stores whole frames; it does not support \"align\" yet")
        pack(args, hw)
        return
    if args.out is None:
        sys.exit("error: --out is required")
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(int(cfg["threads"]))
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)
    torch.backends.cudnn.benchmark = True

    all_images, _ = load_set(args.data, hw, "train", alignment)
    if args.max_images:
        all_images = all_images[: args.max_images]
        paths = paths[: args.max_images]
    # The held-out good images: drawn across the whole collection, never trained on (verdict.py).
    held = holdout_indices(len(all_images), float(cfg["holdout"]), int(cfg["seed"]))
    keep = np.setdiff1d(np.arange(len(all_images)), held)
    images, holdout = all_images[keep], all_images[held]
    test = load_set(args.test, hw, "test", alignment) if args.test else None
    cfg["data"] = str(args.data) + (" (packed by --pack)" if args.data.suffix == ".npz" else "")
    cfg["n_images"] = len(images)
    cfg["input_hw"] = list(hw)
    cfg["alignment"] = alignment
    cfg["holdout_files"] = [str(paths[i].relative_to(args.data)) if paths else f"#{i}" for i in held]
    cfg["defect_scale"] = dataclasses.asdict(defect_scale(cfg, paths))
    steps_per_epoch = max(1, math.ceil(len(images) / int(cfg["batch_size"])))
    if int(cfg["steps"]) > 0:
        cfg["epochs"] = max(1, math.ceil(int(cfg["steps"]) / steps_per_epoch))
        if args.epochs is not None:
            cfg["epochs"] = args.epochs
    cfg["camera_controls"] = collect_manifest_controls(args.data)

    torch.manual_seed(cfg["seed"])
    model = build(cfg)
    params = sum(p.numel() for p in model.parameters())
    macs = count_macs(model, hw[0], hw[1])
    cfg["params"], cfg["macs"] = params, macs
    # channels-last (NHWC): oneDNN's convolutions run without reordering every map (benches/train_step.py:
    # ~1.2x a step on this machine's CPU); the same arithmetic in another order, weights saved as usual
    model.to(device, memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    milestones = [int(m * cfg["epochs"]) for m in cfg["lr_milestones"]]
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones, gamma=0.1)
    win = gaussian_window().to(device)

    # The weights' exponential average (torch's own AveragedModel); parameters only: BatchNorm's
    # statistics are recomputed for whichever weights become the model (precise_bn).
    average = (torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg["weight_average"]))
        if cfg["weight_average"] > 0 else None)
    ckpt_path = args.out / "last.pt"
    start_epoch = 0
    if cfg["init_from"] and not ckpt_path.exists():
        # Fine-tuning: weights (not optimizer state) from another run's final.pt; its hash is recorded.
        init = Path(cfg["init_from"])
        if not init.is_file():
            sys.exit(f"error: init_from {init} does not exist (a final.pt of an earlier run)")
        blob = init.read_bytes()
        ck = load_compatible(init, cfg, device)
        model.load_state_dict(ck["model"])
        import hashlib
        cfg["init_sha256"] = hashlib.sha256(blob).hexdigest()
        cfg["init_config"] = ck["config"]
    if ckpt_path.exists():
        ck = load_compatible(ckpt_path, cfg, device)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        if average is not None:
            if "average" not in ck:
                sys.exit(f"error: {ckpt_path} was trained without weight_average; resume with the run's own "
                         "config or use another --out")
            average.load_state_dict(ck["average"])
        # The epoch count may be changed on resume: the milestones follow the current config.
        from collections import Counter
        sched.milestones = Counter(milestones)
        start_epoch = ck["epoch"] + 1
    (args.out / "config.json").write_text(json.dumps(cfg, indent=2))
    log = open(args.out / "train.log", "a")

    def say(msg: str) -> None:
        print(msg, flush=True)
        log.write(msg + "\n")
        log.flush()

    textures = make_texture_bank(hw, int(cfg["texture_bank"]), int(cfg["seed"]))
    ds = SyntheticAnomalies(images, cfg, textures)
    bs = int(cfg["batch_size"])
    sampler = EpochBatches(len(images), bs, int(cfg["seed"]), start_epoch, int(cfg["epochs"]))
    steps = sampler.steps_per_epoch()
    say(f"params {params} MACs {macs / 1e9:.3f} G input {hw[0]}x{hw[1]} (HxW) images {len(images)} "
        f"(+{len(holdout)} held out) epochs {cfg['epochs']} x {steps} steps start_epoch {start_epoch} "
        f"device {device} workers {cfg['workers']} texture_bank {cfg['texture_bank']}")
    t_start = time.time()
    model.train()
    batches = iter(loader(ds, sampler, int(cfg["workers"])))
    for epoch in range(start_epoch, cfg["epochs"]):
        t0 = time.time()
        sums = torch.zeros(4, device=device)
        for _ in range(steps):
            clean_t, aug_t, mask_t = (t.to(device, non_blocking=True) for t in next(batches))
            aug_t = aug_t.contiguous(memory_format=torch.channels_last)
            rec, logits = model.forward_train(aug_t)
            l2 = F.mse_loss(rec, clean_t)
            ls = ssim_loss(rec, clean_t, win)
            lf = focal_loss(logits, mask_t)
            lsp = model.sspcab_loss()
            loss = l2 + ls + lf + cfg["sspcab_lambda"] * lsp
            opt.zero_grad()
            loss.backward()
            opt.step()
            if average is not None:
                average.update_parameters(model)
            sums += torch.stack([l2.detach(), ls.detach(), lf.detach(), lsp.detach()])
        sched.step()
        mean = (sums / steps).tolist()
        msg = (
            f"epoch {epoch + 1}/{cfg['epochs']} l2 {mean[0]:.4f} ssim {mean[1]:.4f} focal {mean[2]:.4f} "
            f"sspcab {mean[3]:.4f} lr {opt.param_groups[0]['lr']:.1e} {time.time() - t0:.2f}s"
        )
        done, spent = epoch + 1 - start_epoch, time.time() - t_start
        left = spent / done * (cfg["epochs"] - epoch - 1)
        msg += f" | {spent / 60:.1f} min so far, ~{left / 60:.1f} min left"
        if test is not None and (epoch + 1) % int(cfg["eval_every"]) == 0:
            msg += f" test_image_auroc {evaluate(model, test, device):.4f}"
        say(msg)
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                    "epoch": epoch, "config": cfg,
                    **({} if average is None else {"average": average.state_dict()})}, tmp)
        os.replace(tmp, ckpt_path)
        if args.time_limit_min and time.time() - t_start > 60 * args.time_limit_min and epoch + 1 < cfg["epochs"]:
            say(f"stopped at the time limit ({args.time_limit_min} min) after epoch {epoch + 1}; "
                "rerun the same command to resume")
            return
    final = args.out / "final.pt"
    if not final.exists() or final.stat().st_mtime < ckpt_path.stat().st_mtime:
        if average is not None:
            # the last step's weights are kept beside (final_last.pt), finished the same way
            finish(model, ds, cfg, args, device, test, say, args.out / "final_last.pt")
            with torch.no_grad():  # the parameters; BatchNorm's statistics follow in `finish`
                for p, q in zip(model.parameters(), average.module.parameters()):
                    p.copy_(q)
            say(f"the model: the weights' exponential average (decay {cfg['weight_average']} per step)")
        finish(model, ds, cfg, args, device, test, say, final)
    else:
        model.load_state_dict(load_compatible(final, cfg, device)["model"])
    say(f"done in {time.time() - t_start:.0f} s")
    verdict = judge_run(model, all_images, images, holdout, cfg, device)
    for line in verdict.lines():
        say(line)
    cfg["verdict"] = dataclasses.asdict(verdict)
    (args.out / "config.json").write_text(json.dumps(cfg, indent=2))
    if paths and len(held):
        # the held-out good images, for `partguard calibrate` (parts the model has not seen); in a
        # `good` folder, as replay labels images by their folder's name
        hold_dir = args.out / "holdout" / "good"
        hold_dir.mkdir(parents=True, exist_ok=True)
        for i in held:
            link = hold_dir / paths[i].name
            if not link.exists():
                link.symlink_to(paths[i].resolve())


def finish(model: AnomalyNet, ds: SyntheticAnomalies, cfg: dict, args, device: torch.device, test,
           say, path: Path) -> None:
    """Precise BatchNorm statistics for the model's weights, then the model saved to `path`."""
    if args.precise_bn_batches > 0:
        precise_bn(model, ds, cfg, args.precise_bn_batches, device)
        msg = f"precise BN over {args.precise_bn_batches} batches"
        if test is not None:
            msg += f" test_image_auroc {evaluate(model, test, device):.4f}"
        say(msg)
    tmp = path.with_suffix(".tmp")
    state = {k: v.cpu() for k, v in model.state_dict().items()}
    torch.save({"model": state, "epoch": cfg["epochs"] - 1, "config": cfg}, tmp)
    os.replace(tmp, path)


def judge_run(model: AnomalyNet, all_images: np.ndarray, images: np.ndarray, holdout: np.ndarray,
              cfg: dict, device: torch.device):
    """verdict.judge on the final model (eval mode): training, held-out and validation-defect scores."""
    model.eval()
    train_scores = image_scores(model, images, device)
    hold_scores = image_scores(model, holdout, device) if len(holdout) else np.zeros(0)
    scale = DefectScale(**cfg.get("defect_scale", {}))
    defects, kinds = validation_set(holdout, int(cfg["seed"]), scale) if len(holdout) else (holdout, [])
    defect_scores = image_scores(model, defects, device) if len(holdout) else np.zeros(0)
    faint = None
    if len(holdout):
        faint_images, labels = faint_set(holdout, int(cfg["seed"]), scale=scale)
        faint = (image_scores(model, faint_images, device), labels)
    return judge(all_images, train_scores, hold_scores, defect_scores, kinds, faint)


if __name__ == "__main__":
    main()
