"""``numba`` backend of the two-layer net: one fused pass over X, in parallel.

Design note
-----------
The linear kernels' idea carried to the net (:mod:`fastsoftmax.backends.numba`):
X is read from memory once.  Rows are taken in blocks of 4; for each block
the kernel computes the hidden layer, the scores, the softmax and its loss,
and the block's contribution to every gradient while the 4 rows are still
in cache.  The two large products (``X @ W1`` forward, ``X.T @ dh``
backward, each N x D x H) are written as micro-kernels of 4 rows x 5
hidden units of scalar accumulators walking D contiguously, on ``W1``
transposed to (Hp, D) with H padded to a multiple of 5 (zero weights, so
the padded units are 0 after the ReLU and get no gradient).  With
``fastmath={'reassoc', 'contract'}`` LLVM vectorises those sums and uses
FMA; ``nnan``/``ninf`` stay off so a non-finite result still reaches
:func:`fastsoftmax.backends._validate.check_net_result`.  The small layer
(H x C) and the softmax run in float64 whatever the dtype.

Parallelism: one contiguous chunk of rows per thread, each with its own
accumulators (a (Hp, D) one for ``W1``: 2.5 MB per thread on CIFAR shapes
in float64); they are summed in chunk order, so a given thread count gives
bit-identical results.  Compilation happens on the first call per dtype and
is cached on disk (:mod:`fastsoftmax.backends._numba_cache`); a cache file
that cannot be read makes the first call recompile without the cache, with
a ``RuntimeWarning``, as in the linear kernel (:func:`_call`).
"""

import math

import numba
import numpy as np

from ._common import padded_transpose, thread_count
from ._numba_cache import call_recovering
from ._numba_cache import jit as _jit
from .numba import _FASTMATH, _flat_rows, _launch_lock, _x_row

_RB = 4  # rows per block (the micro-kernels are written for exactly 4)
_HB = 5  # hidden units per micro-kernel step: Hp is H rounded up to 5


@_jit(fastmath=_FASTMATH)
def _dots(Wt, x0, x1, x2, x3, out):  # pragma: no cover - jitted
    """``out[r, j] = x_r . Wt[j]`` for the 4 rows and every (padded) unit j."""
    Hp, D = Wt.shape
    z = out.dtype.type(0)
    for j in range(0, Hp, 5):
        w0, w1, w2, w3, w4 = Wt[j], Wt[j + 1], Wt[j + 2], Wt[j + 3], Wt[j + 4]
        s00 = s01 = s02 = s03 = s04 = z
        s10 = s11 = s12 = s13 = s14 = z
        s20 = s21 = s22 = s23 = s24 = z
        s30 = s31 = s32 = s33 = s34 = z
        for d in range(D):
            a0, a1, a2, a3, a4 = w0[d], w1[d], w2[d], w3[d], w4[d]
            v0, v1, v2, v3 = x0[d], x1[d], x2[d], x3[d]
            s00 += v0 * a0
            s01 += v0 * a1
            s02 += v0 * a2
            s03 += v0 * a3
            s04 += v0 * a4
            s10 += v1 * a0
            s11 += v1 * a1
            s12 += v1 * a2
            s13 += v1 * a3
            s14 += v1 * a4
            s20 += v2 * a0
            s21 += v2 * a1
            s22 += v2 * a2
            s23 += v2 * a3
            s24 += v2 * a4
            s30 += v3 * a0
            s31 += v3 * a1
            s32 += v3 * a2
            s33 += v3 * a3
            s34 += v3 * a4
        out[0, j], out[0, j + 1], out[0, j + 2], out[0, j + 3], out[0, j + 4] = s00, s01, s02, s03, s04
        out[1, j], out[1, j + 1], out[1, j + 2], out[1, j + 3], out[1, j + 4] = s10, s11, s12, s13, s14
        out[2, j], out[2, j + 1], out[2, j + 2], out[2, j + 3], out[2, j + 4] = s20, s21, s22, s23, s24
        out[3, j], out[3, j + 1], out[3, j + 2], out[3, j + 3], out[3, j + 4] = s30, s31, s32, s33, s34


@_jit(fastmath=_FASTMATH)
def _outer_add(G, coef, x0, x1, x2, x3):  # pragma: no cover - jitted
    """``G[j] += sum_r coef[r, j] * x_r`` for every (padded) unit j."""
    Hp, D = G.shape
    for j in range(0, Hp, 5):
        g0, g1, g2, g3, g4 = G[j], G[j + 1], G[j + 2], G[j + 3], G[j + 4]
        c00, c10, c20, c30 = coef[0, j], coef[1, j], coef[2, j], coef[3, j]
        c01, c11, c21, c31 = coef[0, j + 1], coef[1, j + 1], coef[2, j + 1], coef[3, j + 1]
        c02, c12, c22, c32 = coef[0, j + 2], coef[1, j + 2], coef[2, j + 2], coef[3, j + 2]
        c03, c13, c23, c33 = coef[0, j + 3], coef[1, j + 3], coef[2, j + 3], coef[3, j + 3]
        c04, c14, c24, c34 = coef[0, j + 4], coef[1, j + 4], coef[2, j + 4], coef[3, j + 4]
        for d in range(D):
            v0, v1, v2, v3 = x0[d], x1[d], x2[d], x3[d]
            g0[d] += c00 * v0 + c10 * v1 + c20 * v2 + c30 * v3
            g1[d] += c01 * v0 + c11 * v1 + c21 * v2 + c31 * v3
            g2[d] += c02 * v0 + c12 * v1 + c22 * v2 + c32 * v3
            g3[d] += c03 * v0 + c13 * v1 + c23 * v2 + c33 * v3
            g4[d] += c04 * v0 + c14 * v1 + c24 * v2 + c34 * v3


@_jit(fastmath=_FASTMATH)
def _chunk(W1t, b1, W2, b2, Xf, ldx, y, start, stop, G1, gb1, gW2, gb2, zero):  # pragma: no cover - jitted
    """Sum of the losses of rows ``start .. stop``; their gradients are added to G1, gb1, gW2, gb2.

    Row i of X is ``_x_row(Xf, ldx, D, i)`` (read in place).

    ``G1`` is (Hp, D) in W's dtype; ``gb1`` (H,), ``gW2`` (H, C) and ``gb2``
    (C,) are float64.
    """
    H, C = W2.shape
    Hp, D = W1t.shape
    hid = np.empty((_RB, Hp), dtype=W1t.dtype)  # pre-activations, then the hidden layer
    dh = np.zeros((_RB, Hp), dtype=W1t.dtype)  # gradient at the pre-activations
    p = np.empty(C, dtype=np.float64)
    loss = 0.0
    for i0 in range(start, stop, _RB):
        nr = min(_RB, stop - i0)
        x0 = _x_row(Xf, ldx, D, i0)
        x1 = _x_row(Xf, ldx, D, i0 + 1) if nr > 1 else zero
        x2 = _x_row(Xf, ldx, D, i0 + 2) if nr > 2 else zero
        x3 = _x_row(Xf, ldx, D, i0 + 3) if nr > 3 else zero
        _dots(W1t, x0, x1, x2, x3, hid)
        for r in range(_RB):
            if r >= nr:  # a padding row: no loss, no gradient
                for k in range(Hp):
                    dh[r, k] = 0
                continue
            for k in range(H):
                a = hid[r, k] + b1[k]
                hid[r, k] = 0 if a <= 0 else a  # NaN stays NaN, so it reaches the result
            # scores and softmax in float64
            yi = y[i0 + r]
            for c in range(C):
                s = np.float64(b2[c])
                for k in range(H):
                    s += np.float64(hid[r, k]) * W2[k, c]
                p[c] = s
            shift = p[0]
            for c in range(1, C):
                shift = max(shift, p[c])
            # -log softmax[y] = log(sum exp(s - shift)) - (s[y] - shift): never log(0)
            loss -= p[yi] - shift
            total = 0.0
            for c in range(C):
                p[c] = math.exp(p[c] - shift)
                total += p[c]
            loss += math.log(total)
            for c in range(C):
                p[c] /= total
            p[yi] -= 1.0  # p is now dscores (times N)
            for c in range(C):
                gb2[c] += p[c]
            for k in range(H):
                hk = np.float64(hid[r, k])
                g = 0.0
                for c in range(C):
                    gW2[k, c] += hk * p[c]
                    g += p[c] * W2[k, c]
                g = g if hk > 0 else 0.0  # ReLU
                gb1[k] += g
                dh[r, k] = g
            for k in range(H, Hp):
                dh[r, k] = 0
        _outer_add(G1, dh, x0, x1, x2, x3)
    return loss


@_jit(parallel=True)
def _fused(W1t, b1, W2, b2, Xf, ldx, y, n_chunks):  # pragma: no cover - jitted
    N = y.shape[0]
    Hp, D = W1t.shape
    H, C = W2.shape
    G1 = np.zeros((n_chunks, Hp, D), dtype=W1t.dtype)
    gb1 = np.zeros((n_chunks, H), dtype=np.float64)
    gW2 = np.zeros((n_chunks, H, C), dtype=np.float64)
    gb2 = np.zeros((n_chunks, C), dtype=np.float64)
    losses = np.zeros(n_chunks, dtype=np.float64)
    zero = np.zeros(D, dtype=W1t.dtype)
    for t in numba.prange(n_chunks):
        losses[t] = _chunk(W1t, b1, W2, b2, Xf, ldx, y, t * N // n_chunks, (t + 1) * N // n_chunks,
                           G1[t], gb1[t], gW2[t], gb2[t], zero)
    # Reduce in chunk order, transposing G1 to (D, H) on the way.
    dW1 = np.empty((D, H), dtype=W1t.dtype)
    for d in range(D):
        for k in range(H):
            s = G1[0, k, d]
            for t in range(1, n_chunks):
                s += G1[t, k, d]
            dW1[d, k] = s
    return losses.sum(), dW1, gb1.sum(axis=0), gW2.sum(axis=0), gb2.sum(axis=0)


def _call(fused, kernels, *args):
    """``fused(*args)`` with the linear kernel's cache recovery (:func:`~._numba_cache.call_recovering`)."""
    return call_recovering(fused, kernels, *args, backend="numba net")


def two_layer_loss(problem, n_threads):
    """Loss and gradients of affine - ReLU - affine - softmax, fused and parallel.

    Parameters
    ----------
    problem : fastsoftmax.backends._validate.NetProblem
        ``W1`` (D, H), ``b1`` (H,), ``W2`` (H, C), ``b2`` (C,), ``X`` (N, D),
        ``y`` (N,), ``reg``.
    n_threads : int
        Upper bound on the threads used (small problems use fewer, see
        :func:`fastsoftmax.backends._common.thread_count`).

    Returns
    -------
    loss : float
    dW1, db1, dW2, db2 : ndarray
        Shapes and dtype of the parameters.
    """
    W1, b1, W2, b2, X, y, reg = problem
    N, D = X.shape
    H, C = W2.shape
    n_threads = min(n_threads, numba.config.NUMBA_NUM_THREADS)
    n_chunks = thread_count(N, D, H, n_threads)
    Xf, ldx = _flat_rows(X)  # read in place: C order, or rows with padding between them
    W1t = padded_transpose(W1, _HB)
    # Serialised like the linear kernel while Numba's threading layer may be
    # the thread-unsafe "workqueue" (see fastsoftmax.backends.numba).
    with _launch_lock:
        numba.set_num_threads(n_chunks)
        loss_sum, g1, gb1, gW2, gb2 = _call(_fused, (_dots, _outer_add, _x_row, _chunk, _fused),
                                            W1t, b1, W2, b2, Xf, ldx, y, n_chunks)
    dtype = W1.dtype
    g1 /= N
    g1 += (2.0 * reg) * W1
    dW2 = (gW2 / N + (2.0 * reg) * W2).astype(dtype)
    sq = float(np.einsum("ij,ij->", W1, W1, dtype=np.float64)) + float(np.einsum("ij,ij->", W2, W2, dtype=np.float64))
    loss = float(loss_sum) / N + reg * sq
    return loss, g1, (gb1 / N).astype(dtype), dW2, (gb2 / N).astype(dtype)
