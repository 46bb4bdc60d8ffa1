"""Pacing sensor time against wall time (simulator and bag replay share it)."""
from __future__ import annotations

import time


class Pacer:
    """Sleep so that sensor time ``t_us`` is reached at ``t0_wall + (t_us - t0_us) / factor``.

    ``realtime_factor`` <= 0 means as fast as possible (never sleeps).  If the consumer
    falls behind, ``lag_s`` grows and no catch-up burst is attempted beyond that.
    """

    def __init__(self, realtime_factor: float = 1.0):
        if realtime_factor < 0:
            raise ValueError(f"realtime_factor must be >= 0, got {realtime_factor}")
        self.factor = realtime_factor
        self._t0_us = None
        self._t0_wall = None
        self.lag_s = 0.0

    def reset(self) -> None:
        self._t0_us = None

    def wait_until(self, t_us: int) -> None:
        if self.factor <= 0:
            return
        now = time.monotonic()
        if self._t0_us is None or t_us < self._t0_us:  # first call, or time went backwards (loop)
            self._t0_us, self._t0_wall = t_us, now
            return
        target = self._t0_wall + (t_us - self._t0_us) / 1e6 / self.factor
        delay = target - now
        if delay > 0:
            time.sleep(delay)
            self.lag_s = 0.0
        else:
            self.lag_s = -delay
