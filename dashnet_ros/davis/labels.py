"""Target labels of DAVIS recordings in jAER's ``TargetLocations`` text format.

jAER's TargetLabeler (the tool PRED18-style recordings are labelled with) writes one line
per labelled instant after ``#`` header lines (``#!TargetLocations-2.0``, ``# frameNumber
timestamp x y targetTypeID width height``)::

    1234 56789012 120 64 0 24 18       # frame, time stamp (µs, the recording's clock),
    1235 56789512 -1 -1 -1 -1 -1       # centre x, y, class, width, height; -1: not visible

``x, y`` is the target's centre in jAER's chip coordinates, whose y axis points up; the
boxes returned here are ``(x, y, w, h)`` top-left boxes in image coordinates (origin
top-left, y down), as the recording readers give the events (:mod:`.recordings`).  Written
from the format jAER's TargetLabeler writes and reads (read for the layout only).
"""
from __future__ import annotations

import os
from typing import Optional, Tuple

import numpy as np

__all__ = ["label_sidecar", "read_target_locations", "recording_labels", "write_target_locations"]


def label_sidecar(recording_path) -> Optional[str]:
    """``REC-targets.txt`` beside the recording ``REC.aedat`` (its target labels), if any."""
    side = os.path.splitext(os.fspath(recording_path))[0] + "-targets.txt"
    return side if os.path.isfile(side) else None


def read_target_locations(path, sensor_height: int, *, first_visible_only: bool = False
                          ) -> Tuple[np.ndarray, np.ndarray]:
    """``(t_us [N] int64 on the recording's clock, boxes [N, 4] float32)``; a label of an
    invisible target is a row of NaN.  ``first_visible_only``: stop reading at the first
    visible target (a tracker's initial box; later lines are never read).  A line that is
    not a label (fewer than 4 numbers, a visible target without width and height) raises
    ``ValueError`` naming the file and line."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such target-label file")
    h = int(sensor_height)
    times, boxes = [], []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                v = [int(float(tok)) for tok in line.split()]
            except ValueError:
                v = []
            if len(v) < 4:
                raise ValueError(f"{path}:{n}: not a target label ('frame timestamp x y class width height'): {line!r}")
            t_us, x, y = v[1], v[2], v[3]
            if x == -1 and y == -1:
                times.append(t_us)
                boxes.append([np.nan] * 4)
                continue
            if len(v) < 7 or v[5] <= 0 or v[6] <= 0:
                raise ValueError(f"{path}:{n}: a visible target needs a positive width and height: {line!r}")
            w, bh = float(v[5]), float(v[6])
            row = (h - 1) - y                       # jAER's y axis points up
            times.append(t_us)
            boxes.append([x - w / 2, row - bh / 2, w, bh])
            if first_visible_only:
                break
    if not times:
        raise ValueError(f"{path}: no target labels in the file")
    return np.asarray(times, np.int64), np.asarray(boxes, np.float32).reshape(-1, 4)


def recording_labels(recording, recording_path) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """The labels beside a recording (:func:`label_sidecar`) on its stream clock (times from
    the recording's origin, ``recording.t_offset_us``), or None where it has none."""
    side = label_sidecar(recording_path)
    if side is None:
        return None
    t, b = read_target_locations(side, recording.height)
    return t - int(recording.t_offset_us), b


def write_target_locations(path, t_us, boxes, sensor_height: int, frames: Optional[np.ndarray] = None) -> None:
    """Write ``boxes`` (image-coordinate ``x, y, w, h``; NaN rows: not visible) at ``t_us``
    in the format :func:`read_target_locations` reads (for tests and exports)."""
    h = int(sensor_height)
    frames = np.arange(len(t_us)) if frames is None else frames
    with open(path, "w") as f:
        f.write("#!TargetLocations-2.0\n# target locations\n# frameNumber timestamp x y targetTypeID width height\n")
        for k, t, b in zip(frames, t_us, np.asarray(boxes, np.float64)):
            if not np.all(np.isfinite(b)):
                f.write(f"{int(k)} {int(t)} -1 -1 -1 -1 -1\n")
                continue
            cx, cy = b[0] + b[2] / 2, b[1] + b[3] / 2
            f.write(f"{int(k)} {int(t)} {int(round(cx))} {int(round((h - 1) - cy))} 0 "
                    f"{int(round(b[2]))} {int(round(b[3]))}\n")
