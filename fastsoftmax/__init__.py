"""fastsoftmax: the softmax classifier's loss and gradient, as fast as the CPU allows.

>>> import numpy as np, fastsoftmax
>>> rng = np.random.default_rng(0)
>>> W = 1e-4 * rng.standard_normal((3073, 10))
>>> X = rng.standard_normal((500, 3073)); y = rng.integers(0, 10, 500)
>>> loss, dW = fastsoftmax.softmax_loss(W, X, y, reg=1e-5)

Layout
------
Three products, one subpackage each; only the first is imported here.

``backends/``   the kernels: the contract and registry (``backends/__init__``),
                the one validator (``_validate``), the thread setting
                (``_threads``) and one kernel per module: ``python`` (the
                reference), ``numpy``, ``numba``, ``cython``
``harness/``    the benchmark harness behind ``fastsoftmax bench`` and ``bench/``
``training/``   the CS231n training kit: ``Softmax``, CIFAR-10, gradient
                checks, tuning, pictures
``dask``        the same loss and training on row-chunked Dask arrays
``sklearn``     ``SoftmaxClassifier``, a scikit-learn estimator (the
                ``sklearn`` extra: scikit-learn and SciPy, imported only here)

The kernels import nothing from the harness or the training kit; the layer
formulas the two-layer net's ``numpy`` backend is composed of live with them
(``backends._layers``, also found as ``training.layers``).
"""

from . import backends
from .backends._threads import get_num_threads, set_num_threads, threads
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
    "TwoLayerNet",
    "harness",
    "training",
]

# Training tools load on first use (PEP 562), so that `import fastsoftmax`
# stays as light as the kernels need: no matplotlib or tqdm until asked for.
_LAZY_MODULES = {"harness", "training", "dask", "sklearn"}


def __getattr__(name):
    import importlib

    if name in _LAZY_MODULES:
        return importlib.import_module(f".{name}", __name__)
    if name == "Softmax":
        return importlib.import_module(".training.classifier", __name__).Softmax
    if name == "TwoLayerNet":
        return importlib.import_module(".training.net", __name__).TwoLayerNet
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def softmax_loss(W, X, y, reg, *, b=None, rows=None, out=None, n_threads=None):
    name = fastest(*backends.problem_key(W, X, rows))
    return backends.get(name)(W, X, y, reg, b=b, rows=rows, out=out, n_threads=n_threads)


# The contract is written once, in the registry, for every backend and this.
softmax_loss.__doc__ = (
    """Softmax loss and gradient with the fastest available backend.

Which backend runs is :func:`fastest` for this problem's dtype and N (pin one
with :func:`set_backend` or ``FASTSOFTMAX_BACKEND``); every backend has this
same contract.
"""
    + backends.CONTRACT_DOC
)
