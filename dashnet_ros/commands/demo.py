"""``dashnet demo``: the closed loop -- a predator robot chasing the prey in the procedural
world, steered by DashNet's fused box -- run as the ROS 2 node graph for a bounded
sensor time, with a live status line.

The graph is the one ``dashnet launch tracking closed_loop:=true`` starts
(:mod:`dashnet_ros.graph`, started with :func:`dashnet_ros.commands.launch.start`), in two
steps: first the DAVIS simulator (reading the world's camera topic, as closed_loop makes
it do), the trackers, the fuser, the steering and the bag recorder; then -- once they are
subscribed -- the world, whose clock starts when the simulator listens, so the trackers
and this monitor see the stream from its first frame.  This process runs the ``monitor`` node
(:mod:`dashnet_ros.nodes.monitor`), which prints a status line every second (topic rates
in sensor-time Hz, event->box latency, IoU against the world's ground truth, distance).

The run ends when the fused boxes reach ``--duration-s`` of sensor time, or shortly after
the prey is caught (``--stop-on-catch``).  Under ``--out`` it writes:

- ``demo.mp4``: the APS frames with the events of the last 5 ms (red ON, blue OFF) and
  the ground-truth (red), SNN (blue), ANN (yellow) and fused (green) boxes, 60 frames
  per second of sensor time;
- ``summary.json``: rates, latency and lag percentiles, mean IoU (fused, SNN, ANN),
  start / final / minimum distance, caught, time to catch, and the settings;
- ``bag/`` (``--record``, the default): the rosbag2 (MCAP) recording of the graph's
  topics (``dashnet bag info|play|replay``, ``ros2 bag info``);
- ``graph.log``: the nodes' output.

The graph runs slower than real time on small machines: ``--realtime-factor`` is sensor
time per wall time (default 0.1 keeps up on 2 shared CPU cores; see README).  All reported
times are sensor time except the latency (wall time).
"""
from __future__ import annotations

import argparse
import bisect
import json
import os
import shutil
import subprocess
import time

import numpy as np

from .. import graph
from ..cli import UserError

TAIL_AFTER_CATCH_S = 0.3
READY_TIMEOUT_S = 180.0
NO_EVENTS_TIMEOUT_S = 90.0
# (topics, node): the node subscribed to one of the topics means the tracking side is up
READY_SUBSCRIPTIONS = (
    ((graph.TOPIC_WORLD_IMAGE,), "davis"),
    ((graph.TOPIC_WORLD_GROUND_TRUTH,), "davis"),
    ((graph.TOPIC_EVENTS,), "snn_tracker"),
    ((graph.TOPIC_IMAGE,), "ann_tracker"),
    ((graph.TOPIC_SNN_BOXES, graph.TOPIC_SNN_BOX), "fuser"),   # as its snn_input parameter says
    ((graph.TOPIC_FUSED_BOX,), "steering"),
)


def weights_or_error(snn_weights: str | None, ann_weights: str | None) -> tuple[str, str]:
    """The weight files to use; a :class:`UserError` saying how to get them if missing."""
    from ..tracking import default_weights

    out = []
    for kind, given in (("snn", snn_weights), ("ann", ann_weights)):
        path = given or default_weights(kind)
        if not os.path.isfile(path):
            if given:
                raise UserError(f"--{kind}-weights {given}: no such file")
            raise UserError(
                f"the shipped {kind.upper()} weights {path} are missing.  Train them with "
                "`sh dashnet_ros/train/reproduce.sh` (procedural data, CPU; it writes dashnet_ros/weights/"
                "snn_fast.pt, ann_fast.pt, ann_nat_fast.pt), or pass --snn-weights/--ann-weights")
        out.append(os.path.abspath(path))
    return out[0], out[1]


def _log_tail(path: str, n: int = 3000) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()[-n:]
    except OSError:
        return ""


class _Graph:
    """The started processes, their shared log, and a clean stop."""

    def __init__(self, log_path: str):
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.procs = []

    def start(self, args: dict) -> None:
        from . import launch

        self.procs += launch.start(args, stdout=self.log, stderr=subprocess.STDOUT)

    def dead(self):
        return [(s.name, p.returncode) for s, p in self.procs if p.poll() is not None]

    def stop(self) -> None:
        from . import launch

        launch.stop(self.procs, grace_s=10.0)
        self.log.close()


def _wait_ready(node, ex, graph_procs: _Graph, need, timeout_s: float) -> None:
    """Until every (topics, node) of ``need`` has the node subscribed to one of the topics,
    and this process has found the simulator's publishers (so the first frames are seen)."""
    t_end = time.monotonic() + timeout_s
    while True:
        missing = [(ts, n) for ts, n in need
                   if not any(i.node_name == n for t in ts for i in node.get_subscriptions_info_by_topic(t))]
        missing += [((t,), "davis (publishing)") for t in (graph.TOPIC_EVENTS, graph.TOPIC_IMAGE)
                    if not any(i.node_name == "davis" for i in node.get_publishers_info_by_topic(t))]
        if not missing:
            return
        dead = graph_procs.dead()
        if dead:
            raise UserError(f"node(s) exited during start-up: {dead}\n{_log_tail(graph_procs.log_path)}")
        if time.monotonic() > t_end:
            raise UserError(f"the graph did not come up in {timeout_s:.0f} s (waiting for "
                            f"{', '.join(f'{n} on {ts[0]}' for ts, n in missing)})\n{_log_tail(graph_procs.log_path)}")
        ex.spin_once(timeout_sec=0.1)


def run_closed_loop(out_dir: str, *, duration_s: float = 10.0, realtime_factor: float = 0.1, seed: int = 0,
                    interp_factor: int = 0, snn_weights: str | None = None, ann_weights: str | None = None,
                    record: bool = True, stop_on_catch: bool = True, threads: int = 1,
                    status=print, status_period_s: float = 1.0, wall_timeout_s: float | None = None) -> tuple:
    """Run the closed-loop graph; returns ``(summary dict, VideoMaterial)``.

    ``status(line)`` receives the monitor's status line every ``status_period_s``.
    """
    import rclpy
    from rclpy.executors import ExternalShutdownException

    from ..nodes.monitor import MonitorNode

    if not duration_s > 0:
        raise UserError(f"--duration-s must be > 0, got {duration_s}")
    if not realtime_factor > 0:
        raise UserError(f"--realtime-factor must be > 0 (the graph must be paced), got {realtime_factor}")
    snn_w, ann_w = weights_or_error(snn_weights, ann_weights)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")  # children inherit it
    os.makedirs(out_dir, exist_ok=True)
    bag_path = os.path.abspath(os.path.join(out_dir, "bag"))
    if record and os.path.exists(bag_path):
        shutil.rmtree(bag_path)  # the previous demo's recording
    common = {"realtime_factor": str(realtime_factor), "seed": str(seed), "interp_factor": str(interp_factor),
              "snn_weights": snn_w, "ann_weights": ann_w, "threads": str(threads)}
    # step 1: everything but the world; the simulator reads the world's camera topic as
    # closed_loop:=true makes it do (source topic:/world/image_raw, ground truth beside it)
    first = dict(common, use_simulator="true", closed_loop="false", source=f"topic:{graph.TOPIC_WORLD_IMAGE}",
                 tracking="true", record="true" if record else "false", bag_path=bag_path)
    # step 2: the world (its clock starts when the simulator subscribes to its camera)
    # (and once the monitor, and the recorder, also subscribe to its ground truth: none of
    # them misses the first boxes)
    world = dict(common, use_simulator="false", closed_loop="true", tracking="false",
                 world_ground_truth_subscribers=str(3 if record else 2))
    end_us = int(duration_s * 1e6)
    if wall_timeout_s is None:
        wall_timeout_s = 3.0 * duration_s / realtime_factor + 120.0

    ctx = rclpy.Context()
    rclpy.init(context=ctx, args=[])
    g = _Graph(os.path.join(out_dir, "graph.log"))
    node = ex = None
    wall0 = time.monotonic()
    t_ready = None
    info = {"interrupted": False, "stopped_by": None}
    try:
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.parameter import Parameter

        node = MonitorNode(keep_video=True, context=ctx,
                           parameter_overrides=[Parameter("print_status", value=False),
                                                Parameter("status_period_s", value=float(status_period_s))])
        ex = SingleThreadedExecutor(context=ctx)
        ex.add_node(node)
        g.start(first)
        need = list(READY_SUBSCRIPTIONS)
        if record:
            need.append(((graph.TOPIC_EVENTS,), "bag_recorder"))
        _wait_ready(node, ex, g, need, READY_TIMEOUT_S)
        t_ready = time.monotonic()
        g.start(world)
        stats = node.stats
        t_sim = time.monotonic()
        last_status = time.monotonic()
        while True:
            ex.spin_once(timeout_sec=0.02)
            now = time.monotonic()
            if now - last_status >= status_period_s:
                last_status = now
                status(stats.status_line())
                dead = g.dead()
                if dead:
                    raise UserError(f"node(s) exited: {dead}\n{_log_tail(g.log_path)}")
                if stats.counts["events"] == 0 and now - t_sim > NO_EVENTS_TIMEOUT_S:
                    raise UserError(f"no event packets {NO_EVENTS_TIMEOUT_S:.0f} s after starting the world and "
                                    f"the DAVIS simulator\n{_log_tail(g.log_path)}")
            fused_t = stats.stamps["fused"][1]
            if fused_t is not None and fused_t >= end_us:
                info["stopped_by"] = "duration"
                break
            if (stop_on_catch and stats.caught_at_us is not None and fused_t is not None
                    and fused_t >= stats.caught_at_us + TAIL_AFTER_CATCH_S * 1e6):
                info["stopped_by"] = "caught"
                break
            if now - wall0 > wall_timeout_s:
                raise UserError(f"no fused box reached {duration_s} s of sensor time within {wall_timeout_s:.0f} s "
                                f"of wall time: the graph does not keep up or is stuck (latest fused stamp "
                                f"{fused_t}); try a lower --realtime-factor\n{_log_tail(g.log_path)}")
        status(stats.status_line())
    except (KeyboardInterrupt, ExternalShutdownException):   # Ctrl-C: stop, keep what was seen
        info["interrupted"] = True
    finally:
        g.stop()
        if node is not None:
            ex.remove_node(node)
            node.destroy_node()
            ex.shutdown()
        ctx.try_shutdown()
    if node is None:
        raise UserError("interrupted during start-up")
    summary = node.stats.summary()
    summary.update(
        settings={"duration_s": duration_s, "realtime_factor": realtime_factor, "seed": seed,
                  "interp_factor": interp_factor, "snn_weights": snn_w, "ann_weights": ann_w,
                  "stop_on_catch": stop_on_catch, "threads": threads},
        wall_s={"total": time.monotonic() - wall0,
                "start_up": (t_ready - wall0) if t_ready is not None else None},
        stopped_by=info["stopped_by"] or ("interrupted" if info["interrupted"] else None),
        keeping_up=_keeping_up(summary),
    )
    if record:
        from ..io.bags import bag_info

        try:
            bi = bag_info(bag_path)
            summary["bag"] = {"path": bag_path, "size_bytes": bi["size_bytes"], "messages": bi["messages"],
                              "topics": {t: v["count"] for t, v in bi["topics"].items()}}
        except (FileNotFoundError, ValueError) as e:
            summary["bag"] = {"path": bag_path, "error": str(e)}
    return summary, node.video


def _keeping_up(summary: dict) -> dict:
    """Did the graph keep up: fused output at the SNN window rate, the SNN took (nearly)
    every event packet, and the fused boxes trail the events by a bounded lag."""
    r = summary["rates_hz"].get("fused")
    lag99 = summary["lag_ms"]["p99"]
    frac = summary["snn_packets"]["fraction"]
    ok = (r is not None and r > 0.95 * (1e6 / 480) and np.isfinite(lag99) and lag99 < 50.0
          and (frac is None or frac >= 0.98))
    return {"ok": bool(ok), "fused_rate_hz": r, "lag_p99_ms": lag99, "snn_packet_fraction": frac,
            "rule": "fused rate > 95% of the 2083 Hz SNN window rate, the SNN took >= 98% of the event "
                    "packets, lag p99 < 50 ms of sensor time"}


def write_video(material, path: str, end_us: int, fps: float = 60.0, progress=None) -> int:
    """Render :class:`~dashnet_ros.nodes.monitor.VideoMaterial` to ``path``; returns frames written."""
    from ..boxes import iou, interpolate_track
    from ..events import EVENT_DTYPE
    from ..viz import VideoWriter, overlay

    if not material.aps:
        return 0
    aps = sorted(material.aps, key=lambda a: a[0])
    aps_t = [a[0] for a in aps]
    tracks = {}
    for k, v in material.boxes.items():
        if v:
            v = sorted(v, key=lambda x: x[0])
            tracks[k] = (np.array([t for t, _ in v], np.int64), np.stack([b for _, b in v]))
    max_age = {"snn": 5000, "fused": 5000, "ann": 40000}
    frame_us = material.frame_us
    n = int(end_us // frame_us) + 1
    k0 = int(np.ceil(aps_t[0] / frame_us))
    dist = sorted(material.distance)
    written = 0
    with VideoWriter(path, fps) as video:
        for k in range(k0, n):
            t = k * frame_us
            i = bisect.bisect_right(aps_t, t) - 1
            img = aps[i][1]
            pic = material.event_pics.get(k)
            ev = None
            if pic is not None:
                ys, xs = np.nonzero(pic)
                ev = np.zeros(len(xs), EVENT_DTYPE)
                ev["x"], ev["y"], ev["p"] = xs, ys, pic[ys, xs]
            boxes = {}
            if "gt" in tracks:
                gt = interpolate_track(*tracks["gt"], t)[0]
                boxes["gt"] = gt
            for kind in ("ann", "snn", "fused"):
                if kind in tracks:
                    ts, bs = tracks[kind]
                    j = int(np.searchsorted(ts, t, side="right")) - 1
                    if j >= 0 and t - ts[j] <= max_age[kind]:
                        boxes[kind] = bs[j]
            text = f"t={t / 1e6:.3f}s"
            if "fused" in boxes and "gt" in boxes and np.all(np.isfinite(boxes["gt"])):
                text += f"  IoU {float(iou(boxes['fused'], boxes['gt'])):.2f}"
            j = bisect.bisect_right(dist, (t, float("inf"))) - 1
            if j >= 0:
                text += f"  d={dist[j][1]:.2f}m"
            video.write(overlay(img, ev, boxes, text=text))
            written += 1
            if progress:
                progress(k - k0 + 1, n - k0)
    return written


def _write_json(path: str, obj) -> None:
    tmp = path + ".partial"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, default=lambda o: None if o is None else float(o))
    os.replace(tmp, path)


def run_demo(out_dir: str, *, video: bool = True, **kw) -> dict:
    """:func:`run_closed_loop`, then ``demo.mp4`` and ``summary.json`` under ``out_dir``."""
    summary, material = run_closed_loop(out_dir, **kw)
    end_us = int(1e6 * (summary["sensor_time_s"] or 0.0))
    fused_last = material.boxes["fused"][-1][0] if material.boxes["fused"] else end_us
    if video:
        summary["video_frames"] = write_video(material, os.path.join(out_dir, "demo.mp4"), min(end_us, fused_last))
    _write_json(os.path.join(out_dir, "summary.json"), summary)
    return summary


def _fmt(v, spec=".2f", unit=""):
    return "-" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:{spec}}{unit}"


def run(args) -> int:
    summary = run_demo(args.out, duration_s=args.duration_s, realtime_factor=args.realtime_factor, seed=args.seed,
                       interp_factor=args.interp_factor, snn_weights=args.snn_weights, ann_weights=args.ann_weights,
                       record=args.record, stop_on_catch=args.stop_on_catch, threads=args.threads,
                       status=lambda line: print(line, flush=True))
    r = summary["rates_hz"]
    print(f"\nsensor time {_fmt(summary['sensor_time_s'])} s ({summary['stopped_by']}); "
          f"wall {summary['wall_s']['total']:.0f} s")
    print(f"rates (sensor Hz): events {_fmt(r['events'], '.0f')}, APS {_fmt(r['aps'], '.1f')}, "
          f"SNN {_fmt(r['snn'], '.0f')}, ANN {_fmt(r['ann'], '.1f')}, fused {_fmt(r['fused'], '.0f')}, "
          f"cmd_vel {_fmt(r['cmd_vel'], '.0f')}")
    k = summary["keeping_up"]
    frac = k["snn_packet_fraction"]
    print(f"keeping up: {'yes' if k['ok'] else 'NO'} (SNN took {_fmt(frac and 100 * frac, '.0f')}% of the "
          f"event packets, lag p99 {_fmt(k['lag_p99_ms'], '.0f')} ms)"
          + ("" if k["ok"] else f"; on this machine try --realtime-factor {summary['settings']['realtime_factor'] / 2:g}"))
    print(f"latency p50/p99 {_fmt(summary['latency_ms']['p50'], '.1f')}/{_fmt(summary['latency_ms']['p99'], '.1f')} ms "
          f"(wall), lag p50/p99 {_fmt(summary['lag_ms']['p50'], '.1f')}/{_fmt(summary['lag_ms']['p99'], '.1f')} ms "
          f"(sensor); mean IoU fused {_fmt(summary['iou']['fused']['mean'])}, "
          f"SNN {_fmt(summary['iou']['snn']['mean'])}, ANN {_fmt(summary['iou']['ann']['mean'])}")
    d = summary["distance_m"]
    print(f"distance {_fmt(d['start'])} -> {_fmt(d['final'])} m (min {_fmt(d['min'])}); caught: {summary['caught']}"
          + (f" at {summary['time_to_catch_s']:.2f} s" if summary["time_to_catch_s"] is not None else ""))
    outs = ["demo.mp4", "summary.json"] + (["bag/"] if args.record else []) + ["graph.log"]
    print(f"wrote {', '.join(os.path.join(args.out, o) for o in outs)}")
    return 130 if summary["stopped_by"] == "interrupted" else 0


def add_parser(sub):
    p = sub.add_parser("demo", help="closed loop: the predator chases the prey, steered by DashNet (ROS 2 graph)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    p.add_argument("--duration-s", type=float, default=10.0, help="sensor time to run (default 10)")
    p.add_argument("--realtime-factor", type=float, default=0.1,
                   help="sensor time per wall time (default 0.1: keeps up on 2 CPU cores; lower it if the "
                        "summary says the graph did not keep up)")
    p.add_argument("--seed", type=int, default=0, help="world seed (arena, textures, start poses)")
    p.add_argument("--interp-factor", type=int, default=0, choices=[0, 1, 3, 7],
                   help="FCN frames between the world's 240 fps frames (default 0)")
    p.add_argument("--snn-weights", default=None, help="SNN weights (default: the shipped snn_fast.pt)")
    p.add_argument("--ann-weights", default=None, help="ANN weights (default: the shipped ann_fast.pt)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per tracker node")
    p.add_argument("--record", action=argparse.BooleanOptionalAction, default=True,
                   help="record the graph's topics to OUT/bag (rosbag2 MCAP; default on)")
    p.add_argument("--stop-on-catch", action=argparse.BooleanOptionalAction, default=True,
                   help=f"end {TAIL_AFTER_CATCH_S} s of sensor time after the catch (default on)")
    p.set_defaults(func=run)
