"""``dashnet table1``: the simulator's frame accuracy with and without FCN interpolation
(paper Table 1, §4.1) on held-out procedural sequences.

Each sequence (scene seeds from ``--first-seed``, never trained on) is rendered at the low
input rate ``r`` (``--fps``, 15 Hz as in the paper).  The ground truth is the same scene
oversampled with ``render_at`` at 2r, 4r and 8r.  Columns:

* ``without interpolation``: the input frames, zero-order held;
* ``interpolation xN`` (N = 1, 3, 7): N frames interpolated between adjacent input frames,
  i.e. a (N+1) r video.

Two comparisons, both on grey levels 0..255 (float, the frames times 255):

1. **common grid** (the main table): every column against the 8r ground truth at the
   7 times strictly between each pair of input frames; a column supplies at each such time
   its latest frame (zero-order hold), which is what a frame consumer sees.
2. **own rate**: each column's in-between frames against the ground truth at their own
   times (2r for x1, 4r for x3, 8r for x7); for ``without`` the held input frame at the
   2r midpoints.

Per sequence: RMSE over all compared pixels and PSNR = 20 log10(255 / RMSE); the table
reports mean ± std over sequences, for the FCN interpolator (eq. 13) and for linear
blending.  ``--events`` adds the DVS view: the per-pixel DVS model fed each column's
frames vs fed the 8r ground truth (event counts per pixel in bins of T/8).
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

import numpy as np

from dashnet_ros.cli import UserError

FACTORS = (1, 3, 7)
COLUMNS = ("without", "x1", "x3", "x7")
MODES = ("common_grid", "own_rate")


def _interpolate_all(interp, frames: Sequence[np.ndarray]) -> Dict[int, list]:
    """``{f: [interp(frames[i], frames[i + 1], f) for each pair]}`` for f in FACTORS."""
    return {f: [interp(a, b, f) for a, b in zip(frames[:-1], frames[1:])] for f in FACTORS}


def _column_frames(mids: Dict[int, list], frames: Sequence[np.ndarray], i: int) -> Dict[str, list]:
    """For input pair ``i``: per column the frame shown at each of the 8r grid times
    ``k T / 8``, k = 1..7 (zero-order hold of the column's own frames)."""
    a = frames[i]
    out = {"without": [a] * 7}
    for f in FACTORS:
        step = 8 // (f + 1)  # grid steps between the column's frames
        seq = [a] + list(mids[f][i])
        out[f"x{f}"] = [seq[k // step] for k in range(1, 8)]
    return out


def sequence_errors(mids: Dict[int, list], frames: Sequence[np.ndarray],
                    gt_grid: Sequence[Sequence[np.ndarray]]) -> Dict:
    """Squared-error sums and pixel counts of one sequence, per mode and column.

    ``frames``: input frames (N) in [0, 1]; ``mids``: see :func:`_interpolate_all`;
    ``gt_grid[i]``: the 7 true frames strictly between ``frames[i]`` and ``frames[i + 1]``
    at ``k T / 8``.
    """
    acc = {m: {c: [0.0, 0] for c in COLUMNS} for m in MODES}
    for i in range(len(frames) - 1):
        cols = _column_frames(mids, frames, i)
        gt = [g * 255.0 for g in gt_grid[i]]
        for c in COLUMNS:
            shown = cols[c]
            for k in range(7):
                se = float(np.sum((shown[k] * 255.0 - gt[k]) ** 2))
                acc["common_grid"][c][0] += se
                acc["common_grid"][c][1] += gt[k].size
            # own rate: only the column's own in-between frames at their times
            f = 1 if c == "without" else int(c[1:])
            step = 8 // (f + 1)
            for k in range(step, 8, step):
                se = float(np.sum((shown[k - 1] * 255.0 - gt[k - 1]) ** 2))
                acc["own_rate"][c][0] += se
                acc["own_rate"][c][1] += gt[k - 1].size
    return acc


def event_counts(frames: Sequence[np.ndarray], sub: Sequence[Sequence[np.ndarray]], period_us: float,
                 dvs_params: Optional[Dict] = None) -> np.ndarray:
    """ON and OFF event counts per pixel in bins of ``T / 8`` of the per-pixel DVS model
    (``dashnet_ros.davis.dvs``; same seed, hence the same pixel mismatch, for every stream)
    fed ``frames`` with ``sub[i]`` (equally spaced frames strictly between ``frames[i]``
    and ``frames[i + 1]``; empty: none).  Returns (N - 1, 8, 2, H, W) int16."""
    from dashnet_ros.davis.dvs import make_dvs

    dvs = make_dvs("pixel", **(dvs_params or {}))
    dvs.reset(frames[0], 0)
    h, w = frames[0].shape
    counts = np.zeros((len(frames) - 1, 8, 2, h, w), np.int16)
    for i in range(len(frames) - 1):
        n = len(sub[i]) + 1
        t0 = i * period_us
        times = [int(round(t0 + m / n * period_us)) for m in range(1, n + 1)]
        ev = dvs.step_many(list(sub[i]) + [frames[i + 1]], times)
        if len(ev):
            # events lie in (t_i, t_{i+1}]: bin k covers (t_i + k T/8, t_i + (k+1) T/8]
            k = np.ceil((ev["t_us"] - t0) / (period_us / 8)).astype(np.intp) - 1
            np.add.at(counts[i], (np.clip(k, 0, 7), (ev["p"] < 0).astype(np.intp),
                                  ev["y"].astype(np.intp), ev["x"].astype(np.intp)), 1)
    return counts


def compute_table1(interpolators: Dict[str, object], seeds: Sequence[int], *, fps: float = 15.0,
                   seconds: float = 2.0, width: int = 240, height: int = 180, events: bool = False,
                   progress: Optional[Callable[[int, int], None]] = None) -> Dict:
    """Table 1 numbers for each named interpolator (e.g. ``{"fcn": ..., "linear": ...}``).

    Returns ``{"per_sequence": {name: {mode: {column: {"rmse": [...], "psnr": [...]}}}},
    "table": {name: {mode: {column: {"rmse_mean", "rmse_std", "psnr_mean", "psnr_std"}}}}}``;
    with ``events`` also mode ``"events"``: RMSE of the per-pixel ON/OFF event counts in
    bins of T/8 vs the DVS fed the 8r ground truth, and ``count_ratio``: the stream's total
    event count over the ground truth's.
    """
    from dashnet_ros.world.scenes import TRAIN_SEED_MIN, render_sequence

    if fps <= 0 or seconds <= 0:
        raise ValueError(f"--fps and --seconds must be > 0, got {fps} and {seconds}")
    bad = [s for s in seeds if not 0 <= s < TRAIN_SEED_MIN]
    if bad:
        raise ValueError(f"Table 1 uses held-out scene seeds 0..{TRAIN_SEED_MIN - 1}; got {bad[:5]}")
    n_in = max(2, int(round(seconds * fps)) + 1)
    modes = MODES + (("events",) if events else ())
    per = {n: {m: {c: {"rmse": [], "psnr": []} for c in COLUMNS} for m in modes} for n in interpolators}
    ratios = {n: {c: [] for c in COLUMNS} for n in interpolators}
    if progress:
        progress(0, len(seeds))
    period_us = 1e6 / fps
    for j, seed in enumerate(seeds):
        src = render_sequence(int(seed), n_in, width, height, fps)
        frames = [src.render_at(i * period_us) for i in range(n_in)]
        gt = [[src.render_at((i + k / 8.0) * period_us) for k in range(1, 8)] for i in range(n_in - 1)]
        gt_counts = event_counts(frames, gt, period_us) if events else None
        for name, interp in interpolators.items():
            mids = _interpolate_all(interp, frames)
            acc = sequence_errors(mids, frames, gt)
            if events:
                acc["events"] = {}
                for c in COLUMNS:
                    sub = [[]] * (n_in - 1) if c == "without" else mids[int(c[1:])]
                    cnt = event_counts(frames, sub, period_us)
                    d = (cnt - gt_counts).astype(np.float64)
                    acc["events"][c] = [float(np.sum(d * d)), d.size]
                    ratios[name][c].append(float(cnt.sum()) / max(float(gt_counts.sum()), 1.0))
            for m in modes:
                for c in COLUMNS:
                    se, n = acc[m][c]
                    rmse = math.sqrt(se / n)
                    per[name][m][c]["rmse"].append(rmse)
                    peak = 255.0 if m != "events" else 1.0
                    per[name][m][c]["psnr"].append(20 * math.log10(peak / max(rmse, 1e-6)))
        if progress:
            progress(j + 1, len(seeds))
    table = {n: {m: {c: {
        "rmse_mean": float(np.mean(v["rmse"])), "rmse_std": float(np.std(v["rmse"])),
        "psnr_mean": float(np.mean(v["psnr"])), "psnr_std": float(np.std(v["psnr"]))}
        for c, v in per[n][m].items()} for m in modes} for n in per}
    for n in per:
        for m in modes:
            if m == "events":
                for c in COLUMNS:
                    del table[n][m][c]["psnr_mean"], table[n][m][c]["psnr_std"]
                    del per[n][m][c]["psnr"]
                    table[n][m][c]["count_ratio_mean"] = float(np.mean(ratios[n][c]))
                    table[n][m][c]["count_ratio_std"] = float(np.std(ratios[n][c]))
                    per[n][m][c]["count_ratio"] = ratios[n][c]
    return {"per_sequence": per, "table": table}


def _markdown(res: Dict, meta: Dict) -> str:
    r = meta["fps"]
    head = (f"| | without interpolation ({r:g} Hz) | interpolation x1 ({2 * r:g} Hz) "
            f"| interpolation x3 ({4 * r:g} Hz) | interpolation x7 ({8 * r:g} Hz) |")
    labels = {"fcn": "FCN (eq. 13)", "linear": "linear blending"}
    lines = [
        "# Table 1: simulator frame accuracy with and without interpolation",
        "",
        f"Held-out procedural sequences: scene seeds {meta['seeds'][0]}..{meta['seeds'][-1]} "
        f"({len(meta['seeds'])} sequences, {meta['seconds']:g} s each, {meta['width']}x{meta['height']}), "
        f"input video at {r:g} Hz; ground truth = the same scenes rendered exactly "
        f"(`render_at`) at {2 * r:g}, {4 * r:g} and {8 * r:g} Hz.",
        "Compared: frames as grey levels 0..255 (float). RMSE in grey levels and PSNR "
        "= 20 log10(255 / RMSE) per sequence; mean ± std over sequences.",
        f"FCN weights: `{meta['weights']}`.",
        "",
    ]
    titles = {
        "common_grid": (f"## Common grid: every column vs the {8 * r:g} Hz ground truth",
                        "At the 7 times strictly between adjacent input frames; each column shows its "
                        "latest frame (zero-order hold). Input instants (equal for all columns) excluded."),
        "own_rate": ("## Own rate: in-between frames vs the ground truth at their own times",
                     f"x1: the {2 * r:g} Hz midpoints; x3: 3 frames at {4 * r:g} Hz; x7: 7 frames at "
                     f"{8 * r:g} Hz; without: the held input frame at the {2 * r:g} Hz midpoints."),
    }
    titles["events"] = (
        "## DVS events: per-pixel event counts vs the DVS fed the ground truth",
        f"The per-pixel DVS model (`dashnet_ros.davis.dvs`, `pixel`, default parameters, seed 0) "
        f"is fed each column's frames; the reference is the same model fed the {8 * r:g} Hz "
        f"ground truth. RMSE of the ON and OFF event counts per pixel in bins of T/8 ({1e3 / (8 * r):.1f} ms); "
        f"total events relative to the reference.")
    modes = list(next(iter(res["table"].values())))
    for m in modes:
        lines += [titles[m][0], "", titles[m][1], "", head, "|---|---|---|---|---|"]
        for name in res["table"]:
            t = res["table"][name][m]
            lab = labels.get(name, name)
            if m == "events":
                lines.append(f"| count RMSE, {lab} | " + " | ".join(
                    f"{t[c]['rmse_mean']:.3f}±{t[c]['rmse_std']:.3f}" for c in COLUMNS) + " |")
                lines.append(f"| events / reference, {lab} | " + " | ".join(
                    f"{t[c]['count_ratio_mean']:.3f}±{t[c]['count_ratio_std']:.3f}" for c in COLUMNS) + " |")
                continue
            lines.append(f"| RMSE, {lab} | " + " | ".join(
                f"{t[c]['rmse_mean']:.3f}±{t[c]['rmse_std']:.3f}" for c in COLUMNS) + " |")
            lines.append(f"| PSNR (dB), {lab} | " + " | ".join(
                f"{t[c]['psnr_mean']:.2f}±{t[c]['psnr_std']:.2f}" for c in COLUMNS) + " |")
        lines.append("")
    lines.append("The `without interpolation` column is the same for both interpolators.")
    return "\n".join(lines) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("table1", help="paper Table 1: frame RMSE/PSNR with and without interpolation",
                              description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path, help="directory for table1.md and table1.json")
    p.add_argument("--sequences", type=int, default=20, help="held-out sequences (default %(default)s)")
    p.add_argument("--first-seed", type=int, default=100,
                   help="first held-out scene seed, 0..999 (default %(default)s)")
    p.add_argument("--fps", type=float, default=15.0, help="input video rate in Hz (default %(default)s)")
    p.add_argument("--seconds", type=float, default=2.0, help="length of each sequence (default %(default)s)")
    p.add_argument("--width", type=int, default=240)
    p.add_argument("--height", type=int, default=180)
    p.add_argument("--weights", type=Path, default=None,
                   help="FCN checkpoint (default: the shipped dashnet_ros/weights/interp.pt)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default %(default)s)")
    p.add_argument("--events", action="store_true",
                   help="also compare the DVS event counts each stream produces")
    p.set_defaults(func=run)


def run(args) -> int:
    from tqdm import tqdm

    from dashnet_ros.davis import interpolation as itp

    if args.sequences < 1:
        raise UserError(f"--sequences must be >= 1, got {args.sequences}")
    if args.threads < 1:
        raise UserError(f"--threads must be >= 1, got {args.threads}")
    from ..threads import set_threads

    set_threads(args.threads)
    try:
        fcn = itp.load_default_interpolator(args.weights)
    except (ValueError, FileNotFoundError) as e:
        raise UserError(str(e)) from None
    seeds = list(range(args.first_seed, args.first_seed + args.sequences))
    bar = tqdm(total=len(seeds), desc="table1", unit="seq", dynamic_ncols=True)

    def progress(n, total):
        bar.update(n - bar.n)

    t0 = time.perf_counter()
    try:
        res = compute_table1({"fcn": fcn, "linear": itp.LinearInterpolator()}, seeds, fps=args.fps,
                             seconds=args.seconds, width=args.width, height=args.height,
                             events=args.events, progress=progress)
    except ValueError as e:
        raise UserError(str(e)) from None
    finally:
        bar.close()
    weights = str(args.weights) if args.weights else "dashnet_ros/weights/interp.pt (shipped)"
    meta = {"fps": args.fps, "seconds": args.seconds, "width": args.width, "height": args.height,
            "seeds": seeds, "weights": weights}
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    doc = {
        "what": ("RMSE (grey levels 0..255) and PSNR (dB, peak 255) of the simulated video vs the "
                 "oversampled ground truth; per sequence, then mean/std over sequences"),
        "modes": {"common_grid": "every column vs the 8x ground truth at the 7 in-between times, "
                                 "columns zero-order held",
                  "own_rate": "each column's in-between frames vs the ground truth at their times "
                              "(without: held input frame at the 2x midpoints)",
                  "events": "RMSE of per-pixel ON/OFF event counts in bins of 1/8 input period of the pixel DVS "
                            "model fed the column's frames vs fed the 8x ground truth; count_ratio: "
                            "total events / reference (only with --events)"},
        "columns": {"without": f"input at {args.fps:g} Hz, zero-order hold",
                    "x1": f"1 interpolated frame per input pair ({2 * args.fps:g} Hz)",
                    "x3": f"3 interpolated frames ({4 * args.fps:g} Hz)",
                    "x7": f"7 interpolated frames ({8 * args.fps:g} Hz)"},
        "meta": meta, "elapsed_s": time.perf_counter() - t0, **res,
    }
    _write_atomic(out / "table1.json", json.dumps(doc, indent=1))
    md = _markdown(res, meta)
    _write_atomic(out / "table1.md", md)
    print(md)
    print(f"wrote {out / 'table1.md'} and {out / 'table1.json'}")
    return 0
