"""rosbag2 bags (MCAP storage) of the graph's topics, written and read with ``rosbags``.

The bags are ordinary rosbag2 directories (``metadata.yaml`` + one ``.mcap`` file, format
version 9, CDR serialisation, zstd-compressed chunks, offered QoS in the metadata) as
``ros2 bag info`` / ``ros2 bag play`` read them (the files also read back with the
reference ``mcap`` reader and its ROS 2 decoder, independently of rosbags).  Our own
message types are registered with :mod:`rosbags.typesys` from the ``msg/*.msg`` text on
top of the ROS 2 Kilted store, so the stored definitions and ``RIHS01`` type hashes are
the ones the colcon build generates (checked in the tests).

Pieces:

- :class:`BagWriter`: topics + serialised messages -> a bag, written under a temporary
  name and moved into place on close (nothing half-written is left);
- :func:`read_bag` / :func:`bag_info`: messages in log-time order, summary;
- :class:`BagRecorder` (rclpy): raw (still serialised) subscriptions on a node, each
  message logged at its DDS reception time (``MessageInfo.received_timestamp``), as
  ``ros2 bag record`` does;
- :class:`BagPlayer` (rclpy): publishes a bag's messages with their recorded relative
  timing scaled by ``rate``, optionally looping (sensor stamps then go backwards, which
  the nodes treat as a restart);
- :func:`replay_deterministic`: the tracker nodes' own code driven by a bag without DDS,
  so the result does not depend on scheduling (see there).

Times: bag log times are integer nanoseconds of the recording machine's clock (wall time
at reception), never the sensor time; the messages keep their sensor-time header stamps.
rclpy is imported only by the functions that need it.
"""
from __future__ import annotations

import glob
import importlib
import os
import shutil
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

import numpy as np

from .. import graph

MSG_PACKAGE = graph.PACKAGE

# The graph's topics and their types (the default set recorded by the demo and the
# recorder node).  The world camera (/world/image_raw, 240 fps) is left out by default:
# the DAVIS stream made from it (events + APS) is what the trackers see.
# The SNN and fused boxes are recorded as the graph's per-packet arrays; the single-box SNN
# topic is not (subscribing to it makes the SNN node publish a message per window), the
# single fused box (ANN attention, steering) is.
_BOX = "dashnet_ros/msg/TrackedBox"
_BOXES = "dashnet_ros/msg/TrackedBoxArray"
GRAPH_TOPICS = {
    graph.TOPIC_EVENTS: "dashnet_ros/msg/EventPacket",
    graph.TOPIC_IMAGE: "sensor_msgs/msg/Image",
    graph.TOPIC_CAMERA_INFO: "sensor_msgs/msg/CameraInfo",
    graph.TOPIC_GROUND_TRUTH: _BOX,
    graph.TOPIC_SNN_BOXES: _BOXES,
    graph.TOPIC_ANN_BOX: _BOX,
    graph.TOPIC_FUSED_BOXES: _BOXES,
    graph.TOPIC_FUSED_BOX: _BOX,
    graph.TOPIC_DECISION: "std_msgs/msg/String",
    graph.TOPIC_CMD_VEL: "geometry_msgs/msg/Twist",
    graph.TOPIC_WORLD_GROUND_TRUTH: _BOX,
    graph.TOPIC_WORLD_DISTANCE: "std_msgs/msg/Float32",
    graph.TOPIC_WORLD_CAUGHT: "std_msgs/msg/Bool",
    graph.TOPIC_DIAGNOSTICS: "diagnostic_msgs/msg/DiagnosticArray",
}
OPTIONAL_TOPICS = {graph.TOPIC_WORLD_IMAGE: "sensor_msgs/msg/Image", graph.TOPIC_SNN_BOX: _BOX}
# the topics carrying every SNN / fused box
SNN_TOPIC = graph.TOPIC_SNN_BOXES
FUSED_TOPIC = graph.TOPIC_FUSED_BOXES
# What a DAVIS camera (or the simulator) publishes: the input side of the tracking graph.
SENSOR_TOPICS = (graph.TOPIC_EVENTS, graph.TOPIC_IMAGE, graph.TOPIC_CAMERA_INFO, graph.TOPIC_GROUND_TRUTH)
# Topics published with sensor-data QoS (best effort) in the graph.
BEST_EFFORT_TOPICS = frozenset((graph.TOPIC_EVENTS, graph.TOPIC_IMAGE, graph.TOPIC_CAMERA_INFO,
                                graph.TOPIC_WORLD_IMAGE))


# --------------------------------------------------------------------------- types

def msg_dir() -> str:
    """The folder holding our ``*.msg`` files: the source tree's ``msg/``, else the
    installed ``share/dashnet_ros/msg``."""
    here = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "msg")
    if glob.glob(os.path.join(here, "*.msg")):
        return here
    try:
        from ament_index_python.packages import get_package_share_directory

        d = os.path.join(get_package_share_directory(MSG_PACKAGE), "msg")
        if glob.glob(os.path.join(d, "*.msg")):
            return d
    except Exception:  # noqa: BLE001 - not installed / AMENT_PREFIX_PATH unset
        pass
    raise FileNotFoundError(f"cannot find the {MSG_PACKAGE} msg/*.msg files (looked in {here} and the "
                            "ament share directory): run from the repository or source install/setup.bash")


_TYPESTORE = None


def typestore():
    """A ``rosbags`` type store: ROS 2 Kilted's types plus ours, parsed from ``msg/*.msg``."""
    global _TYPESTORE
    if _TYPESTORE is None:
        from rosbags.typesys import Stores, get_types_from_msg, get_typestore

        store = get_typestore(Stores.ROS2_KILTED)
        types = {}
        for path in sorted(glob.glob(os.path.join(msg_dir(), "*.msg"))):
            name = os.path.splitext(os.path.basename(path))[0]
            types.update(get_types_from_msg(Path(path).read_text(), f"{MSG_PACKAGE}/msg/{name}"))
        store.register(types)
        _TYPESTORE = store
    return _TYPESTORE


def msg_class(type_name: str):
    """The rclpy message class for ``pkg/msg/Name`` (or ``pkg/Name``)."""
    parts = type_name.split("/")
    if len(parts) == 2:
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"message type {type_name!r} is not of the form package/msg/Name")
    try:
        return getattr(importlib.import_module(f"{parts[0]}.{parts[1]}"), parts[2])
    except (ImportError, AttributeError) as e:
        raise ValueError(f"message type {type_name!r} is not available to rclpy ({e}); for {MSG_PACKAGE} "
                         "types source install/setup.bash") from None


# --------------------------------------------------------------------------- writing

def _offered_qos(topic: str):
    """The QoS the graph publishes ``topic`` with, as stored in the bag's metadata (what
    ``ros2 bag play`` offers on replay): best effort for the sensor streams, else reliable."""
    from rosbags.interfaces import (Qos, QosDurability, QosHistory, QosLiveliness, QosReliability,
                                    QosTime)

    zero = QosTime(0, 0)  # unspecified = the middleware default (infinite)
    rel = QosReliability.BEST_EFFORT if topic in BEST_EFFORT_TOPICS else QosReliability.RELIABLE
    return Qos(QosHistory.KEEP_LAST, 100, rel, QosDurability.VOLATILE, zero, zero, QosLiveliness.AUTOMATIC,
               zero, False)


class BagWriter:
    """Write a rosbag2 bag (MCAP, version 9) at ``path`` (a directory that must not exist).

    ``compress``: zstd-compressed MCAP chunks (read by ``ros2 bag`` and rosbags; event
    packets shrink about 3x).  The bag is written in a hidden temporary folder beside
    ``path`` and moved into place by :meth:`close`; :meth:`abort` (or an exception in a
    ``with`` block) removes it.  ``custom_data`` ends up in ``metadata.yaml``.
    """

    def __init__(self, path: str, *, compress: bool = True, custom_data: Optional[dict] = None):
        from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer

        self.path = os.path.abspath(path)
        if os.path.exists(self.path):
            raise FileExistsError(f"bag {self.path} exists already: remove it or choose another path")
        parent, name = os.path.split(self.path)
        os.makedirs(parent, exist_ok=True)
        self._tmp = tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=parent)
        self._writer = Writer(Path(self._tmp) / name, version=9, storage_plugin=StoragePlugin.MCAP)
        if compress:
            self._writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
        for k, v in (custom_data or {}).items():
            self._writer.set_custom_data(str(k), str(v))
        self._writer.open()
        self._conns = {}
        self.counts: dict[str, int] = {}
        self.closed = False

    def add_topic(self, topic: str, msgtype: str):
        """Declare ``topic`` of ``msgtype`` (``pkg/msg/Name``); idempotent."""
        conn = self._conns.get(topic)
        if conn is None:
            store = typestore()
            if msgtype not in store.fielddefs:
                raise ValueError(f"unknown message type {msgtype!r} for topic {topic} (not in the ROS 2 Kilted "
                                 f"type store nor msg/)")
            conn = self._writer.add_connection(topic, msgtype, typestore=store,
                                               offered_qos_profiles=[_offered_qos(topic)])
            self._conns[topic] = conn
            self.counts[topic] = 0
        elif conn.msgtype != msgtype:
            raise ValueError(f"topic {topic} was declared as {conn.msgtype}, not {msgtype}")
        return conn

    def write(self, topic: str, t_ns: int, data) -> None:
        """Append one CDR-serialised message (``bytes``) logged at ``t_ns`` (declare the topic first)."""
        conn = self._conns.get(topic)
        if conn is None:
            raise KeyError(f"topic {topic} was not declared with add_topic()")
        self._writer.write(conn, int(t_ns), bytes(data))
        self.counts[topic] += 1

    def write_msg(self, topic: str, t_ns: int, msg, msgtype: Optional[str] = None) -> None:
        """Serialise an rclpy message with rclpy (the wheels' own CDR) and append it."""
        from rclpy.serialization import serialize_message

        if msgtype is not None:
            self.add_topic(topic, msgtype)
        self.write(topic, t_ns, serialize_message(msg))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._writer.close()
        os.replace(os.path.join(self._tmp, os.path.basename(self.path)), self.path)
        shutil.rmtree(self._tmp, ignore_errors=True)

    def abort(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self._writer.abort()
        finally:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            self.close()
        else:
            self.abort()


# --------------------------------------------------------------------------- reading

@dataclass(frozen=True)
class BagMessage:
    """One stored message: ``t_ns`` is its log (reception) time, ``data`` the CDR bytes."""

    topic: str
    msgtype: str
    t_ns: int
    data: bytes


def _open_reader(path: str):
    from rosbags.rosbag2 import Reader, ReaderError

    if not os.path.isdir(path):
        raise FileNotFoundError(f"bag {path} not found (a rosbag2 bag is a directory with metadata.yaml)")
    if not os.path.isfile(os.path.join(path, "metadata.yaml")):
        raise FileNotFoundError(f"{path} has no metadata.yaml: not a rosbag2 bag, or its recording did not "
                                "finish (the recorder writes it on close)")
    reader = Reader(path)
    try:
        reader.open()
    except ReaderError as e:
        raise ValueError(f"cannot read bag {path}: {e}") from None
    return reader


def read_bag(path: str, topics: Optional[Iterable[str]] = None) -> Iterator[BagMessage]:
    """The bag's messages (optionally only ``topics``) in log-time order."""
    reader = _open_reader(path)
    try:
        conns = reader.connections
        if topics is not None:
            want = set(topics)
            missing = want - {c.topic for c in conns}
            if missing:
                raise ValueError(f"bag {path} has no topic(s) {', '.join(sorted(missing))} "
                                 f"(it has {', '.join(sorted({c.topic for c in conns}))})")
            conns = [c for c in conns if c.topic in want]
        if not conns:
            return
        _check_our_types(path, conns)
        for conn, t_ns, data in reader.messages(connections=conns):
            yield BagMessage(conn.topic, conn.msgtype, int(t_ns), bytes(data))
    finally:
        reader.close()


def _check_our_types(path: str, conns) -> None:
    """Refuse topics of our own message types recorded with another definition (an older
    or newer dashnet_ros): their bytes would decode as garbage.  Bags without type hashes
    are read as they are."""
    store = typestore()
    for c in conns:
        if c.msgtype.startswith(MSG_PACKAGE + "/") and c.digest and c.msgtype in store.fielddefs:
            ours = store.hash_rihs01(c.msgtype)
            if c.digest != ours:
                raise ValueError(
                    f"bag {path}: topic {c.topic} holds {c.msgtype} with type hash {c.digest}, but this "
                    f"dashnet_ros defines it with {ours} (the message changed since the bag was recorded: "
                    f"read it with the version that wrote it, or record it again)")


def bag_info(path: str) -> dict:
    """Summary: duration, start, message count, topics (type, count, type hash), storage."""
    reader = _open_reader(path)
    try:
        topics = {}
        for c in reader.connections:
            t = topics.setdefault(c.topic, {"type": c.msgtype, "count": 0, "type_hash": c.digest})
            t["count"] += c.msgcount
        from ruamel.yaml import YAML  # YAML 1.2, as rosbag2 writes it ('yes' stays a string)

        with open(os.path.join(path, "metadata.yaml")) as f:
            meta = (YAML(typ="safe").load(f) or {}).get("rosbag2_bagfile_information", {})
        return {
            "path": os.path.abspath(path),
            "storage": meta.get("storage_identifier"),
            "version": meta.get("version"),
            "ros_distro": meta.get("ros_distro"),
            "duration_s": reader.duration / 1e9 if reader.message_count else 0.0,
            "start_ns": reader.start_time if reader.message_count else None,
            "messages": reader.message_count,
            "chunk_compression": sorted({c.compression or "none" for st in getattr(reader.storage, "storages", [])
                                         for c in getattr(st, "chunks", [])}),
            "custom_data": dict(meta.get("custom_data") or {}),
            "topics": topics,
            "size_bytes": sum(os.path.getsize(f) for f in glob.glob(os.path.join(path, "*")) if os.path.isfile(f)),
        }
    finally:
        reader.close()


def deserialize(m: BagMessage):
    """A stored message as the rosbags dataclass (no rclpy needed)."""
    return typestore().deserialize_cdr(m.data, m.msgtype)


def to_rclpy(m: BagMessage):
    """A stored message as the rclpy message (deserialised by the ROS 2 wheels)."""
    from rclpy.serialization import deserialize_message

    return deserialize_message(m.data, msg_class(m.msgtype))


def boxes_of(path: str, topic: str):
    """``(t_us[N] int64, boxes[N, 4] float32, score[N] float32)`` of a TrackedBox or
    TrackedBoxArray topic in the order recorded (invalid boxes NaN); needs no rclpy."""
    return box_track(deserialize(m) for m in read_bag(path, [topic]))


# --------------------------------------------------------------------------- recording (rclpy)

def _qos_for(topic: str, depth: int):
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    q = QoSProfile(depth=depth)
    # best effort subscriptions match both kinds of publisher; reliable ones keep the
    # reliably published (low-rate) topics complete under load
    q.reliability = ReliabilityPolicy.BEST_EFFORT if topic in BEST_EFFORT_TOPICS else ReliabilityPolicy.RELIABLE
    return q


class BagRecorder:
    """Record ``topics`` (name -> type) seen by ``node`` into ``writer``.

    Subscriptions are raw (the CDR bytes are stored as received, no deserialisation);
    each message is logged at its DDS reception time.  Call :meth:`close` to finish the bag.
    """

    def __init__(self, node, writer: BagWriter, topics: Optional[dict] = None, depth: int = 1000):
        self.node, self.writer = node, writer
        self.topics = dict(GRAPH_TOPICS if topics is None else topics)
        self.subs = []
        for topic, msgtype in self.topics.items():
            writer.add_topic(topic, msgtype)
            self.subs.append(node.create_subscription(msg_class(msgtype), topic, self._callback(topic),
                                                      _qos_for(topic, depth), raw=True))

    def _callback(self, topic: str):
        write = self.writer.write

        def on_message(data, info):
            t = info.get("received_timestamp") or time.time_ns()
            write(topic, t, data)
        return on_message

    @property
    def counts(self) -> dict:
        return dict(self.writer.counts)

    def close(self) -> None:
        for s in self.subs:
            self.node.destroy_subscription(s)
        self.subs = []
        self.writer.close()


# --------------------------------------------------------------------------- playback (rclpy)

class BagPlayer:
    """Publish a bag's messages on ``node`` with their recorded relative timing.

    ``rate``: playback speed (2 = twice as fast; 0 = as fast as possible).  ``loop``:
    start again at the end (each pass restarts the timing; the messages' sensor stamps
    then jump back, which the graph's nodes handle as a restart).  ``topics``: the
    topics to publish (default all); ``remap``: {bag topic: published topic}.
    Messages are published as the stored CDR bytes.
    """

    def __init__(self, node, path: str, *, topics: Optional[Iterable[str]] = None, rate: float = 1.0,
                 loop: bool = False, remap: Optional[dict] = None, depth: int = 1000):
        if not rate >= 0:
            raise ValueError(f"rate must be >= 0 (0 = as fast as possible), got {rate}")
        self.node, self.path, self.rate, self.loop = node, path, float(rate), bool(loop)
        info = bag_info(path)
        self.topics = list(info["topics"]) if topics is None else list(topics)
        missing = set(self.topics) - set(info["topics"])
        if missing:
            raise ValueError(f"bag {path} has no topic(s) {', '.join(sorted(missing))}")
        self.info = info
        self.remap = dict(remap or {})
        self.pubs = {}
        for t in self.topics:
            out = self.remap.get(t, t)
            self.pubs[t] = node.create_publisher(msg_class(info["topics"][t]["type"]), out, _qos_for(out, depth))
        self.published = 0
        self.passes = 0

    def wait_for_subscribers(self, timeout_s: float, spin: Optional[Callable[[], None]] = None) -> bool:
        """Wait (wall time) until every publisher has a subscriber; True if they all have."""
        t_end = time.monotonic() + timeout_s
        while True:
            if all(p.get_subscription_count() > 0 for p in self.pubs.values()):
                return True
            if time.monotonic() >= t_end:
                return False
            if spin:
                spin()
            else:
                time.sleep(0.02)

    def play(self, stop: Optional[Callable[[], bool]] = None, on_message: Optional[Callable] = None,
             progress=None) -> int:
        """Publish until the end (or forever with ``loop``, or until ``stop()`` is true);
        returns the number of messages published.  ``on_message(BagMessage, wall_s)`` is
        called after each publish (tests use it to check the timing)."""
        from ..timing import Pacer

        pacer = Pacer(self.rate)
        total = sum(self.info["topics"][t]["count"] for t in self.topics)
        while True:
            pacer.reset()
            n = 0
            for m in read_bag(self.path, self.topics):
                if stop is not None and stop():
                    return self.published
                pacer.wait_until(m.t_ns // 1000)
                self.pubs[m.topic].publish(m.data)
                self.published += 1
                n += 1
                if on_message is not None:
                    on_message(m, time.monotonic())
                if progress:
                    progress(n, total)
            self.passes += 1
            if not self.loop or n == 0:
                return self.published


# --------------------------------------------------------------------------- deterministic replay

class _Wire:
    """Zero-latency message passing between in-process nodes: every published message is
    queued, and the queue is delivered in publish order to the current subscriptions on
    its topic, each callback running to completion (as one executor would, with no
    transport delay).  Every message is also logged per topic."""

    def __init__(self, nodes, deliver_outputs: bool, trace: Optional[Callable] = None):
        self.nodes = nodes
        self.deliver_outputs = deliver_outputs
        self.trace = trace
        self.queue = deque()
        self.log: dict[str, list] = {}
        for n in nodes:
            for p in n.publishers:
                p.publish = self._sender(p.topic_name)
                # nodes that publish some outputs only while someone listens (the per-window
                # single boxes, the fused arrays) publish all of them here: pure outputs, the
                # nodes' state does not depend on it
                p.get_subscription_count = lambda: 1

    def _sender(self, topic):
        def publish(msg):
            self.log.setdefault(topic, []).append(msg)
            if self.deliver_outputs:
                self.queue.append((topic, msg))
        return publish

    def deliver(self, topic: str, msg) -> None:
        self.queue.append((topic, msg))
        while self.queue:
            t, m = self.queue.popleft()
            if self.trace is not None:
                self.trace(t, m)
            for cb in [s.callback for n in self.nodes for s in n.subscriptions if s.topic_name == t]:
                cb(m)


TRACKER_NODES = ("snn_tracker", "ann_tracker", "fuser")


def replay_deterministic(path: str, *, mode: str = "closed", launch_args: Optional[dict] = None,
                         nodes: Iterable[str] = TRACKER_NODES, progress=None,
                         trace: Optional[Callable] = None, ground_truth_from_us: Optional[int] = None) -> dict:
    """Drive the tracker nodes (their own classes and code) with a bag, deterministically.

    The nodes are built in this process with exactly the parameters, parameter files and
    remappings ``dashnet launch tracking`` gives them (``launch_args``: e.g. the weights),
    but instead of DDS a :class:`_Wire` passes the messages: the bag's messages are
    delivered in log-time order, and everything a node publishes is delivered before the
    next bag message.  The result is a function of the bag alone.

    ``mode``:

    - ``"closed"``: only the sensor topics (events, APS images, camera info, ground truth)
      come from the bag; the nodes feed each other (SNN/ANN -> fuser -> attention and
      search-region feedback) -- the graph with zero transport and compute latency;
    - ``"forced"``: every node gets its recorded inputs from the bag -- the SNN the
      events and the *recorded* fused boxes, the ANN the images and the recorded fused
      boxes, the fuser the *recorded* SNN and ANN boxes -- in the order the recorder
      received them; their outputs are not fed back.  When the recorder saw each node's
      inputs in the order that node did, this reproduces the recorded outputs exactly.
      That order is not recorded: where two inputs of a node (an event packet and a
      fused box for the SNN) arrived within about a millisecond, the node may have taken
      them the other way round, and from there a stateful node (the SNN) differs.

    ``ground_truth_from_us``: deliver only ground-truth boxes stamped at or after this
    sensor time.  A live node initialises from the first ground-truth box *it* received;
    when its subscription was matched late (discovery under load) that is a later box than
    the bag's first, and the replay must start from the same one.

    Returns ``{topic: [rclpy messages]}`` of what the nodes published.  ``trace(topic,
    msg)`` is called for every delivered message, in delivery order.
    """
    import sys

    import rclpy
    from rclpy.serialization import deserialize_message

    from ..commands import launch as launch_cmd
    from .ros_msgs import stamp_to_us

    if mode not in ("closed", "forced"):
        raise ValueError(f"mode must be 'closed' or 'forced', got {mode!r}")
    nodes = tuple(nodes)
    unknown = set(nodes) - set(TRACKER_NODES)
    if unknown:
        raise ValueError(f"replay_deterministic runs {', '.join(TRACKER_NODES)}; not {', '.join(sorted(unknown))}")
    args = dict(launch_args or {})
    args.update(use_simulator="false", closed_loop="false", tracking="true")
    cmds = {s.name: c for s, c in graph.node_commands(sys.executable, launch_cmd.config_dir(), args)}
    ctx = rclpy.Context()
    rclpy.init(context=ctx, args=[])
    built = []
    try:
        for name in nodes:
            spec = next(s for s in graph.NODES if s.name == name)
            mod = importlib.import_module(f"{graph.PACKAGE}.nodes.{spec.executable}")
            cls = next(v for k, v in vars(mod).items() if k.endswith("Node") and isinstance(v, type)
                       and getattr(v, "__module__", "") == mod.__name__)
            cli = cmds[name][cmds[name].index("--ros-args"):]
            built.append(cls(context=ctx, cli_args=cli))
        subscribed = {s.topic_name for n in built for s in n.subscriptions}
        # the ground truth is subscribed only until the first box arrives (InitialBox)
        subscribed.add(graph.TOPIC_GROUND_TRUTH)
        info = bag_info(path)
        wire = _Wire(built, deliver_outputs=(mode == "closed"), trace=trace)
        produced = {p.topic_name for n in built for p in n.publishers}
        if mode == "closed":
            feed = [t for t in info["topics"] if t in subscribed and t not in produced]
        else:
            feed = [t for t in info["topics"] if t in subscribed]
        classes = {t: msg_class(info["topics"][t]["type"]) for t in feed}
        total = sum(info["topics"][t]["count"] for t in feed)
        for i, m in enumerate(read_bag(path, feed)):
            msg = deserialize_message(m.data, classes[m.topic])
            if (ground_truth_from_us is not None and m.topic == graph.TOPIC_GROUND_TRUTH
                    and stamp_to_us(msg.header.stamp) < ground_truth_from_us):
                continue
            wire.deliver(m.topic, msg)
            if progress:
                progress(i + 1, total)
        return wire.log
    finally:
        for n in built:
            n.destroy_node()
        ctx.try_shutdown()


def box_track(msgs) -> tuple:
    """``(t_us[N], boxes[N, 4], score[N])`` from TrackedBox (or TrackedBoxArray: flattened)
    messages, rclpy or rosbags ones (invalid -> NaN)."""
    from .ros_msgs import box_batch

    batches = [box_batch(m) for m in msgs]
    if not batches:
        return np.zeros(0, np.int64), np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
    return (np.concatenate([b.t_us for b in batches]), np.concatenate([b.boxes for b in batches]),
            np.concatenate([b.scores for b in batches]))


def compare_tracks(ref, other) -> dict:
    """Agreement of two box tracks ``(t_us, boxes[, score])`` on their common stamps:
    ``matched`` stamps, ``exact`` fraction (boxes bitwise equal, NaN = NaN),
    ``identical_prefix`` (common stamps before the first difference), ``mean_iou``,
    ``max_abs_px`` and the stamps only one side has."""
    from ..boxes import iou

    t1, b1 = np.asarray(ref[0]), np.asarray(ref[1], np.float32)
    t2, b2 = np.asarray(other[0]), np.asarray(other[1], np.float32)
    # the first occurrence of each stamp (a restart may repeat stamps)
    _, i1 = np.unique(t1, return_index=True)
    _, i2 = np.unique(t2, return_index=True)
    common, j1, j2 = np.intersect1d(t1[i1], t2[i2], return_indices=True)
    a, b = b1[i1][j1], b2[i2][j2]
    if len(common) == 0:
        return {"matched": 0, "exact": 0.0, "identical_prefix": 0, "mean_iou": float("nan"),
                "max_abs_px": float("nan"),
                "only_ref": int(len(i1)), "only_other": int(len(i2))}
    same = np.all((a == b) | (np.isnan(a) & np.isnan(b)), axis=1)
    first_diff = int(np.argmin(same)) if not same.all() else len(same)
    ok = np.all(np.isfinite(a), axis=1) & np.all(np.isfinite(b), axis=1)
    ious = iou(a[ok], b[ok])
    diff = np.abs(a[ok] - b[ok])
    return {
        "matched": int(len(common)),
        "exact": float(same.mean()),
        "identical_prefix": first_diff,
        "mean_iou": float(ious.mean()) if len(ious) else float("nan"),
        "max_abs_px": float(diff.max()) if diff.size else 0.0,
        "only_ref": int(len(i1) - len(common)),
        "only_other": int(len(i2) - len(common)),
    }
