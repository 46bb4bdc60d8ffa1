"""``dashnet dataset build|info``: hybrid (DAVIS) dataset files, one HDF5 file per sequence.

``dashnet dataset build INPUT... --out DIR`` simulates every input sequence through the
DAVIS simulator (paper §3.4: FCN interpolation, eq. 13; DVS model, eq. 14; APS frames) and
writes ``DIR/<name>.h5`` (layout: :mod:`dashnet_ros.io.dataset`).  An INPUT is

* an NFS-layout sequence directory (``SEQ/240/SEQ.txt`` + frames) -> ``<SEQ>.h5``,
* a directory holding several such sequences (each one is built),
* ``scenes:SEED`` or ``scenes:A-B`` (inclusive): procedural sequences of ``--frames``
  frames at ``--fps`` -> ``scenes_<SEED>.h5`` (seeds 0-999 are held-out test seeds),
* ``world`` or ``world:SEED``: the predator-prey world for ``--duration-s`` ->
  ``world_<SEED>.h5``.

Files already complete with the same settings are skipped; unfinished ones
(``<name>.h5.partial``) are resumed; a sequence that fails is reported and the others are
still built; the exit code is 1 if any failed.

``dashnet dataset info FILE...`` prints a summary (duration, events, event rate, APS frames,
ground-truth coverage).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import sys
from dataclasses import dataclass
from typing import Callable, List, Optional

from ..cli import UserError

log = logging.getLogger("dashnet_ros.dataset")


@dataclass
class SequenceInput:
    """One sequence to build: ``open()`` returns its FrameSource (errors there are the
    sequence's failure, not the command's)."""

    name: str
    desc: str
    open: Optional[Callable] = None
    error: Optional[str] = None   # set when the input could not even be resolved


# ----------------------------------------------------------------------------- inputs


def _is_nfs_sequence(d: str) -> bool:
    return os.path.isdir(os.path.join(d, "240"))


def _nfs_input(seq_dir: str) -> SequenceInput:
    seq_dir = os.path.abspath(seq_dir)
    name = os.path.basename(os.path.normpath(seq_dir))

    def open_nfs():
        from ..davis.sources import NFSSequence

        return NFSSequence(seq_dir)

    return SequenceInput(name=name, desc=f"nfs:{seq_dir}", open=open_nfs)


def _scene_input(seed: int, args) -> SequenceInput:
    def open_scene():
        from ..davis.sources import open_source

        return open_source(f"scenes:{seed}", n_frames=args.frames, width=args.width,
                           height=args.height, fps=args.fps)

    return SequenceInput(name=f"scenes_{seed:04d}", desc=f"scenes:{seed} ({args.frames} frames)",
                         open=open_scene)


def _world_input(seed: int, args) -> SequenceInput:
    def open_world():
        from ..davis.sources import open_source

        return open_source(f"world:{seed}", duration_s=args.duration_s, width=args.width,
                           height=args.height, fps=args.fps)

    return SequenceInput(name=f"world_{seed:04d}",
                         desc=f"world:{seed} ({args.duration_s:g} s, pursuit)", open=open_world)


def _seed_range(text: str, spec: str) -> List[int]:
    m = re.fullmatch(r"(\d+)(?:-(\d+))?", text)
    if not m:
        raise ValueError(f"{spec!r}: expected SEED or A-B (non-negative integers)")
    a = int(m.group(1))
    b = int(m.group(2)) if m.group(2) is not None else a
    if b < a:
        raise ValueError(f"{spec!r}: the range end {b} is below its start {a}")
    return list(range(a, b + 1))


def expand_inputs(inputs: List[str], args) -> List[SequenceInput]:
    """Resolve the INPUT arguments into sequences (a bad input becomes one failed entry)."""
    out: List[SequenceInput] = []
    for spec in inputs:
        try:
            if spec.startswith("scenes:"):
                out.extend(_scene_input(s, args) for s in _seed_range(spec[7:], spec))
            elif spec == "world" or spec.startswith("world:"):
                seeds = [args.seed] if spec == "world" else _seed_range(spec[6:], spec)
                if args.duration_s is None:
                    raise ValueError(f"{spec!r}: the world is endless, give --duration-s")
                out.extend(_world_input(s, args) for s in seeds)
            elif os.path.isdir(spec):
                if _is_nfs_sequence(spec):
                    out.append(_nfs_input(spec))
                else:
                    subs = sorted(d for d in (os.path.join(spec, e) for e in os.listdir(spec))
                                  if os.path.isdir(d) and _is_nfs_sequence(d))
                    if not subs:
                        raise ValueError(f"{spec} is neither an NFS sequence (no 240/ folder) "
                                         f"nor a folder of NFS sequences")
                    out.extend(_nfs_input(d) for d in subs)
            elif os.path.exists(spec):
                raise ValueError(f"{spec} is a file; expected an NFS sequence directory, "
                                 f"scenes:SEED[-SEED] or world")
            else:
                raise FileNotFoundError(f"{spec}: no such directory (expected an NFS sequence "
                                        f"directory, scenes:SEED[-SEED] or world)")
        except (ValueError, OSError) as e:
            out.append(SequenceInput(name=spec, desc=spec, error=str(e)))
    return out


# ----------------------------------------------------------------------------- simulator


def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for blk in iter(lambda: fh.read(1 << 20), b""):
            h.update(blk)
    return h.hexdigest()[:16]


def make_interpolator(args):
    """``(interpolator, description)`` for ``--interpolator`` (loaded once for all sequences)."""
    from ..davis.stream import linear_blend

    if args.interp_factor == 0:
        return None, {"interpolator": "none"}
    choice = args.interpolator
    if choice == "linear":
        return linear_blend, {"interpolator": "linear"}
    from ..davis import interpolation

    path = interpolation.DEFAULT_WEIGHTS if choice == "fcn" else choice
    if choice != "fcn" and not os.path.isfile(path):
        raise UserError(f"--interpolator {choice}: no such weights file (use fcn, linear or a "
                        f"checkpoint path)")
    try:
        interp = interpolation.load_default_interpolator(None if choice == "fcn" else path)
    except Exception as e:  # noqa: BLE001 - missing/untrained weights: say so, fall back or stop
        if choice != "fcn":
            raise UserError(f"--interpolator {path}: cannot load it: {e}") from None
        log.warning("could not load the FCN interpolator (%s); using a linear blend "
                    "(pass --interpolator linear to silence this)", e)
        return linear_blend, {"interpolator": "linear"}
    return interp, {"interpolator": "fcn", "weights_sha256": _file_digest(os.fspath(path))}


def make_simulator(source, args, interpolator):
    """The DAVIS simulator for one sequence from the command's options."""
    from ..davis.stream import DavisSimulator

    params = None
    if args.threshold is not None:
        params = ({"threshold": args.threshold} if args.dvs_model == "paper"
                  else {"threshold_on": args.threshold, "threshold_off": args.threshold})
    return DavisSimulator(source, width=args.width, height=args.height,
                          interp_factor=args.interp_factor, interpolator=interpolator,
                          dvs_model=args.dvs_model, dvs_params=params,
                          aps_rate_hz=args.aps_rate_hz, batch_us=args.batch_us, seed=args.seed)


# ----------------------------------------------------------------------------- build


def _existing_state(path: str, config_json: str) -> Optional[str]:
    """None if ``path`` is absent; "complete" if it is a complete file with this config;
    otherwise an error message."""
    from ..io.dataset import HybridDataset

    if not os.path.exists(path):
        return None
    try:
        with HybridDataset(path) as ds:
            same = ds.config_json == config_json
    except (ValueError, OSError) as e:
        return f"{e} (or pass --overwrite)"
    if same:
        return "complete"
    return (f"{path} exists with other settings; pass --overwrite to rebuild it or choose "
            f"another --out")


def run_build(args) -> int:
    from tqdm import tqdm

    from ..io.dataset import dataset_config_json, write_dataset

    if args.frames < 2:
        raise UserError(f"--frames must be >= 2, got {args.frames}")
    if not args.fps > 0:
        raise UserError(f"--fps must be > 0, got {args.fps}")
    if args.duration_s is not None and not args.duration_s > 0:
        raise UserError(f"--duration-s must be > 0, got {args.duration_s}")
    if args.width < 16 or args.height < 16:
        raise UserError(f"--width/--height must be >= 16, got {args.width}x{args.height}")
    os.makedirs(args.out, exist_ok=True)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="dashnet dataset: %(message)s")

    seqs = expand_inputs(args.inputs, args)
    interpolator, interp_desc = make_interpolator(args)
    built, skipped, failed = [], [], []
    names = set()
    quiet = args.quiet
    bar = tqdm(total=len(seqs), desc="sequences", unit="seq", position=0, disable=quiet,
               file=sys.stderr)

    def say(msg):
        if quiet:
            print(msg, file=sys.stderr)
        else:
            bar.write(msg, file=sys.stderr)

    try:
        for seq in seqs:
            bar.set_postfix_str(seq.name)
            try:
                if seq.error:
                    raise ValueError(seq.error)
                if seq.name in names:
                    raise ValueError(f"another input already produces {seq.name}.h5")
                names.add(seq.name)
                path = os.path.join(args.out, seq.name + ".h5")
                source = seq.open()
                sim = make_simulator(source, args, interpolator)
                extra = dict(interp_desc)
                config_json = dataset_config_json(sim, source_desc=seq.desc,
                                                  gt_fine_factor=args.gt_fine_factor, extra=extra)
                state = None if args.overwrite else _existing_state(path, config_json)
                if state == "complete":
                    skipped.append(seq.name)
                    say(f"{seq.name}: {path} is complete, skipped")
                    continue
                if state is not None:
                    raise ValueError(state)
                with tqdm(desc=seq.name, unit="frame", position=1, leave=False, disable=quiet,
                          file=sys.stderr) as fbar:
                    res = write_dataset(path, sim, progress=fbar, resume=not args.no_resume,
                                        source_desc=seq.desc, gt_fine_factor=args.gt_fine_factor,
                                        extra_config=extra)
                how = (f"resumed at {res.resumed_from_us / 1e6:.3f} s"
                       if res.resumed_from_us is not None else "built")
                dur = (res.t1_us - res.t0_us) / 1e6
                say(f"{seq.name}: {how} {path}: {dur:.3f} s, {res.n_events} events, "
                    f"{res.n_aps} APS frames")
                built.append(seq.name)
            except Exception as e:  # noqa: BLE001 - report, go on with the others
                failed.append((seq.name, f"{type(e).__name__}: {e}"))
                say(f"{seq.name}: FAILED: {type(e).__name__}: {e}")
            finally:
                bar.update(1)
    finally:
        bar.close()
    print(f"dashnet dataset build: {len(built)} built, {len(skipped)} already complete, "
          f"{len(failed)} failed (output in {args.out})", file=sys.stderr)
    for name, msg in failed:
        print(f"  failed: {name}: {msg}", file=sys.stderr)
    return 1 if failed else 0


# ----------------------------------------------------------------------------- info


def format_summary(s: dict) -> str:
    gt = (f"{s['n_gt']} boxes at the source frames, {100 * s['gt_valid_fraction']:.1f}% with "
          f"the target, spanning {s['gt_span_s']:.3f} s ({100 * s['gt_time_coverage']:.1f}% of "
          f"the stream)")
    if s["n_gt_fine"]:
        gt += f"; {s['n_gt_fine']} oversampled"
    lines = [
        f"{s['path']}",
        f"  source        {s['source']} ({s['source_fps']:g} fps), scale_xy "
        f"{s['scale_xy'][0]:.4g} x {s['scale_xy'][-1]:.4g}",
        f"  sensor        {s['size']}, interp x{s['interp_factor']}, DVS {s['dvs_model']} "
        f"{s['dvs_params']}, seed {s['seed']}",
        f"  duration      {s['duration_s']:.3f} s ({s['t0_us']} .. {s['t1_us']} us)",
        f"  events        {s['n_events']} ({s['event_rate_hz'] / 1e6:.3f} Mev/s)",
        f"  APS frames    {s['n_aps']} ({s['aps_rate_hz']:.1f} Hz)",
        f"  ground truth  {gt}",
        f"  file          {s['file_bytes'] / 1e6:.2f} MB, {s['code_version']}",
    ]
    return "\n".join(lines)


def run_info(args) -> int:
    from ..io.dataset import dataset_summary

    rc = 0
    for path in args.files:
        try:
            s = dataset_summary(path)
        except (ValueError, OSError) as e:
            if len(args.files) == 1:
                raise UserError(str(e)) from None
            print(f"dashnet dataset info: error: {e}", file=sys.stderr)
            rc = 2
            continue
        if args.json:
            print(json.dumps({k: (v if not hasattr(v, "item") else v.item()) for k, v in s.items()}))
        else:
            print(format_summary(s))
    return rc


# ----------------------------------------------------------------------------- parser


def add_parser(sub):
    p = sub.add_parser("dataset", help="build / inspect hybrid (DAVIS) dataset files",
                       description=__doc__.split("\n\n")[0])
    dsub = p.add_subparsers(dest="dataset_command", required=True, metavar="ACTION")

    b = dsub.add_parser("build", help="simulate sequences into DIR/<name>.h5",
                        description=__doc__.split("``dashnet dataset info")[0],
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="NFS sequence dir, folder of NFS sequences, scenes:SEED, scenes:A-B, "
                        "world or world:SEED")
    b.add_argument("--out", required=True, metavar="DIR", help="output directory")
    b.add_argument("--interp-factor", type=int, default=7, choices=[0, 1, 3, 7],
                   help="interpolated frames per source interval (eq. 13; default 7)")
    b.add_argument("--interpolator", default="fcn", metavar="fcn|linear|PATH",
                   help="frame interpolator: the shipped FCN (default; falls back to linear "
                        "with a warning if it cannot be loaded), a linear blend, or FCN weights")
    b.add_argument("--dvs-model", default="pixel", choices=["pixel", "paper"],
                   help="event model: per-pixel (default) or the paper's eq. 14")
    b.add_argument("--threshold", type=float, default=None,
                   help="contrast threshold (default: the model's)")
    b.add_argument("--aps-rate-hz", type=float, default=30.0, help="APS frame rate (default 30)")
    b.add_argument("--width", type=int, default=240, help="sensor width (default 240)")
    b.add_argument("--height", type=int, default=180, help="sensor height (default 180)")
    b.add_argument("--batch-us", type=int, default=1000, help="event batch length (default 1000)")
    b.add_argument("--seed", type=int, default=0, help="simulator seed (and world seed for 'world')")
    b.add_argument("--frames", type=int, default=240,
                   help="frames per procedural scenes:SEED sequence (default 240)")
    b.add_argument("--fps", type=float, default=240.0,
                   help="frame rate of scenes/world sources (default 240, like NFS)")
    b.add_argument("--duration-s", type=float, default=None, help="length of 'world' sequences")
    b.add_argument("--gt-fine-factor", type=int, default=8,
                   help="also store ground truth at this multiple of the frame rate (0: off)")
    b.add_argument("--overwrite", action="store_true",
                   help="rebuild files that exist (complete, with other settings, or damaged)")
    b.add_argument("--no-resume", action="store_true",
                   help="start unfinished (.partial) files over instead of resuming them")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    b.set_defaults(func=run_build)

    i = dsub.add_parser("info", help="summarise dataset files")
    i.add_argument("files", nargs="+", metavar="FILE")
    i.add_argument("--json", action="store_true", help="one JSON object per file")
    i.set_defaults(func=run_info)
