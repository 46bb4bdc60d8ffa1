"""``dashnet overlay SEQ --out VIDEO``: a tracking-overlay video of one sequence.

Runs the hybrid pipeline (or ``--mode``) on an NFS sequence, a dataset file, a DAVIS
recording or a video (``--init X,Y,W,H`` as for ``dashnet track``), as ``dashnet track``
does, and draws the APS frame, the events of each video frame's interval and the boxes:
ground truth (red, from the sequence's annotation, drawn only — the tracker never sees
it; recordings and videos have none), SNN (blue), ANN (orange) and fused (green).
"""
from __future__ import annotations

from ..cli import UserError


def run(args) -> int:
    import numpy as np

    from ..eval.harness import ground_truth
    from ..eval.runner import open_input
    from ..tracking import HybridTracker
    from ..viz import tracking_video

    from ..threads import set_threads

    set_threads(args.threads)
    try:
        inp = open_input(args.seq, interp_factor=args.interp_factor, init_box=args.init, labels=args.labels)
        tracker = HybridTracker.from_weights(inp.width, inp.height, mode=args.mode, snn_weights=args.snn_weights,
                                             ann_weights=args.ann_weights)
    except (FileNotFoundError, ValueError) as e:
        raise UserError(str(e)) from None
    items = list(inp.stream)
    tracker.init(inp.init_box, inp.start_us)
    outputs = tracker.run(items)
    gt = None
    try:
        t, b = ground_truth(args.seq)
        sx, sy = inp.scale_xy
        gt = (np.asarray(t), np.asarray(b) * np.array([sx, sy, sx, sy], np.float32))
    except (FileNotFoundError, ValueError):
        pass
    n = tracking_video(items, outputs, args.out, gt=gt, fps=args.fps)
    print(f"{n} frames -> {args.out}")
    return 0


def add_parser(sub):
    p = sub.add_parser("overlay", help="tracking-overlay video of one sequence", description=__doc__)
    from .track import box_arg

    p.add_argument("seq", help="NFS sequence directory, hybrid dataset .h5, DAVIS recording (.aedat, .aedat4) or video file")
    p.add_argument("--init", type=box_arg, metavar="X,Y,W,H",
                   help="the target's initial box in the input's pixels (needed for videos, and recordings without labels)")
    p.add_argument("--labels", metavar="FILE",
                   help="a recording's jAER target labels (default: REC-targets.txt beside REC.aedat)")
    p.add_argument("--out", required=True, help="output video (.mp4)")
    p.add_argument("--mode", default="hybrid", choices=["hybrid", "snn-origin", "ann", "ann-nat"])
    p.add_argument("--snn-weights")
    p.add_argument("--ann-weights")
    p.add_argument("--interp-factor", type=int, default=7, choices=[0, 1, 3, 7])
    p.add_argument("--fps", type=float, default=60.0, help="video frame rate (sensor time per frame = 1/fps)")
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=run)
