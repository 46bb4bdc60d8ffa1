"""``world`` node: the predator-prey arena (:mod:`dashnet_ros.world.predator_prey`) as a
robot simulator for the closed loop.

The predator follows ``/cmd_vel``; the prey flees.  At ``fps`` of sensor time the node
steps the world, renders the predator's camera and publishes (node-private names,
remapped by the graph):

  ~/image_raw     sensor_msgs/Image       mono8 camera frames (sensor-data QoS) -> /world/image_raw,
                                          turned into a DAVIS stream by davis_simulator (closed_loop)
  ~/ground_truth  dashnet_ros/TrackedBox  the prey's exact box at every frame (valid=false when unseen)
  ~/distance      std_msgs/Float32        predator-prey distance in metres, at ``status_rate_hz``
  ~/caught        std_msgs/Bool           distance <= ``catch_distance_m``, at ``status_rate_hz``

and subscribes ``~/cmd_vel`` (geometry_msgs/Twist: ``linear.x`` m/s, ``angular.z`` rad/s,
counter-clockwise positive).  Without a command for ``cmd_timeout_s`` (wall time) the
predator stops.  Stamps are the world's sensor time (microseconds from the start).
"""
from __future__ import annotations

import math
import threading

from geometry_msgs.msg import Twist
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Bool, Float32

from ..msg import TrackedBox
from .common import Param, RateLimitedWarner, declare, non_negative, positive, run_node, sensor_qos

PARAMS = (
    Param("seed", 0, "world seed (arena, textures, start poses, prey behaviour)", non_negative),
    Param("width", 240, "camera width in pixels", positive),
    Param("height", 180, "camera height in pixels", positive),
    Param("fps", 240.0, "camera frame rate (frames of sensor time per second)", positive),
    Param("hfov_deg", 60.0, "camera horizontal field of view", lambda v: None if 1.0 <= v <= 170.0 else "must be in [1, 170]"),
    Param("realtime_factor", 1.0, "sensor time per wall time (0 = as fast as possible)", non_negative),
    Param("duration_s", 0.0, "stop after this much sensor time (0 = endless)", non_negative),
    Param("face_prey", True, "start with the predator turned toward the prey (so a tracker can start from the first ground-truth box)"),
    Param("wait_for_subscriber", True, "start the clock when the camera topic has a subscriber"),
    Param("ground_truth_subscribers", 1, "with wait_for_subscriber: also wait until ~/ground_truth has this many "
                                         "subscribers (at most ground_truth_wait_s), so none misses the first boxes",
          non_negative),
    Param("ground_truth_wait_s", 10.0, "longest wait for those ground-truth subscribers (wall s; then start anyway "
                                      "with a warning)", non_negative),
    Param("cmd_timeout_s", 0.5, "stop the predator when /cmd_vel is silent this long (wall time; 0 = never)", non_negative),
    Param("catch_distance_m", 0.45, "distance at which the prey counts as caught", positive),
    Param("status_rate_hz", 30.0, "rate of ~/distance and ~/caught (sensor time)", positive),
    Param("frame_id", "davis", "frame_id of the camera headers"),
)


def make_world(p: dict):
    """The core world from the node's parameter values (predator facing the prey if asked)."""
    from ..world.predator_prey import PredatorPreyWorld

    w = PredatorPreyWorld(width=p["width"], height=p["height"], fps=p["fps"], seed=p["seed"],
                          hfov_deg=p["hfov_deg"])
    if p["face_prey"]:
        dx, dy = w.prey[:2] - w.pred[:2]
        w.pred[2] = math.atan2(dy, dx)
    return w


class WorldNode(Node):
    def __init__(self, **kw):
        super().__init__("world", **kw)
        self.p = declare(self, PARAMS)
        self.warn = RateLimitedWarner(self.get_logger())
        self.world = make_world(self.p)
        self.pub_image = self.create_publisher(Image, "~/image_raw", sensor_qos())
        self.pub_gt = self.create_publisher(TrackedBox, "~/ground_truth", 50)
        self.pub_distance = self.create_publisher(Float32, "~/distance", 10)
        self.pub_caught = self.create_publisher(Bool, "~/caught", 10)
        self.create_subscription(Twist, "~/cmd_vel", self._on_cmd, 10)
        self._cmd_wall = None          # monotonic time of the last accepted command
        self.frames = 0
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=_world_loop, args=(self,), daemon=True)
        self.thread.start()
        p = self.p
        self.get_logger().info(
            f"predator-prey world seed={p['seed']} {p['width']}x{p['height']} at {p['fps']} fps, "
            f"realtime_factor={p['realtime_factor']}, start distance {self.world.distance_m():.2f} m"
        )

    def _on_cmd(self, msg: Twist) -> None:
        import time

        v, w = msg.linear.x, msg.angular.z
        if not (math.isfinite(v) and math.isfinite(w)):
            self.warn("bad_cmd", f"cmd_vel with non-finite velocity (linear.x={v}, angular.z={w}) ignored")
            return
        self.world.set_cmd(v, w)  # clamped to the robot's limits by the core
        self._cmd_wall = time.monotonic()

    def close(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=2.0)


def _world_loop(node: WorldNode) -> None:
    import time

    import numpy as np

    from ..io import ros_msgs as rm
    from ..timing import Pacer

    p = node.p
    log = node.get_logger()
    try:
        if p["wait_for_subscriber"]:
            while not node.stop_event.is_set() and node.pub_image.get_subscription_count() == 0:
                time.sleep(0.05)
            t_end = time.monotonic() + p["ground_truth_wait_s"]
            while not node.stop_event.is_set() and node.pub_gt.get_subscription_count() < p["ground_truth_subscribers"]:
                if time.monotonic() > t_end:
                    log.warning(f"~/ground_truth has {node.pub_gt.get_subscription_count()} subscriber(s) after "
                                f"{p['ground_truth_wait_s']} s, not {p['ground_truth_subscribers']}: starting anyway")
                    break
                time.sleep(0.05)
        pacer = Pacer(p["realtime_factor"])
        status_every = max(1, int(round(p["fps"] / p["status_rate_hz"])))
        source = node.world.as_source(duration_s=p["duration_s"] or None)
        was_caught = False
        for frame in source:
            if node.stop_event.is_set() or not node.context.ok():
                return
            pacer.wait_until(frame.t_us)
            if (p["cmd_timeout_s"] > 0 and node._cmd_wall is not None
                    and time.monotonic() - node._cmd_wall > p["cmd_timeout_s"]):
                node.world.set_cmd(0.0, 0.0)
                node._cmd_wall = None
                log.info("cmd_vel silent: predator stopped")
            box = frame.box if frame.box is not None else np.full(4, np.nan, np.float32)
            gt = rm.box_to_msg(box, TrackedBox(), t_us=frame.t_us, source=TrackedBox.SOURCE_GROUND_TRUTH,
                               frame_id=p["frame_id"])
            node.pub_gt.publish(gt)  # before the image, so a consumer has it when the frame arrives
            grey = np.clip(frame.image * 255.0 + 0.5, 0, 255).astype(np.uint8)
            img = rm.numpy_to_image(grey, Image())
            img.header = gt.header
            node.pub_image.publish(img)
            if frame.index % status_every == 0:
                d = node.world.distance_m()
                caught = d <= p["catch_distance_m"]
                node.pub_distance.publish(Float32(data=float(d)))
                node.pub_caught.publish(Bool(data=bool(caught)))
                if caught and not was_caught:
                    log.info(f"prey caught at t={frame.t_us / 1e6:.3f} s (distance {d:.2f} m)")
                was_caught = caught
            node.frames += 1
        log.info("duration reached; world stopped")
    except Exception as e:  # noqa: BLE001 - report, don't die silently in a thread
        log.error(f"world stopped: {type(e).__name__}: {e}")


def main(args=None) -> int:
    return run_node(WorldNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
