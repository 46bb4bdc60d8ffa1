#!/usr/bin/env python3
"""The ROS 2 tracking graph's throughput, latency and CPU per node (issue 5's speed target).

Target: fused boxes >= 1 kHz through the graph on 2 cores; event -> fused-box latency
p99 <= 5 ms; CPU per node reported.

What runs
---------
The graph is started exactly as ``dashnet launch tracking`` starts it
(:func:`dashnet_ros.commands.launch.start`: snn_tracker, ann_tracker, fuser, steering as
separate processes over Fast DDS on loopback, in a ROS domain of its own).

* ``--sensor replay`` (default): a DAVIS clip is simulated once beforehand (``--source``,
  ``--interp-factor``; cached under ``out/bench/``) and a player process publishes it on
  ``/davis/events`` (``--packet-us``, default 2 ms as the graph), ``/davis/image_raw`` (30 Hz), ``/davis/camera_info``
  and ``/davis/ground_truth`` as the simulator node does, paced at each realtime factor
  in turn (``--factors``), the clip looping with sensor time running on.  This is what a
  camera driver or a bag gives the graph; the simulation itself (about 1 CPU-second per
  sensor-second here) is not part of it (launch argument ``use_simulator:=false``).
* ``--sensor simulator``: the davis_simulator node simulates ``--source`` live (one graph
  start per factor); its CPU counts.

A probe node in this process (rclpy EventsExecutor, its own thread) subscribes to
``/dashnet/fused_boxes`` (``TrackedBoxArray``; the single-box ``/dashnet/fused_box`` for a
graph without arrays), to ``/diagnostics`` and, with the simulator, to ``/davis/events``.

Definitions
-----------
* fused boxes/s: fused boxes (one per SNN window) received per wall second over the
  measured interval of each factor (after ``--warmup-s``).  The sensor rate is
  ``factor * 1e6 / window_us`` (2083/s at 1.0 with 480 µs windows).
* latency: for a fused box stamped ``T`` (the end of its SNN window), the event packet that
  completes the window is the first one with ``end_us >= T``; latency = wall time of the
  fused array's arrival at the probe minus the wall time just before that packet was
  published (replay: logged by the player; simulator: its arrival at the probe).  One
  machine, one clock (``time.time_ns``); the probe's own wake-up is included, so it is an
  upper bound of publish-to-publish.
* drops: SNN windows missing from the fused stream (stamp steps other than ``window_us``),
  and event packets published but never received by snn_tracker (its ``/diagnostics``
  counters against the player's log).
* keeps up: fused boxes/s >= 95 % of the sensor rate, no window missing, no packet lost,
  latency p99 < 50 ms (a backlog otherwise grows until the queues drop).
* CPU per node: utime + stime of the node's process (and children) over the measured
  interval, in cores (CPU-s per wall-s) and in CPU-s per sensor-s.  From them,
  ``projected_realtime_factor_2_cores`` = min(2 / the graph's CPU-s per sensor-s, 1 / the
  busiest node's): the factor the graph's own work allows on two idle cores (each node is
  one single-threaded process).  It is shown only for intervals where every packet and
  window was processed.  CPU times on a loaded machine are inflated (caches, wake-ups), so
  it is conservative; the measured keeps-up factor also depends on what else runs.

Peer: the offline core pipeline (:class:`dashnet_ros.tracking.HybridTracker` ``push``, the
same SNN + ANN + TCF, no ROS) on the same clip and weights, torch threads 1, in this
process before the graph runs: its CPU per fused box against the graph's (tracker nodes +
fuser + steering) gives the ROS overhead.

Output: ``out/bench/graph.json`` (machine, clip, each factor's numbers, the peer) and a
printed table.  The machine is shared: its load average is recorded with the numbers.

    .venv/bin/python bench/bench_graph.py                        # replay, factors 1.0 0.7 0.5 0.35 0.25

Columns of the table: realtime factor; fused boxes and fused messages per wall second;
sensor time per wall time; latency p50/p99/max (ms); windows missing; packets lost on the
way to snn_tracker ('?' = unknown); keeps up; the graph's CPU-s per sensor-s; the factor that
CPU allows on two idle cores (nan where work was skipped); CPU cores per process.
    .venv/bin/python bench/bench_graph.py --factors 1.0 0.5 --measure-s 10
    .venv/bin/python bench/bench_graph.py --factors 1.0 1.0 1.0 --no-peer   # one factor three times: the spread
    .venv/bin/python bench/bench_graph.py --sensor simulator --factors 0.25
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
from array import array
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from _machine import machine  # noqa: E402

W, H = 240, 180
PACKET_US = 2000      # the graph's default packet_us
APS_RATE_HZ = 30.0
TARGET_RATE_HZ = 1000.0
TARGET_P99_MS = 5.0
KEEP_UP_RATIO = 0.95
KEEP_UP_P99_MS = 50.0


# --------------------------------------------------------------------------- small helpers

def _atomic_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=_jsonable))
    os.replace(tmp, path)


def _jsonable(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


def machine_info() -> dict:
    try:
        from importlib.metadata import version

        rclpy_v = version("ros-rclpy")
    except Exception:  # noqa: BLE001 - informative only
        rclpy_v = "?"
    m = machine(rclpy=rclpy_v, rmw=os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp (default)"))
    m["load_avg_1min_at_start"] = m.pop("load_avg_1min")
    return m


_CLK = os.sysconf("SC_CLK_TCK")


def _proc_table():
    """pid -> (ppid, utime + stime in seconds) of every process (from /proc)."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                raw = f.read().decode(errors="replace")
        except OSError:
            continue
        rest = raw[raw.rfind(")") + 2:].split()
        out[int(d)] = (int(rest[1]), (int(rest[11]) + int(rest[12])) / _CLK)
    return out


def tree_cpu_s(pids: dict) -> dict:
    """name -> CPU seconds of the process ``pids[name]`` and all its descendants (this
    process alone: without its children, which are the graph)."""
    table = _proc_table()
    children = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out = {}
    for name, root in pids.items():
        total, todo = 0.0, [root]
        while todo:
            p = todo.pop()
            if p in table:
                total += table[p][1]
            if p != os.getpid():
                todo += children.get(p, [])
        out[name] = total
    return out


def pct(values, q):
    return float(np.percentile(values, q)) if len(values) else float("nan")


# --------------------------------------------------------------------------- clip and weights

def weights(out_dir: Path) -> dict:
    """The shipped weights, else small untrained ones (the cost per window is the same: dense
    convolutions; an untrained SNN may give NaN boxes, which are tracked as 'no estimate')."""
    from dashnet_ros.tracking import default_weights

    shipped = {"snn": default_weights("snn"), "ann": default_weights("ann")}
    if all(os.path.isfile(p) for p in shipped.values()):
        return dict(shipped, kind="shipped")
    import torch

    from dashnet_ros.models.ann import FrameTracker
    from dashnet_ros.models.checkpoint import save_checkpoint
    from dashnet_ros.models.snn import SpikingTracker

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"snn": str(out_dir / "snn_untrained.pt"), "ann": str(out_dir / "ann_untrained.pt")}
    if not all(os.path.isfile(p) for p in paths.values()):
        torch.manual_seed(0)
        save_checkpoint(paths["snn"], SpikingTracker.from_preset("fast"), preset="fast")
        save_checkpoint(paths["ann"], FrameTracker.from_preset("fast"), preset="fast")
    return dict(paths, kind="untrained")


def make_clip(path: Path, source: str, seconds: float, interp_factor: int, seed: int, packet_us: int = PACKET_US) -> dict:
    """Simulate the DAVIS clip once (cached): events per packet, APS frames, ground truth."""
    if path.is_file():
        return dict(np.load(path, allow_pickle=False))
    from dashnet_ros.davis.frames import ApsFrame, EventBatch
    from dashnet_ros.davis.sources import open_source
    from dashnet_ros.davis.stream import DavisSimulator
    from dashnet_ros.events import EVENT_DTYPE

    print(f"simulating the clip: {source}, {seconds:g} s, interp x{interp_factor} ...", flush=True)
    src = open_source(source, seed=seed, n_frames=int(round(seconds * 240)) + 1, duration_s=seconds)
    sim = DavisSimulator(src, width=W, height=H, interp_factor=interp_factor, dvs_model="pixel",
                         aps_rate_hz=APS_RATE_HZ, batch_us=packet_us, seed=seed)
    # items in stream order: kind 0 = packet (t0, t1, first event, n), kind 1 = frame (t, index)
    order, ev_chunks, frames, frame_t, frame_box = [], [], [], [], []
    n_ev = 0
    for item in sim.stream():
        if isinstance(item, EventBatch):
            order.append((0, item.t0_us, item.t1_us, n_ev, len(item.events)))
            ev_chunks.append(item.events)
            n_ev += len(item.events)
        elif isinstance(item, ApsFrame):
            order.append((1, item.t_us, item.t_us, len(frames), 0))
            frames.append(np.asarray(item.image, np.uint8))
            frame_t.append(item.t_us)
            frame_box.append(np.full(4, np.nan, np.float32) if item.box is None else np.asarray(item.box, np.float32))
    events = np.concatenate(ev_chunks) if ev_chunks else np.zeros(0, EVENT_DTYPE)
    clip = {"order": np.array(order, np.int64), "ev_t_us": events["t_us"], "ev_x": events["x"], "ev_y": events["y"],
            "ev_p": events["p"],
            "frames": np.stack(frames), "frame_t_us": np.array(frame_t, np.int64),
            "frame_box": np.stack(frame_box), "source": np.array(source), "interp_factor": np.array(interp_factor)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez_compressed(tmp, **clip)
    os.replace(tmp, path)
    return clip


def clip_events(clip):
    from dashnet_ros.events import make_events

    return make_events(clip["ev_x"], clip["ev_y"], clip["ev_t_us"], clip["ev_p"], sort=False)


def clip_items(clip):
    """The clip as core stream items (EventBatch / ApsFrame, with ground truth)."""
    from dashnet_ros.davis.frames import ApsFrame, EventBatch

    ev = clip_events(clip)
    items = []
    for kind, a, b, i, n in clip["order"]:
        if kind == 0:
            items.append(EventBatch(int(a), int(b), ev[i:i + n]))
        else:
            box = clip["frame_box"][i]
            items.append(ApsFrame(int(a), clip["frames"][i], None if np.isnan(box).any() else box))
    return items


# --------------------------------------------------------------------------- peer: the core without ROS

def run_peer(clip, w: dict, windows_per_call: int, repeats: int = 2) -> dict:
    """HybridTracker.push over the clip (SNN + ANN + TCF, no ROS), torch threads 1; best of N."""
    from dashnet_ros.threads import set_threads
    from dashnet_ros.tracking import HybridTracker

    set_threads(1)                     # torch and BLAS, as the nodes do
    items = clip_items(clip)
    first = next(it for it in items if getattr(it, "box", None) is not None)
    best = None
    for _ in range(repeats):
        trk = HybridTracker.from_weights(W, H, snn_weights=w["snn"], ann_weights=w["ann"],
                                         windows_per_call=windows_per_call, aps_rate_hz=APS_RATE_HZ)
        trk.init(first.box, first.t_us)
        n_fused = 0
        t0, c0 = time.perf_counter(), time.process_time()
        for it in items:
            for o in trk.push(it):
                n_fused += o.source == "fused"
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if best is None or cpu < best["cpu_s"]:
            sensor_s = (int(clip["order"][-1][2]) - first.t_us) / 1e6
            best = {"what": "HybridTracker.push over the clip (SNN+ANN+TCF, no ROS), torch threads 1",
                    "fused_boxes": n_fused, "wall_s": wall, "cpu_s": cpu, "sensor_s": sensor_s,
                    "fused_per_wall_s": n_fused / wall, "fused_per_cpu_s": n_fused / cpu,
                    "cpu_us_per_fused_box": cpu / n_fused * 1e6, "realtime_factor_cpu": sensor_s / cpu,
                    "windows_per_call": windows_per_call}
    return best


# --------------------------------------------------------------------------- player (a child process)

def play(argv) -> int:
    """``bench_graph.py --play CLIP LOG SCHEDULE``: publish the clip like the simulator node,
    segment by segment (``f:seconds,...``, a pause between), then write the publish log."""
    import rclpy
    from rclpy.node import Node
    from sensor_msgs.msg import CameraInfo, Image

    from dashnet_ros import graph
    from dashnet_ros.io import ros_msgs as rm
    from dashnet_ros.msg import EventPacket, TrackedBox
    from dashnet_ros.nodes.common import freeze_heap, sensor_qos
    from dashnet_ros.nodes.davis_simulator import _camera_info
    from dashnet_ros.timing import Pacer

    clip_path, log_path, schedule, pause_s = argv[0], argv[1], argv[2], float(argv[3])
    segs = [(float(a), float(b)) for a, b in (s.split(":") for s in schedule.split(","))]
    clip = dict(np.load(clip_path, allow_pickle=False))
    ev_all = clip_events(clip)
    order = clip["order"]
    first_packet = next(o for o in order if o[0] == 0)
    span_us = int(order[-1][2]) + int(first_packet[2] - first_packet[1])
    rclpy.init()
    node = Node("bench_player")
    qos = sensor_qos()
    p_ev = node.create_publisher(EventPacket, graph.TOPIC_EVENTS, qos)
    p_img = node.create_publisher(Image, graph.TOPIC_IMAGE, qos)
    p_info = node.create_publisher(CameraInfo, graph.TOPIC_CAMERA_INFO, qos)
    p_gt = node.create_publisher(TrackedBox, graph.TOPIC_GROUND_TRUTH, 10)
    info = _camera_info(CameraInfo(), W, H, "davis")
    deadline = time.monotonic() + 120
    while not (p_ev.get_subscription_count() >= 1 and p_gt.get_subscription_count() >= 2
               and p_img.get_subscription_count() >= 1):
        if time.monotonic() > deadline:
            print("ERROR no tracker subscribed within 120 s", flush=True)
            return 1
        time.sleep(0.1)
    time.sleep(0.5)
    freeze_heap()   # as the nodes: what exists now stays out of later collections
    print("READY", flush=True)
    log_end, log_ns, log_seg = [], [], []
    k, loop = 0, 0
    for si, (factor, dur) in enumerate(segs):
        pacer = Pacer(factor)
        t_start = time.monotonic()
        print(f"SEG {si} {factor} {time.time_ns()}", flush=True)
        while time.monotonic() - t_start < dur:
            kind, a, b, i, n = (int(v) for v in order[k])
            off = loop * span_us
            if kind == 0:
                pacer.wait_until(b + off)
                ev = ev_all[i:i + n]
                if off:
                    ev = ev.copy()
                    ev["t_us"] += off
                msg = rm.events_to_msg(ev, EventPacket(), width=W, height=H, t0_us=a + off, t1_us=b + off)
                msg.header.frame_id = "davis"
                log_end.append(b + off)
                log_ns.append(time.time_ns())
                log_seg.append(si)
                p_ev.publish(msg)
            else:
                pacer.wait_until(a + off)
                img = rm.numpy_to_image(clip["frames"][i], Image())
                rm.us_to_stamp(a + off, img.header.stamp)
                img.header.frame_id = "davis"
                info.header.stamp = img.header.stamp
                p_img.publish(img)
                p_info.publish(info)
                box = clip["frame_box"][i]
                p_gt.publish(rm.box_to_msg(box, TrackedBox(), t_us=a + off, source=TrackedBox.SOURCE_GROUND_TRUTH,
                                           frame_id="davis"))
            k += 1
            if k == len(order):
                k, loop = 0, loop + 1
        print(f"END {si} {time.time_ns()} {pacer.lag_s:.4f}", flush=True)
        time.sleep(pause_s)
    np.savez(log_path, end_us=np.array(log_end, np.int64), pub_ns=np.array(log_ns, np.int64),
             seg=np.array(log_seg, np.int64))
    print("DONE", flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


# --------------------------------------------------------------------------- probe

class Arrivals:
    """``(arrival ns, stamps)`` of received messages in flat int64 arrays: no Python object
    per message, so the bench process's garbage collector never walks a growing list (a
    full collection over one stalled the probe for ~100 ms, measured, and showed up as
    graph latency)."""

    def __init__(self):
        self.msg_ns, self.counts, self.stamps = array("q"), array("q"), array("q")
        self.lock = threading.Lock()   # the probe's thread appends while the main thread reads

    def add(self, t_ns: int, stamps) -> None:
        with self.lock:
            self.msg_ns.append(t_ns)
            self.counts.append(len(stamps))
            self.stamps.extend(stamps)

    def __len__(self) -> int:
        return len(self.msg_ns)

    def between(self, a_ns: int, b_ns: int):
        """``(arrival ns per stamp, stamps, messages)`` of the messages received in [a, b]."""
        with self.lock:   # copies: a buffer exported to numpy would forbid the next append
            t, n, st = (np.array(x, np.int64) for x in (self.msg_ns, self.counts, self.stamps))
        per_stamp = np.repeat(t, n)
        keep = (per_stamp >= a_ns) & (per_stamp <= b_ns)
        msgs = int(np.count_nonzero((t >= a_ns) & (t <= b_ns)))
        return per_stamp[keep].copy(), st[keep].copy(), msgs


class Probe:
    """Subscriptions of the measurement, spun by an EventsExecutor in a thread."""

    def __init__(self, ctx, with_events: bool):
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.node import Node

        from dashnet_ros import graph
        from dashnet_ros.msg import EventPacket
        from dashnet_ros.nodes.common import sensor_qos

        self.node = Node("bench_probe", context=ctx)
        self.fused = Arrivals()   # arrival ns, stamps us
        self.diag = []            # (arrival ns, {name: {key: value}})
        self.events = Arrivals()  # arrival ns, end_us
        self.fused_topic = None
        if with_events:
            self.node.create_subscription(EventPacket, graph.TOPIC_EVENTS,
                                          lambda m: self.events.add(time.time_ns(), (m.end_us,)),
                                          sensor_qos(depth=1000))
        self.node.create_subscription(DiagnosticArray, graph.TOPIC_DIAGNOSTICS, self._on_diag, 100)
        try:  # ~3x less CPU per message than the SingleThreadedExecutor (see nodes/snn_tracker.py)
            from rclpy.experimental import EventsExecutor

            self.ex = EventsExecutor(context=ctx)
        except ImportError:
            from rclpy.executors import SingleThreadedExecutor

            self.ex = SingleThreadedExecutor(context=ctx)
        self.ex.add_node(self.node)
        self.ctx = ctx
        self.stop = False
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self):
        while not self.stop and self.ctx.ok():
            self.ex.spin_once(timeout_sec=0.05)

    def _on_diag(self, msg):
        self.diag.append((time.time_ns(), {s.name: {kv.key: kv.value for kv in s.values} for s in msg.status}))

    def _stamp(self, b):
        return b.header.stamp.sec * 1_000_000 + b.header.stamp.nanosec // 1000

    def subscribe_fused(self, timeout_s: float = 120.0) -> str:
        """Wait for the fuser; subscribe to its arrays (or to its single boxes if it has none)."""
        from dashnet_ros import graph
        from dashnet_ros.msg import TrackedBox, TrackedBoxArray

        arrays = getattr(graph, "TOPIC_FUSED_BOXES", "/dashnet/fused_boxes")
        deadline = time.monotonic() + timeout_s
        while self.node.count_publishers(graph.TOPIC_FUSED_BOX) == 0:
            if time.monotonic() > deadline:
                raise RuntimeError("the fuser did not come up")
            time.sleep(0.2)
        time.sleep(0.5)
        if self.node.count_publishers(arrays):
            self.node.create_subscription(
                TrackedBoxArray, arrays,
                lambda m: self.fused.add(time.time_ns(), m.t_us), 1000)
            self.fused_topic = arrays
        else:
            self.node.create_subscription(
                TrackedBox, graph.TOPIC_FUSED_BOX,
                lambda m: self.fused.add(time.time_ns(), (self._stamp(m),)), 1000)
            self.fused_topic = graph.TOPIC_FUSED_BOX
        return self.fused_topic

    def close(self):
        self.stop = True
        self.thread.join(timeout=2)
        self.node.destroy_node()


# --------------------------------------------------------------------------- analysis

def snn_counts_at(diag, t_ns):
    """The latest snn_tracker diagnostics (packets, last_end_us) received by ``t_ns``."""
    best = None
    for t, d in diag:
        if t > t_ns:
            break
        for name, v in d.items():
            if name.startswith("dashnet snn_tracker"):
                best = v
    return best


def analyse(probe, a_ns, b_ns, factor, window_us, cpu_a, cpu_b, pub_end=None, pub_ns=None) -> dict:
    """Numbers of one measured interval [a_ns, b_ns] (wall, time.time_ns)."""
    dur_s = (b_ns - a_ns) / 1e9
    arrivals, stamps, n_msgs = probe.fused.between(a_ns, b_ns)
    expected = factor * 1e6 / window_us
    r = {"realtime_factor": factor, "measured_wall_s": round(dur_s, 3), "sensor_rate_boxes_per_s": expected,
         "fused_boxes": int(len(stamps)), "fused_messages": n_msgs,
         "fused_boxes_per_s": len(stamps) / dur_s, "fused_messages_per_s": n_msgs / dur_s}
    if len(stamps) > 1:
        d = np.diff(stamps)
        fwd = d[d > 0]
        r["missing_windows"] = int(np.sum(fwd[fwd > window_us] // window_us - 1))
        r["duplicate_or_backward"] = int(np.sum(d <= 0))
        r["sensor_time_per_wall_time"] = (stamps[-1] - stamps[0]) / 1e6 / dur_s
    # latency: fused arrival - publish (player) or arrival (probe) of the packet completing the window
    if pub_end is None and len(probe.events):
        pub_ns, pub_end, _ = probe.events.between(0, 2**62)
        r["latency_reference"] = "event packet arrival at the probe"
    else:
        r["latency_reference"] = "player's wall clock just before publishing the event packet"
    if pub_end is not None and len(stamps):
        order = np.argsort(pub_end, kind="stable")
        ends, ns = pub_end[order], pub_ns[order]
        idx = np.searchsorted(ends, stamps, side="left")
        ok = idx < len(ends)
        lat_ms = (arrivals[ok] - ns[idx[ok]]) / 1e6
        r.update(latency_ms_p50=pct(lat_ms, 50), latency_ms_p90=pct(lat_ms, 90), latency_ms_p99=pct(lat_ms, 99),
                 latency_ms_max=float(lat_ms.max()) if len(lat_ms) else float("nan"), latency_samples=int(ok.sum()))
    # event packets lost on the way to snn_tracker (its /diagnostics counters against the
    # player's log, between the diagnostics last received before a and before b)
    da, db = snn_counts_at(probe.diag, a_ns), snn_counts_at(probe.diag, b_ns)
    usable = (da and db and pub_end is not None and da.get("last_end_us") not in (None, "None")
              and db.get("last_end_us") not in (None, "None"))
    if usable:
        e_a, e_b = int(da["last_end_us"]), int(db["last_end_us"])
        span_s = (e_b - e_a) / 1e6 / factor
        r["snn_diag_interval_s"] = span_s
        if span_s < 0.5 * dur_s:
            r["snn_diag"] = "stale (an overloaded snn_tracker sent too few diagnostics): loss unknown"
            r["snn_packets_lost"] = None
        else:
            published = int(np.sum((pub_end > e_a) & (pub_end <= e_b)))
            received = int(db["packets"]) - int(da["packets"])
            r["snn_windows_per_call"] = int(db.get("windows_per_call", 0)) or None
            r.update(snn_diag="ok", snn_packets_published=published, snn_packets_received=received,
                     snn_packets_lost=max(0, published - received), snn_windows=int(db["windows"]) - int(da["windows"]),
                     snn_calls=int(db["calls"]) - int(da["calls"]))
    else:
        r["snn_diag"] = "absent (a graph without snn_tracker diagnostics): loss unknown"
    cpu = {k: (cpu_b[k] - cpu_a[k]) / dur_s for k in cpu_a if k in cpu_b}
    r["cpu_cores"] = cpu
    r["cpu_s_per_sensor_s"] = {k: v / factor for k, v in cpu.items()}
    graph_nodes = [k for k in cpu if k not in ("player (sensor)", "bench probe")]
    r["cpu_cores_graph"] = sum(cpu[k] for k in graph_nodes)
    # what the graph's own CPU work would allow on 2 idle cores (sensor and probe excluded); CPU
    # times on a loaded machine are inflated (cache, wake-ups), so this is a conservative estimate
    r["cpu_s_per_sensor_s_graph"] = r["cpu_cores_graph"] / factor
    r["projection_valid"] = False
    if r["cpu_cores_graph"] > 0:
        r["projected_realtime_factor_2_cores"] = 2.0 / r["cpu_s_per_sensor_s_graph"]
        r["projected_fused_boxes_per_s_2_cores"] = min(1.0, r["projected_realtime_factor_2_cores"]) * 1e6 / window_us
        # the busiest node runs on one core: its CPU-s per sensor-s bounds the factor as well
        busiest = max(r["cpu_s_per_sensor_s"][k] for k in graph_nodes)
        r["projected_realtime_factor_2_cores"] = min(r["projected_realtime_factor_2_cores"], 1.0 / busiest)
    trackers = [k for k in graph_nodes if k != "davis"]
    if len(stamps):
        r["cpu_us_per_fused_box_graph"] = sum(cpu[k] for k in trackers) * dur_s / len(stamps) * 1e6
    r["keeps_up"] = bool(
        r["fused_boxes_per_s"] >= KEEP_UP_RATIO * expected
        and r.get("missing_windows", 1) == 0
        and r.get("snn_packets_lost") in (0, None) and not r["snn_diag"].startswith("stale")
        and r.get("latency_ms_p99", float("inf")) < KEEP_UP_P99_MS)
    # the CPU-based projection holds where all the work was done (nothing lost or skipped)
    r["projection_valid"] = bool(r.get("snn_packets_lost") == 0 and r.get("missing_windows", 1) == 0
                                 and r["fused_boxes_per_s"] >= KEEP_UP_RATIO * expected)
    if "projected_realtime_factor_2_cores" in r:
        r["projected_fused_boxes_per_s_2_cores"] = min(1.0, r["projected_realtime_factor_2_cores"]) * 1e6 / window_us
    r["meets_target"] = bool(r["keeps_up"] and r["fused_boxes_per_s"] >= TARGET_RATE_HZ
                             and r.get("latency_ms_p99", float("inf")) <= TARGET_P99_MS)
    return r


def per_factor(runs) -> dict:
    """Runs of the same factor together (``--factors 1.0 1.0 1.0`` repeats one): how many
    kept up and met the target, and the spread of their p99 latency -- single runs on a
    shared machine differ a lot."""
    out = {}
    for f in sorted({r["realtime_factor"] for r in runs}):
        rs = [r for r in runs if r["realtime_factor"] == f]
        p99 = np.array([r.get("latency_ms_p99", np.nan) for r in rs], float)
        out[str(f)] = {"runs": len(rs), "kept_up": sum(r["keeps_up"] for r in rs),
                       "met_target": sum(r["meets_target"] for r in rs),
                       "latency_ms_p99_median": float(np.nanmedian(p99)) if np.isfinite(p99).any() else float("nan"),
                       "latency_ms_p99_min": float(np.nanmin(p99)) if np.isfinite(p99).any() else float("nan"),
                       "latency_ms_p99_max": float(np.nanmax(p99)) if np.isfinite(p99).any() else float("nan")}
    return out


# --------------------------------------------------------------------------- runs

def override_params(items, tmp_dir: Path) -> None:
    """``NODE:name=value`` items: a copy of the package's config/ with those parameters set, used
    by this run's launch (for A/B runs of node parameters that have no launch argument)."""
    import shutil

    import yaml

    from dashnet_ros import graph
    from dashnet_ros.commands import launch

    src = launch.config_dir()
    files = {spec.name: spec.params_file for spec in graph.NODES}
    if tmp_dir.exists():
        shutil.rmtree(tmp_dir)
    shutil.copytree(src, tmp_dir)
    for item in items:
        node, _, kv = item.partition(":")
        name, _, value = kv.partition("=")
        if node not in files or not name or not _:
            raise SystemExit(f"--param {item!r}: expected NODE:name=value with NODE one of {sorted(files)}")
        path = tmp_dir / files[node]
        doc = yaml.safe_load(path.read_text())
        doc["/**"]["ros__parameters"][name] = yaml.safe_load(value)
        path.write_text(yaml.safe_dump(doc))
    launch.config_dir = lambda: str(tmp_dir)


def launch_args(a, w, extra) -> dict:
    d = {"snn_weights": w["snn"], "ann_weights": w["ann"], "threads": "1", "aps_rate_hz": str(APS_RATE_HZ)}
    if a.windows_per_call is not None:
        d["snn_windows_per_call"] = str(a.windows_per_call)
    d.update(extra)
    return d


def run_replay(a, w, clip_path: Path, log_dir: Path) -> list:
    import rclpy

    from dashnet_ros.commands import launch

    log = open(log_dir / "graph_replay.log", "w")
    procs = launch.start(launch_args(a, w, {"use_simulator": "false"}), stdout=log, stderr=subprocess.STDOUT)
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    probe = Probe(ctx, with_events=False)
    player = None
    results = []
    try:
        print(f"graph: {', '.join(s.name for s, _ in procs)}; waiting for the nodes ...", flush=True)
        topic = probe.subscribe_fused()
        print(f"probe on {topic}", flush=True)
        segs = [(a.first_factor, a.first_s)] + [(f, a.warmup_s + a.measure_s) for f in a.factors]
        schedule = ",".join(f"{f}:{d}" for f, d in segs)
        play_log = log_dir / "graph_player.npz"
        player = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--play", str(clip_path),
                                   str(play_log), schedule, str(a.pause_s)],
                                  stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True)
        pids = {s.name: p.pid for s, p in procs}
        pids["player (sensor)"] = player.pid
        pids["bench probe"] = os.getpid()
        marks = {}
        for line in player.stdout:
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "ERROR":
                raise RuntimeError(line.strip())
            if parts[0] == "SEG":
                si = int(parts[1])
                if si == 0:
                    print(f"first segment (warm-up, not measured): factor {segs[0][0]} for {segs[0][1]} s", flush=True)
                    continue
                t_seg = int(parts[3])
                time.sleep(max(0.0, t_seg / 1e9 + a.warmup_s - time.time()))
                marks[si] = [time.time_ns(), tree_cpu_s(pids)]
            elif parts[0] == "END" and int(parts[1]) in marks:
                si = int(parts[1])
                marks[si] += [time.time_ns(), tree_cpu_s(pids), float(parts[3])]
            elif parts[0] == "DONE":
                break
            if any(p.poll() is not None for _, p in procs):
                dead = [s.name for s, p in procs if p.poll() is not None]
                raise RuntimeError(f"graph node(s) exited: {dead}; see {log.name}")
        player.wait(timeout=30)
        time.sleep(1.5)  # the last diagnostics
        plog = dict(np.load(play_log))
        for si in sorted(marks):
            if len(marks[si]) < 5:
                continue
            a_ns, cpu_a, b_ns, cpu_b, lag = marks[si]
            factor = segs[si][0]
            r = analyse(probe, a_ns, b_ns, factor, a.window_us, cpu_a, cpu_b, plog["end_us"], plog["pub_ns"])
            r["player_lag_s"] = lag
            r["load_avg_1min"] = os.getloadavg()[0]
            results.append(r)
            print_row(r)
    finally:
        if player is not None and player.poll() is None:
            player.kill()
        probe.close()
        ctx.try_shutdown()
        launch.stop(procs)
        log.close()
    return results


def run_simulator(a, w, log_dir: Path) -> list:
    import rclpy

    from dashnet_ros.commands import launch

    results = []
    for factor in a.factors:
        log = open(log_dir / f"graph_sim_{factor}.log", "w")
        extra = {"use_simulator": "true", "source": a.source, "interp_factor": str(a.interp_factor),
                 "realtime_factor": str(factor), "seed": str(a.seed)}
        procs = launch.start(launch_args(a, w, extra), stdout=log, stderr=subprocess.STDOUT)
        ctx = rclpy.Context()
        rclpy.init(context=ctx)
        probe = Probe(ctx, with_events=True)
        try:
            probe.subscribe_fused()
            deadline = time.monotonic() + 120
            while not probe.fused and time.monotonic() < deadline:
                time.sleep(0.2)
            if not probe.fused:
                raise RuntimeError(f"no fused box within 120 s; see {log.name}")
            time.sleep(a.warmup_s)
            pids = {s.name: p.pid for s, p in procs}
            pids["bench probe"] = os.getpid()
            a_ns, cpu_a = time.time_ns(), tree_cpu_s(pids)
            time.sleep(a.measure_s)
            b_ns, cpu_b = time.time_ns(), tree_cpu_s(pids)
            r = analyse(probe, a_ns, b_ns, factor, a.window_us, cpu_a, cpu_b)
            r["load_avg_1min"] = os.getloadavg()[0]
            results.append(r)
            print_row(r)
        finally:
            probe.close()
            ctx.try_shutdown()
            launch.stop(procs)
            log.close()
    return results


# --------------------------------------------------------------------------- report

HEADER = (f"{'factor':>6} {'boxes/s':>8} {'msgs/s':>7} {'sensor':>7} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
          f"{'miss':>5} {'lost':>5} {'keeps up':>8} {'CPU/s':>6} {'proj x':>6}  CPU cores per node")


def _fmt_lost(v) -> str:
    return "?" if v is None else str(v)


def print_row(r) -> None:
    cpu = ", ".join(f"{k} {v:.2f}" for k, v in r["cpu_cores"].items())
    print(f"{r['realtime_factor']:>6.2f} {r['fused_boxes_per_s']:>8.0f} {r['fused_messages_per_s']:>7.0f} "
          f"{r.get('sensor_time_per_wall_time', float('nan')):>7.3f} {r.get('latency_ms_p50', float('nan')):>7.2f} "
          f"{r.get('latency_ms_p99', float('nan')):>7.2f} {r.get('latency_ms_max', float('nan')):>7.1f} "
          f"{r.get('missing_windows', -1):>5} {_fmt_lost(r.get('snn_packets_lost')):>5} {str(r['keeps_up']):>8} "
          f"{r['cpu_s_per_sensor_s_graph']:>6.2f} "
          f"{r.get('projected_realtime_factor_2_cores', float('nan')) if r['projection_valid'] else float('nan'):>6.2f}"
          f"  {cpu}",
          flush=True)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--play":
        return play(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sensor", choices=("replay", "simulator"), default="replay")
    ap.add_argument("--source", default="scenes:3", help="frame source of the clip (default scenes:3)")
    ap.add_argument("--clip-s", type=float, default=3.0, help="replay: clip length in sensor seconds (looped)")
    ap.add_argument("--interp-factor", type=int, default=1, choices=(0, 1, 3, 7))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--packet-us", type=int, default=PACKET_US,
                    help="event packet period in us (the camera driver's / davis_simulator's packet_us)")
    ap.add_argument("--factors", type=float, nargs="+", default=[1.0, 0.7, 0.5, 0.35, 0.25],
                    help="realtime factors, measured in this order")
    ap.add_argument("--warmup-s", type=float, default=2.0, help="wall seconds per factor before measuring")
    ap.add_argument("--measure-s", type=float, default=6.0, help="wall seconds measured per factor")
    ap.add_argument("--pause-s", type=float, default=2.0, help="replay: wall seconds between factors (queues drain)")
    ap.add_argument("--first-factor", type=float, default=0.25, help="replay: factor of the unmeasured first segment")
    ap.add_argument("--first-s", type=float, default=4.0, help="replay: length of that segment (wall s)")
    ap.add_argument("--windows-per-call", type=int, default=None,
                    help="snn_windows_per_call launch argument (default: the graph's)")
    ap.add_argument("--window-us", type=int, default=480, help="SNN window of the weights' preset (for the rates)")
    ap.add_argument("--param", action="append", default=[], metavar="NODE:name=value",
                    help="set a node parameter for this run (a copy of config/ is used), e.g. "
                         "fuser:single_period_ms=1.0; repeatable")
    ap.add_argument("--no-peer", action="store_true", help="skip the offline core pipeline peer")
    ap.add_argument("--label", default="", help="a note stored with the results")
    ap.add_argument("--out", default=str(ROOT / "out" / "bench" / "graph.json"))
    a = ap.parse_args(argv)
    if any(f <= 0 for f in a.factors) or a.measure_s <= 0 or a.clip_s <= 0:
        ap.error("--factors, --measure-s and --clip-s must be > 0")
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ["ROS_DOMAIN_ID"] = str(random.randint(150, 230))     # children inherit it
    if a.windows_per_call is None:      # the graph's default, recorded with the numbers
        from dashnet_ros import graph

        a.windows_per_call = int(graph.launch_arg_defaults()["snn_windows_per_call"])
    out = Path(a.out)
    log_dir = out.parent
    log_dir.mkdir(parents=True, exist_ok=True)
    info = {"machine": machine_info(), "label": a.label, "sensor": a.sensor, "source": a.source,
            "interp_factor": a.interp_factor, "packet_us": a.packet_us, "window_us": a.window_us,
            "windows_per_call": a.windows_per_call, "targets": {"fused_boxes_per_s": TARGET_RATE_HZ,
                                                                "latency_ms_p99": TARGET_P99_MS},
            "keeps_up_rule": f"boxes/s >= {KEEP_UP_RATIO:.0%} of the sensor rate, no window missing, no packet "
                             f"lost, latency p99 < {KEEP_UP_P99_MS:g} ms",
            "definitions": {k: v for k, v in (line.split(": ", 1) for line in (
                "latency: fused array arrival at the probe minus the wall time just before the event packet "
                "completing the box's window was published (replay) or arrived at the probe (simulator)",
                "fused_boxes_per_s: fused boxes received per wall second over the measured interval",
                "cpu_cores: CPU seconds of each node's process tree per wall second"))}}
    if a.param:
        override_params(a.param, log_dir / "graph_config")
        info["params"] = a.param
    w = weights(log_dir / "graph_weights")
    info["weights"] = w["kind"]
    packet = f"_p{a.packet_us}"
    clip_path = log_dir / f"graph_clip_{a.source.replace(':', '_')}_{a.clip_s:g}s_x{a.interp_factor}_{a.seed}{packet}.npz"
    clip = make_clip(clip_path, a.source, a.clip_s, a.interp_factor, a.seed, a.packet_us)
    n_packets = int(np.sum(clip["order"][:, 0] == 0))
    n_ev = len(clip["ev_t_us"])
    info["clip"] = {"path": str(clip_path), "packets": n_packets, "frames": int(len(clip["frames"])),
                    "sensor_s": int(clip["order"][-1][2]) / 1e6, "events_per_s": n_ev / (int(clip["order"][-1][2]) / 1e6),
                    "events_per_packet": n_ev / max(1, n_packets)}
    print(f"clip: {info['clip']['events_per_s'] / 1e6:.2f} M events/s, {info['clip']['events_per_packet']:.0f} "
          f"events per packet; weights {w['kind']}", flush=True)
    if not a.no_peer:
        peer = run_peer(clip, w, a.windows_per_call)
        info["peer"] = peer
        print(f"peer (no ROS): {peer['fused_per_wall_s']:.0f} fused boxes per wall s, "
              f"{peer['cpu_us_per_fused_box']:.0f} us CPU per box ({peer['realtime_factor_cpu']:.2f}x real time "
              f"per CPU s)", flush=True)
    print(HEADER, flush=True)
    from dashnet_ros.nodes.common import freeze_heap

    freeze_heap()   # the probe, as the nodes (see Arrivals)
    if a.sensor == "replay":
        runs = run_replay(a, w, clip_path, log_dir)
    else:
        runs = run_simulator(a, w, log_dir)
    info["runs"] = runs
    up = [r for r in runs if r["keeps_up"]]
    info["highest_factor_keeping_up"] = max((r["realtime_factor"] for r in up), default=None)
    info["meets_target"] = any(r["meets_target"] for r in runs)
    info["per_factor"] = per_factor(runs)
    for f, v in info["per_factor"].items():
        if v["runs"] > 1:
            print(f"factor {f}: kept up in {v['kept_up']} of {v['runs']} runs, target met in {v['met_target']}; "
                  f"latency p99 median {v['latency_ms_p99_median']:.1f} ms ({v['latency_ms_p99_min']:.1f}-"
                  f"{v['latency_ms_p99_max']:.1f})", flush=True)
    if "peer" in info:
        for r in runs:
            if "cpu_us_per_fused_box_graph" in r:
                r["ros_overhead_x"] = r["cpu_us_per_fused_box_graph"] / info["peer"]["cpu_us_per_fused_box"]
    info["machine"]["load_avg_1min_at_end"] = os.getloadavg()[0]
    _atomic_json(out, info)
    print(f"highest factor keeping up: {info['highest_factor_keeping_up']}; target met: {info['meets_target']}; "
          f"load average {info['machine']['load_avg_1min_at_start']:.1f} -> "
          f"{info['machine']['load_avg_1min_at_end']:.1f}; written {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
