"""What the compiled backends share: turning per-example sums into the result.

The fused kernels accumulate per-example gradients in (Cp, D) layout
(classes padded to the kernel's class block) because that is what their
inner loops write contiguously; their final, compiled reduction over the
per-thread accumulators writes the sum transposed to a fresh (D, C) array
(a NumPy transpose-and-copy of it took 0.2 ms, 8% of a N=500 call).
Padding W, dividing by N and adding the L2 term are the same for every such
kernel, so they live here once.
"""

import os

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


#: L2 bytes per core assumed where the OS does not say (1 MiB: between the
#: 512 KiB of Zen 2/3 and the 2 MiB of Sapphire Rapids / Zen 4's 1 MiB).
DEFAULT_L2 = 1 << 20

#: Bytes of W.T the score pass keeps in L1 per D-chunk: half of a 32 KiB L1d,
#: the smallest on x86-64 cores of the last decade, so the chunk, the rows it
#: meets and the partial sums fit together.
L1_W_BYTES = 16 << 10


def _l2_bytes():
    """This CPU's per-core L2 size (Linux sysfs), or :data:`DEFAULT_L2`."""
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for index in sorted(os.listdir(base)):
            with open(os.path.join(base, index, "level")) as f:
                if f.read().strip() != "2":
                    continue
            with open(os.path.join(base, index, "size")) as f:
                text = f.read().strip().upper()
            scale = {"K": 1 << 10, "M": 1 << 20}.get(text[-1:], 1)
            return int(text.rstrip("KM")) * scale
    except (OSError, ValueError):
        pass
    return DEFAULT_L2


L2_BYTES = _l2_bytes()


def blocking(D, Cp, itemsize, l2_bytes=None):
    """Tile rows and score-pass D-chunk of the C kernel, from the cache model.

    * The tile (T rows of X) is read twice, by the score pass and by the
      gradient pass, and must stay in L2 in between, beside the next tile
      (being prefetched), W.T and the (Cp, D) gradient accumulator: a quarter
      of L2.  The accumulator is loaded and stored once per tile, so larger
      tiles cut that traffic (2 * Cp / T of X's); at least 10 rows, at most 60.
      T is a multiple of 10, the score micro-kernel's row blocks (2 or 5).
    * The D-chunk: :data:`L1_W_BYTES` of W.T, a multiple of 16 elements.

    The tile changes the order of the gradient sums, so results are
    bit-identical for a given machine (L2 size), not across machines.

    Returns
    -------
    (tile, dchunk) : tuple of int
    """
    l2 = L2_BYTES if l2_bytes is None else l2_bytes
    rows = l2 // 4 // max(1, D * itemsize)
    tile = max(10, min(60, rows // 10 * 10))
    dchunk = max(16, L1_W_BYTES // (Cp * itemsize) // 16 * 16)
    return tile, dchunk


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


def finish(W, N, reg, loss_sum, grad_sum, bias_sum=None):
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
    bias_sum : ndarray, shape (C,), optional
        Sum over examples of ``P[i] - Y[i]``; divided by N in place.

    Returns
    -------
    loss : float
    dW : ndarray, shape (D, C), dtype of ``W``, C-contiguous (``grad_sum``)
    """
    if bias_sum is not None:
        bias_sum /= N
    grad_sum /= N
    grad_sum += (2.0 * reg) * W
    # Not np.vdot: that is a BLAS call, and OpenBLAS multithreads it at this
    # size; its worker then spin-waits beside our OpenMP/Numba threads on the
    # next call (3 runnable threads on 2 cores: 8 ms instead of 1.6 ms per
    # N = 500 call, measured).  einsum's own loop never starts a thread.
    loss = float(loss_sum) / N + reg * float(np.einsum("ij,ij->", W, W, dtype=np.float64))
    return loss, grad_sum
