"""Operation counting (Table 4) and the table writers."""
import json

import pytest
import torch
from torch import nn

from dashnet_ros.eval.ops import E_ADD_PJ, E_MUL_PJ, OpCounter, count_pipeline_ops
from dashnet_ros.eval.tables import table2, table3, table4, write_table
from dashnet_ros.models.ann import FrameTracker
from dashnet_ros.models.snn import SpikingTracker


def test_counts_follow_actual_nonzero_inputs():
    lin = nn.Linear(10, 3)
    x = torch.zeros(1, 10)
    x[0, :4] = 2.0  # 4 non-zero inputs, each feeding 3 outputs
    with OpCounter(nn.Sequential(lin), spiking=False) as c:
        lin(x)
    assert c.adds == 12 and c.muls == 12 and c.dense_macs == 30
    e = c.per_inference(1)["energy_uj"]
    assert e == pytest.approx((12 * E_ADD_PJ + 12 * E_MUL_PJ) * 1e-6)


def test_spiking_layers_only_add_and_counts_cost_per_event():
    hidden, readout = nn.Linear(6, 5, bias=False), nn.Linear(5, 4)
    net = nn.Sequential(hidden, readout)
    x = torch.tensor([[0.0, 1, 0, 3, 0, 0]])  # 1 + 3 events
    with OpCounter(net, spiking=True) as c:
        readout(hidden(x) * 0 + torch.tensor([[1.0, 0, 0, 0, 1]]))
        hidden(x)
    # hidden: 4 events x 5 targets adds, no mul; readout: 2 non-zero counts x 4 outputs
    assert c.adds == 4 * 5 * 2 + 2 * 4
    assert c.muls == 2 * 4


def test_pipeline_ops_on_real_stream():
    from dashnet_ros.davis.stream import DavisSimulator, linear_blend
    from dashnet_ros.world.scenes import render_sequence

    src = render_sequence(21, 16)
    items = list(DavisSimulator(src, interp_factor=1, interpolator=linear_blend).stream())
    torch.manual_seed(0)
    ops = count_pipeline_ops(items, src.box_at(0), SpikingTracker.from_preset("fast").eval(),
                             FrameTracker.from_preset("fast").eval(), 240, 180)
    assert ops["snn"]["muls"] < ops["snn"]["adds"]  # only the readout multiplies
    assert ops["ann"]["muls"] == ops["ann"]["adds"] > 0
    assert ops["snn"]["adds"] < ops["snn"]["dense_macs"]  # sparse input does less than dense
    assert ops["dashnet"]["adds"] > ops["snn"]["adds"]
    # the template channels' correlations are counted: more than the network alone
    net_only = FrameTracker.from_preset("fast").eval()
    torch.manual_seed(0)
    with OpCounter(net_only, spiking=False) as c:
        net_only(torch.rand(1, net_only.in_channels, 64, 64))
    assert ops["ann"]["dense_macs"] > c.dense_macs + 1e6
    md, data = table4(ops, {"snn": 2000.0, "ann": 300.0, "dashnet": 1500.0})
    assert "DashNet" in md and data["SNN"]["fps"] == 2000.0


def test_tables_2_and_3_from_a_summary(tmp_path):
    row = {"miou": 0.5, "miou_std": 0.1, "auc": 0.4, "auc_std": 0.05, "robustness": 0.2, "robustness_std": 0.01,
           "n_sequences": 3, "output_rate_hz": 2083.3, "updates_per_s": 100.0}
    summary = {"hybrid": row, "snn-origin": row, "ann-at-zoh": row, "KCF@aps": row, "CSRT@frames": row}
    md, data = table2(summary)
    assert "Hybrid-AT" in md and "SNN-origin" in md and "ANN-NAT" not in md
    write_table(str(tmp_path), "table2", md, data, "header")
    assert json.load(open(tmp_path / "table2.json"))["Hybrid-AT"]["auc"] == 0.4
    md3, data3 = table3(summary)
    assert "every 240 fps frame" in md3 and "APS 30 Hz, zero-order hold" in md3
    assert data3["hybrid"]["speed"] == pytest.approx(100.0)  # compute rate, not the sensor-time output rate
