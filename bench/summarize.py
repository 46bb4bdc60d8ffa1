#!/usr/bin/env python3
"""Summarise ``out/bench/*.json`` (written by the other bench scripts) as one Markdown table
per benchmark: ``out/bench/summary.md`` (the README's benchmark section is pasted from it)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "out" / "bench"


def _machine(m: dict) -> str:
    cpu = m.get("cpu", m.get("cpu_model", "?"))
    cores = m.get("cores", m.get("cpu_cores", "?"))
    load = m.get("load_avg_1min", m.get("load_avg_1min_at_end", "?"))
    load = f"{load:.1f}" if isinstance(load, float) else load
    return f"{cpu}, {cores} cores, torch threads {m.get('torch_threads', '?')}, load average {load}"


def simulator(d: dict) -> list:
    lines = [f"Simulator ({_machine(d.get('machine', {}))}):", "",
             "| run | source frames/s | events/s | × real time (wall) | × real time (CPU) |", "|---|---:|---:|---:|---:|"]
    for r in d.get("results", []):
        lines.append(f"| {r['name']} | {r.get('source_frames_per_s', float('nan')):.0f} | "
                     f"{r.get('events_per_s', float('nan')):,.0f} | {r.get('real_time_factor', float('nan')):.2f} | "
                     f"{r.get('real_time_factor_cpu', float('nan')):.2f} |")
    lines += ["", "Checks: " + ", ".join(f"{k} = {v}" for k, v in d.get("checks", {}).items()), ""]
    return lines


def trackers(d: dict) -> list:
    lines = [f"Trackers ({_machine(d.get('machine', {}))}):", "", "| what | rate (/s) | notes |", "|---|---:|---|"]
    for k, v in d.items():
        if not isinstance(v, dict) or k in ("machine", "clip", "targets"):
            continue
        rate = v.get("outputs_per_s") or v.get("frames_per_s") or v.get("fused_outputs_per_s")
        notes = ", ".join(f"{kk}={vv:.3g}" if isinstance(vv, float) else f"{kk}={vv}" for kk, vv in v.items()
                          if kk not in ("outputs_per_s", "frames_per_s", "fused_outputs_per_s"))
        lines.append(f"| {k} | {rate:.1f} | {notes} |")
    lines += ["", "Targets: " + ", ".join(f"{k} = {v}" for k, v in d.get("targets", {}).items()), ""]
    return lines


def graph(name: str, d: dict) -> list:
    m = d.get("machine", {})
    load = (m.get("load_avg_1min_at_start"), m.get("load_avg_1min_at_end"))
    lines = [f"Graph `{name}`: {d.get('label') or 'defaults'} ({m.get('cpu_model', '?')}, {m.get('cpu_cores', '?')} "
             f"cores, load average {load[0]:.1f} -> {load[1]:.1f}; clip {d['clip']['events_per_s'] / 1e6:.2f} M events/s, "
             f"{d.get('packet_us')} µs packets, windows per call {d.get('windows_per_call') or 1}):", "",
             "| × real time | fused boxes/s | latency p50 / p99 ms | packets lost | keeps up | CPU cores per node |",
             "|---:|---:|---:|---:|---|---|"]
    for r in d.get("runs", []):
        cpu = ", ".join(f"{k} {v:.2f}" for k, v in r.get("cpu_cores", {}).items())
        lost = r.get("snn_packets_lost")
        lines.append(f"| {r['realtime_factor']:.2f} | {r['fused_boxes_per_s']:.0f} | {r['latency_ms_p50']:.1f} / "
                     f"{r['latency_ms_p99']:.1f} | {'?' if lost is None else lost} | {r.get('keeps_up')} | {cpu} |")
    peer = d.get("peer")
    if peer:
        lines += ["", f"Peer (no ROS, same clip): {peer['fused_per_wall_s']:.0f} fused boxes per wall s, "
                      f"{peer['cpu_us_per_fused_box']:.0f} µs CPU per box."]
    return lines + [""]


def generic(name: str, d: dict) -> list:
    return [f"{name}:", "", "```", json.dumps(d, indent=1, default=str)[:3000], "```", ""]


def main() -> int:
    if not OUT.is_dir():
        print(f"no benchmark results in {OUT}: run `make bench` first", file=sys.stderr)
        return 1
    lines = ["# Benchmark summary", ""]
    for path in sorted(OUT.glob("*.json")):
        d = json.loads(path.read_text())
        if path.stem == "simulator":
            lines += simulator(d)
        elif path.stem == "trackers":
            lines += trackers(d)
        elif path.stem.startswith("graph") and "runs" in d:
            lines += graph(path.stem, d)
        elif "summary_markdown" in d:
            lines += [d["summary_markdown"], ""]
        else:
            lines += generic(path.stem, d)
    (OUT / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
