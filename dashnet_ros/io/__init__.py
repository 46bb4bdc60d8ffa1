"""Datasets (HDF5), bags, and ROS message <-> numpy conversion."""
