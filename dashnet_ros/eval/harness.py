"""``dashnet eval``: run DashNet's trackers and the OpenCV peers over a set of sequences and
score every output stream the same way (causal zero-order hold at the ground-truth
instants; with an oversampled ``gt_8x.txt`` sidecar, at 8x the frame rate).

Tracker names:

=================  ==============================================================
``hybrid``         Hybrid-AT: the fused (TCF) stream of the hybrid pipeline
``snn-hybrid``     the SNN stream inside the hybrid loop (Table 2 "SNN-hybrid")
``snn-origin``     the SNN alone
``ann-at``         ANN-AT alone, scored only at its own output instants (Table 2 "ANN-AT")
``ann-at-zoh``     the same stream held between frames (Table 2 "ANN-AT (zero-order hold)")
``ann-nat``        the ANN without attention, at its own output instants
``KCF@aps`` ...    an OpenCV peer on the 30 Hz APS frames (zero-order hold)
``KCF@frames``     the same peer on every 240 fps source frame (a frame-camera reference)
=================  ==============================================================

Trackers see only the first annotation line (:mod:`.runner`, :mod:`.peers`).  Every
stream also reports its output rate and the wall-clock latency of its outputs (compute time
from the data an output used to its emission, measured in this offline run).  A sequence
that fails is reported and skipped; the rest still produce tables.
"""
from __future__ import annotations

import glob
import json
import logging
import math
import os
import time
import traceback
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from ..boxes import interpolate_track
from .metrics import score

log = logging.getLogger(__name__)

OUR_TRACKERS = ("hybrid", "snn-hybrid", "snn-origin", "ann-at", "ann-at-zoh", "ann-nat")
# tracker name -> (pipeline mode, output stream, scored at own output instants?)
_OURS = {
    "hybrid": ("hybrid", "fused", False),
    "snn-hybrid": ("hybrid", "snn", False),
    "snn-origin": ("snn-origin", "snn", False),
    "ann-at": ("ann", "ann", True),
    "ann-at-zoh": ("ann", "ann", False),
    "ann-nat": ("ann-nat", "ann", True),
}


def find_sequences(inputs: Sequence[str]) -> List[str]:
    """NFS sequence dirs, ``.h5`` files and DAVIS recordings named by ``inputs`` (a folder
    holding several is expanded; a recording is scored against the labels beside it)."""
    from ..davis.recordings import is_recording

    out = []
    for p in inputs:
        if os.path.isfile(p):
            out.append(p)
        elif os.path.isdir(os.path.join(p, "240")):
            out.append(p)
        elif os.path.isdir(p):
            subs = sorted(d for d in glob.glob(os.path.join(p, "*")) if os.path.isdir(os.path.join(d, "240")))
            subs += sorted(glob.glob(os.path.join(p, "*.h5")))
            subs += sorted(f for f in glob.glob(os.path.join(p, "*")) if is_recording(f))
            if not subs:
                raise FileNotFoundError(f"{p}: no NFS sequences (*/240/), .h5 dataset files or DAVIS recordings inside")
            out.extend(subs)
        else:
            raise FileNotFoundError(f"{p}: no such sequence, folder or dataset file")
    return out


def ground_truth(seq: str):
    """``(t_us, boxes)`` in the sequence's pixels: the 8x sidecar, the per-frame annotation,
    a dataset file's fine ground truth, or a recording's jAER target labels (its sidecar
    ``REC-targets.txt``; times on the recording's stream clock)."""
    from ..davis.recordings import is_recording

    if is_recording(seq):
        from ..davis.labels import recording_labels
        from ..davis.recordings import open_recording

        labels = recording_labels(open_recording(seq), seq)
        if labels is None:
            raise ValueError(f"{seq}: no target labels to evaluate against "
                             f"(jAER TargetLocations file {os.path.splitext(seq)[0]}-targets.txt)")
        return labels
    if os.path.isfile(seq) and not seq.endswith((".h5", ".hdf5")):
        raise ValueError(f"{seq}: a video has no ground truth to evaluate against")
    if os.path.isfile(seq):
        from ..io.dataset import HybridDataset

        with HybridDataset(seq) as ds:
            tr = ds.gt_fine_track() or ds.gt_track()
            if tr is None:
                raise ValueError(f"{seq}: no ground truth to evaluate against")
            return tr[0], ds.to_source_px(tr[1])
    from .peers import evaluation_gt

    t, b, _ = evaluation_gt(seq)
    return t, b


def _score_stream(t_us, boxes, gt_t, gt_b, at_outputs: bool, width_px: Optional[float] = None) -> dict:
    if at_outputs:
        # score only at the tracker's own output instants, against GT interpolated there
        ok = (t_us >= gt_t[0]) & (t_us <= gt_t[-1])
        g = interpolate_track(gt_t, gt_b, t_us[ok]) if ok.any() else np.zeros((0, 4))
        return score(t_us[ok], boxes[ok], t_us[ok], g, width_px)
    return score(t_us, boxes, gt_t, gt_b, width_px)


def run_ours(seq: str, trackers: Sequence[str], *, weights: Optional[dict] = None, aps_rate_hz: float = 30.0,
             interp_factor: int = 7, progress: Optional[Callable] = None,
             tcf_time_scale_s: Optional[float] = None) -> Dict[str, dict]:
    """Run the needed pipeline modes once each; score every requested stream.
    ``tcf_time_scale_s``: the TCF's time scale (eq. 7; None or 0: half the APS interval)."""
    from ..tracking import HybridTracker
    from .runner import open_input, track

    weights = weights or {}
    gt_t, gt_b = ground_truth(seq)
    modes = sorted({_OURS[t][0] for t in trackers})
    results = {}
    # simulate the DAVIS stream once; every mode runs over the same items
    inp = open_input(seq, aps_rate_hz=aps_rate_hz, interp_factor=interp_factor)
    items = list(inp.stream)
    if not inp.duration_us and items:     # a recording: its length is known once read
        last = items[-1]
        inp.duration_us = int(getattr(last, "t1_us", None) or last.t_us) - int(inp.t0_us)
    for mode in modes:
        inp.stream = items
        tracker = HybridTracker.from_weights(inp.width, inp.height, mode=mode, aps_rate_hz=aps_rate_hz,
                                             tcf_time_scale_s=tcf_time_scale_s,
                                             snn_weights=weights.get("snn"),
                                             ann_weights=weights.get("ann_nat" if mode == "ann-nat" else "ann"))
        wall0 = time.perf_counter()
        out = track(inp, _Timed(tracker), progress)
        wall = time.perf_counter() - wall0
        # from the tracker's start (a recording's first label may come after its first event)
        dur_s = max(1, (inp.duration_us or 1) - (inp.start_us - inp.t0_us)) / 1e6
        for name in trackers:
            m, stream, at_out = _OURS[name]
            if m != mode or stream not in out:
                continue
            t, b = out[stream][:2]
            r = _score_stream(t, b, gt_t, gt_b, at_out, width_px=inp.width / inp.scale_xy[0])
            lat = tracker_latency(out, stream)
            r.update(output_rate_hz=len(t) / dur_s, wall_s=wall, updates_per_s=len(t) / max(wall, 1e-9),
                     latency_ms_p50=lat[0], latency_ms_p99=lat[1],
                     boxes=[t.tolist(), b.tolist()])
            results[name] = r
    return results


class _Timed:
    """Wraps a HybridTracker so each output carries the wall time its item took to process
    (the latency from having the data to emitting the box, in this offline run)."""

    def __init__(self, tracker):
        self.tracker = tracker
        self.latencies: Dict[str, List[float]] = {}

    def init(self, box, t_us):
        self.tracker.init(box, t_us)

    def run(self, stream, progress=None):
        acc: Dict[str, list] = {}
        for item in stream:
            t0 = time.perf_counter()
            outs = self.tracker.push(item)
            dt_ms = (time.perf_counter() - t0) * 1e3
            for o in outs:
                acc.setdefault(o.source, []).append((o.t_us, o.box, dt_ms))
            if progress:
                progress(item)
        for o in self.tracker.flush():      # frames still held at the end of the stream
            acc.setdefault(o.source, []).append((o.t_us, o.box, 0.0))
        return {k: (np.array([a[0] for a in v], np.int64), np.stack([a[1] for a in v]).astype(np.float32),
                    np.array([a[2] for a in v])) for k, v in acc.items()}


def tracker_latency(out: dict, stream: str):
    v = out.get(stream)
    if v is None or len(v) < 3 or len(v[2]) == 0:
        return float("nan"), float("nan")
    lat = np.asarray(v[2])
    return float(np.percentile(lat, 50)), float(np.percentile(lat, 99))


def run_peers(seq: str, peers: Sequence[str], *, aps_rate_hz: float = 30.0) -> Dict[str, dict]:
    from .peers import frame_width, run_peer_on_sequence

    gt_t, gt_b = ground_truth(seq)
    width_px = frame_width(seq)
    results = {}
    n_frames = None
    for spec in peers:
        name, _, regime = spec.partition("@")
        regime = regime or "aps"
        info: dict = {}
        t, b, spu = run_peer_on_sequence(seq, name, regime, aps_rate_hz=aps_rate_hz, info=info)
        r = score(t, b, gt_t, gt_b, width_px)
        n_frames = n_frames or max(len(t), 1)
        dur_s = (gt_t[-1] - gt_t[0]) / 1e6 if len(gt_t) > 1 else 1.0
        r.update(output_rate_hz=len(t) / max(dur_s, 1e-9), updates_per_s=(1 / spu) if spu and spu > 0 else float("nan"),
                 latency_ms_p50=spu * 1e3 if spu == spu else float("nan"), latency_ms_p99=float("nan"),
                 boxes=[t.tolist(), b.tolist()], **info)
        results[f"{name}@{regime}"] = r
    return results


def check_tcf_time_scale(time_scale_s: Optional[float]) -> None:
    """Refuse a TCF time scale that is not a finite number of seconds >= 0 (0: the default)."""
    if time_scale_s is not None and not (time_scale_s >= 0 and math.isfinite(time_scale_s)):
        raise ValueError(f"TCF time scale must be a number of seconds > 0 (0 = half the APS interval), "
                         f"got {time_scale_s!r}")


def evaluate(inputs: Sequence[str], trackers: Sequence[str], out_dir: str, *, weights: Optional[dict] = None,
             aps_rate_hz: float = 30.0, interp_factor: int = 7, progress=None,
             tcf_time_scale_s: Optional[float] = None) -> dict:
    """Evaluate every tracker on every sequence; writes ``out_dir/results.json`` (per
    sequence and averaged), ``summary.md`` and ``success.png``.  Returns the summary dict.
    ``tcf_time_scale_s``: the TCF's time scale (eq. 7; None or 0: half the APS interval)."""
    check_tcf_time_scale(tcf_time_scale_s)
    seqs = find_sequences(inputs)
    ours = [t for t in trackers if t in _OURS]
    peers = [t for t in trackers if t not in _OURS]
    unknown = [t for t in ours if t not in OUR_TRACKERS]
    if unknown:
        raise ValueError(f"unknown tracker(s) {unknown}")
    per_seq, failed = {}, {}
    for i, seq in enumerate(seqs):
        name = os.path.splitext(os.path.basename(os.path.normpath(seq)))[0]
        try:
            res = {}
            if ours:
                res.update(run_ours(seq, ours, weights=weights, aps_rate_hz=aps_rate_hz, interp_factor=interp_factor,
                                    tcf_time_scale_s=tcf_time_scale_s))
            if peers and os.path.isdir(seq):
                res.update(run_peers(seq, peers, aps_rate_hz=aps_rate_hz))
            per_seq[name] = res
        except Exception as e:  # noqa: BLE001 - report, skip, go on with the rest
            failed[name] = f"{type(e).__name__}: {e}"
            log.warning("sequence %s failed and is skipped: %s\n%s", seq, failed[name], traceback.format_exc())
        if progress:
            progress(i + 1, len(seqs))
    summary = summarise(per_seq)
    os.makedirs(out_dir, exist_ok=True)
    doc = {"sequences": list(per_seq), "failed": failed, "summary": summary, "per_sequence": per_seq}
    _write_json(os.path.join(out_dir, "results.json"), doc)
    _write_text(os.path.join(out_dir, "summary.md"), summary_markdown(summary, failed))
    if summary:
        from .plots import success_plot

        success_plot(summary, os.path.join(out_dir, "success.png"))
    return doc


SUMMARY_KEYS = ("miou", "auc", "precision20", "robustness", "output_rate_hz", "updates_per_s", "latency_ms_p50",
                "latency_ms_p99", "decision_acc")


def summarise(per_seq: Dict[str, Dict[str, dict]]) -> Dict[str, dict]:
    """Mean ± std over sequences of each metric, and the mean success curve, per tracker."""
    names = []
    for res in per_seq.values():
        names += [n for n in res if n not in names]
    out = {}
    for n in names:
        rows = [res[n] for res in per_seq.values() if n in res]
        s = {"n_sequences": len(rows)}
        for k in SUMMARY_KEYS:
            vals = np.array([r.get(k, np.nan) for r in rows], dtype=np.float64)
            vals = vals[np.isfinite(vals)]
            s[k] = float(vals.mean()) if len(vals) else float("nan")
            s[k + "_std"] = float(vals.std()) if len(vals) else float("nan")
        curves = np.array([r["success_curve"] for r in rows], dtype=np.float64)
        s["success_curve"] = np.nanmean(curves, axis=0).tolist()
        out[n] = s
    return out


def summary_markdown(summary: Dict[str, dict], failed: Optional[dict] = None) -> str:
    lines = ["| tracker | mIOU | success AUC | precision@20px | Rb (failure rate) | PRED18 decision | outputs/s | "
             "latency p50 / p99 (ms) |",
             "|---|---|---|---|---|---|---|---|"]
    for n, s in summary.items():
        lines.append(
            f"| {n} | {s['miou']:.3f} ± {s['miou_std']:.3f} | {s['auc']:.3f} ± {s['auc_std']:.3f} | "
            f"{s['precision20']:.3f} | {s['robustness']:.3f} | {s.get('decision_acc', float('nan')):.3f} | "
            f"{s['output_rate_hz']:.1f} | {s['latency_ms_p50']:.2f} / {s['latency_ms_p99']:.2f} |")
    if failed:
        lines += ["", "Failed sequences (skipped):", ""] + [f"- {k}: {v}" for k, v in failed.items()]
    return "\n".join(lines) + "\n"


def _write_json(path: str, obj) -> None:
    tmp = path + ".partial"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, default=float)
    os.replace(tmp, path)


def _write_text(path: str, text: str) -> None:
    tmp = path + ".partial"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
