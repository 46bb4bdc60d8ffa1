"""Network geometry: the paper's layer strings (§4), feature-map sizes, the input region
a network sees, the box parametrisation, and the loss terms shared by eq. 4 and eq. 6.

Layer strings (§4)::

    ANN  Input-32C3S3-MP2-64C3S1-MP2-128C3S1-128C1S1-MP2-256C2S2-FC1024-FC4
    SNN  Input-MP2-32C3S3-64C3S1-128C3S1-128C3S2-256C3S2-FC1024-FC4

``NcKsS``: convolution with N output channels, kernel K x K, stride S; ``MPk``: max pool
with kernel and stride k (floor, no padding); ``FCn``: fully connected with n outputs.

Padding (the paper gives none): ``padding="same"`` (default) pads each convolution by
``(K - 1) // 2`` on every side, which keeps the size for odd kernels at stride 1
(``out = floor((n + 2p - K) / S) + 1``: 3x3 -> pad 1, 1x1 -> pad 0) and for the 2x2/2
convolution gives ``floor(n / 2)``; ``padding="valid"`` uses no padding.  An input is too small for a string when any conv or
pool would get a map smaller than its kernel (padding may not make up a whole kernel).

Box parametrisation: every tracker outputs ``(cx, cy, w, h)`` normalised to its input
region (the whole frame, or a search window around the last box): ``cx = (box centre x -
region x0) / region width`` etc., so a box filling the region is ``(0.5, 0.5, 1, 1)``.
:func:`box_to_region_norm` and :func:`region_norm_to_box` convert to and from the core's
``(x, y, w, h)`` pixel boxes.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

PAPER_ANN_ARCH = "Input-32C3S3-MP2-64C3S1-MP2-128C3S1-128C1S1-MP2-256C2S2-FC1024-FC4"
PAPER_SNN_ARCH = "Input-MP2-32C3S3-64C3S1-128C3S1-128C3S2-256C3S2-FC1024-FC4"

_CONV = re.compile(r"^(\d+)C(\d+)S(\d+)$", re.IGNORECASE)
_POOL = re.compile(r"^MP(\d+)$", re.IGNORECASE)
_FC = re.compile(r"^FC(\d+)$", re.IGNORECASE)


@dataclass(frozen=True)
class LayerSpec:
    """One layer of a layer string with the shapes it maps (per sample, no batch axis).

    ``kind``: ``"conv"``, ``"pool"`` or ``"fc"``; ``token``: its text in the string;
    ``in_shape``/``out_shape``: ``(C, H, W)`` for maps, ``(N,)`` for vectors (an ``fc``
    after a map flattens it).
    """

    kind: str
    token: str
    out_channels: int = 0
    kernel: int = 0
    stride: int = 0
    padding: int = 0
    in_shape: Tuple[int, ...] = ()
    out_shape: Tuple[int, ...] = ()

    @property
    def in_features(self) -> int:
        return int(np.prod(self.in_shape))


def parse_tokens(arch: str) -> List[Tuple[str, Tuple[int, ...], str]]:
    """Split a layer string into ``(kind, numbers, token)`` items (without ``Input``)."""
    if not isinstance(arch, str) or not arch.strip():
        raise ValueError(f"empty architecture string {arch!r}")
    tokens = [t.strip() for t in arch.strip().split("-")]
    if tokens[0].lower() != "input":
        raise ValueError(f"architecture {arch!r} must start with 'Input', got {tokens[0]!r}")
    out = []
    seen_fc = False
    for i, tok in enumerate(tokens[1:], start=1):
        if m := _CONV.match(tok):
            n, k, s = (int(g) for g in m.groups())
            kind, nums = "conv", (n, k, s)
        elif m := _POOL.match(tok):
            kind, nums = "pool", (int(m.group(1)),)
        elif m := _FC.match(tok):
            kind, nums = "fc", (int(m.group(1)),)
        else:
            raise ValueError(
                f"architecture {arch!r}: layer {i} {tok!r} is not NcKsS (conv), MPk (max pool) or FCn"
            )
        if any(v < 1 for v in nums):
            raise ValueError(f"architecture {arch!r}: layer {i} {tok!r} has a zero size")
        if kind != "fc" and seen_fc:
            raise ValueError(f"architecture {arch!r}: layer {i} {tok!r} follows a fully connected layer")
        seen_fc |= kind == "fc"
        out.append((kind, nums, tok))
    if not out:
        raise ValueError(f"architecture {arch!r} has no layers after 'Input'")
    return out


def _pad(kernel: int, padding: str) -> int:
    if padding == "same":
        return (kernel - 1) // 2
    if padding == "valid":
        return 0
    raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")


def _try_layers(arch: str, in_hw, in_channels: int, padding: str):
    """Specs, or (None, message) at the first layer whose input is too small."""
    h, w = int(in_hw[0]), int(in_hw[1])
    shape: Tuple[int, ...] = (int(in_channels), h, w)
    specs = []
    for i, (kind, nums, tok) in enumerate(parse_tokens(arch), start=1):
        if kind == "fc":
            out_shape: Tuple[int, ...] = (nums[0],)
            specs.append(LayerSpec("fc", tok, nums[0], in_shape=shape, out_shape=out_shape))
        else:
            c, hh, ww = shape
            if kind == "conv":
                n, k, s = nums
                p = _pad(k, padding)
            else:
                n, k, s, p = c, nums[0], nums[0], 0
            if hh < k or ww < k:
                return None, f"layer {i} {tok!r} gets a {hh}x{ww} (HxW) map, smaller than its kernel {k}"
            out_shape = (n, (hh + 2 * p - k) // s + 1, (ww + 2 * p - k) // s + 1)
            specs.append(LayerSpec(kind, tok, n, k, s, p, shape, out_shape))
        shape = out_shape
    return specs, None


def _min_side(arch: str, in_channels: int, padding: str, axis: int, other: int = 4096) -> Optional[int]:
    """Smallest side along ``axis`` (0 = H, 1 = W) that works when the other side is large."""
    for n in range(1, 4097):
        hw = (n, other) if axis == 0 else (other, n)
        if _try_layers(arch, hw, in_channels, padding)[0] is not None:
            return n
    return None


def layer_specs(arch: str, in_hw: Sequence[int], in_channels: int = 1, padding: str = "same") -> List[LayerSpec]:
    """Parse ``arch`` and compute every layer's shapes for an ``in_hw = (H, W)`` input.

    Raises ValueError when the input is too small for the string, naming the layer and the
    smallest input that works.
    """
    if len(in_hw) != 2 or min(int(in_hw[0]), int(in_hw[1])) < 1:
        raise ValueError(f"input size must be (H, W) with positive sides, got {tuple(in_hw)!r}")
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels!r}")
    specs, msg = _try_layers(arch, in_hw, in_channels, padding)
    if specs is None:
        mh = _min_side(arch, in_channels, padding, 0)
        mw = _min_side(arch, in_channels, padding, 1)
        hint = f"; use at least H={mh}, W={mw}" if mh and mw else ""
        raise ValueError(
            f"input size {int(in_hw[0])}x{int(in_hw[1])} (HxW) is too small for architecture "
            f"{arch!r} with {padding!r} padding: {msg}{hint}"
        )
    return specs


def check_readout(specs: List[LayerSpec], arch: str, n_out: int = 4) -> None:
    """The trackers need a final ``FC4`` (the box) preceded by at least one hidden layer."""
    if specs[-1].kind != "fc" or specs[-1].out_channels != n_out:
        raise ValueError(f"architecture {arch!r} must end with FC{n_out} (the box readout)")
    if len(specs) < 2:
        raise ValueError(f"architecture {arch!r} needs a hidden layer before the FC{n_out} readout")


def build_stage_layers(specs: List[LayerSpec], bias: bool) -> List[nn.Module]:
    """torch layers for ``specs`` (pooling and flattening included, no nonlinearity)."""
    layers: List[nn.Module] = []
    for sp in specs:
        if sp.kind == "conv":
            layers.append(
                nn.Conv2d(sp.in_shape[0], sp.out_channels, sp.kernel, sp.stride, sp.padding, bias=bias)
            )
        elif sp.kind == "pool":
            layers.append(nn.MaxPool2d(sp.kernel, sp.stride))
        else:
            if len(sp.in_shape) > 1:
                layers.append(nn.Flatten(1))
            layers.append(nn.Linear(sp.in_features, sp.out_channels, bias=bias))
    return layers


def macs_per_sample(specs: List[LayerSpec]) -> int:
    """Multiply-accumulates of one dense forward pass (conv + fc only)."""
    total = 0
    for sp in specs:
        if sp.kind == "conv":
            total += int(np.prod(sp.out_shape)) * sp.in_shape[0] * sp.kernel * sp.kernel
        elif sp.kind == "fc":
            total += sp.in_features * sp.out_channels
    return total


# --- input region and box parametrisation ----------------------------------------------


def full_region(frame_hw: Sequence[int]) -> np.ndarray:
    """The whole frame as a region ``(x0, y0, w, h)``."""
    return np.array([0.0, 0.0, float(frame_hw[1]), float(frame_hw[0])], dtype=np.float32)


SEARCH_MIN_SIDE_PX = 16.0     # the smallest search window side


def search_region(box_xywh, scale: float, min_side_px: float = SEARCH_MIN_SIDE_PX) -> np.ndarray:
    """Square search window ``(x0, y0, side, side)`` centred on ``box_xywh``.

    ``side = max(scale * max(w, h), min_side_px)``.  The window is not clipped to the frame:
    pixels outside the frame read as zero (no events, black image), which keeps the target
    centred and the mapping a pure scale + shift.
    """
    b = np.asarray(box_xywh, dtype=np.float64).reshape(4).tolist()     # Python floats: runs per SNN window
    if not all(map(math.isfinite, b)):
        raise ValueError(f"search_region needs a finite box, got {b}")
    if scale <= 0:
        raise ValueError(f"search window scale must be positive, got {scale!r}")
    side = max(scale * max(b[2], b[3]), float(min_side_px))
    cx, cy = b[0] + b[2] / 2, b[1] + b[3] / 2
    return np.array([cx - side / 2, cy - side / 2, side, side], dtype=np.float32)


def box_to_region_norm(box_xywh, region) -> np.ndarray:
    """Pixel ``(x, y, w, h)`` -> ``(cx, cy, w, h)`` normalised to ``region`` (leading axes broadcast)."""
    b = np.asarray(box_xywh, dtype=np.float64)
    r = np.asarray(region, dtype=np.float64)
    cx = (b[..., 0] + b[..., 2] / 2 - r[..., 0]) / r[..., 2]
    cy = (b[..., 1] + b[..., 3] / 2 - r[..., 1]) / r[..., 3]
    return np.stack([cx, cy, b[..., 2] / r[..., 2], b[..., 3] / r[..., 3]], -1).astype(np.float32)


def region_norm_to_box(norm_cxcywh, region) -> np.ndarray:
    """Inverse of :func:`box_to_region_norm`: normalised ``(cx, cy, w, h)`` -> pixel ``(x, y, w, h)``."""
    n = np.asarray(norm_cxcywh, dtype=np.float64)
    r = np.asarray(region, dtype=np.float64)
    out = np.empty(np.broadcast_shapes(n.shape, r.shape), np.float64)
    w, h = out[..., 2], out[..., 3]
    np.multiply(n[..., 2], r[..., 2], out=w)
    np.multiply(n[..., 3], r[..., 3], out=h)
    out[..., 0] = r[..., 0] + n[..., 0] * r[..., 2] - w / 2
    out[..., 1] = r[..., 1] + n[..., 1] * r[..., 3] - h / 2
    return out.astype(np.float32)


# --- loss terms of eq. 4 and eq. 6 -----------------------------------------------------


def weight_l2(model: nn.Module) -> torch.Tensor:
    """``sum_k ||W^k||^2`` over conv/linear weights (biases excluded); the λ term of eq. 4/6.

    The paper writes the norm unsquared; we use the usual squared L2 (weight decay).
    """
    terms = [p.pow(2).sum() for n, p in model.named_parameters() if n.endswith("weight") and p.dim() > 1]
    if not terms:
        return torch.zeros(())
    return torch.stack(terms).sum()


def giou_cxcywh(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Generalised IoU (Rezatofighi et al., CVPR 2019) of ``(cx, cy, w, h)`` boxes, per row
    (in [-1, 1]; negative predicted sizes count as empty boxes).  Any common scaling of the
    axes leaves it unchanged, so region-normalised boxes give the pixel boxes' GIoU."""
    pw, ph = pred[..., 2].clamp(min=0), pred[..., 3].clamp(min=0)
    tw, th = target[..., 2], target[..., 3]
    px0, px1 = pred[..., 0] - pw / 2, pred[..., 0] + pw / 2
    py0, py1 = pred[..., 1] - ph / 2, pred[..., 1] + ph / 2
    tx0, tx1 = target[..., 0] - tw / 2, target[..., 0] + tw / 2
    ty0, ty1 = target[..., 1] - th / 2, target[..., 1] + th / 2
    inter = (torch.min(px1, tx1) - torch.max(px0, tx0)).clamp(min=0) * (torch.min(py1, ty1) - torch.max(py0, ty0)).clamp(min=0)
    union = pw * ph + tw * th - inter
    hull = (torch.max(px1, tx1) - torch.min(px0, tx0)) * (torch.max(py1, ty1) - torch.min(py0, ty0))
    eps = 1e-9
    return inter / (union + eps) - (hull - union) / (hull + eps)


def check_giou_weight(giou_weight: float) -> None:
    """Refuse an overlap-term weight that is negative or not finite (by name)."""
    if not (math.isfinite(giou_weight) and giou_weight >= 0):
        raise ValueError(f"giou_weight must be a finite number >= 0, got {giou_weight}")


def box_regression_loss(pred: torch.Tensor, target: torch.Tensor, model: Optional[nn.Module] = None, lam: float = 0.0,
                        giou_weight: float = 0.0) -> torch.Tensor:
    """Eq. 4 / eq. 6: squared box error summed over the 4 numbers, mean over samples, plus
    ``lam * weight_l2(model)``.  Rows of ``target`` containing NaN (target absent) are
    ignored; if all are, the box term is 0.  ``giou_weight > 0`` adds
    ``giou_weight * mean(1 - GIoU)`` (:func:`giou_cxcywh`), a term the paper does not have:
    the squared error weighs a centre error the same for a small and a large box, the
    overlap the tracker is scored on does not.
    """
    if pred.shape != target.shape or pred.shape[-1] != 4:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must both be [..., 4]")
    check_giou_weight(giou_weight)
    valid = torch.isfinite(target).all(-1)
    if bool(valid.any()):
        p, t = pred[valid], target[valid]
        err = (p - t).pow(2).sum(-1).mean()
        if giou_weight:
            err = err + giou_weight * (1.0 - giou_cxcywh(p, t)).mean()
    else:
        err = pred.sum() * 0.0
    if model is not None and lam:
        err = err + lam * weight_l2(model)
    return err
