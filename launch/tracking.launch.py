"""ros2 launch dashnet_ros tracking.launch.py [source:=world] [realtime_factor:=1.0] ...

Starts the DashNet graph described in dashnet_ros/graph.py (the same description
`dashnet launch tracking` uses).  Run `ros2 launch dashnet_ros tracking.launch.py -s`
to list the arguments.  A node that exits (e.g. the DAVIS node without its camera) shuts
the whole launch down, as `dashnet launch` stops the rest.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, Shutdown
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from dashnet_ros import graph


def generate_launch_description():
    config_dir = os.path.join(get_package_share_directory(graph.PACKAGE), "config")
    actions = [DeclareLaunchArgument(a.name, default_value=a.default, description=a.description)
               for a in graph.LAUNCH_ARGS]
    for spec in graph.NODES + graph.OPTIONAL_NODES:
        overrides = {param: LaunchConfiguration(arg) for param, arg in spec.arg_params.items()}
        actions.append(
            Node(
                package=graph.PACKAGE,
                executable=spec.executable,
                name=spec.name,
                output="screen",
                parameters=[os.path.join(config_dir, spec.params_file), overrides],
                remappings=list(spec.remappings),
                condition=IfCondition(LaunchConfiguration(spec.enabled_by)) if spec.enabled_by else None,
                on_exit=Shutdown(reason=f"{spec.name} exited"),
            )
        )
    return LaunchDescription(actions)
