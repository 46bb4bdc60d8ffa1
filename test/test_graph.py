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
    assert [s.name for s, _ in cmds] == [s.name for s in graph.NODES]
    spec, cmd = cmds[0]
    assert cmd[:3] == ["py", "-m", "dashnet_ros.nodes.davis_simulator"]
    assert "source:=scenes:5" in cmd and "realtime_factor:=0" in cmd
    assert f"~/events:={graph.TOPIC_EVENTS}" in cmd
    assert "/cfg/davis_simulator.yaml" in cmd


def test_enabled_by_switches_nodes_off_and_validates_booleans():
    assert graph.node_commands("py", "/cfg", {"use_simulator": "false"}) == []
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
    mod("launch.actions", DeclareLaunchArgument=lambda n, default_value, description: rec["args"].append((n, default_value)))
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
    assert len(rec["nodes"]) == len(graph.NODES)
    for kw, spec in zip(rec["nodes"], graph.NODES):
        assert kw["executable"] == spec.executable and kw["name"] == spec.name
        assert kw["package"] == "dashnet_ros"
        assert kw["remappings"] == list(spec.remappings)
        pfile, overrides = kw["parameters"]
        assert pfile == f"/share/dashnet_ros/config/{spec.params_file}"
        assert {k: v.name for k, v in overrides.items()} == spec.arg_params
        assert kw["condition"] == (("if", spec.enabled_by) if spec.enabled_by else None)


def test_launch_args_are_name_value_pairs():
    assert launch_cmd.parse_launch_args(["a:=1", "b:=x:=y"]) == {"a": "1", "b": "x:=y"}
    with pytest.raises(UserError, match="name:=value"):
        launch_cmd.parse_launch_args(["a=1"])
