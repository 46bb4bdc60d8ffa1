"""ANN tracker (eq. 5-6) with attention input (eq. 11), input geometry, checkpoints."""
import numpy as np
import pytest
import torch

from dashnet_ros.models.ann import PRESETS, FrameTracker, ann_loss, crop_resample, frame_input
from dashnet_ros.models.arch import (
    PAPER_ANN_ARCH,
    box_regression_loss,
    box_to_region_norm,
    giou_cxcywh,
    full_region,
    layer_specs,
    region_norm_to_box,
    search_region,
)
from dashnet_ros.models.checkpoint import export_torchscript, load_checkpoint, save_checkpoint

TINY = "Input-8C3S2-MP2-16C3S1-FC32-FC4"



def test_paper_arch_sizes():
    specs = layer_specs(PAPER_ANN_ARCH, (180, 240), 2)
    assert [s.out_shape for s in specs] == [
        (32, 60, 80), (32, 30, 40), (64, 30, 40), (64, 15, 20), (128, 15, 20), (128, 15, 20),
        (128, 7, 10), (256, 3, 5), (1024,), (4,)
    ]
    # 2x2 stride-2 conv: (k-1)//2 = 0 padding -> floor(n / 2)
    assert specs[7].padding == 0 and specs[4].padding == 1 and specs[5].padding == 0
    with pytest.raises(ValueError, match=r"too small.*'64C3S1'.*at least H=46, W=46"):
        layer_specs(PAPER_ANN_ARCH, (4, 4), 2)


@pytest.mark.parametrize("name", ["paper", "fast"])
@pytest.mark.parametrize("attention", [True, False])
def test_preset_shapes(name, attention):
    m = FrameTracker.from_preset(name, attention=attention).eval()
    c = (2 if attention else 1) + PRESETS[name].templates
    assert m.in_channels == c
    with torch.no_grad():
        out = m(torch.rand(2, c, *PRESETS[name].in_hw))
    assert out.shape == (2, 4) and torch.all(torch.isfinite(out))
    with pytest.raises(RuntimeError):
        m(torch.rand(1, c + 1, *PRESETS[name].in_hw))


def test_channels_last_gives_the_same_outputs():
    torch.manual_seed(0)
    a = FrameTracker(TINY, (24, 32), channels_last=True).eval()
    b = FrameTracker(TINY, (24, 32), channels_last=False).eval()
    b.load_state_dict(a.state_dict())
    x = torch.rand(3, 2, 24, 32)
    with torch.no_grad():
        assert torch.allclose(a(x), b(x), atol=1e-5)


def test_loss_decreases_on_tiny_overfit():
    torch.manual_seed(0)
    m = FrameTracker(TINY, (16, 16))
    x = torch.rand(4, 2, 16, 16)
    y = torch.rand(4, 4)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = ann_loss(m(x), y, m, lam=1e-5)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]


def test_giou_values_scaling_and_loss_term():
    a = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.5, 0.5, 0.2, 0.2], [0.1, 0.1, 0.1, 0.1], [0.5, 0.5, -0.1, 0.2]])
    b = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.6, 0.5, 0.2, 0.2], [0.9, 0.9, 0.1, 0.1], [0.5, 0.5, 0.2, 0.2]])
    g = giou_cxcywh(a, b)
    # equal; shifted by half a side (IoU 1/3, hull = union); apart (IoU 0, hull 0.9^2);
    # a negative predicted width is an empty box (IoU 0, hull = the target)
    assert torch.allclose(g, torch.tensor([1.0, 1 / 3, -(0.81 - 0.02) / 0.81, 0.0]), atol=1e-6)
    # scaling the axes (pixel boxes against region-normalised ones) leaves it unchanged
    s = torch.tensor([240.0, 180.0, 240.0, 180.0])
    assert torch.allclose(giou_cxcywh(a[:3] * s, b[:3] * s), g[:3], atol=1e-6)
    l2 = box_regression_loss(a, b)
    with_g = box_regression_loss(a, b, giou_weight=0.5)
    assert float(with_g - l2) == pytest.approx(0.5 * float((1 - g).mean()), rel=1e-5)
    # NaN target rows are left out of both terms; the default is eq. 6 alone
    bn = b.clone()
    bn[2] = float("nan")
    keep = [0, 1, 3]
    assert float(box_regression_loss(a, bn, giou_weight=1.0)) == pytest.approx(
        float(box_regression_loss(a[keep], b[keep], giou_weight=1.0)), rel=1e-6)
    assert float(ann_loss(a, b)) == pytest.approx(float(l2))
    with pytest.raises(ValueError, match="giou_weight"):
        box_regression_loss(a, b, giou_weight=-1.0)
    # the term moves a prediction toward the target
    p = a[1:2].clone().requires_grad_(True)
    box_regression_loss(p, b[1:2], giou_weight=1.0).backward()
    assert float(p.grad[0, 0]) < 0


def test_region_geometry():
    box = np.array([30.0, 40.0, 20.0, 10.0])
    r = search_region(box, 2.5)
    assert np.allclose(r, [15.0, 20.0, 50.0, 50.0])
    n = box_to_region_norm(box, r)
    assert np.allclose(n, [0.5, 0.5, 0.4, 0.2])
    assert np.allclose(region_norm_to_box(n, r), box)
    f = full_region((180, 240))
    assert np.allclose(box_to_region_norm([0, 0, 240, 180], f), [0.5, 0.5, 1, 1])
    assert np.allclose(search_region([0, 0, 1, 1], 2.0, min_side_px=16)[2:], [16, 16])
    with pytest.raises(ValueError):
        search_region([np.nan] * 4, 2.0)


def test_crop_resample_maps_region():
    img = np.zeros((40, 60), np.float32)
    img[10:14, 20:24] = 1.0  # a 4x4 bright patch
    out = crop_resample(img, (10, 5, 20, 20), (10, 10))  # 2 px per output pixel
    assert out.shape == (10, 10)
    # output pixel (v, u) samples input ((u + 0.5) * 2 + 10, (v + 0.5) * 2 + 5) - 0.5
    assert out[3, 5] == pytest.approx(1.0) and out[3, 6] == pytest.approx(1.0)
    assert out[2, 5] == pytest.approx(0.5) and out[4, 6] == pytest.approx(0.5) and out[3, 4] == 0
    assert out.sum() == pytest.approx(4.0)
    assert np.all(crop_resample(img, (-100, -100, 20, 20), (4, 4)) == 0)  # outside the frame
    assert crop_resample(img, full_region(img.shape), (40, 60)) is img or np.array_equal(
        crop_resample(img, full_region(img.shape), (40, 60)), img
    )


def test_frame_input_attention_channel():
    rng = np.random.default_rng(0)
    img = (rng.random((48, 64)) * 255).astype(np.uint8)
    x = frame_input(img, full_region(img.shape), (48, 64), prev_box=(10, 10, 20, 12))
    assert x.shape == (2, 48, 64) and x.dtype == np.float32
    assert np.allclose(x[0], img / 255.0, atol=1e-6)
    assert np.allclose(x[1, 10:22, 10:30], x[0, 10:22, 10:30])
    assert np.all(x[1, 40:, 50:] < x[0, 40:, 50:] + 1e-7) and x[1, 40:, 50:].sum() < 0.2 * x[0, 40:, 50:].sum()
    no_att = frame_input(img, full_region(img.shape), (48, 64), attention=False)
    assert no_att.shape == (1, 48, 64)
    none_box = frame_input(img, full_region(img.shape), (48, 64), prev_box=None)
    assert np.allclose(none_box[1], none_box[0])


def test_checkpoint_and_torchscript_round_trip(tmp_path):
    torch.manual_seed(0)
    m = FrameTracker(TINY, (24, 32), attention=False).eval()
    x = torch.rand(3, 1, 24, 32)
    ck = tmp_path / "ann.pt"
    save_checkpoint(ck, m, seed=7)
    m2, cfg = load_checkpoint(ck, kind="ann", arch=TINY, in_hw=(24, 32))
    assert cfg["attention"] is False and cfg["seed"] == 7 and cfg["code_version"]
    ts = tmp_path / "ann_ts.pt"
    export_torchscript(m, ts, preset={"name": "tiny"})
    m3, cfg3 = load_checkpoint(ts, kind="ann")
    assert cfg3["preset"] == {"name": "tiny"}
    with torch.no_grad():
        ref = m(x)
        assert torch.equal(ref, m2(x))
        assert torch.allclose(ref, m3(x), atol=1e-6)
    with pytest.raises(ValueError, match=r"ann_ts\.pt.*input size mismatch"):
        load_checkpoint(ts, in_hw=(180, 240))
    with pytest.raises(ValueError, match=r"ann\.pt.*'snn' model was requested"):
        load_checkpoint(ck, kind="snn")
    data = ts.read_bytes()
    cut = tmp_path / "cut_ts.pt"
    cut.write_bytes(data[:-200])
    with pytest.raises(ValueError, match=r"cut_ts\.pt.*truncated"):
        load_checkpoint(cut)


def test_ncc_channel_peaks_where_the_template_is():
    from dashnet_ros.models.template import ncc_map, template_channels, template_patch

    rng = np.random.default_rng(0)
    frame = rng.random((180, 240)).astype(np.float32)
    target = (100.0, 60.0, 20.0, 16.0)                       # x, y, w, h
    region = (80.0, 40.0, 64.0, 64.0)                        # 1 input px per frame px
    search = frame[40:104, 80:144]
    m = template_channels(search, region, (64, 64), [(frame, target), None])
    assert m.shape == (2, 64, 64) and not m[1].any()         # no template yet: zeros
    iy, ix = np.unravel_index(np.argmax(m[0]), m[0].shape)
    assert (ix, iy) == (100 - 80 + 10, 60 - 40 + 8)          # the template's centre
    assert m[0].max() == pytest.approx(1.0, abs=1e-4) and m[0].min() >= -1
    # the template is cut at the window's scale: a 128 px window over 64 input px halves it
    assert template_patch(frame, target, 0.5).shape == (8, 10)
    assert template_patch(frame, (0, 0, 4, 4), 0.5) is None   # under 3 px
    assert template_patch(frame, (np.nan, 0, 4, 4), 1.0) is None
    # flat template or flat search area: zeros, never NaN
    assert not ncc_map(search, np.full((8, 8), 0.5, np.float32)).any()
    flat = ncc_map(np.zeros((64, 64), np.float32), search[:8, :8])
    assert np.all(np.isfinite(flat)) and np.abs(flat).max() <= 1
    # a template larger than the window is shrunk to fit
    assert ncc_map(search[:20, :20], search[:30, :30]).shape == (20, 20)


def test_fast_preset_input_has_the_template_channels():
    from dashnet_ros.models.ann import frame_input

    img = (np.random.default_rng(1).random((180, 240)) * 255).astype(np.uint8)
    box = (100.0, 60.0, 20.0, 16.0)
    x = frame_input(img, (75.0, 43.0, 50.0, 50.0), (64, 64), prev_box=box, templates=[(img, box), (img, box)])
    assert x.shape == (4, 64, 64)
    np.testing.assert_array_equal(x[2], x[3])
    iy, ix = np.unravel_index(np.argmax(x[2]), x[2].shape)   # the box centre, (110-75, 68-43) * 64/50
    assert abs(ix + 0.5 - 44.8) <= 1.5 and abs(iy + 0.5 - 32.0) <= 1.5 and x[2].max() > 0.9
    assert frame_input(img, (75.0, 43.0, 50.0, 50.0), (64, 64), attention=False,
                       templates=[(img, box)]).shape == (2, 64, 64)
