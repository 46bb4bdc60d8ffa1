"""Timestamped frames and the frame-source interface every source implements."""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np


@dataclass
class Frame:
    """One intensity frame.

    ``image``: float32 (H, W) linear luminance in [0, 1] (sources convert colour with
    ITU-R BT.601 weights).  ``t_us``: sensor time in microseconds from the start of the
    source.  ``box``: ground-truth ``(x, y, w, h)`` float32 in this frame's pixels, or
    None when the source has no annotation (NaN row when annotated as absent).
    ``index``: 0-based frame number in the source.
    """

    t_us: int
    image: np.ndarray
    box: Optional[np.ndarray] = None
    index: int = 0


class FrameSource(abc.ABC):
    """A finite or endless sequence of :class:`Frame` at a fixed nominal rate."""

    #: nominal frame rate of the source in Hz
    fps: float
    width: int
    height: int

    @abc.abstractmethod
    def __iter__(self) -> Iterator[Frame]:
        ...

    def __len__(self) -> int:  # pragma: no cover - endless sources override nothing
        raise TypeError(f"{type(self).__name__} has no fixed length")

    @property
    def frame_dt_us(self) -> float:
        return 1e6 / self.fps

    def gt_track(self):
        """``(t_us[N], boxes[N,4])`` of the whole annotation, or None.  Used for evaluation
        only: trackers never see it (they get the first box)."""
        return None

    def close(self) -> None:
        pass


# --- The DAVIS stream: what the simulator (and the recording readers) emit, in time order.


@dataclass
class ApsFrame:
    """An APS (active pixel) frame as the sensor delivers it.

    ``image``: uint8 (H, W) grey levels; ``t_us``: exposure time stamp on the same clock
    as the events; ``box``: ground truth (x, y, w, h) at ``t_us`` in stream pixels, or None.
    """

    t_us: int
    image: np.ndarray
    box: Optional[np.ndarray] = None


@dataclass
class EventBatch:
    """All DVS events with ``t0_us <= t_us < t1_us`` (sorted by time).  Consecutive
    batches tile time without gaps, so an empty batch still advances the clock."""

    t0_us: int
    t1_us: int
    events: np.ndarray
