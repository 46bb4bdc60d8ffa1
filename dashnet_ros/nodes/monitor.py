"""``monitor`` node: watches the tracking graph and prints a one-line live status.

Subscribes (absolute graph topics, see :mod:`dashnet_ros.graph`) to the events, APS
images, the SNN/ANN/fused boxes (the SNN and fused ones as the per-packet arrays), the velocity commands and steering decisions, the
world's ground truth, distance and caught flag, and every ``status_period_s`` (wall
time) prints a line such as::

    t 3.25s | ev 1000Hz 1.62Mev/s aps 30 | snn 2083 ann 30 fused 2083 cmd 200 Hz | lat 4.1/12.3ms lag 1.9ms | IoU 0.71 (0.66) | 1.23m

The numbers (:class:`LiveStats`, ROS-free):

- **rates** are messages per second of *sensor* time: messages that arrived in the last
  ``window_s`` of wall time divided by the sensor time that passed meanwhile (the
  sensor clock is the latest ground-truth stamp, else the latest event packet end), so
  a graph running at ``realtime_factor`` 0.15 that keeps up shows the nominal rates
  (events 1000 packets/s, SNN and fused 2083/s for 480 µs windows, ANN 30/s);
- **latency** (``lat p50/p99``, wall ms): from an event packet's arrival here to the
  arrival of the first fused box whose window ends inside that packet's interval
  ``(t0, t1]`` -- the first output that used the packet's events.  It covers the SNN,
  the fuser and two DDS hops (not the simulator); being wall time, it does not scale
  with ``realtime_factor``.  Arrival = the middleware's reception time of the message
  in this process (``MessageInfo.received_timestamp``), so a monitor that falls behind
  does not inflate it; it is worked out half a second after the fact;
- **lag** (sensor ms): end of the latest event packet received before the fused box,
  minus the box's stamp -- how far the tracker output trails the sensor stream (grows
  without bound when the graph cannot keep up);
- **IoU**: the fused box against the ground truth linearly interpolated to the box's
  stamp (the world publishes it at every camera frame, 240 Hz); boxes while the target
  is not visible are not scored; live value = mean over the last status period,
  in brackets the mean so far;
- SNN packets: the event packets the SNN node took (its ``/diagnostics`` counters) over
  those this monitor received up to the same stamp -- below 1 the SNN's input queue
  overflowed, i.e. the graph did not keep up;
- distance (m) and caught from the world (closed loop); the catch time is the latest
  ground-truth stamp received before the first ``caught = true`` (the world publishes
  both for the same frame, ground truth first).

The ``dashnet demo`` command runs this node in its own process and also keeps what its
video needs (``keep_video``).
"""
from __future__ import annotations

import math
import sys
import time
from collections import deque

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Twist
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Bool, Float32, String

from .. import graph
from ..msg import EventPacket, TrackedBox, TrackedBoxArray
from .common import Param, declare, positive, run_node, sensor_qos

VIDEO_EVENT_WINDOW_US = 5000


def _pct(x, q):
    return float(np.percentile(x, q)) if len(x) else float("nan")


class LiveStats:
    """Rates, latency, lag and IoU of a running graph (see the module docstring).

    Feed it with the ``on_*`` methods (``wall_s``: a monotonic clock in seconds); read
    :meth:`status_line` and :meth:`summary`.
    """

    TOPICS = ("events", "aps", "snn", "ann", "fused", "cmd_vel", "decision", "ground_truth")
    SETTLE_S = 0.5   # latency / lag are worked out this long (reception time) after the fact

    def __init__(self, window_s: float = 2.0, gt_keep_us: int = 2_000_000):
        self.window_s = float(window_s)
        self.gt_keep_us = int(gt_keep_us)
        self.clock_us = None                     # sensor clock: latest GT stamp (else event end)
        self._clock_from_gt = False
        self._clock_hist = deque()               # (wall_s, clock_us)
        self.arrivals = {k: deque() for k in self.TOPICS}
        self.counts = {k: 0 for k in self.TOPICS}
        self.stamps = {k: [None, None] for k in self.TOPICS}       # first, last stamp
        self.clock_span = {k: [None, None] for k in self.TOPICS}   # sensor clock at first / last arrival
        self.n_events = 0
        self.first_event_us = None
        self.last_event_end_us = None
        self._rx_events = deque()                # (wall, t0, t1) not yet settled
        self._rx_fused = deque()                 # (wall, t_us) not yet settled
        self._pending = deque()                  # (t0, t1, wall) of packets not yet answered
        self._last_end_rx = None                 # end of the latest packet received (settled)
        self.latency_ms = []
        self.lag_ms = []
        self._gt_t = deque()
        self._gt_box = deque()
        self._unscored = {k: deque() for k in ("snn", "ann", "fused")}
        self.ious = {k: [] for k in ("snn", "ann", "fused")}
        self._period_iou = []
        self.distance_m = None
        self.distance_start_m = None
        self.distance_min_m = None
        self.caught = False
        self.caught_at_us = None
        self._packet_ends = deque()              # end stamps of the packets received here
        self.snn_packets = None                  # (packets the SNN node took, its last packet end)

    # -- clock ------------------------------------------------------------------------
    def _advance_clock(self, t_us: int, wall_s: float, from_gt: bool) -> None:
        if from_gt:
            self._clock_from_gt = True
        elif self._clock_from_gt:
            return
        if self.clock_us is None or t_us > self.clock_us:
            self.clock_us = int(t_us)
            self._clock_hist.append((wall_s, self.clock_us))
            while len(self._clock_hist) > 2 and self._clock_hist[1][0] < wall_s - self.window_s:
                self._clock_hist.popleft()
        elif t_us < self.clock_us - 1_000_000:  # time went backwards (restart): start over
            self.clock_us = int(t_us)
            self._clock_hist.clear()
            self._clock_hist.append((wall_s, self.clock_us))

    def _arrive(self, kind: str, wall_s: float, stamp_us=None) -> None:
        self.counts[kind] += 1
        q = self.arrivals[kind]
        q.append(wall_s)
        while q and q[0] < wall_s - self.window_s:
            q.popleft()
        if stamp_us is not None:
            s = self.stamps[kind]
            if s[0] is None:
                s[0] = stamp_us
            s[1] = stamp_us
        if self.clock_us is not None:
            c = self.clock_span[kind]
            if c[0] is None:
                c[0] = self.clock_us
            c[1] = self.clock_us

    # -- inputs -----------------------------------------------------------------------
    def on_events(self, t0_us: int, t1_us: int, n: int, wall_s: float) -> None:
        self.n_events += int(n)
        if self.first_event_us is None:
            self.first_event_us = int(t0_us)
        self.last_event_end_us = int(t1_us)
        self._advance_clock(t1_us, wall_s, from_gt=False)
        self._arrive("events", wall_s, t0_us)
        self._rx_events.append((wall_s, int(t0_us), int(t1_us)))
        self._packet_ends.append(int(t1_us))
        self._settle(wall_s - self.SETTLE_S)

    def on_message(self, kind: str, wall_s: float, stamp_us=None) -> None:
        """A message of one of :attr:`TOPICS` without more to look at (APS, cmd_vel, decision)."""
        self._arrive(kind, wall_s, stamp_us)

    def on_ground_truth(self, t_us: int, box, wall_s: float) -> None:
        t_us = int(t_us)
        if self._gt_t and t_us < self._gt_t[-1]:
            self._gt_t.clear()
            self._gt_box.clear()
        self._gt_t.append(t_us)
        self._gt_box.append(np.asarray(box, np.float32).reshape(4))
        while len(self._gt_t) > 2 and self._gt_t[1] < t_us - self.gt_keep_us:
            self._gt_t.popleft()
            self._gt_box.popleft()
        self._advance_clock(t_us, wall_s, from_gt=True)
        self._arrive("ground_truth", wall_s, t_us)
        for kind in self._unscored:
            self._score_pending(kind)

    def on_box(self, kind: str, t_us: int, box, wall_s: float) -> None:
        """An SNN / ANN / fused box (NaN = no estimate)."""
        t_us = int(t_us)
        self._arrive(kind, wall_s, t_us)
        if kind == "fused":
            self._rx_fused.append((wall_s, t_us))
            self._settle(wall_s - self.SETTLE_S)
        q = self._unscored[kind]
        q.append((t_us, np.asarray(box, np.float32).reshape(4)))
        self._score_pending(kind)

    def on_distance(self, d_m: float, wall_s: float) -> None:
        self.distance_m = float(d_m)
        if self.distance_start_m is None:
            self.distance_start_m = float(d_m)
        self.distance_min_m = float(d_m) if self.distance_min_m is None else min(self.distance_min_m, float(d_m))

    def on_snn_counters(self, packets: int, last_end_us) -> None:
        """The SNN node's own counters (its /diagnostics): packets taken, last packet end."""
        if last_end_us is not None:
            self.snn_packets = (int(packets), int(last_end_us))

    def snn_packet_fraction(self):
        """Event packets the SNN node took / packets received here up to the same end stamp
        (below 1: the SNN's queue overflowed, it did not keep up)."""
        if self.snn_packets is None or not self._packet_ends:
            return None
        n, end = self.snn_packets
        seen = sum(1 for t in self._packet_ends if t <= end)
        return n / seen if seen else None

    def on_caught(self, caught: bool, wall_s: float) -> None:
        if caught and not self.caught:
            self.caught = True
            self.caught_at_us = self.clock_at(wall_s)

    def clock_at(self, wall_s: float):
        """The sensor clock as it was at reception time ``wall_s`` (within the rate window)."""
        best = None
        for w, c in self._clock_hist:
            if w > wall_s:
                break
            best = c
        return best if best is not None else self.clock_us

    # -- latency and lag, in the order of reception ------------------------------------
    def _settle(self, horizon_s: float) -> None:
        """Go through the packets and fused boxes received up to ``horizon_s`` in the order
        of their reception times (callbacks may run in another order when this process
        falls behind; reception times are the middleware's)."""
        ev, fu = self._rx_events, self._rx_fused
        while True:
            e = ev[0] if ev and ev[0][0] <= horizon_s else None
            f = fu[0] if fu and fu[0][0] <= horizon_s else None
            if e is None and f is None:
                return
            if e is not None and (f is None or e[0] <= f[0]):
                wall, t0, t1 = ev.popleft()
                self._pending.append((t0, t1, wall))
                self._last_end_rx = t1
                continue
            wall, t_us = fu.popleft()
            while self._pending and self._pending[0][1] < t_us:     # answered earlier / no window in it
                self._pending.popleft()
            if self._pending and self._pending[0][0] < t_us <= self._pending[0][1]:
                self.latency_ms.append((wall - self._pending.popleft()[2]) * 1e3)
            if self._last_end_rx is not None:
                self.lag_ms.append((self._last_end_rx - t_us) / 1e3)

    # -- IoU --------------------------------------------------------------------------
    def gt_at(self, t_us: int):
        """Ground truth interpolated to ``t_us`` (NaN when not visible at a neighbour), or
        None when the ground truth does not reach ``t_us`` (yet) or has gone past it."""
        if not self._gt_t or t_us > self._gt_t[-1] or t_us < self._gt_t[0]:
            return None
        ts = np.fromiter(self._gt_t, np.int64, len(self._gt_t))
        i1 = int(np.searchsorted(ts, t_us, side="left"))
        if ts[i1] == t_us:
            return self._gt_box[i1]
        i0 = i1 - 1
        w = (t_us - ts[i0]) / (ts[i1] - ts[i0])
        return ((1 - w) * self._gt_box[i0] + w * self._gt_box[i1]).astype(np.float32)

    def _score_pending(self, kind: str) -> None:
        from ..boxes import iou

        q = self._unscored[kind]
        while q:
            t_us, box = q[0]
            if self._gt_t and t_us > self._gt_t[-1]:
                return                       # wait for the ground truth to get there
            q.popleft()
            gt = self.gt_at(t_us)
            if gt is None or not np.all(np.isfinite(gt)):
                continue                     # too old, or target not visible: not scored
            v = float(iou(box, gt)) if np.all(np.isfinite(box)) else 0.0
            self.ious[kind].append(v)
            if kind == "fused":
                self._period_iou.append(v)

    # -- outputs ----------------------------------------------------------------------
    def rate_hz(self, kind: str) -> float:
        """Messages per second of sensor time over the last ``window_s`` of wall time."""
        if len(self._clock_hist) < 2:
            return float("nan")
        (w0, c0), (_, c1) = self._clock_hist[0], self._clock_hist[-1]
        if c1 <= c0:
            return float("nan")
        n = sum(1 for w in self.arrivals[kind] if w > w0)
        return n / ((c1 - c0) / 1e6)

    def status_line(self) -> str:
        def hz(k):
            r = self.rate_hz(k)
            return "-" if not math.isfinite(r) else f"{r:.0f}"

        t = f"{self.clock_us / 1e6:6.2f}s" if self.clock_us is not None else "   -  "
        ev_rate = self.rate_hz("events")
        evs = "-"
        if self.counts["events"] and math.isfinite(ev_rate):
            # events per sensor second over the same window, from the packet sizes
            evs = f"{self._recent_event_rate() / 1e6:.2f}Mev/s"
        if self._clock_hist:
            self._settle(self._clock_hist[-1][0] - self.SETTLE_S)
        lat = self.latency_ms[-200:]
        lag = self.lag_ms[-200:]
        piou = f"{np.mean(self._period_iou):.2f}" if self._period_iou else "-"
        allf = self.ious["fused"]
        miou = f"{np.mean(allf):.2f}" if allf else "-"
        self._period_iou = []
        dist = f"{self.distance_m:.2f}m" if self.distance_m is not None else "-"
        caught = f" CAUGHT at {self.caught_at_us / 1e6:.2f}s" if self.caught and self.caught_at_us is not None else (
            " CAUGHT" if self.caught else "")
        return (f"t {t} | ev {hz('events')}Hz {evs} aps {hz('aps')} | snn {hz('snn')} ann {hz('ann')} "
                f"fused {hz('fused')} cmd {hz('cmd_vel')} Hz | lat {_pct(lat, 50):.1f}/{_pct(lat, 99):.1f}ms "
                f"lag {_pct(lag, 50):.1f}ms | IoU {piou} ({miou}) | {dist}{caught}")

    def _recent_event_rate(self) -> float:
        # kept simple: mean events per packet so far x packet rate
        if not self.counts["events"]:
            return float("nan")
        return self.n_events / self.counts["events"] * self.rate_hz("events")

    def summary(self) -> dict:
        """Totals over the run: rates (sensor Hz), latency/lag percentiles, IoU, distance, catch."""
        self._settle(float("inf"))
        rates = {}
        for k in self.TOPICS:
            s0, s1 = self.stamps[k]
            c0, c1 = self.clock_span[k]
            n = self.counts[k]
            if s0 is not None and s1 is not None and s1 > s0 and n > 1:
                rates[k] = (n - 1) / ((s1 - s0) / 1e6)           # from the messages' own stamps
            elif c0 is not None and c1 is not None and c1 > c0 and n > 1:
                rates[k] = (n - 1) / ((c1 - c0) / 1e6)           # unstamped: sensor clock at arrival
            else:
                rates[k] = None
        span = None
        if self.first_event_us is not None and self.last_event_end_us is not None:
            span = (self.last_event_end_us - self.first_event_us) / 1e6

        def iou_stats(v):
            return {"mean": float(np.mean(v)) if v else None,
                    "success_0.5": float(np.mean(np.array(v) > 0.5)) if v else None, "n": len(v)}

        return {
            "sensor_time_s": self.clock_us / 1e6 if self.clock_us is not None else None,
            "messages": dict(self.counts),
            "rates_hz": rates,
            "events": self.n_events,
            "event_rate_per_s": self.n_events / span if span else None,
            "latency_ms": {"p50": _pct(self.latency_ms, 50), "p99": _pct(self.latency_ms, 99),
                           "mean": float(np.mean(self.latency_ms)) if self.latency_ms else None,
                           "n": len(self.latency_ms),
                           "definition": "wall time from an event packet's arrival to the first fused box whose "
                                         "window ends in the packet's interval (t0, t1]"},
            "lag_ms": {"p50": _pct(self.lag_ms, 50), "p99": _pct(self.lag_ms, 99),
                       "definition": "sensor time: latest event-packet end minus the fused box stamp, at its arrival"},
            "snn_packets": {"taken_by_snn": self.snn_packets[0] if self.snn_packets else None,
                            "fraction": self.snn_packet_fraction(),
                            "definition": "event packets the SNN node took (its /diagnostics counter) / "
                                          "packets this monitor received up to the same stamp"},
            "iou": {k: iou_stats(v) for k, v in self.ious.items()},
            "distance_m": {"start": self.distance_start_m, "final": self.distance_m, "min": self.distance_min_m},
            "caught": self.caught,
            "time_to_catch_s": self.caught_at_us / 1e6 if self.caught_at_us is not None else None,
        }


class VideoMaterial:
    """What the demo's video needs, kept compactly while the graph runs: APS frames, one
    event picture per video frame (polarity of the last event per pixel during the
    ``event_window_us`` before the frame instant) and the box tracks."""

    def __init__(self, video_fps: float = 60.0, event_window_us: int = VIDEO_EVENT_WINDOW_US):
        self.frame_us = 1e6 / video_fps
        self.event_window_us = int(event_window_us)
        self.aps = []                 # (t_us, uint8 image)
        self.event_pics = {}          # video frame index -> int8 (H, W)
        self.boxes = {k: [] for k in ("gt", "snn", "ann", "fused")}   # (t_us, box)
        self.distance = []            # (sensor clock at arrival, metres)

    def add_events(self, ev, t0_us: int, t1_us: int, width: int, height: int) -> None:
        if not len(ev):
            return
        k_first = int(math.ceil(t0_us / self.frame_us))
        k_last = int(math.floor((t1_us - 1 + self.event_window_us) / self.frame_us))
        t = ev["t_us"]
        for k in range(k_first, k_last + 1):
            tk = k * self.frame_us
            i0, i1 = np.searchsorted(t, [tk - self.event_window_us, tk])
            if i1 <= i0:
                continue
            pic = self.event_pics.get(k)
            if pic is None:
                pic = self.event_pics[k] = np.zeros((height, width), np.int8)
            sel = ev[i0:i1]
            pic[sel["y"], sel["x"]] = sel["p"]

    def add_box(self, kind: str, t_us: int, box) -> None:
        self.boxes[kind].append((int(t_us), np.asarray(box, np.float32).reshape(4)))


PARAMS = (
    Param("status_period_s", 1.0, "print the status line every this many seconds (wall time)", positive),
    Param("window_s", 2.0, "rates are averaged over this much wall time", positive),
    Param("print_status", True, "print the status line on stdout"),
    Param("ground_truth_topic", graph.TOPIC_WORLD_GROUND_TRUTH,
          "ground truth the IoU is computed against (/davis/ground_truth in open loop)"),
)


def _rx(info) -> float:
    """Reception time (s, system clock) of a message: the middleware's, else now."""
    t = info.get("received_timestamp") if info else None
    return t / 1e9 if t else time.time()


class MonitorNode(Node):
    def __init__(self, keep_video: bool = False, **kw):
        super().__init__("monitor", **kw)
        p = self.p = declare(self, PARAMS)
        self.stats = LiveStats(window_s=p["window_s"])
        self.video = VideoMaterial() if keep_video else None
        self.last_line = ""
        box_qos = 500
        sub = self.create_subscription
        sub(EventPacket, graph.TOPIC_EVENTS, self._on_events, sensor_qos(depth=1000))
        sub(Image, graph.TOPIC_IMAGE, self._on_image, sensor_qos(depth=20))
        # every SNN and fused box: the per-packet arrays
        sub(TrackedBoxArray, graph.TOPIC_SNN_BOXES, self._box_cb("snn"), box_qos)
        sub(TrackedBoxArray, graph.TOPIC_FUSED_BOXES, self._box_cb("fused"), box_qos)
        sub(TrackedBox, graph.TOPIC_ANN_BOX, self._box_cb("ann"), box_qos)
        sub(TrackedBox, p["ground_truth_topic"], self._on_gt, box_qos)
        sub(Twist, graph.TOPIC_CMD_VEL, lambda m, i: self.stats.on_message("cmd_vel", _rx(i)), 100)
        sub(String, graph.TOPIC_DECISION, lambda m, i: self.stats.on_message("decision", _rx(i)), 100)
        sub(Float32, graph.TOPIC_WORLD_DISTANCE, self._on_distance, 100)
        sub(Bool, graph.TOPIC_WORLD_CAUGHT, self._on_caught, 100)
        sub(DiagnosticArray, graph.TOPIC_DIAGNOSTICS, self._on_diagnostics, 50)
        self.create_timer(p["status_period_s"], self.print_status)

    def _on_events(self, msg, info) -> None:
        from ..events import from_buffer

        n = len(msg.events) // 16
        t0, t1 = int(msg.time_base_us), int(msg.end_us)
        self.stats.on_events(t0, t1, n, _rx(info))
        if self.video is not None and n:
            try:
                ev = from_buffer(msg.events)
            except ValueError:
                return
            if len(ev) and int(ev["x"].max()) < msg.width and int(ev["y"].max()) < msg.height:
                self.video.add_events(ev, t0, t1, int(msg.width), int(msg.height))

    def _on_image(self, msg, info) -> None:
        from ..io import ros_msgs as rm

        t = rm.stamp_to_us(msg.header.stamp)
        self.stats.on_message("aps", _rx(info), t)
        if self.video is not None:
            try:
                self.video.aps.append((t, rm.image_to_gray(msg).copy()))
            except rm.MessageError:
                pass

    def _box_cb(self, kind):
        """A TrackedBox or TrackedBoxArray callback feeding ``kind`` boxes to the stats."""
        from ..io import ros_msgs as rm

        def cb(msg, info):
            wall = _rx(info)
            try:
                batch = rm.box_batch(msg)
            except rm.MessageError:
                return
            for t, box in zip(batch.t_us.tolist(), batch.boxes):
                self.stats.on_box(kind, t, box, wall)
                if self.video is not None:
                    self.video.add_box(kind, t, box)
        return cb

    def _on_gt(self, msg, info) -> None:
        from ..io import ros_msgs as rm

        t, box = rm.msg_to_box(msg)
        self.stats.on_ground_truth(t, box, _rx(info))
        if self.video is not None:
            self.video.add_box("gt", t, box)

    def _on_distance(self, msg, info) -> None:
        self.stats.on_distance(msg.data, _rx(info))
        if self.video is not None and self.stats.clock_us is not None:
            self.video.distance.append((self.stats.clock_us, float(msg.data)))

    def _on_diagnostics(self, msg, info) -> None:
        for st in msg.status:
            if st.name.startswith("dashnet snn_tracker"):
                v = {kv.key: kv.value for kv in st.values}
                try:
                    end = None if v.get("last_end_us") in (None, "None") else int(v["last_end_us"])
                    self.stats.on_snn_counters(int(v.get("packets", 0)), end)
                except ValueError:
                    pass

    def _on_caught(self, msg, info) -> None:
        was = self.stats.caught
        self.stats.on_caught(bool(msg.data), _rx(info))
        if self.stats.caught and not was:
            at = self.stats.caught_at_us
            self.get_logger().info("prey caught" + (f" at t={at / 1e6:.3f} s" if at is not None else ""))

    def print_status(self) -> None:
        """Update :attr:`last_line` (and print it unless ``print_status`` is false)."""
        self.last_line = self.stats.status_line()
        if self.p["print_status"]:
            print(self.last_line, file=sys.stdout, flush=True)


def main(args=None) -> int:
    return run_node(MonitorNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
