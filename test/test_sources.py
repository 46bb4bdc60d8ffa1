"""Tests of the frame sources: video, NFS sequences, image folders and the factory."""
import os

import cv2
import numpy as np
import pytest

from dashnet_ros.davis import sources
from dashnet_ros.davis.frames import Frame, FrameSource
from dashnet_ros.davis.sources import (NFS_COUNT_TOLERANCE, ImageFolderSource, NFSSequence,
                                       VideoSource, open_source, read_first_annotation,
                                       read_nfs_annotation, to_luminance, write_nfs_sequence)
from dashnet_ros.world.scenes import render_sequence


def _write_video(path, n=6, size=(64, 48), fps=30.0):
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size, True)
    assert w.isOpened()
    for k in range(n):
        img = np.zeros((size[1], size[0], 3), np.uint8)
        img[..., 2] = 40 * k          # red ramps up: luminance must follow 0.299 R
        w.write(img)
    w.release()
    return str(path)


def _nfs(tmp_path, n=6, name="seq"):
    src = render_sequence(1000, n, width=64, height=48)
    return write_nfs_sequence(str(tmp_path), name, src), src


def _lines(seq_dir, name="seq"):
    return os.path.join(seq_dir, "240", name + ".txt")


# --------------------------------------------------------------------------- luminance


def test_to_luminance_bt601():
    bgr = np.zeros((2, 2, 3), np.uint8)
    bgr[0, 0] = (255, 0, 0)   # blue
    bgr[0, 1] = (0, 255, 0)   # green
    bgr[1, 0] = (0, 0, 255)   # red
    bgr[1, 1] = (255, 255, 255)
    y = to_luminance(bgr)
    assert y.dtype == np.float32 and y.shape == (2, 2)
    np.testing.assert_allclose(y, [[0.114, 0.587], [0.299, 1.0]], atol=1e-5)
    np.testing.assert_allclose(to_luminance(np.full((3, 3), 65535, np.uint16)), 1.0)
    np.testing.assert_allclose(to_luminance(np.dstack([bgr, np.zeros((2, 2), np.uint8)])), y)


# --------------------------------------------------------------------------- video


def test_video_source_reads_frames(tmp_path):
    p = _write_video(tmp_path / "v.avi")
    src = VideoSource(p)
    assert isinstance(src, FrameSource)
    assert (src.width, src.height, src.fps, len(src)) == (64, 48, 30.0, 6)
    frames = list(src)
    assert [f.t_us for f in frames] == [round(k * 1e6 / 30) for k in range(6)]
    means = [float(f.image.mean()) for f in frames]
    np.testing.assert_allclose(means, [0.299 * 40 * k / 255 for k in range(6)], atol=0.02)
    assert frames[0].image.dtype == np.float32 and frames[0].box is None
    assert VideoSource(p, fps=240.0).fps == 240.0
    assert len(list(src)) == 6   # re-iterable


def test_video_source_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.avi"):
        VideoSource(str(tmp_path / "missing.avi"))
    bad = tmp_path / "bad.avi"
    bad.write_bytes(b"not a video" * 50)
    with pytest.raises(ValueError, match="bad.avi"):
        VideoSource(str(bad))
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.mp4"):
        VideoSource(str(empty))


class _FakeCapture:
    """A capture that opens and yields zero-size frames."""

    def __init__(self, path):
        pass

    def isOpened(self):
        return True

    def get(self, prop):
        return 30.0 if prop == cv2.CAP_PROP_FPS else 3

    def read(self):
        return True, np.zeros((0, 0, 3), np.uint8)

    def release(self):
        pass


def test_video_source_zero_size_frames(tmp_path, monkeypatch):
    p = tmp_path / "zero.avi"
    p.write_bytes(b"x")
    monkeypatch.setattr(sources.cv2, "VideoCapture", _FakeCapture)
    with pytest.raises(ValueError, match="zero-size frames"):
        VideoSource(str(p))


# --------------------------------------------------------------------------- image folders


def test_image_folder_natural_order_and_errors(tmp_path):
    for k in (1, 2, 10):
        cv2.imwrite(str(tmp_path / f"f{k}.png"), np.full((8, 10), 20 * k, np.uint8))
    (tmp_path / "notes.txt").write_text("ignored")
    src = ImageFolderSource(str(tmp_path), fps=100.0)
    assert len(src) == 3 and (src.width, src.height) == (10, 8)
    frames = list(src)
    np.testing.assert_allclose([f.image[0, 0] for f in frames],
                               [20 / 255, 40 / 255, 200 / 255], atol=1e-6)
    assert [f.t_us for f in frames] == [0, 10_000, 20_000]
    assert len(ImageFolderSource(str(tmp_path), 100.0, pattern="f1*.png")) == 2
    with pytest.raises(FileNotFoundError, match="nope"):
        ImageFolderSource(str(tmp_path / "nope"), 30.0)
    with pytest.raises(ValueError, match="no images"):
        ImageFolderSource(str(tmp_path), 30.0, pattern="*.jpg")
    (tmp_path / "f11.png").write_bytes(b"")       # a zero-size image file
    with pytest.raises(ValueError, match="f11.png"):
        list(ImageFolderSource(str(tmp_path), 30.0))


# --------------------------------------------------------------------------- NFS


def test_nfs_round_trip(tmp_path):
    seq, src = _nfs(tmp_path)
    assert seq == os.path.join(str(tmp_path), "seq")
    assert os.path.isfile(os.path.join(seq, "240", "seq", "00001.jpg"))
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]   # no tmp dirs left
    nfs = NFSSequence(seq)
    assert (nfs.fps, nfs.width, nfs.height, len(nfs)) == (240.0, 64, 48, 6)
    back = list(nfs)
    orig = list(src)
    for a, b in zip(orig, back):
        assert a.t_us == b.t_us and a.index == b.index
        np.testing.assert_allclose(b.box, a.box, atol=1e-3)
        assert np.abs(a.image - b.image).mean() < 0.01      # JPEG at quality 100
    t, boxes = nfs.gt_track()
    np.testing.assert_array_equal(t, [round(k * 1e6 / 240) for k in range(6)])
    np.testing.assert_allclose(boxes, src.gt_track()[1], atol=1e-3)
    np.testing.assert_allclose(nfs.initial_box(), orig[0].box, atol=1e-3)
    # the factory recognises the layout
    assert isinstance(open_source(seq), NFSSequence)


def test_nfs_vatic_conventions(tmp_path):
    seq, _ = _nfs(tmp_path, n=3)
    with open(_lines(seq), "w") as f:
        f.write('1 10 20 40 60 0 0 0 0 "ball"\n'
                '1 11 21 41 61 1 1 0 1 "ball"\n'
                '1 12 22 42 62 2 0 1 0 "ball"\n\n')
    nfs = NFSSequence(seq)
    _, b = nfs.gt_track()
    np.testing.assert_array_equal(b[0], [10, 20, 30, 40])
    assert np.all(np.isnan(b[1]))                       # lost
    np.testing.assert_array_equal(b[2], [12, 22, 30, 40])
    ann = nfs.annotations
    assert ann[2].occluded and ann[1].generated and ann[0].label == "ball"
    np.testing.assert_array_equal(read_first_annotation(seq), [10, 20, 30, 40])


def test_nfs_count_mismatch(tmp_path):
    seq, _ = _nfs(tmp_path, n=8)
    txt = _lines(seq)
    lines = open(txt).read().splitlines(True)
    # one extra line is tolerated (documented), the sequence keeps the frame count
    with open(txt, "w") as f:
        f.writelines(lines + [lines[-1].replace(" 8 0 ", " 9 0 ")])
    assert len(NFSSequence(seq)) == 8
    with open(txt, "w") as f:
        f.writelines(lines[: 8 - NFS_COUNT_TOLERANCE - 2])
    with pytest.raises(ValueError, match=r"seq\.txt has 5 annotation lines but .* 8 frames"):
        NFSSequence(seq)


def test_nfs_malformed_line_reports_line_number(tmp_path):
    seq, _ = _nfs(tmp_path, n=5)
    txt = _lines(seq)
    lines = open(txt).read().splitlines(True)
    lines[3] = "1 12 banana 40 60 4 0 0 0 \"x\"\n"
    with open(txt, "w") as f:
        f.writelines(lines)
    with pytest.raises(ValueError, match=r"seq\.txt:4: malformed"):
        NFSSequence(seq)
    lines[3] = "1 2 3\n"
    with open(txt, "w") as f:
        f.writelines(lines)
    with pytest.raises(ValueError, match=r"seq\.txt:4: malformed"):
        read_nfs_annotation(txt)


def test_nfs_missing_pieces(tmp_path):
    with pytest.raises(FileNotFoundError, match="no '240' folder"):
        NFSSequence(str(tmp_path))
    seq, _ = _nfs(tmp_path, n=3)
    os.remove(os.path.join(seq, "240", "seq", "00002.jpg"))
    with pytest.raises(ValueError, match="expected frame 00002.jpg"):
        NFSSequence(seq)
    os.remove(_lines(seq))
    with pytest.raises(FileNotFoundError, match="seq.txt"):
        NFSSequence(seq)


def test_first_line_reader_never_reads_later_lines(tmp_path):
    seq, src = _nfs(tmp_path, n=4)
    txt = _lines(seq)
    first = open(txt, "rb").readline()
    with open(txt, "wb") as f:       # lines 2.. are garbage, not even text
        f.write(first + b"\xff\xfe\x00 garbage \x80\n" * 3 + os.urandom(20000))
    np.testing.assert_allclose(read_first_annotation(seq), src.box_at(0), atol=1e-3)
    with pytest.raises(ValueError):  # while the full reader does fail on them
        NFSSequence(seq)


def test_first_line_lost_or_empty(tmp_path):
    seq, _ = _nfs(tmp_path, n=2)
    with open(_lines(seq), "w") as f:
        f.write('1 0 0 0 0 1 1 0 0 "x"\n')
    with pytest.raises(ValueError, match="lost in the first frame"):
        read_first_annotation(seq)
    open(_lines(seq), "w").close()
    with pytest.raises(ValueError, match="empty"):
        read_first_annotation(seq)


def test_write_nfs_sequence_atomic_and_checks(tmp_path):
    src = render_sequence(1001, 4, width=32, height=24)
    with pytest.raises(FileExistsError):
        write_nfs_sequence(str(tmp_path), "a", src)
        write_nfs_sequence(str(tmp_path), "a", src)

    def failing():            # the source dies half way: nothing is left behind
        for k, fr in enumerate(src):
            if k == 2:
                raise RuntimeError("boom")
            yield fr

    with pytest.raises(RuntimeError):
        write_nfs_sequence(str(tmp_path), "b", failing(), n_frames=4)
    assert sorted(os.listdir(tmp_path)) == ["a"]
    with pytest.raises(ValueError, match="fps"):
        write_nfs_sequence(str(tmp_path), "c", render_sequence(1001, 2, fps=30.0))
    with pytest.raises(ValueError, match="ended after 4"):
        write_nfs_sequence(str(tmp_path), "d", src, n_frames=9)
    with pytest.raises(ValueError, match="name"):
        write_nfs_sequence(str(tmp_path), "../x", src)
    # plain images: no boxes -> lost; overwrite replaces
    imgs = [np.full((24, 32), 0.5, np.float32)] * 3
    seq = write_nfs_sequence(str(tmp_path), "a", imgs, n_frames=3, overwrite=True)
    nfs = NFSSequence(seq)
    assert len(nfs) == 3 and np.all(np.isnan(nfs.gt_track()[1]))
    progress = []
    write_nfs_sequence(str(tmp_path), "e", src, progress=lambda d, n: progress.append((d, n)))
    assert progress[-1] == (4, 4)


# --------------------------------------------------------------------------- factory


def test_open_source_specs(tmp_path):
    w = open_source("world", seed=3, width=64, height=48)
    it = iter(w)
    f0 = next(it)
    assert isinstance(f0, Frame) and f0.image.shape == (48, 64)
    sc = open_source("scenes:1002", n_frames=5, width=64, height=48)
    assert len(sc) == 5 and sc.params.seed == 1002
    v = open_source(_write_video(tmp_path / "v.avi"), seed=0)
    assert isinstance(v, VideoSource)
    d = tmp_path / "imgs"
    d.mkdir()
    cv2.imwrite(str(d / "1.png"), np.zeros((4, 4), np.uint8))
    assert isinstance(open_source(str(d), fps=60.0), ImageFolderSource)
    with pytest.raises(FileNotFoundError, match="not 'world'"):
        open_source(str(tmp_path / "nothing"))
    with pytest.raises(ValueError, match="seed"):
        open_source("scenes:abc")
    with pytest.raises(TypeError, match="unknown keyword"):
        open_source("world", bogus=1)
