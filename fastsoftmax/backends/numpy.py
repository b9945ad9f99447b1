"""``numpy`` backend: fully vectorized, no Python loop over examples.

Design note
-----------
Two matrix products do all the work: the scores ``S = X @ W`` (N x C) and the
gradient ``X.T @ G`` (D x C).  With C = 10 both are skinny GEMMs, and BLAS
(OpenBLAS here) is sensitive to which operand it sees as transposed.  The
gradient is always computed as ``(G.T @ X).T``, which presents X in its
native order as the large operand.  For the scores the faster order depends
on the dtype, so float64 computes the transposed scores ``W.T @ X.T`` and
float32 the textbook ``X @ W`` (:data:`TRANSPOSED_SCORES`); the measurements
behind both choices are in docs/benchmarks.md ("Measurements behind design
choices").  Everything between the two products touches only N x C arrays,
through the (C, N) view ``St``.
"""

import numpy as np

#: Whether the scores are computed as ``W.T @ X.T`` (else ``X @ W``), per dtype.
TRANSPOSED_SCORES = {np.dtype(np.float64): True, np.dtype(np.float32): False}


def softmax_loss(problem, n_threads=None):
    """Softmax loss and gradient, vectorized.

    Parameters
    ----------
    problem : fastsoftmax.backends._validate.Problem
        ``W`` (D, C) and ``X`` (N, D), float32 or float64; ``y`` (N,) intp;
        ``reg``; optional bias ``b`` (C,), batch ``rows`` (n,) and ``out``.
    n_threads : int
        Ignored: the products run on BLAS's own threads, which belong to
        NumPy (hold them with ``threadpoolctl.threadpool_limits``).

    Returns
    -------
    loss : float
    dW : ndarray, shape (D, C), dtype of ``W`` (``out`` if given)
    db : ndarray, shape (C,), dtype of ``W``; None without ``b``
    """
    W, X, y, reg, b, rows, out = problem
    if rows is not None:
        # BLAS needs the batch as one array: the gather is this backend's cost
        # of ``rows`` (the compiled backends read the rows in place).
        X, y = X[rows], y[rows]
    N = X.shape[0]
    # (C, N) scores, transposed: computed in that layout, or a view of X @ W
    St = W.T @ X.T if TRANSPOSED_SCORES[W.dtype] else (X @ W).T
    if b is not None:
        St += b[:, None]
    St -= St.max(axis=0)  # log-sum-exp shift per example
    cols = np.arange(N)
    correct = St[y, cols].copy()
    np.exp(St, out=St)
    total = St.sum(axis=0)
    loss = float(np.sum(np.log(total) - correct)) / N
    St /= total  # probabilities P.T
    St[y, cols] -= 1.0  # P - Y, transposed
    St /= N
    db = None if b is None else St.sum(axis=1, dtype=W.dtype)
    if out is None:
        out = np.empty(W.shape, dtype=W.dtype)
    # (C, D) product, copied transposed: matmul(..., out=out.T) would leave
    # BLAS for NumPy's own loop (slower, measured in docs/benchmarks.md).
    out[...] = (St @ X).T
    out += (2.0 * reg) * W
    loss += reg * float(np.vdot(W, W))
    return loss, out, db
