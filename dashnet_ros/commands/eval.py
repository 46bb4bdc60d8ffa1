"""``dashnet eval INPUT... --out DIR [--trackers ...]``: score trackers on sequences.

INPUTs are NFS sequence dirs, folders of them (e.g. the held-out set from
``dashnet heldout build``), hybrid dataset files or DAVIS recordings (scored against the
jAER labels ``REC-targets.txt`` beside ``REC.aedat``).  Writes ``DIR/results.json``,
``DIR/summary.md`` and ``DIR/success.png``.  See :mod:`dashnet_ros.eval.harness` for the
tracker names and the scoring (causal zero-order hold at the GT instants).
"""
from __future__ import annotations

from ..cli import UserError

DEFAULT_TRACKERS = "hybrid,snn-hybrid,snn-origin,ann-at,ann-at-zoh,ann-nat,KCF@aps,CSRT@aps,CSRT@frames"


def run(args) -> int:
    from tqdm import tqdm

    from ..eval.harness import evaluate

    from ..threads import set_threads

    set_threads(args.threads)
    trackers = [t.strip() for t in args.trackers.split(",") if t.strip()]
    weights = {k: v for k, v in (("snn", args.snn_weights), ("ann", args.ann_weights),
                                 ("ann_nat", args.ann_nat_weights)) if v}
    with tqdm(desc="sequences", unit="seq") as bar:
        def progress(done, total):
            bar.total = total
            bar.update(done - bar.n)

        try:
            doc = evaluate(args.inputs, trackers, args.out, weights=weights, aps_rate_hz=args.aps_rate_hz,
                           interp_factor=args.interp_factor, progress=progress,
                           tcf_time_scale_s=args.tcf_time_scale_s)
        except (FileNotFoundError, ValueError) as e:
            raise UserError(str(e)) from None
    with open(f"{args.out}/summary.md") as f:
        print(f.read())
    if doc["failed"]:
        print(f"{len(doc['failed'])} sequence(s) failed and were skipped (see summary.md)")
    return 1 if doc["failed"] and not doc["sequences"] else 0


def add_parser(sub):
    p = sub.add_parser("eval", help="score trackers on a set of sequences (mIOU, AUC, Rb, ...)",
                       description=__doc__)
    p.add_argument("inputs", nargs="+", help="NFS sequence dirs, folders of them, .h5 dataset files or DAVIS recordings (.aedat, .aedat4)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--trackers", default=DEFAULT_TRACKERS,
                   help=f"comma-separated (default {DEFAULT_TRACKERS}); peers as NAME@aps or NAME@frames")
    p.add_argument("--snn-weights")
    p.add_argument("--ann-weights")
    p.add_argument("--ann-nat-weights")
    p.add_argument("--aps-rate-hz", type=float, default=30.0)
    p.add_argument("--interp-factor", type=int, default=7, choices=[0, 1, 3, 7])
    p.add_argument("--tcf-time-scale-s", type=float, default=0.0,
                   help="TCF time scale of eq. 7 in seconds (default 0: half the APS interval, as the fuser node)")
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=run)
