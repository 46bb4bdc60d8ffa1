"""``ann_tracker`` node: APS frames + attention feedback -> ANN boxes (paper eq. 5-6, 10-11).

Topics (node-private names, remapped by the graph):
  ~/image_raw  sensor_msgs/Image        in, sensor-data QoS (/davis/image_raw; mono8, or any
                                        encoding ros_msgs.image_to_gray reads)
  ~/fused_box     dashnet_ros/TrackedBox   in (/dashnet/fused_box): the attention feedback; a
                                           frame uses the latest fused box stamped strictly before it (eq. 10)
  ~/ground_truth  dashnet_ros/TrackedBox   in, only until the first valid box (the initial box when
                                           init_box is all zeros); never read after that
  ~/box           dashnet_ros/TrackedBox   out (/dashnet/ann_box): source ANN, stamp = the frame's

The tracker starts like the SNN, from one box (``init_box`` or the first ground-truth
box, used from the first frame at or after its stamp), or from the first fused box if
that comes first; frames before are skipped.  Without a fused box before a frame (none
yet, or the feedback lagging) the ANN's own last box is the feedback (as ANN-AT).  The
core does the work (:class:`dashnet_ros.tracking.ANNRunner`).  A frame that cannot be
read is dropped with a rate-limited warning; frame time going backwards resets the
tracker, which then starts again as above.
"""
from __future__ import annotations

import bisect

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import Image

from ..msg import TrackedBox
from .common import BOX_QOS_DEPTH, Param, RateLimitedWarner, declare, positive, run_fast_node, sensor_qos
from .snn_tracker import InitialBox, check_box_param, setup_torch, torch_params, weights_path

PARAMS = torch_params("ann") + (
    Param("attention", True, "use the attention channel (false = ANN-NAT weights, no feedback)"),
    Param("init_box", [0.0, 0.0, 0.0, 0.0], "initial target box [x, y, w, h] in sensor pixels; all zeros = "
                                             "the first valid box on ~/ground_truth", check_box_param),
    Param("feedback_history", 4096, "fused boxes kept to find the one before each frame", positive),
)


class FeedbackHistory:
    """Fused boxes by stamp; :meth:`before` gives the latest one strictly before a time."""

    def __init__(self, maxlen: int):
        self.maxlen = int(maxlen)
        self.t: list = []
        self.box: list = []

    def add(self, t_us: int, box) -> None:
        if self.t and t_us < self.t[-1]:
            i = bisect.bisect_right(self.t, t_us)
            self.t.insert(i, t_us)
            self.box.insert(i, box)
        else:
            self.t.append(t_us)
            self.box.append(box)
        if len(self.t) > self.maxlen:
            drop = len(self.t) - self.maxlen
            del self.t[:drop], self.box[:drop]

    def before(self, t_us: int):
        i = bisect.bisect_left(self.t, t_us)
        return None if i == 0 else (self.t[i - 1], self.box[i - 1])

    def clear(self) -> None:
        self.t.clear()
        self.box.clear()

    def __len__(self) -> int:
        return len(self.t)


class ANNTrackerNode(Node):
    def __init__(self, **kw):
        super().__init__("ann_tracker", **kw)
        from ..tracking import ANNRunner

        p = self.p = declare(self, PARAMS)
        self.warn = RateLimitedWarner(self.get_logger())
        self.runner = ANNRunner.from_file(weights_path(p["weights"]), p["preset"], 240, 180,
                                          attention=p["attention"])
        setup_torch(self.runner, p["threads"], p["device"])
        self.history = FeedbackHistory(p["feedback_history"])
        self.first = InitialBox(self, p["init_box"])
        self.started = False
        self.start_t_us = None
        self.last_t_us = None
        self.n_out = 0
        self.skipped = 0
        self.pub = self.create_publisher(TrackedBox, "~/box", BOX_QOS_DEPTH)
        self.create_subscription(Image, "~/image_raw", self._on_image, sensor_qos(depth=10))
        self.create_subscription(TrackedBox, "~/fused_box", self._on_fused, BOX_QOS_DEPTH)
        self.get_logger().info(
            f"ANN '{p['preset']}' ({p['weights']}), attention={p['attention']}, device {p['device']}, "
            f"threads {p['threads']}, init from {self.first.origin} (or the first fused box)"
        )

    def _on_fused(self, msg) -> None:
        from ..io import ros_msgs as rm

        t_us, box = rm.msg_to_box(msg)
        if not np.all(np.isfinite(box)):
            if msg.valid:
                self.warn("bad_fused", "fused box marked valid is NaN or has no size; ignored")
            return
        self.history.add(t_us, box)

    def _on_image(self, msg) -> None:
        from ..io import ros_msgs as rm

        try:
            img = rm.image_to_gray(msg)
        except rm.MessageError as e:
            self.warn("bad_image", f"bad APS image ({e}); frame dropped")
            return
        t_us = rm.stamp_to_us(msg.header.stamp)
        if t_us == self.last_t_us:
            self.warn("repeat", f"frame stamp {t_us} us repeats the previous frame's; frame dropped")
            return
        if self.last_t_us is not None and t_us < self.last_t_us:
            self.warn("time", f"frame time went backwards ({t_us} us after {self.last_t_us} us): ANN reset, "
                              "waiting for a fused box of the new time line")
            self.history.clear()
            self.runner.last_box = None
            self.started = False
            self.first.reset()
        self.last_t_us = t_us
        h, w = img.shape
        if (w, h) != (self.runner.width, self.runner.height):
            self.runner.width, self.runner.height = w, h
        fb = self.history.before(t_us)
        if not self.started:
            first = self.first.take(t_us, t_us + 1)
            if first is None and fb is None:
                self.skipped += 1
                return
            self.start_t_us = first[0] if first is not None else fb[0]
            self.runner.init(first[1] if first is not None else fb[1])
            self.started = True
        if fb is not None and fb[0] < self.start_t_us:
            fb = None  # from before the start
        # eq. 10: the latest fused box before the frame; without one, the ANN's own last box
        feedback = fb[1] if fb is not None else self.runner.last_box
        box = self.runner.update(img, feedback if self.p["attention"] else None)
        self.pub.publish(rm.box_to_msg(box, TrackedBox(), t_us=t_us, source=TrackedBox.SOURCE_ANN,
                                       frame_id=msg.header.frame_id))
        self.n_out += 1


def main(args=None) -> int:
    return run_fast_node(ANNTrackerNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
