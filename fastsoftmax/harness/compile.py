"""Numba's compile time as a figure of its own: a fresh copy of the backend module.

Design note
-----------
Compilation never happens inside a timed row (the checked first call
absorbs it).  To *report* it, ``bench/`` loads the ``numba`` backend's source
again under a new name, so its dispatchers start empty, with Numba's cache
pointed at an empty directory (cold) or at the usual one (warm).
"""

from __future__ import annotations

import sys

from .. import backends

__all__ = ["fresh_numba_backend"]

_fresh_count = 0


def fresh_numba_backend(cache_dir):
    """A new copy of the ``numba`` backend module, with nothing compiled yet.

    The module's source is executed again under a new name while Numba's
    cache directory points at ``cache_dir``: its jitted functions are new
    dispatchers, so the first call compiles from scratch if ``cache_dir`` is
    empty, or loads from that on-disk cache if an earlier copy filled it.
    Whatever helper functions the module defines are recompiled with it.

    Parameters
    ----------
    cache_dir : str or None
        An existing directory (a fresh empty one for a cold compile), or
        None for the backend's usual cache (``NUMBA_CACHE_DIR`` or the user
        cache directory, see :mod:`fastsoftmax.backends._numba_cache`), which
        the installed backend fills on its first call ever.

    Returns
    -------
    module
        Its ``softmax_loss`` is the kernel (inputs from ``prepare``).
    """
    import importlib.util

    import numba

    global _fresh_count
    _fresh_count += 1
    origin = importlib.util.find_spec(backends.BACKENDS["numba"]).origin
    name = f"fastsoftmax.backends._numba_fresh{_fresh_count}"
    spec = importlib.util.spec_from_file_location(name, origin)
    module = importlib.util.module_from_spec(spec)
    old = numba.config.CACHE_DIR
    numba.config.CACHE_DIR = old if cache_dir is None else cache_dir
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        numba.config.CACHE_DIR = old
    return module
