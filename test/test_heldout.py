"""Tests of the held-out set composited from real photographs (dashnet_ros.eval.heldout)."""
import json
import os

import cv2
import numpy as np
import pytest

from dashnet_ros.cli import main
from dashnet_ros.davis.sources import NFSSequence, read_first_annotation
from dashnet_ros.eval import heldout
from dashnet_ros.eval.heldout import (GT_SIDECAR, TARGETS, build_heldout, heldout_items,
                                      motion_stats, oversampled_times_us, photo_recipe,
                                      photo_sequence, read_gt_sidecar)


def _files(d):
    out = {}
    for dp, _dn, fn in os.walk(d):
        for f in fn:
            if f == "info.json":   # holds the build time
                continue
            p = os.path.join(dp, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, d)] = fh.read()
    return out


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("heldout"))
    seqs = build_heldout(root, n_real=1, n_frames=24, width=64, height=48, procedural_seeds=(0,))
    return root, seqs


def test_build_reads_back_in_nfs_layout(tiny_set):
    root, seqs = tiny_set
    names = [os.path.basename(s) for s in seqs]
    assert names[0].startswith("photo_000_") and names[1] == "scenes_0000"
    for s in seqs:
        name = os.path.basename(s)
        assert os.path.isfile(os.path.join(s, "240", name + ".txt"))
        assert os.path.isfile(os.path.join(s, "240", name, "00001.jpg"))
        seq = NFSSequence(s)
        assert len(seq) == 24 and (seq.width, seq.height) == (64, 48)
        t, boxes = seq.gt_track()
        assert t[1] == round(1e6 / 240)
        # the 8x sidecar agrees with the per-frame annotation at the frame instants
        t8, b8 = read_gt_sidecar(s)
        assert len(t8) == 8 * 23 + 1
        np.testing.assert_array_equal(t8[::8], t)
        ok = np.all(np.isfinite(boxes), 1)
        assert ok.sum() >= 20
        np.testing.assert_allclose(b8[::8][ok], boxes[ok], atol=2e-3)
        np.testing.assert_allclose(read_first_annotation(s), boxes[0], atol=1e-6)
        info = json.load(open(os.path.join(s, "info.json")))
        assert info["n_frames"] == 24 and "speed_px_per_frame" in info["motion_stats"]
        assert not any(n.startswith(".") for n in os.listdir(root))   # no temporaries left
    readme = open(os.path.join(root, "README.md")).read()
    info0 = json.load(open(os.path.join(seqs[0], "info.json")))
    assert info0["target"]["photo"] in readme and info0["background"]["photo"] in readme
    assert "scenes_0000" in readme


def test_written_frames_match_the_render(tiny_set):
    root, seqs = tiny_set
    rec = photo_recipe(0, 24, 64, 48)
    src = photo_sequence(0, 24, 64, 48)
    assert os.path.basename(seqs[0]) == rec.name
    for k in (0, 11, 23):
        img = cv2.imread(os.path.join(seqs[0], "240", rec.name, f"{k + 1:05d}.jpg"),
                         cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255
        ref = src.render_at(int(src.frame_t_us(k)))
        assert np.abs(img - ref).mean() < 3 / 255


def test_box_encloses_the_pasted_target_at_any_time():
    """The exact box bounds the rendered target mask, also between frames, and is tight."""
    for seed in (0, 3, 4):
        src = photo_sequence(seed, 40)
        feather = photo_recipe(seed, 40).feather_px
        for t_us in (0, 1234, 40_000, 77_777, 162_500):
            box = src.box_at(t_us)
            alpha = src.render_at(t_us, prey_only=True)
            ys, xs = np.nonzero(alpha > 0.02)
            assert len(xs) > 20 and np.all(np.isfinite(box))
            x, y, w, h = box
            assert xs.min() >= x - 1 and xs.max() <= x + w + 1
            assert ys.min() >= y - 1 and ys.max() <= y + h + 1
            # tight: the visible mask reaches within the feather of every side
            slack = feather * 1.6 + 2
            assert xs.min() <= x + slack and xs.max() >= x + w - slack
            assert ys.min() <= y + slack and ys.max() >= y + h - slack


def test_deterministic_per_seed(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    for r in (a, b):
        build_heldout(r, n_real=1, n_frames=10, width=64, height=48, procedural_seeds=())
    fa, fb = _files(a), _files(b)
    assert len(fa) == 10 + 3 and fa == fb
    r0, r1 = photo_recipe(0, 10), photo_recipe(1, 10)
    assert r0.name != r1.name
    assert not np.allclose(photo_sequence(0, 10).box_at(0), photo_sequence(1, 10).box_at(0))


def test_target_and_background_come_from_different_photos():
    seen = set()
    for seed in range(2 * len(TARGETS)):
        r = photo_recipe(seed, 8)
        assert r.target.file != r.background
        seen.add(r.target.key)
    assert seen == {t.key for t in TARGETS}


def test_targets_move_fast():
    for seed in range(4):
        ms = motion_stats(photo_sequence(seed, 480))["speed_px_per_frame"]
        assert ms["mean"] >= 2.0 and ms["max"] >= 4.0, (seed, ms)


def test_existing_sequences_are_kept_or_refused(tmp_path):
    root = str(tmp_path)
    build_heldout(root, n_real=1, n_frames=8, width=64, height=48, procedural_seeds=())
    seq = os.path.join(root, photo_recipe(0, 8).name)
    mtime = os.path.getmtime(os.path.join(seq, GT_SIDECAR))
    build_heldout(root, n_real=1, n_frames=8, width=64, height=48, procedural_seeds=())
    assert os.path.getmtime(os.path.join(seq, GT_SIDECAR)) == mtime      # same recipe: kept
    with pytest.raises(FileExistsError, match="another recipe"):
        build_heldout(root, n_real=1, n_frames=9, width=64, height=48, procedural_seeds=())
    build_heldout(root, n_real=1, n_frames=9, width=64, height=48, procedural_seeds=(),
                  overwrite=True)
    assert len(NFSSequence(seq)) == 9


def test_failed_build_leaves_nothing(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(heldout, "write_gt_sidecar", boom)
    with pytest.raises(RuntimeError):
        build_heldout(str(tmp_path), n_real=1, n_frames=8, width=64, height=48,
                      procedural_seeds=())
    assert os.listdir(tmp_path) == []


def test_bad_parameters():
    with pytest.raises(ValueError, match="held-out seed"):
        heldout_items(0, 10, procedural_seeds=(1000,))
    with pytest.raises(ValueError, match="n_frames"):
        heldout_items(1, 1)
    with pytest.raises(ValueError, match="16x16"):
        photo_recipe(0, 10, width=8, height=8)


def test_sidecar_reader_rejects_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="gt_8x"):
        read_gt_sidecar(str(tmp_path))
    p = tmp_path / GT_SIDECAR
    p.write_text("# header\n0.0,1,2,3,4\n0.1,1,2\n")
    with pytest.raises(ValueError, match=":3"):
        read_gt_sidecar(str(tmp_path))
    p.write_text("# header only\n")
    with pytest.raises(ValueError, match="no ground truth"):
        read_gt_sidecar(str(tmp_path))
    p.write_text("0.0,1,2,3,4\n0.5,nan,nan,nan,nan\n")
    t, b = read_gt_sidecar(str(tmp_path))
    assert list(t) == [0, 500000] and np.isnan(b[1]).all()


def test_oversampled_times():
    t = oversampled_times_us(3, 240.0)
    assert len(t) == 17 and t[8] == round(1e6 / 240) and t[-1] == round(2e6 / 240)


def test_cli_build(tmp_path, capsys):
    out = str(tmp_path / "set")
    rc = main(["heldout", "build", "--out", out, "--n-real", "1", "--frames", "6", "--width",
               "64", "--height", "48", "--procedural-seeds", ""])
    assert rc == 0
    assert len(NFSSequence(os.path.join(out, photo_recipe(0, 6).name))) == 6
    assert main(["heldout", "build", "--out", out, "--frames", "1"]) == 2
    assert "--frames" in capsys.readouterr().err
