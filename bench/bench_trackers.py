#!/usr/bin/env python3
"""Tracker update rates on this CPU against OpenCV KCF and CSRT, in one run.

On one simulated DAVIS clip (procedural scene, 240x180, 240 fps source, x7 interpolation,
APS at 30 Hz) it measures, with ``--threads`` torch threads (default 2):

* SNN window + TCF: fused outputs per second (fast preset; 1, 4 and 8 windows per network
  call; the latency cost of batching is (K-1) windows = (K-1) * 480 us), with the numpy
  engine (default) and, for comparison, the torch (TorchScript) path;
* the faithful "paper" SNN and ANN (whole 240x180 frame, the §4 layer strings);
* ANN per APS frame (fast preset): frames per second, input preparation included;
* the full hybrid pipeline over the clip: outputs per second of wall time and its
  real-time factor (sensor time / wall time);
* OpenCV KCF and CSRT updates per second on the same APS frames.

Targets (issue): fast SNN window + TCF >= 2083 fused outputs/s; ANN >= 240 frames/s.
Weights: the shipped ones when present, else untrained networks (speed does not depend
on the weights except through spike sparsity; the JSON says which were used).
Results: ``out/bench/trackers.json`` (with the machine description) and a printed table.

    .venv/bin/python bench/bench_trackers.py [--threads 2] [--seconds 1.0]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from dashnet_ros.davis.frames import ApsFrame, EventBatch  # noqa: E402
from dashnet_ros.threads import set_threads  # noqa: E402

from _machine import machine  # noqa: E402
from dashnet_ros.davis.stream import DavisSimulator, linear_blend  # noqa: E402
from dashnet_ros.eval.peers import available_peers, make_peer  # noqa: E402
from dashnet_ros.fusion.tcf import TCF  # noqa: E402
from dashnet_ros.models.ann import FrameTracker  # noqa: E402
from dashnet_ros.models.checkpoint import load_checkpoint  # noqa: E402
from dashnet_ros.models.snn import SpikingTracker  # noqa: E402
from dashnet_ros.tracking import ANNRunner, HybridTracker, SNNRunner, default_weights  # noqa: E402
from dashnet_ros.world.scenes import render_sequence  # noqa: E402

W, H = 240, 180


def load_or_new(kind, preset, attention=True):
    name = {"snn": "snn", "ann": "ann" if attention else "ann_nat"}[kind]
    path = default_weights(name, preset)
    if os.path.isfile(path):
        return load_checkpoint(path, kind=kind)[0], "shipped"
    torch.manual_seed(0)
    m = SpikingTracker.from_preset(preset) if kind == "snn" else FrameTracker.from_preset(preset, attention=attention)
    return m.eval(), "untrained"


def clip(seconds: float):
    src = render_sequence(5, int(seconds * 240) + 1)
    sim = DavisSimulator(src, interp_factor=7, interpolator=linear_blend)
    items = list(sim.stream())
    return items, src.box_at(0)


def best_of(fn, repeats=3):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = fn()
        times.append((time.perf_counter() - t0) / max(n, 1))
    return min(times)


def bench_snn(items, box0, preset, k, max_windows=None, engine="numpy"):
    """SNN windows + TCF over the clip's event packets.  With ``k`` > 1 the runner waits
    until ``k`` windows are complete and runs them in one call (the latency cost: the
    first window's box waits (k - 1) windows)."""
    model, which = load_or_new("snn", preset)
    events = [i for i in items if isinstance(i, EventBatch)]
    calls = [0]

    def run():
        snn = SNNRunner(model, preset, W, H, windows_per_call=k, engine=engine)
        tcf = TCF.for_frame_rate(30.0)
        tcf.add_ann(0, box0)
        snn.init(box0, 0)
        n = calls[0] = 0
        for b in events:
            snn.add_events(b.events)
            while snn.windows_ready(b.t1_us) >= k:
                calls[0] += 1
                for o in snn.step(k):
                    tcf.fuse(o.t_us, o.box)
                    n += 1
                if max_windows and n >= max_windows:
                    return n
        return n

    n = run()  # warm-up (TorchScript profiling runs)
    s = best_of(run)
    return {"per_output_us": s * 1e6, "outputs_per_s": 1.0 / s, "windows_per_call": n / max(calls[0], 1),
            "added_latency_us": (k - 1) * 480, "engine": "numpy" if SNNRunner(model, preset, W, H, engine=engine).engine
            else "torch", "weights": which}


def bench_ann(items, box0, preset, attention=True):
    model, which = load_or_new("ann", preset, attention)
    frames = [i for i in items if isinstance(i, ApsFrame)]
    ann = ANNRunner(model, preset, W, H, attention=attention)
    ann.init(box0)

    def run():
        for f in frames:
            ann.update(f.image, box0)
        return len(frames)

    run()
    s = best_of(run, 5)
    return {"per_frame_ms": s * 1e3, "frames_per_s": 1.0 / s, "weights": which}


def bench_hybrid(items, box0, k):
    snn_m, w1 = load_or_new("snn", "fast")
    ann_m, w2 = load_or_new("ann", "fast")
    dur_s = max(i.t1_us for i in items if isinstance(i, EventBatch)) / 1e6

    def run():
        tr = HybridTracker(W, H, mode="hybrid", snn=SNNRunner(snn_m, "fast", W, H, windows_per_call=k),
                           ann=ANNRunner(ann_m, "fast", W, H))
        tr.init(box0, 0)
        n = 0
        for it in items:
            n += sum(1 for o in tr.push(it) if o.source == "fused")
        return n

    n = run()
    s = best_of(run, 2)
    return {"fused_outputs_per_s": 1.0 / s, "realtime_factor": dur_s / (s * n), "windows_per_call": k,
            "weights": f"snn {w1}, ann {w2}"}


def bench_peer(items, box0, name):
    frames = [i.image for i in items if isinstance(i, ApsFrame)]
    p = make_peer(name)
    p.init(frames[0], box0)
    t0 = time.perf_counter()
    for f in frames[1:]:
        p.update(f)
    s = (time.perf_counter() - t0) / max(len(frames) - 1, 1)
    return {"per_frame_ms": s * 1e3, "frames_per_s": 1.0 / s}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--out", default=str(ROOT / "out" / "bench" / "trackers.json"))
    a = ap.parse_args(argv)
    set_threads(a.threads)             # torch and numpy's BLAS
    items, box0 = clip(a.seconds)
    r = {"machine": machine(), "clip": {"seconds": a.seconds, "source_fps": 240, "interp_factor": 7}}
    r["snn_fast_tcf_k1"] = bench_snn(items, box0, "fast", 1)
    r["snn_fast_tcf_k1_torch"] = bench_snn(items, box0, "fast", 1, engine="torch")
    r["snn_fast_tcf_k4"] = bench_snn(items, box0, "fast", 4)
    r["snn_fast_tcf_k8"] = bench_snn(items, box0, "fast", 8)
    r["snn_paper_tcf_k1"] = bench_snn(items, box0, "paper", 1, max_windows=40)
    r["ann_fast"] = bench_ann(items, box0, "fast")
    r["ann_paper"] = bench_ann(items, box0, "paper")
    r["hybrid_fast_k1"] = bench_hybrid(items, box0, 1)
    r["hybrid_fast_k8"] = bench_hybrid(items, box0, 8)
    for name in ("KCF", "CSRT"):
        if name in available_peers():
            r[f"opencv_{name}"] = bench_peer(items, box0, name)
    kcf = r.get("opencv_KCF", {}).get("frames_per_s")
    r["targets"] = {
        "snn_fast_tcf_ge_2083_per_s": r["snn_fast_tcf_k1"]["outputs_per_s"] >= 2083,
        "snn_fast_tcf_k8_ge_2083_per_s": r["snn_fast_tcf_k8"]["outputs_per_s"] >= 2083,
        "ann_fast_ge_240_fps": r["ann_fast"]["frames_per_s"] >= 240,
        "snn_numpy_vs_torch_engine_speedup": r["snn_fast_tcf_k1"]["outputs_per_s"] / r["snn_fast_tcf_k1_torch"]["outputs_per_s"],
        "snn_fast_vs_kcf_ratio": r["snn_fast_tcf_k1"]["outputs_per_s"] / kcf if kcf else None,
    }
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out + ".partial", "w") as f:
        json.dump(r, f, indent=2)
    os.replace(a.out + ".partial", a.out)
    print(f"machine: {r['machine']}")
    print(f"{'what':28s} {'rate':>14s}  note")
    for k, v in r.items():
        if not isinstance(v, dict) or k in ("machine", "clip", "targets"):
            continue
        rate = v.get("outputs_per_s") or v.get("frames_per_s") or v.get("fused_outputs_per_s")
        note = ", ".join(f"{kk}={vv:.3g}" if isinstance(vv, float) else f"{kk}={vv}" for kk, vv in v.items()
                         if kk not in ("outputs_per_s", "frames_per_s", "fused_outputs_per_s"))
        print(f"{k:28s} {rate:14.1f}/s  {note}")
    print("targets:", r["targets"])
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
