"""SNN tracker (eq. 1-4): layer string, shapes, streaming state, BPTT, loss, event binning,
checkpoints and TorchScript."""

import numpy as np
import pytest
import torch

from dashnet_ros.events import make_events
from dashnet_ros.models.arch import PAPER_SNN_ARCH, layer_specs
from dashnet_ros.models.checkpoint import export_torchscript, load_checkpoint, save_checkpoint
from dashnet_ros.models.snn import PRESETS, ScriptedSpikingTracker, SpikingTracker, bin_events, snn_loss

TINY = "Input-8C3S2-16C3S2-FC32-FC4"



def _events_tensor(b, k, t, hw, p=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(b, k, t, 2, *hw, generator=g) < p).float() * 2


def test_paper_arch_sizes():
    specs = layer_specs(PAPER_SNN_ARCH, (180, 240), 2)
    assert [s.token for s in specs] == ["MP2", "32C3S3", "64C3S1", "128C3S1", "128C3S2", "256C3S2", "FC1024", "FC4"]
    assert [s.out_shape for s in specs] == [
        (2, 90, 120), (32, 30, 40), (64, 30, 40), (128, 30, 40), (128, 15, 20), (256, 8, 10), (1024,), (4,)
    ]
    assert specs[6].in_features == 256 * 8 * 10
    assert layer_specs(PAPER_SNN_ARCH, (180, 240), 2, padding="valid")[1].out_shape == (32, 30, 40)


def test_arch_errors():
    with pytest.raises(ValueError, match=r"too small.*at least"):
        layer_specs(PAPER_SNN_ARCH, (4, 4), 2)
    with pytest.raises(ValueError, match="Input"):
        layer_specs("32C3S3-FC4", (64, 64))
    with pytest.raises(ValueError, match="'3X3'"):
        layer_specs("Input-3X3-FC4", (64, 64))
    with pytest.raises(ValueError, match="follows a fully connected"):
        layer_specs("Input-FC8-8C3S1-FC4", (64, 64))
    with pytest.raises(ValueError, match="FC4"):
        SpikingTracker("Input-8C3S2-FC5", (16, 16))


@pytest.mark.parametrize("name", ["paper", "fast"])
def test_preset_shapes(name):
    p = PRESETS[name]
    m = SpikingTracker.from_preset(name).eval()
    assert m.dt_s == pytest.approx(p.window_us * 1e-6 / p.steps_per_window)
    x = _events_tensor(2, 1, p.steps_per_window, p.in_hw, p=0.02)[:, 0]
    with torch.no_grad():
        box, counts, state = m(x)
    assert box.shape == (2, 4)
    assert counts.shape == (2, m.state_shapes[-1][0])
    assert [list(s.shape[1:]) for s in state] == m.state_shapes


def test_windows_at_once_equal_window_by_window_and_streaming():
    torch.manual_seed(0)
    m = SpikingTracker(TINY, (16, 16), steps_per_window=3).eval()
    x = _events_tensor(2, 4, 3, (16, 16), p=0.2)
    with torch.no_grad():
        boxes, counts, st = m.forward_windows(x)
        state = None
        for k in range(4):
            b, c, state = m(x[:, k], state)
            assert torch.allclose(b, boxes[:, k], atol=1e-6)
            assert torch.equal(c, counts[:, k])
    for a, b in zip(st, state):
        assert torch.allclose(a, b, atol=1e-6)
    assert counts.sum() > 0  # the default init keeps the network firing
    m.nan_when_silent = False
    s1 = torch.cat([m.step_window(x[:, k])[:, None] for k in range(4)], 1)
    m.reset_state()
    s2 = m.step_window(x)
    assert torch.allclose(s1, boxes, atol=1e-6) and torch.allclose(s2, boxes, atol=1e-6)


def test_empty_window_skip_is_exact_and_silent_gives_nan():
    torch.manual_seed(0)
    m = SpikingTracker(TINY, (16, 16), steps_per_window=2).eval()
    x = _events_tensor(1, 1, 2, (16, 16), p=0.3)[:, 0]
    m.step_window(x)
    before = [u.clone() for u in m._state]
    out = m.step_window(torch.zeros_like(x))  # skipped
    assert torch.all(torch.isnan(out))
    with torch.no_grad():
        _, counts, full = m(torch.zeros_like(x), before)
    assert counts.sum() == 0
    for a, b in zip(m._state, full):
        assert torch.allclose(a, b, atol=1e-7)
    m.nan_when_silent = False
    assert torch.allclose(m.step_window(torch.zeros_like(x)), m.readout[-1].bias[None])


def test_bptt_reaches_first_layer():
    torch.manual_seed(0)
    m = SpikingTracker(TINY, (16, 16), steps_per_window=4)
    x = _events_tensor(2, 2, 4, (16, 16), p=0.2)
    boxes, _, _ = m.forward_windows(x)
    snn_loss(boxes.reshape(-1, 4), torch.rand(4, 4)).backward()
    g = m.stages[0].op[0].weight.grad
    assert g is not None and g.abs().sum() > 0


def test_loss_decreases_on_tiny_overfit():
    torch.manual_seed(0)
    m = SpikingTracker(TINY, (16, 16), steps_per_window=2)
    x = _events_tensor(4, 1, 2, (16, 16), p=0.3)[:, 0]
    y = torch.rand(4, 4)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = snn_loss(m(x)[0], y, m, lam=1e-5)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]


def test_loss_ignores_nan_targets_and_adds_weight_term():
    m = SpikingTracker(TINY, (16, 16))
    pred = torch.zeros(2, 4)
    tgt = torch.tensor([[1.0, 0, 0, 0], [np.nan] * 4])
    assert snn_loss(pred, tgt).item() == pytest.approx(1.0)
    assert snn_loss(pred, tgt, m, lam=0.1).item() > 1.0


def test_bin_events():
    ev = make_events(
        x=[0, 5, 5, 9, 20], y=[0, 3, 3, 9, 1], t_us=[0, 10, 60, 99, 50], p=[1, -1, 1, 1, 1]
    )
    out = bin_events(ev, 0, 100, 2, region=(0, 0, 10, 10), in_hw=(10, 10))
    assert out.shape == (2, 2, 10, 10) and out.sum() == 4  # x=20 is outside the region
    assert out[0, 0, 0, 0] == 1 and out[0, 1, 3, 5] == 1 and out[1, 0, 3, 5] == 1 and out[1, 0, 9, 9] == 1
    half = bin_events(ev, 0, 100, 1, region=(0, 0, 10, 10), in_hw=(5, 5))  # 2x2 pixels per cell
    assert half[0, 0, 1, 2] == 1 and half[0, 1, 1, 2] == 1 and half[0, 0, 4, 4] == 1
    shifted = bin_events(ev, 0, 50, 1, region=(4, 2, 4, 4), in_hw=(4, 4))
    assert shifted.sum() == 1 and shifted[0, 1, 1, 1] == 1
    with pytest.raises(ValueError, match="empty window"):
        bin_events(ev, 10, 10, 1, (0, 0, 10, 10), (4, 4))


def test_checkpoint_round_trip_and_refusals(tmp_path):
    torch.manual_seed(0)
    m = SpikingTracker(TINY, (16, 16), steps_per_window=2).eval()
    path = tmp_path / "snn.pt"
    save_checkpoint(path, m, preset={"name": "tiny"}, data_recipe={"world": "test"}, seed=3)
    m2, cfg = load_checkpoint(path, kind="snn", arch=TINY, in_hw=(16, 16))
    assert cfg["seed"] == 3 and cfg["data_recipe"] == {"world": "test"} and cfg["dt_s"] == m.dt_s
    x = _events_tensor(1, 3, 2, (16, 16), p=0.2)
    with torch.no_grad():
        assert torch.equal(m.forward_windows(x)[0], m2.forward_windows(x)[0])
    with pytest.raises(ValueError, match=r"snn\.pt.*architecture mismatch"):
        load_checkpoint(path, arch=PAPER_SNN_ARCH)
    with pytest.raises(ValueError, match=r"snn\.pt.*input size mismatch"):
        load_checkpoint(path, in_hw=(32, 32))
    with pytest.raises(ValueError, match="'ann' model was requested"):
        load_checkpoint(path, kind="ann")
    data = path.read_bytes()
    bad = tmp_path / "cut.pt"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.pt.*truncated"):
        load_checkpoint(bad)
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []


def test_torchscript_export_round_trip(tmp_path):
    torch.manual_seed(0)
    m = SpikingTracker.from_preset("fast").eval()
    path = tmp_path / "snn_ts.pt"
    export_torchscript(m, path, preset="fast")
    sm, cfg = load_checkpoint(path, kind="snn", in_hw=PRESETS["fast"].in_hw)
    assert isinstance(sm, ScriptedSpikingTracker)
    assert cfg["preset"]["name"] == "fast" and cfg["preset"]["view"] == "search"
    x = _events_tensor(1, 5, 1, (32, 32), p=0.05)
    m.nan_when_silent = sm.nan_when_silent = False
    ref = m.step_window(x)
    out = torch.cat([sm.step_window(x[:, :2]), sm.step_window(x[:, 2:])], 1)
    assert torch.allclose(ref, out, atol=1e-6)
    sm.reset_state()
    assert torch.allclose(sm.step_window(x), ref, atol=1e-6)
    fast = m.scripted()
    assert torch.allclose(fast.step_window(x), ref, atol=1e-6)
    with pytest.raises(ValueError, match="architecture mismatch"):
        load_checkpoint(path, arch=TINY)
