"""The two-layer net's rows on its cases: every net backend and the GEMM roofline yardstick, checked, then timed.

The same table as ``fastsoftmax bench`` (:data:`fastsoftmax.harness.net.NET_CASES`),
one ``benchmark.group`` per case (``net N=500|float64`` ...), so the backends
sit beside the yardstick.  Each backend is compared with the case's
reference (:func:`fastsoftmax.harness.net.net_reference`) before it is
timed; under the plain ``pytest`` run only N = 500 is checked and timed for
one round (see ``bench/conftest.py``).
"""

from typing import NamedTuple

import pytest

from fastsoftmax import backends, get_num_threads
from fastsoftmax.backends._validate import NetProblem, prepare_net
from fastsoftmax.harness.machine import machine_info
from fastsoftmax.harness.net import (
    NET_CASES, QUICK_NET_CASES, YARDSTICK, NetCase, compare_net, net_reference, setup_net_row,
)
from fastsoftmax.harness.threads import limit_threads


class NetSetup(NamedTuple):
    case: NetCase
    problem: NetProblem
    reference_name: str
    reference: tuple


@pytest.fixture(scope="session", params=NET_CASES, ids=lambda case: case.name)
def net_setup(request, full_run):
    """The arrays and reference of one net case (built once per session)."""
    case = request.param
    if case not in QUICK_NET_CASES and not full_run:
        pytest.skip(f"{case.name} is timed only under --benchmark-only (the plain run checks N=500 once)")
    problem = prepare_net(*case.make())
    return NetSetup(case, problem, *net_reference(problem))


@pytest.mark.parametrize("name", [*backends.NET_BACKENDS, YARDSTICK])
def test_net_row(benchmark, net_setup, name, full_run, require_all):
    """A net backend (agreement with the reference, then time per call) or the GEMM yardstick."""
    case, problem = net_setup.case, net_setup.problem
    if name != YARDSTICK:
        reason = case.skip_reason(name)
        if reason is None and name not in backends.available("net"):
            reason = backends.unavailable("net").get(name, f"net backend {name!r} is not available")
            if require_all:
                pytest.fail(f"net backend {name!r} must be available here: {reason}")
        if reason is not None:
            pytest.skip(reason)
    threads = get_num_threads()
    with limit_threads(threads):
        check, timed = setup_net_row(name, problem, threads)
        if check is not None:
            error, tol = compare_net(check(), net_setup.reference, problem.W1.dtype)  # also the JIT warm-up
            if error > tol:
                pytest.fail(f"net backend {name!r} disagrees with the reference ({net_setup.reference_name}) on "
                            f"{case.name}: error {error:.2e}, tolerance {tol:.0e}", pytrace=False)
        else:
            timed()  # warm-up, untimed
        benchmark.group = case.name
        benchmark.extra_info.update(kind="yardstick" if name == YARDSTICK else "backend", threads=threads,
                                    dtype=case.dtype, N=case.n, D=case.d, H=case.h, C=case.c,
                                    gflop=case.flops / 1e9, reference=net_setup.reference_name,
                                    versions=machine_info()["libraries"])
        if full_run:
            benchmark(timed)
        else:
            benchmark.pedantic(timed, rounds=1, iterations=1)
