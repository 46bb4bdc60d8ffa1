"""The frame-based tracker (paper §3.2, eq. 5-6) with the attention channel (§3.3.2).

A ReLU CNN (eq. 5) built from a layer string (:mod:`.arch`); every conv and hidden FC is
followed by ReLU, the final ``FC4`` is linear and gives the box as ``(cx, cy, w, h)``
normalised to the network's input region.  Input: the APS frame (1 channel, luminance in
[0, 1]) and, with attention (ANN-AT), the attention channel ``A = X * M`` (eq. 11) made
from the latest fused box before the frame (eq. 10) -- 2 channels; without attention
(ANN-NAT) the frame alone.  Loss: eq. 6 (:func:`ann_loss`).

Two presets (:data:`PRESETS`): ``"paper"`` is the §4 string on the whole 240x180 frame;
``"fast"`` a narrower network on a 64x64 search window of 3.5x the fed-back box with two
template channels (:mod:`.template`), for CPUs
(2.9 M MACs per frame; the paper preset ~2.7 ms per frame on one torch thread of the shared
dev machine with channels_last; bf16 autocast is 10x slower there, no AVX512-BF16/AMX).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from torch import nn

from ..fusion.attention import attention_mask
from .arch import PAPER_ANN_ARCH, box_regression_loss, build_stage_layers, check_readout, layer_specs
from .template import template_channels


@dataclass(frozen=True)
class ANNPreset:
    """A named ANN configuration.

    ``view``: ``"frame"`` (input region = whole frame) or ``"search"`` (square window of
    ``search_scale`` times the last box's larger side around it).  ``sigma_rel``: the
    attention Gaussian's sigma as a fraction of the fed-back box's larger side.
    ``templates``: template channels (:mod:`.template`; 0 = the paper's input, 2 = NCC
    of the initial and of the previous frame's target).
    """

    arch: str
    in_hw: Tuple[int, int]
    view: str
    search_scale: float
    attention: bool = True
    sigma_rel: float = 0.5
    templates: int = 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["in_hw"] = list(self.in_hw)
        return d


PRESETS: Dict[str, ANNPreset] = {
    "paper": ANNPreset(PAPER_ANN_ARCH, (180, 240), "frame", 0.0),
    # a 64x64 search window of 3.5x the fed-back box with the two template channels of
    # .template (whole-frame 90x120 scored below the box it was fed; windows of 2.5x and
    # 4.5x scored below 3.5x on procedural validation streams: train/README.md)
    "fast": ANNPreset("Input-16C3S2-MP2-32C3S1-MP2-64C3S1-MP2-128C2S2-FC256-FC4", (64, 64), "search", 3.5,
                      templates=2),
}


class FrameTracker(nn.Module):
    """ANN box tracker: ``forward(x [B, C, H, W]) -> box [B, 4]`` (normalised cx, cy, w, h).

    ``attention=True``: ``C = 2`` (frame, attention channel), else ``C = 1`` (ANN-NAT);
    plus ``templates`` NCC channels (:mod:`.template`).
    ``channels_last``: keep conv weights and inputs in NHWC memory order, which oneDNN
    runs faster on CPUs (measured 1.4-1.7x at batch 1; results equal to float rounding).
    """

    def __init__(
        self,
        arch: str = PAPER_ANN_ARCH,
        in_hw: Sequence[int] = (180, 240),
        attention: bool = True,
        padding: str = "same",
        channels_last: bool = True,
        templates: int = 0,
    ):
        super().__init__()
        self.arch = arch
        self.in_hw = (int(in_hw[0]), int(in_hw[1]))
        self.attention = bool(attention)
        if templates < 0:
            raise ValueError(f"templates must be >= 0, got {templates!r}")
        self.templates = int(templates)
        self.in_channels = (2 if attention else 1) + self.templates
        self.padding = padding
        specs = layer_specs(arch, in_hw, self.in_channels, padding)
        check_readout(specs, arch)
        self.specs = specs
        layers = []
        for sp in specs[:-1]:
            layers += build_stage_layers([sp], bias=True)
            if sp.kind != "pool":
                layers.append(nn.ReLU(inplace=True))
        layers += build_stage_layers([specs[-1]], bias=True)
        self.net = nn.Sequential(*layers)
        with torch.no_grad():  # start at a centred, mid-sized box
            self.net[-1].bias.copy_(torch.tensor([0.5, 0.5, 0.25, 0.25]))
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.to(memory_format=torch.channels_last)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "FrameTracker":
        if name not in PRESETS:
            raise ValueError(f"unknown ANN preset {name!r}; choose one of {sorted(PRESETS)}")
        p = PRESETS[name]
        kw = dict(arch=p.arch, in_hw=p.in_hw, attention=p.attention, templates=p.templates)
        kw.update(overrides)
        return cls(**kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def config(self) -> dict:
        return dict(kind="ann", arch=self.arch, in_hw=list(self.in_hw), in_channels=self.in_channels,
                    attention=self.attention, padding=self.padding, templates=self.templates)


def ann_loss(pred: torch.Tensor, target: torch.Tensor, model: Optional[nn.Module] = None, lam: float = 0.0,
             giou_weight: float = 0.0) -> torch.Tensor:
    """Eq. 6: squared box error + ``lam * sum ||W||^2`` (NaN target rows ignored); with
    ``giou_weight``, plus that times ``mean(1 - GIoU)`` (not in the paper)."""
    return box_regression_loss(pred, target, model, lam, giou_weight)


def crop_resample(image: np.ndarray, region, out_hw: Sequence[int]) -> np.ndarray:
    """``region = (x0, y0, w, h)`` of ``image`` resampled to ``out_hw`` (bilinear; zero
    outside the image), float32."""
    r = np.asarray(region, dtype=np.float64).reshape(4)
    oh, ow = int(out_hw[0]), int(out_hw[1])
    img = np.asarray(image, dtype=np.float32)
    h, w = img.shape[:2]
    if r[0] == 0 and r[1] == 0 and r[2] == w and r[3] == h:
        if (oh, ow) == (h, w):
            return img
        return cv2.resize(img, (ow, oh), interpolation=cv2.INTER_AREA)
    sx, sy = ow / r[2], oh / r[3]
    # output pixel centre (u + 0.5) maps to input (u + 0.5) / sx + x0, in pixel-centre coords.
    m = np.array([[sx, 0.0, (0.5 - r[0]) * sx - 0.5], [0.0, sy, (0.5 - r[1]) * sy - 0.5]])
    return cv2.warpAffine(img, m, (ow, oh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)


def unit_float(image: np.ndarray) -> np.ndarray:
    """An APS image as float32 luminance in [0, 1] (uint8 is scaled by 1/255; float images
    are taken as already in [0, 1], without a copy when they are float32)."""
    img = np.asarray(image)
    if img.dtype == np.uint8:
        return img.astype(np.float32) * (1.0 / 255.0)
    return img.astype(np.float32, copy=False)


def frame_input(image: np.ndarray, region, in_hw: Sequence[int], prev_box=None, sigma_rel: float = 0.5,
                attention: bool = True, templates: Optional[Sequence] = None) -> np.ndarray:
    """The ANN input ``[C, H, W]`` float32 for one APS frame.

    ``image``: (H, W) luminance, float in [0, 1] or uint8 (scaled by 1/255);
    ``region``: the frame area the network sees (``(x0, y0, w, h)`` pixels);
    ``prev_box``: the fed-back box (eq. 10; ``(x, y, w, h)`` frame pixels, None/NaN = none)
    for the attention channel, whose sigma is ``sigma_rel`` times the box's larger side;
    ``templates``: ``(image, box)`` per template channel (None = not yet known), appended
    after the paper's channels (:func:`.template.template_channels`).
    """
    img = np.asarray(image)
    if img.ndim != 2:
        raise ValueError(f"APS image must be 2-D (H, W), got shape {img.shape}")
    x = crop_resample(unit_float(img), region, in_hw)
    extra = template_channels(x, region, in_hw, templates) if templates is not None else None
    if not attention:
        return x[None].astype(np.float32, copy=False) if extra is None else np.concatenate([x[None], extra])
    r = np.asarray(region, dtype=np.float64).reshape(4)
    oh, ow = int(in_hw[0]), int(in_hw[1])
    box_in, sigma = None, 1.0
    if prev_box is not None:
        b = np.asarray(prev_box, dtype=np.float64).reshape(4)
        if np.all(np.isfinite(b)):
            sx, sy = ow / r[2], oh / r[3]
            box_in = np.array([(b[0] - r[0]) * sx, (b[1] - r[1]) * sy, b[2] * sx, b[3] * sy])
            sigma = max(sigma_rel * max(box_in[2], box_in[3]), 0.5)
    m = attention_mask(oh, ow, box_in, sigma)
    out = np.stack([x, x * m]).astype(np.float32, copy=False)
    return out if extra is None else np.concatenate([out, extra])
