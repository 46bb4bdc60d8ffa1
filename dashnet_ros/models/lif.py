"""Discrete leaky integrate-and-fire neurons (paper eq. 1-3) with a rectangular surrogate.

Dynamics of one simulation step ``n`` (``dt_s`` long) for input current ``I`` (the
weighted spikes of the layer below, eq. 1)::

    u <- u * exp(-dt_s / tau_s) + I          # eq. 1 (leak towards 0, then integrate)
    o  = H(u - v_th)                          # eq. 2, H(x) = 1 iff x > 0
    u <- u_rest where o == 1                  # eq. 3 (hard reset)

The paper defines H strictly (H(0) = 0) but writes the reset for ``u >= V_th``; we reset
exactly where a spike was emitted so the two always agree.  The leak decays towards 0 as
eq. 1 is written (not towards ``u_rest``); with the default ``u_rest = 0`` both coincide.

H has no useful derivative, so training (BPTT, §3.1) uses the rectangular surrogate of
Wu et al. 2018 (the paper's ref. [8])::

    dH/du ~= 1/a  if |u - v_th| < a/2,  else 0          (a = ``surrogate_width``)

The neuron dynamics (:class:`LIF`) and the surrogate (:class:`RectSurrogate`) are
separate pieces.  :class:`LIF` runs in single-step mode (stateful, one step per call, for
streaming) or multi-step mode (a ``[T, ...]`` sequence per call, for BPTT training);
both keep the membrane potential between calls until :meth:`LIF.reset_state`.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import nn


class RectSurrogate(torch.autograd.Function):
    """Heaviside step forward, rectangular pseudo-derivative backward (Wu et al. 2018).

    ``forward(x, width)`` returns ``(x > 0)`` as ``x``'s dtype, where ``x = u - v_th``;
    ``backward`` passes ``grad / width`` where ``|x| < width / 2`` and 0 elsewhere.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, width: float) -> torch.Tensor:  # noqa: D401
        ctx.save_for_backward(x)
        ctx.width = float(width)
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (x,) = ctx.saved_tensors
        a = ctx.width
        window = (x.abs() < a / 2).to(grad_out.dtype)
        return grad_out * window / a, None


def spike_fn(x: torch.Tensor, width: float) -> torch.Tensor:
    """``H(x)`` (eq. 2) with the rectangular surrogate gradient; ``x = u - v_th``.

    Under TorchScript (or with gradients off) this is the plain step function, so exported
    models need no Python autograd function.
    """
    if torch.jit.is_scripting():
        return (x > 0).to(x.dtype)
    else:
        if not (torch.is_grad_enabled() and x.requires_grad):
            return (x > 0).to(x.dtype)
        return RectSurrogate.apply(x, width)


def lif_step(
    x: torch.Tensor,
    u: torch.Tensor,
    decay: float,
    v_th: float,
    u_rest: float,
    width: float,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """One LIF step (eq. 1-3): returns ``(spikes, new_u)``.

    ``decay = exp(-dt/tau)``.  The reset is written ``u * (1 - o) + u_rest * o`` so the
    surrogate gradient also flows through the reset, as in Wu et al. 2018.
    """
    u = u * decay + x
    o = spike_fn(u - v_th, width)
    u = u * (1.0 - o) + u_rest * o
    return o, u


def lif_multistep(
    x_seq: torch.Tensor,
    u: torch.Tensor,
    decay: float,
    v_th: float,
    u_rest: float,
    width: float,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Run :func:`lif_step` over the leading time axis of ``x_seq`` ``[T, ...]``.

    Returns ``(spikes [T, ...], u after the last step)``.  Without autograd (inference,
    TorchScript) a cheaper path of three ops per step gives the same values.
    """
    if torch.jit.is_scripting():
        grad = False
    else:
        grad = torch.is_grad_enabled() and (x_seq.requires_grad or u.requires_grad)
    if not grad:
        fired = []
        for t in range(x_seq.shape[0]):
            u = torch.add(x_seq[t], u, alpha=decay)
            f = u > v_th
            u = u.masked_fill(f, u_rest)
            fired.append(f)
        return torch.stack(fired, 0).to(x_seq.dtype), u
    outs = []
    for t in range(x_seq.shape[0]):
        o, u = lif_step(x_seq[t], u, decay, v_th, u_rest, width)
        outs.append(o)
    return torch.stack(outs, 0), u


def check_lif_params(dt_s: float, tau_s: float, v_th: float, u_rest: float, surrogate_width: float) -> None:
    """Raise ValueError naming the first impossible LIF parameter."""
    if not (dt_s > 0 and math.isfinite(dt_s)):
        raise ValueError(f"LIF dt_s must be a positive time step in seconds, got {dt_s!r}")
    if not (tau_s > 0 and math.isfinite(tau_s)):
        raise ValueError(f"LIF tau_s must be a positive time constant in seconds, got {tau_s!r}")
    if not (v_th > 0 and math.isfinite(v_th)):
        raise ValueError(f"LIF v_th must be a positive threshold, got {v_th!r}")
    if not (u_rest < v_th and math.isfinite(u_rest)):
        raise ValueError(f"LIF u_rest ({u_rest!r}) must be finite and below v_th ({v_th!r})")
    if not (surrogate_width > 0 and math.isfinite(surrogate_width)):
        raise ValueError(f"LIF surrogate_width must be positive, got {surrogate_width!r}")


class LIF(nn.Module):
    """A layer of LIF neurons (eq. 1-3) holding its membrane potential between calls.

    ``step_mode='s'``: ``forward(x[B, ...]) -> spikes[B, ...]`` advances one step.
    ``step_mode='m'``: ``forward(x[T, B, ...]) -> spikes[T, B, ...]`` advances ``T`` steps
    (use for BPTT; call :meth:`reset_state` or :meth:`detach_state` between sequences).

    The state starts at ``u_rest`` on the first call after construction/reset and is
    re-created if the input shape changes.
    """

    def __init__(
        self,
        dt_s: float = 1e-4,
        tau_s: float = 2e-3,
        v_th: float = 0.5,
        u_rest: float = 0.0,
        surrogate_width: float = 1.0,
        step_mode: str = "s",
    ):
        super().__init__()
        check_lif_params(dt_s, tau_s, v_th, u_rest, surrogate_width)
        if step_mode not in ("s", "m"):
            raise ValueError(f"LIF step_mode must be 's' (single step) or 'm' (multi-step), got {step_mode!r}")
        self.dt_s = float(dt_s)
        self.tau_s = float(tau_s)
        self.v_th = float(v_th)
        self.u_rest = float(u_rest)
        self.surrogate_width = float(surrogate_width)
        self.step_mode = step_mode
        self.u: Optional[torch.Tensor] = None

    @property
    def decay(self) -> float:
        """``exp(-dt/tau)``, the per-step leak factor of eq. 1."""
        return math.exp(-self.dt_s / self.tau_s)

    def reset_state(self) -> None:
        self.u = None

    def detach_state(self) -> None:
        """Cut the autograd history of the state (truncated BPTT between windows)."""
        if self.u is not None:
            self.u = self.u.detach()

    def _init_u(self, like: torch.Tensor) -> torch.Tensor:
        if self.u is None or self.u.shape != like.shape:
            self.u = torch.full_like(like, self.u_rest)
        return self.u

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.step_mode == "s":
            o, self.u = lif_step(x, self._init_u(x), self.decay, self.v_th, self.u_rest, self.surrogate_width)
            return o
        o, self.u = lif_multistep(x, self._init_u(x[0]), self.decay, self.v_th, self.u_rest, self.surrogate_width)
        return o

    def extra_repr(self) -> str:
        return (
            f"dt_s={self.dt_s}, tau_s={self.tau_s}, v_th={self.v_th}, u_rest={self.u_rest}, "
            f"surrogate_width={self.surrogate_width}, step_mode={self.step_mode!r}"
        )
