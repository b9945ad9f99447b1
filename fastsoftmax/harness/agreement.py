"""Agreement between implementations: the documented tolerances and the one reference.

Design note
-----------
Tests, ``bench/`` and ``fastsoftmax bench`` all decide "agrees with the
reference" with :func:`compare`, so PASS in the benchmark table and a green
test mean the same thing.  The reference itself is :func:`reference`: the
``python`` backend (the readable loops) for small problems, and for large
ones a float64 NumPy evaluation in row blocks (:func:`float64_blocks`) that
shares no code with any backend; :func:`problem_tolerance` reuses those
blocks, so there is one float64 softmax here, not several.

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

One regime needs more, and :func:`problem_tolerance` adds it: very large
scores whose *differences* are small.  A computed score carries an absolute
rounding error ``delta`` up to ``D * u * sum_d |X[i, d] W[d, j]|`` (u the
unit roundoff), which is about 0.03 for float32 scores of 1e4.  The softmax
sees only score differences, so near-tied classes at that magnitude get
probabilities off by up to ``2 * delta * p * (1 - p)``: no float32 kernel can
do better, yet it exceeds 1e-4 (measured: float32 BLAS, scores 1e4, two
classes tied to within 1, gradient error 1.2e-4).  The allowance is that
first-order bound propagated to the loss and gradient of the problem at hand,
so it is negligible wherever the scores are moderate.

It also allows for rounding the softmax itself, which matters only when the
whole loss is tiny: ``log(1 + e)`` with ``e`` below the unit roundoff is 0 in
that dtype, and so is ``P[i, y] - 1`` (found by the property tests: one
float32 example classified right by a margin of ~20 has loss 1.6e-9, which
float32 NumPy returns as exactly 0 and the float64 reference keeps).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "TOLERANCE",
    "Agreement",
    "compare",
    "float64_blocks",
    "problem_tolerance",
    "reference",
    "relative_error",
    "tolerance",
]

#: Row-block size of the float64 evaluation: bounds its temporaries to a few MB.
BLOCK_ROWS = 4096

#: The ``python`` reference runs only up to this many multiply-adds
#: (N * D * C): a few seconds of interpreted loops.  Above it, the float64
#: evaluation of :func:`float64_blocks` is the reference.
PYTHON_MAX_WORK = 500 * 3073 * 10

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


def compare(result, reference, dtype, tol=None) -> Agreement:
    """Compare ``(loss, dW)`` with the reference ``(loss, dW)``.

    Parameters
    ----------
    result, reference : tuple of (float, ndarray of shape (D, C))
    dtype : dtype
        The working dtype of the computation (decides the tolerance).
    tol : float, optional
        Use this tolerance instead of ``tolerance(dtype)``, such as
        :func:`problem_tolerance` for problems with huge scores.

    Returns
    -------
    Agreement
    """
    loss, dW = result
    ref_loss, ref_dW = reference
    tol = tolerance(dtype) if tol is None else tol
    return Agreement(relative_error(loss, ref_loss), relative_error(dW, ref_dW), tol)


def float64_blocks(W, X, y, block=None):
    """The softmax of ``X @ W`` in float64, one block of rows at a time.

    Independent of every backend's code; float32 data is upcast block by
    block, so there is never a float64 copy of the whole X.

    Parameters
    ----------
    W : ndarray, shape (D, C)
    X : ndarray, shape (N, D)
    y : ndarray, shape (N,), int
    block : int, optional
        Rows per block (default :data:`BLOCK_ROWS`).

    Yields
    ------
    Xb : ndarray, shape (n, D), float64
        The block's rows.
    yb : ndarray, shape (n,)
    S : ndarray, shape (n, C), float64
        Scores shifted so each row's maximum is 0.
    log_total : ndarray, shape (n,), float64
        ``log(sum_j exp(S[i, j]))``, so the loss of row i is
        ``log_total[i] - S[i, y[i]]`` (finite even where ``P[i, y[i]]``
        underflows to 0).
    P : ndarray, shape (n, C), float64
        Softmax probabilities.
    """
    W64 = np.asarray(W, dtype=np.float64)
    block = BLOCK_ROWS if block is None else block
    for lo in range(0, X.shape[0], block):
        Xb = np.asarray(X[lo : lo + block], dtype=np.float64)
        S = Xb @ W64
        S -= S.max(axis=1, keepdims=True)
        E = np.exp(S)
        total = E.sum(axis=1)
        yield Xb, np.asarray(y[lo : lo + block]), S, np.log(total), E / total[:, None]


def reference(W, X, y, reg):
    """The reference ``(loss, dW)`` of a problem, and what computed it.

    The ``python`` backend where the problem is small enough for interpreted
    loops (:data:`PYTHON_MAX_WORK`); otherwise a float64 NumPy evaluation
    (:func:`float64_blocks`).

    Parameters
    ----------
    W : ndarray, shape (D, C)
    X : ndarray, shape (N, D)
    y : ndarray, shape (N,), int
    reg : float

    Returns
    -------
    name : str
    result : (float, ndarray of shape (D, C))
    """
    if X.shape[0] * X.shape[1] * W.shape[1] <= PYTHON_MAX_WORK:
        from .. import backends

        if "python" in backends.available():
            return "python", backends.get("python")(W, X, y, reg)
    W64 = np.asarray(W, dtype=np.float64)
    N = X.shape[0]
    loss = 0.0
    grad = np.zeros_like(W64)
    for Xb, yb, S, log_total, P in float64_blocks(W, X, y):
        rows = np.arange(len(yb))
        loss += float(np.sum(log_total - S[rows, yb]))
        P[rows, yb] -= 1.0
        grad += Xb.T @ P
    loss = loss / N + reg * float(np.sum(W64 * W64))
    return "float64 NumPy, blocked", (loss, grad / N + 2.0 * reg * W64)


def problem_tolerance(W, X, y, reg, dtype) -> float:
    """:func:`tolerance`, plus what rounding the scores in ``dtype`` may cost on this problem.

    See the module note.  Computed in float64 over :func:`float64_blocks`.

    Parameters
    ----------
    W : ndarray, shape (D, C)
    X : ndarray, shape (N, D)
    y : ndarray, shape (N,)
    reg : float
    dtype : dtype
        The working dtype.

    Returns
    -------
    float
        A norm-wise relative tolerance for both the loss and the gradient.
    """
    W = np.asarray(W, dtype=np.float64)
    X = np.asarray(X)
    N, D = X.shape
    C = W.shape[1]
    u = float(np.finfo(dtype).eps) / 2  # a Python float: no float32 arithmetic below
    delta = 0.0  # |error| of any score: D * u * max sum_d |X[i, d] W[d, j]|
    loss = 0.0
    miss = 0.0  # sum_i (1 - P[i, y_i])
    grad = np.zeros_like(W)  # X.T @ (P - Y)
    spread = np.zeros_like(W)  # |X|.T @ (P * (1 - P))
    mass = np.zeros_like(W)  # |X|.T @ P
    for Xb, yb, S, log_total, P in float64_blocks(W, X, y):
        rows = np.arange(len(yb))
        delta = max(delta, D * u * float((np.abs(Xb) @ np.abs(W)).max(initial=0.0)))
        loss += float(np.sum(log_total - S[rows, yb]))
        miss += float(np.sum(1 - P[rows, yb]))
        spread += np.abs(Xb).T @ (P * (1 - P))
        mass += np.abs(Xb).T @ P
        P[rows, yb] -= 1
        grad += Xb.T @ P
    loss = loss / N + reg * float(np.sum(W * W))
    grad_scale = float(np.abs(grad / N + 2 * reg * W).max(initial=0.0))
    # First order: |d loss_i| <= 2 delta (1 - P[i, y_i]), |dP_ij| <= 2 delta P_ij (1 - P_ij).
    loss_err = 2 * delta * miss / N
    grad_err = 2 * delta * float(spread.max(initial=0.0)) / N
    # Rounding the softmax itself: each P_ij is within (C + 2) u of itself
    # relatively, so log(sum exp) is off by up to C u absolutely, and P - Y for
    # a confidently right example (P_iy ~ 1) loses all of 1 - P_iy.
    loss_err += C * u
    grad_err += (C + 2) * u * float(mass.max(initial=0.0)) / N
    extra = max(loss_err / loss if loss > 0 else loss_err, grad_err / grad_scale if grad_scale > 0 else grad_err)
    return tolerance(dtype) + extra
