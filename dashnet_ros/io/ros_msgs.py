"""ROS message <-> numpy conversion (the only place nodes touch message layouts).

``sensor_msgs/Image`` is converted with numpy (the PyPI cv_bridge is broken with
numpy >= 2.3): rows may be padded (``step`` > width * bytes per pixel) and multi-byte
encodings may be big-endian.  Array fields are filled with ``array.frombytes``, which is
~50x faster than assigning a numpy array to a message field.
"""
from __future__ import annotations

import math
from math import isfinite
from array import array
from typing import NamedTuple

import numpy as np

from ..boxes import usable
from ..events import EVENT_DTYPE, from_buffer, to_bytes
from ..events import check as check_events

# encoding -> (numpy dtype, channels)
_ENCODINGS = {
    "mono8": (np.uint8, 1),
    "8UC1": (np.uint8, 1),
    "mono16": (np.uint16, 1),
    "16UC1": (np.uint16, 1),
    "bgr8": (np.uint8, 3),
    "rgb8": (np.uint8, 3),
    "8UC3": (np.uint8, 3),
    "bgra8": (np.uint8, 4),
    "rgba8": (np.uint8, 4),
    "32FC1": (np.float32, 1),
}


class MessageError(ValueError):
    """A message that cannot be converted; the text names the field and the problem."""


def stamp_to_us(stamp) -> int:
    return int(stamp.sec) * 1_000_000 + int(stamp.nanosec) // 1000


def us_to_stamp(t_us: int, stamp) -> None:
    """Fill a ``builtin_interfaces/Time`` from integer microseconds (in place)."""
    t_us = int(t_us)
    stamp.sec = t_us // 1_000_000
    stamp.nanosec = (t_us % 1_000_000) * 1000


def image_to_numpy(msg) -> np.ndarray:
    """``sensor_msgs/Image`` -> (H, W) or (H, W, C) array of the encoding's dtype (no colour
    conversion; see :func:`image_to_gray`)."""
    enc = msg.encoding
    if enc not in _ENCODINGS:
        raise MessageError(f"Image encoding '{enc}' is not supported (use one of {sorted(_ENCODINGS)})")
    dtype, ch = _ENCODINGS[enc]
    dt = np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h == 0 or w == 0:
        raise MessageError(f"Image has zero size ({w}x{h})")
    row_bytes = w * ch * dt.itemsize
    if step < row_bytes:
        raise MessageError(f"Image step {step} is smaller than width*channels*bytes = {row_bytes}")
    buf = np.frombuffer(memoryview(msg.data).cast("B"), dtype=np.uint8)
    if buf.size < step * h:
        raise MessageError(f"Image data holds {buf.size} bytes, expected step*height = {step * h}")
    rows = buf[: step * h].reshape(h, step)[:, :row_bytes]
    img = np.ascontiguousarray(rows).view(dt).reshape((h, w, ch) if ch > 1 else (h, w))
    return img.astype(dt.newbyteorder("="), copy=False)


def image_to_gray(msg) -> np.ndarray:
    """``sensor_msgs/Image`` -> uint8 (H, W) grey (BT.601 for colour encodings)."""
    import cv2

    img = image_to_numpy(msg)
    enc = msg.encoding
    if enc in ("bgr8", "8UC3"):
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    elif enc == "rgb8":
        img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    elif enc == "bgra8":
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY)
    elif enc == "rgba8":
        img = cv2.cvtColor(img, cv2.COLOR_RGBA2GRAY)
    elif img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype == np.float32:
        img = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return img


def numpy_to_image(img: np.ndarray, msg, encoding: str | None = None):
    """Fill a ``sensor_msgs/Image`` from a uint8 grey or BGR array (in place, returns msg)."""
    img = np.ascontiguousarray(img)
    if encoding is None:
        encoding = "mono8" if img.ndim == 2 else "bgr8"
    dtype, ch = _ENCODINGS[encoding]
    if img.dtype != dtype or (img.ndim == 2) != (ch == 1):
        raise MessageError(f"array of {img.dtype} {img.shape} does not match encoding {encoding}")
    msg.height, msg.width = int(img.shape[0]), int(img.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(img.shape[1] * ch * img.itemsize)
    msg.data = array("B", img.tobytes())
    return msg


def events_to_msg(events: np.ndarray, msg, *, width: int, height: int, t0_us: int, t1_us: int):
    """Fill a ``dashnet_ros/EventPacket`` covering ``[t0_us, t1_us)`` (in place, returns msg)."""
    msg.width, msg.height = int(width), int(height)
    first = int(events["t_us"][0]) if len(events) else int(t0_us)
    us_to_stamp(first, msg.header.stamp)
    msg.time_base_us = first
    msg.end_us = int(t1_us)
    msg.events = array("B", to_bytes(events))
    return msg


def msg_to_events(msg) -> np.ndarray:
    """``dashnet_ros/EventPacket`` -> event array (validated: record size, coordinates, order).

    Raises :class:`MessageError` naming the problem; the returned array is a read-only view.
    """
    try:
        ev = from_buffer(msg.events)
    except ValueError as e:
        raise MessageError(str(e)) from None
    problem = check_events(ev, msg.width, msg.height)
    if problem:
        raise MessageError(problem)
    return ev


def box_to_msg(box, msg, *, t_us: int, source: int, score: float = 1.0, frame_id: str = "",
               velocity=None):
    """Fill a ``dashnet_ros/TrackedBox`` (in place, returns msg); a NaN or sizeless box ->
    valid = False (as :func:`msg_to_box` reads it).  ``velocity``: ``(vx, vy)`` of the
    centre in px/s (None or non-finite: 0, 0)."""
    b = np.asarray(box, dtype=np.float32).reshape(4).tolist()   # Python floats: this runs per SNN window
    valid = usable(b)
    us_to_stamp(t_us, msg.header.stamp)
    msg.header.frame_id = frame_id
    msg.x, msg.y, msg.w, msg.h = b if valid else (0.0, 0.0, 0.0, 0.0)
    msg.score = float(score)
    msg.source = int(source)
    msg.valid = valid
    # float32 now, as on the wire: a node reading the message in-process (deterministic
    # replay) then sees exactly what a subscriber would
    vx, vy = (0.0, 0.0) if velocity is None else np.asarray(velocity, np.float32).reshape(2).tolist()
    if not (valid and math.isfinite(vx) and math.isfinite(vy)):
        vx = vy = 0.0
    msg.vx, msg.vy = vx, vy
    return msg


_ARRAY_FLOATS = ("x", "y", "w", "h", "score", "vx", "vy")     # TrackedBoxArray's float arrays


def boxes_to_array_msg(t_us, boxes, msg, *, source: int, frame_id: str = "", scores=None, velocities=None):
    """Fill a ``dashnet_ros/TrackedBoxArray`` with ``N`` boxes (in place, returns msg).

    ``t_us [N]`` sensor instants in time order; ``boxes [N, 4]`` ``(x, y, w, h)``: a
    non-finite or sizeless box is sent as not valid (zeros); ``scores [N]`` (default 1);
    ``velocities [N, 2]`` centre px/s (default, non-finite or invalid box: 0).
    ``header.stamp`` = the last box's instant."""
    # Python lists, not numpy: a batch holds a handful of boxes, where numpy's per-call
    # overhead would dominate (this runs for every SNN and fused array, usually right after
    # the process woke up, when everything costs several times its figure in a hot loop)
    flat = _float32_flat(boxes)
    n = len(flat) // 4
    if len(flat) != 4 * n:
        raise ValueError(f"expected rows of 4 numbers, got {len(flat)} numbers")
    t = array("q", [int(v) for v in t_us])
    if len(t) != n:
        raise ValueError(f"{len(t)} stamps for {n} boxes")
    xs, ys, ws, hs = flat[0::4], flat[1::4], flat[2::4], flat[3::4]
    valid = [usable(b) for b in zip(xs, ys, ws, hs)]
    if not all(valid):
        xs, ys, ws, hs = ([v if ok else 0.0 for v, ok in zip(c, valid)] for c in (xs, ys, ws, hs))
    if velocities is None:
        vx = vy = [0.0] * n
    else:
        fv = _float32_flat(velocities)
        if len(fv) != 2 * n:
            raise ValueError(f"{len(fv) // 2} velocities for {n} boxes")
        vx, vy = fv[0::2], fv[1::2]
        keep = [ok and isfinite(a + b) for a, b, ok in zip(vx, vy, valid)]
        if not all(keep):
            vx, vy = ([v if k else 0.0 for v, k in zip(c, keep)] for c in (vx, vy))
    score = array("f", [1.0] * n if scores is None else [float(v) for v in scores])
    if len(score) != n:
        raise ValueError(f"{len(score)} scores for {n} boxes")
    us_to_stamp(t[-1] if n else 0, msg.header.stamp)
    msg.header.frame_id = frame_id
    msg.source = int(source)
    msg.t_us = t
    msg.x, msg.y, msg.w, msg.h = array("f", xs), array("f", ys), array("f", ws), array("f", hs)
    msg.score = score
    msg.vx, msg.vy = array("f", vx), array("f", vy)
    msg.valid = valid
    return msg


def _float32_flat(rows) -> list:
    """``[N, k]`` numbers (an array, or a sequence of rows: lists, tuples, arrays) -> the
    ``N * k`` values, row after row, as float32-valued Python floats."""
    if isinstance(rows, np.ndarray):
        return rows.astype(np.float32, copy=False).reshape(-1).tolist()
    return array("f", [float(v) for r in rows for v in r]).tolist()


class BoxBatch(NamedTuple):
    t_us: np.ndarray          # int64 [N]
    boxes: np.ndarray         # float32 [N, 4], NaN where there is no box
    scores: np.ndarray        # float32 [N]
    velocities: np.ndarray    # float32 [N, 2] px/s, 0 where unknown
    bad: int                  # boxes marked valid that were non-finite or sizeless (now NaN)


class BoxRows(NamedTuple):
    t_us: list                # int [N]
    boxes: list               # [N] lists [x, y, w, h] of float32-valued floats, NaN where there is no box
    scores: list              # float [N]
    velocities: list          # [N] lists [vx, vy] px/s, 0 where unknown
    bad: int                  # boxes marked valid that were non-finite or sizeless (now NaN)


_NAN4 = [math.nan] * 4


def array_msg_rows(msg) -> BoxRows:
    """``dashnet_ros/TrackedBoxArray`` (rclpy or rosbags) -> :class:`BoxRows` of Python
    lists (for the nodes that handle one array per event packet: a handful of boxes,
    where numpy's per-call cost would be most of the work); boxes not valid, non-finite or
    sizeless come back NaN with velocity 0.  Raises :class:`MessageError` when the arrays'
    lengths differ."""
    t = [int(v) for v in msg.t_us]
    cols = [getattr(msg, f) for f in _ARRAY_FLOATS]
    cols = [c.tolist() if hasattr(c, "tolist") else list(c) for c in cols]
    valid = [bool(v) for v in msg.valid]
    n = len(t)
    if any(len(c) != n for c in cols) or len(valid) != n:
        lengths = dict(t_us=n, valid=len(valid), **{f: len(c) for f, c in zip(_ARRAY_FLOATS, cols)})
        raise MessageError(f"TrackedBoxArray arrays differ in length: {lengths}")
    x, y, w, h, score, vx, vy = cols
    boxes, vel, bad = [], [], 0
    for i in range(n):
        b = [x[i], y[i], w[i], h[i]]
        ok = usable(b)
        bad += valid[i] and not ok
        if valid[i] and ok:
            boxes.append(b)
            v = [vx[i], vy[i]]
            vel.append(v if isfinite(v[0]) and isfinite(v[1]) else [0.0, 0.0])
        else:
            boxes.append(list(_NAN4))
            vel.append([0.0, 0.0])
    return BoxRows(t, boxes, score, vel, bad)


def array_msg_to_boxes(msg) -> BoxBatch:
    """``dashnet_ros/TrackedBoxArray`` (rclpy or rosbags) -> :class:`BoxBatch` (numpy):
    :func:`array_msg_rows` as arrays."""
    r = array_msg_rows(msg)
    n = len(r.t_us)
    return BoxBatch(np.array(r.t_us, np.int64).reshape(n), np.array(r.boxes, np.float32).reshape(n, 4),
                    np.array(r.scores, np.float32).reshape(n), np.array(r.velocities, np.float32).reshape(n, 2),
                    r.bad)


def pack_boxes(boxes, msg):
    """``TrackedBox`` messages (one source, time order) -> ``TrackedBoxArray`` ``msg``,
    field for field (in place, returns msg; header from the last box)."""
    boxes = list(boxes)
    if boxes:
        msg.header.stamp = boxes[-1].header.stamp
        msg.header.frame_id = boxes[-1].header.frame_id
        msg.source = int(boxes[-1].source)
    msg.t_us = array("q", [stamp_to_us(b.header.stamp) for b in boxes])
    for f in _ARRAY_FLOATS:
        setattr(msg, f, array("f", [getattr(b, f) for b in boxes]))
    msg.valid = [bool(b.valid) for b in boxes]
    return msg


def unpack_boxes(msg, box_type) -> list:
    """``TrackedBoxArray`` -> one ``box_type`` (``TrackedBox``) message per box, field for
    field (the inverse of :func:`pack_boxes`)."""
    out = []
    for i, t in enumerate(msg.t_us):
        b = box_type()
        us_to_stamp(int(t), b.header.stamp)
        b.header.frame_id = msg.header.frame_id
        b.source = msg.source
        for f in _ARRAY_FLOATS:
            setattr(b, f, float(getattr(msg, f)[i]))
        b.valid = bool(msg.valid[i])
        out.append(b)
    return out


def box_batch(msg) -> BoxBatch:
    """A ``TrackedBoxArray`` or a single ``TrackedBox`` (rclpy or rosbags) as a
    :class:`BoxBatch` (one row for a single box)."""
    if hasattr(msg, "t_us"):
        return array_msg_to_boxes(msg)
    t, box = msg_to_box(msg)
    bad = int(bool(msg.valid) and not np.isfinite(box).all())
    return BoxBatch(np.array([t], np.int64), box.reshape(1, 4), np.array([msg.score], np.float32),
                    np.array([msg_to_velocity(msg)], np.float32), bad)


def msg_to_velocity(msg) -> tuple[float, float]:
    """``(vx, vy)`` px/s of a ``dashnet_ros/TrackedBox`` (0, 0 for an invalid box or
    non-finite values)."""
    vx, vy = float(msg.vx), float(msg.vy)
    if not msg.valid or not (math.isfinite(vx) and math.isfinite(vy)):
        return 0.0, 0.0
    return vx, vy


def msg_to_box(msg) -> tuple[int, np.ndarray]:
    """``dashnet_ros/TrackedBox`` -> (t_us, box); invalid or non-finite boxes come back NaN."""
    b = np.array([msg.x, msg.y, msg.w, msg.h], dtype=np.float32)
    v = b.tolist()
    if not msg.valid or not all(map(math.isfinite, v)) or v[2] <= 0 or v[3] <= 0:
        b[:] = np.nan
    return stamp_to_us(msg.header.stamp), b


__all__ = [
    "EVENT_DTYPE",
    "BoxBatch",
    "BoxRows",
    "MessageError",
    "array_msg_rows",
    "array_msg_to_boxes",
    "box_batch",
    "boxes_to_array_msg",
    "box_to_msg",
    "events_to_msg",
    "image_to_gray",
    "image_to_numpy",
    "msg_to_box",
    "msg_to_events",
    "msg_to_velocity",
    "numpy_to_image",
    "pack_boxes",
    "unpack_boxes",
    "stamp_to_us",
    "us_to_stamp",
]
