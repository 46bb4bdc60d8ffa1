"""What the SNN and ANN training loops share: CLI options, seeds and threads, torchrun /
DDP set-up, the learning-rate schedule, checkpoints with a resumable training state.

A run writes ``OUT`` (the model: :func:`dashnet_ros.models.checkpoint.save_checkpoint`,
with the preset, the data recipe, the seed and the code version) and ``OUT.state`` (the
optimiser, the step, the RNG states and the options: what ``--resume`` needs).  Both are
written atomically, by rank 0 only.

Distributed: launched by ``torchrun --nproc_per_node N`` (``WORLD_SIZE`` > 1 in the
environment) the loop joins the process group (gloo on CPU, nccl on CUDA), wraps the
model in :class:`~torch.nn.parallel.DistributedDataParallel` and draws its data with a
per-rank seed; the global batch is ``N x --batch``.
"""
from __future__ import annotations

import math
import os
import subprocess
import tempfile
from dataclasses import dataclass

import torch
from torch import nn

from .. import __version__

STATE_SUFFIX = ".state"


@dataclass
class Dist:
    """Process-group facts of this process (world 1 when not launched by torchrun)."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup(device: str = "cpu", threads: int = 2) -> Dist:
    """Threads, device and (under torchrun) the process group."""
    torch.set_num_threads(max(1, int(threads)))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine")
    if world <= 1:
        return Dist(0, 1, dev)
    import torch.distributed as dist

    rank = int(os.environ.get("RANK", "0"))
    if dev.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Dist(rank, world, dev)


def teardown(d: Dist) -> None:
    if d.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def wrap(model: nn.Module, d: Dist) -> nn.Module:
    """The module to call in the loop: DDP around ``model`` when distributed."""
    if not d.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[d.device.index] if d.device.type == "cuda" else None)


def seed_everything(seed: int) -> None:
    """Seed torch: the same on every rank, so every rank starts from the same weights."""
    torch.manual_seed(seed)


def data_seed(seed: int, rank: int, step: int) -> list:
    """Seed of a rank's data stream from ``step`` on (a resumed run draws fresh data)."""
    return [int(seed), int(rank), int(step)]


def lr_at(step: int, total: int, base: float, warmup: int = 100, floor: float = 0.05) -> float:
    """Linear warm-up over ``min(warmup, total // 10)`` steps, then cosine decay to
    ``floor * base``."""
    warmup = min(warmup, total // 10)
    if step < warmup:
        return base * (step + 1) / warmup
    f = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * f)))


def param_checksum(model: nn.Module) -> float:
    """Sum of all parameters (float64): equal on every rank when the replicas agree."""
    with torch.no_grad():
        return float(sum(p.detach().double().sum() for p in model.parameters()))


def code_version() -> str:
    """Package version plus the git commit of the source tree when there is one."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev = ""
    return f"dashnet_ros {__version__}" + (f" git {rev}" if rev else "")


def state_path(out: str) -> str:
    return os.fspath(out) + STATE_SUFFIX


def _atomic_torch_save(obj, path: str) -> None:
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=d)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save(out: str, model: nn.Module, optimizer, step: int, preset: str, recipe: dict, seed: int,
         options: dict, final: bool = False) -> None:
    """Write the model checkpoint ``out`` (weights + config) and its training state."""
    from ..models.checkpoint import save_checkpoint

    rec = dict(recipe, train=dict(options, step=int(step), final=bool(final), code=code_version()))
    save_checkpoint(out, model, preset=preset, data_recipe=rec, seed=seed)
    state = {"step": int(step), "optimizer": optimizer.state_dict(), "options": options,
             "torch_rng": torch.get_rng_state()}
    _atomic_torch_save(state, state_path(out))


def load_for_resume(out: str, model: nn.Module, optimizer, kind: str, options: dict) -> int:
    """Load ``out`` + ``out.state`` into ``model`` / ``optimizer``; returns the step to go on from.

    Refuses a checkpoint of another kind or architecture, and a state whose options that
    shape the model (preset, attention) differ from ``options``.
    """
    from ..models.checkpoint import load_checkpoint

    sp = state_path(out)
    if not os.path.isfile(out) or not os.path.isfile(sp):
        raise FileNotFoundError(f"--resume: {out} or {sp} does not exist (start without --resume)")
    try:
        state = torch.load(sp, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{sp}: cannot read the training state (truncated?): {e}") from None
    old = state.get("options", {})
    for k in ("preset", "attention"):
        if k in old and k in options and old[k] != options[k]:
            raise ValueError(f"--resume: {out} was trained with {k}={old[k]!r}, now {k}={options[k]!r}")
    loaded, cfg = load_checkpoint(out, kind=kind, arch=model.arch, in_hw=model.in_hw)
    if cfg.get("in_channels") != getattr(model, "in_channels", cfg.get("in_channels")):
        raise ValueError(f"--resume: {out} has {cfg.get('in_channels')} input channels, the model "
                         f"to train {model.in_channels}")
    model.load_state_dict(loaded.state_dict())
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"])


def make_bar(total: int, initial: int, desc: str, disable: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="step", disable=disable,
                dynamic_ncols=True, mininterval=2.0)


def module_main(kind: str, doc: str, add_arguments, run, argv=None) -> int:
    """``python -m dashnet_ros.train.<kind>``: the options of ``dashnet train <kind>``
    (handy under torchrun); a :class:`~dashnet_ros.cli.UserError` is one line and exit 2."""
    import argparse
    import sys

    from ..cli import UserError

    p = argparse.ArgumentParser(prog=f"python -m dashnet_ros.train.{kind}", description=doc.split("\n\n")[0])
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        return run(args)
    except UserError as e:
        print(f"dashnet train {kind}: error: {e}", file=sys.stderr)
        return 2
