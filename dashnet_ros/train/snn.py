"""Training the SNN tracker (paper §3.1: eq. 1-4, BPTT with the rectangular surrogate).

One step: ``--batch`` clips of ``--windows`` consecutive output windows (``preset.window_us``
each) from the training streams.  The model runs window by window with its membrane state
carried across windows (as :meth:`~dashnet_ros.models.snn.SpikingTracker.step_window`
does when tracking), and the loss is eq. 4 -- the squared error of the window readout
against the ground truth at the window's end, normalised to the window's input region --
averaged over the windows after ``--burn-in``, plus ``λ Σ||W||²``; gradients flow back
through all windows (BPTT).

Each window's input region is centred on a *reference box* (view ``"search"``), which at
tracking time is the previous estimate (the latest fused box, or the SNN's own last box).
Here it is, per clip, either the ground truth at the window start perturbed by eq. 12
(``alpha, beta ~ N(0, --ref-noise)``), or -- with a probability rising linearly from 0 to
``--self-feed`` over the first half of the run (scheduled sampling) -- the model's own
previous output, so that it learns to recentre from its own errors and not to drift.  A
self-fed reference that has lost the target (IoU < 0.1 with the ground truth) is
re-anchored to a noisy ground truth box, as an ANN frame would re-anchor it.

``dashnet train snn --data DIR --out PATH [--preset fast|paper] [--steps N] [--seed S]
[--resume] [--device cpu]``; ``torchrun --nproc_per_node N -m dashnet_ros.cli train snn ...``
for data-parallel training.
"""
from __future__ import annotations

import json
import logging
import os
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from ..boxes import iou
from ..fusion.attention import shift_box
from ..models.arch import box_to_region_norm, check_giou_weight, region_norm_to_box
from ..models.snn import PRESETS, SNNPreset, SpikingTracker, snn_loss
from . import common
from .data import (EventSequence, SNNClip, SNNSampler, data_recipe, list_datasets, perturb,
                   snn_window_input, valid_box)

log = logging.getLogger(__name__)

OPTION_KEYS = ("preset", "steps", "batch", "lr", "lam", "windows", "ref_noise", "ref_offset", "self_feed",
               "burn_in", "pool", "seed", "init")


def add_arguments(p) -> None:
    """Options of ``dashnet train snn`` (defined in :mod:`dashnet_ros.train.cli`)."""
    from .cli import snn_args

    snn_args(p)


def sanitize_box(box, gt_fallback, frame_hw) -> np.ndarray:
    """A usable reference box: finite, sides in [2, frame size] px, centre inside the frame;
    else ``gt_fallback``."""
    b = np.asarray(box, np.float64).reshape(4)
    if not np.all(np.isfinite(b)):
        return np.asarray(gt_fallback, np.float32)
    h, w = frame_hw
    bw, bh = float(np.clip(b[2], 2.0, w)), float(np.clip(b[3], 2.0, h))
    cx = float(np.clip(b[0] + b[2] / 2, 0.0, w))
    cy = float(np.clip(b[1] + b[3] / 2, 0.0, h))
    return np.array([cx - bw / 2, cy - bh / 2, bw, bh], np.float32)


def init_readout(model: SpikingTracker, preset: SNNPreset, weight_scale: float = 0.1) -> None:
    """Start the linear readout (eq. 4) near "the reference box, unmoved": bias = the
    normalised reference box (centre, ``1 / search_scale`` wide), small weights."""
    lin = [m for m in model.readout.modules() if isinstance(m, torch.nn.Linear)][-1]
    side = 1.0 / preset.search_scale if preset.view == "search" else 0.25
    with torch.no_grad():
        lin.bias.copy_(torch.tensor([0.5, 0.5, side, side]))
        lin.weight.mul_(weight_scale)


def rollout_loss(fwd, clips: List[SNNClip], preset: SNNPreset, rng: np.random.Generator,
                 p_self: float, ref_noise: float, burn_in: int, device=None, ref_offset: float = 0.0,
                 giou_weight: float = 0.0):
    """Eq. 4 over a batch of clips, window by window with the state carried (BPTT).

    ``ref_offset``: std of an eq. 12 offset drawn once per clip and kept over its windows
    (the ground-truth-made references sit that far off the target all clip long, as a
    fused box that fell behind does, on top of the per-window ``ref_noise``).

    ``giou_weight``: add that times ``mean(1 - GIoU)`` per window (not in the paper).

    Returns ``(loss, stats)``: the mean over windows ``>= burn_in`` of the per-window
    squared box error, and the mean IoU of predictions / references with the ground truth.
    """
    b = len(clips)
    k_all = clips[0].n_windows
    use_self = rng.random(b) < p_self
    offs = rng.normal(0.0, ref_offset, (b, 3)) if ref_offset > 0 else None

    def made(i, box):   # a reference made from the ground truth
        return perturb(box if offs is None else shift_box(box, offs[i]), rng, ref_noise)

    ref = [made(i, c.gt[0]) for i, c in enumerate(clips)]
    state = None
    losses, ious, ref_ious = [], [], []
    for k in range(k_all):
        xs, regs = [], []
        for i, c in enumerate(clips):
            x, r = snn_window_input(c.window_events(k), int(c.edges_us[k]), int(c.edges_us[k + 1]),
                                    ref[i], preset, c.frame_hw)
            xs.append(x)
            regs.append(r)
        regs = np.stack(regs)
        gt1 = np.stack([c.gt[k + 1] for c in clips])
        x = torch.from_numpy(np.stack(xs))
        if device is not None:
            x = x.to(device)
        out, _, state = fwd(x, state)
        target = torch.from_numpy(box_to_region_norm(gt1, regs)).to(out.device)
        pred = region_norm_to_box(out.detach().cpu().numpy(), regs)
        if k >= burn_in:
            losses.append(snn_loss(out, target, giou_weight=giou_weight))
            ious.append(iou(pred, gt1).mean())
            ref_ious.append(iou(np.stack(ref), gt1).mean())
        for i, c in enumerate(clips):
            if use_self[i]:
                nxt = sanitize_box(pred[i], c.gt[k + 1], c.frame_hw)
                if iou(nxt, c.gt[k + 1]) < 0.1:
                    nxt = made(i, c.gt[k + 1])
            else:
                nxt = made(i, c.gt[k + 1])
            ref[i] = nxt
    loss = torch.stack(losses).mean()
    return loss, {"iou": float(np.mean(ious)), "ref_iou": float(np.mean(ref_ious))}


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def run_windows(model, seqs: Sequence[EventSequence], preset: SNNPreset, mode: str = "noisy",
                ref_noise: float = 0.1, anchor_every_us: int = 33_333, max_windows: Optional[int] = None,
                seed: int = 0) -> Dict[str, float]:
    """Stream ``seqs`` (in lockstep, one batch row each) through ``model`` window by window,
    as the tracker does (``step_window``; a silent window holds the reference box).

    ``mode``: ``"noisy"`` -- every window's reference is the ground truth at its start with
    eq. 12 noise; ``"anchored"`` -- the reference is the model's own last box, reset to a
    noisy ground truth box every ``anchor_every_us`` (a stand-in for the 30 Hz ANN
    corrections through the TCF); ``"closed"`` -- SNN-origin: only the first window's
    reference comes from the ground truth.  Returns the mean IoU of the window outputs with
    the ground truth at the window ends (``iou``), the same for each window's reference box
    (``iou_hold``: the output had the window not moved it), for the last ground-truth-made
    reference held ever since (``iou_zoh``: zero-order hold of the anchors, what the
    tracker scores without the SNN), the fraction of silent windows and the number of
    scored windows.
    """
    if mode not in ("noisy", "anchored", "closed"):
        raise ValueError(f"unknown evaluation mode {mode!r}")
    rng = np.random.default_rng(seed)
    w_us = preset.window_us
    n = min((s.t1_us - s.t0_us) // w_us for s in seqs)
    if max_windows is not None:
        n = min(n, int(max_windows))
    if n < 1:
        raise ValueError("the evaluation sequences are shorter than one window")
    was = model.training
    model.eval()
    model.reset_state()
    ref = [None] * len(seqs)
    zoh = [None] * len(seqs)
    score, hold, zscore, silent_n, count = [], [], [], 0, 0
    anchor_k = max(1, int(round(anchor_every_us / w_us)))
    for k in range(n):
        xs, regs, gts1 = [], [], []
        for i, s in enumerate(seqs):
            a = s.t0_us + k * w_us
            g0, g1 = s.gt_at(np.array([a, a + w_us]))
            fresh = (mode == "noisy" or ref[i] is None or (mode == "anchored" and k % anchor_k == 0))
            if fresh and valid_box(g0):
                ref[i] = perturb(g0, rng, ref_noise) if (mode == "noisy" or k > 0) else g0.copy()
                zoh[i] = ref[i]
            if ref[i] is None:  # target not in view yet: look at the frame centre
                h, w = s.frame_hw
                ref[i] = zoh[i] = np.array([w / 2 - 10, h / 2 - 10, 20, 20], np.float32)
            x, r = snn_window_input(s.events_between(a, a + w_us), a, a + w_us, ref[i], preset, s.frame_hw)
            xs.append(x), regs.append(r), gts1.append(g1)
        out = model.step_window(torch.from_numpy(np.stack(xs))).numpy()
        pred = region_norm_to_box(out, np.stack(regs))
        refs = np.stack(ref)
        sil = ~np.all(np.isfinite(pred), 1)
        pred[sil] = refs[sil]
        gts1 = np.stack(gts1)
        ok = valid_box(gts1)
        if ok.any():
            score.append(iou(pred[ok], gts1[ok]))
            hold.append(iou(refs[ok], gts1[ok]))
            zscore.append(iou(np.stack(zoh)[ok], gts1[ok]))
            silent_n += int(sil[ok].sum())
            count += int(ok.sum())
        if mode != "noisy":
            for i, s in enumerate(seqs):
                ref[i] = sanitize_box(pred[i], ref[i], s.frame_hw)
    model.train(was)
    model.reset_state()
    if not count:
        raise ValueError("no window with the target in view to score")
    return {"iou": float(np.concatenate(score).mean()), "iou_hold": float(np.concatenate(hold).mean()),
            "iou_zoh": float(np.concatenate(zscore).mean()), "silent_frac": silent_n / count, "windows": count}


def evaluate(model, seqs: Sequence[EventSequence], preset: SNNPreset, max_windows: Optional[int] = None,
             seed: int = 0) -> Dict[str, dict]:
    """:func:`run_windows` in all three modes."""
    return {m: run_windows(model, seqs, preset, m, max_windows=max_windows, seed=seed)
            for m in ("noisy", "anchored", "closed")}


# ----------------------------------------------------------------------------- training


def _sources(data, allow_heldout=False):
    if isinstance(data, str) and data.strip().startswith("scenes:"):
        raise ValueError(f"--data {data!r}: the SNN trains on simulated events, which are not rendered on the "
                         f"fly; build them first (dashnet dataset build {data.strip()} --out DIR) and pass DIR")
    if isinstance(data, (str, os.PathLike)):
        paths = list_datasets(data, allow_heldout)
        return paths, data_recipe(paths)
    seqs = list(data)
    return seqs, {"sources": [getattr(s, "name", "?") for s in seqs], "n_files": len(seqs)}


def train(data, out: str, preset: str = "fast", steps: int = 1500, batch: int = 32, lr: float = 2e-3,
          lam: float = 1e-5, seed: int = 0, resume: bool = False, device: str = "cpu", threads: int = 1,
          windows: int = 10, burn_in: int = 2, ref_noise: float = 0.1, self_feed: float = 0.5,
          ckpt_every: int = 250, pool: int = 16, quiet: bool = True, progress=None,
          eval_data=None, ref_offset: float = 0.0, init: Optional[str] = None, giou_weight: float = 0.0) -> dict:
    """Train the SNN; returns ``{"step", "loss", "iou", "seconds", "eval"?}``.

    ``data``: a directory of dataset files or a list of :class:`EventSequence`;
    ``progress``: optional callable(n_done, n_total).  ``init``: a checkpoint of the same
    architecture whose weights the run starts from (fine-tuning; ignored on ``resume``).
    See the module doc for the method.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown SNN preset {preset!r}; choose one of {sorted(PRESETS)}")
    if steps < 1 or batch < 1:
        raise ValueError(f"steps and batch must be >= 1, got {steps} and {batch}")
    if not 0 <= burn_in < windows:
        raise ValueError(f"burn_in ({burn_in}) must be in [0, windows={windows})")
    p = PRESETS[preset]
    if not ref_offset >= 0:
        raise ValueError(f"ref_offset must be >= 0, got {ref_offset!r}")
    check_giou_weight(giou_weight)      # now, not at the first step after the data has loaded
    opts = dict(preset=preset, steps=steps, batch=batch, lr=lr, lam=lam, windows=windows,
                ref_noise=ref_noise, self_feed=self_feed, burn_in=burn_in, pool=pool, seed=seed)
    if ref_offset:
        opts["ref_offset"] = ref_offset
    if giou_weight:   # recorded only when used, as ref_offset: eq. 4 runs record what they always did
        opts["giou_weight"] = giou_weight
    if init:
        opts["init"] = os.path.basename(init)
    d = common.setup(device, threads)
    try:
        common.seed_everything(seed)
        sources, recipe = _sources(data)
        model = SpikingTracker.from_preset(preset)
        init_readout(model, p)
        if init and not resume:
            from ..models.checkpoint import load_checkpoint

            start_from, _ = load_checkpoint(init, kind="snn", arch=model.arch, in_hw=model.in_hw)
            model.load_state_dict(start_from.state_dict())
        model = model.to(d.device)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        start = common.load_for_resume(out, model, opt, "snn", opts) if resume else 0
        fwd = common.wrap(model, d)
        sampler = SNNSampler(sources, p, windows, seed=common.data_seed(seed, d.rank, start),
                             ref_noise=ref_noise, pool_size=pool)
        bar = common.make_bar(steps, start, "train snn", quiet or not d.main)
        t_begin = time.monotonic()
        ema = None
        ema_iou = None
        step = start
        try:
            for step in range(start, steps):
                for g in opt.param_groups:
                    g["lr"] = common.lr_at(step, steps, lr)
                p_self = self_feed * min(1.0, step / max(1.0, 0.5 * steps))
                clips = sampler.clips(batch)
                loss, st = rollout_loss(fwd, clips, p, sampler.rng, p_self, ref_noise, burn_in, d.device,
                                        ref_offset=ref_offset, giou_weight=giou_weight)
                total = loss + lam * _weight_l2(model) if lam else loss
                opt.zero_grad(set_to_none=True)
                total.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                opt.step()
                lv = float(loss.detach())
                ema = lv if ema is None else 0.98 * ema + 0.02 * lv
                ema_iou = st["iou"] if ema_iou is None else 0.98 * ema_iou + 0.02 * st["iou"]
                bar.update(1)
                bar.set_postfix(loss=f"{ema:.4f}", iou=f"{ema_iou:.3f}", ref=f"{st['ref_iou']:.3f}",
                                own=f"{p_self:.2f}")
                if progress is not None:
                    progress(step + 1, steps)
                if d.main and ckpt_every and (step + 1) % ckpt_every == 0 and step + 1 < steps:
                    common.save(out, model, opt, step + 1, preset, recipe, seed, opts)
            step = steps
        finally:
            bar.close()
        result = {"step": step, "loss": ema, "iou": ema_iou, "seconds": time.monotonic() - t_begin,
                  "world": d.world, "param_checksum": common.param_checksum(model)}
        if d.main:
            common.save(out, model, opt, step, preset, recipe, seed, opts, final=True)
            if eval_data is not None:
                paths = list_datasets(eval_data, allow_heldout=True)
                seqs = [EventSequence.from_dataset(q, allow_heldout=True) for q in paths]
                result["eval"] = evaluate(model, seqs, p)
                with open(os.fspath(out) + ".eval.json", "w") as fh:
                    json.dump({"eval_data": [os.path.basename(q) for q in paths], **result}, fh, indent=1)
        return result
    finally:
        common.teardown(d)


def _weight_l2(model) -> torch.Tensor:
    from ..models.arch import weight_l2

    return weight_l2(model)


def run(args) -> int:
    """``dashnet train snn``."""
    from ..cli import UserError

    try:
        res = train(args.data, args.out, preset=args.preset, steps=args.steps, batch=args.batch, lr=args.lr,
                    lam=args.lam, seed=args.seed, resume=args.resume, device=args.device,
                    threads=args.threads, windows=args.windows, burn_in=args.burn_in,
                    ref_noise=args.ref_noise, self_feed=args.self_feed, ckpt_every=args.ckpt_every,
                    pool=args.pool, quiet=args.quiet, eval_data=args.eval_data,
                    ref_offset=args.ref_offset, init=args.init, giou_weight=args.giou_weight)
    except (FileNotFoundError, ValueError) as e:
        raise UserError(str(e)) from None
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"dashnet train snn: {res['step']} steps in {res['seconds']:.0f} s, loss {res['loss']:.4f}, "
              f"train IoU {res['iou']:.3f} -> {args.out}")
        if "eval" in res:
            for m, r in res["eval"].items():
                print(f"  held-out {m}: IoU {r['iou']:.3f} (reference {r['iou_hold']:.3f}, zero-order "
                      f"hold {r['iou_zoh']:.3f}), silent {100 * r['silent_frac']:.1f}%, {r['windows']} windows")
    return 0


def main(argv=None) -> int:
    """``python -m dashnet_ros.train.snn`` (same options as ``dashnet train snn``; handy under torchrun)."""
    from .common import module_main

    return module_main("snn", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
