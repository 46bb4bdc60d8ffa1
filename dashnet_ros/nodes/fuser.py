"""``fuser`` node: temporal complementary filter over SNN and ANN boxes (paper eq. 7-9).

Topics (node-private names, remapped by the graph):
  ~/snn_boxes   dashnet_ros/TrackedBoxArray  in (/dashnet/snn_boxes), when snn_input is 'array'
  ~/snn_box     dashnet_ros/TrackedBox       in (/dashnet/snn_box), when snn_input is 'single'
  ~/ann_box     dashnet_ros/TrackedBox       in (/dashnet/ann_box)
  ~/fused_boxes dashnet_ros/TrackedBoxArray  out (/dashnet/fused_boxes): one fused box per SNN box,
                                             same stamp, one array per SNN message; source FUSED,
                                             score = the SNN weight w of eq. 8 (1 = SNN only, 0 = ANN
                                             only).  Published while someone subscribes.
  ~/fused_box   dashnet_ros/TrackedBox       out (/dashnet/fused_box): single_output 'latest': the
                                             newest fused box, at most once per single_period_ms of
                                             sensor time (0: of every SNN message), and at once with
                                             the first fused boxes after each new ANN box (the
                                             correction the SNN's search region should follow
                                             without waiting); 'all': every fused box (a message per
                                             window); 'none'.  The ANN's attention feedback (eq. 10),
                                             the steering's input and (snn_tracker fused_input
                                             'single', the default) the SNN's search region.
  /diagnostics  diagnostic_msgs/DiagnosticArray  status "dashnet fuser: ANN input": OK while
                                             fusing, WARN while SNN-only; on every change and
                                             every ``diagnostics_period_s``

Each SNN box is fused with the nearest ANN box received so far
(:class:`dashnet_ros.fusion.tcf.TCF`; ``causal``: only ANN boxes at or before it), moved by
the SNN's motion since the ANN's frame (the SNN boxes' ``vx, vy`` times the time between
consecutive SNN boxes; ``propagate_ann``).  When no
ANN box has arrived for ``ann_timeout_s`` of sensor time (measured on the SNN stamps) the
node publishes the SNN boxes alone and says so once (log + WARN diagnostic); fusion resumes
with the next ANN box (OK diagnostic).  Time going backwards on either input resets the filter.
"""
from __future__ import annotations

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node

from ..io import ros_msgs as rm
from ..msg import TrackedBox, TrackedBoxArray
from .common import (BOX_QOS_DEPTH, Param, RateLimitedWarner, box_array, box_msgs, declare, non_negative, one_of,
                     positive, read_box_array, run_fast_node)

PARAMS = (
    Param("aps_rate_hz", 30.0, "APS frame rate; the TCF time scale is half its frame interval", positive),
    Param("time_scale_s", 0.0, "TCF time scale of eq. 7 in seconds (0 = 0.5 / aps_rate_hz)", non_negative),
    Param("causal", True, "fuse only with ANN boxes stamped at or before the SNN box"),
    Param("propagate_ann", True, "move the ANN box by the SNN's motion (the boxes' vx, vy) since the ANN's frame "
                                 "before the blend (false: eq. 9 as written)"),
    Param("max_motion_gap_ms", 20.0, "SNN boxes further apart than this add no motion (a gap in the stream)",
          positive),
    Param("ann_timeout_s", 0.5, "sensor time without an ANN box after which the output is SNN-only", positive),
    Param("diagnostics_period_s", 1.0, "period of the /diagnostics status (wall time)", positive),
    Param("snn_input", "array", "SNN boxes from ~/snn_boxes (TrackedBoxArray, 'array') or ~/snn_box "
                                "(TrackedBox, 'single')", one_of("array", "single")),
    Param("single_output", "latest", "~/fused_box: the newest fused box ('latest', see single_period_ms), "
                                     "every fused box ('all', a message per window) or nothing ('none')",
          one_of("latest", "all", "none")),
    Param("single_period_ms", 10.0, "'latest': at most one ~/fused_box per this much sensor time (0 = the newest "
                                    "of every SNN message), and one at once after each new ANN box", non_negative),
)

DIAG_NAME = "dashnet fuser: ANN input"


class FuserNode(Node):
    def __init__(self, **kw):
        super().__init__("fuser", **kw)
        from ..fusion.tcf import TCF

        p = self.p = declare(self, PARAMS)
        self.warn = RateLimitedWarner(self.get_logger())
        scale = p["time_scale_s"] or 0.5 / p["aps_rate_hz"]
        self.tcf = TCF(scale, causal=p["causal"], propagate=p["propagate_ann"])
        self.max_motion_gap_us = int(p["max_motion_gap_ms"] * 1000)
        self.timeout_us = int(p["ann_timeout_s"] * 1e6)
        self.last_snn_t = None
        self.last_ann_t = None       # stamp of the latest ANN box (None: none on this time line)
        self.first_snn_t = None
        self.snn_only = False
        self.n_out = 0
        self.single_period_us = int(round(p["single_period_ms"] * 1000))
        self.last_single_t = None    # stamp of the latest ~/fused_box ('latest')
        self.ann_fresh = False       # an ANN box arrived since the latest ~/fused_box
        self.pub = self.create_publisher(TrackedBox, "~/fused_box", BOX_QOS_DEPTH)
        self.pub_boxes = self.create_publisher(TrackedBoxArray, "~/fused_boxes", BOX_QOS_DEPTH)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        if p["snn_input"] == "array":
            self.create_subscription(TrackedBoxArray, "~/snn_boxes", self._on_snn_array, BOX_QOS_DEPTH)
        else:
            self.create_subscription(TrackedBox, "~/snn_box", self._on_snn, BOX_QOS_DEPTH)
        self.create_subscription(TrackedBox, "~/ann_box", self._on_ann, BOX_QOS_DEPTH)
        self.create_timer(p["diagnostics_period_s"], self._publish_diagnostics)
        self.get_logger().info(f"TCF time scale {scale * 1e3:.2f} ms, causal={p['causal']}, "
                               f"ANN timeout {p['ann_timeout_s']} s")

    def _box(self, msg, kind: str):
        t_us, box = rm.msg_to_box(msg)
        if msg.valid and not np.all(np.isfinite(box)):
            self.warn(f"bad_{kind}", f"{kind.upper()} box marked valid is NaN or has no size; used as 'no estimate'")
        return t_us, box

    def _on_ann(self, msg) -> None:
        t_us, box = self._box(msg, "ann")
        if self.last_ann_t is not None and t_us < self.last_ann_t:
            self.warn("time", f"ANN box time went backwards ({t_us} us after {self.last_ann_t} us): filter reset")
            self.tcf.reset()
        self.last_ann_t = t_us
        self.tcf.add_ann(t_us, box)
        self.ann_fresh = True
        fresh = self.last_snn_t is None or self.last_snn_t - t_us <= self.timeout_us
        if self.snn_only and fresh:
            self.snn_only = False
            self.get_logger().info("ANN boxes are back: fusing again")
            self._publish_diagnostics()

    def _on_snn(self, msg) -> None:
        t_us, box = self._box(msg, "snn")
        self._publish([self._fuse(t_us, box.tolist(), rm.msg_to_velocity(msg))], msg.header.frame_id)

    def _on_snn_array(self, msg) -> None:
        rows = read_box_array(msg, self.warn, "bad_snn", "SNN box", rows=True)
        if rows is not None and rows.t_us:
            self._publish([self._fuse(t, b, v) for t, b, v in zip(rows.t_us, rows.boxes, rows.velocities)],
                          msg.header.frame_id)

    def _publish(self, fused, frame_id: str) -> None:
        """``fused``: (t_us, box, w, velocity) in time order -> the array (if subscribed) and singles."""
        mode = self.p["single_output"]
        t_us, boxes, scores, vel = zip(*fused)
        if self.pub_boxes.get_subscription_count():
            self.pub_boxes.publish(box_array(t_us, boxes, TrackedBox.SOURCE_FUSED, frame_id, scores, vel))
        if mode == "all":
            for m in box_msgs(t_us, boxes, TrackedBox.SOURCE_FUSED, frame_id, scores, vel):
                self.pub.publish(m)
        elif mode == "latest":
            t = t_us[-1]
            last = self.last_single_t
            if last is None or t < last or t - last >= self.single_period_us or self.ann_fresh:
                self.pub.publish(box_msgs(t_us[-1:], boxes[-1:], TrackedBox.SOURCE_FUSED, frame_id, scores[-1:],
                                          vel[-1:])[0])
                self.last_single_t = t
                self.ann_fresh = False
        self.n_out += len(fused)

    def _fuse(self, t_us: int, box: list, vel):
        """One SNN box (``[x, y, w, h]`` float32-valued floats, NaN = none) -> ``(t_us, fused
        box, SNN weight, SNN velocity)`` (eq. 7-9)."""
        dt_us = t_us - self.last_snn_t if self.last_snn_t is not None else 0
        motion = (vel[0] * dt_us * 1e-6, vel[1] * dt_us * 1e-6) if 0 < dt_us <= self.max_motion_gap_us else (0.0, 0.0)
        if self.last_snn_t is not None and t_us < self.last_snn_t:
            self.warn("time", f"SNN box time went backwards ({t_us} us after {self.last_snn_t} us): filter reset")
            self.tcf.reset()
            self.last_ann_t = None
            self.first_snn_t = None
        self.last_snn_t = t_us
        if self.first_snn_t is None:
            self.first_snn_t = t_us
        ref = self.last_ann_t if self.last_ann_t is not None else self.first_snn_t
        stale = t_us - ref > self.timeout_us
        if stale and not self.snn_only:
            self.snn_only = True
            self.tcf.reset()  # forget the old ANN boxes: SNN-only until a new one arrives
            self.get_logger().warning(f"no ANN box for {(t_us - ref) / 1e6:.3f} s of sensor time: publishing "
                                      "SNN-only boxes")
            self._publish_diagnostics()
        fused = self.tcf.fuse_row(t_us, box, motion)
        return t_us, fused, self.tcf.last_weight, vel

    def _publish_diagnostics(self) -> None:
        st = DiagnosticStatus()
        st.name = DIAG_NAME
        st.hardware_id = self.get_fully_qualified_name()
        if self.snn_only:
            st.level = DiagnosticStatus.WARN
            st.message = f"no ANN box for over {self.p['ann_timeout_s']} s: publishing SNN-only boxes"
        else:
            st.level = DiagnosticStatus.OK
            st.message = "fusing SNN and ANN boxes" if self.last_ann_t is not None else "waiting for ANN boxes"
        st.values = [KeyValue(key="mode", value="snn_only" if self.snn_only else "fused"),
                     KeyValue(key="last_ann_stamp_us", value=str(self.last_ann_t)),
                     KeyValue(key="last_snn_stamp_us", value=str(self.last_snn_t)),
                     KeyValue(key="fused_boxes", value=str(self.n_out))]
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [st]
        self.pub_diag.publish(arr)


def main(args=None) -> int:
    return run_fast_node(FuserNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
