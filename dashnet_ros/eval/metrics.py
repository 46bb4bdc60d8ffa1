"""Tracking metrics of the paper's §4, on output streams scored with causal zero-order hold.

A tracker's output is a stream of ``(t_us, box)``; ground truth is ``(t_us, box)`` at the
evaluation instants.  At each instant the tracker is represented by its latest output at or
before that instant (causal zero-order hold, as the paper does for frame trackers); before
its first output it has no box (IoU 0).

Definitions (OTB, Wu, Lim & Yang, TPAMI 2015 — the paper's ref. [22]):
- success curve S(τ): fraction of instants whose IoU > τ, at 21 thresholds τ = 0, 0.05, ..., 1;
- success AUC: the mean of S over those thresholds (OTB's area under the success plot);
- mIOU: mean IoU over instants;
- precision@20: fraction of instants whose centre error <= 20 px;
- robustness Rb: failure rate, the fraction of instants where the tracker's box does not
  overlap the target at all (IoU = 0, i.e. 1 − S(0)); lower is better, like Table 2's Rb.
  OTB counts a frame as failed at zero overlap (the first point of its success plot).
Instants whose ground truth is absent (NaN) are left out of every metric but one:
- PRED18 decision accuracy (``decision_acc``, given the image width): the fraction of all
  instants where the steering decision of the held box -- the image band its centre is in,
  ``left`` / ``center`` / ``right`` thirds, or ``not_visible`` without a box
  (:func:`dashnet_ros.steering.decision`) -- equals the ground truth's, target absent
  included (the four-way decision PRED18 scores its steering network on).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..boxes import iou

THRESHOLDS = np.linspace(0.0, 1.0, 21)


def zero_order_hold(out_t_us, out_boxes, query_t_us) -> np.ndarray:
    """Latest output at or before each query instant (NaN before the first output)."""
    out_t_us = np.asarray(out_t_us, dtype=np.int64)
    out_boxes = np.asarray(out_boxes, dtype=np.float64).reshape(-1, 4)
    q = np.asarray(query_t_us, dtype=np.int64)
    if len(out_t_us) and np.any(np.diff(out_t_us) < 0):
        order = np.argsort(out_t_us, kind="stable")
        out_t_us, out_boxes = out_t_us[order], out_boxes[order]
    idx = np.searchsorted(out_t_us, q, side="right") - 1
    held = np.full((len(q), 4), np.nan)
    ok = idx >= 0
    held[ok] = out_boxes[idx[ok]]
    return held


def success_curve(ious: np.ndarray) -> np.ndarray:
    ious = np.asarray(ious, dtype=np.float64)
    if ious.size == 0:
        return np.full(len(THRESHOLDS), np.nan)
    return np.array([(ious > t).mean() for t in THRESHOLDS])


def centre_error(a, b) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    ca = a[..., :2] + a[..., 2:] / 2
    cb = b[..., :2] + b[..., 2:] / 2
    d = np.linalg.norm(ca - cb, axis=-1)
    return np.where(np.isfinite(d), d, np.inf)


def decision_accuracy(out_t_us, out_boxes, gt_t_us, gt_boxes, width_px: float) -> float:
    """PRED18 decision accuracy of a stream held at every ground-truth instant (module doc)."""
    from ..steering import decision

    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    if not len(gt_boxes):
        return float("nan")
    held = zero_order_hold(out_t_us, out_boxes, gt_t_us)
    same = [decision(h.tolist(), width_px) == decision(g.tolist(), width_px) for h, g in zip(held, gt_boxes)]
    return float(np.mean(same))


def score(out_t_us, out_boxes, gt_t_us, gt_boxes, width_px: Optional[float] = None) -> dict:
    """All metrics of one output stream against ground truth (see the module docstring);
    ``width_px``: the image width of the boxes' pixels, for the decision accuracy."""
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    gt_t_us = np.asarray(gt_t_us, dtype=np.int64)
    valid = np.all(np.isfinite(gt_boxes), axis=1) & (gt_boxes[:, 2] > 0) & (gt_boxes[:, 3] > 0)
    held = zero_order_hold(out_t_us, out_boxes, gt_t_us[valid])
    ious = iou(held, gt_boxes[valid])
    curve = success_curve(ious)
    n = int(valid.sum())
    return {
        "n_instants": n,
        "miou": float(ious.mean()) if n else float("nan"),
        "auc": float(curve.mean()) if n else float("nan"),
        "precision20": float((centre_error(held, gt_boxes[valid]) <= 20).mean()) if n else float("nan"),
        "robustness": float((ious <= 0).mean()) if n else float("nan"),
        "success_curve": curve.tolist(),
        "n_outputs": int(len(out_t_us)),
        "decision_acc": (decision_accuracy(out_t_us, out_boxes, gt_t_us, gt_boxes, width_px)
                         if width_px else float("nan")),
    }
