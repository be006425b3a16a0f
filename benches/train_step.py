"""The recipe's training step on a CPU: milliseconds per step, in PyTorch's default memory layout
and in channels-last (NHWC), on the same weights and batch.

    .venv/bin/python benches/train_step.py --hw 64 240 --threads 2 --steps 20

One step is what train.py does per batch of 16 (forward through both networks, the reconstruction,
SSIM, focal and SSPCAB losses, backward, Adam), without the synthetic anomalies (those are drawn in
the loader, ~90 ms a batch on the aligned screw). The network is `models/configs/default.json`'s.
The last line is what `weight_average` adds to a step: one update of the weights' exponential
average (torch's AveragedModel), timed alone over the same number of steps.
Each layout runs `--steps` timed steps after 3 untimed ones; the lines print the median step time
and the differences between the two layouts' losses over the first 5 steps: rounding at the first
(the same arithmetic in another order), which Adam's normalised steps then carry into the weights.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "models"))
from net import build  # noqa: E402
from train import focal_loss, gaussian_window, ssim_loss  # noqa: E402


def run(layout: torch.memory_format, hw: tuple[int, int], steps: int) -> tuple[float, list[float]]:
    cfg = json.loads((ROOT / "models/configs/default.json").read_text())
    torch.manual_seed(0)
    model = build(cfg).to(memory_format=layout).train()
    gen = torch.Generator().manual_seed(1)
    clean = torch.rand(16, 3, *hw, generator=gen)
    aug = clean.contiguous(memory_format=layout)
    mask = (torch.rand(16, *hw, generator=gen) > 0.9).long()
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    win = gaussian_window()
    losses, times = [], []
    for i in range(3 + steps):
        t0 = time.perf_counter()
        rec, logits = model.forward_train(aug)
        loss = F.mse_loss(rec, clean) + ssim_loss(rec, clean, win) + focal_loss(logits, mask) \
            + cfg["sspcab_lambda"] * model.sspcab_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
        losses.append(loss.item())
    return statistics.median(times[3:]) * 1000, losses[:5]


def average_update(hw_steps: int) -> float:
    """Milliseconds of one `AveragedModel.update_parameters` on the recipe's network (median)."""
    cfg = json.loads((ROOT / "models/configs/default.json").read_text())
    model = build(cfg).to(memory_format=torch.channels_last)
    average = torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.995))
    times = []
    for _ in range(3 + hw_steps):
        t0 = time.perf_counter()
        average.update_parameters(model)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[3:]) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hw", type=int, nargs=2, default=[64, 240], help="input height and width")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    hw = tuple(args.hw)
    plain, plain_losses = run(torch.contiguous_format, hw, args.steps)
    last, last_losses = run(torch.channels_last, hw, args.steps)
    diffs = [abs(a - b) for a, b in zip(plain_losses, last_losses)]
    print(f"input {hw[0]}x{hw[1]}, batch 16, {args.threads} threads, torch {torch.__version__}")
    print(f"default layout: {plain:.0f} ms/step")
    print(f"channels-last:  {last:.0f} ms/step ({plain / last:.2f}x)")
    print(f"weight average update: {average_update(args.steps):.2f} ms/step")
    print("loss differences over the first 5 steps (the first: one forward pass, the same weights): "
          + ", ".join(f"{d:.1e}" for d in diffs))


if __name__ == "__main__":
    main()
