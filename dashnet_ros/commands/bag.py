"""``dashnet bag record|play|info|replay``: rosbag2 (MCAP) bags of the graph's topics,
without the ROS 2 bag tools (:mod:`dashnet_ros.io.bags`, the ``rosbags`` library).

- ``record OUT``: subscribe to the graph's topics (or ``--topics``) and write a bag until
  Ctrl-C or ``--duration-s`` of wall time;
- ``play BAG``: publish a bag's messages with the recorded timing (``--rate``,
  ``--loop``; ``--sensor`` = only the DAVIS topics, to feed ``dashnet launch tracking
  use_simulator:=false``);
- ``info BAG``: topics, types, counts, duration, type hashes;
- ``replay BAG``: deterministic replay through the tracker nodes' own code (no DDS, see
  :func:`dashnet_ros.io.bags.replay_deterministic`) and agreement with the recorded boxes.

The bags are ordinary rosbag2 directories: ``ros2 bag info`` / ``ros2 bag play`` read them.
"""
from __future__ import annotations

import json
import os
import sys
import time

from ..cli import UserError


def _ros_env():
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")


def _parse_topics(text):
    from ..nodes.bag_recorder import parse_topics

    try:
        return parse_topics(text or "")
    except ValueError as e:
        raise UserError(str(e)) from None


def run_record(args) -> int:
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.node import Node

    from ..io import bags
    from ..nodes.common import StopOnSignals, spin_until

    topics = _parse_topics(args.topics)
    if args.with_world_image:
        topics.update(bags.OPTIONAL_TOPICS)
    _ros_env()
    try:
        writer = bags.BagWriter(args.out, compress=not args.no_compress, custom_data={"recorded_by": "dashnet bag record"})
    except FileExistsError as e:
        raise UserError(str(e)) from None
    rclpy.init(args=[])
    node = Node("dashnet_bag_record")
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    rec = bags.BagRecorder(node, writer, topics)
    print(f"recording {len(topics)} topics to {writer.path}; Ctrl-C stops", file=sys.stderr)
    t_end = time.monotonic() + args.duration_s if args.duration_s > 0 else None
    try:
        with StopOnSignals() as signals:      # Ctrl-C between callbacks, never inside a write
            spin_until(ex, signals.stop, t_end)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        rec.close()
        node.destroy_node()
        ex.shutdown()
        rclpy.try_shutdown()
    counts = {t: n for t, n in rec.counts.items() if n}
    print(f"wrote {writer.path}: " + (", ".join(f"{t} {n}" for t, n in counts.items()) or "no messages"))
    return 0


def run_play(args) -> int:
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.node import Node

    from ..io import bags

    topics = None
    if args.sensor:
        topics = [t for t in bags.SENSOR_TOPICS if t in _info(args.bag)["topics"]]
    if args.topics:
        topics = [t.strip() for t in args.topics.split(",") if t.strip()]
    _ros_env()
    rclpy.init(args=[])
    node = Node("dashnet_bag_play")
    player = None
    try:
        try:
            player = bags.BagPlayer(node, args.bag, topics=topics, rate=args.rate, loop=args.loop)
        except (ValueError, FileNotFoundError) as e:
            raise UserError(str(e)) from None
        if args.wait_s > 0 and not player.wait_for_subscribers(args.wait_s):
            idle = [t for t, p in player.pubs.items() if p.get_subscription_count() == 0]
            print(f"no subscriber (yet) on {', '.join(idle)}; playing anyway", file=sys.stderr)
        from tqdm import tqdm

        with tqdm(total=None, unit="msg", desc="playing", leave=False, disable=args.quiet) as bar:
            n = player.play(progress=lambda done, total: bar.update(1))
        print(f"published {n} messages in {player.passes} pass(es)")
    except (KeyboardInterrupt, ExternalShutdownException):
        print(f"stopped after {player.published if player else 0} messages", file=sys.stderr)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def _info(path):
    from ..io import bags

    try:
        return bags.bag_info(path)
    except (FileNotFoundError, ValueError) as e:
        raise UserError(str(e)) from None


def run_info(args) -> int:
    info = _info(args.bag)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    start = info["start_ns"]
    print(f"bag:       {info['path']}  ({info['storage']}, version {info['version']}, "
          f"{info['size_bytes'] / 1e6:.1f} MB, chunks {'/'.join(info['chunk_compression']) or '-'})")
    print(f"duration:  {info['duration_s']:.3f} s (log time)" +
          (f", start {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(start / 1e9))}" if start else ""))
    print(f"messages:  {info['messages']}")
    w = max((len(t) for t in info["topics"]), default=5)
    for t, v in info["topics"].items():
        print(f"  {t:<{w}}  {v['count']:>8}  {v['type']}  {v['type_hash']}")
    if info["custom_data"]:
        print("custom data: " + ", ".join(f"{k}={v}" for k, v in info["custom_data"].items()))
    return 0


def _demo_settings(bag: str) -> dict:
    """The settings of the ``dashnet demo`` run that wrote ``bag`` (its summary.json), if any."""
    path = os.path.join(os.path.dirname(os.path.abspath(bag)), "summary.json")
    try:
        with open(path) as f:
            return dict(json.load(f).get("settings") or {})
    except (OSError, ValueError, AttributeError):
        return {}


def run_replay(args) -> int:
    from tqdm import tqdm

    from ..io import bags

    info = _info(args.bag)
    _ros_env()
    launch_args = {}
    recorded = _demo_settings(args.bag)
    for kind in ("snn", "ann"):
        w = getattr(args, f"{kind}_weights") or recorded.get(f"{kind}_weights")
        if w:
            launch_args[f"{kind}_weights"] = os.path.abspath(w)
            print(f"{kind.upper()} weights: {w}", file=sys.stderr)
    with tqdm(total=None, unit="msg", desc=f"replay ({args.mode})", leave=False) as bar:
        try:
            out = bags.replay_deterministic(args.bag, mode=args.mode, launch_args=launch_args,
                                            progress=lambda done, total: bar.update(done - bar.n))
        except (ValueError, FileNotFoundError) as e:
            raise UserError(str(e)) from None
    report = {"bag": info["path"], "mode": args.mode, "topics": {}}
    for topic in dict.fromkeys((bags.SNN_TOPIC, bags.graph.TOPIC_ANN_BOX, bags.FUSED_TOPIC, bags.graph.TOPIC_FUSED_BOX)):
        mine = bags.box_track(out.get(topic, []))
        entry = {"replayed": int(len(mine[0]))}
        if topic in info["topics"]:
            entry.update(bags.compare_tracks(bags.boxes_of(args.bag, topic), mine))
        report["topics"][topic] = entry
        if "matched" in entry:
            print(f"{topic}: {entry['replayed']} boxes, {entry['matched']} stamps also recorded: "
                  f"{100 * entry['exact']:.1f}% identical (the first {entry['identical_prefix']} all), "
                  f"mean IoU {entry['mean_iou']:.4f}, "
                  f"max difference {entry['max_abs_px']:.3g} px")
        else:
            print(f"{topic}: {entry['replayed']} boxes (none recorded)")
    if args.out:
        tmp = args.out + ".partial"
        with open(tmp, "w") as f:
            json.dump(report, f, indent=2)
        os.replace(tmp, args.out)
    return 0


def add_parser(sub):
    p = sub.add_parser("bag", help="record / play / inspect / replay rosbag2 (MCAP) bags of the graph",
                       description=__doc__)
    s = p.add_subparsers(dest="bag_command", required=True, metavar="SUBCOMMAND")

    r = s.add_parser("record", help="record the graph's topics into a new bag")
    r.add_argument("out", help="bag directory to create (must not exist)")
    r.add_argument("--topics", default="", help="comma-separated topics (default: the graph's); "
                                                "a topic outside the graph as name:pkg/msg/Type")
    r.add_argument("--with-world-image", action="store_true", help="also record /world/image_raw (240 fps)")
    r.add_argument("--duration-s", type=float, default=0.0, help="stop after this wall time (0 = Ctrl-C)")
    r.add_argument("--no-compress", action="store_true", help="no zstd chunk compression")
    r.set_defaults(func=run_record)

    pl = s.add_parser("play", help="publish a bag with its recorded timing")
    pl.add_argument("bag")
    pl.add_argument("--rate", type=float, default=1.0, help="speed factor (0 = as fast as possible)")
    pl.add_argument("--loop", action="store_true", help="start again at the end (until Ctrl-C)")
    pl.add_argument("--topics", default="", help="comma-separated topics to publish (default all)")
    pl.add_argument("--sensor", action="store_true",
                    help="only the DAVIS topics (events, image, camera info, ground truth): to drive "
                         "`dashnet launch tracking use_simulator:=false`")
    pl.add_argument("--wait-s", type=float, default=2.0, help="wait up to this long for subscribers first")
    pl.add_argument("--quiet", action="store_true", help="no progress bar")
    pl.set_defaults(func=run_play)

    i = s.add_parser("info", help="summary of a bag")
    i.add_argument("bag")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=run_info)

    rp = s.add_parser("replay", help="deterministic replay through the tracker nodes; compare with the recording")
    rp.add_argument("bag")
    rp.add_argument("--mode", choices=["closed", "forced"], default="forced",
                    help="forced: each node gets its recorded inputs (reproduces the recording); closed: only the "
                         "sensor topics, the nodes feed each other (zero-latency graph)")
    rp.add_argument("--snn-weights", default=None,
                    help="SNN weights (default: those of the demo run that wrote the bag, from summary.json "
                         "beside it, else the shipped ones)")
    rp.add_argument("--ann-weights", default=None, help="ANN weights (default: as --snn-weights)")
    rp.add_argument("--out", default=None, help="write the comparison as JSON here")
    rp.set_defaults(func=run_replay)
