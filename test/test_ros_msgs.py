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


def test_box_velocity_roundtrip():
    msg = rm.box_to_msg([1.5, 2, 30, 40], TrackedBox(), t_us=5, source=TrackedBox.SOURCE_SNN, velocity=(120.5, -3.0))
    assert rm.msg_to_velocity(msg) == pytest.approx((120.5, -3.0))
    assert rm.msg_to_velocity(rm.box_to_msg([1.5, 2, 30, 40], TrackedBox(), t_us=5, source=0)) == (0.0, 0.0)
    # no velocity for an invalid box or from non-finite numbers
    assert rm.msg_to_velocity(rm.box_to_msg([np.nan, 2, 30, 40], TrackedBox(), t_us=5, source=0,
                                            velocity=(1.0, 1.0))) == (0.0, 0.0)
    msg.vx = float("nan")
    assert rm.msg_to_velocity(msg) == (0.0, 0.0)
