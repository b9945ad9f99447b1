"""Timing calls side by side on a shared machine: warm blocks, rotated.

Design note
-----------
Two things make a call slower than the same call in a user's loop of
repeated calls, and both hit the multi-threaded rows hardest:

* OpenBLAS's workers spin for a while (about 0.1 s) after a BLAS call; on a
  machine with no spare core they take a core from the next row's threads.
* An idle pause does not cure that on a virtual machine: after 0.1 s or more
  of sleep, the next 2-thread call of the cython kernel at N = 500 took
  4-8 ms instead of 0.7 ms, and the one after it 4 ms (one thread: 1.9-2.1
  against 1.25 ms).  Waking the idle vCPU and the pool's sleeping
  thread costs milliseconds (measured on the Xeon of docs/kernels.md).

So :func:`warm_blocks` never sleeps: each row runs untimed for at least
``warm_s`` seconds (the previous row's BLAS workers stop spinning, this row's
threads and caches are hot), then ``per_block`` timed calls back to back,
as a training loop makes them.  Rounds rotate the order of the rows, so a
noisy neighbour's burst is spread over all of them.  ``fastsoftmax tune``
and bench/roofline.py time with it.
"""

from __future__ import annotations

import time

__all__ = ["WARM_S", "warm_blocks"]

#: Untimed running before each block (seconds): longer than OpenBLAS's spin
#: after a call (2**28 cycles by default, about 0.1 s).
WARM_S = 0.3


def warm_blocks(calls, rounds, per_block, warm_s=WARM_S):
    """Wall times of each call, measured in warm, rotated blocks.

    Parameters
    ----------
    calls : dict of str to callable
        The rows: name -> a call taking no arguments.
    rounds : int
        Blocks per row; round ``r`` starts with row ``r mod len(calls)``.
    per_block : int
        Timed calls per block, back to back.
    warm_s : float
        Untimed running before each block (at least one call).

    Returns
    -------
    dict of str to list of float
        ``rounds * per_block`` seconds per row.
    """
    names = list(calls)
    times = {name: [] for name in names}
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            call = calls[name]
            end = time.perf_counter() + warm_s
            call()
            while time.perf_counter() < end:
                call()
            for _ in range(per_block):
                t0 = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - t0)
    return times
