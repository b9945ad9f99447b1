"""``fastsoftmax tune``: measure which backend is fastest on this machine and remember it.

Design note
-----------
The measured counterpart of the registry's static table (see
:mod:`fastsoftmax.backends._wisdom` for why and where it is kept).  For
each dtype, thread count and a few batch sizes on CIFAR-shaped synthetic
problems (D = 3073, C = 10), every available backend except the ``python``
reference is timed side by side: the calls are interleaved (backend A, B,
C, A, B, C, ...) so that a noisy neighbour slows all of them alike, each
backend is called once untimed first (Numba's compilation, first-touch
allocations), and the median of ``repeat`` calls decides.  Each measured
size stands for a band of N reaching halfway (geometrically) to the next
one.  The result is written as wisdom, which :func:`fastsoftmax.fastest`
then follows; the static table stays the fallback.

It takes about 20 s on 2 cores with the default sizes; nothing here runs
unless asked (``fastsoftmax tune`` or :func:`tune`).
"""

from __future__ import annotations

import math
import statistics
import time

from .. import backends
from ..backends import _wisdom
from ..backends._threads import _cores
from ..backends._validate import prepare
from .cases import make_problem
from .threads import limit_threads

__all__ = ["tune", "SIZES", "bands"]

#: Batch sizes measured: a minibatch, the CS231n dev batch, a large batch.
SIZES = (32, 500, 10000)


def bands(sizes):
    """Smallest N of the band each measured size stands for (geometric midpoints)."""
    sizes = sorted(sizes)
    return [1] + [int(math.sqrt(a * b)) for a, b in zip(sizes, sizes[1:])]


def tune(sizes=SIZES, dtypes=("float64", "float32"), threads=None, repeat=7, d=3073, c=10,
         path=None, out=print):
    """Measure the backends, save the orders as wisdom, return ``(orders, path)``.

    Parameters
    ----------
    sizes : sequence of int
        Batch sizes N to measure.
    dtypes : sequence of str
    threads : sequence of int, optional
        Thread counts (default: 1 and every core).
    repeat : int
        Timed, interleaved calls per backend (median).
    d, c : int
        Problem shape (default CIFAR-10's).
    path : str, optional
        Wisdom file (default :func:`fastsoftmax.backends._wisdom.wisdom_path`).
    out : callable
        Receives one line per measurement.
    """
    threads = sorted(set(threads or (1, _cores())))
    names = [n for n in backends.available() if n != "python"]
    orders, measurements = {}, []
    for dtype in dtypes:
        for n, lo in zip(sorted(sizes), bands(sizes)):
            problem = prepare(*make_problem(n, d, c, dtype)[:3], 1e-3)
            for t in threads:
                times = {name: [] for name in names}
                with limit_threads(t):
                    kernels = {name: backends.get_kernel(name) for name in names}
                    for name, kernel in kernels.items():
                        backends.run_kernel(kernel, problem, t)  # compile / first touch, untimed
                    for _ in range(repeat):
                        for name, kernel in kernels.items():
                            t0 = time.perf_counter()
                            backends.run_kernel(kernel, problem, t)
                            times[name].append(time.perf_counter() - t0)
                medians = {name: statistics.median(v) for name, v in times.items()}
                order = sorted(names, key=medians.get)
                if "python" in backends.BACKENDS:
                    order.append("python")
                orders[f"{dtype}|{t}|{lo}"] = order
                measurements.append({"dtype": dtype, "threads": t, "n": n, "band_from": lo,
                                     "median_s": medians})
                out(f"{dtype} N={n} (band N>={lo}) x{t}: "
                    + ", ".join(f"{name} {medians[name] * 1e3:.3g} ms" for name in order if name in medians))
    path = _wisdom.save(orders, measurements, path)
    return orders, path
