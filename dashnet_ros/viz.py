"""Pictures of a DAVIS stream: APS frame with events and boxes drawn over it, and a video writer."""
from __future__ import annotations

import os

import cv2
import numpy as np

# BGR colours for box sources (also used by the tracking overlays)
COLOURS = {
    "gt": (0, 0, 255),
    "snn": (255, 160, 0),
    "ann": (0, 200, 255),
    "fused": (0, 255, 0),
}


def overlay(aps: np.ndarray, events: np.ndarray | None = None, boxes: dict | None = None,
            scale: int = 3, text: str | None = None) -> np.ndarray:
    """BGR image: the grey APS frame, ON events red / OFF events blue, labelled boxes.

    ``boxes``: name -> (x, y, w, h) in stream pixels (NaN boxes are skipped).
    """
    img = cv2.cvtColor(aps, cv2.COLOR_GRAY2BGR)
    if events is not None and len(events):
        on = events["p"] > 0
        img[events["y"][on], events["x"][on]] = (40, 40, 255)
        img[events["y"][~on], events["x"][~on]] = (255, 80, 40)
    if scale != 1:
        img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    for name, b in (boxes or {}).items():
        b = np.asarray(b, dtype=np.float64)
        if b is None or not np.all(np.isfinite(b)):
            continue
        p0 = (int(round(b[0] * scale)), int(round(b[1] * scale)))
        p1 = (int(round((b[0] + b[2]) * scale)), int(round((b[1] + b[3]) * scale)))
        c = COLOURS.get(name, (255, 255, 255))
        cv2.rectangle(img, p0, p1, c, 1)
        cv2.putText(img, name, (p0[0], max(10, p0[1] - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, c, 1)
    if text:
        cv2.putText(img, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
    return img


class VideoWriter:
    """MP4 (mp4v) writer that creates the folder, opens on the first frame, and writes to a
    temporary name that is renamed into place on close (no half-written video is left)."""

    def __init__(self, path: str, fps: float):
        self.path, self.fps = path, fps
        self._tmp = path + ".partial.mp4"
        self._w = None
        self.frames = 0

    def write(self, bgr: np.ndarray) -> None:
        if self._w is None:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            h, w = bgr.shape[:2]
            self._w = cv2.VideoWriter(self._tmp, cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
            if not self._w.isOpened():
                raise OSError(f"cannot open a video writer for {self.path}")
        self._w.write(bgr)
        self.frames += 1

    def close(self, keep: bool = True) -> None:
        if self._w is not None:
            self._w.release()
            self._w = None
            if keep:
                os.replace(self._tmp, self.path)
            else:
                os.remove(self._tmp)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        self.close(keep=exc_type is None)


def tracking_video(items, outputs: dict, path: str, *, gt=None, fps: float = 60.0, scale: int = 3,
                   progress=None) -> int:
    """Write a tracking-overlay video: for every 1/fps of sensor time, the latest APS frame,
    the events of that interval, and each output stream's latest box (causal hold).

    ``items``: the DAVIS stream (EventBatch / ApsFrame); ``outputs``: name -> (t_us[N],
    boxes[N, 4]) in stream pixels; ``gt``: optional (t_us, boxes) drawn as ``gt``.
    Returns the number of video frames written.
    """
    from .davis.frames import ApsFrame, EventBatch
    from .events import concat_events

    step = int(round(1e6 / fps))
    streams = dict(outputs)
    if gt is not None:
        streams = {"gt": gt, **streams}

    def held(name, t):
        ts, bs = streams[name]
        i = np.searchsorted(ts, t, side="right") - 1
        return bs[i] if i >= 0 else None

    aps, pending, t_next = None, [], step
    with VideoWriter(path, fps) as video:
        for item in items:
            if isinstance(item, ApsFrame):
                aps = item
                continue
            if not isinstance(item, EventBatch):
                continue
            pending.append(item.events)
            while item.t1_us >= t_next:
                if aps is not None:
                    boxes = {n: b for n in streams if (b := held(n, t_next)) is not None}
                    video.write(overlay(aps.image, concat_events(pending), boxes, scale=scale,
                                        text=f"t={t_next / 1e6:.3f}s"))
                pending = []
                t_next += step
            if progress:
                progress(item.t1_us)
        return video.frames
