"""The hybrid tracking pipeline (paper Fig. 2): a DAVIS stream in, timestamped boxes out.

Feed :meth:`HybridTracker.push` the stream items (:class:`~dashnet_ros.davis.frames.EventBatch`
and :class:`~dashnet_ros.davis.frames.ApsFrame`) in time order, as the simulator, a recording
reader, a dataset file or the ROS nodes deliver them; it returns the new outputs:

- ``snn``: one box per SNN window of ``window_us`` (δt), stamped at the window's end,
  computed from the events binned over a search window around the reference box
  (eq. 1-4);
- ``ann``: one box per APS frame, stamped at the frame time (eq. 5-6), its attention
  channel made from the latest fused box before the frame (eq. 10-11);
- ``fused``: for every SNN output, the TCF blend with the nearest available ANN output
  (eq. 7-9).

Modes (the paper's Table 2 rows): ``hybrid`` (everything above; its ``snn`` stream is
SNN-hybrid, its ``fused`` stream Hybrid-AT), ``snn-origin`` (the SNN alone, re-centred on
its own outputs), ``ann`` (ANN-AT alone, attention from its own previous box), ``ann-nat``
(the ANN without attention channel).  Every mode is initialised with one box only
(:meth:`HybridTracker.init`); nothing else about the target is ever given to it.

The same object runs offline (``dashnet track``, ``dashnet eval``) and inside the ROS nodes,
which call :class:`SNNRunner`, :class:`ANNRunner` and :class:`~dashnet_ros.fusion.tcf.TCF`
separately (one per node).
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
import torch

from .boxes import usable
from .davis.frames import ApsFrame, EventBatch
from .events import concat_events, empty_events
from .fusion.tcf import TCF
from .models.ann import PRESETS as ANN_PRESETS
from .models.ann import ANNPreset, frame_input, unit_float
from .models.arch import SEARCH_MIN_SIDE_PX, full_region, region_norm_to_box, search_region
from .models.checkpoint import load_checkpoint
from .models.snn import PRESETS as SNN_PRESETS
from .models.snn import SNNPreset
from .models.snn import bin_events
from .models.snn_engine import SNNEngine

MODES = ("hybrid", "snn-origin", "ann", "ann-nat")

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")


def default_weights(kind: str, preset: str = "fast") -> str:
    """Path of the shipped weights: ``snn_<preset>.pt``, ``ann_<preset>.pt``, ``ann_nat_<preset>.pt``."""
    return os.path.join(WEIGHTS_DIR, f"{kind}_{preset}.pt")


@dataclass
class TrackOutput:
    """One output: ``source`` is ``'snn'``, ``'ann'`` or ``'fused'``; ``box`` (x, y, w, h)
    float32 in stream pixels (NaN when the tracker has no estimate); ``t_us`` the sensor
    instant the box refers to; ``motion_px`` (SNN boxes) the target's centre displacement
    over the window as the SNN sees it (:func:`snn_motion`), which the TCF uses."""

    t_us: int
    source: str
    box: np.ndarray
    motion_px: Optional[Tuple[float, float]] = None   # SNN: centre displacement over its window


def sane_box(box, width: int, height: int) -> Optional[np.ndarray]:
    """A usable reference box (what the runners re-centre on; the snn_tracker node too): finite, positive size (clamped to [2 px, frame]), centre kept
    within the frame; None otherwise.  (Plain float arithmetic: this runs per SNN window.)"""
    b = np.asarray(box).reshape(4).tolist()
    if not usable(b):
        return None
    w = min(max(b[2], 2.0), float(width))
    h = min(max(b[3], 2.0), float(height))
    cx = min(max(b[0] + b[2] / 2, 0.0), float(width))
    cy = min(max(b[1] + b[3] / 2, 0.0), float(height))
    return np.array([cx - w / 2, cy - h / 2, w, h], dtype=np.float32)


def snn_motion(box, reference) -> Tuple[float, float]:
    """The SNN's estimate of the target's motion over one window: its box centre minus the
    centre of the reference box its search region was centred on (0 for a NaN box)."""
    b = np.asarray(box).reshape(4).tolist()
    r = np.asarray(reference).reshape(4).tolist()
    dx = (b[0] + b[2] / 2) - (r[0] + r[2] / 2)
    dy = (b[1] + b[3] / 2) - (r[1] + r[3] / 2)
    return (dx, dy) if math.isfinite(dx) and math.isfinite(dy) else (0.0, 0.0)


def _load(kind, path, preset):
    model, cfg = load_checkpoint(path, kind=kind)
    if preset is not None and isinstance(cfg.get("preset"), dict):
        stored = cfg["preset"].get("name")
        if stored is not None and stored != preset:
            raise ValueError(f"{path}: holds the {stored!r} preset, but {preset!r} was requested")
    return model, cfg


class SNNRunner:
    """The SNN tracker on an event stream: windows of ``window_us``, stateful LIF network.

    ``push_events(events, t_end_us)`` adds events up to (not including) ``t_end_us`` and
    returns the boxes of every window that ended by then.  ``reference`` is the box the
    next window's search region is centred on: the pipeline sets it to the latest fused
    box (SNN-hybrid) or leaves it at the SNN's own output (SNN-origin).
    """

    def __init__(self, model, preset_name: str, width: int, height: int, *, window_us: Optional[int] = None,
                 windows_per_call: int = 1, script: bool = True, engine: str = "numpy",
                 reset_jump: float = 0.15):
        if engine not in ("numpy", "torch"):
            raise ValueError(f"SNN engine must be 'numpy' or 'torch', got {engine!r}")
        # numpy engine (models/snn_engine.py): a few numpy calls per window instead of
        # ~400 us of torch dispatch; models it cannot compile (TorchScript files, unknown
        # layers) run in torch, where TorchScript halves the per-call overhead
        self.engine = None
        if engine == "numpy" and hasattr(model, "stages"):
            try:
                self.engine = SNNEngine.from_model(model)
            except NotImplementedError:
                pass
        if self.engine is None and script and hasattr(model, "scripted"):
            model = model.scripted()
        self.model = model
        self.preset = preset_name if isinstance(preset_name, SNNPreset) else SNN_PRESETS[preset_name]
        self.width, self.height = int(width), int(height)
        self.window_us = int(window_us or self.preset.window_us)
        if self.window_us <= 0:
            raise ValueError(f"SNN window must be > 0 us, got {self.window_us}")
        if windows_per_call < 1:
            raise ValueError(f"windows_per_call must be >= 1, got {windows_per_call}")
        self.steps = self.preset.steps_per_window
        # K > 1: up to K consecutive windows run in one call (throughput up, latency up by up
        # to K-1 windows where they must wait for each other); the outputs are still per
        # window.  With the compiled window loop (SNNEngine.track_windows: the fast preset
        # where numba is installed) each window is still centred on its predecessor's box, as
        # with K = 1 (bit-equal); only a new ``reference`` (the fused box) waits for the next
        # call.  Otherwise the K windows share one search region.
        self.windows_per_call = int(windows_per_call)
        self._ev = empty_events()      # buffered events; those before self._i are consumed
        self._i = 0
        self._t_next: Optional[int] = None
        self.reference: Optional[np.ndarray] = None
        if not reset_jump >= 0:
            raise ValueError(f"reset_jump must be >= 0 (a fraction of the search window), got {reset_jump!r}")
        self.reset_jump = float(reset_jump)
        self._last_region: Optional[np.ndarray] = None
        self.resets = 0     # state resets after window jumps

    @classmethod
    def from_file(cls, path: Optional[str], preset: str, width: int, height: int, **kw) -> "SNNRunner":
        model, cfg = _load("snn", path or default_weights("snn", preset), preset)
        return cls(model, stored_preset(cfg, preset, "snn"), width, height, **kw)

    def init(self, box, t_us: int) -> None:
        self.reference = sane_box(box, self.width, self.height)
        if self.reference is None:
            raise ValueError(f"initial box {np.asarray(box).tolist()} is not a valid (x, y, w, h) box")
        self._t_next = int(t_us)
        self._ev, self._i = empty_events(), 0
        self._last_region = None
        (self.engine or self.model).reset_state()

    def _region(self) -> np.ndarray:
        if self.preset.view == "search":
            return search_region(self.reference, self.preset.search_scale)
        return full_region((self.height, self.width))

    @property
    def next_window_end_us(self) -> int:
        if self._t_next is None:
            raise RuntimeError("SNNRunner.init() must be called with the initial box first")
        return self._t_next + self.window_us

    def windows_ready(self, t_end_us: int) -> int:
        """How many whole windows end by ``t_end_us``."""
        return max(0, (int(t_end_us) - (self.next_window_end_us - self.window_us)) // self.window_us)

    def add_events(self, events: np.ndarray) -> None:
        """Buffer events (time-ordered, after those already buffered; events before the
        current window are never binned)."""
        if len(events):
            rest = self._ev[self._i:]
            self._ev = concat_events([rest, events]) if len(rest) else events
            self._i = 0

    def _network(self, x: np.ndarray) -> np.ndarray:
        """``x [K, T, 2, H, W]`` -> normalised boxes ``[K, 4]`` (stateful), in torch (the
        numpy engine bins and runs in :meth:`SNNEngine.step_events`)."""
        with torch.inference_mode():
            return self.model.step_window(torch.from_numpy(x)[None])[0].numpy()

    def step(self, k: int = 1) -> List[TrackOutput]:
        """Run the next ``k`` windows (their events must all be buffered) on the current
        search region in one network call; one box per window."""
        t0 = self._t_next
        t_end = t0 + k * self.window_us
        j = self._i + int(np.searchsorted(self._ev["t_us"][self._i:], t_end, side="left"))
        ev, self._i = self._ev[self._i:j], j
        if self.engine is not None and self.engine.tracks_windows and self.preset.view == "search":
            return self._track(ev, t0, k)
        region = self._region()
        if self.reset_jump and self._last_region is not None and self.preset.view == "search":
            # the membrane maps live in search-window coordinates: after a jump of the
            # window (an ANN correction through the fused box) they describe other pixels
            r0 = self._last_region
            shift = math.hypot(region[0] + region[2] / 2 - r0[0] - r0[2] / 2, region[1] + region[3] / 2 - r0[1] - r0[3] / 2)
            if shift > self.reset_jump * r0[2]:
                (self.engine or self.model).reset_state()
                self.resets += 1
        self._last_region = region
        if self.engine is not None:
            norms = self.engine.step_events(ev, t0, t_end, k, self.steps, region)
        else:
            x = bin_events(ev, t0, t_end, k * self.steps, region, self.preset.in_hw)
            norms = self._network(x.reshape((k, self.steps) + x.shape[1:]))
        boxes = region_norm_to_box(norms, region)
        out = []
        prev = self.reference   # here the K windows share one region: window i moved from box i-1
        for i in range(k):
            box = boxes[i]
            sane = sane_box(box, self.width, self.height)
            if sane is not None:
                motion = snn_motion(sane, prev)
                self.reference = prev = box = sane
            else:
                box, motion = np.full(4, np.nan, np.float32), (0.0, 0.0)
            out.append(TrackOutput(t0 + (i + 1) * self.window_us, "snn", box, motion))
        self._t_next = t_end
        return out

    def _track(self, ev: np.ndarray, t0: int, k: int) -> List[TrackOutput]:
        """:meth:`step` in one compiled call (:meth:`SNNEngine.track_windows`): each of the
        ``k`` windows on the region its predecessor's box gives, as ``k`` calls of one
        window would run them (bit-equal), at the cost of one call."""
        ref = np.array(self.reference, np.float32)
        last = np.full(4, np.nan, np.float32) if self._last_region is None else np.array(self._last_region, np.float32)
        boxes, motion, resets = self.engine.track_windows(
            ev, t0, self.window_us, k, self.steps, ref, last, scale=self.preset.search_scale,
            min_side_px=SEARCH_MIN_SIDE_PX, width=self.width, height=self.height, reset_jump=self.reset_jump)
        self.resets += resets
        self._last_region, self.reference = last, ref
        self._t_next = t0 + k * self.window_us
        ok = np.isfinite(boxes[:, 0]).tolist()
        mv = motion.tolist()
        return [TrackOutput(t0 + (i + 1) * self.window_us, "snn", boxes[i], tuple(mv[i]) if ok[i] else (0.0, 0.0))
                for i in range(k)]

    def push_events(self, events: np.ndarray, t_end_us: int) -> List[TrackOutput]:
        """Buffer ``events`` (all before ``t_end_us``) and run every window ending by ``t_end_us``
        (``windows_per_call`` at a time where that many are complete)."""
        self.add_events(events)
        out: List[TrackOutput] = []
        while self.windows_ready(t_end_us):
            out += self.step(min(self.windows_ready(t_end_us), self.windows_per_call))
        return out


def stored_preset(cfg: dict, name: str, kind: str):
    """The preset ``name`` with the input geometry the weights were trained with (from the
    checkpoint's preset record; the named preset as it is where the checkpoint has none), so
    weights trained before a preset changed keep running as they were trained.  ANN: window
    view, scale, input size, attention sigma, template channels (none in records older than
    them); SNN: view, window scale, input size, window length and LIF steps per window."""
    presets = ANN_PRESETS if kind == "ann" else SNN_PRESETS
    p = presets[name]
    rec = cfg.get("preset")
    if not isinstance(rec, dict):
        return p
    fields = ("view", "search_scale", "sigma_rel") if kind == "ann" else \
        ("view", "search_scale", "window_us", "steps_per_window")
    upd = {k: rec[k] for k in fields if k in rec}
    if "in_hw" in rec:
        upd["in_hw"] = tuple(int(v) for v in rec["in_hw"])
    if kind == "ann":
        upd["templates"] = int(rec.get("templates", 0))
    return dataclasses.replace(p, **upd)


def _kept_frame(image) -> np.ndarray:
    """A frame kept for the template channels: converted to float luminance once (not at
    every later frame that cuts a template from it), and never the caller's buffer."""
    img = unit_float(image)
    return img.copy() if img is image else img


class ANNRunner:
    """The ANN tracker on APS frames; ``update(image, feedback_box)`` -> box.

    With template channels (:mod:`.models.template`, fast preset) it keeps the first frame
    with the initial box and the previous frame with its own previous box."""

    def __init__(self, model, preset, width: int, height: int, attention: bool = True):
        self.model = model
        self.preset = preset if isinstance(preset, ANNPreset) else ANN_PRESETS[preset]
        self.width, self.height = int(width), int(height)
        self.attention = bool(attention)
        cfg_att = getattr(model, "attention", None)
        if cfg_att is not None and bool(cfg_att) != self.attention:
            raise ValueError(f"ANN weights were trained with attention={bool(cfg_att)}, "
                             f"but attention={self.attention} was requested")
        # the weights decide (weights made before template channels have none)
        self.templates = int(getattr(model, "templates", 0))
        self.last_box: Optional[np.ndarray] = None
        self._init_box: Optional[np.ndarray] = None
        self._first = self._prev = None   # (image, box) of the first / previous frame

    @classmethod
    def from_file(cls, path: Optional[str], preset: str, width: int, height: int, attention: bool = True) -> "ANNRunner":
        default = default_weights("ann" if attention else "ann_nat", preset)
        model, cfg = _load("ann", path or default, preset)
        if bool(cfg.get("attention", True)) != attention:
            raise ValueError(f"{path or default}: trained with attention={cfg.get('attention')}, "
                             f"but attention={attention} was requested")
        return cls(model, stored_preset(cfg, preset, "ann"), width, height, attention)

    def init(self, box) -> None:
        """Start on a new target (``box`` at the next frame's instant); forgets the templates."""
        self.last_box = self._init_box = sane_box(box, self.width, self.height)
        self._first = self._prev = None

    def _template_sources(self, image) -> Optional[list]:
        if not self.templates:
            return None
        if self._first is None and self._init_box is not None:
            self._first = (_kept_frame(image), self._init_box)
        return [self._first, self._prev or self._first][:self.templates]

    def update(self, image: np.ndarray, feedback_box=None) -> np.ndarray:
        fb = sane_box(feedback_box, self.width, self.height) if feedback_box is not None else None
        if self.preset.view == "search":
            ref = fb if fb is not None else self.last_box
            region = search_region(ref, self.preset.search_scale) if ref is not None else full_region((self.height, self.width))
        else:
            region = full_region((self.height, self.width))
        x = frame_input(image, region, self.preset.in_hw, prev_box=fb, sigma_rel=self.preset.sigma_rel,
                        attention=self.attention, templates=self._template_sources(image))
        with torch.inference_mode():
            norm = self.model(torch.from_numpy(x)[None])[0].numpy()
        box = region_norm_to_box(norm, region)
        sane = sane_box(box, self.width, self.height)
        box = sane if sane is not None else np.full(4, np.nan, np.float32)
        if sane is not None:
            self.last_box = sane
            if self.templates:
                self._prev = (_kept_frame(image), sane)
        return box


class HybridTracker:
    """DashNet on a DAVIS stream (see the module docstring for the modes)."""

    def __init__(self, width: int, height: int, *, mode: str = "hybrid", snn: Optional[SNNRunner] = None,
                 ann: Optional[ANNRunner] = None, tcf_time_scale_s: Optional[float] = None,
                 aps_rate_hz: float = 30.0, tcf_propagate: bool = True):
        if mode not in MODES:
            raise ValueError(f"unknown tracking mode {mode!r}; choose one of {', '.join(MODES)}")
        if mode in ("hybrid", "snn-origin") and snn is None:
            raise ValueError(f"mode {mode!r} needs the SNN")
        if mode in ("hybrid", "ann", "ann-nat") and ann is None:
            raise ValueError(f"mode {mode!r} needs the ANN")
        self.mode = mode
        self.width, self.height = int(width), int(height)
        self.snn = snn if mode in ("hybrid", "snn-origin") else None
        self.ann = ann if mode in ("hybrid", "ann", "ann-nat") else None
        self.tcf = TCF(tcf_time_scale_s, propagate=tcf_propagate) if tcf_time_scale_s else \
            TCF.for_frame_rate(aps_rate_hz, propagate=tcf_propagate)
        self.fused: Optional[np.ndarray] = None
        self._init_t_us: Optional[int] = None
        self._held: List[ApsFrame] = []    # frames waiting for the SNN windows that end by their stamp

    @classmethod
    def from_weights(cls, width: int, height: int, *, mode: str = "hybrid", snn_preset: str = "fast",
                     ann_preset: str = "fast", snn_weights: Optional[str] = None, ann_weights: Optional[str] = None,
                     window_us: Optional[int] = None, windows_per_call: int = 1, **kw) -> "HybridTracker":
        """Load the networks a mode needs (the shipped weights unless paths are given)."""
        snn = ann = None
        if mode in ("hybrid", "snn-origin"):
            snn = SNNRunner.from_file(snn_weights, snn_preset, width, height, window_us=window_us,
                                      windows_per_call=windows_per_call)
        if mode in ("hybrid", "ann", "ann-nat"):
            ann = ANNRunner.from_file(ann_weights, ann_preset, width, height, attention=(mode != "ann-nat"))
        return cls(width, height, mode=mode, snn=snn, ann=ann, **kw)

    def init(self, box, t_us: int) -> None:
        """Start tracking the target in ``box`` (x, y, w, h stream pixels) at sensor time ``t_us``."""
        b = sane_box(box, self.width, self.height)
        if b is None:
            raise ValueError(f"initial box {np.asarray(box).tolist()} is not a valid (x, y, w, h) box")
        self.fused = b
        self._init_t_us = int(t_us)
        self._held = []
        self.tcf.reset()
        if self.snn:
            self.snn.init(b, t_us)
        if self.ann:
            self.ann.init(b)

    def push(self, item) -> List[TrackOutput]:
        """Process one stream item; returns the outputs it produced (time order)."""
        if self._init_t_us is None:
            raise RuntimeError("HybridTracker.init() must be called with the initial box first")
        if isinstance(item, EventBatch):
            return self._events(item)
        if isinstance(item, ApsFrame):
            return self._frame(item)
        raise TypeError(f"expected EventBatch or ApsFrame, got {type(item).__name__}")

    def _events(self, batch: EventBatch) -> List[TrackOutput]:
        if self.snn is None or batch.t1_us <= self._init_t_us:
            return []
        ev = batch.events
        if len(ev) and ev["t_us"][0] < self._init_t_us:
            ev = ev[ev["t_us"] >= self._init_t_us]
        outs: List[TrackOutput] = []
        if self.mode == "snn-origin":
            return self.snn.push_events(ev, batch.t1_us)
        # hybrid: each call's search region is centred on the latest fused box
        self.snn.add_events(ev)
        while True:
            outs += self._release_frames()
            k = min(self.snn.windows_ready(batch.t1_us), self.snn.windows_per_call)
            if self._held:      # no window may end after a held frame's stamp before it is used
                k = min(k, self.snn.windows_ready(self._held[0].t_us))
            if k <= 0:
                break
            self.snn.reference = self.fused
            for o in self.snn.step(k):
                fused = self.tcf.fuse(o.t_us, o.box, motion_px=o.motion_px)
                sane = sane_box(fused, self.width, self.height)
                if sane is not None:
                    self.fused = sane
                outs += [o, TrackOutput(o.t_us, "fused", fused)]
        return outs

    def _release_frames(self) -> List[TrackOutput]:
        """The held frames whose SNN windows (those ending by the frame's stamp) have run."""
        outs: List[TrackOutput] = []
        while self._held and not self.snn.windows_ready(self._held[0].t_us):
            outs += self._use_frame(self._held.pop(0))
        return outs

    def _frame(self, frame: ApsFrame) -> List[TrackOutput]:
        if self.ann is None or frame.t_us < self._init_t_us:
            return []
        if self.mode == "hybrid" and (self._held or self.snn.windows_ready(frame.t_us)):
            # a stream may give a frame before the events of its own packet (a DAVIS
            # recording does): eq. 10 wants the fused box of the windows ending by the frame,
            # so the frame waits for them (the simulator's streams never wait)
            self._held.append(frame)
            return []
        return self._use_frame(frame)

    def _use_frame(self, frame: ApsFrame) -> List[TrackOutput]:
        # eq. 10: the latest fused box before the frame (ANN-AT alone: its own last box)
        if self.mode == "hybrid":
            feedback = self.fused
        elif self.mode == "ann":
            feedback = self.ann.last_box
        else:
            feedback = None
        box = self.ann.update(frame.image, feedback)
        self.tcf.add_ann(frame.t_us, box)
        outs = [TrackOutput(frame.t_us, "ann", box)]
        if self.mode == "hybrid" and np.all(np.isfinite(box)):
            # the fused estimate at the frame instant is the ANN's (w = 0 at D = 0)
            fused = self.tcf.fuse(frame.t_us, self.fused)
            sane = sane_box(fused, self.width, self.height)
            if sane is not None:
                self.fused = sane
        return outs

    def flush(self) -> List[TrackOutput]:
        """At the end of a stream: the frames still waiting for events that never came."""
        outs: List[TrackOutput] = []
        while self._held:
            outs += self._use_frame(self._held.pop(0))
        return outs

    def run(self, stream, progress=None):
        """Consume a whole stream; returns ``{source: (t_us[N], boxes[N, 4])}``."""
        acc = {}
        for item in stream:
            for o in self.push(item):
                acc.setdefault(o.source, []).append((o.t_us, o.box))
            if progress:
                progress(item)
        for o in self.flush():
            acc.setdefault(o.source, []).append((o.t_us, o.box))
        return {k: (np.array([t for t, _ in v], np.int64), np.stack([b for _, b in v]).astype(np.float32))
                for k, v in acc.items()}
