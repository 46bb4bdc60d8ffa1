#!/usr/bin/env python3
"""Throughput of the DAVIS simulator (dashnet_ros.davis.stream / dvs) against eventify-dvs.

One clip (240x180, 240 fps, ~2 s, a textured object moving fast over a textured
background: the procedural world if it is there, else a built-in render) is run through

* our full simulator: ``DavisSimulator`` (x7 interpolation, PixelDVS, APS at 30 Hz,
  1 ms batches) — with the linear interpolator, and with the FCN when one loads;
* our ``PixelDVS`` alone on the same x7 linearly interpolated sub-frames;
* eventify-dvs (PyPI), installed with ``--no-deps`` in its own plain venv
  ``.bench-venv`` (it pins a clashing OpenCV), on the same clip written as a lossless
  video: its whole pipeline (``video_to_event_stream(..., interp=7)``) and its event
  function alone (``frame_to_event_tuples``) on the same sub-frames.

Both simulators use the same log threshold (0.2) and the same log offset (1 grey level).
Results go to ``out/bench/simulator.json`` with a machine description; a table is printed.

    .venv/bin/python bench/bench_simulator.py            # default: 2 torch threads
    .venv/bin/python bench/bench_simulator.py --no-eventify --seconds 1
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import torch  # noqa: E402

from dashnet_ros.davis.dvs import make_dvs  # noqa: E402
from dashnet_ros.davis.frames import ApsFrame, EventBatch, Frame, FrameSource  # noqa: E402
from dashnet_ros.davis.stream import DavisSimulator, linear_blend  # noqa: E402

from _machine import machine  # noqa: E402

W, H, FPS = 240, 180, 240.0
THRESHOLD = 0.2
EPS = 1.0 / 255.0          # = eventify's log(x + 1) on 0..255 grey levels
FACTOR = 7
EVENTIFY_DEFAULT_THRESHOLD = 0.05
BENCH_VENV = ROOT / ".bench-venv"


# --------------------------------------------------------------------------- the clip
def render_clip(n_frames: int):
    """(frames uint8 (N, H, W), description).  The procedural world when available."""
    try:
        from dashnet_ros.world.scenes import render_sequence
    except ImportError:
        render_sequence = None
    if render_sequence is not None:
        seed = 2  # cluttered textured background, textured prey
        src = render_sequence(seed, n_frames, W, H, FPS, camera_speed_px_per_frame=0.0,
                              max_speed_px_per_frame=10.0)
        imgs, boxes = [], []
        for f in src:
            imgs.append(f.image)
            boxes.append(f.box)
        b = np.array(boxes, np.float64)
        speed = float(np.nanmean(np.linalg.norm(np.diff(b[:, :2], axis=0), axis=1)))
        desc = (f"dashnet_ros.world render_sequence(seed={seed}), static camera, prey "
                f"mean speed {speed:.1f} px/frame")
    else:
        imgs, desc = _builtin_clip(n_frames)
    u8 = np.stack([np.clip(np.asarray(i) * 255 + 0.5, 0, 255).astype(np.uint8) for i in imgs])
    return u8, desc


def _builtin_clip(n_frames: int):
    rng = np.random.default_rng(7)
    bg = cv2.GaussianBlur(rng.uniform(0, 1, (H, W)).astype(np.float32), (0, 0), 1.5)
    bg = 0.25 + 0.5 * (bg - bg.min()) / (np.ptp(bg) + 1e-6)
    tex = cv2.GaussianBlur(rng.uniform(0, 1, (64, 64)).astype(np.float32), (0, 0), 1.0)
    tex = 0.1 + 0.8 * (tex - tex.min()) / (np.ptp(tex) + 1e-6)
    yy, xx = np.mgrid[:64, :64]
    mask = ((xx - 31.5) ** 2 + (yy - 31.5) ** 2) < 30 ** 2
    imgs = []
    for k in range(n_frames):
        a = 2 * np.pi * k / 240.0                # one turn per second, ~6 px/frame
        cx, cy = W / 2 + 80 * np.cos(a), H / 2 + 50 * np.sin(2 * a)
        M = np.float32([[1, 0, cx - 32], [0, 1, cy - 32]])
        obj = cv2.warpAffine(tex, M, (W, H))
        m = cv2.warpAffine(mask.astype(np.float32), M, (W, H))
        imgs.append(bg * (1 - m) + obj * m)
    return imgs, "built-in: textured disc on a Lissajous path over blurred noise"


class ArraySource(FrameSource):
    """Frames held in memory (so rendering/decoding is not timed)."""

    def __init__(self, frames_u8: np.ndarray, fps: float):
        self.frames = frames_u8
        self.fps = fps
        self.height, self.width = frames_u8.shape[1:]

    def __len__(self):
        return len(self.frames)

    def __iter__(self):
        for k, f in enumerate(self.frames):
            yield Frame(t_us=int(round(k * 1e6 / self.fps)), image=f.astype(np.float32) / 255.0,
                        index=k)


def write_video(frames_u8: np.ndarray, path: Path) -> Path:
    """Lossless FFV1 AVI (grey frames stored as BGR)."""
    tmp = path.with_suffix(".tmp.avi")
    wr = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"FFV1"), FPS, (W, H), isColor=True)
    if not wr.isOpened():
        raise RuntimeError("OpenCV cannot write FFV1 video here")
    for f in frames_u8:
        wr.write(cv2.cvtColor(f, cv2.COLOR_GRAY2BGR))
    wr.release()
    os.replace(tmp, path)
    # check it reads back bit-exact
    cap = cv2.VideoCapture(str(path))
    ok, f0 = cap.read()
    cap.release()
    if not ok or not np.array_equal(cv2.cvtColor(f0, cv2.COLOR_BGR2GRAY), frames_u8[0]):
        raise RuntimeError(f"{path} does not read back losslessly")
    return path


# --------------------------------------------------------------------------- our runs
def pixel_params():
    return dict(threshold_on=THRESHOLD, threshold_off=THRESHOLD, eps=EPS)


def run_full(frames_u8, interpolator, dvs_model="pixel", dvs_params=None):
    sim = DavisSimulator(ArraySource(frames_u8, FPS), width=W, height=H, interp_factor=FACTOR,
                         interpolator=interpolator, dvs_model=dvs_model,
                         dvs_params=dvs_params if dvs_params is not None else pixel_params(),
                         aps_rate_hz=30.0, batch_us=1000)
    n_ev = n_aps = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for item in sim.stream():
        if isinstance(item, EventBatch):
            n_ev += len(item.events)
        elif isinstance(item, ApsFrame):
            n_aps += 1
    return time.perf_counter() - t0, time.process_time() - c0, n_ev, n_aps


def sub_interval_times(k: int):
    t_a, t_b = int(round(k * 1e6 / FPS)), int(round((k + 1) * 1e6 / FPS))
    return [t_a + int(round(j * (t_b - t_a) / (FACTOR + 1))) for j in range(1, FACTOR + 2)]


def run_pixel_alone(frames_u8):
    """Only ``PixelDVS.step_many`` (one call per source interval, as the simulator calls
    it) is timed; the sub-frames are made outside the clock."""
    dvs = make_dvs("pixel", **pixel_params())
    f = frames_u8.astype(np.float32) / 255.0
    dvs.reset(f[0], 0)
    n_ev, wall, cpu = 0, 0.0, 0.0
    for k in range(len(f) - 1):
        subs = linear_blend(f[k], f[k + 1], FACTOR) + [f[k + 1]]
        ts = sub_interval_times(k)
        t0, c0 = time.perf_counter(), time.process_time()
        ev = dvs.step_many(subs, ts)
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
        n_ev += len(ev)
    return wall, cpu, n_ev, None


# --------------------------------------------------------------------------- eventify
EVENTIFY_SCRIPT = r"""
import json, sys, time
import numpy as np, cv2
import eventify
from eventify.dvs import video_to_event_stream, frame_to_event_tuples, interpolate_frames
from importlib.metadata import version
path, c_thresh, factor, repeats = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
out = {"version": version("eventify-dvs"), "opencv": cv2.__version__, "numpy": np.__version__}
best = None
for _ in range(repeats):
    n = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for chunk in video_to_event_stream(path, c_thresh=c_thresh, interp=factor):
        n += len(chunk)
    w, c = time.perf_counter() - t0, time.process_time() - c0
    if best is None or w < best[0]:
        best = (w, c, n)
out["full_wall_s"], out["full_cpu_s"], out["full_events"] = best
cap = cv2.VideoCapture(path)
frames = []
while True:
    ok, f = cap.read()
    if not ok:
        break
    frames.append(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY).astype(np.float32))
cap.release()
out["frames"] = len(frames)
fps = 240.0
best = None
for _ in range(repeats):
    n, wall, cpu = 0, 0.0, 0.0
    for k in range(len(frames) - 1):
        subs = interpolate_frames(frames[k], frames[k + 1], factor)
        ta, tb = int(round(k * 1e6 / fps)), int(round((k + 1) * 1e6 / fps))
        ts = [ta + int(round(j * (tb - ta) / (factor + 1))) for j in range(factor + 2)]
        for i in range(factor + 1):
            t0, c0 = time.perf_counter(), time.process_time()
            ev = frame_to_event_tuples(subs[i], subs[i + 1], ts[i], ts[i + 1], c_thresh=c_thresh)
            wall += time.perf_counter() - t0
            cpu += time.process_time() - c0
            n += len(ev)
    if best is None or wall < best[0]:
        best = (wall, cpu, n)
out["dvs_wall_s"], out["dvs_cpu_s"], out["dvs_events"] = best
print(json.dumps(out))
"""


def ensure_bench_venv() -> Path:
    """A plain venv with numpy + OpenCV + h5py and ``eventify-dvs`` installed --no-deps."""
    py = BENCH_VENV / "bin" / "python"
    probe = [str(py), "-c", "import eventify"]
    if py.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return py
    print(f"setting up {BENCH_VENV} (plain venv, eventify-dvs --no-deps) ...", flush=True)
    base = getattr(sys, "_base_executable", None) or "python3"
    subprocess.run([base, "-m", "venv", str(BENCH_VENV)], check=True)
    pip = [str(py), "-m", "pip", "install", "-q"]
    # h5py: eventify imports it at module level (for its HDF5 writer)
    subprocess.run(pip + ["numpy", "opencv-contrib-python-headless", "h5py"], check=True)
    subprocess.run(pip + ["--no-deps", "eventify-dvs"], check=True)
    subprocess.run(probe, check=True)
    return py


def run_eventify(video: Path, c_thresh: float, repeats: int = 1) -> dict:
    """eventify-dvs on ``video`` in ``.bench-venv`` (a subprocess; only its loops timed)."""
    py = ensure_bench_venv()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["OMP_NUM_THREADS"] = "1"
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as fh:
        fh.write(EVENTIFY_SCRIPT)
        script = fh.name
    try:
        r = subprocess.run([str(py), script, str(video), str(c_thresh), str(FACTOR), str(repeats)],
                           capture_output=True, text=True, env=env, cwd=tempfile.gettempdir())
    finally:
        os.unlink(script)
    if r.returncode != 0:
        raise RuntimeError(f"eventify run failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- report
def machine_info() -> dict:
    import cv2

    return machine(opencv=cv2.__version__, load_avg_1min_at_end=os.getloadavg()[0] if hasattr(os, "getloadavg") else None)


def row(name, wall, cpu, n_frames, n_events, clip_s, note=""):
    """Throughput from wall time; CPU time (all threads of the process) beside it, since on
    a shared machine the wall time also measures the neighbours."""
    return {
        "name": name,
        "wall_s": round(wall, 4),
        "cpu_s": round(cpu, 4),
        "source_frames_per_s": round((n_frames - 1) / wall, 1),
        "events": int(n_events),
        "events_per_s": round(n_events / wall, 1),
        "real_time_factor": round(clip_s / wall, 3),
        "real_time_factor_cpu": round(clip_s / cpu, 3) if cpu > 0 else None,
        "note": note,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="clip length (default 2 s)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--repeats", type=int, default=3, help="best of N runs (default 3)")
    ap.add_argument("--fcn-seconds", type=float, default=0.25,
                    help="clip length for the FCN-interpolated run (slow on CPU), 0 to skip")
    ap.add_argument("--no-eventify", action="store_true", help="skip the eventify-dvs comparison")
    ap.add_argument("--out", default=str(ROOT / "out" / "bench" / "simulator.json"))
    args = ap.parse_args(argv)
    if args.seconds <= 0 or args.threads < 1 or args.repeats < 1:
        ap.error("--seconds must be > 0, --threads and --repeats >= 1")
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None

    n_frames = int(round(args.seconds * FPS)) + 1
    clip_s = (n_frames - 1) / FPS
    print(f"rendering the clip: {n_frames} frames {W}x{H} @ {FPS:g} fps ...", flush=True)
    frames, clip_desc = render_clip(n_frames)
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)

    video = None
    if not args.no_eventify:
        ensure_bench_venv()
        video = write_video(frames, out_path.parent / "simulator_clip.avi")

    # the runs, interleaved repeat by repeat (the machine may be shared): best of N each
    runs = {
        "full_pixel": lambda: run_full(frames, linear_blend),
        "full_paper": lambda: run_full(frames, linear_blend, "paper", {"threshold": 0.1}),
        "pixel_alone": lambda: run_pixel_alone(frames),
    }
    if video is not None:
        runs["eventify_same"] = lambda: run_eventify(video, THRESHOLD)
        runs["eventify_default"] = lambda: run_eventify(video, EVENTIFY_DEFAULT_THRESHOLD)
    best = {}
    for rep in range(args.repeats):
        for name, fn in runs.items():
            r = fn()
            key = r["dvs_wall_s"] if isinstance(r, dict) else r[0]
            if name not in best or key < best[name][0]:
                best[name] = (key, r)
            print(f"  repeat {rep + 1}/{args.repeats} {name}: {key:.3f} s", flush=True)

    rows = []
    wall, cpu, n_ev, n_aps = best["full_pixel"][1]
    rows.append(row("ours: full simulator, linear x7, PixelDVS", wall, cpu, n_frames, n_ev,
                    clip_s, f"{n_aps} APS frames"))
    wall, cpu, n_ev, n_aps = best["full_paper"][1]
    rows.append(row("ours: full simulator, linear x7, PaperDVS (θ=0.1 linear)", wall, cpu,
                    n_frames, n_ev, clip_s, f"{n_aps} APS frames"))
    wall, cpu, n_ev, _ = best["pixel_alone"][1]
    rows.append(row("ours: PixelDVS alone (x7 sub-frames)", wall, cpu, n_frames, n_ev, clip_s,
                    "only step_many() timed"))

    fcn_note = None
    if args.fcn_seconds > 0:
        try:
            from dashnet_ros.davis.interpolation import load_default_interpolator
            fcn = load_default_interpolator()
        except Exception as e:  # not trained/shipped yet
            fcn_note = f"FCN interpolator not available: {type(e).__name__}: {e}"
        else:
            nf = min(n_frames, int(round(args.fcn_seconds * FPS)) + 1)
            wall, cpu, n_ev, _ = run_full(frames[:nf], fcn)
            rows.append(row("ours: full simulator, FCN x7, PixelDVS", wall, cpu, nf, n_ev,
                            (nf - 1) / FPS, f"first {nf} frames"))
            fcn_note = "FCN interpolator: load_default_interpolator()"

    ev_info = None
    if video is not None:
        ev_info = {"same_threshold": best["eventify_same"][1],
                   "default_threshold": best["eventify_default"][1]}
        for key, c in (("same_threshold", THRESHOLD), ("default_threshold", EVENTIFY_DEFAULT_THRESHOLD)):
            e = ev_info[key]
            rows.append(row(f"eventify-dvs {e['version']} c={c:g}: video_to_event_stream interp=7",
                            e["full_wall_s"], e["full_cpu_s"], n_frames, e["full_events"], clip_s,
                            "includes video decoding"))
            rows.append(row(f"eventify-dvs c={c:g}: frame_to_event_tuples alone (x7)",
                            e["dvs_wall_s"], e["dvs_cpu_s"], n_frames, e["dvs_events"], clip_s,
                            "only the event function timed"))

    result = {
        "clip": {"width": W, "height": H, "fps": FPS, "frames": n_frames, "seconds": clip_s,
                 "description": clip_desc, "interp_factor": FACTOR, "threshold_log": THRESHOLD,
                 "eps": EPS},
        "machine": dict(machine_info(), load_avg_1min_at_start=load_start),
        "interpolator": "linear_blend (dashnet_ros.davis.stream)",
        "fcn": fcn_note,
        "eventify": ev_info,
        "results": rows,
    }
    pix = next(r for r in rows if r["name"].startswith("ours: PixelDVS alone"))
    full = rows[0]
    checks = {"full_simulator_real_time": full["real_time_factor"] >= 1.0,
              "full_simulator_real_time_by_cpu_time": full["real_time_factor_cpu"] >= 1.0}
    if ev_info:
        evd = next(r for r in rows if "frame_to_event_tuples" in r["name"])  # same threshold
        checks["pixeldvs_vs_eventify_speedup"] = round(evd["wall_s"] / pix["wall_s"], 3)
        checks["pixeldvs_at_least_as_fast_as_eventify"] = pix["wall_s"] <= evd["wall_s"]
        evf = next(r for r in rows if "video_to_event_stream" in r["name"])  # same threshold
        checks["full_simulator_vs_eventify_pipeline_speedup"] = round(evf["wall_s"] / full["wall_s"], 3)
    result["checks"] = checks
    tmp = out_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, out_path)

    m = result["machine"]
    print(f"\nclip: {clip_desc}; {n_frames} frames, {clip_s:.2f} s")
    print(f"machine: {m['cpu_model']}, {m['cpu_cores']} cores, torch threads {m['torch_threads']}, "
          f"load average {m['load_avg_1min_at_start']} -> {m['load_avg_1min_at_end']}")
    hdr = (f"{'run':58s} {'wall s':>7s} {'cpu s':>7s} {'src fr/s':>9s} {'events':>9s} "
           f"{'Mev/s':>7s} {'x real':>7s} {'x real(cpu)':>11s}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(f"{r['name'][:58]:58s} {r['wall_s']:7.3f} {r['cpu_s']:7.3f} "
              f"{r['source_frames_per_s']:9.1f} {r['events']:9d} {r['events_per_s'] / 1e6:7.3f} "
              f"{r['real_time_factor']:7.2f} {r['real_time_factor_cpu']:11.2f}")
    if fcn_note:
        print(fcn_note)
    print("checks:", json.dumps(checks))
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
