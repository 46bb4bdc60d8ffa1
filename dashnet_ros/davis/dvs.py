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

from ..events import EVENT_DTYPE, empty_events

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

    def step(self, image, t_us: int) -> np.ndarray:
        if self._t_us is None:
            raise RuntimeError(f"{type(self).__name__}.step() called before reset()")
        a = self._frame(image)
        if a.shape != self._shape:
            raise ValueError(f"DVS frame shape changed from {self._shape} to {a.shape}")
        t_us = int(t_us)
        if t_us <= self._t_us:
            raise ValueError(
                f"DVS frame times must increase: got t_us={t_us} after t_us={self._t_us}"
            )
        ev = self._step(a, self._t_us, t_us)
        self._t_us = t_us
        return ev

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

    Speed: the whole-image work per frame is a handful of multiply/compare operations in
    linear intensity against per-pixel bounds ``exp(ref ± θ)`` (the leak drift is one
    global factor); logs, crossing times and state updates are computed only for the
    pixels that fire.
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
    # ``_ref`` holds the reference *before* the global leak drift: the true reference at
    # time t is ``_ref − lam·(t − _t_origin)``.  ``_hi``/``_lo`` are exp(_ref ± θ).

    def _reset(self, image: np.ndarray) -> None:
        self._rng = rng = np.random.default_rng(self.seed)
        n = image.size
        if self.sigma_threshold > 0:
            th_on = rng.normal(self.threshold_on, self.sigma_threshold, n)
            th_off = rng.normal(self.threshold_off, self.sigma_threshold, n)
            self._th_on = np.maximum(th_on, 0.01)
            self._th_off = np.maximum(th_off, 0.01)
        else:
            self._th_on = np.full(n, self.threshold_on)
            self._th_off = np.full(n, self.threshold_off)
        self._I0 = image.ravel().astype(np.float32, copy=True)   # frame at t_prev
        ref = np.log(np.maximum(self._I0.astype(np.float64), 0.0) + self.eps)
        if self._lam > 0:
            # random phase so leak events do not all fire at once
            ref -= rng.uniform(0.0, 1.0, n) * self._th_on
        self._ref = ref
        self._t_origin = self._t_us
        self._hi = np.exp(ref + self._th_on).astype(np.float32)
        self._lo = np.exp(ref - self._th_off).astype(np.float32)
        # absolute end of each pixel's refractory period (µs); -inf = free
        self._block = np.full(n, -np.inf)
        self._n_blocked = 0
        self._x = np.empty(n, np.float32)

    def _renormalise(self, t_us: int) -> None:
        """Fold the accumulated leak drift into the stored references (rarely needed)."""
        off = self._lam * (t_us - self._t_origin)
        self._ref -= off
        f = np.float32(math.exp(-off))
        self._hi *= f
        self._lo *= f
        self._t_origin = t_us

    # -- one interval ------------------------------------------------------------------
    def _step(self, image: np.ndarray, t0_us: int, t1_us: int) -> np.ndarray:
        dt = float(t1_us - t0_us)
        if self._lam > 0 and self._lam * (t1_us - self._t_origin) > 1.0:
            self._renormalise(t0_us)
        I1 = image.ravel()
        # x = (I1 + eps)·exp(lam·(t1 − t_origin)) is compared with exp(ref ± θ)
        x = np.add(I1, np.float32(self.eps), out=self._x)
        if self._lam > 0:
            x *= np.float32(math.exp(self._lam * (t1_us - self._t_origin)))
        fire = x >= self._hi
        fire |= x <= self._lo
        if self._n_blocked:
            fire |= self._block > t0_us
        idx = np.flatnonzero(fire)

        ev_pix = ev_t = ev_p = None
        if idx.size:
            ev_pix, ev_t, ev_p = self._fire(idx, I1, t0_us, dt)

        if self.shot_noise_rate_hz > 0:
            k = self._rng.poisson(self.shot_noise_rate_hz * I1.size * dt * 1e-6)
            if k:
                pix = self._rng.integers(0, I1.size, k)
                t = t0_us + self._rng.integers(1, int(dt) + 1, k)
                p = self._rng.choice(np.array([-1, 1], np.int8), k)
                if ev_pix is None:
                    ev_pix, ev_t, ev_p = pix, t, p
                else:
                    ev_pix = np.concatenate([ev_pix, pix])
                    ev_t = np.concatenate([ev_t, t])
                    ev_p = np.concatenate([ev_p, p])

        np.copyto(self._I0, I1)
        if ev_pix is None:
            return empty_events()
        w = self._shape[1]
        return _build_events((ev_pix % w).astype(np.uint16), (ev_pix // w).astype(np.uint16),
                             ev_t, ev_p)

    def _fire(self, idx, I1, t0_us: int, dt: float):
        """Events and new state of the pixels ``idx`` that fire or leave refractory."""
        r = self.refractory_us
        lam = self._lam
        tiny = 1e-12
        la = np.log(np.maximum(self._I0[idx].astype(np.float64) + self.eps, tiny))
        lb = np.log(np.maximum(I1[idx].astype(np.float64) + self.eps, tiny))
        drift0 = lam * (t0_us - self._t_origin)
        ref0 = self._ref[idx] - drift0                           # true reference at t0
        th_on = self._th_on[idx]
        th_off = self._th_off[idx]

        # refractory carried over from the last interval: reference held at L until then
        bu = self._block[idx] - t0_us
        held = bu > 0
        ts = np.where(held, np.minimum(bu, dt), 0.0)
        d_s = np.where(held, 0.0, la - ref0)                    # L − ref at ts
        sd = (lb - la) / dt + lam                               # slope of L − ref (1/µs)
        on = sd > 0
        th = np.where(on, th_on, th_off)
        dist = np.maximum(np.where(on, th - d_s, th + d_s), 0.0)
        speed = np.abs(sd)
        with np.errstate(divide="ignore", invalid="ignore"):
            t_a = ts + dist / speed                              # first crossing (inf if speed 0)
            period = r + th / speed
        can = (t_a <= dt) & (speed > 0)
        n = np.zeros(idx.size, np.int64)
        n[can] = np.floor((dt - t_a[can]) / period[can]).astype(np.int64) + 1

        # new state at t1
        fired = n > 0
        t_free = t_a + (n - 1) * period + r                     # end of the last refractory
        still_held = (fired & (t_free >= dt)) | (held & (bu >= dt))
        d_end = np.where(fired, sd * (dt - t_free), d_s + sd * (dt - ts))
        d_end[still_held] = 0.0
        ref1 = lb - d_end + (drift0 + lam * dt)                 # stored (pre-drift) reference
        self._ref[idx] = ref1
        self._hi[idx] = np.exp(ref1 + th_on)
        self._lo[idx] = np.exp(ref1 - th_off)
        if r > 0:
            blk = np.where(fired, t0_us + t_free, self._block[idx])
            self._block[idx] = np.where(still_held, blk, -np.inf)
            self._n_blocked += int(np.count_nonzero(still_held)) - int(np.count_nonzero(held))

        if not fired.any():
            return None, None, None
        sel = np.flatnonzero(fired)
        nf = n[sel]
        total = int(nf.sum())
        k = np.arange(total) - np.repeat(np.cumsum(nf) - nf, nf)
        t_rel = np.repeat(t_a[sel], nf) + k * np.repeat(period[sel], nf)
        t = t0_us + np.clip(np.rint(t_rel), 1, dt).astype(np.int64)
        pol = np.where(on[sel], 1, -1).astype(np.int8)
        return np.repeat(idx[sel], nf), t, np.repeat(pol, nf)


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
