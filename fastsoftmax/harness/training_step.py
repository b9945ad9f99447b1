"""A training step beside the bare kernel: what SGD pays on top of the loss (issue 14).

Design note
-----------
Training calls the kernel on a minibatch; the question is how much a whole
step costs beyond that call.  On CIFAR-shaped data (X 4585 x 3073, the
shared subset's training split, C = 10) with batches of 200, three rows are
timed for each dtype and thread count, interleaved call by call (one call of
each row per round, so load on a shared machine hits all three alike):

``kernel``     :func:`fastsoftmax.softmax_loss`'s backend on an already
               gathered batch ``X[idx], y[idx]`` (validation included, as a
               user calls it): the yardstick, target step <= 1.15x it;
``kernel, rows``  the same backend reading a new batch of rows of X in place
               each call (``rows=``, ``out=``; batches drawn beforehand): the
               kernel as the rows step calls it, without the draw and update;
``copy step``  the textbook loop: draw ``idx``, gather ``X[idx]``, loss and a
               fresh ``dW``, ``W -= lr * dW``;
``rows step``  :class:`fastsoftmax.training.sgd.SGDStep`: draw ``idx``, the
               kernel reads the rows in place (``rows=``), ``dW`` goes into a
               reused buffer (``out=``), W is updated in place.

Both steps draw a new batch every call, as training does; the ``kernel`` row
always sees the same batch, which the caches then favour (the issue's
yardstick).  ``kernel, rows`` reads new rows every call, as training must, so
``rows step / kernel, rows`` is what the step itself adds (draw, validation,
in-place update) and ``kernel, rows / kernel`` what reading a fresh batch
costs beyond re-reading a cached one.  The backend is the one training picks,
:func:`fastsoftmax.fastest` for the dtype and batch size.  Before timing,
each dtype and thread count is checked: a few rows steps and copy steps from
the same weights and seed must give the same weights bit for bit (the
``identical`` column; ``tests/test_sgd.py`` is the full test).  Setup (data,
JIT compilation, the first call's buffer) stays outside the timed calls.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from .. import backends
from .agreement import compare
from .cases import make_problem
from .threads import limit_threads

__all__ = ["N", "D", "C", "BATCH", "TARGET", "ROWS", "setup", "measure", "format_table"]

#: CIFAR-shaped training data: the shared subset's training split, bias column included.
N, D, C = 4585, 3073, 10
#: Minibatch size of the CS231n exercise.
BATCH = 200
#: The issue's target: a step costs at most this many times the kernel on the gathered batch.
TARGET = 1.15
#: Learning rate and regularization of the timed steps (CS231n's order of magnitude).
LEARNING_RATE, REG = 1e-7, 2.5e4
#: Timed rows, in table order.
ROWS = ("kernel", "kernel, rows", "copy step", "rows step")
#: Batches drawn beforehand for the ``kernel, rows`` row (cycled through).
PREDRAWN = 1000
#: Steps of the bit-identity check before timing.
CHECK_STEPS = 3


def data(dtype):
    """``(W, X, y)`` of the CIFAR-shaped problem, deterministic."""
    return make_problem(N, D, C, dtype, seed=0)


def _copy_step(loss_fn, W, X, y, rng, n_threads):
    """The textbook step, as every loop ran before ``rows=``: gather, fresh dW, update."""
    idx = rng.choice(len(y), BATCH, replace=True)
    loss, dW = loss_fn(W, X[idx], y[idx], REG, n_threads=n_threads)
    W -= LEARNING_RATE * dW
    return loss


def setup(dtype, n_threads, arrays=None, backend=None):
    """The three rows for one dtype and thread count, checked and warmed up.

    Parameters
    ----------
    dtype : str
        ``"float64"`` or ``"float32"``.
    n_threads : int
    arrays : tuple, optional
        ``(W, X, y)`` from :func:`data` (built here if not given).
    backend : str, optional
        Default: :func:`fastsoftmax.fastest` for ``dtype`` and N = :data:`BATCH`.

    Returns
    -------
    calls : dict of str to callable
        ``ROWS`` -> zero-argument callables, each one timed call.
    info : dict
        ``backend``, ``identical`` (the bit-identity check's verdict),
        ``agrees`` and ``grad_error`` (rows= against the gathered call).
    """
    from ..training.sgd import SGDStep, draw_rows

    W0, X, y = data(dtype) if arrays is None else arrays
    name = backend or backends.fastest(np.dtype(dtype), BATCH)
    loss_fn = backends.get(name)

    # What is timed is what is verified: the kernel reading rows in place
    # agrees with it on the gathered batch (documented tolerance), and rows
    # steps and copy steps from the same weights and seed agree to the last
    # bit (reported; a backend still on the interim rows path differs there).
    idx = np.random.default_rng(0).choice(len(y), BATCH, replace=True)
    agreement = compare(
        loss_fn(W0, X, y, REG, rows=idx, n_threads=n_threads)[:2],
        loss_fn(W0, X[idx], y[idx], REG, n_threads=n_threads)[:2],
        W0.dtype,
    )
    W_rows, W_copy = W0.copy(), W0.copy()
    step = SGDStep(W_rows, LEARNING_RATE, REG, backend=name, n_threads=n_threads)
    rng_rows, rng_copy = np.random.default_rng(1), np.random.default_rng(1)
    for _ in range(CHECK_STEPS):
        step(X, y, draw_rows(rng_rows, len(y), BATCH))
        _copy_step(loss_fn, W_copy, X, y, rng_copy, n_threads)
    identical = bool(np.array_equal(W_rows, W_copy))

    idx = np.random.default_rng(2).choice(len(y), BATCH, replace=True)
    X_batch, y_batch = X[idx], y[idx]
    W_kernel = W0.copy()
    rng_steps = np.random.default_rng(3)
    predrawn = [rng_steps.choice(len(y), BATCH, replace=True) for _ in range(PREDRAWN)]
    turn = iter(range(1 << 62))
    grad = np.empty_like(W_kernel)

    def kernel_rows():
        rows = predrawn[next(turn) % PREDRAWN]
        return loss_fn(W_kernel, X, y, REG, rows=rows, out=grad, n_threads=n_threads)

    calls = {
        "kernel": lambda: loss_fn(W_kernel, X_batch, y_batch, REG, n_threads=n_threads),
        "kernel, rows": kernel_rows,
        "copy step": lambda: _copy_step(loss_fn, W_copy, X, y, rng_steps, n_threads),
        "rows step": lambda: step(X, y, draw_rows(rng_steps, len(y), BATCH)),
    }
    for call in calls.values():  # warm-up: JIT, first-touch of buffers
        call()
    return calls, {"backend": name, "identical": identical, "agrees": bool(agreement.ok),
                   "grad_error": agreement.grad_error}


def _interleaved(calls, repeat):
    """Wall times per row, one call of each row per round."""
    times = {name: [] for name in calls}
    for _ in range(repeat):
        for name, call in calls.items():
            t0 = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - t0)
    return times


def measure(dtypes=("float64", "float32"), threads=(1, 2), repeat=50, backend=None, progress=None):
    """Time the three rows for every dtype and thread count.

    Parameters
    ----------
    dtypes : sequence of str
    threads : sequence of int
    repeat : int
        Rounds (each one call of every row).
    backend : str, optional
        Pin a backend (default: what training picks per dtype).
    progress : callable, optional
        Called with a short description before each configuration.

    Returns
    -------
    list of dict
        One record per dtype, thread count and row: ``median_s``, ``min_s``,
        ``times_s``, ``ratio`` (median over the ``kernel`` row's median, same
        configuration), ``ratio_rows`` (over ``kernel, rows``), ``ratio_min``
        (fastest call over the kernel's fastest: the least disturbed by
        load on a shared machine), ``backend``,
        ``identical`` (rows steps equal copy steps bit for bit), ``agrees``
        (``rows=`` within the documented tolerance of the gathered call),
        ``target``.
    """
    records = []
    for dtype in dtypes:
        arrays = data(dtype)
        for n_threads in threads:
            if progress is not None:
                progress(f"training step {dtype} x{n_threads}")
            with limit_threads(n_threads):
                calls, info = setup(dtype, n_threads, arrays, backend)
                times = _interleaved(calls, repeat)
            kernel = statistics.median(times["kernel"])
            kernel_rows = statistics.median(times["kernel, rows"])
            for name in ROWS:
                median = statistics.median(times[name])
                records.append(dict(
                    section="training step", row=name, dtype=dtype, threads=n_threads, n=N, d=D, c=C,
                    batch=BATCH, median_s=median, min_s=min(times[name]), times_s=times[name],
                    ratio=median / kernel, ratio_rows=median / kernel_rows,
                    ratio_min=min(times[name]) / min(times["kernel"]), target=TARGET, **info,
                ))
        del arrays
    return records


def format_table(records):
    """The section's text table: one line per dtype and thread count."""
    head = (
        f"\ntraining step   X {N} x {D}, C={C}, batch {BATCH} drawn per step; median of interleaved "
        f"calls; rows/kernel = rows step / kernel on the gathered batch (target <= {TARGET}x); "
        "min: ratio of the fastest calls; step/kernel,rows = rows step / the kernel reading fresh rows "
        "(what the step adds); identical: rows steps equal copy steps bit for bit "
        "(FAIL: rows= disagrees with the gathered call beyond tolerance)"
    )
    cols = ["dtype", "threads", "backend", *ROWS, "copy/kernel", "rows/kernel", "rows/kernel min",
            "step/kernel,rows", "identical", "target"]
    lines = []
    keys = list(dict.fromkeys((r["dtype"], r["threads"]) for r in records))
    for dtype, n_threads in keys:
        by_row = {r["row"]: r for r in records if r["dtype"] == dtype and r["threads"] == n_threads}
        rows_ratio = by_row["rows step"]["ratio"]
        lines.append([
            dtype, str(n_threads), by_row["kernel"]["backend"],
            *(f"{by_row[name]['median_s'] * 1e3:.3g} ms" for name in ROWS),
            f"{by_row['copy step']['ratio']:.3f}x", f"{rows_ratio:.3f}x",
            f"{by_row['rows step']['ratio_min']:.3f}x",
            f"{by_row['rows step']['ratio_rows']:.3f}x",
            ("yes" if by_row["kernel"]["identical"] else "no") + ("" if by_row["kernel"]["agrees"] else ", FAIL"),
            "met" if rows_ratio <= TARGET else "not met",
        ])
    widths = [max(len(x) for x in col) for col in zip(cols, *lines)]
    fmt = lambda cells: "  ".join(f"{c:>{w}}" for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([head, fmt(cols), *(fmt(line) for line in lines)])
