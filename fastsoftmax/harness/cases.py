"""The one table of problems that tests, benchmarks and the CLI all use.

Design note
-----------
"What is timed is also what is verified": ``bench/`` (pytest-benchmark),
``fastsoftmax bench`` and the agreement tests iterate over :data:`CASES`, and
each case builds its arrays the same way everywhere.  The shapes are those of
the CS231n CIFAR-10 exercise: D = 3073 (3072 pixels plus a bias column of
ones), C = 10, and N = 500 (the dev batch), 10000 and 49000 (the full
training split).  Synthetic data mimics mean-subtracted CIFAR pixels: integer
intensities 0..255 minus their mean (values in about [-128, 128]), weights
``1e-4 * randn`` as in the exercise, and labels uniform over the classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .agreement import PYTHON_MAX_WORK

__all__ = ["Case", "CASES", "QUICK_CASES", "make_problem", "select"]

#: Regularisation used by every benchmark case (the CS231n exercise's order).
DEFAULT_REG = 2.5e4


@dataclass(frozen=True)
class Case:
    """One benchmark problem: shapes, dtype and the seed of its data.

    Attributes
    ----------
    n, d, c : int
        N examples, D features (bias column included), C classes.
    dtype : str
        ``"float64"`` or ``"float32"``, the dtype of W and X.
    reg : float
    seed : int
    """

    n: int
    d: int = 3073
    c: int = 10
    dtype: str = "float64"
    reg: float = DEFAULT_REG
    seed: int = 0

    @property
    def name(self) -> str:
        """Short id such as ``"N=500|float64"``, used as the benchmark group."""
        return f"N={self.n}|{self.dtype}"

    @property
    def flops(self) -> int:
        """Floating-point operations of one loss-and-gradient call: 4*N*D*C."""
        return 4 * self.n * self.d * self.c

    @property
    def x_bytes(self) -> int:
        """Bytes of X, the array every implementation must read at least once."""
        return self.n * self.d * np.dtype(self.dtype).itemsize

    def skip_reason(self, backend: str) -> str | None:
        """Why ``backend`` is not run on this case, or None if it is."""
        if backend == "python" and self.n * self.d * self.c > PYTHON_MAX_WORK:
            return (
                f"python reference skipped at N={self.n}: about 4*N*D*C = "
                f"{self.flops / 1e9:.1f} GFLOP of interpreted loops would take minutes "
                f"(it runs up to N*D*C = {PYTHON_MAX_WORK:.3g})"
            )
        return None

    def make(self):
        """Build ``(W, X, y, reg)`` for this case, deterministically from ``seed``.

        Returns
        -------
        W : ndarray, shape (d, c), dtype ``dtype``
        X : ndarray, shape (n, d), dtype ``dtype``, C-contiguous, last column 1
        y : ndarray, shape (n,), int64 labels in [0, c)
        reg : float
        """
        return make_problem(self.n, self.d, self.c, self.dtype, self.seed) + (self.reg,)


def make_problem(n, d, c, dtype="float64", seed=0):
    """CIFAR-like synthetic data: mean-subtracted pixel values plus a bias column.

    Parameters
    ----------
    n, d, c : int
        Examples, features (the last one is the bias column), classes.
    dtype : str or dtype
    seed : int

    Returns
    -------
    W : ndarray, shape (d, c)
    X : ndarray, shape (n, d), C-contiguous
    y : ndarray, shape (n,), int64
    """
    rng = np.random.default_rng(seed)
    X = np.empty((n, d), dtype=dtype)
    if d > 1:
        pixels = rng.integers(0, 256, size=(n, d - 1), dtype=np.uint8)
        X[:, :-1] = pixels
        X[:, :-1] -= X[:, :-1].mean(axis=0)
    X[:, -1] = 1.0
    W = (1e-4 * rng.standard_normal((d, c))).astype(dtype)
    y = rng.integers(0, c, size=n)
    return W, X, y


#: Every benchmark case: CIFAR-10 shapes, three batch sizes, two dtypes.
CASES = tuple(Case(n, dtype=dt) for n in (500, 10000, 49000) for dt in ("float64", "float32"))

#: The cases a smoke run (``--quick``, the plain test suite) uses.
QUICK_CASES = tuple(case for case in CASES if case.n == 500)


def select(sizes=None, dtypes=None):
    """The cases of :data:`CASES` with N in ``sizes`` and dtype in ``dtypes``."""
    return tuple(
        case
        for case in CASES
        if (sizes is None or case.n in sizes) and (dtypes is None or case.dtype in dtypes)
    )
