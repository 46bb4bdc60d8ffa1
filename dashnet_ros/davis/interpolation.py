"""Video frame interpolation for the DAVIS simulator (paper eq. 13, after Niklaus et al. 2017).

A small fully convolutional encoder-decoder looks at the pair ``(I_{n-1}, I_{n+1})`` and
predicts, for every pixel, one separable kernel per input frame (a vertical and a
horizontal 1-D kernel of ``kernel_size`` taps each).  The middle frame is the two local
patches convolved with their kernels (eq. 13)::

    I_n(x, y) = [P_{n-1}(x, y)  P_{n+1}(x, y)] * K(x, y)

applied as a horizontal then a vertical per-pixel 1-D pass (:func:`apply_adaptive_kernels`;
equal to the outer-product kernel ``kv kh^T`` where the kernels vary slowly).

The vertical kernels of both frames are one softmax over ``2 * kernel_size`` taps and each
horizontal kernel is a softmax over its ``kernel_size`` taps, so every ``K(x, y)`` is a
convex combination of input pixels: the output stays in [0, 1] and a static scene is
reproduced once the kernels are centred (the head is initialised to centred kernels, i.e.
close to linear blending).  A symmetric matching-cost volume at 1/2 resolution is fed to
the encoder so that the motion is easy to read off.

Speed (the simulator runs it ~1700 times per second of 240 fps video at x7): the encoder
works at 1/2 .. 1/8 resolution, kernels are predicted at 1/4 resolution and upsampled
bilinearly; only the kernel application (eq. 13) runs at full resolution.

Factors ``2**k - 1`` (1, 3, 7, ...) come from recursive midpoints, each level batched.
Training (:func:`train_interpolator`): triplets of procedural frames, random crops, varied
frame spacing, L1 loss on the middle frame (as in the paper), Adam.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

#: bump when the network code changes in a way that invalidates saved weights
CODE_VERSION = 1
ARCH = "sepconv-lite"
CHECKPOINT_FORMAT = "dashnet_ros.interp"

DEFAULT_CONFIG: Dict = {
    "arch": ARCH,
    "kernel_size": 11,  # taps of each 1-D kernel: reaches +-5 px from each input frame
    "channels": [16, 24, 32],  # encoder widths at 1/2, 1/4, 1/8 resolution
    "decoder_channels": 24,  # decoder width at 1/4 resolution (where kernels are predicted)
    "cost_radius": 2,  # symmetric matching costs at 1/2 res for |d| <= 2 (0: none)
}

#: the shipped weights, next to this package
DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "interp.pt"

ProgressFn = Callable[[int, int], None]


# ----------------------------------------------------------------------------- network


def _apply_hw_k(img: torch.Tensor, kv: torch.Tensor, kh: torch.Tensor) -> torch.Tensor:
    """:func:`apply_adaptive_kernels` on (B, H, W) images and (B, H, W, K) kernels (taps
    last: the layout the kernels are upsampled in, and the fast one here)."""
    k = kv.shape[-1]
    h, w = img.shape[-2:]
    r = k // 2
    padded = F.pad(img[:, None], (r, r, 0, 0), mode="replicate")[:, 0]  # (B, H, W+2r)
    hpass = (padded.unfold(2, k, 1) * kh).sum(-1)  # (B, H, W)
    # rows outside the image: the replicated edge row with the edge row's kernel, i.e.
    # the edge row of the horizontal pass
    hpass = F.pad(hpass[:, None], (0, 0, r, r), mode="replicate")[:, 0]  # (B, H+2r, W)
    return (hpass.unfold(1, k, 1) * kv).sum(-1)  # (B, H, W)


def apply_adaptive_kernels(img: torch.Tensor, kv: torch.Tensor, kh: torch.Tensor) -> torch.Tensor:
    """Per-pixel separable kernels applied to local patches (one frame's term of eq. 13).

    ``img`` (B, 1, H, W); ``kv``, ``kh`` (B, K, H, W): vertical / horizontal taps for every
    pixel.  Two 1-D passes, horizontal then vertical (edges replicated)::

        h[y', x]  = sum_j kh[j, y', x] img[y', x + j - K//2]
        out[y, x] = sum_i kv[i, y, x]  h[y + i - K//2, x]

    i.e. the patch around ``(x, y)`` is convolved with the 2-D kernel
    ``K(x, y)[i, j] = kv[i, y, x] kh[j, y + i - K//2, x]``.  Where the kernels vary slowly
    (they are predicted at 1/4 resolution) this equals the outer product
    ``kv(x, y) kh(x, y)^T`` of :func:`apply_adaptive_kernels_exact` at 2K instead of K^2+K
    multiply-adds per pixel; for spatially constant kernels both are identical.
    Returns (B, 1, H, W).
    """
    return _apply_hw_k(img[:, 0], kv.permute(0, 2, 3, 1), kh.permute(0, 2, 3, 1))[:, None]


def apply_adaptive_kernels_exact(img: torch.Tensor, kv: torch.Tensor, kh: torch.Tensor) -> torch.Tensor:
    """Reference: ``out[y, x] = sum_ij kv[i, y, x] kh[j, y, x] img[y + i - r, x + j - r]``
    (outer-product kernel at every pixel, Niklaus et al. 2017b).  K^2 work per pixel."""
    k = kv.shape[1]
    h, w = img.shape[-2:]
    r = k // 2
    padded = F.pad(img, (r, r, r, r), mode="replicate")
    shifted = torch.cat([padded[:, :, :, j : j + w] for j in range(k)], dim=1)
    out = None
    for i in range(k):
        term = kv[:, i : i + 1] * (kh * shifted[:, :, i : i + h]).sum(dim=1, keepdim=True)
        out = term if out is None else out + term
    return out


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.ReLU(inplace=True))


class SepConvLite(nn.Module):
    """The interpolation FCN: pair in, middle frame out (eq. 13).

    ``forward(a, b)`` with ``a``, ``b`` (B, 1, H, W) in [0, 1] returns (B, 1, H, W).
    """

    #: kernel logits are ``LOGIT_SCALE * head(features)``: a softmax needs logit changes of
    #: several units to move a kernel's mass, which Adam's ~lr-sized steps reach only slowly
    LOGIT_SCALE = 8.0

    def __init__(self, kernel_size: int = 11, channels: Sequence[int] = (16, 24, 32),
                 decoder_channels: int = 24, cost_radius: int = 2):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 1, got {kernel_size}")
        if len(channels) != 3:
            raise ValueError(f"channels must have 3 entries (1/2, 1/4, 1/8 res), got {channels}")
        c1, c2, c3 = (int(c) for c in channels)
        self.kernel_size = int(kernel_size)
        self.cost_radius = int(cost_radius)
        n_cost = (2 * self.cost_radius + 1) ** 2 if self.cost_radius > 0 else 0
        self.enc1 = _conv(3, c1, 2)  # 1/2
        self.enc2 = _conv(c1 + n_cost, c2, 2)  # 1/4
        self.enc3 = nn.Sequential(_conv(c2, c3, 2), _conv(c3, c3))  # 1/8
        self.dec2 = _conv(c3 + c2, decoder_channels)  # 1/4
        self.head = nn.Conv2d(decoder_channels, 4 * self.kernel_size, 3, padding=1)
        self.reset_head()

    def reset_head(self) -> None:
        """Start from centred kernels with equal frame weights, i.e. linear blending."""
        k = self.kernel_size
        nn.init.normal_(self.head.weight, std=1e-3)
        bias = torch.zeros(4, k)
        bias[:, k // 2] = 6.0 / self.LOGIT_SCALE
        with torch.no_grad():
            self.head.bias.copy_(bias.flatten())

    def cost_volume(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Symmetric matching costs at 1/2 resolution: for every displacement ``d`` in
        ``[-R, R]^2`` (half-res pixels) the 3x3-averaged ``|a(x - d) - b(x + d)|``: low where
        the pixel moves by ``2d`` between the frames.  (B, (2R+1)^2, H/2, W/2)."""
        r = self.cost_radius
        a2 = F.pad(F.avg_pool2d(a, 2), (r, r, r, r), mode="replicate")
        b2 = F.pad(F.avg_pool2d(b, 2), (r, r, r, r), mode="replicate")
        h2, w2 = a2.shape[-2] - 2 * r, a2.shape[-1] - 2 * r
        costs = []
        for dy in range(-r, r + 1):
            for dx in range(-r, r + 1):
                pa = a2[:, :, r - dy : r - dy + h2, r - dx : r - dx + w2]
                pb = b2[:, :, r + dy : r + dy + h2, r + dx : r + dx + w2]
                costs.append((pa - pb).abs())
        c = torch.cat(costs, dim=1)
        # 3x3 mean over the pixels inside the image (a depthwise box sum / pixel count:
        # several times faster on CPU than avg_pool2d(count_include_pad=False))
        n = c.shape[1]
        box = torch.ones(n, 1, 3, 3, dtype=c.dtype, device=c.device)
        ones = torch.ones(1, 1, h2, w2, dtype=c.dtype, device=c.device)
        count = F.conv2d(ones, box[:1], padding=1)
        return F.conv2d(c, box, padding=1, groups=n) / count * 10.0

    def kernels(self, a: torch.Tensor, b: torch.Tensor):
        """Per-pixel kernels ``(kv_a, kh_a, kv_b, kh_b)``, each (B, K, H, W)."""
        kern = self._kernels_hw_k(a, b)
        k = self.kernel_size
        return tuple(kern[..., i * k : (i + 1) * k].permute(0, 3, 1, 2) for i in range(4))

    def _kernels_hw_k(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """All kernels as one (B, H, W, 4K) tensor, taps last: ``[kv_a kh_a kv_b kh_b]``."""
        h, w = a.shape[-2:]
        ph, pw = (-h) % 8, (-w) % 8
        x = torch.cat([a - 0.5, b - 0.5, b - a], dim=1)
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        e1 = self.enc1(x * 4.0)
        if self.cost_radius > 0:
            e1 = torch.cat([e1, self.cost_volume(x[:, 0:1], x[:, 1:2])], dim=1)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        up = F.interpolate(e3, size=e2.shape[-2:], mode="bilinear", align_corners=False)
        d2 = self.dec2(torch.cat([up, e2], dim=1))
        k = self.kernel_size
        logits = self.head(d2) * self.LOGIT_SCALE
        bsz, _, hq, wq = logits.shape
        logits = logits.view(bsz, 4, k, hq, wq)
        # vertical taps of both frames share one softmax: the frame weights sum to one
        v = torch.softmax(torch.cat([logits[:, 0], logits[:, 2]], dim=1), dim=1)
        ha = torch.softmax(logits[:, 1], dim=1)
        hb = torch.softmax(logits[:, 3], dim=1)
        kern = torch.cat([v[:, :k], ha, v[:, k:], hb], dim=1)
        # upsampled channels-last (taps last), the layout the kernel application wants
        kern = kern.contiguous(memory_format=torch.channels_last)
        kern = F.interpolate(kern, size=(h + ph, w + pw), mode="bilinear", align_corners=False)
        return kern.permute(0, 2, 3, 1)[:, :h, :w]

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        kern = self._kernels_hw_k(a, b)
        k = self.kernel_size
        out = (_apply_hw_k(a[:, 0], kern[..., :k], kern[..., k : 2 * k])
               + _apply_hw_k(b[:, 0], kern[..., 2 * k : 3 * k], kern[..., 3 * k :]))
        return out[:, None]


def build_model(config: Optional[Dict] = None) -> SepConvLite:
    cfg = dict(DEFAULT_CONFIG if config is None else config)
    if cfg.get("arch") != ARCH:
        raise ValueError(f"unknown interpolation architecture {cfg.get('arch')!r} (this code: {ARCH!r})")
    return SepConvLite(cfg["kernel_size"], cfg["channels"], cfg["decoder_channels"],
                       cfg.get("cost_radius", 0))


# ----------------------------------------------------------------------------- checkpoints


def save_checkpoint(path, model: SepConvLite, config: Dict, extra: Optional[Dict] = None) -> None:
    """Write ``{format, code_version, config, state_dict, **extra}`` atomically (tmp + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {"format": CHECKPOINT_FORMAT, "code_version": CODE_VERSION, "config": dict(config),
            "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
    if extra:
        blob.update(extra)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        torch.save(blob, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_checkpoint(path, expect_config: Optional[Dict] = None) -> Tuple[SepConvLite, Dict]:
    """Load a model saved by :func:`save_checkpoint`; returns ``(model, checkpoint_dict)``.

    Refuses (ValueError naming the file) a missing, truncated or foreign file, a different
    code version, or, with ``expect_config``, a config whose architecture or kernel size
    differs from what the caller expects.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"interpolation checkpoint {path} does not exist (train one with "
                                f"`dashnet train interp --out RUN.pt --export {path}`)")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, not a torch file, ...
        raise ValueError(f"interpolation checkpoint {path} is unreadable (truncated or not a "
                         f"checkpoint: {type(e).__name__}: {e}); retrain or restore the file") from None
    if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an interpolation checkpoint (format "
                         f"{blob.get('format') if isinstance(blob, dict) else type(blob).__name__!r}, "
                         f"expected {CHECKPOINT_FORMAT!r})")
    if blob.get("code_version") != CODE_VERSION:
        raise ValueError(f"interpolation checkpoint {path} was written by code version "
                         f"{blob.get('code_version')}, this code is version {CODE_VERSION}; retrain it")
    cfg = blob.get("config")
    if not isinstance(cfg, dict):
        raise ValueError(f"interpolation checkpoint {path} has no config")
    if expect_config is not None:
        for key in ("arch", "kernel_size", "channels", "decoder_channels", "cost_radius"):
            if list_or(cfg.get(key)) != list_or(expect_config.get(key)):
                raise ValueError(f"interpolation checkpoint {path} does not match the code: "
                                 f"{key}={cfg.get(key)!r} in the file, {expect_config.get(key)!r} "
                                 f"expected; retrain or use the matching code")
    try:
        model = build_model(cfg)
        model.load_state_dict(blob["state_dict"])
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        raise ValueError(f"interpolation checkpoint {path} does not fit its config: {e}") from None
    model.eval()
    return model, blob


def list_or(v):
    return list(v) if isinstance(v, (list, tuple)) else v


# ----------------------------------------------------------------------------- interpolators


def _check_pair(frame_a, frame_b) -> Tuple[np.ndarray, np.ndarray]:
    a = np.asarray(frame_a, dtype=np.float32)
    b = np.asarray(frame_b, dtype=np.float32)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"frames must be two HxW arrays of one shape, got {a.shape} and {b.shape}")
    return a, b


def _check_factor(factor) -> int:
    f = int(factor)
    if f != factor or f < 0:
        raise ValueError(f"factor must be a non-negative integer, got {factor!r}")
    return f


class LinearInterpolator:
    """Baseline: ``factor`` frames blended linearly at ``t = k / (factor + 1)``."""

    def __call__(self, frame_a, frame_b, factor: int) -> List[np.ndarray]:
        a, b = _check_pair(frame_a, frame_b)
        f = _check_factor(factor)
        return [((1 - k / (f + 1)) * a + (k / (f + 1)) * b).astype(np.float32) for k in range(1, f + 1)]


class FCNInterpolator:
    """The FCN interpolator (eq. 13) with recursive midpoints.

    ``__call__(frame_a, frame_b, factor)``: float32 HxW frames in [0, 1]; returns ``factor``
    frames (float32, [0, 1]) equally spaced strictly between them, in time order.
    ``factor`` must be ``2**k - 1`` (0, 1, 3, 7, 15, ...).

    ``fcn_levels``: run the network for the first ``fcn_levels`` recursion levels only and
    blend linearly below (None: all levels).  The deep levels bridge the shortest gaps,
    where the FCN gains least over blending (about 0.1 dB at 1/8 of a 240 fps frame), so
    e.g. ``fcn_levels=2`` makes x7 cost 3 network midpoints instead of 7.
    """

    def __init__(self, model: SepConvLite, device: str = "cpu", fcn_levels: Optional[int] = None):
        self.model = model.to(device).eval()
        self.device = device
        if fcn_levels is not None and int(fcn_levels) < 0:
            raise ValueError(f"fcn_levels must be >= 0 or None, got {fcn_levels}")
        self.fcn_levels = None if fcn_levels is None else int(fcn_levels)

    @property
    def kernel_size(self) -> int:
        return self.model.kernel_size

    def midpoints(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Batched midpoints of (B, 1, H, W) pairs."""
        with torch.inference_mode():
            return self.model(a, b).clamp_(0.0, 1.0)

    def __call__(self, frame_a, frame_b, factor: int) -> List[np.ndarray]:
        a, b = _check_pair(frame_a, frame_b)
        f = _check_factor(factor)
        if f == 0:
            return []
        levels = int(round(math.log2(f + 1)))
        if 2 ** levels - 1 != f:
            raise ValueError(f"FCN interpolation factor must be 2**k - 1 (1, 3, 7, 15, ...), got {f}")
        ta = torch.from_numpy(a)[None, None].to(self.device)
        tb = torch.from_numpy(b)[None, None].to(self.device)
        seq = [ta, tb]  # key frames in time order, each (1, 1, H, W)
        for level in range(levels):
            lefts = torch.cat(seq[:-1], dim=0)
            rights = torch.cat(seq[1:], dim=0)
            if self.fcn_levels is None or level < self.fcn_levels:
                mids = self.midpoints(lefts, rights)
            else:
                mids = 0.5 * (lefts + rights)
            new = [seq[0]]
            for i in range(len(seq) - 1):
                new += [mids[i : i + 1], seq[i + 1]]
            seq = new
        return [s[0, 0].cpu().numpy().astype(np.float32, copy=False) for s in seq[1:-1]]


def load_default_interpolator(path=None, device: str = "cpu",
                              fcn_levels: Optional[int] = None) -> FCNInterpolator:
    """The shipped FCN (``dashnet_ros/weights/interp.pt``, or ``path``), checked against
    this code's config (architecture, kernel size, widths)."""
    model, _ = load_checkpoint(DEFAULT_WEIGHTS if path is None else path, expect_config=DEFAULT_CONFIG)
    return FCNInterpolator(model, device=device, fcn_levels=fcn_levels)


def time_midpoints(interp, *, width: int = 240, height: int = 180, factor: int = 7,
                   repeats: int = 20, seed: int = 0) -> Dict[str, float]:
    """Wall-clock cost of ``interp(a, b, factor)`` on random ``height x width`` frames:
    ``{"ms_per_call_min", "ms_per_call_median", "ms_per_frame_min", "ms_per_frame_median"}``
    (per interpolated frame = per midpoint for the recursive FCN).  Uses the current torch
    thread setting."""
    rng = np.random.default_rng(seed)
    a = rng.random((height, width), dtype=np.float32)
    b = rng.random((height, width), dtype=np.float32)
    interp(a, b, factor)  # warm-up
    ts = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        interp(a, b, factor)
        ts.append((time.perf_counter() - t0) * 1e3)
    ts = np.asarray(ts)
    return {"ms_per_call_min": float(ts.min()), "ms_per_call_median": float(np.median(ts)),
            "ms_per_frame_min": float(ts.min() / factor),
            "ms_per_frame_median": float(np.median(ts) / factor)}


# ----------------------------------------------------------------------------- metrics


def psnr(pred: np.ndarray, target: np.ndarray, peak: float = 1.0) -> float:
    """PSNR in dB of ``pred`` vs ``target`` (same scale, ``peak`` the maximum value)."""
    mse = float(np.mean((np.asarray(pred, np.float64) - np.asarray(target, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * math.log10(peak * peak / mse)


# ----------------------------------------------------------------------------- data


def _scenes():
    from dashnet_ros.world import scenes  # procedural world (seeds >= 1000 for training)

    return scenes


class TripletSampler:
    """Random training triplets ``(I_{n-1}, I_n, I_{n+1})`` from procedural sequences.

    A pool of ``pool`` sequences (scene seeds drawn ``>= TRAIN_SEED_MIN``, frame rates
    log-uniform in ``fps_range``) is refreshed by one new sequence every ``refresh_every``
    batches.  Each triplet is rendered exactly with ``render_at`` at ``t0, t0 + d, t0 + 2d``,
    ``d`` log-uniform in ``half_gap_frames`` frames of its sequence (small and large
    motion: x7 at 240 fps needs 1/480 .. 1/1920 s, 15-30 Hz video up to a whole frame);
    a ``static_prob`` fraction is a still frame.  Random crops (the busiest of
    ``crop_tries``), flips, transposes and time reversal.  Deterministic in ``seed``; :meth:`state_dict` makes it resumable.
    """

    def __init__(self, seed: int, *, pool: int = 24, refresh_every: int = 8,
                 fps_range=(15.0, 240.0), half_gap_frames=(0.2, 1.5), static_prob: float = 0.03,
                 crop_tries: int = 3, width: int = 240, height: int = 180, duration_s: float = 2.0):
        self.rng = np.random.default_rng(seed)
        self.pool_size, self.refresh_every = int(pool), int(refresh_every)
        self.fps_range, self.half_gap_frames = tuple(fps_range), tuple(half_gap_frames)
        self.static_prob = float(static_prob)
        self.crop_tries = max(1, int(crop_tries))
        self.width, self.height, self.duration_s = int(width), int(height), float(duration_s)
        self.calls = 0
        self.specs: List[Tuple[int, float]] = [self._new_spec() for _ in range(self.pool_size)]
        self._cache: Dict[Tuple[int, float], object] = {}

    def _new_spec(self) -> Tuple[int, float]:
        sc = _scenes()
        seed = int(self.rng.integers(sc.TRAIN_SEED_MIN, 2**31 - 1))
        lo, hi = self.fps_range
        fps = float(np.exp(self.rng.uniform(math.log(lo), math.log(hi))))
        return seed, round(fps, 3)

    def _source(self, spec):
        src = self._cache.get(spec)
        if src is None:
            seed, fps = spec
            if seed < _scenes().TRAIN_SEED_MIN:
                raise ValueError(f"training scene seed {seed} is in the held-out range")
            n = int(self.duration_s * fps) + 2
            src = _scenes().render_sequence(seed, n, self.width, self.height, fps)
            self._cache = {s: self._cache[s] for s in self._cache if s in self.specs}
            self._cache[spec] = src
        return src

    def sample(self, batch: int, crop: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(a, mid, b)`` each (batch, 1, crop, crop) float32."""
        if crop > min(self.width, self.height):
            raise ValueError(f"crop {crop} larger than the {self.width}x{self.height} frames")
        if self.calls and self.calls % self.refresh_every == 0:
            self.specs[int(self.rng.integers(self.pool_size))] = self._new_spec()
        self.calls += 1
        rng = self.rng
        out = np.empty((batch, 3, crop, crop), np.float32)
        lo, hi = self.half_gap_frames
        for n in range(batch):
            spec = self.specs[int(rng.integers(self.pool_size))]
            src = self._source(spec)
            dur_us = self.duration_s * 1e6
            if rng.random() < self.static_prob:
                t0 = rng.uniform(0, dur_us)
                img = src.render_at(t0)
                tri = (img, img, img)
            else:
                d_us = math.exp(rng.uniform(math.log(lo), math.log(hi))) * 1e6 / spec[1]
                t0 = rng.uniform(0, dur_us - 2 * d_us)
                tri = tuple(src.render_at(t0 + k * d_us) for k in range(3))
            # of a few random crops take the one with the most change: uniform areas and
            # static background teach nothing
            best, t = -1.0, None
            for _ in range(self.crop_tries):
                y0 = int(rng.integers(self.height - crop + 1))
                x0 = int(rng.integers(self.width - crop + 1))
                c = np.stack([im[y0 : y0 + crop, x0 : x0 + crop] for im in tri])
                score = float(np.abs(c[2] - c[0]).mean())
                if score > best:
                    best, t = score, c
            if rng.random() < 0.5:
                t = t[:, :, ::-1]
            if rng.random() < 0.5:
                t = t[:, ::-1]
            if rng.random() < 0.5:
                t = t.transpose(0, 2, 1)
            if rng.random() < 0.5:
                t = t[::-1]
            out[n] = t
        x = torch.from_numpy(out)
        return x[:, 0:1], x[:, 1:2], x[:, 2:3]

    def state_dict(self) -> Dict:
        return {"rng": self.rng.bit_generator.state, "calls": self.calls,
                "specs": [[s, f] for s, f in self.specs]}

    def load_state_dict(self, st: Dict) -> None:
        self.rng.bit_generator.state = st["rng"]
        self.calls = int(st["calls"])
        self.specs = [(int(s), float(f)) for s, f in st["specs"]]


def heldout_triplets(n: int, *, first_seed: int = 0, fps_list=(15.0, 30.0, 60.0, 120.0, 240.0),
                     half_gap_frames=(0.25, 0.5, 1.0), width: int = 240, height: int = 180) -> np.ndarray:
    """``n`` full-frame test triplets (n, 3, H, W) from held-out scene seeds
    ``first_seed, first_seed + 1, ...`` (must be < 1000); frame rates and spacings cycle
    through ``fps_list`` and ``half_gap_frames``.  Deterministic."""
    sc = _scenes()
    if first_seed < 0 or first_seed + n > sc.TRAIN_SEED_MIN:
        raise ValueError(f"held-out seeds must lie in 0..{sc.TRAIN_SEED_MIN - 1}, "
                         f"got {first_seed}..{first_seed + n - 1}")
    out = np.empty((n, 3, height, width), np.float32)
    for i in range(n):
        seed = first_seed + i
        fps = fps_list[i % len(fps_list)]
        gap = half_gap_frames[(i // len(fps_list)) % len(half_gap_frames)]
        src = sc.render_sequence(seed, int(fps) + 2, width, height, fps)
        d_us = gap * 1e6 / fps
        t0 = (seed % 7 + 1) / 9 * (1e6 - 2 * d_us)
        out[i] = np.stack([src.render_at(t0 + k * d_us) for k in range(3)])
    return out


def evaluate_triplets(interp, triplets: np.ndarray) -> Dict[str, float]:
    """Mean PSNR (dB, peak 1) and L1 of ``interp``'s midpoints vs the true middle frames,
    and of linear blending, over ``triplets`` (N, 3, H, W)."""
    res = {"psnr": [], "psnr_linear": [], "l1": [], "l1_linear": []}
    for a, m, b in triplets:
        pred = interp(a, b, 1)[0]
        lin = 0.5 * (a + b)
        res["psnr"].append(min(psnr(pred, m), 100.0))
        res["psnr_linear"].append(min(psnr(lin, m), 100.0))
        res["l1"].append(float(np.abs(pred - m).mean()))
        res["l1_linear"].append(float(np.abs(lin - m).mean()))
    return {k: float(np.mean(v)) for k, v in res.items()}


# ----------------------------------------------------------------------------- training


@dataclass
class TrainOptions:
    """Hyper-parameters of :func:`train_interpolator` (stored in the checkpoint)."""

    steps: int = 6000
    seed: int = 0
    batch: int = 16
    crop: int = 96
    lr: float = 2e-3
    lr_final: float = 5e-5
    ckpt_every: int = 250
    val_every: int = 500
    n_val: int = 15
    pool: int = 24
    refresh_every: int = 8
    half_gap_frames: Tuple[float, float] = (0.2, 1.5)
    fps_range: Tuple[float, float] = (15.0, 240.0)
    static_prob: float = 0.03
    crop_tries: int = 3


def _lr_at(opts: TrainOptions, step: int) -> float:
    """Cosine decay from ``lr`` to ``lr_final`` over ``steps``."""
    f = min(step / max(opts.steps, 1), 1.0)
    return opts.lr_final + 0.5 * (opts.lr - opts.lr_final) * (1 + math.cos(math.pi * f))


def train_interpolator(out, opts: TrainOptions, *, resume: bool = False, config: Optional[Dict] = None,
                       progress: Optional[ProgressFn] = None, log: Callable[[str], None] = print) -> Dict:
    """Train the FCN on procedural triplets with the L1 loss of the paper (eq. 13 + L1).

    Writes a resumable checkpoint (model, config, optimizer, sampler and RNG state) to
    ``out`` every ``ckpt_every`` steps and at the end.  ``resume``: continue from ``out``
    up to ``opts.steps`` total steps (the other options come from the checkpoint).
    Returns the last validation metrics (held-out seeds, see :func:`heldout_triplets`).
    """
    out = Path(out)
    config = dict(DEFAULT_CONFIG if config is None else config)
    if resume:
        model, blob = load_checkpoint(out, expect_config=config)
        tr = blob.get("train")
        if not isinstance(tr, dict) or "optimizer" not in tr:
            raise ValueError(f"{out} holds no training state (an exported model?); cannot resume")
        saved = dict(tr["options"])
        saved["steps"] = opts.steps
        saved["half_gap_frames"] = tuple(saved["half_gap_frames"])
        saved["fps_range"] = tuple(saved["fps_range"])
        opts = TrainOptions(**saved)
    else:
        if out.exists():
            raise ValueError(f"{out} exists; pass --resume to continue it or choose another --out")
        torch.manual_seed(opts.seed)
        model = build_model(config)
        tr = None
    if opts.steps < 1 or opts.batch < 1 or opts.crop < 16:
        raise ValueError(f"need steps >= 1, batch >= 1, crop >= 16 (got {opts.steps}, {opts.batch}, {opts.crop})")
    sampler = TripletSampler(opts.seed, pool=opts.pool, refresh_every=opts.refresh_every,
                             fps_range=opts.fps_range, half_gap_frames=opts.half_gap_frames,
                             static_prob=opts.static_prob, crop_tries=opts.crop_tries)
    optim = torch.optim.Adam(model.parameters(), lr=opts.lr)
    step, elapsed, history = 0, 0.0, []
    if tr is not None:
        optim.load_state_dict(tr["optimizer"])
        sampler.load_state_dict(tr["sampler"])
        torch.set_rng_state(tr["torch_rng"])
        step, elapsed, history = int(tr["step"]), float(tr["elapsed_s"]), list(tr["history"])
    val = heldout_triplets(opts.n_val) if opts.n_val > 0 else None
    interp = FCNInterpolator(model)

    def checkpoint():
        save_checkpoint(out, model, config, extra={"train": {
            "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(opts).items()},
            "step": step, "elapsed_s": elapsed, "history": history,
            "optimizer": optim.state_dict(), "sampler": sampler.state_dict(),
            "torch_rng": torch.get_rng_state()}})

    def validate():
        model.eval()
        m = evaluate_triplets(interp, val)
        m["step"] = step
        history.append(m)
        log(f"step {step}: held-out PSNR {m['psnr']:.2f} dB (linear {m['psnr_linear']:.2f} dB)")
        return m

    last = history[-1] if history else None
    if progress:
        progress(step, opts.steps)
    t_start = time.perf_counter() - elapsed
    while step < opts.steps:
        model.train()
        for g in optim.param_groups:
            g["lr"] = _lr_at(opts, step)
        a, mid, b = sampler.sample(opts.batch, opts.crop)
        loss = F.l1_loss(model(a, b), mid)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        step += 1
        elapsed = time.perf_counter() - t_start
        if val is not None and (step % opts.val_every == 0 or step == opts.steps):
            last = validate()
        if step % opts.ckpt_every == 0 or step == opts.steps:
            checkpoint()
        if progress:
            progress(step, opts.steps)
    return last or {}
