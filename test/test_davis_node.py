"""Multi-process test over real DDS (loopback): `dashnet launch tracking` starts the
simulator node, its topics flow at the documented rates, and Ctrl-C stops every process."""
import os
import signal
import subprocess
import sys
import time

import numpy as np

import rclpy
from rclpy.node import Node
from sensor_msgs.msg import Image

from dashnet_ros.io import ros_msgs as rm
from dashnet_ros.msg import EventPacket, TrackedBox
from dashnet_ros.nodes.common import sensor_qos


def _simulator_pids() -> str:
    """The pids of running davis_simulator node processes ('' when none)."""
    return subprocess.run(["pgrep", "-f", "dashnet_ros.nodes.davis_simulator"], capture_output=True,
                          text=True).stdout.strip()


def _collect(ctx, seconds, until=None):
    node = Node("test_listener", context=ctx)
    got = {"events": [], "images": [], "gt": []}
    node.create_subscription(EventPacket, "/davis/events", got["events"].append, sensor_qos())
    node.create_subscription(Image, "/davis/image_raw", got["images"].append, sensor_qos())
    node.create_subscription(TrackedBox, "/davis/ground_truth", got["gt"].append, 10)
    ex = rclpy.executors.SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end and not (until and until(got)):
        ex.spin_once(timeout_sec=0.05)
    node.destroy_node()
    return got


def test_launch_simulator_publishes_and_stops_cleanly(rclpy_context):
    proc = subprocess.Popen(
        [sys.executable, "-m", "dashnet_ros.cli", "launch", "tracking", "source:=scenes:7",
         "interp_factor:=1", "realtime_factor:=1.0", "tracking:=false"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        got = _collect(rclpy_context, 25.0, until=lambda g: len(g["images"]) >= 12)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out = proc.communicate(timeout=20)[0].decode(errors="replace")
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError("dashnet launch did not stop within 20 s of SIGINT")
    assert proc.returncode == 0, out
    assert len(got["images"]) >= 12, out
    # APS at 30 Hz of sensor time: consecutive stamps ~33.3 ms apart
    t_img = np.array([rm.stamp_to_us(m.header.stamp) for m in got["images"]])
    assert np.all(np.diff(t_img) > 0)
    assert abs(np.median(np.diff(t_img)) - 33_333) < 2_000
    img = rm.image_to_gray(got["images"][-1])
    assert img.shape == (180, 240) and img.std() > 1
    # event packets: 1 ms each, tiling time, events inside their packet's interval
    assert len(got["events"]) > 100
    spans = np.array([(m.time_base_us, m.end_us) for m in got["events"]])
    assert np.all(spans[:, 1] > spans[:, 0])
    n_events = 0
    for m in got["events"]:
        ev = rm.msg_to_events(m)
        n_events += len(ev)
        if len(ev):
            assert m.time_base_us <= ev["t_us"][0] and ev["t_us"][-1] < m.end_us
    assert n_events > 0
    assert got["gt"] and all(g.source == TrackedBox.SOURCE_GROUND_TRUTH for g in got["gt"])
    # nothing of the graph is left running
    time.sleep(0.5)
    assert _simulator_pids() == "", "a node process outlived `dashnet launch`"


def test_launch_stops_on_sigint_when_started_with_sigint_ignored():
    # as a shell starts a background job: SIGINT ignored from the start
    proc = subprocess.Popen(
        [sys.executable, "-m", "dashnet_ros.cli", "launch", "tracking", "source:=scenes:7",
         "interp_factor:=1", "tracking:=false"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        t_end = time.monotonic() + 20
        while time.monotonic() < t_end:
            if _simulator_pids():
                break
            time.sleep(0.2)
        assert _simulator_pids(), "the simulator node did not start"
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=20)[0].decode(errors="replace")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            subprocess.run(["pkill", "-f", "dashnet_ros.nodes.davis_simulator"])
    assert proc.returncode == 0, out
    time.sleep(0.5)
    assert _simulator_pids() == "", "a node process outlived `dashnet launch`"


def test_recording_is_replayed_as_a_davis_stream(rclpy_context, tmp_path):
    """A jAER AEDAT 2.0 file given as `source` is replayed (events + APS), not simulated."""
    from dashnet_ros.davis.frames import ApsFrame
    from dashnet_ros.davis.recordings import write_aedat2
    from dashnet_ros.events import make_events

    rng = np.random.default_rng(0)
    n = 20000
    t = np.sort(rng.integers(0, 10_000_000, n))  # 10 s: long enough to outlast start-up and discovery
    ev = make_events(rng.integers(0, 240, n), rng.integers(0, 180, n), t, rng.choice([-1, 1], n))
    frames = [ApsFrame(k * 100_000 + 50_000, rng.integers(0, 255, (180, 240), dtype=np.uint8)) for k in range(100)]
    path = str(tmp_path / "rec.aedat")
    write_aedat2(path, ev, frames)
    proc = subprocess.Popen(
        [sys.executable, "-m", "dashnet_ros.cli", "launch", "tracking", f"source:={path}", "tracking:=false",
         "realtime_factor:=1.0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        got = _collect(rclpy_context, 25.0, until=lambda g: len(g["images"]) >= 8)
    finally:
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=20)[0].decode(errors="replace")
    assert len(got["images"]) >= 8, out
    n_ev = sum(len(rm.msg_to_events(m)) for m in got["events"])
    assert n_ev > 1000, out
    assert not got["gt"]  # a recording has no ground truth


def test_launch_with_no_camera_stops_with_one_clear_error():
    """`source:=camera` without a camera: the simulator node exits 2 naming the problem, the
    launcher stops the rest (still importing torch) without a traceback in the output."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "dashnet_ros.cli", "launch", "tracking", "source:=camera"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out = proc.communicate(timeout=60)[0].decode(errors="replace")
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError("dashnet launch kept running after the simulator node failed")
    assert proc.returncode == 2, out
    assert "source 'camera': no iniVation camera found" in out, out
    assert "davis exited with code 2; stopping the rest" in out, out
    assert "Traceback" not in out, out
    time.sleep(0.5)
    assert _simulator_pids() == "", "a node process outlived `dashnet launch`"


def test_a_node_interrupted_while_importing_exits_quietly():
    """ros2 launch sends SIGINT to every node when one fails at start; a node still importing
    torch then exits 130 without a KeyboardInterrupt traceback (the generated executable)."""
    from ament_index_python.packages import get_package_prefix

    exe = os.path.join(get_package_prefix("dashnet_ros"), "lib", "dashnet_ros", "snn_tracker")
    proc = subprocess.Popen([exe], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    time.sleep(0.3)                                     # torch alone takes longer to import
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=30)[0].decode(errors="replace")
    assert "Traceback" not in out, out
    assert proc.returncode in (130, 0), out             # 0: it had already started, and stopped cleanly
