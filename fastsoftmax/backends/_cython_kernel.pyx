# cython: language_level=3
"""Compiled kernel of the ``cython`` backend (see ``cython.py``).

Design note
-----------
Three layers, as in scikit-learn's ``_loss``:

1. ``_fused_kernel.h`` (C): the tiled, fused micro-kernels.  For a tile of
   rows at a time they compute scores (+ bias), softmax, loss and the
   gradient contribution while the tile is in L2, so X is read from memory
   once; the rows may be given by an index array, so a minibatch is never
   gathered.  They are compiled for AVX-512, AVX2+FMA and the x86-64
   baseline; the widest one the CPU supports is chosen at import (see that
   header and docs/kernels.md).
2. :func:`fused_loss_grad`: a ``prange`` over contiguous chunks of the
   problem's rows, one chunk and one (Cp, D) gradient accumulator per
   thread, with the GIL released throughout; then, in the same parallel
   region, the chunks are reduced in chunk order (into the caller's ``out``
   if given), each thread a range of D, so a given thread count gives
   bit-identical results on every call.  A caller that calls again and
   again (the training step) passes a ``scratch`` dict, where the
   accumulators are kept (each thread zeroes its own) instead of allocated
   each call.
3. ``cython.py``: the backend, which pads W and calls this.

Beside the kernel, :func:`sgd_update` is the training step's update
(``fastsoftmax.training.sgd``, whatever backend computed the gradient): a
finite check and ``W -= lr * G`` in one call, since each NumPy call after a
kernel costs about 10 us of a 0.3-0.7 ms CIFAR-batch step; for the same
reason :func:`batch_in_range` is the step's check of each new batch
(``_validate.rebatch``).

Extra memory is O(threads * D * C): the per-thread accumulators and tile
scratch, one zero row per thread and the padded W.
"""

from cython.parallel cimport parallel, prange
from libc.math cimport isfinite
from libc.string cimport memset

import numpy as np

from ._common import aligned_zeros

cdef extern from "_fused_kernel.h" nogil:
    ctypedef double (*fs_kernel_f64)(const double *, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                     const double *, const double *, Py_ssize_t,
                                     const Py_ssize_t *, const Py_ssize_t *,
                                     Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t, int,
                                     double *, Py_ssize_t, double *, const double *)
    ctypedef double (*fs_kernel_f32)(const float *, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                     const float *, const float *, Py_ssize_t,
                                     const Py_ssize_t *, const Py_ssize_t *,
                                     Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t, int,
                                     float *, Py_ssize_t, double *, const float *)
    int fs_best_isa()
    fs_kernel_f64 fs_select_f64(int isa)
    fs_kernel_f32 fs_select_f32(int isa)
    ctypedef int (*fs_reduce_f64)(const double *, Py_ssize_t, Py_ssize_t, Py_ssize_t, const double *, Py_ssize_t,
                                  Py_ssize_t, Py_ssize_t, Py_ssize_t, int, double, double, double, double *, double *,
                                  double *)
    ctypedef int (*fs_reduce_f32)(const float *, Py_ssize_t, Py_ssize_t, Py_ssize_t, const float *, Py_ssize_t,
                                  Py_ssize_t, Py_ssize_t, Py_ssize_t, int, float, float, float, float *, float *,
                                  double *)
    fs_reduce_f64 fs_select_reduce_f64(int isa)
    fs_reduce_f32 fs_select_reduce_f32(int isa)
    int FS_CB
    int FS_MULTI_ISA

ctypedef fused floating:
    float
    double

#: Classes are padded with zero weights to a multiple of this (see cython.py).
CLASS_BLOCK = FS_CB

#: Instruction-set builds, by level; BEST_ISA is what this CPU runs by default.
ISA_NAMES = ("baseline", "avx2", "avx512")
BEST_ISA = fs_best_isa()
#: The builds this CPU can run (all of them only on a GCC x86-64 build).
SUPPORTED_ISAS = tuple(ISA_NAMES[: BEST_ISA + 1]) if FS_MULTI_ISA else ("baseline",)


def fused_loss_grad(
    const floating[:, :] Wt,
    const floating[:, :] X,
    const Py_ssize_t[::1] y,
    Py_ssize_t C,
    int n_threads,
    isa=None,
    b=None,
    rows=None,
    out=None,
    Py_ssize_t tile=40,
    Py_ssize_t dchunk=256,
    reg=None,
    scratch=None,
    bint prefetch_tile=False,
):
    """Return (sum of per-example losses, (D, C) gradient sum, (C,) bias-gradient sum).

    Parameters
    ----------
    Wt : ndarray, shape (Cp, D), float32 or float64, unit stride along D  # IN
        ``W.T`` with zero rows appended so that Cp is a multiple of
        :data:`CLASS_BLOCK` (``_common.padded_transpose(..., aligned=True)``
        gives 64-byte aligned rows, which the kernel's loads prefer).
    X : ndarray, shape (N, D), same dtype, unit stride along D      # IN
        Rows may be strided (a view such as ``X[::2]`` needs no copy).
    y : ndarray, shape (N,), intp labels in [0, C), indexed like X  # IN
    C : int
        The real number of classes (rows of ``Wt`` past it are padding).
    n_threads : int
        OpenMP threads (and chunks of rows).
    isa : str, optional
        One of :data:`SUPPORTED_ISAS` (tests use it to run every build);
        default the widest this CPU supports.
    b : ndarray, shape (C,), dtype of ``Wt``, optional             # IN
        Bias: scores are ``X[i] @ W + b``.
    rows : ndarray, shape (n,), intp, optional                      # IN
        The problem's rows are ``X[rows[k]]`` with labels ``y[rows[k]]``
        (any order, repeats allowed); default all rows in order.
    out : ndarray, shape (D, C), dtype of ``Wt``, C-contiguous, optional  # OUT
        Where the gradient sum is written (else a new array).
    tile, dchunk : int
        Rows per tile and D-chunk of the score pass (``_common.blocking``).
    reg : float, optional
        Finish in the reduction (what ``_common.finish`` does, without its
        three extra passes over (D, C)): divide the sums by the batch size n,
        add ``2 * reg * W`` (from ``Wt``) to the gradient and
        ``reg * sum(W**2)`` (summed in float64) to the loss.
    scratch : dict, optional
        Kept by a caller between calls (the training step): the per-thread
        accumulators are kept there and zeroed, not allocated, each call.
    prefetch_tile : bool
        The gradient pass prefetches the whole next tile into L2 instead of
        the start of its rows (faster on some CPUs and builds, slower on
        others: ``fastsoftmax tune`` measures it).  Changes no bits.

    Returns
    -------
    loss_sum : float
        With ``reg``: the loss (mean over rows plus the L2 term).
    grad_sum : ndarray, shape (D, C), dtype of ``Wt`` (``out`` if given)
        With ``reg``: the gradient ``grad_sum / n + 2 * reg * W``.
    bias_sum : ndarray, shape (C,), dtype of ``Wt``, or None without ``b``
        Sum over rows of ``P - Y``; with ``reg``, its mean.
    """
    loss, out, db, _ = _loss_grad(Wt, X, y, C, n_threads, _level(isa), b, rows, out, tile, dchunk, prefetch_tile,
                                  reg, scratch, None, 0.0)
    return loss, out, db


def sgd_step(W, Wt, X, y, Py_ssize_t C, int n_threads, isa, b, rows, out, Py_ssize_t tile, Py_ssize_t dchunk,
             bint prefetch_tile, double reg, double lr, scratch):
    """One SGD step of the training loop in one call: the kernel, its reduction and the update.

    What ``Wt[:C] = W.T``, :func:`fused_loss_grad` with ``reg`` and
    :func:`sgd_update` of W (and of b by the bias gradient) do one after the
    other, with the same bits, but with the update taken in the kernel's
    reduction: each element of W is written as its gradient is finished,
    while W's row is at hand, instead of in another pass that reads W back
    from memory after the batch has filled the caches.  W is written before
    the whole gradient is known to be finite; if it is not (or the loss is
    not), W is restored from ``Wt``, its exact copy taken at the start, so
    a refused step leaves W and b as they were, as :func:`sgd_update` does.

    Parameters
    ----------
    W : ndarray, shape (D, C), float32 or float64, C-contiguous  # IN/OUT
    Wt : ndarray, shape (Cp, D), dtype of W, unit stride along D  # OUT (scratch)
        Receives ``W.T`` in its first C rows; the rest stay as they are
        (zero: ``_common.padded_transpose``).
    X, y, C, n_threads, isa, b, rows, tile, dchunk, prefetch_tile, scratch
        As for :func:`fused_loss_grad`; ``b`` (if given) is updated in place.
    out : ndarray, shape (D, C), dtype of W, C-contiguous  # OUT
        Receives ``lr * dW`` (what :func:`sgd_update` leaves in G).
    reg : float
    lr : float
        The learning rate, rounded to W's dtype first.

    Returns
    -------
    float or None
        The loss on the batch before the update; None, with W and b
        untouched, if the loss or a gradient is not finite.
    """
    # Typed per dtype here, not a fused def function: Cython's run-time
    # dispatch of those costs microseconds per call (see sgd_update).
    level = _level(isa)
    if W.ndim != 2 or Wt.ndim != 2 or W.shape[1] != C or Wt.shape[0] < C or Wt.shape[1] != W.shape[0]:
        raise ValueError("sgd_step: inconsistent shapes")
    if W.dtype != np.float64 and W.dtype != np.float32:
        raise TypeError(f"sgd_step: W must be float32 or float64, got {W.dtype}")
    transpose_into(W, Wt)
    if W.dtype == np.float64:
        loss, _, _, ok = _loss_grad[double](Wt, X, y, C, n_threads, level, b, rows, out, tile, dchunk, prefetch_tile,
                                            reg, scratch, W, lr)
    else:
        loss, _, _, ok = _loss_grad[float](Wt, X, y, C, n_threads, level, b, rows, out, tile, dchunk, prefetch_tile,
                                           reg, scratch, W, lr)
    return loss if ok else None


def transpose_into(W, Wt):
    """``Wt[:C] = W.T`` for W of shape (D, C), C-contiguous, and Wt of shape (>= C, D) with unit stride along D.

    What ``_common.padded_transpose`` does with NumPy (14 us for CIFAR's W in
    float64, the strided reads one element at a time), in a loop that reads
    W's rows whole (a few us).  Typed per dtype, as :func:`sgd_step`.
    """
    cdef double[:, ::1] w64
    cdef float[:, ::1] w32
    cdef double[:, :] wt64
    cdef float[:, :] wt32
    if W.ndim != 2 or Wt.ndim != 2 or Wt.shape[0] < W.shape[1] or Wt.shape[1] != W.shape[0]:
        raise ValueError("transpose_into: Wt must have shape (>= C, D) for W of shape (D, C)")
    if W.dtype == np.float64:
        w64, wt64 = W, Wt
        with nogil:
            _transpose_into(w64, wt64)
    elif W.dtype == np.float32:
        w32, wt32 = W, Wt
        with nogil:
            _transpose_into(w32, wt32)
    else:
        raise TypeError(f"transpose_into: W must be float32 or float64, got {W.dtype}")


cdef void _transpose_into(const floating[:, ::1] W, floating[:, :] Wt) noexcept nogil:
    """``Wt[:C] = W.T`` for W of shape (D, C).

    In blocks of 16 rows of W (a few cache lines, in L1), each written out
    as C runs of 16 along Wt's rows: one output stream at a time, where the
    row-by-row loop kept C of them open.
    """
    cdef Py_ssize_t D = W.shape[0], C = W.shape[1], d0, d, j, dn
    cdef const floating *w = &W[0, 0]
    cdef floating *o
    for d0 in range(0, D, 16):
        dn = min(16, D - d0)
        for j in range(C):
            o = &Wt[j, d0]
            for d in range(dn):
                o[d] = w[(d0 + d) * C + j]


cdef int _level(isa) except -1:
    """Index in ISA_NAMES of the build ``isa`` names (None: the widest this CPU runs)."""
    if isa is None:
        return BEST_ISA
    if isa not in SUPPORTED_ISAS:
        raise ValueError(f"isa must be one of {SUPPORTED_ISAS}, got {isa!r}")
    return ISA_NAMES.index(isa)


cdef inline Py_ssize_t _d_split(Py_ssize_t D, Py_ssize_t parts, Py_ssize_t t) noexcept nogil:
    """Where part t of the reduction's split of D starts (t = parts: D); parts start on multiples of 64."""
    return D if t >= parts else t * (D // 64) // parts * 64


cdef tuple _loss_grad(
    const floating[:, :] Wt,
    const floating[:, :] X,
    const Py_ssize_t[::1] y,
    Py_ssize_t C,
    int n_threads,
    int level,
    b,
    rows,
    out,
    Py_ssize_t tile,
    Py_ssize_t dchunk,
    bint pf_tile,
    reg,
    scratch,
    W_out,
    double lr,
):
    """:func:`fused_loss_grad`'s work, returning ``(loss, out, db, updated)``.

    With ``W_out`` (the weights Wt was transposed from; needs ``reg``), the
    reduction also takes ``W_out -= lr * dW`` and, with a bias,
    ``b -= lr * db`` (see :func:`sgd_step`; lr rounded to the dtype),
    leaving ``lr * dW`` in ``out`` and ``lr * db`` in db; ``updated`` says
    whether it did (False: a non-finite loss or gradient, W_out and b as
    they were).  Without ``W_out``, updated is True.
    """
    cdef Py_ssize_t N = X.shape[0]
    cdef Py_ssize_t Cp = Wt.shape[0]
    cdef Py_ssize_t D = Wt.shape[1]
    if X.shape[1] != D or y.shape[0] != N or Cp % FS_CB or not 1 <= C <= Cp:
        raise ValueError("fused_loss_grad: inconsistent shapes")
    if D > 1 and X.strides[1] != sizeof(floating) or X.strides[0] % <Py_ssize_t>sizeof(floating):
        raise ValueError("fused_loss_grad: X needs unit stride along D, whole-element row strides")
    if D > 1 and Wt.strides[1] != sizeof(floating) or Wt.strides[0] % <Py_ssize_t>sizeof(floating):
        raise ValueError("fused_loss_grad: Wt needs unit stride along D")
    cdef bint update = W_out is not None
    cdef floating[:, ::1] W
    cdef floating rate = <floating>lr
    if update:
        W = W_out
        if reg is None or W.shape[0] != D or W.shape[1] != C:
            raise ValueError("fused_loss_grad: an update needs reg and W of shape (D, C)")
    dtype = np.float32 if floating is float else np.float64
    cdef const floating[::1] bv
    cdef const floating *bp = NULL
    cdef floating[::1] bw  # b, written: with an update
    if b is not None:
        bv = b
        if bv.shape[0] != C:
            raise ValueError("fused_loss_grad: b must have C entries")
        bp = &bv[0]
        if update:
            bw = b
    cdef const Py_ssize_t[::1] rv
    cdef const Py_ssize_t *rp = NULL
    cdef Py_ssize_t n = N, k
    if rows is not None:
        rv = rows
        n = rv.shape[0]
        with nogil:
            for k in range(n):
                if rv[k] < 0 or rv[k] >= N:
                    with gil:
                        raise IndexError(f"fused_loss_grad: rows[{k}] = {rv[k]} is outside [0, {N})")
        if n:
            rp = &rv[0]
    if n == 0 or N == 0:
        raise ValueError("fused_loss_grad: no rows")
    cdef floating[:, ::1] outv
    if out is None:
        out = np.empty((D, C), dtype=dtype)
    outv = out
    if outv.shape[0] != D or outv.shape[1] != C:
        raise ValueError("fused_loss_grad: out must have shape (D, C)")
    cdef Py_ssize_t n_chunks = max(1, min(<Py_ssize_t>n_threads, n))
    # Per-thread (Cp, D) accumulators, 64-byte aligned rows of ldg elements.
    cdef floating[:, :, :] grads
    cdef double[:, ::1] gbs
    cdef floating[::1] zero_row
    cdef double[:, ::1] stats  # per chunk: loss; per D-range: its part of sum(W**2), nonzero if not finite
    # One set kept per scratch dict, replaced when the layout changes (the
    # thread count follows the batch size), so a dict never holds more.
    spec = (dtype, n_chunks, Cp, D)
    kept = None if scratch is None else scratch.get("fused_loss_grad")
    # (The kernels accumulate into grads and gbs: each thread zeroes its own
    # first.  zero_row is never written.)
    if kept is not None and kept[0] == spec:
        _, grads, gbs, zero_row, stats = kept
    else:
        grads = aligned_zeros(n_chunks * Cp, D, dtype).reshape(n_chunks, Cp, -1)
        gbs = np.zeros((n_chunks, Cp), dtype=np.float64)
        zero_row = np.zeros(max(D, 1), dtype=dtype)
        stats = np.zeros((3, n_chunks), dtype=np.float64)
        if scratch is not None:
            scratch["fused_loss_grad"] = (spec, grads, gbs, zero_row, stats)
    cdef Py_ssize_t ldg = grads.shape[2]
    cdef Py_ssize_t ldw = Wt.strides[0] // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t ldx = X.strides[0] // <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t t, d_lo, d_hi
    cdef Py_ssize_t gsize = grads.shape[1] * grads.shape[2]
    cdef fs_kernel_f64 k64 = fs_select_f64(level)
    cdef fs_kernel_f32 k32 = fs_select_f32(level)
    cdef fs_reduce_f64 r64 = fs_select_reduce_f64(level)
    cdef fs_reduce_f32 r32 = fs_select_reduce_f32(level)
    cdef floating fn = <floating>n
    cdef bint finish = reg is not None
    cdef floating c2 = <floating>(2.0 * reg) if finish else 0
    cdef Py_ssize_t cstride = grads.strides[0] // <Py_ssize_t>sizeof(floating)
    cdef floating *wp = &W[0, 0] if update else NULL
    cdef floating *op = &outv[0, 0]
    # 1. Each thread its chunk of rows, into its own (Cp, D) accumulator.
    # 2. After the loop's barrier, the reduction, each thread a range of D:
    #    the accumulators summed in chunk order and transposed to (D, C);
    #    with reg, finished there too: the roundings of _common.finish (s /
    #    n, then + (2 reg) * w, each in the working dtype); with W, updated
    #    too: the roundings of sgd_update (p = rate * s, then w - p).  The
    #    per-ISA C reduction of _fused_body.h does it on vectors along D.
    with nogil, parallel(num_threads=n_threads):
        for t in prange(n_chunks, schedule="static"):
            memset(&grads[t, 0, 0], 0, gsize * sizeof(floating))
            memset(&gbs[t, 0], 0, Cp * sizeof(double))
            if floating is double:
                stats[0, t] = k64(&Wt[0, 0], ldw, Cp, C, D, bp, &X[0, 0], ldx, rp, &y[0],
                                  t * n // n_chunks, (t + 1) * n // n_chunks, tile, dchunk, pf_tile,
                                  &grads[t, 0, 0], ldg, &gbs[t, 0], &zero_row[0])
            else:
                stats[0, t] = k32(&Wt[0, 0], ldw, Cp, C, D, bp, &X[0, 0], ldx, rp, &y[0],
                                  t * n // n_chunks, (t + 1) * n // n_chunks, tile, dchunk, pf_tile,
                                  &grads[t, 0, 0], ldg, &gbs[t, 0], &zero_row[0])
        for t in prange(n_chunks, schedule="static"):
            d_lo = _d_split(D, n_chunks, t)
            d_hi = _d_split(D, n_chunks, t + 1)
            if floating is double:
                stats[2, t] = r64(&grads[0, 0, 0], n_chunks, cstride, ldg, &Wt[0, 0], ldw, C, d_lo, d_hi,
                                  finish, fn, c2, rate, op, wp, &stats[1, t])
            else:
                stats[2, t] = r32(&grads[0, 0, 0], n_chunks, cstride, ldg, &Wt[0, 0], ldw, C, d_lo, d_hi,
                                  finish, fn, c2, rate, op, wp, &stats[1, t])
    # The bias gradient (W may be written already: a non-finite one restores it below).
    db = None
    cdef floating[::1] dbv
    cdef double sb
    cdef floating check = 0, p
    cdef Py_ssize_t d, j
    if b is not None:
        db = np.empty(C, dtype=dtype)
        dbv = db
        for j in range(C):
            sb = gbs[0, j]
            for t in range(1, n_chunks):
                sb = sb + gbs[t, j]
            dbv[j] = <floating>sb
            if finish:
                dbv[j] = dbv[j] / fn
            check = check + (dbv[j] - dbv[j])
    cdef double sq = 0.0
    cdef double total = 0.0
    for t in range(n_chunks):
        total += stats[0, t]
        sq += stats[1, t]
        if stats[2, t] != 0:
            check = 1
    loss = total
    if finish:
        loss = total / n + reg * sq
    if not update:
        return loss, out, db, True
    if check != 0 or not isfinite(loss):  # (a NaN check compares unequal to 0)
        with nogil:  # undo: Wt holds W's bits from before this call
            for d in range(D):
                for j in range(C):
                    W[d, j] = Wt[j, d]
        return loss, out, db, False
    if b is not None:
        for j in range(C):
            p = dbv[j] * rate
            dbv[j] = p
            bw[j] = bw[j] - p
    return loss, out, db, True


cdef bint _sgd_update(floating *w, floating *g, Py_ssize_t n, floating rate) noexcept nogil:
    """``g *= rate; w -= g`` over n elements unless a g is NaN or inf (then False, untouched)."""
    cdef Py_ssize_t i
    # Finite check on the bits: the exponent field is all ones exactly for
    # NaN and inf, and then adding its lowest bit carries into the sign
    # bit.  Integer ORs only, so the loop vectorises (a float compare
    # ORed into a flag did not in float64: the whole update took 26 us).
    cdef const unsigned long long *b64 = <const unsigned long long *>g
    cdef const unsigned int *b32 = <const unsigned int *>g
    cdef unsigned long long acc64 = 0
    cdef unsigned int acc32 = 0
    if floating is double:
        for i in range(n):
            acc64 = acc64 | ((b64[i] & 0x7FF0000000000000ULL) + 0x0010000000000000ULL)
        if acc64 >> 63:
            return False
    else:
        for i in range(n):
            acc32 = acc32 | ((b32[i] & 0x7F800000U) + 0x00800000U)
        if acc32 >> 31:
            return False
    cdef floating p
    for i in range(n):
        # The product is stored, so it has a use besides the difference and
        # compilers do not fuse the two into one multiply-add: two roundings,
        # as NumPy's `W -= lr * G` (tested bit for bit).
        p = g[i] * rate
        g[i] = p
        w[i] = w[i] - p
    return True


def sgd_update(W, G, double lr):
    """The SGD update ``G *= lr; W -= G`` in place, only if every ``G`` is finite.

    One compiled call instead of NumPy's three (``isfinite(G).all()``, the
    product, the difference), which matter beside a CIFAR-batch kernel of
    0.3-0.6 ms (docs/training.md).  The same two roundings as
    ``W -= lr * G`` in W's dtype.

    Parameters
    ----------
    W : ndarray, shape (D, C), float32 or float64, C-contiguous  # IN/OUT
    G : ndarray, shape (D, C), dtype of ``W``, C-contiguous       # IN/OUT
        The gradient; holds ``lr * G`` afterwards.
    lr : float
        The learning rate, rounded to the dtype of ``W`` first.

    Returns
    -------
    bool
        False, with ``W`` and ``G`` untouched, if ``G`` holds NaN or inf.
    """
    # Typed per dtype here, not a fused def function: Cython's run-time
    # dispatch of those cost 10 us per call.
    cdef double[:, ::1] w64, g64
    cdef float[:, ::1] w32, g32
    if W.shape != G.shape or W.dtype != G.dtype:
        raise ValueError("sgd_update: W and G must have the same shape and dtype")
    if W.size == 0:
        return True
    if W.dtype == np.float64:
        w64, g64 = W, G
        return _sgd_update(&w64[0, 0], &g64[0, 0], w64.shape[0] * w64.shape[1], lr)
    if W.dtype == np.float32:
        w32, g32 = W, G
        return _sgd_update(&w32[0, 0], &g32[0, 0], w32.shape[0] * w32.shape[1], <float>lr)
    raise TypeError(f"sgd_update: W must be float32 or float64, got {W.dtype}")


def batch_in_range(const Py_ssize_t[:] rows, const Py_ssize_t[:] y, Py_ssize_t C):
    """Whether every ``rows[k]`` is in ``[0, len(y))`` and every ``y[rows[k]]`` in ``[0, C)``.

    The training step's check of a new batch (``_validate.rebatch``) in one
    compiled call instead of NumPy's five (two ranges, a gather, two more),
    which cost about 17 us after a kernel has filled the caches.  On False
    the caller's own checks find and name what is wrong.

    Parameters
    ----------
    rows : ndarray, shape (n,), intp  # IN
    y : ndarray, shape (N,), intp  # IN
    C : int

    Returns
    -------
    bool
    """
    cdef Py_ssize_t k, r, N = y.shape[0]
    cdef bint ok = True
    with nogil:
        for k in range(rows.shape[0]):
            r = rows[k]
            # unsigned compares: a negative value is out of range too
            if <size_t>r >= <size_t>N or <size_t>y[r] >= <size_t>C:
                ok = False
                break
    return ok
