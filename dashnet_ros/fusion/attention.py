"""Attention channel of the ANN (paper §3.3.2, eq. 10-12).

At inference the ANN looking at the APS frame taken at ``t`` gets, next to the image ``X``,
a channel ``A = X * M`` (element-wise, eq. 11) where the soft mask ``M`` comes from the
latest fused (TCF) box strictly before ``t`` (eq. 10).  At training time that box is
replaced by the ground truth with random shift and scale (eq. 12).

Deviations from the letter of eq. 11, on purpose:

* The paper's outside-the-box value ``1/(2*pi*sqrt(sigma)) * exp(-d^2 / (2 sigma^2))``
  is discontinuous at the box border (it jumps from 1 to at most ``1/(2 pi sqrt(sigma))``,
  0.04 for sigma = 16 px), so the context around the target would be all but erased.  We
  drop the normalising constant: ``M = exp(-d^2 / (2 sigma^2))`` outside, 1 inside.
* ``d`` (default ``mode="border"``) is the distance from the pixel centre to the nearest
  point of the box, so ``M`` is continuous and falls off from 1 at the border.  With
  ``mode="centre"`` ``d`` is the distance to the box centre ``(x, y)`` as the paper writes
  it (still without the constant, so still discontinuous at the border but bounded by 1).

Pixel ``(i, j)`` (row, column) has its centre at ``(j + 0.5, i + 0.5)`` in the box's pixel
coordinates; it is inside the box when its centre is.  ``sigma`` is in pixels of the
image the mask is made for.  A missing box (None or NaN) gives ``M = 1`` everywhere.
"""
from __future__ import annotations

from typing import Optional

import numpy as np


def _box_or_none(box) -> Optional[np.ndarray]:
    if box is None:
        return None
    b = np.asarray(box, dtype=np.float64).reshape(4)
    return b if np.all(np.isfinite(b)) else None


def attention_mask(h: int, w: int, box, sigma: float, mode: str = "border") -> np.ndarray:
    """Soft mask ``M`` (eq. 11), float32 ``[h, w]``: 1 inside ``box`` (x, y, w, h), Gaussian outside."""
    if h < 1 or w < 1:
        raise ValueError(f"attention mask size must be positive, got {h}x{w}")
    if not (sigma > 0 and np.isfinite(sigma)):
        raise ValueError(f"attention sigma must be a positive number of pixels, got {sigma!r}")
    b = _box_or_none(box)
    if b is None:
        return np.ones((h, w), np.float32)
    xs = np.arange(w, dtype=np.float64) + 0.5
    ys = np.arange(h, dtype=np.float64) + 0.5
    x0, y0, x1, y1 = b[0], b[1], b[0] + b[2], b[1] + b[3]
    inv = 1.0 / (2.0 * sigma * sigma)
    if mode == "border":
        dx = np.maximum(np.maximum(x0 - xs, xs - x1), 0.0)
        dy = np.maximum(np.maximum(y0 - ys, ys - y1), 0.0)
        # exp(-(dx^2 + dy^2) inv) is separable; inside the box both factors are 1.
        return (np.exp(-dy * dy * inv)[:, None] * np.exp(-dx * dx * inv)[None, :]).astype(np.float32)
    if mode == "centre":
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        m = np.exp(-((ys - cy) ** 2) * inv)[:, None] * np.exp(-((xs - cx) ** 2) * inv)[None, :]
        inside = ((ys >= y0) & (ys <= y1))[:, None] & ((xs >= x0) & (xs <= x1))[None, :]
        m[inside] = 1.0
        return m.astype(np.float32)
    raise ValueError(f"attention mode must be 'border' or 'centre', got {mode!r}")


def attention_channel(image: np.ndarray, box, sigma: float, mode: str = "border") -> np.ndarray:
    """``A = X * M`` (eq. 11, element-wise) for a 2-D image ``X``; float32."""
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"attention_channel needs a 2-D (H, W) image, got shape {image.shape}")
    m = attention_mask(image.shape[0], image.shape[1], box, sigma, mode)
    return image.astype(np.float32, copy=False) * m


def shift_box(box, offset) -> np.ndarray:
    """``box`` (x, y, w, h) moved by ``offset = (beta_x, beta_y, alpha)`` as eq. 12 reads
    it (see :func:`noisy_box`): the centre by ``beta`` box sizes per axis, the sides scaled
    by ``1 + alpha`` (at least 0.1) about it.  float32 out; a NaN box stays NaN."""
    b = np.asarray(box, dtype=np.float64).reshape(4)
    cx = b[0] + b[2] / 2 + offset[0] * b[2]
    cy = b[1] + b[3] / 2 + offset[1] * b[3]
    s = max(1.0 + offset[2], 0.1)
    w, h = b[2] * s, b[3] * s
    return np.array([cx - w / 2, cy - h / 2, w, h], dtype=np.float32)


def noisy_box(gt_box, rng: np.random.Generator, alpha_std: float = 0.1, beta_std: float = 0.1) -> np.ndarray:
    """Training stand-in for the fed-back box (eq. 12): ``h' = (1 + alpha)(a_hat + beta)``.

    Read in centre form, with units that make it independent of the image origin: the
    centre moves by ``beta`` box sizes (``cx += beta_x * w``, ``cy += beta_y * h``,
    ``beta ~ N(0, beta_std)`` per axis), then the size is scaled by ``1 + alpha`` (one
    ``alpha ~ N(0, alpha_std)`` for both sides, keeping the aspect ratio; ``1 + alpha`` is
    clipped to >= 0.1).  The paper's ``N(0, 0.1)`` is read as standard deviation 0.1.
    Input and output are ``(x, y, w, h)`` float32; a NaN box stays NaN.
    """
    alpha = rng.normal(0.0, alpha_std) if alpha_std > 0 else 0.0
    beta = rng.normal(0.0, beta_std, 2) if beta_std > 0 else np.zeros(2)
    return shift_box(gt_box, (beta[0], beta[1], alpha))


def latest_before(times, boxes, t) -> Optional[np.ndarray]:
    """The box with the latest time strictly before ``t`` (eq. 10), or None.

    ``times`` must be ascending (any unit, the same as ``t``); ``boxes[i]`` belongs to
    ``times[i]``.
    """
    times = np.asarray(times)
    if len(times) != len(boxes):
        raise ValueError(f"latest_before: {len(times)} times but {len(boxes)} boxes")
    if len(times) > 1 and np.any(np.diff(times) < 0):
        raise ValueError("latest_before: times must be ascending")
    k = int(np.searchsorted(times, t, side="left")) - 1
    if k < 0:
        return None
    return np.asarray(boxes[k], dtype=np.float32).reshape(4)
