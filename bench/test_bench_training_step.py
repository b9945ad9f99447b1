"""A training step beside the bare kernel (issue 14), one benchmark group per dtype and thread count.

Run ``pytest bench/test_bench_training_step.py --benchmark-only``.  The rows and
their setup are those of ``fastsoftmax bench --training-step``
(:mod:`fastsoftmax.harness.training_step`): ``kernel`` on an already gathered
batch of 200 (the yardstick; target: a step <= 1.15x it), ``kernel, rows``
reading a fresh batch of rows in place each call, ``copy step`` (gather, loss,
``W -= lr * dW``) and ``rows step`` (``SGDStep``: ``rows=``, ``out=``, in-place
update), on X of 4585 x 3073 (CIFAR-shaped).  Before timing, the setup checks
that ``rows=`` agrees with the gathered call and records whether rows steps
equal copy steps bit for bit (``extra_info["identical"]``).

Without ``--benchmark-only`` each row runs one round, as the rest of ``bench/``.
"""

import pytest

from fastsoftmax.harness import training_step as ts
from fastsoftmax.harness.machine import machine_info
from fastsoftmax.harness.threads import limit_threads

_arrays = {}
_setups = {}


def _setup(dtype, n_threads):
    """The rows of one group, built once per session (data, check, warm-up: untimed)."""
    if (dtype, n_threads) not in _setups:
        if dtype not in _arrays:
            _arrays.clear()  # one dtype's X at a time (112 MB in float64)
            _arrays[dtype] = ts.data(dtype)
        with limit_threads(n_threads):
            _setups[(dtype, n_threads)] = ts.setup(dtype, n_threads, _arrays[dtype])
    return _setups[(dtype, n_threads)]


@pytest.mark.parametrize("row", ts.ROWS)
@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_training_step(benchmark, dtype, n_threads, row, full_run):
    calls, info = _setup(dtype, n_threads)
    assert info["agrees"], f"rows= disagrees with the gathered call: gradient error {info['grad_error']:.2e}"
    benchmark.group = f"training step|{dtype}|x{n_threads}"
    benchmark.extra_info.update(
        row=row, dtype=dtype, threads=n_threads, N=ts.N, D=ts.D, C=ts.C, batch=ts.BATCH,
        backend=info["backend"], identical=info["identical"], target=ts.TARGET,
        versions=machine_info()["libraries"],
    )
    with limit_threads(n_threads):
        if full_run:
            benchmark(calls[row])
        else:
            benchmark.pedantic(calls[row], rounds=1, iterations=1)
