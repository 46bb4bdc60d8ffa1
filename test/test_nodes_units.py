"""The tracking-graph nodes in one process over real DDS (loopback, own domain): what each
publishes, and that bad input is warned about (by name) without stopping the node.

Networks are small untrained checkpoints: these tests check data flow, stamps and
recovery, not tracking quality."""
import array
import math
import os
import time

import numpy as np
import pytest

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import Twist
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Bool, Float32, String

from dashnet_ros.io import ros_msgs as rm
from dashnet_ros.msg import EventPacket, TrackedBox, TrackedBoxArray
from dashnet_ros.nodes.common import ParameterError, sensor_qos


# --------------------------------------------------------------------------- helpers

def make_weights(directory) -> dict:
    """Small untrained 'fast' checkpoints: {'snn': path, 'ann': path}."""
    import torch

    from dashnet_ros.models.ann import FrameTracker
    from dashnet_ros.models.checkpoint import save_checkpoint
    from dashnet_ros.models.snn import SpikingTracker

    torch.manual_seed(0)
    out = {"snn": os.path.join(directory, "snn.pt"), "ann": os.path.join(directory, "ann.pt")}
    save_checkpoint(out["snn"], SpikingTracker.from_preset("fast"), preset="fast")
    save_checkpoint(out["ann"], FrameTracker.from_preset("fast"), preset="fast")
    return out


def shipped_or_test_weights(tmp_path_factory) -> dict:
    """The shipped fast weights when the package has them, else :func:`make_weights`."""
    from dashnet_ros.tracking import default_weights

    shipped = {"snn": default_weights("snn"), "ann": default_weights("ann")}
    if all(os.path.isfile(w) for w in shipped.values()):
        return shipped
    return make_weights(str(tmp_path_factory.mktemp("weights")))


def params(**kw):
    return [Parameter(k, value=v) for k, v in kw.items()]


def us(msg) -> int:
    return rm.stamp_to_us(msg.header.stamp)


def unpack(arr):
    """A TrackedBoxArray's boxes as TrackedBox messages."""
    return rm.unpack_boxes(arr, TrackedBox)


def pack(boxes):
    return rm.pack_boxes(boxes, TrackedBoxArray())


class Harness:
    """One rclpy context, an executor, the nodes under test and a probe node."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.ex = rclpy.executors.SingleThreadedExecutor(context=ctx)
        self.probe = Node("probe", context=ctx)
        self.ex.add_node(self.probe)
        self.nodes = []

    def add(self, cls, **kw):
        node = cls(context=self.ctx, parameter_overrides=params(**kw))
        self.nodes.append(node)
        self.ex.add_node(node)
        return node

    def pub(self, msg_type, topic, qos=100):
        p = self.probe.create_publisher(msg_type, topic, qos)
        return p

    def sub(self, msg_type, topic, qos=200):
        got = []
        self.probe.create_subscription(msg_type, topic, got.append, qos)
        return got

    def spin(self, seconds=0.3, until=None):
        t_end = time.monotonic() + seconds
        while time.monotonic() < t_end:
            self.ex.spin_once(timeout_sec=0.01)
            if until is not None and until():
                return True
        return until() if until is not None else True

    def connect(self, *pubs, timeout=5.0):
        assert self.spin(timeout, until=lambda: all(p.get_subscription_count() >= 1 for p in pubs))

    def close(self):
        for n in self.nodes:
            close = getattr(n, "close", None)
            if close:
                close()
            self.ex.remove_node(n)
            n.destroy_node()
        self.probe.destroy_node()
        self.ex.shutdown()


def packet(t0_us, t1_us, n=60, width=240, height=180, region=(100, 70, 40, 40)):
    """An EventPacket over [t0, t1) with ``n`` events in ``region`` (x, y, w, h)."""
    from dashnet_ros.events import make_events

    rng = np.random.default_rng(t0_us)
    x0, y0, w, h = region
    ev = make_events(rng.integers(x0, x0 + w, n), rng.integers(y0, y0 + h, n),
                     np.sort(rng.integers(t0_us, t1_us, n)), rng.choice([-1, 1], n))
    msg = rm.events_to_msg(ev, EventPacket(), width=width, height=height, t0_us=t0_us, t1_us=t1_us)
    msg.header.frame_id = "davis"
    return msg


def box_msg(t_us, box, source=TrackedBox.SOURCE_FUSED, malformed=False):
    m = rm.box_to_msg(np.asarray(box, np.float32), TrackedBox(), t_us=t_us, source=source, frame_id="davis")
    if malformed:  # says valid, carries NaN
        m.valid, m.x = True, float("nan")
    return m


def image_msg(t_us, img, encoding=None):
    m = rm.numpy_to_image(img, Image(), encoding)
    rm.us_to_stamp(t_us, m.header.stamp)
    m.header.frame_id = "davis"
    return m


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return make_weights(str(tmp_path_factory.mktemp("weights")))


@pytest.fixture
def h(ros_domain):
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    harness = Harness(ctx)
    yield harness
    harness.close()
    ctx.try_shutdown()


# --------------------------------------------------------------------------- snn_tracker

def test_snn_tracker_publishes_a_box_per_window_and_survives_bad_packets(h, weights):
    from dashnet_ros.nodes.snn_tracker import SNNTrackerNode

    node = h.add(SNNTrackerNode, weights=weights["snn"], init_box=[100.0, 70.0, 40.0, 40.0])
    pub = h.pub(EventPacket, "/snn_tracker/events", sensor_qos())
    out = h.sub(TrackedBox, "/snn_tracker/box")
    h.connect(pub)
    first = packet(0, 1000)
    for k in range(5):
        pub.publish(packet(k * 1000, (k + 1) * 1000) if k else first)
    assert h.spin(5, until=lambda: len(out) >= 10)
    t = np.array([us(m) for m in out])
    # windows of 480 us from the initialisation (the first packet's first event), stamped at their end
    assert t[0] == first.time_base_us + 480 and np.all(np.diff(t) == 480)
    assert t[-1] <= 5000
    assert all(m.source == TrackedBox.SOURCE_SNN and m.header.frame_id == "davis" for m in out)

    # malformed packets: record size, coordinates out of range, empty interval, zero sensor size
    bad = []
    m = packet(5000, 6000)
    m.events = array.array("B", bytes(15))
    bad.append(m)
    bad.append(packet(5000, 6000, width=64, height=48))
    m = packet(5000, 6000, n=0)
    m.end_us = m.time_base_us
    bad.append(m)
    m = packet(5000, 6000, n=0)
    m.width = m.height = 0
    bad.append(m)
    m = packet(5000, 6000)
    m.time_base_us = int(m.end_us)  # events before the interval
    bad.append(m)
    for m in bad:
        pub.publish(m)
    assert h.spin(3, until=lambda: node.warn.counts.get("bad_packet", 0) >= len(bad))
    assert node.warn.counts["bad_packet"] == len(bad)
    n_before = len(out)
    for k in range(5, 8):
        pub.publish(packet(k * 1000, (k + 1) * 1000))
    assert h.spin(5, until=lambda: us(out[-1]) >= 7680)
    t = np.array([us(m) for m in out])
    assert np.all(np.diff(t) == 480) and len(out) > n_before     # continues, no window skipped

    # time going backwards (a bag loops): reset, start again from init_box at the new time
    for k in range(3):
        pub.publish(packet(k * 1000, (k + 1) * 1000))
    assert h.spin(5, until=lambda: us(out[-1]) < 7000)
    assert node.warn.counts.get("time", 0) == 1
    assert h.spin(3, until=lambda: us(out[-1]) >= 2000)
    t_new = np.array([us(m) for m in out if us(m) < 7000 and out.index(m) > n_before])
    assert len(t_new) >= 3 and np.all(np.diff(t_new) == 480)


def _snn_initialised_by_ground_truth(h, weights):
    """An snn_tracker without init_box, its events and ground-truth publishers, its boxes."""
    from dashnet_ros.nodes.snn_tracker import SNNTrackerNode

    node = h.add(SNNTrackerNode, weights=weights["snn"])
    pub = h.pub(EventPacket, "/snn_tracker/events", sensor_qos())
    gt = h.pub(TrackedBox, "/snn_tracker/ground_truth", 10)
    out = h.sub(TrackedBox, "/snn_tracker/box")
    h.connect(pub, gt)
    return node, pub, gt, out


def test_snn_tracker_initialises_from_the_first_ground_truth_only(h, weights):
    node, pub, gt, out = _snn_initialised_by_ground_truth(h, weights)
    for k in range(3):
        pub.publish(packet(k * 1000, (k + 1) * 1000))
    gt.publish(box_msg(500, [np.nan] * 4, TrackedBox.SOURCE_GROUND_TRUTH))      # target not visible
    h.spin(0.5)
    assert out == [] and not node.initialised                                    # nothing before init
    gt.publish(box_msg(3500, [90, 60, 30, 40], TrackedBox.SOURCE_GROUND_TRUTH))
    assert h.spin(3, until=lambda: gt.get_subscription_count() == 0)             # stops listening
    assert node.first.pending is not None
    for k in range(3, 8):
        pub.publish(packet(k * 1000, (k + 1) * 1000))
    assert h.spin(5, until=lambda: len(out) >= 5)
    t = np.array([us(m) for m in out])
    assert t[0] == 3500 + 480 and np.all(np.diff(t) == 480)
    assert node.init_t_us == 3500
    # a bag loop: time goes backwards, the node listens to the ground truth again
    pub.publish(packet(0, 1000))
    assert h.spin(3, until=lambda: gt.get_subscription_count() == 1)
    assert not node.initialised and node.warn.counts["time"] == 1


def test_snn_tracker_starts_at_the_ground_truth_instant_even_if_it_arrives_after_packets(h, weights):
    """DDS may deliver the first event packets before the ground-truth box they follow: the
    node keeps them and starts its windows at the box's instant (as a bag replay, which
    delivers in another order, does too)."""
    node, pub, gt, out = _snn_initialised_by_ground_truth(h, weights)
    for k in range(2):
        pub.publish(packet(k * 1000, (k + 1) * 1000))
    h.spin(0.5)
    assert out == [] and not node.initialised and len(node.early) == 2
    gt.publish(box_msg(200, [90, 60, 30, 40], TrackedBox.SOURCE_GROUND_TRUTH))
    assert h.spin(3, until=lambda: gt.get_subscription_count() == 0)
    for k in range(2, 5):
        pub.publish(packet(k * 1000, (k + 1) * 1000))
    assert h.spin(5, until=lambda: len(out) >= 9)
    t = np.array([us(m) for m in out])
    assert node.init_t_us == 200 and t[0] == 200 + 480 and np.all(np.diff(t) == 480)
    assert node.early == []


def test_snn_search_region_follows_new_fused_boxes(h, weights):
    from dashnet_ros.nodes.snn_tracker import SNNTrackerNode

    node = h.add(SNNTrackerNode, weights=weights["snn"], init_box=[100.0, 70.0, 40.0, 40.0],
                 fused_max_age_ms=1.0, fused_input="single")
    refs = []
    step = node.runner.step

    def recording_step(k=1):
        refs.append(None if node.runner.reference is None else node.runner.reference.copy())
        return step(k)

    node.runner.step = recording_step
    pub = h.pub(EventPacket, "/snn_tracker/events", sensor_qos())
    fused = h.pub(TrackedBox, "/snn_tracker/fused_box", 100)
    out = h.sub(TrackedBox, "/snn_tracker/box")
    h.connect(pub, fused)
    pub.publish(packet(0, 1000))
    assert h.spin(3, until=lambda: len(out) >= 2)
    target = [20.0, 30.0, 16.0, 24.0]
    fused.publish(box_msg(us(out[-1]), target))
    fused.publish(box_msg(us(out[-1]), [np.nan] * 4, malformed=True))            # warned, ignored
    assert h.spin(3, until=lambda: node.fused_new or node.warn.counts.get("bad_fused"))
    h.spin(0.2)
    n = len(refs)
    pub.publish(packet(1000, 2000))
    assert h.spin(3, until=lambda: len(refs) > n)
    assert np.allclose(refs[n], target)                 # the next window is centred on the fused box
    assert node.warn.counts["bad_fused"] == 1
    assert not node.fused_new                           # used once
    # a fused box older than fused_max_age_ms is ignored
    fused.publish(box_msg(500, [200.0, 150.0, 16.0, 16.0]))
    assert h.spin(3, until=lambda: node.fused_new)
    n = len(refs)
    pub.publish(packet(10_000, 11_000))
    assert h.spin(3, until=lambda: len(refs) > n)
    assert not np.allclose(refs[n], [200.0, 150.0, 16.0, 16.0])


def test_snn_origin_ignores_fused_boxes(h, weights):
    from dashnet_ros.nodes.snn_tracker import SNNTrackerNode

    node = h.add(SNNTrackerNode, weights=weights["snn"], init_box=[100.0, 70.0, 40.0, 40.0], follow_fused=False,
                 windows_per_call=2, fused_input="single")
    pub = h.pub(EventPacket, "/snn_tracker/events", sensor_qos())
    fused = h.pub(TrackedBox, "/snn_tracker/fused_box", 100)
    out = h.sub(TrackedBox, "/snn_tracker/box")
    h.connect(pub, fused)
    pub.publish(packet(0, 1000))
    assert h.spin(3, until=lambda: len(out) >= 2)
    fused.publish(box_msg(us(out[-1]), [20.0, 30.0, 16.0, 24.0]))
    assert h.spin(3, until=lambda: node.fused is not None)
    pub.publish(packet(1000, 2000))
    assert h.spin(3, until=lambda: len(out) >= 4)
    assert not np.allclose(node.runner.reference, [20.0, 30.0, 16.0, 24.0])
    assert np.all(np.diff([us(m) for m in out]) == 480)   # two windows per call, still one box each


def test_snn_tracker_publishes_one_array_per_packet_and_singles_only_when_subscribed(h, weights):
    from dashnet_ros.nodes.snn_tracker import DIAG_NAME, SNNTrackerNode

    node = h.add(SNNTrackerNode, weights=weights["snn"], init_box=[100.0, 70.0, 40.0, 40.0], windows_per_call=3,
                 diagnostics_period_s=0.2)
    singles_published = []
    publish = node.pub.publish
    node.pub.publish = lambda m: (singles_published.append(m), publish(m))
    pub = h.pub(EventPacket, "/snn_tracker/events", sensor_qos())
    arrays = h.sub(TrackedBoxArray, "/snn_tracker/boxes")
    diag = h.sub(DiagnosticArray, "/diagnostics", 20)
    h.connect(pub)
    for k in range(4):
        pub.publish(packet(k * 1000, (k + 1) * 1000))
    assert h.spin(5, until=lambda: len(arrays) == 4)
    assert singles_published == []                          # nobody subscribed to ~/box: no single boxes
    t = np.array([us(b) for a in arrays for b in unpack(a)])
    first = packet(0, 1000).time_base_us
    assert t[0] == first + 480 and np.all(np.diff(t) == 480) and t[-1] <= 4000
    for a in arrays:                                        # the windows each packet completed, stamped
        assert 1 <= len(unpack(a)) <= 3 and us(a) == us(unpack(a)[-1]) and a.header.frame_id == "davis"
        assert all(b.source == TrackedBox.SOURCE_SNN for b in unpack(a))
    # with a subscriber the same boxes also come one per message
    singles = h.sub(TrackedBox, "/snn_tracker/box")
    assert h.spin(3, until=lambda: node.pub.get_subscription_count() == 1)
    for k in range(4, 6):
        pub.publish(packet(k * 1000, (k + 1) * 1000))
    assert h.spin(5, until=lambda: len(arrays) == 6 and len(singles) == sum(len(unpack(a)) for a in arrays[4:]))
    assert [us(m) for m in singles] == [us(b) for a in arrays[4:] for b in unpack(a)]
    # the counters on /diagnostics
    assert h.spin(3, until=lambda: any(s.name == DIAG_NAME and dict((v.key, v.value) for v in s.values)["packets"] == "6"
                                       for d in diag for s in d.status))
    st = [s for d in diag for s in d.status if s.name == DIAG_NAME][-1]
    values = {v.key: v.value for v in st.values}
    assert values["windows"] == str(len(t) + len(singles)) and values["last_end_us"] == "6000"
    assert int(values["calls"]) <= 6 and values["bad_packets"] == "0"


def test_snn_tracker_node_gives_exactly_the_core_runners_boxes(h, weights):
    """The node hands the runner each step's events only (no quadratic copying): same boxes as
    SNNRunner.push_events on the same packets, also when one packet completes many windows."""
    import torch

    from dashnet_ros.nodes.snn_tracker import SNNTrackerNode
    from dashnet_ros.tracking import SNNRunner

    node = h.add(SNNTrackerNode, weights=weights["snn"], init_box=[90.0, 60.0, 40.0, 40.0], windows_per_call=2,
                 follow_fused=False)
    out = []
    node.pub_boxes.publish = out.append
    spans = [(0, 1000), (1000, 2000), (2000, 7000), (7000, 7300), (7300, 9100)]   # 10 windows in one packet
    msgs = [packet(a, b, n=400 * (b - a) // 1000, region=(80, 50, 60, 60)) for a, b in spans]
    for m in msgs:
        node._on_events(m)
    torch.manual_seed(0)
    ref = SNNRunner.from_file(weights["snn"], "fast", 240, 180, windows_per_call=2)
    ref.init(np.array([90.0, 60.0, 40.0, 40.0], np.float32), msgs[0].time_base_us)
    expected = []
    for m in msgs:
        expected += ref.push_events(rm.msg_to_events(m), m.end_us)
    got = [(us(b), [b.x, b.y, b.w, b.h] if b.valid else [np.nan] * 4) for a in out for b in unpack(a)]
    assert [t for t, _ in got] == [o.t_us for o in expected] and len(got) == (9100 - msgs[0].time_base_us) // 480
    want = np.stack([o.box if o.box[2] > 0 and o.box[3] > 0 else np.full(4, np.nan) for o in expected])  # no size: none
    assert np.isfinite(want).any()
    assert np.allclose(np.array([b for _, b in got], np.float32), want, equal_nan=True)
    # each box carries the SNN's motion over its window as a velocity (px/s)
    vel = np.array([[b.vx, b.vy] for a in out for b in unpack(a)])
    motion = np.array([o.motion_px if np.all(np.isfinite(o.box)) else (0.0, 0.0) for o in expected])
    assert np.abs(motion).max() > 0
    np.testing.assert_allclose(vel, motion * 1e6 / 480, rtol=1e-4, atol=1e-2)


def test_snn_tracker_windows_per_call_changes_nothing_but_the_calls(h, tmp_path_factory):
    """With the compiled window loop, running the windows a packet completes in one call
    (windows_per_call 8, the default) gives the boxes of one call per window, also while
    fused boxes re-centre the search region between packets."""
    from dashnet_ros.nodes.snn_tracker import SNNTrackerNode

    snn_weights = shipped_or_test_weights(tmp_path_factory)["snn"]
    spans = [(0, 2000), (2000, 4000), (4000, 6000), (6000, 11000), (11000, 13000)]
    msgs = [packet(a, b, n=400 * (b - a) // 1000, region=(80, 50, 60, 60)) for a, b in spans]
    runs = {}
    for k in (1, 8):
        node = h.add(SNNTrackerNode, weights=snn_weights, init_box=[90.0, 60.0, 40.0, 40.0], windows_per_call=k)
        out = []
        node.pub_boxes.publish = out.append
        for i, m in enumerate(msgs):
            node._on_events(m)
            if i in (1, 3):                       # a fused box (the ANN's correction) between packets
                node._on_fused(box_msg(m.end_us - 100, [84.0 + 3 * i, 58.0, 40.0, 40.0]))
        runs[k] = ([(us(b), b.x, b.y, b.w, b.h, b.vx, b.vy, b.valid) for a in out for b in unpack(a)],
                   node.counts["calls"], node.runner.resets)
    assert len(runs[1][0]) == (13000 - msgs[0].time_base_us) // 480 and sum(b[-1] for b in runs[1][0]) > 10
    assert runs[8][0] == runs[1][0]
    assert runs[8][1] == len(msgs) + 1 < runs[1][1]       # a call per packet (two for the 10-window one), not per window
    assert runs[8][2] == runs[1][2]


def test_snn_follows_the_newest_usable_box_of_fused_arrays(h, weights):
    from dashnet_ros.nodes.snn_tracker import SNNTrackerNode

    node = h.add(SNNTrackerNode, weights=weights["snn"], init_box=[100.0, 70.0, 40.0, 40.0],
                 fused_input="array")
    refs = []
    step = node.runner.step
    node.runner.step = lambda k=1: (refs.append(node.runner.reference.copy()), step(k))[1]
    pub = h.pub(EventPacket, "/snn_tracker/events", sensor_qos())
    fused = h.pub(TrackedBoxArray, "/snn_tracker/fused_boxes", 100)
    out = h.sub(TrackedBoxArray, "/snn_tracker/boxes")
    h.connect(pub, fused)
    pub.publish(packet(0, 1000))
    assert h.spin(3, until=lambda: len(out) == 1)
    t = us(unpack(out[-1])[-1])
    arr = pack([box_msg(t - 480, [10.0, 10.0, 16.0, 16.0]), box_msg(t, [20.0, 30.0, 16.0, 24.0]),
                box_msg(t, [np.nan] * 4, malformed=True)])
    fused.publish(arr)
    assert h.spin(3, until=lambda: node.fused_new)
    assert node.warn.counts["bad_fused"] == 1
    n = len(refs)
    pub.publish(packet(1000, 2000))
    assert h.spin(3, until=lambda: len(refs) > n)
    assert np.allclose(refs[n], [20.0, 30.0, 16.0, 24.0])   # the newest valid one, not the older


def test_tracker_nodes_refuse_missing_weights_and_bad_parameters(h, tmp_path):
    from dashnet_ros.nodes.ann_tracker import ANNTrackerNode
    from dashnet_ros.nodes.snn_tracker import SNNTrackerNode

    with pytest.raises(FileNotFoundError, match="nope.pt"):
        h.add(SNNTrackerNode, weights=str(tmp_path / "nope.pt"))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        h.add(ANNTrackerNode, weights=str(bad))
    with pytest.raises(ParameterError, match="init_box"):
        h.add(SNNTrackerNode, weights=str(bad), init_box=[1.0, 2.0, 0.0, 4.0])
    with pytest.raises(ParameterError, match="device"):
        h.add(SNNTrackerNode, weights=str(bad), device="tpu")
    with pytest.raises(ParameterError, match="threads: .*'STRING', expecting type 'INTEGER'"):
        h.add(SNNTrackerNode, weights=str(bad), threads="two")


def test_tracker_nodes_take_an_initial_box_of_integers(h, weights):
    """`init_box:=[120,64,24,18]` (how a user types it) is an integer array to ROS: the
    float-array parameter takes it as floats."""
    from dashnet_ros.nodes.ann_tracker import ANNTrackerNode
    from dashnet_ros.nodes.snn_tracker import SNNTrackerNode

    snn = h.add(SNNTrackerNode, weights=weights["snn"], init_box=[120, 64, 24, 18])
    ann = h.add(ANNTrackerNode, weights=weights["ann"], init_box=[120, 64, 24, 18])
    for node in (snn, ann):
        assert node.p["init_box"] == [120.0, 64.0, 24.0, 18.0] and node.first.origin == "init_box"
        np.testing.assert_array_equal(node.first.fixed, np.float32([120, 64, 24, 18]))


# --------------------------------------------------------------------------- ann_tracker

def test_ann_tracker_uses_the_latest_fused_box_before_each_frame(h, weights):
    from dashnet_ros.nodes.ann_tracker import ANNTrackerNode

    node = h.add(ANNTrackerNode, weights=weights["ann"])
    feedback = []
    update = node.runner.update

    def recording_update(img, fb):
        feedback.append(None if fb is None else np.asarray(fb).copy())
        return update(img, fb)

    node.runner.update = recording_update
    img_pub = h.pub(Image, "/ann_tracker/image_raw", sensor_qos())
    fused = h.pub(TrackedBox, "/ann_tracker/fused_box", 100)
    out = h.sub(TrackedBox, "/ann_tracker/box")
    h.connect(img_pub, fused)
    img = (np.random.default_rng(0).random((180, 240)) * 255).astype(np.uint8)
    img_pub.publish(image_msg(10_000, img))
    assert h.spin(3, until=lambda: node.skipped == 1)
    assert out == []                                     # no fused box yet: not started
    A, B, C = [50.0, 50.0, 20.0, 20.0], [60.0, 50.0, 20.0, 20.0], [70.0, 50.0, 20.0, 20.0]
    for t, b in ((5_000, A), (20_000, B), (33_333, C)):
        fused.publish(box_msg(t, b))
    assert h.spin(3, until=lambda: len(node.history) == 3)
    img_pub.publish(image_msg(33_333, img))
    assert h.spin(3, until=lambda: len(out) == 1)
    assert us(out[0]) == 33_333 and out[0].source == TrackedBox.SOURCE_ANN
    assert np.allclose(feedback[-1], B)                 # strictly before the frame: not C
    # unreadable frames are dropped with a warning
    bad = image_msg(50_000, img)
    bad.encoding = "yuv422"
    img_pub.publish(bad)
    short = image_msg(50_000, img)
    short.data = short.data[:100]
    img_pub.publish(short)
    assert h.spin(3, until=lambda: node.warn.counts.get("bad_image", 0) == 2)
    img_pub.publish(image_msg(66_667, img))
    assert h.spin(3, until=lambda: len(out) == 2)
    assert us(out[1]) == 66_667 and np.allclose(feedback[-1], C)
    # time going backwards: reset, wait for a fused box of the new time line
    img_pub.publish(image_msg(1_000, img))
    assert h.spin(3, until=lambda: node.warn.counts.get("time", 0) == 1)
    assert not node.started and len(out) == 2
    fused.publish(box_msg(1_500, A))
    assert h.spin(3, until=lambda: len(node.history) == 1)
    img_pub.publish(image_msg(2_000, img))
    assert h.spin(3, until=lambda: len(out) == 3)
    assert us(out[2]) == 2_000 and np.allclose(feedback[-1], A)


def test_ann_tracker_starts_from_the_first_ground_truth_box(h, weights):
    from dashnet_ros.nodes.ann_tracker import ANNTrackerNode

    node = h.add(ANNTrackerNode, weights=weights["ann"])
    feedback = []
    update = node.runner.update
    node.runner.update = lambda img, fb: (feedback.append(np.asarray(fb).copy()), update(img, fb))[1]
    img_pub = h.pub(Image, "/ann_tracker/image_raw", sensor_qos())
    gt = h.pub(TrackedBox, "/ann_tracker/ground_truth", 10)
    out = h.sub(TrackedBox, "/ann_tracker/box")
    h.connect(img_pub, gt)
    G = [80.0, 60.0, 24.0, 30.0]
    gt.publish(box_msg(30_000, G, TrackedBox.SOURCE_GROUND_TRUTH))
    assert h.spin(3, until=lambda: gt.get_subscription_count() == 0)      # read once, then never again
    img = np.full((180, 240), 90, np.uint8)
    img_pub.publish(image_msg(20_000, img))                                # before the box's stamp
    assert h.spin(3, until=lambda: node.skipped == 1)
    img_pub.publish(image_msg(33_333, img))
    assert h.spin(3, until=lambda: len(out) == 1)
    assert np.allclose(feedback[0], G)            # no fused box yet: the initial box is the feedback


# --------------------------------------------------------------------------- fuser

def test_fuser_blends_falls_back_to_snn_only_and_reports_it(h):
    from dashnet_ros.nodes.fuser import DIAG_NAME, FuserNode

    node = h.add(FuserNode, ann_timeout_s=0.05, snn_input="single", single_output="all")
    snn = h.pub(TrackedBox, "/fuser/snn_box", 100)
    ann = h.pub(TrackedBox, "/fuser/ann_box", 100)
    out = h.sub(TrackedBox, "/fuser/fused_box")
    diag = h.sub(DiagnosticArray, "/diagnostics", 10)
    h.connect(snn, ann)
    A = np.array([100.0, 100.0, 20.0, 20.0], np.float32)
    S = np.array([110.0, 100.0, 20.0, 20.0], np.float32)

    def snn_box(t, box=S, **kw):
        n = len(out)
        snn.publish(box_msg(t, box, TrackedBox.SOURCE_SNN, **kw))
        assert h.spin(3, until=lambda: len(out) > n)
        return out[-1]

    ann.publish(box_msg(0, A, TrackedBox.SOURCE_ANN))
    assert h.spin(3, until=lambda: node.last_ann_t == 0)
    f = snn_box(480)                                          # right after the frame: the ANN's box
    assert us(f) == 480 and f.source == TrackedBox.SOURCE_FUSED and f.valid
    assert f.x == pytest.approx(100.0, abs=0.01) and f.score < 0.01
    f = snn_box(20_000)                                       # 20 ms later: mostly the SNN (eq. 8)
    w = math.tanh(((20_000e-6) / (1 / 60)) ** 2 / 2)
    assert f.score == pytest.approx(w, rel=1e-4) and f.x == pytest.approx(100 + 10 * w, abs=0.01)
    f = snn_box(25_000, malformed=True)                       # a NaN SNN box: the ANN's
    assert node.warn.counts["bad_snn"] == 1 and f.x == pytest.approx(100.0)
    f = snn_box(60_000)                                       # > 50 ms without ANN: SNN only
    assert (f.x, f.score) == (110.0, 1.0) and node.snn_only
    assert h.spin(3, until=lambda: any(s.level == DiagnosticStatus.WARN for d in diag for s in d.status))
    warn = [s for d in diag for s in d.status if s.level == DiagnosticStatus.WARN][0]
    assert warn.name == DIAG_NAME and "SNN-only" in warn.message
    f = snn_box(70_000)
    assert f.x == 110.0
    ann.publish(box_msg(70_100, A, TrackedBox.SOURCE_ANN))   # the ANN is back
    assert h.spin(3, until=lambda: not node.snn_only)
    assert h.spin(3, until=lambda: diag[-1].status[0].level == DiagnosticStatus.OK)
    f = snn_box(70_200)
    assert f.x == pytest.approx(100.0, abs=0.01)
    f = snn_box(100)                                          # time going backwards: filter reset
    assert node.warn.counts["time"] == 1 and f.x == 110.0


def _fuser_on_arrays(h, **params):
    """A fuser reading SNN arrays: (node, SNN and ANN publishers, fused array and single
    subscriptions), connected."""
    from dashnet_ros.nodes.fuser import FuserNode

    node = h.add(FuserNode, **params)
    snn = h.pub(TrackedBoxArray, "/fuser/snn_boxes", 100)
    ann = h.pub(TrackedBox, "/fuser/ann_box", 100)
    arrays = h.sub(TrackedBoxArray, "/fuser/fused_boxes")
    single = h.sub(TrackedBox, "/fuser/fused_box")
    h.connect(snn, ann)
    return node, snn, ann, arrays, single


def test_fuser_fuses_arrays_box_by_box_and_rate_limits_the_single_box(h):
    node, snn, ann, arrays, single = _fuser_on_arrays(h, single_period_ms=1.0)
    A, S = [100.0, 100.0, 20.0, 20.0], [110.0, 100.0, 20.0, 20.0]
    ann.publish(box_msg(0, A, TrackedBox.SOURCE_ANN))
    assert h.spin(3, until=lambda: node.last_ann_t == 0)
    stamps = [(480, 960), (1440, 1920), (2400, 2880, 3360)]
    for ts in stamps:
        arr = pack([box_msg(t, S, TrackedBox.SOURCE_SNN) for t in ts])
        snn.publish(arr)
    assert h.spin(3, until=lambda: len(arrays) == 3 and len(single) == 2)
    h.spin(0.2)
    for arr, ts in zip(arrays, stamps):                    # one fused box per SNN box, same stamps
        assert [us(b) for b in unpack(arr)] == list(ts) and us(arr) == ts[-1]
        for b in unpack(arr):
            w = math.tanh((us(b) * 1e-6 / (1 / 60)) ** 2 / 2)
            assert b.source == TrackedBox.SOURCE_FUSED and b.score == pytest.approx(w, rel=1e-4, abs=1e-7)
            assert b.x == pytest.approx(100 + 10 * w, abs=0.01)
    # the single box: the newest of an array, at most one per 1 ms of sensor time (1920 is 960 us after 960)
    assert [us(m) for m in single] == [960, 3360]
    # an array with no valid SNN box still gives one fused box per entry
    arr = pack([box_msg(3840, [np.nan] * 4, TrackedBox.SOURCE_SNN)])
    snn.publish(arr)
    assert h.spin(3, until=lambda: len(arrays) == 4)
    assert len(unpack(arrays[-1])) == 1 and unpack(arrays[-1])[0].x == pytest.approx(100.0)   # the ANN's
    # a ragged array is dropped with a warning; one marked valid with NaN counts as no box; it goes on
    bad = pack([box_msg(4320, S, TrackedBox.SOURCE_SNN), box_msg(4800, S, TrackedBox.SOURCE_SNN)])
    bad.valid = [True]
    snn.publish(bad)
    assert h.spin(3, until=lambda: node.warn.counts.get("bad_snn") == 1)
    snn.publish(pack([box_msg(5280, S, TrackedBox.SOURCE_SNN, malformed=True)]))
    assert h.spin(3, until=lambda: len(arrays) == 5)
    assert node.warn.counts["bad_snn"] == 2 and unpack(arrays[-1])[0].x == pytest.approx(100.0)


def test_fuser_sends_the_first_fused_box_after_an_ann_box_at_once(h):
    """'latest' is rate-limited, but the correction an ANN box brings goes out with the next
    SNN message (the SNN's search region and the ANN's attention follow it without waiting)."""
    node, snn, ann, arrays, single = _fuser_on_arrays(h, single_period_ms=100.0)
    A, S = [100.0, 100.0, 20.0, 20.0], [110.0, 100.0, 20.0, 20.0]

    def snn_array(*ts):
        snn.publish(pack([box_msg(t, S, TrackedBox.SOURCE_SNN) for t in ts]))
        n = len(arrays) + 1
        assert h.spin(3, until=lambda: len(arrays) == n)

    ann.publish(box_msg(0, A, TrackedBox.SOURCE_ANN))
    assert h.spin(3, until=lambda: node.last_ann_t == 0)
    snn_array(480, 960)
    snn_array(1440, 1920)                                   # within 100 ms, no new ANN box: no single box
    ann.publish(box_msg(2000, [90.0, 100.0, 20.0, 20.0], TrackedBox.SOURCE_ANN))
    assert h.spin(3, until=lambda: node.last_ann_t == 2000)
    snn_array(2400, 2880)                                   # the first after the ANN box: at once
    snn_array(3360)
    h.spin(0.2)
    assert [us(m) for m in single] == [960, 2880]
    assert single[-1].x < 105.0                             # it carries the new ANN box's pull


def test_fuser_moves_the_ann_box_by_the_snn_velocity(h):
    from dashnet_ros.nodes.fuser import FuserNode

    node = h.add(FuserNode)
    snn = h.pub(TrackedBoxArray, "/fuser/snn_boxes", 100)
    ann = h.pub(TrackedBox, "/fuser/ann_box", 100)
    arrays = h.sub(TrackedBoxArray, "/fuser/fused_boxes")
    h.connect(snn, ann)
    A, S = [100.0, 100.0, 20.0, 20.0], [110.0, 100.0, 20.0, 20.0]
    ann.publish(box_msg(0, A, TrackedBox.SOURCE_ANN))
    assert h.spin(3, until=lambda: node.last_ann_t == 0)
    ts = [480 * k for k in range(1, 11)]
    boxes = []
    for t in ts:    # 1000 px/s to the right: 0.48 px per window, counted from the first box on
        m = box_msg(t, S, TrackedBox.SOURCE_SNN)
        m.vx, m.vy = 1000.0, 0.0
        boxes.append(m)
    snn.publish(pack(boxes))
    assert h.spin(3, until=lambda: len(arrays) == 1)
    for k, b in enumerate(unpack(arrays[0])):
        w = math.tanh((ts[k] * 1e-6 / (1 / 60)) ** 2 / 2)
        moved = 100 + 0.48 * k           # the first box has no predecessor: no motion yet
        assert b.x == pytest.approx(w * 110 + (1 - w) * moved, abs=0.01)
        assert b.vx == pytest.approx(1000.0)        # fused boxes carry the SNN's velocity


# --------------------------------------------------------------------------- steering

def test_steering_node_turns_toward_the_box_and_stops_when_lost(h):
    from dashnet_ros.nodes.steering import SteeringNode

    node = h.add(SteeringNode, lost_timeout_s=0.3, cmd_period_ms=0.0, use_camera_info=True)
    box = h.pub(TrackedBox, "/steering/box", 100)
    info = h.pub(CameraInfo, "/steering/camera_info", sensor_qos(depth=5))
    cmd = h.sub(Twist, "/steering/cmd_vel", 50)
    dec = h.sub(String, "/steering/decision", 50)
    h.connect(box, info)
    box.publish(box_msg(1_000, [200.0, 80.0, 20.0, 30.0]))             # right of centre
    assert h.spin(3, until=lambda: len(cmd) == 1 and len(dec) == 1)
    assert cmd[0].angular.z < 0 and cmd[0].linear.x > 0 and dec[0].data == "right"
    box.publish(box_msg(2_000, [np.nan] * 4, malformed=True))          # warned, holds the command
    assert h.spin(3, until=lambda: len(cmd) == len(dec) == 2)
    assert node.warn.counts["bad_box"] == 1 and cmd[1].angular.z == cmd[0].angular.z
    box.publish(box_msg(400_000, [np.nan] * 4))                         # > lost_timeout_s: stop
    assert h.spin(3, until=lambda: len(cmd) == len(dec) == 3)
    assert (cmd[2].linear.x, cmd[2].angular.z, dec[2].data) == (0.0, 0.0, "not_visible")
    box.publish(box_msg(410_000, [10.0, 80.0, 20.0, 30.0]))             # found again, on the left
    assert h.spin(3, until=lambda: len(cmd) == len(dec) == 4)
    assert cmd[3].angular.z > 0 and dec[3].data == "left"
    # a calibrated camera replaces the field-of-view model
    ci = CameraInfo(width=320, height=240)
    ci.k = [100.0, 0.0, 160.0, 0.0, 100.0, 120.0, 0.0, 0.0, 1.0]
    info.publish(ci)
    assert h.spin(3, until=lambda: node.law.cfg.width == 320)
    assert node.law.cfg.fx == 100.0 and node.law.cfg.cx == 160.0
    # boxes stop coming at all: the wall-clock watchdog stops the robot
    n = len(cmd)
    assert h.spin(2, until=lambda: len(cmd) > n and len(dec) == len(cmd))
    assert (cmd[-1].linear.x, cmd[-1].angular.z, dec[-1].data) == (0.0, 0.0, "not_visible")


# --------------------------------------------------------------------------- world + davis (closed loop)

def test_world_node_publishes_camera_truth_and_status_and_obeys_cmd_vel(h):
    from dashnet_ros.nodes.world import WorldNode

    img = h.sub(Image, "/world/image_raw", sensor_qos())
    gt = h.sub(TrackedBox, "/world/ground_truth", 100)
    dist = h.sub(Float32, "/world/distance", 50)
    caught = h.sub(Bool, "/world/caught", 50)
    node = h.add(WorldNode, width=64, height=48, fps=240.0, realtime_factor=1.0, seed=3, cmd_timeout_s=0.3)
    cmd = h.pub(Twist, "/world/cmd_vel", 10)
    h.connect(cmd)
    assert h.spin(5, until=lambda: len(gt) >= 40 and len(img) >= 10 and len(dist) >= 3)
    t_img = np.array([us(m) for m in img])
    t_gt = np.array([us(m) for m in gt])
    assert np.all(np.diff(t_gt) > 0) and set(t_img) <= set(t_gt)
    assert np.all(np.abs(t_gt - np.round(t_gt / (1e6 / 240)) * (1e6 / 240)) <= 1)  # frames every 1/240 s
    assert rm.image_to_gray(img[-1]).shape == (48, 64) and img[-1].encoding == "mono8"
    assert gt[0].source == TrackedBox.SOURCE_GROUND_TRUTH and gt[0].valid      # face_prey: in view
    assert dist[0].data > 0.3 and caught[0].data is False
    # drive forward: the predator moves along its heading
    x0 = node.world.pred.copy()
    bad = Twist()
    bad.linear.x = float("nan")
    cmd.publish(bad)
    tw = Twist()
    tw.linear.x = 0.5
    for _ in range(5):
        cmd.publish(tw)
        h.spin(0.05)
    assert node.warn.counts["bad_cmd"] == 1
    assert h.spin(2, until=lambda: np.hypot(*(node.world.pred[:2] - x0[:2])) > 0.02)
    # cmd_vel silent: the predator stops
    assert h.spin(2, until=lambda: node.world.cmd == (0.0, 0.0))


def test_world_node_waits_for_its_ground_truth_subscribers(h):
    from dashnet_ros.nodes.world import WorldNode

    img = h.sub(Image, "/world/image_raw", sensor_qos())
    gt = h.sub(TrackedBox, "/world/ground_truth", 100)
    node = h.add(WorldNode, width=64, height=48, fps=240.0, realtime_factor=1.0, seed=3, ground_truth_subscribers=2)
    h.spin(1.0)
    assert node.frames == 0 and not gt and not img        # camera subscribed, ground truth only once
    late = h.sub(TrackedBox, "/world/ground_truth", 100)
    assert h.spin(5, until=lambda: len(gt) >= 5 and len(late) >= 5)
    assert us(late[0]) == us(gt[0]) == 0                    # both saw the first box


def test_davis_simulator_turns_an_image_topic_into_events(h):
    from dashnet_ros.nodes.davis_simulator import DavisSimulatorNode

    node = h.add(DavisSimulatorNode, source="topic:/cam/image_raw", width=64, height=48, interp_factor=0)
    assert node.topic == "/cam/image_raw"
    ev = h.sub(EventPacket, "/davis_simulator/events", sensor_qos(depth=500))
    aps = h.sub(Image, "/davis_simulator/image_raw", sensor_qos())
    gt_out = h.sub(TrackedBox, "/davis_simulator/ground_truth", 100)
    cam = h.pub(Image, "/cam/image_raw", sensor_qos())
    gt_in = h.pub(TrackedBox, "/cam/ground_truth", 100)
    h.connect(cam, gt_in)

    def frames(ks, t_off=0):
        for k in ks:
            img = np.full((48, 64), 40, np.uint8)
            x = 5 + k % 40
            img[20:30, x:x + 8] = 220
            t = t_off + int(round(k * 1e6 / 240))
            gt_in.publish(box_msg(t, [x, 20, 8, 10], TrackedBox.SOURCE_GROUND_TRUTH))
            cam.publish(image_msg(t, img))
            h.spin(0.01)

    frames(range(20))
    bad = image_msg(10**6, np.zeros((48, 64), np.uint8))
    bad.encoding = "yuv422"
    cam.publish(bad)
    cam.publish(image_msg(10**6, np.zeros((10, 10), np.uint8)))         # another size
    assert h.spin(3, until=lambda: node.warn.counts.get("bad_image") and node.warn.counts.get("frame"))
    assert h.spin(5, until=lambda: len(aps) >= 2 and len(ev) > 40)
    t_aps = [us(m) for m in aps]
    assert t_aps[:2] == [0, 33_333]                                    # source frames nearest 30 Hz
    assert [us(m) for m in gt_out][:2] == t_aps[:2] and gt_out[1].x == 5 + 8   # truth matched by stamp
    n_ev = sum(len(rm.msg_to_events(m)) for m in ev)
    assert n_ev > 0
    spans = np.array([(m.time_base_us, m.end_us) for m in ev])
    assert np.all(spans[:, 1] <= 20 * 1e6 / 240 + 1)
    # the publisher restarts (time goes backwards): the simulator restarts on the new time line
    n = len(ev)
    frames(range(12))
    assert h.spin(5, until=lambda: len(ev) > n and ev[-1].end_us < ev[n - 1].end_us)


def test_davis_simulator_publishes_a_live_camera(h, monkeypatch):
    """`source: camera` publishes a connected DAVIS (here a duck-typed dv camera) as it
    comes: every event in packets tiling sensor time from the first event, the APS frames
    (delivered 3 ms after their exposure) unchanged at their stamps, none dropped with no
    hold at all; the publishing ends when the camera stops."""
    import threading

    import dv_processing as dv
    from test_recordings import _events, _FakeDvCamera, _frames

    from dashnet_ros.davis import recordings
    from dashnet_ros.davis.frames import ApsFrame
    from dashnet_ros.nodes.davis_simulator import DavisSimulatorNode

    off = 5_000_000
    ev = _events(4000, 120_000)
    ev["t_us"] += off
    frames = [ApsFrame(off + t, f.image) for t, f in zip([30_000, 63_333, 96_666], _frames([0, 0, 0]))]
    go = threading.Event()

    class GatedCamera(_FakeDvCamera):     # delivers nothing until the test's subscribers are matched
        def getNextEventBatch(self):
            return super().getNextEventBatch() if go.is_set() else None

        def getNextFrame(self):
            return super().getNextFrame() if go.is_set() else None

    opened = []
    monkeypatch.setattr(recordings.LiveCamera, "_open",
                        staticmethod(lambda name: opened.append(name) or GatedCamera(dv, ev, frames)))
    node = h.add(DavisSimulatorNode, source="camera:DAVIS240C_42", packet_us=2000, camera_latency_us=0)
    assert opened == ["DAVIS240C_42"] and node.live
    got_ev = h.sub(EventPacket, "/davis_simulator/events", sensor_qos(depth=500))
    got_img = h.sub(Image, "/davis_simulator/image_raw", sensor_qos())
    assert h.spin(5, until=lambda: node.pub_events.get_subscription_count() and node.pub_image.get_subscription_count())
    go.set()
    n_ev = lambda: sum(len(rm.msg_to_events(m)) for m in got_ev)  # noqa: E731
    assert h.spin(10, until=lambda: n_ev() == len(ev) and len(got_img) == 3)
    t0 = int(ev["t_us"][0])
    assert [us(m) for m in got_img] == [f.t_us - t0 for f in frames]
    np.testing.assert_array_equal(rm.image_to_gray(got_img[2]), frames[2].image)
    ends = np.array([m.end_us for m in got_ev])
    assert got_ev[0].time_base_us == 0 and np.all(np.diff(ends) == 2000)     # 2 ms packets from the first event
    got = np.concatenate([rm.msg_to_events(m) for m in got_ev])
    np.testing.assert_array_equal(got["t_us"], ev["t_us"] - t0)
    np.testing.assert_array_equal(got["x"], ev["x"])
    node.thread.join(timeout=5)
    assert not node.thread.is_alive()          # the camera stopped: so does the publishing


def test_davis_simulator_without_the_camera_says_so(h, monkeypatch):
    import dv_processing as dv

    from dashnet_ros.nodes.davis_simulator import DavisSimulatorNode

    monkeypatch.setattr(dv.io.camera, "discover", lambda: [])
    with pytest.raises(ParameterError, match=r"source 'camera': no iniVation camera found .*USB"):
        h.add(DavisSimulatorNode, source="camera")


# --------------------------------------------------------------------------- ROS-free helpers of the nodes

def test_topic_frame_source_orders_restarts_and_matches_boxes():
    from dashnet_ros.davis.topic_source import TopicFrameSource

    src = TopicFrameSource(fps=240.0, max_queue=4)
    assert not src.wait_ready(timeout_s=0.01) and src.width == 0
    src.set_box(0, [1, 2, 3, 4])                                   # a box before its frame
    assert src.put(0, np.zeros((6, 8), np.uint8)) is None
    assert src.wait_ready(0.01) and (src.width, src.height) == (8, 6)
    assert "8x6" in src.put(10, np.zeros((5, 5), np.uint8))       # another size: refused
    assert "repeats" in src.put(0, np.zeros((6, 8), np.uint8))
    src.put(4167, np.full((6, 8), 255, np.uint8))
    src.set_box(4167, [5, 6, 7, 8])                                # a box after its frame
    src.put(2000, np.zeros((6, 8), np.uint8))                      # time goes backwards
    it = iter(src)
    f0, f1 = next(it), next(it)
    assert (f0.t_us, f1.t_us) == (0, 4167) and f1.image.max() == 1.0 and f1.image.dtype == np.float32
    assert np.allclose(f0.box, [1, 2, 3, 4]) and np.allclose(f1.box, [5, 6, 7, 8])
    assert list(it) == [] and src.restarts == 1                    # the pass ends at the jump back
    it = iter(src)
    assert next(it).t_us == 2000                                   # the next pass starts there
    for k in range(6):                                             # a full queue drops the oldest
        note = src.put(3000 + k, np.zeros((6, 8), np.uint8))
    assert "dropped the oldest" in note and src.dropped == 2
    assert [f.t_us for f in [next(it) for _ in range(4)]] == [3002, 3003, 3004, 3005]
    src.close()
    assert list(it) == [] and src.put(9000, np.zeros((6, 8), np.uint8)) == "source is closed"


def test_on_device_wrapper_delegates_the_streaming_api():
    import torch

    from dashnet_ros.models.snn import SpikingTracker
    from dashnet_ros.nodes.snn_tracker import OnDevice

    torch.manual_seed(0)
    net = SpikingTracker.from_preset("fast")
    net.nan_when_silent = False       # a finite readout even if the untrained net stays silent
    wrapped = OnDevice(net, torch.device("cpu"))
    x = torch.ones(1, 1, 2, 32, 32)
    a = wrapped.step_window(x)
    wrapped.reset_state()
    b = net.step_window(x)
    assert torch.isfinite(a).all() and torch.allclose(a, b) and a.device.type == "cpu"
    assert wrapped.config() == net.config()


def test_davis_simulator_publishes_a_recordings_target_labels_as_ground_truth(h, tmp_path):
    """A replayed recording with REC-targets.txt beside it: each visible label is published
    on ~/ground_truth at its instant on the stream clock (the trackers can start from it)."""
    from dashnet_ros.davis.frames import ApsFrame
    from dashnet_ros.davis.labels import write_target_locations
    from dashnet_ros.davis.recordings import write_aedat2
    from dashnet_ros.events import make_events
    from dashnet_ros.nodes.davis_simulator import DavisSimulatorNode

    rng = np.random.default_rng(0)
    n = 20_000
    t = np.sort(rng.integers(0, 4_000_000, n))
    ev = make_events(rng.integers(0, 240, n), rng.integers(0, 180, n), t, rng.choice([-1, 1], n))
    frames = [ApsFrame(k * 100_000 + 50_000, np.zeros((180, 240), np.uint8)) for k in range(40)]
    rec = tmp_path / "run.aedat"
    write_aedat2(str(rec), ev, frames, t_offset_us=7_000_000)
    t0 = 7_000_000 + int(t[0])
    t_lab = t0 + np.arange(0, 4_000_000, 200_000)
    boxes = np.array([[100 + k, 50, 20, 16] for k in range(len(t_lab))], np.float32)
    boxes[1] = np.nan                                                        # not visible
    write_target_locations(tmp_path / "run-targets.txt", t_lab, boxes, 180)
    gt = h.sub(TrackedBox, "/davis_simulator/ground_truth", 100)
    node = h.add(DavisSimulatorNode, source=str(rec), realtime_factor=1.0)
    assert h.spin(15, until=lambda: len(gt) >= 5)
    got = {us(m): (m.x, m.y, m.w, m.h) for m in gt}
    want = {int(tl - t0): tuple(b) for tl, b in zip(t_lab, boxes) if np.isfinite(b[0])}
    assert set(got) <= set(want) and len(got) >= 5
    for k, v in got.items():
        assert v == pytest.approx(want[k])
    assert node.warn.counts == {}
    # a malformed label file is refused at start, naming it and the line
    (tmp_path / "bad.aedat").write_bytes(rec.read_bytes())
    (tmp_path / "bad-targets.txt").write_text("#!TargetLocations-2.0\n1 2 3\n")
    with pytest.raises(ParameterError, match=r"its ground truth .*bad-targets.txt:2: not a target label"):
        h.add(DavisSimulatorNode, source=str(tmp_path / "bad.aedat"))
