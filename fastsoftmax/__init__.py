"""fastsoftmax: the softmax classifier's loss and gradient, as fast as the CPU allows.

>>> import numpy as np, fastsoftmax
>>> rng = np.random.default_rng(0)
>>> W = 1e-4 * rng.standard_normal((3073, 10))
>>> X = rng.standard_normal((500, 3073)); y = rng.integers(0, 10, 500)
>>> loss, dW = fastsoftmax.softmax_loss(W, X, y, reg=1e-5)

Layout
------
``_validate``   the one input validator every backend shares
``backends/``   the registry (``backends/__init__``) and one kernel per module:
                ``python`` (reference), ``numpy``, ``numba``, ``cython``
``_threads``    the one thread-count setting of the compiled backends
"""

from . import backends
from ._threads import get_num_threads, set_num_threads, threads
from .backends import available, fastest, set_backend

__version__ = "0.1.0"

__all__ = [
    "softmax_loss",
    "fastest",
    "available",
    "set_backend",
    "backends",
    "get_num_threads",
    "set_num_threads",
    "threads",
    "Softmax",
    "data",
    "gradcheck",
    "tuning",
    "visualize",
]

# Training tools load on first use (PEP 562), so that `import fastsoftmax`
# stays as light as the kernels need: no matplotlib or tqdm until asked for.
_LAZY_MODULES = {"data", "gradcheck", "tuning", "visualize", "classifier"}


def __getattr__(name):
    import importlib

    if name in _LAZY_MODULES:
        return importlib.import_module(f".{name}", __name__)
    if name == "Softmax":
        return importlib.import_module(".classifier", __name__).Softmax
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def softmax_loss(W, X, y, reg):
    return backends.get(fastest(*backends.problem_key(W, X)))(W, X, y, reg)


# The contract is written once, in the registry, for every backend and this.
softmax_loss.__doc__ = (
    """Softmax loss and gradient with the fastest available backend.

Which backend runs is :func:`fastest` for this problem's dtype and N (pin one
with :func:`set_backend` or ``FASTSOFTMAX_BACKEND``); every backend has this
same contract.
"""
    + backends.CONTRACT_DOC
)
