"""`dashnet export`: TorchScript files that the core loads and that give the same boxes."""
import numpy as np
import torch

from dashnet_ros.cli import main
from dashnet_ros.models.ann import FrameTracker
from dashnet_ros.models.checkpoint import load_checkpoint, save_checkpoint
from dashnet_ros.models.snn import SpikingTracker
from dashnet_ros.tracking import ANNRunner, SNNRunner
from dashnet_ros.events import make_events


def test_export_round_trip_gives_identical_outputs(tmp_path, capsys):
    torch.manual_seed(0)
    snn_p, ann_p = str(tmp_path / "snn_fast.pt"), str(tmp_path / "ann_fast.pt")
    save_checkpoint(snn_p, SpikingTracker.from_preset("fast"), preset="fast")
    save_checkpoint(ann_p, FrameTracker.from_preset("fast"), preset="fast")
    assert main(["export", snn_p, ann_p, "--out", str(tmp_path / "ts")]) == 0
    rng = np.random.default_rng(0)
    n = 3000
    ev = make_events(rng.integers(90, 130, n), rng.integers(70, 110, n), np.sort(rng.integers(0, 4800, n)),
                     rng.choice([-1, 1], n))
    img = rng.integers(0, 255, (180, 240), dtype=np.uint8)
    outs = []
    for s, a in ((snn_p, ann_p), (str(tmp_path / "ts" / "snn_fast.ts.pt"), str(tmp_path / "ts" / "ann_fast.ts.pt"))):
        snn = SNNRunner.from_file(s, "fast", 240, 180)
        snn.init([100, 80, 20, 20], 0)
        ann = ANNRunner.from_file(a, "fast", 240, 180)
        ann.init([100, 80, 20, 20])
        outs.append((np.stack([o.box for o in snn.push_events(ev, 4800)]), ann.update(img, [100, 80, 20, 20])))
    np.testing.assert_allclose(outs[0][0], outs[1][0], atol=1e-4)
    np.testing.assert_allclose(outs[0][1], outs[1][1], atol=1e-4)
    _, cfg = load_checkpoint(str(tmp_path / "ts" / "snn_fast.ts.pt"), kind="snn")
    assert cfg["kind"] == "snn"


def test_export_names_a_missing_file(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope.pt"), "--out", str(tmp_path)]) == 2
    assert "nope.pt does not exist" in capsys.readouterr().err
