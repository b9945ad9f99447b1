"""Helpers for the test suites (``tests/``, ``bench/``): data, fake files, backend loading.

Design note
-----------
Only tests import this module (``load_backend`` imports pytest); runtime
code never does.  What "agrees" means lives in
:mod:`fastsoftmax.harness.agreement` and is re-exported here for the tests.
"""

from __future__ import annotations

import os
import pickle

import numpy as np

from .harness.agreement import (  # noqa: F401  (re-exported for the tests)
    TOLERANCE,
    Agreement,
    compare,
    problem_tolerance,
    reference,
    relative_error,
    tolerance,
)

__all__ = [
    "TOLERANCE",
    "Agreement",
    "compare",
    "problem_tolerance",
    "reference",
    "relative_error",
    "tolerance",
    "random_problem",
    "LAYOUTS",
    "as_layout",
    "write_fake_cifar10",
    "load_backend",
    "REQUIRE_ALL_ENV",
]


def random_problem(rng, n, d, c, dtype=np.float64, scale=1.0):
    """A small random problem whose scores ``X @ W`` are of order ``scale``.

    Parameters
    ----------
    rng : numpy.random.Generator
    n, d, c : int
    dtype : dtype
    scale : float

    Returns
    -------
    W : ndarray, shape (d, c)
    X : ndarray, shape (n, d)
    y : ndarray, shape (n,), int64 labels in [0, c)
    """
    X = rng.standard_normal((n, d)).astype(dtype)
    W = (scale / np.sqrt(d) * rng.standard_normal((d, c))).astype(dtype)
    y = rng.integers(0, c, size=n)
    return W, X, y


#: The in-memory layouts a user can hand us (:func:`as_layout`).
LAYOUTS = ["C", "F", "strided", "row-padded", "negative-stride", "read-only"]


def as_layout(a, layout, pad=3):
    """The values of the 2-d array ``a`` in the memory layout ``layout`` (a new array or view).

    Parameters
    ----------
    a : ndarray, shape (n, m)
    layout : str
        One of :data:`LAYOUTS`: ``"C"``, ``"F"``; ``"strided"`` (every
        other row, every third column of a bigger array); ``"row-padded"``
        (a column slice: unit stride along a row, gaps between rows);
        ``"negative-stride"``; ``"read-only"``.
    pad : int, optional
        ``"row-padded"`` only: elements (zeros) between the end of a row and
        the next, so rows are ``m + pad`` apart.  16 moves CIFAR's rows off
        a multiple of 4 KB apart (docs/kernels.md, round 21).

    Returns
    -------
    ndarray, shape (n, m), dtype of ``a``
    """
    if layout == "C":
        return np.ascontiguousarray(a)
    if layout == "F":
        return np.asfortranarray(a)
    if layout == "strided":
        big = np.zeros((a.shape[0] * 2, a.shape[1] * 3), dtype=a.dtype)
        big[::2, ::3] = a
        return big[::2, ::3]
    if layout == "row-padded":
        if isinstance(pad, bool) or not isinstance(pad, (int, np.integer)) or pad < 0:
            raise ValueError(f"pad must be an integer >= 0, got {pad!r}")
        big = np.zeros((a.shape[0], a.shape[1] + pad), dtype=a.dtype)
        big[:, :a.shape[1]] = a
        return big[:, :a.shape[1]]
    if layout == "negative-stride":
        return a[::-1, ::-1].copy()[::-1, ::-1]
    if layout == "read-only":
        ro = a.copy()
        ro.flags.writeable = False
        return ro
    raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_fake_cifar10(root, n=7, bytes_keys=False, seed=0, protocol=2):
    """Write a tiny CIFAR-10 directory in the official python format, for tests.

    Six pickles (``data_batch_1`` .. ``data_batch_5``, ``test_batch``) of
    ``n`` random images each, and ``batches.meta``, laid out as the official
    archive is (uint8 rows of 3072 values, CHW order).

    Parameters
    ----------
    root : str or os.PathLike
        Directory to create (parents too) and fill.
    n : int
        Images per file.
    bytes_keys : bool
        Use bytes keys (and bytes class names), as the official Python 2 files
        appear to ``pickle.load(f, encoding="bytes")``.
    seed : int
    protocol : int
        Pickle protocol, 2 (that of the official files) to
        ``pickle.HIGHEST_PROTOCOL``.  Python 3 and NumPy write each protocol
        differently (protocol 2 spells bytes as ``_codecs.encode`` calls,
        protocol 5 arrays as ``_frombuffer``), so the loader is tested on all.

    Returns
    -------
    root : the same path, as passed

    Raises
    ------
    ValueError
        If ``protocol`` is not an integer from 2 to ``pickle.HIGHEST_PROTOCOL``.
    """
    if isinstance(protocol, bool) or not isinstance(protocol, int) or not 2 <= protocol <= pickle.HIGHEST_PROTOCOL:
        raise ValueError(f"protocol must be an integer from 2 to {pickle.HIGHEST_PROTOCOL}, got {protocol!r}")
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    key = (lambda k: k.encode()) if bytes_keys else (lambda k: k)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            key("batch_label"): f"{name} of a test",
            key("labels"): [int(v) for v in rng.integers(0, 10, n)],
            key("data"): rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            key("filenames"): [f"img_{i}.png" for i in range(n)],
        }
        with open(os.path.join(root, name), "wb") as f:
            pickle.dump(batch, f, protocol=protocol)
    names = [nm.encode() for nm in CIFAR10_CLASSES] if bytes_keys else CIFAR10_CLASSES
    with open(os.path.join(root, "batches.meta"), "wb") as f:
        pickle.dump({key("label_names"): names}, f, protocol=protocol)
    return root


#: Environment variable under which a backend that cannot load fails a test
#: instead of skipping it (``.ci/run`` sets it, so a silently missing Cython
#: build cannot pass CI).
REQUIRE_ALL_ENV = "FASTSOFTMAX_REQUIRE_ALL_BACKENDS"


def load_backend(name, contract="softmax"):
    """For tests: backend ``name``'s public ``softmax_loss``, or skip/fail with the reason.

    ``contract="net"``: its public two-layer net loss instead.

    A backend that cannot load here skips the calling test with the reason,
    unless ``FASTSOFTMAX_REQUIRE_ALL_BACKENDS=1``, where it fails it.
    Requires pytest (imported only when called).
    """
    import pytest

    from . import backends

    try:
        return backends.get(name, contract=contract)
    except backends.BackendUnavailable as exc:
        if os.environ.get(REQUIRE_ALL_ENV) == "1":
            pytest.fail(f"backend {name!r} must be available here: {exc}")
        pytest.skip(str(exc))
