"""Training samples for the SNN (§3.1, eq. 4) and the ANN (§3.2 + §3.3.2, eq. 6, 10-12).

Data are hybrid DAVIS streams simulated from *procedural* sequences only
(:mod:`dashnet_ros.world.scenes`, seeds ``>= TRAIN_SEED_MIN``): built once with
``dashnet dataset build scenes:A-B --out DIR`` (HDF5, :mod:`dashnet_ros.io.dataset`) and
read here, or taken straight from a :class:`~dashnet_ros.davis.stream.DavisSimulator`
(tests, evaluation).  Files whose source is a held-out test seed (0..999) are refused
unless ``allow_heldout`` (evaluation).

The inputs are made with the very functions the tracking pipeline uses:

* SNN, per output window ``[t0, t1)`` of ``preset.window_us``: the input region is
  :func:`snn_region` (``search_region(ref_box, search_scale)`` or the whole frame),
  ``x = bin_events(events, t0, t1, steps_per_window, region, in_hw)``, and the target is the
  ground truth at ``t1`` normalised to that region (``box_to_region_norm``; the tracker maps
  its output back with ``region_norm_to_box``).  ``ref_box`` stands for the previous
  estimate: during training the ground truth at ``t0`` with eq. 12 noise
  (:func:`~dashnet_ros.fusion.attention.noisy_box`) or the model's own last output
  (scheduled sampling, in :mod:`dashnet_ros.train.snn`).
* ANN, per frame: ``x = frame_input(image, region, in_hw, prev_box=feedback, sigma_rel,
  attention)`` with ``feedback`` the ground truth with eq. 12 noise (sometimes none), the
  target the ground truth normalised to ``region``.  Procedural files give every source
  frame (re-rendered exactly from the seed, 240 per second), not only the 30 Hz APS ones;
  since the frames need no simulation, the ANN can also train on ``scenes:A-B`` rendered on
  the fly (:meth:`FrameSequence.from_scene`), as many sequences as the run can visit.

Ground truth between frames comes from the file's ``/gt_fine`` track (8x the frame rate,
exact ``box_at`` samples), linearly interpolated.
"""
from __future__ import annotations

import glob
import hashlib
import logging
import os
import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..boxes import interpolate_track
from ..events import concat_events
from ..fusion.attention import noisy_box
from ..models.ann import ANNPreset, frame_input
from ..models.arch import box_to_region_norm, full_region, search_region
from ..models.snn import SNNPreset, bin_events

log = logging.getLogger(__name__)

#: training sequences use seeds >= this (mirrors dashnet_ros.world.scenes.TRAIN_SEED_MIN)
TRAIN_SEED_MIN = 1000
_SCENE_RE = re.compile(r"^scenes:(\d+) \((\d+) frames\)$")
#: smallest ground-truth box side (pixels) a sample may have (smaller: target leaving view)
MIN_BOX_PX = 2.0


# ----------------------------------------------------------------------------- files


def scene_of(source_desc: str) -> Optional[Tuple[int, int]]:
    """``(seed, n_frames)`` of a procedural dataset's source description
    (``"scenes:SEED (N frames)"`` as ``dashnet dataset build`` writes it), else None."""
    m = _SCENE_RE.match(str(source_desc).strip())
    return (int(m.group(1)), int(m.group(2))) if m else None


def list_datasets(data_dir, allow_heldout: bool = False) -> List[str]:
    """Sorted ``*.h5`` hybrid dataset files in ``data_dir`` (or a single file).

    Raises FileNotFoundError when there are none, ValueError when one comes from a
    held-out procedural seed (0..999) and ``allow_heldout`` is False.
    """
    data_dir = os.fspath(data_dir)
    if os.path.isfile(data_dir):
        paths = [data_dir]
    elif os.path.isdir(data_dir):
        paths = sorted(glob.glob(os.path.join(data_dir, "*.h5")))
    else:
        raise FileNotFoundError(f"training data {data_dir} does not exist; build it with "
                                f"`dashnet dataset build scenes:1000-1199 --out {data_dir}`")
    if not paths:
        raise FileNotFoundError(f"no *.h5 dataset files in {data_dir}; build them with "
                                f"`dashnet dataset build scenes:1000-1199 --out {data_dir}`")
    if not allow_heldout:
        from ..io.dataset import HybridDataset

        for p in paths:
            with HybridDataset(p) as ds:
                sc = scene_of(ds.source)
            if sc is not None and sc[0] < TRAIN_SEED_MIN:
                raise ValueError(f"{p} was simulated from held-out test seed {sc[0]} (seeds "
                                 f"0..{TRAIN_SEED_MIN - 1} are reserved for evaluation); train "
                                 f"on seeds >= {TRAIN_SEED_MIN}")
    return paths


#: procedural sequences rendered on the fly (``scenes:A-B`` as ``--data`` of ``dashnet
#: train ann``): the geometry of ``dashnet dataset build scenes:...`` with its defaults
SCENE_FRAMES, SCENE_HW, SCENE_FPS = 240, (180, 240), 240.0
_SCENE_SPEC_RE = re.compile(r"^scenes:(\d+)(?:-(\d+))?$")


def scene_seeds(spec: str, allow_heldout: bool = False) -> Optional[List[int]]:
    """The seeds of ``scenes:SEED`` or ``scenes:A-B`` (inclusive), None for any other
    string; ValueError for an empty range or a held-out seed (< ``TRAIN_SEED_MIN``)."""
    m = _SCENE_SPEC_RE.match(str(spec).strip())
    if not m:
        return None
    a = int(m.group(1))
    b = int(m.group(2)) if m.group(2) is not None else a
    if b < a:
        raise ValueError(f"{spec!r}: empty seed range (write scenes:A-B with A <= B)")
    if not allow_heldout and a < TRAIN_SEED_MIN:
        raise ValueError(f"{spec!r} includes held-out test seeds (0..{TRAIN_SEED_MIN - 1}); train on "
                         f"seeds >= {TRAIN_SEED_MIN}")
    return list(range(a, b + 1))


def scenes_recipe(spec: str, seeds: Sequence[int]) -> dict:
    """:func:`data_recipe` of procedural sequences rendered on the fly (no files)."""
    h, w = SCENE_HW
    return {"sources": [f"{spec.strip()} ({len(seeds)} sequences, {SCENE_FRAMES} frames, rendered on the fly)"],
            "n_files": 0, "n_sequences": len(seeds),
            "render": {"width": w, "height": h, "source_fps": SCENE_FPS, "frames": SCENE_FRAMES}}


def data_recipe(paths: Sequence[str]) -> dict:
    """What the training data are (stored in the checkpoint config): sources, simulator
    settings of the first file, and a digest of every file's build config."""
    from ..io.dataset import HybridDataset

    seeds, others, cfgs = [], [], []
    sim = None
    for p in paths:
        with HybridDataset(p) as ds:
            sc = scene_of(ds.source)
            (seeds.append(sc) if sc else others.append(ds.source))
            cfgs.append(ds.config_json)
            if sim is None:
                c = ds.config
                sim = dict(c.get("simulator", {}), interpolator=c.get("extra", {}).get("interpolator"),
                           gt_fine_factor=c.get("gt_fine_factor"), source_fps=c.get("source_fps"))
    desc = []
    if seeds:
        s = sorted(x[0] for x in seeds)
        frames = sorted({x[1] for x in seeds})
        desc.append(f"scenes:{s[0]}-{s[-1]} ({len(s)} sequences, {'/'.join(map(str, frames))} frames)")
    desc += others
    digest = hashlib.sha256("\n".join(sorted(cfgs)).encode()).hexdigest()[:16]
    return {"sources": desc, "n_files": len(paths), "simulator": sim, "config_digest": digest}


# ----------------------------------------------------------------------------- sequences


@dataclass
class EventSequence:
    """The DVS part of one stream, in memory: events, the time they cover, and a ground
    truth track to interpolate (``gt_t_us`` ascending, ``gt_boxes`` (N, 4), NaN = absent)."""

    name: str
    events: np.ndarray
    t0_us: int
    t1_us: int
    gt_t_us: np.ndarray
    gt_boxes: np.ndarray
    frame_hw: Tuple[int, int]

    def gt_at(self, t_us) -> np.ndarray:
        return interpolate_track(self.gt_t_us, self.gt_boxes, t_us)

    def events_between(self, t0_us: int, t1_us: int) -> np.ndarray:
        a, b = np.searchsorted(self.events["t_us"], [t0_us, t1_us], side="left")
        return self.events[a:b]

    @classmethod
    def from_dataset(cls, path, allow_heldout: bool = False) -> "EventSequence":
        """All events of a hybrid dataset file plus its finest ground truth."""
        from ..io.dataset import HybridDataset

        with HybridDataset(path) as ds:
            _check_seed(ds, allow_heldout)
            fine = ds.gt_fine_track()
            t, b = fine if fine is not None and len(fine[0]) > 1 else ds.gt_track()
            ev = ds.events_between(ds.t0_us, ds.t1_us)
            return cls(os.path.basename(ds.path), ev, ds.t0_us, ds.t1_us, np.asarray(t, np.int64),
                       np.asarray(b, np.float32), (ds.height, ds.width))

    @classmethod
    def from_simulator(cls, sim, name: str = "sim", fine_factor: int = 8) -> "EventSequence":
        """Run a :class:`~dashnet_ros.davis.stream.DavisSimulator` to the end and keep its
        events; ground truth from the source's exact ``box_at`` at ``fine_factor`` x the
        frame rate (or the simulator's ``gt_at``)."""
        from ..davis.frames import EventBatch

        chunks, t0, t1 = [], None, None
        for item in sim.stream():
            if isinstance(item, EventBatch):
                t0 = item.t0_us if t0 is None else t0
                t1 = item.t1_us
                chunks.append(item.events)
        if t0 is None:
            raise ValueError("the simulator produced no event batches")
        ev = concat_events(chunks)
        src = sim.source
        step = 1e6 / (float(src.fps) * fine_factor)
        t = np.unique(np.round(t0 + np.arange(int((t1 - t0) / step) + 2) * step).astype(np.int64))
        if hasattr(src, "box_at"):
            sx, sy = sim.scale_xy
            b = np.asarray(src.box_at(t), np.float32) * np.array([sx, sy, sx, sy], np.float32)
        else:
            b = np.asarray(sim.gt_at(t), np.float32)
        return cls(name, ev, int(t0), int(t1), t, b, (sim.height, sim.width))


@dataclass
class FrameSequence:
    """Frames for the ANN: uint8 images (N, H, W), their times and ground-truth boxes."""

    name: str
    images: np.ndarray
    t_us: np.ndarray
    boxes: np.ndarray

    @property
    def frame_hw(self) -> Tuple[int, int]:
        return int(self.images.shape[1]), int(self.images.shape[2])

    @classmethod
    def from_dataset(cls, path, every_frame: bool = True, allow_heldout: bool = False) -> "FrameSequence":
        """The APS frames of a hybrid dataset file; with ``every_frame`` and a procedural
        source, every source frame instead (re-rendered from the seed exactly as the
        simulator renders and quantises them; checked against the first APS frame)."""
        from ..io.dataset import HybridDataset

        with HybridDataset(path) as ds:
            _check_seed(ds, allow_heldout)
            frames = [ds.aps[i] for i in range(len(ds.aps))]
            imgs = np.stack([a.image for a in frames]) if frames else np.zeros((0, ds.height, ds.width), np.uint8)
            aps_t = np.array([a.t_us for a in frames], np.int64)
            aps_b = np.array([a.box if a.box is not None else np.full(4, np.nan) for a in frames],
                             np.float32).reshape(-1, 4)
            sc = scene_of(ds.source)
            name = os.path.basename(ds.path)
            if every_frame and sc is not None and len(aps_t) and tuple(ds.scale_xy) in ((1.0, 1.0), (1.0,)):
                from ..world.scenes import render_sequence

                src = render_sequence(sc[0], sc[1], ds.width, ds.height, ds.source_fps)
                k0 = int(np.argmin(np.abs(src.frame_t_us(np.arange(len(src))) - aps_t[0])))
                if np.array_equal(quantise(src.render_at(int(src.frame_t_us(k0)))), imgs[0]):
                    return cls.rendered(name, src, np.arange(len(src)))
                log.warning("%s: re-rendered frames differ from the recorded APS frames (other "
                            "code version?); using the APS frames only", path)
            return cls(name, imgs, aps_t.astype(np.int64), aps_b.astype(np.float32))

    @classmethod
    def from_scene(cls, seed: int, every_frame: bool = True, aps_rate_hz: float = 30.0) -> "FrameSequence":
        """Procedural sequence ``seed`` rendered now (:data:`SCENE_FRAMES` frames at
        :data:`SCENE_FPS`, sensor :data:`SCENE_HW`), quantised as the simulator's APS
        frames -- the frames :meth:`from_dataset` re-renders from a file of that seed, without
        the file.  Without ``every_frame`` only the frames at ``aps_rate_hz``."""
        from ..world.scenes import render_sequence

        h, w = SCENE_HW
        src = render_sequence(int(seed), SCENE_FRAMES, w, h, SCENE_FPS)
        k = np.arange(len(src))
        if not every_frame:
            k = k[::max(1, int(round(SCENE_FPS / aps_rate_hz)))]
        return cls.rendered(f"scenes_{int(seed):04d}", src, k)

    @classmethod
    def rendered(cls, name: str, src, k: np.ndarray) -> "FrameSequence":
        """Frames ``k`` of a procedural ``src`` (:func:`~dashnet_ros.world.scenes.render_sequence`)
        rendered and quantised as the simulator's APS frames, with their times and exact boxes."""
        t = src.frame_t_us(k)
        frames = np.stack([quantise(src.render_at(int(tk))) for tk in t])
        return cls(name, frames, t.astype(np.int64), src.box_at(t).astype(np.float32))

    @classmethod
    def load(cls, source, every_frame: bool = True, allow_heldout: bool = False) -> "FrameSequence":
        """A dataset file (:meth:`from_dataset`) or ``scenes:SEED`` (:meth:`from_scene`)."""
        seeds = scene_seeds(source, allow_heldout) if isinstance(source, str) else None
        if seeds is not None:
            return cls.from_scene(seeds[0], every_frame)
        return cls.from_dataset(source, every_frame, allow_heldout)

    @classmethod
    def from_source(cls, source, name: str = "source") -> "FrameSequence":
        """Every frame of a :class:`~dashnet_ros.davis.frames.FrameSource` (quantised like
        the simulator's APS frames; the source must be at the sensor size)."""
        imgs, ts, bs = [], [], []
        for f in source:
            imgs.append(quantise(f.image))
            ts.append(int(f.t_us))
            bs.append(np.full(4, np.nan, np.float32) if f.box is None else np.asarray(f.box, np.float32))
        return cls(name, np.stack(imgs), np.asarray(ts, np.int64), np.stack(bs))


def quantise(image: np.ndarray) -> np.ndarray:
    """Luminance in [0, 1] -> uint8, exactly as the simulator makes APS frames."""
    return np.clip(np.asarray(image, np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _check_seed(ds, allow_heldout: bool) -> None:
    sc = scene_of(ds.source)
    if not allow_heldout and sc is not None and sc[0] < TRAIN_SEED_MIN:
        raise ValueError(f"{ds.path} was simulated from held-out test seed {sc[0]}; train on "
                         f"seeds >= {TRAIN_SEED_MIN}")


def valid_box(b, min_px: float = MIN_BOX_PX) -> np.ndarray:
    """Rows of ``b`` (..., 4) that are finite with both sides >= ``min_px``."""
    b = np.asarray(b, np.float64)
    return np.all(np.isfinite(b), -1) & (np.nan_to_num(b[..., 2]) >= min_px) & (np.nan_to_num(b[..., 3]) >= min_px)


class SequencePool:
    """A random working set of loaded sequences: ``pool_size`` of ``paths`` in memory, one
    replaced by a random other every ``refresh_every`` calls to :meth:`step` (so a long run
    sees every file without holding them all)."""

    def __init__(self, paths: Sequence, load: Callable, rng: np.random.Generator,
                 pool_size: int = 16, refresh_every: int = 8):
        if not len(paths):
            raise ValueError("SequencePool needs at least one sequence")
        self.paths = list(paths)
        self.load = load
        self.rng = rng
        self.refresh_every = max(1, int(refresh_every))
        n = min(int(pool_size), len(self.paths))
        order = rng.permutation(len(self.paths))
        self.slots = [int(i) for i in order[:n]]
        self.items = [self._load(i) for i in self.slots]
        self._calls = 0

    def _load(self, i: int):
        p = self.paths[i]
        return p if not isinstance(p, (str, os.PathLike)) else self.load(p)

    def pick(self):
        return self.items[int(self.rng.integers(len(self.items)))]

    def step(self) -> None:
        self._calls += 1
        if self._calls % self.refresh_every or len(self.paths) <= len(self.slots):
            return
        free = sorted(set(range(len(self.paths))) - set(self.slots))
        j = int(self.rng.integers(len(self.slots)))
        i = int(free[int(self.rng.integers(len(free)))])
        self.items[j] = self._load(i)
        self.slots[j] = i


# ----------------------------------------------------------------------------- SNN


def snn_region(preset: SNNPreset, ref_box, frame_hw: Sequence[int]) -> np.ndarray:
    """The SNN's input region for a window: around ``ref_box`` (view ``"search"``) or the
    whole frame (view ``"frame"``)."""
    if preset.view == "frame":
        return full_region(frame_hw)
    if preset.view == "search":
        return search_region(ref_box, preset.search_scale)
    raise ValueError(f"unknown SNN view {preset.view!r} (expected 'search' or 'frame')")


def snn_window_input(events: np.ndarray, t0_us: int, t1_us: int, ref_box, preset: SNNPreset,
                     frame_hw: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    """``(x [T, 2, H, W], region)`` for one window, exactly as the tracker makes it."""
    region = snn_region(preset, ref_box, frame_hw)
    return bin_events(events, t0_us, t1_us, preset.steps_per_window, region, preset.in_hw), region


@dataclass
class SNNClip:
    """``K`` consecutive windows of one stream: events of ``[edges[0], edges[-1])``,
    window edges ``edges_us`` (K+1,), ground truth at the edges ``gt`` (K+1, 4)."""

    events: np.ndarray
    edges_us: np.ndarray
    gt: np.ndarray
    frame_hw: Tuple[int, int]
    name: str = ""

    @property
    def n_windows(self) -> int:
        return len(self.edges_us) - 1

    def window_events(self, k: int) -> np.ndarray:
        t = self.events["t_us"]
        a, b = np.searchsorted(t, self.edges_us[k:k + 2], side="left")
        return self.events[a:b]


def sample_snn_clip(seq: EventSequence, rng: np.random.Generator, n_windows: int, window_us: int,
                    tries: int = 20) -> Optional[SNNClip]:
    """A random clip of ``n_windows`` windows whose ground truth is present (and at least
    :data:`MIN_BOX_PX` wide and high) at every window edge; None if none was found."""
    span = n_windows * window_us
    hi = seq.t1_us - span
    if hi < seq.t0_us:
        return None
    for _ in range(tries):
        t0 = int(rng.integers(seq.t0_us, hi + 1))
        edges = t0 + window_us * np.arange(n_windows + 1, dtype=np.int64)
        gt = seq.gt_at(edges)
        if valid_box(gt).all():
            return SNNClip(seq.events_between(int(edges[0]), int(edges[-1])), edges, gt,
                           seq.frame_hw, seq.name)
    return None


def snn_teacher_inputs(clip: SNNClip, ref_boxes: np.ndarray, preset: SNNPreset
                       ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All windows of a clip with given reference boxes (K, 4): ``(x [K, T, 2, H, W],
    regions [K, 4], targets [K, 4])``; targets are the ground truth at each window's end
    normalised to its region."""
    xs, regs = [], []
    for k in range(clip.n_windows):
        x, r = snn_window_input(clip.window_events(k), int(clip.edges_us[k]), int(clip.edges_us[k + 1]),
                                ref_boxes[k], preset, clip.frame_hw)
        xs.append(x)
        regs.append(r)
    regs = np.stack(regs)
    return np.stack(xs), regs, box_to_region_norm(clip.gt[1:], regs)


def perturb(box, rng: np.random.Generator, noise: float) -> np.ndarray:
    """Eq. 12 stand-in for a previous estimate: ``noisy_box`` with ``alpha, beta ~ N(0, noise)``."""
    return noisy_box(box, rng, noise, noise)


class SNNSampler:
    """Random SNN training clips from a pool of event sequences.

    ``sources``: dataset paths or :class:`EventSequence` objects; ``n_windows``: clip
    length ``K`` (BPTT horizon); ``ref_noise``: eq. 12 standard deviation of the
    reference-box perturbation (one draw per clip and window, see :func:`perturb`).
    """

    def __init__(self, sources: Sequence, preset: SNNPreset, n_windows: int = 12, seed: int = 0,
                 ref_noise: float = 0.1, pool_size: int = 16, refresh_every: int = 8,
                 allow_heldout: bool = False):
        if n_windows < 1:
            raise ValueError(f"n_windows must be >= 1, got {n_windows}")
        self.preset = preset
        self.n_windows = int(n_windows)
        self.ref_noise = float(ref_noise)
        self.rng = np.random.default_rng(seed)
        self.pool = SequencePool(sources, lambda p: EventSequence.from_dataset(p, allow_heldout),
                                 self.rng, pool_size, refresh_every)

    def clips(self, batch: int) -> List[SNNClip]:
        out: List[SNNClip] = []
        misses = 0
        while len(out) < batch:
            c = sample_snn_clip(self.pool.pick(), self.rng, self.n_windows, self.preset.window_us)
            if c is None:
                misses += 1
                if misses > 50 * batch:
                    raise ValueError("cannot find SNN clips with the target in view in the training "
                                     "data (sequences too short or the target always absent)")
                continue
            out.append(c)
        self.pool.step()
        return out

    def teacher_batch(self, batch: int) -> Dict[str, np.ndarray]:
        """A batch with every reference = noisy ground truth at the window start:
        ``x [B, K, T, 2, H, W]``, ``target [B, K, 4]``, ``region [B, K, 4]``, ``gt [B, K+1, 4]``,
        ``ref [B, K, 4]``."""
        xs, ts, rs, gts, refs = [], [], [], [], []
        for c in self.clips(batch):
            ref = np.stack([perturb(b, self.rng, self.ref_noise) for b in c.gt[:-1]])
            x, r, t = snn_teacher_inputs(c, ref, self.preset)
            xs.append(x), ts.append(t), rs.append(r), gts.append(c.gt), refs.append(ref)
        return {"x": np.stack(xs), "target": np.stack(ts), "region": np.stack(rs),
                "gt": np.stack(gts), "ref": np.stack(refs)}


# ----------------------------------------------------------------------------- ANN


def ann_region(preset: ANNPreset, feedback, frame_hw: Sequence[int]) -> np.ndarray:
    """The ANN's input region: the whole frame (view ``"frame"``) or a search window
    around the feedback box (view ``"search"``; needs a feedback box)."""
    if preset.view == "frame":
        return full_region(frame_hw)
    if preset.view == "search":
        if feedback is None or not np.all(np.isfinite(feedback)):
            raise ValueError("an ANN with a search-window view needs a feedback box")
        return search_region(feedback, preset.search_scale)
    raise ValueError(f"unknown ANN view {preset.view!r} (expected 'frame' or 'search')")


def ann_sample(image: np.ndarray, gt_box, feedback, preset: ANNPreset, attention: bool, templates=None
               ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x [C, H, W], target [4], region [4])`` for one frame, as the tracker makes it
    (``templates``: the ``(image, box)`` sources of the template channels)."""
    frame_hw = image.shape[:2]
    region = ann_region(preset, feedback, frame_hw)
    x = frame_input(image, region, preset.in_hw, prev_box=feedback, sigma_rel=preset.sigma_rel,
                    attention=attention, templates=templates)
    return x, box_to_region_norm(gt_box, region), region


class ANNSampler:
    """Random ANN training frames from a pool of frame sequences.

    Feedback box (eq. 10-12): with probability ``p_none`` none; otherwise the ground truth
    perturbed by eq. 12 with ``alpha, beta ~ N(0, noise)``, where ``noise`` is
    ``feedback_noise`` (paper: 0.1), or ``wide_noise`` with probability ``p_wide`` (a
    poorer previous estimate, as a drifting SNN gives), or with probability ``p_far`` a
    box whose centre is shifted by ``N(0, far_shift)`` box sizes (size noise
    ``feedback_noise``: a fast target the fused box fell behind).  A search-window preset
    always gets a feedback box.  ``flip``: mirror frames left-right with probability 0.5.

    Template channels (preset ``templates``, :mod:`dashnet_ros.models.template`): the
    initial template is a random earlier frame of the sequence at its ground truth (eq. 12
    noise ``template_noise / 2``), the previous one the frame ``1..max_gap`` source frames
    before (8 = the 30 Hz APS interval at 240 fps) at its ground truth with
    ``template_noise`` (the ANN's own previous error).  ``photometric``: a random gain and
    offset per sample (all its frames), as lighting and sensors differ.
    """

    def __init__(self, sources: Sequence, preset: ANNPreset, attention: bool = True, seed: int = 0,
                 feedback_noise: float = 0.1, wide_noise: float = 0.3, p_wide: float = 0.2,
                 p_none: float = 0.1, every_frame: bool = True, flip: bool = True,
                 pool_size: int = 24, refresh_every: int = 8, allow_heldout: bool = False,
                 template_noise: float = 0.05, max_gap: int = 16, photometric: bool = True,
                 far_shift: float = 0.0, p_far: float = 0.0):
        self.preset = preset
        self.attention = bool(attention)
        self.feedback_noise, self.wide_noise = float(feedback_noise), float(wide_noise)
        self.p_wide, self.p_none = float(p_wide), float(p_none)
        self.flip = bool(flip)
        self.template_noise, self.max_gap = float(template_noise), max(1, int(max_gap))
        self.photometric = bool(photometric)
        self.far_shift, self.p_far = float(far_shift), float(p_far)
        self.rng = np.random.default_rng(seed)
        self.pool = SequencePool(
            sources, lambda p: FrameSequence.load(p, every_frame, allow_heldout),
            self.rng, pool_size, refresh_every)

    def feedback(self, gt_box) -> Optional[np.ndarray]:
        if self.preset.view == "frame" and self.rng.random() < self.p_none:
            return None
        u = self.rng.random()
        if u < self.p_far:
            return noisy_box(gt_box, self.rng, self.feedback_noise, self.far_shift)
        noise = self.wide_noise if u < self.p_far + self.p_wide else self.feedback_noise
        return perturb(gt_box, self.rng, noise)

    def _frame(self, seq: FrameSequence, k: int, flip: bool, gain: float, offset: float):
        img, gt = seq.images[k], seq.boxes[k]
        if flip:
            img = img[:, ::-1]
            gt = np.array([img.shape[1] - 1 - gt[0] - gt[2], gt[1], gt[2], gt[3]], np.float32)  # centres at integers
        if gain != 1.0 or offset != 0.0:
            img = np.clip(img.astype(np.float32) * (gain / 255.0) + offset, 0.0, 1.0)
        return np.ascontiguousarray(img), gt

    def _templates(self, seq: FrameSequence, k: int, flip: bool, gain: float, offset: float):
        if not self.preset.templates:
            return None
        k_first = int(self.rng.integers(k + 1))
        k_prev = max(0, k - int(self.rng.integers(1, self.max_gap + 1)))
        out = []
        for kk, noise in ((k_first, self.template_noise / 2), (k_prev, self.template_noise)):
            img, gt = self._frame(seq, kk, flip, gain, offset)
            out.append((img, perturb(gt, self.rng, noise)) if valid_box(gt) else None)
        return out[:self.preset.templates]

    def batch(self, batch: int) -> Dict[str, np.ndarray]:
        """``x [B, C, H, W]``, ``target [B, 4]``, ``region [B, 4]``, ``gt [B, 4]``."""
        xs, ts, rs, gts = [], [], [], []
        misses = 0
        while len(xs) < batch:
            seq = self.pool.pick()
            k = int(self.rng.integers(len(seq.t_us)))
            if not valid_box(seq.boxes[k]):
                misses += 1
                if misses > 50 * batch:
                    raise ValueError("cannot find ANN frames with the target in view in the training data")
                continue
            flip = self.flip and self.rng.random() < 0.5
            gain, offset = 1.0, 0.0
            if self.photometric:
                gain, offset = float(np.exp(self.rng.uniform(-0.4, 0.4))), float(self.rng.uniform(-0.15, 0.15))
            img, gt = self._frame(seq, k, flip, gain, offset)
            tmpl = self._templates(seq, k, flip, gain, offset)
            x, t, r = ann_sample(img, gt, self.feedback(gt), self.preset, self.attention, tmpl)
            xs.append(x), ts.append(t), rs.append(r), gts.append(gt)
        self.pool.step()
        return {"x": np.stack(xs), "target": np.stack(ts), "region": np.stack(rs), "gt": np.stack(gts)}
