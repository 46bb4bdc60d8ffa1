"""``davis_simulator`` node: a frame source -> DAVIS stream (APS images + DVS event packets).

Topics (node-private names, remapped by the graph):
  ~/events       dashnet_ros/EventPacket   one packet per ``packet_us`` (default 2 ms), sensor-data QoS
  ~/image_raw    sensor_msgs/Image         mono8 APS frames at ``aps_rate_hz``, sensor-data QoS
  ~/camera_info  sensor_msgs/CameraInfo    with every APS frame
  ~/ground_truth dashnet_ros/TrackedBox    the source's ground truth at each APS frame (if any)
Header stamps are sensor time (microseconds from the start of the source, plus
``time_offset_s``); the core does all the work (:class:`dashnet_ros.davis.stream.DavisSimulator`).

Topic sources (``source: topic:NAME``, or ``closed_loop: true`` = ``topic:`` +
``closed_loop_topic``): the source frames are ``sensor_msgs/Image`` messages on NAME (e.g.
the ``world`` node's camera at 240 fps), stamped with their sensor time; ground-truth
``TrackedBox`` messages on ``topic_ground_truth`` are matched to them by stamp.  Pacing
then follows the publisher (``realtime_factor`` and ``loop`` do not apply), and a frame
stamped earlier than the previous one (publisher restarted, bag looped) restarts the
simulator on the new time line.

A connected iniVation camera (``source: camera`` or ``camera:SERIAL``, through
dv-processing) is a DAVIS already: its events and APS frames are published as they come
(``realtime_factor``, ``loop`` and the simulation parameters do not apply), with stamps
from the first event: each event packet once the camera has delivered an event past its
end (plus ``camera_latency_us`` for the event batches' own jitter), each APS frame when it
arrives, after its exposure, so a frame's stamp is older than the packets published just
before it, as with any camera driver (:class:`dashnet_ros.davis.recordings.LiveCamera`).
"""
from __future__ import annotations

import threading

from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image

from ..msg import EventPacket, TrackedBox
from ..davis.recordings import is_recording
from .common import (Param, ParameterError, RateLimitedWarner, declare, non_negative, one_of, positive, run_node,
                     sensor_qos)

PARAMS = (
    Param("source", "world", "frame source: 'world', 'scenes:SEED', a video file, an NFS sequence dir, an image folder, a DAVIS recording (.aedat, .aedat4: replayed, not simulated; its jAER target labels REC-targets.txt, if beside it, are its ground truth), 'camera' or 'camera:SERIAL' (a connected iniVation DAVIS through dv-processing: published live, not simulated), or 'topic:NAME' (sensor_msgs/Image frames on topic NAME)"),
    Param("closed_loop", False, "take the frames from closed_loop_topic (the world node's camera, driven by /cmd_vel) instead of 'source'"),
    Param("closed_loop_topic", "/world/image_raw", "image topic of the closed loop's world camera"),
    Param("topic_ground_truth", "auto", "topic sources: TrackedBox ground truth matched to frames by stamp ('auto' = the image topic's namespace + '/ground_truth', '' = none)"),
    Param("topic_fps", 240.0, "topic sources: nominal frame rate of the image topic", positive),
    Param("width", 240, "output width in pixels (DAVIS240C: 240)", positive),
    Param("height", 180, "output height in pixels (DAVIS240C: 180)", positive),
    Param("interp_factor", 7, "FCN-interpolated frames between source frames (eq. 13)", one_of(0, 1, 3, 7)),
    Param("dvs_model", "pixel", "event model: 'pixel' (per-pixel v2e/ESIM style) or 'paper' (eq. 14)", one_of("pixel", "paper")),
    Param("threshold", 0.2, "contrast threshold theta, ON and OFF (log intensity for 'pixel', intensity for 'paper')", positive),
    Param("sigma_threshold", 0.03, "'pixel' model: per-pixel threshold mismatch (std)", non_negative),
    Param("refractory_us", 100.0, "'pixel' model: refractory period in microseconds", non_negative),
    Param("leak_rate_hz", 0.1, "'pixel' model: leak events per pixel per second", non_negative),
    Param("shot_noise_rate_hz", 0.0, "'pixel' model: shot-noise events per pixel per second", non_negative),
    Param("aps_rate_hz", 30.0, "APS frame rate", positive),
    Param("packet_us", 2000, "duration of one event packet in microseconds", positive),
    Param("realtime_factor", 1.0, "sensor time per wall time; 0 = as fast as possible", non_negative),
    Param("duration_s", 0.0, "stop after this much sensor time (0 = until the source ends)", non_negative),
    Param("loop", False, "restart the source when it ends"),
    Param("seed", 0, "random seed (world, noise, jitter)", non_negative),
    Param("frame_id", "davis", "frame_id of all published headers"),
    Param("camera_latency_us", 1000, "live camera: event packets wait this long for late event batches (events older than a published packet are dropped with a warning); APS frames are published as they arrive", non_negative),
)


def topic_of(p: dict):
    """The image topic of a topic source (``closed_loop`` or ``source: topic:NAME``), else None."""
    if p["closed_loop"]:
        return p["closed_loop_topic"]
    if p["source"].startswith("topic:"):
        name = p["source"][len("topic:"):].strip()
        if not name:
            raise ValueError("source 'topic:' needs a topic name, e.g. topic:/world/image_raw")
        return name
    return None


def ground_truth_topic(p: dict, image_topic: str) -> str:
    gt = p["topic_ground_truth"]
    if gt != "auto":
        return gt
    head = image_topic.rsplit("/", 1)[0] if "/" in image_topic else ""
    return f"{head}/ground_truth" if head or image_topic.startswith("/") else "ground_truth"


def camera_of(spec: str):
    """The serial number a ``camera`` source names ('' = the first camera found), else None."""
    if spec == "camera":
        return ""
    if spec.startswith("camera:"):
        return spec[len("camera:"):].strip()
    return None


def make_simulator(p: dict, source=None):
    """Build the core simulator from the node's parameter values (and a ready source)."""
    from ..davis.sources import open_source
    from ..davis.stream import DavisSimulator

    if source is None and is_recording(p["source"]):
        # a real DAVIS recording is already a DAVIS stream: replay it, no simulation
        from ..davis.recordings import open_recording

        return open_recording(p["source"], batch_us=p["packet_us"])
    camera = camera_of(p["source"]) if source is None else None
    if camera is not None:
        from ..davis.recordings import CameraNotFoundError, LiveCamera

        try:
            return LiveCamera(camera or None, batch_us=p["packet_us"], latency_us=p["camera_latency_us"],
                              frames_at_once=True)
        except (CameraNotFoundError, ImportError) as e:
            raise ParameterError(f"source {p['source']!r}: {e}") from e
    if source is None:
        source = open_source(p["source"], seed=p["seed"])
    if p["dvs_model"] == "pixel":
        dvs_params = {"threshold_on": p["threshold"], "threshold_off": p["threshold"],
                      **{k: p[k] for k in ("sigma_threshold", "refractory_us", "leak_rate_hz",
                                           "shot_noise_rate_hz")}}
    else:
        dvs_params = {"threshold": p["threshold"]}
    return DavisSimulator(
        source,
        width=p["width"],
        height=p["height"],
        interp_factor=p["interp_factor"],
        dvs_model=p["dvs_model"],
        dvs_params=dvs_params,
        aps_rate_hz=p["aps_rate_hz"],
        batch_us=p["packet_us"],
        seed=p["seed"],
    )


class DavisSimulatorNode(Node):
    def __init__(self, **kw):
        super().__init__("davis_simulator", **kw)
        self.p = declare(self, PARAMS)
        self.warn = RateLimitedWarner(self.get_logger())
        self.topic = topic_of(self.p)
        self.topic_source = None
        self.live = self.topic is None and camera_of(self.p["source"]) is not None
        self.labels = None      # a replayed recording's labels (its ground truth)
        if self.topic is None:
            self.sim = make_simulator(self.p)
            if not self.live:
                self.labels = replay_ground_truth(self.p, self.sim)
        else:
            from ..davis.topic_source import TopicFrameSource

            self.sim = None  # built when the first frame fixes the size
            self.topic_source = TopicFrameSource(fps=self.p["topic_fps"], name=self.topic)
            self.create_subscription(Image, self.topic, self._on_image, sensor_qos())
            gt = ground_truth_topic(self.p, self.topic)
            if gt:
                self.create_subscription(TrackedBox, gt, self._on_ground_truth, 50)
        qos = sensor_qos()
        self.pub_events = self.create_publisher(EventPacket, "~/events", qos)
        self.pub_image = self.create_publisher(Image, "~/image_raw", qos)
        self.pub_info = self.create_publisher(CameraInfo, "~/camera_info", qos)
        self.pub_gt = self.create_publisher(TrackedBox, "~/ground_truth", 10)
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=_publish_loop, args=(self,), daemon=True)
        self.thread.start()
        p = self.p
        src = p["source"] if self.topic is None else f"topic:{self.topic}" + (" (closed loop)" if p["closed_loop"] else "")
        if self.live:
            src = f"{self.sim.name} {self.sim.width}x{self.sim.height} (live)"
            self.get_logger().info(f"source={src}, packets {p['packet_us']} us, events held "
                                   f"{p['camera_latency_us']} us for late batches, frames as they arrive")
            return
        if self.topic is None and is_recording(p["source"]):
            from ..davis.labels import label_sidecar

            side = label_sidecar(p["source"])
            self.get_logger().info(
                f"source={src} ({self.sim.width}x{self.sim.height} recording, replayed), packets {p['packet_us']} us, "
                f"realtime_factor={p['realtime_factor']}, ground truth: {side or 'none (no REC-targets.txt beside it)'}")
            return
        pace = f"realtime_factor={p['realtime_factor']}" if self.topic is None else "paced by the topic"
        self.get_logger().info(
            f"source={src} {p['width']}x{p['height']} interp x{p['interp_factor']} "
            f"model={p['dvs_model']} APS {p['aps_rate_hz']} Hz, packets {p['packet_us']} us, {pace}"
        )

    def _on_image(self, msg) -> None:
        from ..io import ros_msgs as rm

        try:
            img = rm.image_to_gray(msg)
        except rm.MessageError as e:
            self.warn("bad_image", f"{self.topic}: {e}; frame dropped")
            return
        note = self.topic_source.put(rm.stamp_to_us(msg.header.stamp), img)
        if note:
            self.warn("frame", f"{self.topic}: {note}")

    def _on_ground_truth(self, msg) -> None:
        from ..io import ros_msgs as rm

        t_us, box = rm.msg_to_box(msg)
        self.topic_source.set_box(t_us, box)

    def close(self) -> None:
        self.stop_event.set()
        if self.topic_source is not None:
            self.topic_source.close()
        self.thread.join(timeout=2.0)


def _camera_info(msg, width, height, frame_id):
    # A pinhole model with a 60 degree horizontal field of view (the world's camera).
    import math

    f = width / 2 / math.tan(math.radians(60) / 2)
    msg.width, msg.height = width, height
    msg.distortion_model = "plumb_bob"
    msg.d = [0.0] * 5
    msg.k = [f, 0.0, width / 2, 0.0, f, height / 2, 0.0, 0.0, 1.0]
    msg.r = [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0]
    msg.p = [f, 0.0, width / 2, 0.0, 0.0, f, height / 2, 0.0, 0.0, 0.0, 1.0, 0.0]
    msg.header.frame_id = frame_id
    return msg


def replay_ground_truth(p: dict, sim):
    """``(t_us, boxes)`` on the stream clock: the visible targets of a replayed recording's
    jAER label file (``REC-targets.txt`` beside it), or None.  A malformed file is refused
    at start (:class:`ParameterError` naming the file and line)."""
    if not is_recording(p["source"]):
        return None
    import numpy as np

    from ..davis.labels import recording_labels

    try:
        labels = recording_labels(sim, p["source"])
    except ValueError as e:
        raise ParameterError(f"source {p['source']!r}: its ground truth {e}") from e
    if labels is None:
        return None
    t, b = labels
    ok = np.all(np.isfinite(b), axis=1)
    return t[ok], b[ok]


def _publish_loop(node) -> None:
    from ..davis.frames import ApsFrame, EventBatch
    from ..io import ros_msgs as rm
    from ..timing import Pacer

    p = node.p
    src = node.topic_source
    pacer = Pacer(p["realtime_factor"] if src is None and not node.live else 0.0)
    end_us = int(p["duration_s"] * 1e6) if p["duration_s"] > 0 else None
    offset_us = 0
    try:
        while not node.stop_event.is_set() and node.context.ok():
            if src is not None:
                if not src.wait_ready(timeout_s=0.5):
                    if src.closed:
                        return
                    continue
                if node.sim is not None:
                    node.get_logger().warning(f"{node.topic}: frame time went backwards; restarting the simulator")
                node.sim = make_simulator(p, src)
            # the size is known once the simulator exists (a topic source: from its first frame;
            # a recording: its sensor's)
            width, height = node.sim.width, node.sim.height
            info = _camera_info(CameraInfo(), width, height, p["frame_id"])
            labels = node.labels
            li = 0
            last_us = 0
            for item in node.sim.stream():
                if node.stop_event.is_set() or not node.context.ok():
                    return
                t_us = (item.t1_us if isinstance(item, EventBatch) else item.t_us) + offset_us
                if end_us is not None and t_us > end_us:
                    node.get_logger().info("duration reached; stopping the stream")
                    return
                pacer.wait_until(t_us)
                last_us = t_us
                while labels is not None and li < len(labels[0]) and labels[0][li] + offset_us <= t_us:
                    # a recording's target labels, published as the stream passes their instants
                    node.pub_gt.publish(rm.box_to_msg(labels[1][li], TrackedBox(), t_us=int(labels[0][li]) + offset_us,
                                                      source=TrackedBox.SOURCE_GROUND_TRUTH, frame_id=p["frame_id"]))
                    li += 1
                if isinstance(item, EventBatch):
                    ev = item.events
                    if offset_us:
                        ev = ev.copy()
                        ev["t_us"] += offset_us
                    msg = rm.events_to_msg(ev, EventPacket(), width=width, height=height,
                                           t0_us=item.t0_us + offset_us, t1_us=item.t1_us + offset_us)
                    msg.header.frame_id = p["frame_id"]
                    node.pub_events.publish(msg)
                elif isinstance(item, ApsFrame):
                    img = rm.numpy_to_image(item.image, Image())
                    rm.us_to_stamp(t_us, img.header.stamp)
                    img.header.frame_id = p["frame_id"]
                    info.header.stamp = img.header.stamp
                    node.pub_image.publish(img)
                    node.pub_info.publish(info)
                    if item.box is not None:
                        node.pub_gt.publish(rm.box_to_msg(item.box, TrackedBox(), t_us=t_us,
                                                          source=TrackedBox.SOURCE_GROUND_TRUTH,
                                                          frame_id=p["frame_id"]))
            if src is not None:
                continue  # closed (the loop ends) or time went backwards (rebuild)
            if node.live:
                node.get_logger().info("the camera stopped")
                return
            if not p["loop"]:
                node.get_logger().info("source ended")
                return
            offset_us = last_us + p["packet_us"]  # keep sensor time monotonic across loops
            node.sim = make_simulator(p)
    except Exception as e:  # noqa: BLE001 - report, don't die silently in a thread
        node.get_logger().error(f"simulation stopped: {type(e).__name__}: {e}")


def main(args=None) -> int:
    return run_node(DavisSimulatorNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
