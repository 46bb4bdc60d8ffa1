"""Temporal complementary filter (paper §3.3.1, eq. 7-9).

For an SNN box ``o`` at time ``t_s`` the filter takes the ANN box ``a`` whose time ``t_a``
is nearest to ``t_s`` and returns ``h = w * o + (1 - w) * a`` with::

    D = ((t_a - t_s) / time_scale)^2                      # eq. 7
    w = 1 - 2 / (1 + exp(D))  (= tanh(D / 2))             # eq. 8
    h = w * SNN + (1 - w) * ANN   (centre form cx, cy, w, h)   # eq. 9

The paper writes ``D = ||t_a - t_s||^2`` without a unit, so the time scale is what makes
it usable: ``time_scale_s`` (default 1/60 s, half the 33.3 ms interval of 30 Hz APS
frames) puts the cross-over where the ANN's information is half a frame old.  With the
default, ``w`` against ``|t_a - t_s|``:

=========  ======  =====  =====  =====  ======  ======  ======  ======
|dt| (ms)  0       2      5      10     16.7    25      33.3    50
w (SNN)    0.000   0.007  0.045  0.178  0.462   0.809   0.964   1.000
=========  ======  =====  =====  =====  ======  ======  ======  ======

so right at an APS frame the ANN dominates and just before the next frame (33 ms after
the last one, which is all a live system can have) the SNN does.  Use
:meth:`TCF.for_frame_rate` for other APS rates.  Measured on the procedural validation
streams (seeds 1900-1907, hybrid success AUC): time scale 4 / 8 / 16.7 / 33 / 66 ms gave
0.373 / 0.415 / 0.471 / 0.390 / 0.372, so the default stays at half the frame interval.

Causality: the filter only knows the ANN outputs given to :meth:`TCF.add_ann`.  In a live
system those are the ones already received, so "nearest" means the nearest *available*
output (usually the latest one); offline, all ANN outputs may be added first, which lets
a later frame be used.  ``causal=True`` enforces ``t_a <= t_s`` in both cases.

Motion-compensated ANN box (on by default, ``propagate=False`` = eq. 9 as written): the
ANN box describes the target at its frame time ``t_a``, up to 33 ms before ``t_s``; a
target crossing its own width in that time is left behind, and with the SNN's search region
re-centred on the fused box (SNN-hybrid) the pull towards the stale box erases what the
SNN saw each window (on our held-out set the hybrid then lost nearly every target: success
AUC 0.07).  So the SNN also reports its motion over each window (its box centre minus the
centre it searched around, :meth:`fuse`'s ``motion_px``), and the ANN term of eq. 9 is the
ANN box moved by the SNN's accumulated motion since ``t_a``: both terms then describe the
target at ``t_s`` and eq. 8 still decides whose *measurement* to trust.  Sizes are not
propagated.

Boxes go in and out as the core's ``(x, y, w, h)`` pixels and are blended in the paper's
centre form; since the conversion is linear the blend is the same in either form.  A NaN
SNN box gives the ANN box, a NaN (or absent) ANN box gives the SNN box, both NaN give NaN.
"""
from __future__ import annotations

import bisect
import math
from array import array
from typing import List, Optional, Tuple

import numpy as np

MOTION_HISTORY = 8192   # SNN windows of motion kept (at least; 3.9 s at 2083 windows/s)


def _f32(values) -> list:
    """Python floats rounded to float32 (one call for a few values: the filter runs per SNN
    window, where numpy's per-call cost would be most of the work)."""
    return array("f", values).tolist()


def tcf_weight(dt_s: float, time_scale_s: float) -> float:
    """SNN weight ``w`` (eq. 8) for an ANN/SNN time distance ``dt_s`` seconds."""
    d = (dt_s / time_scale_s) ** 2
    return math.tanh(d / 2.0)  # == 1 - 2 / (1 + exp(d)), without overflow


class TCF:
    """Fuses SNN boxes with the nearest ANN box in time (eq. 7-9).

    ``time_scale_s``: the time unit of ``D`` (see module doc).  ``causal``: only use ANN
    outputs with ``t_a <= t_s``.  ``max_history``: ANN outputs kept (oldest dropped).
    ``propagate``: move the ANN box by the SNN's motion since its frame (module doc).
    After each :meth:`fuse`, ``last_weight`` holds ``w`` (1.0 when no ANN box was used)
    and ``last_ann_t_us`` the time of the ANN output used (None if none).
    """

    def __init__(self, time_scale_s: float = 1.0 / 60.0, causal: bool = False, max_history: int = 256,
                 propagate: bool = True):
        if not (time_scale_s > 0 and math.isfinite(time_scale_s)):
            raise ValueError(f"TCF time_scale_s must be a positive number of seconds, got {time_scale_s!r}")
        if max_history < 1:
            raise ValueError(f"TCF max_history must be >= 1, got {max_history!r}")
        self.time_scale_s = float(time_scale_s)
        self.causal = bool(causal)
        self.max_history = int(max_history)
        self.propagate = bool(propagate)
        self._t: List[int] = []
        self._box: List[Optional[list]] = []  # centre form (float32 values), None when NaN
        self.last_weight: float = 1.0
        self.last_ann_t_us: Optional[int] = None
        # the SNN's motion: window end times and the cumulative centre displacement (px)
        self._mt: List[int] = []
        self._mx: List[float] = []
        self._my: List[float] = []
        self._trimmed = False

    @classmethod
    def for_frame_rate(cls, aps_rate_hz: float, **kw) -> "TCF":
        """A filter whose time scale is half the APS frame interval."""
        if not aps_rate_hz > 0:
            raise ValueError(f"APS frame rate must be positive, got {aps_rate_hz!r}")
        return cls(time_scale_s=0.5 / aps_rate_hz, **kw)

    def reset(self) -> None:
        self._t.clear()
        self._box.clear()
        self._mt.clear()
        self._mx.clear()
        self._my.clear()
        self._trimmed = False
        self.last_weight = 1.0
        self.last_ann_t_us = None

    def __len__(self) -> int:
        return len(self._t)

    def add_ann(self, t_us: int, box_xywh) -> None:
        """Record an ANN output (``(x, y, w, h)`` pixels, NaN allowed) for frame time ``t_us``."""
        t_us = int(t_us)
        b = np.asarray(box_xywh, dtype=np.float32).reshape(4).tolist()
        # centre form in float32 (each sum of two float32 values is exact in a Python float)
        c = _f32([b[0] + b[2] / 2, b[1] + b[3] / 2, b[2], b[3]]) if all(map(math.isfinite, b)) else None
        i = bisect.bisect_right(self._t, t_us)
        self._t.insert(i, t_us)
        self._box.insert(i, c)
        if len(self._t) > self.max_history:
            del self._t[0], self._box[0]

    def nearest_ann(self, t_us: int) -> Optional[Tuple[int, Optional[list]]]:
        """``(t_a, centre box [cx, cy, w, h] or None)`` of the ANN output nearest to ``t_us``
        (eq. 7), or None.

        On a tie the earlier output wins; with ``causal`` only ``t_a <= t_us`` count.
        """
        if not self._t:
            return None
        i = bisect.bisect_right(self._t, int(t_us))  # self._t[i-1] <= t_us < self._t[i]
        cands = []
        if i > 0:
            cands.append(i - 1)
        if i < len(self._t) and not self.causal:
            cands.append(i)
        if not cands:
            return None
        k = min(cands, key=lambda j: (abs(self._t[j] - t_us), self._t[j]))
        return self._t[k], self._box[k]

    def add_motion(self, t_snn_us: int, dx_px: float, dy_px: float) -> None:
        """Record the SNN's centre displacement over its window ending at ``t_snn_us``."""
        if not (math.isfinite(dx_px) and math.isfinite(dy_px)):
            dx_px = dy_px = 0.0
        t = int(t_snn_us)
        if self._mt and t <= self._mt[-1]:
            return  # out of order: motion is only accumulated forward
        cx = (self._mx[-1] if self._mx else 0.0) + dx_px
        cy = (self._my[-1] if self._my else 0.0) + dy_px
        self._mt.append(t), self._mx.append(cx), self._my.append(cy)
        if len(self._mt) > 2 * MOTION_HISTORY:
            del self._mt[:MOTION_HISTORY], self._mx[:MOTION_HISTORY], self._my[:MOTION_HISTORY]
            self._trimmed = True

    def motion_since(self, t0_us: int, t1_us: int) -> Tuple[float, float]:
        """The SNN's accumulated centre displacement from ``t0_us`` to ``t1_us`` (windows
        ending in ``(t0, t1]``); 0 without records, NaN when ``t0`` is older than the
        records kept."""
        if not self._mt:
            return 0.0, 0.0
        i0 = bisect.bisect_right(self._mt, int(t0_us)) - 1
        i1 = bisect.bisect_right(self._mt, int(t1_us)) - 1
        if i1 < 0 or i1 <= i0:
            return 0.0, 0.0
        if i0 < 0:
            if self._trimmed:
                return float("nan"), float("nan")
            return self._mx[i1], self._my[i1]
        return self._mx[i1] - self._mx[i0], self._my[i1] - self._my[i0]

    def fuse(self, t_snn_us: int, box_snn, motion_px: Optional[Tuple[float, float]] = None) -> np.ndarray:
        """Fused ``(x, y, w, h)`` float32 box for an SNN output at ``t_snn_us`` (eq. 9).

        ``motion_px``: the SNN's centre displacement over this window (the box centre minus
        the centre of the reference it searched around); given, the ANN box is moved by the
        SNN's displacement since the ANN's frame before the blend (see the module doc).
        """
        s = np.asarray(box_snn, dtype=np.float32).reshape(4).tolist()
        return np.array(self.fuse_row(int(t_snn_us), s, motion_px), np.float32)

    def fuse_row(self, t_snn_us: int, s: list, motion_px) -> list:
        """One SNN output (``s``: float32-valued ``[x, y, w, h]`` floats) -> the fused row.

        Plain Python floats, rounded to float32 where the core's float32 boxes are (the
        same values as the numpy formulation of eq. 9 in float32 boxes: the ANN and SNN
        boxes and the blended centre form are float32, the blend itself float64)."""
        if motion_px is not None and self.propagate:
            self.add_motion(t_snn_us, float(motion_px[0]), float(motion_px[1]))
        s_ok = all(map(math.isfinite, s))
        near = self.nearest_ann(t_snn_us)
        self.last_ann_t_us = None if near is None else near[0]
        if near is None or near[1] is None:
            self.last_weight = 1.0
            return list(s) if s_ok else [math.nan] * 4
        t_a, a = near
        if self._mt and self.propagate:
            mx, my = self.motion_since(t_a, t_snn_us)
            if math.isfinite(mx) and (mx or my):
                a = [a[0] + mx, a[1] + my, a[2], a[3]]
        if not s_ok:
            self.last_weight = 0.0
            a = _f32(a)
            return _f32([a[0] - a[2] / 2, a[1] - a[3] / 2, a[2], a[3]])
        w = tcf_weight((t_a - t_snn_us) * 1e-6, self.time_scale_s)
        self.last_weight = w
        sc = _f32([s[0] + s[2] / 2, s[1] + s[3] / 2])       # the SNN box in float32 centre form
        h = _f32([w * sc[0] + (1.0 - w) * a[0], w * sc[1] + (1.0 - w) * a[1],
                  w * s[2] + (1.0 - w) * a[2], w * s[3] + (1.0 - w) * a[3]])
        return _f32([h[0] - h[2] / 2, h[1] - h[3] / 2, h[2], h[3]])
