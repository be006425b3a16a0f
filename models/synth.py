"""Synthetic anomalies for training on good parts only (DRAEM recipe, own implementation).

A Perlin-noise mask (scales 2^U{0..5} per axis, thresholded at 0.5) is filled with a texture altered by
three random photometric augmentations and blended into the good image with opacity beta ~ U(0, 0.8).
DTD is not available here, so textures are procedural (multi-octave colour noise, stripes, checkers) or
patches of other training images.

With `anomaly_on_part` (train.py) the mask is cut to the part and a thin margin around it
(`part_region`), as MemSeg (Yang et al., 2023) does for objects: on a small part in a plain frame
most masks would otherwise fall on the background, where no real defect lies. With `anomaly_scale`
"shorter_side" the masks on a long input are sized by its shorter side (`perlin_mask`). With
`shape_anomalies` that share of the samples of an aligned part get an anomaly of its outline
instead (`outline_anomaly`): material cut away or added, no texture.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from verdict import outline, part_mask, solid


def _fade(t: np.ndarray) -> np.ndarray:
    return 6 * t**5 - 15 * t**4 + 10 * t**3


def perlin(shape: tuple[int, int], res: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """2-D gradient noise in about [-1, 1]; shape must be divisible by res."""
    h, w = shape
    ry, rx = res
    dy, dx = h // ry, w // rx
    ys = (np.arange(h) * ry / h) % 1.0
    xs = (np.arange(w) * rx / w) % 1.0
    gy, gx = np.meshgrid(ys, xs, indexing="ij")
    angles = 2 * np.pi * rng.random((ry + 1, rx + 1))
    grads = np.stack([np.cos(angles), np.sin(angles)], -1)

    def tile(y0, y1, x0, x1):
        g = grads[y0:y1, x0:x1]
        return np.repeat(np.repeat(g, dy, 0), dx, 1)[:h, :w]

    def dot(g, sy, sx):
        return (gy + sy) * g[..., 0] + (gx + sx) * g[..., 1]

    n00 = dot(tile(0, -1, 0, -1), 0, 0)
    n10 = dot(tile(1, None, 0, -1), -1, 0)
    n01 = dot(tile(0, -1, 1, None), 0, -1)
    n11 = dot(tile(1, None, 1, None), -1, -1)
    ty, tx = _fade(gy), _fade(gx)
    a = n00 + ty * (n10 - n00)
    b = n01 + ty * (n11 - n01)
    return np.sqrt(2) * (a + tx * (b - a))


def _up32(n: int) -> int:
    """`n` rounded up to a multiple of 32 (Perlin needs its grid to divide the side)."""
    return -(-n // 32) * 32


def _square(shape: tuple[int, int]) -> int:
    """The side of the square the noise is drawn on for an image of `shape` (H, W): the longer side
    rounded up to a multiple of 32; the result is cropped."""
    return _up32(max(shape))


ANOMALY_SCALES = ("longer_side", "shorter_side")  # what perlin_mask's cells divide
MIN_CELL = 4  # px: the finest noise cell "shorter_side" draws (a 128-px square's finest)


def perlin_mask(shape: tuple[int, int], rng: np.random.Generator, threshold: float = 0.5,
                scale: str = "longer_side") -> np.ndarray:
    """A DRAEM noise mask for an image of `shape` (H, W): Perlin noise of 2^U{0..5} cells per axis,
    thresholded. `scale` is what the cells divide: "longer_side" (DRAEM's square image; on a long
    crop most blobs are wider than the crop is high) or "shorter_side" (the same sizes relative to
    the shorter side, the noise repeated along the longer one; cells of at least `MIN_CELL` px).
    Both draw the same random numbers and give the same mask on a square image."""
    h, w = shape
    side = _square(shape)
    short = _up32(min(shape))
    for _ in range(8):
        sy = 2 ** int(rng.integers(0, 6))
        sx = 2 ** int(rng.integers(0, 6))
        if scale == "shorter_side" and short < side:
            sy, sx = min(sy, short // MIN_CELL), min(sx, short // MIN_CELL)
            n = -(-max(shape) // short)  # squares of the shorter side along the longer one
            grid = (short, short * n) if w >= h else (short * n, short)
            res = (sy, sx * n) if w >= h else (sy * n, sx)
            noise = perlin(grid, res, rng)
            k = int(rng.integers(0, 4))  # a turn of a long strip would not fit: flips instead
            noise = noise[::-1] if k & 1 else noise
            noise = noise[:, ::-1] if k & 2 else noise
            noise = noise[:h, :w]
        else:
            noise = perlin((side, side), (sy, sx), rng)
            k = int(rng.integers(0, 4))
            noise = np.rot90(noise, k)[:h, :w]
        mask = (noise > threshold).astype(np.float32)
        if mask.sum() > 0:
            return np.ascontiguousarray(mask)
    return np.ascontiguousarray(mask)


def procedural_texture(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A texture of `shape` (H, W, 3 float32 in [0,1])."""
    h, w = shape
    return np.ascontiguousarray(_square_texture(_square(shape), rng)[:h, :w])


def _square_texture(size: int, rng: np.random.Generator) -> np.ndarray:
    kind = int(rng.integers(0, 3))
    if kind == 0:  # multi-octave colour noise
        tex = np.zeros((size, size, 3), np.float64)
        for c in range(3):
            amp = 1.0
            for octave in range(4):
                r = 2 ** (octave + 1)
                tex[..., c] += amp * perlin((size, size), (r, r), rng)
                amp *= 0.5
        tex = (tex - tex.min()) / (np.ptp(tex) + 1e-6)
    elif kind == 1:  # stripes at a random angle and period
        ang = rng.random() * np.pi
        period = rng.uniform(3, 24)
        yy, xx = np.mgrid[0:size, 0:size]
        phase = (np.cos(ang) * xx + np.sin(ang) * yy) / period
        s = 0.5 + 0.5 * np.sin(2 * np.pi * phase)
        c1, c2 = rng.random(3), rng.random(3)
        tex = s[..., None] * c1 + (1 - s[..., None]) * c2
    else:  # checkers / blocks with noise
        cell = int(rng.integers(2, 16))
        yy, xx = np.mgrid[0:size, 0:size]
        s = ((yy // cell + xx // cell) % 2).astype(np.float64)
        c1, c2 = rng.random(3), rng.random(3)
        tex = s[..., None] * c1 + (1 - s[..., None]) * c2
        tex += 0.1 * rng.standard_normal(tex.shape)
    return np.clip(tex, 0, 1).astype(np.float32)


def _augment(tex: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    ops = [
        lambda t: np.clip(t ** rng.uniform(0.5, 2.0), 0, 1),  # gamma
        lambda t: np.clip((t - 0.5) * rng.uniform(0.5, 2.0) + 0.5, 0, 1),  # contrast
        lambda t: np.clip(t * rng.uniform(0.5, 1.5), 0, 1),  # brightness
        lambda t: t[..., rng.permutation(3)],  # hue-like channel shuffle
        lambda t: np.floor(t * 2 ** int(rng.integers(1, 5))) / 2 ** int(rng.integers(1, 5)),  # posterize
        lambda t: np.where(t > rng.uniform(0.3, 0.9), 1 - t, t),  # solarize
        lambda t: 1 - t,  # invert
        # rotate (a quarter turn only where it keeps the shape)
        lambda t: np.rot90(t, int(rng.integers(1, 4)) if t.shape[0] == t.shape[1] else 2),
    ]
    for i in rng.choice(len(ops), 3, replace=False):
        tex = np.clip(ops[i](tex), 0, 1)
    return np.clip(np.ascontiguousarray(tex), 0, 1).astype(np.float32)


def make_texture_bank(shape: tuple[int, int], n: int, seed: int) -> np.ndarray | None:
    """n procedural textures made once (they cost ~20 ms each; the 3 random augmentations applied
    per sample keep the variety). None for n = 0: a fresh texture per sample."""
    if n <= 0:
        return None
    rng = np.random.default_rng([seed, 0x7E57])
    return np.stack([procedural_texture(shape, rng) for _ in range(n)])


def make_anomaly(img: np.ndarray, others: np.ndarray, rng: np.random.Generator,
                 textures: np.ndarray | None = None, region: np.ndarray | None = None,
                 scale: str = "longer_side"):
    """img: HxWx3 float32 in [0,1]. Returns (augmented image, mask HxW, has_anomaly).

    `region` (HxW bool, `part_region`): where the anomaly may fall; None: anywhere. A noise mask
    that misses the region is drawn again (up to 4 times), then kept whole. `scale`: `perlin_mask`'s.
    """
    shape = img.shape[:2]
    if rng.random() < 0.5:
        return img, np.zeros(shape, np.float32), 0.0
    if rng.random() < 0.5:
        tex = others[int(rng.integers(0, len(others)))]
    elif textures is not None:
        tex = textures[int(rng.integers(0, len(textures)))]
    else:
        tex = procedural_texture(shape, rng)
    tex = _augment(tex, rng)
    mask = perlin_mask(shape, rng, scale=scale)
    if region is not None:
        for _ in range(4):
            on_part = mask * region
            if on_part.sum() > 0:
                mask = on_part
                break
            mask = perlin_mask(shape, rng, scale=scale)
    beta = rng.uniform(0.0, 0.8)
    m = mask[..., None]
    out = img * (1 - m) + (1 - beta) * tex * m + beta * img * m
    has = 1.0 if mask.sum() > 0 else 0.0
    return out.astype(np.float32), mask, has


def random_relight(img: np.ndarray, strength: float, rng: np.random.Generator,
                   gain: float = 0.25, colour_only: bool = False) -> np.ndarray:
    """Smooth local changes of colour saturation and brightness of a *good* image, labelled normal.

    Models the reflections of a glossy part under fixed lighting: a reflection band (on MVTec bottle
    the copper-coloured inner rim) is brighter, paler or absent from part to part. Two low-frequency
    Perlin fields (1, 2 or 4 cells across) scale the saturation (down to 1 - strength, grey) and the
    brightness (by up to +-gain*strength; gain 0 changes colour only). Applied before the synthetic
    anomaly, to the reconstruction target too, so neither sub-network learns such a change as a
    defect. With `colour_only` both changes are weighted by how coloured a pixel is (0 at chroma
    <= 0.06, full at >= 0.14; chroma = max - min channel): only the reflection band changes, grey and
    dark surfaces keep their brightness. Measured on bottle (models/HISTORY.md): only the brightness
    change on grey surfaces moves good/019, and it also raises the score floor of good parts.
    """
    h, w = img.shape[:2]
    side = _square((h, w))

    def field() -> np.ndarray:
        r = 2 ** int(rng.integers(0, 3))
        return np.clip((perlin((side, side), (r, r), rng)[:h, :w] + 1) / 2, 0, 1)

    sat = 1 - strength * rng.uniform(0.5, 1.0) * field()
    scale = 1 + gain * strength * (2 * field() - 1)
    if colour_only:
        w = np.clip((img.max(-1) - img.min(-1) - 0.06) / 0.08, 0, 1)
        sat = 1 - (1 - sat) * w
        scale = 1 + (scale - 1) * w
    grey = img.mean(-1, keepdims=True)
    out = (grey + (img - grey) * sat[..., None]) * scale[..., None]
    return np.clip(out, 0, 1).astype(np.float32)


PART_MARGIN = 0.05  # the margin around the part where training anomalies may fall, of the shorter side


def part_region(img: np.ndarray) -> np.ndarray | None:
    """Where training anomalies may fall on `img` (H,W,3): the part (`verdict.part_mask` with its
    shadow, holes filled) grown by `PART_MARGIN` of the shorter side, so that an anomaly can also
    add or take material at the outline; None when the part fills the frame."""
    part = solid(part_mask(img))
    if part.all():
        return None
    r = max(1, round(PART_MARGIN * min(part.shape)))
    grown = Image.fromarray(part.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(2 * r + 1))
    return np.asarray(grown) > 0


OUTLINE_RADII = (0.03, 0.08)  # an outline anomaly's radius, of the shorter side


def outline_anomaly(img: np.ndarray, body: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A change of the part's shape, as a thread cut short or a burr changes it: a disc of radius
    `OUTLINE_RADII` of the shorter side centred on an outline pixel of `body` (the part without its
    shadow, `verdict.body`); inside it, with even odds, the part's pixels replaced by the image two
    radii further out (the background: material cut away), or the background's pixels by the image
    two radii further in (the part's own texture: material added). "Out" is away from the part's
    pixels near the centre. Returns (image, mask of the pixels changed); the image unchanged and an
    empty mask where the part has no outline. No new colour, no smooth shift (`verdict.warp`, a
    figure that judges recipes, moves pixels; this replaces them)."""
    h, w = body.shape
    ys, xs = np.nonzero(outline(body))
    if len(ys) == 0:
        return img, np.zeros((h, w), np.float32)
    i = int(rng.integers(0, len(ys)))
    cy, cx = float(ys[i]), float(xs[i])
    r = max(1.5, rng.uniform(*OUTLINE_RADII) * min(h, w))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dist = np.hypot(yy - cy, xx - cx)
    near = body & (dist <= 2 * r)
    iny, inx = float(yy[near].mean()) - cy, float(xx[near].mean()) - cx  # towards the part
    norm = float(np.hypot(iny, inx))
    if norm < 1e-3:
        a = rng.uniform(0, 2 * np.pi)
        iny, inx = float(np.sin(a)), float(np.cos(a))
    else:
        iny, inx = iny / norm, inx / norm
    disc = dist <= r
    cut = rng.random() < 0.5
    changed = disc & body if cut else disc & ~body
    step = -2 * r if cut else 2 * r
    sy = np.clip(np.rint(yy + step * iny), 0, h - 1).astype(int)
    sx = np.clip(np.rint(xx + step * inx), 0, w - 1).astype(int)
    out = img.copy()
    out[changed] = img[sy, sx][changed]
    return out, changed.astype(np.float32)
