"""The simulated DAVIS stream: alignment of events with motion, APS timing, GT, ordering."""
import logging
import sys

import numpy as np
import pytest

from dashnet_ros.davis.frames import ApsFrame, EventBatch, Frame, FrameSource
from dashnet_ros.davis.stream import DavisSimulator, linear_blend
from dashnet_ros.events import EVENT_DTYPE, is_sorted

QUIET_PIXEL = dict(sigma_threshold=0.0, leak_rate_hz=0.0, shot_noise_rate_hz=0.0,
                   refractory_us=0.0, threshold_on=0.2, threshold_off=0.2)
DARK, BRIGHT = 0.2, 0.8


class EdgeSource(FrameSource):
    """A vertical step edge moving right at constant speed (bright left of it, dark right),
    rendered with exact pixel-area coverage."""

    def __init__(self, width=64, height=16, fps=100.0, n_frames=6, x0=2.0,
                 px_per_frame=12.0, boxes="track"):
        self.width, self.height, self.fps = width, height, fps
        self.n, self.x0, self.v_px_per_us = n_frames, x0, px_per_frame * fps / 1e6
        self.boxes = boxes

    def t_us(self, k):
        return int(round(k * 1e6 / self.fps))

    def edge_x(self, t_us):
        return self.x0 + self.v_px_per_us * t_us

    def box(self, t_us):
        return np.array([self.edge_x(t_us) - 2, 4, 4, 8], np.float32)

    def __len__(self):
        return self.n

    def __iter__(self):
        cols = np.arange(self.width, dtype=np.float32)
        for k in range(self.n):
            t = self.t_us(k)
            cover = np.clip(self.edge_x(t) - cols, 0, 1)
            img = np.tile(DARK + (BRIGHT - DARK) * cover, (self.height, 1)).astype(np.float32)
            box = self.box(t) if self.boxes in ("track", "frames") else None
            yield Frame(t_us=t, image=img, box=box, index=k)

    def gt_track(self):
        if self.boxes != "track":
            return None
        t = np.array([self.t_us(k) for k in range(self.n)])
        return t, np.stack([self.box(x) for x in t])


def edge_interpolator(frame_a, frame_b, factor):
    """Exact intermediate frames for EdgeSource: the edge position is read from the
    frames (mean brightness) and moved linearly."""
    w = frame_a.shape[1]
    xa = (frame_a.mean() - DARK) * w / (BRIGHT - DARK)
    xb = (frame_b.mean() - DARK) * w / (BRIGHT - DARK)
    cols = np.arange(w, dtype=np.float32)
    out = []
    for j in range(1, factor + 1):
        x = xa + (xb - xa) * j / (factor + 1)
        row = DARK + (BRIGHT - DARK) * np.clip(x - cols, 0, 1)
        out.append(np.tile(row, (frame_a.shape[0], 1)).astype(np.float32))
    return out


def _collect(sim, **kw):
    items = list(sim.stream(**kw))
    batches = [i for i in items if isinstance(i, EventBatch)]
    aps = [i for i in items if isinstance(i, ApsFrame)]
    ev = np.concatenate([b.events for b in batches]) if batches else None
    return items, batches, aps, ev


@pytest.mark.parametrize("model, params", [
    ("pixel", QUIET_PIXEL),
    ("paper", dict(threshold=0.1)),
])
@pytest.mark.parametrize("factor", [7, 0])
def test_events_aligned_with_moving_edge(model, params, factor):
    src = EdgeSource()
    sim = DavisSimulator(src, width=src.width, height=src.height, interp_factor=factor,
                         interpolator=edge_interpolator, dvs_model=model, dvs_params=params)
    _, _, _, ev = _collect(sim)
    sub_us = (1e6 / src.fps) / (factor + 1)
    crossed = range(int(np.ceil(src.edge_x(0))), int(src.edge_x(src.t_us(src.n - 1))) - 1)
    assert len(crossed) > 40
    for c in crossed:
        t = ev["t_us"][ev["x"] == c]
        assert len(t) > 0, f"no events in column {c}"
        assert np.all(ev["p"][ev["x"] == c] == 1)
        t_enter = (c - src.x0) / src.v_px_per_us      # edge reaches the column
        t_leave = (c + 1 - src.x0) / src.v_px_per_us  # edge has crossed it
        assert t.min() >= t_enter - sub_us - 1, (c, t.min(), t_enter)
        assert t.max() <= t_leave + sub_us + 1, (c, t.max(), t_leave)
    # untouched columns (ahead of the edge at the end) stay silent
    far = int(src.edge_x(src.t_us(src.n - 1))) + 2
    assert not np.any(ev["x"] >= far)


def test_interpolation_sharpens_timing():
    """×7 interpolation puts the events of a column closer to the edge crossing than ×0."""
    src = EdgeSource()

    def spread(factor):
        sim = DavisSimulator(src, width=64, height=16, interp_factor=factor,
                             interpolator=edge_interpolator, dvs_params=QUIET_PIXEL)
        ev = _collect(sim)[3]
        err = []
        for c in range(10, 50):
            t = ev["t_us"][ev["x"] == c]
            err.append(np.abs(t - (c + 0.5 - src.x0) / src.v_px_per_us).max())
        return np.mean(err)

    assert spread(7) < 0.5 * spread(0)


def test_stream_time_order_and_tiling():
    src = EdgeSource(fps=240.0, n_frames=30, px_per_frame=1.5, width=64, height=16)
    sim = DavisSimulator(src, width=64, height=16, interp_factor=3, interpolator=linear_blend,
                         dvs_params=dict(QUIET_PIXEL, shot_noise_rate_hz=20.0),
                         aps_rate_hz=60.0, batch_us=700)
    items, batches, aps, ev = _collect(sim)
    assert batches[0].t0_us == src.t_us(0)
    assert batches[-1].t1_us == src.t_us(src.n - 1) + 1
    for a, b in zip(batches, batches[1:]):
        assert a.t1_us == b.t0_us                      # no gaps, no overlaps
    for b in batches:
        assert 0 < b.t1_us - b.t0_us <= 700
        assert is_sorted(b.events)
        assert b.events.dtype == EVENT_DTYPE            # the 16-byte record, as in an EventPacket
        if len(b.events):
            assert b.events["t_us"].min() >= b.t0_us and b.events["t_us"].max() < b.t1_us
    # every item starts no earlier than the previous one ended
    clock = -1
    for it in items:
        if isinstance(it, EventBatch):
            assert it.t0_us >= clock
            clock = it.t1_us
        else:
            assert it.t_us >= clock
            clock = it.t_us
    assert is_sorted(ev) and len(ev) == sim.stats["events"] > 100
    assert sim.stats["source_frames"] == src.n and sim.stats["aps_frames"] == len(aps)


def test_aps_rate_and_timestamps():
    src = EdgeSource(fps=240.0, n_frames=40, px_per_frame=1.0)
    sim = DavisSimulator(src, width=64, height=16, interp_factor=0, aps_rate_hz=30.0,
                         dvs_params=QUIET_PIXEL)
    frames = {f.t_us: f for f in src}
    _, _, aps, _ = _collect(sim)
    assert [a.t_us for a in aps] == [src.t_us(k) for k in (0, 8, 16, 24, 32)]
    for a in aps:
        assert a.image.dtype == np.uint8 and a.image.shape == (16, 64)
        ref = np.round(frames[a.t_us].image * 255).astype(np.uint8)
        assert np.abs(a.image.astype(int) - ref).max() <= 1
    # a source rate that is no multiple of the APS rate: the nearest source frames
    src = EdgeSource(fps=100.0, n_frames=12, px_per_frame=1.0)
    sim = DavisSimulator(src, width=64, height=16, interp_factor=0, aps_rate_hz=30.0,
                         dvs_params=QUIET_PIXEL)
    assert [a.t_us for a in _collect(sim)[2]] == [0, 30_000, 70_000, 100_000]


def test_resize_scales_gt_and_gt_interpolation():
    src = EdgeSource(width=64, height=32, n_frames=5, px_per_frame=4.0)
    sim = DavisSimulator(src, width=32, height=24, interp_factor=1, interpolator=linear_blend,
                         dvs_params=QUIET_PIXEL)
    assert sim.scale_xy == (0.5, 0.75)
    assert (sim.width, sim.height, sim.source_fps) == (32, 24, 100.0)
    _, batches, aps, ev = _collect(sim)
    assert aps[0].image.shape == (24, 32)
    assert ev["x"].max() < 32 and ev["y"].max() < 24
    scale = np.array([0.5, 0.75, 0.5, 0.75], np.float32)
    np.testing.assert_allclose(aps[0].box, src.box(0) * scale, atol=1e-5)
    t = 15_000  # between frames 1 and 2: linear interpolation of the source track
    np.testing.assert_allclose(sim.gt_at(t), src.box(t) * scale, atol=1e-4)
    many = sim.gt_at(np.array([0, 5_000, 40_000]))
    assert many.shape == (3, 4)
    np.testing.assert_allclose(many[1], src.box(5_000) * scale, atol=1e-4)


def test_gt_from_frame_boxes_and_absent():
    src = EdgeSource(n_frames=4, boxes="frames")
    sim = DavisSimulator(src, width=64, height=16, interp_factor=0, dvs_params=QUIET_PIXEL)
    assert sim.gt_at(0) is None                 # nothing streamed yet
    _collect(sim)
    np.testing.assert_allclose(sim.gt_at(25_000), src.box(25_000), atol=1e-4)
    src = EdgeSource(n_frames=3, boxes=None)
    sim = DavisSimulator(src, width=64, height=16, interp_factor=0, dvs_params=QUIET_PIXEL)
    _, _, aps, _ = _collect(sim)
    assert sim.gt_at(10_000) is None and aps[0].box is None


def test_progress_callback_and_paper_model_seeded():
    src = EdgeSource(n_frames=4)
    calls = []
    runs = []
    for _ in range(2):
        sim = DavisSimulator(src, width=64, height=16, interp_factor=3,
                             interpolator=edge_interpolator, dvs_model="paper", seed=7)
        runs.append(_collect(sim, progress=lambda n, tot: calls.append((n, tot)))[3])
    assert calls[:4] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert np.array_equal(runs[0], runs[1]) and len(runs[0]) > 0


def test_default_interpolator_falls_back_to_linear(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "dashnet_ros.davis.interpolation", None)
    with caplog.at_level(logging.WARNING, logger="dashnet_ros.davis.stream"):
        sim = DavisSimulator(EdgeSource(), interp_factor=3)
    assert sim.interpolator is linear_blend and sim.interpolator_name == "linear_blend"
    assert "linear blend" in caplog.text
    assert DavisSimulator(EdgeSource(), interp_factor=0).interpolator is None


@pytest.mark.parametrize("kw, needle", [
    (dict(interp_factor=2), "interp_factor"),
    (dict(aps_rate_hz=0), "aps_rate_hz"),
    (dict(batch_us=0), "batch_us"),
    (dict(width=0), "width"),
    (dict(dvs_model="pixel", dvs_params={"threshold_on": -1}), "threshold_on"),
    (dict(dvs_model="esim"), "esim"),
])
def test_parameter_validation(kw, needle):
    with pytest.raises(ValueError, match=needle):
        DavisSimulator(EdgeSource(), interpolator=linear_blend, **kw)


def test_bad_source_frames():
    class Backwards(EdgeSource):
        def __iter__(self):
            frames = list(super().__iter__())
            yield frames[1]
            yield frames[0]

    with pytest.raises(ValueError, match="increase"):
        list(DavisSimulator(Backwards(), interp_factor=0).stream())

    class WrongSize(EdgeSource):
        def __iter__(self):
            yield Frame(0, np.zeros((5, 5), np.float32))

    with pytest.raises(ValueError, match="5x5"):
        list(DavisSimulator(WrongSize(), interp_factor=0).stream())


def test_interpolator_auto_picks_fcn_only_for_slow_sources():
    from dashnet_ros.davis.interpolation import FCNInterpolator
    from dashnet_ros.davis.stream import linear_blend, resolve_interpolator

    assert resolve_interpolator("auto", 240.0) is linear_blend
    assert isinstance(resolve_interpolator("auto", 30.0), FCNInterpolator)
    assert resolve_interpolator("linear", 30.0) is linear_blend
    with pytest.raises(ValueError, match="interpolator must be"):
        resolve_interpolator("cubic", 30.0)
