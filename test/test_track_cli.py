"""`dashnet track`: output format, initial box only, clear errors."""
import os

import numpy as np
import pytest
import torch

from dashnet_ros.cli import main
from dashnet_ros.davis.sources import write_nfs_sequence
from dashnet_ros.models.ann import FrameTracker
from dashnet_ros.models.checkpoint import save_checkpoint
from dashnet_ros.models.snn import SpikingTracker
from dashnet_ros.world.scenes import render_sequence


@pytest.fixture(scope="module")
def seq_and_weights(tmp_path_factory):
    d = tmp_path_factory.mktemp("track")
    seq = write_nfs_sequence(str(d), "probe", render_sequence(11, 24), 24)
    torch.manual_seed(0)
    snn_w, ann_w = str(d / "snn.pt"), str(d / "ann.pt")
    save_checkpoint(snn_w, SpikingTracker.from_preset("fast"), preset="fast")
    save_checkpoint(ann_w, FrameTracker.from_preset("fast"), preset="fast")
    return seq, snn_w, ann_w


def _track(seq, snn_w, ann_w, out, *extra):
    return main(["track", seq, "--out", out, "--snn-weights", snn_w, "--ann-weights", ann_w,
                 "--interp-factor", "1", "--threads", "1", *extra])


def test_track_writes_t_s_x_y_w_h_lines(seq_and_weights, tmp_path):
    seq, snn_w, ann_w = seq_and_weights
    out = str(tmp_path / "hybrid.txt")
    assert _track(seq, snn_w, ann_w, out) == 0
    rows = np.loadtxt(out, delimiter=",")
    assert rows.shape[1] == 5
    # fused outputs every 480 us over 24 frames at 240 fps (the last frame has no successor)
    assert np.allclose(np.diff(rows[:, 0]), 480e-6)
    assert rows[0, 0] == pytest.approx(480e-6)
    out_ann = str(tmp_path / "ann.txt")
    assert _track(seq, snn_w, ann_w, out_ann, "--mode", "ann") == 0
    t_ann = np.loadtxt(out_ann, delimiter=",")[:, 0]
    np.testing.assert_allclose(np.diff(t_ann), 1 / 30, atol=1 / 240)  # APS at 30 Hz from 240 fps frames


def test_tracker_never_reads_later_annotation_lines(seq_and_weights, tmp_path):
    seq, snn_w, ann_w = seq_and_weights
    out1 = str(tmp_path / "a.txt")
    assert _track(seq, snn_w, ann_w, out1) == 0
    txt = os.path.join(seq, "240", "probe.txt")
    lines = open(txt).read().splitlines()
    with open(txt, "w") as f:  # keep line 1, make every later line garbage
        f.write(lines[0] + "\n" + "\n".join("garbage ### not an annotation" for _ in lines[1:]) + "\n")
    try:
        out2 = str(tmp_path / "b.txt")
        assert _track(seq, snn_w, ann_w, out2) == 0
        assert open(out1).read() == open(out2).read()
    finally:
        with open(txt, "w") as f:
            f.write("\n".join(lines) + "\n")


def test_missing_weights_and_bad_sequence_are_named(seq_and_weights, tmp_path, capsys):
    seq, snn_w, ann_w = seq_and_weights
    assert main(["track", seq, "--out", str(tmp_path / "x"), "--snn-weights", str(tmp_path / "none.pt"),
                 "--ann-weights", ann_w]) == 2
    assert "none.pt does not exist" in capsys.readouterr().err
    assert main(["track", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert "not an NFS sequence" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "x")


def test_tcf_time_scale_reaches_the_filter(seq_and_weights, tmp_path, capsys):
    """--tcf-time-scale-s: the default's value given explicitly (1/60 s at 30 Hz APS) changes
    nothing, another value changes the fused track, a negative one is refused by name.
    (The shipped weights: the untrained SNN of the fixture is silent, so nothing is fused.)"""
    seq, snn_w, ann_w = seq_and_weights
    outs = {}
    for name, extra in (("default", ()), ("explicit", ("--tcf-time-scale-s", str(0.5 / 30))),
                        ("long", ("--tcf-time-scale-s", "0.2"))):
        outs[name] = str(tmp_path / f"{name}.txt")
        assert main(["track", seq, "--out", outs[name], "--interp-factor", "1", "--threads", "1", *extra]) == 0
    rd = {k: np.loadtxt(v, delimiter=",") for k, v in outs.items()}
    np.testing.assert_array_equal(rd["default"], rd["explicit"])
    assert rd["default"].shape == rd["long"].shape and not np.array_equal(rd["default"], rd["long"])
    assert _track(seq, snn_w, ann_w, str(tmp_path / "bad.txt"), "--tcf-time-scale-s", "-1") == 2
    assert "TCF time scale" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "bad.txt")


def test_overlay_video_has_one_frame_per_interval(seq_and_weights, tmp_path):
    import cv2

    seq, snn_w, ann_w = seq_and_weights
    out = str(tmp_path / "o.mp4")
    assert main(["overlay", seq, "--out", out, "--snn-weights", snn_w, "--ann-weights", ann_w,
                 "--interp-factor", "1", "--fps", "240", "--threads", "1"]) == 0
    cap = cv2.VideoCapture(out)
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    ok, frame = cap.read()
    assert ok and frame.shape == (540, 720, 3)
    assert 18 <= n <= 23  # ~one per source frame interval (the first APS frame comes first)
