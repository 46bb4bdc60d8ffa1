"""Training the trackers: samples, loss going down, checkpoints and resume, torchrun/DDP,
and the shipped weights beating an untrained network on a held-out procedural clip."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from dashnet_ros.davis.stream import DavisSimulator, linear_blend
from dashnet_ros.io.dataset import write_dataset
from dashnet_ros.models.ann import PRESETS as ANN_PRESETS
from dashnet_ros.models.ann import FrameTracker
from dashnet_ros.models.arch import region_norm_to_box, search_region
from dashnet_ros.models.checkpoint import load_checkpoint
from dashnet_ros.models.snn import PRESETS as SNN_PRESETS
from dashnet_ros.models.snn import SpikingTracker, bin_events
from dashnet_ros.train import ann as tann
from dashnet_ros.train import common
from dashnet_ros.train import snn as tsnn
from dashnet_ros.train.data import (ANNSampler, EventSequence, FrameSequence, SNNSampler,
                                    list_datasets, quantise, scene_of, scene_seeds)
from dashnet_ros.world.scenes import render_sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEIGHTS = os.path.join(REPO, "dashnet_ros", "weights")
SNN_P = SNN_PRESETS["fast"]
ANN_P = ANN_PRESETS["fast"]



def _sim(seed, n_frames):
    return DavisSimulator(render_sequence(seed, n_frames), interp_factor=7, interpolator=linear_blend)


@pytest.fixture(scope="module")
def train_seq():
    """A short training stream (seed >= 1000), in memory: events and frames."""
    sim = _sim(1003, 30)
    return EventSequence.from_simulator(sim, "scenes_1003"), FrameSequence.from_source(sim.source, "scenes_1003")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Two tiny hybrid dataset files as `dashnet dataset build scenes:...` writes them,
    plus a folder holding one made from a held-out seed."""
    root = tmp_path_factory.mktemp("train_data")
    good = root / "train"
    bad = root / "heldout"
    good.mkdir(), bad.mkdir()
    for seed, d in ((1001, good), (1002, good), (3, bad)):
        write_dataset(str(d / f"scenes_{seed:04d}.h5"), _sim(seed, 16), source_desc=f"scenes:{seed} (16 frames)")
    return good, bad


# ----------------------------------------------------------------------------- data


def test_snn_samples_shapes_and_targets(train_seq):
    ev_seq, _ = train_seq
    k = 6
    s = SNNSampler([ev_seq], SNN_P, n_windows=k, seed=1, ref_noise=0.1)
    b = s.teacher_batch(3)
    assert b["x"].shape == (3, k, SNN_P.steps_per_window, 2) + SNN_P.in_hw
    assert b["target"].shape == b["region"].shape == b["ref"].shape == (3, k, 4)
    assert b["gt"].shape == (3, k + 1, 4)
    # the target is the ground truth at each window's end, in that window's region
    np.testing.assert_allclose(region_norm_to_box(b["target"], b["region"]), b["gt"][:, 1:], atol=1e-3)
    # the region is the search window around the (noisy) reference box
    for i in range(3):
        for j in range(k):
            np.testing.assert_allclose(b["region"][i, j], search_region(b["ref"][i, j], SNN_P.search_scale), atol=1e-4)
    # the input is exactly the pipeline's bin_events over that region
    c = SNNSampler([ev_seq], SNN_P, n_windows=k, seed=1).clips(1)[0]
    assert len(c.edges_us) == k + 1 and np.all(np.diff(c.edges_us) == SNN_P.window_us)
    ref = c.gt[:-1]
    from dashnet_ros.train.data import snn_teacher_inputs
    x, reg, _ = snn_teacher_inputs(c, ref, SNN_P)
    j = 2
    direct = bin_events(ev_seq.events, int(c.edges_us[j]), int(c.edges_us[j + 1]), SNN_P.steps_per_window,
                        reg[j], SNN_P.in_hw)
    np.testing.assert_array_equal(x[j], direct)
    assert x.sum() > 0
    # noise: references differ from the ground truth, but not by much (eq. 12, std 0.1)
    d = np.abs(b["ref"] - b["gt"][:, :-1])[..., :2] / b["gt"][:, :-1, 2:]
    assert 0 < np.median(d) < 0.3


def test_ann_samples_shapes_and_targets(train_seq):
    _, fr = train_seq
    for att, c in ((True, 2), (False, 1)):
        s = ANNSampler([fr], ANN_P, attention=att, seed=2, flip=True)
        b = s.batch(5)
        assert b["x"].shape == (5, c + ANN_P.templates) + ANN_P.in_hw
        img = b["x"][:, :c]
        assert b["x"].dtype == np.float32 and 0 <= img.min() and img.max() <= 1
        ncc = b["x"][:, c:]   # template channels: normalised cross-correlation
        assert -1 <= ncc.min() and ncc.max() <= 1
        np.testing.assert_allclose(region_norm_to_box(b["target"], b["region"]), b["gt"], atol=1e-3)
        if ANN_P.view == "frame":
            np.testing.assert_allclose(b["region"], [[0, 0, 240, 180]] * 5)
        else:  # a square window of search_scale box sides around the (noisy) fed-back box
            r, g = b["region"], b["gt"]
            np.testing.assert_allclose(r[:, 2], r[:, 3])
            side = ANN_P.search_scale * np.maximum(g[:, 2], g[:, 3])
            assert np.all((r[:, 2] >= 0.1 * side - 1e-3) & (r[:, 2] < 3 * side)), (r, g)
            cx, cy = g[:, 0] + g[:, 2] / 2, g[:, 1] + g[:, 3] / 2
            assert np.all((r[:, 0] < cx) & (cx < r[:, 0] + r[:, 2]) & (r[:, 1] < cy) & (cy < r[:, 1] + r[:, 3]))


def test_ann_sampler_far_feedback_shifts_by_box_sizes(train_seq):
    _, fr = train_seq
    gt = np.array([100.0, 60.0, 20.0, 10.0], np.float32)
    near = ANNSampler([fr], ANN_P, seed=3, p_wide=0.0)
    far = ANNSampler([fr], ANN_P, seed=3, p_wide=0.0, p_far=1.0, far_shift=0.5)
    for s, lo, hi in ((near, 0.07, 0.13), (far, 0.42, 0.58)):
        fb = np.stack([s.feedback(gt) for _ in range(2000)])
        shift = (fb[:, :2] + fb[:, 2:] / 2 - (gt[:2] + gt[2:] / 2)) / gt[2:]   # in box sizes
        assert lo < shift.std() < hi, shift.std()
        assert 0.05 < (fb[:, 2] / gt[2] - 1).std() < 0.15                     # size noise stays eq. 12's


def test_dataset_files_and_heldout_refusal(data_dir):
    good, bad = data_dir
    paths = list_datasets(str(good))
    assert [os.path.basename(p) for p in paths] == ["scenes_1001.h5", "scenes_1002.h5"]
    with pytest.raises(ValueError, match="held-out test seed 3"):
        list_datasets(str(bad))
    assert len(list_datasets(str(bad), allow_heldout=True)) == 1
    with pytest.raises(FileNotFoundError, match="dataset build"):
        list_datasets(str(good / "nothing"))
    assert scene_of("scenes:1001 (16 frames)") == (1001, 16) and scene_of("world:3 (1 s)") is None
    # every source frame is re-rendered exactly: the APS frames are among them
    fs = FrameSequence.from_dataset(paths[0])
    aps = FrameSequence.from_dataset(paths[0], every_frame=False)
    assert len(fs.t_us) == 16 and len(aps.t_us) < len(fs.t_us)
    for t, img, box in zip(aps.t_us, aps.images, aps.boxes):
        k = int(np.searchsorted(fs.t_us, t))
        np.testing.assert_array_equal(fs.images[k], img)
        np.testing.assert_allclose(fs.boxes[k], box, atol=1e-4)
    es = EventSequence.from_dataset(paths[0])
    assert len(es.events) > 0 and es.gt_t_us.size > 16   # the 8x oversampled ground truth


# ----------------------------------------------------------------------------- training


def _snn_fixed_loss(model, seqs, seed=5):
    s = SNNSampler(seqs, SNN_P, n_windows=5, seed=seed)
    clips = s.clips(16)
    with torch.no_grad():
        loss, _ = tsnn.rollout_loss(model, clips, SNN_P, np.random.default_rng(0), 0.0, 0.1, 1)
    return float(loss)


def test_snn_training_decreases_loss(train_seq, tmp_path):
    ev_seq, _ = train_seq
    common.seed_everything(0)
    m0 = SpikingTracker.from_preset("fast")
    tsnn.init_readout(m0, SNN_P)
    before = _snn_fixed_loss(m0, [ev_seq])
    out = str(tmp_path / "snn.pt")
    tsnn.train([ev_seq], out, steps=30, batch=8, windows=5, burn_in=1, lr=3e-3, threads=1, pool=1)
    m1, cfg = load_checkpoint(out, kind="snn")
    after = _snn_fixed_loss(m1, [ev_seq])
    assert after < 0.8 * before, (before, after)
    assert cfg["preset"]["name"] == "fast" and cfg["seed"] == 0 and cfg["code_version"]
    assert cfg["data_recipe"]["train"]["step"] == 30 and cfg["data_recipe"]["train"]["final"]


def test_snn_ref_offset_is_kept_over_a_clip(train_seq):
    """With ``ref_offset`` every ground-truth-made reference of a clip sits at the same offset
    from the target (not a fresh draw per window): the reference IoU drops, and without
    per-window noise the offset in box sizes is the same in every window."""
    ev_seq, _ = train_seq
    m = SpikingTracker.from_preset("fast")
    tsnn.init_readout(m, SNN_P)
    clips = SNNSampler([ev_seq], SNN_P, n_windows=4, seed=2).clips(6)
    seen = []
    import dashnet_ros.train.snn as mod
    real = mod.snn_window_input

    def spy(ev, t0, t1, ref, preset, hw):
        seen.append(np.array(ref, np.float64))
        return real(ev, t0, t1, ref, preset, hw)

    mod.snn_window_input = spy
    try:
        with torch.no_grad():
            _, st0 = tsnn.rollout_loss(m, clips, SNN_P, np.random.default_rng(0), 0.0, 0.0, 0)
            seen.clear()
            _, st1 = tsnn.rollout_loss(m, clips, SNN_P, np.random.default_rng(0), 0.0, 0.0, 0, ref_offset=0.3)
    finally:
        mod.snn_window_input = real
    assert st0["ref_iou"] > 0.99 and st1["ref_iou"] < 0.9
    refs = np.stack(seen).reshape(4, 6, 4)       # [window, clip, box]
    gts = np.stack([[c.gt[k] for c in clips] for k in range(4)])
    off = ((refs[..., 0] + refs[..., 2] / 2) - (gts[..., 0] + gts[..., 2] / 2)) / gts[..., 2]
    assert np.abs(off).max() > 0.05
    np.testing.assert_allclose(off, np.broadcast_to(off[0], off.shape), atol=1e-4)


def test_snn_rollout_loss_adds_the_overlap_term(train_seq):
    """``giou_weight`` adds ``w * mean(1 - GIoU)`` per window to eq. 4 (same draws: only
    the loss differs; an untrained readout's boxes overlap the target imperfectly)."""
    ev_seq, _ = train_seq
    torch.manual_seed(0)
    m = SpikingTracker.from_preset("fast")
    tsnn.init_readout(m, SNN_P)
    clips = SNNSampler([ev_seq], SNN_P, n_windows=4, seed=3).clips(4)
    with torch.no_grad():
        l0, s0 = tsnn.rollout_loss(m, clips, SNN_P, np.random.default_rng(0), 0.0, 0.1, 1)
        l1, s1 = tsnn.rollout_loss(m, clips, SNN_P, np.random.default_rng(0), 0.0, 0.1, 1, giou_weight=1.0)
        l2, _ = tsnn.rollout_loss(m, clips, SNN_P, np.random.default_rng(0), 0.0, 0.1, 1, giou_weight=2.0)
    assert s0["iou"] == s1["iou"]                 # the same windows and boxes
    d1, d2 = float(l1 - l0), float(l2 - l0)
    assert 0.0 < d1 < 2.0 and d2 == pytest.approx(2 * d1, rel=1e-4)


def test_snn_init_starts_from_a_checkpoint(train_seq, tmp_path):
    ev_seq, _ = train_seq
    src = str(tmp_path / "src.pt")
    tsnn.train([ev_seq], src, steps=2, batch=2, windows=3, burn_in=0, threads=1, pool=1)
    base, _ = load_checkpoint(src, kind="snn")
    out = str(tmp_path / "ft.pt")
    tsnn.train([ev_seq], out, steps=1, batch=2, windows=3, burn_in=0, lr=1e-12, lam=0.0, threads=1, pool=1,
               init=src, ref_offset=0.2)
    ft, cfg = load_checkpoint(out, kind="snn")
    for a, b in zip(base.state_dict().values(), ft.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-8, rtol=0)
    assert cfg["data_recipe"]["train"]["init"] == "src.pt" and cfg["data_recipe"]["train"]["ref_offset"] == 0.2
    with pytest.raises(ValueError, match="ref_offset"):
        tsnn.train([ev_seq], out, steps=1, ref_offset=-1.0, threads=1, pool=1)


def test_ann_training_decreases_loss(train_seq, tmp_path):
    _, fr = train_seq

    def fixed_loss(model):
        b = ANNSampler([fr], ANN_P, attention=False, seed=9, flip=False).batch(32)
        with torch.no_grad():
            return float(((model(torch.from_numpy(b["x"])) - torch.from_numpy(b["target"])) ** 2).sum(1).mean())

    common.seed_everything(0)
    before = fixed_loss(FrameTracker.from_preset("fast", attention=False))
    out = str(tmp_path / "ann_nat.pt")
    tann.train([fr], out, attention=False, steps=150, batch=16, lr=2e-3, threads=1, pool=1)
    m1, cfg = load_checkpoint(out, kind="ann")
    assert cfg["attention"] is False and cfg["preset"]["attention"] is False
    after = fixed_loss(m1)
    assert after < 0.65 * before, (before, after)


def test_resume_continues_from_saved_step(train_seq, tmp_path):
    _, fr = train_seq
    out = str(tmp_path / "ann.pt")
    tann.train([fr], out, steps=6, batch=4, ckpt_every=3, threads=1, pool=1)
    st = torch.load(common.state_path(out), weights_only=True)
    assert st["step"] == 6
    saved, _ = load_checkpoint(out, kind="ann")
    seen = []
    # resuming to the step already reached trains nothing and keeps the weights
    res = tann.train([fr], out, steps=6, batch=4, resume=True, threads=1, pool=1, progress=lambda n, t: seen.append(n))
    assert res["step"] == 6 and seen == []
    again, _ = load_checkpoint(out, kind="ann")
    for a, b in zip(saved.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    res = tann.train([fr], out, steps=9, batch=4, resume=True, threads=1, pool=1, progress=lambda n, t: seen.append(n))
    assert seen == [7, 8, 9] and res["step"] == 9
    assert torch.load(common.state_path(out), weights_only=True)["step"] == 9
    with pytest.raises(ValueError, match="attention"):
        tann.train([fr], out, steps=10, batch=4, resume=True, attention=False, threads=1, pool=1)
    with pytest.raises(FileNotFoundError):
        tann.train([fr], str(tmp_path / "none.pt"), steps=2, resume=True, threads=1, pool=1)


def test_cli_train_targets(data_dir, tmp_path):
    from dashnet_ros import cli

    good, _ = data_dir
    out = str(tmp_path / "snn_cli.pt")
    rc = cli.main(["train", "snn", "--data", str(good), "--out", out, "--steps", "2", "--batch", "2",
                   "--windows", "3", "--burn-in", "0", "--pool", "2", "--threads", "1", "-q"])
    assert rc == 0
    _, cfg = load_checkpoint(out, kind="snn")
    assert cfg["data_recipe"]["n_files"] == 2 and "scenes:1001-1002" in cfg["data_recipe"]["sources"][0]
    assert "giou_weight" not in cfg["data_recipe"]["train"]   # eq. 4 alone, as the shipped SNN
    rc = cli.main(["train", "snn", "--data", str(good), "--out", str(tmp_path / "snn_g.pt"), "--steps", "2",
                   "--batch", "2", "--windows", "3", "--burn-in", "0", "--pool", "2", "--threads", "1", "-q",
                   "--giou-weight", "0.2"])
    assert rc == 0 and load_checkpoint(str(tmp_path / "snn_g.pt"), kind="snn")[1]["data_recipe"]["train"]["giou_weight"] == 0.2
    rc = cli.main(["train", "ann", "--no-attention", "--data", str(good), "--out", str(tmp_path / "a.pt"),
                   "--steps", "1", "--batch", "2", "--pool", "2", "--threads", "1", "-q"])
    assert rc == 0 and load_checkpoint(str(tmp_path / "a.pt"))[1]["attention"] is False
    assert load_checkpoint(str(tmp_path / "a.pt"))[1]["data_recipe"]["train"]["giou_weight"] == 0.1
    rc = cli.main(["train", "ann", "--data", str(good), "--out", str(tmp_path / "g.pt"), "--giou-weight", "0",
                   "--steps", "1", "--batch", "2", "--pool", "2", "--threads", "1", "-q"])
    assert rc == 0 and load_checkpoint(str(tmp_path / "g.pt"))[1]["data_recipe"]["train"]["giou_weight"] == 0.0


@pytest.mark.parametrize("target", ["snn", "ann"])
def test_a_negative_overlap_weight_is_refused_before_the_data_is_read(target, tmp_path, capsys):
    from dashnet_ros import cli

    out = tmp_path / "w.pt"
    rc = cli.main(["train", target, "--data", str(tmp_path / "no_such_data"), "--out", str(out),
                   "--giou-weight", "-0.1", "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and "giou_weight must be a finite number >= 0, got -0.1" in err and "no_such_data" not in err
    assert not out.exists()


def test_scene_specs_and_frames_rendered_on_the_fly():
    assert scene_seeds("scenes:1000-1002") == [1000, 1001, 1002] and scene_seeds(" scenes:1005 ") == [1005]
    assert scene_seeds("out/train/data") is None and scene_seeds("scenes:12 (16 frames)") is None
    with pytest.raises(ValueError, match="empty seed range"):
        scene_seeds("scenes:1002-1000")
    with pytest.raises(ValueError, match="held-out"):
        scene_seeds("scenes:999-1001")
    assert scene_seeds("scenes:5", allow_heldout=True) == [5]
    # the frames dashnet dataset build would simulate from that seed, quantised as APS frames
    seq = FrameSequence.load("scenes:1004")
    src = render_sequence(1004, 240)
    assert seq.images.shape == (240, 180, 240) and seq.images.dtype == np.uint8
    for k in (0, 97, 239):
        t = int(src.frame_t_us(k))
        assert seq.t_us[k] == t and np.array_equal(seq.images[k], quantise(src.render_at(t)))
        assert np.allclose(seq.boxes[k], src.box_at(np.array([t]))[0])
    aps = FrameSequence.from_scene(1004, every_frame=False)
    assert len(aps.t_us) == 30 and np.array_equal(aps.images, seq.images[::8])
    with pytest.raises(ValueError, match="held-out"):
        FrameSequence.load("scenes:7")


def test_ann_trains_on_scenes_rendered_on_the_fly(tmp_path):
    from dashnet_ros import cli

    out = str(tmp_path / "ann_sc.pt")
    rc = cli.main(["train", "ann", "--data", "scenes:1000-1001", "--out", out, "--steps", "2", "--batch", "2",
                   "--pool", "2", "--threads", "1", "-q"])
    assert rc == 0
    rec = load_checkpoint(out, kind="ann")[1]["data_recipe"]
    assert rec["n_sequences"] == 2 and rec["n_files"] == 0
    assert rec["sources"] == ["scenes:1000-1001 (2 sequences, 240 frames, rendered on the fly)"]
    # the SNN needs simulated events: it says how to make them instead of training on nothing
    with pytest.raises(ValueError, match="dashnet dataset build scenes:1000-1001"):
        tsnn.train("scenes:1000-1001", str(tmp_path / "s.pt"), steps=1)
    assert not os.path.exists(tmp_path / "s.pt")


DDP_SCRIPT = r"""
import json, os, sys
import torch
from dashnet_ros.train import ann
res = ann.train(sys.argv[1], sys.argv[2], steps=2, batch=2, threads=1, pool=2, every_frame=False)
with open(sys.argv[2] + f".rank{os.environ['RANK']}", "w") as fh:
    json.dump({"world": res["world"], "step": res["step"], "sum": res["param_checksum"]}, fh)
"""


def test_ddp_two_cpu_processes(data_dir, tmp_path):
    good, _ = data_dir
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    out = str(tmp_path / "ddp.pt")
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(script), str(good), out],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    ranks = []
    for rank in (0, 1):
        with open(f"{out}.rank{rank}") as fh:
            ranks.append(json.load(fh))
    assert [(r["world"], r["step"]) for r in ranks] == [(2, 2), (2, 2)]
    # DDP averaged the gradients: both replicas hold the same weights, the ones rank 0 saved
    assert ranks[0]["sum"] == pytest.approx(ranks[1]["sum"], rel=1e-9, abs=1e-9)
    saved, cfg = load_checkpoint(out, kind="ann")
    assert common.param_checksum(saved) == pytest.approx(ranks[0]["sum"], rel=1e-9, abs=1e-9)
    assert cfg["data_recipe"]["train"]["step"] == 2


# ----------------------------------------------------------------------------- shipped weights


@pytest.fixture(scope="module")
def heldout_clip():
    """A short held-out stream (test seed 7, never trained on)."""
    sim = _sim(7, 40)
    return EventSequence.from_simulator(sim, "scenes_0007"), FrameSequence.from_source(sim.source, "scenes_0007")


def test_shipped_snn_beats_untrained(heldout_clip):
    ev, _ = heldout_clip
    trained, cfg = load_checkpoint(os.path.join(WEIGHTS, "snn_fast.pt"), kind="snn")
    assert cfg["preset"]["name"] == "fast"
    torch.manual_seed(0)
    untrained = SpikingTracker.from_preset("fast")
    # reference = noisy ground truth every window: the shipped SNN re-centres, the untrained one is lost
    r_t = tsnn.run_windows(trained, [ev], SNN_P, "noisy", max_windows=200)
    r_u = tsnn.run_windows(untrained, [ev], SNN_P, "noisy", max_windows=200)
    assert r_t["windows"] >= 100
    assert r_t["iou"] > r_u["iou"] + 0.2, (r_t, r_u)
    assert r_t["iou"] > 0.5
    # SNN-origin (its own boxes as reference from the initial box on): it follows the target,
    # far better than holding the initial box (zero-order hold)
    c_t = tsnn.run_windows(trained, [ev], SNN_P, "closed", max_windows=300)
    c_u = tsnn.run_windows(untrained, [ev], SNN_P, "closed", max_windows=300)
    assert c_t["iou"] > c_t["iou_zoh"] + 0.15, c_t
    assert c_t["iou"] > c_u["iou"] + 0.3, (c_t, c_u)


# (an untrained search-window net already hands back roughly the fed box: 0.64 IoU here)
@pytest.mark.parametrize("name,att,margin", [("ann_fast.pt", True, 0.15), ("ann_nat_fast.pt", False, 0.1)])
def test_shipped_ann_beats_untrained(heldout_clip, name, att, margin):
    _, fr = heldout_clip
    trained, cfg = load_checkpoint(os.path.join(WEIGHTS, name), kind="ann")
    assert cfg["attention"] is att
    torch.manual_seed(0)
    untrained = FrameTracker.from_preset("fast", attention=att)
    e_t = tann.evaluate(trained, [fr], ANN_P)
    r_t, r_u = e_t["noisy"], tann.evaluate(untrained, [fr], ANN_P)["noisy"]
    assert r_t["frames"] >= 30
    assert r_t["iou"] > r_u["iou"] + margin, (r_t, r_u)
    if att:
        # capture range: fed a box one box size off, the trained ANN still finds the target
        # far better than the fed box itself (IoU of two equal boxes one side apart: 0)
        assert set(e_t) >= {"shift_0.5", "shift_1"}
        assert e_t["shift_1"]["frames"] == r_t["frames"] and e_t["shift_1"]["iou"] > 0.3, e_t
        assert e_t["shift_0.5"]["iou"] > e_t["shift_1"]["iou"], e_t
    else:
        assert not any(k.startswith("shift_") for k in e_t)


def test_shipped_weights_small():
    total = sum(os.path.getsize(os.path.join(WEIGHTS, n)) for n in ("snn_fast.pt", "ann_fast.pt", "ann_nat_fast.pt"))
    assert total <= 20e6
