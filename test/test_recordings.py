"""Tests for dashnet_ros.davis.recordings: AEDAT 2.0 / 3.1 / 4 readers, writers, live camera.

Besides writer→reader round trips, raw records are hand-built here with struct / numpy bit
arithmetic straight from the format specifications (iniVation "AEDAT file formats", jAER
DavisChip address layout), so a bug shared by the reader and the writer cannot hide.
"""
import struct

import numpy as np
import pytest

from dashnet_ros.davis.frames import ApsFrame, EventBatch
from dashnet_ros.davis.recordings import (
    Aedat2Recording,
    Aedat31Recording,
    Aedat4Recording,
    CameraNotFoundError,
    LiveCamera,
    RecordingWarning,
    collect,
    open_recording,
    write_aedat2,
    write_aedat31,
    write_aedat4,
)
from dashnet_ros.events import EVENT_DTYPE, make_events

W, H = 240, 180
A2_HEADER = b"#!AER-DAT2.0\r\n# AEChip: eu.seebetter.ini.chips.davis.DAVIS240C\r\n"
A3_HEADER = b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DAVIS240C\r\n#Start-Time: 2018-01-01 00:00:00 (TZ+0000)\r\n#!END-HEADER\r\n"


def _events(n=3000, t_max=80_000, seed=0):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, t_max, n))
    return make_events(rng.integers(0, W, n), rng.integers(0, H, n), t, rng.choice([-1, 1], n))


def _frames(times, seed=1):
    rng = np.random.default_rng(seed)
    return [ApsFrame(t_us=int(t), image=rng.integers(0, 256, (H, W), dtype=np.uint8)) for t in times]


def _check_stream(items, batch_us):
    """Time order, batches tiling time from 0, events inside their batch, frame placement."""
    batches = [it for it in items if isinstance(it, EventBatch)]
    assert batches and batches[0].t0_us == 0
    for a, b in zip(batches, batches[1:]):
        assert b.t0_us == a.t1_us
    for b in batches:
        assert b.t1_us - b.t0_us == batch_us
        assert b.events.dtype == EVENT_DTYPE
        t = b.events["t_us"]
        assert np.all((t >= b.t0_us) & (t < b.t1_us))
        assert np.all(np.diff(t) >= 0)
    last_batch_t1 = 0
    last_frame_t = None
    for i, it in enumerate(items):
        if isinstance(it, EventBatch):
            last_batch_t1 = it.t1_us
        else:
            assert isinstance(it, ApsFrame) and it.image.dtype == np.uint8 and it.image.shape == (H, W)
            assert it.t_us >= last_batch_t1  # not before the end of the previous batch
            nxt = next((b for b in items[i + 1:] if isinstance(b, EventBatch)), None)
            assert nxt is not None and it.t_us < nxt.t1_us  # before the end of the next batch
            assert last_frame_t is None or it.t_us >= last_frame_t
            last_frame_t = it.t_us
    return batches


def _assert_same_events(got, ev, shift):
    assert len(got) == len(ev)
    got = got[np.lexsort((got["p"], got["y"], got["x"], got["t_us"]))]
    ev = ev[np.lexsort((ev["p"], ev["y"], ev["x"], ev["t_us"]))]
    np.testing.assert_array_equal(got["t_us"] + shift, ev["t_us"])
    np.testing.assert_array_equal(got["x"], ev["x"])
    np.testing.assert_array_equal(got["y"], ev["y"])
    np.testing.assert_array_equal(got["p"], ev["p"])


# --- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["aedat2", "aedat31", "aedat4"])
def test_round_trip_events_and_frames(tmp_path, fmt):
    ev = _events()
    frames = _frames([15_000, 47_000])
    off = 5_000_000
    path = tmp_path / f"rec.{fmt}"
    {"aedat2": write_aedat2, "aedat31": write_aedat31, "aedat4": write_aedat4}[fmt](path, ev, frames, t_offset_us=off)
    rec = open_recording(path)
    assert type(rec) is {"aedat2": Aedat2Recording, "aedat31": Aedat31Recording, "aedat4": Aedat4Recording}[fmt]
    assert (rec.width, rec.height) == (W, H)
    # origin = first time stamp in the file (first event here; frame reads start later)
    assert rec.t_offset_us == off + int(ev["t_us"][0])
    items = list(rec.stream())
    _check_stream(items, 1000)
    got, fr = collect(items)
    _assert_same_events(got, ev, rec.t_offset_us - off)
    assert [f.t_us + rec.t_offset_us - off for f in fr] == [15_000, 47_000]
    for a, b in zip(fr, frames):
        np.testing.assert_array_equal(a.image, b.image)
    assert rec.stats["events"] == len(ev) and rec.stats["frames"] == 2


def test_aedat4_events_only_and_batch_size(tmp_path):
    ev = _events(800, 30_000)
    path = write_aedat4(tmp_path / "ev.aedat4", ev, t_offset_us=123)
    rec = Aedat4Recording(path, batch_us=2500)
    assert not rec.has_frames and rec.has_events
    items = list(rec.stream())
    assert all(isinstance(it, EventBatch) for it in items)
    _check_stream(items, 2500)
    got, fr = collect(items)
    assert fr == []
    _assert_same_events(got, ev, rec.t_offset_us - 123)


def test_aedat2_time_stamp_wrap_is_undone(tmp_path):
    ev = _events(2000, 60_000)
    off = (1 << 32) - 25_000  # 32-bit time stamps wrap in the middle of the recording
    path = write_aedat2(tmp_path / "wrap.aedat", ev, _frames([40_000]), t_offset_us=off)
    raw = np.frombuffer(path.read_bytes()[len(path.read_bytes()) - 8 * 10:], ">u4").reshape(-1, 2)
    assert raw[-1, 1] < 60_000  # the file really holds wrapped stamps
    rec = Aedat2Recording(path)
    got, fr = collect(rec.stream())
    _assert_same_events(got, ev, rec.t_offset_us - off)
    assert fr[0].t_us + rec.t_offset_us - off == 40_000


def test_aedat31_overflow_epoch_crossing(tmp_path):
    ev = _events(2000, 60_000)
    off = (1 << 31) - 30_000  # tsOverflow goes 0 → 1 mid-recording
    path = write_aedat31(tmp_path / "ovf.aedat", ev, _frames([29_800, 45_000]), t_offset_us=off, exposure_us=2000)
    rec = Aedat31Recording(path)
    items = list(rec.stream())
    _check_stream(items, 1000)
    got, fr = collect(items)
    _assert_same_events(got, ev, rec.t_offset_us - off)
    assert [f.t_us + rec.t_offset_us - off for f in fr] == [29_800, 45_000]


def test_small_chunks_give_the_same_stream(tmp_path):
    ev = _events(3000, 50_000)
    path = write_aedat2(tmp_path / "c.aedat", ev, _frames([10_000, 30_000]), t_offset_us=1000)
    big = list(Aedat2Recording(path).stream())
    small = list(Aedat2Recording(path, chunk_records=997).stream())  # frames span many chunks
    assert len(big) == len(small)
    for a, b in zip(big, small):
        assert type(a) is type(b)
        if isinstance(a, EventBatch):
            assert (a.t0_us, a.t1_us) == (b.t0_us, b.t1_us)
            np.testing.assert_array_equal(a.events, b.events)
        else:
            assert a.t_us == b.t_us
            np.testing.assert_array_equal(a.image, b.image)


def test_progress_reaches_total(tmp_path):
    path = write_aedat2(tmp_path / "p.aedat", _events(5000), t_offset_us=10)
    calls = []
    list(Aedat2Recording(path, chunk_records=1000).stream(progress=lambda d, n: calls.append((d, n))))
    assert len(calls) >= 5
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert calls[-1][0] == calls[-1][1] == 8 * 5000


def test_writer_avoids_a_record_that_reads_as_header(tmp_path):
    # raw y = 140 puts 0x23 ('#') in the address' first byte: row = 179 - 140 = 39
    ev = make_events([5, 6], [39, 39], [100, 200], [1, -1])
    path = write_aedat2(tmp_path / "hash.aedat", ev, t_offset_us=0)
    data = path.read_bytes()
    rec = Aedat2Recording(path)
    assert data[rec.data_offset:rec.data_offset + 1] != b"#"
    got, _ = collect(rec.stream())
    _assert_same_events(got, ev, rec.t_offset_us)


# --- hand-built records (independent of the writers) -------------------------------------


def _a2_dvs(rx, ry, on, ts):
    return struct.pack(">II", (ry << 22) | (rx << 12) | ((1 << 11) if on else 0), ts)


def test_aedat2_hand_built_dvs_records(tmp_path):
    body = b"".join([
        _a2_dvs(10, 20, True, 1000),
        _a2_dvs(0, 0, False, 1004),
        struct.pack(">II", (3 << 22) | (4 << 12) | (1 << 10), 1005),  # external input event: skipped
        struct.pack(">II", 0x80000C00 | (2 << 28) | (0x1234 << 12), 1006),  # IMU sample: skipped
        _a2_dvs(239, 179, True, 1010),
    ])
    path = tmp_path / "hand.aedat"
    path.write_bytes(A2_HEADER + b"# a comment line\r\n" + body)
    rec = open_recording(path)
    assert rec.t_offset_us == 1000 and rec.header[-1] == "# a comment line"
    got, fr = collect(rec.stream())
    assert fr == []
    # jAER: DVS x is mirrored (x = 239 - rawX), y counts upward (row = 179 - rawY)
    assert got["t_us"].tolist() == [0, 4, 10]
    assert got["x"].tolist() == [229, 239, 0]
    assert got["y"].tolist() == [159, 179, 0]
    assert got["p"].tolist() == [1, -1, 1]


def _a2_aps_frame(u8, t_col0, col_dt=10, sig_dt=5):
    """Hand-built DAVIS240C APS frame: per column (rawX 239 → 0) reset reads of rows
    rawY 179 → 0, then that column's signal reads (a rolling-shutter-like interleave)."""
    recs, times = [], []
    for k, rx in enumerate(range(W - 1, -1, -1)):
        ry = np.arange(H - 1, -1, -1)
        col, row = rx, (H - 1) - ry  # APS: column = rawX (not mirrored), row = 179 - rawY
        v10 = np.rint(u8[row, col].astype(float) * 1023 / 255).astype(np.int64)
        reset = 1023 - (ry % 3)
        signal = reset - v10
        base = (1 << 31) | (ry << 22) | (rx << 12)
        recs += [base | (0 << 10) | reset, base | (1 << 10) | signal]
        times += [np.full(H, t_col0 + k * col_dt), np.full(H, t_col0 + k * col_dt + sig_dt)]
    a = np.concatenate(recs).astype(np.int64)
    t = np.concatenate(times).astype(np.int64)
    out = np.empty((len(a), 2), ">u4")
    out[:, 0] = a
    out[:, 1] = t
    return out.tobytes(), int(t.sum() // len(t))


def test_aedat2_hand_built_aps_frame(tmp_path):
    rows, cols = np.mgrid[0:H, 0:W]
    u8 = ((cols + 2 * rows) % 251).astype(np.uint8)  # orientation-revealing pattern
    frame_bytes, t_mid = _a2_aps_frame(u8, t_col0=2000)
    body = _a2_dvs(1, 1, True, 1500) + frame_bytes + _a2_dvs(2, 2, False, 9000)
    path = tmp_path / "aps.aedat"
    path.write_bytes(A2_HEADER + body)
    rec = Aedat2Recording(path)
    items = list(rec.stream())
    _check_stream(items, 1000)
    got, fr = collect(items)
    assert len(got) == 2 and len(fr) == 1
    np.testing.assert_array_equal(fr[0].image, u8)
    assert fr[0].t_us == t_mid - 1500  # mean time of the frame's reads, relative to the origin


def test_aedat2_incomplete_frame_is_skipped(tmp_path):
    u8 = np.full((H, W), 100, np.uint8)
    frame_bytes, _ = _a2_aps_frame(u8, t_col0=2000)
    path = tmp_path / "inc.aedat"
    path.write_bytes(A2_HEADER + _a2_dvs(1, 1, True, 1500) + frame_bytes[: len(frame_bytes) // 2])
    with pytest.warns(RecordingWarning, match="incomplete APS frame"):
        got, fr = collect(Aedat2Recording(path).stream())
    assert fr == [] and len(got) == 1


def _a3_packet(etype, esize, tsoff, ovf, events, capacity=None):
    n = len(events)
    cap = n if capacity is None else capacity
    return struct.pack("<hhiiiiii", etype, 1, esize, tsoff, ovf, cap, n, n) + b"".join(events)


def test_aedat31_hand_built_packets(tmp_path):
    pol = [
        struct.pack("<Ii", (10 << 17) | (20 << 2) | (1 << 1) | 1, 1000),  # ON at (10, 20)
        struct.pack("<Ii", (239 << 17) | (179 << 2) | 1, 1500),           # OFF at (239, 179)
        struct.pack("<Ii", (5 << 17) | (5 << 2) | 0, 1600),                # invalid: skipped
    ]
    lx, ly, px, py = 4, 3, 10, 20
    vals = (np.arange(lx * ly).reshape(ly, lx) * 20 + 5).astype(np.uint16)
    rgb = np.repeat((vals << 8)[..., None], 3, axis=2).astype("<u2")  # R = G = B
    info = 1 | (3 << 1)  # valid, 3 colour channels
    esize = 36 + lx * ly * 3 * 2 + 8  # room to spare: the rest of the event is zero
    fev = struct.pack("<Iiiiiiiii", info, 4000, 9000, 5000, 7000, lx, ly, px, py) + rgb.tobytes() + bytes(8)
    pol2 = [struct.pack("<Ii", (1 << 17) | (2 << 2) | 1, 8000)]
    body = (_a3_packet(1, 8, 4, 0, pol) + _a3_packet(1, 8, 4, 0, pol2) + _a3_packet(2, esize, 8, 0, [fev]))
    path = tmp_path / "hand.aedat3"
    path.write_bytes(A3_HEADER + body)
    rec = open_recording(path)
    assert isinstance(rec, Aedat31Recording) and (rec.width, rec.height) == (W, H)
    items = list(rec.stream())
    _check_stream(items, 1000)
    got, fr = collect(items)
    assert got["t_us"].tolist() == [0, 500, 7000]
    assert got["x"].tolist() == [10, 239, 1] and got["y"].tolist() == [20, 179, 2]
    assert got["p"].tolist() == [1, -1, -1]
    assert len(fr) == 1 and fr[0].t_us == 6000 - 1000  # (SOE + EOE) / 2, relative
    want = np.zeros((H, W), np.uint8)
    want[py:py + ly, px:px + lx] = vals  # row-major from the ROI's top-left corner
    np.testing.assert_array_equal(fr[0].image, want)


def test_aedat31_timestamp_reset_stops_reading(tmp_path):
    pol = [struct.pack("<Ii", (1 << 17) | (1 << 2) | 1, 100)]
    reset = [struct.pack("<Ii", (1 << 1) | 1, 0x7FFFFFFF)]  # special TIMESTAMP_RESET
    after = [struct.pack("<Ii", (2 << 17) | (2 << 2) | 1, 5)]
    path = tmp_path / "reset.aedat"
    path.write_bytes(A3_HEADER + _a3_packet(1, 8, 4, 0, pol) + _a3_packet(0, 8, 4, 0, reset) + _a3_packet(1, 8, 4, 0, after))
    with pytest.warns(RecordingWarning, match="time stamp reset"):
        got, _ = collect(Aedat31Recording(path).stream())
    assert got["x"].tolist() == [1]


# --- errors and damaged files --------------------------------------------------------------


def test_truncated_aedat2_warns_and_keeps_whole_records(tmp_path):
    ev = _events(500, 20_000)
    path = write_aedat2(tmp_path / "t.aedat", ev, t_offset_us=7)
    path.write_bytes(path.read_bytes()[:-3])
    rec = Aedat2Recording(path)
    with pytest.warns(RecordingWarning, match="truncated"):
        got, _ = collect(rec.stream())
    _assert_same_events(got, ev[:-1], rec.t_offset_us - 7)


def test_truncated_aedat31_warns_and_keeps_whole_events(tmp_path):
    ev = _events(500, 20_000)
    path = write_aedat31(tmp_path / "t.aedat", ev, t_offset_us=7, events_per_packet=100)
    data = path.read_bytes()
    path.write_bytes(data[:-13])  # cuts the last event and a half
    rec = Aedat31Recording(path)
    with pytest.warns(RecordingWarning, match="truncated"):
        got, _ = collect(rec.stream())
    _assert_same_events(got, ev[:-2], rec.t_offset_us - 7)
    path.write_bytes(data[: len(A3_HEADER) + 10])  # inside the first packet header
    with pytest.warns(RecordingWarning, match="truncated"):
        got, _ = collect(Aedat31Recording(path).stream())
    assert len(got) == 0


def test_bad_headers_and_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        open_recording(tmp_path / "nope.aedat")
    (tmp_path / "empty.aedat").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        open_recording(tmp_path / "empty.aedat")
    (tmp_path / "junk.aedat").write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(ValueError, match="unknown header"):
        open_recording(tmp_path / "junk.aedat")
    (tmp_path / "v30.aedat").write_bytes(b"#!AER-DAT3.0\r\n#!END-HEADER\r\n")
    with pytest.raises(ValueError, match="not supported"):
        open_recording(tmp_path / "v30.aedat")
    (tmp_path / "v31.aedat").write_bytes(A3_HEADER)
    with pytest.raises(ValueError, match="not an AEDAT 2.0"):
        Aedat2Recording(tmp_path / "v31.aedat")
    (tmp_path / "nohdr.aedat3").write_bytes(b"#!AER-DAT3.1\r\n#Format: RAW\r\n")
    with pytest.raises(ValueError, match="END-HEADER"):
        Aedat31Recording(tmp_path / "nohdr.aedat3")
    (tmp_path / "dvs128.aedat").write_bytes(b"#!AER-DAT2.0\r\n# AEChip: ch.unizh.ini.jaer.chip.retina.DVS128\r\n")
    with pytest.raises(ValueError, match="not a DAVIS"):
        Aedat2Recording(tmp_path / "dvs128.aedat")
    (tmp_path / "fake.aedat4").write_bytes(b"#!AER-DAT4.0\r\nnot flatbuffers")
    with pytest.raises(ValueError, match="AEDAT 4"):
        open_recording(tmp_path / "fake.aedat4")


def test_non_monotonic_time_stamps(tmp_path):
    path = tmp_path / "jitter.aedat"
    path.write_bytes(A2_HEADER + b"".join(_a2_dvs(i, 0, True, ts) for i, ts in enumerate([1000, 1010, 1005, 1020, 1003])))
    with pytest.warns(RecordingWarning, match="re-sorted"):
        items = list(Aedat2Recording(path).stream())
    _check_stream(items, 1000)
    got, _ = collect(items)
    assert got["t_us"].tolist() == [0, 3, 5, 10, 20]
    assert got["x"].tolist() == [239, 235, 237, 238, 236]

    path = tmp_path / "jump.aedat"
    path.write_bytes(A2_HEADER + b"".join(_a2_dvs(i, 0, True, ts) for i, ts in enumerate([1000, 2000, 900_000, 5000, 950_000])))
    with pytest.raises(ValueError, match=r"jumps back by 895000 µs at record 3"):
        list(Aedat2Recording(path).stream())
    with pytest.warns(RecordingWarning, match="dropped 1 records going back"):
        got, _ = collect(Aedat2Recording(path, strict=False).stream())
    assert got["t_us"].tolist() == [0, 1000, 899_000, 949_000]


def test_addresses_outside_the_sensor(tmp_path):
    path = tmp_path / "oob.aedat"
    path.write_bytes(A2_HEADER + _a2_dvs(5, 5, True, 100) + _a2_dvs(300, 5, True, 200) + _a2_dvs(6, 6, False, 300))
    with pytest.raises(ValueError, match=r"x=300, y=5 outside the 240x180"):
        Aedat2Recording(path)  # the origin peek already decodes the record
    with pytest.warns(RecordingWarning, match="outside the sensor"):
        got, _ = collect(Aedat2Recording(path, strict=False).stream())
    assert got["x"].tolist() == [234, 233]

    path3 = tmp_path / "oob.aedat3"
    pol = [struct.pack("<Ii", (250 << 17) | (5 << 2) | 1, 100)]
    path3.write_bytes(A3_HEADER + _a3_packet(1, 8, 4, 0, pol))
    with pytest.raises(ValueError, match="x=250, y=5 outside"):
        Aedat31Recording(path3)


# --- live camera ---------------------------------------------------------------------------


def test_live_camera_without_camera_raises_clear_error():
    with pytest.raises(CameraNotFoundError, match="no iniVation camera found"):
        LiveCamera()


def test_live_camera_open_failure_names_the_cameras(monkeypatch):
    import dv_processing as dv

    class Desc:
        serialNumber = "DAVIS240C_00001234"

    def failing_open(*a, **k):
        raise IndexError("vector::_M_range_check")

    monkeypatch.setattr(dv.io.camera, "discover", lambda: [Desc()])
    monkeypatch.setattr(dv.io.camera, "open", failing_open)
    with pytest.raises(CameraNotFoundError, match=r"cannot open iniVation camera XYZ.*DAVIS240C_00001234"):
        LiveCamera("XYZ")


class _FakeDvCamera:
    """Duck-typed dv camera: events in packets, each frame delivered after its exposure."""

    def __init__(self, dv, events, frames):
        self.dv = dv
        self.queue = []  # (delivery time, kind, payload)
        for s in range(0, len(events), 200):
            chunk = events[s:s + 200]
            store = dv.EventStore()
            for e in chunk:
                store.push_back(int(e["t_us"]), int(e["x"]), int(e["y"]), bool(e["p"] > 0))
            self.queue.append((int(chunk["t_us"][-1]), "ev", store))
        for f in frames:
            self.queue.append((f.t_us + 3000, "fr", dv.Frame(f.t_us, f.image)))
        self.queue.sort(key=lambda q: q[0])
        self.polls = 0

    def getCameraName(self):
        return "FakeDAVIS240C"

    def isEventStreamAvailable(self):
        return True

    def isFrameStreamAvailable(self):
        return True

    def getEventResolution(self):
        return (W, H)

    def getFrameResolution(self):
        return (W, H)

    def isRunning(self):
        return bool(self.queue)

    def getNextEventBatch(self):
        self.polls += 1
        if self.queue and self.queue[0][1] == "ev":
            return self.queue.pop(0)[2]
        return None

    def getNextFrame(self):
        if self.queue and self.queue[0][1] == "fr":
            return self.queue.pop(0)[2]
        return None


def test_live_camera_stream_shares_the_packet_logic():
    import dv_processing as dv

    off = 3_000_000
    ev = _events(2000, 60_000)
    ev["t_us"] += off
    frames = [ApsFrame(t_us=off + t, image=f.image) for t, f in zip([20_000, 40_000], _frames([0, 0]))]
    cam = LiveCamera(device=_FakeDvCamera(dv, ev, frames), latency_us=10_000, poll_s=0)
    assert (cam.width, cam.height) == (W, H)
    items = list(cam.stream())
    _check_stream(items, 1000)
    got, fr = collect(items)
    assert cam.t_offset_us == int(ev["t_us"][0])
    ev["t_us"] -= cam.t_offset_us
    _assert_same_events(got, ev, 0)
    assert [f.t_us + cam.t_offset_us for f in fr] == [f.t_us for f in frames]
    np.testing.assert_array_equal(fr[1].image, frames[1].image)


def test_live_camera_can_give_frames_as_they_arrive():
    """Frames delivered 3 ms after their exposure: with no event hold the in-order stream
    drops them as late; ``frames_at_once`` gives each out at the release after it arrives
    (before later event batches, after earlier ones) and drops none; the events are the same."""
    import dv_processing as dv

    ev = _events(20_000, 60_000)                 # the fake delivers 200 events (~0.6 ms) at a time
    frames = _frames([20_000, 40_000])
    ordered = LiveCamera(device=_FakeDvCamera(dv, ev, frames), latency_us=0, poll_s=0)
    with pytest.warns(RecordingWarning, match="dropped 0 events and 2 frames"):
        got_o, fr_o = collect(list(ordered.stream()))
    assert fr_o == []
    cam = LiveCamera(device=_FakeDvCamera(dv, ev, frames), latency_us=0, poll_s=0, frames_at_once=True)
    items = list(cam.stream())
    got, fr = collect(items)
    np.testing.assert_array_equal(got, got_o)
    assert [f.t_us for f in fr] == [f.t_us - cam.t_offset_us for f in frames]
    np.testing.assert_array_equal(fr[0].image, frames[0].image)
    for f in fr:   # out after the batches up to its delivery (3 ms later), not held to its stamp
        i = next(k for k, it in enumerate(items) if isinstance(it, ApsFrame) and it.t_us == f.t_us)
        ends = [it.t1_us for it in items[:i] if not isinstance(it, ApsFrame)]
        assert ends and f.t_us < ends[-1] <= f.t_us + 3000 + 1000
    assert cam.stats["late_frames"] == 0
