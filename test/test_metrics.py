import numpy as np
import pytest

from dashnet_ros.eval import metrics as m


def test_zero_order_hold_is_causal():
    held = m.zero_order_hold([10, 20], [[0, 0, 1, 1], [5, 5, 1, 1]], [5, 10, 15, 20, 25])
    assert np.isnan(held[0]).all()  # before the first output: no box
    np.testing.assert_array_equal(held[1:3, 0], [0, 0])
    np.testing.assert_array_equal(held[3:, 0], [5, 5])


def test_perfect_tracker_scores_one_and_offset_tracker_less():
    gt_t = np.arange(0, 100, 10)
    gt = np.tile([10.0, 10, 20, 20], (10, 1))
    s = m.score(gt_t, gt, gt_t, gt)
    assert s["miou"] == pytest.approx(1.0) and s["robustness"] == 0
    # AUC over thresholds 0..1: IoU 1 > tau for all tau < 1 -> 20/21
    assert s["auc"] == pytest.approx(20 / 21)
    shifted = gt + [10, 0, 0, 0]  # IoU = 10*20 / (800-200) = 1/3
    s2 = m.score(gt_t, shifted, gt_t, gt)
    assert s2["miou"] == pytest.approx(1 / 3)
    assert s2["precision20"] == 1.0
    assert s2["auc"] < s["auc"]


def test_robustness_is_zero_overlap_rate_and_nan_gt_ignored():
    gt_t = np.array([0, 10, 20, 30])
    gt = np.array([[0, 0, 10, 10]] * 3 + [[np.nan] * 4], dtype=float)
    out = np.array([[0, 0, 10, 10], [50, 50, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], dtype=float)
    s = m.score(gt_t, out, gt_t, gt)
    assert s["n_instants"] == 3
    assert s["robustness"] == pytest.approx(1 / 3)


def test_late_first_output_counts_as_failure():
    gt_t = np.array([0, 10])
    gt = np.array([[0, 0, 10, 10]] * 2, dtype=float)
    s = m.score([5], [[0, 0, 10, 10]], gt_t, gt)
    assert s["robustness"] == pytest.approx(0.5)


def test_pred18_decision_accuracy_counts_every_instant_with_absence():
    """Thirds of a 240 px image: left < 80 <= center <= 160 < right; no box = not_visible."""
    gt_t = np.array([0, 100, 200, 300, 400])
    gt = np.array([[10, 0, 20, 20],       # left (centre 20)
                   [100, 0, 20, 20],      # center (110)
                   [200, 0, 20, 20],      # right (210)
                   [np.nan] * 4,          # target not visible
                   [100, 0, 20, 20]], float)
    assert m.decision_accuracy(gt_t, gt, gt_t, gt, 240) == 1.0
    out = gt.copy()
    out[1] = [150, 0, 20, 20]             # centre 160: still center (band edges included)
    out[2] = [130, 0, 20, 20]             # centre 140: center, not right
    out[3] = [100, 0, 20, 20]             # a box where the target is absent
    assert m.decision_accuracy(gt_t, out, gt_t, gt, 240) == pytest.approx(3 / 5)
    # held causally: an output only from t=150 on leaves the first two instants without a box
    assert m.decision_accuracy([150], [[200, 0, 20, 20]], gt_t, gt, 240) == pytest.approx(1 / 5)
    s = m.score(gt_t, gt, gt_t, gt, 240)
    assert s["decision_acc"] == 1.0 and s["n_instants"] == 4       # IoU metrics leave out the absent one
    assert np.isnan(m.score(gt_t, gt, gt_t, gt)["decision_acc"])   # no width: not scored
