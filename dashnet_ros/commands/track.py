"""``dashnet track SEQ --out FILE [--mode ...] [--init X,Y,W,H]``: track one sequence offline.

SEQ is an NFS-layout sequence directory (``SEQ/240/<seq>.txt`` + frames, 240 fps), a
hybrid dataset file, a DAVIS recording (``.aedat`` jAER 2.0 / 3.1, ``.aedat4``: its own
events and APS frames, not simulated) or a video file (simulated as a DAVIS at the video's
frame rate).  The tracker is initialised from the first annotation line only and sees
nothing else of the ground truth; recordings and videos have none, so ``--init`` gives the
target's box (at the first event of a recording, in the first frame of a video; it also
overrides an annotation).  Writes one line per output, ``t_s,x,y,w,h`` (seconds from the
first frame, frame k at (k-1)/240 s, or from a recording's first event; top-left box in
the input's pixels; ``nan`` where the tracker has no estimate).
"""
from __future__ import annotations

import os

import numpy as np

from ..cli import UserError


def write_track(path: str, t_us: np.ndarray, boxes: np.ndarray, t0_us: int = 0) -> None:
    """Write ``t_s,x,y,w,h`` lines atomically."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = path + ".partial"
    with open(tmp, "w") as f:
        for t, b in zip(t_us, boxes):
            f.write(f"{(t - t0_us) / 1e6:.6f},{b[0]:.3f},{b[1]:.3f},{b[2]:.3f},{b[3]:.3f}\n")
    os.replace(tmp, path)


def box_arg(text: str):
    """argparse type of `--init`: four comma-separated numbers x,y,w,h."""
    import argparse

    try:
        box = [float(v) for v in text.split(",")]
    except ValueError:
        box = []
    if len(box) != 4:
        raise argparse.ArgumentTypeError(f"expected four numbers x,y,w,h, got {text!r}")
    return box


def run(args) -> int:
    from tqdm import tqdm

    from ..eval.harness import check_tcf_time_scale
    from ..eval.runner import MODE_STREAMS, open_input, track
    from ..tracking import HybridTracker

    from ..threads import set_threads

    set_threads(args.threads)
    tracker_mode, stream = MODE_STREAMS[args.mode]
    try:
        check_tcf_time_scale(args.tcf_time_scale_s)
        inp = open_input(args.seq, aps_rate_hz=args.aps_rate_hz, interp_factor=args.interp_factor,
                         dvs_model=args.dvs_model, init_box=args.init, labels=args.labels)
        tracker = HybridTracker.from_weights(
            inp.width, inp.height, mode=tracker_mode, snn_preset=args.snn_preset, ann_preset=args.ann_preset,
            snn_weights=args.snn_weights, ann_weights=args.ann_weights, aps_rate_hz=args.aps_rate_hz,
            tcf_time_scale_s=args.tcf_time_scale_s)
    except (FileNotFoundError, ValueError) as e:
        raise UserError(str(e)) from None
    total = inp.duration_us / 1e6 if inp.duration_us else None     # a recording's length is not known upfront
    with tqdm(total=total, unit="s", desc=f"tracking {inp.name}", leave=False,
              bar_format="{l_bar}{bar}| {n:.2f}/{total:.2f} s sensor time [{elapsed}<{remaining}]" if total
              else "{desc}: {n:.2f} s sensor time [{elapsed}]") as bar:
        out = track(inp, tracker, lambda done, total: bar.update(done / 1e6 - bar.n))
    if stream not in out:
        raise UserError(f"mode {args.mode!r} produced no output (is the sequence empty?)")
    t_us, boxes = out[stream]
    write_track(args.out, t_us, boxes, inp.t0_us)
    print(f"{len(t_us)} boxes ({args.mode}) -> {args.out}")
    return 0


def add_parser(sub):
    p = sub.add_parser("track", help="track one sequence offline (NFS layout, dataset file, DAVIS recording or video)", description=__doc__)
    p.add_argument("seq", help="NFS sequence directory, hybrid dataset .h5, DAVIS recording (.aedat, .aedat4) or video file")
    p.add_argument("--init", type=box_arg, metavar="X,Y,W,H",
                   help="the target's initial box in the input's pixels (needed for videos, and recordings "
                        "without labels; overrides an annotation)")
    p.add_argument("--labels", metavar="FILE",
                   help="a recording's jAER target labels (TargetLocations); the tracker starts at the first "
                        "visible target and reads no further (default: REC-targets.txt beside REC.aedat)")
    p.add_argument("--out", required=True, help="output file: t_s,x,y,w,h per line")
    p.add_argument("--mode", default="hybrid", choices=["hybrid", "snn", "snn-origin", "ann", "ann-nat"])
    p.add_argument("--snn-preset", default="fast", choices=["fast", "paper"])
    p.add_argument("--ann-preset", default="fast", choices=["fast", "paper"])
    p.add_argument("--snn-weights", help="SNN checkpoint (default: the shipped weights of the preset)")
    p.add_argument("--ann-weights", help="ANN checkpoint (default: the shipped weights of the preset)")
    p.add_argument("--aps-rate-hz", type=float, default=30.0)
    p.add_argument("--interp-factor", type=int, default=7, choices=[0, 1, 3, 7])
    p.add_argument("--tcf-time-scale-s", type=float, default=0.0,
                   help="TCF time scale of eq. 7 in seconds (default 0: half the APS interval, as the fuser node)")
    p.add_argument("--dvs-model", default="pixel", choices=["pixel", "paper"])
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.set_defaults(func=run)
