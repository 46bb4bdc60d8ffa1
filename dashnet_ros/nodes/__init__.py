"""Thin rclpy shells around the core, one module per node."""
