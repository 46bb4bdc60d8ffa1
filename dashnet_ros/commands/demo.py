"""``dashnet demo``: the main job on the embedded default (the procedural predator-prey world).

Runs the DAVIS simulator on the world and writes, under ``--out``:
``davis.mp4`` (APS frames with the events of each video frame's interval drawn over them
and the ground-truth box) and ``stats.json`` (event counts and rates, APS frames,
simulation speed).
"""
from __future__ import annotations

import json
import os
import time

import numpy as np

from ..cli import UserError


def simulate_to_video(sim, out_dir: str, duration_s: float, video_fps: float = 60.0, progress=None) -> dict:
    """Run ``sim`` for ``duration_s`` of sensor time, write the overlay video, return stats."""
    from ..davis.frames import ApsFrame, EventBatch
    from ..events import concat_events
    from ..viz import VideoWriter, overlay

    end_us = int(duration_s * 1e6)
    frame_us = int(round(1e6 / video_fps))
    n_ev = n_on = n_aps = n_packets = 0
    pending, aps, next_video_us = [], None, frame_us
    wall0 = time.perf_counter()
    with VideoWriter(os.path.join(out_dir, "davis.mp4"), video_fps) as video:
        for item in sim.stream():
            if isinstance(item, EventBatch):
                if item.t0_us >= end_us:
                    break
                n_packets += 1
                n_ev += len(item.events)
                n_on += int(np.count_nonzero(item.events["p"] > 0))
                pending.append(item.events)
                while item.t1_us >= next_video_us and aps is not None:
                    ev = concat_events(pending)
                    pending = []
                    gt = sim.gt_at(next_video_us)
                    video.write(overlay(aps.image, ev, {"gt": gt} if gt is not None else None,
                                        text=f"t={next_video_us / 1e6:.3f}s  {len(ev)} ev"))
                    next_video_us += frame_us
                if progress:
                    progress(min(item.t1_us, end_us), end_us)
            elif isinstance(item, ApsFrame):
                if item.t_us >= end_us:
                    break
                aps = item
                n_aps += 1
    wall_s = time.perf_counter() - wall0
    return {
        "duration_s": duration_s,
        "width": sim.width,
        "height": sim.height,
        "events": n_ev,
        "events_on": n_on,
        "events_off": n_ev - n_on,
        "event_rate_per_s": n_ev / duration_s,
        "event_packets": n_packets,
        "mean_events_per_packet": n_ev / max(n_packets, 1),
        "aps_frames": n_aps,
        "video_frames": video.frames,
        "wall_s": wall_s,
        "realtime_factor": duration_s / wall_s if wall_s > 0 else None,
    }


def run(args) -> int:
    from tqdm import tqdm

    from ..davis.sources import open_source
    from ..davis.stream import DavisSimulator

    if args.duration_s <= 0:
        raise UserError(f"--duration-s must be > 0, got {args.duration_s}")
    os.makedirs(args.out, exist_ok=True)
    source = open_source("world", seed=args.seed)
    sim = DavisSimulator(source, interp_factor=args.interp_factor, dvs_model=args.dvs_model, seed=args.seed)
    with tqdm(total=int(args.duration_s * 1e6), unit="us", desc="simulating", leave=False) as bar:
        def progress(done, total):
            bar.update(done - bar.n)  # tqdm throttles the redraws itself

        stats = simulate_to_video(sim, args.out, args.duration_s, progress=progress)
    stats.update(source="world", seed=args.seed, interp_factor=args.interp_factor, dvs_model=args.dvs_model)
    tmp = os.path.join(args.out, "stats.json.partial")
    with open(tmp, "w") as f:
        json.dump(stats, f, indent=2)
    os.replace(tmp, os.path.join(args.out, "stats.json"))
    print(f"{stats['events']} events ({stats['event_rate_per_s'] / 1e6:.2f} Mev/s), "
          f"{stats['aps_frames']} APS frames in {args.duration_s} s of sensor time; "
          f"simulated at {stats['realtime_factor']:.2f}x real time")
    print(f"wrote {os.path.join(args.out, 'davis.mp4')} and stats.json")
    return 0


def add_parser(sub):
    p = sub.add_parser("demo", help="run the main job on the procedural predator-prey world",
                       description=__doc__)
    p.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    p.add_argument("--duration-s", type=float, default=3.0, help="sensor time to simulate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--interp-factor", type=int, default=7, choices=[0, 1, 3, 7])
    p.add_argument("--dvs-model", default="pixel", choices=["pixel", "paper"])
    p.set_defaults(func=run)
