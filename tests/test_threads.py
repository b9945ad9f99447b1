"""Threads: concurrent callers get the serial answer, the GIL is released, the thread count holds.

Design note
-----------
* Concurrent calls run in a subprocess: if a threading layer cannot take
  parallel launches from several Python threads it aborts the process (Numba's
  ``workqueue`` layer does), and that must fail one test, not kill the run.
  Each is checked bit-for-bit against the same call made serially.
* GIL release is checked two ways: a timing-free one (while the kernel runs in
  a worker thread, the main thread keeps executing Python, so the longest gap
  between its heartbeats is far shorter than the call), and the speedup of two
  threads on two problems over doing them one after the other, measured in
  the same test on this noisy shared machine with a generous bound.
* "The thread count is respected" is measured from the CPU time each OS
  thread accumulates during a batch of calls (psutil), which does not depend
  on how busy the machine is: with ``threads(1)`` one thread does all the
  work, with ``threads(2)`` two threads each do a large share.
"""

import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import psutil
import pytest

import fastsoftmax
from fastsoftmax import backends
from fastsoftmax.harness.cases import make_problem
from fastsoftmax.testing import load_backend

# Every registered backend gets the thread tests, a new one included, except
# these, each with the reason.
NOT_THREADED = {
    "python": "the reference: plain loops on the calling thread",
    "numpy": "no threads of its own: its parallelism is the BLAS library's",
}
THREADED = [name for name in backends.BACKENDS if name not in NOT_THREADED]


def test_thread_exemptions_name_registered_backends():
    assert set(NOT_THREADED) <= set(backends.BACKENDS)

CONCURRENT = textwrap.dedent(
    """
    import sys
    from concurrent.futures import ThreadPoolExecutor
    import numpy as np
    import fastsoftmax
    from fastsoftmax.testing import random_problem

    f = fastsoftmax.backends.get(sys.argv[1])
    rng = np.random.default_rng(0)
    jobs = []
    for k in range(12):
        n, d, c = int(rng.integers(1, 400)), int(rng.integers(1, 70)), int(rng.integers(1, 12))
        dtype = (np.float32, np.float64)[k % 2]
        W, X, y = random_problem(rng, n, d, c, dtype=dtype, scale=3.0)
        jobs.append((W, X, y, 0.1 * k, 1 + k % 3))

    def run(job):
        W, X, y, reg, n_threads = job
        with fastsoftmax.threads(n_threads):
            return f(W, X, y, reg)

    serial = [run(job) for job in jobs]
    with ThreadPoolExecutor(8) as pool:
        for rep in range(5):
            for i, (got, want) in enumerate(zip(pool.map(run, jobs), serial)):
                if got[0] != want[0] or not np.array_equal(got[1], want[1]):
                    print(f"MISMATCH job {i} repetition {rep}: {got[0]!r} != {want[0]!r}")
                    sys.exit(1)
    if sys.argv[1] == "numba":
        import numba
        print("OK", numba.threading_layer())
    else:
        print("OK", sys.argv[1])
    """
)


def _run_concurrent(name, env_extra=None):
    load_backend(name)  # skip (or fail under CI) if the backend cannot load
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-c", CONCURRENT, name], capture_output=True, text=True, env=env, timeout=600
    )


@pytest.mark.parametrize("name", THREADED)
def test_concurrent_calls_give_the_serial_results(name):
    """12 problems, 8 Python threads, 5 rounds: every result bit-identical to the serial one."""
    out = _run_concurrent(name)
    assert out.returncode == 0 and out.stdout.startswith("OK"), out.stdout + out.stderr[-2000:]


def test_concurrent_numba_calls_under_workqueue_layer():
    """Numba's fallback 'workqueue' layer aborts on concurrent launches; the backend serialises them."""
    out = _run_concurrent("numba", {"NUMBA_THREADING_LAYER": "workqueue"})
    assert "Concurrent access has been detected" not in out.stderr
    assert out.returncode == 0 and out.stdout.startswith("OK workqueue"), out.stdout + out.stderr[-2000:]


def _heartbeat_gaps(call):
    """Run ``call`` in a worker; return (its duration, longest gap between main-thread beats)."""
    done = threading.Event()
    span = {}

    def worker():
        span["start"] = time.perf_counter()
        call()
        span["stop"] = time.perf_counter()
        done.set()

    beats = []
    t = threading.Thread(target=worker)
    t.start()
    while not done.is_set():
        beats.append(time.perf_counter())
    t.join()
    inside = [b for b in beats if span["start"] <= b <= span["stop"]]
    edges = [span["start"], *inside, span["stop"]]
    return span["stop"] - span["start"], max(b - a for a, b in zip(edges, edges[1:]))


@pytest.fixture(scope="module")
def two_big_problems():
    """Two different N = 10000 float32 problems (D = 400, C = 10)."""
    return [make_problem(10_000, 400, 10, "float32", seed=s) + (0.1,) for s in (1, 2)]


@pytest.mark.parametrize("name", THREADED)
def test_kernel_releases_the_gil(two_big_problems, name):
    """The main thread keeps running Python while the kernel runs: no long GIL hold.

    cython releases the GIL explicitly (``with nogil``); Numba's parallel
    region, with the OpenMP or TBB layer, runs the loop in its own pool while
    the caller waits without the GIL.
    """
    f = load_backend(name)
    W, X, y, reg = two_big_problems[0]
    with fastsoftmax.threads(1):
        f(W, X, y, reg)  # warm up
        results = []
        for _ in range(3):
            results.append(_heartbeat_gaps(lambda: f(W, X, y, reg)))
    duration, gap = min(results, key=lambda r: r[1] / r[0])
    # Holding the GIL for the whole kernel would make gap ~ duration.  The
    # switch interval is 5 ms; the rest is scheduling noise on a busy machine.
    print(f"{name}: longest main-thread stall {gap * 1e3:.1f} ms in a {duration * 1e3:.1f} ms call")
    assert gap < 0.5 * duration, f"longest main-thread stall {gap * 1e3:.1f} ms in a {duration * 1e3:.1f} ms call"


def _overlap_ratio(work, args):
    """Wall time of ``work`` on both ``args`` in two threads / one after the other."""
    t0 = time.perf_counter()
    for a in args:
        work(a)
    serial = time.perf_counter() - t0
    threads = [threading.Thread(target=work, args=(a,)) for a in args]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return (time.perf_counter() - t0) / serial


def test_cython_calls_overlap_in_two_threads():
    """Two threads on two problems take clearly less than the two calls one after the other.

    The yardstick is measured alongside: hashlib, which releases the GIL, on
    the same bytes.  1.0 means no overlap, 0.5 perfect overlap on two cores.
    A kernel holding the GIL stays near 1.0 however free the machine is.
    Up to 10 tries; it passes on the first that overlaps, fails if hashlib
    overlapped in most tries but cython never did, and otherwise skips with
    the numbers: the machine was saturated (the GIL test above still holds).
    A try that does not overlap is followed by a short pause, so the tries
    span about two seconds: back to back, all ten once fell inside one busy
    spell of the shared machine (CI, session 8: cython 0.82-0.91 in every
    try; standalone, cython overlaps in about 80 % of tries).  Each thread
    makes 40 calls on a cache-sized problem (3.2 MB of X; about 10 ms): with
    one call on ``two_big_problems`` each (2.5 ms, 16 MB of X, about the
    Zen 5's whole L3 together) the threads' start and the shared memory
    bandwidth kept the ratio at 0.72-1.26, failing CI once in session 17
    with hashlib at 0.53; 40 calls gave 0.55-0.65 after the first try.
    """
    import hashlib

    f = load_backend("cython")
    problems = [make_problem(2_000, 400, 10, "float32", seed=s) + (0.1,) for s in (1, 2)]

    def kernel(problem):
        with fastsoftmax.threads(1):
            for _ in range(40):
                f(*problem)

    def yardstick(buf):
        hashlib.sha256(buf).digest()

    bufs = [p[1].tobytes() * 4 for p in problems]
    for p in problems:
        kernel(p)  # warm up
    ours, ref = [], []
    for _ in range(10):
        ref.append(_overlap_ratio(yardstick, bufs))
        ours.append(_overlap_ratio(kernel, problems))
        if ours[-1] < 0.8:
            break
        time.sleep(0.2)
    report = (
        f"two threads / serial: cython {' '.join(f'{r:.2f}' for r in ours)}; "
        f"hashlib yardstick {' '.join(f'{r:.2f}' for r in ref)}"
    )
    print(report)
    if ours[-1] < 0.8:
        return
    # Fail only if the machine clearly had two cores to give most of the time.
    if sum(r < 0.8 for r in ref) < len(ref) // 2:
        pytest.skip(f"machine too busy to show overlap ({report})")
    pytest.fail(f"cython calls do not overlap: {report}")


def _cpu_by_thread():
    return {t.id: t.user_time + t.system_time for t in psutil.Process().threads()}


@pytest.mark.parametrize("name", THREADED)
@pytest.mark.parametrize("n_threads", [1, 2])
def test_thread_count_is_respected(name, n_threads):
    """CPU time during the calls lands on exactly ``n_threads`` OS threads."""
    f = load_backend(name)
    W, X, y, reg = make_problem(8_000, 300, 10, "float64", seed=3) + (0.1,)
    with fastsoftmax.threads(n_threads):
        assert fastsoftmax.get_num_threads() == n_threads
        f(W, X, y, reg)  # warm up: compile, start the pool
        before = _cpu_by_thread()
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 1.0:
            f(W, X, y, reg)
        after = _cpu_by_thread()
    spent = {tid: after[tid] - before.get(tid, 0.0) for tid in after}
    total = sum(spent.values())
    busy = sorted((s for s in spent.values() if s > 0.2 * total), reverse=True)
    shares = [f"{s / total:.2f}" for s in sorted(spent.values(), reverse=True)[:4]]
    assert len(busy) == n_threads, f"{name} threads({n_threads}): CPU shares by thread {shares}"
    if name == "numba":
        import numba

        assert numba.get_num_threads() == n_threads  # the setting reached Numba


@pytest.mark.parametrize("name", THREADED)
def test_more_threads_than_cores_or_examples(name, reference):
    """A thread count above the core count, or above N, still gives the right answer."""
    f = load_backend(name)
    from fastsoftmax.testing import compare, random_problem

    rng = np.random.default_rng(5)
    for n in (1, 3, 50):
        W, X, y = random_problem(rng, n, 9, 4)
        with fastsoftmax.threads(4 * os.cpu_count() + 1):
            got = f(W, X, y, 0.2)
        assert compare(got, reference(W, X, y, 0.2), np.float64).ok, (name, n)
