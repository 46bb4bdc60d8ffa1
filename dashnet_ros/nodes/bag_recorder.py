"""``bag_recorder`` node: record the graph's topics into a rosbag2 (MCAP) bag with ``rosbags``
(:mod:`dashnet_ros.io.bags`), without the ROS 2 bag tools.

Subscriptions are raw (messages are stored as received, CDR bytes), logged at their DDS
reception time; the bag is finished (``metadata.yaml`` written, temporary folder moved to
``path``) when the node shuts down (Ctrl-C / SIGINT / SIGTERM).  Started by the graph with
``record:=true bag_path:=DIR``.
"""
from __future__ import annotations

import time

from rclpy.node import Node

from .common import Param, declare, positive, run_node

PARAMS = (
    Param("path", "", "bag directory to create (must not exist); '' = out/bags/tracking_<date>_<time>"),
    Param("topics", "", "comma-separated topics to record ('' = the graph's topics, see "
                        "dashnet_ros.io.bags.GRAPH_TOPICS); a topic not in the graph is written name:pkg/msg/Type"),
    Param("compress", True, "zstd-compressed MCAP chunks"),
    Param("depth", 1000, "subscription queue depth", positive),
)


def parse_topics(text: str) -> dict:
    """'' -> the graph's topics; 'a,b:pkg/msg/T' -> {a: its graph type, b: pkg/msg/T}."""
    from ..io import bags

    if not text.strip():
        return dict(bags.GRAPH_TOPICS)
    known = {**bags.GRAPH_TOPICS, **bags.OPTIONAL_TOPICS}
    out = {}
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        name, _, msgtype = item.partition(":")
        if not msgtype:
            if name not in known:
                raise ValueError(f"topic {name!r} is not one of the graph's; give its type as {name}:pkg/msg/Type")
            msgtype = known[name]
        out[name] = msgtype
    if not out:
        raise ValueError(f"no topics in {text!r}")
    return out


class BagRecorderNode(Node):
    def __init__(self, **kw):
        super().__init__("bag_recorder", **kw)
        from ..io import bags

        p = self.p = declare(self, PARAMS)
        path = p["path"] or time.strftime("out/bags/tracking_%Y%m%d_%H%M%S")
        topics = parse_topics(p["topics"])
        self.writer = bags.BagWriter(path, compress=p["compress"], custom_data={"recorded_by": "dashnet bag_recorder"})
        self.recorder = bags.BagRecorder(self, self.writer, topics, depth=p["depth"])
        self.get_logger().info(f"recording {len(topics)} topics to {self.writer.path}")

    def close(self) -> None:
        self.recorder.close()
        counts = ", ".join(f"{t} {n}" for t, n in self.recorder.counts.items() if n)
        self.get_logger().info(f"bag {self.writer.path} written ({counts or 'no messages'})")


def main(args=None) -> int:
    return run_node(BagRecorderNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
