"""Every backend, yardstick and peer on every case, checked, then timed.

Run ``pytest --benchmark-only`` from the repository root (see
docs/benchmarks.md and ``bench/conftest.py`` for what the plain run does).
"""

import tempfile

import numpy as np
import pytest

from fastsoftmax import backends, get_num_threads
from fastsoftmax.harness import peers
from fastsoftmax.harness.compile import fresh_numba_backend
from fastsoftmax.harness.machine import machine_info
from fastsoftmax.harness.roofline import gemm_rate, isa_note, stream_rate, t_star
from fastsoftmax.harness.rows import row_kind, setup_row, skip_reason
from fastsoftmax.harness.threads import limit_threads
from fastsoftmax.testing import compare, random_problem
from fastsoftmax.backends._validate import prepare

#: Built-in backends (skipped with the reason where they cannot load) and any
#: added with ``fastsoftmax.backends.register`` before collection.
BACKEND_NAMES = list(dict.fromkeys([*backends.BACKENDS, *backends.available()]))


def _check_then_time(benchmark_fixture, setup, name, full_run, require_all):
    case, problem = setup.case, setup.problem
    reason = skip_reason(case, name)
    if reason is not None:
        if require_all and name in backends.BACKENDS and case.skip_reason(name) is None:
            pytest.fail(f"backend {name!r} must be available here: {reason}")
        pytest.skip(reason)
    if name == setup.reference_name and not full_run:
        pytest.skip(f"{name} computed this case's reference once already; it is timed under --benchmark-only")
    threads = get_num_threads()
    kind = row_kind(name)
    with limit_threads(threads):
        check, timed = setup_row(name, problem, threads)  # JIT, copies: untimed
        # The reference row is not compared with itself (that proves nothing
        # and would cost another slow python call).
        result = None if name == setup.reference_name else check()
        if result is not None:
            agreement = compare(result, setup.reference, problem.W.dtype)
            if not agreement.ok:
                pytest.fail(
                    f"{kind} {name!r} disagrees with the reference ({setup.reference_name}) on "
                    f"{case.name}: loss error {agreement.loss_error:.2e}, gradient error "
                    f"{agreement.grad_error:.2e}, tolerance {agreement.tolerance:.0e}",
                    pytrace=False,
                )
        benchmark_fixture.group = case.name
        benchmark_fixture.extra_info.update(
            kind=kind,
            threads=peers.jax_threads() if name == "jax" else threads,  # XLA's pool is fixed
            dtype=case.dtype,
            N=case.n,
            D=case.d,
            C=case.c,
            data=setup.source,
            reference=setup.reference_name,
            versions=machine_info()["libraries"],
        )
        if full_run:
            benchmark_fixture(timed)
        else:
            benchmark_fixture.pedantic(timed, rounds=1, iterations=1)
        _add_roofline(benchmark_fixture, setup, name, threads, full_run)


_stream_rates = {}


def _add_roofline(benchmark_fixture, setup, name, threads, full_run):
    """extra_info: R_gemm, R_stream (measured in this session, same dtype and threads), % of roofline.

    Also whether ``name`` is the backend ``fastsoftmax.softmax_loss`` picks
    for this dtype, N and thread count.
    """
    case = setup.case
    key = (case.name, threads)
    if key not in _stream_rates:
        _stream_rates[key] = stream_rate(setup.problem.X, threads, repeat=5 if full_run else 1)
    r_stream = _stream_rates[key]
    r_gemm = gemm_rate(case.dtype, threads, repeat=5 if full_run else 1)
    t, bound = t_star(case.flops, case.x_bytes, r_gemm, r_stream)
    median = benchmark_fixture.stats.stats.median
    benchmark_fixture.extra_info.update(
        r_gemm_gflops=r_gemm / 1e9,
        r_stream_gbs=r_stream / 1e9,
        t_star_s=t,
        roof_bound=bound,
        roofline_pct=100.0 * t / median if median > 0 and name != "stream X" else None,
        picked=name == backends.fastest(case.dtype, case.n, threads=threads),
        isa=isa_note(),
    )


@pytest.mark.parametrize("name", BACKEND_NAMES)
def test_backend(benchmark, case_setup, name, full_run, require_all):
    """A fastsoftmax backend: agreement with the reference, then time per call."""
    _check_then_time(benchmark, case_setup, name, full_run, require_all)


@pytest.mark.parametrize("name", list(peers.ROWS))
def test_yardstick_or_peer(benchmark, case_setup, name, full_run):
    """Textbook NumPy, the stream-X floor, and scikit-learn / PyTorch / JAX where installed."""
    _check_then_time(benchmark, case_setup, name, full_run, require_all=False)


@pytest.mark.parametrize("cache", ["cold", "warm"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_numba_first_call(benchmark, dtype, cache, full_run):
    """Numba's first call: a fresh compile (cold: empty cache) vs a load from Numba's on-disk cache (warm).

    Each round executes a new copy of the numba backend module
    (:func:`fastsoftmax.harness.compile.fresh_numba_backend`) and times its first
    call on a tiny problem, so the figure is compilation (or cache loading),
    not arithmetic.
    """
    if "numba" not in backends.available():
        pytest.skip(backends.unavailable().get("numba", "numba backend not available"))
    if not full_run and (cache == "cold" or dtype != "float64"):
        pytest.skip("a cold Numba compile takes seconds: timed only under --benchmark-only")
    problem = prepare(*random_problem(np.random.default_rng(0), 64, 33, 10, dtype), 1e-3)
    with tempfile.TemporaryDirectory() as root:
        if cache == "warm":
            # Numba's usual on-disk cache, as a user's second process sees
            # it; filled here (untimed) if this is the first call ever.
            fresh_numba_backend(None).softmax_loss(problem, get_num_threads())

        def setup():
            directory = None if cache == "warm" else tempfile.mkdtemp(dir=root)
            return (fresh_numba_backend(directory),), {}

        benchmark.group = f"numba first call|{dtype}"
        benchmark.extra_info.update(
            cache=cache, dtype=dtype, threads=get_num_threads(), N=64, D=33, C=10,
            versions=machine_info()["libraries"],
        )
        rounds = 3 if full_run else 1
        benchmark.pedantic(lambda m: m.softmax_loss(problem, get_num_threads()), setup=setup, rounds=rounds)
