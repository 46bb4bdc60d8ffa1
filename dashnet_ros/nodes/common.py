"""Shared plumbing for the node shells: parameter declaration, QoS, warnings, spin."""
from __future__ import annotations

import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Param:
    """A node parameter: default, description (shown by ``ros2 param describe``) and an
    optional check returning an error text (or None) for a value."""

    name: str
    default: Any
    description: str
    check: Callable[[Any], str | None] | None = None
    read_only: bool = True


def positive(v):
    return None if v > 0 else "must be > 0"


def non_negative(v):
    return None if v >= 0 else "must be >= 0"


def one_of(*choices):
    return lambda v: None if v in choices else f"must be one of {', '.join(map(str, choices))}"


class ParameterError(ValueError):
    pass


def declare(node, params) -> dict:
    """Declare ``params`` on ``node`` with descriptors, validate, and return name -> value.

    Raises :class:`ParameterError` naming every invalid parameter.
    """
    from rcl_interfaces.msg import ParameterDescriptor
    from rclpy.exceptions import InvalidParameterTypeException

    values, errors = {}, []
    for p in params:
        # a float (or list of floats) may be given as integers (`init_box:=[120,64,24,18]`):
        # declared with dynamic typing, the value is checked and converted below
        floats = type(p.default) is float or (isinstance(p.default, list) and p.default
                                              and all(type(x) is float for x in p.default))
        desc = ParameterDescriptor(description=p.description, read_only=p.read_only, dynamic_typing=bool(floats))
        try:
            v = node.declare_parameter(p.name, p.default, desc).value
        except InvalidParameterTypeException as e:
            errors.append(f"{p.name}: {e}")
            continue
        if type(p.default) is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if isinstance(p.default, list) and floats and not isinstance(v, (str, bytes)):
            try:
                if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
                    v = [float(x) for x in v]
            except TypeError:
                pass
        if type(v) is not type(p.default):
            errors.append(f"{p.name}={v!r}: expected {type(p.default).__name__}")
            continue
        msg = p.check(v) if p.check else None
        if msg:
            errors.append(f"{p.name}={v!r}: {msg}")
        values[p.name] = v
    if errors:
        raise ParameterError("invalid parameter(s): " + "; ".join(errors))
    return values


def sensor_qos(depth: int = 100):
    """Sensor-data QoS (best effort, volatile) with a deeper queue for 1 kHz packets."""
    from rclpy.qos import QoSProfile, qos_profile_sensor_data

    q = QoSProfile(depth=depth)
    q.reliability = qos_profile_sensor_data.reliability
    q.durability = qos_profile_sensor_data.durability
    q.history = qos_profile_sensor_data.history
    return q


class RateLimitedWarner:
    """Warn about a named problem at most once per ``period_s`` (per problem kind)."""

    def __init__(self, logger, period_s: float = 2.0):
        self._logger = logger
        self._period = period_s
        self._last: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def __call__(self, kind: str, text: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        now = time.monotonic()
        if now - self._last.get(kind, -1e9) >= self._period:
            self._last[kind] = now
            n = self.counts[kind]
            self._logger.warning(f"{text} ({n} so far)" if n > 1 else text)


BOX_QOS_DEPTH = 200     # queue depth of the box topics (kHz SNN / fused boxes)


class StopOnSignals:
    """SIGINT/SIGTERM set :attr:`stop` instead of raising ``KeyboardInterrupt`` wherever
    the main thread happens to be.

    An exception raised in the middle of a callback can leave half-written state behind
    (a bag record with its length written and its data not: the bag is then unreadable),
    so the spin loops check the flag between callbacks.  A second signal raises
    ``KeyboardInterrupt`` as usual, for a node stuck in a callback.  Outside the main
    thread (signals cannot be handled there) this does nothing.
    """

    def __init__(self):
        self.stop = threading.Event()
        self._old = {}

    def _handler(self, signum, frame):
        if self.stop.is_set():
            raise KeyboardInterrupt
        self.stop.set()

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *_):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}


def spin_until(executor, stop: threading.Event, deadline_s: float | None = None) -> None:
    """Spin ``executor`` one callback at a time until ``stop`` is set, rclpy shuts down or
    ``time.monotonic()`` passes ``deadline_s``."""
    import rclpy

    while rclpy.ok() and not stop.is_set() and (deadline_s is None or time.monotonic() < deadline_s):
        executor.spin_once(timeout_sec=0.1)


def freeze_heap() -> None:
    """Move every object alive now (the imports: torch alone brings ~250,000) out of the
    garbage collector's reach (``gc.freeze``), so a later full collection walks only what
    the node made since.  Measured in snn_tracker: a full collection took 80-120 ms with
    them, a stall that queues ~50 event packets at 1 kHz."""
    import gc

    gc.collect()
    gc.freeze()


def run_node(factory, args=None, executor_factory=None) -> int:
    """Init rclpy, build the node with ``factory()``, spin until Ctrl-C / SIGTERM, then
    call the node's ``close()`` (if any) and shut down cleanly.

    ``executor_factory()``: an executor to spin the node with (None, or a factory returning
    None: a single-threaded executor).  Signals only set a flag checked between callbacks
    (:class:`StopOnSignals`), so ``close()`` never runs after a half-done callback.  A
    :class:`ParameterError` or a missing file at start is printed as one clear line and
    gives exit code 2.
    """
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    rclpy.init(args=args if args is not None else sys.argv)
    node = None
    executor = None
    with StopOnSignals() as signals:
        try:
            node = factory()
            executor = executor_factory() if executor_factory is not None else None
            if executor is None:
                executor = SingleThreadedExecutor()
            executor.add_node(node)
            freeze_heap()
            spin_until(executor, signals.stop)
        except (ParameterError, FileNotFoundError, ValueError) as e:
            name = node.get_name() if node is not None else getattr(factory, "__name__", "node")
            print(f"[{name}] error: {e}", file=sys.stderr)
            return 2
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        finally:
            if node is not None:
                if executor is not None:
                    executor.remove_node(node)
                close = getattr(node, "close", None)
                if close:
                    close()
                node.destroy_node()
            if rclpy.ok():
                rclpy.try_shutdown()
    return 0


def events_executor(context=None):
    """rclpy's EventsExecutor (a C++ event queue), or None where this rclpy has none.

    Measured here (2 shared cores, one TrackedBox per 0.5 ms across processes): ~150 µs of
    CPU per received message against ~420 µs with the SingleThreadedExecutor of
    ``rclpy.spin``.  It must be spun with ``spin_once(timeout_sec=...)``: its ``spin()``
    holds the GIL while waiting (other Python threads starve and Ctrl-C is not seen), and
    it does not pass ``MessageInfo`` to two-argument callbacks.
    """
    try:
        from rclpy.experimental import EventsExecutor
    except ImportError:  # rclpy before Kilted
        return None
    return EventsExecutor(context=context)


def run_fast_node(factory, args=None) -> int:
    """:func:`dashnet_ros.nodes.common.run_node` spun by :func:`events_executor` (the
    default executor where that is missing).  For the nodes on the 1 kHz box path."""
    return run_node(factory, args, executor_factory=events_executor)


def read_box_array(msg, warn, key: str, what: str, rows: bool = False):
    """A received ``TrackedBoxArray`` as a :class:`~dashnet_ros.io.ros_msgs.BoxBatch`
    (``rows``: as :class:`~dashnet_ros.io.ros_msgs.BoxRows` of Python lists), or None
    (ragged arrays); problems go to the rate-limited ``warn`` under ``key``, naming
    ``what`` the boxes are (e.g. "SNN box")."""
    from ..io import ros_msgs as rm

    try:
        batch = rm.array_msg_rows(msg) if rows else rm.array_msg_to_boxes(msg)
    except rm.MessageError as e:
        warn(key, f"bad {what} array ({e}); dropped")
        return None
    if batch.bad:
        warn(key, f"{batch.bad} {what}(es) marked valid are NaN or have no size; used as 'no box'")
    return batch


def box_array(t_us, boxes, source: int, frame_id: str, scores=None, velocities=None):
    """The ``TrackedBoxArray`` of ``N`` boxes (``t_us [N]``, ``boxes [N, 4]``, NaN or
    sizeless = not valid; ``scores [N]``; ``velocities [N, 2]`` px/s).  A new message each
    time: an in-process replay (:mod:`dashnet_ros.io.bags`) keeps the published objects."""
    from ..io import ros_msgs as rm
    from ..msg import TrackedBoxArray

    return rm.boxes_to_array_msg(t_us, boxes, TrackedBoxArray(), source=source, frame_id=frame_id, scores=scores,
                                 velocities=velocities)


def box_msgs(t_us, boxes, source: int, frame_id: str, scores=None, velocities=None):
    """The same boxes as :func:`box_array`, one ``TrackedBox`` message each."""
    from ..io import ros_msgs as rm
    from ..msg import TrackedBox

    msgs = []
    for i, (t, box) in enumerate(zip(t_us, boxes)):
        msgs.append(rm.box_to_msg(box, TrackedBox(), t_us=int(t), source=source, frame_id=frame_id,
                                  score=1.0 if scores is None else scores[i],
                                  velocity=None if velocities is None else velocities[i]))
    return msgs
