"""Procedural textures, shapes and textured sprites for the rendered worlds.

Everything is vectorised numpy / OpenCV and driven by an explicit ``numpy.random.Generator``
so a world is a pure function of its seed.  Images are float32 luminance in [0, 1].

Pixel convention (OpenCV's): pixel ``(col i, row j)`` has its centre at ``(i, j)``; a box
``(x, y, w, h)`` spans ``[x, x + w] x [y, y + h]`` in these coordinates.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

TEXTURE_KINDS = ("noise", "stripes", "checker", "gradient", "blobs")
SHAPE_KINDS = ("ellipse", "rectangle", "polygon", "blob")


# --------------------------------------------------------------------------- textures


def _unit(a: np.ndarray) -> np.ndarray:
    """Rescale to [0, 1] (a constant array becomes 0.5)."""
    lo, hi = float(a.min()), float(a.max())
    if hi - lo < 1e-12:
        return np.full(a.shape, 0.5, np.float32)
    return ((a - lo) / (hi - lo)).astype(np.float32)


def value_noise(rng: np.random.Generator, h: int, w: int, *, cell_px: float = None,
                octaves: int = 4) -> np.ndarray:
    """Multi-octave value noise (random grids upsampled bicubically), in [0, 1]."""
    if cell_px is None:
        cell_px = float(rng.uniform(4.0, max(6.0, min(h, w) / 2.0)))
    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    for _ in range(octaves):
        gh = max(2, int(np.ceil(h / cell_px)) + 1)
        gw = max(2, int(np.ceil(w / cell_px)) + 1)
        grid = rng.random((gh, gw), dtype=np.float32)
        out += amp * cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= 0.5
        cell_px = max(1.5, cell_px / 2.0)
    return _unit(out)


def _rotated_coords(rng, h, w):
    ang = rng.uniform(0, np.pi)
    xs = np.arange(w, dtype=np.float32)[None, :]
    ys = np.arange(h, dtype=np.float32)[:, None]
    return xs * np.cos(ang) + ys * np.sin(ang), -xs * np.sin(ang) + ys * np.cos(ang)


def stripes(rng, h, w) -> np.ndarray:
    """Oriented stripes, hard or soft edged, in [0, 1]."""
    u, _ = _rotated_coords(rng, h, w)
    period = rng.uniform(3.0, max(4.0, min(h, w) / 2.0))
    s = np.sin(2 * np.pi * u / period + rng.uniform(0, 2 * np.pi))
    if rng.random() < 0.5:
        s = np.tanh(4.0 * s)
    return _unit(s)


def checker(rng, h, w) -> np.ndarray:
    """Rotated checkerboard, in {0, 1} (before warping)."""
    u, v = _rotated_coords(rng, h, w)
    p = rng.uniform(3.0, max(4.0, min(h, w) / 2.5))
    return ((np.floor(u / p) + np.floor(v / p)) % 2).astype(np.float32)


def gradient(rng, h, w) -> np.ndarray:
    """Linear or radial gradient, in [0, 1]."""
    if rng.random() < 0.5:
        u, _ = _rotated_coords(rng, h, w)
        return _unit(np.broadcast_to(u, (h, w)).astype(np.float32))
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    xs = np.arange(w, dtype=np.float32)[None, :] - cx
    ys = np.arange(h, dtype=np.float32)[:, None] - cy
    return _unit(np.sqrt(xs * xs + ys * ys))


def blobs(rng, h, w) -> np.ndarray:
    """Random soft discs (spots), in [0, 1]."""
    img = np.zeros((h, w), np.float32)
    n = int(rng.integers(3, 12))
    for _ in range(n):
        c = (int(rng.uniform(0, w) * 16), int(rng.uniform(0, h) * 16))
        r = int(rng.uniform(1.5, max(2.0, min(h, w) / 3.0)) * 16)
        cv2.circle(img, c, r, float(rng.uniform(0.2, 1.0)), -1, cv2.LINE_AA, shift=4)
    return _unit(cv2.GaussianBlur(img, (0, 0), 0.8))


_GENERATORS = {"noise": value_noise, "stripes": stripes, "checker": checker,
               "gradient": gradient, "blobs": blobs}


def random_texture(rng: np.random.Generator, h: int, w: int, *, kinds=TEXTURE_KINDS,
                   mean: float = None, contrast: float = None) -> np.ndarray:
    """A random procedural texture ``(h, w)`` float32: one kind, optionally mixed with noise,
    mapped to ``mean +- contrast / 2`` and clipped to [0, 1]."""
    if h < 1 or w < 1:
        raise ValueError(f"texture size must be positive, got {h}x{w}")
    for k in kinds:
        if k not in _GENERATORS:
            raise ValueError(f"unknown texture kind {k!r}; choose from {sorted(_GENERATORS)}")
    kind = kinds[int(rng.integers(len(kinds)))]
    t = _GENERATORS[kind](rng, h, w)
    if kind != "noise" and rng.random() < 0.5:
        t = 0.75 * t + 0.25 * value_noise(rng, h, w, octaves=2)
    mean = float(rng.uniform(0.15, 0.85)) if mean is None else float(mean)
    contrast = float(rng.uniform(0.15, 0.7)) if contrast is None else float(contrast)
    return np.clip(mean + contrast * (t - 0.5), 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------- shapes


def shape_vertices(rng: np.random.Generator, kind: str, w: float, h: float) -> np.ndarray:
    """Outline ``(N, 2)`` of a shape centred on 0 whose bounding box is exactly
    ``[-w/2, w/2] x [-h/2, h/2]`` (so an unrotated sprite's box is known exactly)."""
    if kind == "rectangle":
        v = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64)
    elif kind == "ellipse":
        a = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        v = np.stack([np.cos(a), np.sin(a)], 1)
    elif kind == "polygon":
        n = int(rng.integers(3, 9))
        a = np.sort(rng.uniform(0, 2 * np.pi, n))
        r = rng.uniform(0.55, 1.0, n)
        v = np.stack([r * np.cos(a), r * np.sin(a)], 1)
    elif kind == "blob":
        a = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        r = np.ones_like(a)
        for k in range(2, 6):
            r += rng.uniform(0, 0.35 / (k - 1)) * np.cos(k * a + rng.uniform(0, 2 * np.pi))
        v = np.stack([r * np.cos(a), r * np.sin(a)], 1)
    else:
        raise ValueError(f"unknown shape kind {kind!r}; choose from {SHAPE_KINDS}")
    lo, hi = v.min(0), v.max(0)
    v = (v - (lo + hi) / 2) / (hi - lo) * np.array([w, h])
    return v.astype(np.float64)


# --------------------------------------------------------------------------- sprites


@dataclass
class Sprite:
    """A textured planar object.

    Object coordinates are "nominal image pixels" centred on the object: at scale 1 and
    angle 0 the object's outline ``verts`` spans exactly its nominal size.  ``tex`` and
    ``alpha`` are sampled at ``k`` sprite pixels per object unit with the object origin at
    ``origin`` (sprite pixel coordinates), so ``sprite_xy = k * obj_xy + origin``.
    """

    tex: np.ndarray     # (Hs, Ws) float32 [0, 1]
    alpha: np.ndarray   # (Hs, Ws) float32 [0, 1] coverage of the outline
    verts: np.ndarray   # (N, 2) outline in object coordinates
    k: float
    origin: np.ndarray  # (2,)

    @classmethod
    def from_outline(cls, verts: np.ndarray, tex_fn, k: float = 2.0) -> "Sprite":
        """Rasterise ``verts`` at ``k`` px per unit (anti-aliased) and texture it with
        ``tex_fn(h, w) -> (h, w) float32``."""
        verts = np.asarray(verts, np.float64)
        half = np.abs(verts).max(0)
        ws = int(np.ceil(2 * half[0] * k)) + 4
        hs = int(np.ceil(2 * half[1] * k)) + 4
        origin = np.array([(ws - 1) / 2.0, (hs - 1) / 2.0])
        pts = np.round((verts * k + origin) * 16).astype(np.int32)
        mask = np.zeros((hs, ws), np.uint8)
        cv2.fillPoly(mask, [pts], 255, cv2.LINE_AA, shift=4)
        tex = np.asarray(tex_fn(hs, ws), np.float32)
        if tex.shape != (hs, ws):
            raise ValueError(f"texture function returned {tex.shape}, expected {(hs, ws)}")
        return cls(tex, mask.astype(np.float32) / 255.0, verts, float(k), origin)

    @classmethod
    def random(cls, rng: np.random.Generator, w: float, h: float, *, shapes=SHAPE_KINDS,
               textures=TEXTURE_KINDS, mean: float = None, contrast: float = None,
               k: float = 2.0) -> "Sprite":
        kind = shapes[int(rng.integers(len(shapes)))]
        verts = shape_vertices(rng, kind, w, h)
        return cls.from_outline(
            verts, lambda hh, ww: random_texture(rng, hh, ww, kinds=textures, mean=mean,
                                                 contrast=contrast), k)

    @classmethod
    def solid(cls, verts, level: float = 1.0, k: float = 2.0) -> "Sprite":
        return cls.from_outline(verts, lambda hh, ww: np.full((hh, ww), level, np.float32), k)

    # -- geometry ----------------------------------------------------------------------

    @staticmethod
    def _lin(scale, angle):
        """``(..., 2, 2)`` linear part object -> image for ``scale`` (scalar or (sx, sy))
        then rotation by ``angle`` (radians, counter-clockwise on screen is negative y)."""
        if np.ndim(scale) == 0 and np.ndim(angle) == 0:
            c, s, k = math.cos(angle), math.sin(angle), float(scale)
            return np.array([[c * k, -s * k], [s * k, c * k]])
        scale = np.asarray(scale, np.float64)
        angle = np.asarray(angle, np.float64)
        if scale.shape[-1:] == (2,):
            sx, sy = scale[..., 0], scale[..., 1]
        else:
            sx = sy = scale
        c, s = np.cos(angle), np.sin(angle)
        return np.stack([np.stack([c * sx, -s * sy], -1), np.stack([s * sx, c * sy], -1)], -2)

    def outline_at(self, centre, scale=1.0, angle=0.0) -> np.ndarray:
        """Outline in image coordinates, ``(..., N, 2)`` (broadcasts over leading axes)."""
        A = self._lin(scale, angle)
        centre = np.asarray(centre, np.float64)
        return np.einsum("...ij,nj->...ni", A, self.verts) + centre[..., None, :]

    def bbox(self, centre, scale=1.0, angle=0.0) -> np.ndarray:
        """Exact ``(..., 4)`` xywh box of the outline (float64, unclipped)."""
        p = self.outline_at(centre, scale, angle)
        lo, hi = p.min(-2), p.max(-2)
        return np.concatenate([lo, hi - lo], -1)

    def affine(self, centre, scale=1.0, angle=0.0) -> np.ndarray:
        """2x3 matrix mapping sprite pixels to image pixels."""
        A = self._lin(scale, angle) / self.k
        t = np.asarray(centre, np.float64) - A @ self.origin
        return np.concatenate([A, t[:, None]], 1)

    # -- rendering ---------------------------------------------------------------------

    def draw(self, img: np.ndarray, centre, scale=1.0, angle=0.0, *, gain: float = 1.0,
             alpha_out: np.ndarray = None) -> None:
        """Alpha-composite the sprite into ``img`` (float32 HxW) in place, touching only the
        region around its outline.  ``alpha_out`` (optional, HxW) receives the coverage."""
        H, W = img.shape
        A = self._lin(scale, angle)
        centre = np.asarray(centre, np.float64)
        p = self.verts @ A.T + centre
        (x, y), (xe, ye) = p.min(0), p.max(0)
        x0, y0 = max(int(np.floor(x)) - 2, 0), max(int(np.floor(y)) - 2, 0)
        x1, y1 = min(int(np.ceil(xe)) + 3, W), min(int(np.ceil(ye)) + 3, H)
        if x1 <= x0 or y1 <= y0:
            return
        A = A / self.k
        M = np.concatenate([A, (centre - A @ self.origin - (x0, y0))[:, None]], 1)
        src = self.__dict__.get("_src")
        if src is None:
            src = self.__dict__["_src"] = np.ascontiguousarray(np.dstack([self.tex, self.alpha]))
        out = cv2.warpAffine(src, M, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        t, a = out[..., 0], out[..., 1]
        if gain != 1.0:
            t = t * np.float32(gain)
        roi = img[y0:y1, x0:x1]
        roi += a * (t - roi)
        if alpha_out is not None:
            aroi = alpha_out[y0:y1, x0:x1]
            aroi += a * (1.0 - aroi)


def clutter_sheet(rng: np.random.Generator, h: int, w: int, *, n_items: int = None,
                  item_px=(6.0, 60.0), textures=TEXTURE_KINDS, shapes=SHAPE_KINDS,
                  mean: float = None) -> np.ndarray:
    """A cluttered background sheet: a textured base plus ``n_items`` textured shapes."""
    base = random_texture(rng, h, w, kinds=textures, mean=mean,
                          contrast=float(rng.uniform(0.1, 0.5)))
    if n_items is None:
        n_items = int(rng.integers(0, 1 + h * w // 2500))
    for _ in range(n_items):
        sw, sh = rng.uniform(*item_px, size=2)
        spr = Sprite.random(rng, sw, sh, shapes=shapes, textures=textures, k=1.0)
        spr.draw(base, (rng.uniform(0, w), rng.uniform(0, h)), 1.0, rng.uniform(0, np.pi))
    return np.clip(base, 0.0, 1.0)
