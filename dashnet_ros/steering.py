"""Steering law: a tracked box in the predator's camera -> a velocity command (ROS-free).

The predator turns toward the target's bearing and drives toward it until the target's
box fills ``target_fill`` of the view; when no valid box has been seen for
``lost_timeout_us`` of sensor time it stops.  Alongside the command it reports the
PRED18-style steering decision (refs [24, 25] of the paper): the target is in the
``left``, ``center`` or ``right`` part of the image, or ``not_visible``.

Geometry (pinhole, like the world's camera): ``bearing = atan((u - cx) / fx)`` with
``u`` the box centre column; positive bearing = target to the right.  Commands follow
REP 103: ``v_mps`` forward, ``omega_radps`` counter-clockwise (a target on the right
gives a negative, clockwise turn rate)::

    omega = clip(-k_turn * bearing, -max_angular, max_angular)
    fill  = max(w / width, h / height)
    v     = max_linear * clip(1 - fill / target_fill, 0, 1) * max(cos(bearing), 0)^2

A NaN box (tracker has no estimate) within ``lost_timeout_us`` of the last valid one
keeps the last command (a one-window drop-out does not jerk the robot).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional

from .boxes import usable

LEFT, CENTER, RIGHT, NOT_VISIBLE = "left", "center", "right", "not_visible"
DECISIONS = (LEFT, CENTER, RIGHT, NOT_VISIBLE)


@dataclass(frozen=True)
class SteeringConfig:
    """Camera and controller settings.

    ``fx_px``/``cx_px``: pinhole focal length and principal point column; None = from
    ``hfov_deg`` and ``width`` (``fx = width / 2 / tan(hfov / 2)``, ``cx = (width - 1) / 2``).
    ``center_fraction``: width of the middle ("center") band of the image, as a fraction
    of the image width (PRED18 splits the view in thirds: 1/3).
    """

    width: int = 240
    height: int = 180
    hfov_deg: float = 60.0
    fx_px: Optional[float] = None
    cx_px: Optional[float] = None
    k_turn: float = 4.0
    max_angular_radps: float = 4.0
    max_linear_mps: float = 0.8
    target_fill: float = 1.0
    center_fraction: float = 1.0 / 3.0
    lost_timeout_us: int = 250_000

    def __post_init__(self):
        checks = (
            ("width", self.width > 0), ("height", self.height > 0),
            ("hfov_deg", 0 < self.hfov_deg < 180),
            ("fx_px", self.fx_px is None or self.fx_px > 0),
            ("k_turn", self.k_turn >= 0), ("max_angular_radps", self.max_angular_radps >= 0),
            ("max_linear_mps", self.max_linear_mps >= 0), ("target_fill", 0 < self.target_fill <= 1),
            ("center_fraction", 0 < self.center_fraction < 1), ("lost_timeout_us", self.lost_timeout_us > 0),
        )
        bad = [name for name, ok in checks if not ok]
        if bad:
            raise ValueError("invalid steering setting(s): " + ", ".join(f"{n}={getattr(self, n)!r}" for n in bad))

    @property
    def fx(self) -> float:
        if self.fx_px is not None:
            return float(self.fx_px)
        return self.width / 2.0 / math.tan(math.radians(self.hfov_deg) / 2.0)

    @property
    def cx(self) -> float:
        return float(self.cx_px) if self.cx_px is not None else (self.width - 1) / 2.0


@dataclass(frozen=True)
class Command:
    """One steering output.  ``bearing_rad``/``fill`` are NaN when no target is used."""

    v_mps: float
    omega_radps: float
    decision: str
    bearing_rad: float = math.nan
    fill: float = math.nan

    @property
    def stopped(self) -> bool:
        return self.v_mps == 0.0 and self.omega_radps == 0.0


STOP = Command(0.0, 0.0, NOT_VISIBLE)


def _box4(box) -> list:
    """``(x, y, w, h)`` as four Python floats (the law runs for every fused box it gets:
    plain floats, no numpy per call)."""
    b = box.tolist() if hasattr(box, "tolist") else list(box)
    if len(b) == 1 and hasattr(b[0], "__len__"):
        b = list(b[0])
    if len(b) != 4:
        raise ValueError(f"a box is 4 numbers (x, y, w, h), got {len(b)}")
    return [float(v) for v in b]


def bearing_rad(box, fx_px: float, cx_px: float) -> float:
    """Horizontal angle of the box centre from the optical axis (positive = right)."""
    b = _box4(box)
    return math.atan((b[0] + b[2] / 2.0 - cx_px) / fx_px)


def decision(box, width: int, center_fraction: float = 1.0 / 3.0) -> str:
    """PRED18 decision for a box: which band of the image its centre is in."""
    b = _box4(box)
    if not all(map(math.isfinite, b)):
        return NOT_VISIBLE
    u = b[0] + b[2] / 2.0
    lo = width * (1.0 - center_fraction) / 2.0
    hi = width * (1.0 + center_fraction) / 2.0
    return LEFT if u < lo else RIGHT if u > hi else CENTER


def command_for_box(box, cfg: SteeringConfig) -> Command:
    """The command for one valid box (see the module doc for the law)."""
    b = _box4(box)
    if not usable(b):
        return STOP
    beta = bearing_rad(b, cfg.fx, cfg.cx)
    omega = min(max(-cfg.k_turn * beta, -cfg.max_angular_radps), cfg.max_angular_radps)
    fill = max(b[2] / cfg.width, b[3] / cfg.height)
    approach = min(max(1.0 - fill / cfg.target_fill, 0.0), 1.0)
    v = cfg.max_linear_mps * approach * max(math.cos(beta), 0.0) ** 2
    return Command(float(v), omega + 0.0, decision(b, cfg.width, cfg.center_fraction), beta, float(fill))


class SteeringLaw:
    """Stateful wrapper of :func:`command_for_box`: holds the last command through short
    drop-outs and stops after ``lost_timeout_us`` without a valid box (sensor time)."""

    def __init__(self, cfg: SteeringConfig = SteeringConfig()):
        self.cfg = cfg
        self.reset()

    def reset(self) -> None:
        self.last_valid_t_us: Optional[int] = None
        self.last: Command = STOP

    def set_camera(self, width: int, height: int, fx_px: Optional[float] = None,
                   cx_px: Optional[float] = None) -> None:
        """Use a calibrated camera (e.g. from a CameraInfo) instead of ``hfov_deg``."""
        self.cfg = replace(self.cfg, width=int(width), height=int(height), fx_px=fx_px, cx_px=cx_px)

    def update(self, t_us: int, box) -> Command:
        """Command for a box at sensor time ``t_us`` (NaN box = no estimate)."""
        b = _box4(box)
        if usable(b):
            self.last_valid_t_us = int(t_us)
            self.last = command_for_box(b, self.cfg)
            return self.last
        return self.check(t_us)

    def check(self, t_us: int) -> Command:
        """Command at ``t_us`` without a new valid box: the last one, or STOP once lost."""
        if self.last_valid_t_us is None or int(t_us) - self.last_valid_t_us > self.cfg.lost_timeout_us:
            self.last = STOP
        return self.last

    def lose(self) -> Command:
        """Declare the target lost now (e.g. no box messages at all for a while)."""
        self.last = STOP
        return STOP
