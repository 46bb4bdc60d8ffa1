"""The machine description every benchmark stores beside its numbers."""
from __future__ import annotations

import os
import platform


def machine(**extra) -> dict:
    """CPU model, cores usable, Python / numpy / torch versions, platform, 1-minute load
    average (``load_avg_1min``, at the call); ``extra`` entries are added."""
    import numpy as np
    import torch

    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu_model": cpu,
        "cpu_cores": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "platform": platform.platform(),
        "load_avg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        **extra,
    }
