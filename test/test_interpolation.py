"""FCN frame interpolation (eq. 13): operator, recursion, shipped weights, checkpoints,
training CLI and the Table 1 command."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from dashnet_ros.cli import main
from dashnet_ros.davis import interpolation as itp


@pytest.fixture(scope="module")
def shipped():
    torch.set_num_threads(2)
    return itp.load_default_interpolator()


@pytest.fixture(scope="module")
def untrained():
    torch.manual_seed(0)
    return itp.FCNInterpolator(itp.build_model())


def _square(x0: float, w: int = 64, h: int = 48, size: int = 12) -> np.ndarray:
    """A bright textured square with its left edge at ``x0`` (sub-pixel, area-sampled)."""
    xs = np.arange(w, dtype=np.float64)
    cover_x = np.clip(np.minimum(xs + 1, x0 + size) - np.maximum(xs, x0), 0, 1)
    cover_y = np.zeros(h)
    cover_y[18 : 18 + size] = 1
    img = 0.2 + 0.6 * cover_y[:, None] * cover_x[None, :]
    return img.astype(np.float32)


def _centroid_x(img: np.ndarray) -> float:
    m = np.clip(img - 0.2, 0, None)
    return float((m.sum(0) * np.arange(img.shape[1])).sum() / m.sum())


# ----------------------------------------------------------------------------- operator


def test_adaptive_kernels_shift_and_match_exact_for_constant_kernels():
    rng = np.random.default_rng(0)
    img = torch.from_numpy(rng.random((1, 1, 20, 24), dtype=np.float32))
    k = 5
    kv = torch.zeros(1, k, 20, 24)
    kh = torch.zeros(1, k, 20, 24)
    kv[:, 2] = 1  # dy = 0
    kh[:, 3] = 1  # dx = +1: out(y, x) = img(y, x + 1)
    out = itp.apply_adaptive_kernels(img, kv, kh)
    assert torch.allclose(out[..., :, :-1], img[..., :, 1:])
    # spatially constant random kernels: two-pass == outer-product reference
    kv = torch.rand(1, k, 1, 1).expand(1, k, 20, 24).contiguous()
    kh = torch.rand(1, k, 1, 1).expand(1, k, 20, 24).contiguous()
    a = itp.apply_adaptive_kernels(img, kv, kh)
    b = itp.apply_adaptive_kernels_exact(img, kv, kh)
    assert torch.allclose(a, b, atol=1e-5)


def test_kernels_are_convex_per_pixel(untrained):
    a = torch.rand(2, 1, 30, 41)
    b = torch.rand(2, 1, 30, 41)
    kva, kha, kvb, khb = untrained.model.kernels(a, b)
    assert kva.shape == (2, untrained.kernel_size, 30, 41)
    assert torch.all(kva >= 0) and torch.all(khb >= 0)
    assert torch.allclose(kha.sum(1), torch.ones(2, 30, 41), atol=1e-5)
    assert torch.allclose(khb.sum(1), torch.ones(2, 30, 41), atol=1e-5)
    assert torch.allclose(kva.sum(1) + kvb.sum(1), torch.ones(2, 30, 41), atol=1e-5)


# ----------------------------------------------------------------------------- interpolators


@pytest.mark.parametrize("factor", [0, 1, 3, 7])
def test_counts_shapes_ranges(untrained, factor):
    rng = np.random.default_rng(factor)
    a = rng.random((37, 50), dtype=np.float32)
    b = rng.random((37, 50), dtype=np.float32)
    for interp in (untrained, itp.LinearInterpolator()):
        out = interp(a, b, factor)
        assert len(out) == factor
        for f in out:
            assert f.shape == (37, 50) and f.dtype == np.float32
            assert f.min() >= 0.0 and f.max() <= 1.0


def test_bad_factor_and_frames(untrained):
    a = np.zeros((16, 16), np.float32)
    with pytest.raises(ValueError, match="2\\*\\*k - 1"):
        untrained(a, a, 2)
    with pytest.raises(ValueError, match="non-negative"):
        untrained(a, a, -1)
    with pytest.raises(ValueError, match="shape"):
        untrained(a, np.zeros((16, 17), np.float32), 1)


def test_recursion_is_nested_and_time_ordered(shipped):
    a, b = _square(10.0), _square(14.0)  # 4 px between the frames
    x1, x3, x7 = shipped(a, b, 1), shipped(a, b, 3), shipped(a, b, 7)
    # x7 = midpoints of x3 = midpoints of x1, computed level by level
    np.testing.assert_allclose(x7[3], x1[0], atol=1e-5)
    np.testing.assert_allclose(np.stack(x7[1::2]), np.stack(x3), atol=1e-5)
    cx = [_centroid_x(f) for f in [a] + x7 + [b]]
    assert all(c1 < c2 for c1, c2 in zip(cx, cx[1:])), cx
    # equally spaced in time: each frame near the true square at k/8 (0.5 px per frame)
    truth = [_square(10.0 + 0.5 * k) for k in range(1, 8)]
    dev = [c - _centroid_x(t) for c, t in zip(cx[1:-1], truth)]
    assert max(abs(d) for d in dev) < 0.3, dev
    fcn = np.mean([itp.psnr(f, t) for f, t in zip(x7, truth)])
    lin = np.mean([itp.psnr(f, t) for f, t in zip(itp.LinearInterpolator()(a, b, 7), truth)])
    assert fcn > lin + 1.0, (fcn, lin)


def test_fcn_levels_blend_below(shipped):
    a, b = _square(10.0), _square(14.0)
    full = shipped(a, b, 7)
    part = itp.FCNInterpolator(shipped.model, fcn_levels=2)(a, b, 7)
    np.testing.assert_allclose(np.stack(part[1::2]), np.stack(full[1::2]), atol=1e-6)  # FCN levels
    key = [a] + part[1::2] + [b]
    for i in range(4):  # level 3: plain blends of the neighbouring key frames
        np.testing.assert_allclose(part[2 * i], 0.5 * (key[i] + key[i + 1]), atol=1e-6)
    none = itp.FCNInterpolator(shipped.model, fcn_levels=0)(a, b, 3)
    np.testing.assert_allclose(np.stack(none), np.stack(itp.LinearInterpolator()(a, b, 3)), atol=1e-6)


def test_linear_interpolator_exact():
    a = np.zeros((4, 5), np.float32)
    b = np.ones((4, 5), np.float32)
    out = itp.LinearInterpolator()(a, b, 3)
    assert [float(f.mean()) for f in out] == pytest.approx([0.25, 0.5, 0.75])


def test_static_scene_is_returned(shipped):
    from dashnet_ros.world.scenes import render_sequence

    img = render_sequence(990, 2, 96, 72, 30.0).render_at(0)
    for f in shipped(img, img, 3):
        assert np.abs(f - img).max() < 0.02
        assert itp.psnr(f, img) > 45.0


def test_shipped_weights_beat_linear_on_heldout(shipped):
    tri = itp.heldout_triplets(6, first_seed=950, fps_list=(15.0, 60.0, 240.0),
                               half_gap_frames=(0.5, 1.0))
    m = itp.evaluate_triplets(shipped, tri)
    assert m["psnr"] >= m["psnr_linear"] + 0.1, m
    assert m["l1"] < m["l1_linear"], m


def test_heldout_rejects_training_seeds():
    with pytest.raises(ValueError, match="held-out"):
        itp.heldout_triplets(2, first_seed=999)


# ----------------------------------------------------------------------------- checkpoints


def test_shipped_file_is_small_and_matches_code():
    assert itp.DEFAULT_WEIGHTS.is_file()
    assert itp.DEFAULT_WEIGHTS.stat().st_size < 2_000_000
    _, blob = itp.load_checkpoint(itp.DEFAULT_WEIGHTS, expect_config=itp.DEFAULT_CONFIG)
    assert blob["config"] == itp.DEFAULT_CONFIG


def test_checkpoint_refusals(tmp_path):
    good = tmp_path / "good.pt"
    model = itp.build_model()
    itp.save_checkpoint(good, model, itp.DEFAULT_CONFIG)
    m2, _ = itp.load_checkpoint(good, expect_config=itp.DEFAULT_CONFIG)
    for p, q in zip(model.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(p, q)

    other = dict(itp.DEFAULT_CONFIG, kernel_size=7)
    wrong = tmp_path / "k7.pt"
    itp.save_checkpoint(wrong, itp.build_model(other), other)
    with pytest.raises(ValueError, match=r"k7\.pt.*kernel_size"):
        itp.load_default_interpolator(wrong)

    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"trunc\.pt.*truncated"):
        itp.load_default_interpolator(trunc)

    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(ValueError, match=r"foreign\.pt is not an interpolation checkpoint"):
        itp.load_checkpoint(foreign)

    old = tmp_path / "old.pt"
    itp.save_checkpoint(old, model, itp.DEFAULT_CONFIG, extra={"code_version": itp.CODE_VERSION - 1})
    with pytest.raises(ValueError, match=r"old\.pt.*code version"):
        itp.load_checkpoint(old)

    with pytest.raises(FileNotFoundError, match="missing.pt"):
        itp.load_default_interpolator(tmp_path / "missing.pt")
    assert not list(tmp_path.glob("*.tmp*"))


# ----------------------------------------------------------------------------- training


def _tiny_opts(steps):
    return itp.TrainOptions(steps=steps, seed=1234, batch=2, crop=32, n_val=0, ckpt_every=1, pool=2)


def test_training_resume_equals_uninterrupted(tmp_path):
    torch.set_num_threads(1)
    full = tmp_path / "full.pt"
    itp.train_interpolator(full, _tiny_opts(3), log=lambda s: None)

    part = tmp_path / "part.pt"

    def stop_after_two(n, total):
        if n == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        itp.train_interpolator(part, _tiny_opts(3), progress=stop_after_two, log=lambda s: None)
    _, blob = itp.load_checkpoint(part)
    assert blob["train"]["step"] == 2
    itp.train_interpolator(part, _tiny_opts(3), resume=True, log=lambda s: None)
    a, _ = itp.load_checkpoint(full)
    b, blob = itp.load_checkpoint(part)
    assert blob["train"]["step"] == 3
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name


def test_train_cli_two_steps_and_resume(tmp_path):
    out = tmp_path / "interp.pt"
    exp = tmp_path / "export.pt"
    args = ["train", "interp", "--out", str(out), "--steps", "2", "--batch", "2", "--crop", "32",
            "--n-val", "1", "--val-every", "2", "--seed", "1001"]
    assert main(args) == 0
    _, blob = itp.load_checkpoint(out)
    assert blob["train"]["step"] == 2 and len(blob["train"]["history"]) == 1
    assert main(args) == 2  # exists without --resume: refused
    assert main(args[:5] + ["3", "--resume", "--n-val", "0", "--export", str(exp)]) == 0
    _, blob = itp.load_checkpoint(out)
    assert blob["train"]["step"] == 3
    _, eblob = itp.load_checkpoint(exp, expect_config=itp.DEFAULT_CONFIG)
    assert "train" not in eblob and eblob["trained"]["steps"] == 3
    assert exp.stat().st_size < out.stat().st_size


def test_train_targets_registry():
    from dashnet_ros.commands import train

    assert "interp" in train.TARGETS
    add_args, run = train.TARGETS["interp"]
    assert callable(add_args) and callable(run)


# ----------------------------------------------------------------------------- table 1


def test_table1_command_writes_both_files(tmp_path, capsys):
    out = tmp_path / "t1"
    rc = main(["table1", "--out", str(out), "--sequences", "1", "--seconds", "0.2", "--fps", "15",
               "--width", "64", "--height", "48", "--first-seed", "7", "--events"])
    assert rc == 0
    md = (out / "table1.md").read_text()
    assert "without interpolation (15 Hz)" in md and "interpolation x7 (120 Hz)" in md
    doc = json.loads((out / "table1.json").read_text())
    assert doc["meta"]["seeds"] == [7]
    t = doc["table"]
    for mode in ("common_grid", "own_rate"):
        assert t["fcn"][mode]["without"] == t["linear"][mode]["without"]
        for name in ("fcn", "linear"):
            for col in ("without", "x1", "x3", "x7"):
                cell = t[name][mode][col]
                assert math.isfinite(cell["rmse_mean"]) and cell["rmse_mean"] > 0
                assert cell["psnr_mean"] == pytest.approx(20 * math.log10(255 / cell["rmse_mean"]))
    for name in ("fcn", "linear"):
        for col in ("without", "x1", "x3", "x7"):
            cell = t[name]["events"][col]
            assert cell["rmse_mean"] >= 0 and 0 < cell["count_ratio_mean"] < 10
    assert "DVS events" in md
    # interpolating beats holding the last frame on the common grid
    assert t["linear"]["common_grid"]["x7"]["rmse_mean"] < t["linear"]["common_grid"]["without"]["rmse_mean"]
    assert not list(out.glob("*.tmp*"))
