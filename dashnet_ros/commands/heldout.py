"""``dashnet heldout build|peers``: the held-out evaluation set and the OpenCV peer trackers.

``dashnet heldout build --out DIR [--n-real 6] [--frames 480]`` writes sequences composited
from the photographs bundled with scikit-image (plus procedural held-out scenes) in the NFS
layout with exact 8x ground truth (see :mod:`dashnet_ros.eval.heldout`; evaluation only,
never training).

``dashnet heldout peers DIR [--trackers KCF,CSRT] [--regimes aps,frames] [--json FILE]``
runs the OpenCV peers on every sequence under DIR (APS frames at 30 Hz and every 240 fps
frame; each run in a child process, so an OpenCV crash only fails that run), scores them
with causal zero-order hold at the ground-truth instants and prints the mean over sequences
(see :mod:`dashnet_ros.eval.peers`).
"""
from __future__ import annotations

import json
import os

from ..cli import UserError


def add_parser(subparsers):
    p = subparsers.add_parser("heldout", help="held-out evaluation sequences from real photos; "
                              "OpenCV peer trackers on them",
                              description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="heldout_command", required=True, metavar="ACTION")
    b = sub.add_parser("build", help="render the held-out set (NFS layout + gt_8x.txt)")
    b.add_argument("--out", required=True, help="output root folder")
    b.add_argument("--n-real", type=int, default=6, help="photo-composited sequences (default 6)")
    b.add_argument("--frames", type=int, default=480, help="frames per sequence at 240 fps "
                   "(default 480 = 2 s)")
    b.add_argument("--width", type=int, default=240)
    b.add_argument("--height", type=int, default=180)
    b.add_argument("--procedural-seeds", default="0,1",
                   help="comma-separated held-out scene seeds 0..999 ('' for none; default 0,1)")
    b.add_argument("--overwrite", action="store_true", help="rebuild existing sequences")
    b.set_defaults(func=run_build)
    e = sub.add_parser("peers", help="run and score the OpenCV peer trackers on a held-out set")
    e.add_argument("root", help="folder of NFS-layout sequences (e.g. from 'heldout build')")
    e.add_argument("--trackers", default=None,
                   help="comma-separated (default: every Table 3 peer this OpenCV has)")
    e.add_argument("--regimes", default="aps,frames", help="aps (30 Hz APS frames), frames "
                   "(every 240 fps frame); default both")
    e.add_argument("--aps-rate", type=float, default=30.0, help="APS rate in Hz (default 30)")
    e.add_argument("--json", default=None, help="also write all results to this JSON file")
    e.set_defaults(func=run_peers)
    return p


def _ints(text: str, what: str):
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{what} must be comma-separated integers, got {text!r}") from None


def run_build(args) -> int:
    from tqdm import tqdm

    from ..eval.heldout import build_heldout

    if args.n_real < 0:
        raise UserError(f"--n-real must be >= 0, got {args.n_real}")
    if args.frames < 2:
        raise UserError(f"--frames must be >= 2, got {args.frames}")
    seeds = _ints(args.procedural_seeds, "--procedural-seeds")
    bar = tqdm(total=None, unit="frame", desc="heldout build")

    def progress(done, total):
        if bar.total != total:
            bar.total = total
            bar.refresh()
        bar.update(done - bar.n)

    try:
        seqs = build_heldout(args.out, args.n_real, args.frames, args.width, args.height,
                             seeds, overwrite=args.overwrite, progress=progress)
    except (ValueError, FileExistsError, FileNotFoundError, ModuleNotFoundError) as e:
        raise UserError(str(e)) from None
    finally:
        bar.close()
    for s in seqs:
        print(s)
    print(f"{len(seqs)} sequences; recipe in {os.path.join(args.out, 'README.md')}")
    return 0


def run_peers(args) -> int:
    from tqdm import tqdm

    from ..eval.peers import REGIMES, available_peers, evaluate_set, make_peer, missing_peers

    trackers = available_peers() if args.trackers is None else [
        t.strip() for t in args.trackers.split(",") if t.strip()]
    regimes = [r.strip() for r in args.regimes.split(",") if r.strip()]
    try:
        trackers = [make_peer(t).name for t in trackers]
    except ValueError as e:
        raise UserError(str(e)) from None
    if not trackers or not regimes or any(r not in REGIMES for r in regimes):
        raise UserError(f"need at least one tracker and regimes among {REGIMES}")
    if missing_peers():
        print(f"not in this OpenCV (left out): {', '.join(missing_peers())}")
    bar = tqdm(unit="frame", desc="peers")
    try:
        res = evaluate_set(args.root, trackers, regimes, aps_rate_hz=args.aps_rate,
                           progress=lambda n, _t: bar.update(1))
    except (ValueError, FileNotFoundError) as e:
        raise UserError(str(e)) from None
    finally:
        bar.close()
    print(f"{len(res['sequences'])} sequences under {res['root']} (OpenCV {res['opencv']}); "
          "mean over sequences, ZOH at the GT instants")
    print(f"{'tracker':<11}{'regime':<8}{'mIOU':>7}{'AUC':>7}{'P@20':>7}{'Rb':>7}{'upd/s':>9}"
          f"{'crashes':>9}")
    for name, by_regime in res["summary"].items():
        for regime, m in by_regime.items():
            print(f"{name:<11}{regime:<8}{m['miou']:>7.3f}{m['auc']:>7.3f}"
                  f"{m['precision20']:>7.3f}{m['robustness']:>7.3f}{m['updates_per_s']:>9.1f}"
                  f"{m['crashes']:>9d}")
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(res, f, indent=1)
        os.replace(tmp, args.json)
        print(f"wrote {args.json}")
    return 0
