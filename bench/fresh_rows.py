"""Where a fresh minibatch's extra cost comes from (issue 14): the kernel on rows of X the caches do or do not hold.

Usage (from the repository root)::

    python bench/fresh_rows.py                         # float64, one thread
    python bench/fresh_rows.py --dtype float32 --threads 2 --repeat 301

``fastsoftmax bench --training-step`` compares the kernel on a gathered
batch (re-read call after call, so the caches keep it) with the kernel
reading a new batch of rows of X each call, as SGD must.  This script takes
the difference apart.  On the CIFAR-shaped problem of that benchmark (X
4585 x 3073, C = 10, batches of 200), with the backend training picks, it
times, interleaved call by call (one call of every row per round, rows
drawn beforehand):

``gathered``          the batch ``X[idx]`` as one array, the same every call
                      (the benchmark's yardstick);
``same rows``         those rows of X through ``rows=``, the same every call:
                      what ``rows=`` itself costs;
``random / P``        200 distinct rows drawn at random from the first P
                      rows of X (P >= 200), anew each call;
``block / P``         200 consecutive rows starting at a random row of the
                      first P, anew each call: fresh data, but in one run
                      of memory the hardware prefetchers follow.

As P grows, less of the P rows fit in the caches between calls, so the
``block`` rows show what reading a fresh batch from further away costs, and
``random`` against ``block`` what its rows' scattered starts add.  Ratios
are medians over the ``gathered`` row's median.  Before timing, every row's
first batch is checked: its result through ``rows=`` equals the gathered
copy's bit for bit.
"""

import argparse
import itertools
import statistics

import numpy as np

from fastsoftmax import backends
from fastsoftmax.backends._validate import prepare
from fastsoftmax.harness import training_step
from fastsoftmax.harness.threads import limit_threads

POOLS = (200, 400, 800, 1600, training_step.N)


def batches(kind, pool, count, batch, rng):
    """``count`` index arrays of ``batch`` rows of the first ``pool`` rows: ``random`` or ``block``."""
    if kind == "random":  # distinct rows: repeats would be cache hits, which the gathered batch has none of
        return [rng.choice(pool, batch, replace=False) for _ in range(count)]
    return [np.arange(s, s + batch) for s in rng.integers(0, pool - batch + 1, count)]


def measure(dtype="float64", threads=1, repeat=151, pools=POOLS, backend=None, arrays=None, batch=None):
    """Time the kernel on every source of rows of the module docstring, interleaved.

    Parameters
    ----------
    dtype : str
        ``"float64"`` or ``"float32"``.
    threads : int
    repeat : int
        Rounds, each one call of every row (random and block rows: a new batch each round).
    pools : sequence of int
        The P values, each >= ``batch``.
    backend : str, optional
        Default: what training picks, :func:`fastsoftmax.fastest` for ``dtype`` and the batch size.
    arrays : tuple, optional
        ``(W, X, y)``, shapes (D, C), (N, D), (N,); default the training-step benchmark's problem.
    batch : int, optional
        Rows per batch; default the training-step benchmark's 200.

    Returns
    -------
    dict
        ``backend``, and ``rows``: label -> list of ``repeat`` wall times in seconds, in table order.

    Raises
    ------
    AssertionError
        If a row's first batch through ``rows=`` differs from the gathered copy in any bit.
    """
    W, X, y = training_step.data(dtype) if arrays is None else arrays
    batch = training_step.BATCH if batch is None else batch
    name = backend or backends.fastest(np.dtype(dtype), batch)
    kernel = backends.get_kernel(name)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, X.shape[0], batch).astype(np.intp)
    reg = training_step.REG
    plans = {"gathered": [prepare(W, X[idx], y[idx], reg)], "same rows": [prepare(W, X, y, reg, rows=idx)]}
    for kind in ("random", "block"):
        for pool in pools:
            plans[f"{kind} / {pool}"] = [prepare(W, X, y, reg, rows=rows)
                                        for rows in batches(kind, pool, repeat, batch, rng)]
    with limit_threads(threads):
        for label, problems in plans.items():  # warm-up (JIT, first touch); the bits of rows= and the copy
            loss, dW = kernel(problems[0], threads)[:2]
            rows = problems[0].rows if problems[0].rows is not None else idx
            ref_loss, ref_dW = kernel(prepare(W, X[rows], y[rows], reg), threads)[:2]
            if loss != ref_loss or not np.array_equal(dW, ref_dW):
                raise AssertionError(f"{name}: {label}: rows= differs from the gathered copy")
        turns = {label: itertools.cycle(problems) for label, problems in plans.items()}
        calls = {label: (lambda turn=turn: kernel(next(turn), threads)) for label, turn in turns.items()}
        times = training_step._interleaved(calls, repeat)
    return {"backend": name, "rows": times}


def format_table(result, dtype, threads):
    """One line per row: median, and ratio to the gathered batch's median."""
    times = result["rows"]
    base = statistics.median(times["gathered"])
    lines = [f"{dtype} x{threads} {result['backend']}: median of {len(times['gathered'])} interleaved calls"]
    for label, ts in times.items():
        med = statistics.median(ts)
        lines.append(f"  {label:14s} {med * 1e3:8.3f} ms  {med / base:6.3f}x")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=151)
    parser.add_argument("--backend", default=None)
    args = parser.parse_args(argv)
    result = measure(args.dtype, args.threads, args.repeat, backend=args.backend)
    print(format_table(result, args.dtype, args.threads))


if __name__ == "__main__":
    main()
