"""The graph benchmark's own bookkeeping (bench/bench_graph.py): what it counts must be right."""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import bench_graph  # noqa: E402


def test_arrivals_keep_every_stamp_of_the_messages_received_in_the_interval():
    arr = bench_graph.Arrivals()
    assert not arr
    arr.add(100, np.array([480, 960], np.int64))    # numpy, array('q') or tuples, as the callbacks give
    arr.add(200, (1440,))
    arr.add(300, [1920, 2400, 2880])
    assert len(arr) == 3
    t, st, msgs = arr.between(150, 300)
    assert msgs == 2 and t.tolist() == [200, 300, 300, 300] and st.tolist() == [1440, 1920, 2400, 2880]
    t, st, msgs = arr.between(0, 99)
    assert msgs == 0 and len(t) == 0 and len(st) == 0
    arr.add(400, ())                                  # a message without boxes still counts as a message
    assert arr.between(350, 450)[2] == 1
