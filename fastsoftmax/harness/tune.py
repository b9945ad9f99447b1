"""``fastsoftmax tune``: measure which backend is fastest on this machine and remember it.

Design note
-----------
The measured counterpart of the registry's static table (see
:mod:`fastsoftmax.backends._wisdom` for why and where it is kept).  For
each dtype, thread count and a few batch sizes on CIFAR-shaped synthetic
problems (D = 3073, C = 10), every available backend except the ``python``
reference is timed side by side: the backends run in warm blocks
(:func:`~fastsoftmax.harness.timing.warm_blocks`: untimed running for
``warm_s``, then timed calls back to back, as a loop of calls makes them),
in up to three rounds of rotated order so that a noisy neighbour slows all
of them alike, and the median of ``repeat`` calls decides.  Until the
thirteenth session the calls were interleaved one by one; with two threads
the calls right after the ``numpy`` backend's (OpenBLAS's workers spinning
on) then took cython 34 ms instead of 13 at N = 10000 in float64 and numba
51 ms instead of 9 in float32, and tune saved numba, or even numpy, as
fastest at N = 500, where cython is.  Each measured
size stands for a band of N reaching halfway (geometrically) to the next
one.  The result is written as wisdom, which :func:`fastsoftmax.fastest`
then follows; the static table stays the fallback.

The same way, side by side, it times the C kernel's score pass with each
of :data:`CHUNKS` bytes of W.T per D-chunk (:func:`tune_chunks`), for the
instruction-set build that runs, each dtype, at N = :data:`BLOCKING_SIZES` on one
thread, and saves the fastest, if clearly faster than the static one: the static
:data:`~fastsoftmax.backends._common.CHUNK_BYTES` was measured on one CPU,
and the best chunk follows the L1 and the load ports (docs/kernels.md,
round 10).  The chunk changes no bits (tested), only the speed.  Then,
with that chunk, whether the kernel's gradient pass should prefetch the
whole next tile rather than the start of its rows
(:func:`tune_prefetch`, at the same sizes): on a Zen 5 that was
10 % faster for the AVX-512 build at N >= 10000, and slower for its AVX2
build and at N = 500 (docs/kernels.md, round 14), so it is measured, not
assumed; no bits change there either.  The same for the Numba kernel's
gradient pass (prefetching the whole next tile, or nothing): 6-18 %
faster at N >= 10000 on that Zen 5, 5-20 % slower at N = 500 (round 15).

It took 52 s on the 2-core Xeon of docs/kernels.md with the default sizes,
most of it the blocks' untimed warm-up; nothing here runs
unless asked (``fastsoftmax tune`` or :func:`tune`).
"""

from __future__ import annotations

import contextlib
import functools
import math
import statistics

import numpy as np

from .. import backends
from ..backends import _wisdom
from ..backends._common import blocking, padded_classes, static_chunk_bytes
from ..backends._threads import _cores
from ..backends._validate import prepare
from .cases import make_problem
from .timing import WARM_S, warm_blocks
from .threads import limit_threads

__all__ = ["tune", "tune_chunks", "tune_prefetch", "SIZES", "CHUNKS", "BLOCKING_SIZES", "GAIN",
           "bands"]

#: Batch sizes measured: a minibatch, the CS231n dev batch, a large batch.
SIZES = (32, 500, 10000)

#: Bytes of W.T per D-chunk tried for the C kernel's score pass: from 2 KiB
#: (where the loop overhead per chunk shows) to half of a 48 KiB L1d, with
#: the static table's 5 and 16 KiB among them.
CHUNKS = (2 << 10, 3 << 10, 5 << 10, 8 << 10, 16 << 10, 24 << 10)

#: Batch sizes at which the C kernel's blocking (D-chunk, prefetch) is timed:
#: X in the last-level cache (the CS231n dev batch) and X streamed from memory.
BLOCKING_SIZES = (500, 10000)

#: A measured blocking replaces the static one only where it is at least
#: this much faster (a ratio of medians): a tie keeps the default, which
#: was the faster one on the other CPUs and builds measured.
GAIN = 0.98


def _medians(calls, repeat, warm_s):
    """Median seconds per call of ``calls``: ``repeat`` timed calls each, in up to 3 warm, rotated blocks."""
    rounds = min(3, repeat)
    times = warm_blocks(calls, rounds, -(-repeat // rounds), warm_s)
    return {name: statistics.median(v) for name, v in times.items()}


def bands(sizes):
    """Smallest N of the band each measured size stands for (geometric midpoints)."""
    sizes = sorted(sizes)
    return [1] + [int(math.sqrt(a * b)) for a, b in zip(sizes, sizes[1:])]


def tune(sizes=SIZES, dtypes=("float64", "float32"), threads=None, repeat=7, d=3073, c=10,
         path=None, out=print, blocking_sizes=BLOCKING_SIZES, warm_s=WARM_S):
    """Measure the compiled kernels' blocking, then the backends with it, save them as wisdom, return ``(orders, path)``.

    The blocking first (:func:`tune_chunks`, :func:`tune_prefetch`), so that
    the backends are ranked as they will run with this wisdom: the whole-tile
    prefetch made the Numba kernel 14-20 % faster at N = 10000 on a Zen 5,
    and its AVX2 build 10 % faster in float32, where the C kernel's AVX2
    build does not prefetch (docs/kernels.md, round 15).

    Parameters
    ----------
    sizes : sequence of int
        Batch sizes N to measure.
    dtypes : sequence of str
    threads : sequence of int, optional
        Thread counts (default: 1 and every core).
    repeat : int
        Timed calls per backend (median).
    d, c : int
        Problem shape (default CIFAR-10's).
    path : str, optional
        Wisdom file (default :func:`fastsoftmax.backends._wisdom.wisdom_path`).
    out : callable
        Receives one line per measurement.
    blocking_sizes : sequence of int
        Batch sizes for :func:`tune_chunks` and :func:`tune_prefetch`
        (empty: measure neither).
    warm_s : float
        Untimed running before each block of timed calls (seconds).
    """
    threads = sorted(set(threads or (1, _cores())))
    names = [n for n in backends.available() if n != "python"]
    chunks, prefetch, measurements = {}, {}, []
    if blocking_sizes:
        chunks, found = tune_chunks(dtypes, blocking_sizes, repeat=repeat, d=d, c=c, out=out, warm_s=warm_s)
        measurements += found
        prefetch, found = tune_prefetch(dtypes, blocking_sizes, chunks=chunks, repeat=repeat, d=d, c=c, out=out,
                                        warm_s=warm_s)
        measurements += found
    orders = {}
    for dtype in dtypes:
        for n, lo in zip(sorted(sizes), bands(sizes)):
            problem = prepare(*make_problem(n, d, c, dtype)[:3], 1e-3)
            for t in threads:
                with limit_threads(t), _blocking_in_effect(chunks, prefetch, dtype, n, d, c):
                    kernels = {name: backends.get_kernel(name) for name in names}
                    medians = _medians(
                        {name: functools.partial(backends.run_kernel, k, problem, t) for name, k in kernels.items()},
                        repeat, warm_s)
                order = sorted(names, key=medians.get)
                if "python" in backends.BACKENDS:
                    order.append("python")
                orders[f"{dtype}|{t}|{lo}"] = order
                measurements.append({"dtype": dtype, "threads": t, "n": n, "band_from": lo,
                                     "median_s": medians})
                out(f"{dtype} N={n} (band N>={lo}) x{t}: "
                    + ", ".join(f"{name} {medians[name] * 1e3:.3g} ms" for name in order if name in medians))
    path = _wisdom.save(orders, measurements, path, chunks=chunks, prefetch=prefetch)
    return orders, path


def tune_chunks(dtypes=("float64", "float32"), sizes=BLOCKING_SIZES, repeat=7, d=3073, c=10, chunks=CHUNKS,
                out=print, warm_s=WARM_S):
    """Time the C kernel with each D-chunk of ``chunks`` for the build that runs, one thread.

    The static chunk (``_common.static_chunk_bytes``) is always among those
    timed, and stays unless another is faster by :data:`GAIN` on the
    geometric mean over ``sizes`` and nowhere slower by as much: measured at
    N = 10000 alone, a 3 KiB chunk tied with the static 16 KiB in float32 on
    a Zen 5 and was saved, and it was 14 % slower at N = 500
    (docs/kernels.md, round 14).

    Parameters
    ----------
    dtypes : sequence of str
    sizes : sequence of int
        Batch sizes N (default :data:`BLOCKING_SIZES`).
    d, c : int
        Problem shape (default CIFAR-10's).
    repeat : int
        Timed calls per chunk (median), in warm, rotated blocks as in :func:`tune`.
    chunks : sequence of int
        Candidate bytes of W.T per chunk.
    out : callable
        Receives one line per dtype and size, and the verdict.
    warm_s : float
        Untimed running before each block of timed calls (seconds).

    Returns
    -------
    (best, measurements)
        ``best`` maps ``"isa|dtype"`` to the chosen chunk's bytes, for
        :func:`fastsoftmax.backends._wisdom.save`; empty when the compiled
        extension is not available.
    """
    found = _cython(c)
    if found is None:
        return {}, []
    cython, isa, cp = found
    static = static_chunk_bytes(isa)
    chunks = sorted(set(chunks) | {static})
    best, measurements = {}, []
    for dtype in dtypes:
        itemsize = np.dtype(dtype).itemsize
        settings = {chunk: {"BLOCKING": blocking(d, cp, itemsize, isa=isa, chunk_bytes=chunk), "PREFETCH_TILE": False}
                    for chunk in chunks}
        ratios = {chunk: [] for chunk in chunks}  # time / the static chunk's, per size
        for n, medians in _time_settings(cython, dtype, sizes, settings, d, c, repeat, warm_s).items():
            for chunk in chunks:
                ratios[chunk].append(medians[chunk] / medians[static])
            measurements.append({"chunk_isa": isa, "dtype": dtype, "n": n,
                                 "median_s": {str(k): v for k, v in medians.items()}})
            out(f"cython {isa} {dtype} N={n} x1, D-chunk of W.T: "
                + ", ".join(f"{k / 1024:g} KiB {medians[k] * 1e3:.3g} ms" for k in chunks))
        score = {chunk: statistics.geometric_mean(r) for chunk, r in ratios.items() if max(r) <= 1 / GAIN}
        fastest = min(score, key=score.get)
        best[f"{isa}|{dtype}"] = chosen = fastest if score[fastest] < GAIN else static
        out(f"cython {isa} {dtype}: D-chunk {chosen / 1024:g} KiB"
            + (" (the static one)" if chosen == static else f", {1 / score[chosen]:.2f}x the static one's speed"))
    return best, measurements


def tune_prefetch(dtypes=("float64", "float32"), sizes=BLOCKING_SIZES, chunks=None, repeat=7, d=3073, c=10,
                  out=print, warm_s=WARM_S, kernels=("cython", "numba")):
    """Time each compiled kernel's gradient pass prefetching the whole next tile against its default, one thread.

    The C kernel's build that runs (default: the start of the next tile's
    rows), with the D-chunk of ``chunks`` (else the static one), and the
    Numba kernel (default: no prefetch), for each dtype and each of
    ``sizes``, side by side as :func:`tune_chunks` does.

    Parameters
    ----------
    dtypes : sequence of str
    sizes : sequence of int
        Batch sizes N (default :data:`BLOCKING_SIZES`).
    chunks : dict, optional
        ``"isa|dtype"`` -> bytes of W.T per D-chunk (what :func:`tune_chunks` found).
    repeat, d, c, out, warm_s
        As for :func:`tune_chunks`.
    kernels : sequence of str
        Which of ``"cython"`` and ``"numba"`` to time.

    Returns
    -------
    (best, measurements)
        ``best`` maps ``"isa|dtype"`` (the C kernel's build) and
        ``"numba|dtype"`` to the smallest batch size (the lower end of a
        measured size's band, :func:`bands`) from which the whole tile was
        at least 1 / :data:`GAIN` times faster at every measured size, or
        None where it was not at the largest, for
        :func:`fastsoftmax.backends._wisdom.save`; a kernel that is not
        available (the compiled extension not built) has no entries.
    """
    best, measurements = {}, []
    for module, build, label, fixed in _compiled(kernels, chunks, d, c):
        for dtype in dtypes:
            settings = {mode: {**fixed(dtype), "PREFETCH_TILE": mode == "tile"} for mode in ("start", "tile")}
            wins = {}
            for n, medians in _time_settings(module, dtype, sizes, settings, d, c, repeat, warm_s).items():
                wins[n] = medians["tile"] < GAIN * medians["start"]
                measurements.append({"prefetch_isa": build, "dtype": dtype, "n": n, "median_s": medians})
                out(f"{label} {dtype} N={n} x1, gradient pass: default {medians['start'] * 1e3:.3g} ms, "
                    f"whole next tile prefetched {medians['tile'] * 1e3:.3g} ms")
            start = None  # the lowest band from which the whole tile won at every larger size
            for n, lo in reversed(list(zip(sorted(sizes), bands(sizes)))):
                if not wins[n]:
                    break
                start = lo
            best[f"{build}|{dtype}"] = start
            out(f"{label} {dtype}: whole next tile " + ("never" if start is None else f"from N = {start}"))
    return best, measurements


def _compiled(kernels, chunks, d, c):
    """``(module, build, label, fixed)`` for each of ``kernels`` (``"cython"``, ``"numba"``) available here.

    ``build`` is the kernel's key in the wisdom's tables (the C kernel's
    running instruction-set build, or ``"numba"``); ``fixed(dtype)`` the
    module settings the wisdom's ``chunks`` imply in that dtype (the C
    kernel's blocking with its D-chunk; nothing for Numba).
    """
    timed = []
    found = _cython(c) if "cython" in kernels else None
    if found is not None:
        cython, isa, cp = found
        timed.append((cython, isa, f"cython {isa}", lambda dtype: {"BLOCKING": blocking(
            d, cp, np.dtype(dtype).itemsize, isa=isa, chunk_bytes=(chunks or {}).get(f"{isa}|{dtype}"))}))
    if "numba" in kernels and "numba" in backends.available():
        from ..backends import numba

        timed.append((numba, "numba", "numba", lambda dtype: {}))
    return timed


def _cython(c):
    """``(cython module, its running build, C padded to its class block)``, or None where it is not built."""
    try:
        from ..backends import cython
    except ImportError:
        return None
    return cython, cython.running_isa(), padded_classes(c, cython.CLASS_BLOCK)


@contextlib.contextmanager
def _attributes(module, settings):
    """Set ``module``'s attributes ``settings`` (``{name: value}``) for the ``with`` block, then restore them."""
    saved = {name: getattr(module, name) for name in settings}
    try:
        for name, value in settings.items():
            setattr(module, name, value)
        yield
    finally:
        for name, value in saved.items():
            setattr(module, name, value)


@contextlib.contextmanager
def _blocking_in_effect(chunks, prefetch, dtype, n, d, c):
    """The compiled kernels' blocking as the wisdom of ``chunks`` and ``prefetch`` would make it at batch size ``n``.

    Set through the modules' overrides, since that wisdom is not saved yet
    (and :func:`tune` may be saving it elsewhere than where they read it).
    """
    with contextlib.ExitStack() as stack:
        for module, build, _, fixed in _compiled(("cython", "numba"), chunks, d, c):
            start = prefetch.get(f"{build}|{dtype}")
            stack.enter_context(_attributes(module, {**fixed(dtype), "PREFETCH_TILE": start is not None and n >= start}))
        yield


def _time_settings(module, dtype, sizes, settings, d, c, repeat, warm_s):
    """Median seconds per call of a compiled backend on one thread under each of ``settings``, per batch size.

    ``module`` is the backend's module (``cython`` or ``numba``);
    ``settings`` maps a name to ``{attribute: value}`` of that module
    (``BLOCKING``, ``PREFETCH_TILE``), set around each call and restored
    after.  Returns ``{n: {name: median seconds}}`` for ``sizes`` in
    increasing order.
    """
    kernel = backends.get_kernel(module.__name__.rsplit(".", 1)[1])

    def run(setting, problem):
        with _attributes(module, setting):
            backends.run_kernel(kernel, problem, 1)

    timed = {}
    for n in sorted(sizes):
        problem = prepare(*make_problem(n, d, c, dtype)[:3], 1e-3)
        with limit_threads(1):
            timed[n] = _medians({name: functools.partial(run, setting, problem)
                                 for name, setting in settings.items()}, repeat, warm_s)
    return timed
