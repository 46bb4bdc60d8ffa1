"""dashnet_ros: hybrid ANN + SNN high-speed object tracking (DashNet) for ROS 2.

The algorithms live in ROS-free modules (``davis``, ``world``, ``models``, ``fusion``,
``tracking``); ``nodes`` holds thin rclpy shells around them.
"""
# The generated message subpackage (``dashnet_ros.msg``) is installed by colcon next to
# our sources in the install tree.  When the source tree comes first on sys.path (tests,
# development) the package path is extended so ``dashnet_ros.msg`` is still found.
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
__version__ = "0.1.0"
