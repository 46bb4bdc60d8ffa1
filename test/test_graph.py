"""The graph description, the launch file built from it, and `dashnet launch`."""
import os
import sys
import types

import pytest

from dashnet_ros import graph
from dashnet_ros.commands import launch as launch_cmd
from dashnet_ros.cli import UserError

from conftest import REPO


def test_node_commands_apply_overrides_and_remappings():
    cmds = graph.node_commands("py", "/cfg", {"source": "scenes:5", "realtime_factor": "0"})
    # default: open loop, so every node but the world
    assert [s.name for s, _ in cmds] == [s.name for s in graph.NODES if s.name != "world"]
    spec, cmd = cmds[0]
    assert cmd[:3] == ["py", "-m", "dashnet_ros.nodes.davis_simulator"]
    assert "source:=scenes:5" in cmd and "realtime_factor:=0" in cmd
    assert f"~/events:={graph.TOPIC_EVENTS}" in cmd
    assert "/cfg/davis_simulator.yaml" in cmd


def test_enabled_by_switches_nodes_off_and_validates_booleans():
    assert graph.node_commands("py", "/cfg", {"use_simulator": "false", "tracking": "false"}) == []
    names = [s.name for s, _ in graph.node_commands("py", "/cfg", {"use_simulator": "false"})]
    assert names == ["snn_tracker", "ann_tracker", "fuser", "steering"]
    with pytest.raises(ValueError, match="boolean"):
        graph.node_commands("py", "/cfg", {"use_simulator": "maybe"})
    with pytest.raises(ValueError, match="unknown launch argument"):
        graph.node_commands("py", "/cfg", {"no_such_arg": "1"})


def test_every_node_has_a_module_and_a_config_file():
    for spec in graph.NODES:
        assert os.path.isfile(os.path.join(REPO, "dashnet_ros", "nodes", spec.executable + ".py"))
        assert os.path.isfile(os.path.join(REPO, "config", spec.params_file))


def _load_launch_file_with_recording_stubs(monkeypatch):
    """Execute launch/tracking.launch.py against minimal stand-ins of launch/launch_ros that
    record what the file asks for (the real packages are not installable here)."""
    rec = {"args": [], "nodes": []}

    def mod(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, m)
        return m

    class LaunchConfiguration:
        def __init__(self, name):
            self.name = name

    mod("launch", LaunchDescription=lambda actions: actions)
    mod("launch.actions", DeclareLaunchArgument=lambda n, default_value, description: rec["args"].append((n, default_value)),
        Shutdown=lambda reason: ("shutdown", reason))
    mod("launch.conditions", IfCondition=lambda c: ("if", c.name))
    mod("launch.substitutions", LaunchConfiguration=LaunchConfiguration)
    mod("launch_ros")
    mod("launch_ros.actions", Node=lambda **kw: rec["nodes"].append(kw))
    mod("ament_index_python")
    mod("ament_index_python.packages", get_package_share_directory=lambda p: "/share/" + p)
    ns = {}
    path = os.path.join(REPO, "launch", "tracking.launch.py")
    exec(compile(open(path).read(), path, "exec"), ns)
    ns["generate_launch_description"]()
    return rec


def test_launch_file_matches_graph(monkeypatch):
    rec = _load_launch_file_with_recording_stubs(monkeypatch)
    assert rec["args"] == [(a.name, a.default) for a in graph.LAUNCH_ARGS]
    all_nodes = graph.NODES + graph.OPTIONAL_NODES
    assert len(rec["nodes"]) == len(all_nodes)
    for kw, spec in zip(rec["nodes"], all_nodes):
        assert kw["executable"] == spec.executable and kw["name"] == spec.name
        assert kw["package"] == "dashnet_ros"
        assert kw["remappings"] == list(spec.remappings)
        pfile, overrides = kw["parameters"]
        assert pfile == f"/share/dashnet_ros/config/{spec.params_file}"
        assert {k: v.name for k, v in overrides.items()} == spec.arg_params
        assert kw["condition"] == (("if", spec.enabled_by) if spec.enabled_by else None)
        assert kw["on_exit"] == ("shutdown", f"{spec.name} exited")    # one node gone stops the graph


def test_launch_args_are_name_value_pairs():
    assert launch_cmd.parse_launch_args(["a:=1", "b:=x:=y"]) == {"a": "1", "b": "x:=y"}
    with pytest.raises(UserError, match="name:=value"):
        launch_cmd.parse_launch_args(["a=1"])


def test_closed_loop_adds_the_world_and_switches_the_simulator_to_its_camera():
    cmds = dict((s.name, c) for s, c in graph.node_commands("py", "/cfg", {"closed_loop": "true", "seed": "4",
                                                                         "realtime_factor": "0.1"}))
    assert list(cmds) == ["davis", "world", "snn_tracker", "ann_tracker", "fuser", "steering"]
    assert "closed_loop:=true" in cmds["davis"]
    world = cmds["world"]
    assert world[:3] == ["py", "-m", "dashnet_ros.nodes.world"]
    assert "seed:=4" in world and "realtime_factor:=0.1" in world
    assert f"~/image_raw:={graph.TOPIC_WORLD_IMAGE}" in world and f"~/cmd_vel:={graph.TOPIC_CMD_VEL}" in world
    # the davis simulator's default closed-loop topic is the world's camera
    import yaml

    cfg = yaml.safe_load(open(os.path.join(REPO, "config", "davis_simulator.yaml")))["/**"]["ros__parameters"]
    assert cfg["closed_loop_topic"] == graph.TOPIC_WORLD_IMAGE


def test_tracking_graph_wiring():
    """Every subscribed box/event/image topic of the tracking nodes is published by another node."""
    remap = {s.name: dict(s.remappings) for s in graph.NODES}
    assert remap["snn_tracker"]["~/events"] == remap["davis"]["~/events"] == graph.TOPIC_EVENTS
    assert remap["snn_tracker"]["~/ground_truth"] == remap["davis"]["~/ground_truth"]
    assert remap["ann_tracker"]["~/image_raw"] == remap["davis"]["~/image_raw"]
    assert remap["snn_tracker"]["~/box"] == remap["fuser"]["~/snn_box"] == graph.TOPIC_SNN_BOX
    assert remap["ann_tracker"]["~/box"] == remap["fuser"]["~/ann_box"] == graph.TOPIC_ANN_BOX
    fused = remap["fuser"]["~/fused_box"]
    assert fused == graph.TOPIC_FUSED_BOX
    assert remap["snn_tracker"]["~/fused_box"] == remap["ann_tracker"]["~/fused_box"] == remap["steering"]["~/box"] == fused
    assert remap["steering"]["~/cmd_vel"] == remap["world"]["~/cmd_vel"] == graph.TOPIC_CMD_VEL
    assert remap["steering"]["~/camera_info"] == remap["davis"]["~/camera_info"]


def test_launch_args_reach_the_tracker_nodes_and_empty_values_are_quoted():
    cmds = dict((s.name, c) for s, c in graph.node_commands(
        "py", "/cfg", {"snn_weights": "/w/snn.pt", "ann_weights": "", "threads": "2", "device": "cpu"}))
    assert "weights:=/w/snn.pt" in cmds["snn_tracker"] and "threads:=2" in cmds["snn_tracker"]
    assert "weights:=''" in cmds["ann_tracker"]   # rcl refuses 'name:=' with nothing after it
    assert "device:=cpu" in cmds["ann_tracker"]
    cmds = dict((s.name, c) for s, c in graph.node_commands("py", "/cfg", {"init_box": "[120,64,24,18]"}))
    assert "init_box:=[120,64,24,18]" in cmds["snn_tracker"] and "init_box:=[120,64,24,18]" in cmds["ann_tracker"]


def test_every_parameter_file_matches_its_node_declarations():
    """The YAML files list exactly the parameters the nodes declare, with the declared types."""
    import importlib

    import yaml

    for spec in graph.NODES:
        mod = importlib.import_module(f"dashnet_ros.nodes.{spec.executable}")
        declared = {p.name: p.default for p in mod.PARAMS}
        cfg = yaml.safe_load(open(os.path.join(REPO, "config", spec.params_file)))["/**"]["ros__parameters"]
        assert set(cfg) == set(declared), spec.params_file
        for k, v in cfg.items():
            assert type(v) is type(declared[k]), f"{spec.params_file}: {k}"
        assert set(spec.arg_params) <= set(declared), spec.name
