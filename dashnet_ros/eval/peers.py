"""OpenCV peer trackers (the paper's Table 3 frame-based peers) and their evaluation.

Peers: KCF, CSRT, MOSSE, MedianFlow, MIL, TLD, Boosting from opencv-contrib.  In OpenCV 5
KCF, CSRT and MIL are in the main namespace (``cv2.TrackerKCF_create`` ...; integer boxes)
and also in ``cv2.legacy``; MOSSE, MedianFlow, TLD and Boosting exist only in
``cv2.legacy`` (float boxes).  The main-namespace version is used where it exists.
:func:`available_peers` lists what the installed OpenCV has; a missing tracker is left out,
never imitated.

A peer is initialised on the first frame with the given box ONLY and then sees images
alone: it never receives later ground truth.  (OpenCV's KCF trains its filter in the first
``update`` call, not in ``init``; the peer makes that call on the init frame, see
``_TRAIN_ON_INIT_IMAGE``.)  It outputs one box per frame (the initial
box for the first frame; NaN where OpenCV reports failure).

Two regimes for a 240 fps NFS-layout sequence (:func:`evaluate_sequence`):

* ``aps``: the tracker runs on the APS frames only, 30 Hz = the source frames nearest to
  each APS instant (every 8th frame at 240 fps, as the DAVIS simulator takes APS frames
  from non-interpolated source frames, frame k at (k-1)/240 s);
* ``frames``: the tracker runs on every 240 fps source frame (a frame-camera reference).

Both are scored by :func:`dashnet_ros.eval.metrics.score` with causal zero-order hold at
the ground-truth instants: the sequence's ``gt_8x.txt`` (exact box at 8x the frame rate)
when present, else the per-frame NFS annotation.  A failure report (NaN box) is held like
any output, so it scores IoU 0 until the tracker reports a box again.

Trackers get whole-pixel initial boxes (OpenCV's legacy Boosting segfaults on some
fractional ones).  The evaluation runs each (tracker, sequence, regime) in a child process
(:func:`stream_in_subprocess`): if OpenCV crashes, the frames after the crash count as
failures and the run is flagged ``crashed`` instead of the whole evaluation dying.
"""
from __future__ import annotations

import logging
import math
import os
import time
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from dashnet_ros.eval.metrics import score

log = logging.getLogger("dashnet_ros.peers")

#: the frame-based peers of the paper's Table 3
PAPER_PEERS = ("KCF", "CSRT", "MOSSE", "MedianFlow", "MIL", "TLD", "Boosting")
#: factories in order of preference: (namespace, attribute)
_FACTORIES = {
    "KCF": (("cv2", "TrackerKCF_create"), ("cv2.legacy", "TrackerKCF_create")),
    "CSRT": (("cv2", "TrackerCSRT_create"), ("cv2.legacy", "TrackerCSRT_create")),
    "MIL": (("cv2", "TrackerMIL_create"), ("cv2.legacy", "TrackerMIL_create")),
    "MOSSE": (("cv2.legacy", "TrackerMOSSE_create"),),
    "MedianFlow": (("cv2.legacy", "TrackerMedianFlow_create"),),
    "TLD": (("cv2.legacy", "TrackerTLD_create"),),
    "Boosting": (("cv2.legacy", "TrackerBoosting_create"),),
}
REGIMES = ("aps", "frames")
#: trackers whose OpenCV implementation learns its model in the first ``update`` call rather
#: than in ``init`` (KCF: ``initImpl`` only sets up the window; ``updateImpl`` with frame 0
#: trains).  The peer makes that call on the init image itself, so the filter is trained
#: where the box is; otherwise it trains on the second frame at the first frame's box and
#: every output lags one frame.
_TRAIN_ON_INIT_IMAGE = frozenset({"KCF"})


def _namespace(ns: str):
    if ns == "cv2":
        return cv2
    return getattr(cv2, ns.split(".", 1)[1], None)


def _resolve(name: str):
    canon = {k.lower(): k for k in _FACTORIES}.get(str(name).lower())
    if canon is None:
        raise ValueError(f"unknown peer tracker {name!r}; the peers are {list(PAPER_PEERS)}")
    for ns, attr in _FACTORIES[canon]:
        mod = _namespace(ns)
        if mod is not None and hasattr(mod, attr):
            return canon, ns, getattr(mod, attr)
    return canon, None, None


def available_peers() -> List[str]:
    """The Table 3 peers the installed OpenCV provides, in the paper's order."""
    return [n for n in PAPER_PEERS if _resolve(n)[2] is not None]


def missing_peers() -> List[str]:
    """The Table 3 peers the installed OpenCV lacks (left out of every evaluation)."""
    return [n for n in PAPER_PEERS if _resolve(n)[2] is None]


def peer_namespace(name: str) -> Optional[str]:
    """``'cv2'`` or ``'cv2.legacy'``: where the tracker ``name`` comes from (None if absent)."""
    return _resolve(name)[1]


def _as_bgr(image) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype != np.uint8:
        if np.issubdtype(img.dtype, np.floating):
            img = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
        else:
            raise ValueError(f"peer trackers take uint8 (or [0, 1] float) images, got {img.dtype}")
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.ndim == 3 and img.shape[2] == 3:
        return np.ascontiguousarray(img)
    if img.ndim == 3 and img.shape[2] == 1:
        return cv2.cvtColor(img[..., 0], cv2.COLOR_GRAY2BGR)
    raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {img.shape}")


class Peer:
    """One OpenCV tracker: :meth:`init` once with the first image and box, then
    :meth:`update` per image (returns ``(x, y, w, h)`` float32, all NaN on failure)."""

    def __init__(self, name: str, namespace: str, factory: Callable):
        self.name, self.namespace, self._factory = name, namespace, factory
        self._tracker = None
        self.ok = False

    def init(self, image, box_xywh) -> bool:
        """Start on ``image`` with ``box_xywh``; returns whether OpenCV accepted it."""
        img = _as_bgr(image)
        b = np.asarray(box_xywh, np.float64).reshape(-1)
        if b.shape != (4,) or not np.all(np.isfinite(b)) or b[2] <= 0 or b[3] <= 0:
            raise ValueError(f"{self.name}: the initial box must be a finite (x, y, w, h) with "
                             f"w, h > 0, got {box_xywh!r}")
        H, W = img.shape[:2]
        x0, y0 = max(b[0], 0.0), max(b[1], 0.0)
        x1, y1 = min(b[0] + b[2], W), min(b[1] + b[3], H)
        if x1 - x0 < 1 or y1 - y0 < 1:
            raise ValueError(f"{self.name}: the initial box {tuple(b)} lies outside the "
                             f"{W}x{H} image")
        # whole pixels for every tracker: the main-namespace API takes a cv::Rect, and the
        # legacy Boosting tracker segfaults in update() after init with a fractional Rect2d
        xi, yi = int(round(x0)), int(round(y0))
        rect = (xi, yi, max(1, min(int(round(x1)), W) - xi), max(1, min(int(round(y1)), H) - yi))
        if self.namespace != "cv2":
            rect = tuple(float(v) for v in rect)
        self._tracker = self._factory()
        try:
            r = self._tracker.init(img, rect)
            self.ok = r is None or bool(r)    # the main namespace returns None, legacy a bool
            if self.ok and self.name in _TRAIN_ON_INIT_IMAGE:
                self.ok = bool(self._tracker.update(img)[0])
        except cv2.error:
            self.ok = False
        return self.ok

    def update(self, image) -> np.ndarray:
        if self._tracker is None:
            raise RuntimeError(f"{self.name}: call init() before update()")
        nan = np.full(4, np.nan, np.float32)
        if not self.ok:
            return nan
        try:
            found, rect = self._tracker.update(_as_bgr(image))
        except cv2.error:
            return nan
        box = np.asarray(rect, np.float32).reshape(-1)
        if not found or box.shape != (4,) or not np.all(np.isfinite(box)) or box[2] <= 0 or box[3] <= 0:
            return nan
        return box


def make_peer(name: str) -> Peer:
    """A fresh peer tracker by name (case-insensitive, one of :data:`PAPER_PEERS`)."""
    canon, ns, factory = _resolve(name)
    if factory is None:
        raise ValueError(f"peer tracker {canon} is not in this OpenCV ({cv2.__version__}); "
                         f"available: {available_peers()}")
    return Peer(canon, ns, factory)


def iter_peer(name: str, frames: Iterable[Tuple[int, np.ndarray]], init_box
              ) -> Iterator[Tuple[int, np.ndarray, float]]:
    """Run peer ``name`` frame by frame: yields ``(t_us, box float32 (4,), update_s)`` per
    frame of ``frames`` (``(t_us, image uint8)`` in time order).  The first frame initialises
    it with ``init_box`` (the only ground truth it gets) and yields that box (NaN if OpenCV
    refused it) with ``update_s`` NaN; later frames yield :meth:`Peer.update`'s box."""
    peer = make_peer(name)
    t_last = None
    for i, (t_us, img) in enumerate(frames):
        t_us = int(t_us)
        if t_last is not None and t_us <= t_last:
            raise ValueError(f"frame times must increase: {t_us} µs follows {t_last} µs")
        t_last = t_us
        if i == 0:
            ok = peer.init(img, init_box)
            box = np.asarray(init_box, np.float32).reshape(4) if ok else np.full(4, np.nan, np.float32)
            yield t_us, box, float("nan")
        else:
            t0 = time.perf_counter()
            box = peer.update(img)
            yield t_us, box, time.perf_counter() - t0


def run_peer(name: str, frames: Iterable[Tuple[int, np.ndarray]], init_box,
             progress=None) -> Tuple[np.ndarray, np.ndarray, float]:
    """Run peer ``name`` over ``frames`` (``(t_us, image uint8)`` in time order), initialised
    on the first with ``init_box`` (the only ground truth it gets).

    Returns ``(t_us int64 (N,), boxes float32 (N, 4), seconds per update)``: one box per
    frame (the first is the initial box, or NaN if OpenCV refused it; NaN rows where the
    tracker failed); the time is the mean wall time of ``update`` (NaN for < 2 frames).
    ``progress(n_done, None)`` after each frame.
    """
    ts, boxes, dts = [], [], []
    for t_us, box, dt in iter_peer(name, frames, init_box):
        ts.append(t_us)
        boxes.append(box)
        if dt == dt:
            dts.append(dt)
        if progress is not None:
            progress(len(ts), None)
    return (np.asarray(ts, np.int64), np.asarray(boxes, np.float32).reshape(-1, 4),
            float(np.mean(dts)) if dts else float("nan"))


class PeerCrashed(RuntimeError):
    """The process running a peer died (OpenCV's legacy trackers can segfault)."""

    def __init__(self, msg: str, exitcode):
        super().__init__(msg)
        self.exitcode = exitcode


def _stream_child(conn, func, args):
    try:
        for item in func(*args):
            conn.send(item)
        conn.send(("__done__",))
    except BaseException as e:   # an ordinary error: hand it to the parent
        try:
            conn.send(("__error__", e))
        except Exception:
            conn.send(("__error__", RuntimeError(repr(e))))
    finally:
        conn.close()


def stream_in_subprocess(func: Callable, args: tuple) -> Iterator:
    """Run the generator function ``func(*args)`` (module-level, picklable arguments) in a
    fresh process and yield what it yields.  An exception in it is re-raised here; if the
    process dies (segfault, kill) :class:`PeerCrashed` is raised after the items it sent."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")   # no fork: OpenCV's thread pool does not survive it
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_stream_child, args=(send, func, args), daemon=True)
    proc.start()
    send.close()
    try:
        while True:
            try:
                msg = recv.recv()
            except EOFError:
                proc.join()
                raise PeerCrashed(f"{getattr(func, '__name__', func)} died (exit code "
                                  f"{proc.exitcode})", proc.exitcode) from None
            if isinstance(msg, tuple) and len(msg) == 1 and msg[0] == "__done__":
                break
            if isinstance(msg, tuple) and len(msg) == 2 and msg[0] == "__error__":
                raise msg[1]
            yield msg
    finally:
        recv.close()
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()
            proc.join()


# --------------------------------------------------------------------------- sequences


def _frame_files(seq_dir: str) -> List[str]:
    """The frame files ``SEQ/240/<seq>/00001.jpg ...`` in order (nothing else is read)."""
    seq_dir = os.path.normpath(str(seq_dir))
    name = os.path.basename(seq_dir)
    d = os.path.join(seq_dir, "240", name)
    if not os.path.isdir(d):
        raise FileNotFoundError(f"{seq_dir} is not an NFS sequence: no frame folder {d} "
                                "(expected SEQ/240/SEQ.txt and SEQ/240/SEQ/00001.jpg ...)")
    files = sorted(f for f in os.listdir(d) if f.lower().endswith(".jpg"))
    for k, f in enumerate(files, 1):
        stem = os.path.splitext(f)[0]
        if not stem.isdigit() or int(stem) != k:
            raise ValueError(f"{d}: expected frame {k:05d}.jpg, found {f} (frames must be 1..N)")
    if not files:
        raise ValueError(f"{d} holds no .jpg frames")
    return [os.path.join(d, f) for f in files]


def aps_frame_indices(n_frames: int, fps: float = 240.0, aps_rate_hz: float = 30.0) -> np.ndarray:
    """0-based source frames that become APS frames: for each APS instant ``i / aps_rate``
    the nearest source frame (a tie goes to the later one, as in
    :class:`dashnet_ros.davis.stream.DavisSimulator`), each frame at most once."""
    if not aps_rate_hz > 0 or not fps > 0:
        raise ValueError(f"fps and aps_rate_hz must be > 0, got {fps}, {aps_rate_hz}")
    if n_frames < 1:
        return np.zeros(0, np.int64)
    inst = np.arange(int(math.ceil(n_frames / fps * aps_rate_hz)) + 1) / aps_rate_hz
    k = np.floor(inst * fps + 0.5 + 1e-9).astype(np.int64)
    return np.unique(k[k < n_frames])


def sequence_frames(seq_dir: str, indices=None, fps: float = 240.0) -> Iterator[Tuple[int, np.ndarray]]:
    """``(t_us, uint8 grey image)`` of a sequence's frames (all, or the 0-based ``indices``);
    frame k (0-based) at ``round(k * 1e6 / fps)`` µs; grey = BT.601 luma rounded like the
    simulator's APS frames."""
    from dashnet_ros.davis.sources import to_luminance

    files = _frame_files(seq_dir)
    idx = range(len(files)) if indices is None else [int(i) for i in indices]
    for k in idx:
        img = cv2.imread(files[k], cv2.IMREAD_UNCHANGED)
        if img is None or img.size == 0:
            raise ValueError(f"cannot decode frame {files[k]} (empty or truncated)")
        grey = np.clip(to_luminance(img) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        yield int(round(k * 1e6 / fps)), grey


def _iter_on_sequence(seq_dir, name, indices, fps, init_box):
    return iter_peer(name, sequence_frames(seq_dir, indices, fps), init_box)


def frame_width(seq_dir: str) -> int:
    """Width in pixels of an NFS sequence's frames (of its first frame)."""
    import cv2

    path = _frame_files(seq_dir)[0]
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f"{path}: not a readable image")
    return int(img.shape[1])


def run_peer_on_sequence(seq_dir: str, name: str, regime: str = "aps", *, fps: float = 240.0,
                         aps_rate_hz: float = 30.0, progress=None, isolate: bool = True,
                         info: Optional[dict] = None):
    """Run a peer on an NFS-layout sequence in ``regime`` (``'aps'`` or ``'frames'``).  Reads
    only the frames and the FIRST annotation line.  Returns :func:`run_peer`'s triple.

    ``isolate``: run the tracker in a child process, so that an OpenCV crash costs only this
    run: the frames after the crash get NaN (the tracker is dead = failed) and ``info`` (if
    given) receives ``crashed=True, crash_frame=<0-based index in the run>, exitcode``.
    """
    from dashnet_ros.davis.sources import read_first_annotation

    if regime not in REGIMES:
        raise ValueError(f"regime must be one of {REGIMES}, got {regime!r}")
    make_peer(name)
    init_box = read_first_annotation(seq_dir)
    n = len(_frame_files(seq_dir))
    idx = aps_frame_indices(n, fps, aps_rate_hz) if regime == "aps" else np.arange(n)
    if info is not None:
        info.update(crashed=False)
    if not isolate:
        return run_peer(name, sequence_frames(seq_dir, idx, fps), init_box, progress=progress)
    all_t = [int(round(int(k) * 1e6 / fps)) for k in idx]
    ts, boxes, dts = [], [], []
    try:
        for t_us, box, dt in stream_in_subprocess(
                _iter_on_sequence, (seq_dir, name, [int(k) for k in idx], fps, init_box)):
            ts.append(t_us)
            boxes.append(box)
            if dt == dt:
                dts.append(dt)
            if progress is not None:
                progress(len(ts), None)
    except PeerCrashed as e:
        log.warning("%s crashed on %s (%s regime) at frame %d of %d (exit code %s); the rest "
                    "count as failures", name, seq_dir, regime, len(ts), len(all_t), e.exitcode)
        if info is not None:
            info.update(crashed=True, crash_frame=len(ts), exitcode=e.exitcode)
        for t_us in all_t[len(ts):]:
            ts.append(t_us)
            boxes.append(np.full(4, np.nan, np.float32))
            if progress is not None:
                progress(len(ts), None)
    return (np.asarray(ts, np.int64), np.asarray(boxes, np.float32).reshape(-1, 4),
            float(np.mean(dts)) if dts else float("nan"))


def evaluation_gt(seq_dir: str):
    """``(t_us, boxes, kind)``: the ``gt_8x.txt`` sidecar if present (kind ``'gt_8x'``), else
    the per-frame NFS annotation (kind ``'per_frame'``)."""
    from dashnet_ros.eval.heldout import GT_SIDECAR, read_gt_sidecar

    if os.path.isfile(os.path.join(seq_dir, GT_SIDECAR)):
        t, b = read_gt_sidecar(seq_dir)
        return t, b, "gt_8x"
    from dashnet_ros.davis.sources import NFSSequence

    t, b = NFSSequence(seq_dir).gt_track()
    return t, b, "per_frame"


def evaluate_sequence(seq_dir: str, trackers: Optional[Sequence[str]] = None,
                      regimes: Sequence[str] = REGIMES, *, aps_rate_hz: float = 30.0,
                      progress=None, isolate: bool = True) -> dict:
    """Run every tracker in every regime on one sequence and score it (ZOH at the GT
    instants).  Returns ``{"sequence", "gt", "n_frames", "results": {tracker: {regime:
    metrics + sec_per_update, updates_per_s, n_updates, crashed[, crash_frame, exitcode]}}}``.
    ``progress(n, None)`` per frame; ``isolate``: see :func:`run_peer_on_sequence`."""
    trackers = list(available_peers() if trackers is None else trackers)
    for r in regimes:
        if r not in REGIMES:
            raise ValueError(f"regime must be one of {REGIMES}, got {r!r}")
    gt_t, gt_b, gt_kind = evaluation_gt(seq_dir)
    out = {"sequence": os.path.basename(os.path.normpath(seq_dir)), "gt": gt_kind,
           "n_frames": len(_frame_files(seq_dir)), "results": {}}
    for name in trackers:
        res = out["results"].setdefault(make_peer(name).name, {})
        for regime in regimes:
            info: dict = {}
            t, b, spu = run_peer_on_sequence(seq_dir, name, regime, aps_rate_hz=aps_rate_hz,
                                             progress=progress, isolate=isolate, info=info)
            m = score(t, b, gt_t, gt_b)
            m.update(sec_per_update=spu, n_updates=int(max(len(t) - 1, 0)),
                     updates_per_s=(1.0 / spu) if spu and spu > 0 else float("nan"), **info)
            res[regime] = m
    return out


SUMMARY_KEYS = ("miou", "auc", "precision20", "robustness", "updates_per_s")


def evaluate_set(root: str, trackers: Optional[Sequence[str]] = None,
                 regimes: Sequence[str] = REGIMES, *, aps_rate_hz: float = 30.0,
                 progress=None, isolate: bool = True) -> dict:
    """:func:`evaluate_sequence` on every NFS sequence directly under ``root``; the summary is
    the mean over sequences of each metric, per tracker and regime."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"held-out root {root} does not exist")
    seqs = sorted(d for d in os.listdir(root) if not d.startswith(".")
                  and os.path.isdir(os.path.join(root, d, "240")))
    if not seqs:
        raise ValueError(f"{root} holds no NFS sequences (SEQ/240/SEQ.txt)")
    per = [evaluate_sequence(os.path.join(root, s), trackers, regimes, aps_rate_hz=aps_rate_hz,
                             progress=progress, isolate=isolate) for s in seqs]
    summary: Dict[str, Dict[str, dict]] = {}
    for name in per[0]["results"]:
        for regime in regimes:
            rows = [p["results"][name][regime] for p in per]
            summary.setdefault(name, {})[regime] = dict(
                {k: float(np.nanmean([r[k] for r in rows])) for k in SUMMARY_KEYS},
                crashes=int(sum(bool(r.get("crashed")) for r in rows)))
    return {"root": os.path.abspath(root), "sequences": per, "summary": summary,
            "opencv": cv2.__version__, "missing_peers": missing_peers()}
