"""pip install of the ROS-free core (simulator, trackers, evaluation, the `dashnet` command).

colcon builds this package with CMake (package.xml: ament_cmake) and ignores this file.
It is for users without ROS 2 who want the offline tools: `pip install .` (torch==2.13.0
is pinned in requirements.txt; install it first to avoid pulling a CUDA build).  A pip
install has no `dashnet_ros.msg` (that comes from the colcon build), so the ROS nodes need
the colcon install.
"""
from setuptools import find_packages, setup

setup(
    name="dashnet_ros",
    version="0.1.0",
    description="DashNet hybrid ANN+SNN high-speed tracking: DAVIS simulator, trackers, evaluation",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["dashnet_ros", "dashnet_ros.*"]),
    package_data={"dashnet_ros": ["weights/*.pt"]},
    install_requires=["numpy", "opencv-contrib-python-headless", "h5py", "tqdm", "matplotlib", "PyYAML"],
    entry_points={"console_scripts": ["dashnet = dashnet_ros.cli:main"]},
)
