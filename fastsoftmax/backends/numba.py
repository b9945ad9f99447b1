"""``numba`` backend: the loops of the reference, jitted and run in parallel.

Design note
-----------
One fused pass over X: for each example the kernel computes its C scores, the
softmax, the loss term and the example's gradient contribution while the row
is still in cache, so X is read from memory once (the NumPy formulation reads
it twice, once per matrix product).

Parallelism is over contiguous chunks of examples, one chunk per thread, each
with its own gradient accumulator; the accumulators are summed in chunk order
at the end.  There is never a shared accumulator to race on, and for a given
thread count the result is bit-for-bit reproducible.

Compilation happens on the first call for each dtype, not at import, and is
cached on disk (``cache=True``) so later processes skip it.
"""

import math

import numba
import numpy as np

from .._threads import get_num_threads
from ._common import finish


@numba.njit(cache=True, parallel=True)
def _fused_kernel(W, X, y, n_chunks):
    N, D = X.shape
    C = W.shape[1]
    Wt = np.ascontiguousarray(W.T)  # (C, D): contiguous dot products per class
    grads = np.zeros((n_chunks, C, D), dtype=W.dtype)
    losses = np.zeros(n_chunks, dtype=np.float64)
    for t in numba.prange(n_chunks):
        start = t * N // n_chunks
        stop = (t + 1) * N // n_chunks
        g = grads[t]
        scores = np.empty(C, dtype=np.float64)
        acc = 0.0
        for i in range(start, stop):
            xi = X[i]
            for j in range(C):
                s = 0.0
                wj = Wt[j]
                for d in range(D):
                    s += xi[d] * wj[d]
                scores[j] = s
            shift = scores.max()
            yi = y[i]
            # -log p[y] = log(sum exp(s - shift)) - (s[y] - shift): never log(0)
            acc -= scores[yi] - shift
            total = 0.0
            for j in range(C):
                scores[j] = math.exp(scores[j] - shift)
                total += scores[j]
            acc += math.log(total)
            for j in range(C):
                p = scores[j] / total
                if j == yi:
                    p -= 1.0
                gj = g[j]
                for d in range(D):
                    gj[d] += p * xi[d]
        losses[t] = acc
    dWt = grads[0].copy()
    for t in range(1, n_chunks):
        dWt += grads[t]
    return losses.sum(), dWt


def softmax_loss(W, X, y, reg):
    """Softmax loss and gradient with one fused, parallel pass over X.

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
    n_threads = min(get_num_threads(), numba.config.NUMBA_NUM_THREADS)
    numba.set_num_threads(n_threads)  # thread-local in Numba: safe per call
    n_chunks = max(1, min(n_threads, N))
    X = np.ascontiguousarray(X)  # rows must be contiguous; a no-op for C order
    data_loss, dWt = _fused_kernel(W, X, y, n_chunks)
    return finish(W, N, reg, data_loss, dWt)
