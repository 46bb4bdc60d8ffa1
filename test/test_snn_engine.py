"""The numpy streaming engine (models/snn_engine.py) computes the SNN of models/snn.py:
same spikes and boxes in float64, the same boxes to rounding in float32, and the tracker
runner uses it (falling back to torch for what it cannot compile)."""
import numpy as np
import pytest
import torch
from torch import nn

from dashnet_ros.events import make_events
from dashnet_ros.models.snn import PRESETS, SpikingTracker
from dashnet_ros.models.snn_engine import SNNEngine
from dashnet_ros.models.checkpoint import load_checkpoint
from dashnet_ros.tracking import SNNRunner, default_weights



def _windows(n, k, t, hw, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        p = 0.0 if i % 7 == 3 else rng.uniform(0.02, 0.3)     # some windows without any event
        out.append(((rng.random((k, t, 2) + tuple(hw)) < p) * rng.integers(1, 3, (k, t, 2) + tuple(hw))).astype(np.float64))
    return out


# pooling, a conv after the pool, several LIF steps per window, several windows per call
ARCHS = [(PRESETS["fast"].arch, (32, 32), 1, 1), ("Input-MP2-8C3S1-16C3S2-FC32-FC4", (20, 24), 3, 2),
         ("Input-8C3S2-16C3S1-FC4", (16, 16), 2, 4)]


@pytest.mark.parametrize("kernels", ["dense", "sparse"])
@pytest.mark.parametrize("arch,hw,t,k", ARCHS)
def test_float64_engine_gives_the_torch_networks_spikes_and_boxes(arch, hw, t, k, kernels):
    torch.manual_seed(0)
    model = SpikingTracker(arch=arch, in_hw=hw, steps_per_window=t, dt_s=2e-4).double().eval()
    eng = SNNEngine.from_model(model, np.float64, kernels=kernels)
    assert eng.kernels == kernels
    state = None
    n_boxes = 0
    for x in _windows(40, k, t, hw):
        with torch.no_grad():
            ref, counts, state = model.forward_windows(torch.from_numpy(x)[None], state)
        ref = ref[0].detach().numpy()
        ref[counts[0].flatten(1).sum(1).numpy() == 0] = np.nan     # nan_when_silent
        got = eng.step(x)
        assert got.shape == (k, 4)
        assert np.array_equal(np.isnan(got), np.isnan(ref))
        np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-9)
        for u_ref, u in zip(state, eng.state):
            np.testing.assert_allclose(u, u_ref[0].detach().numpy(), rtol=1e-9, atol=1e-9)
        n_boxes += int(np.isfinite(got[:, 0]).sum())
    assert n_boxes > 10                       # the comparison was not only over silent windows
    eng.reset_state()
    assert all(np.all(u == 0) for u in eng.state)


@pytest.mark.parametrize("kernels", ["dense", "sparse"])
def test_float32_engine_matches_step_window_on_a_stream(kernels):
    torch.manual_seed(1)
    model = SpikingTracker.from_preset("fast").eval()
    eng = SNNEngine.from_model(model, kernels=kernels)
    diffs = []
    for x in _windows(60, 1, 1, (32, 32), seed=3):
        ref = model.step_window(torch.from_numpy(x.astype(np.float32))[None])[0].numpy()
        got = eng.step(x.astype(np.float32))
        assert got.dtype == np.float32
        if np.all(np.isfinite(ref)) and np.all(np.isfinite(got)):
            diffs.append(np.abs(got - ref).max())
    assert len(diffs) > 30 and np.median(diffs) < 1e-5


def test_engine_refuses_bad_input_and_unknown_layers():
    model = SpikingTracker.from_preset("fast").eval()
    eng = SNNEngine.from_model(model)
    with pytest.raises(ValueError, match=r"\[K, T\]"):
        eng.step(np.zeros((1, 2, 32, 32), np.float32))
    model.stages[0].op.append(nn.ReLU())
    with pytest.raises(NotImplementedError, match="ReLU"):
        SNNEngine.from_model(model)


def _stream(seed=0, n=4000, t1_us=12_000):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, t1_us, n))
    x = np.clip(60 + 10 * np.sin(t / 2000.0) + rng.normal(0, 4, n), 0, 239).astype(int)
    y = np.clip(50 + rng.normal(0, 4, n), 0, 179).astype(int)
    return make_events(x, y, t, rng.choice([-1, 1], n))


def test_runner_uses_the_engine_and_matches_the_torch_runner():
    model = load_checkpoint(default_weights("snn", "fast"), kind="snn")[0]      # the shipped network
    ev = _stream(n=30_000)
    outs = {}
    for engine in ("numpy", "torch"):
        r = SNNRunner(model, "fast", 240, 180, engine=engine)
        assert (r.engine is not None) == (engine == "numpy")
        r.init((50, 40, 20, 20), 0)
        got = []
        for i in range(0, 12_000, 1000):                         # packets of 1 ms: 2 windows each, some split
            sel = ev[(ev["t_us"] >= i) & (ev["t_us"] < i + 1000)]
            got += r.push_events(sel, i + 1000)
        outs[engine] = got
    a, b = outs["numpy"], outs["torch"]
    assert [o.t_us for o in a] == [o.t_us for o in b] == list(range(480, 12_001, 480))
    boxes_a, boxes_b = np.array([o.box for o in a]), np.array([o.box for o in b])
    assert np.isfinite(boxes_a).all(axis=1).mean() > 0.5
    np.testing.assert_allclose(boxes_a, boxes_b, atol=1e-3)


def test_runner_falls_back_to_torch_for_a_torchscript_model():
    model = SpikingTracker.from_preset("fast").eval()
    r = SNNRunner(model.scripted(), "fast", 240, 180)
    assert r.engine is None
    r.init((50, 40, 20, 20), 0)
    assert len(r.push_events(_stream(), 12_000)) == 12_000 // 480
    with pytest.raises(ValueError, match="engine"):
        SNNRunner(model, "fast", 240, 180, engine="gpu")


def test_set_threads_sets_torch_and_pins_numpys_blas_to_one_thread(monkeypatch):
    import sys

    from threadpoolctl import threadpool_info

    from dashnet_ros import threads

    import cv2

    threads.set_threads(2)
    assert torch.get_num_threads() == 2 and cv2.getNumThreads() == 2
    blas = [p for p in threadpool_info() if p["user_api"] == "blas"]
    assert blas and all(p["num_threads"] == 1 for p in blas)
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)     # not installed (a ROS 2 machine)
    threads.set_threads(1)
    assert torch.get_num_threads() == 1 and cv2.getNumThreads() == 1


def test_bin_events_kernel_counts_exactly_as_the_numpy_path(monkeypatch):
    import dashnet_ros.models.snn as snn_mod

    assert snn_mod.sparse_kernels() is not None          # numba is a requirement of make setup
    rng = np.random.default_rng(5)
    n = 6000
    ev = make_events(rng.integers(0, 240, n), rng.integers(0, 180, n), np.sort(rng.integers(0, 3000, n)),
                     rng.choice([-1, 1], n))
    cases = [(500, 1460, 1, (70.3, 40.6, 50.2, 44.9), (32, 32)), (0, 3000, 3, (0.0, 0.0, 240.0, 180.0), (18, 24)),
             (2500, 3300, 2, (-10.5, 170.2, 40.0, 40.0), (16, 16))]      # partly outside the sensor
    fast = [snn_mod.bin_events(ev, *c) for c in cases]
    monkeypatch.setattr(snn_mod, "sparse_kernels", lambda: None)
    for c, a in zip(cases, fast):
        b = snn_mod.bin_events(ev, *c)
        assert a.dtype == b.dtype == np.float32 and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    assert all(a.sum() > 0 for a in fast)


def test_engine_kernels_fall_back_to_dense_without_numba_and_refuse_unknown_names(monkeypatch):
    import dashnet_ros.models.snn_engine as engine_mod

    model = SpikingTracker.from_preset("fast").eval()
    assert SNNEngine.from_model(model).kernels == "sparse"
    monkeypatch.setattr(engine_mod, "sparse_kernels", lambda: None)
    assert SNNEngine.from_model(model).kernels == "dense"
    with pytest.raises(ImportError, match="numba"):
        SNNEngine.from_model(model, kernels="sparse")
    with pytest.raises(ValueError, match="kernels"):
        SNNEngine.from_model(model, kernels="gpu")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("arch,hw,t,k", ARCHS)
def test_whole_network_call_equals_the_per_layer_path_bit_for_bit(arch, hw, t, k, dtype):
    """step_events: binning + every stage + readout in one compiled call where the network
    allows it (scatter stages, linear readout), the same numbers as binning then step()."""
    from dashnet_ros.models.snn import bin_events

    torch.manual_seed(2)
    model = SpikingTracker(arch=arch, in_hw=hw, steps_per_window=t, dt_s=2e-4).eval()
    if dtype == np.float64:
        model = model.double()
    whole, layers = SNNEngine.from_model(model, dtype), SNNEngine.from_model(model, dtype)
    assert (whole._whole is not None) == ("MP" not in arch)      # pooling: the per-layer path
    rng = np.random.default_rng(4)
    n = 60_000                  # most inside the region, some outside
    ev = make_events(rng.integers(50, 140, n), rng.integers(20, 100, n), np.sort(rng.integers(0, 40_000, n)),
                     rng.choice([-1, 1], n))
    region = (60.4, 30.2, 70.0, 64.5)
    span = 480 * k
    fired = 0
    for i, t0 in enumerate(range(0, 40_000 - span, span)):
        if i == 5:
            whole.reset_state(), layers.reset_state()                      # a state reset mid-stream
        sel = ev[(ev["t_us"] >= t0) & (ev["t_us"] < t0 + span)] if i % 9 else ev[:0]      # and empty windows
        a = whole.step_events(sel, t0, t0 + span, k, t, region)
        x = bin_events(sel, t0, t0 + span, k * t, region, hw)
        b = layers.step(x.reshape((k, t) + x.shape[1:]))
        assert a.dtype == b.dtype == dtype and a.shape == b.shape == (k, 4)
        np.testing.assert_array_equal(a, b)
        for u, v in zip(whole.state, layers.state):
            np.testing.assert_array_equal(u, v)
        fired += int(np.isfinite(a[:, 0]).sum())
    assert fired > 10
    with pytest.raises(ValueError, match="empty window"):
        whole.step_events(ev, 100, 100, k, t, region)


def _python_path(runner):
    """The runner's per-window Python path (region, binning + network, box, motion), as
    before the compiled window loop."""
    runner.engine.__class__ = type("PerWindow", (SNNEngine,), {"tracks_windows": property(lambda self: False)})
    return runner


def test_compiled_window_loop_equals_the_python_steps_bit_for_bit():
    """SNNRunner.step through SNNEngine.track_windows: every window on the region its
    predecessor's box gives, state resets after region jumps, NaN boxes when silent -- the
    same boxes and motions as the per-window Python path, for one or several windows per call."""
    model = load_checkpoint(default_weights("snn", "fast"), kind="snn")[0]
    ev = _stream(seed=3, n=60_000, t1_us=24_000)

    def run(k, python, jumps):
        r = SNNRunner(model, "fast", 240, 180, windows_per_call=k)
        if python:
            _python_path(r)
        assert r.engine.tracks_windows is (not python)
        r.init((50, 40, 20, 20), 0)
        out = []
        for i, t in enumerate(range(0, 24_000, 960)):               # 2 windows per packet
            if jumps and i % 5 == 4:
                r.reference = r.reference + np.float32(12.0)         # a fused box far off: the state resets
            sel = ev[(ev["t_us"] >= t) & (ev["t_us"] < t + 960)]
            out += r.push_events(sel if i % 7 else sel[:0], t + 960)   # and silent packets
        return out, r.resets

    for jumps, ks in ((True, (1, 2)), (False, (1, 3, 4))):
        ref, ref_resets = run(1, True, jumps)
        boxes = np.array([o.box for o in ref])
        assert np.isnan(boxes[:, 0]).any() and np.isfinite(boxes[:, 0]).mean() > 0.5
        assert (ref_resets > 0) == jumps
        for k in ks:
            got, resets = run(k, False, jumps)
            assert [o.t_us for o in got] == [o.t_us for o in ref]
            np.testing.assert_array_equal(np.array([o.box for o in got]), boxes)
            assert [o.motion_px for o in got] == [o.motion_px for o in ref]
            assert resets == ref_resets
