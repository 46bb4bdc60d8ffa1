"""Template channels of the fast ANN: where does the target's appearance match the search window?

Not in the paper.  The paper's ANN (eq. 5) must tell the target from everything else in
the frame using only the attention channel (eq. 11), i.e. *where* the target was; nothing
tells it *what* the target looks like.  Trained on procedural scenes it learned to return
the fed-back box (held-out photo sequences: IoU 0.69 in, 0.67 out), so the hybrid could
not correct a drifting SNN.  The fast preset adds, as extra input channels, the normalised
cross-correlation (NCC) of two target templates over the search window:

* the **initial** template: the first APS frame cropped at the initial box (never drifts);
* the **previous** template: the previous APS frame cropped at the ANN's previous box
  (follows slow changes of appearance, scale and lighting).

Each template is cut at the search window's own scale (pixels of the network input), so
the NCC response at input pixel ``(i, j)`` says how well the template centred there
matches; the CNN reads position and size from the frame, the attention channel and these
maps together.  The NCC itself is OpenCV's ``matchTemplate`` (``TM_CCOEFF_NORMED``).
"""
from __future__ import annotations

from typing import Optional, Sequence

import cv2
import numpy as np

MIN_TEMPLATE_PX = 3


def template_patch(image: np.ndarray, box, px_per_frame_px: float) -> Optional[np.ndarray]:
    """The frame inside ``box`` (x, y, w, h frame pixels) resampled by ``px_per_frame_px``
    (the search window's scale), float32 in [0, 1]; None for a box that is not finite or
    shrinks below 3 px."""
    from .ann import crop_resample, unit_float

    b = np.asarray(box, dtype=np.float64).reshape(4)
    if not np.all(np.isfinite(b)) or b[2] <= 0 or b[3] <= 0:
        return None
    th, tw = int(round(b[3] * px_per_frame_px)), int(round(b[2] * px_per_frame_px))
    if min(th, tw) < MIN_TEMPLATE_PX:
        return None
    return crop_resample(unit_float(image), b, (th, tw))


def ncc_map(search: np.ndarray, patch: Optional[np.ndarray]) -> np.ndarray:
    """NCC of ``patch`` centred at every pixel of ``search`` ([H, W] float32), zero where
    the patch does not fit, where either has no contrast, or without a patch."""
    h, w = search.shape
    out = np.zeros((h, w), np.float32)
    if patch is None:
        return out
    th, tw = patch.shape
    if th > h or tw > w:
        # a template larger than the window (the box grew or the window is the frame): shrink it
        f = min(h / th, w / tw)
        th, tw = max(MIN_TEMPLATE_PX, int(th * f)), max(MIN_TEMPLATE_PX, int(tw * f))
        patch = cv2.resize(patch, (tw, th), interpolation=cv2.INTER_AREA)
    if float(patch.std()) < 1e-4:
        return out
    r = cv2.matchTemplate(np.ascontiguousarray(search, np.float32), np.ascontiguousarray(patch, np.float32),
                          cv2.TM_CCOEFF_NORMED)
    # flat search areas give 0/0: OpenCV returns large or NaN values there
    np.nan_to_num(r, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    np.clip(r, -1.0, 1.0, out=r)
    oy, ox = th // 2, tw // 2
    out[oy:oy + r.shape[0], ox:ox + r.shape[1]] = r
    return out


def template_channels(search: np.ndarray, region, in_hw: Sequence[int], sources) -> np.ndarray:
    """``[len(sources), H, W]``: one NCC map per ``(image, box)`` in ``sources`` (None = no
    template yet), each template cut at the scale of ``region`` resampled to ``in_hw``."""
    r = np.asarray(region, dtype=np.float64).reshape(4)
    scale = float(in_hw[1]) / r[2]
    maps = []
    for src in sources:
        patch = None if src is None else template_patch(src[0], src[1], scale)
        maps.append(ncc_map(search, patch))
    return np.stack(maps) if maps else np.zeros((0,) + tuple(search.shape), np.float32)
