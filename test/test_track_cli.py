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


def _lines(path):
    with open(path) as f:
        return f.read().splitlines()


def test_track_a_davis_recording_from_a_given_box(seq_and_weights, tmp_path, capsys):
    """A jAER recording of the sequence's simulated stream, tracked from the first annotated
    box given with --init, gives the very boxes of tracking the sequence: the recording's
    frames come before the events of their packet, and each waits for the SNN windows that
    end by its stamp.  Without --init it is refused by name."""
    from dashnet_ros.davis.recordings import collect, write_aedat2
    from dashnet_ros.davis.sources import read_first_annotation
    from dashnet_ros.eval.runner import open_input

    seq, snn_w, ann_w = seq_and_weights
    events, frames = collect(open_input(seq, interp_factor=1).stream)
    assert len(frames) == 3 and frames[0].t_us == 0
    rec = str(tmp_path / "probe.aedat")
    write_aedat2(rec, events, frames, t_offset_us=1_000_000)   # the reader puts the first stamp (frame 0) at 0
    assert _track(rec, snn_w, ann_w, str(tmp_path / "x.txt")) == 2
    assert "a DAVIS recording has no annotation; give the target's box" in capsys.readouterr().err
    # the shipped weights (untrained ones give the same boxes whatever the frame order)
    common = ["--interp-factor", "1", "--threads", "1"]
    assert main(["track", seq, "--out", str(tmp_path / "nfs.txt"), *common]) == 0
    box = ",".join(f"{v:.3f}" for v in read_first_annotation(seq))
    assert main(["track", rec, "--out", str(tmp_path / "rec.txt"), "--init", box, *common]) == 0
    nfs, got = _lines(tmp_path / "nfs.txt"), _lines(tmp_path / "rec.txt")
    assert len(nfs) > 150 and got[:len(nfs)] == nfs
    # its overlay video (no ground truth to draw)
    import cv2

    out = str(tmp_path / "rec.mp4")
    assert main(["overlay", rec, "--out", out, "--init", box, "--fps", "240", "--threads", "1"]) == 0
    assert 18 <= int(cv2.VideoCapture(out).get(cv2.CAP_PROP_FRAME_COUNT)) <= 24


def test_track_a_video_from_a_given_box_in_its_pixels(seq_and_weights, tmp_path, capsys):
    """A video (the sequence's frames at twice the size, 240 fps) with --init in the video's
    pixels: the same number of boxes as the sequence, in the video's pixels."""
    import glob

    import cv2

    from dashnet_ros.davis.sources import read_first_annotation

    seq, snn_w, ann_w = seq_and_weights
    paths = sorted(glob.glob(os.path.join(seq, "240", "probe", "*")))
    h, w = cv2.imread(paths[0]).shape[:2]
    video = str(tmp_path / "probe.avi")
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"MJPG"), 240.0, (2 * w, 2 * h))
    for p in paths:
        writer.write(cv2.resize(cv2.imread(p), (2 * w, 2 * h), interpolation=cv2.INTER_NEAREST))
    writer.release()
    assert _track(video, snn_w, ann_w, str(tmp_path / "x.txt")) == 2
    assert "a video has no annotation" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:            # argparse refuses the value
        _track(video, snn_w, ann_w, str(tmp_path / "v.txt"), "--init", "1,2,3")
    assert e.value.code == 2 and "expected four numbers x,y,w,h, got '1,2,3'" in capsys.readouterr().err
    box = 2 * np.asarray(read_first_annotation(seq), np.float64)
    assert _track(video, snn_w, ann_w, str(tmp_path / "v.txt"), "--init", ",".join(map(str, box))) == 0
    assert _track(seq, snn_w, ann_w, str(tmp_path / "nfs.txt")) == 0
    v, n = np.loadtxt(tmp_path / "v.txt", delimiter=","), np.loadtxt(tmp_path / "nfs.txt", delimiter=",")
    assert v.shape == n.shape
    np.testing.assert_array_equal(v[:, 0], n[:, 0])
    np.testing.assert_allclose(v[0, 1:], 2 * n[0, 1:], atol=1.5)   # one window from the init box, video pixels


def test_jaer_target_labels_read_write_and_refusals(tmp_path):
    from dashnet_ros.davis.labels import read_target_locations, write_target_locations

    p = tmp_path / "rec-targets.txt"
    boxes = np.array([[np.nan] * 4, [100, 20, 24, 18], [110, 30, 24, 18]], np.float32)
    write_target_locations(p, [5_000, 6_000, 7_000], boxes, 180)
    lines = p.read_text().splitlines()
    assert lines[0] == "#!TargetLocations-2.0" and lines[3] == "0 5000 -1 -1 -1 -1 -1"
    assert lines[4] == "1 6000 112 150 0 24 18"          # centre, jAER's y axis up: 179 - 29
    t, b = read_target_locations(p, 180)
    assert t.tolist() == [5_000, 6_000, 7_000] and np.isnan(b[0]).all()
    np.testing.assert_allclose(b[1:], boxes[1:])
    with open(p, "a") as f:
        f.write("garbage\n")
    t1, b1 = read_target_locations(p, 180, first_visible_only=True)   # never reads past the first target
    assert t1.tolist() == [5_000, 6_000] and np.isfinite(b1[-1]).all()
    with pytest.raises(ValueError, match=r"rec-targets.txt:7: not a target label"):
        read_target_locations(p, 180)
    p.write_text("# header only\n3 9000 50 60 0\n")
    with pytest.raises(ValueError, match=r":2: a visible target needs a positive width and height"):
        read_target_locations(p, 180)


def test_track_and_eval_a_recording_from_its_target_labels(seq_and_weights, tmp_path, capsys):
    """A recording with jAER target labels beside it (REC-targets.txt): `dashnet track`
    starts at the first visible label, from its box; --init and --labels together are
    refused; `dashnet eval` scores the recording against its visible labels."""
    import json

    from dashnet_ros.davis.labels import read_target_locations, write_target_locations
    from dashnet_ros.davis.recordings import collect, write_aedat2
    from dashnet_ros.eval.harness import ground_truth
    from dashnet_ros.eval.runner import open_input

    seq, snn_w, ann_w = seq_and_weights
    events, frames = collect(open_input(seq, interp_factor=1).stream)
    rec = str(tmp_path / "probe.aedat")
    write_aedat2(rec, events, frames, t_offset_us=1_000_000)
    gt_t, gt_b = ground_truth(seq)
    t_lab = 1_000_000 + gt_t
    lab = gt_b.copy()
    lab[:3] = np.nan                                  # not visible in the first three labels
    write_target_locations(tmp_path / "probe-targets.txt", t_lab, lab, 180)
    assert _track(rec, snn_w, ann_w, str(tmp_path / "lab.txt")) == 0
    rows = np.loadtxt(tmp_path / "lab.txt", delimiter=",")
    assert rows[0, 0] > gt_t[3] / 1e6 and rows[0, 0] < gt_t[3] / 1e6 + 0.001   # from the first visible label
    # the tracker starts at that label's instant, from its box
    inp = open_input(rec, labels=str(tmp_path / "probe-targets.txt"))
    assert inp.init_us == gt_t[3]
    np.testing.assert_allclose(inp.init_box, read_target_locations(tmp_path / "probe-targets.txt", 180)[1][3])
    assert _track(rec, snn_w, ann_w, str(tmp_path / "x.txt"), "--init", "1,2,3,4", "--labels",
                  str(tmp_path / "probe-targets.txt")) == 2
    assert "not both" in capsys.readouterr().err
    assert _track(seq, snn_w, ann_w, str(tmp_path / "x.txt"), "--labels", str(tmp_path / "probe-targets.txt")) == 2
    assert "target labels (--labels) are for DAVIS recordings" in capsys.readouterr().err
    out = tmp_path / "ev"
    assert main(["eval", str(tmp_path), "--trackers", "hybrid", "--out", str(out), "--snn-weights", snn_w,
                 "--ann-weights", ann_w]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["per_sequence"]["probe"]["hybrid"]["n_instants"] == len(gt_t) - 3
    assert 2000 < res["per_sequence"]["probe"]["hybrid"]["output_rate_hz"] < 2100   # a box per 480 us window
    assert 0 <= res["per_sequence"]["probe"]["hybrid"]["decision_acc"] <= 1          # PRED18's left/center/right
    assert "PRED18 decision" in (out / "summary.md").read_text()
