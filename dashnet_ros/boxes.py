"""Bounding boxes: ``(x, y, w, h)`` float32, top-left corner and size in pixels.

The paper's TCF (§3.3.1) writes boxes by their centre; conversions live here so every
other module can use one convention.
"""
from __future__ import annotations

import math

import numpy as np


def usable(b) -> bool:
    """A box ``[x, y, w, h]`` (four Python floats) that describes a target: finite, with a
    positive size.  (Plain floats: this runs for every box the nodes send or read.)"""
    return b[2] > 0 and b[3] > 0 and all(map(math.isfinite, b))


def as_box(b) -> np.ndarray:
    return np.asarray(b, dtype=np.float32).reshape(4)


def xywh_to_cxcywh(b):
    b = np.asarray(b, dtype=np.float32)
    return np.concatenate([b[..., :2] + b[..., 2:] / 2, b[..., 2:]], axis=-1)


def cxcywh_to_xywh(b):
    b = np.asarray(b, dtype=np.float32)
    return np.concatenate([b[..., :2] - b[..., 2:] / 2, b[..., 2:]], axis=-1)


def iou(a, b) -> np.ndarray:
    """Intersection over union of boxes (broadcasting over leading axes); NaN boxes give 0."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    x0 = np.maximum(a[..., 0], b[..., 0])
    y0 = np.maximum(a[..., 1], b[..., 1])
    x1 = np.minimum(a[..., 0] + a[..., 2], b[..., 0] + b[..., 2])
    y1 = np.minimum(a[..., 1] + a[..., 3], b[..., 1] + b[..., 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    union = a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(union > 0, inter / union, 0.0)
    return np.nan_to_num(out, nan=0.0)


def interpolate_track(t_us: np.ndarray, boxes: np.ndarray, query_t_us) -> np.ndarray:
    """Linearly interpolate a ground-truth track ``boxes[i]`` at ``t_us[i]`` to ``query_t_us``.

    Outside the track the end boxes are held.  Rows that are NaN (target absent) stay
    NaN at queries whose neighbours include them.
    """
    t_us = np.asarray(t_us, dtype=np.float64)
    boxes = np.asarray(boxes, dtype=np.float64)
    q = np.atleast_1d(np.asarray(query_t_us, dtype=np.float64))
    if len(t_us) == 0:
        raise ValueError("cannot interpolate an empty ground-truth track")
    if len(t_us) == 1:
        return np.repeat(boxes[:1], len(q), axis=0).astype(np.float32)
    i1 = np.clip(np.searchsorted(t_us, q, side="right"), 1, len(t_us) - 1)
    i0 = i1 - 1
    span = t_us[i1] - t_us[i0]
    w = np.clip((q - t_us[i0]) / np.where(span > 0, span, 1), 0.0, 1.0)[:, None]
    return ((1 - w) * boxes[i0] + w * boxes[i1]).astype(np.float32)
