"""The cost of distribution: loss and gradient on a Dask array vs in memory.

Run with ``pytest bench/test_bench_dask.py --benchmark-only``.  For every case
of :data:`fastsoftmax.harness.cases.CASES` it times, in the case's benchmark group
(``case.name``, the group every row of that case uses, so the rows line up):

* ``in-memory``: :func:`fastsoftmax.softmax_loss` (the fastest backend, all
  cores) on the NumPy arrays;
* ``dask-<k>chunks``: :func:`fastsoftmax.dask.softmax_loss` on the same data,
  split into k row-chunks and already persisted on a ``LocalCluster`` of two
  worker processes with one thread each (the same two cores in total).

So the ratio of the rows is the overhead of distribution on one machine: the
scheduler round trips, the per-chunk tasks and the reduction tree, with
moving the data to the workers left out (that happens once, in ``persist``).
Each row is checked against the in-memory result with
:func:`fastsoftmax.testing.compare` before it is timed.

Without ``--benchmark-only`` (the plain ``pytest`` run) only the N = 500
cases run, each timed for a single call, so the file is exercised in seconds.
This file is self-contained; it needs ``fastsoftmax[dask]`` and skips
without it.
"""

import pytest

distributed = pytest.importorskip("distributed", reason="fastsoftmax[dask] is not installed")

import fastsoftmax  # noqa: E402
from fastsoftmax import dask as fd  # noqa: E402
from fastsoftmax.harness.cases import CASES, QUICK_CASES  # noqa: E402
from fastsoftmax.testing import compare  # noqa: E402

#: Row-chunk counts timed per case: one chunk (pure overhead), two per worker, eight per worker.
CHUNK_COUNTS = (1, 4, 16)


def _full_run(config):
    return bool(config.getoption("benchmark_only", False))


@pytest.fixture(scope="module")
def client():
    with fd.local_client(n_workers=2, threads_per_worker=1) as client:
        yield client


@pytest.fixture(scope="module", params=CASES, ids=lambda case: case.name)
def case_data(request):
    """One case's arrays and its in-memory result (the fastest backend)."""
    case = request.param
    if case not in QUICK_CASES and not _full_run(request.config):
        pytest.skip(f"{case.name} is timed only under --benchmark-only (the plain run checks N=500 once)")
    W, X, y, reg = case.make()
    return case, (W, X, y, reg), fastsoftmax.softmax_loss(W, X, y, reg)


def _time(benchmark, request, case, func, **info):
    benchmark.group = case.name
    benchmark.extra_info.update(N=case.n, D=case.d, C=case.c, dtype=case.dtype, **info)
    if _full_run(request.config):
        benchmark(func)
    else:
        benchmark.pedantic(func, rounds=1, iterations=1)


def test_in_memory(benchmark, case_data, request):
    """The fastest local backend on NumPy arrays: the baseline of the dask rows."""
    case, (W, X, y, reg), _ = case_data
    backend = fastsoftmax.fastest(X.dtype, case.n)
    _time(benchmark, request, case, lambda: fastsoftmax.softmax_loss(W, X, y, reg), backend=backend)


@pytest.mark.parametrize("n_chunks", CHUNK_COUNTS, ids=lambda k: f"dask-{k}chunks")
def test_dask(benchmark, client, case_data, n_chunks, request):
    """fastsoftmax.dask.softmax_loss on the same data, persisted on two worker processes."""
    case, (W, X, y, reg), in_memory = case_data
    rows = -(-case.n // n_chunks)
    Xd, yd = client.persist([fd.from_array(X, chunks=rows), fd.from_array(y, chunks=rows)])
    distributed.wait([Xd, yd])
    try:
        agreement = compare(fd.softmax_loss(W, Xd, yd, reg), in_memory, X.dtype)  # also warms the workers
        assert agreement.ok, f"dask result disagrees with in-memory on {case.name}: {agreement}"
        _time(
            benchmark,
            request,
            case,
            lambda: fd.softmax_loss(W, Xd, yd, reg),
            backend=fastsoftmax.fastest(X.dtype, rows),
            chunks=len(Xd.chunks[0]),
            workers=2,
            threads_per_worker=1,
        )
    finally:
        del Xd, yd  # release the persisted chunks before the next row
