"""``dashnet tables --out DIR``: regenerate the paper's Tables 2, 3 and 4 on our data.

Builds the held-out set if it is not there yet (``dashnet heldout build``: sequences
composited from packaged photographs plus held-out procedural seeds; never trained on),
evaluates our trackers and the OpenCV peers on it (``dashnet eval``), counts operations on
real inputs, and writes ``table2``, ``table3``, ``table4`` (``.md`` + ``.json``),
``success.png`` and ``results.json`` into DIR.  Table 1 has its own command
(``dashnet table1``).
"""
from __future__ import annotations

import os

from ..cli import UserError

PEERS = ("KCF", "CSRT", "MOSSE", "MedianFlow", "MIL", "TLD", "Boosting")


def run(args) -> int:
    from tqdm import tqdm

    from ..eval.harness import OUR_TRACKERS, evaluate
    from ..eval.heldout import build_heldout
    from ..eval.ops import count_pipeline_ops
    from ..eval.peers import available_peers
    from ..eval.runner import open_input
    from ..eval.tables import table2, table3, table4, write_table
    from ..models.checkpoint import load_checkpoint
    from ..tracking import default_weights

    from ..threads import set_threads

    set_threads(args.threads)
    heldout = args.heldout or os.path.join(args.out, "heldout")
    if not os.path.isdir(heldout) or not os.listdir(heldout):
        print(f"building the held-out set in {heldout} ...")
        build_heldout(heldout, args.n_real, args.frames, procedural_seeds=(0, 1))
    peers = [p for p in PEERS if p in available_peers()]
    trackers = list(OUR_TRACKERS) + [f"{p}@aps" for p in peers] + [f"{p}@frames" for p in peers]
    with tqdm(desc="evaluating", unit="seq") as bar:
        def progress(done, total):
            bar.total = total
            bar.update(done - bar.n)

        try:
            doc = evaluate([heldout], trackers, args.out, progress=progress)
        except (FileNotFoundError, ValueError) as e:
            raise UserError(str(e)) from None
    summary = doc["summary"]
    header = (f"Held-out set: {heldout} ({len(doc['sequences'])} sequences"
              + (f"; {len(doc['failed'])} failed and skipped" if doc["failed"] else "") + ").")
    md, data = table2(summary)
    write_table(args.out, "table2", md, data, "Table 2 (ablation) on our held-out set. " + header)
    md, data = table3(summary)
    write_table(args.out, "table3", md, data, "Table 3: DashNet against OpenCV trackers. " + header)

    # Table 4: ops on real inputs (the first held-out sequence), speed on this CPU
    seq = os.path.join(heldout, doc["sequences"][0]) if doc["sequences"] else None
    if seq is None:
        raise UserError("no sequence could be evaluated; see results.json")
    inp = open_input(seq)
    items = list(inp.stream)
    snn, _ = load_checkpoint(default_weights("snn", "fast"), kind="snn")
    ann, _ = load_checkpoint(default_weights("ann", "fast"), kind="ann")
    ops = count_pipeline_ops(items, inp.init_box, snn, ann, inp.width, inp.height)
    fps = measure_fps(items, inp)
    md, data = table4(ops, fps, summary)
    write_table(args.out, "table4", md, data,
                "Table 4: operations per inference on real inputs, speed and energy estimate. " + header)
    print(open(os.path.join(args.out, "table2.md")).read())
    print(open(os.path.join(args.out, "table3.md")).read())
    print(open(os.path.join(args.out, "table4.md")).read())
    return 0


def measure_fps(items, inp) -> dict:
    """Outputs per second of wall time on this CPU: SNN windows (SNN alone), ANN frames
    (ANN alone), fused outputs (hybrid), over the same stream items."""
    import time

    from ..tracking import HybridTracker

    fps = {}
    for key, mode, stream in (("snn", "snn-origin", "snn"), ("ann", "ann", "ann"), ("dashnet", "hybrid", "fused")):
        tr = HybridTracker.from_weights(inp.width, inp.height, mode=mode)
        tr.init(inp.init_box, inp.t0_us)
        n, t0 = 0, time.perf_counter()
        for it in items:
            n += sum(1 for o in tr.push(it) if o.source == stream)
        fps[key] = n / (time.perf_counter() - t0)
    return fps


def add_parser(sub):
    p = sub.add_parser("tables", help="regenerate the paper's Tables 2-4 on the held-out set", description=__doc__)
    p.add_argument("--out", default="out/tables")
    p.add_argument("--heldout", help="held-out set folder (default: OUT/heldout, built if missing)")
    p.add_argument("--n-real", type=int, default=6, help="photo-composited sequences when building the set")
    p.add_argument("--frames", type=int, default=480, help="frames per sequence when building the set")
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=run)
