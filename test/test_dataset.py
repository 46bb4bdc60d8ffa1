"""Hybrid dataset files: round trip, atomic + resumable writing, refusals, the CLI."""
import json
import os
import shutil

import h5py
import numpy as np
import pytest

from dashnet_ros import cli
from dashnet_ros.boxes import interpolate_track
from dashnet_ros.davis.frames import ApsFrame, EventBatch, Frame, FrameSource
from dashnet_ros.events import EVENT_DTYPE, concat_events
from dashnet_ros.io import dataset as ds_mod
from dashnet_ros.io.dataset import DatasetError, HybridDataset, write_dataset

# ----------------------------------------------------------------------------- fakes


class FakeSource(FrameSource):
    """``n`` frames at ``fps`` with a box moving right; ``endless``: no length, no track."""

    def __init__(self, n=12, fps=100.0, width=16, height=12, endless=False):
        self.n, self.fps, self.width, self.height, self.endless = n, fps, width, height, endless

    def t_us(self, k):
        return int(round(k * 1e6 / self.fps))

    def box(self, t_us):
        return np.array([1.0 + t_us * 1e-4, 2.0, 4.0, 3.0], np.float32)

    def __len__(self):
        if self.endless:
            raise TypeError("endless")
        return self.n

    def __iter__(self):
        k = 0
        while self.endless or k < self.n:
            t = self.t_us(k)
            yield Frame(t, np.full((self.height, self.width), k / 100, np.float32), self.box(t), k)
            k += 1

    def gt_track(self):
        if self.endless:
            return None
        t = np.array([self.t_us(k) for k in range(self.n)], np.int64)
        return t, np.stack([self.box(x) for x in t])


class FakeSim:
    """Deterministic stand-in for DavisSimulator (same stream rules): random events in
    ``batch_us`` tiles from 0, a batch boundary and an APS frame at every ``aps_every``-th
    source frame, the stream ending 1 us after the last frame.  Stream pixels are twice
    the source's.  ``perturb`` changes the events without changing the config."""

    def __init__(self, source=None, seed=0, batch_us=1000, aps_every=3, rate=40,
                 none_box_every=0, perturb=False):
        self.source = source if source is not None else FakeSource()
        self.width, self.height = 2 * self.source.width, 2 * self.source.height
        self.scale_xy = (2.0, 2.0)
        self.interp_factor = 0
        self.dvs_model, self.dvs_params = "fake", {"rate": rate}
        self.aps_rate_hz = self.source.fps / aps_every
        self.batch_us, self.seed = batch_us, seed
        self.aps_every, self.rate, self.none_box_every, self.perturb = aps_every, rate, none_box_every, perturb
        self.n_streams = 0

    def gt_at(self, t_us):
        tr = self.source.gt_track()
        if tr is None:
            return None
        return interpolate_track(tr[0], tr[1] * 2.0, t_us)[0]

    def stream(self):
        self.n_streams += 1
        rng = np.random.default_rng(self.seed + (1000 if self.perturb else 0))
        src, bu = self.source, self.batch_us
        state = {"cur": 0, "grid": bu}

        def batches_until(t_end):
            while state["cur"] < t_end:
                t0 = state["cur"]
                t1 = min(state["grid"], t_end)
                n = int(rng.poisson(self.rate * (t1 - t0) / 1000))
                ev = np.zeros(n, EVENT_DTYPE)
                ev["t_us"] = np.sort(rng.integers(t0, t1, n))
                ev["x"] = rng.integers(0, self.width, n)
                ev["y"] = rng.integers(0, self.height, n)
                ev["p"] = rng.choice(np.array([-1, 1], np.int8), n)
                yield EventBatch(t0, t1, ev)
                state["cur"] = t1
                if t1 == state["grid"]:
                    state["grid"] += bu

        k = 0
        last = None
        while src.endless or k < src.n:
            t = src.t_us(k)
            if k % self.aps_every == 0:
                yield from batches_until(t)
                img = rng.integers(0, 256, (self.height, self.width)).astype(np.uint8)
                box = None if self.none_box_every and k % self.none_box_every == 0 else self.gt_at(t)
                yield ApsFrame(t, img, box)
            last = t
            k += 1
        yield from batches_until(last + 1)


def read_all(path):
    """Every dataset and the content attributes of a file (checkpoint attributes left out)."""
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
        for k, v in f.attrs.items():
            if not k.startswith("ckpt_"):
                out["@" + k] = v
    return out


def assert_same_file(a, b):
    ra, rb = read_all(a), read_all(b)
    assert sorted(ra) == sorted(rb)
    for k in ra:
        np.testing.assert_array_equal(ra[k], rb[k], err_msg=k)


def items_equal(a, b):
    if type(a) is not type(b):
        return False
    if isinstance(a, EventBatch):
        return (a.t0_us, a.t1_us) == (b.t0_us, b.t1_us) and all(
            np.array_equal(a.events[n], b.events[n]) for n in ("t_us", "x", "y", "p"))
    same_box = (a.box is None and b.box is None) or (
        a.box is not None and b.box is not None and np.allclose(a.box, b.box, equal_nan=True))
    return a.t_us == b.t_us and np.array_equal(a.image, b.image) and same_box


def raise_at(frame):
    def progress(done, total):
        if done >= frame:
            raise KeyboardInterrupt("simulated kill")
    return progress


# ----------------------------------------------------------------------------- round trip


def test_round_trip_fake_stream(tmp_path):
    path = str(tmp_path / "a.h5")
    sim = FakeSim(none_box_every=6)
    live = list(FakeSim(none_box_every=6).stream())
    res = write_dataset(path, sim, source_desc="fake")
    assert os.path.exists(path) and not os.path.exists(path + ".partial")
    ev_live = concat_events([i.events for i in live if isinstance(i, EventBatch)])
    aps_live = [i for i in live if isinstance(i, ApsFrame)]
    assert res.n_events == len(ev_live) > 100 and res.n_aps == len(aps_live) == 4
    with HybridDataset(path) as ds:
        assert (ds.width, ds.height, ds.scale_xy) == (32, 24, (2.0, 2.0))
        assert ds.source == "fake" and ds.source_fps == 100.0
        assert (ds.t0_us, ds.t1_us) == (0, 110_001)
        ev = ds.events_between(ds.t0_us, ds.t1_us)
        for n in ("t_us", "x", "y", "p"):
            np.testing.assert_array_equal(ev[n], ev_live[n])
        assert len(ds.aps) == 4
        for a, b in zip(ds.aps, aps_live):
            assert items_equal(a, b)
        assert ds.aps[0].box is None and ds.aps[1].box is not None   # None survives
        # the reader's stream is the live stream, item for item
        got = list(ds.stream(batch_us=1000))
        assert len(got) == len(live) and all(items_equal(a, b) for a, b in zip(got, live))
        # ground truth at every source frame, in stream pixels; 8x oversampled
        t, boxes = ds.gt_track()
        src = FakeSource()
        np.testing.assert_array_equal(t, src.gt_track()[0])
        np.testing.assert_allclose(boxes, src.gt_track()[1] * 2.0)
        np.testing.assert_allclose(ds.initial_box(), src.box(0) * 2.0)
        np.testing.assert_allclose(ds.to_source_px(boxes), src.gt_track()[1], rtol=1e-6)
        tf, bf = ds.gt_fine_track()
        assert len(tf) == 8 * (len(t) - 1) + 1 and tf[0] == t[0] and tf[-1] == t[-1]
        np.testing.assert_allclose(bf[8], boxes[1], rtol=1e-6)
        cfg = ds.config["simulator"]
        assert cfg["dvs_model"] == "fake" and cfg["seed"] == 0 and cfg["batch_us"] == 1000
        assert bool(ds.attrs["complete"]) and ds.attrs["interp_factor"] == 0


def test_events_between_and_other_batch_sizes(tmp_path):
    path = str(tmp_path / "a.h5")
    write_dataset(path, FakeSim(rate=300), source_desc="fake")
    rng = np.random.default_rng(1)
    with HybridDataset(path) as ds:
        allev = ds.events_between(-10**9, 10**9)
        assert len(allev) == ds.n_events
        for _ in range(40):
            a, b = np.sort(rng.integers(-2000, 115_000, 2))
            got = ds.events_between(a, b)
            want = allev[(allev["t_us"] >= a) & (allev["t_us"] < b)]
            np.testing.assert_array_equal(got["t_us"], want["t_us"])
            np.testing.assert_array_equal(got["x"], want["x"])
        assert len(ds.events_between(50_000, 50_000)) == 0
        items = list(ds.stream(batch_us=2500, block_us=7000))
        batches = [i for i in items if isinstance(i, EventBatch)]
        assert batches[0].t0_us == ds.t0_us and batches[-1].t1_us == ds.t1_us
        assert all(x.t1_us == y.t0_us for x, y in zip(batches, batches[1:]))   # no gaps
        assert max(b.t1_us - b.t0_us for b in batches) == 2500
        np.testing.assert_array_equal(concat_events([b.events for b in batches])["t_us"], allev["t_us"])
        # every APS frame comes after the events before it and before the later ones
        seen = 0
        for it in items:
            if isinstance(it, EventBatch):
                assert np.all(it.events["t_us"] >= seen)
                seen = it.t1_us
            else:
                assert it.t_us == seen or seen == ds.t0_us
        with pytest.raises(ValueError, match="batch_us"):
            next(ds.stream(batch_us=0))


def test_progress_callable_and_tqdm_like(tmp_path):
    calls = []
    write_dataset(str(tmp_path / "a.h5"), FakeSim(), progress=lambda d, n: calls.append((d, n)))
    assert calls[-1] == (12, 12)
    assert all(n == 12 for _, n in calls) and [d for d, _ in calls] == sorted(d for d, _ in calls)

    class Bar:
        n, total = 0, None

        def update(self, k):
            self.n += k

    bar = Bar()
    write_dataset(str(tmp_path / "b.h5"), FakeSim(), progress=bar)
    assert (bar.n, bar.total) == (12, 12)


def test_endless_source_needs_a_duration(tmp_path):
    sim = FakeSim(FakeSource(endless=True))
    with pytest.raises(ValueError, match="endless"):
        write_dataset(str(tmp_path / "a.h5"), sim)
    res = write_dataset(str(tmp_path / "a.h5"), FakeSim(FakeSource(endless=True)), duration_us=25_000)
    assert (res.t0_us, res.t1_us) == (0, 25_000)
    with HybridDataset(tmp_path / "a.h5") as ds:
        assert ds.events_between(0, 10**9)["t_us"].max() < 25_000
        assert np.all(ds.aps.t_us < 25_000)
        t, b = ds.gt_track()   # no source track: the simulator's gt_at on the frame grid
        np.testing.assert_array_equal(t, [0, 10_000, 20_000])
        assert not ds.has_gt and np.all(np.isnan(b))


def test_real_simulator_round_trip(tmp_path):
    from dashnet_ros.davis.sources import open_source
    from dashnet_ros.davis.stream import DavisSimulator, linear_blend

    def sim():
        src = open_source("scenes:3", n_frames=10, width=64, height=48, fps=240.0)
        return DavisSimulator(src, width=32, height=24, interp_factor=1, interpolator=linear_blend,
                              aps_rate_hz=120.0, seed=0)

    path = str(tmp_path / "s.h5")
    live = list(sim().stream())
    write_dataset(path, sim())
    with HybridDataset(path) as ds:
        got = list(ds.stream(batch_us=1000))
        assert len(got) == len(live) and all(items_equal(a, b) for a, b in zip(got, live))
        assert ds.n_events > 0 and len(ds.aps) >= 4 and ds.scale_xy == (0.5, 0.5)
        src = open_source("scenes:3", n_frames=10, width=64, height=48, fps=240.0)
        t, boxes = ds.gt_track()
        np.testing.assert_array_equal(t, src.frame_t_us(np.arange(10)))
        np.testing.assert_allclose(boxes, src.box_at(t) * 0.5, rtol=1e-5, equal_nan=True)
        tf, bf = ds.gt_fine_track()   # exact (box_at), not interpolated
        np.testing.assert_allclose(bf, src.box_at(tf) * 0.5, rtol=1e-5, equal_nan=True)
        assert ds.config["simulator"]["dvs_model"] == "pixel"
        assert ds.config["simulator"]["interpolator"] == "linear_blend"


# ----------------------------------------------------------------------------- atomic + resume


def test_interrupted_build_leaves_only_partial_and_resumes_identically(tmp_path):
    ref = str(tmp_path / "ref.h5")
    write_dataset(ref, FakeSim(), source_desc="fake")
    path = str(tmp_path / "a.h5")
    with pytest.raises(KeyboardInterrupt):
        write_dataset(path, FakeSim(), progress=raise_at(6), source_desc="fake", checkpoint_s=0)
    assert not os.path.exists(path) and os.path.exists(path + ".partial")
    with h5py.File(path + ".partial", "r") as f:
        assert not f.attrs["complete"]
        ck_items, ck_ev = int(f.attrs["ckpt_items"]), int(f.attrs["ckpt_n_events"])
        assert ck_items > 0 and ck_ev > 0 and f["events/t_us"].shape[0] == ck_ev
    with pytest.raises(FileNotFoundError, match="resume"):
        HybridDataset(path)
    with pytest.raises(DatasetError, match=r"incomplete.*dashnet dataset build"):
        HybridDataset(path + ".partial")
    sim = FakeSim()
    res = write_dataset(path, sim, source_desc="fake", checkpoint_s=0)
    assert res.resumed_from_us is not None and res.resumed_from_us > 0
    assert res.skipped_items == ck_items and sim.n_streams == 1
    assert os.path.exists(path) and not os.path.exists(path + ".partial")
    assert_same_file(path, ref)


def test_interrupt_with_rare_checkpoints_keeps_last_frame_boundary(tmp_path):
    # no timed checkpoint before the kill: the writer still saves up to the last frame boundary
    path = str(tmp_path / "a.h5")
    with pytest.raises(RuntimeError):
        def boom(done, total):
            if done >= 8:
                raise RuntimeError("disk on fire")
        write_dataset(path, FakeSim(), progress=boom, checkpoint_s=3600)
    with h5py.File(path + ".partial", "r") as f:
        assert int(f.attrs["ckpt_frames"]) == 8 and int(f.attrs["ckpt_items"]) > 0
    res = write_dataset(path, FakeSim())
    assert res.resumed_from_us is not None
    ref = str(tmp_path / "ref.h5")
    write_dataset(ref, FakeSim())
    assert_same_file(path, ref)


def test_resume_with_other_config_starts_over(tmp_path):
    path = str(tmp_path / "a.h5")
    with pytest.raises(KeyboardInterrupt):
        write_dataset(path, FakeSim(seed=0), progress=raise_at(5), checkpoint_s=0)
    res = write_dataset(path, FakeSim(seed=1), checkpoint_s=0)
    assert res.resumed_from_us is None and res.skipped_items == 0
    ref = str(tmp_path / "ref.h5")
    write_dataset(ref, FakeSim(seed=1))
    assert_same_file(path, ref)
    # resume=False also starts over
    with pytest.raises(KeyboardInterrupt):
        write_dataset(path, FakeSim(seed=1), progress=raise_at(5), checkpoint_s=0)
    assert write_dataset(path, FakeSim(seed=1), resume=False).resumed_from_us is None


def test_resume_that_does_not_reproduce_the_checkpoint_is_refused(tmp_path):
    path = str(tmp_path / "a.h5")
    with pytest.raises(KeyboardInterrupt):
        write_dataset(path, FakeSim(), progress=raise_at(6), checkpoint_s=0)
    with pytest.raises(RuntimeError, match=r"checkpoint.*run the build again"):
        write_dataset(path, FakeSim(perturb=True))   # same config, different stream
    assert not os.path.exists(path + ".partial") and not os.path.exists(path)


def test_unreadable_partial_is_rebuilt(tmp_path, caplog):
    path = str(tmp_path / "a.h5")
    with open(path + ".partial", "wb") as f:
        f.write(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)   # killed while the file was created
    res = write_dataset(path, FakeSim())
    assert res.resumed_from_us is None and "unreadable" in caplog.text
    ref = str(tmp_path / "ref.h5")
    write_dataset(ref, FakeSim())
    assert_same_file(path, ref)


def test_complete_partial_is_just_renamed(tmp_path):
    path = str(tmp_path / "a.h5")
    write_dataset(path, FakeSim())
    ref = str(tmp_path / "ref.h5")
    shutil.copy(path, ref)
    os.replace(path, path + ".partial")   # as if killed between finishing and renaming
    sim = FakeSim()
    write_dataset(path, sim)
    assert sim.n_streams == 0 and not os.path.exists(path + ".partial")
    assert_same_file(path, ref)


def test_write_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_dataset(str(tmp_path / "nodir" / "a.h5"), FakeSim())
    with pytest.raises(ValueError, match="gt_fine_factor"):
        write_dataset(str(tmp_path / "a.h5"), FakeSim(), gt_fine_factor=-1)


# ----------------------------------------------------------------------------- refusals


@pytest.fixture
def good_file(tmp_path):
    path = str(tmp_path / "good.h5")
    write_dataset(path, FakeSim())
    return path


def test_refuses_truncated_file(good_file, tmp_path):
    bad = str(tmp_path / "cut.h5")
    with open(good_file, "rb") as f:
        data = f.read()
    with open(bad, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=r"cut\.h5 is truncated or corrupt"):
        HybridDataset(bad)


def test_refuses_truncated_dataset(good_file):
    with h5py.File(good_file, "a") as f:
        f["events/x"].resize(f["events/x"].shape[0] - 5, axis=0)
    with pytest.raises(DatasetError, match=r"good\.h5 is truncated: /events/x has shape"):
        HybridDataset(good_file)


def test_refuses_missing_dataset(good_file):
    with h5py.File(good_file, "a") as f:
        del f["aps/t_us"]
    with pytest.raises(DatasetError, match=r"good\.h5 is damaged: missing aps/t_us"):
        HybridDataset(good_file)


def test_refuses_incomplete_file(good_file):
    with h5py.File(good_file, "a") as f:
        f.attrs["complete"] = False
    with pytest.raises(DatasetError, match=r"good\.h5 is incomplete.*run `dashnet dataset build` again"):
        HybridDataset(good_file)


def test_refuses_foreign_files(tmp_path):
    foreign = str(tmp_path / "other.h5")
    with h5py.File(foreign, "w") as f:
        f["data"] = np.arange(3)
    with pytest.raises(DatasetError, match=r"other\.h5 is not a dashnet hybrid dataset \(a foreign"):
        HybridDataset(foreign)
    text = tmp_path / "notes.h5"
    text.write_text("hello")
    with pytest.raises(DatasetError, match="not an HDF5 file"):
        HybridDataset(text)
    empty = tmp_path / "empty.h5"
    empty.write_bytes(b"")
    with pytest.raises(DatasetError, match="empty"):
        HybridDataset(empty)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        HybridDataset(tmp_path / "nothing.h5")


def test_refuses_newer_format(good_file):
    with h5py.File(good_file, "a") as f:
        f.attrs["format_version"] = 99
    with pytest.raises(DatasetError, match="format version 99"):
        HybridDataset(good_file)


def test_initial_box_missing(tmp_path):
    path = str(tmp_path / "a.h5")
    write_dataset(path, FakeSim(FakeSource(endless=True)), duration_us=20_000)
    with HybridDataset(path) as ds:
        with pytest.raises(DatasetError, match="first ground-truth box is missing"):
            ds.initial_box()


# ----------------------------------------------------------------------------- CLI


def _nfs_pair(tmp_path):
    """A good 6-frame NFS sequence and a copy whose txt has too few lines."""
    from dashnet_ros.davis.sources import open_source, write_nfs_sequence

    src = open_source("scenes:5", n_frames=6, width=64, height=48, fps=240.0)
    good = write_nfs_sequence(str(tmp_path / "nfs"), "good", src)
    bad = str(tmp_path / "nfs" / "bad")
    shutil.copytree(good, bad)
    os.rename(os.path.join(bad, "240", "good"), os.path.join(bad, "240", "bad"))
    with open(os.path.join(good, "240", "good.txt")) as f:
        lines = f.readlines()
    with open(os.path.join(bad, "240", "bad.txt"), "w") as f:
        f.writelines(lines[:2])
    return good, bad, lines


CLI_OPTS = ["--width", "32", "--height", "24", "--interp-factor", "1", "--interpolator", "linear",
            "--aps-rate-hz", "60", "-q"]


def test_cli_build_reports_bad_input_and_builds_the_rest(tmp_path, capsys):
    good, bad, lines = _nfs_pair(tmp_path)
    out = str(tmp_path / "out")
    rc = cli.main(["dataset", "build", bad, good, "--out", out] + CLI_OPTS)
    err = capsys.readouterr().err
    assert rc == 1
    assert "1 built, 0 already complete, 1 failed" in err
    assert "bad: FAILED" in err and "bad.txt has 2 annotation lines" in err
    assert os.listdir(out) == ["good.h5"]
    with HybridDataset(os.path.join(out, "good.h5")) as ds:
        assert ds.scale_xy == (0.5, 0.5) and len(ds.gt_track()[0]) == 6
        x0, y0, x1, y1 = (float(v) for v in lines[0].split()[1:5])
        np.testing.assert_allclose(ds.initial_box(), np.array([x0, y0, x1 - x0, y1 - y0]) * 0.5,
                                   atol=1e-3)
        assert ds.source.startswith("nfs:") and ds.n_events > 0
    # again: the good one is skipped as complete; the bad one still fails
    rc = cli.main(["dataset", "build", str(tmp_path / "nfs"), "--out", out] + CLI_OPTS)
    err = capsys.readouterr().err
    assert rc == 1 and "0 built, 1 already complete, 1 failed" in err
    # other settings: refused unless --overwrite
    rc = cli.main(["dataset", "build", good, "--out", out, "--seed", "1"] + CLI_OPTS)
    assert rc == 1 and "other settings" in capsys.readouterr().err
    rc = cli.main(["dataset", "build", good, "--out", out, "--seed", "1", "--overwrite"] + CLI_OPTS)
    assert rc == 0
    with HybridDataset(os.path.join(out, "good.h5")) as ds:
        assert ds.config["simulator"]["seed"] == 1


def test_cli_resumes_interrupted_build_and_info(tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "out")
    args = ["dataset", "build", "scenes:7", "nonsense:input", "--frames", "12", "--out", out] + CLI_OPTS
    real_report = ds_mod._report

    def kill_at_7(progress, done, total):
        real_report(progress, done, total)
        if done >= 7:
            raise KeyboardInterrupt

    monkeypatch.setattr(ds_mod, "_report", kill_at_7)
    assert cli.main(args) == 130
    capsys.readouterr()
    assert os.listdir(out) == ["scenes_0007.h5.partial"]
    monkeypatch.setattr(ds_mod, "_report", real_report)
    assert cli.main(args) == 1   # the nonsense input fails, scenes_0007 resumes
    err = capsys.readouterr().err
    assert "scenes_0007: resumed at" in err and "nonsense:input: FAILED" in err
    ref = str(tmp_path / "ref")
    assert cli.main(["dataset", "build", "scenes:7", "--frames", "12", "--out", ref] + CLI_OPTS) == 0
    assert_same_file(os.path.join(out, "scenes_0007.h5"), os.path.join(ref, "scenes_0007.h5"))

    assert cli.main(["dataset", "info", os.path.join(out, "scenes_0007.h5")]) == 0
    text = capsys.readouterr().out
    assert "events" in text and "Mev/s" in text and "12 boxes at the source frames" in text
    assert cli.main(["dataset", "info", "--json", os.path.join(out, "scenes_0007.h5")]) == 0
    s = json.loads(capsys.readouterr().out)
    with HybridDataset(os.path.join(out, "scenes_0007.h5")) as ds:
        assert s["n_events"] == ds.n_events and s["n_aps"] == len(ds.aps)
        assert s["event_rate_hz"] == pytest.approx(ds.n_events / (ds.duration_us / 1e6))
    assert s["gt_valid_fraction"] == 1.0 and s["n_gt"] == 12
    # info refuses an unfinished file with the resume hint
    with open(os.path.join(out, "x.h5.partial"), "wb"):
        pass
    assert cli.main(["dataset", "info", os.path.join(out, "x.h5")]) == 2
    assert "dashnet dataset build" in capsys.readouterr().err
