"""Success plots like the paper's Fig. 4 (OTB style: success rate against overlap threshold)."""
from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .metrics import THRESHOLDS  # noqa: E402


def success_plot(summary: dict, path: str, title: str = "Success plot") -> None:
    """One curve per tracker, AUC in the legend (sorted best first); written atomically."""
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    items = sorted(summary.items(), key=lambda kv: -np.nan_to_num(kv[1]["auc"], nan=-1))
    for name, s in items:
        ax.plot(THRESHOLDS, s["success_curve"], label=f"{name} [{s['auc']:.3f}]",
                lw=2.2 if name == "hybrid" else 1.3)
    ax.set_xlabel("Overlap threshold")
    ax.set_ylabel("Success rate")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".partial.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
