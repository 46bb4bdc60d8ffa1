"""Message <-> numpy conversion against the real generated message classes."""
import numpy as np
import pytest

from dashnet_ros.events import make_events
from dashnet_ros.io import ros_msgs as rm

import sensor_msgs.msg as sensor_msgs
from dashnet_ros.msg import EventPacket, TrackedBox


def _padded_image(img, encoding, pad, bigendian=False):
    msg = sensor_msgs.Image()
    h, w = img.shape[:2]
    dt = img.dtype.newbyteorder(">" if bigendian else "<")
    row = img.astype(dt).reshape(h, -1).view(np.uint8).reshape(h, -1)
    padded = np.zeros((h, row.shape[1] + pad), np.uint8)
    padded[:, : row.shape[1]] = row
    msg.height, msg.width, msg.encoding = h, w, encoding
    msg.is_bigendian = int(bigendian)
    msg.step = padded.shape[1]
    msg.data = padded.tobytes()
    return msg


def test_mono8_with_step_padding_roundtrip():
    img = np.random.default_rng(0).integers(0, 255, (7, 5), dtype=np.uint8)
    out = rm.image_to_gray(_padded_image(img, "mono8", pad=3))
    np.testing.assert_array_equal(out, img)


def test_mono16_bigendian():
    img = np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000
    out = rm.image_to_numpy(_padded_image(img, "mono16", pad=2, bigendian=True))
    np.testing.assert_array_equal(out, img)


def test_bgr8_to_gray_uses_bt601():
    img = np.zeros((2, 2, 3), np.uint8)
    img[..., 2] = 255  # pure red in BGR
    out = rm.image_to_gray(_padded_image(img, "bgr8", pad=0))
    assert abs(int(out[0, 0]) - 76) <= 1  # 0.299 * 255


def test_numpy_to_image_roundtrip():
    img = np.random.default_rng(1).integers(0, 255, (18, 24), dtype=np.uint8)
    msg = rm.numpy_to_image(img, sensor_msgs.Image())
    assert msg.step == 24 and msg.encoding == "mono8"
    np.testing.assert_array_equal(rm.image_to_gray(msg), img)


@pytest.mark.parametrize(
    "mutate, words",
    [
        (lambda m: setattr(m, "encoding", "yuv422"), "encoding"),
        (lambda m: setattr(m, "step", 2), "step"),
        (lambda m: setattr(m, "data", b"\0" * 5), "expected"),
        (lambda m: setattr(m, "width", 0), "zero size"),
    ],
)
def test_bad_images_are_named(mutate, words):
    msg = _padded_image(np.zeros((4, 4), np.uint8), "mono8", pad=0)
    mutate(msg)
    with pytest.raises(rm.MessageError, match=words):
        rm.image_to_gray(msg)


def test_event_packet_roundtrip_and_validation():
    ev = make_events([1, 2, 239], [0, 5, 179], [1000, 1001, 1900], [1, -1, 1])
    msg = rm.events_to_msg(ev, EventPacket(), width=240, height=180, t0_us=1000, t1_us=2000)
    assert msg.time_base_us == 1000 and msg.end_us == 2000
    assert rm.stamp_to_us(msg.header.stamp) == 1000
    back = rm.msg_to_events(msg)
    np.testing.assert_array_equal(back, ev)

    bad = rm.events_to_msg(ev, EventPacket(), width=100, height=180, t0_us=1000, t1_us=2000)
    with pytest.raises(rm.MessageError, match="out of range"):
        rm.msg_to_events(bad)
    trunc = EventPacket(width=240, height=180)
    trunc.events = bytes(20)
    with pytest.raises(rm.MessageError, match="multiple of the 16-byte"):
        rm.msg_to_events(trunc)
    unsorted = rm.events_to_msg(ev[::-1].copy(), EventPacket(), width=240, height=180, t0_us=0, t1_us=2000)
    with pytest.raises(rm.MessageError, match="not sorted"):
        rm.msg_to_events(unsorted)


def test_empty_event_packet_advances_clock():
    ev = make_events([], [], [], [])
    msg = rm.events_to_msg(ev, EventPacket(), width=240, height=180, t0_us=5000, t1_us=6000)
    assert msg.time_base_us == 5000 and msg.end_us == 6000
    assert len(rm.msg_to_events(msg)) == 0


def test_box_roundtrip_and_nan():
    msg = rm.box_to_msg([1.5, 2, 30, 40], TrackedBox(), t_us=123456789, source=TrackedBox.SOURCE_FUSED)
    t, b = rm.msg_to_box(msg)
    assert t == 123456789 and msg.valid
    np.testing.assert_allclose(b, [1.5, 2, 30, 40])
    msg = rm.box_to_msg([np.nan, 2, 30, 40], TrackedBox(), t_us=1, source=0)
    assert not msg.valid
    assert np.isnan(rm.msg_to_box(msg)[1]).all()
    msg = rm.box_to_msg([1.0, 2, 0.0, 40], TrackedBox(), t_us=1, source=0, velocity=(5.0, 5.0))   # no size
    assert not msg.valid and (msg.w, msg.vx) == (0.0, 0.0)


def test_box_velocity_roundtrip():
    msg = rm.box_to_msg([1.5, 2, 30, 40], TrackedBox(), t_us=5, source=TrackedBox.SOURCE_SNN, velocity=(120.5, -3.0))
    assert rm.msg_to_velocity(msg) == pytest.approx((120.5, -3.0))
    assert rm.msg_to_velocity(rm.box_to_msg([1.5, 2, 30, 40], TrackedBox(), t_us=5, source=0)) == (0.0, 0.0)
    # no velocity for an invalid box or from non-finite numbers
    assert rm.msg_to_velocity(rm.box_to_msg([np.nan, 2, 30, 40], TrackedBox(), t_us=5, source=0,
                                            velocity=(1.0, 1.0))) == (0.0, 0.0)
    msg.vx = float("nan")
    assert rm.msg_to_velocity(msg) == (0.0, 0.0)


def test_box_array_roundtrip_through_cdr_with_invalid_boxes_and_velocities():
    from rclpy.serialization import deserialize_message, serialize_message

    from dashnet_ros.msg import TrackedBoxArray

    t = [480, 960, 1440, 1920]
    boxes = [[1.5, 2.0, 3.0, 4.0], [np.nan] * 4, [5.0, 6.0, 0.0, 4.0], [7.0, 8.0, 9.0, 10.0]]   # NaN, sizeless
    vel = [[100.0, -50.0], [3.0, 3.0], [4.0, 4.0], [np.inf, 1.0]]
    m = rm.boxes_to_array_msg(t, boxes, TrackedBoxArray(), source=TrackedBox.SOURCE_SNN, frame_id="davis",
                              scores=[0.1, 0.2, 0.3, 0.4], velocities=vel)
    assert rm.stamp_to_us(m.header.stamp) == 1920 and m.header.frame_id == "davis"
    assert list(m.valid) == [True, False, False, True]
    back = rm.array_msg_to_boxes(deserialize_message(serialize_message(m), TrackedBoxArray))
    assert back.t_us.tolist() == t and back.bad == 0
    np.testing.assert_array_equal(back.boxes[0], boxes[0])
    assert np.isnan(back.boxes[1:3]).all() and back.boxes[3].tolist() == boxes[3]
    np.testing.assert_allclose(back.scores, [0.1, 0.2, 0.3, 0.4], rtol=1e-6)
    assert back.velocities.tolist() == [[100.0, -50.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]   # invalid / inf: 0, as in TrackedBox
    # the single-message view of the same boxes, and back
    singles = rm.unpack_boxes(m, TrackedBox)
    assert [rm.stamp_to_us(b.header.stamp) for b in singles] == t and [b.valid for b in singles] == list(m.valid)
    assert singles[0].vx == 100.0 and singles[3].source == TrackedBox.SOURCE_SNN
    again = rm.pack_boxes(singles, TrackedBoxArray())
    assert again == m
    # one path for both message kinds
    one = rm.box_batch(singles[0])
    assert one.t_us.tolist() == [480] and one.boxes[0].tolist() == boxes[0] and one.velocities[0].tolist() == vel[0]


def test_box_array_with_ragged_or_malformed_entries_is_named():
    from dashnet_ros.msg import TrackedBoxArray

    m = rm.boxes_to_array_msg([1, 2], [[1, 2, 3, 4]] * 2, TrackedBoxArray(), source=0)
    m.valid = [True]
    with pytest.raises(rm.MessageError, match="differ in length"):
        rm.array_msg_to_boxes(m)
    m.valid = [True, True]
    m.x[1] = float("nan")                              # says valid, carries NaN
    b = rm.array_msg_to_boxes(m)
    assert b.bad == 1 and np.isnan(b.boxes[1]).all() and np.isfinite(b.boxes[0]).all()


def test_box_rows_equal_the_numpy_batch_for_rclpy_and_numpy_fields():
    """The list reader the fuser uses on every SNN array and the numpy batch agree (rclpy
    messages carry array.array fields, rosbags messages numpy arrays)."""
    from types import SimpleNamespace

    from dashnet_ros.msg import TrackedBoxArray

    t = [480, 960, 1440, 1920, 2400]
    boxes = np.array([[1.1, 2.2, 3.3, 4.4], [np.nan] * 4, [5, 6, 0, 4], [7, 8, 9, 10], [1, 1, 2, 2]], np.float32)
    vel = np.array([[100.5, -50.25], [3, 3], [4, 4], [np.nan, 1.0], [1e-3, 2e-3]], np.float32)
    m = rm.boxes_to_array_msg(t, boxes, TrackedBoxArray(), source=1, scores=[0.1, 0.2, 0.3, 0.4, 0.5], velocities=vel)
    m.valid[4] = False                                  # finite but marked not valid
    m.x[3] = float("inf")                               # marked valid, not finite: counted bad
    numpy_fields = SimpleNamespace(**{f: np.array(getattr(m, f)) for f in ("t_us",) + rm._ARRAY_FLOATS},
                                   valid=np.array(m.valid))
    for msg in (m, numpy_fields):
        rows, batch = rm.array_msg_rows(msg), rm.array_msg_to_boxes(msg)
        assert rows.t_us == t == batch.t_us.tolist() and rows.bad == batch.bad == 1
        np.testing.assert_array_equal(np.array(rows.boxes, np.float32), batch.boxes)
        assert np.isnan(batch.boxes[[1, 2, 3, 4]]).all() and batch.boxes[0].tolist() == boxes[0].tolist()
        assert rows.velocities == batch.velocities.tolist() == [[100.5, -50.25], [0, 0], [0, 0], [0, 0], [0, 0]]
    with pytest.raises(ValueError, match="3 velocities for 5 boxes"):
        rm.boxes_to_array_msg(t, boxes, TrackedBoxArray(), source=1, velocities=vel[:3])
