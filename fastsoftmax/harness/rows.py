"""What a benchmark row is: a backend, a yardstick or a peer, set up outside the timed region.

Design note
-----------
Every row becomes two callables by :func:`setup_row`: ``check`` (the public,
validating function, compared with the reference once) and ``timed`` (what
the clock sees: a backend's raw kernel on the already validated problem).
All setup, JIT compilation included, happens before the clock starts.
"""

from __future__ import annotations

import numpy as np

from .. import backends
from .peers import PEERS, ROWS, YARDSTICKS, row_status

__all__ = ["row_names", "row_kind", "setup_row", "skip_reason"]


def row_names(backend_names=None, peers=True):
    """Rows of a run, in table order: backends, then yardsticks, then peers.

    Parameters
    ----------
    backend_names : list of str or None
        Backends to run (None: every available one, registered extras too).
    peers : bool
        Include the peer rows.

    Returns
    -------
    list of str
    """
    names = list(backends.available()) if backend_names is None else list(backend_names)
    names += list(YARDSTICKS)
    if peers:
        names += list(PEERS)
    return names


def row_kind(name):
    """``"backend"``, ``"yardstick"`` or ``"peer"``."""
    return ROWS[name].kind if name in ROWS else "backend"


def setup_row(name, problem, threads):
    """Prepare row ``name`` on validated inputs, outside any timed region.

    Parameters
    ----------
    name : str
        A backend or a key of :data:`fastsoftmax.harness.ROWS`.
    problem : fastsoftmax.backends._validate.Problem
    threads : int

    Returns
    -------
    check : callable
        ``check() -> (loss, dW)`` (None for the floor): the call compared
        with the reference; for a backend, its public, validating function.
    timed : callable
        ``timed()``: what is timed; for a backend, its raw kernel.
    """
    if name in ROWS:
        fn = ROWS[name].setup(problem, threads)
        return fn, fn
    public, kernel = backends.get(name), backends.get_kernel(name)

    def timed():
        with np.errstate(all="ignore"):  # as the registry's wrapper does
            return backends.run_kernel(kernel, problem, threads)

    return (lambda: public(*problem.args, n_threads=threads)), timed


def skip_reason(case, name):
    """Why row ``name`` does not run on ``case`` here (str), or None."""
    if name in ROWS:
        return row_status(name)
    reason = case.skip_reason(name)
    if reason is None and name not in backends.available():
        reason = backends.unavailable().get(name, f"backend {name!r} is not available")
    return reason
