"""The one description of the node graph.

``launch/tracking.launch.py`` (launch_ros) and ``dashnet launch tracking`` (plain
processes, for machines without the ROS 2 launch tools) both read this module, so the
two cannot drift apart: same nodes, executables, parameter files, launch-argument
overrides and remappings.

The tracking graph (paper Fig. 2)::

    davis ──/davis/events──────► snn_tracker ──/dashnet/snn_boxes──┐
      │   ──/davis/image_raw───► ann_tracker ──/dashnet/ann_box────┤
      │   ──/davis/ground_truth► snn/ann_tracker (first box only)  ▼
      │                                                        fuser ──/dashnet/fused_box──► steering ──/cmd_vel
      │                                                              ──/dashnet/fused_boxes (every box)
      │           /dashnet/fused_box ──► snn_tracker (search region; or every box of
      │                                  /dashnet/fused_boxes with snn_fused_input:=array)
      │           /dashnet/fused_box ──► ann_tracker (attention, eq. 10)

    closed_loop:=true:  world ──/world/image_raw, /world/ground_truth──► davis;  /cmd_vel ──► world

Box arrays (``TrackedBoxArray``) carry every SNN / fused box, one message per event packet;
the single-box ``/dashnet/snn_box`` is published only while subscribed, ``/dashnet/fused_box``
carries the newest fused box at most every 10 ms of sensor time, and at once after each new
ANN box (the fuser's ``single_output``/``single_period_ms``).

Open loop (default) the simulator reads ``source`` itself ('world' = the same arena with
a built-in pursuit controller); closed loop the ``world`` node runs the arena from
``/cmd_vel`` and the simulator turns its camera topic into the DAVIS stream.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class LaunchArg:
    name: str
    default: str
    description: str


@dataclass(frozen=True)
class NodeSpec:
    """One node of the graph.

    ``params_file``: YAML under ``config/``; ``arg_params``: parameter name -> launch
    argument whose value overrides it (all values are passed as strings and parsed as
    YAML, as ``ros2 launch`` does); ``remappings``: (from, to) topic names;
    ``enabled_by``: a boolean launch argument that switches the node on/off (or None).
    """

    name: str
    executable: str
    params_file: str
    arg_params: dict = field(default_factory=dict)
    remappings: tuple = ()
    enabled_by: str | None = None


PACKAGE = "dashnet_ros"

LAUNCH_ARGS = (
    LaunchArg("source", "world", "frame source: 'world', 'scenes:SEED', a video file, an NFS sequence dir or an image folder"),
    LaunchArg("realtime_factor", "1.0", "simulated sensor time per wall time (0 = as fast as possible)"),
    LaunchArg("dvs_model", "pixel", "DVS model: 'pixel' (v2e/ESIM-style per-pixel) or 'paper' (eq. 14)"),
    LaunchArg("interp_factor", "7", "FCN interpolated frames between source frames: 0, 1, 3 or 7"),
    LaunchArg("aps_rate_hz", "30.0", "APS frame rate"),
    LaunchArg("seed", "0", "random seed of the world / noise"),
    LaunchArg("use_simulator", "true", "start the DAVIS simulator (false when a bag or a camera driver provides the topics)"),
    LaunchArg("closed_loop", "false", "closed loop: the world node simulates the predator-prey arena driven by /cmd_vel "
                                      "and the DAVIS simulator turns its camera (/world/image_raw) into events "
                                      "('source' is then ignored)"),
    LaunchArg("world_ground_truth_subscribers", "1", "closed loop: the world's clock starts once "
              "/world/ground_truth has this many subscribers (the simulator; + the demo's monitor and recorder)"),
    LaunchArg("tracking", "true", "start the trackers, the fuser and the steering"),
    LaunchArg("snn_weights", "default", "SNN weights file ('default' = the shipped dashnet_ros/weights/snn_fast.pt)"),
    LaunchArg("ann_weights", "default", "ANN weights file ('default' = the shipped dashnet_ros/weights/ann_fast.pt)"),
    LaunchArg("init_box", "[0.0, 0.0, 0.0, 0.0]", "trackers: initial target box [x, y, w, h] in sensor pixels "
              "(a live camera has no ground truth); all zeros = the first valid box on /davis/ground_truth"),
    LaunchArg("follow_fused", "true", "SNN search region follows the fused box (SNN-hybrid); false = its own output"),
    LaunchArg("ann_timeout_s", "0.5", "fuser: sensor time without ANN boxes before it publishes SNN-only boxes"),
    LaunchArg("threads", "1", "torch threads per tracker node"),
    LaunchArg("snn_windows_per_call", "8", "SNN windows per network call (those an event packet completes "
                                           "run together up to this many; with the fast preset the same boxes "
                                           "as 1, fewer calls)"),
    LaunchArg("device", "cpu", "torch device of the tracker nodes: cpu, cuda, cuda:N"),
    LaunchArg("packet_us", "2000", "simulator: event packet period in microseconds (2000: half the messages "
                                   "per second of 1000, and up to 2 ms of buffering; see README, graph speed)"),
    LaunchArg("snn_fused_input", "single", "snn_tracker: re-centre on every fused box ('array', /dashnet/fused_boxes) "
                                          "or on the rate-limited single fused box ('single', /dashnet/fused_box)"),
    LaunchArg("fused_box_period_ms", "10.0", "fuser: at most one /dashnet/fused_box per this much sensor time"),
    LaunchArg("record", "false", "record the graph's topics into a rosbag2 (MCAP) bag (the bag_recorder node)"),
    LaunchArg("bag_path", "", "record: bag directory to create ('' = out/bags/tracking_<date>_<time>)"),
)

# Topics (absolute so every node and remapping reads the same name).
TOPIC_EVENTS = "/davis/events"
TOPIC_IMAGE = "/davis/image_raw"
TOPIC_CAMERA_INFO = "/davis/camera_info"
TOPIC_GROUND_TRUTH = "/davis/ground_truth"
TOPIC_SNN_BOX = "/dashnet/snn_box"
TOPIC_SNN_BOXES = "/dashnet/snn_boxes"      # TrackedBoxArray, one per event packet
TOPIC_ANN_BOX = "/dashnet/ann_box"
TOPIC_FUSED_BOX = "/dashnet/fused_box"
TOPIC_FUSED_BOXES = "/dashnet/fused_boxes"  # TrackedBoxArray, every fused box
TOPIC_DECISION = "/dashnet/steering_decision"
TOPIC_CMD_VEL = "/cmd_vel"
TOPIC_WORLD_IMAGE = "/world/image_raw"
TOPIC_WORLD_GROUND_TRUTH = "/world/ground_truth"
TOPIC_WORLD_DISTANCE = "/world/distance"
TOPIC_WORLD_CAUGHT = "/world/caught"
TOPIC_DIAGNOSTICS = "/diagnostics"  # the fuser publishes here directly (the ROS convention)

NODES = (
    NodeSpec(
        name="davis",
        executable="davis_simulator",
        params_file="davis_simulator.yaml",
        arg_params={
            "source": "source",
            "realtime_factor": "realtime_factor",
            "dvs_model": "dvs_model",
            "interp_factor": "interp_factor",
            "aps_rate_hz": "aps_rate_hz",
            "seed": "seed",
            "closed_loop": "closed_loop",
            "packet_us": "packet_us",
        },
        remappings=(
            ("~/events", TOPIC_EVENTS),
            ("~/image_raw", TOPIC_IMAGE),
            ("~/camera_info", TOPIC_CAMERA_INFO),
            ("~/ground_truth", TOPIC_GROUND_TRUTH),
        ),
        enabled_by="use_simulator",
    ),
    NodeSpec(
        name="world",
        executable="world",
        params_file="world.yaml",
        arg_params={"realtime_factor": "realtime_factor", "seed": "seed",
                    "ground_truth_subscribers": "world_ground_truth_subscribers"},
        remappings=(
            ("~/image_raw", TOPIC_WORLD_IMAGE),
            ("~/ground_truth", TOPIC_WORLD_GROUND_TRUTH),
            ("~/distance", TOPIC_WORLD_DISTANCE),
            ("~/caught", TOPIC_WORLD_CAUGHT),
            ("~/cmd_vel", TOPIC_CMD_VEL),
        ),
        enabled_by="closed_loop",
    ),
    NodeSpec(
        name="snn_tracker",
        executable="snn_tracker",
        params_file="snn_tracker.yaml",
        arg_params={"weights": "snn_weights", "follow_fused": "follow_fused", "threads": "threads", "init_box": "init_box",
                    "device": "device", "windows_per_call": "snn_windows_per_call",
                    "fused_input": "snn_fused_input"},
        remappings=(
            ("~/events", TOPIC_EVENTS),
            ("~/fused_box", TOPIC_FUSED_BOX),
            ("~/fused_boxes", TOPIC_FUSED_BOXES),
            ("~/ground_truth", TOPIC_GROUND_TRUTH),
            ("~/box", TOPIC_SNN_BOX),
            ("~/boxes", TOPIC_SNN_BOXES),
        ),
        enabled_by="tracking",
    ),
    NodeSpec(
        name="ann_tracker",
        executable="ann_tracker",
        params_file="ann_tracker.yaml",
        arg_params={"weights": "ann_weights", "threads": "threads", "device": "device", "init_box": "init_box"},
        remappings=(
            ("~/image_raw", TOPIC_IMAGE),
            ("~/fused_box", TOPIC_FUSED_BOX),
            ("~/ground_truth", TOPIC_GROUND_TRUTH),
            ("~/box", TOPIC_ANN_BOX),
        ),
        enabled_by="tracking",
    ),
    NodeSpec(
        name="fuser",
        executable="fuser",
        params_file="fuser.yaml",
        arg_params={"aps_rate_hz": "aps_rate_hz", "ann_timeout_s": "ann_timeout_s",
                    "single_period_ms": "fused_box_period_ms"},
        remappings=(
            ("~/snn_box", TOPIC_SNN_BOX),
            ("~/snn_boxes", TOPIC_SNN_BOXES),
            ("~/ann_box", TOPIC_ANN_BOX),
            ("~/fused_box", TOPIC_FUSED_BOX),
            ("~/fused_boxes", TOPIC_FUSED_BOXES),
        ),
        enabled_by="tracking",
    ),
    NodeSpec(
        name="steering",
        executable="steering",
        params_file="steering.yaml",
        remappings=(
            ("~/box", TOPIC_FUSED_BOX),
            ("~/camera_info", TOPIC_CAMERA_INFO),
            ("~/cmd_vel", TOPIC_CMD_VEL),
            ("~/decision", TOPIC_DECISION),
        ),
        enabled_by="tracking",
    ),
)


# Optional nodes, off unless their launch argument is set: kept apart from NODES so the
# tracking graph itself stays what it was (both launchers start them when enabled).
RECORDER = NodeSpec(
    name="bag_recorder",
    executable="bag_recorder",
    params_file="bag_recorder.yaml",
    arg_params={"path": "bag_path"},
    enabled_by="record",
)
OPTIONAL_NODES = (RECORDER,)


def launch_arg_defaults() -> dict:
    return {a.name: a.default for a in LAUNCH_ARGS}


def is_true(value: str) -> bool:
    v = str(value).strip().lower()
    if v in ("true", "1", "yes", "on"):
        return True
    if v in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"expected a boolean (true/false), got {value!r}")


def node_commands(python: str, config_dir: str, args: dict) -> list[tuple[NodeSpec, list[str]]]:
    """Command lines that start each enabled node as its own process (``dashnet launch``).

    ``args``: launch argument values (missing ones take their defaults).  Each command is
    ``python -m dashnet_ros.nodes.<executable> --ros-args ...`` with the same node name,
    parameter file, overrides and remappings that the launch file uses.
    """
    import os

    values = launch_arg_defaults()
    unknown = set(args) - set(values)
    if unknown:
        raise ValueError(f"unknown launch argument(s): {', '.join(sorted(unknown))} "
                         f"(known: {', '.join(values)})")
    values.update(args)
    out = []
    for spec in NODES + OPTIONAL_NODES:
        if spec.enabled_by and not is_true(values[spec.enabled_by]):
            continue
        cmd = [python, "-m", f"{PACKAGE}.nodes.{spec.executable}", "--ros-args",
               "-r", f"__node:={spec.name}",
               "--params-file", os.path.join(config_dir, spec.params_file)]
        for param, arg in spec.arg_params.items():
            v = values[arg]
            cmd += ["-p", f"{param}:={v}" if v != "" else f"{param}:=''"]  # rcl refuses an empty value
        for src, dst in spec.remappings:
            cmd += ["-r", f"{src}:={dst}"]
        out.append((spec, cmd))
    return out
