"""Tests of the procedural worlds: scenes (tracking sequences) and the predator-prey arena."""
import numpy as np
import pytest

from dashnet_ros.davis.frames import Frame, FrameSource
from dashnet_ros.world.scenes import (TEST_SEEDS, TRAIN_SEED_MIN, SceneParams, SequenceSource,
                                      Spline, render_sequence)
from dashnet_ros.world.textures import Sprite, random_texture, shape_vertices


def _centres(b):
    return b[:, :2] + b[:, 2:] / 2


# --------------------------------------------------------------------------- scenes


def test_seed_ranges_disjoint():
    assert TRAIN_SEED_MIN == 1000
    assert min(TEST_SEEDS) == 0 and max(TEST_SEEDS) == 999
    assert TRAIN_SEED_MIN not in TEST_SEEDS


def test_scene_deterministic_per_seed():
    a, b, c = render_sequence(1001, 12), render_sequence(1001, 12), render_sequence(1002, 12)
    fa, fb, fc = list(a), list(b), list(c)
    for x, y in zip(fa, fb):
        assert x.t_us == y.t_us
        np.testing.assert_array_equal(x.image, y.image)
        np.testing.assert_array_equal(x.box, y.box)
    assert not np.array_equal(fa[5].image, fc[5].image)


def test_scene_frames_shape_and_times():
    src = render_sequence(1003, 9, width=64, height=48, fps=240.0)
    assert isinstance(src, FrameSource) and len(src) == 9
    frames = list(src)
    assert [f.index for f in frames] == list(range(9))
    assert [f.t_us for f in frames] == [round(k * 1e6 / 240) for k in range(9)]
    for f in frames:
        assert isinstance(f, Frame)
        assert f.image.shape == (48, 64) and f.image.dtype == np.float32
        assert 0.0 <= f.image.min() and f.image.max() <= 1.0
        assert f.box.shape == (4,) and f.box.dtype == np.float32
    t, boxes = src.gt_track()
    assert t.dtype == np.int64 and boxes.shape == (9, 4)
    np.testing.assert_array_equal(boxes[3], frames[3].box)


@pytest.mark.parametrize("seed", [1000, 1005, 1010, 7])
def test_box_encloses_rendered_prey(seed):
    src = render_sequence(seed, 60)
    for t_us in np.linspace(0, src.duration_us, 9).astype(np.int64) + 123:
        alpha = src.render_at(int(t_us), prey_only=True)
        full = src.box_at(int(t_us), clip=False)
        ys, xs = np.nonzero(alpha > 0.5)
        if len(xs) == 0:
            continue
        x, y, w, h = full
        # every covered pixel is inside the exact box (half a pixel of rasterisation + 1 px
        # of bilinear resampling)
        assert xs.min() >= x - 1.5 and xs.max() <= x + w + 1.5
        assert ys.min() >= y - 1.5 and ys.max() <= y + h + 1.5
        # and the box is tight when the object is fully inside the image
        b = src.box_at(int(t_us))
        if np.allclose(b, full, atol=1e-3):
            assert xs.min() <= x + 1.5 and xs.max() >= x + w - 1.5
            assert ys.min() <= y + 1.5 and ys.max() >= y + h - 1.5


def test_box_at_is_analytic_between_frames():
    src = render_sequence(1004, 30)
    t = src.frame_t_us(np.arange(30))
    fine = src.box_at(np.arange(0, t[-1], 521))  # ~8x oversampling
    assert fine.shape[1] == 4
    # a mid-frame box is not just the average of its neighbours in general, but it is close
    mid = src.box_at((t[10] + t[11]) // 2)
    assert np.all(np.abs(mid - (src.box_at(t[10]) + src.box_at(t[11])) / 2) < 1.0)
    # vectorised and scalar evaluation agree
    np.testing.assert_allclose(src.box_at(t)[17], src.box_at(int(t[17])), atol=1e-4)


def test_fast_motion_present():
    speeds = []
    for seed in range(1000, 1006):
        _, b = render_sequence(seed, 120).gt_track()
        d = np.linalg.norm(np.diff(_centres(b), axis=0), axis=1)
        speeds.append(np.nanmax(d))
    assert max(speeds) > 3.0          # several px per frame at 240 fps
    assert np.median(speeds) > 1.5


def test_prey_mostly_in_view():
    vis = []
    for seed in range(1000, 1006):
        _, b = render_sequence(seed, 240).gt_track()
        vis.append(np.mean(~np.isnan(b[:, 0])))
    assert np.mean(vis) > 0.9


def test_randomisation_options():
    src = render_sequence(1002, 5, n_distractors=(0, 0), flicker_amp=(0.0, 0.0))
    assert src.params.distractors == [] and src.params.flicker_amp == 0.0
    with pytest.raises(ValueError, match="unknown randomisation option"):
        render_sequence(1002, 5, bogus=1)
    with pytest.raises(ValueError, match="n_frames"):
        render_sequence(1002, 0)


def test_explicit_params_linear_motion():
    """A hand-built scene: white square moving at 3 px/frame on black, no camera."""
    fps = 240.0
    verts = shape_vertices(np.random.default_rng(0), "rectangle", 10, 10)
    prey = Sprite.solid(verts, 1.0)
    p = SceneParams(width=64, height=48, fps=fps, n_frames=8, prey=prey,
                    prey_path=Spline.linear([10.0, 20.0], [3.0 * fps, 0.0], 8 / fps))
    src = SequenceSource(p)
    t, b = src.gt_track()
    np.testing.assert_allclose(_centres(b)[:, 0], 10 + 3 * np.arange(8), atol=1e-3)
    np.testing.assert_allclose(b[:, 2:], 10, atol=1e-4)
    img = src.render_at(int(t[4]))
    assert img[20, 22] > 0.95 and img[20, 5] == 0.0 and img[20, 35] == 0.0
    # half-frame time gives the analytic mid position
    np.testing.assert_allclose(_centres(src.box_at(int((t[4] + t[5]) / 2))[None])[0, 0], 23.5,
                               atol=0.01)


def test_box_clipped_and_nan_when_out_of_view():
    verts = shape_vertices(np.random.default_rng(0), "ellipse", 10, 10)
    p = SceneParams(width=64, height=48, fps=100.0, n_frames=4, prey=Sprite.solid(verts),
                    prey_path=Spline.constant([-100.0, 20.0]))
    src = SequenceSource(p)
    assert np.all(np.isnan(src.box_at(0)))
    src.params.prey_path = Spline.constant([2.0, 20.0])
    b = src.box_at(0)
    assert b[0] == 0.0 and abs(b[2] - 7.0) < 1e-4


def test_spline_properties():
    rng = np.random.default_rng(3)
    sp = Spline(rng.normal(size=(10, 2)), 0.1)
    t = np.linspace(0, sp.t_end_s, 1001)
    v = sp(t)
    # C1 continuity: no jumps in finite differences across knots
    d = np.diff(v, axis=0)
    assert np.max(np.abs(np.diff(d, axis=0))) < 1e-3
    np.testing.assert_allclose(sp(-1.0), sp(0.0))
    np.testing.assert_allclose(sp(sp.t_end_s + 5), sp(sp.t_end_s))
    with pytest.raises(ValueError):
        Spline(np.zeros((3, 2)), 0.1)


def test_textures_in_range():
    rng = np.random.default_rng(0)
    for kind in ("noise", "stripes", "checker", "gradient", "blobs"):
        tex = random_texture(rng, 20, 30, kinds=(kind,))
        assert tex.shape == (20, 30) and tex.dtype == np.float32
        assert tex.min() >= 0 and tex.max() <= 1 and tex.std() > 0
    with pytest.raises(ValueError, match="unknown texture"):
        random_texture(rng, 4, 4, kinds=("nope",))
    for kind in ("ellipse", "rectangle", "polygon", "blob"):
        v = shape_vertices(rng, kind, 12, 7)
        np.testing.assert_allclose(v.max(0) - v.min(0), [12, 7])


def test_render_speed_shapes():
    src = render_sequence(1006, 4)
    imgs = [src.render_at(int(src.frame_t_us(k))) for k in range(4)]
    assert all(i.shape == (180, 240) and i.dtype == np.float32 for i in imgs)
    assert all(np.abs(a - b).mean() > 0 for a, b in zip(imgs, imgs[1:]))   # things move


# --------------------------------------------------------------------------- predator-prey

import math  # noqa: E402

from dashnet_ros.world.predator_prey import (PredatorPreyWorld, WorldSource,  # noqa: E402
                                             pursuit_controller)


def _face_prey(w, offset=0.0):
    d = w.prey[:2] - w.pred[:2]
    w.pred[2] = math.atan2(d[1], d[0]) + offset


def test_world_deterministic_per_seed():
    a, b, c = PredatorPreyWorld(seed=5), PredatorPreyWorld(seed=5), PredatorPreyWorld(seed=6)
    for w in (a, b, c):
        w.set_cmd(0.5, 0.7)
        for _ in range(20):
            w.step(1 / 240)
    np.testing.assert_array_equal(a.pred, b.pred)
    np.testing.assert_array_equal(a.prey, b.prey)
    np.testing.assert_array_equal(a.render(), b.render())
    assert not np.array_equal(a.render(), c.render())


def test_zero_cmd_keeps_predator_still_and_unicycle_integration():
    w = PredatorPreyWorld(seed=1)
    p0 = w.pred.copy()
    for _ in range(50):
        w.step(0.01)
    np.testing.assert_array_equal(w.pred, p0)
    # pure rotation: position fixed, heading advances by omega * t
    w.set_cmd(0.0, 1.0)
    w.step(0.5)
    np.testing.assert_allclose(w.pred[:2], p0[:2])
    assert abs(((w.pred[2] - p0[2] - 0.5) + np.pi) % (2 * np.pi) - np.pi) < 1e-9
    # a quarter circle: v / omega radius
    w = PredatorPreyWorld(seed=1, arena_m=20.0)
    w.pred[:] = (10.0, 10.0, 0.0)
    w.set_cmd(0.5, 1.0)
    w.step(np.pi / 2)
    np.testing.assert_allclose(w.pred, [10.5, 10.5, np.pi / 2], atol=1e-9)
    # commands are clamped to the robot's limits
    w.set_cmd(100.0, -100.0)
    assert w.cmd == (w.pred_v_max_mps, -w.pred_omega_max_radps)


def test_predator_stays_in_arena():
    w = PredatorPreyWorld(seed=2, arena_m=2.0)
    w.set_cmd(1.0, 0.0)
    w.step(5.0)
    assert np.all(w.pred[:2] >= w.PRED_RADIUS_M - 1e-9)
    assert np.all(w.pred[:2] <= 2.0 - w.PRED_RADIUS_M + 1e-9)
    assert np.all(w.prey[:2] >= 0) and np.all(w.prey[:2] <= 2.0)


def test_prey_flees_when_close():
    w = PredatorPreyWorld(seed=4, arena_m=6.0)
    w.pred[:] = (3.0, 3.0, 0.0)
    w.prey[:] = (3.6, 3.0, np.pi / 2)   # close, heading sideways
    d0 = w.distance_m()
    for _ in range(50):
        w.step(0.01)
    assert w.distance_m() > d0 + 0.15
    # its top speed is below the predator's
    assert w.prey_speed <= w.prey_v_max_mps < w.pred_v_max_mps


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_pursuit_on_gt_bearing_catches_prey(seed):
    w = PredatorPreyWorld(seed=seed)
    ctl = pursuit_controller()
    t, dt = 0.0, 0.01
    while not w.caught(0.3) and t < 30.0:
        w.set_cmd(*ctl(w, t))
        w.step(dt)
        t += dt
    assert w.caught(0.3), f"seed {seed}: not caught within 30 s (distance {w.distance_m():.2f} m)"


def test_world_gt_box_encloses_rendered_prey():
    checked = 0
    for seed in range(6):
        w = PredatorPreyWorld(seed=seed)
        for off, dist in ((0.0, None), (0.25, None), (-0.3, 1.0), (0.1, 0.5)):
            if dist is not None:   # move the prey to a given distance ahead
                th = w.pred[2]
                w.prey[:2] = w.pred[:2] + dist * np.array([math.cos(th), math.sin(th)])
            _face_prey(w, off)
            b = w.gt_box()
            alpha = w.render(prey_only=True)
            ys, xs = np.nonzero(alpha > 0.5)
            if b is None:
                assert len(xs) == 0
                continue
            x, y, bw, bh = b
            assert xs.min() >= x - 1 and xs.max() <= x + bw + 1
            assert ys.min() >= y - 1 and ys.max() <= y + bh + 1
            assert xs.min() <= x + 1.5 and xs.max() >= x + bw - 1.5   # tight
            assert ys.min() <= y + 1.5 and ys.max() >= y + bh - 1.5
            checked += 1
    assert checked >= 10


def test_prey_behind_camera_not_visible():
    w = PredatorPreyWorld(seed=0)
    _face_prey(w, np.pi)
    assert w.gt_box() is None
    assert w.render(prey_only=True).max() == 0.0


def test_render_heading_shifts_panorama_and_shapes():
    w = PredatorPreyWorld(seed=3, width=64, height=48, hfov_deg=70)
    img0 = w.render()
    assert img0.shape == (48, 64) and img0.dtype == np.float32
    assert 0 <= img0.min() and img0.max() <= 1 and img0.std() > 0.01
    w.set_cmd(0.0, 1.0)
    w.step(0.05)
    assert np.abs(w.render() - img0).mean() > 0.01


def test_world_source_frames_and_gt_track():
    w = PredatorPreyWorld(seed=7, width=64, height=48, fps=100.0)
    src = w.as_source(duration_s=0.1, cmd_fn=pursuit_controller())
    assert isinstance(src, WorldSource) and len(src) == 10
    t_gt, b_gt = src.gt_track()      # from a copy; the live world is untouched
    assert w.t_us == 0
    frames = list(src)
    assert [f.t_us for f in frames] == [k * 10_000 for k in range(10)]
    assert frames[0].image.shape == (48, 64)
    np.testing.assert_array_equal(t_gt, [f.t_us for f in frames])
    np.testing.assert_allclose(b_gt, np.stack([f.box for f in frames]), equal_nan=True)
    assert w.t_us == 90_000
    with pytest.raises(TypeError):
        len(w.as_source())
    assert w.as_source(duration_s=1.0).gt_track() is None      # closed loop: no prediction
    with pytest.raises(ValueError, match="duration_s"):
        w.as_source(duration_s=0)


def test_world_bad_parameters():
    with pytest.raises(ValueError, match="hfov_deg"):
        PredatorPreyWorld(hfov_deg=0)
    with pytest.raises(ValueError, match="arena_m"):
        PredatorPreyWorld(arena_m=0.1)
    with pytest.raises(ValueError, match="prey_v_max_mps"):
        PredatorPreyWorld(prey_v_max_mps=2.0)


def test_longer_sequence_of_same_seed_starts_the_same():
    short, long = render_sequence(1007, 10), render_sequence(1007, 100)
    t = short.frame_t_us(np.arange(10))
    np.testing.assert_array_equal(short.box_at(t), long.box_at(t))
    np.testing.assert_array_equal(short.render_at(int(t[7])), long.render_at(int(t[7])))
