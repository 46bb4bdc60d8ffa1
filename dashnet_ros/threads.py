"""Thread pools of one process: torch's intra-op threads and the BLAS behind numpy.

The SNN's numpy engine (:mod:`dashnet_ros.models.snn_engine`) multiplies small matrices
(one to a few windows, a few hundred outputs).  OpenBLAS splits such products over every
core and its threads then spin waiting for each other, for torch's threads and for the
DDS threads.  Measured here (2 cores): a 2x1024 @ 1024x256 product took 63 µs of wall and
128 µs of CPU with 2 BLAS threads; the offline hybrid pipeline with 8 windows per call
used 15-20 CPU-s instead of 3 for the same clip.  numpy's BLAS therefore always gets one
thread (no product in this package is large enough to gain from more); ``threads`` sets
torch's pool and OpenCV's (the ANN's template correlation, ``cv2.matchTemplate``, would
otherwise split over every core, so a tracker node set to one thread took both cores of
an onboard CPU for each APS frame, at the instant the SNN needs one).
"""
from __future__ import annotations

_limits = None


def set_threads(n: int) -> None:
    """Use ``n`` torch and OpenCV threads and one BLAS thread for numpy in this process.

    The BLAS limit needs ``threadpoolctl`` (in requirements.txt; it has no rosdep key, so
    on a ROS 2 install ``pip install threadpoolctl``); without it only torch's and OpenCV's pools are set
    (``OPENBLAS_NUM_THREADS=1`` in the environment does the same for numpy).
    """
    import torch

    global _limits
    torch.set_num_threads(max(1, int(n)))
    try:
        import cv2

        cv2.setNumThreads(max(1, int(n)))
    except ImportError:
        pass
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    _limits = threadpool_limits(limits=1, user_api="blas")   # kept: the limit lasts while referenced
