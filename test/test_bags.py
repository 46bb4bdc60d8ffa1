"""rosbag2 (MCAP) bags with rosbags: type hashes and CDR against the ROS 2 wheels, round
trips, the recorder and player over DDS (in one process), and the deterministic replay
through the tracker nodes' code.  (The bag recorded from the live closed loop and its
replay are tested in test_demo.py, which records one.)"""
import glob
import json
import os
import sys
import threading
import time

import numpy as np
import pytest

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.serialization import serialize_message
from sensor_msgs.msg import Image

from dashnet_ros import graph
from dashnet_ros.io import bags
from dashnet_ros.io import ros_msgs as rm
from dashnet_ros.msg import EventPacket, TrackedBox, TrackedBoxArray

from conftest import REPO
from test_nodes_units import make_weights


def _events_msg(t0, t1, n=50, seed=0):
    from dashnet_ros.events import make_events

    rng = np.random.default_rng(seed)
    ev = make_events(rng.integers(0, 240, n), rng.integers(0, 180, n), np.sort(rng.integers(t0, t1, n)),
                     rng.choice([-1, 1], n))
    m = rm.events_to_msg(ev, EventPacket(), width=240, height=180, t0_us=t0, t1_us=t1)
    m.header.frame_id = "davis"
    return m


def _image_msg(t_us, seed=0):
    img = np.random.default_rng(seed).integers(0, 256, (18, 24), dtype=np.uint8)
    m = rm.numpy_to_image(img, Image())
    rm.us_to_stamp(t_us, m.header.stamp)
    m.header.frame_id = "davis"
    return m


def _box_msg(t_us, box=(10.5, 20.25, 30.0, 40.0), source=TrackedBox.SOURCE_FUSED, score=0.25):
    return rm.box_to_msg(np.array(box, np.float32), TrackedBox(), t_us=t_us, source=source, score=score,
                         frame_id="davis")


# --------------------------------------------------------------------------- types and files

def test_type_hashes_and_definitions_match_the_colcon_build():
    """Our types registered from msg/*.msg hash exactly as rosidl hashed them (the build's
    share/dashnet_ros/msg/*.json), and a standard type as the wheels' JSON says."""
    from ament_index_python.packages import get_package_share_directory

    store = bags.typestore()
    share = get_package_share_directory("dashnet_ros")
    files = glob.glob(os.path.join(share, "msg", "*.json"))
    assert len(files) >= 3
    for path in files:
        name = os.path.splitext(os.path.basename(path))[0]
        want = next(h["hash_string"] for h in json.load(open(path))["type_hashes"]
                    if h["type_name"] == f"dashnet_ros/msg/{name}")
        assert store.hash_rihs01(f"dashnet_ros/msg/{name}") == want
    # the wheels install sensor_msgs' share/ under the environment's prefix (a ROS install: AMENT_PREFIX_PATH)
    prefixes = [sys.prefix] + os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)
    img_json = next(p for p in (os.path.join(x, "share", "sensor_msgs", "msg", "Image.json") for x in prefixes if x)
                    if os.path.isfile(p))
    assert store.hash_rihs01("sensor_msgs/msg/Image") == json.load(open(img_json))["type_hashes"][0]["hash_string"]
    msgdef, _ = store.generate_msgdef("dashnet_ros/msg/TrackedBox", ros_version=2)
    assert "uint8 SOURCE_FUSED=2" in msgdef and "MSG: std_msgs/Header" in msgdef


def test_messages_round_trip_identical_through_rosbags_and_rclpy(tmp_path):
    ev, img, box = _events_msg(1000, 2000, seed=3), _image_msg(33_333), _box_msg(2_480)
    box.valid = False
    path = str(tmp_path / "rt")
    with bags.BagWriter(path, custom_data={"test": "yes"}) as w:
        w.write_msg("/davis/events", 10, ev, "dashnet_ros/msg/EventPacket")
        w.write_msg("/davis/image_raw", 20, img, "sensor_msgs/msg/Image")
        w.write_msg("/dashnet/fused_box", 30, box, "dashnet_ros/msg/TrackedBox")
        # the same box serialised by rosbags must give rclpy's bytes
        store = bags.typestore()
        rb = store.deserialize_cdr(serialize_message(box), "dashnet_ros/msg/TrackedBox")
        w.write("/dashnet/fused_box", 40, store.serialize_cdr(rb, "dashnet_ros/msg/TrackedBox"))
    assert os.listdir(tmp_path) == ["rt"]                      # no temporary folder left
    assert sorted(os.listdir(path)) == ["metadata.yaml", "rt.mcap"]
    msgs = list(bags.read_bag(path))
    assert [m.t_ns for m in msgs] == [10, 20, 30, 40]
    # rosbags' CDR is the wheels' CDR: same length, and rclpy reads rosbags' bytes back as the
    # same message (the alignment padding bytes are not compared: rclpy leaves them unset)
    assert len(msgs[3].data) == len(msgs[2].data) == len(serialize_message(box))
    assert bags.to_rclpy(msgs[3]) == box
    # rclpy (the wheels' CDR) reads back equal messages
    assert bags.to_rclpy(msgs[0]) == ev and bags.to_rclpy(msgs[1]) == img and bags.to_rclpy(msgs[2]) == box
    # rosbags reads back the same content
    d_ev, d_img, d_box = (bags.deserialize(m) for m in msgs[:3])
    assert bytes(d_ev.events) == bytes(ev.events) and (d_ev.time_base_us, d_ev.end_us) == (ev.time_base_us, 2000)
    assert d_ev.header.stamp.sec == ev.header.stamp.sec and d_ev.header.frame_id == "davis"
    assert bytes(d_img.data) == bytes(img.data) and (d_img.width, d_img.height, d_img.encoding) == (24, 18, "mono8")
    assert (d_box.x, d_box.y, d_box.w, d_box.h, d_box.score, d_box.source, d_box.valid) == \
        (box.x, box.y, box.w, box.h, box.score, box.source, False)
    info = bags.bag_info(path)
    assert info["storage"] == "mcap" and info["version"] == 9 and info["messages"] == 4
    assert info["topics"]["/dashnet/fused_box"]["count"] == 2 and info["custom_data"] == {"test": "yes"}
    assert info["chunk_compression"] == ["zstd"]
    import yaml

    meta = yaml.safe_load(open(os.path.join(path, "metadata.yaml")))["rosbag2_bagfile_information"]
    assert meta["relative_file_paths"] == ["rt.mcap"]
    q = {t["topic_metadata"]["name"]: t["topic_metadata"]["offered_qos_profiles"][0]["reliability"]
         for t in meta["topics_with_message_count"]}
    assert q == {"/davis/events": "best_effort", "/davis/image_raw": "best_effort", "/dashnet/fused_box": "reliable"}


def test_writer_refuses_existing_paths_and_leaves_nothing_on_error(tmp_path):
    (tmp_path / "exists").mkdir()
    with pytest.raises(FileExistsError, match="exists"):
        bags.BagWriter(str(tmp_path / "exists"))
    with pytest.raises(RuntimeError):
        with bags.BagWriter(str(tmp_path / "broken")) as w:
            w.write_msg("/dashnet/fused_box", 1, _box_msg(1), "dashnet_ros/msg/TrackedBox")
            raise RuntimeError("boom")
    assert sorted(os.listdir(tmp_path)) == ["exists"]
    with pytest.raises(FileNotFoundError, match="not found"):
        list(bags.read_bag(str(tmp_path / "nope")))
    with pytest.raises(FileNotFoundError, match="metadata.yaml"):
        bags.bag_info(str(tmp_path / "exists"))
    with bags.BagWriter(str(tmp_path / "ok")) as w:
        with pytest.raises(ValueError, match="unknown message type"):
            w.add_topic("/x", "nopkg/msg/Nothing")
        with pytest.raises(KeyError, match="declared"):
            w.write("/y", 1, b"")


def test_a_bag_of_our_types_with_another_definition_is_refused_by_name(tmp_path):
    path = str(tmp_path / "old")
    with bags.BagWriter(path) as w:
        w.write_msg("/dashnet/fused_box", 1, _box_msg(1), "dashnet_ros/msg/TrackedBox")
    assert len(list(bags.read_bag(path))) == 1
    meta = tmp_path / "old" / "metadata.yaml"           # as if written by a dashnet_ros whose TrackedBox differed
    ours = bags.typestore().hash_rihs01("dashnet_ros/msg/TrackedBox")
    meta.write_text(meta.read_text().replace(ours, "RIHS01_" + "0" * 64))
    with pytest.raises(ValueError, match=r"/dashnet/fused_box holds dashnet_ros/msg/TrackedBox with type hash "
                                         r"RIHS01_0+, but this dashnet_ros defines it with RIHS01_"):
        list(bags.read_bag(path))


def test_recorder_node_is_a_graph_option_with_a_matching_config():
    from dashnet_ros.nodes import bag_recorder

    cmds = dict((s.name, c) for s, c in graph.node_commands("py", "/cfg", {"record": "true", "bag_path": "/b/x"}))
    assert "bag_recorder" in cmds and "path:=/b/x" in cmds["bag_recorder"]
    assert "bag_recorder" not in [s.name for s, _ in graph.node_commands("py", "/cfg", {})]
    import yaml

    cfg = yaml.safe_load(open(os.path.join(REPO, "config", "bag_recorder.yaml")))["/**"]["ros__parameters"]
    assert cfg == {p.name: p.default for p in bag_recorder.PARAMS}
    assert bag_recorder.parse_topics("") == bags.GRAPH_TOPICS
    assert bag_recorder.parse_topics("/dashnet/fused_box, /x:std_msgs/msg/Bool") == {
        "/dashnet/fused_box": "dashnet_ros/msg/TrackedBox", "/x": "std_msgs/msg/Bool"}
    with pytest.raises(ValueError, match="give its type"):
        bag_recorder.parse_topics("/not/in/graph")


# --------------------------------------------------------------------------- over DDS

class _Spinner:
    def __init__(self, ctx, *nodes):
        self.ex = SingleThreadedExecutor(context=ctx)
        for n in nodes:
            self.ex.add_node(n)
        self.stop = False
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self.stop:
            self.ex.spin_once(timeout_sec=0.01)

    def close(self):
        self.stop = True
        self.t.join(timeout=2)
        self.ex.shutdown()


def _wait(cond, timeout):
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end and not cond():
        time.sleep(0.01)
    return cond()


def test_recorder_writes_what_the_graph_publishes(rclpy_context, tmp_path):
    ctx = rclpy_context
    src = Node("src", context=ctx)
    rec_node = Node("rec", context=ctx)
    pub_ev = src.create_publisher(EventPacket, graph.TOPIC_EVENTS, 100)
    pub_box = src.create_publisher(TrackedBox, graph.TOPIC_FUSED_BOX, 100)
    writer = bags.BagWriter(str(tmp_path / "rec"))
    rec = bags.BagRecorder(rec_node, writer, {graph.TOPIC_EVENTS: "dashnet_ros/msg/EventPacket",
                                              graph.TOPIC_FUSED_BOX: "dashnet_ros/msg/TrackedBox"})
    spin = _Spinner(ctx, rec_node)
    try:
        assert _wait(lambda: pub_ev.get_subscription_count() and pub_box.get_subscription_count(), 10)
        sent_ev = [_events_msg(k * 1000, (k + 1) * 1000, seed=k) for k in range(20)]
        sent_box = [_box_msg(k * 480, (k, k + 1, 10, 12)) for k in range(20)]
        for e, b in zip(sent_ev, sent_box):
            pub_ev.publish(e)
            pub_box.publish(b)
            time.sleep(0.005)
        assert _wait(lambda: rec.counts[graph.TOPIC_FUSED_BOX] == 20 and rec.counts[graph.TOPIC_EVENTS] == 20, 10)
    finally:
        spin.close()
    rec.close()
    got = list(bags.read_bag(str(tmp_path / "rec")))
    assert [bags.to_rclpy(m) for m in got if m.topic == graph.TOPIC_EVENTS] == sent_ev
    assert [bags.to_rclpy(m) for m in got if m.topic == graph.TOPIC_FUSED_BOX] == sent_box
    t = np.array([m.t_ns for m in got])
    assert np.all(np.diff(t) >= 0) and abs(t[0] / 1e9 - time.time()) < 60   # reception times (wall clock)


def _timed_bag(path, n=8, step_ms=60):
    with bags.BagWriter(path) as w:
        w.add_topic(graph.TOPIC_FUSED_BOX, "dashnet_ros/msg/TrackedBox")
        for k in range(n):
            w.write_msg(graph.TOPIC_FUSED_BOX, 5_000_000_000 + k * step_ms * 1_000_000, _box_msg(k * 480, (k, 2, 3, 4)))


def test_player_keeps_the_recorded_timing_scaled_by_rate_and_loops(rclpy_context, tmp_path):
    ctx = rclpy_context
    path = str(tmp_path / "timed")
    _timed_bag(path, n=8, step_ms=60)
    node = Node("player", context=ctx)
    probe = Node("probe", context=ctx)
    got = []
    probe.create_subscription(TrackedBox, graph.TOPIC_FUSED_BOX, got.append, 100)
    spin = _Spinner(ctx, probe)
    try:
        player = bags.BagPlayer(node, path, rate=2.0)
        assert player.wait_for_subscribers(10)
        walls = []
        assert player.play(on_message=lambda m, w: walls.append(w)) == 8
        # 60 ms recorded, played at rate 2: message k at 30 k ms, never early (a loaded machine
        # may delay some; the schedule stays the recorded one, so later messages catch up)
        late_ms = (np.array(walls) - walls[0]) * 1e3 - 30.0 * np.arange(8)
        assert np.all(late_ms > -2.0) and np.median(late_ms) < 10.0, late_ms
        assert _wait(lambda: len(got) == 8, 5)
        assert [rm.stamp_to_us(m.header.stamp) for m in got] == [k * 480 for k in range(8)]
        assert got[3] == _box_msg(3 * 480, (3, 2, 3, 4))                     # published as recorded
        # loop: two passes, each with the original timing; rate 0 = as fast as possible
        looper = bags.BagPlayer(node, path, rate=0.0, loop=True)
        t0 = time.monotonic()
        n = looper.play(stop=lambda: looper.passes >= 2)
        assert n == 16 and looper.passes == 2 and time.monotonic() - t0 < 2.0
        assert _wait(lambda: len(got) == 24, 5)
        stamps = [rm.stamp_to_us(m.header.stamp) for m in got[8:]]
        assert stamps == [k * 480 for k in range(8)] * 2                      # time goes back on the loop
        with pytest.raises(ValueError, match="no topic"):
            bags.BagPlayer(node, path, topics=["/nope"])
        with pytest.raises(ValueError, match="rate"):
            bags.BagPlayer(node, path, rate=-1)
    finally:
        spin.close()


# --------------------------------------------------------------------------- deterministic replay

@pytest.fixture(scope="module")
def sensor_bag(tmp_path_factory):
    """0.15 s of the world's DAVIS stream (events, APS, camera info, ground truth) as a bag
    logged at sensor time."""
    from sensor_msgs.msg import CameraInfo

    from dashnet_ros.davis.frames import ApsFrame, EventBatch
    from dashnet_ros.davis.stream import DavisSimulator
    from dashnet_ros.nodes.world import make_world

    d = tmp_path_factory.mktemp("sensor_bag")
    path = str(d / "bag")
    # the closed loop's world as it starts: the predator facing the prey, standing still
    world = make_world({"width": 240, "height": 180, "fps": 240.0, "seed": 3, "hfov_deg": 60.0, "face_prey": True})
    sim = DavisSimulator(world.as_source(duration_s=0.2), interp_factor=0, seed=3)
    t_ns = 1_000_000_000
    with bags.BagWriter(path) as w:
        for t in bags.SENSOR_TOPICS:
            w.add_topic(t, bags.GRAPH_TOPICS[t])
        for item in sim.stream():
            # logged as if received at its sensor time (1 s after the epoch), in stream order
            t_ns = max(t_ns + 10, 1_000_000_000 + 1000 * (item.t1_us if isinstance(item, EventBatch) else item.t_us))
            if isinstance(item, EventBatch):
                if item.t0_us >= 150_000:
                    break
                m = rm.events_to_msg(item.events, EventPacket(), width=240, height=180, t0_us=item.t0_us,
                                     t1_us=item.t1_us)
                m.header.frame_id = "davis"
                w.write_msg(graph.TOPIC_EVENTS, t_ns, m)
            elif isinstance(item, ApsFrame):
                img = rm.numpy_to_image(item.image, Image())
                rm.us_to_stamp(item.t_us, img.header.stamp)
                info = CameraInfo(width=240, height=180)
                info.header.stamp = img.header.stamp
                w.write_msg(graph.TOPIC_GROUND_TRUTH, t_ns, rm.box_to_msg(
                    item.box, TrackedBox(), t_us=item.t_us, source=TrackedBox.SOURCE_GROUND_TRUTH))
                w.write_msg(graph.TOPIC_IMAGE, t_ns + 1, img)
                w.write_msg(graph.TOPIC_CAMERA_INFO, t_ns + 2, info)
    return path


@pytest.fixture(scope="module")
def weight_args(tmp_path_factory):
    w = make_weights(str(tmp_path_factory.mktemp("bag_weights")))
    return {"snn_weights": w["snn"], "ann_weights": w["ann"]}


def test_closed_replay_is_deterministic_and_runs_the_graph_at_sensor_rates(sensor_bag, weight_args):
    a = bags.replay_deterministic(sensor_bag, mode="closed", launch_args=weight_args)
    b = bags.replay_deterministic(sensor_bag, mode="closed", launch_args=weight_args)
    snn, fused, ann = (bags.box_track(a[t]) for t in (bags.SNN_TOPIC, bags.FUSED_TOPIC, graph.TOPIC_ANN_BOX))
    assert len(snn[0]) > 250 and np.all(np.diff(snn[0]) == 480)            # one box per 480 us window
    assert np.array_equal(fused[0], snn[0])                                 # one fused box per SNN box
    assert np.all(fused[2] < 1.0)                                           # the ANN was fused in (w < 1)
    assert len(ann[0]) == 5 and np.allclose(np.diff(ann[0]), 1e6 / 30, atol=1)   # APS 30 Hz
    for t in (bags.SNN_TOPIC, graph.TOPIC_ANN_BOX, bags.FUSED_TOPIC, graph.TOPIC_FUSED_BOX):
        assert a[t] == b[t]                                                 # bit-identical messages


def test_forced_replay_reproduces_a_recording_exactly(sensor_bag, weight_args, tmp_path):
    """A 'recording' whose message order is known (the closed replay's, in publish order)
    is reproduced exactly when every node gets its recorded inputs."""
    log = []
    bags.replay_deterministic(sensor_bag, mode="closed", launch_args=weight_args,
                              trace=lambda t, m: log.append((t, m)))   # every delivery in order
    wanted = set(bags.SENSOR_TOPICS) | {bags.SNN_TOPIC, graph.TOPIC_ANN_BOX, bags.FUSED_TOPIC, graph.TOPIC_FUSED_BOX}
    rec = str(tmp_path / "recording")
    with bags.BagWriter(rec) as w:
        for i, (t, m) in enumerate(log):
            if t in wanted:
                w.write_msg(t, 1_000_000 + i, m, bags.GRAPH_TOPICS[t])
    out = bags.replay_deterministic(rec, mode="forced", launch_args=weight_args)
    for t in (bags.SNN_TOPIC, graph.TOPIC_ANN_BOX, bags.FUSED_TOPIC):
        c = bags.compare_tracks(bags.boxes_of(rec, t), bags.box_track(out[t]))
        assert c["exact"] == 1.0 and c["only_ref"] == 0 and c["only_other"] == 0 and c["matched"] > 0, (t, c)


def test_played_bag_drives_the_snn_node_and_a_loop_restarts_it(ros_domain, sensor_bag, weight_args):
    """Timed replay over DDS into the SNN node: boxes at the SNN window rate from the bag's
    sensor stamps; on the loop the stamps jump back and the node starts over from a later
    ground-truth box (the one at t=0 comes before the packet that tells it time went back;
    under load the re-created ground-truth reader may miss one or two more)."""
    from dashnet_ros.nodes.snn_tracker import SNNTrackerNode

    from dashnet_ros.commands import launch

    c = rclpy.Context()
    rclpy.init(context=c)
    # the node as the graph starts it (parameter file, remappings), with the test weights
    cmd = {s.name: cmd for s, cmd in graph.node_commands(sys.executable, launch.config_dir(), weight_args)}
    snn = SNNTrackerNode(context=c, cli_args=cmd["snn_tracker"][cmd["snn_tracker"].index("--ros-args"):])
    probe = Node("probe", context=c)
    got = []
    probe.create_subscription(TrackedBoxArray, graph.TOPIC_SNN_BOXES, got.append, 1000)
    spin = _Spinner(c, snn, probe)
    player = bags.BagPlayer(Node("player", context=c), sensor_bag, topics=[graph.TOPIC_EVENTS, graph.TOPIC_GROUND_TRUTH],
                            rate=0.1, loop=True)
    try:
        assert player.wait_for_subscribers(10)
        time.sleep(0.3)                                        # let the SNN's ground-truth reader match too
        player.play(stop=lambda: player.passes >= 2)
        last = [-1, time.monotonic()]

        def settled():                                         # no new box for 0.5 s
            n = len(got)
            if n != last[0]:
                last[:] = [n, time.monotonic()]
            return time.monotonic() - last[1] > 0.5
        _wait(settled, 20)
        t = bags.box_track(got)[0]
    finally:
        spin.close()
        snn.destroy_node()
        c.try_shutdown()
    back = np.nonzero(np.diff(t) < 0)[0]
    assert len(back) == 1, np.diff(t)                              # one jump back: the loop
    first, second = t[:back[0] + 1], t[back[0] + 1:]
    assert len(first) > 200 and np.mean(np.diff(first) == 480) > 0.95
    assert len(second) > 20 and np.all(np.diff(second) == 480)   # tracking again after the restart
    k = (second[0] - 480) / (1e6 / 30)                            # started from an APS frame's box
    assert 1 <= round(k) <= 4 and abs(k - round(k)) * 1e6 / 30 <= 1


def test_recorder_node_stopped_by_sigint_while_flooded_writes_a_readable_bag(rclpy_context, tmp_path):
    """Ctrl-C lands while the recorder is busy writing (messages arriving back to back):
    the signal only stops the spin loop between callbacks, so the last chunk is never cut
    inside a record and every message counted in the metadata can be read back."""
    ctx = rclpy_context
    import signal
    import subprocess

    path = str(tmp_path / "flood")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "dashnet_ros.nodes.bag_recorder", "--ros-args",
                             "-p", f"path:={path}", "-p", f"topics:={graph.TOPIC_EVENTS}"],
                            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    src = Node("flood_src", context=ctx)
    pub = src.create_publisher(EventPacket, graph.TOPIC_EVENTS, 1000)
    msgs = [_events_msg(k * 1000, (k + 1) * 1000, n=4000, seed=k) for k in range(8)]
    try:
        assert _wait(lambda: pub.get_subscription_count() > 0, 20), "recorder did not subscribe"
        t_end = time.monotonic() + 1.5
        k = 0
        while time.monotonic() < t_end:
            pub.publish(msgs[k % len(msgs)])
            k += 1
        proc.send_signal(signal.SIGINT)
        for _ in range(200):                       # keep it busy while it stops
            pub.publish(msgs[k % len(msgs)])
            k += 1
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        src.destroy_node()
    assert proc.returncode == 0, out
    info = bags.bag_info(path)
    n = info["topics"][graph.TOPIC_EVENTS]["count"]
    assert n > 10, out
    got = list(bags.read_bag(path))
    assert len(got) == n and bags.to_rclpy(got[-1]) in msgs
