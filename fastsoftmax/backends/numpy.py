"""``numpy`` backend: fully vectorized, no Python loop over examples.

Design note
-----------
Two matrix products do all the work: the scores ``S = X @ W`` (N x C) and the
gradient ``X.T @ G`` (D x C).  With C = 10 both are skinny GEMMs, and BLAS is
sensitive to which operand it sees as transposed.  We compute the transposed
scores ``S.T = W.T @ X.T`` and the gradient as ``(G.T @ X).T``: both present X
to BLAS in its native C order as the large operand of a row-major product,
which measured faster than the textbook order on CIFAR shapes (see the
README's benchmark table; ``fastsoftmax bench`` shows both side by side).
Everything between the two products touches only N x C arrays.
"""

import numpy as np


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
    St = W.T @ X.T  # (C, N) scores, transposed
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
