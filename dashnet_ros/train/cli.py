"""The ``snn`` and ``ann`` targets of ``dashnet train`` (:mod:`dashnet_ros.commands.train`).

Light on imports (argparse only): the training modules, and torch with them, are loaded
when a target runs.  The defaults are the settings of the shipped ``fast`` weights
(``dashnet_ros/train/README.md``).
"""
from __future__ import annotations

import argparse


def add_common_arguments(p: argparse.ArgumentParser, default_steps: int, default_batch: int,
                         default_lr: float) -> None:
    """Options both trackers take (``--out``, ``--steps``, ``--seed``, ``--resume``, ``--threads``
    read as in the other ``dashnet train`` targets)."""
    p.add_argument("--preset", default="fast", choices=["fast", "paper"],
                   help="network preset (dashnet_ros.models.*.PRESETS; default %(default)s)")
    p.add_argument("--data", required=True, metavar="DIR",
                   help="training dataset files (*.h5 from `dashnet dataset build scenes:A-B`, "
                        "seeds >= 1000); `dashnet train ann` also takes scenes:A-B itself (procedural "
                        "sequences rendered on the fly: its frames need no simulated events)")
    p.add_argument("--out", required=True, metavar="PATH",
                   help="model checkpoint to write (training state beside it in PATH.state)")
    p.add_argument("--steps", type=int, default=default_steps,
                   help="total optimiser steps (with --resume: the new total; default %(default)s)")
    p.add_argument("--batch", type=int, default=default_batch,
                   help="samples per step and process (default %(default)s)")
    p.add_argument("--lr", type=float, default=default_lr,
                   help="Adam learning rate, cosine decay to 5%% (default %(default)g)")
    p.add_argument("--lam", type=float, default=1e-5,
                   help="weight regularisation λ of eq. 4/6 (default %(default)g)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the run (default %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    p.add_argument("--device", default="cpu", help="torch device (default %(default)s)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads per process (default %(default)s: the machine is shared)")
    p.add_argument("--ckpt-every", type=int, default=250, help="steps between checkpoints (default %(default)s)")
    p.add_argument("--pool", type=int, default=16,
                   help="sequences held in memory, one swapped every 8 steps (default %(default)s)")
    p.add_argument("--eval-data", metavar="DIR", default=None,
                   help="held-out dataset files (e.g. scenes:0-19) to evaluate the final model on; "
                        "the numbers go to PATH.eval.json")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def snn_args(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p, default_steps=1500, default_batch=32, default_lr=2e-3)
    p.add_argument("--windows", type=int, default=10,
                   help="output windows per training clip (BPTT length; default %(default)s)")
    p.add_argument("--burn-in", type=int, default=2,
                   help="first windows of a clip without loss (state warm-up; default %(default)s)")
    p.add_argument("--ref-noise", type=float, default=0.1,
                   help="eq. 12 std of the reference-box shift/scale (default %(default)s)")
    p.add_argument("--ref-offset", type=float, default=0.0,
                   help="eq. 12 std of a reference offset drawn once per clip and kept over its "
                        "windows (a fused box that fell behind; default %(default)s: none)")
    p.add_argument("--init", metavar="CKPT", default=None,
                   help="start from this SNN checkpoint's weights (fine-tuning; same architecture)")
    p.add_argument("--self-feed", type=float, default=0.5,
                   help="final share of clips whose reference is the model's own last output "
                        "(scheduled sampling; default %(default)s)")
    p.add_argument("--giou-weight", type=float, default=0.0,
                   help="add this times mean(1 - GIoU) to eq. 4's squared box error (not in the paper; "
                        "default %(default)s: eq. 4 alone, as the shipped SNN)")


def ann_args(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p, default_steps=2000, default_batch=32, default_lr=1e-3)
    p.add_argument("--attention", action=argparse.BooleanOptionalAction, default=True,
                   help="ANN-AT with the attention channel (default) or ANN-NAT (--no-attention)")
    p.add_argument("--feedback-noise", type=float, default=0.1,
                   help="eq. 12 std of the fed-back box's shift/scale (default %(default)s)")
    p.add_argument("--wide-noise", type=float, default=0.3,
                   help="std for the share --p-wide of poorer fed-back boxes (default %(default)s)")
    p.add_argument("--p-wide", type=float, default=0.2, help="share of wide-noise feedback (default %(default)s)")
    p.add_argument("--p-none", type=float, default=0.1, help="share of frames without feedback (default %(default)s)")
    p.add_argument("--far-shift", type=float, default=0.5,
                   help="std (box sizes) of the centre shift for the share --p-far of fed-back boxes far off "
                        "the target, as after a fast move (default %(default)s)")
    p.add_argument("--p-far", type=float, default=0.25, help="share of far-off feedback (default %(default)s)")
    p.add_argument("--aps-only", action="store_true",
                   help="train on the 30 Hz APS frames only (default: every source frame)")
    p.add_argument("--giou-weight", type=float, default=0.1,
                   help="add this times mean(1 - GIoU) to eq. 6's squared box error (not in the paper; "
                        "default %(default)s, as the shipped weights; 0: eq. 6 alone)")


def snn_run(args) -> int:
    """SNN tracker (eq. 1-4): BPTT over event windows of procedural DAVIS streams."""
    from .snn import run

    return run(args)


def ann_run(args) -> int:
    """ANN tracker (eq. 5-6), with (ANN-AT, eq. 10-12) or without (--no-attention) attention."""
    from .ann import run

    return run(args)


#: name -> (add_args(parser), run(args)), as :data:`dashnet_ros.commands.train.TARGETS` takes them
TARGETS = {"snn": (snn_args, snn_run), "ann": (ann_args, ann_run)}
