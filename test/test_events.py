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


def test_make_events_sorts_by_time_and_slice_is_half_open():
    ev = E.make_events([0, 1, 2], [0, 0, 0], [30, 10, 20], [1, 1, -1])
    assert E.is_sorted(ev) and list(ev["x"]) == [1, 2, 0]
    assert list(E.slice_time(ev, 10, 30)["t_us"]) == [10, 20]


def test_from_buffer_rejects_partial_records():
    with pytest.raises(ValueError, match="16-byte"):
        E.from_buffer(b"\0" * 17)
