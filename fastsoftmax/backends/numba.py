"""``numba`` backend: the fused kernel in Numba, block by block, in parallel.

Design note
-----------
The same fused algorithm as the Cython kernel (docs/kernels.md), in blocks of
``_GB`` = 8 rows: two score micro-kernels of 4 rows x 5 classes of scalar
accumulators walking D contiguously (W is transposed to (Cp, D)), the
softmax, loss and coefficients ``P - Y`` of the 8 rows in float64, then one
gradient update ``G[j] += sum_r coef[r, j] * x_r`` over the 8 rows, so each
element of the (Cp, D) accumulator is loaded and stored once per 8 rows
(once per 4 before: 48.1 -> 43.9 ms at N=10000 float64, one thread).  X is
read from memory once, while the rows are in cache.  With
``fastmath={'reassoc', 'contract'}`` LLVM turns the scalar accumulators into
vector accumulators and FMAs for the host CPU.  Only those two flags:
reassociation lets the sums vectorize and contraction allows FMA, while
``nnan``/``ninf`` stay off so NaN and inf propagate and
:func:`fastsoftmax.backends._validate.check_result` still sees a non-finite
result.  Classes are padded with zero weights to a multiple of 5 and the
last block's missing rows read a zero row, so the hot loops have no
remainder code.  A bias, a row index array (the block's rows are
``X[rows[k]]``, never gathered into a copy) and an output array are handled
in the kernel.  Copying each block into 64-byte aligned rows (what the C
kernel does with its tiles) was tried and measured inconclusive here (float32
10 % faster, float64 N=500 16 % slower), so it is not done.

Parallelism is over contiguous chunks of rows, one chunk per thread, each
with its own (Cp, D) gradient accumulator; the accumulators are summed in
chunk order, so a given thread count gives bit-identical results.  Extra
memory is O(threads * D * C).

Threads from Python: Numba's ``workqueue`` threading layer aborts the
process when two Python threads launch parallel kernels at once.  Numba picks
``tbb`` or ``omp`` when they are installed (both are safe); only when it had
to fall back to ``workqueue`` are our calls serialised with a lock.

Compilation happens on the first call for each dtype, never at import, and is
cached on disk so later processes skip it: in ``NUMBA_CACHE_DIR`` or the
user's cache directory (``~/.cache/fastsoftmax/numba``), never in the
installed package (:mod:`fastsoftmax.backends._numba_cache`).  The cache is an
optimisation, never a reason to fail: with nowhere writable to cache the
kernels are compiled without it, and a cache file that cannot be read (cut
short, overwritten) makes the first call recompile without the cache.  Both
say so with a ``RuntimeWarning``, since each costs a compile per process.
"""

import math
import threading
import warnings

import numba
import numpy as np
from numba.core.caching import NullCache

from ._numba_cache import jit as _jit
from ._threads import get_num_threads
from ._common import finish, padded_transpose, thread_count

_RB = 4  # rows per score micro-kernel (written for exactly 4)
_GB = 8  # rows per block: two score micro-kernels, one gradient micro-kernel
_CB = 5  # classes per micro-kernel: Cp is C rounded up to a multiple of 5

# Reassociation (vectorised sums) and FMA contraction only: no nnan/ninf, so
# non-finite values propagate to the result where they are detected.
_FASTMATH = {"reassoc", "contract"}


@_jit(fastmath=_FASTMATH)
def _scores(Wt, x0, x1, x2, x3, S, r0):  # pragma: no cover - jitted
    """``S[r0 + r, j] = x_r . Wt[j]`` for 4 rows: 4 rows x 5 classes of accumulators, one pass over D."""
    Cp, D = Wt.shape
    z = Wt.dtype.type(0)
    for j in range(0, Cp, 5):
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
        S[r0, j], S[r0, j + 1], S[r0, j + 2], S[r0, j + 3], S[r0, j + 4] = s00, s01, s02, s03, s04
        S[r0 + 1, j], S[r0 + 1, j + 1], S[r0 + 1, j + 2], S[r0 + 1, j + 3], S[r0 + 1, j + 4] = s10, s11, s12, s13, s14
        S[r0 + 2, j], S[r0 + 2, j + 1], S[r0 + 2, j + 2], S[r0 + 2, j + 3], S[r0 + 2, j + 4] = s20, s21, s22, s23, s24
        S[r0 + 3, j], S[r0 + 3, j + 1], S[r0 + 3, j + 2], S[r0 + 3, j + 3], S[r0 + 3, j + 4] = s30, s31, s32, s33, s34


@_jit(fastmath=_FASTMATH)
def _block(Wt, C, b, has_b, x0, x1, x2, x3, x4, x5, x6, x7, labels, nr, G, gb, coef, coef_t):  # pragma: no cover - jitted
    """Loss of ``nr`` <= 8 rows (x0..x7, labels ``labels[:nr]``); their gradient is added to G, gb.

    ``coef`` (float64) and ``coef_t`` (W's dtype) are (8, Cp) scratch; the
    softmax runs in float64, the products in W's dtype (float32 stays float32).
    """
    Cp, D = Wt.shape
    # 1. scores: two 4-row micro-kernels
    _scores(Wt, x0, x1, x2, x3, coef, 0)
    _scores(Wt, x4, x5, x6, x7, coef, 4)
    # 2. softmax per row: coef becomes P - Y (0 for padding rows and classes)
    loss = 0.0
    for r in range(_GB):
        s = coef[r]
        if r >= nr:
            s[:] = 0.0
            continue
        if has_b:
            for j in range(C):
                s[j] += b[j]
        yi = labels[r]
        shift = s[0]
        for j in range(1, C):
            shift = max(shift, s[j])
        # -log p[y] = log(sum exp(s - shift)) - (s[y] - shift): never log(0)
        loss -= s[yi] - shift
        total = 0.0
        for j in range(C):
            s[j] = math.exp(s[j] - shift)
            total += s[j]
        loss += math.log(total)
        inv = 1.0 / total
        for j in range(C):
            s[j] *= inv
        s[yi] -= 1.0
        for j in range(C):
            gb[j] += s[j]
        for j in range(C, Cp):
            s[j] = 0.0
    coef_t[:] = coef
    # 3. gradient: G[j] += sum_r coef[r, j] * x_r over the 8 rows, five classes
    # at a time: each element of G is loaded and stored once per 8 rows
    for j in range(0, Cp, 5):
        g0, g1, g2, g3, g4 = G[j], G[j + 1], G[j + 2], G[j + 3], G[j + 4]
        c00, c10, c20, c30, c40, c50, c60, c70 = (
            coef_t[0, j], coef_t[1, j], coef_t[2, j], coef_t[3, j], coef_t[4, j], coef_t[5, j], coef_t[6, j], coef_t[7, j]
        )
        c01, c11, c21, c31, c41, c51, c61, c71 = (
            coef_t[0, j + 1], coef_t[1, j + 1], coef_t[2, j + 1], coef_t[3, j + 1], coef_t[4, j + 1], coef_t[5, j + 1], coef_t[6, j + 1], coef_t[7, j + 1]
        )
        c02, c12, c22, c32, c42, c52, c62, c72 = (
            coef_t[0, j + 2], coef_t[1, j + 2], coef_t[2, j + 2], coef_t[3, j + 2], coef_t[4, j + 2], coef_t[5, j + 2], coef_t[6, j + 2], coef_t[7, j + 2]
        )
        c03, c13, c23, c33, c43, c53, c63, c73 = (
            coef_t[0, j + 3], coef_t[1, j + 3], coef_t[2, j + 3], coef_t[3, j + 3], coef_t[4, j + 3], coef_t[5, j + 3], coef_t[6, j + 3], coef_t[7, j + 3]
        )
        c04, c14, c24, c34, c44, c54, c64, c74 = (
            coef_t[0, j + 4], coef_t[1, j + 4], coef_t[2, j + 4], coef_t[3, j + 4], coef_t[4, j + 4], coef_t[5, j + 4], coef_t[6, j + 4], coef_t[7, j + 4]
        )
        for d in range(D):
            v0, v1, v2, v3, v4, v5, v6, v7 = x0[d], x1[d], x2[d], x3[d], x4[d], x5[d], x6[d], x7[d]
            g0[d] += (
                c00 * v0 + c10 * v1 + c20 * v2 + c30 * v3
                + c40 * v4 + c50 * v5 + c60 * v6 + c70 * v7
            )
            g1[d] += (
                c01 * v0 + c11 * v1 + c21 * v2 + c31 * v3
                + c41 * v4 + c51 * v5 + c61 * v6 + c71 * v7
            )
            g2[d] += (
                c02 * v0 + c12 * v1 + c22 * v2 + c32 * v3
                + c42 * v4 + c52 * v5 + c62 * v6 + c72 * v7
            )
            g3[d] += (
                c03 * v0 + c13 * v1 + c23 * v2 + c33 * v3
                + c43 * v4 + c53 * v5 + c63 * v6 + c73 * v7
            )
            g4[d] += (
                c04 * v0 + c14 * v1 + c24 * v2 + c34 * v3
                + c44 * v4 + c54 * v5 + c64 * v6 + c74 * v7
            )
    return loss


@_jit(fastmath=_FASTMATH)
def _chunk(Wt, C, b, has_b, X, y, rows, has_rows, start, stop, G, gb, zero):  # pragma: no cover - jitted
    """Sum of the losses of problem rows ``start .. stop``; their gradients are added to G, gb.

    Problem row k is ``X[rows[k]]`` (labels ``y[rows[k]]``) with ``has_rows``, else ``X[k]``.
    """
    Cp = Wt.shape[0]
    coef = np.empty((_GB, Cp), dtype=np.float64)
    coef_t = np.empty((_GB, Cp), dtype=Wt.dtype)
    labels = np.zeros(_GB, dtype=np.intp)
    idx = np.zeros(_GB, dtype=np.intp)
    loss = 0.0
    for k0 in range(start, stop, _GB):
        nr = min(_GB, stop - k0)
        for r in range(nr):
            idx[r] = rows[k0 + r] if has_rows else k0 + r
            labels[r] = y[idx[r]]
        x0 = X[idx[0]]
        x1 = X[idx[1]] if nr > 1 else zero
        x2 = X[idx[2]] if nr > 2 else zero
        x3 = X[idx[3]] if nr > 3 else zero
        x4 = X[idx[4]] if nr > 4 else zero
        x5 = X[idx[5]] if nr > 5 else zero
        x6 = X[idx[6]] if nr > 6 else zero
        x7 = X[idx[7]] if nr > 7 else zero
        loss += _block(Wt, C, b, has_b, x0, x1, x2, x3, x4, x5, x6, x7, labels, nr, G, gb, coef, coef_t)
    return loss


@_jit(parallel=True)
def _fused(Wt, C, b, has_b, X, y, rows, has_rows, n, n_chunks, out, db):  # pragma: no cover - jitted
    """Loss sum of the n problem rows; writes the (D, C) gradient sum to ``out``, the bias sum to ``db``."""
    Cp, D = Wt.shape
    grads = np.zeros((n_chunks, Cp, D), dtype=Wt.dtype)
    gbs = np.zeros((n_chunks, Cp), dtype=np.float64)
    losses = np.zeros(n_chunks, dtype=np.float64)
    zero = np.zeros(D, dtype=Wt.dtype)
    for t in numba.prange(n_chunks):
        losses[t] = _chunk(Wt, C, b, has_b, X, y, rows, has_rows, t * n // n_chunks,
                           (t + 1) * n // n_chunks, grads[t], gbs[t], zero)
    # Reduce the per-thread (Cp, D) accumulators in chunk order, transposing
    # to (D, C) on the way (see _common.finish).
    for d in range(D):
        for j in range(C):
            s = grads[0, j, d]
            for t in range(1, n_chunks):
                s += grads[t, j, d]
            out[d, j] = s
    for j in range(C):
        sb = gbs[0, j]
        for t in range(1, n_chunks):
            sb += gbs[t, j]
        db[j] = sb
    return losses.sum()


# Held around parallel calls only while Numba's threading layer is unknown
# (before the first call) or is the thread-unsafe "workqueue".
_launch_lock = threading.Lock()
_layer_is_threadsafe = False


def _run_fused(*args):
    """Call the parallel kernel; if loading its on-disk cache fails, recompile without it."""
    compiled = len(_fused.overloads)
    try:
        return _fused(*args)
    except Exception as exc:
        if len(_fused.overloads) != compiled or isinstance(_fused._cache, NullCache):
            raise  # not a compile or cache load: a real error
        # Loading a damaged cache file can fail with almost any exception
        # (an unpickling error, EOFError, ...); compiling afresh cannot.
        warnings.warn(
            f"fastsoftmax numba backend: Numba's on-disk cache could not be read "
            f"({type(exc).__name__}: {exc}); recompiling without the cache in this process",
            RuntimeWarning,
            stacklevel=3,
        )
        for kernel in (_scores, _block, _chunk, _fused):
            kernel._cache = NullCache()
        return _fused(*args)


def threading_layer():
    """The Numba threading layer in use, or None before the first parallel call."""
    try:
        return numba.threading_layer()
    except ValueError:  # no parallel region has run yet
        return None


_NO_ROWS = np.zeros(1, dtype=np.intp)


def loss_grad(W, X, y, reg, b=None, rows=None, out=None, n_threads=None):
    """Loss and gradients, with optional bias, row subset and output array.

    Parameters
    ----------
    W : ndarray, shape (D, C), float32 or float64
    X : ndarray, shape (N, D), same dtype as ``W``
    y : ndarray, shape (N,), intp labels in [0, C)
    reg : float
    b : ndarray, shape (C,), dtype of ``W``, optional
    rows : ndarray, shape (n,), intp in [0, N), optional
        Process ``X[rows]``, ``y[rows]`` without gathering them.
    out : ndarray, shape (D, C), dtype of ``W``, C-contiguous, optional
    n_threads : int, optional
        Default :func:`fastsoftmax.get_num_threads`.

    Returns
    -------
    loss : float
    dW : ndarray, shape (D, C) (``out`` if given)
    db : ndarray, shape (C,), or None when ``b`` is None
    """
    global _layer_is_threadsafe
    N, C = X.shape[0], W.shape[1]
    n = N if rows is None else len(rows)
    if rows is not None and n and (rows.min() < 0 or rows.max() >= N):
        raise IndexError(f"rows must index X's {N} rows")
    n_threads = min(get_num_threads() if n_threads is None else n_threads, numba.config.NUMBA_NUM_THREADS)
    n_threads = n_chunks = thread_count(n, X.shape[1], C, n_threads)
    X = np.ascontiguousarray(X)  # rows must be contiguous; a no-op for C order
    Wt = padded_transpose(W, _CB)
    if out is None:
        out = np.empty(W.shape, dtype=W.dtype)
    db = np.empty(C, dtype=np.float64)
    has_b = b is not None
    bias = b if has_b else np.zeros(C, dtype=W.dtype)  # unused placeholder of the same type
    rws = _NO_ROWS if rows is None else rows
    args = (Wt, C, bias, has_b, X, y, rws, rows is not None, n, n_chunks, out, db)
    if _layer_is_threadsafe:
        numba.set_num_threads(n_threads)  # thread-local in Numba
        data_loss = _run_fused(*args)
    else:
        with _launch_lock:
            numba.set_num_threads(n_threads)
            data_loss = _run_fused(*args)
            _layer_is_threadsafe = threading_layer() in ("tbb", "omp")
    bias_sum = db.astype(W.dtype) if has_b else None
    loss, dW = finish(W, n, reg, data_loss, out, bias_sum)
    return loss, dW, bias_sum


def softmax_loss(problem, n_threads):
    """Softmax loss and gradients: the registry's kernel interface.

    Parameters
    ----------
    problem : fastsoftmax.backends._validate.Problem
        ``W`` (D, C) and ``X`` (N, D) float32 or float64, ``y`` (N,) intp,
        ``reg``; optional ``b``, ``rows``, ``out``, all handled natively.
    n_threads : int
        Upper bound on threads; small problems use fewer (``thread_count``).

    Returns
    -------
    loss : float
    dW : ndarray, shape (D, C), dtype of ``W`` (``out`` if given)
    db : ndarray, shape (C,), or None without ``b``
    """
    return loss_grad(*problem.args, b=problem.b, rows=problem.rows, out=problem.out, n_threads=n_threads)
