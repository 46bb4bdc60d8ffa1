"""LIF neuron (eq. 1-3) and rectangular surrogate gradient (Wu et al. 2018)."""
import math

import pytest
import torch

from dashnet_ros.models.lif import LIF, RectSurrogate, lif_multistep, lif_step, spike_fn



def _lif(**kw):
    # decay = exp(-dt/tau) = 0.5
    p = dict(dt_s=math.log(2) * 1e-3, tau_s=1e-3, v_th=1.0, u_rest=0.0, surrogate_width=1.0)
    p.update(kw)
    return LIF(**p)


def test_decay_without_spike():
    n = _lif()
    assert n.decay == pytest.approx(0.5)
    n(torch.tensor([0.8]))
    assert n.u.item() == pytest.approx(0.8)
    for expect in (0.4, 0.2, 0.1):
        o = n(torch.tensor([0.0]))
        assert o.item() == 0.0
        assert n.u.item() == pytest.approx(expect)


def test_threshold_is_strict_and_reset_to_rest():
    n = _lif(u_rest=-0.25)
    # starts at u_rest: -0.25 * 0.5 + 1.125 = 1.0 == v_th -> no spike (H(0) = 0)
    o = n(torch.tensor([1.125]))
    assert o.item() == 0.0 and n.u.item() == pytest.approx(1.0)
    # 1.0 * 0.5 + 0.75 = 1.25 > v_th -> spike and reset to u_rest
    o = n(torch.tensor([0.75]))
    assert o.item() == 1.0 and n.u.item() == pytest.approx(-0.25)


def test_integration_to_spike_and_reset_state():
    n = _lif()
    outs = [n(torch.tensor([0.6])).item() for _ in range(4)]
    # u: 0.6, 0.9, 1.05 -> spike, reset 0 -> 0.6
    assert outs == [0.0, 0.0, 1.0, 0.0]
    n.reset_state()
    assert n.u is None
    assert n(torch.tensor([0.6])).item() == 0.0 and n.u.item() == pytest.approx(0.6)


def test_multistep_matches_single_step_and_keeps_state():
    torch.manual_seed(0)
    x = torch.rand(6, 3, 5)
    s = _lif()
    ref = torch.stack([s(x[t]) for t in range(6)])
    m = _lif(step_mode="m")
    out = torch.cat([m(x[:4]), m(x[4:])])  # state carried between calls
    assert torch.equal(out, ref)
    assert torch.allclose(m.u, s.u)


def test_inference_path_equals_autograd_path():
    torch.manual_seed(1)
    x = torch.rand(8, 50) * 0.7
    u0 = torch.zeros(50)
    o_fast, u_fast = lif_multistep(x, u0, 0.8, 0.5, 0.0, 1.0)
    xg = x.clone().requires_grad_(True)
    o_grad, u_grad = lif_multistep(xg, u0, 0.8, 0.5, 0.0, 1.0)
    assert o_grad.requires_grad
    assert torch.equal(o_fast, o_grad.detach())
    assert torch.allclose(u_fast, u_grad.detach())


def test_rect_surrogate_gradient_values():
    x = torch.tensor([-0.6, -0.4, 0.0, 0.4, 0.6], requires_grad=True)
    y = RectSurrogate.apply(x, 1.0)
    assert y.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]
    x2 = torch.tensor([-1.2, -0.9, 0.3, 0.99, 1.5], requires_grad=True)
    spike_fn(x2, 2.0).sum().backward()
    assert x2.grad.tolist() == [0.0, 0.5, 0.5, 0.5, 0.0]


def test_gradient_flows_through_time():
    w = torch.tensor([0.4], requires_grad=True)
    x = torch.ones(5, 1) * w  # same input each step
    o, u = lif_multistep(x, torch.zeros(1), 0.9, 0.5, 0.0, 1.0)
    (o.sum() + u.sum()).backward()
    assert w.grad is not None and w.grad.abs().item() > 0


def test_single_step_function():
    o, u = lif_step(torch.tensor([0.3, 0.7]), torch.tensor([0.3, 0.0]), 0.5, 0.5, 0.0, 1.0)
    assert o.tolist() == [0.0, 1.0]
    assert u.tolist() == pytest.approx([0.45, 0.0])


@pytest.mark.parametrize(
    "kw",
    [dict(dt_s=0), dict(tau_s=-1), dict(v_th=0), dict(u_rest=2.0), dict(surrogate_width=0), dict(step_mode="x")],
)
def test_bad_parameters_are_refused(kw):
    with pytest.raises(ValueError, match=next(iter(kw))):
        LIF(**kw)
