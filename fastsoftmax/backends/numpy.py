"""``numpy`` backend: fully vectorized, no Python loop over examples.

Design note
-----------
Two matrix products do all the work: the scores ``S = X @ W`` (N x C) and the
gradient ``X.T @ G`` (D x C).  With C = 10 both are skinny GEMMs, and BLAS
(OpenBLAS here) is sensitive to which operand it sees as transposed.  The
gradient is always computed as ``(G.T @ X).T``, which presents X in its
native order as the large operand.  For the scores the best order depends on
the dtype: measured on one thread (N=500 and 10000, D=3073, C=10, min of 10):

=========  ==============  ==============  ===========  ===========
dtype      ``X @ W``       ``W.T @ X.T``   ``X.T @ G``  ``G.T @ X``
=========  ==============  ==============  ===========  ===========
float64    1.85 / 58.8 ms  1.42 / 37.7 ms  2.29 / 75.8  1.25 / 34.3
float32    0.76 / 24.3 ms  1.31 / 33.0 ms  0.99 / 32.2  0.86 / 20.0
=========  ==============  ==============  ===========  ===========

so float64 computes the transposed scores ``W.T @ X.T`` and float32 the
textbook ``X @ W`` (:data:`TRANSPOSED_SCORES`).  Everything between the two
products touches only N x C arrays, through the (C, N) view ``St``.
Reproduce with the script in the README's "How the kernels work".
"""

import numpy as np

#: Whether the scores are computed as ``W.T @ X.T`` (else ``X @ W``), per dtype.
TRANSPOSED_SCORES = {np.dtype(np.float64): True, np.dtype(np.float32): False}


def softmax_loss(W, X, y, reg):
    """Softmax loss and gradient, vectorized.

    Parameters
    ----------
    W : ndarray, shape (D, C), float32 or float64
    X : ndarray, shape (N, D), same dtype as ``W``
    y : ndarray, shape (N,), intp labels in [0, C)
    reg : float

    Returns
    -------
    loss : float
    dW : ndarray, shape (D, C), dtype of ``W``
    """
    N = X.shape[0]
    # (C, N) scores, transposed: computed in that layout, or a view of X @ W
    St = W.T @ X.T if TRANSPOSED_SCORES[W.dtype] else (X @ W).T
    St -= St.max(axis=0)  # log-sum-exp shift per example
    cols = np.arange(N)
    correct = St[y, cols].copy()
    np.exp(St, out=St)
    total = St.sum(axis=0)
    loss = float(np.sum(np.log(total) - correct)) / N
    St /= total  # probabilities P.T
    St[y, cols] -= 1.0  # P - Y, transposed
    St /= N
    dW = (St @ X).T  # (D, C)
    dW = dW + (2.0 * reg) * W
    loss += reg * float(np.vdot(W, W))
    return loss, np.ascontiguousarray(dW, dtype=W.dtype)
