"""Operation counts per inference from actual activations and spikes (Table 4).

Forward hooks on every ``Conv2d`` / ``Linear`` see the real input of each call.  With
``fan_out = dense MACs / input elements`` (how many output accumulations one input value
feeds), an event-driven (zero-skipping) implementation does, per layer:

- ANN (real-valued activations): one multiply and one add per non-zero input per fan-out:
  ``#Mul = #Add = nnz(input) * fan_out``;
- SNN hidden layers (binary spikes; the first layer sees integer event counts): no
  multiplication, one add per spike (an input count of c costs c adds) per fan-out:
  ``#Add = sum(input) * fan_out``, ``#Mul = 0``; the linear readout of spike counts (eq. 4)
  multiplies: ``#Mul = #Add = nnz(counts) * fan_out``.

The fast ANN's template channels (normalised cross-correlation, :class:`NCCCounter`) are
added to the ANN's counts as multiply-adds.  Dense (shape-only) counts are reported beside
them.  Not counted, as in the paper's
Table 4: pooling, ReLU, the LIF state update (one decay multiply, one add, one compare per
neuron and step) — reported separately as ``neuron_updates``.  Energy uses 45 nm CMOS
figures (Horowitz, ISSCC 2014): 32-bit float add 0.9 pJ, multiply 3.7 pJ; memory traffic is
ignored, so it is a lower bound for compute only.
"""
from __future__ import annotations

from typing import Dict, List

from torch import nn

E_ADD_PJ = 0.9
E_MUL_PJ = 3.7


class OpCounter:
    """Counts synaptic operations of ``model`` while attached (``with OpCounter(m, 'snn') as c``).

    ``spiking``: treat layer inputs as spikes/counts (adds only) except the last Linear
    (the readout), which multiplies.
    """

    def __init__(self, model: nn.Module, spiking: bool):
        self.model = model
        self.spiking = spiking
        self.layers: List[nn.Module] = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        self.adds = 0.0
        self.muls = 0.0
        self.dense_macs = 0.0
        self.neuron_updates = 0.0
        self._handles = []

    def __enter__(self):
        readout = self.layers[-1] if self.layers else None
        for m in self.layers:
            self._handles.append(m.register_forward_hook(self._hook(m is readout)))
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles = []

    def _hook(self, is_readout: bool):
        def hook(mod, inputs, output):
            x = inputs[0].detach()
            if isinstance(mod, nn.Conv2d):
                per_out = mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
            else:
                per_out = mod.in_features
            dense = float(output.numel()) * per_out
            fan_out = dense / max(x.numel(), 1)
            self.dense_macs += dense
            nnz = float((x != 0).sum())
            if self.spiking and not is_readout:
                self.adds += float(x.abs().sum()) * fan_out
                self.neuron_updates += float(output.numel())
            else:
                self.adds += nnz * fan_out
                self.muls += nnz * fan_out
        return hook

    def per_inference(self, n: int) -> Dict[str, float]:
        n = max(int(n), 1)
        return {"adds": self.adds / n, "muls": self.muls / n, "dense_macs": self.dense_macs / n,
                "neuron_updates": self.neuron_updates / n,
                "energy_uj": (self.adds * E_ADD_PJ + self.muls * E_MUL_PJ) / n * 1e-6}


class NCCCounter:
    """Counts the template channels' cross-correlation (:mod:`dashnet_ros.models.template`)
    while attached: a direct correlation costs ``th * tw`` multiply-adds per output position
    (the normalisation runs on running sums and is not counted)."""

    def __init__(self):
        self.macs = 0.0
        self._orig = None

    def __enter__(self):
        from ..models import template

        self._orig = orig = template.ncc_map

        def counted(search, patch):
            if patch is not None:
                h, w = search.shape
                th, tw = min(patch.shape[0], h), min(patch.shape[1], w)
                self.macs += float((h - th + 1) * (w - tw + 1) * th * tw)
            return orig(search, patch)

        template.ncc_map = counted
        return self

    def __exit__(self, *exc):
        from ..models import template

        template.ncc_map = self._orig


def count_pipeline_ops(items, box0, snn_model, ann_model, width: int, height: int,
                       snn_preset: str = "fast", ann_preset: str = "fast") -> Dict[str, dict]:
    """Run the hybrid pipeline over stream ``items`` with counters on both networks;
    returns per-inference counts for the SNN (per window), the ANN (per frame) and DashNet
    (per fused output: one SNN window plus the ANN's share at its frame rate)."""
    from ..tracking import ANNRunner, HybridTracker, SNNRunner

    snn = SNNRunner(snn_model, snn_preset, width, height, script=False, engine="torch")  # hooks see torch calls
    ann = ANNRunner(ann_model, ann_preset, width, height)
    tr = HybridTracker(width, height, mode="hybrid", snn=snn, ann=ann)
    tr.init(box0, 0)
    n_snn = n_ann = 0
    with OpCounter(snn.model, spiking=True) as cs, OpCounter(ann.model, spiking=False) as ca, NCCCounter() as cn:
        for it in items:
            for o in tr.push(it):
                n_snn += o.source == "snn"
                n_ann += o.source == "ann"
    ca.adds += cn.macs          # the template channels' correlations are part of the ANN's work
    ca.muls += cn.macs
    ca.dense_macs += cn.macs
    s, a = cs.per_inference(n_snn), ca.per_inference(n_ann)
    share = n_ann / max(n_snn, 1)
    hybrid = {k: s[k] + a[k] * share for k in s}
    return {"snn": dict(s, inferences=n_snn), "ann": dict(a, inferences=n_ann),
            "dashnet": dict(hybrid, inferences=n_snn, ann_share=share)}
