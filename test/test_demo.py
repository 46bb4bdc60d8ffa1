"""`dashnet demo`: the monitor's statistics (ROS-free), the missing-weights message, and one
short closed-loop run of the whole graph over DDS (processes, own domain) that writes the
video, summary and bag -- whose recorded fused boxes the deterministic replay through the
tracker nodes reproduces.

Uses the shipped weights when both exist, else small untrained checkpoints (flow, stamps
and replay fidelity only: tracking quality is measured by `make demo`, see README)."""
import json
import os

import numpy as np
import pytest

from dashnet_ros import graph
from dashnet_ros.cli import UserError
from dashnet_ros.commands import demo
from dashnet_ros.io import bags
from dashnet_ros.nodes.monitor import LiveStats, VideoMaterial

from test_nodes_units import shipped_or_test_weights

REALTIME_FACTOR = 0.1
DURATION_S = 0.3


# --------------------------------------------------------------------------- LiveStats

def test_live_stats_rates_latency_lag_iou_and_catch():
    s = LiveStats(window_s=10.0)
    wall = 100.0
    for k in range(200):                                   # 0.2 s of sensor time at realtime_factor 0.1
        t0, t1 = k * 1000, (k + 1) * 1000
        if k % 4 == 0:                                     # ground truth at 250 Hz: a box moving right
            s.on_ground_truth(t0, [10 + t0 / 1000, 20, 10, 10], wall)
        s.on_events(t0, t1, 50, wall)
        for j in range(2):                                 # two SNN windows per packet, 3 ms later
            tb = t0 + 480 * (j + 1)
            box = [10 + tb / 1000, 20, 10, 10]
            s.on_box("snn", tb, box, wall + 0.003)
            s.on_box("fused", tb, box, wall + 0.003)
        if k % 33 == 0:
            s.on_box("ann", t0, [10 + t0 / 1000 + 5, 20, 10, 10], wall + 0.01)   # shifted by half a box
        if k == 150:
            s.on_distance(0.25, wall)
            s.on_caught(True, wall)
        wall += 0.01                                       # 1 ms of sensor time = 10 ms of wall time
    s.on_snn_counters(180, 190_000)                        # the SNN took 180 of the 190 packets up to 190 ms
    summ = s.summary()
    assert summ["snn_packets"]["fraction"] == pytest.approx(180 / 190)
    assert summ["rates_hz"]["events"] == pytest.approx(1000, rel=1e-3)          # sensor-time Hz
    assert summ["rates_hz"]["fused"] == pytest.approx(2000, rel=1e-3)              # 2 windows per 1 ms packet
    assert summ["rates_hz"]["ground_truth"] == pytest.approx(250, rel=1e-3)
    assert summ["event_rate_per_s"] == pytest.approx(50_000, rel=1e-3)
    assert summ["latency_ms"]["p50"] == pytest.approx(3.0, abs=0.01)            # packet -> first fused box
    assert summ["lag_ms"]["p99"] == pytest.approx(0.52, abs=0.01)               # packet end - first window
    assert summ["iou"]["fused"]["mean"] == pytest.approx(1.0, abs=1e-4)         # = interpolated ground truth
    assert summ["iou"]["ann"]["mean"] == pytest.approx(1 / 3, abs=0.01)         # half-box shift: IoU 5/15
    assert summ["caught"] and summ["time_to_catch_s"] == pytest.approx(0.148)  # latest ground-truth stamp
    assert summ["distance_m"]["final"] == pytest.approx(0.25)
    line = s.status_line()
    import re

    fields = dict(re.findall(r"(ev|snn|fused) (\d+)", line))
    assert int(fields["ev"]) == pytest.approx(1000, rel=0.05) and int(fields["fused"]) == pytest.approx(2000, rel=0.05)
    assert "CAUGHT at 0.15s" in line and "lat 3.0/3.0ms" in line


def test_live_stats_skips_unseen_targets_and_survives_time_going_back():
    s = LiveStats()
    s.on_ground_truth(0, [np.nan] * 4, 0.0)
    s.on_ground_truth(4000, [np.nan] * 4, 0.01)
    s.on_box("fused", 2000, [1, 2, 3, 4], 0.02)            # target not visible: not scored
    assert s.ious["fused"] == []
    s.on_ground_truth(8000, [0, 0, 10, 10], 0.03)
    s.on_ground_truth(12000, [0, 0, 10, 10], 0.04)
    s.on_box("fused", 10000, [np.nan] * 4, 0.05)           # no estimate while visible: IoU 0
    s.on_box("fused", 20000, [0, 0, 10, 10], 0.06)         # waits for the ground truth to get there
    assert s.ious["fused"] == [0.0]
    s.on_ground_truth(20000, [0, 0, 10, 10], 0.07)
    assert s.ious["fused"] == [0.0, 1.0]
    s.on_ground_truth(0, [0, 0, 10, 10], 0.08)             # restart: buffer cleared, still scoring
    s.on_box("fused", 0, [0, 0, 5, 10], 0.09)
    assert s.ious["fused"][-1] == pytest.approx(0.5)


def test_video_material_keeps_the_last_events_before_each_frame():
    from dashnet_ros.events import make_events

    v = VideoMaterial(video_fps=100.0, event_window_us=2000)     # frames every 10 ms
    ev = make_events([1, 2, 3], [4, 5, 6], [7000, 9500, 10500], [1, -1, 1])
    v.add_events(ev, 7000, 11000, 20, 10)
    assert set(v.event_pics) == {1}                              # frame at 10 ms: events in [8, 10) ms
    pic = v.event_pics[1]
    assert pic[5, 2] == -1 and pic[4, 1] == 0 and np.count_nonzero(pic) == 1


def test_missing_weights_say_how_to_get_them(monkeypatch, tmp_path):
    monkeypatch.setattr("dashnet_ros.tracking.default_weights", lambda kind, preset="fast": str(tmp_path / f"{kind}.pt"))
    with pytest.raises(UserError, match="reproduce.sh"):
        demo.weights_or_error(None, None)
    with pytest.raises(UserError, match="no such file"):
        demo.weights_or_error(str(tmp_path / "given.pt"), None)


# --------------------------------------------------------------------------- the closed loop

@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    w = shipped_or_test_weights(tmp_path_factory)
    mp = pytest.MonkeyPatch()
    mp.setenv("ROS_DOMAIN_ID", str(np.random.default_rng().integers(120, 220)))
    out = str(tmp_path_factory.mktemp("demo"))
    lines = []
    summary = demo.run_demo(out, duration_s=DURATION_S, realtime_factor=REALTIME_FACTOR, seed=1,
                            snn_weights=w["snn"], ann_weights=w["ann"], record=True, stop_on_catch=False,
                            status=lines.append, status_period_s=0.5)
    mp.undo()
    return {"out": out, "summary": summary, "lines": lines, "weights": w}


def test_demo_writes_video_summary_and_bag_at_sensor_rates(demo_run):
    import cv2

    out, summ = demo_run["out"], demo_run["summary"]
    log = open(os.path.join(out, "graph.log")).read()
    assert summ["stopped_by"] == "duration", log[-3000:]
    assert json.load(open(os.path.join(out, "summary.json")))["rates_hz"] == summ["rates_hz"]
    r = summ["rates_hz"]
    assert r["aps"] == pytest.approx(30.0, rel=0.02)               # from the messages' sensor stamps
    assert r["ground_truth"] == pytest.approx(240.0, rel=0.02)
    assert r["ann"] == pytest.approx(30.0, rel=0.1)
    assert 0 < summ["latency_ms"]["p50"] < 5000 and summ["iou"]["fused"]["n"] > 100
    assert summ["distance_m"]["start"] > 0 and summ["settings"]["realtime_factor"] == REALTIME_FACTOR
    assert any("fused" in line and "Hz" in line for line in demo_run["lines"])
    cap = cv2.VideoCapture(os.path.join(out, "demo.mp4"))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    assert n == summ["video_frames"] and abs(n - 60 * DURATION_S) <= 3      # 60 frames per sensor second
    ok, frame = cap.read()
    assert ok and frame.shape == (540, 720, 3)
    # the bag: every graph topic, SNN boxes one per 480 us window of sensor time
    info = bags.bag_info(os.path.join(out, "bag"))
    assert summ["bag"]["messages"] == info["messages"]
    for t in (graph.TOPIC_EVENTS, graph.TOPIC_IMAGE, bags.SNN_TOPIC, graph.TOPIC_ANN_BOX,
              bags.FUSED_TOPIC, graph.TOPIC_FUSED_BOX, graph.TOPIC_CMD_VEL, graph.TOPIC_WORLD_GROUND_TRUTH):
        assert info["topics"][t]["count"] > 0, t
    t_snn = bags.boxes_of(os.path.join(out, "bag"), bags.SNN_TOPIC)[0]
    assert np.mean(np.diff(t_snn) == 480) > 0.95


def test_replay_of_the_demo_bag_reproduces_the_recorded_boxes(demo_run):
    """Deterministic replay ('forced': each node gets its recorded inputs in the order the
    recorder received them) gives the recorded fused boxes (all of them on an idle machine).  The SNN's own boxes are
    reproduced until a fused box and an event packet reached the SNN node in another
    order than the recorder (that order is not in the bag; it happens when they arrive
    within about a millisecond, more often under load); from there the network state
    differs (a bag that recorded each node's reception order would make this exact)."""
    bag = os.path.join(demo_run["out"], "bag")
    w = demo_run["weights"]
    args = {"snn_weights": w["snn"], "ann_weights": w["ann"]}
    rec_snn = bags.boxes_of(bag, bags.SNN_TOPIC)
    # the live SNN started at its first ground-truth box (a later one than the bag's first
    # when its subscription was matched late): start the replay's there too
    gt_t = bags.boxes_of(bag, graph.TOPIC_GROUND_TRUTH)[0]
    t_first_window = int(rec_snn[0][0]) - 480
    out = bags.replay_deterministic(bag, mode="forced", launch_args=args,
                                    ground_truth_from_us=int(gt_t[gt_t <= t_first_window].max()))
    rec_fused = bags.boxes_of(bag, bags.FUSED_TOPIC)
    c = bags.compare_tracks(rec_fused, bags.box_track(out[bags.FUSED_TOPIC]))
    # 'forced' gives the fuser the recorded SNN boxes: the fused boxes it can reproduce are
    # those of the recorded SNN stream's span (the recorder's subscriptions match at
    # different times, so the fused stream may start earlier than the SNN one)
    span = (rec_fused[0] >= rec_snn[0][0]) & (rec_fused[0] <= rec_snn[0][-1])
    assert c["matched"] >= len(np.unique(rec_fused[0][span])) - 2 and c["matched"] > 100, c
    # The fuser has the same ordering race (an SNN array and an ANN box arriving within ~1 ms):
    # on an idle machine >= 99.9 % of the fused boxes are identical; under heavy load we have
    # seen 78 % identical with mean IoU 0.91, so the bound here is what holds in both cases.
    assert c["exact"] >= 0.5 and c["mean_iou"] > 0.85, c
    rep_snn = bags.box_track(out[bags.SNN_TOPIC])
    s = bags.compare_tracks(rec_snn, rep_snn)
    assert s["matched"] > 100 and s["only_ref"] == 0 and s["mean_iou"] > 0.6, s
    if rec_snn[0][0] == rep_snn[0][0]:
        # the bag holds the SNN stream from its first window (under load the recorder's
        # subscription may match after the SNN's first boxes and the fused boxes they fed
        # back, which the replay then cannot give the SNN): same start, same network, the
        # first windows identical until the first ordering race (after 12-22 windows in 2
        # of 12 runs here)
        assert s["identical_prefix"] >= 1, s
