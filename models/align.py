"""Part alignment: the model sees the part, turned to one orientation, at the camera's resolution.

A small elongated part lying anywhere, at any angle, in a large frame (a screw on a tray) wastes most
of the model's input on background, and the network must learn every orientation. Machine-vision
tools fix the part's position first (a "position adjustment" or "fixture" step); this is that step:

1. `pose`: the part (`verdict.body`: pixels that differ from the border's colour by over 0.3, holes
   filled) gives a centroid, a principal axis (second moments) and a direction along it (the sign
   of the third moment: the heavier end, a screw's head, goes right).
2. `fit`, on the training images: the part is turned to its axis where the collection's parts are
   elongated (median axis ratio >= 2; a round part has no axis to turn to) and cropped to a box
   that holds 99% of the parts with a 10% margin.
3. `input_hw`: the box is resampled to at most `pixels` input pixels (the MAC budget: 128 x 128
   by default) at its aspect ratio, never above the camera's own resolution, sides multiples of 16.
4. `apply`: per image, the box around that image's pose, resampled bilinearly.

A part that fills the frame, or a frame where no part is found, keeps the whole frame.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from PIL import Image

from verdict import DefectScale, body, border_median

ELONGATION_MIN = 2.0  # the collection's median axis ratio (major / minor std) from which parts are turned
MARGIN = 1.1  # the box over the 99th percentile of the parts' extents


@dataclasses.dataclass
class Pose:
    cy: float
    cx: float
    angle: float  # radians, the principal axis, pointing from the light end to the heavy end
    length: float  # extent along the axis (0.5th to 99.5th percentile of the part's pixels)
    width: float  # extent across it
    elongation: float  # major / minor standard deviation


@dataclasses.dataclass
class Alignment:
    rotate: bool  # turn each part to its axis
    box_h: int  # the crop, in the camera's pixels (height across the axis when rotating)
    box_w: int


def pose(img: np.ndarray) -> Pose | None:
    """The part's pose in `img` (H,W,3 in [0,1]); None when the part fills the frame."""
    part = body(img)
    if part.all() or part.sum() < 16:
        return None
    ys, xs = np.nonzero(part)
    cy, cx = ys.mean(), xs.mean()
    dy, dx = ys - cy, xs - cx
    cov = np.cov(np.stack([dx, dy]))
    evals, evecs = np.linalg.eigh(cov)
    ux, uy = evecs[:, 1]  # major axis (x, y)
    along, across = dx * ux + dy * uy, -dx * uy + dy * ux
    if (along ** 3).mean() > 0:  # the light end has the long tail of projections: to the left
        ux, uy, along = -ux, -uy, -along
    lo, hi = np.percentile(along, [0.5, 99.5])
    lo2, hi2 = np.percentile(across, [0.5, 99.5])
    return Pose(float(cy), float(cx), math.atan2(uy, ux), float(hi - lo), float(hi2 - lo2),
                float(math.sqrt(evals[1] / max(evals[0], 1e-9))))


def fit(images: list[np.ndarray]) -> Alignment | None:
    """The alignment for a collection (full-resolution images), or None (keep the whole frame)."""
    poses = [pose(img) for img in images]
    if not poses or any(p is None for p in poses):
        return None
    h, w = images[0].shape[:2]
    rotate = float(np.median([p.elongation for p in poses])) >= ELONGATION_MIN
    if rotate:
        box_w = MARGIN * np.percentile([p.length for p in poses], 99)
        box_h = MARGIN * np.percentile([p.width for p in poses], 99)
    else:  # the axis-aligned bounding box of the parts, as extents around the centroid
        box_w = MARGIN * np.percentile([p.length * abs(math.cos(p.angle)) + p.width * abs(math.sin(p.angle))
                                        for p in poses], 99)
        box_h = MARGIN * np.percentile([p.length * abs(math.sin(p.angle)) + p.width * abs(math.cos(p.angle))
                                        for p in poses], 99)
    box_h, box_w = min(int(math.ceil(box_h)), max(h, w)), min(int(math.ceil(box_w)), max(h, w))
    if not rotate and box_h >= 0.9 * h and box_w >= 0.9 * w:
        return None  # the part fills most of the frame: nothing to crop
    return Alignment(rotate, box_h, box_w)


def input_hw(a: Alignment, pixels: int = 128 * 128, m: int = 16) -> tuple[int, int]:
    """The model's input for the box: its aspect ratio, at most `pixels`, at most the box's own size
    (no upsampling beyond the camera), sides multiples of `m` (at least `m`)."""
    scale = min(1.0, math.sqrt(pixels / (a.box_h * a.box_w)))
    return (max(m, int(round(a.box_h * scale / m)) * m), max(m, int(round(a.box_w * scale / m)) * m))


def apply(img: Image.Image, a: Alignment, hw: tuple[int, int]) -> np.ndarray:
    """The aligned crop of `img` (PIL, any mode), resampled to `hw` (height, width): RGB in [0,1].
    Where no part is found the crop is centred on the frame, unturned."""
    rgb = img.convert("RGB")
    full = np.asarray(rgb, dtype=np.float32) / 255.0
    p = pose(full)
    cy, cx, angle = (p.cy, p.cx, p.angle if a.rotate else 0.0) if p else (full.shape[0] / 2, full.shape[1] / 2, 0.0)
    h, w = hw
    c, s = math.cos(angle), math.sin(angle)
    sx, sy = a.box_w / w, a.box_h / h
    # output (x, y) -> box (u, v) = (x sx - box_w / 2, y sy - box_h / 2) -> frame, turned by `angle`
    # about the centroid; PIL's affine maps output (x, y) to input (a x + b y + c, d x + e y + f)
    coeffs = (c * sx, -s * sy, cx - c * a.box_w / 2 + s * a.box_h / 2,
              s * sx, c * sy, cy - s * a.box_w / 2 - c * a.box_h / 2)
    fill = tuple(int(round(v * 255)) for v in border_median(full))  # where the crop leaves the frame
    out = rgb.transform((w, h), Image.AFFINE, coeffs, resample=Image.BILINEAR, fillcolor=fill)
    return np.asarray(out, dtype=np.float32) / 255.0


def defect_scale(a: Alignment, hw: tuple[int, int], whole_hw: tuple[int, int],
                 frame_hw: tuple[int, int]) -> DefectScale:
    """The validation defects' scale for a run aligned by `a` with input `hw`, against the whole
    frame (`frame_hw`, camera pixels) resampled to `whole_hw`, the input the recipe gives it
    unaligned: the defects stay as large on the part, in the camera's pixels (verdict.DefectScale)."""
    aligned = math.sqrt(hw[0] * hw[1] / (a.box_h * a.box_w))  # input px per camera px
    whole = math.sqrt(whole_hw[0] * whole_hw[1] / (frame_hw[0] * frame_hw[1]))
    px = aligned / whole
    return DefectScale(px, min(whole_hw) * px)
