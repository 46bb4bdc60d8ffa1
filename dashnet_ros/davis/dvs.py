"""DVS event models: turn a sequence of luminance frames into events (paper §3.4, eq. 14).

Two models share one incremental interface (:class:`DVSModel`)::

    dvs = make_dvs("pixel", threshold_on=0.2, seed=0)
    dvs.reset(first_image, t0_us)
    for t_us, image in frames:
        ev = dvs.step(image, t_us)     # EVENT_DTYPE, sorted, all with t_prev < t_us_ev <= t_us

* :class:`PaperDVS` is eq. 14 as written: the change between consecutive frames is
  thresholded, ``floor(|ΔI| / θ)`` events per pixel, time stamps drawn uniformly in the
  interval and quantised to the temporal resolution ``Δt_e``.
* :class:`PixelDVS` is a per-pixel circuit model in the spirit of ESIM / v2e: log
  intensity, a reference level per pixel, threshold mismatch, refractory period, leak
  and shot noise, and time stamps placed where the (piecewise linear) log intensity
  crosses each threshold.  Fully vectorised with numpy; only pixels that fire are
  touched after a few whole-image operations.

Frames are float32 ``(H, W)`` linear luminance in ``[0, 1]`` (see
:class:`dashnet_ros.davis.frames.Frame`); times are integer microseconds.
"""
from __future__ import annotations

import abc
import inspect
import math
from typing import Optional

import numpy as np

from ..events import EVENT_DTYPE, concat_events, empty_events

__all__ = ["DVSModel", "PaperDVS", "PixelDVS", "make_dvs", "DVS_MODELS"]


def _check_positive(name: str, value, *, allow_zero: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"DVS parameter {name!r} must be a number, got {value!r}") from None
    ok = (v >= 0) if allow_zero else (v > 0)
    if not math.isfinite(v) or not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"DVS parameter {name!r} must be finite and {bound}, got {value!r}")
    return v


def _build_events(x, y, t_us, p) -> np.ndarray:
    """Events from parallel arrays, stably sorted by time."""
    n = len(t_us)
    ev = np.empty(n, dtype=EVENT_DTYPE)
    if n == 0:
        return ev
    order = np.argsort(t_us, kind="stable")
    ev["t_us"] = t_us[order]
    ev["x"] = x[order]
    ev["y"] = y[order]
    ev["p"] = p[order]
    return ev


class DVSModel(abc.ABC):
    """Stateful frame-to-event converter.

    ``reset(image, t_us)`` sets the initial state; each ``step(image, t_us)`` returns the
    events of the interval ``(t_prev, t_us]`` as a time-sorted ``EVENT_DTYPE`` array.
    """

    #: name accepted by :func:`make_dvs`
    name: str = ""

    def __init__(self) -> None:
        self._shape: Optional[tuple] = None
        self._t_us: Optional[int] = None

    @property
    def t_us(self) -> Optional[int]:
        """Time of the last frame seen (None before :meth:`reset`)."""
        return self._t_us

    @property
    def shape(self) -> Optional[tuple]:
        return self._shape

    @property
    def params(self) -> dict:
        """The constructor parameters (to record with generated data)."""
        sig = inspect.signature(type(self).__init__)
        return {k: getattr(self, k) for k in sig.parameters if k != "self"}

    def _frame(self, image) -> np.ndarray:
        a = np.asarray(image, dtype=np.float32)
        if a.ndim != 2:
            raise ValueError(f"DVS input frame must be a 2-D (H, W) luminance image, got shape {a.shape}")
        return a

    def reset(self, image, t_us: int) -> None:
        a = self._frame(image)
        self._shape = a.shape
        self._t_us = int(t_us)
        self._reset(a)

    def _check(self, image, t_us: int, t_prev: int):
        if self._t_us is None:
            raise RuntimeError(f"{type(self).__name__}.step() called before reset()")
        a = self._frame(image)
        if a.shape != self._shape:
            raise ValueError(f"DVS frame shape changed from {self._shape} to {a.shape}")
        t_us = int(t_us)
        if t_us <= t_prev:
            raise ValueError(f"DVS frame times must increase: got t_us={t_us} after t_us={t_prev}")
        return a, t_us

    def step(self, image, t_us: int) -> np.ndarray:
        """Events of ``(t_prev, t_us]`` as the frame changes to ``image``."""
        a, t_us = self._check(image, t_us, self._t_us if self._t_us is not None else 0)
        ev = self._step(a, self._t_us, t_us)
        self._t_us = t_us
        return ev

    def step_many(self, images, t_us) -> np.ndarray:
        """Same as calling :meth:`step` for each ``(image, t)`` in turn, events concatenated
        (time-sorted); a model may process the frames together, faster (PixelDVS: the
        same events up to float32 rounding, i.e. a time stamp may differ by 1 µs)."""
        images, t_us = list(images), list(t_us)
        if len(images) != len(t_us):
            raise ValueError(f"step_many got {len(images)} images but {len(t_us)} times")
        frames, times = [], []
        prev = self._t_us if self._t_us is not None else 0
        for img, t in zip(images, t_us):
            a, prev = self._check(img, t, prev)
            frames.append(a)
            times.append(prev)
        if not frames:
            return empty_events()
        ev = self._step_many(frames, times)
        self._t_us = times[-1]
        return ev

    def _step_many(self, frames, times) -> np.ndarray:
        out, t0 = [], self._t_us
        for a, t in zip(frames, times):
            out.append(self._step(a, t0, t))
            t0 = t
        return concat_events(out)

    @abc.abstractmethod
    def _reset(self, image: np.ndarray) -> None:
        ...

    @abc.abstractmethod
    def _step(self, image: np.ndarray, t0_us: int, t1_us: int) -> np.ndarray:
        ...


class PaperDVS(DVSModel):
    """Eq. 14 of the paper.

    ``ΔI = I_n − I_{n−1}`` (linear intensity, or ``log(I + eps)`` with ``log=True``);
    polarity ``p = ε(ΔI − θ) + ε(ΔI + θ) − 1``; ``floor(|ΔI| / θ)`` events per pixel;
    each event time stamp ``t_e = t_f + floor(U(0, Δt/Δt_e))·Δt_e`` with ``Δt`` the frame
    interval (``Δt_f/m`` in the paper) and ``Δt_e = dt_e_us`` the temporal resolution.
    To keep the events in ``(t_prev, t]`` the draw is shifted by one quantum
    (``t_prev + (k+1)·Δt_e``, clipped to ``t``).  There is no per-pixel memory: a change
    below θ between two frames is lost, as in the paper.
    """

    name = "paper"

    def __init__(self, threshold: float = 0.1, *, log: bool = False, eps: float = 0.01,
                 dt_e_us: int = 1, seed: Optional[int] = 0) -> None:
        super().__init__()
        self.threshold = _check_positive("threshold", threshold)
        self.log = bool(log)
        self.eps = _check_positive("eps", eps)
        if int(dt_e_us) != dt_e_us or dt_e_us < 1:
            raise ValueError(f"DVS parameter 'dt_e_us' must be an integer >= 1 µs, got {dt_e_us!r}")
        self.dt_e_us = int(dt_e_us)
        self.seed = seed
        self._prev: Optional[np.ndarray] = None
        self._rng = np.random.default_rng(seed)

    def _value(self, image: np.ndarray) -> np.ndarray:
        if self.log:
            return np.log(np.maximum(image, 0.0) + np.float32(self.eps))
        return image.copy()

    def _reset(self, image: np.ndarray) -> None:
        self._rng = np.random.default_rng(self.seed)
        self._prev = self._value(image)

    def _step(self, image: np.ndarray, t0_us: int, t1_us: int) -> np.ndarray:
        cur = self._value(image)
        delta = cur - self._prev
        self._prev = cur
        flat = delta.ravel()
        idx = np.flatnonzero(np.abs(flat) >= np.float32(self.threshold))
        if idx.size == 0:
            return empty_events()
        n = np.floor(np.abs(flat[idx].astype(np.float64)) / self.threshold).astype(np.int64)
        keep = n > 0
        idx, n = idx[keep], n[keep]
        if idx.size == 0:
            return empty_events()
        pol = np.where(flat[idx] > 0, 1, -1).astype(np.int8)
        pix = np.repeat(idx, n)
        dt = t1_us - t0_us
        n_quanta = dt / self.dt_e_us                      # Δt / Δt_e
        k = np.floor(self._rng.uniform(0.0, n_quanta, size=pix.size)).astype(np.int64)
        t = np.minimum(t0_us + (k + 1) * self.dt_e_us, t1_us)
        w = self._shape[1]
        return _build_events((pix % w).astype(np.uint16), (pix // w).astype(np.uint16), t,
                             np.repeat(pol, n))


class PixelDVS(DVSModel):
    """Per-pixel DVS model (ESIM / v2e style), vectorised over pixels.

    State per pixel: reference log intensity ``ref`` and the end of its refractory
    period.  Between two frames the log intensity ``L = log(I + eps)`` is taken as linear
    in time.  A pixel fires ON when ``L − ref`` reaches ``+θ_on`` and OFF at ``−θ_off``
    (``θ`` drawn per pixel from ``N(θ, sigma_threshold)``, at least 0.01); each event is
    stamped at the linearly interpolated crossing time (rounded to 1 µs).  After an event
    the pixel is held in reset for ``refractory_us`` (its reference follows ``L``, it
    cannot fire), so with a constant slope ``s`` the events of one interval are spaced by
    ``refractory + θ/|s|``.  Leak noise: every reference drifts down by
    ``leak_rate_hz·threshold_on`` per second, so a static pixel emits ON events at about
    ``leak_rate_hz`` (exactly, for a pixel whose mismatched θ_on equals the nominal one;
    random phase per pixel).  Shot noise: Poisson events at ``shot_noise_rate_hz`` per
    pixel, random polarity, independent of the reference.

    Speed: no whole-image log.  :meth:`step_many` (what the simulator calls, one source
    interval of sub-frames at a time) takes each pixel's brightest and darkest value over
    the frames and compares them, in linear intensity, with per-pixel bounds
    ``exp(ref ± θ)`` (the leak drift is one global factor); logs, crossing times and state
    updates are then computed only for the pixels that can fire, all frames together.
    """

    name = "pixel"

    def __init__(self, threshold_on: float = 0.2, threshold_off: float = 0.2, *,
                 sigma_threshold: float = 0.03, refractory_us: float = 100.0,
                 leak_rate_hz: float = 0.1, shot_noise_rate_hz: float = 0.0,
                 eps: float = 0.01, seed: Optional[int] = 0) -> None:
        super().__init__()
        self.threshold_on = _check_positive("threshold_on", threshold_on)
        self.threshold_off = _check_positive("threshold_off", threshold_off)
        self.sigma_threshold = _check_positive("sigma_threshold", sigma_threshold, allow_zero=True)
        self.refractory_us = _check_positive("refractory_us", refractory_us, allow_zero=True)
        self.leak_rate_hz = _check_positive("leak_rate_hz", leak_rate_hz, allow_zero=True)
        self.shot_noise_rate_hz = _check_positive("shot_noise_rate_hz", shot_noise_rate_hz,
                                                  allow_zero=True)
        self.eps = _check_positive("eps", eps)
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        # leak drift of every reference, log units per µs
        self._lam = self.leak_rate_hz * self.threshold_on * 1e-6

    # -- state -----------------------------------------------------------------------
    # ``_S`` (float32): the reference *before* the global leak drift (the true reference
    # at time t is ``ref − lam·(t − _t_origin)``), θ_on and θ_off per pixel.
    # ``_hi``/``_lo`` are ``exp(ref ± θ)``, compared with the frame in linear intensity.
    # ``_block`` is the absolute end (µs) of a pixel's refractory period; only the pixels
    # listed in ``_held`` can still be in it.

    def _reset(self, image: np.ndarray) -> None:
        self._rng = rng = np.random.default_rng(self.seed)
        n = image.size
        S = np.empty((n, 3))
        if self.sigma_threshold > 0:
            S[:, 1] = np.maximum(rng.normal(self.threshold_on, self.sigma_threshold, n), 0.01)
            S[:, 2] = np.maximum(rng.normal(self.threshold_off, self.sigma_threshold, n), 0.01)
        else:
            S[:, 1] = self.threshold_on
            S[:, 2] = self.threshold_off
        self._I0 = image.ravel().astype(np.float32, copy=True)      # frame at t_prev
        S[:, 0] = np.log(np.maximum(self._I0.astype(np.float64), 0.0) + self.eps)
        if self._lam > 0:
            # random phase so leak events do not all fire at once
            S[:, 0] -= rng.uniform(0.0, 1.0, n) * S[:, 1]
        self._S = S.astype(np.float32)
        self._block = np.full(n, -np.inf)
        self._t_origin = self._t_us
        self._hi = np.exp(self._S[:, 0] + self._S[:, 1])
        self._lo = np.exp(self._S[:, 0] - self._S[:, 2])
        self._held = np.empty(0, np.int64)
        self._x = np.empty(n, np.float32)
        self._y = np.empty(n, np.float32)
        self._f1 = np.empty(n, bool)
        self._f2 = np.empty(n, bool)

    def _renormalise(self, t_us: int) -> None:
        """Fold the accumulated leak drift into the stored references (rarely needed)."""
        off = self._lam * (t_us - self._t_origin)
        self._S[:, 0] -= np.float32(off)
        f = np.float32(math.exp(-off))
        self._hi *= f
        self._lo *= f
        self._t_origin = t_us

    # -- frames ------------------------------------------------------------------------
    def _step(self, image: np.ndarray, t0_us: int, t1_us: int) -> np.ndarray:
        return self._step_many([image], [t1_us])

    def _step_many(self, frames, times) -> np.ndarray:
        """All frames of ``(t_prev, times[-1]]`` at once: one pass finds the pixels that
        may fire in any of them (against the references at ``t_prev``: a pixel that never
        leaves its band keeps its reference), then :meth:`_fire` follows those pixels
        through the frames in order."""
        t0_us, t_end = self._t_us, times[-1]
        lam, eps = self._lam, np.float32(self.eps)
        if lam > 0 and lam * (t_end - self._t_origin) > 1.0:
            self._renormalise(t0_us)
        # the band test on the brightest and darkest value each pixel takes in the frames:
        # x = (I + eps)·exp(lam·(t − t_origin)) against exp(ref ± θ)
        hi_x, lo_x, fire, f2 = self._x, self._y, self._f1, self._f2
        if len(frames) == 1:
            np.add(frames[0].ravel(), eps, out=hi_x)
            lo_x = hi_x
        else:
            np.maximum(frames[0].ravel(), frames[1].ravel(), out=hi_x)
            np.minimum(frames[0].ravel(), frames[1].ravel(), out=lo_x)
            for img in frames[2:]:
                np.maximum(hi_x, img.ravel(), out=hi_x)
                np.minimum(lo_x, img.ravel(), out=lo_x)
            hi_x += eps
            lo_x += eps
        if lam > 0:   # the drift factor grows with time: last frame's for hi, first's for lo
            hi_x *= np.float32(math.exp(lam * (times[-1] - self._t_origin)))
            if len(frames) > 1:
                lo_x *= np.float32(math.exp(lam * (times[0] - self._t_origin)))
        np.greater_equal(hi_x, self._hi, out=fire)
        fire |= np.less_equal(lo_x, self._lo, out=f2)
        if self._held.size:
            fire[self._held] = True
        idx = np.flatnonzero(fire)

        ev_pix = ev_t = ev_p = None
        if idx.size:
            ev_pix, ev_t, ev_p = self._fire(idx, frames, times)
        np.copyto(self._I0, frames[-1].ravel())

        if self.shot_noise_rate_hz > 0:
            span = t_end - t0_us
            k = self._rng.poisson(self.shot_noise_rate_hz * fire.size * span * 1e-6)
            if k:
                pix = self._rng.integers(0, fire.size, k)
                t = t0_us + self._rng.integers(1, span + 1, k)
                p = self._rng.choice(np.array([-1, 1], np.int8), k)
                if ev_pix is None:
                    ev_pix, ev_t, ev_p = pix, t, p
                else:
                    ev_pix = np.concatenate([ev_pix, pix])
                    ev_t = np.concatenate([ev_t, t])
                    ev_p = np.concatenate([ev_p, p])
        if ev_pix is None:
            return empty_events()
        w = self._shape[1]
        return _build_events((ev_pix % w).astype(np.uint16), (ev_pix // w).astype(np.uint16),
                             ev_t, ev_p)

    def _fire(self, idx, frames, times):
        """Events and new state of the pixels ``idx`` through ``frames``.

        In frame interval j (relative times, µs) ``d = L − ref`` is linear with slope
        ``sd``; it starts at ``d`` at time ``ts`` (0, or the end of a refractory period
        carried over, when ``d = 0``).  Written for few numpy calls: their overhead, not
        the arithmetic, dominates on a few hundred pixels."""
        r = self.refractory_us
        lam = self._lam
        t0_us = self._t_us
        K, m = len(frames), idx.size
        S = self._S[idx]
        L = np.empty((K + 1, m), np.float32)
        L[0] = self._I0[idx]
        for j, img in enumerate(frames):
            L[j + 1] = img.ravel()[idx]
        np.maximum(L, np.float32(1e-12 - self.eps), out=L)
        L += np.float32(self.eps)
        np.log(L, out=L)
        rel = np.array([t0_us] + list(times), np.int64) - t0_us     # interval bounds
        dts = np.diff(rel).astype(np.float32)
        sd = np.diff(L, axis=0)
        sd /= dts[:, None]
        if lam:
            sd += np.float32(lam)
        on = sd > 0
        th = np.where(on, S[:, 1], S[:, 2])
        inv = np.abs(sd)
        inv += np.float32(1e-30)                                # sd = 0: crossing at ~infinity
        np.divide(np.float32(1), inv, out=inv)
        # with d = L − ref: first crossing at t = max(A − d·B, 0) (+ start), A = θ/|sd|,
        # B = sign(sd)/|sd|; later crossings every P = A + refractory
        A = th * inv
        B = sd * inv
        B *= inv
        P = A + np.float32(r)
        Q = np.float32(1) / P

        ref = S[:, 0] - np.float32(lam * (t0_us - self._t_origin))  # true reference at t0
        hold = (self._block[idx] - t0_us).astype(np.float32) if self._held.size else None
        counts, firsts = [], []
        for j in range(K):
            dt = float(dts[j])
            # d = L − ref at the interval start; a pixel still held in refractory has its
            # reference at L, i.e. d = 0, and cannot fire before ts
            d = L[j] - ref
            t_a = d * B[j]
            np.subtract(A[j], t_a, out=t_a)
            np.maximum(t_a, np.float32(0), out=t_a)             # first crossing
            if hold is not None:
                t_hold = np.maximum(hold, np.float32(0))
                t_a += np.minimum(t_hold, np.float32(dt))
            else:
                t_hold = np.float32(0)
            q = dt - t_a
            q *= Q[j]
            fired = q >= 0
            nfl = np.where(fired, q, np.float32(-1))
            np.floor(nfl, out=nfl)                              # events - 1 (-1: none)
            # d is known to be 0 at the end t_ref of the last refractory (or of the carried one)
            t_ref = nfl * P[j]
            t_ref += t_a
            t_ref += np.float32(r)
            t_ref = np.where(fired, t_ref, t_hold)
            d[fired] = 0.0
            d_end = dt - t_ref
            np.maximum(d_end, np.float32(0), out=d_end)
            d_end *= sd[j]
            d_end += d
            ref = L[j + 1] - d_end
            if r > 0:
                hold = t_ref - np.float32(dt)                   # > 0: still held after t_{j+1}
            counts.append(nfl)
            firsts.append(t_a)

        # new state
        S[:, 0] = ref + np.float32(lam * (times[-1] - self._t_origin))   # stored, pre-drift
        self._S[idx] = S
        self._hi[idx] = np.exp(S[:, 0] + S[:, 1])
        self._lo[idx] = np.exp(S[:, 0] - S[:, 2])
        if r > 0:
            still = hold > 0
            self._block[idx] = np.where(still, hold.astype(np.float64) + times[-1], -np.inf)
            self._held = idx[still]

        # events
        nf = np.stack(counts) if K > 1 else counts[0][None]
        nf = nf.astype(np.int64).ravel()
        nf += 1
        sel = np.flatnonzero(nf)
        if sel.size == 0:
            return None, None, None
        c = nf[sel]
        t_first = (np.stack(firsts) if K > 1 else firsts[0][None]).ravel()[sel]
        per = P.ravel()[sel]
        pol = on.ravel()[sel]
        seg = sel // m                                          # frame interval of each pixel
        pix = idx[sel - seg * m]
        if int(c.max()) > 1:
            total = int(c.sum())
            k = np.arange(total) - np.repeat(np.cumsum(c) - c, c)
            t_rel = np.repeat(t_first, c) + k * np.repeat(per, c)
            pix, pol, seg = np.repeat(pix, c), np.repeat(pol, c), np.repeat(seg, c)
        else:
            t_rel = t_first
        # µs within the interval, in (0, dt]; then onto the absolute clock
        t = np.rint(t_rel).astype(np.int64)
        if K > 1:
            np.clip(t, 1, rel[1:][seg] - rel[:-1][seg], out=t)
            t += rel[:-1][seg] + t0_us
        else:
            np.clip(t, 1, int(rel[1]), out=t)
            t += t0_us
        return pix, t, pol.astype(np.int8) * np.int8(2) - np.int8(1)


DVS_MODELS = {PaperDVS.name: PaperDVS, PixelDVS.name: PixelDVS}


def make_dvs(model: str = "pixel", **params) -> DVSModel:
    """A DVS model by name (``"paper"``: eq. 14, ``"pixel"``: per-pixel model).

    Raises ValueError for an unknown model or parameter, or an impossible value.
    """
    try:
        cls = DVS_MODELS[str(model).lower()]
    except KeyError:
        raise ValueError(
            f"unknown DVS model {model!r}; choose one of {sorted(DVS_MODELS)}"
        ) from None
    sig = inspect.signature(cls.__init__)
    allowed = [k for k in sig.parameters if k != "self"]
    bad = [k for k in params if k not in allowed]
    if bad:
        raise ValueError(
            f"unknown parameter(s) {bad} for DVS model {cls.name!r}; valid: {allowed}"
        )
    return cls(**params)
