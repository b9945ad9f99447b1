"""The arrays a benchmark case runs on: synthetic (seeded) or real CIFAR-10.

Design note
-----------
:mod:`fastsoftmax.harness.cases` builds synthetic CIFAR-like data; with
``--data DIR`` the same shapes are filled from real images read by the one
CIFAR-10 reader, :func:`fastsoftmax.training.data.load_cifar10`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["case_data"]


def case_data(case, data_dir=None):
    """The arrays of ``case``: synthetic, or real CIFAR-10 images from ``data_dir``.

    Parameters
    ----------
    case : fastsoftmax.harness.cases.Case
    data_dir : str or None
        Directory of CIFAR-10 python batches.  The first ``case.n`` images are
        used, mean-subtracted, with a bias column of ones (the CS231n
        preprocessing); if there are fewer, they are repeated cyclically.
        W is ``1e-4 * randn`` from the case's seed either way.

    Returns
    -------
    (W, X, y, reg) : tuple
        Shapes (D, C), (N, D), (N,), and a float.
    source : str
        Where the data came from, for the table header and the JSON.
    """
    if data_dir is None:
        return case.make(), "synthetic (CIFAR-like, seeded)"
    from ..training.data import load_cifar10

    X_train, y_train, X_test, y_test, _ = load_cifar10(data_dir)
    pixels = np.concatenate([X_train, X_test]).reshape(-1, 3072)
    labels = np.concatenate([y_train, y_test])
    if case.d != pixels.shape[1] + 1 or int(labels.max()) >= case.c:
        raise ValueError(f"--data gives 3072 pixels and 10 classes; case {case.name} needs D={case.d}, C={case.c}")
    rows = np.arange(case.n) % pixels.shape[0]
    X = np.empty((case.n, case.d), dtype=case.dtype)
    X[:, :-1] = pixels[rows]
    X[:, :-1] -= X[:, :-1].mean(axis=0)
    X[:, -1] = 1.0
    W = (1e-4 * np.random.default_rng(case.seed).standard_normal((case.d, case.c))).astype(case.dtype)
    repeated = "" if case.n <= pixels.shape[0] else f", repeated cyclically to {case.n} rows"
    source = f"real CIFAR-10 from {data_dir} ({pixels.shape[0]} images{repeated})"
    return (W, X, labels[rows], case.reg), source
