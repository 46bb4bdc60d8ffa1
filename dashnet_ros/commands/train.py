"""``dashnet train TARGET ...``: train one of the project's networks.

Targets live in :data:`TARGETS`, a dict ``name -> (add_args, run)``:

* ``add_args(parser)`` adds the target's options to its sub-parser;
* ``run(args)`` trains and returns an exit code (raise ``UserError`` for bad input).

Adding a target (e.g. ``snn``, ``ann``) is one entry in ``TARGETS`` plus its two
functions, typically thin wrappers around a training function in the core.
Every target gets ``--out``, ``--steps``, ``--seed``, ``--resume`` and ``--threads`` from
:func:`_common_args`, so the targets read alike.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from dashnet_ros.cli import UserError


def _common_args(p: argparse.ArgumentParser, *, default_steps: int) -> None:
    p.add_argument("--out", required=True, type=Path,
                   help="checkpoint to write (model + config + resumable training state)")
    p.add_argument("--steps", type=int, default=default_steps,
                   help="total optimisation steps (with --resume: the new total; default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the run (default %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default %(default)s: the machine is shared)")


# ----------------------------------------------------------------------------- interp


def _interp_args(p: argparse.ArgumentParser) -> None:
    from dashnet_ros.davis.interpolation import TrainOptions

    d = TrainOptions()
    _common_args(p, default_steps=d.steps)
    p.add_argument("--batch", type=int, default=d.batch, help="triplets per step (default %(default)s)")
    p.add_argument("--crop", type=int, default=d.crop, help="square crop side in pixels (default %(default)s)")
    p.add_argument("--lr", type=float, default=d.lr, help="initial Adam learning rate (default %(default)s)")
    p.add_argument("--val-every", type=int, default=d.val_every,
                   help="steps between held-out PSNR checks (default %(default)s)")
    p.add_argument("--n-val", type=int, default=d.n_val,
                   help="held-out triplets (scene seeds 0..N-1) per check; 0: none (default %(default)s)")
    p.add_argument("--ckpt-every", type=int, default=d.ckpt_every,
                   help="steps between checkpoints (default %(default)s)")
    p.add_argument("--export", type=Path, default=None,
                   help="also write the bare model (no optimizer state) here at the end, "
                        "e.g. dashnet_ros/weights/interp.pt")


def _interp_run(args) -> int:
    """FCN video interpolation (eq. 13) on procedural triplets, L1 loss."""
    import cv2
    import torch
    from tqdm import tqdm

    from dashnet_ros.davis import interpolation as itp

    if args.threads < 1:
        raise UserError(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(1)
    opts = itp.TrainOptions(steps=args.steps, seed=args.seed, batch=args.batch, crop=args.crop,
                            lr=args.lr, val_every=args.val_every, n_val=args.n_val,
                            ckpt_every=args.ckpt_every)
    bar = tqdm(total=args.steps, desc="train interp", unit="step", dynamic_ncols=True)

    def progress(n, total):
        bar.total = total
        bar.update(n - bar.n)

    t0 = time.perf_counter()
    try:
        metrics = itp.train_interpolator(args.out, opts, resume=args.resume, progress=progress,
                                         log=tqdm.write)
    except (ValueError, FileNotFoundError) as e:
        raise UserError(str(e)) from None
    finally:
        bar.close()
    print(f"checkpoint {args.out} ({time.perf_counter() - t0:.0f} s this run)")
    if metrics:
        print(f"held-out midpoint PSNR {metrics['psnr']:.2f} dB vs linear blending "
              f"{metrics['psnr_linear']:.2f} dB ({opts.n_val} triplets)")
    if args.export is not None:
        model, blob = itp.load_checkpoint(args.out)
        tr = blob.get("train", {})
        itp.save_checkpoint(args.export, model, blob["config"], extra={"trained": {
            "steps": tr.get("step"), "elapsed_s": tr.get("elapsed_s"), "options": tr.get("options"),
            "history": tr.get("history")}})
        print(f"exported the model to {args.export}")
    return 0


# ----------------------------------------------------------------------------- registry

from dashnet_ros.train.cli import TARGETS as _TRACKER_TARGETS  # noqa: E402 - snn, ann (argparse only)

#: name -> (add_args(parser), run(args) -> exit code)
TARGETS = {
    "interp": (_interp_args, _interp_run),
    **_TRACKER_TARGETS,
}


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a network (targets: " + ", ".join(TARGETS) + ")",
                              description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="target", required=True, metavar="TARGET")
    for name, (add_args, run) in TARGETS.items():
        sp = sub.add_parser(name, help=(run.__doc__ or "").strip().splitlines()[0] if run.__doc__ else None)
        add_args(sp)
        sp.set_defaults(func=run)
