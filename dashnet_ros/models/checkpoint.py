"""Model files: weights + the config needed to rebuild and check them.

Two forms, both loaded by :func:`load_checkpoint`:

* checkpoint (``torch.save`` of ``{"format", "config", "state_dict"}``), written by
  :func:`save_checkpoint`;
* TorchScript (``torch.jit.save`` with the config as the extra file
  ``dashnet_config.json``), written by :func:`export_torchscript`; runs without this
  package's model code.  A scripted SNN comes back wrapped in
  :class:`ScriptedSpikingTracker` so it streams like :class:`SpikingTracker`.

The config holds: ``kind`` (snn/ann), ``arch``, ``in_hw``, ``in_channels``, ``padding``,
the LIF parameters and ``dt_s`` / ``steps_per_window`` (SNN) or ``attention`` (ANN), plus
``preset`` (a preset name is stored with its fields), ``data_recipe``, ``seed``, ``code_version``.  Loading a
missing, truncated or foreign file, or one whose kind / architecture / input size differs
from what the caller asks for, raises an error naming the file and the mismatch.
Files are written to a temporary name and renamed, so a crash never leaves half a file.
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings
import zipfile
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from .. import __version__
from .ann import PRESETS as ANN_PRESETS
from .ann import FrameTracker
from .snn import PRESETS as SNN_PRESETS
from .snn import ScriptedSpikingTracker, SpikingTracker, script_module

FORMAT = "dashnet_ros.model/1"
_EXTRA = "dashnet_config.json"


def _atomic_write(path: str, write) -> None:
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=d)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def model_config(model: nn.Module, preset: Optional[Any] = None, data_recipe: Optional[dict] = None, seed: Optional[int] = None) -> Dict[str, Any]:
    """The config stored with ``model`` (see module doc)."""
    if not hasattr(model, "config"):
        raise TypeError(f"{type(model).__name__} is not a dashnet tracker model (no config())")
    cfg = dict(model.config())
    if isinstance(preset, str):
        table = SNN_PRESETS if cfg.get("kind") == "snn" else ANN_PRESETS
        if preset not in table:
            raise ValueError(f"unknown {cfg.get('kind')} preset {preset!r}; choose one of {sorted(table)}")
        preset = dict(name=preset, **table[preset].to_dict())
    elif preset is not None and not isinstance(preset, dict):
        preset = preset.to_dict()
    cfg.update(preset=preset, data_recipe=data_recipe, seed=seed, code_version=__version__)
    return cfg


def build_model(config: Dict[str, Any]) -> nn.Module:
    """A freshly initialised model for a stored ``config``."""
    kind = config.get("kind")
    if kind == "snn":
        keys = ("arch", "in_hw", "in_channels", "dt_s", "tau_s", "v_th", "u_rest", "surrogate_width",
                "steps_per_window", "padding", "nan_when_silent")
        return SpikingTracker(**{k: config[k] for k in keys if k in config})
    if kind == "ann":
        return FrameTracker(**{k: config[k] for k in ("arch", "in_hw", "attention", "padding", "templates") if k in config})
    raise ValueError(f"unknown model kind {kind!r} (expected 'snn' or 'ann')")


def save_checkpoint(path, model: nn.Module, preset=None, data_recipe: Optional[dict] = None, seed: Optional[int] = None) -> Dict[str, Any]:
    """Write ``model``'s weights and config to ``path``; returns the config."""
    cfg = model_config(model, preset, data_recipe, seed)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "config": cfg, "state_dict": state}
    _atomic_write(path, lambda tmp: torch.save(payload, tmp))
    return cfg


def export_torchscript(model: nn.Module, path, preset=None, data_recipe: Optional[dict] = None, seed: Optional[int] = None) -> Dict[str, Any]:
    """Script ``model`` (``torch.jit.script``, eval mode) and save it with its config."""
    cfg = model_config(model, preset, data_recipe, seed)
    cfg["format"] = FORMAT
    sm = script_module(model)
    extra = {_EXTRA: json.dumps(cfg)}

    def write(tmp):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.save(sm, tmp, _extra_files=extra)

    _atomic_write(path, write)
    return cfg


def _check(path: str, cfg: Dict[str, Any], kind, arch, in_hw) -> None:
    if kind is not None and cfg.get("kind") != kind:
        raise ValueError(f"{path}: holds a {cfg.get('kind')!r} model, but a {kind!r} model was requested")
    if arch is not None and cfg.get("arch") != arch:
        raise ValueError(f"{path}: architecture mismatch: file has {cfg.get('arch')!r}, requested {arch!r}")
    if in_hw is not None and list(cfg.get("in_hw", [])) != [int(v) for v in in_hw]:
        raise ValueError(
            f"{path}: input size mismatch: file has {cfg.get('in_hw')} (HxW), requested {[int(v) for v in in_hw]}"
        )


def _is_torchscript(path: str) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError) as e:
        raise ValueError(f"{path}: not a readable model file (truncated or corrupt?): {e}") from None
    return any(n.endswith("/" + _EXTRA) or n.endswith("constants.pkl") for n in names) and any(
        "/code/" in n for n in names
    )


def load_checkpoint(
    path,
    kind: Optional[str] = None,
    arch: Optional[str] = None,
    in_hw: Optional[Sequence[int]] = None,
    map_location: str = "cpu",
) -> Tuple[nn.Module, Dict[str, Any]]:
    """Load either form; returns ``(model in eval mode, config)``.

    ``kind`` / ``arch`` / ``in_hw``: what the caller needs (None = accept any); a file
    that differs is refused.  A TorchScript SNN is returned as a
    :class:`ScriptedSpikingTracker`, a TorchScript ANN as the ScriptModule itself.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file {path} does not exist (train one or give the right path)")
    if _is_torchscript(path):
        extra = {_EXTRA: ""}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                sm = torch.jit.load(path, map_location=map_location, _extra_files=extra)
            cfg = json.loads(extra[_EXTRA])
        except Exception as e:  # noqa: BLE001 - torch raises assorted types on bad archives
            raise ValueError(f"{path}: cannot read TorchScript model (truncated or corrupt?): {e}") from None
        if not cfg:
            raise ValueError(f"{path}: TorchScript file without a dashnet config; export it with export_torchscript")
        _check(path, cfg, kind, arch, in_hw)
        sm.eval()
        model = ScriptedSpikingTracker(sm, cfg) if cfg.get("kind") == "snn" else sm
        return model, cfg
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{path}: cannot read model checkpoint (truncated or corrupt?): {e}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not a dashnet model checkpoint (expected format {FORMAT!r})")
    cfg = payload["config"]
    _check(path, cfg, kind, arch, in_hw)
    model = build_model(cfg)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not fit the stored architecture {cfg.get('arch')!r}: {e}") from None
    model.eval()
    return model, cfg
