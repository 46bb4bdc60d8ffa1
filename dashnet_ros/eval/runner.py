"""Run a tracker over one sequence the way a user's DAVIS would see it.

An input is an NFS-layout sequence directory (simulated into a DAVIS stream: APS frames
at ``aps_rate_hz`` plus events from every source frame with FCN interpolation), a hybrid
dataset file (``.h5``, already simulated), a DAVIS recording (``.aedat`` 2.0 / 3.1,
``.aedat4``: replayed as recorded, times from its first event) or a video file (simulated
like an NFS sequence, at the video's own frame rate).  The tracker gets exactly one piece
of ground truth: the first annotation line (NFS: read on its own, later lines are never
opened; dataset: its first GT box; recording: the first visible target of its jAER
target-label file, read up to that line -- ``labels``, or the sidecar ``REC-targets.txt``
beside ``REC.aedat``, see :mod:`dashnet_ros.davis.labels`), or the box the user gives
(``init_box``, in the input's own pixels, at its start; videos carry no annotation).
Outputs are mapped back to the input's own pixels.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from ..tracking import HybridTracker


@dataclass
class TrackingInput:
    stream: object              # iterable of EventBatch / ApsFrame
    init_box: np.ndarray        # stream pixels
    t0_us: int
    width: int
    height: int
    scale_xy: tuple             # stream pixels per source pixel
    duration_us: Optional[int]
    name: str
    init_us: Optional[int] = None   # when the tracker starts (None: t0_us); a recording's first label

    @property
    def start_us(self) -> int:
        """When the tracker starts: ``init_us``, else ``t0_us``."""
        return self.t0_us if self.init_us is None else self.init_us


def _user_box(init_box, path: str) -> np.ndarray:
    b = np.asarray(init_box, np.float64).reshape(-1)
    if b.size != 4 or not np.all(np.isfinite(b)) or b[2] <= 0 or b[3] <= 0:
        raise ValueError(f"{path}: the initial box must be x,y,w,h with w, h > 0, got {list(init_box)}")
    return b


def _scaled(box, sx: float, sy: float) -> np.ndarray:
    return np.array([box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy], np.float32)


def open_input(path: str, *, aps_rate_hz: float = 30.0, interp_factor: int = 7, dvs_model: str = "pixel",
               width: int = 240, height: int = 180, seed: int = 0, interpolator=None,
               init_box=None, labels: Optional[str] = None) -> TrackingInput:
    """Open an NFS sequence dir, a hybrid dataset file, a DAVIS recording or a video file for
    tracking (see module doc).  ``init_box``: ``(x, y, w, h)`` in the input's pixels instead
    of its first annotation; ``labels``: a recording's target-label file (default: its sidecar)."""
    path = os.fspath(path)
    name = os.path.basename(os.path.normpath(path))
    if os.path.isfile(path):
        name = os.path.splitext(name)[0]
    from ..davis.labels import label_sidecar
    from ..davis.recordings import is_recording, open_recording

    if labels is not None and not is_recording(path):
        raise ValueError(f"{path}: target labels (--labels) are for DAVIS recordings (.aedat, .aedat4)")
    if os.path.isfile(path) and path.endswith((".h5", ".hdf5")):
        from ..io.dataset import HybridDataset

        ds = HybridDataset(path)
        init = ds.initial_box() if init_box is None else _scaled(_user_box(init_box, path), *ds.scale_xy)
        if init is None:
            raise ValueError(f"{path}: the dataset has no ground-truth box to initialise from")
        return TrackingInput(ds.stream(), np.asarray(init, np.float32), int(ds.t0_us), ds.width, ds.height,
                             tuple(ds.scale_xy), int(ds.duration_us), name)
    if is_recording(path):
        rec = open_recording(path)
        labels = labels or (label_sidecar(path) if init_box is None else None)
        if init_box is not None and labels is not None:
            raise ValueError(f"{path}: give the initial box (--init) or a label file (--labels), not both")
        if init_box is not None:
            box, t_init = _scaled(_user_box(init_box, path), 1.0, 1.0), 0
        elif labels is not None:
            from ..davis.labels import read_target_locations

            t, b = read_target_locations(labels, rec.height, first_visible_only=True)   # up to that line only
            if not np.all(np.isfinite(b[-1])):
                raise ValueError(f"{labels}: no visible target to initialise from")
            box, t_init = b[-1], max(0, int(t[-1]) - int(rec.t_offset_us))
        else:
            raise ValueError(f"{path}: a DAVIS recording has no annotation; give the target's box at its "
                             "first event as --init x,y,w,h (sensor pixels), or its jAER target labels "
                             f"(--labels FILE, or {os.path.splitext(path)[0]}-targets.txt beside it)")
        return TrackingInput(rec.stream(), box, 0, rec.width, rec.height, (1.0, 1.0), None, name, t_init)
    from ..davis.stream import DavisSimulator

    if os.path.isfile(path):
        from ..davis.sources import VideoSource

        source = VideoSource(path)
        if init_box is None:
            raise ValueError(f"{path}: a video has no annotation; give the target's box in its first frame "
                             "as --init x,y,w,h (video pixels)")
        init_src, fps = _user_box(init_box, path), source.fps
    elif os.path.isdir(path):
        from ..davis.sources import ImageFolderSource, _nfs_paths, read_first_annotation

        _, frame_dir = _nfs_paths(path)
        # the first line only; the annotation file is not opened again (trackers see no more GT)
        init_src = read_first_annotation(path) if init_box is None else _user_box(init_box, path)
        fps = 240.0
        source = ImageFolderSource(frame_dir, fps=fps)
    else:
        raise FileNotFoundError(f"{path}: no such NFS sequence directory, dataset, recording or video file")
    sim = DavisSimulator(source, width=width, height=height, interp_factor=interp_factor,
                         interpolator=interpolator, dvs_model=dvs_model, aps_rate_hz=aps_rate_hz, seed=seed)
    sx, sy = sim.scale_xy
    duration = int(round(len(source) * 1e6 / fps))
    return TrackingInput(sim.stream(), _scaled(init_src, sx, sy), 0, width, height, (sx, sy), duration, name)


def to_source_px(boxes: np.ndarray, scale_xy) -> np.ndarray:
    sx, sy = scale_xy
    return (np.asarray(boxes, np.float64) / np.array([sx, sy, sx, sy])).astype(np.float32)


def track(inp: TrackingInput, tracker: HybridTracker, progress: Optional[Callable[[int, int], None]] = None) -> dict:
    """Run ``tracker`` over the input; ``{source: (t_us[N], boxes[N, 4] in source pixels)}``."""
    tracker.init(inp.init_box, inp.start_us)

    def _progress(item):
        if progress is not None:
            t = getattr(item, "t1_us", None) or getattr(item, "t_us", 0)
            progress(int(t - inp.t0_us), inp.duration_us or 0)

    out = tracker.run(inp.stream, _progress)
    # (t_us, boxes[, extras...]) per stream; boxes mapped back to source pixels
    return {k: (v[0], to_source_px(v[1], inp.scale_xy), *v[2:]) for k, v in out.items()}


#: which output stream `dashnet track --mode` writes, and which tracker mode produces it
MODE_STREAMS = {
    "hybrid": ("hybrid", "fused"),
    "snn": ("hybrid", "snn"),          # SNN-hybrid: the SNN inside the hybrid loop
    "snn-origin": ("snn-origin", "snn"),
    "ann": ("ann", "ann"),             # ANN-AT, attention from its own previous box
    "ann-nat": ("ann-nat", "ann"),
}
