"""Run a tracker over one sequence the way a user's DAVIS would see it.

An input is an NFS-layout sequence directory (simulated into a DAVIS stream: APS frames
at ``aps_rate_hz`` plus events from every source frame with FCN interpolation) or a hybrid
dataset file (``.h5``, already simulated).  The tracker gets exactly one piece of ground
truth: the first annotation line (NFS: read on its own, later lines are never opened;
dataset: its first GT box).  Outputs are mapped back to the sequence's own pixels.
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


def open_input(path: str, *, aps_rate_hz: float = 30.0, interp_factor: int = 7, dvs_model: str = "pixel",
               width: int = 240, height: int = 180, seed: int = 0, interpolator=None) -> TrackingInput:
    """Open an NFS sequence dir or a hybrid dataset file for tracking (see module doc)."""
    path = os.fspath(path)
    if os.path.isfile(path) and path.endswith((".h5", ".hdf5")):
        from ..io.dataset import HybridDataset

        ds = HybridDataset(path)
        init = ds.initial_box()
        if init is None:
            raise ValueError(f"{path}: the dataset has no ground-truth box to initialise from")
        return TrackingInput(ds.stream(), np.asarray(init, np.float32), int(ds.t0_us), ds.width, ds.height,
                             tuple(ds.scale_xy), int(ds.duration_us), os.path.splitext(os.path.basename(path))[0])
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: neither an NFS sequence directory nor a .h5 dataset file")
    from ..davis.sources import ImageFolderSource, _nfs_paths, read_first_annotation
    from ..davis.stream import DavisSimulator

    _, frame_dir = _nfs_paths(path)
    init_src = read_first_annotation(path)  # the first line only
    # The frames alone: the annotation file is not opened again (trackers see no more GT).
    source = ImageFolderSource(frame_dir, fps=240.0)
    sim = DavisSimulator(source, width=width, height=height, interp_factor=interp_factor,
                         interpolator=interpolator, dvs_model=dvs_model, aps_rate_hz=aps_rate_hz, seed=seed)
    sx, sy = sim.scale_xy
    init = np.array([init_src[0] * sx, init_src[1] * sy, init_src[2] * sx, init_src[3] * sy], np.float32)
    duration = int(round(len(source) * 1e6 / 240.0))
    return TrackingInput(sim.stream(), init, 0, width, height, (sx, sy), duration, os.path.basename(os.path.normpath(path)))


def to_source_px(boxes: np.ndarray, scale_xy) -> np.ndarray:
    sx, sy = scale_xy
    return (np.asarray(boxes, np.float64) / np.array([sx, sy, sx, sy])).astype(np.float32)


def track(inp: TrackingInput, tracker: HybridTracker, progress: Optional[Callable[[int, int], None]] = None) -> dict:
    """Run ``tracker`` over the input; ``{source: (t_us[N], boxes[N, 4] in source pixels)}``."""
    tracker.init(inp.init_box, inp.t0_us)

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
