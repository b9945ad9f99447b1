"""Determinism: same inputs and same thread count give bit-identical results, every time.

Design note
-----------
The compiled backends split the examples into one contiguous chunk per
thread, accumulate each chunk separately and add the chunks in a fixed
order, so for a given thread count the floating-point operations, and hence
the bits, are fixed.  Changing the thread count regroups the sum over
examples; :data:`ACROSS_THREADS` is the largest change that regrouping may
cause, measured and documented in docs/robustness.md ("Threads and determinism").
The numpy backend's threads are BLAS's (threadpoolctl); OpenBLAS partitions
its products statically, so the same holds for it.

Bit-identity is also checked on copies of the inputs (other addresses, so
other alignment), since SIMD kernels that peel to an aligned address can
otherwise round differently.
"""

import itertools

import numpy as np
import pytest

from fastsoftmax.harness.threads import limit_threads
from fastsoftmax.harness.cases import make_problem
from fastsoftmax.testing import random_problem, relative_error

#: Largest relative change (loss, gradient) between thread counts 1..8, by dtype.
#: Measured on CIFAR-like data (N = 4000, D = 3073, C = 10, reg = 1e3): float64
#: 2e-15 / 5e-15, float32 3e-15 / 2.8e-6 (numba and cython accumulate each
#: chunk's gradient in float32; the loss is summed in float64 everywhere).
ACROSS_THREADS = {np.dtype(np.float64): 1e-13, np.dtype(np.float32): 2e-5}

THREADS = [1, 2, 3]


def assert_identical(a, b, context):
    assert a[0] == b[0], f"{context}: loss {a[0]!r} != {b[0]!r}"
    assert a[1].dtype == b[1].dtype and np.array_equal(a[1], b[1]), f"{context}: gradients differ"


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n_threads", THREADS)
def test_repeated_calls_are_bit_identical(backend, dtype, n_threads):
    name, f = backend
    rng = np.random.default_rng(21)
    n = 40 if name == "python" else 1500
    W, X, y = random_problem(rng, n, 37, 10, dtype=dtype, scale=5.0)
    with limit_threads(n_threads):
        first = f(W, X, y, 0.3)
        for rep in range(4):
            assert_identical(f(W, X, y, 0.3), first, f"{name} call {rep + 2}")
        # Same values at other addresses (and so other alignments).
        for shift in range(1, 4):
            buf = np.empty(X.size + shift, dtype=X.dtype)[shift:].reshape(X.shape)
            buf[:] = X
            assert_identical(f(W.copy(), buf, y.copy(), 0.3), first, f"{name} copy offset {shift}")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_thread_count_changes_results_by_at_most_the_documented_bound(fast_backend, dtype):
    """Regrouping the sum over examples: tiny, bounded differences (docs/robustness.md)."""
    name, f = fast_backend
    W, X, y = make_problem(2000, 1000, 10, dtype, seed=4)
    results = {}
    for n in (1, 2, 3, 8):
        with limit_threads(n):
            results[n] = f(W, X, y, 1e3)
    bound = ACROSS_THREADS[np.dtype(dtype)]
    for n, res in results.items():
        loss_change = relative_error(res[0], results[1][0])
        grad_change = relative_error(res[1], results[1][1])
        assert loss_change <= bound and grad_change <= bound, (name, n, loss_change, grad_change)


def test_cython_blocking_follows_the_build_that_runs(monkeypatch):
    """The D-chunk is chosen per instruction-set build (``_common.CHUNK_BYTES``), for the build ``ISA`` selects.

    At CIFAR's shape: 5 KiB chunks of W.T for AVX2 (64 float64 / 128 float32
    elements of each class's row), 16 KiB for the others (192 / 400).
    """
    cython = pytest.importorskip("fastsoftmax.backends.cython")
    from fastsoftmax.backends._common import blocking

    assert [blocking(3073, 10, size, isa="avx2")[1] for size in (8, 4)] == [64, 128]
    assert [blocking(3073, 10, size, isa="avx512")[1] for size in (8, 4)] == [192, 400]
    assert blocking(3073, 10, 8, isa="baseline") == blocking(3073, 10, 8)
    monkeypatch.setattr(cython, "BLOCKING", None)
    for isa in cython.SUPPORTED_ISAS:
        monkeypatch.setattr(cython, "ISA", isa)
        assert cython._blocking(3073, 10, 8)[:2] == blocking(3073, 10, 8, isa=isa)
    monkeypatch.setattr(cython, "ISA", None)  # the widest build
    assert cython._blocking(3073, 10, 4)[:2] == blocking(3073, 10, 4, isa=cython.SUPPORTED_ISAS[-1])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cython_blocking_does_not_change_the_bits(dtype, monkeypatch):
    """The C kernel's tile (T rows), score D-chunk and prefetch are cache choices, not numerics.

    Each gradient element adds the rows one by one in problem order whatever
    the tile, and each score lane adds D in order whatever the chunk, so a
    machine with another L2 size (another ``blocking``) or other wisdom
    (``fastsoftmax tune``: chunk, whole-tile prefetch) gets the same bits
    for the same instruction-set build and thread count.
    """
    cython = pytest.importorskip("fastsoftmax.backends.cython")
    from fastsoftmax.backends import get

    rng = np.random.default_rng(5)
    W, X, y = random_problem(rng, 333, 3073, 10, dtype=dtype, scale=3.0)
    f = get("cython")
    for isa in cython.SUPPORTED_ISAS:
        monkeypatch.setattr(cython, "ISA", isa)
        monkeypatch.setattr(cython, "BLOCKING", None)
        monkeypatch.setattr(cython, "PREFETCH_TILE", False)
        first = f(W, X, y, 0.3, n_threads=1)
        for (tile, dchunk), whole in itertools.product([(5, 16), (20, 96), (40, 800), (333, 3072)], [False, True]):
            monkeypatch.setattr(cython, "BLOCKING", (tile, dchunk))
            monkeypatch.setattr(cython, "PREFETCH_TILE", whole)
            assert_identical(f(W, X, y, 0.3, n_threads=1), first, f"{isa} tile {tile} dchunk {dchunk} {whole}")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_numba_prefetch_does_not_change_the_bits(dtype, monkeypatch):
    """The Numba kernel's whole-tile prefetch (and the smaller gradient D-chunk that goes with it) is a cache
    choice, not numerics: each gradient element still adds the rows in problem order; with rows, a bias and
    a ragged last tile (N = 333 is no multiple of 10), on every thread count."""
    from fastsoftmax.backends import get, numba

    rng = np.random.default_rng(6)
    W, X, y = random_problem(rng, 333, 3073, 10, dtype=dtype, scale=3.0)
    rows, b = rng.integers(0, 333, 207), rng.standard_normal(10).astype(dtype)
    f = get("numba")
    for n_threads in THREADS:
        results = []
        for whole in (False, True):
            monkeypatch.setattr(numba, "PREFETCH_TILE", whole)
            results.append((f(W, X, y, 0.3, n_threads=n_threads), f(W, X, y, 0.3, b=b, rows=rows, n_threads=n_threads)))
        for plain, prefetched in zip(*results):
            assert_identical(prefetched, plain, f"x{n_threads}")
