"""Event-driven (sparse) kernels for the SNN engine, compiled with numba.

Why by hand: a spiking layer's input is a 0/1 spike map (the first layer's, event counts),
and only 8-20 % of it is non-zero in a window of the fast preset (measured on a simulated
clip: input 8 %, hidden 19 / 14 / 10 %).  A dense im2col + matrix product does every
multiply-add anyway (~1 M per window); here each non-zero input adds its weights to the
outputs it reaches (a scatter), so the work follows the spikes, as on a neuromorphic chip.
No library offers a sparse-input convolution of this shape without per-call overhead
larger than the work.  Layout is channels-last (``[N, H, W, C]``): the innermost loop runs
over output channels, contiguous in both the weights and the output.

Everything here is plain loops over numpy arrays; the dtype (float32 or float64) follows
the arrays.  ``cache=True`` keeps the compiled code on disk (``__pycache__`` beside this
file, or numba's user cache where that is not writable), so a process pays the compile
(a few seconds) once per machine.
"""
from __future__ import annotations

import numba
import numpy as np

# error_model "numpy": no zero-division checks in the index arithmetic; fastmath lets
# the per-output-channel loops vectorise (their order of additions is not observable
# beyond rounding, as with any BLAS)
_jit = numba.njit(cache=True, nogil=True, error_model="numpy", fastmath=True)


def conv_tables(h, w, kh, kw, sh, sw, ph, pw, ho, wo):
    """For a Conv2d on an ``h x w`` input: the output pixels and weight taps each input
    pixel reaches, as CSR arrays ``starts [h*w + 1]``, ``out_pos [E]`` (``oi * wo + oj``),
    ``tap [E]`` (``ki * kw + kj``): input pixel ``p`` reaches ``out_pos[starts[p]:starts[p+1]]``."""
    i, j, ki, kj = np.meshgrid(np.arange(h), np.arange(w), np.arange(kh), np.arange(kw), indexing="ij")
    r, s = i + ph - ki, j + pw - kj
    ok = (r >= 0) & (r % sh == 0) & (r // sh < ho) & (s >= 0) & (s % sw == 0) & (s // sw < wo)
    counts = ok.reshape(h * w, -1).sum(1)
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    out_pos = ((r // sh) * wo + s // sw)[ok].astype(np.int64)        # row-major over (i, j, ki, kj)
    tap = (ki * kw + kj)[ok].astype(np.int64)
    return starts, out_pos, tap


@_jit
def _scatter(x_n, w, starts, out_pos, tap, acc):
    """``acc[q, :] += x_n[p, c] * w[t, c, :]`` for every non-zero ``x_n[p, c]`` and every
    (output position ``q``, tap ``t``) that input position ``p`` reaches (:func:`conv_tables`)."""
    p_, c_ = x_n.shape
    co_ = w.shape[2]
    for p in range(p_):
        for c in range(c_):
            v = x_n[p, c]
            if v == 0:
                continue
            for e in range(starts[p], starts[p + 1]):
                q = out_pos[e]
                t = tap[e]
                for o in range(co_):
                    acc[q, o] += v * w[t, c, o]


@_jit
def conv_scatter(x, w, starts, out_pos, tap, out):
    """A layer without its neurons: ``out[n] += scatter(x[n])`` for each step (``x [N, P,
    C]`` channels-last, ``w [KH*KW, C, Co]``, ``out [N, Q, Co]`` zeroed or holding the bias).
    A Conv2d uses :func:`conv_tables`; a linear layer is ``P`` inputs of one channel that
    reach output position 0 through tap ``p``."""
    for n in range(x.shape[0]):
        _scatter(x[n], w, starts, out_pos, tap, out[n])


@_jit
def scatter_lif(x, w, starts, out_pos, tap, u, decay, v_th, u_rest, spikes):
    """A spiking stage in one call: for each step ``n`` in order, the input current
    ``I = scatter(x[n])`` (see :func:`conv_scatter`), then eq. 1-3 on it: ``u = decay * u +
    I``, a spike (1) where ``u > v_th`` and ``u`` reset to ``u_rest`` there.  ``x [N, P,
    C]``, ``w [T, C, Co]``, ``u [Q, Co]`` (in place), ``spikes [N, Q, Co]``."""
    q_, co_ = u.shape
    acc = np.empty((q_, co_), u.dtype)
    for n in range(x.shape[0]):
        acc[:] = 0
        _scatter(x[n], w, starts, out_pos, tap, acc)
        for q in range(q_):
            for o in range(co_):
                val = decay * u[q, o] + acc[q, o]
                if val > v_th:
                    spikes[n, q, o] = 1
                    u[q, o] = u_rest
                else:
                    spikes[n, q, o] = 0
                    u[q, o] = val


@_jit
def lif_steps(u, y, decay, v_th, u_rest, spikes):
    """Eq. 1-3 over the steps of ``y [N, M]`` in order: ``u = decay * u + y[n]``; a spike
    (1) where ``u > v_th``, and ``u`` reset to ``u_rest`` there (``u [M]`` in place;
    ``spikes [N, M]``, same dtype as ``u``)."""
    n_, m_ = y.shape
    for n in range(n_):
        for m in range(m_):
            v = decay * u[m] + y[n, m]
            if v > v_th:
                spikes[n, m] = 1
                u[m] = u_rest
            else:
                spikes[n, m] = 0
                u[m] = v


_exact = numba.njit(cache=True, nogil=True, error_model="numpy")   # no fastmath: the float32 rounding is numpy's


@_exact
def _bin(t_us, x, y, p, t0_us, t1_us, steps, x_off, sx, y_off, sy, h, w, out, s_step, s_ch, s_row, s_col):
    """:func:`bin_counts` into the flat ``out`` with the cell of (step ``k``, channel, row,
    column) at ``k * s_step + ch * s_ch + row * s_row + col * s_col`` (any layout)."""
    span = t1_us - t0_us
    for i in range(t_us.shape[0]):
        t = t_us[i]
        if t < t0_us or t >= t1_us:
            continue
        col = int(np.floor((np.float32(x[i]) + x_off) * sx))
        row = int(np.floor((np.float32(y[i]) + y_off) * sy))
        if col < 0 or col >= w or row < 0 or row >= h:
            continue
        ch = 1 if p[i] <= 0 else 0
        k = ((t - t0_us) * steps) // span
        out[k * s_step + ch * s_ch + row * s_row + col * s_col] += 1


@_exact
def bin_counts(t_us, x, y, p, t0_us, t1_us, steps, x_off, sx, y_off, sy, h, w, out):
    """Event counts into ``out [steps * 2 * h * w]`` (zeroed by the caller), as
    :func:`dashnet_ros.models.snn.bin_events` computes them: column
    ``floor((x + x_off) * sx)`` and row likewise in float32, channel 0 ON / 1 OFF, step
    ``(t - t0) * steps // (t1 - t0)``; events outside the grid or ``[t0, t1)`` are skipped."""
    _bin(t_us, x, y, p, t0_us, t1_us, steps, x_off, sx, y_off, sy, h, w, out, 2 * h * w, h * w, w, 1)


@_jit
def network_window(t_us, x, y, p, t0_us, t1_us, k, t, x_off, sx, y_off, sy, h, w,
                   in_pc, weights, starts, out_pos, taps, states, decay, v_th, u_rest,
                   count_scale, ro_weights, ro_biases, nan_when_silent, out):
    """The whole streaming SNN over ``k`` windows of ``t`` LIF steps in one call, for a
    network of spiking scatter stages (conv or linear) and a linear readout: the events
    binned channels-last (``[k * t, h * w, 2]``, cells as :func:`bin_counts`), each stage
    as :func:`scatter_lif` on its input seen as ``[k * t, P, C] = in_pc[i]`` (``weights[i]
    [T, C, Co]``, its CSR tables, ``states[i] [Q, Co]`` in place), spike counts of the last
    stage per window times ``count_scale`` (eq. 4's readout input), then each readout layer
    ``y = b + y @ W`` (``ro_weights[j] [n_in, 1, n_out]``).  ``out [k, n_out]``: the boxes;
    NaN rows for windows whose last stage did not fire when ``nan_when_silent``.  Same
    arithmetic, in the same order, as the per-layer calls of
    :class:`~dashnet_ros.models.snn_engine.SNNEngine`."""
    n = k * t
    dt = states[0].dtype
    s = np.zeros((n, h * w, 2), dt)
    _bin(t_us, x, y, p, t0_us, t1_us, n, x_off, sx, y_off, sy, h, w, s.reshape(-1), 2 * h * w, 1, 2 * w, 2)
    for i in range(len(weights)):
        u = states[i]
        spikes = np.empty((n, u.shape[0], u.shape[1]), dt)
        scatter_lif(s.reshape(n, in_pc[i, 0], in_pc[i, 1]), weights[i], starts[i], out_pos[i], taps[i], u, decay,
                    v_th, u_rest, spikes)
        s = spikes
    m = s.shape[1] * s.shape[2]
    flat = s.reshape(n, m)
    for kk in range(k):
        counts = np.zeros(m, dt)
        for tt in range(t):
            counts += flat[kk * t + tt]
        silent = True
        for j in range(m):
            if counts[j] != 0:
                silent = False
                break
        y_in = counts * count_scale
        for r in range(len(ro_weights)):
            wr = ro_weights[r]
            acc = ro_biases[r].copy()
            for i in range(wr.shape[0]):
                v = y_in[i]
                if v == 0:
                    continue
                for o in range(wr.shape[2]):
                    acc[o] += v * wr[i, 0, o]
            y_in = acc
        for o in range(y_in.shape[0]):
            out[kk, o] = np.nan if (silent and nan_when_silent) else y_in[o]


@_exact
def _search_region(ref, scale, min_side, out):
    """:func:`dashnet_ros.models.arch.search_region` of the float32 box ``ref`` into ``out``
    (float64 arithmetic, float32 result, as there)."""
    b0, b1, b2, b3 = np.float64(ref[0]), np.float64(ref[1]), np.float64(ref[2]), np.float64(ref[3])
    side = max(scale * max(b2, b3), min_side)
    cx, cy = b0 + b2 / 2, b1 + b3 / 2
    out[0], out[1], out[2], out[3] = cx - side / 2, cy - side / 2, side, side


@_exact
def _reset_state(states, u_rest):
    for i in range(len(states)):
        states[i][:] = u_rest


@_exact      # no fastmath: the box arithmetic must round as the Python path's does
def track_windows(t_us, x, y, p, t0_us, window_us, k, t, h, w, ref, scale, min_side, width, height,
                  reset_jump, last_region, in_pc, weights, starts, out_pos, taps, states, decay, v_th, u_rest,
                  count_scale, ro_weights, ro_biases, nan_when_silent, boxes, motion):
    """``k`` consecutive windows of ``window_us`` from ``t0_us``, each as
    :meth:`dashnet_ros.tracking.SNNRunner.step` runs one window, in one call: the search
    region centred on ``ref`` (:func:`_search_region`), a state reset when it jumped by more
    than ``reset_jump`` of the previous region's side (``last_region``, NaN = none), the
    network (:func:`network_window`), the box in sensor pixels, and -- where the box is
    usable (:func:`dashnet_ros.tracking.sane_box`: finite, sized, clamped to the frame) --
    its motion from ``ref`` (:func:`dashnet_ros.tracking.snn_motion`) and ``ref`` moved to
    it for the next window.  ``ref`` and ``last_region`` (float32 [4]) are updated in place;
    ``boxes [k, 4]`` (NaN: no box) and ``motion [k, 2]`` are written; returns the number of
    state resets.  The float arithmetic follows the Python path step by step (float32 where
    numpy computes in float32), so the results are bit-equal to ``k`` single-window calls."""
    region = np.empty(4, np.float32)
    norm = np.empty((1, boxes.shape[1]), states[0].dtype)
    resets = 0
    two = np.float32(2.0)
    for i in range(k):
        _search_region(ref, scale, min_side, region)
        if reset_jump > 0 and not np.isnan(last_region[0]):
            dx = region[0] + region[2] / two - last_region[0] - last_region[2] / two
            dy = region[1] + region[3] / two - last_region[1] - last_region[3] / two
            if np.hypot(np.float64(dx), np.float64(dy)) > np.float32(reset_jump) * last_region[2]:
                _reset_state(states, u_rest)
                resets += 1
        last_region[:] = region
        r0, r1, r2, r3 = np.float64(region[0]), np.float64(region[1]), np.float64(region[2]), np.float64(region[3])
        a = t0_us + i * window_us
        # this window's events only (sorted by time): the binning then skips nothing
        j0 = np.searchsorted(t_us, a)
        j1 = np.searchsorted(t_us, a + window_us)
        network_window(t_us[j0:j1], x[j0:j1], y[j0:j1], p[j0:j1], a, a + window_us, 1, t,
                       np.float32(0.5 - r0), np.float32(w / r2),
                       np.float32(0.5 - r1), np.float32(h / r3), h, w, in_pc, weights, starts, out_pos, taps, states,
                       decay, v_th, u_rest, count_scale, ro_weights, ro_biases, nan_when_silent, norm)
        n0, n1, n2, n3 = np.float64(norm[0, 0]), np.float64(norm[0, 1]), np.float64(norm[0, 2]), np.float64(norm[0, 3])
        bw, bh = n2 * r2, n3 * r3
        b0 = np.float64(np.float32(r0 + n0 * r2 - bw / 2))
        b1 = np.float64(np.float32(r1 + n1 * r3 - bh / 2))
        b2, b3 = np.float64(np.float32(bw)), np.float64(np.float32(bh))
        if not (np.isfinite(b0) and np.isfinite(b1) and np.isfinite(b2) and np.isfinite(b3)) or b2 <= 0 or b3 <= 0:
            boxes[i, :] = np.nan
            motion[i, 0] = 0.0
            motion[i, 1] = 0.0
            continue
        sw = min(max(b2, 2.0), np.float64(width))
        sh = min(max(b3, 2.0), np.float64(height))
        cx = min(max(b0 + b2 / 2, 0.0), np.float64(width))
        cy = min(max(b1 + b3 / 2, 0.0), np.float64(height))
        boxes[i, 0], boxes[i, 1], boxes[i, 2], boxes[i, 3] = cx - sw / 2, cy - sh / 2, sw, sh
        q0, q1, q2, q3 = (np.float64(boxes[i, 0]), np.float64(boxes[i, 1]), np.float64(boxes[i, 2]),
                          np.float64(boxes[i, 3]))
        p0, p1, p2, p3 = np.float64(ref[0]), np.float64(ref[1]), np.float64(ref[2]), np.float64(ref[3])
        motion[i, 0] = (q0 + q2 / 2) - (p0 + p2 / 2)
        motion[i, 1] = (q1 + q3 / 2) - (p1 + p3 / 2)
        ref[:] = boxes[i]
    return resets


def warm_up(dtype) -> None:
    """Compile (or load from the cache) every kernel for ``dtype`` now, so the first window
    of a stream does not wait for the compiler."""
    d = np.dtype(dtype).type
    starts, out_pos, tap = conv_tables(2, 2, 1, 1, 1, 1, 0, 0, 2, 2)
    conv_scatter(np.ones((1, 4, 1), dtype), np.ones((1, 1, 1), dtype), starts, out_pos, tap, np.zeros((1, 4, 1), dtype))
    from ..events import empty_events

    ev = empty_events(1)         # the strided field views bin_events passes
    bin_counts(ev["t_us"], ev["x"], ev["y"], ev["p"], 0, 1, 1, np.float32(0.5), np.float32(1.0), np.float32(0.5),
               np.float32(1.0), 1, 1, np.zeros(2, np.float32))
    scatter_lif(np.ones((1, 4, 1), dtype), np.ones((1, 1, 1), dtype), starts, out_pos, tap, np.zeros((4, 1), dtype),
                d(0.5), d(1.0), d(0.0), np.zeros((1, 4, 1), dtype))
    lif_steps(np.zeros(2, dtype), np.ones((1, 2), dtype), d(0.5), d(1.0), d(0.0), np.zeros((1, 2), dtype))
