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

Two sets of kernels (``kernels=``): ``"sparse"`` (default where numba is installed,
:mod:`dashnet_ros.models.snn_kernels`) scatters each non-zero input's weights, so the
work follows the spikes (channels-last inside; the state is reported channels-first like
torch's); ``"dense"`` is the numpy im2col path above.  Both compute the same function
(summation order differs: equal to rounding).  With the sparse kernels, a network whose
stages are single conv/linear layers and whose readout is linear (the fast preset) runs
a whole network call, event binning included, as one compiled function
(:meth:`SNNEngine.step_events`, :func:`snn_kernels.network_window`): the per-layer
Python calls cost more than the arithmetic of a sparse window.
"""
from __future__ import annotations

import functools
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


class _Scatter:
    """A Conv2d (no bias) or Linear layer, event-driven on channels-last input: each
    non-zero input ``[p, c]`` adds its weights ``w[t, c, :]`` to the outputs ``q`` its
    position reaches (:func:`snn_kernels.conv_scatter`; tables from
    :func:`snn_kernels.conv_tables`, or for a linear layer: input ``p`` reaches output 0
    through tap ``p``)."""

    def __init__(self, weight_taps, tables, in_pc, out_shape, bias=None):
        self.weight = np.ascontiguousarray(weight_taps)           # [T, C, Co]
        self.tables = tables
        self.in_pc = in_pc                                        # input as [P, C]
        self.out_shape = out_shape
        self.out_qc = (int(np.prod(out_shape)) // self.weight.shape[2], self.weight.shape[2])   # output as [Q, Co]
        self.bias = bias
        self.kernel, self.fused = _kernels().conv_scatter, _kernels().scatter_lif
        if bias is None:
            self.lif = self._lif

    @classmethod
    def conv(cls, conv: nn.Conv2d, in_shape, dtype) -> "_Scatter":
        if conv.groups != 1 or conv.dilation != (1, 1) or conv.bias is not None or isinstance(conv.padding, str):
            raise NotImplementedError("only plain Conv2d layers without bias")
        h, w, c = in_shape
        kh, kw = conv.kernel_size
        (sh, sw), (ph, pw) = conv.stride, conv.padding
        ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        taps = conv.weight.detach().cpu().numpy().transpose(2, 3, 1, 0).reshape(kh * kw, c, -1).astype(dtype)
        return cls(taps, _kernels().conv_tables(h, w, kh, kw, sh, sw, ph, pw, ho, wo), (h * w, c),
                   (ho, wo, conv.out_channels))

    @classmethod
    def linear(cls, fc: nn.Linear, in_shape, dtype) -> "_Scatter":
        w_t = fc.weight.detach().cpu().numpy().T
        if len(in_shape) == 3:     # flattened channels-last: permute from torch's C, H, W order
            h, w, c = in_shape
            w_t = w_t[np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).reshape(-1)]
        n_in = w_t.shape[0]
        tables = (np.arange(n_in + 1, dtype=np.int64), np.zeros(n_in, np.int64), np.arange(n_in, dtype=np.int64))
        bias = None if fc.bias is None else fc.bias.detach().cpu().numpy().astype(dtype)
        return cls(w_t.astype(dtype).reshape(n_in, 1, -1), tables, (n_in, 1), (fc.out_features,), bias)

    def _input(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x, self.weight.dtype).reshape((x.shape[0],) + self.in_pc)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        out = np.zeros((n,) + self.out_qc, self.weight.dtype)
        if self.bias is not None:
            out += self.bias
        self.kernel(self._input(x), self.weight, *self.tables, out)
        return out.reshape((n,) + self.out_shape)

    def _lif(self, x: np.ndarray, u: np.ndarray, decay, v_th, u_rest) -> np.ndarray:
        """This layer and the LIF neurons after it in one call (:func:`snn_kernels.scatter_lif`)."""
        n = x.shape[0]
        spikes = np.empty((n,) + self.out_shape, self.weight.dtype)
        self.fused(self._input(x), self.weight, *self.tables, u.reshape(self.out_qc), decay, v_th, u_rest,
                   spikes.reshape((n,) + self.out_qc))
        return spikes


class _PoolLast(_Pool):
    """:class:`_Pool` on channels-last ``[N, H, W, C]``."""

    def __init__(self, pool: nn.MaxPool2d, in_shape):
        h, w, c = in_shape
        super().__init__(pool, (c, h, w))
        self.out_shape = (h // self.k, w // self.k, c)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        n, c = x.shape[0], x.shape[3]
        ho, wo, k = self.out_shape[0], self.out_shape[1], self.k
        return x[:, :ho * k, :wo * k, :].reshape(n, ho, k, wo, k, c).max(axis=(2, 4))


@functools.lru_cache(maxsize=None)
def sparse_kernels():
    """:mod:`dashnet_ros.models.snn_kernels`, or None where numba is not installed."""
    try:
        from . import snn_kernels
    except ImportError:
        return None
    return snn_kernels


def _kernels():
    k = sparse_kernels()
    if k is None:
        raise ImportError("the sparse SNN kernels need numba (pip install numba); use kernels='dense' without it")
    return k


def sparse_available() -> bool:
    """True where numba (for :mod:`snn_kernels`) is installed."""
    return sparse_kernels() is not None


def _compile(layers, in_shape, dtype, sparse=False):
    ops, shape = [], tuple(in_shape)
    for layer in layers:
        if isinstance(layer, nn.Conv2d):
            op = _Scatter.conv(layer, shape, dtype) if sparse else _Conv(layer, shape, dtype)
        elif isinstance(layer, nn.MaxPool2d):
            op = _PoolLast(layer, shape) if sparse else _Pool(layer, shape)
        elif isinstance(layer, nn.Linear):
            op = _Scatter.linear(layer, shape, dtype) if sparse else _Linear(layer, dtype)
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
    the next call like ``SpikingTracker.step_window``.  ``kernels``: ``"sparse"``
    (event-driven, numba) or ``"dense"`` (numpy im2col).
    """

    def __init__(self, stages, readout, decay, v_th, u_rest, count_scale, nan_when_silent, in_shape, dtype,
                 kernels="dense"):
        self.stages = stages                                     # [(ops, out_shape)]
        self.readout = readout
        self.decay, self.v_th, self.u_rest = dtype(decay), dtype(v_th), dtype(u_rest)
        self.count_scale = dtype(count_scale)
        self.nan_when_silent = bool(nan_when_silent)
        self.in_shape = tuple(in_shape)
        self.dtype = dtype
        self.kernels = kernels
        self._lif_kernel = _kernels().lif_steps if kernels == "sparse" else None
        self._state: Optional[List[np.ndarray]] = None
        self._whole = self._whole_network() if kernels == "sparse" else None
        self._whole_state = None
        if self._whole is not None:      # compile (or load from numba's cache) now, not at the first window
            from ..events import empty_events

            self.step_events(empty_events(), 0, 1, 1, 1, (0.0, 0.0, 1.0, 1.0))
            self.track_windows(empty_events(), 0, 1, 1, 1, np.array([0, 0, 4, 4], np.float32),
                               np.full(4, np.nan, np.float32), scale=2.0, min_side_px=16.0, width=8, height=8,
                               reset_jump=0.1)
            self.reset_state()

    def _whole_network(self):
        """The arguments of :func:`snn_kernels.network_window` (one compiled call per
        network call) where every stage is one scatter layer and the readout is linear;
        None otherwise (pooling: the per-layer path)."""
        if (not all(len(ops) == 1 and isinstance(ops[0], _Scatter) and ops[0].bias is None for ops, _ in self.stages)
                or not all(isinstance(op, _Scatter) and op.out_qc[0] == 1 for op in self.readout)
                or self.in_shape[0] != 2):
            return None
        # tuples, not numba typed Lists: numba unboxes a typed List argument at every call
        # (a compiled call on an empty window: ~22 µs with Lists, ~17.5 µs with tuples,
        # measured here); arrays of one kind and layout make homogeneous tuples, which the
        # kernels index at run time
        c = np.ascontiguousarray
        stages = [ops[0] for ops, _ in self.stages]
        return dict(
            in_pc=np.array([op.in_pc for op in stages], np.int64),
            weights=tuple(c(op.weight) for op in stages),
            starts=tuple(c(op.tables[0]) for op in stages),
            out_pos=tuple(c(op.tables[1]) for op in stages),
            taps=tuple(c(op.tables[2]) for op in stages),
            ro_weights=tuple(c(op.weight) for op in self.readout),
            ro_biases=tuple(c(op.bias) if op.bias is not None else np.zeros(op.out_qc[1], self.dtype)
                            for op in self.readout),
            n_out=self.readout[-1].out_qc[1])

    @classmethod
    def from_model(cls, model, dtype=np.float32, kernels: str = "auto") -> "SNNEngine":
        """Compile an eager ``SpikingTracker`` (weights copied; later changes to the model
        are not seen).  ``kernels='auto'``: sparse where numba is installed, else dense."""
        if kernels == "auto":
            kernels = "sparse" if sparse_available() else "dense"
        if kernels not in ("sparse", "dense"):
            raise ValueError(f"SNN engine kernels must be 'auto', 'sparse' or 'dense', got {kernels!r}")
        sparse = kernels == "sparse"
        if sparse:
            _kernels().warm_up(dtype)
        in_shape = (model.in_channels,) + tuple(model.in_hw)
        shape = in_shape[1:] + in_shape[:1] if sparse else in_shape
        stages = []
        for st in model.stages:
            ops, shape = _compile(list(st.op), shape, dtype, sparse)
            stages.append((ops, shape))
        readout, _ = _compile(list(model.readout), stages[-1][1], dtype, sparse)
        return cls(stages, readout, model.decay, model.v_th, model.u_rest, model.count_scale,
                   model.nan_when_silent, in_shape, dtype, kernels)

    def reset_state(self) -> None:
        self._state = None
        self._whole_state = None

    @property
    def tracks_windows(self) -> bool:
        """True where :meth:`track_windows` runs (sparse kernels, a network of scatter stages)."""
        return self._whole is not None

    def _network_args(self) -> tuple:
        """The network's arguments of :func:`snn_kernels.network_window` and
        :func:`snn_kernels.track_windows` (from ``in_pc`` to ``nan_when_silent``), the
        membrane state as [Q, Co] views of ``_state`` (made at rest when there is none)."""
        if self._state is None:
            self._state = self._at_rest()
        if self._whole_state is None:
            self._whole_state = tuple(u.reshape(ops[0].out_qc) for u, (ops, _) in zip(self._state, self.stages))
        wh = self._whole
        return (wh["in_pc"], wh["weights"], wh["starts"], wh["out_pos"], wh["taps"], self._whole_state,
                self.decay, self.v_th, self.u_rest, self.count_scale, wh["ro_weights"], wh["ro_biases"],
                self.nan_when_silent)

    def track_windows(self, events: np.ndarray, t0_us: int, window_us: int, k: int, steps: int,
                      reference: np.ndarray, last_region: np.ndarray, *, scale: float, min_side_px: float,
                      width: int, height: int, reset_jump: float):
        """``k`` consecutive windows from ``t0_us`` in one compiled call, each on the search
        region centred on the box its predecessor gave (:func:`snn_kernels.track_windows`:
        what :meth:`dashnet_ros.tracking.SNNRunner.step` does for one window, bit for bit).
        ``reference`` and ``last_region`` (float32 [4], NaN = none) are updated in place.
        Returns ``(boxes [k, 4] float32 (NaN: no box), motion [k, 2], state resets)``."""
        if not self.tracks_windows:
            raise RuntimeError("track_windows needs the sparse kernels and a network of scatter stages")
        hw = self.in_shape[1:]
        boxes = np.empty((k, self._whole["n_out"]), np.float32)
        motion = np.empty((k, 2), np.float64)
        resets = _kernels().track_windows(
            events["t_us"], events["x"], events["y"], events["p"], int(t0_us), int(window_us), int(k), int(steps),
            int(hw[0]), int(hw[1]), reference, float(scale), float(min_side_px), int(width), int(height),
            float(reset_jump), last_region, *self._network_args(), boxes, motion)
        return boxes, motion, int(resets)

    def step_events(self, events: np.ndarray, t0_us: int, t1_us: int, k: int, steps: int, region) -> np.ndarray:
        """:meth:`step` on the events of ``[t0_us, t1_us)`` binned into ``k`` windows of
        ``steps`` LIF steps over ``region`` (:func:`~dashnet_ros.models.snn.bin_events`);
        with the sparse kernels and a network of scatter stages, binning, every stage and
        the readout run in one compiled call (the same arithmetic as the per-layer path)."""
        from .snn import bin_events

        hw = self.in_shape[1:]
        if self._whole is None:
            x = bin_events(events, t0_us, t1_us, k * steps, region, hw)
            return self.step(x.reshape((k, steps) + x.shape[1:]))
        if t1_us <= t0_us:
            raise ValueError(f"SNN engine: empty window [{t0_us}, {t1_us}) us")
        r = np.asarray(region, dtype=np.float64).reshape(4)
        h, w = int(hw[0]), int(hw[1])
        out = np.empty((k, self._whole["n_out"]), self.dtype)
        _kernels().network_window(
            events["t_us"], events["x"], events["y"], events["p"], int(t0_us), int(t1_us), int(k), int(steps),
            np.float32(0.5 - r[0]), np.float32(w / r[2]), np.float32(0.5 - r[1]), np.float32(h / r[3]), h, w,
            *self._network_args(), out)
        return out

    def _at_rest(self) -> List[np.ndarray]:
        return [np.full(shape, self.u_rest, self.dtype) for _, shape in self.stages]

    @property
    def state(self) -> List[np.ndarray]:
        """Membrane potentials per stage (copies, channels-first like torch's), at rest
        before the first window."""
        state = self._at_rest() if self._state is None else self._state
        if self.kernels == "sparse":
            return [u.transpose(2, 0, 1).copy() if u.ndim == 3 else u.copy() for u in state]
        return [u.copy() for u in state]

    def _lif(self, u: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Eq. 1-3 over the ``N`` steps of ``y [N, ...]`` (``u`` in place) -> spikes."""
        n = y.shape[0]
        if self._lif_kernel is not None:
            spikes = np.empty(y.shape, self.dtype)
            self._lif_kernel(u.reshape(-1), np.ascontiguousarray(y, self.dtype).reshape(n, -1), self.decay,
                             self.v_th, self.u_rest, spikes.reshape(n, -1))
            return spikes
        spikes = np.empty(y.shape, bool)
        for i in range(n):
            u *= self.decay
            u += y[i]
            np.greater(u, self.v_th, out=spikes[i])
            np.putmask(u, spikes[i], self.u_rest)
        return spikes

    def step(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, self.dtype)
        if x.ndim != 5 or tuple(x.shape[2:]) != self.in_shape:
            raise ValueError(f"SNN engine input must be [K, T] + {list(self.in_shape)}, got {list(x.shape)}")
        k, t = x.shape[:2]
        if self._state is None:
            self._state = self._at_rest()
        s = x.reshape((k * t,) + self.in_shape)
        if self.kernels == "sparse":
            s = np.ascontiguousarray(s.transpose(0, 2, 3, 1))
        for i, (ops, shape) in enumerate(self.stages):
            u = self._state[i]
            if self.kernels == "dense" and not s.any():
                # no input spike in any step: the state only leaks, nothing can fire (the
                # sparse kernels skip silent inputs by themselves)
                u *= self.decay ** (k * t)
                s = np.zeros((k * t,) + shape, bool)
                continue
            if len(ops) == 1 and hasattr(ops[0], "lif"):
                s = ops[0].lif(s, u, self.decay, self.v_th, self.u_rest)       # sparse: layer + LIF in one call
                continue
            y = s
            for op in ops:
                y = op(y)
            s = self._lif(u, y)
        counts = s.reshape((k, t) + s.shape[1:]).sum(1, dtype=self.dtype)
        y = counts * self.count_scale
        for op in self.readout:
            y = op(y)
        if self.nan_when_silent:
            y[~counts.reshape(k, -1).any(1)] = np.nan
        return y
