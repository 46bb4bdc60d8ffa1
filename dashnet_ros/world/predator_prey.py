"""A procedural predator-prey arena in the spirit of PRED18 (paper refs [24, 25]).

Two robots on a square floor ``[0, arena_m]^2`` enclosed by textured walls, inside a
cluttered room (a panorama at infinity).  The predator is a unicycle driven by
``set_cmd(v_mps, omega_radps)`` and carries a level pinhole camera (the DAVIS); the
prey is a textured upright cylinder that wanders and flees from the predator when it
comes close, at a lower top speed.  :meth:`PredatorPreyWorld.render` draws the
predator's view by ray casting per image column (vectorised, one ``cv2.remap``) and
:meth:`PredatorPreyWorld.gt_box` gives the prey's exact image box.

World frame: x right, y up (counter-clockwise headings, radians).  Camera frame: depth
along the heading, image column ``u`` grows to the predator's right.  Image boxes use
OpenCV pixel coordinates (pixel centres at integers), clipped to ``[0, W-1] x [0, H-1]``.
"""
from __future__ import annotations

import copy
import math
from typing import Callable, Iterator, Optional

import cv2
import numpy as np

from dashnet_ros.davis.frames import Frame, FrameSource
from dashnet_ros.world.textures import clutter_sheet, random_texture, value_noise

CmdFn = Callable[["PredatorPreyWorld", float], tuple]


def _wrap(a):
    return (a + np.pi) % (2 * np.pi) - np.pi


class PredatorPreyWorld:
    """The arena, both robots and the predator's camera.  Deterministic per ``seed``."""

    # robot geometry (metres)
    CAM_HEIGHT_M = 0.10
    PREY_RADIUS_M = 0.10
    PREY_HEIGHT_M = 0.25
    PRED_RADIUS_M = 0.12
    WALL_HEIGHT_M = 0.40
    NEAR_M = 0.02

    def __init__(self, width: int = 240, height: int = 180, fps: float = 240.0, seed: int = 0,
                 hfov_deg: float = 60.0, arena_m: float = 3.0, *,
                 pred_v_max_mps: float = 1.0, pred_omega_max_radps: float = 4.0,
                 prey_v_max_mps: float = 0.6, prey_wander_mps: float = 0.25,
                 prey_omega_max_radps: float = 3.0, flee_radius_m: float = 1.2,
                 flicker_amp: float = 0.01, flicker_hz: float = 100.0):
        if width < 8 or height < 8:
            raise ValueError(f"image size must be at least 8x8, got {width}x{height}")
        if not 1.0 <= hfov_deg <= 170.0:
            raise ValueError(f"hfov_deg must be in [1, 170], got {hfov_deg}")
        if not arena_m > 4 * max(self.PREY_RADIUS_M, self.PRED_RADIUS_M):
            raise ValueError(f"arena_m={arena_m} is too small for the robots (need > 0.5 m)")
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        if not prey_v_max_mps < pred_v_max_mps:
            raise ValueError("prey_v_max_mps must be lower than pred_v_max_mps "
                             f"({prey_v_max_mps} >= {pred_v_max_mps})")
        self.width, self.height, self.fps = int(width), int(height), float(fps)
        self.seed = seed
        self.arena_m = float(arena_m)
        self.hfov_deg = float(hfov_deg)
        self.pred_v_max_mps, self.pred_omega_max_radps = pred_v_max_mps, pred_omega_max_radps
        self.prey_v_max_mps, self.prey_wander_mps = prey_v_max_mps, prey_wander_mps
        self.prey_omega_max_radps, self.flee_radius_m = prey_omega_max_radps, flee_radius_m
        self.flicker_amp, self.flicker_hz = flicker_amp, flicker_hz
        self.rng = np.random.default_rng(seed)
        rng = self.rng

        W, H = self.width, self.height
        self.f_px = (W / 2) / math.tan(math.radians(hfov_deg) / 2)
        self.cx, self.cy = (W - 1) / 2, (H - 1) / 2
        self._a = ((np.arange(W) - self.cx) / self.f_px)            # lateral slope per column
        self._v = np.arange(H, dtype=np.float64)[:, None]
        self._build_textures(rng)

        L = self.arena_m
        m = 0.3
        self.pred = np.array([rng.uniform(m, L - m), rng.uniform(m, L - m),
                              rng.uniform(-np.pi, np.pi)])
        for _ in range(100):
            q = np.array([rng.uniform(m, L - m), rng.uniform(m, L - m)])
            if np.hypot(*(q - self.pred[:2])) > 1.0:
                break
        self.prey = np.array([q[0], q[1], rng.uniform(-np.pi, np.pi)])
        self.prey_speed = 0.0
        self.prey_wander_w = 0.0
        self.cmd = (0.0, 0.0)
        self.t_us = 0
        self.light_az = float(rng.uniform(-np.pi, np.pi))
        self.flicker_phase = float(rng.uniform(0, 2 * np.pi))

    # ------------------------------------------------------------------ textures

    def _build_textures(self, rng):
        """One atlas holding the room panorama, the wall band and the floor."""
        L = self.arena_m
        self.wall_ppm = 60.0
        self.floor_ppm = 60.0
        pad = 4
        # panorama at infinity: columns = azimuth, rows = elevation slope (tan)
        vfov_slope = (self.height / 2) / self.f_px
        self.pano_w = int(round(2 * np.pi * self.f_px))     # about 1 texel per pixel
        self.pano_rows_per_slope = float(self.f_px)
        pano_h = int(np.ceil(vfov_slope * self.pano_rows_per_slope)) + 2 * pad + 2
        pano = clutter_sheet(rng, pano_h, self.pano_w, n_items=int(rng.integers(40, 120)),
                             item_px=(8.0, 80.0))
        pano = cv2.GaussianBlur(pano, (0, 0), 0.7)
        # wall band: columns = perimeter coordinate, rows = height from top to floor
        self.wall_w = int(round(4 * L * self.wall_ppm))
        self.wall_h = int(round(self.WALL_HEIGHT_M * self.wall_ppm))
        wall = clutter_sheet(rng, self.wall_h, self.wall_w, n_items=int(rng.integers(10, 40)),
                             item_px=(5.0, 30.0))
        # floor: low-frequency (far floor is faded, see render) + tiles
        fn = int(round(L * self.floor_ppm))
        floor = 0.6 * value_noise(rng, fn, fn, cell_px=20.0, octaves=3)
        floor += 0.4 * random_texture(rng, fn, fn, kinds=("checker", "noise", "blobs"),
                                      mean=0.5, contrast=0.6)
        floor = cv2.GaussianBlur(floor.astype(np.float32), (0, 0), 1.0)
        floor = np.clip(0.15 + 0.7 * floor, 0, 1)
        self.floor_mean = float(floor.mean())

        aw = max(self.pano_w, self.wall_w, fn) + 2 * pad
        rows = []
        # wrap the periodic sheets so bilinear reads past the seam continue
        def put(sheet, wrap):
            h, w = sheet.shape
            block = np.zeros((h + 2 * pad, aw), np.float32)
            block[pad:pad + h, :w] = sheet
            if wrap:
                block[pad:pad + h, w:w + pad] = sheet[:, :pad]
            else:
                block[pad:pad + h, w:w + pad] = sheet[:, -1:]
            block[:pad] = block[pad]
            block[pad + h:] = block[pad + h - 1]
            rows.append(block)
            return sum(r.shape[0] for r in rows) - h - pad   # first sheet row in the atlas
        self.pano_row0 = put(pano, True)
        self.pano_horizon = self.pano_row0 + pano.shape[0] - pad - 2  # slope 0 row
        self.wall_row0 = put(wall, True)
        self.floor_row0 = put(floor, False)
        self.floor_n = fn
        self.atlas = np.ascontiguousarray(np.vstack(rows))

        # prey skin: columns = angle around the cylinder, rows = height (top first)
        self.prey_tex_w, self.prey_tex_h = 128, 48
        skin = random_texture(rng, self.prey_tex_h, self.prey_tex_w,
                              kinds=("stripes", "checker", "noise", "blobs"),
                              mean=float(rng.choice([0.15, 0.85])), contrast=0.6)
        self.prey_tex = np.ascontiguousarray(np.hstack([skin, skin[:, :2]]))

    # ------------------------------------------------------------------ kinematics

    def set_cmd(self, v_mps: float, omega_radps: float) -> None:
        """Predator velocity command (clamped to the robot's limits)."""
        v = float(np.clip(v_mps, -self.pred_v_max_mps, self.pred_v_max_mps))
        w = float(np.clip(omega_radps, -self.pred_omega_max_radps, self.pred_omega_max_radps))
        if not (math.isfinite(v) and math.isfinite(w)):
            raise ValueError(f"velocity command must be finite, got ({v_mps}, {omega_radps})")
        self.cmd = (v, w)

    @staticmethod
    def _unicycle(pose, v, w, dt):
        x, y, th = pose
        if abs(w) < 1e-9:
            return np.array([x + v * math.cos(th) * dt, y + v * math.sin(th) * dt, th])
        th1 = th + w * dt
        return np.array([x + v / w * (math.sin(th1) - math.sin(th)),
                         y - v / w * (math.cos(th1) - math.cos(th)), _wrap(th1)])

    def _clamp(self, pose, r):
        pose[0] = min(max(pose[0], r), self.arena_m - r)
        pose[1] = min(max(pose[1], r), self.arena_m - r)
        return pose

    def _prey_control(self, dt):
        """Flee (run away, steering off walls) within ``flee_radius_m``, else wander."""
        L, r = self.arena_m, self.PREY_RADIUS_M
        d = self.prey[:2] - self.pred[:2]
        dist = math.hypot(*d)
        x, y = self.prey[:2]
        margin = 0.5
        rep = np.array([max(0.0, margin - (x - r)) - max(0.0, margin - (L - r - x)),
                        max(0.0, margin - (y - r)) - max(0.0, margin - (L - r - y))]) / margin
        if dist < self.flee_radius_m:
            away = d / max(dist, 1e-6)
            want = away + 1.5 * rep
            if np.hypot(*want) < 0.3:       # cornered: slide along the wall
                want = np.array([-away[1], away[0]]) if rng_sign(self.rng) > 0 else \
                    np.array([away[1], -away[0]])
            target = math.atan2(want[1], want[0])
            speed = self.prey_v_max_mps
        else:
            # wandering: the turn rate is an Ornstein-Uhlenbeck process (tau 0.5 s, ~1 rad/s)
            self.prey_wander_w += (-self.prey_wander_w * dt / 0.5
                                   + 2.0 * math.sqrt(dt) * self.rng.normal())
            target = self.prey[2] + self.prey_wander_w / 6.0
            if rep.any():
                h = np.array([math.cos(self.prey[2]), math.sin(self.prey[2])]) + 2.0 * rep
                target = math.atan2(h[1], h[0])
            speed = self.prey_wander_mps
        err = _wrap(target - self.prey[2])
        w = float(np.clip(6.0 * err, -self.prey_omega_max_radps, self.prey_omega_max_radps))
        # accelerate / decelerate at a bounded rate
        acc = 3.0
        self.prey_speed += float(np.clip(speed - self.prey_speed, -acc * dt, acc * dt))
        return self.prey_speed * max(0.0, math.cos(err)) ** 0.5, w

    def step(self, dt_s: float) -> None:
        """Advance the world by ``dt_s`` seconds (internally in steps of <= 5 ms)."""
        if not dt_s >= 0:
            raise ValueError(f"dt_s must be >= 0, got {dt_s}")
        n = max(1, int(math.ceil(dt_s / 0.005)))
        h = dt_s / n
        for _ in range(n):
            if h <= 0:
                break
            pv, pw = self._prey_control(h)
            self.pred = self._clamp(self._unicycle(self.pred, *self.cmd, h), self.PRED_RADIUS_M)
            self.prey = self._clamp(self._unicycle(self.prey, pv, pw, h), self.PREY_RADIUS_M)
        self.t_us += int(round(dt_s * 1e6))

    def distance_m(self) -> float:
        """Centre-to-centre distance between predator and prey."""
        return float(math.hypot(*(self.prey[:2] - self.pred[:2])))

    def caught(self, threshold_m: float = 0.3) -> bool:
        return self.distance_m() <= threshold_m

    # ------------------------------------------------------------------ camera

    def _prey_in_camera(self):
        th = self.pred[2]
        fwd = np.array([math.cos(th), math.sin(th)])
        right = np.array([math.sin(th), -math.cos(th)])
        d = self.prey[:2] - self.pred[:2]
        return float(d @ right), float(d @ fwd), fwd, right

    def _prey_extent(self):
        """Unclipped ``(uL, uR, vT, vB)`` of the prey's silhouette, or None if behind."""
        xr, zc, _, _ = self._prey_in_camera()
        r, f = self.PREY_RADIUS_M, self.f_px
        dist = math.hypot(xr, zc)
        if zc - r <= self.NEAR_M or dist <= r:
            return None
        beta, alpha = math.atan2(xr, zc), math.asin(r / dist)
        if abs(beta) + alpha >= math.pi / 2 - 1e-3:
            return None
        uL = self.cx + f * math.tan(beta - alpha)
        uR = self.cx + f * math.tan(beta + alpha)
        zmin = zc - r   # the nearest rim point (always on the visible side)
        vT = self.cy - f * (self.PREY_HEIGHT_M - self.CAM_HEIGHT_M) / zmin
        vB = self.cy + f * self.CAM_HEIGHT_M / zmin
        return uL, uR, vT, vB

    def gt_box(self) -> Optional[np.ndarray]:
        """Exact ``(x, y, w, h)`` float32 of the prey in the predator's image, or None."""
        e = self._prey_extent()
        if e is None:
            return None
        uL, uR, vT, vB = e
        x0, x1 = max(uL, 0.0), min(uR, self.width - 1.0)
        y0, y1 = max(vT, 0.0), min(vB, self.height - 1.0)
        if x1 <= x0 or y1 <= y0:
            return None
        return np.array([x0, y0, x1 - x0, y1 - y0], np.float32)

    def render(self, *, prey_only: bool = False) -> np.ndarray:
        """The predator camera's view, float32 (H, W) in [0, 1].  ``prey_only``: the prey's
        coverage (alpha) on black."""
        H, W = self.height, self.width
        if prey_only:
            alpha = np.zeros((H, W), np.float32)
            self._draw_prey(np.zeros((H, W), np.float32), alpha)
            return alpha
        f, cy, L = self.f_px, self.cy, self.arena_m
        px, py, th = self.pred
        c, s = math.cos(th), math.sin(th)
        a = self._a
        dx, dy = c + a * s, s - a * c           # ray direction per column (unit depth)
        with np.errstate(divide="ignore", invalid="ignore"):
            sx = np.where(dx > 1e-12, (L - px) / dx, np.where(dx < -1e-12, -px / dx, np.inf))
            sy = np.where(dy > 1e-12, (L - py) / dy, np.where(dy < -1e-12, -py / dy, np.inf))
        hit = np.minimum(sx, sy)
        hit = np.maximum(hit, 1e-3)
        hx, hy = px + hit * dx, py + hit * dy
        per = np.where(sx < sy, np.where(dx > 0, L + hy, 3 * L + (L - hy)),
                       np.where(dy > 0, 2 * L + (L - hx), hx))
        wall_x = np.mod(per * self.wall_ppm, self.wall_w)
        vt = cy - f * (self.WALL_HEIGHT_M - self.CAM_HEIGHT_M) / hit
        vb = cy + f * self.CAM_HEIGHT_M / hit
        v = self._v
        # wall rows
        k = (self.wall_h - 1) / (vb - vt)
        map_y = (v - vt) * k + self.wall_row0
        map_x = np.broadcast_to(wall_x, (H, W))
        # panorama above the walls
        above = v < vt
        pano_x = np.mod((th - np.arctan(a)) / (2 * np.pi) * self.pano_w, self.pano_w)
        pano_y = self.pano_horizon - (cy - v) * (self.pano_rows_per_slope / f
                                                 / np.sqrt(1 + a * a))
        map_x = np.where(above, pano_x, map_x)
        map_y = np.where(above, pano_y, map_y)
        # floor below the walls
        r0 = int(math.floor(cy)) + 1
        vf = v[r0:]
        depth = f * self.CAM_HEIGHT_M / (vf - cy)                    # (Hf, 1)
        below = vf > vb
        fx = (px * self.floor_ppm) + depth * (dx * self.floor_ppm)
        fy = self.floor_row0 + (L - py) * self.floor_ppm - depth * (dy * self.floor_ppm)
        map_x[r0:] = np.where(below, np.clip(fx, 0, self.floor_n - 1), map_x[r0:])
        map_y[r0:] = np.where(below, fy, map_y[r0:])
        img = cv2.remap(self.atlas, map_x.astype(np.float32), map_y.astype(np.float32),
                        cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        # fade the far floor to its mean (no mip-maps: keeps far texture from shimmering)
        fade = np.exp(-depth / 2.0).astype(np.float32)
        sub = img[r0:]
        sub[...] = np.where(below, self.floor_mean + (sub - self.floor_mean) * fade, sub)
        self._draw_prey(img, None)
        gain = 1.0 + self.flicker_amp * math.sin(2 * math.pi * self.flicker_hz * self.t_us * 1e-6
                                                 + self.flicker_phase)
        if gain != 1.0:
            img *= np.float32(gain)
        np.clip(img, 0.0, 1.0, out=img)
        return img

    def _draw_prey(self, img, alpha_out):
        e = self._prey_extent()
        if e is None:
            return
        uL, uR, vT, vB = e
        H, W = img.shape
        u0, u1 = max(int(math.floor(uL)), 0), min(int(math.ceil(uR)) + 1, W)
        v0, v1 = max(int(math.floor(vT)), 0), min(int(math.ceil(vB)) + 1, H)
        if u1 <= u0 or v1 <= v0:
            return
        xr, zc, fwd, right = self._prey_in_camera()
        r, f = self.PREY_RADIUS_M, self.f_px
        u = np.arange(u0, u1, dtype=np.float64)
        a = (u - self.cx) / f
        A = 1 + a * a
        B = a * xr + zc
        C = xr * xr + zc * zc - r * r
        s = (B - np.sqrt(np.maximum(B * B - A * C, 0.0))) / A       # front hit depth
        lat, dep = s * a - xr, s - zc                                # hit - centre, camera
        wx = lat * right[0] + dep * fwd[0]
        wy = lat * right[1] + dep * fwd[1]
        phi = np.arctan2(wy, wx)
        tex_x = np.mod((phi - self.prey[2]) / (2 * np.pi), 1.0) * self.prey_tex_w
        shade = 0.6 + 0.4 * np.cos(phi - self.light_az)
        vt = self.cy - f * (self.PREY_HEIGHT_M - self.CAM_HEIGHT_M) / s
        vb = self.cy + f * self.CAM_HEIGHT_M / s
        v = np.arange(v0, v1, dtype=np.float64)[:, None]
        map_y = (v - vt) * ((self.prey_tex_h - 1) / (vb - vt))
        map_x = np.broadcast_to(tex_x, map_y.shape)
        tex = cv2.remap(self.prey_tex, map_x.astype(np.float32), map_y.astype(np.float32),
                        cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        cov_u = np.clip(np.minimum(u - uL + 0.5, uR - u + 0.5), 0, 1)
        cov = np.clip(np.minimum(v - vt + 0.5, vb - v + 0.5), 0, 1) * cov_u
        cov = cov.astype(np.float32)
        roi = img[v0:v1, u0:u1]
        roi += cov * (tex * shade.astype(np.float32) - roi)
        if alpha_out is not None:
            alpha_out[v0:v1, u0:u1] = np.maximum(alpha_out[v0:v1, u0:u1], cov)

    # ------------------------------------------------------------------ as a source

    def as_source(self, duration_s: Optional[float] = None,
                  cmd_fn: Optional[CmdFn] = None) -> "WorldSource":
        """This world as a :class:`FrameSource` at ``fps`` (see :class:`WorldSource`)."""
        return WorldSource(self, duration_s, cmd_fn)


def rng_sign(rng) -> float:
    return 1.0 if rng.random() < 0.5 else -1.0


def pursuit_controller(k_omega: float = 4.0, search_omega_radps: float = 2.0,
                       v_frac: float = 1.0, standoff_m: float = 0.0) -> CmdFn:
    """A proportional pursuit ``cmd_fn``: turn toward the prey's ground-truth box bearing
    and drive at ``v_frac`` of top speed when it is ahead; spin to search when unseen.
    ``standoff_m > 0`` slows down to keep that distance (an endless chase for demos)."""

    def cmd(world: PredatorPreyWorld, t_s: float):
        b = world.gt_box()
        if b is None:
            return 0.0, search_omega_radps
        bearing = math.atan(((b[0] + b[2] / 2) - world.cx) / world.f_px)
        v = v_frac * world.pred_v_max_mps * max(0.0, math.cos(bearing)) ** 4
        if standoff_m > 0:
            v *= min(max((world.distance_m() - standoff_m) / 0.3, 0.0), 1.0)
        return v, -k_omega * bearing

    return cmd


class WorldSource(FrameSource):
    """Frames of the predator's camera at the world's fps; each frame carries ``gt_box``.

    Iterating steps the (live) world by ``1/fps`` between frames: frame 0 is the current
    state at t=0 of the source.  Before each step ``cmd_fn(world, t_s)`` (if given) sets
    the predator's command; without it the command set by ``world.set_cmd`` is kept (the
    closed loop: a steering node calls ``set_cmd``).  ``duration_s=None``: endless."""

    def __init__(self, world: PredatorPreyWorld, duration_s: Optional[float] = None,
                 cmd_fn: Optional[CmdFn] = None):
        if duration_s is not None and not duration_s > 0:
            raise ValueError(f"duration_s must be > 0 or None, got {duration_s}")
        self.world = world
        self.fps, self.width, self.height = world.fps, world.width, world.height
        self.duration_s = duration_s
        self.cmd_fn = cmd_fn
        self._start = copy.deepcopy(world)

    def __len__(self) -> int:
        if self.duration_s is None:
            raise TypeError("endless WorldSource (duration_s=None) has no length")
        return int(round(self.duration_s * self.fps))

    def _run(self, world, render: bool):
        n = None if self.duration_s is None else len(self)
        k = 0
        t0 = world.t_us
        while n is None or k < n:
            t_us = int(round(k * 1e6 / self.fps))
            if k:
                world.step(t_us * 1e-6 - (world.t_us - t0) * 1e-6)
            box = world.gt_box()
            if box is None:
                box = np.full(4, np.nan, np.float32)
            yield Frame(t_us=t_us, image=world.render() if render else None, box=box, index=k)
            if self.cmd_fn is not None:
                world.set_cmd(*self.cmd_fn(world, t_us * 1e-6))
            k += 1

    def __iter__(self) -> Iterator[Frame]:
        return self._run(self.world, render=True)

    def gt_track(self):
        """Ground truth from a copy of the world as it was when the source was made, run
        with the same ``cmd_fn`` (exact when commands depend only on the world state).
        None for endless sources and without ``cmd_fn`` (commands come from outside, e.g. a
        closed loop: use the boxes the frames carry)."""
        if self.duration_s is None or self.cmd_fn is None:
            return None
        fr = list(self._run(copy.deepcopy(self._start), render=False))
        return (np.array([f.t_us for f in fr], np.int64),
                np.stack([f.box for f in fr]).astype(np.float32))
