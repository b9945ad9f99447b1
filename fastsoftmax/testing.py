"""Agreement between implementations: the documented tolerances, in one place.

Design note
-----------
Tests, ``bench/`` and ``fastsoftmax bench`` all decide "agrees with the
reference" with :func:`compare`, so PASS in the benchmark table and a green
test mean the same thing.

Errors are *norm-wise*: ``max|a - ref| / max|ref|`` for the gradient, and
``|a - ref| / |ref|`` for the loss.  Element-wise relative error is
meaningless for gradient entries that are close to zero by cancellation.

Tolerances, per working dtype:

* float64: ``1e-10``.  Unit roundoff is 1.1e-16; a dot product of length D
  and a sum over N examples in any order are off by at most about
  ``sqrt(D) + sqrt(N)`` roundoffs in practice (a few hundred here), so 1e-10
  leaves four orders of magnitude of margin yet catches any real bug.
* float32: ``1e-4``.  Unit roundoff is 6e-8; the same argument gives errors
  around 1e-6 (measured: under 1e-6 on CIFAR shapes), and kernels that block or
  reassociate the sums may double that.  1e-4 keeps a 100x margin while a
  wrong index or a missing term shows up as errors of order 1.
"""

from __future__ import annotations

import os
import pickle
from typing import NamedTuple

import numpy as np

__all__ = ["TOLERANCE", "Agreement", "compare", "relative_error", "tolerance", "random_problem", "write_fake_cifar10", "load_backend", "REQUIRE_ALL_ENV"]

#: Norm-wise relative tolerance by working dtype (see the module note).
TOLERANCE = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-4}


def tolerance(dtype) -> float:
    """The documented tolerance for results computed in ``dtype``."""
    return TOLERANCE[np.dtype(dtype)]


def relative_error(a, ref) -> float:
    """Norm-wise relative error ``max|a - ref| / max|ref|`` (absolute if ref is 0)."""
    a = np.asarray(a, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if a.shape != ref.shape:
        return float("inf")
    if a.size == 0:
        return 0.0
    scale = float(np.max(np.abs(ref)))
    diff = float(np.max(np.abs(a - ref)))
    if not np.isfinite(diff):
        return float("inf")
    return diff / scale if scale > 0 else diff


class Agreement(NamedTuple):
    """How far one result is from the reference, and whether that is within tolerance."""

    loss_error: float
    grad_error: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.loss_error <= self.tolerance and self.grad_error <= self.tolerance


def compare(result, reference, dtype) -> Agreement:
    """Compare ``(loss, dW)`` with the reference ``(loss, dW)``.

    Parameters
    ----------
    result, reference : tuple of (float, ndarray of shape (D, C))
    dtype : dtype
        The working dtype of the computation (decides the tolerance).

    Returns
    -------
    Agreement
    """
    loss, dW = result
    ref_loss, ref_dW = reference
    return Agreement(relative_error(loss, ref_loss), relative_error(dW, ref_dW), tolerance(dtype))


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


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_fake_cifar10(root, n=7, bytes_keys=False, seed=0):
    """Write a tiny CIFAR-10 directory in the official python format, for tests.

    Six protocol-2 pickles (``data_batch_1`` .. ``data_batch_5``,
    ``test_batch``) of ``n`` random images each, and ``batches.meta``, laid out
    as the official archive is (uint8 rows of 3072 values, CHW order).

    Parameters
    ----------
    root : str or os.PathLike
        Directory to create (parents too) and fill.
    n : int
        Images per file.
    bytes_keys : bool
        Use bytes keys, as ``pickle.load(f, encoding="bytes")`` would see them.
    seed : int

    Returns
    -------
    root : the same path, as passed
    """
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
            pickle.dump(batch, f, protocol=2)
    names = [nm.encode() for nm in CIFAR10_CLASSES] if bytes_keys else CIFAR10_CLASSES
    with open(os.path.join(root, "batches.meta"), "wb") as f:
        pickle.dump({key("label_names"): names}, f, protocol=2)
    return root


#: Environment variable under which a backend that cannot load fails a test
#: instead of skipping it (``.ci/run`` sets it, so a silently missing Cython
#: build cannot pass CI).
REQUIRE_ALL_ENV = "FASTSOFTMAX_REQUIRE_ALL_BACKENDS"


def load_backend(name):
    """For tests: backend ``name``'s public ``softmax_loss``, or skip/fail with the reason.

    A backend that cannot load here skips the calling test with the reason,
    unless ``FASTSOFTMAX_REQUIRE_ALL_BACKENDS=1``, where it fails it.
    Requires pytest (imported only when called).
    """
    import pytest

    from . import backends

    try:
        return backends.get(name)
    except backends.BackendUnavailable as exc:
        if os.environ.get(REQUIRE_ALL_ENV) == "1":
            pytest.fail(f"backend {name!r} must be available here: {exc}")
        pytest.skip(str(exc))
