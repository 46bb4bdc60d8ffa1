"""The spiking tracker (paper §3.1, eq. 1-4).

Every convolution / hidden FC of the layer string is followed by a layer of LIF neurons
(eq. 1-3, :mod:`.lif`); hidden layers have no bias, as eq. 1 has none.  The final ``FC4``
is a *linear* readout of the spike counts of the last hidden layer summed over one output
window ``δt`` (eq. 4)::

    box = W · (sum_{t in window} o^{N-1}(t)) / steps_per_window + b

(the fixed ``1 / steps_per_window`` only rescales ``W`` and keeps its initial scale
independent of the window length).  The input is the event stream binned per simulation
step into 2-polarity count maps ``[T, 2, H, W]`` (channel 0 ON, 1 OFF) over the network's
input region (see :func:`bin_events`).  The output box is ``(cx, cy, w, h)`` normalised to
that region (:mod:`.arch`).

The membrane potentials persist from one window to the next (the tracker runs on an
endless stream): :meth:`SpikingTracker.step_window` keeps them inside the model,
:meth:`SpikingTracker.forward` takes and returns them explicitly (for BPTT over a sequence
of windows and for the TorchScript export).

Two presets (:data:`PRESETS`): ``"paper"`` is the §4 string on the whole 240x180 DAVIS
frame; ``"fast"`` is a small network on a 32x32 search window around the last box, sized
for CPUs (2083 windows/s is the paper's rate).  For streaming on a CPU the tracker runs
this network in :mod:`.snn_engine` (the same function without torch's per-operator
overhead, event-driven numba kernels where numba is installed, the windows of a call and their
search regions in one compiled loop: ~110 µs per fast window including binning and the
TCF against ~640 µs in torch on the 2-core development machine); :meth:`SpikingTracker.scripted` is the TorchScript form (export, GPUs).  Several
windows per call (:meth:`SpikingTracker.forward_windows`, ``step_window`` with ``[B, K, T,
...]``) trade latency for throughput; the paper preset costs ~40-60 ms per window.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from .arch import (
    PAPER_SNN_ARCH,
    box_regression_loss,
    build_stage_layers,
    check_readout,
    layer_specs,
)
from .lif import check_lif_params, lif_multistep
from .snn_engine import sparse_kernels


@dataclass(frozen=True)
class SNNPreset:
    """A named SNN configuration.

    ``view``: ``"frame"`` (input region = whole frame) or ``"search"`` (a square window
    ``search_scale`` times the last box's larger side, centred on it; see
    :func:`dashnet_ros.models.arch.search_region`).  ``window_us``: output period ``δt``;
    ``steps_per_window``: LIF steps per window, so ``dt_s = window_us / steps / 1e6``.

    In ``"search"`` view the membrane maps live in search-window coordinates: keep the
    region fixed while streaming and move it between calls only (e.g. re-centre it on the
    fused box when an ANN output arrives); after a large jump call ``reset_state()``.
    """

    arch: str
    in_hw: Tuple[int, int]
    view: str
    search_scale: float
    window_us: int
    steps_per_window: int
    tau_s: float = 2e-3
    v_th: float = 0.5
    u_rest: float = 0.0
    surrogate_width: float = 1.0

    @property
    def dt_s(self) -> float:
        return self.window_us * 1e-6 / self.steps_per_window

    def to_dict(self) -> dict:
        d = asdict(self)
        d["in_hw"] = list(self.in_hw)
        return d


PRESETS: Dict[str, SNNPreset] = {
    # §4 string on the whole DAVIS240 frame; 480 µs windows (2083.3 outputs/s, Table 4).
    "paper": SNNPreset(PAPER_SNN_ARCH, (180, 240), "frame", 0.0, 480, 4),
    # CPU configuration: events of a search window 2.5x the last box binned straight to
    # 32x32 (sum pooling instead of the input MP2), narrow layers, one LIF step per window.
    "fast": SNNPreset("Input-16C3S2-32C3S2-64C3S2-FC256-FC4", (32, 32), "search", 2.5, 480, 1),
}


def script_module(model: nn.Module) -> torch.jit.ScriptModule:
    """``torch.jit.script`` of ``model`` in eval mode (inference graph, no surrogate).

    TorchScript is deprecated in recent torch releases but still the one format that keeps
    the streaming methods and loads without this package; its DeprecationWarning is muted.
    """
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.script(model)
    finally:
        model.train(was_training)


class SpikingStage(nn.Module):
    """Stateless ops (pool / conv / flatten+fc, no bias) followed by LIF neurons, multi-step."""

    def __init__(self, layers: List[nn.Module], decay: float, v_th: float, u_rest: float, width: float):
        super().__init__()
        self.op = nn.Sequential(*layers)
        self.decay = float(decay)
        self.v_th = float(v_th)
        self.u_rest = float(u_rest)
        self.width = float(width)

    def forward(self, x_seq: torch.Tensor, u: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        t, b = x_seq.shape[0], x_seq.shape[1]
        y = self.op(x_seq.flatten(0, 1))  # all steps at once: conv is stateless
        y = y.reshape([t, b] + list(y.shape[1:]))
        return lif_multistep(y, u, self.decay, self.v_th, self.u_rest, self.width)


class StreamingSNN:
    """Streaming API shared by :class:`SpikingTracker` and its TorchScript wrapper.

    Needs ``forward_windows``, ``initial_state``, ``readout_zero``, ``decay``,
    ``nan_when_silent`` and a ``_state`` attribute.
    """

    _state = None  # Optional[List[Tensor]]: membrane potentials between step_window calls
    __jit_ignored_attributes__ = ["_state", "specs"]

    def reset_state(self) -> None:
        """Forget the streaming state: the next :meth:`step_window` starts at rest."""
        self._state = None

    @torch.no_grad()
    def step_window(self, x: torch.Tensor) -> torch.Tensor:
        """Streaming inference: ``x [B, T, C, H, W]`` (one window) -> box ``[B, 4]``, or
        ``x [B, K, T, C, H, W]`` (K consecutive windows) -> boxes ``[B, K, 4]``.

        Keeps the membrane state for the next call (:meth:`reset_state` forgets it).  Input
        without any event skips the network: with no bias and ``u <= v_th`` after every
        step nothing can fire, so the state only decays by ``decay**steps`` (exactly what
        the full computation gives).  With ``nan_when_silent`` a window in which the last
        hidden layer did not fire gives a NaN box.
        """
        one = x.dim() == 5
        if one:
            x = x.unsqueeze(1)
        if x.dim() != 6:
            raise ValueError(f"step_window input must be [B, T, C, H, W] or [B, K, T, C, H, W], got {list(x.shape)}")
        b, k, t = x.shape[0], x.shape[1], x.shape[2]
        if self._state is None or self._state[0].shape[0] != b:
            self._state = self.initial_state(b, x.device, x.dtype)
        if not bool(x.any()):
            f = self.decay ** (k * t)
            self._state = [u * f for u in self._state]
            if self.nan_when_silent:
                return torch.full((b, 4) if one else (b, k, 4), float("nan"), dtype=x.dtype, device=x.device)
            box = self.readout_zero(b, x).unsqueeze(1).expand(b, k, 4)
            silent = torch.zeros((b, k), dtype=torch.bool)
        else:
            box, counts, self._state = self.forward_windows(x, self._state)
            silent = counts.flatten(2).sum(2) == 0
        if self.nan_when_silent and bool(silent.any()):
            box = box.masked_fill(silent[..., None], float("nan"))
        return box[:, 0] if one else box


class SpikingTracker(StreamingSNN, nn.Module):
    """SNN box tracker (eq. 1-4).

    ``arch``: layer string ending in ``FC4``; ``in_hw``: (H, W) of the binned event maps;
    ``steps_per_window``: nominal LIF steps per output window (scales the readout);
    ``nan_when_silent``: :meth:`step_window` returns NaN for a sample whose last hidden
    layer emitted no spike in the window (no evidence) instead of the readout bias.
    """

    def __init__(
        self,
        arch: str = PAPER_SNN_ARCH,
        in_hw: Sequence[int] = (180, 240),
        in_channels: int = 2,
        dt_s: float = 1.2e-4,
        tau_s: float = 2e-3,
        v_th: float = 0.5,
        u_rest: float = 0.0,
        surrogate_width: float = 1.0,
        steps_per_window: int = 4,
        padding: str = "same",
        nan_when_silent: bool = True,
    ):
        super().__init__()
        check_lif_params(dt_s, tau_s, v_th, u_rest, surrogate_width)
        if steps_per_window < 1:
            raise ValueError(f"steps_per_window must be >= 1, got {steps_per_window!r}")
        specs = layer_specs(arch, in_hw, in_channels, padding)
        check_readout(specs, arch)
        self.arch = arch
        self.in_hw = (int(in_hw[0]), int(in_hw[1]))
        self.in_channels = int(in_channels)
        self.padding = padding
        self.dt_s, self.tau_s, self.v_th, self.u_rest = float(dt_s), float(tau_s), float(v_th), float(u_rest)
        self.surrogate_width = float(surrogate_width)
        self.steps_per_window = int(steps_per_window)
        self.count_scale = 1.0 / self.steps_per_window
        self.nan_when_silent = bool(nan_when_silent)
        self.specs = specs
        decay = math.exp(-dt_s / tau_s)
        self.decay = decay
        # Group: every conv/fc (with the pools before it) is one spiking stage; pools after
        # the last hidden layer go into the readout.
        stages, pending, shapes = [], [], []
        for sp in specs[:-1]:
            pending.append(sp)
            if sp.kind != "pool":
                stages.append(SpikingStage(build_stage_layers(pending, bias=False), decay, v_th, u_rest, surrogate_width))
                shapes.append(sp.out_shape)
                pending = []
        if not stages:
            raise ValueError(f"architecture {arch!r} has no spiking layer before the readout")
        self.stages = nn.ModuleList(stages)
        self.state_shapes = [list(sh) for sh in shapes]  # List[List[int]], per sample
        self.readout = nn.Sequential(*build_stage_layers(pending + [specs[-1]], bias=True))
        self._state = None
        self.reset_parameters()

    def reset_parameters(self, gain: float = 1.0) -> None:
        """Hidden weights ~ N(0, gain^2 / fan_in): with the default threshold 0.5 this keeps
        every layer firing on sparse event input (torch's default init, std ~0.58/sqrt(fan_in),
        lets the activity die out after two or three layers)."""
        for stage in self.stages:
            for mod in stage.modules():
                if isinstance(mod, (nn.Conv2d, nn.Linear)):
                    nn.init.normal_(mod.weight, 0.0, gain / math.sqrt(mod.weight[0].numel()))

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "SpikingTracker":
        """Build the named preset of :data:`PRESETS` (keyword overrides win)."""
        if name not in PRESETS:
            raise ValueError(f"unknown SNN preset {name!r}; choose one of {sorted(PRESETS)}")
        p = PRESETS[name]
        kw = dict(
            arch=p.arch, in_hw=p.in_hw, dt_s=p.dt_s, tau_s=p.tau_s, v_th=p.v_th, u_rest=p.u_rest,
            surrogate_width=p.surrogate_width, steps_per_window=p.steps_per_window,
        )
        kw.update(overrides)
        return cls(**kw)

    # --- state ---------------------------------------------------------------------
    @torch.jit.export
    def initial_state(self, batch: int, device: Optional[torch.device] = None, dtype: torch.dtype = torch.float32) -> List[torch.Tensor]:
        """Membrane potentials at rest (``u_rest``) for ``batch`` samples."""
        return [torch.full([batch] + s, self.u_rest, device=device, dtype=dtype) for s in self.state_shapes]

    # --- compute -------------------------------------------------------------------
    def forward(self, x: torch.Tensor, state: Optional[List[torch.Tensor]] = None) -> Tuple[torch.Tensor, torch.Tensor, List[torch.Tensor]]:
        """One window: ``x [B, T, C, H, W]`` event counts -> ``(box [B, 4], counts, new_state)``.

        ``counts``: spike counts of the last hidden layer summed over the window (eq. 4).
        ``state``: membrane potentials from the previous window (None = at rest).
        Differentiable through time with the surrogate gradient (BPTT).
        """
        if x.dim() != 5:
            raise ValueError(f"SNN window input must be [B, T, C, H, W], got shape {list(x.shape)}")
        box, counts, new_state = self.forward_windows(x.unsqueeze(1), state)
        return box[:, 0], counts[:, 0], new_state

    def forward_windows(self, x: torch.Tensor, state: Optional[List[torch.Tensor]] = None) -> Tuple[torch.Tensor, torch.Tensor, List[torch.Tensor]]:
        """``K`` consecutive windows at once: ``x [B, K, T, C, H, W]`` -> ``(boxes [B, K, 4],
        counts [B, K, ...], state after the last window)``.

        Identical to calling :meth:`forward` K times, but every convolution runs once over
        all ``K * T`` steps (only the LIF recurrence is sequential), which is much cheaper
        when per-call overhead dominates (small networks, streaming with a few ms latency).
        """
        if x.dim() != 6:
            raise ValueError(f"SNN input must be [B, K, T, C, H, W], got shape {list(x.shape)}")
        b, k, t = x.shape[0], x.shape[1], x.shape[2]
        if state is None:
            state = self.initial_state(b, x.device, x.dtype)
        s = x.flatten(1, 2).transpose(0, 1)  # [K*T, B, C, H, W]
        new_state: List[torch.Tensor] = []
        for i, stage in enumerate(self.stages):
            s, u = stage(s, state[i])
            new_state.append(u)
        counts = s.reshape([k, t, b] + list(s.shape[2:])).sum(1)  # [K, B, ...]
        box = self.readout(counts.flatten(0, 1) * self.count_scale).reshape(k, b, 4)
        return box.transpose(0, 1), counts.transpose(0, 1), new_state

    @torch.jit.export
    def readout_zero(self, batch: int, like: torch.Tensor) -> torch.Tensor:
        """The readout for a window without any spike (the readout bias), ``[batch, 4]``."""
        shape = [batch] + self.state_shapes[-1]
        return self.readout(torch.zeros(shape, dtype=like.dtype, device=like.device))

    def scripted(self) -> "ScriptedSpikingTracker":
        """A TorchScript copy with the same streaming API (about 2x less per-call overhead
        on small networks; inference only)."""
        return ScriptedSpikingTracker(script_module(self), self.config())

    def config(self) -> dict:
        """Everything needed to rebuild this network (stored in checkpoints)."""
        return dict(
            kind="snn", arch=self.arch, in_hw=list(self.in_hw), in_channels=self.in_channels,
            padding=self.padding, dt_s=self.dt_s, tau_s=self.tau_s, v_th=self.v_th, u_rest=self.u_rest,
            surrogate_width=self.surrogate_width, steps_per_window=self.steps_per_window,
            nan_when_silent=self.nan_when_silent,
        )


class ScriptedSpikingTracker(StreamingSNN, nn.Module):
    """A TorchScript SNN with the streaming API of :class:`SpikingTracker`
    (``step_window``, ``reset_state``, ``forward``, ``forward_windows``, ``config``)."""

    def __init__(self, scripted: torch.jit.ScriptModule, config: dict):
        nn.Module.__init__(self)
        self.net = scripted
        self._config = dict(config)
        self.decay = float(scripted.decay)
        self.nan_when_silent = bool(config.get("nan_when_silent", True))
        self.in_hw = tuple(config["in_hw"])
        self.arch = config["arch"]
        self._state = None

    def forward(self, x, state=None):
        return self.net(x, state)

    def forward_windows(self, x, state=None):
        return self.net.forward_windows(x, state)

    def initial_state(self, batch: int, device=None, dtype=torch.float32):
        return self.net.initial_state(batch, device, dtype)

    def readout_zero(self, batch: int, like: torch.Tensor) -> torch.Tensor:
        return self.net.readout_zero(batch, like)

    def config(self) -> dict:
        return dict(self._config)


def snn_loss(pred: torch.Tensor, target: torch.Tensor, model: Optional[nn.Module] = None, lam: float = 0.0,
             giou_weight: float = 0.0) -> torch.Tensor:
    """Eq. 4: squared error of the window box readout + ``lam * sum ||W||^2`` (with
    ``giou_weight``, plus that times ``mean(1 - GIoU)``: not in the paper).

    ``pred``/``target``: ``[B, 4]`` normalised ``(cx, cy, w, h)``; NaN target rows are ignored.
    """
    return box_regression_loss(pred, target, model, lam, giou_weight)


def bin_events(events: np.ndarray, t0_us: int, t1_us: int, steps: int, region, in_hw: Sequence[int]) -> np.ndarray:
    """Event counts ``[steps, 2, H, W]`` float32 for ``t0_us <= t < t1_us`` over ``region``.

    ``events``: the core's structured array (``t_us, x, y, p``), sorted by time (it is
    sliced with a binary search, so a long stream costs nothing extra); ``region``: ``(x0, y0, w,
    h)`` in event pixels, resampled to ``in_hw = (H, W)`` (a pixel goes to the cell holding
    its centre; events outside the region are dropped).  Step ``k`` covers
    ``[t0 + k (t1 - t0) / steps, t0 + (k + 1) (t1 - t0) / steps)``.  Channel 0 counts ON
    (p > 0), channel 1 OFF events.  ``K`` consecutive windows of ``T`` steps in one call:
    ``bin_events(ev, t0, t0 + K * window, K * T, ...).reshape(K, T, 2, H, W)``.
    """
    if t1_us <= t0_us:
        raise ValueError(f"bin_events: empty window [{t0_us}, {t1_us}) us")
    if steps < 1:
        raise ValueError(f"bin_events: steps must be >= 1, got {steps!r}")
    h, w = int(in_hw[0]), int(in_hw[1])
    size = steps * 2 * h * w
    if len(events):
        i0, i1 = np.searchsorted(events["t_us"], [t0_us, t1_us], side="left")
        events = events[i0:i1]
    if not len(events):
        return np.zeros((steps, 2, h, w), np.float32)
    # float32 is exact for pixel coordinates; this runs once per SNN window
    r = np.asarray(region, dtype=np.float64).reshape(4)
    sx, sy = w / r[2], h / r[3]
    kernels = sparse_kernels()
    if kernels is not None:
        # one compiled pass over the records (~20x fewer passes over strided fields)
        out = np.zeros(size, np.float32)
        kernels.bin_counts(events["t_us"], events["x"], events["y"], events["p"], int(t0_us), int(t1_us), int(steps),
                           np.float32(0.5 - r[0]), np.float32(sx), np.float32(0.5 - r[1]), np.float32(sy), h, w, out)
        return out.reshape(steps, 2, h, w)
    col = np.floor((events["x"].astype(np.float32) + np.float32(0.5 - r[0])) * np.float32(sx)).astype(np.int64)
    row = np.floor((events["y"].astype(np.float32) + np.float32(0.5 - r[1])) * np.float32(sy)).astype(np.int64)
    idx = (events["p"] <= 0).astype(np.int64)
    if steps > 1:
        idx += 2 * (((events["t_us"] - t0_us) * steps) // (t1_us - t0_us))
    ok = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    idx = (idx * h + row) * w + col
    out = np.bincount(idx[ok], minlength=size).astype(np.float32)
    return out.reshape(steps, 2, h, w)
