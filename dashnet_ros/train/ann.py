"""Training the ANN tracker (paper §3.2, eq. 5-6) with or without the attention channel
(§3.3.2, eq. 10-12): ANN-AT and ANN-NAT are separate weights.

One step: ``--batch`` frames from the training streams (every source frame of a
procedural sequence, re-rendered exactly, or the APS frames otherwise), each made into
the network input by :func:`dashnet_ros.models.ann.frame_input` as the tracker makes it:
the frame over the preset's region and, for ANN-AT, the attention channel ``A = X * M``
(eq. 11) from a fed-back box.  At tracking time that box is the latest fused box before
the frame (eq. 10); here it is the ground truth perturbed by eq. 12 (``alpha, beta ~
N(0, --feedback-noise)``, paper 0.1), in ``--p-wide`` of the samples with the wider
``--wide-noise`` (a poorer previous estimate), in ``--p-far`` a box shifted by
``N(0, --far-shift)`` box sizes (a fast target the fused box fell behind), and in
``--p-none`` none at all (whole-frame view only: the first frame, or a lost track).  Loss: eq. 6, squared box error in the region-normalised
``(cx, cy, w, h)`` plus ``λ Σ||W||²``, and ``--giou-weight G`` times ``mean(1 − GIoU)``
(not in the paper; default 0.1, the shipped weights' setting; 0 gives eq. 6 alone).  Frames are mirrored left-right at random.

``dashnet train ann --data DIR --out PATH [--no-attention] [--preset fast|paper] ...``
"""
from __future__ import annotations

import json
import os
import time
from typing import Dict, Sequence

import numpy as np
import torch

from ..boxes import iou
from ..fusion.attention import shift_box
from ..models.ann import PRESETS, ANNPreset, FrameTracker, ann_loss
from ..models.arch import check_giou_weight, region_norm_to_box, weight_l2
from . import common
from .data import (ANNSampler, FrameSequence, data_recipe, list_datasets, perturb, scene_seeds, scenes_recipe,
                   valid_box)


def add_arguments(p) -> None:
    """Options of ``dashnet train ann`` (defined in :mod:`dashnet_ros.train.cli`)."""
    from .cli import ann_args

    ann_args(p)


def resolve_preset(preset) -> tuple:
    """``(name, ANNPreset)`` for a preset name of :data:`PRESETS` or an :class:`ANNPreset`
    (an experimental configuration, stored as ``"custom"``)."""
    if isinstance(preset, ANNPreset):
        return "custom", preset
    if preset not in PRESETS:
        raise ValueError(f"unknown ANN preset {preset!r}; choose one of {sorted(PRESETS)}")
    return preset, PRESETS[preset]


def preset_record(preset, attention: bool) -> dict:
    """The preset as stored in the checkpoint, with the attention actually used."""
    name, p = resolve_preset(preset)
    return dict(name=name, **dict(p.to_dict(), attention=bool(attention)))


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(model, seqs: Sequence[FrameSequence], preset: ANNPreset, feedback_noise: float = 0.1,
             seed: int = 0, shifts: Sequence[float] = (0.5, 1.0)) -> Dict[str, dict]:
    """Mean IoU over the frames of ``seqs`` (target in view), each sequence tracked by the
    tracker's own :class:`~dashnet_ros.tracking.ANNRunner` from its first ground-truth box,
    with the fed-back box ``"noisy"`` (ground truth + eq. 12 noise), ``"none"`` (no
    feedback; frame view only), ``"closed"`` (the runner's own box on the previous
    frame -- the ANN alone, without the SNN between frames), and for each ``d`` in
    ``shifts`` (search view with attention) ``"shift_<d>"``: the ground truth with its centre
    moved ``d`` box sizes in a random direction (plus eq. 12 noise of 0.05), the capture
    range -- how well the ANN finds a target the fused box has fallen behind."""
    from ..tracking import ANNRunner

    rng = np.random.default_rng(seed)
    att = bool(getattr(model, "attention", True))
    was = model.training
    model.eval()
    res = {}
    modes = ["noisy", "closed"] + (["none"] if preset.view == "frame" else [])
    if att and preset.view == "search":
        modes += [f"shift_{float(d):g}" for d in shifts]
    for mode in modes:
        scores = []
        for s in seqs:
            ok = np.flatnonzero(valid_box(s.boxes))
            if not len(ok):
                continue
            h, w = s.frame_hw
            runner = ANNRunner(model, preset, w, h, attention=att)
            runner.init(s.boxes[ok[0]])
            for k in range(ok[0], len(s.t_us)):
                gt = s.boxes[k]
                fb = None
                if mode == "noisy" and valid_box(gt):
                    fb = perturb(gt, rng, feedback_noise)
                elif mode == "closed":
                    fb = runner.last_box  # as HybridTracker's mode "ann"
                elif mode == "none":
                    runner.last_box = None
                elif mode.startswith("shift_") and valid_box(gt):
                    d, a = float(mode[6:]), rng.uniform(0.0, 2.0 * np.pi)
                    fb = perturb(shift_box(gt, (d * np.cos(a), d * np.sin(a), 0.0)), rng, 0.05)
                box = runner.update(s.images[k], fb if att else None)
                if valid_box(gt):
                    scores.append(float(iou(np.nan_to_num(box), gt)))
        res[mode] = {"iou": float(np.mean(scores)) if scores else float("nan"), "frames": len(scores)}
    model.train(was)
    return res


# ----------------------------------------------------------------------------- training


def _sources(data):
    if isinstance(data, str):
        seeds = scene_seeds(data)
        if seeds is not None:   # rendered on the fly: the frames need no simulated events
            return [f"scenes:{s}" for s in seeds], scenes_recipe(data, seeds)
    if isinstance(data, (str, os.PathLike)):
        paths = list_datasets(data)
        return paths, data_recipe(paths)
    seqs = list(data)
    return seqs, {"sources": [getattr(s, "name", "?") for s in seqs], "n_files": len(seqs)}


def train(data, out: str, preset="fast", attention: bool = True, steps: int = 2000, batch: int = 32,
          lr: float = 1e-3, lam: float = 1e-5, seed: int = 0, resume: bool = False, device: str = "cpu",
          threads: int = 1, feedback_noise: float = 0.1, wide_noise: float = 0.3, p_wide: float = 0.2,
          p_none: float = 0.1, far_shift: float = 0.5, p_far: float = 0.25,
          every_frame: bool = True, ckpt_every: int = 250, pool: int = 16, giou_weight: float = 0.1,
          quiet: bool = True, progress=None, eval_data=None) -> dict:
    """Train ANN-AT (``attention``) or ANN-NAT; returns ``{"step", "loss", "iou", "seconds",
    "eval"?}``.  ``data``: a directory of dataset files, ``"scenes:A-B"`` (procedural
    sequences rendered on the fly) or a list of :class:`FrameSequence`;
    ``preset``: a name of :data:`PRESETS` or an :class:`ANNPreset`."""
    name, p = resolve_preset(preset)
    if steps < 1 or batch < 1:
        raise ValueError(f"steps and batch must be >= 1, got {steps} and {batch}")
    check_giou_weight(giou_weight)      # now, not at the first step after the data has loaded
    opts = dict(preset=name, attention=bool(attention), steps=steps, batch=batch, lr=lr, lam=lam,
                feedback_noise=feedback_noise, wide_noise=wide_noise, p_wide=p_wide, p_none=p_none,
                far_shift=far_shift, p_far=p_far, every_frame=every_frame, pool=pool, seed=seed,
                giou_weight=giou_weight)
    prec = preset_record(preset, attention)
    d = common.setup(device, threads)
    try:
        common.seed_everything(seed)
        sources, recipe = _sources(data)
        model = FrameTracker(p.arch, p.in_hw, attention=attention, templates=p.templates).to(d.device)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        start = common.load_for_resume(out, model, opt, "ann", opts) if resume else 0
        fwd = common.wrap(model, d)
        sampler = ANNSampler(sources, p, attention, seed=common.data_seed(seed, d.rank, start),
                             feedback_noise=feedback_noise, wide_noise=wide_noise, p_wide=p_wide,
                             p_none=p_none, far_shift=far_shift, p_far=p_far, every_frame=every_frame,
                             pool_size=pool)
        name = "train ann" + ("" if attention else "-nat")
        bar = common.make_bar(steps, start, name, quiet or not d.main)
        t_begin = time.monotonic()
        ema = ema_iou = None
        step = start
        try:
            for step in range(start, steps):
                for g in opt.param_groups:
                    g["lr"] = common.lr_at(step, steps, lr)
                b = sampler.batch(batch)
                x = torch.from_numpy(b["x"]).to(d.device)
                target = torch.from_numpy(b["target"]).to(d.device)
                out_t = fwd(x)
                loss = ann_loss(out_t, target, giou_weight=giou_weight)
                total = loss + lam * weight_l2(model) if lam else loss
                opt.zero_grad(set_to_none=True)
                total.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                opt.step()
                pred = region_norm_to_box(out_t.detach().cpu().numpy(), b["region"])
                it = float(iou(pred, b["gt"]).mean())
                lv = float(loss.detach())
                ema = lv if ema is None else 0.98 * ema + 0.02 * lv
                ema_iou = it if ema_iou is None else 0.98 * ema_iou + 0.02 * it
                bar.update(1)
                bar.set_postfix(loss=f"{ema:.4f}", iou=f"{ema_iou:.3f}")
                if progress is not None:
                    progress(step + 1, steps)
                if d.main and ckpt_every and (step + 1) % ckpt_every == 0 and step + 1 < steps:
                    common.save(out, model, opt, step + 1, prec, recipe, seed, opts)
            step = steps
        finally:
            bar.close()
        result = {"step": step, "loss": ema, "iou": ema_iou, "seconds": time.monotonic() - t_begin,
                  "world": d.world, "param_checksum": common.param_checksum(model)}
        if d.main:
            common.save(out, model, opt, step, prec, recipe, seed, opts, final=True)
            if eval_data is not None:
                paths = list_datasets(eval_data, allow_heldout=True)
                seqs = [FrameSequence.from_dataset(q, every_frame=False, allow_heldout=True) for q in paths]
                result["eval"] = evaluate(model, seqs, p)
                with open(os.fspath(out) + ".eval.json", "w") as fh:
                    json.dump({"eval_data": [os.path.basename(q) for q in paths], **result}, fh, indent=1)
        return result
    finally:
        common.teardown(d)


def run(args) -> int:
    """``dashnet train ann``."""
    from ..cli import UserError

    try:
        res = train(args.data, args.out, preset=args.preset, attention=args.attention, steps=args.steps,
                    batch=args.batch, lr=args.lr, lam=args.lam, seed=args.seed, resume=args.resume,
                    device=args.device, threads=args.threads, feedback_noise=args.feedback_noise,
                    wide_noise=args.wide_noise, p_wide=args.p_wide, p_none=args.p_none,
                    far_shift=args.far_shift, p_far=args.p_far,
                    every_frame=not args.aps_only, ckpt_every=args.ckpt_every, pool=args.pool,
                    giou_weight=args.giou_weight,
                    quiet=args.quiet, eval_data=args.eval_data)
    except (FileNotFoundError, ValueError) as e:
        raise UserError(str(e)) from None
    if int(os.environ.get("RANK", "0")) == 0:
        kind = "ANN-AT" if args.attention else "ANN-NAT"
        print(f"dashnet train ann: {kind} {res['step']} steps in {res['seconds']:.0f} s, loss "
              f"{res['loss']:.4f}, train IoU {res['iou']:.3f} -> {args.out}")
        for m, r in res.get("eval", {}).items():
            print(f"  held-out feedback={m}: IoU {r['iou']:.3f} over {r['frames']} frames")
    return 0


def main(argv=None) -> int:
    """``python -m dashnet_ros.train.ann`` (same options as ``dashnet train ann``; handy under torchrun)."""
    from .common import module_main

    return module_main("ann", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
