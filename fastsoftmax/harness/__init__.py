"""The benchmark harness: ``fastsoftmax bench`` and the shared case table of ``bench/``.

Layout
------
``cases``      the one table of problems that tests, ``bench/`` and the CLI use
``agreement``  the documented tolerances and the one reference (python / float64 NumPy)
``peers``      rows that are not our backends: yardsticks and other libraries
``inputs``     a case's arrays, synthetic or real CIFAR-10
``rows``       each row set up outside the timed region
``threads``    every thread pool held to the row's count
``compile``    Numba's compile time as its own figure
``memory``     peak extra memory, in a separate process
``machine``    what the run ran on
``report``     table, JSON and chart
``run``        :func:`run`, what ``fastsoftmax bench`` calls

The harness imports the kernels (:mod:`fastsoftmax.backends`); the kernels
never import the harness.  Nothing here is imported by ``import fastsoftmax``.
"""

from .run import run

__all__ = ["run"]
