"""Temporal complementary filter (eq. 7-9)."""
import math

import numpy as np
import pytest

from dashnet_ros.fusion.tcf import TCF, tcf_weight

ANN = np.array([10.0, 20.0, 30.0, 40.0], np.float32)
SNN = np.array([50.0, 60.0, 10.0, 20.0], np.float32)
NAN = np.full(4, np.nan, np.float32)


def test_weight_formula():
    assert tcf_weight(0.0, 1 / 60) == 0.0
    d = 0.7**2
    assert tcf_weight(0.7, 1.0) == pytest.approx(1 - 2 / (1 + math.exp(d)))
    assert tcf_weight(1 / 60, 1 / 60) == pytest.approx(0.462, abs=1e-3)
    assert tcf_weight(10.0, 1 / 60) == 1.0  # no overflow


def test_at_ann_time_ann_wins_far_away_snn_wins():
    f = TCF()
    f.add_ann(1_000_000, ANN)
    assert np.allclose(f.fuse(1_000_000, SNN), ANN)
    assert f.last_weight == 0.0
    assert np.allclose(f.fuse(1_500_000, SNN), SNN, atol=1e-4)
    assert f.last_weight > 0.9999


def test_blend_in_centre_form():
    f = TCF(time_scale_s=0.01)
    f.add_ann(0, ANN)
    out = f.fuse(10_000, SNN)  # D = 1
    w = tcf_weight(0.01, 0.01)
    assert f.last_weight == pytest.approx(w)
    c_ann = np.array([25.0, 40.0, 30.0, 40.0])
    c_snn = np.array([55.0, 70.0, 10.0, 20.0])
    c = w * c_snn + (1 - w) * c_ann
    assert np.allclose(out, [c[0] - c[2] / 2, c[1] - c[3] / 2, c[2], c[3]], atol=1e-4)


def test_nan_and_missing_handling():
    f = TCF()
    assert np.array_equal(f.fuse(0, SNN), SNN)  # no ANN yet
    assert np.all(np.isnan(f.fuse(0, NAN)))
    f.add_ann(0, ANN)
    assert np.allclose(f.fuse(5_000, NAN), ANN)
    g = TCF()
    g.add_ann(0, NAN)
    assert np.allclose(g.fuse(1_000, SNN), SNN)
    assert np.all(np.isnan(g.fuse(1_000, NAN)))


def test_nearest_selection_and_causal():
    f = TCF()
    other = ANN + 100
    f.add_ann(0, ANN)
    f.add_ann(33_000, other)
    assert f.nearest_ann(10_000)[0] == 0
    assert f.nearest_ann(20_000)[0] == 33_000
    assert f.nearest_ann(16_500)[0] == 0  # tie -> earlier
    assert np.allclose(f.fuse(33_000, SNN), other)
    c = TCF(causal=True)
    c.add_ann(0, ANN)
    c.add_ann(33_000, other)
    assert c.nearest_ann(30_000)[0] == 0
    assert c.nearest_ann(-5) is None


def test_history_bounded_and_bad_params():
    f = TCF(max_history=3)
    for k in range(10):
        f.add_ann(k * 1000, ANN)
    assert len(f) == 3 and f.nearest_ann(0)[0] == 7000
    with pytest.raises(ValueError, match="time_scale_s"):
        TCF(time_scale_s=0)
    assert TCF.for_frame_rate(30).time_scale_s == pytest.approx(1 / 60)


def test_fuse_equals_eq9_written_with_the_box_module():
    """The float fast path of fuse() gives exactly eq. 9 as written with numpy and the
    float32 conversions of dashnet_ros.boxes (the nodes' replays compare boxes bit for bit)."""
    from dashnet_ros.boxes import cxcywh_to_xywh, xywh_to_cxcywh

    rng = np.random.default_rng(5)
    tcf = TCF(time_scale_s=1 / 60)
    ann_t = [0, 33_333, 66_667]
    ann = [rng.uniform(0, 200, 4).astype(np.float32) + np.float32([0, 0, 5, 5]) for _ in ann_t]
    for t, b in zip(ann_t, ann):
        tcf.add_ann(t, b)
    for _ in range(300):
        t = int(rng.integers(0, 80_000))
        s = (rng.uniform(0, 200, 4) + [0, 0, 5, 5]).astype(rng.choice([np.float32, np.float64]))
        got = tcf.fuse(t, s)
        j = int(np.argmin([(abs(ta - t), ta) for ta in ann_t], axis=0)[0])
        w = tcf_weight((ann_t[j] - t) * 1e-6, 1 / 60)
        a = xywh_to_cxcywh(ann[j]).astype(np.float64)
        ref = cxcywh_to_xywh(w * xywh_to_cxcywh(s).astype(np.float64) + (1 - w) * a).astype(np.float32)
        assert got.dtype == np.float32 and np.array_equal(got, ref), (t, s, got, ref)


def test_ann_box_is_moved_by_the_snn_motion_since_its_frame():
    f = TCF(time_scale_s=1 / 60)
    f.add_ann(0, ANN)                                      # centre (25, 40)
    # 10 windows of 500 us, the SNN sees the target move +2 px in x, -1 px in y per window
    for k in range(1, 11):
        out = f.fuse(k * 500, SNN, motion_px=(2.0, -1.0))
    w = f.last_weight
    a = np.array([25.0 + 20.0, 40.0 - 10.0, 30.0, 40.0])   # the ANN box moved by the SNN's motion
    s = np.array([55.0, 70.0, 10.0, 20.0])
    c = w * s + (1 - w) * a
    np.testing.assert_allclose(out, [c[0] - c[2] / 2, c[1] - c[3] / 2, c[2], c[3]], atol=1e-3)
    # motion before the ANN's frame does not count: a new frame at 5 ms starts from zero
    f.add_ann(5_000, ANN)
    out = f.fuse(5_000, SNN)
    np.testing.assert_allclose(out, ANN, atol=1e-4)
    out = f.fuse(5_500, SNN, motion_px=(4.0, 0.0))
    assert f.motion_since(5_000, 5_500) == (4.0, 0.0)
    assert f.motion_since(0, 5_500) == (24.0, -10.0)
    # eq. 9 as written ignores the motion
    g = TCF(time_scale_s=1 / 60, propagate=False)
    g.add_ann(0, ANN)
    for k in range(1, 11):
        out_plain = g.fuse(k * 500, SNN, motion_px=(2.0, -1.0))
    ref = TCF(time_scale_s=1 / 60)
    ref.add_ann(0, ANN)
    np.testing.assert_array_equal(out_plain, ref.fuse(5_000, SNN))


def test_motion_history_is_bounded_and_old_frames_are_not_propagated():
    from dashnet_ros.fusion.tcf import MOTION_HISTORY

    f = TCF()
    f.add_ann(0, ANN)
    n = 2 * MOTION_HISTORY + 1
    for k in range(1, n + 1):
        f.add_motion(k, 1.0, 0.0)
    assert len(f._mt) <= 2 * MOTION_HISTORY
    assert f.motion_since(n - 10, n) == (10.0, 0.0)
    mx, my = f.motion_since(0, n)      # the frame is older than the motion kept: unknown
    assert math.isnan(mx) and math.isnan(my)
    out = f.fuse(n, SNN)               # falls back to the unmoved ANN box
    plain = TCF(propagate=False)
    plain.add_ann(0, ANN)
    np.testing.assert_array_equal(out, plain.fuse(n, SNN))
    f.add_motion(5, 100.0, 0.0)        # out of order: ignored
    assert f.motion_since(n - 1, n) == (1.0, 0.0)
    f.reset()
    assert f.motion_since(0, n) == (0.0, 0.0)


def _reference_fuse(t_s, snn, t_a, ann, motion, scale_s):
    """Eq. 7-9 written with numpy float32 boxes (centre form in float32, blend in float64)."""
    a = np.concatenate([ann[:2] + ann[2:] / np.float32(2), ann[2:]]).astype(np.float64)
    a[:2] += motion
    if not np.isfinite(snn).all():
        a32 = a.astype(np.float32)
        return np.concatenate([a32[:2] - a32[2:] / np.float32(2), a32[2:]])
    w = tcf_weight((t_a - t_s) * 1e-6, scale_s)
    sc = np.concatenate([snn[:2] + snn[2:] / np.float32(2), snn[2:]]).astype(np.float64)
    h = (w * sc + (1.0 - w) * a).astype(np.float32)
    return np.array([h[0] - h[2] / 2, h[1] - h[3] / 2, h[2], h[3]], np.float64).astype(np.float32)


def test_fuse_rounds_as_float32_boxes_bit_for_bit():
    """The filter runs on Python floats (per SNN window); its result must be the float32
    formulation's to the last bit, with and without motion propagation and a NaN SNN box."""
    rng = np.random.default_rng(5)
    for trial in range(200):
        f = TCF()
        ann = (rng.random(4) * [200, 150, 40, 30] + [0, 0, 1, 1]).astype(np.float32)
        snn = (rng.random(4) * [200, 150, 40, 30] + [0, 0, 1, 1]).astype(np.float32)
        if trial % 10 == 0:
            snn[:] = np.nan
        t_a, t_s = 0, int(rng.integers(1, 40_000))
        f.add_ann(t_a, ann)
        d = (rng.random(2) * 3 - 1.5) if trial % 2 else np.zeros(2)
        out = f.fuse(t_s, snn, motion_px=tuple(d))          # one window: motion since t_a is d
        ref = _reference_fuse(t_s, snn, t_a, ann, d.astype(np.float64), f.time_scale_s)
        assert out.dtype == np.float32 and out.tobytes() == ref.tobytes(), (trial, out, ref)
