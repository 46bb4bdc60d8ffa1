"""Tests of the OpenCV peer trackers and their evaluation (dashnet_ros.eval.peers)."""
import os
import signal

import cv2
import numpy as np
import pytest

from dashnet_ros.boxes import iou
from dashnet_ros.davis.frames import ApsFrame, Frame
from dashnet_ros.davis.sources import write_nfs_sequence
from dashnet_ros.davis.stream import DavisSimulator
from dashnet_ros.eval.heldout import build_heldout, read_gt_sidecar
from dashnet_ros.eval.metrics import score
from dashnet_ros.eval.peers import (PAPER_PEERS, Peer, PeerCrashed, aps_frame_indices,
                                    available_peers, evaluate_sequence, iter_peer, make_peer,
                                    missing_peers, peer_namespace, run_peer,
                                    run_peer_on_sequence, stream_in_subprocess)
from dashnet_ros.world.scenes import render_sequence

W, H, N, S = 160, 120, 20, 40


def _square_clip(n=N, speed=(3.0, 1.5)):
    """A textured S x S square moving over a smooth textured background at 240 fps:
    ``[(t_us, uint8 image)]`` and the true boxes.  (OpenCV's MOSSE reports failure on
    targets much smaller than ~40 px: its PSR test has a fixed 11x11 exclusion window.)"""
    rng = np.random.default_rng(7)
    bg = cv2.GaussianBlur(rng.uniform(40, 120, (H, W)).astype(np.float32), (0, 0), 3)
    tex = cv2.GaussianBlur(rng.uniform(0, 255, (S, S)).astype(np.float32), (0, 0), 1.5) * 1.3
    frames, boxes = [], []
    for k in range(n):
        xi, yi = int(round(10 + speed[0] * k)), int(round(15 + speed[1] * k))
        img = bg.copy()
        img[yi:yi + S, xi:xi + S] = tex
        frames.append((int(round(k * 1e6 / 240)), np.clip(img, 0, 255).astype(np.uint8)))
        boxes.append((xi, yi, S, S))
    return frames, np.array(boxes, np.float32)


def test_available_peers_are_real_opencv_trackers():
    avail, missing = available_peers(), missing_peers()
    assert sorted(avail + missing) == sorted(PAPER_PEERS)
    assert "KCF" in avail and "CSRT" in avail
    for name in avail:
        ns = peer_namespace(name)
        mod = cv2 if ns == "cv2" else cv2.legacy
        assert hasattr(mod, f"Tracker{name}_create")
    assert make_peer("kcf").name == "KCF"
    with pytest.raises(ValueError, match="unknown peer"):
        make_peer("SiamFC")


@pytest.mark.parametrize("name", available_peers())
def test_each_peer_runs_one_box_per_frame(name):
    frames, gt = _square_clip(n=8)
    t, boxes, spu = run_peer(name, frames, gt[0])
    assert list(t) == [f[0] for f in frames]
    assert boxes.shape == (8, 4) and boxes.dtype == np.float32
    np.testing.assert_array_equal(boxes[0], gt[0])
    assert spu > 0
    ok = np.all(np.isfinite(boxes), 1)
    assert ok[:2].all()   # the square barely moved yet: every tracker still has it


@pytest.mark.parametrize("name", ["CSRT", "KCF"])
def test_csrt_kcf_follow_the_square(name):
    frames, gt = _square_clip()
    _t, boxes, _ = run_peer(name, frames, gt[0])
    good = iou(boxes, gt) > 0.5
    assert good.mean() >= 0.8, iou(boxes, gt)


def test_kcf_output_does_not_lag_a_frame():
    """OpenCV's KCF trains in its first update(); without training on the init frame every
    output is the previous frame's position (3 px behind here)."""
    frames, gt = _square_clip(speed=(4.0, 0.0))
    _t, boxes, _ = run_peer("KCF", frames, gt[0])
    err = np.abs(boxes[1:, 0] - gt[1:, 0])
    assert np.median(err) <= 1.0, err


def test_peer_api_errors():
    p = make_peer("KCF")
    img = np.zeros((H, W), np.uint8)
    with pytest.raises(RuntimeError, match="init"):
        p.update(img)
    with pytest.raises(ValueError, match="w, h > 0"):
        p.init(img, (5, 5, 0, 10))
    with pytest.raises(ValueError, match="outside"):
        p.init(img, (500, 5, 10, 10))
    with pytest.raises(ValueError, match="uint8"):
        p.init(img.astype(np.int32), (5, 5, 10, 10))
    frames, gt = _square_clip(n=3)
    with pytest.raises(ValueError, match="increase"):
        run_peer("KCF", [frames[0], frames[2], frames[1]], gt[0])


def test_a_refusing_tracker_gives_nan_not_a_crash():
    class Refuses:
        def init(self, img, rect):
            return False

    p = Peer("fake", "cv2.legacy", Refuses)
    assert p.init(np.zeros((H, W), np.uint8), (1, 1, 5, 5)) is False
    assert np.isnan(p.update(np.zeros((H, W), np.uint8))).all()


def _nfs_square(tmp_path, name="sq"):
    frames, gt = _square_clip()
    fr = [Frame(t_us=t, image=img.astype(np.float32) / 255, box=b, index=k)
          for k, ((t, img), b) in enumerate(zip(frames, gt))]
    return write_nfs_sequence(str(tmp_path), name, fr, len(fr)), gt


def test_the_init_box_is_the_only_ground_truth_a_peer_sees(tmp_path):
    seq, gt = _nfs_square(tmp_path)
    txt = os.path.join(seq, "240", "sq.txt")
    before = {r: run_peer_on_sequence(seq, "KCF", r, isolate=False)[:2]
              for r in ("aps", "frames")}
    lines = open(txt).read().splitlines()
    garbage = [f"1 {v} {v} {v + 3} {v + 1} {k + 2} 0 0 0 \"x\"" for k, v in
               enumerate(np.random.default_rng(0).uniform(0, 80, len(lines) - 1))]
    with open(txt, "w") as f:
        f.write("\n".join(lines[:1] + garbage) + "\n")
    for r in ("aps", "frames"):
        t, b, _ = run_peer_on_sequence(seq, "KCF", r, isolate=False)
        np.testing.assert_array_equal(t, before[r][0])
        np.testing.assert_array_equal(b, before[r][1])
    # and a first line that changes does change the outputs
    with open(txt, "w") as f:
        f.write("\n".join(["1 40 40 64 64 1 0 0 0 \"x\""] + garbage) + "\n")
    assert not np.allclose(run_peer_on_sequence(seq, "KCF", "frames", isolate=False)[1],
                           before["frames"][1], equal_nan=True)


def test_aps_frames_match_the_davis_simulator():
    src = render_sequence(1000, 41, width=64, height=48)
    sim = DavisSimulator(src, width=64, height=48, interp_factor=0, aps_rate_hz=30.0)
    aps_t = [it.t_us for it in sim.stream() if isinstance(it, ApsFrame)]
    idx = aps_frame_indices(41, 240.0, 30.0)
    assert list(idx) == [0, 8, 16, 24, 32, 40]
    assert aps_t == [int(src.frame_t_us(k)) for k in idx]
    assert list(aps_frame_indices(24, 240.0, 60.0)) == list(range(0, 24, 4))
    assert list(aps_frame_indices(5, 240.0, 1000.0)) == [0, 1, 2, 3, 4]


def test_zoh_scoring_of_both_regimes_against_8x_gt(tmp_path):
    seq = build_heldout(str(tmp_path), n_real=1, n_frames=24, width=120, height=90,
                        procedural_seeds=())[0]
    res = evaluate_sequence(seq, ["KCF"], aps_rate_hz=30.0, isolate=False)
    assert res["gt"] == "gt_8x" and res["n_frames"] == 24
    aps, full = res["results"]["KCF"]["aps"], res["results"]["KCF"]["frames"]
    assert aps["n_outputs"] == 3 and full["n_outputs"] == 24
    gt_t, gt_b = read_gt_sidecar(seq)
    assert aps["n_instants"] == full["n_instants"] == len(gt_t) == 8 * 23 + 1
    t, b, _ = run_peer_on_sequence(seq, "KCF", "aps", isolate=False)
    ref = score(t, b, gt_t, gt_b)
    assert aps["miou"] == pytest.approx(ref["miou"]) and aps["auc"] == pytest.approx(ref["auc"])
    for m in (aps, full):
        assert 0 <= m["miou"] <= 1 and 0 <= m["robustness"] <= 1 and m["updates_per_s"] > 0
    # without the sidecar the per-frame annotation is the ground truth
    os.remove(os.path.join(seq, "gt_8x.txt"))
    res2 = evaluate_sequence(seq, ["KCF"], regimes=("aps",), isolate=False)
    assert res2["gt"] == "per_frame" and res2["results"]["KCF"]["aps"]["n_instants"] == 24


# --------------------------------------------------------------------------- crash isolation


def _yields_then_segfaults(n):
    for i in range(n):
        yield i
    os.kill(os.getpid(), signal.SIGSEGV)


def _yields_then_raises(n):
    for i in range(n):
        yield i
    raise ValueError("bad frame 7")


def test_a_crashing_child_keeps_what_it_sent():
    got = []
    with pytest.raises(PeerCrashed) as e:
        for item in stream_in_subprocess(_yields_then_segfaults, (3,)):
            got.append(item)
    assert got == [0, 1, 2] and e.value.exitcode == -signal.SIGSEGV
    got = []
    with pytest.raises(ValueError, match="bad frame 7"):
        for item in stream_in_subprocess(_yields_then_raises, (2,)):
            got.append(item)
    assert got == [0, 1]


def test_boosting_survives_a_fractional_init_box():
    """OpenCV's legacy Boosting segfaults in update() after init with a Rect2d whose height
    has a fraction >= 0.5; peers are initialised with whole pixels."""
    frames, gt = _square_clip(n=4)
    box = gt[0] + np.array([0.4, 0.3, 0.3, 0.52], np.float32)
    out = list(stream_in_subprocess(iter_peer, ("Boosting", frames, box)))
    assert len(out) == 4 and np.isfinite(out[1][1]).all()


def test_isolated_and_in_process_runs_agree(tmp_path):
    seq, _gt = _nfs_square(tmp_path)
    info = {}
    t1, b1, _ = run_peer_on_sequence(seq, "KCF", "frames", isolate=True, info=info)
    t2, b2, _ = run_peer_on_sequence(seq, "KCF", "frames", isolate=False)
    np.testing.assert_array_equal(t1, t2)
    np.testing.assert_array_equal(b1, b2)
    assert info == {"crashed": False}
