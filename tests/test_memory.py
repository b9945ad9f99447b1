"""Memory: no leaks over many calls, and no hidden copy of X.

Design note
-----------
* Leaks: 10000 calls on a small problem must not grow the process's resident
  memory (psutil; freed heap is first handed back with glibc's malloc_trim,
  so a leak needs new pages), the memory tracemalloc traces (NumPy's data,
  Python objects), nor the number of live Python memory blocks
  (``sys.getallocatedblocks``), which catches a leaked reference to even one
  small object per call.
* Copies of X: X is the one large array (N x D); the validator never copies
  it when it has the working dtype (``fastsoftmax.backends._validate``), and a kernel
  may copy it only to change an unusable layout.  Two independent meters
  check a C-contiguous X of the working dtype, 40-80 MB so that a copy is
  obvious: ``tracemalloc`` (sees NumPy's and Cython's allocations) and the
  process's peak RSS, reset just before the call through
  ``/proc/self/clear_refs`` (sees every allocator, including Numba's NRT,
  which tracemalloc cannot see).
* The python backend is excluded: it is the reference, and turns X into
  nested lists by design (and 10000 calls of it would take minutes).
"""

import ctypes
import gc
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import psutil
import pytest

import fastsoftmax
from fastsoftmax import backends
from fastsoftmax.testing import load_backend, random_problem

# Every registered backend but the reference (which favours clarity over
# memory) gets the memory tests, a new one included.
FAST = [name for name in backends.BACKENDS if name != "python"]
MB = 2**20


def _trim_heap():
    """Hand freed heap pages back to the OS (glibc), so new allocations show in RSS."""
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: RSS is then a coarser meter
        pass


def growth_over_calls(f, calls=10_000):
    """Growth over ``calls`` calls of ``f``: RSS and traced bytes, and live memory blocks."""
    W, X, y = random_problem(np.random.default_rng(0), 20, 50, 10)
    proc = psutil.Process()

    # One call in 100 runs two threads (several chunks: the parallel path);
    # the rest one thread, because on a tiny problem a parallel launch costs
    # milliseconds on a busy machine against 0.2 ms for a whole serial call.
    def run(k):
        for i in range(k):
            with fastsoftmax.threads(2 if i % 100 == 0 else 1):
                f(W, X, y, 0.1)

    run(500)  # warm up: compile, fill caches and free lists
    tracemalloc.start()
    try:
        _trim_heap()
        rss, traced, blocks = proc.memory_info().rss, tracemalloc.get_traced_memory()[0], sys.getallocatedblocks()
        run(calls)
        gc.collect()
        return {
            "rss": proc.memory_info().rss - rss,
            "traced": tracemalloc.get_traced_memory()[0] - traced,
            "blocks": sys.getallocatedblocks() - blocks,
        }
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("name", FAST)
def test_many_calls_do_not_leak(name):
    grown = growth_over_calls(load_backend(name))
    # A leaked dW alone would be 10000 x 4 KB = 40 MB; one leaked object per call, 10000 blocks.
    assert grown["rss"] < 4 * MB, f"{name}: RSS grew {grown['rss'] / MB:.1f} MB over 10000 calls"
    assert grown["traced"] < 1 * MB, f"{name}: traced memory grew {grown['traced'] / MB:.1f} MB"
    assert grown["blocks"] < 1000, f"{name}: {grown['blocks']} more live memory blocks after 10000 calls"


def test_the_leak_check_catches_a_leak():
    """The meters above do see a kernel that keeps one small gradient per call."""
    kept = []

    def leaky(problem, n_threads):
        loss, dW, db = backends.get_kernel("numpy")(problem, n_threads)
        kept.append(dW.copy())
        return loss, dW, db

    backends.register("leaky", leaky)
    try:
        grown = growth_over_calls(backends.get("leaky"))
    finally:
        backends.unregister("leaky")
    # RSS may be served from heap freed by earlier tests; the other two meters cannot miss it.
    assert grown["traced"] > 30 * MB and grown["blocks"] > 5000, grown


def _peak_rss_reset():
    """Reset the kernel's peak-RSS mark to the current RSS; False if this system cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _peak_rss():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")  # pragma: no cover


def big_problem(wdt, xdt):
    rng = np.random.default_rng(1)
    n, d, c = 20_000, 500, 10
    X = rng.standard_normal((n, d), dtype=xdt)
    W = (0.01 * rng.standard_normal((d, c))).astype(wdt)
    return W, X, rng.integers(0, c, n)


def call_peaks(f, W, X, y):
    """(peak traced bytes, peak RSS growth in bytes or None) during one call of ``f``."""
    with fastsoftmax.threads(2):
        # Warm up on the full problem: compilation, and BLAS's one-time
        # workspace for large products (OpenBLAS maps ~20 MB on its first big
        # sgemm), are setup, not a per-call copy; a real copy recurs each call.
        f(W, X, y, 0.1)
        gc.collect()
        tracemalloc.start()
        try:
            can_reset = _peak_rss_reset()
            rss = psutil.Process().memory_info().rss
            f(W, X, y, 0.1)
            peak_rss = _peak_rss() - rss if can_reset else None
            _, peak_traced = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    return peak_traced, peak_rss


@pytest.mark.parametrize(
    "wdt, xdt",
    [(np.float32, np.float32), (np.float64, np.float64), (np.float32, np.float64)],
    ids=["f32", "f64", "f32W-f64X"],
)
@pytest.mark.parametrize("name", FAST)
def test_no_copy_of_x(name, wdt, xdt):
    """A C-contiguous X in the working dtype is read in place, never copied or cast."""
    W, X, y = big_problem(wdt, xdt)
    peak_traced, peak_rss = call_peaks(load_backend(name), W, X, y)
    limit = X.nbytes // 4  # a copy is >= 1x X (2x for a float64 copy of float32 X)
    assert peak_traced < limit, f"{name}: traced peak {peak_traced / MB:.1f} MB for X of {X.nbytes / MB:.0f} MB"
    if peak_rss is not None:
        assert peak_rss < limit, f"{name}: peak RSS +{peak_rss / MB:.1f} MB for X of {X.nbytes / MB:.0f} MB"


@pytest.mark.parametrize("meter", ["tracemalloc", "peak-rss"])
def test_the_copy_check_catches_a_copy(meter):
    """Both meters see a kernel that quietly works on a float64 copy of a float32 X."""

    def copier(problem, n_threads):
        wide = problem._replace(W=problem.W.astype(np.float64), X=problem.X.astype(np.float64))
        loss, dW, db = backends.get_kernel("numpy")(wide, n_threads)
        return loss, dW.astype(problem.W.dtype), db

    W, X, y = big_problem(np.float32, np.float32)
    backends.register("copier", copier)
    try:
        peaks = call_peaks(backends.get("copier"), W, X, y)
    finally:
        backends.unregister("copier")
    peak = peaks[0] if meter == "tracemalloc" else peaks[1]
    if peak is None:
        pytest.skip("this system cannot reset the peak RSS (/proc/self/clear_refs)")
    assert peak > X.nbytes, f"{meter} saw only {peak / MB:.1f} MB"
