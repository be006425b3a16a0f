"""DRAEM-style anomaly network with an SSPCAB block, slimmed for a line-side CPU.

Written for partguard from the published descriptions of SSPCAB (Ristea et al., CVPR 2022) and
DRAEM (Zavrtanik et al., ICCV 2021); no code is copied from their implementations.

Graph contract (models/contract.json; see models/README.md):
  input  `image`       [1, 3, H, W] float32, RGB, pixels scaled to [0, 1]
  output `anomaly_map` [1, 1, H, W] float32, probability that a pixel is anomalous
  output `score`       [1]          float32, max of the KxK mean-filtered anomaly map (K: score_window),
                                    over the part's region where `score_on_part` (AnomalyNet.forward)
"""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

PART_LEVEL = 0.1  # a pixel is the part's where its colour differs from the border's mean by more (verdict.part_mask)
PART_MARGIN = 0.05  # the region grows by this share of the input's shorter side (synth.PART_MARGIN)


def conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(conv_bn_relu(cin, cout), conv_bn_relu(cout, cout))


def full_res_block(cin: int, cout: int, convs: int) -> nn.Sequential:
    """The block at the input's full resolution: two 3x3 convolutions (DRAEM), or one, which halves
    the largest maps' share of the MACs (and of tract's im2col)."""
    return double_conv(cin, cout) if convs == 2 else conv_bn_relu(cin, cout)


UPSAMPLE_MODES = ("bilinear", "nearest")
SCORE_REGIONS = ("frame", "part")  # where the image score looks (build, inspected_region)


def up2(t: torch.Tensor, mode: str) -> torch.Tensor:
    """x2 upsampling: bilinear (DRAEM) or nearest (a cheaper Resize for the inference engine)."""
    if mode == "nearest":
        return F.interpolate(t, scale_factor=2.0, mode="nearest")
    return F.interpolate(t, scale_factor=2.0, mode="bilinear", align_corners=False)


class SSPCAB(nn.Module):
    """Self-supervised predictive convolutional attentive block.

    Masked convolution with k'=1, d=1: the four corner taps at offsets (+-2, +-2) around the hidden
    centre. Four 1x1 convolutions over the corner crops of the padded map, summed, are numerically the
    same as one 2x2 convolution with dilation 2d+2=4 and padding d+1=2, the export-friendly form used
    here. Then ReLU and squeeze-and-excitation channel attention (reduction r).
    """

    def __init__(self, channels: int, dilation: int = 1, reduction: int = 8):
        super().__init__()
        self.masked = nn.Conv2d(
            channels, channels, kernel_size=2, dilation=2 * dilation + 2, padding=dilation + 1
        )
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)
        self.last_input: torch.Tensor | None = None
        self.last_output: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.masked(x))
        s = y.mean(dim=(2, 3))
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(s))))
        out = y * s[:, :, None, None]
        if self.training:
            self.last_input, self.last_output = x, out
        return out

    def self_supervised_loss(self) -> torch.Tensor:
        """MSE between the block's input and output (the SSPCAB reconstruction loss)."""
        assert self.last_input is not None and self.last_output is not None
        return F.mse_loss(self.last_output, self.last_input)


class Reconstructive(nn.Module):
    """Encoder-decoder without skips; SSPCAB replaces the last encoder block when enabled. With a
    `stem` of S channels, one thin level of S channels at the input's resolution wraps the rest,
    which then runs at half resolution (see `AnomalyNet`)."""

    def __init__(self, base: int, sspcab: bool, upsample: str = "bilinear", full_res_convs: int = 2,
                 stem: int = 0):
        super().__init__()
        b = base
        self.upsample = upsample
        self.stem_in = conv_bn_relu(3, stem) if stem else None
        self.stem_out = conv_bn_relu(b, stem) if stem else None
        self.enc1 = full_res_block(stem or 3, b, full_res_convs)
        self.enc2 = double_conv(b, 2 * b)
        self.enc3 = double_conv(2 * b, 4 * b)
        self.enc4 = double_conv(4 * b, 8 * b)
        self.enc5 = double_conv(8 * b, 8 * b)
        self.sspcab = SSPCAB(8 * b) if sspcab else None
        self.dec4 = double_conv(8 * b, 8 * b)
        self.dec3 = double_conv(8 * b, 4 * b)
        self.dec2 = double_conv(4 * b, 2 * b)
        self.dec1 = full_res_block(2 * b, b, full_res_convs)
        self.out = nn.Conv2d(stem or b, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stem_in is not None:
            x = F.max_pool2d(self.stem_in(x), 2)
        x = self.enc1(x)
        x = self.enc2(F.max_pool2d(x, 2))
        x = self.enc3(F.max_pool2d(x, 2))
        x = self.enc4(F.max_pool2d(x, 2))
        x = self.enc5(F.max_pool2d(x, 2))
        if self.sspcab is not None:
            x = self.sspcab(x)
        up = lambda t: up2(t, self.upsample)  # noqa: E731
        x = self.dec4(up(x))
        x = self.dec3(up(x))
        x = self.dec2(up(x))
        x = self.dec1(up(x))
        if self.stem_out is not None:
            x = self.stem_out(up(x))
        return torch.sigmoid(self.out(x))


class Discriminative(nn.Module):
    """U-Net with skips over [image, reconstruction]; 2-channel logits (normal, anomalous)."""

    def __init__(self, base: int, upsample: str = "bilinear", full_res_convs: int = 2, stem: int = 0):
        super().__init__()
        b = base
        self.upsample = upsample
        self.e0 = conv_bn_relu(6, stem) if stem else None
        self.u0 = conv_bn_relu(b, stem) if stem else None
        self.d0 = conv_bn_relu(2 * stem, stem) if stem else None
        self.e1 = full_res_block(stem or 6, b, full_res_convs)
        self.e2 = double_conv(b, 2 * b)
        self.e3 = double_conv(2 * b, 4 * b)
        self.e4 = double_conv(4 * b, 8 * b)
        self.e5 = double_conv(8 * b, 8 * b)
        self.u4 = conv_bn_relu(8 * b, 8 * b)
        self.d4 = double_conv(16 * b, 8 * b)
        self.u3 = conv_bn_relu(8 * b, 4 * b)
        self.d3 = double_conv(8 * b, 4 * b)
        self.u2 = conv_bn_relu(4 * b, 2 * b)
        self.d2 = double_conv(4 * b, 2 * b)
        self.u1 = conv_bn_relu(2 * b, b)
        self.d1 = full_res_block(2 * b, b, full_res_convs)
        self.out = nn.Conv2d(stem or b, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = lambda t: up2(t, self.upsample)  # noqa: E731
        x0 = None
        if self.e0 is not None:
            x0 = self.e0(x)
            x = F.max_pool2d(x0, 2)
        x1 = self.e1(x)
        x2 = self.e2(F.max_pool2d(x1, 2))
        x3 = self.e3(F.max_pool2d(x2, 2))
        x4 = self.e4(F.max_pool2d(x3, 2))
        x5 = self.e5(F.max_pool2d(x4, 2))
        y = self.d4(torch.cat([self.u4(up(x5)), x4], 1))
        y = self.d3(torch.cat([self.u3(up(y)), x3], 1))
        y = self.d2(torch.cat([self.u2(up(y)), x2], 1))
        y = self.d1(torch.cat([self.u1(up(y)), x1], 1))
        if x0 is not None:
            y = self.d0(torch.cat([self.u0(up(y)), x0], 1))
        return self.out(y)


class AnomalyNet(nn.Module):
    """Both networks. `stem` > 0 adds one thin level (that many channels, one 3x3 convolution on the
    way down and one or two on the way up) at the input's resolution, so a 256-px input keeps its
    finest detail while the widths below run at 128 px as without it: the input's sides must then
    be multiples of 32 (five poolings), not 16."""

    def __init__(self, recon_width: int = 16, discr_width: int = 16, sspcab: bool = True,
                 score_window: int = 21, upsample: str = "bilinear", full_res_convs: int = 2, stem: int = 0,
                 score_on_part: bool = False):
        super().__init__()
        self.score_on_part = score_on_part
        self.recon = Reconstructive(recon_width, sspcab, upsample, full_res_convs, stem)
        self.discr = Discriminative(discr_width, upsample, full_res_convs, stem)
        self.score_window = score_window

    def forward_train(self, x: torch.Tensor):
        rec = self.recon(x)
        logits = self.discr(torch.cat([x, rec], 1))
        return rec, logits

    def anomaly_map(self, x: torch.Tensor):
        """The anomaly map [N, 1, H, W] and the reconstruction it was computed against."""
        rec = self.recon(x)
        logits = self.discr(torch.cat([x, rec], 1))
        # softmax over the two classes, taken for class 1: sigmoid(l1 - l0) is the same function and
        # cheaper for an inference engine than a Softmax over the whole map (tract: ~4% of a frame).
        return torch.sigmoid(logits[:, 1:2] - logits[:, 0:1]), rec

    def forward(self, x: torch.Tensor):
        """Inference graph: anomaly map and image score, both inside the exported ONNX."""
        amap, rec = self.anomaly_map(x)
        return amap, image_score(amap, self.score_window, inspected_region(x, rec) if self.score_on_part else None)

    def sspcab_loss(self) -> torch.Tensor:
        if self.recon.sspcab is None:
            return torch.zeros((), device=next(self.parameters()).device)
        return self.recon.sspcab.self_supervised_loss()


def image_score(amap: torch.Tensor, k: int, region: torch.Tensor | None = None) -> torch.Tensor:
    """The score [N]: the maximum of the map after a k x k mean filter, over `region` if given."""
    pooled = F.avg_pool2d(amap, k, stride=1, padding=k // 2, count_include_pad=False)
    if region is not None:
        pooled = pooled * region
    return pooled.amax(dim=(1, 2, 3))


def inspected_region(x: torch.Tensor, rec: torch.Tensor) -> torch.Tensor:
    """Where the image score looks on an aligned part ([N, 1, H, W], 1.0 inside, 0.0 outside): the
    pixels whose colour differs from the mean of the input's border by over PART_LEVEL in the image
    or in its reconstruction (where a defect took material away, the reconstruction still shows
    the part), grown by PART_MARGIN of the shorter side. The conveyor or tray around the part is
    not inspected. Where no pixel qualifies (a part found by the alignment but lit like the tray),
    the region is the whole frame: a part is never passed for having no region. Inside the graph,
    so every engine computes it."""
    with warnings.catch_warnings():  # the contract fixes the input's shape: a constant in the graph
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        h, w = int(x.shape[-2]), int(x.shape[-1])
    border = torch.cat([x[:, :, 0, :], x[:, :, h - 1, :], x[:, :, :, 0], x[:, :, :, w - 1]], 2)
    bg = border.mean(2, keepdim=True).unsqueeze(3)
    diff = torch.maximum((x - bg).abs(), (rec - bg).abs()).amax(1, keepdim=True)
    part = (diff > PART_LEVEL).float()
    r = max(1, round(PART_MARGIN * min(h, w)))
    # grown by r: the mean over a (2r+1)^2 window is above 0 wherever a part pixel is within r
    grown = (F.avg_pool2d(part, 2 * r + 1, stride=1, padding=r, count_include_pad=False) > 0).float()
    return torch.maximum(grown, 1.0 - grown.amax(dim=(2, 3), keepdim=True))


def build(cfg: dict) -> "AnomalyNet":
    """The network a training config (train.py's TrainConfig, or a run's config.json) describes.
    Keys added after a run was made take their defaults, so old runs rebuild as they were. The score
    is taken over the part only where asked and where the run found a part to align."""
    on_part = cfg.get("score_region", "frame") == "part" and bool(cfg.get("alignment"))
    return AnomalyNet(cfg["recon_width"], cfg["discr_width"], cfg["sspcab"], cfg.get("score_window", 21),
                      cfg.get("upsample", "bilinear"), cfg.get("full_res_convs", 2), cfg.get("stem", 0),
                      on_part)


def count_macs(model: nn.Module, h: int, w: int) -> int:
    """Multiply-accumulates of one inference (conv and linear layers), by forward hooks."""
    total = 0

    def conv_hook(m: nn.Conv2d, _inp, out):
        nonlocal total
        kh, kw = m.kernel_size
        total += out.numel() * (m.in_channels // m.groups) * kh * kw

    def lin_hook(m: nn.Linear, _inp, out):
        nonlocal total
        total += out.numel() * m.in_features

    hooks = []
    for mod in model.modules():
        if isinstance(mod, nn.Conv2d):
            hooks.append(mod.register_forward_hook(conv_hook))
        elif isinstance(mod, nn.Linear):
            hooks.append(mod.register_forward_hook(lin_hook))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, h, w))
    model.train(was_training)
    for hk in hooks:
        hk.remove()
    return total
