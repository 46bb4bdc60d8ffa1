"""``dashnet launch tracking [name:=value ...]``: start the graph without the ROS 2 launch tools.

Starts the nodes of :mod:`dashnet_ros.graph` as separate processes with the same
parameters and remappings as ``launch/tracking.launch.py``; Ctrl-C (SIGINT) or SIGTERM
stops them all (SIGTERM, then SIGKILL after a grace period).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from .. import graph
from ..cli import UserError


def config_dir() -> str:
    """``share/dashnet_ros/config`` of the install (via ament_index), else the source tree's."""
    try:
        from ament_index_python.packages import get_package_share_directory

        d = os.path.join(get_package_share_directory(graph.PACKAGE), "config")
        if os.path.isdir(d):
            return d
    except Exception:  # noqa: BLE001 - not installed / AMENT_PREFIX_PATH unset
        pass
    d = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "config")
    if not os.path.isdir(d):
        raise UserError("cannot find the package's config/ directory: source install/setup.bash first")
    return d


def parse_launch_args(items) -> dict:
    out = {}
    for item in items:
        if ":=" not in item:
            raise UserError(f"launch arguments are written name:=value, got {item!r}")
        k, v = item.split(":=", 1)
        out[k] = v
    return out


def start(args: dict, *, stdout=None, stderr=None) -> list[tuple[graph.NodeSpec, subprocess.Popen]]:
    """Start every enabled node; returns (spec, process) pairs."""
    try:
        cmds = graph.node_commands(sys.executable, config_dir(), args)
    except ValueError as e:
        raise UserError(str(e)) from None
    procs = []
    for spec, cmd in cmds:
        # Children inherit the environment whole (the ROS wheels' bootstrap needs it).
        procs.append((spec, subprocess.Popen(cmd, stdout=stdout, stderr=stderr, start_new_session=True)))
    return procs


def stop(procs, grace_s: float = 5.0) -> None:
    """SIGTERM every process group, then SIGKILL whatever is left.

    SIGTERM, not SIGINT: a running node stops on either as cleanly (``StopOnSignals``), but
    one still importing (torch takes seconds) would answer SIGINT with a KeyboardInterrupt
    traceback that buries the error that stopped the graph."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = [p for _, p in procs if p.poll() is None]
        if not alive:
            return
        for p in alive:
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(p.poll() is None for p in alive):
            time.sleep(0.05)


def run(args) -> int:
    if args.graph != "tracking":
        raise UserError(f"unknown graph {args.graph!r}: the package has 'tracking'")
    launch_args = parse_launch_args(args.launch_args)
    procs = start(launch_args)
    names = ", ".join(f"{s.name} (pid {p.pid})" for s, p in procs)
    print(f"dashnet launch: started {names}; Ctrl-C stops all", file=sys.stderr)

    def _terminate(signum, frame):
        raise KeyboardInterrupt

    # SIGINT too: a shell starts a background job (`dashnet launch tracking &` in a script)
    # with SIGINT ignored, and Python then installs no KeyboardInterrupt handler of its own
    signal.signal(signal.SIGINT, _terminate)
    signal.signal(signal.SIGTERM, _terminate)
    rc = 0
    try:
        while True:
            for spec, p in procs:
                code = p.poll()
                if code is not None:
                    print(f"dashnet launch: {spec.name} exited with code {code}; stopping the rest",
                          file=sys.stderr)
                    return code
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        stop(procs)
    return rc


def add_parser(sub):
    p = sub.add_parser("launch", help="start the node graph as processes (like ros2 launch)",
                       description=__doc__)
    p.add_argument("graph", choices=["tracking"], help="which graph (as launch/<graph>.launch.py)")
    p.add_argument("launch_args", nargs="*", metavar="name:=value",
                   help="launch arguments: " + "; ".join(f"{a.name} (default {a.default}): {a.description}"
                                                         for a in graph.LAUNCH_ARGS))
    p.set_defaults(func=run)
