"""A frame source fed by another thread (e.g. a ROS image subscription), ROS-free.

The davis_simulator node's ``source: topic:NAME`` mode (and its closed loop with the
``world`` node) puts every received image here with :meth:`TopicFrameSource.put`; the
simulator thread iterates the source like any other.  Ground-truth boxes that arrive
separately are attached to the frame with the same stamp by :meth:`set_box` (a frame's
box is read when the simulator emits the APS frame, one source frame later, so a box that
arrives shortly after its image is still used).

The size is fixed by the first frame (:meth:`wait_ready`); later frames of another size
are refused.  Time must increase: a frame stamped earlier than the last one delivered
(a restarted publisher, a looping bag) ends the current iteration, and the next
``iter()`` starts with that frame (:attr:`restarts` counts these), so the simulator can
be rebuilt on the new time line.  A full queue drops its oldest frame.
"""
from __future__ import annotations

import collections
import threading
from typing import Iterator, Optional

import numpy as np

from .frames import Frame, FrameSource


class TopicFrameSource(FrameSource):
    """Frames pushed with :meth:`put` (any thread), iterated by one consumer thread."""

    def __init__(self, fps: float = 240.0, max_queue: int = 64, name: str = "topic"):
        if not fps > 0:
            raise ValueError(f"nominal fps must be > 0, got {fps!r}")
        if max_queue < 2:
            raise ValueError(f"max_queue must be >= 2, got {max_queue!r}")
        self.fps = float(fps)
        self.name = name
        self.width = 0
        self.height = 0
        self._q: collections.deque = collections.deque()
        self._max = int(max_queue)
        self._cv = threading.Condition()
        self._closed = False
        self._last_t: Optional[int] = None        # last frame delivered to the consumer
        self._last_put_t: Optional[int] = None
        self._recent: "collections.OrderedDict[int, Frame]" = collections.OrderedDict()
        self._early_boxes: "collections.OrderedDict[int, np.ndarray]" = collections.OrderedDict()
        self._index = 0
        self.restarts = 0
        self.dropped = 0

    def __len__(self) -> int:
        raise TypeError("a topic source is endless")

    # -- producer side ---------------------------------------------------------------------
    def put(self, t_us: int, image, box=None) -> Optional[str]:
        """Queue one frame (``image``: (H, W) uint8 or float in [0, 1]).  Returns None, or a
        text naming why the frame was refused or what was dropped to make room."""
        img = np.asarray(image)
        if img.ndim != 2 or img.size == 0:
            return f"frame must be a non-empty 2-D grey image, got shape {img.shape}"
        if img.dtype == np.uint8:
            img = img.astype(np.float32) * np.float32(1.0 / 255.0)
        else:
            img = np.asarray(img, dtype=np.float32)
        t_us = int(t_us)
        note = None
        with self._cv:
            if self._closed:
                return "source is closed"
            h, w = img.shape
            if self.width == 0:
                self.width, self.height = w, h
            elif (w, h) != (self.width, self.height):
                return f"frame is {w}x{h}, but this source's frames are {self.width}x{self.height}"
            if self._last_put_t is not None and t_us == self._last_put_t:
                return f"frame stamp {t_us} us repeats the previous frame's"
            self._last_put_t = t_us
            if box is None:
                box = self._early_boxes.pop(t_us, None)
            f = Frame(t_us=t_us, image=img, box=None if box is None else np.asarray(box, np.float32).reshape(4))
            self._recent[t_us] = f
            while len(self._recent) > 4 * self._max:
                self._recent.popitem(last=False)
            if len(self._q) >= self._max:
                self._q.popleft()
                self.dropped += 1
                note = f"frame queue full ({self._max}): dropped the oldest frame ({self.dropped} so far)"
            self._q.append(f)
            self._cv.notify_all()
        return note

    def set_box(self, t_us: int, box) -> None:
        """Attach a ground-truth box (NaN = target absent) to the frame stamped ``t_us``
        (now, or when it arrives)."""
        b = np.asarray(box, np.float32).reshape(4)
        t_us = int(t_us)
        with self._cv:
            f = self._recent.get(t_us)
            if f is not None:
                f.box = b
            else:
                self._early_boxes[t_us] = b
                while len(self._early_boxes) > self._max:
                    self._early_boxes.popitem(last=False)

    def close(self) -> None:
        """Wake and end the consumer; later puts are refused."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    # -- consumer side ---------------------------------------------------------------------
    def wait_ready(self, timeout_s: Optional[float] = None) -> bool:
        """Block until the first frame fixed the size (True) or the source closed/timeout."""
        with self._cv:
            self._cv.wait_for(lambda: self._q or self._closed, timeout=timeout_s)
            return bool(self.width) and not self._closed

    def __iter__(self) -> Iterator[Frame]:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._q or self._closed)
                if self._closed:
                    return
                f = self._q[0]
                if self._last_t is not None and f.t_us < self._last_t:
                    # time went backwards: end this pass, the next one starts with f
                    self._last_t = None
                    self.restarts += 1
                    return
                self._q.popleft()
                self._last_t = f.t_us
                f.index = self._index
                self._index += 1
            yield f
