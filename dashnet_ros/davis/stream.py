"""The simulated DAVIS stream (paper §3.4): time-ordered DVS event batches + APS frames.

Per source frame interval ``[t_k, t_{k+1}]``: both frames are resized to the sensor
size, ``interp_factor`` intermediate frames are interpolated (eq. 13, the FCN, or a
linear blend), and the DVS model (eq. 14 or the per-pixel model) runs through all the
sub-frames.  APS frames are the *non-interpolated* source frames nearest to each APS
instant (``aps_rate_hz``), stamped with that source frame's time on the event clock.

The stream yields :class:`~dashnet_ros.davis.frames.EventBatch` items that tile time
without gaps (``batch_us`` long, like libcaer's 1 ms packets) and
:class:`~dashnet_ros.davis.frames.ApsFrame` items, strictly in time order: a batch
boundary is placed at every APS time stamp, so every event before an APS frame's
``t_us`` is yielded before it and every later event after it.
"""
from __future__ import annotations

import logging
from typing import Callable, Iterator, List, Optional, Union

import cv2
import numpy as np

from ..boxes import interpolate_track
from ..events import concat_events, empty_events
from .dvs import DVSModel, make_dvs
from .frames import ApsFrame, EventBatch, Frame, FrameSource

__all__ = ["DavisSimulator", "linear_blend", "INTERP_FACTORS"]

log = logging.getLogger(__name__)

#: interpolation factors of the paper's Table 1 (intermediate frames per source interval)
INTERP_FACTORS = (0, 1, 3, 7)


def linear_blend(frame_a: np.ndarray, frame_b: np.ndarray, factor: int) -> List[np.ndarray]:
    """``factor`` frames blended linearly between ``frame_a`` and ``frame_b`` (no motion model)."""
    a = np.asarray(frame_a, dtype=np.float32)
    b = np.asarray(frame_b, dtype=np.float32)
    diff = b - a
    out = []
    for j in range(1, factor + 1):
        f = diff * np.float32(j / (factor + 1))
        f += a
        out.append(f)
    return out


#: source rates at or above this use the linear blend under ``interpolator="auto"``: there
#: the FCN gains <= 0.13 dB PSNR over blending (measured on held-out scenes at 1/8 and 1/4
#: frame gaps) for ~14 ms of CPU per 240x180 midpoint, which would make the simulator
#: ~30x slower than real time at x7 on 240 fps video.
AUTO_LINEAR_MIN_FPS = 120.0


def resolve_interpolator(spec, source_fps: float):
    """An interpolator callable from ``spec``: a callable (used as is), ``"fcn"`` (the
    shipped FCN of eq. 13, linear fallback with a warning if it cannot load), ``"linear"``,
    or ``"auto"`` (FCN for sources below :data:`AUTO_LINEAR_MIN_FPS`, linear above)."""
    if callable(spec):
        return spec
    if spec == "linear":
        return linear_blend
    if spec == "fcn":
        return _default_interpolator()
    if spec == "auto":
        return linear_blend if source_fps >= AUTO_LINEAR_MIN_FPS else _default_interpolator()
    raise ValueError(f"interpolator must be 'auto', 'fcn', 'linear' or a callable, got {spec!r}")


def _default_interpolator():
    try:
        from .interpolation import load_default_interpolator
    except ImportError as e:
        log.warning("no FCN interpolator available (%s); using a linear blend", e)
        return linear_blend
    try:
        return load_default_interpolator()
    except Exception as e:  # no trained model, bad file, ...: fall back, say so
        log.warning("could not load the default FCN interpolator (%s); using a linear blend", e)
        return linear_blend


def _callable_name(f) -> str:
    if f is None:
        return "none"
    return getattr(f, "__name__", None) or type(f).__name__


class DavisSimulator:
    """A DAVIS event + APS stream simulated from a :class:`FrameSource` (paper §3.4).

    ``interpolator(frame_a, frame_b, factor) -> list of factor float32 frames``, or a name
    for :func:`resolve_interpolator`: ``"auto"`` (default: the FCN of eq. 13 for sources
    below 120 fps, the linear blend above, where the FCN gains almost nothing at a large
    cost), ``"fcn"`` (None means the same), ``"linear"``.  ``interpolator_name`` tells which
    one runs.
    ``dvs_model`` is a name for :func:`~dashnet_ros.davis.dvs.make_dvs` (with
    ``dvs_params``) or a ready :class:`~dashnet_ros.davis.dvs.DVSModel`.
    """

    def __init__(self, source: FrameSource, *, width: int = 240, height: int = 180,
                 interp_factor: int = 7, interpolator: Union[Callable, str, None] = "auto",
                 dvs_model: Union[str, DVSModel] = "pixel", dvs_params: Optional[dict] = None,
                 aps_rate_hz: float = 30.0, batch_us: int = 1000, seed: int = 0) -> None:
        for name, v in (("width", width), ("height", height)):
            if int(v) != v or v < 1:
                raise ValueError(f"DavisSimulator {name} must be a positive integer, got {v!r}")
        if interp_factor not in INTERP_FACTORS:
            raise ValueError(
                f"interp_factor must be one of {INTERP_FACTORS} (intermediate frames per "
                f"source interval), got {interp_factor!r}"
            )
        if not (float(aps_rate_hz) > 0 and np.isfinite(aps_rate_hz)):
            raise ValueError(f"aps_rate_hz must be > 0, got {aps_rate_hz!r}")
        if int(batch_us) != batch_us or batch_us < 1:
            raise ValueError(f"batch_us must be an integer >= 1 µs, got {batch_us!r}")
        if not (getattr(source, "width", 0) and getattr(source, "height", 0)):
            raise ValueError("the frame source must have a positive width and height")
        self.source = source
        self._w, self._h = int(width), int(height)
        self.interp_factor = int(interp_factor)
        self.aps_rate_hz = float(aps_rate_hz)
        self.batch_us = int(batch_us)
        self.seed = seed
        if isinstance(dvs_model, DVSModel):
            if dvs_params:
                raise ValueError("dvs_params only apply when dvs_model is a model name")
            self.dvs = dvs_model
        else:
            params = dict(dvs_params or {})
            params.setdefault("seed", seed)
            self.dvs = make_dvs(dvs_model, **params)
        if self.interp_factor == 0:
            self.interpolator = None
        else:
            self.interpolator = resolve_interpolator("fcn" if interpolator is None else interpolator,
                                                     float(getattr(source, "fps", 0.0) or 0.0))
        self.interpolator_name = _callable_name(self.interpolator)
        self._gt_cache = None           # (t_us, boxes) in stream pixels, from source.gt_track()
        self._gt_seen_t: List[int] = []
        self._gt_seen_b: List[np.ndarray] = []
        #: counters of the last/current run of :meth:`stream`
        self.stats = {"source_frames": 0, "events": 0, "aps_frames": 0, "batches": 0}

    # -- geometry ------------------------------------------------------------------------
    @property
    def width(self) -> int:
        return self._w

    @property
    def height(self) -> int:
        return self._h

    @property
    def scale_xy(self) -> tuple:
        """``(sx, sy)``: stream pixels per source pixel along x and y."""
        return (self._w / float(self.source.width), self._h / float(self.source.height))

    @property
    def source_fps(self) -> float:
        return float(self.source.fps)

    def _scale_box(self, box) -> np.ndarray:
        sx, sy = self.scale_xy
        return (np.asarray(box, dtype=np.float32).reshape(-1, 4)
                * np.array([sx, sy, sx, sy], np.float32))

    def _resize(self, image) -> np.ndarray:
        img = np.asarray(image, dtype=np.float32)
        if img.ndim != 2:
            raise ValueError(f"source frames must be 2-D luminance images, got shape {img.shape}")
        h, w = img.shape
        if (w, h) != (self.source.width, self.source.height):
            raise ValueError(
                f"source frame is {w}x{h} but the source says {self.source.width}x{self.source.height}"
            )
        if (w, h) == (self._w, self._h):
            return img
        shrink = self._w < w or self._h < h
        return cv2.resize(img, (self._w, self._h),
                          interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)

    # -- ground truth ----------------------------------------------------------------------
    def _gt_track(self):
        if self._gt_cache is None:
            tr = self.source.gt_track()
            if tr is not None:
                t, b = tr
                self._gt_cache = (np.asarray(t, np.int64), self._scale_box(b))
            else:
                self._gt_cache = False
        return self._gt_cache or None

    def gt_at(self, t_us):
        """Ground-truth box(es) ``(x, y, w, h)`` in stream pixels at ``t_us`` (scalar or
        array), linearly interpolated from the source's annotation (``gt_track()``, or the
        boxes of the frames streamed so far).  None when there is no annotation."""
        tr = self._gt_track()
        if tr is None:
            if not self._gt_seen_t:
                return None
            tr = (np.asarray(self._gt_seen_t), np.stack(self._gt_seen_b))
        out = interpolate_track(tr[0], tr[1], t_us)
        return out[0] if np.ndim(t_us) == 0 else out

    # -- the stream ----------------------------------------------------------------------
    def __iter__(self):
        return self.stream()

    def stream(self, progress: Optional[Callable[[int, Optional[int]], None]] = None
               ) -> Iterator[Union[EventBatch, ApsFrame]]:
        """Yield :class:`EventBatch` and :class:`ApsFrame` items in time order.

        ``progress(n_done, n_total)`` is called after each source frame (``n_total`` is
        None for an endless source).
        """
        try:
            n_total = len(self.source)
        except TypeError:
            n_total = None
        self.stats = st = {"source_frames": 0, "events": 0, "aps_frames": 0, "batches": 0}
        self._gt_seen_t, self._gt_seen_b = [], []
        factor = self.interp_factor
        aps_period_us = 1e6 / self.aps_rate_hz
        bu = self.batch_us

        prev: Optional[Frame] = None
        prev_img = None
        t_start = cur_t0 = next_grid = 0
        aps_i = 0
        pend = empty_events()

        def close(t_end: int, cut: bool):
            """Batches with all events ``< t_end`` complete; a boundary at ``t_end`` if cut."""
            nonlocal cur_t0, next_grid, pend
            while next_grid <= t_end:
                i = int(np.searchsorted(pend["t_us"], next_grid, side="left"))
                st["batches"] += 1
                yield EventBatch(cur_t0, next_grid, pend[:i])
                pend = pend[i:]
                cur_t0 = next_grid
                next_grid += bu
            if cut and cur_t0 < t_end:
                i = int(np.searchsorted(pend["t_us"], t_end, side="left"))
                st["batches"] += 1
                yield EventBatch(cur_t0, t_end, pend[:i])
                pend = pend[i:]
                cur_t0 = t_end

        def aps_due(t_k: int, t_next: float) -> bool:
            """Consume the APS instants nearer to frame time ``t_k`` than to ``t_next``."""
            nonlocal aps_i
            mid = 0.5 * (t_k + t_next)
            due = False
            while t_start + aps_i * aps_period_us < mid:
                due = True
                aps_i += 1
            return due

        def aps_frame(frame: Frame, img: np.ndarray) -> ApsFrame:
            st["aps_frames"] += 1
            box = self._scale_box(frame.box)[0] if frame.box is not None else self.gt_at(frame.t_us)
            grey = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
            return ApsFrame(int(frame.t_us), grey, box)

        for frame in self.source:
            img = self._resize(frame.image)
            t = int(frame.t_us)
            if frame.box is not None and self._gt_track() is None:
                self._gt_seen_t.append(t)
                self._gt_seen_b.append(self._scale_box(frame.box)[0])
            if prev is None:
                self.dvs.reset(img, t)
                t_start = cur_t0 = t
                next_grid = t + bu
            else:
                t_prev = int(prev.t_us)
                if t <= t_prev:
                    raise ValueError(
                        f"source frame times must increase: frame {frame.index} at {t} µs "
                        f"follows {t_prev} µs"
                    )
                # the previous frame's APS decision needs this frame's time
                cut = aps_due(t_prev, t)
                yield from close(t_prev, cut)
                if cut:
                    yield aps_frame(prev, prev_img)
                # events of (t_prev, t]: through the sub-frames, then the source frame
                sub_imgs, sub_ts = [], []
                if factor:
                    subs = self.interpolator(prev_img, img, factor)
                    if len(subs) != factor:
                        raise ValueError(
                            f"interpolator {self.interpolator_name} returned {len(subs)} "
                            f"frames, expected {factor}"
                        )
                    span = t - t_prev
                    t_last = t_prev
                    for j, sub in enumerate(subs, 1):
                        tj = t_prev + int(round(j * span / (factor + 1)))
                        if t_last < tj < t:
                            sub_imgs.append(np.asarray(sub, np.float32))
                            sub_ts.append(tj)
                            t_last = tj
                sub_imgs.append(img)
                sub_ts.append(t)
                ev = self.dvs.step_many(sub_imgs, sub_ts)
                if len(ev):
                    pend = concat_events([pend, ev])
                    st["events"] += len(ev)
                yield from close(t, False)
            prev, prev_img = frame, img
            st["source_frames"] += 1
            if progress is not None:
                progress(st["source_frames"], n_total)

        if prev is None:
            return
        t_last_frame = int(prev.t_us)
        # the last frame: APS if an instant falls within half a (nominal) frame of it
        if aps_due(t_last_frame, t_last_frame + self.source.frame_dt_us):
            yield from close(t_last_frame, True)
            yield aps_frame(prev, prev_img)
        yield from close(t_last_frame + 1, True)
