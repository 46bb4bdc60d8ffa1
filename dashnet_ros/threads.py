"""Thread pools of one process: torch's intra-op threads and the BLAS behind numpy.

The SNN's numpy engine (:mod:`dashnet_ros.models.snn_engine`) multiplies small matrices
(one window, a few hundred outputs): OpenBLAS splits those over every core and the
threads then wait on each other and on the DDS threads (measured here: a 2x1024 @
1024x256 product 63 µs of wall and 128 µs of CPU with 2 BLAS threads on 2 cores).  The
nodes' and commands' ``threads`` settings therefore bound both pools.
"""
from __future__ import annotations

_limits = None


def set_threads(n: int) -> None:
    """Use ``n`` threads for torch and for numpy's BLAS in this process."""
    import torch
    from threadpoolctl import threadpool_limits

    global _limits
    n = max(1, int(n))
    torch.set_num_threads(n)
    _limits = threadpool_limits(limits=n, user_api="blas")   # kept: the limit lasts while referenced
