"""Attention mask and channel (eq. 11), eq. 12 augmentation, eq. 10 look-up."""
import numpy as np
import pytest

from dashnet_ros.fusion.attention import attention_channel, attention_mask, latest_before, noisy_box, shift_box

BOX = (10.0, 8.0, 12.0, 6.0)  # x, y, w, h -> columns 10..21, rows 8..13


def test_mask_one_inside_and_gaussian_outside():
    m = attention_mask(30, 40, BOX, sigma=4.0)
    assert m.shape == (30, 40) and m.dtype == np.float32
    assert np.all(m[8:14, 10:22] == 1.0)
    outside = np.ones_like(m, bool)
    outside[8:14, 10:22] = False
    assert np.all(m[outside] < 1.0) and np.all(m[outside] > 0.0)
    # column 25: pixel centre 25.5, distance 3.5 from the right border (x = 22)
    assert m[10, 25] == pytest.approx(np.exp(-(3.5**2) / (2 * 16)), rel=1e-5)
    # falls off monotonically away from the box, continuous at the border
    row = m[10, 22:]
    assert np.all(np.diff(row) < 0)
    assert m[10, 22] > 0.95


def test_mask_centre_mode_and_missing_box():
    m = attention_mask(30, 40, BOX, sigma=4.0, mode="centre")
    assert np.all(m[8:14, 10:22] == 1.0)
    # centre (16, 11): pixel (row 11, col 30) centre (30.5, 11.5)
    assert m[11, 30] == pytest.approx(np.exp(-((14.5**2) + 0.25) / 32), rel=1e-5)
    assert np.all(attention_mask(5, 6, None, 2.0) == 1.0)
    assert np.all(attention_mask(5, 6, [np.nan] * 4, 2.0) == 1.0)


@pytest.mark.parametrize("sigma", [0.0, -1.0, float("nan")])
def test_bad_sigma_refused(sigma):
    with pytest.raises(ValueError, match="sigma"):
        attention_mask(4, 4, BOX, sigma)


def test_attention_channel_is_elementwise_product():
    rng = np.random.default_rng(0)
    img = rng.random((30, 40)).astype(np.float32)
    a = attention_channel(img, BOX, 3.0)
    assert np.allclose(a, img * attention_mask(30, 40, BOX, 3.0))
    assert np.array_equal(a[8:14, 10:22], img[8:14, 10:22])
    with pytest.raises(ValueError):
        attention_channel(np.zeros((2, 3, 4)), BOX, 1.0)


def test_noisy_box_statistics_and_units():
    rng = np.random.default_rng(1)
    gt = np.array([100.0, 50.0, 40.0, 20.0])
    out = np.array([noisy_box(gt, rng) for _ in range(4000)])
    scale = out[:, 2] / gt[2]
    assert np.allclose(out[:, 3] / gt[3], scale, rtol=1e-5)  # aspect kept
    assert scale.mean() == pytest.approx(1.0, abs=0.01)
    assert scale.std() == pytest.approx(0.1, abs=0.01)
    cx = out[:, 0] + out[:, 2] / 2
    shift_in_widths = (cx - 120.0) / gt[2]
    assert shift_in_widths.std() == pytest.approx(0.1, abs=0.01)
    assert np.array_equal(noisy_box(gt, rng, 0.0, 0.0), gt.astype(np.float32))


def test_shift_box_moves_by_box_sizes():
    b = np.array([10, 20, 40, 20], np.float32)
    np.testing.assert_allclose(shift_box(b, (0.5, -0.25, 0.0)), [30, 15, 40, 20])
    np.testing.assert_allclose(shift_box(b, (0.0, 0.0, 1.0)), [-10, 10, 80, 40])   # sides doubled about the centre
    assert shift_box(b, (0, 0, -5.0))[2] == pytest.approx(4.0)                      # scale floored at 0.1
    assert np.isnan(shift_box(np.full(4, np.nan), (0.1, 0.1, 0.0))).all()


def test_latest_before_is_strict():
    t = [0, 100, 200]
    boxes = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert latest_before(t, boxes, 0) is None
    assert np.array_equal(latest_before(t, boxes, 100), boxes[0])
    assert np.array_equal(latest_before(t, boxes, 101), boxes[1])
    assert np.array_equal(latest_before(t, boxes, 10_000), boxes[2])
    with pytest.raises(ValueError, match="ascending"):
        latest_before([5, 1], boxes[:2], 3)
