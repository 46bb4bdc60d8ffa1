"""The hybrid pipeline on a real simulated stream (untrained networks: structure, timing,
robustness; accuracy of the shipped weights is checked where they are trained)."""
import numpy as np
import pytest
import torch

from dashnet_ros.davis.frames import ApsFrame, EventBatch
from dashnet_ros.davis.stream import DavisSimulator, linear_blend
from dashnet_ros.events import make_events
from dashnet_ros.models.ann import FrameTracker
from dashnet_ros.models.snn import SpikingTracker
from dashnet_ros.tracking import ANNRunner, HybridTracker, SNNRunner
from dashnet_ros.world.scenes import render_sequence

W, H = 240, 180


def _tracker(mode="hybrid", seed=0):
    torch.manual_seed(seed)
    snn = SNNRunner(SpikingTracker.from_preset("fast"), "fast", W, H)
    ann = ANNRunner(FrameTracker.from_preset("fast", attention=(mode != "ann-nat")).eval(), "fast", W, H,
                    attention=(mode != "ann-nat"))
    return HybridTracker(W, H, mode=mode, snn=snn, ann=ann)


@pytest.fixture(scope="module")
def stream():
    src = render_sequence(3, 40)  # 40 frames at 240 fps = 1/6 s (held-out seed: evaluation only)
    sim = DavisSimulator(src, interp_factor=1, interpolator=linear_blend)
    items = list(sim.stream())
    return items, src.box_at(0)


def test_hybrid_outputs_rates_and_timestamps(stream):
    items, box0 = stream
    tr = _tracker()
    tr.init(box0, 0)
    out = tr.run(items)
    t_snn, b_snn = out["snn"]
    t_fused, _ = out["fused"]
    np.testing.assert_array_equal(t_snn, t_fused)
    # one SNN output per 480 us window, stamped at the window end
    assert np.all(np.diff(t_snn) == 480)
    end_us = max(i.t1_us for i in items if isinstance(i, EventBatch))
    assert len(t_snn) == end_us // 480
    # one ANN output per APS frame, stamped at the frame time
    aps_t = [i.t_us for i in items if isinstance(i, ApsFrame)]
    np.testing.assert_array_equal(out["ann"][0], aps_t)


def test_batched_windows_keep_per_window_outputs(stream):
    items, box0 = stream
    torch.manual_seed(0)
    snn = SNNRunner(SpikingTracker.from_preset("fast"), "fast", W, H, windows_per_call=4)
    tr = HybridTracker(W, H, mode="snn-origin", snn=snn)
    tr.init(box0, 0)
    t = tr.run(items)["snn"][0]
    assert np.all(np.diff(t) == 480) and t[0] == 480
    with pytest.raises(ValueError, match="windows_per_call"):
        SNNRunner(SpikingTracker.from_preset("fast"), "fast", W, H, windows_per_call=0)


def test_modes_emit_only_their_streams(stream):
    items, box0 = stream
    for mode, keys in [("snn-origin", {"snn"}), ("ann", {"ann"}), ("ann-nat", {"ann"})]:
        tr = _tracker(mode)
        tr.init(box0, 0)
        assert set(tr.run(items)) == keys, mode
    with pytest.raises(ValueError, match="unknown tracking mode"):
        HybridTracker(W, H, mode="nope")
    with pytest.raises(ValueError, match="needs the SNN"):
        HybridTracker(W, H, mode="hybrid", ann=_tracker().ann)


def test_deterministic(stream):
    items, box0 = stream
    runs = []
    for _ in range(2):
        tr = _tracker(seed=1)
        tr.init(box0, 0)
        runs.append(tr.run(items))
    for k in runs[0]:
        np.testing.assert_array_equal(runs[0][k][1], runs[1][k][1])


def test_empty_windows_target_leaving_and_nan_are_survived():
    tr = _tracker()
    tr.init([230, 170, 20, 20], 0)  # partly outside the frame
    out = tr.push(EventBatch(0, 5000, make_events([], [], [], [])))
    assert len([o for o in out if o.source == "snn"]) == 10
    for o in out:
        b = o.box
        assert b.shape == (4,) and (np.isnan(b).all() or (b[2] > 0 and b[3] > 0))
    out = tr.push(ApsFrame(5000, np.zeros((H, W), np.uint8)))
    assert out[0].source == "ann"
    with pytest.raises(ValueError, match="not a valid"):
        tr.init([np.nan, 0, 10, 10], 0)


def test_tracker_refuses_to_run_without_init():
    with pytest.raises(RuntimeError, match="init"):
        _tracker().push(EventBatch(0, 1000, make_events([], [], [], [])))


def test_ann_weights_with_other_attention_setting_are_refused():
    model = FrameTracker.from_preset("fast", attention=True)
    with pytest.raises(ValueError, match="attention"):
        ANNRunner(model, "fast", W, H, attention=False)


def test_ann_runner_keeps_the_first_and_previous_frame_as_templates(stream):
    items, box0 = stream
    torch.manual_seed(0)
    ann = ANNRunner(FrameTracker.from_preset("fast").eval(), "fast", W, H)
    assert ann.templates == 2
    frames = [it for it in items if isinstance(it, ApsFrame)]
    ann.init(box0)
    b1 = ann.update(frames[0].image, box0)
    first, prev = ann._first, ann._prev
    from dashnet_ros.models.ann import unit_float

    assert first[0] is not frames[0].image and np.array_equal(first[0], unit_float(frames[0].image))
    np.testing.assert_allclose(first[1], box0, atol=1e-4)
    np.testing.assert_array_equal(prev[1], b1)
    ann.update(frames[1].image, b1)
    assert ann._first is first and np.array_equal(ann._prev[0], unit_float(frames[1].image))
    ann.init(box0)                       # a new target forgets both
    assert ann._first is None and ann._prev is None
    # weights made without template channels still run (the weights decide)
    old = ANNRunner(FrameTracker.from_preset("fast", templates=0).eval(), "fast", W, H)
    old.init(box0)
    assert old.templates == 0 and np.all(np.isfinite(old.update(frames[0].image, box0)))


def test_snn_outputs_carry_their_motion(stream):
    items, box0 = stream
    torch.manual_seed(0)
    for k in (1, 4):
        snn = SNNRunner(SpikingTracker.from_preset("fast"), "fast", W, H, windows_per_call=k)
        snn.init(box0, 0)
        ref = snn.reference.copy()
        outs = []
        for it in items:
            if isinstance(it, EventBatch):
                outs += snn.push_events(it.events, it.t1_us)
        assert outs and all(o.motion_px is not None for o in outs)
        # the motions add up to the last box's centre minus the initial reference's
        good = [o for o in outs if np.all(np.isfinite(o.box))]
        total = np.sum([o.motion_px for o in outs], axis=0)
        last = good[-1].box
        expect = (last[:2] + last[2:] / 2) - (ref[:2] + ref[2:] / 2)
        np.testing.assert_allclose(total, expect, atol=1e-2)


def test_weights_keep_the_geometry_they_were_trained_with(tmp_path):
    from dashnet_ros.models.checkpoint import save_checkpoint
    from dashnet_ros.tracking import stored_preset

    old = {"name": "fast", "view": "search", "search_scale": 2.5, "in_hw": [64, 64], "sigma_rel": 0.5}
    p = stored_preset({"preset": old}, "fast", "ann")
    assert p.search_scale == 2.5 and p.templates == 0 and p.in_hw == (64, 64)
    assert stored_preset({}, "fast", "ann").search_scale == 3.5          # no record: the named preset
    m = FrameTracker.from_preset("fast", templates=0).eval()
    path = str(tmp_path / "old_ann.pt")
    save_checkpoint(path, m, preset=old)
    r = ANNRunner.from_file(path, "fast", W, H)
    assert r.preset.search_scale == 2.5 and r.templates == 0
    # the SNN likewise: a window of 960 us stored with the weights is the runner's window
    snn_rec = dict(SpikingTracker.from_preset("fast").config(), name="fast", view="search", search_scale=3.0,
                   in_hw=[32, 32], window_us=960, steps_per_window=1)
    sp = str(tmp_path / "snn.pt")
    save_checkpoint(sp, SpikingTracker.from_preset("fast"), preset=snn_rec)
    s = SNNRunner.from_file(sp, "fast", W, H)
    assert s.window_us == 960 and s.preset.search_scale == 3.0


def test_snn_state_is_reset_after_a_jump_of_its_window(stream):
    items, box0 = stream
    evs = [it for it in items if isinstance(it, EventBatch)]

    def run(reset_jump, jump_px):
        torch.manual_seed(0)
        snn = SNNRunner(SpikingTracker.from_preset("fast"), "fast", W, H, reset_jump=reset_jump)
        snn.init(box0, 0)
        outs = []
        ref = np.asarray(box0, np.float32)
        for i, it in enumerate(evs):
            if i == len(evs) // 2:                  # an ANN correction moves the window
                ref = ref + np.float32([jump_px, 0, 0, 0])
            snn.add_events(it.events)
            while snn.windows_ready(it.t1_us):
                snn.reference = ref                 # held, as the hybrid holds it on the fused box
                outs += snn.step(1)
        return snn, np.stack([o.box for o in outs])

    side = 2.5 * max(box0[2], box0[3])
    never, a = run(0.0, 0.3 * side)
    big, b = run(0.15, 0.3 * side)
    small, c = run(0.15, 0.05 * side)
    assert never.resets == 0 and big.resets == 1 and small.resets == 0
    half = len(a) // 2 - 2
    np.testing.assert_array_equal(a[:half], b[:half])                  # same until the jump
    assert not np.array_equal(np.nan_to_num(a), np.nan_to_num(b))      # then the state differs
    with pytest.raises(ValueError, match="reset_jump"):
        SNNRunner(SpikingTracker.from_preset("fast"), "fast", W, H, reset_jump=-1)
