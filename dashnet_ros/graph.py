"""The one description of the node graph.

``launch/tracking.launch.py`` (launch_ros) and ``dashnet launch tracking`` (plain
processes, for machines without the ROS 2 launch tools) both read this module, so the
two cannot drift apart: same nodes, executables, parameter files, launch-argument
overrides and remappings.
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
)

# Topics (absolute so every node and remapping reads the same name).
TOPIC_EVENTS = "/davis/events"
TOPIC_IMAGE = "/davis/image_raw"
TOPIC_CAMERA_INFO = "/davis/camera_info"
TOPIC_GROUND_TRUTH = "/davis/ground_truth"

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
        },
        remappings=(
            ("~/events", TOPIC_EVENTS),
            ("~/image_raw", TOPIC_IMAGE),
            ("~/camera_info", TOPIC_CAMERA_INFO),
            ("~/ground_truth", TOPIC_GROUND_TRUTH),
        ),
        enabled_by="use_simulator",
    ),
)


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
    for spec in NODES:
        if spec.enabled_by and not is_true(values[spec.enabled_by]):
            continue
        cmd = [python, "-m", f"{PACKAGE}.nodes.{spec.executable}", "--ros-args",
               "-r", f"__node:={spec.name}",
               "--params-file", os.path.join(config_dir, spec.params_file)]
        for param, arg in spec.arg_params.items():
            cmd += ["-p", f"{param}:={values[arg]}"]
        for src, dst in spec.remappings:
            cmd += ["-r", f"{src}:={dst}"]
        out.append((spec, cmd))
    return out
