"""``steering`` node: fused box -> velocity command for the predator (:mod:`dashnet_ros.steering`).

Topics (node-private names, remapped by the graph):
  ~/box          dashnet_ros/TrackedBox   in (/dashnet/fused_box: the newest fused box, at most every
                                          10 ms of sensor time by default, the fuser's single_period_ms,
                                          and after each ANN box)
  ~/camera_info  sensor_msgs/CameraInfo   in (/davis/camera_info), optional: its fx, cx and
                                          size replace hfov_deg / image_width / image_height
  ~/cmd_vel      geometry_msgs/Twist      out (/cmd_vel): linear.x m/s, angular.z rad/s (CCW +)
  ~/decision     std_msgs/String          out (/dashnet/steering_decision): PRED18 decision
                                          "left", "center", "right" or "not_visible"

A command (and the decision) is published for the first box and then whenever
``cmd_period_ms`` of sensor time has passed since the last one.  No valid box for
``lost_timeout_s`` of sensor time, or no box message at all for ``lost_timeout_s`` of wall
time, stops the robot (zero Twist, "not_visible"; repeated every ``lost_timeout_s`` while
lost).  Box time going backwards resets the law.
"""
from __future__ import annotations

import time

import numpy as np
from geometry_msgs.msg import Twist
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import String

from ..msg import TrackedBox
from .common import BOX_QOS_DEPTH, Param, RateLimitedWarner, declare, non_negative, positive, run_fast_node


def _in(lo, hi, lo_open=False):
    def check(v):
        ok = (lo < v if lo_open else lo <= v) and v <= hi
        return None if ok else f"must be in {'(' if lo_open else '['}{lo}, {hi}]"
    return check


PARAMS = (
    Param("hfov_deg", 60.0, "camera horizontal field of view (until a CameraInfo arrives)", _in(0.0, 179.0, True)),
    Param("image_width", 240, "image width in pixels (until a CameraInfo arrives)", positive),
    Param("image_height", 180, "image height in pixels (until a CameraInfo arrives)", positive),
    Param("use_camera_info", True, "take fx, cx and the image size from ~/camera_info"),
    Param("k_turn", 4.0, "turn rate per radian of bearing (rad/s per rad)", non_negative),
    Param("max_angular_radps", 4.0, "turn rate limit", non_negative),
    Param("max_linear_mps", 0.8, "forward speed limit", non_negative),
    Param("target_fill", 1.0, "stop approaching when the box fills this fraction of the image (width or height)",
          _in(0.0, 1.0, True)),
    Param("center_fraction", 1.0 / 3.0, "width of the 'center' band of the image (fraction)", _in(0.0, 1.0, True)),
    Param("lost_timeout_s", 0.25, "stop after this long without a valid box", positive),
    Param("cmd_period_ms", 5.0, "publish a command at most every this much sensor time (0 = for every box)",
          non_negative),
)


class SteeringNode(Node):
    def __init__(self, **kw):
        super().__init__("steering", **kw)
        from ..steering import SteeringConfig, SteeringLaw

        p = self.p = declare(self, PARAMS)
        self.warn = RateLimitedWarner(self.get_logger())
        self.law = SteeringLaw(SteeringConfig(
            width=p["image_width"], height=p["image_height"], hfov_deg=p["hfov_deg"], k_turn=p["k_turn"],
            max_angular_radps=p["max_angular_radps"], max_linear_mps=p["max_linear_mps"],
            target_fill=p["target_fill"], center_fraction=p["center_fraction"],
            lost_timeout_us=int(p["lost_timeout_s"] * 1e6)))
        self.period_us = int(p["cmd_period_ms"] * 1000)
        self.last_t_us = None
        self.last_pub_t_us = None
        self.last_msg_wall = None
        self.lost_wall_pub = None
        self.n_cmd = 0
        self.pub_cmd = self.create_publisher(Twist, "~/cmd_vel", 10)
        self.pub_decision = self.create_publisher(String, "~/decision", 10)
        self.create_subscription(TrackedBox, "~/box", self._on_box, BOX_QOS_DEPTH)
        if p["use_camera_info"]:
            from .common import sensor_qos

            self.create_subscription(CameraInfo, "~/camera_info", self._on_camera_info, sensor_qos(depth=5))
        self.create_timer(min(p["lost_timeout_s"], 0.1), self._watchdog)
        self.get_logger().info(f"steering: k_turn {p['k_turn']}, v_max {p['max_linear_mps']} m/s, "
                               f"target fill {p['target_fill']}, lost after {p['lost_timeout_s']} s")

    def _on_camera_info(self, msg) -> None:
        fx, cx = float(msg.k[0]), float(msg.k[2])
        if msg.width == 0 or msg.height == 0 or not fx > 0 or not np.isfinite(cx):
            self.warn("bad_camera_info", f"CameraInfo with size {msg.width}x{msg.height}, fx={fx}, cx={cx} ignored")
            return
        c = self.law.cfg
        if (c.width, c.height, c.fx_px, c.cx_px) != (msg.width, msg.height, fx, cx):
            self.law.set_camera(msg.width, msg.height, fx, cx)

    def _publish(self, cmd) -> None:
        tw = Twist()
        tw.linear.x = float(cmd.v_mps)
        tw.angular.z = float(cmd.omega_radps)
        self.pub_cmd.publish(tw)
        self.pub_decision.publish(String(data=cmd.decision))
        self.n_cmd += 1

    def _on_box(self, msg) -> None:
        from ..io import ros_msgs as rm

        t_us, box = rm.msg_to_box(msg)
        if msg.valid and not np.all(np.isfinite(box)):
            self.warn("bad_box", "box marked valid is NaN or has no size; treated as 'no estimate'")
        if self.last_t_us is not None and t_us < self.last_t_us:
            self.warn("time", f"box time went backwards ({t_us} us after {self.last_t_us} us): steering reset")
            self.law.reset()
            self.last_pub_t_us = None
        self.last_t_us = t_us
        self.last_msg_wall = time.monotonic()
        cmd = self.law.update(t_us, box)
        if self.last_pub_t_us is None or t_us - self.last_pub_t_us >= self.period_us:
            self._publish(cmd)
            self.last_pub_t_us = t_us
            self.lost_wall_pub = time.monotonic() if cmd.stopped else None

    def _watchdog(self) -> None:
        """Stop when the boxes stop coming (wall time), and repeat the stop while lost."""
        now = time.monotonic()
        timeout = self.p["lost_timeout_s"]
        silent = self.last_msg_wall is not None and now - self.last_msg_wall > timeout
        if silent and not self.law.last.stopped:
            self.get_logger().info("no box for %.2f s: stopping" % (now - self.last_msg_wall))
            self._publish(self.law.lose())
            self.lost_wall_pub = now
        elif self.law.last.stopped and self.lost_wall_pub is not None and now - self.lost_wall_pub > timeout:
            self._publish(self.law.last)
            self.lost_wall_pub = now


def main(args=None) -> int:
    return run_fast_node(SteeringNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
