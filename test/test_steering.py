"""The steering law (dashnet_ros/steering.py): bearing, approach speed, decisions, lost target."""
import math

import numpy as np
import pytest

from dashnet_ros import steering as st
from dashnet_ros.world.predator_prey import PredatorPreyWorld

CFG = st.SteeringConfig(width=240, height=180, hfov_deg=60.0, k_turn=4.0, max_angular_radps=3.0,
                        max_linear_mps=0.8, target_fill=0.5, lost_timeout_us=100_000)


def _box_at(u, w=20.0, h=30.0, v=90.0):
    return np.array([u - w / 2, v - h / 2, w, h], np.float32)


def test_bearing_matches_the_world_camera():
    # the world's pinhole: a prey straight ahead is at bearing 0, one at the image edge at hfov/2
    w = PredatorPreyWorld(seed=3)
    cfg = st.SteeringConfig(width=w.width, height=w.height, hfov_deg=w.hfov_deg)
    assert cfg.fx == pytest.approx(w.f_px) and cfg.cx == pytest.approx(w.cx)
    assert st.bearing_rad(_box_at(cfg.cx), cfg.fx, cfg.cx) == pytest.approx(0.0, abs=1e-9)
    edge = st.bearing_rad(_box_at(cfg.cx + cfg.width / 2), cfg.fx, cfg.cx)
    assert edge == pytest.approx(math.radians(30.0), abs=1e-6)
    # and against the world's own ground truth: the prey's box centre gives its true bearing
    for seed in range(20):
        w = PredatorPreyWorld(seed=seed)
        box = w.gt_box()
        xr, zc, _, _ = w._prey_in_camera()
        if box is None or box[0] <= 0 or box[0] + box[2] >= w.width - 1:
            continue  # clipped boxes do not centre on the prey
        assert st.bearing_rad(box, cfg.fx, cfg.cx) == pytest.approx(math.atan2(xr, zc), abs=0.03)


def test_turns_toward_the_target_rep103_sign():
    right = st.command_for_box(_box_at(CFG.cx + 80), CFG)
    left = st.command_for_box(_box_at(CFG.cx - 80), CFG)
    ahead = st.command_for_box(_box_at(CFG.cx), CFG)
    assert right.omega_radps < 0 < left.omega_radps     # counter-clockwise positive
    assert right.omega_radps == pytest.approx(-left.omega_radps, rel=1e-6)
    assert ahead.omega_radps == 0.0 and ahead.bearing_rad == pytest.approx(0.0)
    # proportional, then clipped to the limit
    small = st.command_for_box(_box_at(CFG.cx + 5), CFG)
    assert small.omega_radps == pytest.approx(-4.0 * small.bearing_rad)
    far = st.command_for_box(_box_at(239), CFG)           # bearing 0.52 rad: 4 * 0.52 > 1.5
    assert far.omega_radps == pytest.approx(-4.0 * far.bearing_rad)
    slow = st.SteeringConfig(max_angular_radps=1.5)
    assert st.command_for_box(_box_at(239), slow).omega_radps == pytest.approx(-1.5)


def test_approaches_until_the_box_fills_the_target_fraction():
    speeds = [st.command_for_box(_box_at(CFG.cx, w=s * 0.6, h=s), CFG).v_mps for s in (10, 30, 60, 89, 90, 150)]
    assert speeds[0] > speeds[1] > speeds[2] > speeds[3] > 0          # slower as it gets closer
    assert speeds[4] == 0.0 and speeds[5] == 0.0                       # h/H = 0.5 reached: stop
    assert speeds[0] == pytest.approx(0.8 * (1 - (10 / 180) / 0.5))
    # off-axis targets: turn first, drive slower
    assert st.command_for_box(_box_at(220, h=20), CFG).v_mps < st.command_for_box(_box_at(CFG.cx, h=20), CFG).v_mps


def test_decisions_split_the_view_in_thirds():
    assert st.decision(_box_at(30), 240) == st.LEFT
    assert st.decision(_box_at(79), 240) == st.LEFT
    assert st.decision(_box_at(81), 240) == st.CENTER
    assert st.decision(_box_at(159), 240) == st.CENTER
    assert st.decision(_box_at(161), 240) == st.RIGHT
    assert st.decision(np.full(4, np.nan), 240) == st.NOT_VISIBLE
    assert st.command_for_box(_box_at(200), CFG).decision == st.RIGHT


def test_holds_through_dropouts_and_stops_when_lost():
    law = st.SteeringLaw(CFG)
    assert law.check(0) == st.STOP                                 # nothing seen yet
    c = law.update(1_000, _box_at(200))
    assert c.decision == st.RIGHT and not c.stopped
    nan = np.full(4, np.nan, np.float32)
    assert law.update(50_000, nan) == c                            # short drop-out: keep going
    assert law.check(101_000) == c
    lost = law.update(101_001, nan)                                # > lost_timeout_us: stop
    assert lost.stopped and lost.decision == st.NOT_VISIBLE
    assert law.check(200_000).stopped
    again = law.update(210_000, _box_at(40))                       # found again
    assert again.decision == st.LEFT and again.omega_radps > 0
    assert law.lose().stopped and law.last.stopped
    law.update(300_000, _box_at(40))
    law.reset()
    assert law.check(300_001).stopped


def test_zero_size_and_nan_boxes_never_move_the_robot():
    for b in ([10, 10, 0, 5], [10, 10, 5, -1], [np.nan, 1, 2, 3], [np.inf, 1, 2, 3]):
        assert st.command_for_box(np.array(b, np.float32), CFG).stopped


def test_camera_info_overrides_the_field_of_view():
    law = st.SteeringLaw(CFG)
    law.set_camera(320, 240, fx_px=100.0, cx_px=160.0)
    c = law.update(0, _box_at(260, h=10, v=120))
    assert c.bearing_rad == pytest.approx(math.atan(100 / 100.0))
    assert law.cfg.width == 320 and law.cfg.height == 240


def test_invalid_settings_are_refused_by_name():
    with pytest.raises(ValueError, match="target_fill"):
        st.SteeringConfig(target_fill=0.0)
    with pytest.raises(ValueError, match="hfov_deg"):
        st.SteeringConfig(hfov_deg=200.0)


def test_closed_loop_with_ground_truth_boxes_pursues_the_prey():
    # the law alone, fed the world's exact boxes, closes in on the fleeing prey and keeps it
    # centred in view (it stops approaching at target_fill, so it holds a stand-off)
    w = PredatorPreyWorld(seed=1, width=120, height=90)
    law = st.SteeringLaw(st.SteeringConfig(width=120, height=90, hfov_deg=w.hfov_deg, target_fill=0.7,
                                           max_linear_mps=1.0))
    d0 = w.distance_m()
    t_us, seen, bearings, dists = 0, 0, [], []
    n = int(15 / 0.02)                          # 15 s at 50 Hz
    for _ in range(n):
        box = w.gt_box()
        c = law.update(t_us, box if box is not None else np.full(4, np.nan))
        if c.stopped and c.decision == st.NOT_VISIBLE:
            w.set_cmd(0.0, 2.0)                  # not visible: search by turning (the node stops)
        else:
            w.set_cmd(c.v_mps, c.omega_radps)
            seen += 1
            bearings.append(abs(c.bearing_rad))
        w.step(0.02)
        t_us += 20_000
        dists.append(w.distance_m())
    assert seen > 0.9 * n, f"prey in view only {seen}/{n} steps"
    assert np.median(bearings) < np.radians(5)
    assert d0 > 1.2 and np.median(dists[n // 2:]) < 0.8 and min(dists) < 0.6
