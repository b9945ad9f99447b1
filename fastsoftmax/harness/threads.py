"""Thread limits for a benchmark row: ours, BLAS/OpenMP's and PyTorch's, together.

Design note
-----------
A row measured "with n threads" must have every pool it can reach held to
n, or the comparison is not side by side.  threadpoolctl handles BLAS and
OpenMP; our backends take :func:`fastsoftmax.threads`; PyTorch has its own
knob.
"""

from __future__ import annotations

import contextlib
import sys

from ..backends._threads import threads as fs_threads

__all__ = ["limit_threads"]


@contextlib.contextmanager
def limit_threads(n):
    """Limit every thread pool we can reach to ``n`` threads inside the block.

    Our compiled backends (:func:`fastsoftmax.threads`), BLAS and OpenMP
    pools loaded so far (threadpoolctl), and PyTorch's intra-op pool if it is
    imported.  Rows that load a library later set their own count in setup.
    """
    from threadpoolctl import threadpool_limits

    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    with fs_threads(n), threadpool_limits(limits=n):
        if torch is not None:
            torch.set_num_threads(n)
        try:
            yield
        finally:
            if torch is not None:
                torch.set_num_threads(before)
