"""The whole tracking graph as separate processes over real DDS (loopback, own domain):
the closed loop (world -> DAVIS simulator -> SNN/ANN -> fuser -> steering -> world) runs
slower than real time (the machine has 2 shared cores), so rates are checked on the
sensor-time stamps.  Then faults: malformed messages into the live graph, and the ANN
tracker killed and restarted under the fuser.

Uses the shipped weights when both exist, else small untrained checkpoints (flow only).
"""
import os
import random
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import Twist
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Float32, String

from dashnet_ros import graph
from dashnet_ros.commands import launch
from dashnet_ros.io import ros_msgs as rm
from dashnet_ros.msg import EventPacket, TrackedBox, TrackedBoxArray
from dashnet_ros.nodes.common import sensor_qos

from test_nodes_units import box_msg, image_msg, packet, shipped_or_test_weights, us

REALTIME_FACTOR = 0.05      # sensor seconds per wall second; the SNN alone needs ~1.2 ms CPU per 480 us window
ANN_TIMEOUT_S = 0.1         # of sensor time: 2 s of wall time at this factor
APS_US = 1e6 / 30


class Probe:
    """Subscribes to every graph output from a background spin thread."""

    def __init__(self, ctx):
        self.node = Node("graph_probe", context=ctx)
        self.got = {k: [] for k in ("snn", "ann", "fused", "fused_single", "cmd", "decision", "events", "distance",
                                    "diag", "gt")}
        n, g = self.node, self.got
        # SNN and fused boxes come as arrays (one per event packet): flattened here, one entry per box
        n.create_subscription(TrackedBoxArray, graph.TOPIC_SNN_BOXES,
                              lambda m: g["snn"].extend(rm.unpack_boxes(m, TrackedBox)), 500)
        n.create_subscription(TrackedBox, graph.TOPIC_ANN_BOX, g["ann"].append, 100)
        n.create_subscription(TrackedBoxArray, graph.TOPIC_FUSED_BOXES,
                              lambda m: g["fused"].extend(rm.unpack_boxes(m, TrackedBox)), 500)
        n.create_subscription(TrackedBox, graph.TOPIC_FUSED_BOX, g["fused_single"].append, 500)
        n.create_subscription(Twist, graph.TOPIC_CMD_VEL, g["cmd"].append, 100)
        n.create_subscription(String, graph.TOPIC_DECISION, g["decision"].append, 100)
        n.create_subscription(EventPacket, graph.TOPIC_EVENTS, g["events"].append, sensor_qos(depth=500))
        n.create_subscription(Float32, graph.TOPIC_WORLD_DISTANCE, g["distance"].append, 100)
        n.create_subscription(DiagnosticArray, graph.TOPIC_DIAGNOSTICS, g["diag"].append, 100)
        n.create_subscription(TrackedBox, graph.TOPIC_GROUND_TRUTH, g["gt"].append, 100)
        self.ex = rclpy.executors.SingleThreadedExecutor(context=ctx)
        self.ex.add_node(n)
        self.stop = False
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self):
        while not self.stop:
            with self.lock:
                self.ex.spin_once(timeout_sec=0.02)

    def wait(self, until, timeout):
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:
            if until(self.got):
                return True
            time.sleep(0.05)
        return until(self.got)

    def close(self):
        self.stop = True
        self.thread.join(timeout=2)
        self.node.destroy_node()
        self.ex.shutdown()


def _children(procs, name):
    return [p for s, p in procs if s.name == name]


@pytest.fixture(scope="module")
def running_graph(tmp_path_factory):
    w = shipped_or_test_weights(tmp_path_factory)
    mp = pytest.MonkeyPatch()
    mp.setenv("ROS_DOMAIN_ID", str(random.randint(120, 220)))
    log_path = tmp_path_factory.mktemp("graph_log") / "graph.log"
    log = open(log_path, "w")
    args = {"closed_loop": "true", "realtime_factor": str(REALTIME_FACTOR), "interp_factor": "0", "seed": "2",
            "snn_weights": w["snn"], "ann_weights": w["ann"], "ann_timeout_s": str(ANN_TIMEOUT_S)}
    procs = launch.start(args, stdout=log, stderr=subprocess.STDOUT)
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    probe = Probe(ctx)
    env = {"procs": procs, "probe": probe, "log": log_path, "args": args, "ctx": ctx}
    try:
        yield env
    finally:
        probe.close()
        ctx.try_shutdown()
        launch.stop(env["procs"])
        log.close()
        mp.undo()


def _log(env) -> str:
    return open(env["log"]).read()


def test_closed_loop_flows_at_sensor_rates(running_graph):
    env, probe = running_graph, running_graph["probe"]
    ok = probe.wait(lambda g: len(g["fused"]) >= 300 and len(g["snn"]) >= 150 and len(g["ann"]) >= 6 and g["cmd"] and g["distance"], 60)
    got = probe.got
    assert ok, (f"graph outputs: { {k: len(v) for k, v in got.items()} }\n" + _log(env)[-4000:])
    assert all(p.poll() is None for _, p in env["procs"]), _log(env)[-4000:]
    # SNN: one box per 480 us window of sensor time, stamped at the window end
    t_snn = np.array([us(m) for m in got["snn"]])
    assert np.all(np.diff(t_snn) == 480), np.unique(np.diff(t_snn))
    assert all(m.source == TrackedBox.SOURCE_SNN and m.header.frame_id == "davis" for m in got["snn"])
    # fused: one per SNN box, same stamps
    t_fused = np.array([us(m) for m in got["fused"]])
    assert np.all(np.diff(t_fused) == 480)
    inside = t_fused[(t_fused >= t_snn[0]) & (t_fused <= t_snn[-1])]
    assert len(inside) > 100 and set(inside) <= set(t_snn)
    assert all(m.source == TrackedBox.SOURCE_FUSED for m in got["fused"])
    # ANN: one box per APS frame, 30 Hz of sensor time
    t_ann = np.array([us(m) for m in got["ann"]])
    # the single-box topic (attention feedback, steering, the SNN's search region): the newest
    # fused box at most every fused_box_period_ms (the newest of the event packet that
    # reaches it), and at once after each ANN box arrives (near its frame's time: a few ms
    # after, or before it where the SNN runs behind the ANN)
    defaults = graph.launch_arg_defaults()
    period_us = int(float(defaults["fused_box_period_ms"]) * 1000)
    packet_us = int(defaults["packet_us"])
    t_single = np.array([us(m) for m in got["fused_single"]])
    t_single = t_single[(t_single >= t_fused[0]) & (t_single <= t_fused[-1])]
    assert len(t_single) > 10 and set(t_single) <= set(t_fused)
    gaps = np.diff(t_single)
    assert np.all(gaps < period_us + packet_us + 1000), gaps
    early = t_single[1:][gaps < period_us]
    # (the probe may have matched the ANN topic after the fuser did: judge the early boxes
    # from its first ANN box on)
    early = early[early >= t_ann[0] - 15_000]
    assert len(early) <= len(t_ann)
    assert all(np.any(np.abs(t_ann - t) < 15_000) for t in early), (early, t_ann)
    d = np.diff(t_ann)
    assert np.all(np.abs(d / APS_US - np.round(d / APS_US)) * APS_US <= 1), d      # whole APS intervals
    assert np.median(d) == pytest.approx(APS_US, abs=1)
    # ANN stamps are APS frame stamps, on the same clock as the SNN windows
    assert t_snn[0] - 100_000 < t_ann[0] < t_snn[-1] + 100_000
    # steering: commands and PRED18 decisions; the world reports the distance
    assert {m.data for m in got["decision"]} <= {"left", "center", "right", "not_visible"} and got["decision"]
    assert all(np.isfinite([m.linear.x, m.angular.z]).all() for m in got["cmd"])
    assert 0.0 < got["distance"][-1].data < 5.0
    # the SNN started from the first ground-truth box and stopped listening to it
    assert "from the ground truth" in _log(env)


def test_bad_messages_are_warned_about_and_the_graph_keeps_running(running_graph):
    env, probe = running_graph, running_graph["probe"]
    node = probe.node
    with probe.lock:
        ev_pub = node.create_publisher(EventPacket, graph.TOPIC_EVENTS, sensor_qos())
        img_pub = node.create_publisher(Image, graph.TOPIC_IMAGE, sensor_qos())
        box_pub = node.create_publisher(TrackedBox, graph.TOPIC_FUSED_BOX, 100)
    time.sleep(1.0)  # discovery
    bad_ev = packet(10**9, 10**9 + 1000, width=10, height=10)          # coordinates out of range
    img = image_msg(10**9, np.zeros((180, 240), np.uint8))
    img.encoding = "yuv422"
    nan_box = box_msg(10**9, [np.nan] * 4, malformed=True)
    n_snn = len(probe.got["snn"])
    for _ in range(3):
        ev_pub.publish(bad_ev)
        img_pub.publish(img)
        box_pub.publish(nan_box)
        time.sleep(0.2)
    expected = ("[snn_tracker]: bad EventPacket (event coordinates out of range",
                "[ann_tracker]: bad APS image (Image encoding 'yuv422' is not supported",
                "[steering]: box marked valid is NaN")
    assert probe.wait(lambda g: all(e in _log(env) for e in expected), 20), _log(env)[-4000:]
    assert "fused box marked valid is NaN" in _log(env)
    assert all(p.poll() is None for _, p in env["procs"])
    assert probe.wait(lambda g: len(g["snn"]) > n_snn + 50, 20)          # still tracking
    t_snn = np.array([us(m) for m in probe.got["snn"]])
    assert np.all(np.diff(t_snn) == 480)


def test_fuser_goes_snn_only_without_the_ann_and_resumes(running_graph):
    env, probe = running_graph, running_graph["probe"]
    got = probe.got
    (ann,) = _children(env["procs"], "ann_tracker")
    # only what comes after the kill counts (under load the fuser may have gone SNN-only
    # once already while the ANN node was starting)
    n_diag0, n_said = len(got["diag"]), _log(env).count("publishing SNN-only boxes")
    os.killpg(ann.pid, signal.SIGINT)
    ann.wait(timeout=20)

    def warned(g):
        return any(s.name.startswith("dashnet fuser") and s.level == DiagnosticStatus.WARN
                   for d in g["diag"][n_diag0:] for s in d.status)

    assert probe.wait(warned, 30), _log(env)[-3000:]
    assert _log(env).count("publishing SNN-only boxes") > n_said
    n = len(got["fused"])
    assert probe.wait(lambda g: len(g["fused"]) > n + 20, 20)
    # SNN only (w = 1); boxes fused before the switch may still be in flight on this topic
    # when the diagnostic arrives, so judge the newest ones
    assert all(m.score == 1.0 for m in got["fused"][-10:])
    n_diag = len(got["diag"])
    # restart the ANN tracker with the same command line
    (spec, cmd), = [(s, c) for s, c in graph.node_commands(sys.executable, launch.config_dir(), env["args"])
                    if s.name == "ann_tracker"]
    log = open(env["log"], "a")
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    env["procs"] = [(s, q) for s, q in env["procs"] if s.name != "ann_tracker"] + [(spec, p)]
    n_ann = len(got["ann"])
    assert probe.wait(lambda g: any(s.level == DiagnosticStatus.OK and s.name.startswith("dashnet fuser")
                                    for d in g["diag"][n_diag:] for s in d.status) and len(g["ann"]) > n_ann, 60), \
        _log(env)[-3000:]
    assert "ANN boxes are back" in _log(env)
    n = len(got["fused"])
    assert probe.wait(lambda g: any(m.score < 1.0 for m in g["fused"][n:]), 20)   # fusing again
