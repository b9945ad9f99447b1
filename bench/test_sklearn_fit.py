"""Fit time of SoftmaxClassifier beside LogisticRegression (the ``fastsoftmax bench --sklearn`` rows).

One ``benchmark.group`` per thread count holds the four rows of
:func:`fastsoftmax.harness.fit.fit_rows` (LogisticRegression and
SoftmaxClassifier, float64 and float32), so ``pytest --benchmark-only``
prints them side by side.  What is timed is checked: each row's coefficients
are compared with LogisticRegression float64's (fitted once per session)
before the timing, with the tolerances of :mod:`fastsoftmax.harness.fit`.

Threads: :func:`fastsoftmax.get_num_threads` (all cores, or
``FASTSOFTMAX_NUM_THREADS=1`` for one), with BLAS held to the same count.
Without ``--benchmark-only`` the plain run fits the first 500 images for at
most 20 iterations on one thread, once per row: the harness is exercised,
not measured.
"""

import pathlib
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("scipy")

from sklearn.exceptions import ConvergenceWarning  # noqa: E402

from fastsoftmax import get_num_threads  # noqa: E402
from fastsoftmax.harness.fit import BENCH_RTOL, fit_data, fit_rows  # noqa: E402
from fastsoftmax.harness.machine import machine_info  # noqa: E402
from fastsoftmax.harness.threads import limit_threads  # noqa: E402

CIFAR_SUBSET = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "cifar-10-subset" / "cifar-10-batches-py"
#: The issue's setting (see docs/sklearn.md): both estimators, same C, tol, max_iter.
SETTINGS = dict(C=1e-3, tol=1e-4, max_iter=300, fit_intercept=True)
ROWS = list(fit_rows(**SETTINGS))


def _threads(full_run):
    # The plain run holds everything to one thread: it checks, it does not
    # measure, and a 2-thread BLAS on a loaded 2-core machine spins.
    return get_num_threads() if full_run else 1


@pytest.fixture(scope="module")
def fit_setup(full_run):
    if not CIFAR_SUBSET.is_dir():
        pytest.skip(f"real CIFAR-10 subset not found at {CIFAR_SUBSET}")
    settings = dict(SETTINGS) if full_run else dict(SETTINGS, max_iter=20)
    X, y = fit_data(CIFAR_SUBSET, np.float64)
    if not full_run:
        X, y = np.ascontiguousarray(X[:500]), y[:500]
    data = {np.float64: (X, y), np.float32: (X.astype(np.float32), y)}  # fit_data's float32 is this cast
    rows = fit_rows(**settings)
    make, dt = rows["LogisticRegression float64"]
    with limit_threads(_threads(full_run)), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref = make().fit(*data[dt])
    return rows, data, ref, settings


@pytest.mark.parametrize("name", ROWS)
def test_fit(benchmark, fit_setup, name, full_run):
    rows, data, ref, settings = fit_setup
    make, dt = rows[name]
    X, y = data[dt]
    threads = _threads(full_run)
    with limit_threads(threads), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the plain run stops at 20 iterations
        est = make().fit(X, y)  # the check, and the warm-up (imports, JIT)
        err = float(np.linalg.norm(est.coef_ - ref.coef_) / np.linalg.norm(ref.coef_))
        limit = BENCH_RTOL
        assert err <= limit, f"{name}: coef differs from LogisticRegression float64 by {err:.1e} (> {limit:.0e})"
        benchmark.group = f"sklearn fit|CIFAR {X.shape[0]}x{X.shape[1]}|{threads} threads"
        benchmark.extra_info.update(
            row=name, threads=threads, N=X.shape[0], D=X.shape[1], n_iter=int(est.n_iter_[0]),
            coef_rel_error=err, backend=getattr(est, "backend_", None), **settings,
            versions=machine_info()["libraries"],
        )
        benchmark.pedantic(lambda: make().fit(X, y), rounds=3 if full_run else 1, iterations=1)
