"""``dashnet export --out DIR``: write TorchScript versions of the tracker weights.

Each checkpoint (default: the shipped ``snn_fast``, ``ann_fast`` and ``ann_nat_fast``) is
loaded, checked against its stored config, scripted with ``torch.jit.script`` and saved
with that config embedded, as ``DIR/<name>.ts.pt``.  Everything that loads weights
(``dashnet track``, the nodes' ``weights`` parameter) accepts either form.
"""
from __future__ import annotations

import os

from ..cli import UserError


def run(args) -> int:
    from ..models.checkpoint import export_torchscript, load_checkpoint
    from ..tracking import default_weights

    paths = args.weights or [default_weights(k, args.preset) for k in ("snn", "ann", "ann_nat")]
    os.makedirs(args.out, exist_ok=True)
    for path in paths:
        try:
            model, cfg = load_checkpoint(path)
        except (FileNotFoundError, ValueError) as e:
            raise UserError(str(e)) from None
        if not hasattr(model, "state_dict") or type(model).__name__.startswith("Scripted"):
            raise UserError(f"{path} is already TorchScript")
        name = os.path.splitext(os.path.basename(path))[0]
        out = os.path.join(args.out, f"{name}.ts.pt")
        export_torchscript(model, out, preset=cfg.get("preset"), data_recipe=cfg.get("data_recipe"),
                           seed=cfg.get("seed"))
        load_checkpoint(out, kind=cfg["kind"], arch=cfg["arch"], in_hw=cfg["in_hw"])  # round-trip check
        print(f"{path} -> {out}")
    return 0


def add_parser(sub):
    p = sub.add_parser("export", help="export tracker weights as TorchScript", description=__doc__)
    p.add_argument("weights", nargs="*", help="checkpoints to export (default: the shipped weights of --preset)")
    p.add_argument("--preset", default="fast", choices=["fast", "paper"])
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=run)
