"""Frame sources: video files, NFS sequences, image folders, and the procedural worlds.

All sources yield :class:`~dashnet_ros.davis.frames.Frame` with float32 (H, W) images in
[0, 1]; colour is reduced to luma with the ITU-R BT.601 weights (0.299 R + 0.587 G +
0.114 B, applied to the stored values).  Frame ``k`` (0-based) is at ``round(k * 1e6 /
fps)`` microseconds.  These are the frame inputs of the hybrid data simulator (paper
§3.4: FCN interpolation, eq. 13, then the DVS model, eq. 14).

NFS layout (Need for Speed, 240 fps), one sequence per directory ``SEQ_DIR``::

    SEQ_DIR/240/<seq>.txt          VATIC lines: id xmin ymin xmax ymax frame lost occluded generated "label"
    SEQ_DIR/240/<seq>/00001.jpg    frame 1 at t = 0, frame k at (k - 1) / 240 s

A tracker may know only the first box: use :func:`read_first_annotation` (reads the
first line and nothing else); the full annotation is for the simulator and evaluation.
"""
from __future__ import annotations

import glob
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from typing import Iterator, List, Optional

import cv2
import numpy as np

from dashnet_ros.davis.frames import Frame, FrameSource

NFS_FPS = 240.0
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".pgm", ".ppm", ".webp")
#: the NFS annotation line count may differ from the frame count by this much (a common
#: off-by-one in the published txts: a trailing line or frame); the extra one is dropped
NFS_COUNT_TOLERANCE = 1


# --------------------------------------------------------------------------- helpers


def to_luminance(img: np.ndarray) -> np.ndarray:
    """Any decoded image (grey, BGR, BGRA; uint8, uint16 or float) -> float32 (H, W) in
    [0, 1] with BT.601 weights."""
    img = np.asarray(img)
    if img.dtype == np.uint8:
        f = img.astype(np.float32) * np.float32(1 / 255)
    elif img.dtype == np.uint16:
        f = img.astype(np.float32) * np.float32(1 / 65535)
    else:
        f = img.astype(np.float32, copy=False)
    if f.ndim == 3:
        if f.shape[2] == 1:
            f = f[..., 0]
        elif f.shape[2] in (3, 4):
            f = cv2.cvtColor(np.ascontiguousarray(f[..., :3]), cv2.COLOR_BGR2GRAY)
        else:
            raise ValueError(f"cannot convert an image with {f.shape[2]} channels to luminance")
    elif f.ndim != 2:
        raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {img.shape}")
    return np.clip(f, 0.0, 1.0)


def _read_image(path: str, expect_shape=None) -> np.ndarray:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file {path} does not exist")
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise ValueError(f"cannot decode image {path} (empty, truncated or not an image)")
    lum = to_luminance(img)
    if expect_shape is not None and lum.shape != tuple(expect_shape):
        raise ValueError(f"image {path} is {lum.shape[1]}x{lum.shape[0]} but the sequence's "
                         f"first frame is {expect_shape[1]}x{expect_shape[0]}")
    return lum


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _t_us(k: int, fps: float) -> int:
    return int(round(k * 1e6 / fps))


# --------------------------------------------------------------------------- video


class VideoSource(FrameSource):
    """A video file read with ``cv2.VideoCapture``.  ``fps``: override the container's rate
    (required when the file does not state one).  Frame times assume a constant rate."""

    def __init__(self, path: str, fps: Optional[float] = None):
        self.path = str(path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"video file {self.path} does not exist")
        cap = self._open()
        try:
            file_fps = cap.get(cv2.CAP_PROP_FPS)
            self._count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            ok, img = cap.read()
        finally:
            cap.release()
        if not ok or img is None:
            raise ValueError(f"cannot read any frame from video {self.path} "
                             "(empty file or unsupported codec)")
        if img.size == 0 or min(img.shape[:2]) == 0:
            raise ValueError(f"video {self.path} has zero-size frames ({img.shape})")
        self.height, self.width = img.shape[:2]
        if fps is None:
            if not (file_fps and math.isfinite(file_fps) and file_fps > 0):
                raise ValueError(f"video {self.path} does not state its frame rate; pass fps=")
            fps = file_fps
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.fps = float(fps)
        self._len = None

    def _open(self):
        cap = cv2.VideoCapture(self.path)
        if not cap.isOpened():
            cap.release()
            raise ValueError(f"cannot open video {self.path} (not a video, or a codec "
                             "OpenCV was built without)")
        return cap

    def __len__(self) -> int:
        if self._len is None:
            if self._count > 0:
                self._len = self._count
            else:   # the container does not say: count by decoding
                self._len = sum(1 for _ in self._frames(decode=False))
        return self._len

    def _frames(self, decode=True):
        cap = self._open()
        try:
            k = 0
            while True:
                ok = cap.grab()
                if not ok:
                    return
                if decode:
                    ok, img = cap.retrieve()
                    if not ok or img is None:
                        return
                    if img.size == 0 or min(img.shape[:2]) == 0:
                        raise ValueError(f"video {self.path}: frame {k} has zero size ({img.shape})")
                    if img.shape[:2] != (self.height, self.width):
                        raise ValueError(f"video {self.path}: frame {k} is {img.shape[1]}x"
                                         f"{img.shape[0]}, expected {self.width}x{self.height}")
                    yield Frame(t_us=_t_us(k, self.fps), image=to_luminance(img), index=k)
                else:
                    yield k
                k += 1
        finally:
            cap.release()

    def __iter__(self) -> Iterator[Frame]:
        return self._frames()


# --------------------------------------------------------------------------- image folder


class ImageFolderSource(FrameSource):
    """Images in a folder, in natural order (``2.png`` before ``10.png``), at ``fps``.
    ``pattern``: a glob inside the folder (default: every file with an image extension)."""

    def __init__(self, folder: str, fps: float, pattern: Optional[str] = None):
        self.folder = str(folder)
        if not os.path.isdir(self.folder):
            raise FileNotFoundError(f"image folder {self.folder} does not exist")
        if not fps or not fps > 0:
            raise ValueError(f"fps must be > 0 for image folder {self.folder}, got {fps}")
        self.fps = float(fps)
        if pattern is None:
            names = [n for n in os.listdir(self.folder) if n.lower().endswith(IMAGE_EXTS)]
        else:
            names = [os.path.basename(p) for p in glob.glob(os.path.join(self.folder, pattern))]
        names = [n for n in names if os.path.isfile(os.path.join(self.folder, n))]
        if not names:
            raise ValueError(f"no images in {self.folder}"
                             + (f" matching {pattern!r}" if pattern else
                                f" (extensions {', '.join(IMAGE_EXTS)})"))
        self.files = [os.path.join(self.folder, n) for n in sorted(names, key=_natural_key)]
        self.height, self.width = _read_image(self.files[0]).shape

    def __len__(self) -> int:
        return len(self.files)

    def boxes(self):
        return None

    def __iter__(self) -> Iterator[Frame]:
        boxes = self.boxes()
        for k, path in enumerate(self.files):
            img = _read_image(path, (self.height, self.width))
            yield Frame(t_us=_t_us(k, self.fps), image=img,
                        box=None if boxes is None else boxes[k].copy(), index=k)


# --------------------------------------------------------------------------- NFS


@dataclass
class NFSAnnotation:
    """One VATIC annotation line (box already converted to xywh; NaN when ``lost``)."""

    box: np.ndarray
    frame: int
    lost: bool
    occluded: bool
    generated: bool
    label: str


def _parse_vatic(line: str, where: str) -> NFSAnnotation:
    parts = line.strip().split(None, 9)
    if len(parts) < 9:
        raise ValueError(f"{where}: malformed NFS annotation (expected 'id xmin ymin xmax ymax "
                         f"frame lost occluded generated \"label\"', got {line.strip()!r})")
    try:
        x0, y0, x1, y1 = (float(v) for v in parts[1:5])
        frame = int(parts[5])
        lost, occ, gen = (int(v) for v in parts[6:9])
    except ValueError:
        raise ValueError(f"{where}: malformed NFS annotation, non-numeric field in "
                         f"{line.strip()!r}") from None
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise ValueError(f"{where}: non-finite box in {line.strip()!r}")
    if not lost and (x1 < x0 or y1 < y0):
        raise ValueError(f"{where}: box has xmax < xmin or ymax < ymin in {line.strip()!r}")
    label = parts[9].strip().strip('"') if len(parts) > 9 else ""
    box = (np.full(4, np.nan, np.float32) if lost else
           np.array([x0, y0, x1 - x0, y1 - y0], np.float32))
    return NFSAnnotation(box, frame, bool(lost), bool(occ), bool(gen), label)


def _nfs_paths(seq_dir: str):
    """``(txt, frame_dir)`` of an NFS sequence directory (raises if it is not one)."""
    seq_dir = os.path.normpath(str(seq_dir))
    d240 = os.path.join(seq_dir, "240")
    if not os.path.isdir(d240):
        raise FileNotFoundError(f"{seq_dir} is not an NFS sequence: no '240' folder "
                                "(expected SEQ_DIR/240/<seq>.txt and SEQ_DIR/240/<seq>/00001.jpg)")
    name = os.path.basename(seq_dir)
    txt = os.path.join(d240, name + ".txt")
    if not os.path.isfile(txt):
        txts = sorted(glob.glob(os.path.join(d240, "*.txt")))
        if len(txts) != 1:
            raise FileNotFoundError(
                f"{d240}: expected the annotation {name}.txt"
                + (f" (found several: {[os.path.basename(t) for t in txts]})" if txts else ""))
        txt = txts[0]
    frames = os.path.splitext(txt)[0]
    if not os.path.isdir(frames):
        raise FileNotFoundError(f"NFS frame folder {frames} does not exist (next to {txt})")
    return txt, frames


def read_first_annotation(seq_dir: str) -> np.ndarray:
    """The first box ``(x, y, w, h)`` float32 of an NFS sequence, reading ONLY the first line
    of its annotation (the only ground truth a tracker may see)."""
    txt, _ = _nfs_paths(seq_dir)
    with open(txt, "rb") as f:
        raw = f.readline()
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{txt}:1: the first annotation line is not text") from None
    if not line.strip():
        raise ValueError(f"{txt}:1: empty annotation file (no first box)")
    a = _parse_vatic(line, f"{txt}:1")
    if a.lost:
        raise ValueError(f"{txt}:1: the target is marked lost in the first frame; no initial box")
    return a.box


def read_nfs_annotation(txt: str) -> List[NFSAnnotation]:
    """All annotation lines of an NFS txt (blank lines ignored).  Frame numbers must be
    consecutive; they may start at 0 or 1 (both occur in NFS), lines map to frames in order."""
    if not os.path.isfile(txt):
        raise FileNotFoundError(f"NFS annotation {txt} does not exist")
    out = []
    with open(txt, "r", encoding="utf-8", errors="strict") as f:
        try:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                a = _parse_vatic(line, f"{txt}:{lineno}")
                if out and a.frame != out[-1].frame + 1:
                    raise ValueError(f"{txt}:{lineno}: frame number {a.frame} does not follow "
                                     f"{out[-1].frame} (annotations must be consecutive)")
                out.append(a)
        except UnicodeDecodeError:
            raise ValueError(f"{txt}: not a UTF-8 text file") from None
    if not out:
        raise ValueError(f"NFS annotation {txt} is empty")
    if out[0].frame not in (0, 1):
        raise ValueError(f"{txt}: first frame number is {out[0].frame}, expected 0 or 1")
    return out


class NFSSequence(ImageFolderSource):
    """An NFS sequence at 240 fps with its ground truth.

    Frame file ``k`` (``00001.jpg`` = 1) is at ``(k - 1) / 240`` s and carries the box of
    annotation line ``k`` (xywh = xmin, ymin, xmax - xmin, ymax - ymin; NaN when lost).
    Frame files must be numbered 1..N without gaps.  Line and frame counts may differ by
    :data:`NFS_COUNT_TOLERANCE`; the sequence then has the smaller count, otherwise a
    ValueError names the txt.
    """

    def __init__(self, seq_dir: str):
        self.seq_dir = os.path.normpath(str(seq_dir))
        self.txt, frame_dir = _nfs_paths(self.seq_dir)
        self.name = os.path.basename(os.path.splitext(self.txt)[0])
        super().__init__(frame_dir, NFS_FPS, "*.jpg")
        for k, path in enumerate(self.files, 1):
            stem = os.path.splitext(os.path.basename(path))[0]
            if not stem.isdigit() or int(stem) != k:
                raise ValueError(f"NFS frame folder {frame_dir}: expected frame {k:05d}.jpg, "
                                 f"found {os.path.basename(path)} (frames must be 1..N)")
        self.annotations = read_nfs_annotation(self.txt)
        n_a, n_f = len(self.annotations), len(self.files)
        if abs(n_a - n_f) > NFS_COUNT_TOLERANCE:
            raise ValueError(f"{self.txt} has {n_a} annotation lines but {frame_dir} has {n_f} "
                             f"frames (tolerance {NFS_COUNT_TOLERANCE}); the sequence is "
                             "incomplete or the annotation belongs to another frame rate")
        n = min(n_a, n_f)
        self.files = self.files[:n]
        self.annotations = self.annotations[:n]
        self._boxes = np.stack([a.box for a in self.annotations]).astype(np.float32)

    def boxes(self):
        return self._boxes

    def initial_box(self) -> np.ndarray:
        """The first box, read from the first annotation line only."""
        return read_first_annotation(self.seq_dir)

    def gt_track(self):
        t = np.array([_t_us(k, self.fps) for k in range(len(self.files))], np.int64)
        return t, self._boxes.copy()


def write_nfs_sequence(root: str, name: str, source_or_frames, n_frames: Optional[int] = None,
                       *, label: str = "object", quality: int = 100, overwrite: bool = False,
                       progress=None) -> str:
    """Write frames (a FrameSource at 240 fps, or an iterable of :class:`Frame` or images)
    as the NFS sequence ``root/name`` and return its path.  Built in a temporary directory
    next to it and renamed into place, so a crash leaves no half-written sequence.

    Boxes are written with 3 decimals (sub-pixel ground truth; readers such as numpy
    loadtxt accept them); a missing or NaN box is written as lost.
    ``progress(n_done, n_total)`` is called after each frame.
    """
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name or ""):
        raise ValueError(f"sequence name {name!r} must be a plain file name ([A-Za-z0-9_.-])")
    fps = getattr(source_or_frames, "fps", None)
    if fps is not None and abs(float(fps) - NFS_FPS) > 1e-6:
        raise ValueError(f"the NFS layout is {NFS_FPS:g} fps but the source runs at {fps:g} fps")
    if n_frames is None:
        try:
            n_total = len(source_or_frames)
        except TypeError:
            raise ValueError("the source has no length: pass n_frames") from None
    else:
        if n_frames < 1:
            raise ValueError(f"n_frames must be >= 1, got {n_frames}")
        n_total = int(n_frames)
    os.makedirs(root, exist_ok=True)
    final = os.path.join(root, name)
    if os.path.exists(final) and not overwrite:
        raise FileExistsError(f"{final} already exists (pass overwrite=True to replace it)")
    tmp = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root)
    try:
        fdir = os.path.join(tmp, "240", name)
        os.makedirs(fdir)
        lines = []
        k = 0
        shape = None
        for item in source_or_frames:
            if k >= n_total:
                break
            img, box = (item.image, item.box) if isinstance(item, Frame) else (item, None)
            img = to_luminance(img)
            if shape is None:
                shape = img.shape
            elif img.shape != shape:
                raise ValueError(f"frame {k} is {img.shape[1]}x{img.shape[0]}, "
                                 f"the first was {shape[1]}x{shape[0]}")
            path = os.path.join(fdir, f"{k + 1:05d}.jpg")
            u8 = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
            if not cv2.imwrite(path, u8, [cv2.IMWRITE_JPEG_QUALITY, int(quality)]):
                raise OSError(f"could not write {path}")
            if box is None or not np.all(np.isfinite(np.asarray(box, np.float64))):
                coords, lost = (0.0, 0.0, 0.0, 0.0), 1
            else:
                x, y, w, h = (float(v) for v in np.asarray(box, np.float64).reshape(4))
                coords, lost = (x, y, x + w, y + h), 0
            lines.append("1 {:.3f} {:.3f} {:.3f} {:.3f} {} {} 0 0 \"{}\"\n".format(
                *coords, k + 1, lost, label))
            k += 1
            if progress is not None:
                progress(k, n_total)
        if k < n_total:
            raise ValueError(f"the source ended after {k} frames, {n_total} were requested")
        with open(os.path.join(tmp, "240", name + ".txt"), "w") as f:
            f.writelines(lines)
        if os.path.exists(final):   # overwrite: move the old one aside, then swap in
            old = tempfile.mkdtemp(prefix=f".{name}.old-", dir=root)
            os.replace(final, os.path.join(old, name))
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


# --------------------------------------------------------------------------- factory

_OPEN_KW = {"seed", "fps", "width", "height", "n_frames", "duration_s", "cmd_fn", "pattern"}


def _is_nfs_dir(path: str) -> bool:
    try:
        _nfs_paths(path)
        return True
    except FileNotFoundError:
        return False


def open_source(spec: str, **kw) -> FrameSource:
    """Open a frame source from a string.

    ``world`` / ``world:SEED``: the predator-prey arena (predator pursues the prey from a
    standoff by default, ``cmd_fn=None`` leaves it to ``world.set_cmd``; endless unless
    ``duration_s``); ``scenes:SEED``: a procedural tracking sequence (``n_frames``, default
    2400 = 10 s); a video file; an NFS sequence directory; an image folder (``fps``,
    default 240, ``pattern``).  Keywords: seed, fps, width, height, n_frames, duration_s,
    cmd_fn, pattern (those that do not apply to the spec are ignored).
    """
    bad = sorted(set(kw) - _OPEN_KW)
    if bad:
        raise TypeError(f"open_source() got unknown keyword(s) {bad}; known: {sorted(_OPEN_KW)}")
    spec = str(spec).strip()
    head, _, tail = spec.partition(":")
    if head in ("world", "scenes") and not os.path.exists(spec):
        seed = kw.get("seed") or 0
        if tail:
            try:
                seed = int(tail)
            except ValueError:
                raise ValueError(f"source {spec!r}: the seed after ':' must be an integer") from None
        size = dict(width=int(kw.get("width") or 240), height=int(kw.get("height") or 180),
                    fps=float(kw.get("fps") or 240.0))
        if head == "world":
            from dashnet_ros.world.predator_prey import PredatorPreyWorld, pursuit_controller

            cmd_fn = kw.get("cmd_fn", "follow")
            if cmd_fn == "follow":
                cmd_fn = pursuit_controller(v_frac=0.8, standoff_m=0.6)
            world = PredatorPreyWorld(seed=seed, **size)
            return world.as_source(duration_s=kw.get("duration_s"), cmd_fn=cmd_fn)
        from dashnet_ros.world.scenes import render_sequence

        return render_sequence(seed, int(kw.get("n_frames") or 2400), **size)
    if os.path.isfile(spec):
        return VideoSource(spec, fps=kw.get("fps"))
    if os.path.isdir(spec):
        if _is_nfs_dir(spec):
            return NFSSequence(spec)
        return ImageFolderSource(spec, float(kw.get("fps") or NFS_FPS), kw.get("pattern"))
    raise FileNotFoundError(f"source {spec!r} is not 'world', 'world:SEED', 'scenes:SEED', "
                            "an existing video file, an NFS sequence directory or an image folder")
