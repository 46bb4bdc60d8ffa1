"""DVS event models: eq. 14 (PaperDVS) and the per-pixel model (PixelDVS)."""
import cv2
import numpy as np
import pytest

from dashnet_ros.davis.dvs import PaperDVS, PixelDVS, make_dvs
from dashnet_ros.events import EVENT_DTYPE, is_sorted

QUIET = dict(sigma_threshold=0.0, leak_rate_hz=0.0, shot_noise_rate_hz=0.0, refractory_us=0.0)


def _texture(h=48, w=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.05, 0.95, (h, w)).astype(np.float32)


# --- PaperDVS (eq. 14) -----------------------------------------------------------------
def test_paper_polarity_and_count_on_known_delta():
    a = np.full((4, 5), 0.5, np.float32)
    b = a.copy()
    b[0, 0] = 0.5 + 0.35   # +3 events at θ = 0.1
    b[1, 2] = 0.5 - 0.21   # -2 events
    b[2, 3] = 0.5 + 0.05   # below θ: nothing
    b[3, 4] = 0.5 - 0.1001  # just above θ: -1
    dvs = PaperDVS(threshold=0.1, seed=1)
    dvs.reset(a, 1000)
    ev = dvs.step(b, 2000)
    assert ev.dtype == EVENT_DTYPE
    got = {}
    for e in ev:
        got.setdefault((int(e["x"]), int(e["y"])), []).append(int(e["p"]))
    assert got == {(0, 0): [1, 1, 1], (2, 1): [-1, -1], (4, 3): [-1]}
    assert is_sorted(ev)
    assert ev["t_us"].min() > 1000 and ev["t_us"].max() <= 2000


def test_paper_timestamps_quantised_and_uniform():
    a = np.zeros((30, 40), np.float32)
    b = np.full((30, 40), 0.95, np.float32)          # 9 events per pixel
    dvs = PaperDVS(threshold=0.1, dt_e_us=10, seed=3)
    dvs.reset(a, 0)
    ev = dvs.step(b, 1000)
    assert len(ev) == 30 * 40 * 9
    t = ev["t_us"]
    assert np.all(t % 10 == 0) and t.min() >= 10 and t.max() <= 1000
    # uniform over the 100 quanta: every quantum is used, and the mean is near the middle
    assert len(np.unique(t)) == 100
    assert abs(t.mean() - 505) < 15
    # seeded: the same seed gives the same events
    dvs2 = PaperDVS(threshold=0.1, dt_e_us=10, seed=3)
    dvs2.reset(a, 0)
    assert np.array_equal(dvs2.step(b, 1000), ev)


def test_paper_log_mode_uses_log_intensity():
    a = np.full((2, 2), 0.1, np.float32)
    b = np.full((2, 2), 0.2, np.float32)   # log ratio ln 2 = 0.69 -> 3 events at θ=0.2
    dvs = PaperDVS(threshold=0.2, log=True, eps=1e-6)
    dvs.reset(a, 0)
    assert len(dvs.step(b, 100)) == 4 * 3


# --- PixelDVS -------------------------------------------------------------------------
def _exp_ramp(l0, dl, shape=(3, 4)):
    return np.full(shape, np.exp(l0 + dl), np.float32)


def test_pixel_crossing_times_interpolated():
    """Log intensity rising linearly by 0.9 over 1000 µs crosses θ=0.2 every 222.2 µs."""
    dvs = PixelDVS(threshold_on=0.2, eps=1e-9, **QUIET)
    l0 = np.log(0.1)
    dvs.reset(_exp_ramp(l0, 0.0), 0)
    ev = dvs.step(_exp_ramp(l0, 0.9), 1000)
    n_px = 12
    assert set(ev["p"].tolist()) == {1}
    assert np.array_equal(np.unique(ev["t_us"]), [222, 444, 667, 889])
    assert len(ev) == 4 * n_px
    # falling by 0.85: the reference is 0.8 above the start, 0.1 below the level reached,
    # so the OFF crossings (at -0.2, -0.4, -0.6 from it) come after drops of 0.3, 0.5, 0.7
    ev2 = dvs.step(_exp_ramp(l0, 0.05), 2000)
    assert set(ev2["p"].tolist()) == {-1}
    assert np.array_equal(np.unique(ev2["t_us"]), [1353, 1588, 1824])
    assert len(ev2) == 3 * n_px


def test_pixel_refractory_period_respected():
    r = 300.0
    dvs = PixelDVS(threshold_on=0.2, eps=1e-9, **{**QUIET, "refractory_us": r})
    dvs.reset(_exp_ramp(np.log(0.05), 0.0), 0)
    evs = [dvs.step(_exp_ramp(np.log(0.05), 0.5 * k), 500 * k) for k in range(1, 9)]
    ev = np.concatenate(evs)
    assert len(ev) > 0
    for x in range(4):
        for y in range(3):
            t = ev["t_us"][(ev["x"] == x) & (ev["y"] == y)]
            assert len(t) >= 4
            assert np.all(np.diff(t) >= r - 1), np.diff(t)
    # without refractory the same ramp gives more events
    dvs0 = PixelDVS(threshold_on=0.2, eps=1e-9, **QUIET)
    dvs0.reset(_exp_ramp(np.log(0.05), 0.0), 0)
    n0 = sum(len(dvs0.step(_exp_ramp(np.log(0.05), 0.5 * k), 500 * k)) for k in range(1, 9))
    assert n0 > len(ev)


def test_pixel_static_scene_no_events_with_noise_off():
    img = _texture()
    dvs = PixelDVS(sigma_threshold=0.05, leak_rate_hz=0.0, shot_noise_rate_hz=0.0)
    dvs.reset(img, 0)
    for k in range(1, 20):
        assert len(dvs.step(img, 1000 * k)) == 0


def test_pixel_noise_rates_roughly_as_set():
    img = np.full((40, 50), 0.4, np.float32)
    n_px, dur_s = 40 * 50, 2.0
    # leak: ON events at ~leak_rate_hz per pixel
    dvs = PixelDVS(sigma_threshold=0.0, leak_rate_hz=5.0, shot_noise_rate_hz=0.0, refractory_us=0)
    dvs.reset(img, 0)
    ev = np.concatenate([dvs.step(img, 20_000 * k) for k in range(1, 101)])
    expected = 5.0 * n_px * dur_s
    assert 0.8 * expected < len(ev) < 1.2 * expected
    assert set(ev["p"].tolist()) == {1}
    # shot noise: both polarities at ~shot_noise_rate_hz per pixel
    dvs = PixelDVS(sigma_threshold=0.0, leak_rate_hz=0.0, shot_noise_rate_hz=3.0, seed=5)
    dvs.reset(img, 0)
    ev = np.concatenate([dvs.step(img, 20_000 * k) for k in range(1, 101)])
    expected = 3.0 * n_px * dur_s
    assert 0.8 * expected < len(ev) < 1.2 * expected
    on = np.mean(ev["p"] == 1)
    assert 0.4 < on < 0.6
    assert is_sorted(ev)


def test_pixel_output_sorted_and_in_interval_on_moving_texture():
    tex = _texture(48, 96, seed=2)
    dvs = make_dvs("pixel", seed=0, shot_noise_rate_hz=50.0)
    dvs.reset(tex[:, :64], 0)
    total = 0
    for k in range(1, 16):
        ev = dvs.step(tex[:, 2 * k: 2 * k + 64], 500 * k)
        assert is_sorted(ev)
        assert ev["t_us"].min() > 500 * (k - 1) and ev["t_us"].max() <= 500 * k
        assert ev["x"].max() < 64 and ev["y"].max() < 48
        total += len(ev)
    assert total > 1000


def test_pixel_threshold_mismatch_changes_counts_and_seed_reproducible():
    tex = _texture(seed=4)
    runs = []
    for sigma, seed in ((0.0, 0), (0.05, 0), (0.05, 0), (0.05, 1)):
        dvs = PixelDVS(sigma_threshold=sigma, leak_rate_hz=0.0, refractory_us=0.0, seed=seed)
        dvs.reset(tex, 0)
        runs.append(dvs.step(np.roll(tex, 3, axis=1), 1000))
    assert np.array_equal(runs[1], runs[2])
    assert not np.array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[1], runs[3])


def test_pixel_leak_drift_survives_renormalisation():
    """The leak drift is folded into the references now and then: the rate must not jump."""
    img = np.full((10, 10), 0.3, np.float32)
    dvs = PixelDVS(sigma_threshold=0.0, leak_rate_hz=200.0, threshold_on=0.2, refractory_us=0)
    dvs.reset(img, 0)
    counts = [len(dvs.step(img, 10_000 * k)) for k in range(1, 201)]  # 2 s, many renormalisations
    per_step = 200.0 * 100 * 0.01
    assert abs(np.mean(counts) - per_step) < 0.1 * per_step
    assert max(counts) < 2.5 * per_step


# --- factory and validation -------------------------------------------------------------
def test_make_dvs_by_name():
    assert isinstance(make_dvs("paper", threshold=0.2), PaperDVS)
    assert isinstance(make_dvs("pixel", threshold_on=0.3), PixelDVS)
    assert make_dvs("pixel", threshold_on=0.3).params["threshold_on"] == 0.3


@pytest.mark.parametrize("model, params, needle", [
    ("paper", {"threshold": 0}, "threshold"),
    ("paper", {"threshold": -0.1}, "threshold"),
    ("paper", {"dt_e_us": 0}, "dt_e_us"),
    ("paper", {"eps": 0.0}, "eps"),
    ("pixel", {"threshold_on": 0}, "threshold_on"),
    ("pixel", {"threshold_off": float("nan")}, "threshold_off"),
    ("pixel", {"sigma_threshold": -1}, "sigma_threshold"),
    ("pixel", {"refractory_us": -5}, "refractory_us"),
    ("pixel", {"leak_rate_hz": -1}, "leak_rate_hz"),
    ("pixel", {"shot_noise_rate_hz": "x"}, "shot_noise_rate_hz"),
    ("pixel", {"threshold": 0.2}, "threshold"),
    ("nope", {}, "nope"),
])
def test_parameter_validation_names_the_parameter(model, params, needle):
    with pytest.raises(ValueError, match=needle):
        make_dvs(model, **params)


def test_step_errors():
    dvs = make_dvs("pixel")
    with pytest.raises(RuntimeError):
        dvs.step(np.zeros((4, 4), np.float32), 10)
    dvs.reset(np.zeros((4, 4), np.float32), 10)
    with pytest.raises(ValueError, match="increase"):
        dvs.step(np.zeros((4, 4), np.float32), 10)
    with pytest.raises(ValueError, match="shape"):
        dvs.step(np.zeros((4, 5), np.float32), 20)


@pytest.mark.parametrize("model, params", [
    ("pixel", dict(seed=3)),
    ("pixel", dict(QUIET, threshold_on=0.15, threshold_off=0.15)),
    ("paper", dict(threshold=0.05, seed=3)),
])
def test_step_many_matches_step(model, params):
    tex = cv2.GaussianBlur(_texture(32, 64, seed=6), (0, 0), 1.0)
    frames = [np.roll(tex, k, axis=1)[:, :48] * (1 + 0.02 * k) for k in range(25)]
    times = [int(round(k * 1e6 / 1920)) for k in range(25)]
    a, b = make_dvs(model, **params), make_dvs(model, **params)
    a.reset(frames[0], 0)
    b.reset(frames[0], 0)
    ea = np.concatenate([a.step(f, t) for f, t in zip(frames[1:], times[1:])])
    eb = np.concatenate([b.step_many(frames[1 + 8 * i: 9 + 8 * i], times[1 + 8 * i: 9 + 8 * i])
                         for i in range(3)])
    assert is_sorted(eb) and len(ea) == len(eb) > 300
    # the same events, per pixel and polarity in time order, time stamps within 1 µs
    def key(e):
        return np.lexsort((e["t_us"], e["p"], e["y"], e["x"]))
    sa, sb = ea[key(ea)], eb[key(eb)]
    for f in ("x", "y", "p"):
        assert np.array_equal(sa[f], sb[f])
    assert np.abs(sa["t_us"] - sb["t_us"]).max() <= 1
    assert a.t_us == b.t_us == times[-1]


def test_step_many_validation():
    dvs = make_dvs("pixel")
    img = np.zeros((4, 4), np.float32)
    dvs.reset(img, 0)
    with pytest.raises(ValueError, match="2 images but 1 times"):
        dvs.step_many([img, img], [10])
    with pytest.raises(ValueError, match="increase"):
        dvs.step_many([img, img], [10, 10])
    assert len(dvs.step_many([], [])) == 0 and dvs.t_us == 0
