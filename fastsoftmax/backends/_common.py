"""What the compiled backends share: turning per-example sums into the result.

The fused kernels return the *sum* of per-example losses and the *sum* of
per-example gradients, transposed to (C, D) because that is the layout their
inner loops write contiguously.  Dividing by N and adding the L2 term is the
same for every such kernel, so it lives here once.
"""

import numpy as np


def padded_transpose(W, multiple):
    """``W.T`` as a C-contiguous (Cp, D) array, Cp = C rounded up to ``multiple``.

    The extra rows are zero weights: the kernels' micro-kernels then work on
    whole class blocks, and the padded classes' scores and gradients are
    ignored.

    Parameters
    ----------
    W : ndarray, shape (D, C)
    multiple : int

    Returns
    -------
    ndarray, shape (Cp, D), dtype of ``W``
    """
    D, C = W.shape
    Cp = -(-C // multiple) * multiple
    Wt = np.zeros((Cp, D), dtype=W.dtype)
    Wt[:C] = W.T
    return Wt


def finish(W, N, reg, loss_sum, grad_sum_t):
    """Average the sums over N examples and add ``reg * ||W||^2``.

    Parameters
    ----------
    W : ndarray, shape (D, C)
    N : int
    reg : float
    loss_sum : float
        Sum over examples of ``-log softmax(S)[i, y[i]]``.
    grad_sum_t : ndarray, shape (C, D)
        Sum over examples of ``outer(P[i] - Y[i], X[i])``.

    Returns
    -------
    loss : float
    dW : ndarray, shape (D, C), dtype of ``W``, C-contiguous
    """
    dW = grad_sum_t.T / N
    dW += (2.0 * reg) * W
    loss = float(loss_sum) / N + reg * float(np.vdot(W, W))
    return loss, np.ascontiguousarray(dW, dtype=W.dtype)
