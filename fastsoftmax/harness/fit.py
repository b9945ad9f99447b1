"""``fastsoftmax bench --sklearn``: fit time of SoftmaxClassifier against LogisticRegression.

Design note
-----------
The kernel table times one loss-and-gradient call; a user of
:class:`fastsoftmax.sklearn.SoftmaxClassifier` waits for a whole fit.  This
section times fits, side by side in one run, on real CIFAR-10 images:

* rows: ``LogisticRegression(solver="lbfgs")`` and ``SoftmaxClassifier``,
  each in float64 and float32 (both fit float32 input in float32), with the
  same ``C``, ``tol``, ``max_iter`` and ``fit_intercept``, so "to the same
  tolerance" is literal: the same L-BFGS-B stopping rule on the same
  objective;
* every row is checked: its coefficients against the float64
  ``LogisticRegression`` fit of the same run (relative Frobenius error,
  shown in the table; the run fails above :data:`BENCH_RTOL`);
* timing is interleaved (round r fits every row once, then round r + 1), so
  a burst of load on a shared machine hits all rows alike; the table shows
  the median and the ratio ``LogisticRegression float64 / row``;
* each thread count holds every pool (ours, BLAS, OpenMP) with
  :func:`fastsoftmax.harness.threads.limit_threads`; one warm-up fit per row
  (a few iterations) absorbs imports and JIT compilation first.

Data: all training images in ``data_dir`` (5085 in the shared subset), as
float pixels standardized per feature (3072 features, no bias column: the
estimators fit the intercept).
"""

from __future__ import annotations

import statistics
import time
import warnings

import numpy as np

from ..backends._threads import get_num_threads
from .threads import limit_threads

__all__ = ["fit_data", "fit_rows", "run_fit", "BENCH_RTOL"]

#: Agreement every row must reach with LogisticRegression float64 (relative
#: Frobenius error of coef and intercept).  Both stop on the same rule, max
#: |gradient| <= tol, which pins the solution only to what tol allows: at
#: the default tol=1e-4 two correct fits whose iterates differ by rounding
#: (float32, or a 2-thread reduction order) stop 1e-4 to 1.5e-3 apart
#: (measured; LogisticRegression's own float32 fit is 1.2e-3 off its
#: float64 one).  1e-2 admits that and still fails a wrong objective (C off
#: by 2x moves coef by tens of percent).  The issue's 1e-4 "same optimum"
#: target is tested at tol=1e-9 in tests/test_sklearn.py.
BENCH_RTOL = 1e-2


def fit_data(data_dir, dtype=np.float64):
    """The training images of ``data_dir``, standardized, as ``(X, y)``.

    Returns
    -------
    X : ndarray, shape (N, 3072), C-contiguous, ``dtype``
    y : ndarray, shape (N,), int64
    """
    from ..training.data import load_cifar10

    X_train, y_train, *_ = load_cifar10(data_dir)
    X = X_train.reshape(len(X_train), -1).astype(np.float64)
    X -= X.mean(axis=0)
    X /= X.std(axis=0)
    return np.ascontiguousarray(X, dtype=dtype), y_train


def fit_rows(C, tol, max_iter, fit_intercept, backend=None):
    """``{row name: (make estimator, dtype)}`` for the fit table."""
    from sklearn.linear_model import LogisticRegression

    from ..sklearn import SoftmaxClassifier

    common = dict(C=C, tol=tol, max_iter=max_iter, fit_intercept=fit_intercept)
    return {
        "LogisticRegression float64": (lambda: LogisticRegression(**common), np.float64),
        "SoftmaxClassifier float64": (lambda: SoftmaxClassifier(**common, backend=backend), np.float64),
        "LogisticRegression float32": (lambda: LogisticRegression(**common), np.float32),
        "SoftmaxClassifier float32": (
            lambda: SoftmaxClassifier(**common, dtype=np.float32, backend=backend), np.float32,
        ),
    }


def _rel(a, b):
    return float(np.linalg.norm(np.asarray(a, dtype=np.float64) - b) / np.linalg.norm(b))


def run_fit(data_dir, threads=None, repeat=3, C=1e-3, tol=1e-4, max_iter=300, fit_intercept=True,
            backend=None, out=print):
    """Time and check every row at every thread count; print one table per count.

    Parameters
    ----------
    data_dir : str or os.PathLike
        CIFAR-10 python batches (see :func:`fit_data`).
    threads : list of int, optional
        Thread counts (default: :func:`fastsoftmax.get_num_threads`).
    repeat : int
        Timed fits per row (interleaved rounds).
    C, tol, max_iter, fit_intercept
        Passed to both estimators.
    backend : str, optional
        SoftmaxClassifier's backend (default: the fastest).
    out : callable
        Where lines go.

    Returns
    -------
    records : list of dict
        One per row and thread count: ``threads, row, median_s, times_s,
        speedup, n_iter, coef_rel_error, ok``.
    status : int
        1 if any row disagrees with LogisticRegression float64, else 0.
    """
    from sklearn.exceptions import ConvergenceWarning

    data = {dt: fit_data(data_dir, dt) for dt in (np.float64, np.float32)}
    N, D = data[np.float64][0].shape
    rows = fit_rows(C, tol, max_iter, fit_intercept, backend)
    records, status = [], 0
    for n in threads or [get_num_threads()]:
        with limit_threads(n), warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # n_iter is in the table
            for make, dt in rows.values():  # warm-up: imports, JIT, first touch of X
                make().set_params(max_iter=2).fit(*data[dt])
            times = {name: [] for name in rows}
            fitted = {}
            for _ in range(repeat):
                for name, (make, dt) in rows.items():
                    est = make()
                    t0 = time.perf_counter()
                    est.fit(*data[dt])
                    times[name].append(time.perf_counter() - t0)
                    fitted[name] = est
        ref_name = "LogisticRegression float64"
        ref = fitted[ref_name]
        base = statistics.median(times[ref_name])
        out(f"\nfit on {N} x {D} CIFAR-10 ({data_dir}), C={C}, tol={tol}, max_iter={max_iter}, "
            f"fit_intercept={fit_intercept}, {n} thread(s), median of {repeat}")
        out(f"{'row':<28}{'fit s':>9}{'vs LR f64':>11}{'n_iter':>8}{'coef rel err':>14}  check")
        for name, (make, dt) in rows.items():
            est = fitted[name]
            err = _rel(est.coef_, ref.coef_) if name != ref_name else 0.0
            if fit_intercept and name != ref_name:
                err = max(err, _rel(est.intercept_, ref.intercept_))
            limit = BENCH_RTOL
            ok = err <= limit
            status |= not ok
            med = statistics.median(times[name])
            records.append(dict(threads=n, row=name, median_s=med, times_s=times[name], speedup=base / med,
                                n_iter=int(est.n_iter_[0]), coef_rel_error=err, ok=ok,
                                backend=getattr(est, "backend_", None)))
            out(f"{name:<28}{med:>9.3f}{base / med:>10.2f}x{int(est.n_iter_[0]):>8}{err:>14.1e}  "
                f"{'ok' if ok else f'DISAGREES (> {limit:.0e})'}")
    return records, status
