"""A numpy inference engine for the streaming SNN (eq. 1-4, no autograd).

Why by hand: the fast preset is about 1 M multiply-accumulates per window, a few tens of
microseconds of arithmetic, but torch (eager or TorchScript) spends ~400 µs per window on
per-operator dispatch, and the paper's 2083 windows/s leave 480 µs for everything (binning,
network, TCF, messages).  No available library runs a small stateful spiking network with
less overhead on a CPU, so this engine runs the same network as a handful of numpy calls:

- a convolution is an im2col gather with a precomputed index (padding reads a constant
  zero slot) and one matrix product over every step of every window in the call (the
  convolution is stateless, only the LIF recurrence is sequential, as in
  :meth:`SpikingTracker.forward_windows`);
- a stage whose input holds no spike at all skips its product (event input is sparse, a
  window in which a layer is silent is common);
- the LIF step (eq. 1-3: ``u = decay * u + I``, spike where ``u > v_th``, reset to
  ``u_rest``) is three in-place numpy operations.

It computes the same function as :class:`~dashnet_ros.models.snn.SpikingTracker` (tested
against it step by step in float64, where the two agree to rounding; in float32 a
membrane potential lying within rounding of ``v_th`` may fire in one and not the other).
Build it with :meth:`SNNEngine.from_model`; layers it does not know (anything but Conv2d,
MaxPool2d with kernel == stride, Flatten, Linear) raise :class:`NotImplementedError`, and
callers fall back to torch.
"""
from __future__ import annotations

from typing import List, Optional

import numpy as np
from torch import nn


class _Conv:
    """Conv2d without bias as an im2col gather + matrix product over ``[N, C, H, W]``."""

    def __init__(self, conv: nn.Conv2d, in_shape, dtype):
        if conv.groups != 1 or conv.dilation != (1, 1) or conv.bias is not None or isinstance(conv.padding, str):
            raise NotImplementedError("only plain Conv2d layers without bias")
        c, h, w = in_shape
        kh, kw = conv.kernel_size
        sh, sw = conv.stride
        ph, pw = conv.padding
        ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        # idx[c*kh*kw, ho*wo]: flat input position read by each (weight tap, output pixel);
        # positions in the padding read index c*h*w, a slot kept at zero
        ci, ki, kj = np.meshgrid(np.arange(c), np.arange(kh), np.arange(kw), indexing="ij")
        oi, oj = np.meshgrid(np.arange(ho), np.arange(wo), indexing="ij")
        r = oi.reshape(1, -1) * sh - ph + ki.reshape(-1, 1)
        s = oj.reshape(1, -1) * sw - pw + kj.reshape(-1, 1)
        inside = (r >= 0) & (r < h) & (s >= 0) & (s < w)
        flat = (ci.reshape(-1, 1) * h + r) * w + s
        self.idx = np.where(inside, flat, c * h * w).astype(np.intp)
        self.n_in = c * h * w
        self.weight = conv.weight.detach().cpu().numpy().reshape(conv.out_channels, -1).astype(dtype)
        self.out_shape = (conv.out_channels, ho, wo)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        ext = np.empty((n, self.n_in + 1), self.weight.dtype)
        ext[:, :-1] = x.reshape(n, -1)                           # bool spikes -> float here
        ext[:, -1] = 0
        cols = np.take(ext, self.idx, axis=1)                    # [N, C*kh*kw, P]
        return np.matmul(self.weight, cols).reshape((n,) + self.out_shape)

class _Pool:
    """MaxPool2d with kernel == stride, no padding (floor)."""

    def __init__(self, pool: nn.MaxPool2d, in_shape):
        k = pool.kernel_size if isinstance(pool.kernel_size, int) else pool.kernel_size[0]
        s = pool.stride if isinstance(pool.stride, int) else pool.stride[0]
        if k != s or pool.padding not in (0, (0, 0)) or pool.dilation not in (1, (1, 1)) or pool.ceil_mode:
            raise NotImplementedError("only MaxPool2d with kernel == stride, no padding")
        c, h, w = in_shape
        self.k = k
        self.out_shape = (c, h // k, w // k)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        n, c = x.shape[:2]
        ho, wo = self.out_shape[1:]
        k = self.k
        x = x[:, :, :ho * k, :wo * k].reshape(n, c, ho, k, wo, k)
        return x.max(axis=(3, 5))


class _Linear:
    def __init__(self, fc: nn.Linear, dtype):
        self.weight_t = np.ascontiguousarray(fc.weight.detach().cpu().numpy().T.astype(dtype))
        self.bias = None if fc.bias is None else fc.bias.detach().cpu().numpy().astype(dtype)
        self.out_shape = (fc.out_features,)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = x.reshape(x.shape[0], -1)
        if x.dtype != self.weight_t.dtype:
            x = x.astype(self.weight_t.dtype)
        y = x @ self.weight_t
        if self.bias is not None:
            y += self.bias
        return y


def _compile(layers, in_shape, dtype):
    ops, shape = [], tuple(in_shape)
    for layer in layers:
        if isinstance(layer, nn.Conv2d):
            op = _Conv(layer, shape, dtype)
        elif isinstance(layer, nn.MaxPool2d):
            op = _Pool(layer, shape)
        elif isinstance(layer, nn.Linear):
            op = _Linear(layer, dtype)
        elif isinstance(layer, nn.Flatten):
            continue                                             # ops take any [N, ...] and flatten as needed
        else:
            raise NotImplementedError(f"no numpy engine for {type(layer).__name__}")
        ops.append(op)
        shape = op.out_shape
    return ops, shape


class SNNEngine:
    """Streaming inference of a :class:`~dashnet_ros.models.snn.SpikingTracker` in numpy.

    :meth:`step` takes ``x [K, T, C, H, W]`` (K consecutive windows of T LIF steps) and
    returns boxes ``[K, 4]`` (normalised ``cx, cy, w, h``; NaN for a window whose last
    hidden layer did not fire when ``nan_when_silent``), keeping the membrane state for
    the next call like ``SpikingTracker.step_window``.
    """

    def __init__(self, stages, readout, decay, v_th, u_rest, count_scale, nan_when_silent, in_shape, dtype):
        self.stages = stages                                     # [(ops, out_shape)]
        self.readout = readout
        self.decay, self.v_th, self.u_rest = dtype(decay), dtype(v_th), dtype(u_rest)
        self.count_scale = dtype(count_scale)
        self.nan_when_silent = bool(nan_when_silent)
        self.in_shape = tuple(in_shape)
        self.dtype = dtype
        self._state: Optional[List[np.ndarray]] = None

    @classmethod
    def from_model(cls, model, dtype=np.float32) -> "SNNEngine":
        """Compile an eager ``SpikingTracker`` (weights copied; later changes to the model
        are not seen)."""
        shape = (model.in_channels,) + tuple(model.in_hw)
        stages = []
        for st in model.stages:
            ops, shape = _compile(list(st.op), shape, dtype)
            stages.append((ops, shape))
        readout, _ = _compile(list(model.readout), stages[-1][1], dtype)
        return cls(stages, readout, model.decay, model.v_th, model.u_rest, model.count_scale,
                   model.nan_when_silent, (model.in_channels,) + tuple(model.in_hw), dtype)

    def reset_state(self) -> None:
        self._state = None

    def _at_rest(self) -> List[np.ndarray]:
        return [np.full(shape, self.u_rest, self.dtype) for _, shape in self.stages]

    @property
    def state(self) -> List[np.ndarray]:
        """Membrane potentials per stage (copies), at rest before the first window."""
        return self._at_rest() if self._state is None else [u.copy() for u in self._state]

    def step(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, self.dtype)
        if x.ndim != 5 or tuple(x.shape[2:]) != self.in_shape:
            raise ValueError(f"SNN engine input must be [K, T] + {list(self.in_shape)}, got {list(x.shape)}")
        k, t = x.shape[:2]
        if self._state is None:
            self._state = self._at_rest()
        s = x.reshape((k * t,) + self.in_shape)
        decay, v_th, u_rest = self.decay, self.v_th, self.u_rest
        for i, (ops, shape) in enumerate(self.stages):
            u = self._state[i]
            if not s.any():
                # no input spike in any step: the state only leaks, nothing can fire
                u *= decay ** (k * t)
                s = np.zeros((k * t,) + shape, bool)
                continue
            y = s
            for op in ops:
                y = op(y)
            spikes = np.empty(y.shape, bool)
            for n in range(k * t):
                u *= decay
                u += y[n]
                np.greater(u, v_th, out=spikes[n])
                np.putmask(u, spikes[n], u_rest)
            s = spikes
        counts = s.reshape((k, t) + s.shape[1:]).sum(1, dtype=self.dtype)
        y = counts * self.count_scale
        for op in self.readout:
            y = op(y)
        if self.nan_when_silent:
            y[~counts.reshape(k, -1).any(1)] = np.nan
        return y
