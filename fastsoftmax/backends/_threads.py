"""How many threads the ``numba`` and ``cython`` backends use.

Design note
-----------
One setting, read by the compiled backends at every call:

* default: every core this process may run on (``os.sched_getaffinity``);
* the environment variable ``FASTSOFTMAX_NUM_THREADS`` overrides the default;
* :func:`set_num_threads` overrides both for the whole process;
* ``with fastsoftmax.threads(n):`` overrides all of them for the code inside
  the block, in this thread (or asyncio task) only, so concurrent callers can
  each choose their own.

BLAS threads (used by the ``numpy`` backend) are a separate pool that belongs
to NumPy; control them with ``threadpoolctl.threadpool_limits``, which
``fastsoftmax bench --threads`` does for you.
"""

import contextlib
import contextvars
import os

from ._validate import integer

__all__ = ["get_num_threads", "set_num_threads", "threads"]

_ENV = "FASTSOFTMAX_NUM_THREADS"
_process_setting = None
_context_setting = contextvars.ContextVar("fastsoftmax_num_threads", default=None)


def _cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def get_num_threads():
    """Return the number of threads the compiled backends will use now.

    Returns
    -------
    int
        At least 1.
    """
    n = _context_setting.get()
    if n is not None:
        return n
    if _process_setting is not None:
        return _process_setting
    env = os.environ.get(_ENV)
    if env:
        try:
            return integer(int(env), _ENV, 1)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{_ENV}={env!r} is not a positive integer") from exc
    return _cores()


def set_num_threads(n):
    """Set the number of threads for the compiled backends, process-wide.

    Parameters
    ----------
    n : int or None
        A positive thread count, or None to go back to the default (all
        cores, or ``FASTSOFTMAX_NUM_THREADS``).
    """
    global _process_setting
    _process_setting = None if n is None else integer(n, "n", 1)


@contextlib.contextmanager
def threads(n):
    """Use ``n`` threads in the compiled backends inside a ``with`` block.

    Parameters
    ----------
    n : int
        A positive thread count; applies to this thread or task only.
    """
    token = _context_setting.set(integer(n, "n", 1))
    try:
        yield
    finally:
        _context_setting.reset(token)
