"""Where fastsoftmax's Numba code is cached on disk: a per-user directory, never the package.

Design note
-----------
Numba's own ``cache=True`` writes beside the source file
(``fastsoftmax/backends/__pycache__/``) whenever that is writable.  For an
installed package that is ``site-packages``: files pip does not own, which
survive ``pip uninstall`` and leave a ``fastsoftmax/`` directory that Python
then imports as an empty namespace package (issue 10).  So every jitted
function of the package (the ``numba`` backend's kernels, the benchmark
harness's stream kernel) is decorated with :func:`jit`, whose cache is looked
for, in order, in

1. ``NUMBA_CACHE_DIR`` when set (Numba reads it into
   ``numba.config.CACHE_DIR``), then
2. the platform's user cache directory (``platformdirs``), e.g.
   ``~/.cache/fastsoftmax/numba`` on Linux,

the first one that exists or can be created and is writable.  Inside it the
layout is Numba's (one subdirectory per source directory, named by its hash),
so ``NUMBA_CACHE_DIR`` holds exactly what Numba itself would put there.

The cache is an optimisation, never a reason to fail: with neither place
writable the function is compiled without a cache, with a
``RuntimeWarning`` (a compile per process).  A damaged cache file is
handled where a kernel is called: :func:`call_recovering` (used by the
``numba`` and net ``numba`` backends) recompiles without the cache.
``NUMBA_CACHE_LOCATOR_CLASSES``, if a user sets it, overrides this choice as
it overrides Numba's.
"""

from __future__ import annotations

import os
import warnings

import numba
import platformdirs
from numba.core import config
from numba.core.caching import CompileResultCacheImpl, FunctionCache, NullCache, _CacheLocator, _SourceFileBackedLocatorMixin

__all__ = ["cache_dirs", "jit", "call_recovering"]


def cache_dirs():
    """The directories tried for the cache, in order of preference.

    Returns
    -------
    list of str
        ``NUMBA_CACHE_DIR`` (if set), then
        ``<user cache dir>/fastsoftmax/numba``.
    """
    user = os.path.join(platformdirs.user_cache_dir("fastsoftmax", appauthor=False), "numba")
    return [config.CACHE_DIR, user] if config.CACHE_DIR else [user]


class _Locator(_SourceFileBackedLocatorMixin, _CacheLocator):
    """Numba's per-source-directory layout under one of :func:`cache_dirs`."""

    root = None  # set by the subclasses _locators() makes

    def __init__(self, py_func, py_file):
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        self._cache_path = os.path.join(self.root, self.get_suitable_cache_subpath(py_file))

    def get_cache_path(self):
        return self._cache_path


def _locators():
    # One class per directory: Numba's CacheImpl tries locator *classes* in
    # order and keeps the first whose directory it can create and write to.
    return [type("_Locator", (_Locator,), {"root": root}) for root in cache_dirs()]


def _user_cache(py_func):
    """A Numba ``FunctionCache`` for ``py_func`` in the first usable :func:`cache_dirs` entry."""
    impl = type("_CacheImpl", (CompileResultCacheImpl,), {"_locator_classes": _locators()})
    cache = type("_FunctionCache", (FunctionCache,), {"_impl_class": impl})
    return cache(py_func)  # RuntimeError "no locator available" when none is writable


def jit(**options):
    """``numba.njit(**options)`` with its on-disk cache in a per-user directory.

    The directories are read when a function is decorated (usually at import),
    so ``NUMBA_CACHE_DIR`` must be set before.

    Parameters
    ----------
    **options
        Passed to :func:`numba.njit`; ``cache`` must not be among them.

    Returns
    -------
    callable
        A decorator returning the Numba dispatcher.
    """
    if "cache" in options:
        raise TypeError("jit() chooses the cache itself; do not pass cache=")

    def decorate(func):
        dispatcher = numba.njit(**options)(func)
        try:
            # What njit(cache=True) does (Dispatcher.enable_caching), with our locators.
            dispatcher._cache = _user_cache(func)
        except RuntimeError as exc:  # "cannot cache function ...: no locator available"
            warnings.warn(
                f"fastsoftmax: no writable place for Numba's cache (tried {', '.join(cache_dirs())}: {exc}); "
                "compiling on first use in every process. Set NUMBA_CACHE_DIR to a writable "
                "directory to cache the compiled kernels.",
                RuntimeWarning,
                stacklevel=2,
            )
        return dispatcher

    return decorate


def call_recovering(fused, kernels, *args, backend="numba"):
    """``fused(*args)``; if that fails loading its on-disk cache, recompile ``kernels`` without it.

    A call that raised without adding a compiled overload, from a dispatcher
    that still has a cache, failed reading the cache: loading a damaged cache
    file can fail with almost any exception (an unpickling error,
    EOFError, ...), compiling afresh cannot.  Then every dispatcher in
    ``kernels`` drops its cache for this process, with a ``RuntimeWarning``
    naming ``backend``, and the call is made again.  Any other error
    propagates, once.
    """
    compiled = len(fused.overloads)
    try:
        return fused(*args)
    except Exception as exc:
        if len(fused.overloads) != compiled or isinstance(fused._cache, NullCache):
            raise  # not a compile or cache load: a real error
        warnings.warn(
            f"fastsoftmax {backend} backend: Numba's on-disk cache could not be read "
            f"({type(exc).__name__}: {exc}); recompiling without the cache in this process",
            RuntimeWarning,
            stacklevel=4,
        )
        for kernel in kernels:
            kernel._cache = NullCache()
        return fused(*args)
