"""``snn_tracker`` node: DVS event packets -> SNN boxes, one per window δt (paper eq. 1-4).

Topics (node-private names, remapped by the graph):
  ~/events        dashnet_ros/EventPacket  in, sensor-data QoS (/davis/events)
  ~/fused_box     dashnet_ros/TrackedBox   in (/dashnet/fused_box, fused_input 'single', the default):
                                           the fuser's rate-limited newest fused box (and the first after
                                           each ANN box); each new valid one re-centres the search region
                                           (SNN-hybrid) unless follow_fused is false
  ~/fused_boxes   dashnet_ros/TrackedBoxArray  in instead, with fused_input 'array' (/dashnet/fused_boxes):
                                           the newest valid box of each array (every fused box; one more
                                           message per event packet for this node, which cost the graph
                                           about 0.2 CPU cores at 1 kHz)
  ~/ground_truth  dashnet_ros/TrackedBox   in, only until the first valid box (the initial box when
                                           init_box is all zeros); never read after that
  ~/boxes         dashnet_ros/TrackedBoxArray  out (/dashnet/snn_boxes): the SNN boxes (source SNN,
                                           stamp = window end, sensor time) of all windows an event
                                           packet completed, in time order, one message per such packet;
                                           header.stamp = the last box's; nothing before initialisation
  ~/box           dashnet_ros/TrackedBox   out (/dashnet/snn_box): the same boxes one message per
                                           window, published only while someone subscribes (a message
                                           per window costs more Python time than the window itself)
  /diagnostics    diagnostic_msgs/DiagnosticArray  "dashnet snn_tracker: events" every
                                           ``diagnostics_period_s``: packets, events, windows, network
                                           calls, dropped packets, last packet end (sensor time)

The core does the work (:class:`dashnet_ros.tracking.SNNRunner`).  Bad packets (invalid
records, out-of-range coordinates, unsorted or outside their interval, empty interval)
are dropped with a rate-limited warning.  Sensor time going backwards (a looping bag, a
restarted simulator) resets the network state and initialises again (from ``init_box``,
or from the next ground-truth box); a forward jump over ``max_gap_ms`` restarts the
windows at the new time from the last box.

Speed (``bench/bench_graph.py``): one output message per event packet instead of one per
window, and the process is spun by rclpy's EventsExecutor (:func:`run_fast_node`), whose
per-message cost is about a third of the default executor's.
"""
from __future__ import annotations

import math

import numpy as np
from rclpy.node import Node

from ..events import concat_events, make_events
from ..io import ros_msgs as rm
from ..msg import EventPacket, TrackedBox, TrackedBoxArray
from .common import (BOX_QOS_DEPTH, Param, RateLimitedWarner, box_array, box_msgs, declare, non_negative, one_of,
                     positive, read_box_array, run_fast_node, sensor_qos)



def check_device(v):
    import torch

    try:
        dev = torch.device(v)
    except (RuntimeError, ValueError):
        return "must be a torch device such as cpu, cuda or cuda:0"
    if dev.type == "cuda" and not torch.cuda.is_available():
        return "CUDA is not available on this machine (torch.cuda.is_available() is False)"
    if dev.type not in ("cpu", "cuda"):
        return "must be cpu or cuda[:N]"
    return None


def check_box_param(v):
    if len(v) != 4 or not all(math.isfinite(x) for x in v):
        return "must be 4 finite numbers [x, y, w, h]"
    if any(v) and (v[2] <= 0 or v[3] <= 0):
        return "w and h must be > 0 (or all four zero: take the first ground-truth box)"
    return None


def torch_params(kind: str):
    """The ``weights``/``preset``/``threads``/``device`` parameters of a tracker node."""
    if kind == "snn":
        from ..models.snn import PRESETS
    else:
        from ..models.ann import PRESETS

    return (
        Param("weights", "default", f"{kind.upper()} weights file ('default' or '' = the shipped "
                                    f"dashnet_ros/weights/{kind}_<preset>.pt)"),
        Param("preset", "fast", f"{kind.upper()} preset the weights were trained with", one_of(*sorted(PRESETS))),
        Param("threads", 1, "torch intra-op threads (torch.set_num_threads; numpy's BLAS always gets 1)", positive),
        Param("device", "cpu", "torch device for the network: cpu, cuda or cuda:N", check_device),
    )


def weights_path(value: str):
    """None (the shipped file) for 'default'/'', else the path."""
    return None if value in ("", "default") else value


class OnDevice:
    """Runs a tracker model on ``device`` for the CPU-side runners: inputs are moved there,
    outputs come back to the CPU; every other attribute is the model's."""

    def __init__(self, model, device):
        self._m = model.to(device)
        self._dev = device

    def __call__(self, x):
        return self._m(x.to(self._dev)).cpu()

    def step_window(self, x):
        return self._m.step_window(x.to(self._dev)).cpu()

    def __getattr__(self, name):
        return getattr(self._m, name)


def setup_torch(runner, threads: int, device: str) -> None:
    """Thread count for this process (torch and numpy's BLAS); the runner's model moved to
    ``device`` (if not cpu)."""
    import torch

    from ..threads import set_threads

    set_threads(threads)
    if torch.device(device).type != "cpu":
        if getattr(runner, "engine", None) is not None:
            runner.engine = None               # the numpy engine is CPU-only: torch on the device
        runner.model = OnDevice(runner.model, torch.device(device))


class InitialBox:
    """The one initial target box of a tracker node (HybridTracker.init): the ``init_box``
    parameter, or else the first valid box on ``~/ground_truth``; that subscription is
    dropped as soon as the box arrived, so the node never reads the ground truth again
    (:meth:`reset`, after time went backwards, listens for one box again)."""

    def __init__(self, node, init_box):
        self.node = node
        self.fixed = np.array(init_box, np.float32) if any(init_box) else None
        self.pending = None            # (t_us, box) from the ground truth, not yet used
        self.sub = None
        if self.fixed is None:
            self.listen()

    @property
    def origin(self) -> str:
        return "init_box" if self.fixed is not None else "ground truth"

    def listen(self) -> None:
        if self.sub is None:
            self.sub = self.node.create_subscription(TrackedBox, "~/ground_truth", self._on_ground_truth, 10)

    def _on_ground_truth(self, msg) -> None:
        if self.sub is None or self.pending is not None:
            return
        t_us, box = rm.msg_to_box(msg)
        if not np.all(np.isfinite(box)):
            if msg.valid:
                self.node.warn("bad_ground_truth", "ground-truth box marked valid is NaN or has no size; ignored")
            return  # target not visible: wait for a valid box
        self.pending = (t_us, box)
        self.node.destroy_subscription(self.sub)
        self.sub = None
        self.node.get_logger().info(f"initial box {np.round(box, 1).tolist()} from the ground truth "
                                    f"at {t_us / 1e6:.6f} s")

    def take(self, t_start_us: int, t_end_us: int):
        """``(t_us, box)`` to initialise at, within ``[t_start, t_end)`` of the input, or None."""
        if self.fixed is not None:
            return int(t_start_us), self.fixed
        if self.pending is None or self.pending[0] >= t_end_us:
            return None
        t, box = self.pending
        self.pending = None
        return max(int(t), int(t_start_us)), box

    def reset(self) -> None:
        if self.fixed is None:
            self.pending = None
            self.listen()


PARAMS = torch_params("snn") + (
    Param("window_us", 0, "output window δt in microseconds (0 = the preset's, 480 µs)", non_negative),
    Param("engine", "numpy", "SNN inference: 'numpy' (models/snn_engine.py, event-driven kernels, ~3x faster "
                             "per window on a CPU) or 'torch' (TorchScript; used anyway on a GPU device)",
          one_of("numpy", "torch")),
    Param("windows_per_call", 8, "windows run per call, those an event packet completes (throughput up); each "
                                 "still on its predecessor's box with the fast preset's compiled loop (a new fused "
                                 "box is taken between calls), else on one shared search region; boxes are still "
                                 "one per window", positive),
    Param("init_box", [0.0, 0.0, 0.0, 0.0], "initial target box [x, y, w, h] in sensor pixels; all zeros = "
                                             "the first valid box on ~/ground_truth", check_box_param),
    Param("follow_fused", True, "re-centre the search region on each new fused box (SNN-hybrid); false = "
                                "on the SNN's own output (SNN-origin)"),
    Param("fused_input", "single", "fused boxes from ~/fused_box (TrackedBox, 'single': the fuser's rate-limited "
                                   "newest box) or ~/fused_boxes (TrackedBoxArray, 'array': every one)",
          one_of("array", "single")),
    Param("reset_jump", 0.15, "reset the SNN's state when its search region jumps by more than this fraction "
                              "of the region's side (0 = never)", non_negative),
    Param("fused_max_age_ms", 20.0, "ignore fused boxes older than this (sensor time) at the window start", positive),
    Param("max_gap_ms", 100.0, "a forward jump in the event stream longer than this restarts the windows "
                               "at the new time (keeping the box)", positive),
    Param("diagnostics_period_s", 1.0, "period of the /diagnostics status with the node's counters (wall time)",
          positive),
)

DIAG_NAME = "dashnet snn_tracker: events"


class SNNTrackerNode(Node):
    def __init__(self, **kw):
        super().__init__("snn_tracker", **kw)
        from ..tracking import SNNRunner

        p = self.p = declare(self, PARAMS)
        self.warn = RateLimitedWarner(self.get_logger())
        self.initialised = False
        self.init_t_us = None
        self.last_end_us = None
        self.early = []                # (t0_us, events) of packets received before the initial box
        self.fused = None              # (t_us, box) of the latest fused box
        self.fused_new = False
        self.frame_id = ""
        self.n_out = 0
        self.counts = {"packets": 0, "events": 0, "windows": 0, "calls": 0, "bad_packets": 0, "resets": 0}
        self.pub_boxes = self.create_publisher(TrackedBoxArray, "~/boxes", BOX_QOS_DEPTH)
        self.pub = self.create_publisher(TrackedBox, "~/box", BOX_QOS_DEPTH)
        from diagnostic_msgs.msg import DiagnosticArray

        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # Inputs first, the network after: discovery and matching run while the weights load
        # and the kernels compile (about a second), and what arrives meanwhile waits in the
        # subscriptions' queues until the node spins, so a graph that starts all at once does
        # not lose its first packets and ground-truth box to this node's start-up.
        self.create_subscription(EventPacket, "~/events", self._on_events, sensor_qos())
        if p["fused_input"] == "array":
            self.create_subscription(TrackedBoxArray, "~/fused_boxes", self._on_fused_array, BOX_QOS_DEPTH)
        else:
            self.create_subscription(TrackedBox, "~/fused_box", self._on_fused, BOX_QOS_DEPTH)
        self.first = InitialBox(self, p["init_box"])
        self.runner = SNNRunner.from_file(weights_path(p["weights"]), p["preset"], 240, 180,
                                          window_us=p["window_us"] or None, windows_per_call=p["windows_per_call"],
                                          engine=p["engine"], reset_jump=p["reset_jump"])
        setup_torch(self.runner, p["threads"], p["device"])
        # the packet check's compiled pass is loaded now, not when the first packet waits for it
        rm.msg_to_events(rm.events_to_msg(make_events([0], [0], [0], [1]), EventPacket(), width=1, height=1,
                                          t0_us=0, t1_us=1))
        self.window_us = self.runner.window_us
        self.create_timer(p["diagnostics_period_s"], self._publish_diagnostics)
        self.get_logger().info(
            f"SNN '{p['preset']}' ({p['weights']}), window {self.window_us} us x{p['windows_per_call']} per call, "
            f"{'numpy engine' if self.runner.engine is not None else 'torch'}, device {p['device']}, "
            f"threads {p['threads']}, init from {self.first.origin}, follow_fused={p['follow_fused']}"
        )

    # -- initialisation ---------------------------------------------------------------------
    def _try_init(self, t_start: int, t_end: int) -> bool:
        """Initialise at the first instant in [t_start, t_end) we have a box for."""
        first = self.first.take(t_start, t_end)
        if first is None:
            return False
        t0, box = first
        self.runner.init(box, t0)
        self.initialised, self.init_t_us = True, t0
        self.fused, self.fused_new = None, False
        return True

    def _restart(self, reason: str) -> None:
        self.warn("time", f"{reason}: SNN state reset, initialising again")
        self.counts["resets"] += 1
        self.initialised = False
        self.early = []
        self.fused, self.fused_new = None, False
        self.first.reset()

    # -- inputs ----------------------------------------------------------------------------
    def _on_fused(self, msg) -> bool:
        """A fused box: the next search-region centre if usable; True if it was."""
        t_us, box = rm.msg_to_box(msg)
        if not np.all(np.isfinite(box)):
            if msg.valid:
                self.warn("bad_fused", "fused box marked valid is NaN or has no size; ignored")
            return False
        self.fused, self.fused_new = (t_us, box), True
        return True

    def _on_fused_array(self, msg) -> None:
        """The newest usable box of the array (older ones would be replaced at once)."""
        batch = read_box_array(msg, self.warn, "bad_fused", "fused box")
        ok = np.flatnonzero(np.isfinite(batch.boxes[:, 0])) if batch is not None else ()
        if len(ok):
            self.fused, self.fused_new = (int(batch.t_us[ok[-1]]), batch.boxes[ok[-1]]), True

    def _on_events(self, msg) -> None:
        self.counts["packets"] += 1
        try:
            ev = rm.msg_to_events(msg)
        except rm.MessageError as e:
            return self._bad_packet(f"bad EventPacket ({e}); packet dropped")
        t0, t1 = int(msg.time_base_us), int(msg.end_us)
        if msg.width == 0 or msg.height == 0:
            return self._bad_packet(f"EventPacket with zero sensor size {msg.width}x{msg.height}; packet dropped")
        if t1 <= t0:
            return self._bad_packet(f"EventPacket covers an empty interval [{t0}, {t1}) us; packet dropped")
        if len(ev) and (int(ev["t_us"][0]) < t0 or int(ev["t_us"][-1]) >= t1):
            return self._bad_packet(f"EventPacket has events outside its interval [{t0}, {t1}) us; packet dropped")
        self.counts["events"] += len(ev)
        if (msg.width, msg.height) != (self.runner.width, self.runner.height):
            if self.initialised:
                self._restart(f"sensor size changed to {msg.width}x{msg.height}")
            self.runner.width, self.runner.height = int(msg.width), int(msg.height)
        self.frame_id = msg.header.frame_id
        if self.last_end_us is not None:
            if t0 < self.last_end_us:
                self._restart(f"sensor time went backwards ({t0} us after a packet ending at {self.last_end_us} us)")
            elif t0 - self.last_end_us > self.p["max_gap_ms"] * 1000 and self.initialised:
                self.warn("gap", f"{(t0 - self.last_end_us) / 1000:.1f} ms gap in the event stream: windows restart "
                                 "at the new time")
                self.runner.init(self.runner.reference, t0)
        start = self.last_end_us if self.last_end_us is not None and self.last_end_us <= t0 else t0
        self.last_end_us = t1
        if not self.initialised:
            # Packets that arrive before the initial (ground-truth) box are kept for up to
            # max_gap_ms, so the windows start at the box's instant whichever message DDS
            # delivered first (a bag replay then gives the same windows as the live run).
            self.early = [(a, e) for a, e in self.early if t1 - a <= self.p["max_gap_ms"] * 1000]
            self.early.append((start, ev))
            if not self._try_init(self.early[0][0], t1):
                return
            ev = concat_events([e for _, e in self.early])
            self.early = []
        # the runner bins only each window's own events (earlier ones are skipped, later
        # ones stay buffered for the windows that end in a later packet)
        self.runner.add_events(ev)
        outs = []
        while self.runner.windows_ready(t1):
            self._follow_fused(self.runner.next_window_end_us - self.window_us)
            outs += self.runner.step(min(self.runner.windows_ready(t1), self.runner.windows_per_call))
            self.counts["calls"] += 1
        if outs:
            self._publish(outs)

    def _bad_packet(self, text: str) -> None:
        self.counts["bad_packets"] += 1
        self.warn("bad_packet", text)

    def _publish(self, outs) -> None:
        """One TrackedBoxArray for the windows of this packet; single boxes only when subscribed."""
        t_us = [o.t_us for o in outs]
        boxes = [o.box for o in outs]               # NaN or sizeless: no box
        per_s = 1e6 / self.window_us
        vel = [(o.motion_px[0] * per_s, o.motion_px[1] * per_s) if o.motion_px else (0.0, 0.0) for o in outs]
        self.pub_boxes.publish(box_array(t_us, boxes, TrackedBox.SOURCE_SNN, self.frame_id, velocities=vel))
        if self.pub.get_subscription_count():
            for m in box_msgs(t_us, boxes, TrackedBox.SOURCE_SNN, self.frame_id, velocities=vel):
                self.pub.publish(m)
        self.n_out += len(outs)
        self.counts["windows"] += len(outs)

    def _publish_diagnostics(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

        st = DiagnosticStatus()
        st.name = DIAG_NAME
        st.hardware_id = self.get_fully_qualified_name()
        st.level = DiagnosticStatus.OK if self.initialised else DiagnosticStatus.WARN
        st.message = "tracking" if self.initialised else "waiting for the initial box"
        values = dict(self.counts, last_end_us=self.last_end_us, window_us=self.window_us,
                      windows_per_call=self.runner.windows_per_call, state_resets=self.runner.resets)
        st.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [st]
        self.pub_diag.publish(arr)

    def _follow_fused(self, window_start_us: int) -> None:
        """SNN-hybrid: a new fused box (not older than fused_max_age_ms, not from before the
        initialisation) becomes the next window's search-region centre."""
        if not (self.p["follow_fused"] and self.fused_new):
            return
        self.fused_new = False
        t_f, box = self.fused
        if t_f < self.init_t_us or window_start_us - t_f > self.p["fused_max_age_ms"] * 1000:
            return
        from ..tracking import sane_box

        ref = sane_box(box, self.runner.width, self.runner.height)
        if ref is not None:
            self.runner.reference = ref


def main(args=None) -> int:
    import torch

    # With engine 'torch' the SNN's convolutions are tiny: oneDNN's path is no faster for
    # one window and slower for a batch of windows_per_call > 1 (fast preset, 2 windows:
    # 0.53-0.59 ms per call against 0.81-1.07 ms on this CPU).  This process runs nothing else.
    torch.backends.mkldnn.enabled = False
    return run_fast_node(SNNTrackerNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
