"""DVS events as one numpy structured array (the core's only event representation).

Each record is 16 bytes, little-endian: ``t_us`` int64 (sensor time, microseconds),
``x`` uint16, ``y`` uint16 (pixel column / row, origin top-left), ``p`` int8 (+1 ON,
-1 OFF), 3 padding bytes.  The same bytes fill ``dashnet_ros/msg/EventPacket.events``
in one copy.  Arrays are sorted by ``t_us`` (stable) wherever the core hands them on.
"""
from __future__ import annotations

import numpy as np

EVENT_DTYPE = np.dtype(
    {
        "names": ["t_us", "x", "y", "p"],
        "formats": ["<i8", "<u2", "<u2", "i1"],
        "offsets": [0, 8, 10, 12],
        "itemsize": 16,
    }
)

_RECORD = np.dtype((np.void, EVENT_DTYPE.itemsize))


def empty_events(n: int = 0) -> np.ndarray:
    """A zero-filled event array of length ``n``."""
    return np.zeros(n, dtype=EVENT_DTYPE)


def make_events(x, y, t_us, p, *, sort: bool = True) -> np.ndarray:
    """Build an event array from four parallel arrays (sorted by time unless ``sort=False``)."""
    x = np.asarray(x)
    n = x.shape[0]
    ev = np.empty(n, dtype=EVENT_DTYPE)
    ev["x"] = x
    ev["y"] = y
    ev["t_us"] = t_us
    ev["p"] = p
    if sort and n > 1 and np.any(np.diff(ev["t_us"]) < 0):
        ev = ev[np.argsort(ev["t_us"], kind="stable")]
    return ev


def concat_events(chunks) -> np.ndarray:
    """Concatenate event arrays already in time order (no re-sort)."""
    chunks = [c for c in chunks if len(c)]
    if not chunks:
        return empty_events()
    if all(c.dtype == EVENT_DTYPE for c in chunks):
        # as raw 16-byte records: ~10x faster than numpy's field-by-field structured copy
        # (this runs for every event packet on the SNN's path)
        return np.concatenate([c.view(_RECORD) for c in chunks]).view(EVENT_DTYPE)
    # dtype= keeps the 16-byte record: a plain concatenate drops the padding (13 bytes).
    return np.concatenate(chunks, dtype=EVENT_DTYPE)


def is_sorted(ev: np.ndarray) -> bool:
    return len(ev) < 2 or bool(np.all(np.diff(ev["t_us"]) >= 0))


def to_bytes(ev: np.ndarray) -> bytes:
    """Raw little-endian bytes for ``EventPacket.events``."""
    return np.ascontiguousarray(ev, dtype=EVENT_DTYPE).tobytes()


def from_buffer(buf) -> np.ndarray:
    """Inverse of :func:`to_bytes` (zero-copy view).  Raises ValueError on a bad length."""
    mv = memoryview(buf).cast("B")
    if mv.nbytes % EVENT_DTYPE.itemsize:
        raise ValueError(
            f"event buffer of {mv.nbytes} bytes is not a multiple of the "
            f"{EVENT_DTYPE.itemsize}-byte event record"
        )
    return np.frombuffer(mv, dtype=EVENT_DTYPE)


def slice_time(ev: np.ndarray, t0_us: int, t1_us: int) -> np.ndarray:
    """Events with ``t0_us <= t_us < t1_us`` (``ev`` must be sorted)."""
    t = ev["t_us"]
    i0, i1 = np.searchsorted(t, [t0_us, t1_us], side="left")
    return ev[i0:i1]
