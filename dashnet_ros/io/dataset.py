"""Hybrid (DAVIS) dataset files: one HDF5 file per sequence (the NFS-DAVIS format, §3.4).

A file holds what :class:`dashnet_ros.davis.stream.DavisSimulator` streams for one
sequence, so a tracker can read a file or run the simulator live and see the same items
(:meth:`HybridDataset.stream`).

Layout (``h5py``; times are int64 microseconds on the stream clock, boxes float32
``(x, y, w, h)`` in *stream* pixels)::

    /events/t_us, /events/x, /events/y, /events/p   int64, uint16, uint16, int8  (N_ev,)
                                                    sorted by time; chunked, lzf, appendable
    /events/ms_to_idx   int64 (K,)  index of the first event with t_us >= t0_us + k*1000
    /aps/images         uint8 (N_aps, H, W)
    /aps/t_us           int64 (N_aps,)
    /aps/boxes          float32 (N_aps, 4)   ground truth at each APS frame
    /aps/has_box        uint8 (N_aps,)       0 where the simulator gave no box (ApsFrame.box None)
    /gt/t_us, /gt/boxes             ground truth at every source frame
    /gt_fine/t_us, /gt_fine/boxes   ground truth oversampled at ``gt_fine_factor`` x the frame
                                    rate (absent when the factor is 0)

Root attributes: ``format`` (``"dashnet-hybrid"``), ``format_version``, ``complete``,
``width``, ``height``, ``source`` (description), ``source_fps``, ``scale_xy`` (stream
pixels per source pixel in x and y: ``box_source = box_stream / [sx, sy, sx, sy]``),
``interp_factor``, ``dvs_model``, ``dvs_params`` (JSON), ``aps_rate_hz``, ``batch_us``,
``seed``, ``code_version``, ``config_json`` (all of the above that decide the content, as
canonical JSON), ``t0_us`` / ``t1_us`` (the time the events cover: ``[t0_us, t1_us)``),
``n_events``, ``n_aps``, and the build checkpoint (``ckpt_*``).

Writing (:func:`write_dataset`) streams into ``PATH.partial`` (events are buffered for at
most ``checkpoint_s`` seconds of work, never the whole sequence) and renames it to
``PATH`` with :func:`os.replace` once complete, so ``PATH`` only ever exists complete.

Resuming: at a source-frame boundary (the stream has passed a source frame's time) the
writer may *checkpoint*: write the buffered items, flush, then record in the attributes how
many stream items are in the file (``ckpt_items``), the stream time reached (``ckpt_t_us``)
and the dataset lengths.  A later build with the same configuration opens the ``.partial``,
truncates every dataset to the checkpoint (dropping anything written after it), restarts
the simulator from the beginning — it is deterministic for a given seed and configuration
— and skips the first ``ckpt_items`` items, checking that they hold exactly the
checkpointed number of events and APS frames and end at ``ckpt_t_us``.  If they do not (the
code or inputs changed), or the configuration differs, or the ``.partial`` is unreadable,
it is discarded and the sequence is rebuilt from scratch.  The skipped part is simulated
again (simulation is deterministic, not free), but nothing is written twice.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Union

import h5py
import numpy as np

from .. import __version__
from ..davis.frames import ApsFrame, EventBatch
from ..events import EVENT_DTYPE, empty_events, slice_time

log = logging.getLogger(__name__)

FORMAT = "dashnet-hybrid"
FORMAT_VERSION = 1
#: time step of the ``/events/ms_to_idx`` index
INDEX_DT_US = 1000
#: events per HDF5 chunk
EVENT_CHUNK = 1 << 16
#: default oversampling of ``/gt_fine`` relative to the source frame rate
GT_FINE_FACTOR = 8
PARTIAL_SUFFIX = ".partial"
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"

_EV_FIELDS = (("t_us", np.int64), ("x", np.uint16), ("y", np.uint16), ("p", np.int8))
_REQUIRED = ("events/t_us", "events/x", "events/y", "events/p", "events/ms_to_idx",
             "aps/images", "aps/t_us", "aps/boxes", "aps/has_box", "gt/t_us", "gt/boxes")

Progress = Union[Callable[[int, Optional[int]], object], object, None]


# ----------------------------------------------------------------------------- config


def _jsonable(v):
    """A JSON-safe copy of ``v`` (numpy scalars/arrays, tuples, nested dicts; objects by
    class name so that the text is stable between runs)."""
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return _jsonable(v.tolist())
    if isinstance(v, np.generic):
        return v.item()
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    return type(v).__name__


def _scale_pair(s) -> list:
    if s is None:
        return [1.0, 1.0]
    a = np.atleast_1d(np.asarray(s, dtype=np.float64)).ravel()
    if a.size == 1:
        a = np.repeat(a, 2)
    return [float(a[0]), float(a[1])]


def simulator_config(simulator) -> dict:
    """What decides a simulator's output: its ``config`` (dict or method) when it has one,
    else the constructor arguments read back from its attributes."""
    cfg = getattr(simulator, "config", None)
    if callable(cfg):
        cfg = cfg()
    if isinstance(cfg, dict):
        return _jsonable(cfg)
    out = {}
    for name in ("width", "height", "interp_factor", "dvs_model", "dvs_params", "aps_rate_hz",
                 "batch_us", "seed"):
        out[name] = getattr(simulator, name, None)
    dvs = getattr(simulator, "dvs", None)
    if out["dvs_model"] is None and dvs is not None:
        out["dvs_model"] = getattr(dvs, "name", type(dvs).__name__)
    if not isinstance(out["dvs_model"], (str, type(None))):   # a model object
        obj = out["dvs_model"]
        out["dvs_model"] = getattr(obj, "name", type(obj).__name__)
        if out["dvs_params"] is None:
            out["dvs_params"] = getattr(obj, "params", None)
    if out["dvs_params"] is None and dvs is not None:
        out["dvs_params"] = getattr(dvs, "params", None)
    interp = getattr(simulator, "interpolator", None)
    name = getattr(simulator, "interpolator_name", None)
    out["interpolator"] = name if isinstance(name, str) else (
        None if interp is None else getattr(interp, "__name__", type(interp).__name__))
    return _jsonable(out)


def dataset_config_json(simulator, *, source_desc: Optional[str] = None,
                        duration_us: Optional[int] = None, gt_fine_factor: int = GT_FINE_FACTOR,
                        extra: Optional[dict] = None) -> str:
    """The canonical JSON of everything that decides a dataset file's content (stored as
    the ``config_json`` attribute; a build resumes or skips only when it is equal)."""
    sim_cfg = simulator_config(simulator)
    config = {"format_version": FORMAT_VERSION, "code_version": _code_version(),
              "source": source_desc if source_desc is not None else describe_source(_source_of(simulator)),
              "source_fps": _source_fps(simulator),
              "width": int(getattr(simulator, "width", None) or sim_cfg.get("width")),
              "height": int(getattr(simulator, "height", None) or sim_cfg.get("height")),
              "scale_xy": _scale_pair(getattr(simulator, "scale_xy", None)),
              "simulator": sim_cfg, "duration_us": duration_us,
              "gt_fine_factor": int(gt_fine_factor)}
    if extra:
        config["extra"] = extra
    return json.dumps(_jsonable(config), sort_keys=True)


def _source_of(simulator):
    return getattr(simulator, "source", None)


def describe_source(source) -> str:
    """A short description of a frame source for the ``source`` attribute."""
    if source is None:
        return "unknown"
    d = getattr(source, "description", None)
    if callable(d):
        d = d()
    if isinstance(d, str) and d:
        return d
    for name in ("seq_dir", "path", "name"):
        v = getattr(source, name, None)
        if isinstance(v, (str, os.PathLike)):
            return f"{type(source).__name__}({os.fspath(v)})"
    return type(source).__name__


def _source_fps(simulator) -> float:
    src = _source_of(simulator)
    fps = getattr(src, "fps", None) if src is not None else None
    if fps is None:
        fps = getattr(simulator, "source_fps", None)
    if fps is None or not float(fps) > 0:
        raise ValueError(f"cannot tell the source frame rate of {type(simulator).__name__} "
                         f"(its source has no positive .fps)")
    return float(fps)


def _code_version() -> str:
    return f"dashnet_ros {__version__} format {FORMAT_VERSION}"


# ----------------------------------------------------------------------------- progress


def _report(progress, done: int, total: Optional[int]) -> None:
    if progress is None:
        return
    if hasattr(progress, "update") and hasattr(progress, "n"):   # a tqdm bar
        if total is not None and progress.total != total:
            progress.total = total
            if hasattr(progress, "refresh"):
                progress.refresh()
        if done > progress.n:
            progress.update(done - progress.n)
    else:
        progress(done, total)


# ----------------------------------------------------------------------------- writer


@dataclass
class BuildResult:
    """What :func:`write_dataset` did."""

    path: str
    n_events: int
    n_aps: int
    t0_us: int
    t1_us: int
    #: stream time the build resumed from (None: built from the start)
    resumed_from_us: Optional[int] = None
    #: stream items skipped (re-simulated but not written) when resuming
    skipped_items: int = 0


class _Mismatch(Exception):
    """The re-simulated stream does not reproduce the checkpoint."""


def _create_layout(f: h5py.File, width: int, height: int, gt_fine: bool) -> None:
    ev = f.create_group("events")
    for name, dt in _EV_FIELDS:
        ev.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dt, chunks=(EVENT_CHUNK,),
                          compression="lzf", shuffle=True)
    ev.create_dataset("ms_to_idx", shape=(0,), maxshape=(None,), dtype=np.int64,
                      chunks=(4096,), compression="lzf")
    ev["ms_to_idx"].attrs["dt_us"] = INDEX_DT_US
    aps = f.create_group("aps")
    aps.create_dataset("images", shape=(0, height, width), maxshape=(None, height, width),
                       dtype=np.uint8, chunks=(1, height, width), compression="lzf")
    aps.create_dataset("t_us", shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(1024,))
    aps.create_dataset("boxes", shape=(0, 4), maxshape=(None, 4), dtype=np.float32,
                       chunks=(1024, 4))
    aps.create_dataset("has_box", shape=(0,), maxshape=(None,), dtype=np.uint8, chunks=(1024,))


def _append(ds: h5py.Dataset, data: np.ndarray) -> None:
    n = ds.shape[0]
    if len(data) == 0:
        return
    ds.resize(n + len(data), axis=0)
    ds[n:] = data


class _Writer:
    """Buffers stream items and writes them to an open ``.partial`` file."""

    def __init__(self, f: h5py.File, width: int, height: int):
        self.f = f
        self.width, self.height = width, height
        a = f.attrs
        self.n_items = int(a.get("ckpt_items", 0))
        self.n_events = int(a.get("ckpt_n_events", 0))
        self.n_aps = int(a.get("ckpt_n_aps", 0))
        self.n_index = int(a.get("ckpt_n_index", 0))
        self.t_reached = int(a.get("ckpt_t_us", 0))
        self.t0_us = int(a["ckpt_t0_us"]) if "ckpt_t0_us" in a else None
        self.frames_done = int(a.get("ckpt_frames", 0))
        # truncate to the checkpoint: drops whatever was written after it
        for name, _ in _EV_FIELDS:
            f["events"][name].resize(self.n_events, axis=0)
        f["events/ms_to_idx"].resize(self.n_index, axis=0)
        for name in ("images", "t_us", "boxes", "has_box"):
            f["aps"][name].resize(self.n_aps, axis=0)
        self.last_t1 = int(a.get("ckpt_last_t1", self.t_reached)) if self.n_items else None
        self.pending_ev: list = []
        self.pending_idx: list = []
        self.pending_aps: list = []
        self.pend_items = 0
        self.pend_events = 0
        self.mark = None   # pending state at the last source-frame boundary

    # -- items --------------------------------------------------------------------------

    def add_batch(self, b: EventBatch) -> None:
        t0, t1 = int(b.t0_us), int(b.t1_us)
        ev = np.asarray(b.events)
        if ev.dtype.names is None or not {"t_us", "x", "y", "p"} <= set(ev.dtype.names):
            raise ValueError(f"EventBatch.events must be an event array (EVENT_DTYPE), got {ev.dtype}")
        if t1 < t0:
            raise ValueError(f"EventBatch with t1_us={t1} < t0_us={t0}")
        if self.last_t1 is not None and t0 < self.last_t1:
            raise ValueError(f"EventBatch [{t0}, {t1}) overlaps the previous batch ending at "
                             f"{self.last_t1} (the stream must be in time order)")
        if len(ev):
            t = ev["t_us"]
            if np.any(np.diff(t) < 0):
                raise ValueError(f"events of the batch [{t0}, {t1}) are not sorted by time")
            if t[0] < t0 or t[-1] >= t1:
                raise ValueError(f"batch [{t0}, {t1}) holds events at {int(t[0])}..{int(t[-1])} "
                                 f"outside its interval")
        if self.t0_us is None:
            self.t0_us = t0
        # index entries ms_to_idx[k] (= events before t0_us + k*dt) that are now final
        k1 = (t1 - self.t0_us) // INDEX_DT_US   # last k with t0_us + k*dt <= t1
        k0 = self.n_index + len(self.pending_idx)
        if k1 >= k0:
            edges = self.t0_us + np.arange(k0, k1 + 1, dtype=np.int64) * INDEX_DT_US
            before = self.n_events + self.pend_events
            self.pending_idx.extend((before + np.searchsorted(ev["t_us"], edges, "left")).tolist())
        if len(ev):
            self.pending_ev.append(ev)
            self.pend_events += len(ev)
        self.last_t1 = t1
        self.t_reached = max(self.t_reached, t1)
        self.pend_items += 1

    def add_aps(self, a: ApsFrame) -> None:
        img = np.asarray(a.image)
        if img.shape != (self.height, self.width):
            raise ValueError(f"APS frame of shape {img.shape}, expected {(self.height, self.width)}")
        if img.dtype != np.uint8:
            raise ValueError(f"APS frame image must be uint8, got {img.dtype}")
        box = np.full(4, np.nan, np.float32) if a.box is None else np.asarray(a.box, np.float32).reshape(4)
        self.pending_aps.append((int(a.t_us), img, box, a.box is not None))
        self.t_reached = max(self.t_reached, int(a.t_us))
        self.pend_items += 1

    # -- checkpoints --------------------------------------------------------------------

    def mark_boundary(self, frames_done: int) -> None:
        """Everything pending so far ends at a source-frame boundary."""
        self.mark = (len(self.pending_ev), len(self.pending_idx), len(self.pending_aps),
                     self.pend_items, self.pend_events, self.t_reached, frames_done,
                     self.last_t1)

    @property
    def pending_size(self) -> int:
        return self.pend_events + 50_000 * len(self.pending_aps)

    def commit(self, whole: bool = False) -> None:
        """Write pending items up to the last boundary (or all of them with ``whole``),
        flush, then record the checkpoint."""
        if whole:
            m = (len(self.pending_ev), len(self.pending_idx), len(self.pending_aps),
                 self.pend_items, self.pend_events, self.t_reached, self.frames_done,
                 self.last_t1)
        elif self.mark is None:
            return
        else:
            m = self.mark
        n_ev_chunks, n_idx, n_aps, n_items, n_events, t_reached, frames, last_t1 = m
        f = self.f
        if n_ev_chunks:
            ev = np.concatenate(self.pending_ev[:n_ev_chunks])
            for name, _ in _EV_FIELDS:
                _append(f["events"][name], ev[name])
        if n_idx:
            _append(f["events/ms_to_idx"], np.asarray(self.pending_idx[:n_idx], np.int64))
        if n_aps:
            items = self.pending_aps[:n_aps]
            _append(f["aps/t_us"], np.array([i[0] for i in items], np.int64))
            _append(f["aps/images"], np.stack([i[1] for i in items]))
            _append(f["aps/boxes"], np.stack([i[2] for i in items]))
            _append(f["aps/has_box"], np.array([i[3] for i in items], np.uint8))
        f.flush()
        self.n_items += n_items
        self.n_events += n_events
        self.n_aps += n_aps
        self.n_index += n_idx
        a = f.attrs
        a["ckpt_items"] = self.n_items
        a["ckpt_n_events"] = self.n_events
        a["ckpt_n_aps"] = self.n_aps
        a["ckpt_n_index"] = self.n_index
        a["ckpt_t_us"] = t_reached
        a["ckpt_frames"] = frames
        if last_t1 is not None:
            a["ckpt_last_t1"] = last_t1
        if self.t0_us is not None:
            a["ckpt_t0_us"] = self.t0_us
        f.flush()
        del self.pending_ev[:n_ev_chunks], self.pending_idx[:n_idx], self.pending_aps[:n_aps]
        self.pend_items -= n_items
        self.pend_events -= n_events
        self.mark = None


def _frame_grid_times(simulator, fps: float):
    """Source frame times from the source's ground truth, or None (then a regular grid)."""
    src = _source_of(simulator)
    gt = src.gt_track() if src is not None and hasattr(src, "gt_track") else None
    if gt is None:
        return None
    t = np.asarray(gt[0], dtype=np.int64).ravel()
    return t if len(t) else None


def _n_source_frames(simulator, duration_us: Optional[int], fps: float) -> Optional[int]:
    src = _source_of(simulator)
    n = None
    try:
        n = len(src) if src is not None else None
    except TypeError:
        n = None
    if duration_us is not None:
        nd = int(math.ceil(duration_us * fps / 1e6))
        n = nd if n is None else min(n, nd)
    return n


def _open_partial(partial: str, config_json: str):
    """Open an existing ``.partial`` for resuming, or None (reason logged) if it can't be."""
    try:
        f = h5py.File(partial, "a")
    except OSError as e:
        log.warning("%s is unreadable (%s); rebuilding from the start", partial, e)
        return None
    try:
        a = f.attrs
        ok = a.get("format") == FORMAT and a.get("config_json") == config_json
        missing = [n for n in _REQUIRED[:9] if n not in f]
        if not ok or missing:
            log.warning("%s was made with another configuration; rebuilding from the start", partial)
            f.close()
            return None
        return f
    except Exception:
        f.close()
        raise


def write_dataset(path, simulator, progress: Progress = None, resume: bool = True, *,
                  source_desc: Optional[str] = None, duration_us: Optional[int] = None,
                  gt_fine_factor: int = GT_FINE_FACTOR, checkpoint_s: float = 2.0,
                  extra_config: Optional[dict] = None) -> BuildResult:
    """Simulate ``simulator`` into the hybrid dataset file ``path`` (see module docstring).

    ``progress``: callable(n_done, n_total) or a tqdm bar, advanced per source frame
    (``n_total`` None for an endless source).  ``resume``: continue a ``path.partial`` with
    the same configuration instead of starting over.  ``duration_us``: stop after this much
    stream time (required for endless sources).  ``gt_fine_factor``: oversampling of
    ``/gt_fine`` (0: none).  ``checkpoint_s``: wall time between checkpoints (0: at every
    source frame).  ``extra_config``: more JSON-able settings that decide the content (e.g.
    the interpolator's weights), recorded and compared on resume.  Returns a
    :class:`BuildResult`.
    """
    path = os.fspath(path)
    partial = path + PARTIAL_SUFFIX
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"output directory {parent} does not exist (create it first)")
    if duration_us is not None and not duration_us > 0:
        raise ValueError(f"duration_us must be > 0, got {duration_us}")
    if int(gt_fine_factor) != gt_fine_factor or gt_fine_factor < 0:
        raise ValueError(f"gt_fine_factor must be a non-negative integer, got {gt_fine_factor}")
    gt_fine_factor = int(gt_fine_factor)
    src = _source_of(simulator)
    fps = _source_fps(simulator)
    sim_cfg = simulator_config(simulator)
    width = int(getattr(simulator, "width", None) or sim_cfg.get("width"))
    height = int(getattr(simulator, "height", None) or sim_cfg.get("height"))
    scale_xy = _scale_pair(getattr(simulator, "scale_xy", None))
    desc = source_desc if source_desc is not None else describe_source(src)
    if duration_us is None:
        try:
            len(src)
        except TypeError:
            raise ValueError(f"source {desc} is endless: give a duration (duration_us / "
                             f"--duration-s)") from None
    config_json = dataset_config_json(simulator, source_desc=desc, duration_us=duration_us,
                                      gt_fine_factor=gt_fine_factor, extra=extra_config)

    f = None
    if resume and os.path.exists(partial):
        f = _open_partial(partial, config_json)
    if f is None:
        if os.path.exists(partial):
            os.remove(partial)
        f = h5py.File(partial, "w")
        a = f.attrs
        a["format"] = FORMAT
        a["format_version"] = FORMAT_VERSION
        a["complete"] = False
        a["config_json"] = config_json
        a["code_version"] = _code_version()
        a["width"], a["height"] = width, height
        a["source"] = desc
        a["source_fps"] = fps
        a["scale_xy"] = np.asarray(scale_xy, np.float64)
        for k in ("interp_factor", "aps_rate_hz", "batch_us", "seed"):
            v = sim_cfg.get(k)
            if v is not None:
                a[k] = v
        a["dvs_model"] = str(sim_cfg.get("dvs_model"))
        a["dvs_params"] = json.dumps(sim_cfg.get("dvs_params"), sort_keys=True)
        a["interpolator"] = str(sim_cfg.get("interpolator"))
        a["gt_fine_factor"] = gt_fine_factor
        if duration_us is not None:
            a["duration_us"] = int(duration_us)
        if extra_config:
            a["extra_config"] = json.dumps(_jsonable(extra_config), sort_keys=True)
        _create_layout(f, width, height, gt_fine_factor > 0)
        f.flush()
    try:
        with f:
            if bool(f.attrs.get("complete", False)):
                res = _result_from(f, path)
            else:
                res = _build(f, path, simulator, progress, fps, duration_us, gt_fine_factor,
                             checkpoint_s)
    except _Mismatch as e:
        # A simulator (or frame source) may be usable only once, so no automatic rebuild.
        os.remove(partial)
        raise RuntimeError(f"{partial}: {e} (the code or the input changed since it was "
                           f"started); discarded it: run the build again to start over") from None
    os.replace(partial, path)
    return res


def _result_from(f: h5py.File, path: str, resumed=None, skipped=0) -> BuildResult:
    a = f.attrs
    return BuildResult(path=path, n_events=int(a["n_events"]), n_aps=int(a["n_aps"]),
                       t0_us=int(a["t0_us"]), t1_us=int(a["t1_us"]), resumed_from_us=resumed,
                       skipped_items=skipped)


class _GtCollector:
    """Ground truth at the source frames (and ``factor`` x oversampled): the times are
    taken as the stream passes them, the boxes computed in batches from the source's exact
    ``box_at`` when it has one (procedural scenes), else ``simulator.gt_at``."""

    def __init__(self, simulator, frame_t, fps: float, factor: int, n_total: Optional[int]):
        self.gt_at = getattr(simulator, "gt_at", None)
        src = _source_of(simulator)
        # a source with an exact box at any time (procedural scenes) beats interpolation
        self.exact = getattr(src, "box_at", None) if src is not None else None
        sx, sy = _scale_pair(getattr(simulator, "scale_xy", None))
        self.scale = np.array([sx, sy, sx, sy], np.float32)
        self.frame_t, self.fps, self.factor, self.n_total = frame_t, fps, factor, n_total
        self.t, self.boxes, self.tf, self.bf = [], [], [], []
        self.k0 = None
        self.any = False

    def _boxes(self, times: list) -> np.ndarray:
        """Boxes (N, 4) at ``times``: one vectorised call where the source/simulator takes
        arrays, else one call per time; NaN rows where there is no ground truth."""
        n = len(times)
        if n == 0:
            return np.zeros((0, 4), np.float32)
        t = np.asarray(times, np.int64)
        if self.exact is not None:
            b = np.asarray(self.exact(t), np.float32).reshape(n, 4) * self.scale
            self.any = True
            return b
        if self.gt_at is None:
            return np.full((n, 4), np.nan, np.float32)
        try:
            b = self.gt_at(t)
        except (TypeError, ValueError):
            b = None
        if b is not None and np.shape(b) == (n, 4):
            self.any = True
            return np.asarray(b, np.float32)
        out = np.full((n, 4), np.nan, np.float32)
        for i, ti in enumerate(t):
            bi = self.gt_at(int(ti))
            if bi is not None:
                out[i] = np.asarray(bi, np.float32).reshape(4)
                self.any = True
        return out

    def _coarse_time(self, k: int, t0_us: int) -> Optional[int]:
        if self.frame_t is not None:
            if self.k0 is None:   # source frames before the stream starts are left out
                self.k0 = int(np.searchsorted(self.frame_t, t0_us, side="left"))
            k += self.k0
            return int(self.frame_t[k]) if k < len(self.frame_t) else None
        if self.n_total is not None and k >= self.n_total:
            return None
        return t0_us + int(round(k * 1e6 / self.fps))

    def advance(self, t0_us: int, t_us: int) -> None:
        """Add every row with ``t0_us <= time <= t_us``."""
        new = []
        while True:
            tk = self._coarse_time(len(self.t) + len(new), t0_us)
            if tk is None or tk > t_us:
                break
            new.append(tk)
        if new:
            self.t.extend(new)
        if self.factor > 0 and self.t:
            step = 1e6 / (self.fps * self.factor)
            new = []
            while True:   # fine rows up to the last coarse row
                tj = self.t[0] + int(round((len(self.tf) + len(new)) * step))
                if tj > self.t[-1]:
                    break
                new.append(tj)
            if new:
                self.tf.extend(new)
        if len(self.tf) - len(self.bf) + len(self.t) - len(self.boxes) >= 1024:
            self._evaluate()

    def _evaluate(self) -> None:
        """Boxes of the rows added since the last call (batched: box_at/gt_at take arrays)."""
        self.boxes.extend(self._boxes(self.t[len(self.boxes):]))
        self.bf.extend(self._boxes(self.tf[len(self.bf):]))

    def write(self, f: h5py.File) -> None:
        self._evaluate()
        for name in ("gt", "gt_fine"):
            if name in f:
                del f[name]
        g = f.create_group("gt")
        g.create_dataset("t_us", data=np.asarray(self.t, np.int64).reshape(-1))
        g.create_dataset("boxes", data=np.asarray(self.boxes, np.float32).reshape(-1, 4))
        f.attrs["has_gt"] = bool(self.any)
        if self.factor > 0 and self.any and self.t:
            g = f.create_group("gt_fine")
            g.create_dataset("t_us", data=np.asarray(self.tf, np.int64).reshape(-1),
                             compression="lzf", chunks=True)
            g.create_dataset("boxes", data=np.asarray(self.bf, np.float32).reshape(-1, 4),
                             compression="lzf", chunks=True)
            g.attrs["factor"] = self.factor


def _build(f, path, simulator, progress, fps, duration_us, gt_fine_factor, checkpoint_s):
    a = f.attrs
    w = _Writer(f, int(a["width"]), int(a["height"]))
    frame_t = _frame_grid_times(simulator, fps)
    n_total = _n_source_frames(simulator, duration_us, fps)
    if frame_t is not None and n_total is not None:
        frame_t = frame_t[:n_total]
    gt = _GtCollector(simulator, frame_t, fps, gt_fine_factor, n_total)

    def frames_passed(t_us: int) -> int:
        """Source frames whose time is <= t_us."""
        if frame_t is not None:
            return int(np.searchsorted(frame_t, t_us, side="right"))
        return int(math.floor((t_us - (w.t0_us or 0)) * fps / 1e6)) + 1

    skip = w.n_items
    resumed = w.t_reached if skip else None
    ck = (w.n_items, w.n_events, w.n_aps, w.t_reached)
    seen = [0, 0, 0, 0]   # items, events, aps, t reached while skipping
    end_us = None
    if w.t0_us is not None and duration_us is not None:
        end_us = w.t0_us + int(duration_us)
    last_ckpt = time.monotonic()
    _report(progress, w.frames_done, n_total)
    stream = simulator.stream()
    try:
        for item in stream:
            if seen[0] < skip:   # the re-simulated part already in the file: check, don't write
                seen[0] += 1
                if isinstance(item, EventBatch):
                    seen[1] += len(item.events)
                    seen[3] = max(seen[3], int(item.t1_us))
                    gt.advance(w.t0_us, int(item.t1_us))
                elif isinstance(item, ApsFrame) and (end_us is None or item.t_us < end_us):
                    seen[2] += 1
                    seen[3] = max(seen[3], int(item.t_us))
                if seen[0] == skip and tuple(seen) != ck:
                    raise _Mismatch(f"re-simulating gave {seen[1]} events / {seen[2]} APS frames "
                                    f"up to t={seen[3]} us where the checkpoint has {ck[1]} / "
                                    f"{ck[2]} up to t={ck[3]} us")
                continue
            if isinstance(item, EventBatch):
                if w.t0_us is None:
                    w.t0_us = int(item.t0_us)
                    if duration_us is not None:
                        end_us = w.t0_us + int(duration_us)
                if end_us is not None:
                    if item.t0_us >= end_us:
                        break
                    if item.t1_us > end_us:
                        item = EventBatch(int(item.t0_us), end_us,
                                          slice_time(item.events, item.t0_us, end_us))
                w.add_batch(item)
                gt.advance(w.t0_us, w.last_t1)
                done = frames_passed(w.last_t1)
                if n_total is not None:
                    done = min(done, n_total)
                if done > w.frames_done:
                    w.frames_done = done
                    w.mark_boundary(done)
                    now = time.monotonic()
                    if now - last_ckpt >= checkpoint_s or w.pending_size > 4_000_000:
                        w.commit()
                        last_ckpt = now
                    _report(progress, done, n_total)
                if end_us is not None and w.last_t1 >= end_us:
                    break
            elif isinstance(item, ApsFrame):
                if end_us is not None and item.t_us >= end_us:
                    w.pend_items += 1   # consumed, not recorded (past the end)
                    continue
                w.add_aps(item)
            else:
                raise TypeError(f"simulator stream yielded {type(item).__name__}, expected "
                                f"EventBatch or ApsFrame")
    except BaseException:
        # keep what is complete up to the last source-frame boundary (best effort)
        if w.mark is not None and f.id.valid:
            try:
                w.commit()
            except Exception:  # noqa: BLE001 - the original error matters more
                pass
        raise
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
    if seen[0] < skip:
        raise _Mismatch(f"the re-simulated stream ended after {seen[0]} items, before the "
                        f"checkpoint at {skip}")
    w.commit(whole=True)
    if w.t0_us is None:
        raise ValueError("the simulator produced no event batches")
    t0_us, t1_us = w.t0_us, w.last_t1
    gt.advance(t0_us, t1_us)
    gt.write(f)
    a["t0_us"], a["t1_us"] = t0_us, t1_us
    a["n_events"], a["n_aps"] = w.n_events, w.n_aps
    a["complete"] = True
    f.flush()
    _report(progress, n_total if n_total is not None else w.frames_done, n_total)
    return _result_from(f, path, resumed, skip)


# ----------------------------------------------------------------------------- reader


class DatasetError(ValueError):
    """A dataset file that cannot be used (names the file and what is wrong)."""


class ApsFrames(Sequence):
    """The APS frames of a dataset: ``len``, indexing (-> :class:`ApsFrame`), ``t_us``."""

    def __init__(self, group: h5py.Group):
        self._images = group["images"]
        self.t_us = group["t_us"][:]
        self._boxes = group["boxes"][:]
        self._has = group["has_box"][:].astype(bool)

    def __len__(self) -> int:
        return len(self.t_us)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"APS frame {i} out of range 0..{len(self) - 1}")
        return ApsFrame(t_us=int(self.t_us[i]), image=self._images[i],
                        box=self._boxes[i].copy() if self._has[i] else None)

    def index_at(self, t_us: int) -> int:
        """Index of the last APS frame at or before ``t_us`` (-1 if none)."""
        return int(np.searchsorted(self.t_us, t_us, side="right")) - 1


class HybridDataset:
    """Reader of one hybrid dataset file written by :func:`write_dataset`.

    Refuses (:class:`DatasetError`, a ValueError) a file that is incomplete, truncated or
    not a dashnet hybrid dataset, naming the file and the problem; FileNotFoundError if it
    does not exist.  Use as a context manager or call :meth:`close`.
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self._f = _open_checked(self.path)
        try:
            self._init()
        except Exception:
            self._f.close()
            raise

    def _init(self) -> None:
        f, a = self._f, self._f.attrs
        self.width = int(a["width"])
        self.height = int(a["height"])
        self.scale_xy = tuple(float(v) for v in np.atleast_1d(a["scale_xy"]))
        self.source = str(a.get("source", ""))
        self.source_fps = float(a["source_fps"])
        self.t0_us = int(a["t0_us"])
        self.t1_us = int(a["t1_us"])
        self.n_events = int(a["n_events"])
        self.config_json = str(a["config_json"])
        self.config = json.loads(self.config_json)
        self.has_gt = bool(a.get("has_gt", False))
        ev = f["events"]
        self._ev = {name: ev[name] for name, _ in _EV_FIELDS}
        self._index = ev["ms_to_idx"][:]
        self.aps = ApsFrames(f["aps"])

    @property
    def duration_us(self) -> int:
        return self.t1_us - self.t0_us

    @property
    def attrs(self) -> dict:
        return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in self._f.attrs.items()}

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return (f"HybridDataset({self.path!r}: {self.width}x{self.height}, "
                f"{self.duration_us / 1e6:.3f} s, {self.n_events} events, {len(self.aps)} APS)")

    # -- events -------------------------------------------------------------------------

    def _index_range(self, t0_us: int, t1_us: int):
        """Event index bounds [i0, i1) certainly containing [t0_us, t1_us)."""
        k = len(self._index)
        ka = (t0_us - self.t0_us) // INDEX_DT_US
        kb = -((self.t0_us - t1_us) // INDEX_DT_US)   # ceil
        i0 = int(self._index[ka]) if 0 <= ka < k else (0 if ka < 0 else self.n_events)
        i1 = int(self._index[kb]) if 0 <= kb < k else (0 if kb < 0 else self.n_events)
        return i0, max(i0, i1)

    def _read(self, i0: int, i1: int) -> np.ndarray:
        ev = np.empty(i1 - i0, dtype=EVENT_DTYPE)
        for name, _ in _EV_FIELDS:
            ev[name] = self._ev[name][i0:i1]
        return ev

    def events_between(self, t0_us: int, t1_us: int) -> np.ndarray:
        """Events with ``t0_us <= t_us < t1_us`` (EVENT_DTYPE, sorted)."""
        t0_us, t1_us = int(t0_us), int(t1_us)
        if t1_us <= t0_us or self.n_events == 0:
            return empty_events()
        i0, i1 = self._index_range(t0_us, t1_us)
        if i1 <= i0:
            return empty_events()
        t = self._ev["t_us"][i0:i1]
        a, b = np.searchsorted(t, [t0_us, t1_us], side="left")
        return self._read(i0 + int(a), i0 + int(b))

    # -- stream -------------------------------------------------------------------------

    def stream(self, batch_us: int = 1000, *,
               block_us: int = 100_000) -> Iterator[Union[EventBatch, ApsFrame]]:
        """The recorded DAVIS stream, as :class:`~dashnet_ros.davis.stream.DavisSimulator`
        yields it: :class:`EventBatch` items tiling ``[t0_us, t1_us)`` on a ``batch_us``
        grid from ``t0_us``, with an extra boundary at every APS time stamp, and each
        :class:`ApsFrame` after every event before its ``t_us`` and before every later one.
        With the simulator's ``batch_us`` the items are identical to the live stream.
        Events are read from the file ``block_us`` at a time."""
        batch_us = int(batch_us)
        if batch_us <= 0:
            raise ValueError(f"batch_us must be > 0, got {batch_us}")
        aps_t = self.aps.t_us
        n_aps = len(aps_t)
        ia = 0
        blk_t1 = None
        blk = empty_events()
        cur, grid = self.t0_us, self.t0_us + batch_us
        while cur < self.t1_us:
            while ia < n_aps and aps_t[ia] <= cur:
                yield self.aps[ia]
                ia += 1
            nxt = min(grid, self.t1_us)
            if ia < n_aps and aps_t[ia] < nxt:
                nxt = int(aps_t[ia])
            if blk_t1 is None or nxt > blk_t1:
                blk_t1 = min(cur + max(block_us, batch_us), self.t1_us)
                blk = self.events_between(cur, blk_t1)
            yield EventBatch(cur, nxt, slice_time(blk, cur, nxt))
            cur = nxt
            while grid <= cur:
                grid += batch_us
        while ia < n_aps:
            yield self.aps[ia]
            ia += 1

    # -- ground truth -------------------------------------------------------------------

    def gt_track(self):
        """``(t_us[N], boxes[N, 4])`` ground truth at every source frame (stream pixels;
        NaN rows where the target is absent).  For evaluation only."""
        g = self._f["gt"]
        return g["t_us"][:], g["boxes"][:]

    def gt_fine_track(self):
        """The oversampled ground truth ``(t_us, boxes)``, or None if not stored."""
        if "gt_fine" not in self._f:
            return None
        g = self._f["gt_fine"]
        return g["t_us"][:], g["boxes"][:]

    def initial_box(self) -> np.ndarray:
        """The first ground-truth box (at ``gt_track()[0][0]``): what a tracker is given."""
        t, b = self.gt_track()
        if len(t) == 0 or not np.all(np.isfinite(b[0])):
            raise DatasetError(f"{self.path}: the first ground-truth box is missing, a tracker "
                               f"cannot be initialised from this sequence")
        return b[0].copy()

    def to_source_px(self, boxes) -> np.ndarray:
        """Boxes in stream pixels -> source pixels (divide by ``scale_xy``)."""
        sx, sy = self.scale_xy[0], self.scale_xy[-1]
        return (np.asarray(boxes, np.float32) / np.array([sx, sy, sx, sy], np.float32)).astype(np.float32)


def _open_checked(path: str) -> h5py.File:
    if not os.path.exists(path):
        hint = ""
        if os.path.exists(path + PARTIAL_SUFFIX):
            hint = (f" (an unfinished build {path + PARTIAL_SUFFIX} exists: run "
                    f"`dashnet dataset build` again to resume it)")
        raise FileNotFoundError(f"dataset file {path} does not exist{hint}")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head != HDF5_SIGNATURE:
        what = "empty" if not head else "not an HDF5 file"
        raise DatasetError(f"{path} is not a dashnet hybrid dataset ({what})")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise DatasetError(f"{path} is truncated or corrupt ({e}); delete it and run "
                           f"`dashnet dataset build` again") from None
    try:
        _check_file(f, path)
    except Exception:
        f.close()
        raise
    return f


def _check_file(f: h5py.File, path: str) -> None:
    a = f.attrs
    fmt = a.get("format")
    if isinstance(fmt, bytes):
        fmt = fmt.decode()
    if fmt != FORMAT:
        raise DatasetError(f"{path} is not a dashnet hybrid dataset (a foreign HDF5 file: "
                           f"attribute 'format' is {fmt!r}, expected {FORMAT!r})")
    ver = int(a.get("format_version", -1))
    if ver != FORMAT_VERSION:
        raise DatasetError(f"{path} has format version {ver}; this code reads version "
                           f"{FORMAT_VERSION}: rebuild it with `dashnet dataset build`")
    if not bool(a.get("complete", False)):
        t = int(a.get("ckpt_t_us", 0))
        raise DatasetError(f"{path} is incomplete (its build stopped at t={t / 1e6:.3f} s): run "
                           f"`dashnet dataset build` again to resume it")
    missing = [n for n in _REQUIRED if n not in f]
    for k in ("width", "height", "scale_xy", "source_fps", "t0_us", "t1_us", "n_events",
              "n_aps", "config_json"):
        if k not in a:
            missing.append(f"attribute {k}")
    if missing:
        raise DatasetError(f"{path} is damaged: missing {', '.join(missing)}; delete it and run "
                           f"`dashnet dataset build` again")
    n_ev, n_aps = int(a["n_events"]), int(a["n_aps"])
    H, W = int(a["height"]), int(a["width"])
    problems = []
    for name, _ in _EV_FIELDS:
        if f["events"][name].shape != (n_ev,):
            problems.append(f"/events/{name} has shape {f['events'][name].shape}, expected ({n_ev},)")
    n_idx = (int(a["t1_us"]) - int(a["t0_us"])) // INDEX_DT_US + 1
    if f["events/ms_to_idx"].shape != (n_idx,):
        problems.append(f"/events/ms_to_idx has {f['events/ms_to_idx'].shape[0]} rows, expected {n_idx}")
    if f["aps/images"].shape != (n_aps, H, W):
        problems.append(f"/aps/images has shape {f['aps/images'].shape}, expected {(n_aps, H, W)}")
    for name in ("t_us", "has_box"):
        if f["aps"][name].shape != (n_aps,):
            problems.append(f"/aps/{name} has shape {f['aps'][name].shape}, expected ({n_aps},)")
    if f["aps/boxes"].shape != (n_aps, 4):
        problems.append(f"/aps/boxes has shape {f['aps/boxes'].shape}, expected ({n_aps}, 4)")
    n_gt = f["gt/t_us"].shape[0]
    if f["gt/boxes"].shape != (n_gt, 4):
        problems.append(f"/gt/boxes has shape {f['gt/boxes'].shape}, expected ({n_gt}, 4)")
    if problems:
        raise DatasetError(f"{path} is truncated: " + "; ".join(problems)
                           + "; delete it and run `dashnet dataset build` again")


def dataset_summary(path) -> dict:
    """Numbers for ``dashnet dataset info``: duration, events, event rate, APS, GT coverage."""
    with HybridDataset(path) as ds:
        t, b = ds.gt_track()
        valid = np.all(np.isfinite(b), axis=1) if len(b) else np.zeros(0, bool)
        fine = ds.gt_fine_track()
        dur_s = ds.duration_us / 1e6
        a = ds.attrs
        return {
            "path": ds.path,
            "source": ds.source,
            "size": f"{ds.width}x{ds.height}",
            "scale_xy": ds.scale_xy,
            "source_fps": ds.source_fps,
            "duration_s": dur_s,
            "t0_us": ds.t0_us,
            "t1_us": ds.t1_us,
            "n_events": ds.n_events,
            "event_rate_hz": ds.n_events / dur_s if dur_s > 0 else float("nan"),
            "n_aps": len(ds.aps),
            "aps_rate_hz": (len(ds.aps) - 1) / ((ds.aps.t_us[-1] - ds.aps.t_us[0]) / 1e6)
            if len(ds.aps) > 1 and ds.aps.t_us[-1] > ds.aps.t_us[0] else float("nan"),
            "n_gt": int(len(t)),
            "gt_valid_fraction": float(valid.mean()) if len(valid) else 0.0,
            "gt_span_s": (float(t[-1] - t[0]) / 1e6) if len(t) else 0.0,
            "gt_time_coverage": (float(t[-1] - t[0]) / ds.duration_us) if len(t) and ds.duration_us else 0.0,
            "n_gt_fine": 0 if fine is None else int(len(fine[0])),
            "interp_factor": a.get("interp_factor"),
            "dvs_model": a.get("dvs_model"),
            "dvs_params": a.get("dvs_params"),
            "seed": a.get("seed"),
            "code_version": a.get("code_version"),
            "file_bytes": os.path.getsize(ds.path),
        }
