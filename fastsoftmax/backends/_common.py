"""What the compiled backends share: turning per-example sums into the result.

The fused kernels accumulate per-example gradients in (Cp, D) layout
(classes padded to the kernel's class block) because that is what their
inner loops write contiguously; their final, compiled reduction over the
per-thread accumulators writes the sum transposed to a fresh (D, C) array
(a NumPy transpose-and-copy of it took 0.2 ms, 8% of a N=500 call).
Padding W, dividing by N and adding the L2 term are the same for every such
kernel, so they live here once.
"""

import numpy as np

#: Multiply-adds (N * D * C) each thread must get before a kernel uses more
#: than one: about 70 us of one core's work.  Smaller problems run on one
#: thread, because starting a parallel region costs microseconds on an idle
#: machine but measured 20-40 ms per call (Numba's omp layer) on a loaded one.
MIN_WORK_PER_THREAD = 1 << 20


def thread_count(N, D, C, n_threads):
    """How many threads (= chunks of rows) a fused kernel should use.

    Parameters
    ----------
    N, D, C : int
        Problem shape.
    n_threads : int
        The user's setting (:func:`fastsoftmax.get_num_threads`).

    Returns
    -------
    int
        Between 1 and ``min(n_threads, N)``; deterministic in its arguments,
        so results stay bit-identical for a given setting and shape.
    """
    by_work = (N * max(D, 1) * C) // MIN_WORK_PER_THREAD
    return max(1, min(n_threads, N, by_work))


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


def interim(problem, n_threads):
    """The ``numpy`` kernel, for a problem with a bias or a batch of ``rows``.

    Interim: until the fused kernels read ``b`` and ``rows`` themselves,
    the compiled backends hand such problems to the vectorized kernel (same
    contract, same tolerances), so every backend takes the whole contract.
    """
    from .numpy import softmax_loss

    return softmax_loss(problem, n_threads)


def into(out, dW):
    """``dW``, or ``out`` holding a copy of it when ``out`` is given."""
    if out is None:
        return dW
    out[...] = dW
    return out


def finish(W, N, reg, loss_sum, grad_sum):
    """Average the sums over N examples and add ``reg * ||W||^2``, in place.

    Parameters
    ----------
    W : ndarray, shape (D, C)
    N : int
    reg : float
    loss_sum : float
        Sum over examples of ``-log softmax(S)[i, y[i]]``.
    grad_sum : ndarray, shape (D, C), dtype of ``W``, C-contiguous
        Sum over examples of ``outer(X[i], P[i] - Y[i])``; a scratch array of
        the kernel's, overwritten with the result.

    Returns
    -------
    loss : float
    dW : ndarray, shape (D, C), dtype of ``W``, C-contiguous (``grad_sum``)
    """
    grad_sum /= N
    grad_sum += (2.0 * reg) * W
    # Not np.vdot: that is a BLAS call, and OpenBLAS multithreads it at this
    # size; its worker then spin-waits beside our OpenMP/Numba threads on the
    # next call (3 runnable threads on 2 cores: 8 ms instead of 1.6 ms per
    # N = 500 call, measured).  einsum's own loop never starts a thread.
    loss = float(loss_sum) / N + reg * float(np.einsum("ij,ij->", W, W, dtype=np.float64))
    return loss, grad_sum
