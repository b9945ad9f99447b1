# cython: language_level=3
"""Compiled kernel of the ``cython`` backend (see ``cython.py``).

Design note
-----------
Three layers, as in scikit-learn's ``_loss``: a ``nogil`` function that
handles one chunk of examples (scores, softmax, loss and gradient of each row
while it is in cache), a ``prange`` loop over chunks with one gradient
accumulator per chunk, and a thin Python-visible function that allocates the
outputs and reduces the chunks in a fixed order.  float32 and float64 share
the code through a fused type; the GIL is released for the whole kernel.
"""

cimport cython
from cython.parallel cimport prange
from libc.math cimport exp, log

import numpy as np

ctypedef fused floating:
    float
    double


cdef double _chunk(
    const floating[:, ::1] Wt,     # IN  (C, D) transposed weights
    const floating[:, ::1] X,      # IN  (N, D) data
    const Py_ssize_t[::1] y,       # IN  (N,) labels
    floating[:, ::1] g,            # OUT (C, D) this chunk's gradient sum
    double[::1] scores,            # TMP (C,) scratch
    Py_ssize_t start,
    Py_ssize_t stop,
) noexcept nogil:
    cdef Py_ssize_t i, j, d
    cdef Py_ssize_t C = Wt.shape[0]
    cdef Py_ssize_t D = Wt.shape[1]
    cdef double s, shift, total, p, acc = 0.0
    cdef Py_ssize_t yi
    for i in range(start, stop):
        for j in range(C):
            s = 0.0
            for d in range(D):
                s = s + X[i, d] * Wt[j, d]
            scores[j] = s
        shift = scores[0]
        for j in range(1, C):
            if scores[j] > shift:
                shift = scores[j]
        yi = y[i]
        # -log p[y] = log(sum exp(s - shift)) - (s[y] - shift): never log(0)
        acc = acc - (scores[yi] - shift)
        total = 0.0
        for j in range(C):
            scores[j] = exp(scores[j] - shift)
            total = total + scores[j]
        acc = acc + log(total)
        for j in range(C):
            p = scores[j] / total
            if j == yi:
                p = p - 1.0
            for d in range(D):
                g[j, d] = g[j, d] + <floating>(p * X[i, d])
    return acc


def fused_loss_grad(
    const floating[:, ::1] Wt,
    const floating[:, ::1] X,
    const Py_ssize_t[::1] y,
    int n_threads,
):
    """Return (sum of per-example losses, gradient sum transposed to (C, D)).

    Parameters
    ----------
    Wt : (C, D) C-contiguous float32 or float64
    X : (N, D) C-contiguous, same dtype
    y : (N,) intp labels in [0, C)
    n_threads : number of OpenMP threads (and chunks)
    """
    cdef Py_ssize_t N = X.shape[0]
    cdef Py_ssize_t C = Wt.shape[0]
    cdef Py_ssize_t D = Wt.shape[1]
    cdef Py_ssize_t n_chunks = max(1, min(<Py_ssize_t>n_threads, N))
    dtype = np.float32 if floating is float else np.float64
    grads_arr = np.zeros((n_chunks, C, D), dtype=dtype)
    cdef floating[:, :, ::1] grads = grads_arr
    cdef double[:, ::1] scratch = np.empty((n_chunks, C), dtype=np.float64)
    cdef double[::1] losses = np.zeros(n_chunks, dtype=np.float64)
    cdef Py_ssize_t t
    with nogil:
        for t in prange(n_chunks, num_threads=n_threads, schedule="static"):
            losses[t] = _chunk(Wt, X, y, grads[t], scratch[t],
                               t * N // n_chunks, (t + 1) * N // n_chunks)
    out = grads_arr[0]
    for t in range(1, n_chunks):
        out += grads_arr[t]
    cdef double total = 0.0
    for t in range(n_chunks):
        total += losses[t]
    return total, out
