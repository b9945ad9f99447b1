"""pytest-benchmark harness: fixtures shared by ``bench/test_benchmarks.py``.

Design note
-----------
``pytest --benchmark-only`` times every row of ``fastsoftmax bench`` (the
registered backends, the yardsticks and the installed peers) on every case
of :data:`fastsoftmax.harness.cases.CASES`, one ``benchmark.group`` per case so the
rows line up side by side.  What is timed is also what is verified: each row
is compared with the case's reference (:func:`fastsoftmax.harness.agreement.reference`)
before it is timed, and the test fails, naming the row, if they disagree.

The plain ``pytest`` run also collects this directory (``testpaths``), and
pytest-benchmark refuses ``--benchmark-only`` together with
``--benchmark-disable``, so the plain run cannot simply switch timing off.
Instead, without ``--benchmark-only`` (the ``full_run`` fixture):

* only :data:`fastsoftmax.harness.cases.QUICK_CASES` (N = 500) run; the larger cases
  are skipped with a reason;
* every row is checked against the reference exactly as in a full run, and
  timed for a single pedantic round (one call), so the harness itself is
  exercised in seconds, not minutes; the reference row itself (``python``,
  seconds per call) is not run a second time.

Case data are built once per session: ``case_setup`` is a session-scoped
fixture parametrized over the cases, so pytest runs all tests of a case
together and builds its arrays (1.2 GB for N = 49000 in float64) once, then
drops them before the next case.

Threads: the rows use :func:`fastsoftmax.get_num_threads` (all cores, or
``FASTSOFTMAX_NUM_THREADS``); BLAS and OpenMP pools are limited to the same
count with threadpoolctl.
"""

import os
from typing import NamedTuple

import pytest

from fastsoftmax.harness.agreement import reference
from fastsoftmax.harness.inputs import case_data
from fastsoftmax.backends._validate import Problem, prepare
from fastsoftmax.harness.cases import CASES, QUICK_CASES, Case
from fastsoftmax.testing import REQUIRE_ALL_ENV

def _full_run(config):
    return bool(config.getoption("benchmark_only", False))


@pytest.fixture(scope="session")
def full_run(request):
    """True under ``--benchmark-only``: time everything at length."""
    return _full_run(request.config)


@pytest.fixture(scope="session")
def require_all():
    """True where every built-in backend must load (``FASTSOFTMAX_REQUIRE_ALL_BACKENDS=1``)."""
    return os.environ.get(REQUIRE_ALL_ENV) == "1"


class CaseSetup(NamedTuple):
    """A case's validated inputs and its reference result, built once per session."""

    case: Case
    problem: Problem
    source: str
    reference_name: str
    reference: tuple


@pytest.fixture(scope="session", params=CASES, ids=lambda case: case.name)
def case_setup(request):
    """The arrays and reference result of one case (built once per session)."""
    case = request.param
    if case not in QUICK_CASES and not _full_run(request.config):
        pytest.skip(f"{case.name} is timed only under --benchmark-only (the plain run checks N=500 once)")
    args, source = case_data(case)
    problem = prepare(*args)
    ref_name, ref = reference(*problem.args)
    return CaseSetup(case, problem, source, ref_name, ref)
