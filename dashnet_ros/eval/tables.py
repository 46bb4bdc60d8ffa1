"""The paper's Tables 2, 3 and 4 regenerated on our data (Markdown + JSON each).

- Table 2 (ablation): SNN-origin, SNN-hybrid, ANN-NAT, ANN-AT, ANN-AT with zero-order
  hold, Hybrid-AT: mIOU, success AUC and Rb, mean ± std over sequences.
- Table 3: our hybrid against the OpenCV trackers on the 30 Hz APS frames (zero-order
  hold) and on every 240 fps source frame (a frame-camera reference), success AUC and
  speed on this CPU.
- Table 4: #Add and #Mul per inference counted on real inputs (:mod:`.ops`), speed on this
  CPU, the ops-based energy estimate, and the AUC on our held-out set.
"""
from __future__ import annotations

import json
import os
from typing import Dict, Optional

TABLE2_ROWS = (("SNN-origin", "snn-origin"), ("SNN-hybrid", "snn-hybrid"), ("ANN-NAT", "ann-nat"),
               ("ANN-AT", "ann-at"), ("ANN-AT (zero-order hold)", "ann-at-zoh"), ("Hybrid-AT", "hybrid"))


def _pm(s: dict, k: str) -> str:
    v, sd = s.get(k, float("nan")), s.get(k + "_std", float("nan"))
    return f"{v:.3f} ± {sd:.3f}"


def table2(summary: Dict[str, dict]) -> tuple[str, dict]:
    rows = [(label, summary[key]) for label, key in TABLE2_ROWS if key in summary]
    md = ["| metric | " + " | ".join(label for label, _ in rows) + " |", "|---|" + "---|" * len(rows)]
    for k, name in (("miou", "mIOU"), ("auc", "success AUC"), ("robustness", "Rb (failure rate, lower is better)")):
        md.append(f"| {name} | " + " | ".join(_pm(s, k) for _, s in rows) + " |")
    data = {label: {k: s.get(k) for k in ("miou", "miou_std", "auc", "auc_std", "robustness", "robustness_std",
                                          "n_sequences")} for label, s in rows}
    return "\n".join(md) + "\n", data


def table3(summary: Dict[str, dict]) -> tuple[str, dict]:
    names = ["hybrid"] + sorted(n for n in summary if "@" in n)
    md = ["| tracker | input | success AUC | mIOU | speed (outputs per wall second, this CPU) |", "|---|---|---|---|---|"]
    data = {}
    for n in names:
        if n not in summary:
            continue
        s = summary[n]
        if n == "hybrid":
            label, inp, speed = "DashNet (hybrid, ours)", "APS 30 Hz + events", s.get("updates_per_s")
        else:
            name, regime = n.split("@")
            label = name
            inp = "APS 30 Hz, zero-order hold" if regime == "aps" else "every 240 fps frame"
            speed = s.get("updates_per_s")
        speed_txt = f"{speed:.1f}" if speed is not None and speed == speed else "n/a"
        md.append(f"| {label} | {inp} | {_pm(s, 'auc')} | {_pm(s, 'miou')} | {speed_txt} |")
        data[n] = {"label": label, "input": inp, "auc": s.get("auc"), "auc_std": s.get("auc_std"),
                   "miou": s.get("miou"), "speed": speed}
    return "\n".join(md) + "\n", data


def table4(ops: Dict[str, dict], fps: Dict[str, float], summary: Optional[Dict[str, dict]] = None) -> tuple[str, dict]:
    auc_key = {"ann": "ann-at", "snn": "snn-hybrid", "dashnet": "hybrid"}
    md = ["| model | #Add (10^6) | #Mul (10^6) | dense MACs (10^6) | speed (FPS, this CPU) | "
          "energy / inference (µJ, 45 nm compute) | FPS/W (compute) | success AUC (held-out) |",
          "|---|---|---|---|---|---|---|---|"]
    data = {}
    for key, label in (("ann", "ANN"), ("snn", "SNN"), ("dashnet", "DashNet")):
        o = ops[key]
        f = fps.get(key, float("nan"))
        e = o["energy_uj"]
        fpw = 1.0 / (e * 1e-6) if e > 0 else float("nan")  # inferences per joule = FPS per W
        auc = (summary or {}).get(auc_key[key], {}).get("auc", float("nan"))
        md.append(f"| {label} | {o['adds'] / 1e6:.3f} | {o['muls'] / 1e6:.3f} | {o['dense_macs'] / 1e6:.3f} | "
                  f"{f:.1f} | {e:.3f} | {fpw:.3g} | {auc:.3f} |")
        data[label] = dict(o, fps=f, fps_per_w_compute=fpw, auc=auc)
    md.append("")
    md.append("Counts per inference (SNN: one 480 µs window; ANN: one APS frame; DashNet: one fused output, "
              "i.e. one SNN window plus the ANN's share at 30 Hz), from real activations and spikes on the "
              "held-out clips; energy = #Add x 0.9 pJ + #Mul x 3.7 pJ (32-bit float, 45 nm), memory traffic "
              "not included.")
    return "\n".join(md) + "\n", data


def write_table(out_dir: str, name: str, md: str, data: dict, header: str = "") -> None:
    os.makedirs(out_dir, exist_ok=True)
    for ext, text in (("md", (header + "\n\n" if header else "") + md), ("json", json.dumps(data, indent=2, default=float))):
        path = os.path.join(out_dir, f"{name}.{ext}")
        with open(path + ".partial", "w") as f:
            f.write(text)
        os.replace(path + ".partial", path)
