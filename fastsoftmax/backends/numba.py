"""``numba`` backend: the fused kernel in Numba, block by block, in parallel.

Design note
-----------
The same algorithm as the Cython kernel (README, "How the kernels work"):
one fused pass over X in blocks of ``_RB`` = 4 rows.  For each block the
kernel computes the 4 x C scores, their softmax and loss, and the block's
gradient contribution while the rows are still in cache, so X is read from
memory once.  The hot loops are written as 4 rows x 5 classes of scalar
accumulators walking D contiguously (W is transposed to (Cp, D); 4 x 5
measured 1.2x faster than 4 x 2 at N=500); with
``fastmath={'reassoc', 'contract'}`` LLVM turns each into vector accumulators
and FMAs for the host CPU.  Only those two flags: reassociation
lets the sums vectorize and contraction allows FMA, while ``nnan``/``ninf``
stay off so NaN and inf propagate and :func:`fastsoftmax.backends._validate.check_result`
still sees a non-finite result.  Classes are padded with zero weights to a
multiple of 5 and the last block's missing rows read a zero row, so the hot
loops have no remainder code.

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
from ._common import finish, interim, into, padded_transpose, thread_count

_RB = 4  # rows per block (the kernel below is written for exactly 4)
_CB = 5  # classes per micro-kernel: Cp is C rounded up to a multiple of 5

# Reassociation (vectorised sums) and FMA contraction only: no nnan/ninf, so
# non-finite values propagate to the result where they are detected.
_FASTMATH = {"reassoc", "contract"}


@_jit(fastmath=_FASTMATH)
def _block(Wt, C, x0, x1, x2, x3, y, i0, nr, G, coef, coef_t):  # pragma: no cover - jitted
    """Loss of rows ``i0 .. i0+nr`` (given as x0..x3) and their gradient, added to G.

    ``coef`` (float64) and ``coef_t`` (W's dtype) are (4, Cp) scratch; the
    softmax runs in float64, the products in W's dtype (float32 stays float32).
    """
    Cp, D = Wt.shape
    z = coef_t.dtype.type(0)
    # 1. scores: 4 rows x 5 classes of accumulators, one pass over D
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
        coef[0, j], coef[0, j + 1], coef[0, j + 2], coef[0, j + 3], coef[0, j + 4] = s00, s01, s02, s03, s04
        coef[1, j], coef[1, j + 1], coef[1, j + 2], coef[1, j + 3], coef[1, j + 4] = s10, s11, s12, s13, s14
        coef[2, j], coef[2, j + 1], coef[2, j + 2], coef[2, j + 3], coef[2, j + 4] = s20, s21, s22, s23, s24
        coef[3, j], coef[3, j + 1], coef[3, j + 2], coef[3, j + 3], coef[3, j + 4] = s30, s31, s32, s33, s34
    # 2. softmax per row: coef becomes P - Y (0 for padding rows and classes)
    loss = 0.0
    for r in range(_RB):
        s = coef[r]
        if r >= nr:
            s[:] = 0.0
            continue
        yi = y[i0 + r]
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
        for j in range(C, Cp):
            s[j] = 0.0
    coef_t[:] = coef
    # 3. gradient: G[j] += sum_r coef[r, j] * x_r, five classes at a time
    for j in range(0, Cp, 5):
        g0, g1, g2, g3, g4 = G[j], G[j + 1], G[j + 2], G[j + 3], G[j + 4]
        c00, c10, c20, c30 = coef_t[0, j], coef_t[1, j], coef_t[2, j], coef_t[3, j]
        c01, c11, c21, c31 = coef_t[0, j + 1], coef_t[1, j + 1], coef_t[2, j + 1], coef_t[3, j + 1]
        c02, c12, c22, c32 = coef_t[0, j + 2], coef_t[1, j + 2], coef_t[2, j + 2], coef_t[3, j + 2]
        c03, c13, c23, c33 = coef_t[0, j + 3], coef_t[1, j + 3], coef_t[2, j + 3], coef_t[3, j + 3]
        c04, c14, c24, c34 = coef_t[0, j + 4], coef_t[1, j + 4], coef_t[2, j + 4], coef_t[3, j + 4]
        for d in range(D):
            v0, v1, v2, v3 = x0[d], x1[d], x2[d], x3[d]
            g0[d] += c00 * v0 + c10 * v1 + c20 * v2 + c30 * v3
            g1[d] += c01 * v0 + c11 * v1 + c21 * v2 + c31 * v3
            g2[d] += c02 * v0 + c12 * v1 + c22 * v2 + c32 * v3
            g3[d] += c03 * v0 + c13 * v1 + c23 * v2 + c33 * v3
            g4[d] += c04 * v0 + c14 * v1 + c24 * v2 + c34 * v3
    return loss


@_jit(fastmath=_FASTMATH)
def _chunk(Wt, C, X, y, start, stop, G, zero):  # pragma: no cover - jitted
    """Sum of the losses of rows ``start .. stop`` of X; their gradient is added to G."""
    Cp = Wt.shape[0]
    coef = np.empty((_RB, Cp), dtype=np.float64)
    coef_t = np.empty((_RB, Cp), dtype=Wt.dtype)
    loss = 0.0
    for i0 in range(start, stop, _RB):
        nr = min(_RB, stop - i0)
        x1 = X[i0 + 1] if nr > 1 else zero
        x2 = X[i0 + 2] if nr > 2 else zero
        x3 = X[i0 + 3] if nr > 3 else zero
        loss += _block(Wt, C, X[i0], x1, x2, x3, y, i0, nr, G, coef, coef_t)
    return loss


@_jit(parallel=True)
def _fused(Wt, C, X, y, n_chunks):  # pragma: no cover - jitted
    N = X.shape[0]
    Cp, D = Wt.shape
    grads = np.zeros((n_chunks, Cp, D), dtype=Wt.dtype)
    losses = np.zeros(n_chunks, dtype=np.float64)
    zero = np.zeros(D, dtype=Wt.dtype)
    for t in numba.prange(n_chunks):
        losses[t] = _chunk(Wt, C, X, y, t * N // n_chunks, (t + 1) * N // n_chunks, grads[t], zero)
    # Reduce the per-thread (Cp, D) accumulators in chunk order, transposing
    # to (D, C) on the way (see _common.finish).
    grad_sum = np.empty((D, C), dtype=Wt.dtype)
    for d in range(D):
        for j in range(C):
            s = grads[0, j, d]
            for t in range(1, n_chunks):
                s += grads[t, j, d]
            grad_sum[d, j] = s
    return losses.sum(), grad_sum


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
        for kernel in (_block, _chunk, _fused):
            kernel._cache = NullCache()
        return _fused(*args)


def threading_layer():
    """The Numba threading layer in use, or None before the first parallel call."""
    try:
        return numba.threading_layer()
    except ValueError:  # no parallel region has run yet
        return None


def softmax_loss(problem, n_threads):
    """Softmax loss and gradient with one fused, parallel pass over X.

    Parameters
    ----------
    problem : fastsoftmax.backends._validate.Problem
        ``W`` (D, C) and ``X`` (N, D) float32 or float64, ``y`` (N,) intp,
        ``reg``; optional ``b``, ``rows``, ``out``.
    n_threads : int
        Upper bound on threads; small problems use fewer (``thread_count``).

    Returns
    -------
    loss : float
    dW : ndarray, shape (D, C), dtype of ``W`` (``out`` if given)
    db : ndarray, shape (C,), or None without ``b``
    """
    global _layer_is_threadsafe
    if problem.b is not None or problem.rows is not None:
        return interim(problem, n_threads)
    W, X, y, reg = problem.args
    N, C = X.shape[0], W.shape[1]
    n_threads = min(n_threads, numba.config.NUMBA_NUM_THREADS)
    n_threads = n_chunks = thread_count(N, X.shape[1], C, n_threads)
    X = np.ascontiguousarray(X)  # rows must be contiguous; a no-op for C order
    Wt = padded_transpose(W, _CB)
    if _layer_is_threadsafe:
        numba.set_num_threads(n_threads)  # thread-local in Numba
        data_loss, grad_sum = _run_fused(Wt, C, X, y, n_chunks)
    else:
        with _launch_lock:
            numba.set_num_threads(n_threads)
            data_loss, grad_sum = _run_fused(Wt, C, X, y, n_chunks)
            _layer_is_threadsafe = threading_layer() in ("tbb", "omp")
    loss, dW = finish(W, N, reg, data_loss, grad_sum)
    return loss, into(problem.out, dW), None
