"""Shared test fixtures: loopback-only DDS with a domain id of our own."""
import os
import random

import pytest

# Never let DDS discovery leave the machine, and keep test runs apart from anything else.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(120, 200)))

# Tests share 2 cores with the multi-process tests' nodes: one intra-op thread avoids
# oversubscription (which made small-network tests ~100x slower under load).
try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Every test starts with one torch thread (a test running a command may have set more)."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        yield
        return
    torch.set_num_threads(1)
    yield


@pytest.fixture
def ros_domain(monkeypatch):
    """A fresh ROS_DOMAIN_ID for one multi-process test (children inherit it)."""
    dom = str(random.randint(120, 220))
    monkeypatch.setenv("ROS_DOMAIN_ID", dom)
    return dom


@pytest.fixture
def rclpy_context(ros_domain):
    """An rclpy context of its own (in a fresh ROS domain), shut down afterwards."""
    import rclpy

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    yield ctx
    ctx.try_shutdown()
