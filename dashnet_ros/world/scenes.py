"""Procedural, domain-randomised high-speed tracking sequences with exact ground truth.

A sequence is a textured "prey" sprite (ellipse / rectangle / polygon / blob, procedural
texture) moving fast over a cluttered textured background seen by a panning, zooming
camera, with distractor sprites, slow lighting changes and mild mains flicker.  Every
moving quantity is a uniform cubic B-spline of time, so :meth:`SequenceSource.box_at`
and :meth:`SequenceSource.render_at` are exact at ANY time (no interpolation between
frames): a caller can oversample the ground truth (e.g. 8x the frame rate) to train the
FCN interpolator (paper eq. 13) or to measure a tracker between frames.

Seeds: training data uses seeds ``>= TRAIN_SEED_MIN`` (1000); seeds ``0..999``
(:data:`TEST_SEEDS`) are reserved for held-out test sets and must never be trained on.

Boxes are ``(x, y, w, h)`` in OpenCV pixel coordinates (pixel centres at integers),
clipped to ``[0, W-1] x [0, H-1]``; NaN when the prey is entirely out of view.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Iterator, List, Optional, Tuple

import cv2
import numpy as np

from dashnet_ros.davis.frames import Frame, FrameSource
from dashnet_ros.world.textures import (SHAPE_KINDS, TEXTURE_KINDS, Sprite,
                                        clutter_sheet)

#: training sequences use seeds >= this
TRAIN_SEED_MIN = 1000
#: seeds reserved for held-out test sets (never train on them)
TEST_SEEDS = range(0, 1000)


# --------------------------------------------------------------------------- splines


@dataclass
class Spline:
    """Uniform cubic B-spline ``f(t)`` with control points ``ctrl`` (K, D), knot spacing
    ``dt_s``.  Segment ``i`` covers ``t in [i dt, (i+1) dt)`` and uses ``ctrl[i:i+4]``;
    outside ``[0, (K-3) dt]`` the end values are held.  C2-continuous, so velocity and
    acceleration are continuous and the position is analytic at every time."""

    ctrl: np.ndarray
    dt_s: float

    def __post_init__(self):
        self.ctrl = np.atleast_2d(np.asarray(self.ctrl, np.float64))
        if self.ctrl.shape[0] < 4:
            raise ValueError(f"a cubic B-spline needs >= 4 control points, got {self.ctrl.shape[0]}")
        if not self.dt_s > 0:
            raise ValueError(f"spline knot spacing dt_s must be > 0, got {self.dt_s}")

    @property
    def t_end_s(self) -> float:
        return (self.ctrl.shape[0] - 3) * self.dt_s

    def __call__(self, t_s) -> np.ndarray:
        if np.ndim(t_s) == 0:   # fast path for one time (rendering)
            n = self.ctrl.shape[0]
            u = min(max(float(t_s) / self.dt_s, 0.0), n - 3.0)
            i = min(int(u), n - 4)
            f = u - i
            g = 1.0 - f
            w = np.array([g * g * g, 3 * f ** 3 - 6 * f * f + 4,
                          -3 * f ** 3 + 3 * f * f + 3 * f + 1, f * f * f]) / 6.0
            return w @ self.ctrl[i:i + 4]
        t = np.asarray(t_s, np.float64)
        u = np.clip(t / self.dt_s, 0.0, self.ctrl.shape[0] - 3)
        i = np.minimum(np.floor(u).astype(np.int64), self.ctrl.shape[0] - 4)
        f = (u - i)[..., None]
        f2, f3 = f * f, f * f * f
        b0 = (1 - f) ** 3 / 6
        b1 = (3 * f3 - 6 * f2 + 4) / 6
        b2 = (-3 * f3 + 3 * f2 + 3 * f + 1) / 6
        b3 = f3 / 6
        c = self.ctrl
        return b0 * c[i] + b1 * c[i + 1] + b2 * c[i + 2] + b3 * c[i + 3]

    @classmethod
    def constant(cls, value) -> "Spline":
        v = np.atleast_1d(np.asarray(value, np.float64))
        return cls(np.repeat(v[None], 4, 0), 1.0)

    @classmethod
    def linear(cls, p0, v_per_s, duration_s: float, dt_s: float = 0.05) -> "Spline":
        """Exactly ``p0 + v t`` for ``0 <= t <= duration_s`` (B-splines reproduce lines)."""
        p0 = np.atleast_1d(np.asarray(p0, np.float64))
        v = np.atleast_1d(np.asarray(v_per_s, np.float64))
        k = int(np.ceil(duration_s / dt_s)) + 4
        idx = np.arange(k, dtype=np.float64)[:, None] - 1.0
        return cls(p0[None] + idx * dt_s * v[None], dt_s)


# --------------------------------------------------------------------------- parameters


@dataclass
class Randomisation:
    """Ranges the sequences are drawn from (keyword arguments of :func:`render_sequence`).
    Pixel quantities are for 240x180 and scale with ``min(W/240, H/180)``."""

    size_px: Tuple[float, float] = (8.0, 60.0)        # prey nominal size (each side)
    aspect: Tuple[float, float] = (0.5, 2.0)          # prey w/h ratio
    max_speed_px_per_frame: float = 8.0               # prey speed cap (at the sequence fps)
    knot_dt_s: Tuple[float, float] = (0.025, 0.12)    # prey spline knot spacing: agility
    exit_prob: float = 0.08                           # per knot: allow a partial border exit
    scale_var: float = 0.35                           # prey log-scale excursion (looming)
    rotation_rad: float = 0.6                         # prey rotation excursion
    n_distractors: Tuple[int, int] = (0, 4)           # inclusive range
    distractor_speed: float = 0.5                     # fraction of the prey's speed cap
    camera_speed_px_per_frame: float = 2.0            # pan speed cap
    zoom_range: Tuple[float, float] = (0.8, 1.25)     # >1 zooms out
    gain_var: float = 0.25                            # log global gain excursion
    gradient_var: float = 0.3                         # illumination gradient strength
    flicker_amp: Tuple[float, float] = (0.0, 0.03)    # mains flicker relative amplitude
    min_contrast: float = 0.12                        # |mean(prey) - mean(background)|
    shapes: Tuple[str, ...] = SHAPE_KINDS
    textures: Tuple[str, ...] = TEXTURE_KINDS


@dataclass
class SceneParams:
    """Everything a sequence is made of; :func:`sample_params` draws one from a seed, tests
    can build one by hand.  Positions are image pixels; ``camera`` is ``(cx, cy, log zoom)``
    in ``background`` sheet pixels (None: sheet centre, zoom 1, or a constant background)."""

    width: int
    height: int
    fps: float
    n_frames: int
    prey: Sprite
    prey_path: Spline                       # (x, y) centre in image pixels
    prey_pose: Spline = None                # (log scale, angle rad); None: (0, 0)
    background: object = 0.0                # float level or (Hs, Ws) float32 sheet
    camera: Optional[Spline] = None         # (cx, cy, log zoom) in sheet pixels
    distractors: List[Tuple[Sprite, Spline, Spline]] = field(default_factory=list)
    lighting: Optional[Spline] = None       # (log gain, gradient strength); None: (0, 0)
    light_angle_rad: float = 0.0
    flicker_amp: float = 0.0
    flicker_hz: float = 100.0
    flicker_phase: float = 0.0
    seed: Optional[int] = None


def _scale_px(width, height):
    return min(width / 240.0, height / 180.0)


def _walk(rng, k, lo, hi, step_max, *, exit_lo=None, exit_hi=None, exit_prob=0.0,
          persistence=0.0):
    """Random walk of ``k`` points in the box ``[lo, hi]`` (reflecting walls) with steps up
    to ``step_max``.  ``persistence`` in [0, 1) keeps the step direction and length from one
    step to the next (sustained fast runs with turns); with ``exit_prob`` a point may go
    into the wider box ``[exit_lo, exit_hi]`` (a partial exit through the border)."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    d = lo.shape[0]
    p = np.empty((k, d))
    p[0] = rng.uniform(lo, hi)
    u = rng.normal(size=d)
    u /= np.linalg.norm(u) + 1e-12
    speed = step_max * rng.random() ** 0.5
    for i in range(1, k):
        if rng.random() < 0.15 or persistence <= 0:   # abrupt change of direction / speed
            u = rng.normal(size=d)
            speed = step_max * rng.random() ** 0.5
        else:                                          # smooth turn and speed change
            u = u + rng.normal(scale=1 - persistence, size=d)
            speed = float(np.clip(speed + rng.normal(scale=0.2 * step_max), 0.1 * step_max,
                                  step_max))
        u /= np.linalg.norm(u) + 1e-12
        step = speed * u
        q = p[i - 1] + step
        if exit_prob and rng.random() < exit_prob:
            a, b = np.asarray(exit_lo, float), np.asarray(exit_hi, float)
        else:
            a, b = lo, hi
        over = (q < a) | (q > b)
        q = np.where(q < a, 2 * a - q, q)   # reflect off the walls
        q = np.where(q > b, 2 * b - q, q)
        u = np.where(over, -u, u)
        p[i] = np.clip(q, a, b)
    return p


def sample_params(seed: int, n_frames: int, width: int = 240, height: int = 180,
                  fps: float = 240.0, **randomisation) -> SceneParams:
    """Draw a sequence's parameters from ``seed`` (deterministic).  See :class:`Randomisation`
    for the keyword arguments."""
    names = {f.name for f in dataclasses.fields(Randomisation)}
    bad = sorted(set(randomisation) - names)
    if bad:
        raise ValueError(f"unknown randomisation option(s) {bad}; valid: {sorted(names)}")
    r = Randomisation(**randomisation)
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    if width < 16 or height < 16:
        raise ValueError(f"frame size must be at least 16x16, got {width}x{height}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    # Independent streams per component, each with its one variable-length draw last, so a
    # longer sequence of the same seed starts exactly like a shorter one.
    ss = np.random.SeedSequence(seed)
    (r_bg, r_cam, r_zoom, r_prey, r_path, r_pose, r_dis, r_light) = (
        np.random.default_rng(c) for c in ss.spawn(8))
    s = _scale_px(width, height)
    duration = n_frames / fps

    # background sheet and camera
    zmin, zmax = r.zoom_range
    sheet_w = int(np.ceil(width * zmax * 2.2))
    sheet_h = int(np.ceil(height * zmax * 2.2))
    bg_mean = float(r_bg.uniform(0.2, 0.8))
    sheet = clutter_sheet(r_bg, sheet_h, sheet_w, mean=bg_mean, item_px=(6 * s, 70 * s),
                          textures=r.textures, shapes=r.shapes)
    cam_dt = float(r_cam.uniform(0.1, 0.3))
    kc = int(np.ceil(duration / cam_dt)) + 4
    mx, my = zmax * width / 2 + 2, zmax * height / 2 + 2
    cam_step = r.camera_speed_px_per_frame * fps * cam_dt * r_cam.uniform(0.0, 1.0)
    xy = _walk(r_cam, kc, (mx, my), (sheet_w - mx, sheet_h - my), cam_step)
    lz = _walk(r_zoom, kc, (np.log(zmin),), (np.log(zmax),), 0.3 * r_zoom.random() * cam_dt / 0.1)
    camera = Spline(np.concatenate([xy, lz], 1), cam_dt)

    # prey: looks, then motion
    size = r_prey.uniform(*r.size_px) * s
    aspect = np.exp(r_prey.uniform(np.log(r.aspect[0]), np.log(r.aspect[1])))
    pw, ph = size * np.sqrt(aspect), size / np.sqrt(aspect)
    lo_sz, hi_sz = r.size_px[0] * s, r.size_px[1] * s
    pw = float(np.clip(pw, lo_sz, min(hi_sz, width * 0.45)))
    ph = float(np.clip(ph, lo_sz, min(hi_sz, height * 0.45)))
    sign = 1.0 if r_prey.random() < 0.5 else -1.0
    if bg_mean + sign * r.min_contrast > 0.95 or bg_mean + sign * r.min_contrast < 0.05:
        sign = -sign
    lo_m = bg_mean + sign * r.min_contrast
    prey_mean = float(np.clip(lo_m + sign * r_prey.uniform(0.0, 0.4), 0.05, 0.95))
    prey = Sprite.random(r_prey, pw, ph, shapes=r.shapes, textures=r.textures,
                         mean=prey_mean, k=1.5)
    knot = float(r_path.uniform(*r.knot_dt_s))
    kp = int(np.ceil(duration / knot)) + 4
    vmax = r.max_speed_px_per_frame * s * fps * r_path.uniform(0.5, 1.0)
    half = np.array([pw, ph]) / 2
    lo = half + 2
    hi = np.array([width - 1, height - 1]) - half - 2
    mid = np.array([width - 1, height - 1]) / 2
    lo, hi = np.minimum(lo, mid), np.maximum(hi, mid)
    path = _walk(r_path, kp, lo, hi, vmax * knot, exit_lo=-0.4 * half,
                 exit_hi=np.array([width - 1, height - 1]) + 0.4 * half,
                 exit_prob=r.exit_prob, persistence=0.6)
    rot0 = r_pose.uniform(-r.rotation_rad, r.rotation_rad)
    steps = np.cumsum(r_pose.normal(size=(kp, 2)) * (0.08, 0.15), axis=0)
    pose_ctrl = np.stack([np.clip(steps[:, 0], -r.scale_var, r.scale_var),
                          np.clip(steps[:, 1], -r.rotation_rad, r.rotation_rad) + rot0], 1)

    # distractors (drawn behind the prey), each from its own streams
    distractors = []
    n_dis = int(r_dis.integers(r.n_distractors[0], r.n_distractors[1] + 1))
    for child in ss.spawn(n_dis):
        r_look, r_dpath, r_dpose = (np.random.default_rng(c) for c in child.spawn(3))
        dsz = r_look.uniform(*r.size_px) * s * np.exp(r_look.uniform(-0.3, 0.3, 2))
        spr = Sprite.random(r_look, *dsz, shapes=r.shapes, textures=r.textures, k=1.5)
        ddt = float(r_dpath.uniform(*r.knot_dt_s)) * 2
        kd = int(np.ceil(duration / ddt)) + 4
        dpath = _walk(r_dpath, kd, (0, 0), (width - 1, height - 1),
                      r.distractor_speed * vmax * ddt)
        dpose = np.stack([np.zeros(kd), np.cumsum(r_dpose.normal(0, 0.2, kd))], 1)
        distractors.append((spr, Spline(dpath, ddt), Spline(dpose, ddt)))

    # lighting
    light_angle = float(r_light.uniform(0, 2 * np.pi))
    flicker_amp = float(r_light.uniform(*r.flicker_amp))
    flicker_hz = float(r_light.choice([100.0, 120.0]))
    flicker_phase = float(r_light.uniform(0, 2 * np.pi))
    l_dt = float(r_light.uniform(0.2, 0.6))
    kl = int(np.ceil(duration / l_dt)) + 4
    lighting = Spline(r_light.uniform(-1.0, 1.0, size=(kl, 2)) * (r.gain_var, r.gradient_var),
                      l_dt)

    return SceneParams(
        width=width, height=height, fps=float(fps), n_frames=int(n_frames), prey=prey,
        prey_path=Spline(path, knot), prey_pose=Spline(pose_ctrl, knot), background=sheet,
        camera=camera, distractors=distractors, lighting=lighting,
        light_angle_rad=light_angle, flicker_amp=flicker_amp, flicker_hz=flicker_hz,
        flicker_phase=flicker_phase, seed=seed)


# --------------------------------------------------------------------------- source


class SequenceSource(FrameSource):
    """A rendered sequence: ``n_frames`` frames at ``fps``; frame ``k`` is at
    ``round(k * 1e6 / fps)`` microseconds and carries the exact prey box."""

    def __init__(self, params: SceneParams):
        p = params
        if p.n_frames < 1:
            raise ValueError(f"n_frames must be >= 1, got {p.n_frames}")
        self.params = p
        self.fps = float(p.fps)
        self.width = int(p.width)
        self.height = int(p.height)
        self.n_frames = int(p.n_frames)
        self._pose = p.prey_pose or Spline.constant([0.0, 0.0])
        H, W = self.height, self.width
        xs = np.arange(W, dtype=np.float32)[None, :] - (W - 1) / 2
        ys = np.arange(H, dtype=np.float32)[:, None] - (H - 1) / 2
        ca, sa = np.cos(p.light_angle_rad), np.sin(p.light_angle_rad)
        self._gx = (xs * ca / W).astype(np.float32)   # illumination ramp, split in x and y
        self._gy = (ys * sa / W).astype(np.float32)
        bg = p.background
        if np.isscalar(bg) or np.ndim(bg) == 0:
            self._bg_const = np.full((H, W), float(bg), np.float32)
            self._sheet = None
        else:
            self._sheet = np.ascontiguousarray(bg, np.float32)
            self._bg_const = None

    def __len__(self) -> int:
        return self.n_frames

    @property
    def duration_us(self) -> int:
        return self.frame_t_us(self.n_frames - 1)

    def frame_t_us(self, k):
        """Time stamp(s) of frame(s) ``k`` in microseconds."""
        return np.rint(np.asarray(k, np.float64) * 1e6 / self.fps).astype(np.int64)

    # -- ground truth ------------------------------------------------------------------

    def _prey_state(self, t_s):
        c = self.params.prey_path(t_s)
        pose = self._pose(t_s)
        scale = np.exp(pose[..., 0])
        if self.params.camera is not None and self._sheet is not None:
            scale = scale / np.exp(self.params.camera(t_s)[..., 2])
        return c, scale, pose[..., 1]

    def box_at(self, t_us, clip: bool = True) -> np.ndarray:
        """Exact prey box(es) at ``t_us`` (scalar -> (4,), array -> (N, 4)) float32.
        ``clip``: clip to the image (NaN when entirely outside); else the full extent."""
        t_s = np.asarray(t_us, np.float64) * 1e-6
        c, scale, ang = self._prey_state(t_s)
        b = self.params.prey.bbox(c, scale, ang)
        if clip:
            x0 = np.clip(b[..., 0], 0, self.width - 1)
            y0 = np.clip(b[..., 1], 0, self.height - 1)
            x1 = np.clip(b[..., 0] + b[..., 2], 0, self.width - 1)
            y1 = np.clip(b[..., 1] + b[..., 3], 0, self.height - 1)
            b = np.stack([x0, y0, x1 - x0, y1 - y0], -1)
            gone = (b[..., 2] <= 0) | (b[..., 3] <= 0)
            b = np.where(gone[..., None], np.nan, b)
        return b.astype(np.float32)

    def gt_track(self):
        t = self.frame_t_us(np.arange(self.n_frames))
        return t, self.box_at(t)

    # -- rendering ---------------------------------------------------------------------

    def _background(self, t_s):
        if self._sheet is None:
            return self._bg_const.copy()
        W, H = self.width, self.height
        cam = self.params.camera(t_s) if self.params.camera is not None else np.array(
            [(self._sheet.shape[1] - 1) / 2, (self._sheet.shape[0] - 1) / 2, 0.0])
        z = float(np.exp(cam[2]))
        M = np.array([[z, 0, cam[0] - z * (W - 1) / 2], [0, z, cam[1] - z * (H - 1) / 2]])
        return cv2.warpAffine(self._sheet, M, (W, H), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REFLECT)

    def render_at(self, t_us, *, prey_only: bool = False) -> np.ndarray:
        """The frame at any time ``t_us`` (float32 HxW in [0, 1]).  ``prey_only``: the prey's
        coverage (alpha) alone on black, without background, distractors or lighting."""
        t_s = float(t_us) * 1e-6
        p = self.params
        c, scale, ang = self._prey_state(t_s)
        if prey_only:
            alpha = np.zeros((self.height, self.width), np.float32)
            p.prey.draw(np.zeros_like(alpha), c, scale, ang, alpha_out=alpha)
            return alpha
        img = self._background(t_s)
        for spr, path, pose in p.distractors:
            dp = pose(t_s)
            spr.draw(img, path(t_s), np.exp(dp[0]), dp[1])
        p.prey.draw(img, c, scale, ang)
        lg, grad = p.lighting(t_s) if p.lighting is not None else (0.0, 0.0)
        gain = np.exp(lg) * (1.0 + p.flicker_amp * np.sin(2 * np.pi * p.flicker_hz * t_s
                                                          + p.flicker_phase))
        if gain != 1.0 or grad != 0.0:
            g = np.float32(grad * gain)
            illum = (self._gx * g) + (self._gy * g + np.float32(gain))
            img *= illum
        np.clip(img, 0.0, 1.0, out=img)
        return img

    def frame(self, k: int) -> Frame:
        if not 0 <= k < self.n_frames:
            raise IndexError(f"frame {k} out of range 0..{self.n_frames - 1}")
        t = int(self.frame_t_us(k))
        return Frame(t_us=t, image=self.render_at(t), box=self.box_at(t), index=int(k))

    def __iter__(self) -> Iterator[Frame]:
        for k in range(self.n_frames):
            yield self.frame(k)


def render_sequence(seed: int, n_frames: int, width: int = 240, height: int = 180,
                    fps: float = 240.0, **randomisation) -> SequenceSource:
    """A domain-randomised tracking sequence, deterministic in ``seed`` (train on seeds
    ``>= TRAIN_SEED_MIN``; ``TEST_SEEDS`` are held out).  ``randomisation`` overrides
    fields of :class:`Randomisation`, e.g. ``max_speed_px_per_frame=8, n_distractors=(0, 0)``."""
    return SequenceSource(sample_params(seed, n_frames, width, height, fps, **randomisation))
