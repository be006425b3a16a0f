"""Tests of the recipe's parts without training: verdict.py, the input shape, the non-square synthesis
(run by smoke_test.sh: `python models/test_recipe.py`)."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import verdict  # noqa: E402
from synth import make_anomaly, make_texture_bank, part_region, perlin_mask, random_relight  # noqa: E402
from train import input_hw  # noqa: E402


def test_holdout_spreads_over_the_whole_collection() -> None:
    held = verdict.holdout_indices(200, 0.15, seed=1)
    assert len(held) == 30 and len(set(held)) == 30, held
    # one image from each of 30 equal runs of the name-sorted list: every run is represented
    edges = np.linspace(0, 200, 31).astype(int)
    runs = sorted(int(np.searchsorted(edges, i, side="right")) - 1 for i in held)
    assert runs == list(range(30)), runs
    assert list(held) == list(verdict.holdout_indices(200, 0.15, seed=1))  # reproducible
    assert list(held) != list(verdict.holdout_indices(200, 0.15, seed=2))
    assert len(verdict.holdout_indices(7, 0.15, seed=1)) == 0  # too few to hold any back
    assert len(verdict.holdout_indices(10, 0.15, seed=1)) == 4  # at least 4
    assert len(verdict.holdout_indices(10, 0.9, seed=1)) == 5  # at most half
    assert len(verdict.holdout_indices(100, 0.0, seed=1)) == 0


def test_validation_defects_are_small_and_on_the_part() -> None:
    img = np.full((80, 128, 3), 0.8, np.float32)  # plain light background...
    img[20:60, 30:100] = 0.3  # ...and a dark part
    out, kinds = verdict.validation_set(img[None], seed=5)
    assert out.shape == (3, 80, 128, 3) and kinds == ["scratch", "spot", "chip"]
    for defect in out:
        changed = np.abs(defect - img).max(-1) > 0.02
        assert 0 < changed.sum() < 0.05 * changed.size, changed.sum()  # a few pixels, not a region
        ys, xs = np.nonzero(changed)
        # starts on the part (a scratch may run off it by its length)
        assert ((ys >= 20) & (ys < 60) & (xs >= 30) & (xs < 100)).any()
    assert np.array_equal(out, verdict.validation_set(img[None], seed=5)[0])
    # the chip: the part's pixels at its outline turned to the background, nothing else touched
    changed = np.abs(out[2] - img).max(-1) > 0.02
    ys, xs = np.nonzero(changed)
    assert ((ys >= 20) & (ys < 60) & (xs >= 30) & (xs < 100)).all()  # only the part's pixels
    assert ((ys == 20) | (ys == 59) | (xs == 30) | (xs == 99)).any()  # from its edge inwards
    # towards the background's colour, reaching it inside the disc
    assert (out[2][changed] > 0.3).all() and np.isclose(out[2][changed].max(), 0.8)
    full = np.full_like(img, 0.5)  # a part filling the frame has no outline: no chip
    out, kinds = verdict.validation_set(full[None], seed=5)
    assert kinds == ["scratch", "spot"] and out.shape[0] == 2


def test_scratches_start_on_the_part_wherever_it_lies() -> None:
    # a small part away from the frame's diagonal, in a wide frame (an aligned screw is 64 x 240):
    # a scratch started at the part pixel's (column, row) instead of (row, column) would start
    # off the part, or outside the frame and leave it untouched (the bug until 2026-12-03)
    img = np.full((64, 240, 3), 0.8, np.float32)
    img[8:24, 150:200] = 0.3
    part = np.zeros(img.shape[:2], bool)
    part[8:24, 150:200] = True
    for seed in range(20):
        rng = np.random.default_rng(seed)
        for scale in (verdict.DefectScale(), verdict.DefectScale(1.9, 243.0)):
            out = verdict.validation_defect(img, "scratch", rng, scale=scale)
            changed = np.abs(out - img).max(-1) > 0.05
            assert changed[part].any(), (seed, scale)


def test_validation_defects_keep_their_size_on_the_part_at_a_finer_input_scale() -> None:
    img = np.full((80, 128, 3), 0.8, np.float32)
    img[20:60, 30:100] = 0.3
    plain, _ = verdict.validation_set(img[None], seed=5)
    # the plain scale draws exactly what a run without one draws
    assert np.array_equal(plain, verdict.validation_set(img[None], 5, verdict.DefectScale(1.0, None))[0])
    # at twice the input scale (an aligned part), the same defects cover about 4x the pixels
    fine, _ = verdict.validation_set(img[None], seed=5, scale=verdict.DefectScale(2.0, 160.0))
    for kind, a, b in zip(("scratch", "spot", "chip"), plain, fine):
        area = [(np.abs(d - img).max(-1) > 0.02).sum() for d in (a, b)]
        assert 2.5 * area[0] < area[1] < 6 * area[0], (kind, area)


def test_faint_defects_differ_only_in_contrast() -> None:
    img = np.full((64, 96, 3), 0.8, np.float32)
    img[16:48, 20:80] = 0.4
    out, labels = verdict.faint_set(img[None], seed=3, shifts=(), radii=())  # the grey marks only
    assert labels == [(k, c) for k in ("scratch", "spot") for c in verdict.SENSITIVITY_CONTRASTS]
    for kind in ("scratch", "spot"):
        diffs = [out[i] - img for i, (k, _) in enumerate(labels) if k == kind]
        for d, c in zip(diffs, verdict.SENSITIVITY_CONTRASTS):
            assert np.isclose(np.abs(d).max(), c, atol=1e-5)  # the full contrast inside the shape
            assert np.allclose(d, diffs[-1] * c / verdict.SENSITIVITY_CONTRASTS[-1], atol=1e-5)  # same place
    # found above the threshold: all at 40%, half at 20%, none below; the report does not judge
    scores = np.array([0.1, 0.1, 0.1, 0.9] * 2 + [0.1, 0.1, 0.9, 0.9] * 2)
    labels = [(k, c) for k in ("scratch", "spot") for _ in range(2) for c in verdict.SENSITIVITY_CONTRASTS]
    report = verdict.sensitivity(0.5, scores, labels)
    assert report["scratch"] == {0.05: 0.0, 0.1: 0.0, 0.2: 0.0, 0.4: 1.0}
    assert verdict.faintest(report["scratch"]) == 0.4 and verdict.faintest(report["spot"]) == 0.2
    assert verdict.faintest({0.05: 0.0, 0.1: 0.2, 0.2: 0.4, 0.4: 0.4}) is None
    rng = np.random.default_rng(0)
    images = rng.uniform(0.2, 0.8, (10, 16, 16, 3)).astype(np.float32)
    v = verdict.judge(images, np.full(20, 0.35), np.full(8, 0.3), np.full(16, 0.9), faint=(scores, labels))
    assert v.verdict == "usable" and any("from 20% contrast" in line for line in v.lines()), v.lines()


def test_alignment_turns_the_part_to_its_axis_with_its_heavy_end_right() -> None:
    import align

    def screw(angle_deg: float, cx: int, cy: int) -> Image.Image:
        """A dark bar 160 x 24 px with a 45 x 44 head at one end, on a light background."""
        im = Image.new("L", (256, 256), 220)
        part = Image.new("L", (220, 60), 0)
        part.paste(255, (10, 18, 170, 42))
        part.paste(255, (165, 8, 210, 52))
        part = part.rotate(angle_deg, expand=True, resample=Image.NEAREST)
        im.paste(40, (cx - part.width // 2, cy - part.height // 2), part)
        return im

    frames = [screw(a, 128 + dx, 128 + dy) for a, dx, dy in [(0, 0, 0), (35, -8, 6), (130, 6, -10), (250, 4, 8)]]
    full = [np.asarray(f.convert("RGB"), np.float32) / 255.0 for f in frames]
    a = align.fit(full)
    assert a is not None and a.rotate and 180 < a.box_w < 260 and 35 < a.box_h < 70, a
    hw = align.input_hw(a)
    assert hw[0] % 16 == 0 and hw[1] % 16 == 0 and hw[0] * hw[1] <= 128 * 128 and hw[1] > 3 * hw[0], hw
    crops = [align.apply(f, a, hw) for f in frames]
    for crop in crops:  # the same picture whatever the part's place and angle: head right, shaft left
        dark = crop.mean(-1) < 0.5
        cols = dark.sum(0)
        assert cols[-hw[1] // 4:].max() > 1.5 * cols[: hw[1] // 2].max(), cols
        assert np.abs(crop - crops[0]).mean() < 0.08
    # a round part has no axis to turn to; a part filling the frame keeps the whole frame
    disc = Image.new("L", (256, 256), 220)
    from PIL import ImageDraw
    ImageDraw.Draw(disc).ellipse([60, 50, 180, 170], fill=40)
    round_ = align.fit([np.asarray(disc.convert("RGB"), np.float32) / 255.0])
    assert round_ is not None and not round_.rotate, round_
    assert align.fit([np.full((64, 64, 3), 0.5, np.float32)]) is None


def test_holes_are_filled_and_the_frame_edge_is_no_outline() -> None:
    part = np.zeros((20, 20), bool)
    part[:, 5:15] = True  # a bar from the top of the frame to its bottom...
    part[8:12, 8:12] = False  # ...with a hole
    assert verdict.solid(part)[8:12, 8:12].all() and not verdict.solid(part)[:, :5].any()
    edge = verdict.outline(verdict.solid(part))
    assert edge[:, 5].all() and edge[:, 14].all() and not edge[0, 6:14].any()


def scores(rng, n, lo, hi):
    return rng.uniform(lo, hi, n)


def test_rules() -> None:
    rng = np.random.default_rng(0)
    images = rng.uniform(0.2, 0.8, (10, 16, 16, 3)).astype(np.float32)
    train = scores(rng, 50, 0.1, 0.2)
    good = scores(rng, 8, 0.1, 0.2)
    v = verdict.judge(images, train, good, scores(rng, 16, 0.5, 0.9))
    assert v.verdict == "usable" and v.validation_auroc == 1.0 and v.detected == 1.0, v
    # defects score like good parts: the model does not see them
    v = verdict.judge(images, train, good, scores(rng, 16, 0.1, 0.2))
    assert v.verdict == "retrain with more images", v
    # the AUROC per kind: chips missed, scratches found
    v = verdict.judge(images, train, good, np.r_[scores(rng, 8, 0.5, 0.9), scores(rng, 8, 0.1, 0.2)],
                      ["scratch"] * 8 + ["chip"] * 8)
    assert v.by_kind["scratch"] == 1.0 and v.by_kind["chip"] < 0.9 and "chip" in v.lines()[1], v
    assert any("validation AUROC" in r for r in v.reasons), v.reasons
    # unseen good parts score above every training image: it learnt its images, not the part
    v = verdict.judge(images, train, scores(rng, 8, 0.3, 0.4), scores(rng, 16, 0.5, 0.9))
    assert v.verdict == "retrain with more images" and "above every training image" in v.reasons[-1], v
    # an over-exposed part: half of it saturated, on a dark background
    clipped = np.full_like(images, 0.05)
    clipped[:, 4:12, 4:12] = images[:, 4:12, 4:12]
    clipped[:, 4:8, 4:12] = 1.0
    v = verdict.judge(clipped, train, good, scores(rng, 16, 0.5, 0.9))
    assert v.verdict == "check the camera" and "saturated" in v.reasons[0], v
    assert abs(v.clipped_share - 0.5) < 0.01, v
    # a frame over-exposed all over (the part fills it)
    v = verdict.judge(np.ones_like(images), train, good, scores(rng, 16, 0.5, 0.9))
    assert v.verdict == "check the camera" and v.clipped_share == 1.0, v
    # a saturated plain white background (a backlight, MVTec bottle) hides nothing of the part
    backlit = np.ones_like(images)
    backlit[:, 4:12, 4:12] = images[:, 4:12, 4:12]
    v = verdict.judge(backlit, train, good, scores(rng, 16, 0.5, 0.9))
    assert v.verdict == "usable" and v.clipped_share == 0.0, v
    # a black background is not over-exposure either
    dark = images.copy()
    dark[:, :8] = 0.0
    assert verdict.judge(dark, train, good, scores(rng, 16, 0.5, 0.9)).verdict == "usable"
    # brightness drifting across the collection (exposure not locked)
    drift = images * np.linspace(0.4, 1.2, 10)[:, None, None, None].astype(np.float32)
    v = verdict.judge(drift, train, good, scores(rng, 16, 0.5, 0.9))
    assert v.verdict == "check the camera" and "lock exposure" in v.reasons[0], v
    v = verdict.judge(images, train, np.zeros(0), np.zeros(0))
    assert v.verdict == "retrain with more images" and "fewer than 8" in v.reasons[0], v
    assert v.lines()[-1].startswith("verdict: retrain with more images")
    # the sensitivity report prints the same from a verdict read back from a run's JSON (string keys)
    labels = [(k, c) for k, cs in (("scratch", (0.1, 0.4)), ("warp", (0.5, 1.5)), ("transplant", (0.03,)))
              for c in cs]
    v = verdict.judge(images, train, good, scores(rng, 16, 0.5, 0.9),
                      faint=(scores(rng, len(labels), 0.1, 0.9), labels))
    back = verdict.Verdict(**json.loads(json.dumps(dataclasses.asdict(v))))
    assert back.lines() == v.lines() and any("transplant figure" in line for line in v.lines()), v.lines()


def test_synthesis_keeps_a_non_square_shape() -> None:
    rng = np.random.default_rng(3)
    imgs = rng.uniform(0, 1, (3, 48, 80, 3)).astype(np.float32)
    bank = make_texture_bank((48, 80), 2, seed=1)
    assert bank.shape == (2, 48, 80, 3)
    for _ in range(20):
        out, mask, _ = make_anomaly(imgs[0], imgs, rng, bank)
        assert out.shape == (48, 80, 3) and mask.shape == (48, 80)
    assert random_relight(imgs[0], 1.0, rng).shape == (48, 80, 3)


def test_anomaly_masks_follow_the_shorter_side_of_a_long_crop() -> None:
    # a square image: both scales draw the same mask from the same random numbers
    for seed in range(5):
        a = perlin_mask((128, 128), np.random.default_rng(seed))
        b = perlin_mask((128, 128), np.random.default_rng(seed), scale="shorter_side")
        assert np.array_equal(a, b)

    # a long crop (the aligned screw's 64 x 240): masks spanning the whole height are rarer, the
    # covered share stays about the same
    def draw(scale: str) -> tuple[float, float]:
        rng = np.random.default_rng(0)
        masks = [perlin_mask((64, 240), rng, scale=scale) for _ in range(200)]
        assert all(m.shape == (64, 240) and m.any() for m in masks)
        return np.mean([m.all(0).any() for m in masks]), np.mean([m.mean() for m in masks])

    (span_long, area_long), (span_short, area_short) = draw("longer_side"), draw("shorter_side")
    assert span_short < span_long / 3, (span_short, span_long)
    assert abs(area_short - area_long) < 0.03, (area_short, area_long)
    assert perlin_mask((240, 64), np.random.default_rng(1), scale="shorter_side").shape == (240, 64)


def test_warps_move_the_parts_own_pixels_at_its_outline() -> None:
    img = np.full((64, 160, 3), 0.8, np.float32)
    img[24:40, 20:140] = 0.2
    img[24:40, 20:140:6] = 0.35  # thread-like stripes on the bar
    scale = verdict.DefectScale(px=2.0)
    moved = verdict.warp(img, np.random.default_rng(4), (0.5, 1.0, 1.5), scale)
    changed = [np.abs(m - img).max(-1) > 1e-6 for m in moved]
    assert all(c.any() for c in changed)
    # one place for every shift, growing with it; only near the outline (radius <= 6% of 64 px)
    ys, xs = np.nonzero(changed[-1])
    assert not (changed[0] & ~changed[-1]).any()
    assert np.abs(moved[2] - img).sum() > np.abs(moved[0] - img).sum()
    assert ys.max() - ys.min() <= 2 * 0.06 * 64 and xs.max() - xs.min() <= 2 * 0.06 * 64
    assert min(m.min() for m in moved) >= 0.2 - 1e-6 and max(m.max() for m in moved) <= 0.8 + 1e-6
    # the sensitivity set: scratches and spots are the same with or without warps; none where the
    # part fills the frame
    images = np.stack([img, img[::-1].copy()])
    with_warps, labels = verdict.faint_set(images, 7, scale=scale)
    without, labels0 = verdict.faint_set(images, 7, scale=scale, shifts=())
    assert [l for l in labels if l[0] != "warp"] == labels0 and labels.count(("warp", 1.0)) == 2
    keep = [i for i, l in enumerate(labels) if l[0] != "warp"]
    assert np.array_equal(with_warps[keep], without)
    full = np.random.default_rng(1).uniform(0.4, 0.45, (1, 64, 160, 3)).astype(np.float32)
    assert all(l[0] != "warp" for l in verdict.faint_set(full, 7)[1])


def test_transplants_move_the_parts_own_texture_within_it() -> None:
    img = np.full((64, 160, 3), 0.8, np.float32)
    img[16:48, 10:150] = 0.2
    img[16:48, 10:150:5] = 0.35  # thread-like stripes on the bar
    radii = (0.015, 0.03, 0.06)
    moved = verdict.transplant(img, np.random.default_rng(3), radii)
    changed = [np.abs(m - img).max(-1) > 1e-6 for m in moved]
    assert all(c.any() for c in changed)
    # one place, growing with the radius; inside a disc of the radius (64 px: <= 3.84 px at 6%)
    assert not (changed[0] & ~changed[-1]).any() and changed[0].sum() < changed[-1].sum()
    ys, xs = np.nonzero(changed[-1])
    assert ys.max() - ys.min() <= 2 * 0.06 * 64 + 1 and xs.max() - xs.min() <= 2 * 0.06 * 64 + 1
    # the part's own texture: no grey outside the image's range, centre on the part
    assert min(m.min() for m in moved) >= 0.2 - 1e-6 and max(m.max() for m in moved) <= 0.8 + 1e-6
    assert 16 <= ys.mean() < 48 and 10 <= xs.mean() < 150
    # in the sensitivity set on every part, even one that fills the frame; scratches and spots
    # unchanged by them
    images = np.stack([img, img[::-1].copy()])
    with_t, labels = verdict.faint_set(images, 7)
    without, labels0 = verdict.faint_set(images, 7, radii=())
    assert [l for l in labels if l[0] != "transplant"] == labels0 and labels.count(("transplant", 0.03)) == 2
    keep = [i for i, l in enumerate(labels) if l[0] != "transplant"]
    assert np.array_equal(with_t[keep], without)
    full = np.random.default_rng(1).uniform(0.4, 0.45, (1, 64, 160, 3)).astype(np.float32)
    assert [l for l in verdict.faint_set(full, 7)[1] if l[0] == "transplant"] == [("transplant", r) for r in radii]
    # in the report, with the figure (mean of the radii's shares)
    v = verdict.Verdict("usable", [], 0, 0, 1, 1, 0, 0.5, 2,
                        sensitivity={"transplant": {0.015: 0.0, 0.03: 0.5, 0.06: 1.0}})
    assert any("transplant figure 0.500" in line for line in v.lines())


def test_training_anomalies_fall_on_the_part_and_its_margin() -> None:
    rng = np.random.default_rng(5)
    # a dark bar on a plain grey ground, and a part that fills the frame
    img = np.full((48, 160, 3), 0.7, np.float32)
    img[18:30, 20:140] = 0.2
    region = part_region(img)
    margin = round(0.05 * 48)
    assert region[18:30, 20:140].all() and region[18 - margin, 80] and not region[18 - margin - 1, 80]
    assert not region[:, : 20 - margin].any() and not region[:5].any()
    drawn = 0
    for _ in range(60):
        out, mask, has = make_anomaly(img, img[None], rng, None, region)
        assert not mask[~region].any() and not (out != img)[~region].any()
        drawn += int(has)
    assert drawn > 10  # half the draws carry an anomaly, none lost to the region
    assert part_region(rng.uniform(0.4, 0.45, (48, 160, 3)).astype(np.float32)) is None  # fills the frame


def test_outline_anomalies_cut_or_add_material_at_the_outline() -> None:
    from synth import OUTLINE_RADII, outline_anomaly

    h, w = 64, 240
    img = np.full((h, w, 3), 0.8, np.float32)  # a plain light background...
    img[20:44, 30:210] = np.linspace(0.1, 0.4, 180, dtype=np.float32)[None, :, None]  # ...a dark part, shaded
    part = verdict.body(img)
    edge = verdict.outline(part)
    rng = np.random.default_rng(7)
    cuts = adds = 0
    for _ in range(40):
        out, mask = outline_anomaly(img, part, rng)
        changed = np.abs(out - img).max(-1) > 0
        assert mask.any() and np.array_equal(changed, mask > 0)  # the mask: what changed
        ys, xs = np.nonzero(changed)
        ey, ex = np.nonzero(edge)
        near = np.hypot(ys[:, None] - ey[None], xs[:, None] - ex[None]).min(1)
        assert near.max() <= 2 * OUTLINE_RADII[1] * h + 1  # at the outline
        if part[changed].all():  # material cut away: the background's colour where the part was
            cuts += 1
            assert np.allclose(out[changed], 0.8)
        else:  # material added: the part's own shades where the background was
            adds += 1
            assert not part[changed].any() and (out[changed] < 0.45).all()
    assert cuts > 5 and adds > 5, (cuts, adds)
    full = np.full((h, w, 3), 0.5, np.float32)  # a part filling the frame has no outline
    out, mask = outline_anomaly(full, verdict.body(full), rng)
    assert not mask.any() and np.array_equal(out, full)


def test_input_shape_keeps_the_aspect_ratio() -> None:
    with tempfile.TemporaryDirectory() as d:
        for (w, h), want in {(1280, 720): (64, 112), (600, 400): (80, 128), (640, 480): (96, 128),
                             (900, 900): (128, 128), (720, 1280): (112, 64)}.items():
            path = Path(d) / f"{w}x{h}.png"
            Image.new("L", (w, h)).save(path)
            got = input_hw({"input_size": 128, "keep_aspect": True}, [path])
            assert got == want, (w, h, got)
            assert got[0] % 16 == 0 and got[1] % 16 == 0
            assert input_hw({"input_size": 128, "keep_aspect": False}, [path]) == (128, 128)
            # with a stem the network pools 5 times: sides multiples of 32, still not squashed
            got = input_hw({"input_size": 256, "keep_aspect": True, "stem": 8}, [path])
            assert got[0] % 32 == 0 and got[1] % 32 == 0, (w, h, got)
            assert abs(math.log(got[1] / got[0] / (w / h))) <= math.log(1.07), (w, h, got)
    # a run's recorded shape wins (resume, export)
    assert input_hw({"input_size": 128, "input_hw": [64, 112]}, []) == (64, 112)
    # configs from before keep_aspect existed: square
    assert input_hw({"input_size": 128}, []) == (128, 128)


def test_stem_keeps_the_contract_and_the_rest_of_the_network() -> None:
    import torch

    from net import AnomalyNet, count_macs

    plain, stem = AnomalyNet(16, 12, True, 3, "nearest", 1), AnomalyNet(16, 12, True, 3, "nearest", 1, stem=8)
    # the same network below the stem (a plain run's weights name the same tensors), plus the stem
    assert set(plain.state_dict()) < set(stem.state_dict())
    stem.eval()
    with torch.no_grad():
        amap, score = stem(torch.rand(1, 3, 64, 96))
    assert amap.shape == (1, 1, 64, 96) and score.shape == (1,)  # a map at the input's resolution
    # at twice the side, a little more than the plain network at 128 px, far below 4x
    assert count_macs(plain, 128, 128) < count_macs(stem, 256, 256) < 1.3 * count_macs(plain, 128, 128)


def test_the_score_over_the_part_leaves_the_background_out() -> None:
    import onnxruntime as ort
    import torch

    from net import AnomalyNet, build, inspected_region

    x = torch.full((1, 3, 64, 96), 0.8)
    x[:, :, 20:44, 20:60] = 0.3  # a dark part on a plain light background
    rec = x.clone()
    rec[:, :, 30:34, 60:70] = 0.3  # material the reconstruction shows and the image lacks (a chip)
    region = inspected_region(x, rec)[0, 0]
    assert region[20:44, 20:60].all() and region[30:34, 60:70].all()  # the part, and what it lacks
    r = round(0.05 * 64)  # grown by 5% of the shorter side
    assert region[20 - r, 30] and not region[20 - r - 1, 30] and region[30, 70 + r - 1]
    assert not region[:8].any() and not region[:, 80:].any()  # the background away from it
    plain = torch.full((1, 3, 64, 96), 0.8)  # nothing differs from the border: the whole frame, never none
    assert inspected_region(plain, plain).all()
    # only where the run found a part to align: elsewhere the whole frame, as before
    cfg = {"recon_width": 4, "discr_width": 4, "sspcab": True, "score_window": 3, "upsample": "nearest",
           "full_res_convs": 1, "score_region": "part"}
    assert build(dict(cfg, alignment={"rotate": True})).score_on_part and not build(cfg).score_on_part
    torch.manual_seed(0)
    net = AnomalyNet(4, 4, True, 3, "nearest", 1, score_on_part=True).eval()
    whole = AnomalyNet(4, 4, True, 3, "nearest", 1)
    whole.load_state_dict(net.state_dict())
    whole.eval()
    x[:, :, 2:5, 85:88] = 0.0  # a speck of dirt on the background
    with torch.no_grad():
        amap, score = net(x)
        _, rec = net.anomaly_map(x)
        pooled = torch.nn.functional.avg_pool2d(amap, 3, 1, 1, count_include_pad=False)
        assert torch.isclose(score, (pooled * inspected_region(x, rec)).amax())
        assert score <= whole(x)[1]
    with tempfile.TemporaryDirectory() as d:  # the same score from the exported graph
        path = Path(d) / "part.onnx"
        torch.onnx.export(net, torch.zeros(1, 3, 64, 96), str(path), opset_version=17, dynamo=False,
                          input_names=["image"], output_names=["anomaly_map", "score"])
        got = ort.InferenceSession(str(path)).run(["score"], {"image": x.numpy()})[0]
    assert np.isclose(got[0], score.item(), atol=1e-5), (got, score)


if __name__ == "__main__":
    for name, fn in list(globals().items()):
        if name.startswith("test_"):
            fn()
            print(f"ok {name}")
