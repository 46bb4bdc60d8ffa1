import numpy as np
import pytest

from dashnet_ros import events as E


def test_records_are_16_bytes_and_survive_concatenation():
    a = E.make_events([1, 2], [3, 4], [10, 20], [1, -1])
    b = E.make_events([5], [6], [30], [1])
    c = E.concat_events([a, E.empty_events(), b])
    assert c.dtype == E.EVENT_DTYPE and c.dtype.itemsize == 16
    assert len(E.to_bytes(c)) == 48
    back = E.from_buffer(E.to_bytes(c))
    np.testing.assert_array_equal(back["t_us"], [10, 20, 30])


def test_concatenation_keeps_every_field_from_views_strided_slices_and_other_layouts():
    rng = np.random.default_rng(0)
    a = E.make_events(rng.integers(0, 240, 50), rng.integers(0, 180, 50), np.arange(50), rng.choice([-1, 1], 50))
    view = E.from_buffer(E.to_bytes(a))[10:20]                 # read-only view, as from a message
    strided = a[20:40:3]
    packed = np.zeros(2, dtype=[("t_us", "<i8"), ("x", "<u2"), ("y", "<u2"), ("p", "i1")])   # 13-byte records
    packed["t_us"], packed["x"], packed["y"], packed["p"] = [99, 100], [7, 8], [9, 10], [1, -1]
    for chunks in ([view, strided], [view, strided, packed]):
        c = E.concat_events(chunks)
        assert c.dtype == E.EVENT_DTYPE and len(c) == sum(len(x) for x in chunks)
        for f in ("t_us", "x", "y", "p"):
            np.testing.assert_array_equal(c[f], np.concatenate([x[f] for x in chunks]))


def test_make_events_sorts_by_time_and_slice_is_half_open():
    ev = E.make_events([0, 1, 2], [0, 0, 0], [30, 10, 20], [1, 1, -1])
    assert E.is_sorted(ev) and list(ev["x"]) == [1, 2, 0]
    assert list(E.slice_time(ev, 10, 30)["t_us"]) == [10, 20]


def test_from_buffer_rejects_partial_records():
    with pytest.raises(ValueError, match="16-byte"):
        E.from_buffer(b"\0" * 17)


def _stats_both(ev):
    """The compiled pass and the numpy reference on the same array."""
    E._stats(ev)                          # builds the kernel (or notes that numba is missing)
    assert E._stats_kernel is not False, "numba is a dependency: the compiled check must be in use"
    return E._stats(ev), E._numpy_stats(ev)


@pytest.mark.parametrize("case", ["good", "x", "y", "unsorted", "polarity", "one"])
def test_compiled_event_check_equals_numpy_and_names_the_problem(case):
    rng = np.random.default_rng(1)
    n = 1 if case == "one" else 500
    ev = E.make_events(rng.integers(0, 240, n), rng.integers(0, 180, n), np.sort(rng.integers(0, 10**6, n)),
                       rng.choice([-1, 1], n))
    words = None
    if case == "x":
        ev["x"][17] = 240
        words = "out of range.*x=240"
    elif case == "y":
        ev["y"][3] = 1000
        words = "out of range.*y=1000"
    elif case == "unsorted":
        ev["t_us"][200] = ev["t_us"][199] - 1
        ev["t_us"][300] = 0
        words = "event 200 is earlier than event 199"
    elif case == "polarity":
        ev["p"][[5, 6, 7]] = 0
        words = "3 events have polarity"
    # a read-only strided view, as from_buffer gives for a message
    view = E.from_buffer(E.to_bytes(ev))
    compiled, reference = _stats_both(view)
    assert compiled == reference
    problem = E.check(view, 240, 180)
    if words is None:
        assert problem is None
    else:
        assert problem is not None and __import__("re").search(words, problem), problem
    assert E.check(E.empty_events(), 240, 180) is None
