"""Held-out evaluation sequences composited from real photographs (and procedural test seeds).

Training data is procedural (:mod:`dashnet_ros.world.scenes`, seeds >= 1000).  The trackers
are evaluated here on sequences they never saw: a *target* cut from one real photograph
(an object-like crop under a soft superellipse mask: ellipse ... rounded rectangle) moves
fast (several px per frame at 240 fps, with accelerations and turns, looming and rotating)
over a *background* made from another photograph, seen by a panning, zooming camera under
slow gain changes, an illumination gradient and mains brightness flicker (100/120 Hz).
The photographs are the ones that ship inside the scikit-image wheel (``skimage/data``);
they are read from disk, never downloaded, and must never be used for training.

Every moving quantity is a uniform cubic B-spline of time (the scene model of
:mod:`dashnet_ros.world.scenes` is reused), so the ground-truth box is exact at any
instant: besides the per-frame NFS annotation each sequence has ``gt_8x.txt``, the box at
8x the frame rate (the evaluation instants of the paper's §4 for 240 fps sources).

Layout written under ``ROOT`` (the NFS layout, readable by
:class:`dashnet_ros.davis.sources.NFSSequence`)::

    ROOT/README.md                      how every sequence was made (photos, motions, seeds)
    ROOT/<seq>/240/<seq>.txt            VATIC lines, frame k (1-based) at (k - 1) / fps s
    ROOT/<seq>/240/<seq>/00001.jpg ...  frames
    ROOT/<seq>/gt_8x.txt                "t_s,x,y,w,h" per line at 8x the frame rate
    ROOT/<seq>/info.json                the sequence's recipe and motion statistics

Sequences: ``photo_<seed>_<target>_on_<background>`` (photo seeds 0, 1, ...; their random
streams are separate from the procedural seeds) and ``scenes_<seed>`` (procedural scenes
with held-out seeds 0..999).
"""
from __future__ import annotations

import datetime
import importlib.util
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from dashnet_ros.world.scenes import TEST_SEEDS, SceneParams, SequenceSource, Spline, render_sequence
from dashnet_ros.world.textures import Sprite

#: bump when the recipe changes (recorded in info.json; a different version is rebuilt)
GENERATOR_VERSION = 1
GT_OVERSAMPLE = 8
GT_SIDECAR = "gt_8x.txt"
INFO_FILE = "info.json"
#: tag mixed into the photo sequences' seeds (keeps them apart from the scene seeds)
_PHOTO_STREAM = 0x5E1D


# --------------------------------------------------------------------------- photographs


@dataclass(frozen=True)
class PhotoCrop:
    """An object-like region ``(x, y, w, h)`` (pixels of the photo file) used as a target."""

    key: str
    file: str
    x: int
    y: int
    w: int
    h: int
    desc: str


#: target crops (object-like regions of the bundled photographs)
TARGETS: Tuple[PhotoCrop, ...] = (
    PhotoCrop("face", "astronaut.png", 165, 20, 110, 135, "astronaut's face"),
    PhotoCrop("cat", "chelsea.png", 90, 20, 300, 260, "cat's head (Chelsea)"),
    PhotoCrop("cup", "coffee.png", 150, 10, 310, 280, "espresso cup and saucer"),
    PhotoCrop("coin", "coins.png", 305, 10, 65, 65, "one Greek coin"),
    PhotoCrop("motorbike", "motorcycle_left.png", 95, 80, 590, 370, "red motorcycle"),
    PhotoCrop("rocket", "rocket.jpg", 270, 110, 90, 300, "rocket on its launch pad"),
    PhotoCrop("cameraman", "camera.png", 140, 40, 230, 190, "cameraman's head and camera"),
    PhotoCrop("helmet", "astronaut.png", 330, 330, 180, 170, "space helmet"),
    PhotoCrop("cell", "cell.png", 345, 280, 170, 170, "a cell (microscopy)"),
)

#: background photographs: ``file -> description``
BACKGROUNDS: Dict[str, str] = {
    "astronaut.png": "astronaut portrait",
    "camera.png": "cameraman on a lawn",
    "chelsea.png": "cat close-up",
    "coffee.png": "coffee on a wooden table",
    "coins.png": "coins on a dark cloth",
    "motorcycle_left.png": "motorcycle in a garage",
    "rocket.jpg": "rocket launch site at dusk",
    "grass.png": "grass texture",
    "gravel.png": "gravel texture",
    "brick.png": "brick wall",
    "moon.png": "lunar surface",
    "hubble_deep_field.jpg": "Hubble deep field",
}


def photo_dir() -> str:
    """The folder of photographs bundled in the installed scikit-image wheel."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("scikit-image is not installed; the held-out photo sequences "
                                  "use its bundled images: pip install scikit-image")
    return os.path.join(list(spec.submodule_search_locations)[0], "data")


def skimage_version() -> str:
    try:
        from importlib.metadata import version

        return version("scikit-image")
    except Exception:   # pragma: no cover - metadata missing
        return "unknown"


def load_photo(file: str) -> np.ndarray:
    """A bundled photograph as float32 (H, W) luminance in [0, 1] (BT.601 luma)."""
    from dashnet_ros.davis.sources import to_luminance

    path = os.path.join(photo_dir(), file)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"photograph {path} is missing from the scikit-image wheel "
                                "(only images bundled in the wheel are used; reinstall "
                                "scikit-image)")
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise ValueError(f"cannot decode photograph {path}")
    return to_luminance(img)


# --------------------------------------------------------------------------- recipe


def _walk(rng, k, lo, hi, step_max, persistence=0.6):
    """``k`` control points of a random walk in ``[lo, hi]`` (reflecting walls), steps up to
    ``step_max``: smooth turns and speed changes with ``persistence``, and abrupt ones
    (direction and speed redrawn) with probability 0.15 per step."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    d = lo.shape[0]
    p = np.empty((k, d))
    p[0] = rng.uniform(lo, hi)
    u = rng.normal(size=d)
    speed = step_max * math.sqrt(rng.random())
    for i in range(1, k):
        if rng.random() < 0.15:
            u = rng.normal(size=d)
            speed = step_max * math.sqrt(rng.random())
        else:
            u = u / (np.linalg.norm(u) + 1e-12) + rng.normal(scale=1 - persistence, size=d)
            speed = float(np.clip(speed + rng.normal(scale=0.25 * step_max), 0.3 * step_max,
                                  step_max))
        u = u / (np.linalg.norm(u) + 1e-12)
        q = p[i - 1] + speed * u
        over = (q < lo) | (q > hi)
        q = np.where(q < lo, 2 * lo - q, q)
        q = np.where(q > hi, 2 * hi - q, q)
        u = np.where(over, -u, u)
        p[i] = np.clip(q, lo, hi)
    return p


def superellipse(w: float, h: float, n: float, n_pts: int = 128) -> np.ndarray:
    """Outline ``(n_pts, 2)`` of ``|x/(w/2)|^n + |y/(h/2)|^n = 1`` (n=2 ellipse, larger n a
    rounded rectangle); includes the four extreme points."""
    th = np.arange(n_pts) * (2 * np.pi / n_pts)
    c, s = np.cos(th), np.sin(th)
    x = 0.5 * w * np.sign(c) * np.abs(c) ** (2.0 / n)
    y = 0.5 * h * np.sign(s) * np.abs(s) ** (2.0 / n)
    return np.stack([x, y], 1)


def photo_sprite(crop_img: np.ndarray, w: float, h: float, n: float, feather_px: float,
                 k: float = 2.0) -> Sprite:
    """A sprite of nominal size ``w x h`` textured with ``crop_img`` under a soft superellipse
    mask.  The mask is 0 on and outside the outline and ramps to 1 over ``feather_px``
    (nominal pixels) inside it, so the outline's box encloses every visible pixel."""
    verts = superellipse(w, h, n)
    ws = int(math.ceil(w * k)) + 4
    hs = int(math.ceil(h * k)) + 4
    origin = np.array([(ws - 1) / 2.0, (hs - 1) / 2.0])
    tex = cv2.resize(np.asarray(crop_img, np.float32), (ws, hs), interpolation=cv2.INTER_AREA)
    xs = (np.arange(ws) - origin[0]) / (k * w / 2)
    ys = (np.arange(hs) - origin[1]) / (k * h / 2)
    r = np.abs(xs)[None, :] ** n + np.abs(ys)[:, None] ** n
    inside = (r < 1.0).astype(np.uint8)
    dist = cv2.distanceTransform(inside, cv2.DIST_L2, 5)   # sprite px to the nearest outside px
    alpha = np.clip(dist / max(feather_px * k, 1e-6), 0.0, 1.0).astype(np.float32)
    return Sprite(np.clip(tex, 0, 1).astype(np.float32), alpha, verts, float(k), origin)


@dataclass
class PhotoRecipe:
    """What one photo sequence is made of (drawn by :func:`photo_recipe` from its seed)."""

    seed: int
    name: str
    target: PhotoCrop
    background: str
    width: int
    height: int
    fps: float
    n_frames: int
    size_px: Tuple[float, float]          # nominal target (w, h) at 240x180-equivalent scale
    mask_n: float                         # superellipse exponent
    feather_px: float
    max_speed_px_per_frame: float         # walk step cap (the spline moves slower)
    knot_dt_s: float
    zoom_range: Tuple[float, float]
    camera_speed_px_per_frame: float
    flicker_amp: float
    flicker_hz: float
    params: SceneParams = None

    def info(self) -> dict:
        return {
            "kind": "photo", "seed": self.seed, "generator_version": GENERATOR_VERSION,
            "width": self.width, "height": self.height, "fps": self.fps,
            "n_frames": self.n_frames,
            "target": {"key": self.target.key, "photo": self.target.file,
                       "crop_xywh": [self.target.x, self.target.y, self.target.w, self.target.h],
                       "desc": self.target.desc,
                       "size_px": [round(v, 2) for v in self.size_px],
                       "mask": f"superellipse n={self.mask_n:.2f}, feather {self.feather_px:.1f} px"},
            "background": {"photo": self.background, "desc": BACKGROUNDS[self.background]},
            "motion": {"walk_step_cap_px_per_frame": round(self.max_speed_px_per_frame, 2),
                       "knot_dt_s": round(self.knot_dt_s, 4)},
            "camera": {"pan_cap_px_per_frame": round(self.camera_speed_px_per_frame, 2),
                       "zoom_range": list(self.zoom_range)},
            "lighting": {"flicker_amp": round(self.flicker_amp, 4), "flicker_hz": self.flicker_hz,
                         "log_gain_range": 0.25, "gradient_range": 0.2},
            "photos_from": f"scikit-image {skimage_version()} bundled data (skimage/data)",
        }


def photo_recipe(seed: int, n_frames: int, width: int = 240, height: int = 180,
                 fps: float = 240.0) -> PhotoRecipe:
    """Draw photo sequence ``seed`` (deterministic).  Targets cycle through :data:`TARGETS`
    with the seed; the background is another photograph drawn from the seed."""
    if seed < 0:
        raise ValueError(f"photo sequence seed must be >= 0, got {seed}")
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    if width < 16 or height < 16:
        raise ValueError(f"frame size must be at least 16x16, got {width}x{height}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    ss = np.random.SeedSequence([_PHOTO_STREAM, int(seed)])
    r_pick, r_look, r_path, r_pose, r_cam, r_light = (np.random.default_rng(c) for c in ss.spawn(6))
    s = min(width / 240.0, height / 180.0)
    duration = n_frames / fps

    target = TARGETS[seed % len(TARGETS)]
    bgs = sorted(b for b in BACKGROUNDS if b != target.file)
    background = bgs[int(r_pick.integers(len(bgs)))]
    name = f"photo_{seed:03d}_{target.key}_on_{os.path.splitext(background)[0].split('_')[0]}"

    # target looks: keep the crop's aspect (limited to 1:2.5), long side 24..64 px
    aspect = float(np.clip(target.w / target.h, 0.4, 2.5))
    long_px = float(r_look.uniform(24.0, 64.0)) * s
    tw, th = (long_px, long_px / aspect) if aspect >= 1 else (long_px * aspect, long_px)
    tw, th = max(tw, 8.0 * s), max(th, 8.0 * s)
    mask_n = float(r_look.uniform(2.0, 4.0))
    feather = float(r_look.uniform(1.0, 3.0)) * s
    crop = load_photo(target.file)[target.y:target.y + target.h, target.x:target.x + target.w]
    sprite = photo_sprite(crop, tw, th, mask_n, feather)

    # target motion: fast persistent walk in image pixels, mostly inside the view
    knot = float(r_path.uniform(0.03, 0.09))
    kp = int(math.ceil(duration / knot)) + 4
    vmax = float(r_path.uniform(6.0, 14.0)) * s
    half = np.array([tw, th]) / 2
    lo = 0.7 * half
    hi = np.array([width - 1, height - 1]) - 0.7 * half
    mid = np.array([width - 1, height - 1]) / 2
    lo, hi = np.minimum(lo, mid), np.maximum(hi, mid)
    path = _walk(r_path, kp, lo, hi, vmax * fps * knot)
    rot0 = float(r_pose.uniform(-0.3, 0.3))
    steps = np.cumsum(r_pose.normal(size=(kp, 2)) * (0.06, 0.1), axis=0)
    pose = np.stack([np.clip(steps[:, 0], -0.3, 0.3), np.clip(steps[:, 1], -0.5, 0.5) + rot0], 1)

    # background sheet and camera (pan, zoom)
    zoom = (0.8, 1.25)
    photo = load_photo(background)
    f = max(2.0 * width * zoom[1] / photo.shape[1], 2.0 * height * zoom[1] / photo.shape[0])
    sheet = cv2.resize(photo, (max(2, int(round(photo.shape[1] * f))),
                               max(2, int(round(photo.shape[0] * f)))),
                       interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC)
    sheet = np.clip(sheet, 0, 1).astype(np.float32)
    sh, sw = sheet.shape
    cam_dt = float(r_cam.uniform(0.1, 0.25))
    kc = int(math.ceil(duration / cam_dt)) + 4
    cam_speed = float(r_cam.uniform(0.3, 2.0)) * s
    mx, my = zoom[1] * width / 2 + 2, zoom[1] * height / 2 + 2
    lo_c, hi_c = np.array([mx, my]), np.array([sw - mx, sh - my])
    mid_c = np.array([sw, sh]) / 2
    xy = _walk(r_cam, kc, np.minimum(lo_c, mid_c), np.maximum(hi_c, mid_c),
               cam_speed * fps * cam_dt)
    lz = _walk(r_cam, kc, (math.log(zoom[0]),), (math.log(zoom[1]),), 0.25 * cam_dt / 0.1)
    camera = Spline(np.concatenate([xy, lz], 1), cam_dt)

    # lighting: slow gain and gradient, mains flicker
    flicker_amp = float(r_light.uniform(0.02, 0.08))
    flicker_hz = float(r_light.choice([100.0, 120.0]))
    l_dt = float(r_light.uniform(0.15, 0.5))
    kl = int(math.ceil(duration / l_dt)) + 4
    lighting = Spline(r_light.uniform(-1.0, 1.0, size=(kl, 2)) * (0.25, 0.2), l_dt)

    params = SceneParams(
        width=int(width), height=int(height), fps=float(fps), n_frames=int(n_frames),
        prey=sprite, prey_path=Spline(path, knot), prey_pose=Spline(pose, knot),
        background=sheet, camera=camera, distractors=[], lighting=lighting,
        light_angle_rad=float(r_light.uniform(0, 2 * np.pi)), flicker_amp=flicker_amp,
        flicker_hz=flicker_hz, flicker_phase=float(r_light.uniform(0, 2 * np.pi)), seed=None)
    return PhotoRecipe(seed=int(seed), name=name, target=target, background=background,
                       width=int(width), height=int(height), fps=float(fps),
                       n_frames=int(n_frames), size_px=(tw, th), mask_n=mask_n,
                       feather_px=feather, max_speed_px_per_frame=vmax, knot_dt_s=knot,
                       zoom_range=zoom, camera_speed_px_per_frame=cam_speed,
                       flicker_amp=flicker_amp, flicker_hz=flicker_hz, params=params)


def photo_sequence(seed: int, n_frames: int, width: int = 240, height: int = 180,
                   fps: float = 240.0) -> SequenceSource:
    """The frame source of photo sequence ``seed`` (``box_at``/``render_at`` exact at any
    time; ``render_at(t, prey_only=True)`` renders the target's mask alone)."""
    return SequenceSource(photo_recipe(seed, n_frames, width, height, fps).params)


# --------------------------------------------------------------------------- writing


def oversampled_times_us(n_frames: int, fps: float, factor: int = GT_OVERSAMPLE) -> np.ndarray:
    """Instants at ``factor`` x the frame rate spanning frames 0 .. n_frames-1 (µs)."""
    j = np.arange(factor * (n_frames - 1) + 1, dtype=np.float64)
    return np.rint(j * 1e6 / (factor * fps)).astype(np.int64)


def motion_stats(source: SequenceSource) -> dict:
    """Target speed and acceleration statistics from the exact track (box centre, unclipped)."""
    t = oversampled_times_us(len(source), source.fps)
    b = source.box_at(t, clip=False).astype(np.float64)
    c = b[:, :2] + b[:, 2:] / 2
    dt_frames = (np.diff(t) * 1e-6) * source.fps
    v = np.linalg.norm(np.diff(c, axis=0), axis=1) / np.maximum(dt_frames, 1e-12)
    vis = source.box_at(source.frame_t_us(np.arange(len(source))))
    out = {"speed_px_per_frame": {}, "frames_target_visible": int(np.all(np.isfinite(vis), 1).sum())}
    if len(v):
        out["speed_px_per_frame"] = {"mean": round(float(v.mean()), 2),
                                     "p95": round(float(np.percentile(v, 95)), 2),
                                     "max": round(float(v.max()), 2)}
        acc = np.abs(np.diff(v)) / np.maximum(dt_frames[1:], 1e-12)
        if len(acc):
            out["accel_px_per_frame2"] = {"p95": round(float(np.percentile(acc, 95)), 3)}
        ang = np.arctan2(*np.diff(c, axis=0).T[::-1])
        turn = np.abs(np.angle(np.exp(1j * np.diff(ang))))
        moving = v[1:] > 0.5
        out["turn_deg_per_frame_p95"] = round(
            float(np.degrees(np.percentile(turn[moving] / dt_frames[1:][moving], 95)))
            if moving.any() else 0.0, 2)
    return out


def write_gt_sidecar(path: str, t_us: np.ndarray, boxes: np.ndarray) -> None:
    """``t_s,x,y,w,h`` lines (``nan`` when the target is out of view), written atomically."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"# t_s,x,y,w,h  exact ground truth at {GT_OVERSAMPLE}x the frame rate "
                "(box top-left and size in pixels; nan = out of view)\n")
        for t, b in zip(np.asarray(t_us, np.int64), np.asarray(boxes, np.float64)):
            f.write("{:.6f},{:.4f},{:.4f},{:.4f},{:.4f}\n".format(t * 1e-6, *b))
    os.replace(tmp, path)


def read_gt_sidecar(seq_dir: str) -> Tuple[np.ndarray, np.ndarray]:
    """``(t_us int64 (M,), boxes float32 (M, 4))`` of ``SEQ/gt_8x.txt``."""
    path = os.path.join(seq_dir, GT_SIDECAR)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist (sequences built by 'dashnet heldout "
                                "build' have it; otherwise use the per-frame NFS annotation)")
    rows = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split(",")
            try:
                vals = [float(p) for p in parts]
            except ValueError:
                vals = []
            if len(vals) != 5 or not math.isfinite(vals[0]):
                raise ValueError(f"{path}:{lineno}: expected 't_s,x,y,w,h', got {line!r}")
            rows.append(vals)
    if not rows:
        raise ValueError(f"{path} holds no ground truth (empty or truncated): rebuild it")
    a = np.array(rows, np.float64)
    t_us = np.rint(a[:, 0] * 1e6).astype(np.int64)
    if np.any(np.diff(t_us) <= 0):
        raise ValueError(f"{path}: times must increase line by line")
    return t_us, a[:, 1:].astype(np.float32)


@dataclass
class HeldoutItem:
    """One sequence to build: its name, recipe description and source."""

    name: str
    info: dict
    make_source: Callable[[], SequenceSource]


def heldout_items(n_real: int = 6, n_frames: int = 480, width: int = 240, height: int = 180,
                  procedural_seeds: Sequence[int] = (0, 1), fps: float = 240.0,
                  photo_seeds: Optional[Sequence[int]] = None) -> List[HeldoutItem]:
    """The sequences of a held-out set: photo seeds ``0..n_real-1`` (or ``photo_seeds``)
    and procedural scenes with ``procedural_seeds`` (each must be a held-out seed 0..999)."""
    if n_real < 0:
        raise ValueError(f"n_real must be >= 0, got {n_real}")
    if n_frames < 2:
        raise ValueError(f"n_frames must be >= 2, got {n_frames}")
    items = []
    for seed in (range(n_real) if photo_seeds is None else photo_seeds):
        rec = photo_recipe(int(seed), n_frames, width, height, fps)
        items.append(HeldoutItem(rec.name, rec.info(), lambda r=rec: SequenceSource(r.params)))
    for seed in procedural_seeds:
        if int(seed) not in TEST_SEEDS:
            raise ValueError(f"procedural seed {seed} is not a held-out seed "
                             f"({TEST_SEEDS.start}..{TEST_SEEDS.stop - 1}); seeds >= "
                             f"{TEST_SEEDS.stop} are training data")
        info = {"kind": "procedural", "seed": int(seed), "generator_version": GENERATOR_VERSION,
                "width": int(width), "height": int(height), "fps": float(fps),
                "n_frames": int(n_frames),
                "recipe": "dashnet_ros.world.scenes.render_sequence(seed) with default "
                          "randomisation (textured sprite, distractors, clutter background)"}
        items.append(HeldoutItem(f"scenes_{int(seed):04d}", info,
                                 lambda sd=int(seed): render_sequence(sd, n_frames, width,
                                                                      height, fps)))
    names = [it.name for it in items]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate sequence names in {names}")
    return items


def _read_info(seq_dir: str) -> Optional[dict]:
    try:
        with open(os.path.join(seq_dir, INFO_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _same_recipe(a: dict, b: dict) -> bool:
    keys = ("kind", "seed", "generator_version", "width", "height", "fps", "n_frames")
    return a is not None and all(a.get(k) == b.get(k) for k in keys)


def _fix_modes(top: str) -> None:
    """Give folders made by ``tempfile.mkdtemp`` (mode 0700) the usual umask-based mode."""
    mask = os.umask(0)
    os.umask(mask)
    for d, _dirs, _files in os.walk(top):
        os.chmod(d, 0o777 & ~mask)


def write_heldout_sequence(root: str, item: HeldoutItem, *, overwrite: bool = False,
                           progress=None) -> str:
    """Render ``item`` into ``root/<name>`` (NFS layout + gt_8x.txt + info.json).  Built in a
    temporary folder under ``root`` and renamed into place: never left half-written."""
    from dashnet_ros.davis.sources import write_nfs_sequence

    final = os.path.join(root, item.name)
    if os.path.exists(final) and not overwrite:
        raise FileExistsError(f"{final} already exists (pass overwrite=True to replace it)")
    os.makedirs(root, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{item.name}.build-", dir=root)
    try:
        src = item.make_source()
        seq = write_nfs_sequence(tmp, item.name, src, len(src), label=item.name,
                                 progress=progress)
        t8 = oversampled_times_us(len(src), src.fps)
        write_gt_sidecar(os.path.join(seq, GT_SIDECAR), t8, src.box_at(t8))
        _fix_modes(seq)
        info = dict(item.info, motion_stats=motion_stats(src),
                    built_utc=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"))
        if info.get("kind") == "procedural":
            p = src.params
            info["lighting"] = {"flicker_amp": round(float(p.flicker_amp), 4),
                                "flicker_hz": float(p.flicker_hz)}
        with open(os.path.join(seq, INFO_FILE), "w") as f:
            json.dump(info, f, indent=1)
        if os.path.exists(final):
            old = tempfile.mkdtemp(prefix=f".{item.name}.old-", dir=root)
            os.replace(final, os.path.join(old, item.name))
            os.replace(seq, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(seq, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def write_readme(root: str) -> str:
    """(Re)write ``root/README.md`` from the info.json of every sequence in ``root``."""
    seqs = []
    for name in sorted(os.listdir(root)):
        d = os.path.join(root, name)
        if not name.startswith(".") and os.path.isdir(d):
            info = _read_info(d)
            if info is not None:
                seqs.append((name, info))
    L = ["# Held-out tracking sequences (evaluation only — never train on these)", "",
         "Built by `dashnet heldout build` (`dashnet_ros/eval/heldout.py`, generator version "
         f"{GENERATOR_VERSION}).  NFS layout: `<seq>/240/<seq>.txt` (VATIC lines `id xmin ymin "
         "xmax ymax frame lost occluded generated \"label\"`, frame k at (k-1)/fps s), frames "
         "`<seq>/240/<seq>/00001.jpg`..., `<seq>/gt_8x.txt` (`t_s,x,y,w,h`, the exact box at 8x "
         "the frame rate, `nan` when out of view), `<seq>/info.json` (the recipe).", "",
         "**photo_*** sequences: a target cut from one real photograph (crop of the photo file, "
         "soft superellipse mask from ellipse n=2 to rounded rectangle n=4, feathered inwards so "
         "the box encloses every visible pixel) moves over a background made from ANOTHER "
         "photograph.  Target path: a uniform cubic B-spline through a persistent random walk "
         "(abrupt direction/speed changes with probability 0.15 per knot, reflecting walls "
         "keeping the target's centre at least 0.7 nominal half-sizes inside the frame), looming (log scale within ±0.3) and "
         "rotating (±0.5 rad); camera: B-spline pan over the photo and zoom 0.8–1.25 (target "
         "scale follows the zoom); lighting: slow gain (log ±0.25), illumination gradient (±0.2) "
         "and mains flicker (100 or 120 Hz).  Photos are the images bundled in the scikit-image "
         "wheel (`skimage/data`, read from disk, nothing downloaded).  Each photo seed draws "
         "from its own random streams (`SeedSequence([0x5E1D, seed])`), separate from the "
         "procedural scene seeds.", "",
         "**scenes_*** sequences: procedural scenes of `dashnet_ros.world.scenes` with held-out "
         "seeds 0..999 (training uses seeds >= 1000).", "",
         "| sequence | kind | seed | size | frames | target | background | speed px/frame "
         "mean / p95 / max | flicker |", "|---|---|---|---|---|---|---|---|---|"]
    for name, info in seqs:
        ms = info.get("motion_stats", {}).get("speed_px_per_frame", {})
        sp = f"{ms.get('mean', '?')} / {ms.get('p95', '?')} / {ms.get('max', '?')}"
        size = f"{info.get('width')}x{info.get('height')} @ {info.get('fps', 240):g} fps"
        if info.get("kind") == "photo":
            t, bg, li = info["target"], info["background"], info["lighting"]
            tgt = (f"{t['desc']} — `{t['photo']}` crop {t['crop_xywh']}, "
                   f"{t['size_px'][0]:.0f}x{t['size_px'][1]:.0f} px, {t['mask']}")
            back = f"{bg['desc']} — `{bg['photo']}`"
            fl = f"{li['flicker_amp'] * 100:.1f}% @ {li['flicker_hz']:g} Hz"
        else:
            li = info.get("lighting", {})
            tgt, back = "procedural sprite", "procedural clutter"
            fl = (f"{li['flicker_amp'] * 100:.1f}% @ {li['flicker_hz']:g} Hz" if li else "?")
        L.append(f"| {name} | {info.get('kind')} | {info.get('seed')} | {size} | "
                 f"{info.get('n_frames')} | {tgt} | {back} | {sp} | {fl} |")
    photos = sorted({i.get("photos_from") for _, i in seqs if i.get("photos_from")})
    if photos:
        L += ["", "Photographs: " + "; ".join(photos) + "."]
    L += ["", "Regenerate (deterministic in the seeds): `dashnet heldout build --out ROOT "
          "--n-real N --frames F [--width W --height H] [--procedural-seeds 0,1]`.", ""]
    path = os.path.join(root, "README.md")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(L))
    os.replace(tmp, path)
    return path


def build_heldout(out: str, n_real: int = 6, n_frames: int = 480, width: int = 240,
                  height: int = 180, procedural_seeds: Sequence[int] = (0, 1),
                  overwrite: bool = False, progress=None) -> List[str]:
    """Build the held-out set under ``out`` and return the sequence folders.

    A sequence already there with the same recipe (kind, seed, size, frames, generator
    version) is kept; one with a different recipe raises FileExistsError unless
    ``overwrite``.  ``progress(n_done, n_total)`` counts frames over the whole set.
    """
    items = heldout_items(n_real, n_frames, width, height, procedural_seeds)
    os.makedirs(out, exist_ok=True)
    todo = []
    for it in items:
        d = os.path.join(out, it.name)
        if os.path.exists(d):
            if _same_recipe(_read_info(d), it.info) and not overwrite:
                continue
            if not overwrite:
                raise FileExistsError(f"{d} exists but was built with another recipe (or is "
                                      "not a held-out sequence); pass overwrite to rebuild it")
        todo.append(it)
    total = sum(it.info["n_frames"] for it in todo)
    done = 0
    for it in todo:
        def step(k, _n, base=done):
            if progress is not None:
                progress(base + k, total)
        write_heldout_sequence(out, it, overwrite=overwrite, progress=step)
        done += it.info["n_frames"]
    write_readme(out)
    return [os.path.join(out, it.name) for it in items]
