"""``numba`` backend: the fused kernel in Numba, tile by tile, in parallel.

Design note
-----------
The same fused, tiled algorithm as the Cython kernel (docs/kernels.md), in
tiles of ``_T`` = 10 rows:

1. Scores: two 5-row x 5-class micro-kernels (25 scalar accumulators that
   LLVM turns into vector accumulators and FMAs) per block of 5 classes,
   walking D contiguously; W is transposed to (Cp, ld), rows 64-byte aligned.
   The first class block also copies the tile's rows into a packed tile
   whose rows are 64-byte aligned (X's rows of 3073 elements are not), which
   the other class blocks and the gradient read.  Where Numba's code has 16
   vector registers (x86 without AVX-512: :func:`target_isa`), five 2-row
   micro-kernels instead (``_RB``), each pair of rows packed just before
   its first class block (:func:`_pack`), since the copy in the loop would
   need two more registers.
2. The softmax, loss and coefficients ``P - Y`` of the 10 rows in float64,
   with the tile's exps in one vectorised loop (the C kernel's exp).
3. The gradient as a small GEMM with K = 10 rows: per D-chunk of 2 KB of each
   row (the chunk of the packed tile stays in L1), two classes at a time,
   ``G[j, d] += sum_r coef[r, j] * x_r[d]``, the rows in two halves of 5
   (10 coefficients in registers per loop; the (Cp, ld) accumulator,
   aligned too, is loaded and stored twice per tile).

With ``fastmath={'reassoc', 'contract'}`` LLVM vectorises the score sums
and uses FMA; the gradient needs contraction only.  Never ``nnan``/``ninf``:
NaN and inf propagate and :func:`fastsoftmax.backends._validate.check_result`
still sees a non-finite result.  LLVM tunes Intel AVX-512 CPUs to prefer
256-bit vectors; the vectorised kernels carry function attributes asking for
512-bit ones (:func:`_wide_vectors`: these functions only, no process-wide
setting; nothing changes on CPUs without AVX-512).  Loops that start at a
chunk offset use unsigned indices, since a signed index keeps Numba's
negative-index wraparound in the loop and LLVM then does not vectorise it.
Classes are padded with zero weights to a multiple of 5 and the last tile's
missing rows read a zero row, so the hot loops have no remainder code.  A
bias, a row index array (the tile's rows are ``X[rows[k]]``, never gathered
into a copy) and an output array are handled in the kernel.  X is read in
place through a flat view of its memory and its row stride
(:func:`_flat_rows`), so rows with gaps between them (a column slice) are
not copied either.

Parallelism is over contiguous chunks of rows, one chunk per thread, each
with its own (Cp, D) gradient accumulator and (10, D) packed tile; the
accumulators are summed in chunk order, so a given thread count gives
bit-identical results.  Extra memory is O(threads * D * (C + 10)), independent
of N.

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

import functools
import math
import platform
import re
import threading

import numba
import numpy as np
from numba import types
from llvmlite import ir
from numba.core import cgutils
from numba.extending import intrinsic

from ._numba_cache import call_recovering
from ._numba_cache import jit as _jit
from . import _wisdom
from ._threads import get_num_threads
from ._common import (
    LOSS_GRAD_DOC, aligned_zeros, finish, padded_classes, registry_kernel, rows_in_place, thread_count,
)

_T = 10  # rows per tile: two 5-row (or five 2-row) score micro-kernels, one 10-row gradient micro-kernel
_CB = 5  # classes per score micro-kernel: Cp is C rounded up to a multiple of 5
_DC_BYTES = 2048  # bytes of each row per D-chunk of the gradient pass (256 doubles, 512 floats)
_DC_BYTES_PREFETCH = 1024  # the same while it prefetches the next tile: smaller bursts of prefetches

#: Whether the gradient pass prefetches the whole next tile (True/False, for
#: experiments and ``fastsoftmax tune``); None: from the batch size that this
#: machine's wisdom says (:func:`tile_prefetch_from`), never without it.
PREFETCH_TILE = None

# Reassociation (vectorised sums) and FMA contraction only: no nnan/ninf, so
# non-finite values propagate to the result where they are detected.
_FASTMATH = {"reassoc", "contract"}
_U = numba.uint64  # unsigned loop indices: no negative-index wraparound, so loops from d0 vectorise


@intrinsic
def _wide_vectors(typingctx):  # pragma: no cover - compile time
    """Let LLVM use 512-bit vectors in the calling function where the CPU has them.

    LLVM tunes Intel AVX-512 CPUs to prefer 256-bit vectors ("prefer-256-bit")
    unless a function says otherwise; these two function attributes say
    otherwise for this function only (no process-wide setting).  Without
    AVX-512 (e.g. ``NUMBA_CPU_NAME=haswell NUMBA_CPU_FEATURES=``; the name
    alone keeps the host's AVX-512, :func:`target_isa`) they change nothing.
    llvmlite's attribute set accepts only flag attributes, hence ``set.add``;
    should a later llvmlite not allow that, the kernels compile without the
    attributes (256-bit vectors, slower, still correct).
    """
    def codegen(context, builder, signature, args):
        attrs = builder.function.attributes
        try:
            set.add(attrs, '"prefer-vector-width"="512"')
            set.add(attrs, '"min-legal-vector-width"="512"')
        except TypeError:
            pass
        return context.get_dummy_value()
    return types.void(), codegen


@intrinsic
def _noalias(typingctx, name):  # pragma: no cover - compile time
    """Declare that the calling function's array argument ``name`` (a literal string) shares no memory it writes with the others.

    Marks that argument's data pointer ``noalias`` in the function's LLVM
    signature, as C's ``restrict`` does, so LLVM vectorises loops that store
    through it without first comparing its address range with every other
    array's at each loop entry.  :func:`_grad` enters its loops up to 240
    times per tile (per D-chunk, class pair and half) and those checks, 11
    per entry, took a tenth of its time (docs/kernels.md, round 19).  Numba has no
    public way to say this; the argument is found by the name Numba's
    calling convention gives the array's data pointer (``arg.<name>.4``).
    Where a later Numba names it otherwise, nothing is marked: the same
    code, the checks kept, slower and still correct.  The caller must pass
    an array that overlaps no other argument (read-only arguments may
    overlap each other).
    """
    if not isinstance(name, types.StringLiteral):
        return None
    target = f"arg.{name.literal_value}.4"

    def codegen(context, builder, signature, args):
        for arg in builder.function.args:
            if arg.name == target and isinstance(arg.type, ir.PointerType):
                arg.add_attribute("noalias")
        return context.get_dummy_value()
    return types.void(name), codegen


@intrinsic
def _prefetch(typingctx, a, i):  # pragma: no cover - compile time
    """Prefetch the cache line of ``a[i]`` (1-d array, no bounds check: a prefetch never faults) for later: into L2.

    ``llvm.prefetch`` (read, locality 2, data): ``prefetcht1`` on x86, the
    C kernel's hint for the next tile as well (locality 3, ``prefetcht0``,
    was 1-8 % slower at N = 10000 on a Zen 5's AVX-512, a tie on its AVX2;
    docs/kernels.md, round 19).  A call in a loop keeps LLVM from
    vectorising that loop, so it goes in loops of its own
    (:func:`_prefetch_rows`).
    """
    def codegen(context, builder, signature, args):
        aty = signature.args[0]
        ary = context.make_array(aty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aty, ary, [args[1]], wraparound=False, boundscheck=False)
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [cgutils.voidptr_t, i32, i32, i32])
        fn = builder.module.declare_intrinsic("llvm.prefetch", [cgutils.voidptr_t], fnty)
        builder.call(fn, [builder.bitcast(ptr, cgutils.voidptr_t), i32(0), i32(2), i32(1)])
        return context.get_dummy_value()
    return types.void(a, types.intp), codegen


@_jit(inline="always")
def _prefetch_rows(Xf, nxt, r0, r1, d0, d1, step):  # pragma: no cover - jitted
    """Prefetch elements ``d0 .. d1`` of the next tile's rows ``r0 .. r1`` (row r starts at ``Xf[nxt[r]]``), one per ``step``.

    Inlined where it is called (Numba IR): as a call (up to 240 per tile in
    :func:`_grad`), it had the loop's 10 coefficients saved and reloaded
    around it, 9-10 % of that pass (docs/kernels.md, round 19).
    """
    for r in range(r0, r1):
        base = nxt[r]
        for d in range(d0, d1, step):
            _prefetch(Xf, base + d)


@_jit(fastmath=_FASTMATH)
def _row(x, p, d, a0, a1, a2, a3, a4, s0, s1, s2, s3, s4):  # pragma: no cover - jitted
    """One row's step of :func:`_scores`: ``x[d]`` (copied to ``p[d]`` unless ``p`` is None) times 5 W values, added to 5 sums."""
    v = x[d]
    if p is not None:
        p[d] = v
    return s0 + v * a0, s1 + v * a1, s2 + v * a2, s3 + v * a3, s4 + v * a4


@_jit(fastmath=_FASTMATH)
def _scores(Wt, D, j, x0, x1, x2, x3, x4, S, r0, p0=None, p1=None, p2=None, p3=None, p4=None):  # pragma: no cover - jitted
    """``S[r0 + r, j + c] = x_r[:D] . Wt[j + c, :D]`` for 5 rows x 5 classes: 25 accumulators, one pass over D.

    With ``p0..p4`` it also copies the rows it reads, ``p_r[:D] = x_r[:D]``
    (the packed tile).  Numba compiles one version per argument types, so
    without them (``None``) the copy is not in the loop at all.

    The body is written row by row (:func:`_row`: load x_r, copy it, its 5
    FMAs), because LLVM keeps that order: 25 accumulators, 5 W vectors and
    1 row vector fit AVX-512's 32 registers.  Written with the 5 rows loaded
    first, the copy version held 35 vectors at once, spilled 4 accumulators
    and shuffled the rest every iteration: its score pass took 7.8 ms
    instead of 5.8 ms per 10000 rows in L1 (float64; docs/kernels.md,
    round 6).  Same sums, same order, same bits.
    """
    _wide_vectors()
    z = Wt.dtype.type(0)
    w0, w1, w2, w3, w4 = Wt[j], Wt[j + 1], Wt[j + 2], Wt[j + 3], Wt[j + 4]
    s00 = s01 = s02 = s03 = s04 = z
    s10 = s11 = s12 = s13 = s14 = z
    s20 = s21 = s22 = s23 = s24 = z
    s30 = s31 = s32 = s33 = s34 = z
    s40 = s41 = s42 = s43 = s44 = z
    for d in range(_U(0), _U(D)):
        a0, a1, a2, a3, a4 = w0[d], w1[d], w2[d], w3[d], w4[d]
        s00, s01, s02, s03, s04 = _row(x0, p0, d, a0, a1, a2, a3, a4, s00, s01, s02, s03, s04)
        s10, s11, s12, s13, s14 = _row(x1, p1, d, a0, a1, a2, a3, a4, s10, s11, s12, s13, s14)
        s20, s21, s22, s23, s24 = _row(x2, p2, d, a0, a1, a2, a3, a4, s20, s21, s22, s23, s24)
        s30, s31, s32, s33, s34 = _row(x3, p3, d, a0, a1, a2, a3, a4, s30, s31, s32, s33, s34)
        s40, s41, s42, s43, s44 = _row(x4, p4, d, a0, a1, a2, a3, a4, s40, s41, s42, s43, s44)
    S[r0, j], S[r0, j + 1], S[r0, j + 2], S[r0, j + 3], S[r0, j + 4] = s00, s01, s02, s03, s04
    S[r0 + 1, j], S[r0 + 1, j + 1], S[r0 + 1, j + 2], S[r0 + 1, j + 3], S[r0 + 1, j + 4] = s10, s11, s12, s13, s14
    S[r0 + 2, j], S[r0 + 2, j + 1], S[r0 + 2, j + 2], S[r0 + 2, j + 3], S[r0 + 2, j + 4] = s20, s21, s22, s23, s24
    S[r0 + 3, j], S[r0 + 3, j + 1], S[r0 + 3, j + 2], S[r0 + 3, j + 3], S[r0 + 3, j + 4] = s30, s31, s32, s33, s34
    S[r0 + 4, j], S[r0 + 4, j + 1], S[r0 + 4, j + 2], S[r0 + 4, j + 3], S[r0 + 4, j + 4] = s40, s41, s42, s43, s44


@_jit(fastmath=_FASTMATH)
def _scores2(Wt, D, j, x0, x1, S, r0):  # pragma: no cover - jitted
    """:func:`_scores` for 2 rows x 5 classes, without the copy: the micro-kernel where the CPU has 16 vector registers.

    10 accumulators and 5 W vectors fill 15 of AVX2's 16 ymm registers, the
    rows are FMA memory operands; the 5 x 5 block needs 31 and spilled on
    every step.  A copy in the loop needs a register for each row as well:
    LLVM then spilled one accumulator, whose store-to-load chain made the
    first class block 2.5x slower (docs/kernels.md, round 18), so
    :func:`_pack` copies the rows first.  The C kernel's AVX2 build blocks
    the same way (``_fused_kernel.h``).
    """
    _wide_vectors()
    z = Wt.dtype.type(0)
    w0, w1, w2, w3, w4 = Wt[j], Wt[j + 1], Wt[j + 2], Wt[j + 3], Wt[j + 4]
    s00 = s01 = s02 = s03 = s04 = z
    s10 = s11 = s12 = s13 = s14 = z
    for d in range(_U(0), _U(D)):
        a0, a1, a2, a3, a4 = w0[d], w1[d], w2[d], w3[d], w4[d]
        s00, s01, s02, s03, s04 = _row(x0, None, d, a0, a1, a2, a3, a4, s00, s01, s02, s03, s04)
        s10, s11, s12, s13, s14 = _row(x1, None, d, a0, a1, a2, a3, a4, s10, s11, s12, s13, s14)
    S[r0, j], S[r0, j + 1], S[r0, j + 2], S[r0, j + 3], S[r0, j + 4] = s00, s01, s02, s03, s04
    S[r0 + 1, j], S[r0 + 1, j + 1], S[r0 + 1, j + 2], S[r0 + 1, j + 3], S[r0 + 1, j + 4] = s10, s11, s12, s13, s14


@_jit()
def _pack(p, x, D):  # pragma: no cover - jitted
    """``p[:D] = x[:D]`` in a loop LLVM vectorises (a slice assignment compiles to a slower generic copy)."""
    for d in range(_U(0), _U(D)):
        p[d] = x[d]


@_jit(fastmath={"contract"})
def _grad(G, D, coef_t, x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, dc, Xf, nxt, nn):  # pragma: no cover - jitted
    """``G[j, :D] += sum_r coef_t[r, j] * x_r[:D]`` over the tile's 10 rows, for every class j.

    D-chunk by D-chunk of ``dc`` elements (the chunk of the 10 rows stays in
    L1 while every class pair reads it), two classes at a time, the rows in
    two halves of 5: per vector of D and half, 5 loads of X, 2 loads and 2
    stores of G, 10 FMAs, with the half's 10 coefficients in registers.
    One 10-row loop loads and stores G half as often, but its sums are
    chains of 10 dependent FMAs and its 20 coefficients do not all stay in
    registers (LLVM reloads 2 of them from the stack per vector in float64,
    14 in float32).  On a Zen 5 the 10-row loop made the float32 gradient
    pass 40-55 % slower; in float64 the kernel with X in cache ran 2-8 %
    faster with the halves, from memory the same (docs/kernels.md, round
    17); on a Sapphire Rapids the halves were 6-10 % slower in float64
    (round 6).

    Only FMA contraction, no reassociation: each sum is the written chain,
    in order.  Before each half's loop, its share of the chunk of the next
    tile's ``nn`` rows is prefetched (:func:`_prefetch_rows`; ``nn`` = 0:
    none): smaller bursts than one per class pair, 11-18 % faster at
    N = 10000 on a Zen 5 (round 15).

    G must share no memory with the rows or the other arguments: it is
    declared ``noalias`` (:func:`_noalias`).
    """
    _wide_vectors()
    _noalias("G")
    Cp = G.shape[0]
    step = 64 // G.itemsize
    pairs = (Cp + 1) // 2
    for d0 in range(0, D, dc):
        d1 = min(D, d0 + dc)
        for j in range(0, Cp, 2):
            k = min(j + 1, Cp - 1)
            ga, gb = G[j], G[k]
            ra, rc = j // 2 * nn // pairs, (j // 2 + 1) * nn // pairs
            rb = (ra + rc) // 2
            a0, a1, a2, a3, a4 = coef_t[0, j], coef_t[1, j], coef_t[2, j], coef_t[3, j], coef_t[4, j]
            a5, a6, a7, a8, a9 = coef_t[5, j], coef_t[6, j], coef_t[7, j], coef_t[8, j], coef_t[9, j]
            if k == j:  # odd Cp: the last class alone
                _prefetch_rows(Xf, nxt, ra, rc, d0, d1, step)
                for d in range(_U(d0), _U(d1)):
                    ga[d] += (a0 * x0[d] + a1 * x1[d] + a2 * x2[d] + a3 * x3[d] + a4 * x4[d]
                              + a5 * x5[d] + a6 * x6[d] + a7 * x7[d] + a8 * x8[d] + a9 * x9[d])
                continue
            b0, b1, b2, b3, b4 = coef_t[0, k], coef_t[1, k], coef_t[2, k], coef_t[3, k], coef_t[4, k]
            b5, b6, b7, b8, b9 = coef_t[5, k], coef_t[6, k], coef_t[7, k], coef_t[8, k], coef_t[9, k]
            _prefetch_rows(Xf, nxt, ra, rb, d0, d1, step)
            for d in range(_U(d0), _U(d1)):
                v0, v1, v2, v3, v4 = x0[d], x1[d], x2[d], x3[d], x4[d]
                ga[d] += a0 * v0 + a1 * v1 + a2 * v2 + a3 * v3 + a4 * v4
                gb[d] += b0 * v0 + b1 * v1 + b2 * v2 + b3 * v3 + b4 * v4
            _prefetch_rows(Xf, nxt, rb, rc, d0, d1, step)
            for d in range(_U(d0), _U(d1)):
                v5, v6, v7, v8, v9 = x5[d], x6[d], x7[d], x8[d], x9[d]
                ga[d] += a5 * v5 + a6 * v6 + a7 * v7 + a8 * v8 + a9 * v9
                gb[d] += b5 * v5 + b6 * v6 + b7 * v7 + b8 * v8 + b9 * v9


_SHIFTER = 6755399441055744.0  # 2^52 + 2^51: x + it rounds x to an integer, kept in the low bits
_SHIFTER_BITS = 0x4338000000000000  # its bit pattern


@_jit(fastmath={"contract"})
def _exp_nonpositive(s, t, n):  # pragma: no cover - jitted
    """``s[:n] = exp(s[:n])`` for the softmax's shifted scores (<= 0), in loops LLVM vectorises; ``t`` is scratch.

    The C kernel's exp (``_fused_body.h``): exp(x) = 2^k exp(r), k = round(x /
    ln 2), r = x - k ln 2 in two parts, exp(r) by its Taylor polynomial to r^13,
    2^k built in the exponent bits (``t`` viewed as integers).  Within 1 ulp
    of ``math.exp``; below -708 the result is 0, NaN stays NaN.  Contraction
    only: no reassociation may touch the rounding trick.
    """
    for i in range(n):
        x = s[i]
        tiny = x < -708.0
        x = 0.0 if tiny else x
        shifted = x * 1.4426950408889634 + _SHIFTER
        kd = shifted - _SHIFTER
        r = x - kd * 6.93147180369123816490e-01
        r = r - kd * 1.90821492927058770002e-10
        p = 1.0 / 6227020800.0
        p = p * r + 1.0 / 479001600.0
        p = p * r + 1.0 / 39916800.0
        p = p * r + 1.0 / 3628800.0
        p = p * r + 1.0 / 362880.0
        p = p * r + 1.0 / 40320.0
        p = p * r + 1.0 / 5040.0
        p = p * r + 1.0 / 720.0
        p = p * r + 1.0 / 120.0
        p = p * r + 1.0 / 24.0
        p = p * r + 1.0 / 6.0
        p = p * r + 0.5
        p = p * r + 1.0
        p = p * r + 1.0
        s[i] = 0.0 if tiny else p
        t[i] = shifted
    bits = t.view(np.int64)
    for i in range(n):
        bits[i] = (bits[i] - _SHIFTER_BITS + 1023) << 52
    for i in range(n):
        s[i] *= t[i]


@_jit(fastmath=_FASTMATH)
def _tile(Wt, D, C, b, has_b, x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, P, labels, nr, G, gsum, coef, coef_t, scratch,
          dc, Xf, nxt, nn):  # pragma: no cover - jitted
    """Loss of ``nr`` <= 10 rows (x0..x9, labels ``labels[:nr]``); their gradient is added to G, gsum.

    ``P`` is the (10, ld) packed tile; ``coef`` (float64) and ``coef_t`` (W's
    dtype) are (10, Cp) scratch: the softmax runs in float64, the products in
    W's dtype (float32 stays float32).  The gradient pass runs in D-chunks
    of ``dc`` elements and prefetches the next tile's ``nn`` rows, which
    start at ``Xf[nxt[r]]``.
    """
    Cp = Wt.shape[0]
    # 1. scores; the first class block also packs the rows into P (aligned)
    p0, p1, p2, p3, p4, p5, p6, p7, p8, p9 = P[0], P[1], P[2], P[3], P[4], P[5], P[6], P[7], P[8], P[9]
    if _RB == 5:
        _scores(Wt, D, 0, x0, x1, x2, x3, x4, coef, 0, p0, p1, p2, p3, p4)
        _scores(Wt, D, 0, x5, x6, x7, x8, x9, coef, 5, p5, p6, p7, p8, p9)
        for j in range(_CB, Cp, _CB):
            _scores(Wt, D, j, p0, p1, p2, p3, p4, coef, 0)
            _scores(Wt, D, j, p5, p6, p7, p8, p9, coef, 5)
    else:  # a pair of rows packed, then scored while it is in L1
        xs = (x0, x1, x2, x3, x4, x5, x6, x7, x8, x9)
        for r in range(0, _T, 2):
            _pack(P[r], xs[r], D)
            _pack(P[r + 1], xs[r + 1], D)
            _scores2(Wt, D, 0, P[r], P[r + 1], coef, r)
        for j in range(_CB, Cp, _CB):
            for r in range(0, _T, 2):
                _scores2(Wt, D, j, P[r], P[r + 1], coef, r)
    # 2. softmax: per row the shift by the maximum, then the tile's exps in
    # one vectorised loop, then per row the loss and coef = P - Y (0 for
    # padding rows and classes)
    sy = scratch[_T * Cp:]
    for r in range(nr):
        s = coef[r]
        if has_b:
            for j in range(C):
                s[j] += b[j]
        shift = s[0]
        for j in range(1, C):
            shift = max(shift, s[j])
        for j in range(C):
            s[j] -= shift
        sy[r] = s[labels[r]]
    _exp_nonpositive(coef.reshape(_T * Cp), scratch, nr * Cp)
    loss = 0.0
    for r in range(_T):
        s = coef[r]
        if r >= nr:
            s[:] = 0.0
            continue
        total = 0.0
        for j in range(C):
            total += s[j]
        # -log p[y] = log(sum exp(s - shift)) - (s[y] - shift): never log(0)
        loss += math.log(total) - sy[r]
        inv = 1.0 / total
        for j in range(C):
            s[j] *= inv
        s[labels[r]] -= 1.0
        for j in range(C):
            gsum[j] += s[j]
        for j in range(C, Cp):
            s[j] = 0.0
    coef_t[:] = coef
    # 3. gradient: a small GEMM with K = 10 rows, from the packed tile
    _grad(G, D, coef_t, p0, p1, p2, p3, p4, p5, p6, p7, p8, p9, dc, Xf, nxt, nn)
    return loss


@_jit()
def _aligned(n_rows, ld, dtype_like):  # pragma: no cover - jitted
    """A zeroed (n_rows, ld) C-contiguous array of ``dtype_like``'s dtype starting on a 64-byte boundary."""
    isz = dtype_like.itemsize
    flat = np.zeros(n_rows * ld + 64 // isz, dtype=dtype_like.dtype)
    off = ((-flat.ctypes.data) % 64) // isz
    return flat[off:off + n_rows * ld].reshape((n_rows, ld))


@_jit()
def _x_row(Xf, ldx, D, i):  # pragma: no cover - jitted
    """Row ``i`` of X, from the flat view of its memory: ``Xf[i * ldx : i * ldx + D]`` (a contiguous 1-d array)."""
    return Xf[i * ldx:i * ldx + D]


@_jit(fastmath=_FASTMATH)
def _chunk(Wt, D, C, b, has_b, Xf, ldx, y, rows, has_rows, start, stop, G, gb, zero, pf):  # pragma: no cover - jitted
    """Sum of the losses of problem rows ``start .. stop``; their gradients are added to G, gb.

    Row i of X is ``_x_row(Xf, ldx, D, i)``.  Problem row k is X's row
    ``rows[k]`` (label ``y[rows[k]]``) with ``has_rows``, else row k.  With
    ``pf`` each tile's gradient pass prefetches the next tile's rows (into
    L2, in D-chunks of ``_DC_BYTES_PREFETCH``).
    """
    Cp, ld = Wt.shape
    coef = np.empty((_T, Cp), dtype=np.float64)
    coef_t = np.empty((_T, Cp), dtype=Wt.dtype)
    scratch = np.empty(_T * Cp + _T, dtype=np.float64)  # the exp's integers, then s[y] - shift per row
    labels = np.zeros(_T, dtype=np.intp)
    idx = np.zeros(_T, dtype=np.intp)
    nxt = np.zeros(_T, dtype=np.intp)  # where the next tile's rows start in Xf
    dc = (_DC_BYTES_PREFETCH if pf else _DC_BYTES) // Wt.itemsize
    P = _aligned(_T, ld, zero)
    loss = 0.0
    for k0 in range(start, stop, _T):
        nr = min(_T, stop - k0)
        for r in range(nr):
            idx[r] = rows[k0 + r] if has_rows else k0 + r
            labels[r] = y[idx[r]]
        x0 = _x_row(Xf, ldx, D, idx[0])
        x1 = _x_row(Xf, ldx, D, idx[1]) if nr > 1 else zero
        x2 = _x_row(Xf, ldx, D, idx[2]) if nr > 2 else zero
        x3 = _x_row(Xf, ldx, D, idx[3]) if nr > 3 else zero
        x4 = _x_row(Xf, ldx, D, idx[4]) if nr > 4 else zero
        x5 = _x_row(Xf, ldx, D, idx[5]) if nr > 5 else zero
        x6 = _x_row(Xf, ldx, D, idx[6]) if nr > 6 else zero
        x7 = _x_row(Xf, ldx, D, idx[7]) if nr > 7 else zero
        x8 = _x_row(Xf, ldx, D, idx[8]) if nr > 8 else zero
        x9 = _x_row(Xf, ldx, D, idx[9]) if nr > 9 else zero
        nn = max(0, min(_T, stop - k0 - _T)) if pf else 0
        for r in range(nn):
            k = k0 + _T + r
            nxt[r] = (rows[k] if has_rows else k) * ldx
        loss += _tile(Wt, D, C, b, has_b, x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, P, labels, nr, G, gb, coef, coef_t, scratch,
                      dc, Xf, nxt, nn)
    return loss


@_jit(parallel=True)
def _fused(Wt, D, C, b, has_b, Xf, ldx, y, rows, has_rows, n, n_chunks, out, db, pf):  # pragma: no cover - jitted
    """Loss sum of the n problem rows; writes the (D, C) gradient sum to ``out``, the bias sum to ``db``.

    ``Wt`` is (Cp, ld), 64-byte aligned rows, of which the first D columns
    are ``W.T``.  X is read in place: row i is ``Xf[i * ldx : i * ldx + D]``
    (:func:`_flat_rows`).  ``pf``: the gradient passes prefetch the next
    tile (:func:`_chunk`).
    """
    Cp, ld = Wt.shape
    zero = np.zeros(D, dtype=Wt.dtype)
    grads = _aligned(n_chunks * Cp, ld, zero).reshape((n_chunks, Cp, ld))
    gbs = np.zeros((n_chunks, Cp), dtype=np.float64)
    losses = np.zeros(n_chunks, dtype=np.float64)
    for t in numba.prange(n_chunks):
        losses[t] = _chunk(Wt, D, C, b, has_b, Xf, ldx, y, rows, has_rows, t * n // n_chunks,
                           (t + 1) * n // n_chunks, grads[t], gbs[t], zero, pf)
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
    return call_recovering(_fused, (_prefetch_rows, _row, _scores, _scores2, _pack, _grad, _exp_nonpositive, _tile, _aligned,
                                    _x_row, _chunk, _fused), *args)


def threading_layer():
    """The Numba threading layer in use, or None before the first parallel call."""
    try:
        return numba.threading_layer()
    except ValueError:  # no parallel region has run yet
        return None


_NO_ROWS = np.zeros(1, dtype=np.intp)


def _flat_rows(X):
    """X's memory as a read-only 1-d view and its row stride: row i is ``flat[i * ldx : i * ldx + D]``.

    No copy when :func:`~fastsoftmax.backends._common.rows_in_place` reads
    X in place and its row stride is not negative: C order, and also rows
    with gaps between them (``big[:, :D]``, a column slice), which Numba
    would otherwise type as a non-contiguous 2-d array and not vectorise.
    The view covers exactly the elements from ``X[0, 0]`` to ``X[N-1,
    D-1]``.  Anything else (Fortran order, strided columns, negative
    strides) is copied to C order first.
    """
    N, D = X.shape
    X = rows_in_place(X)
    if X.flags.c_contiguous or X.strides[0] < 0 or not X.size:
        flat = np.ascontiguousarray(X).reshape(-1)  # C order (already, or copied); the reshape is a view
        flat.flags.writeable = False  # one Numba type for every X (as_strided's views are read-only)
        return flat, D
    ldx = X.strides[0] // X.itemsize
    return np.lib.stride_tricks.as_strided(X, shape=((N - 1) * ldx + D,), strides=(X.itemsize,), writeable=False), ldx


def _aligned_transpose(W, scratch=None):
    """``W.T`` padded with zeros to (Cp, ld): Cp a multiple of 5, rows of ld elements starting on 64-byte boundaries.

    With ``scratch`` (a dict the caller keeps), written into the array kept
    there by an earlier call of the same shape and dtype.
    """
    D, C = W.shape
    Cp = padded_classes(C, _CB)
    key = ("aligned_transpose", W.shape, W.dtype)
    Wt = None if scratch is None else scratch.get(key)
    if Wt is None:
        Wt = aligned_zeros(Cp, D, W.dtype)
        if scratch is not None:
            scratch[key] = Wt
    Wt[:C, :D] = W.T  # the padding stays zero: nothing else writes it
    return Wt


def _isa_probe(a, b):  # pragma: no cover - jitted by target_isa
    """``a += 2 b``: a loop LLVM vectorises as widely as the target allows (as the kernels are, with _wide_vectors)."""
    _wide_vectors()
    for i in range(_U(0), _U(a.shape[0])):
        a[i] += 2.0 * b[i]


@functools.cache
def target_isa():
    """The instruction set Numba compiles these kernels for: ``"avx512"``, ``"avx2"``, ``"baseline"`` or None.

    From the feature list Numba hands LLVM (its codegen's ``magic_tuple``,
    the key of its cache too) where it decides: ``+avx512f``, AVX-512;
    ``-avx512f`` with ``+avx2`` and ``+fma``, AVX2; ``-avx512f`` with
    ``-avx2`` or ``-fma``, ``"baseline"`` (below AVX2+FMA, as the C kernel's
    builds are named).  The host's list (the default) always decides.  A
    list that does not (``NUMBA_CPU_FEATURES=``, or one naming only some
    features: the CPU that ``NUMBA_CPU_NAME`` names adds its own) is read
    from the code itself: a small loop, vectorised like the kernels
    (:func:`_wide_vectors`), is compiled (0.25 s on a Zen 5, never cached)
    and its assembly says which registers it uses (zmm; ymm and FMAs; else).
    None off x86.

    Why not from the environment: ``NUMBA_CPU_NAME`` alone keeps the host's
    features.  ``NUMBA_CPU_NAME=haswell`` on an AVX-512 machine still
    compiles zmm code (Numba 0.68, a Zen 5; docs/kernels.md, round 18);
    ``NUMBA_CPU_NAME=haswell NUMBA_CPU_FEATURES=`` holds it to AVX2.
    """
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    from numba.core.registry import cpu_target

    features = set(cpu_target.target_context.codegen().magic_tuple()[2].split(","))
    if "+avx512f" in features:
        return "avx512"
    if "-avx512f" in features and {"+avx2", "+fma"} <= features:
        return "avx2"
    if "-avx512f" in features and features & {"-avx2", "-fma"}:
        return "baseline"
    probe = numba.njit(fastmath={"contract"})(_isa_probe)  # a fresh dispatcher, not cached: its assembly is kept
    probe.compile("void(float64[::1], float64[::1])")
    asm = "".join(probe.inspect_asm().values())
    if re.search(r"%zmm\d", asm):
        return "avx512"
    if re.search(r"%ymm\d", asm) and "vfmadd" in asm:
        return "avx2"
    return "baseline"


def tile_prefetch_from(itemsize):
    """From which batch size the gradient pass prefetches the whole next tile.

    :data:`PREFETCH_TILE` when set (True: 1, False: never), else this
    machine's measured threshold for the Numba kernel
    (:func:`._wisdom.prefetch_start` of ``"numba"``), else never: on a
    Zen 5 it was 6-18 % faster at N >= 10000 and 5-20 % slower at N = 500
    (docs/kernels.md, round 15), so ``fastsoftmax tune`` measures it.

    Returns
    -------
    int
        Batches of at least this many rows prefetch whole tiles
        (``sys.maxsize``: never).
    """
    return _wisdom.prefetch_start("numba", itemsize, PREFETCH_TILE)


#: Rows per score micro-kernel, read when the kernels compile: 5 x 5 classes
#: where Numba's code has 32 vector registers (AVX-512; other CPUs' vector
#: units too), 2 x 5 where it has 16 (x86 without AVX-512).  Numba's disk
#: cache keys its builds by the CPU name and features this follows.
_RB = 2 if target_isa() in ("avx2", "baseline") else 5


# The contract of both compiled backends: _common.LOSS_GRAD_DOC, set as the docstring below.
def loss_grad(W, X, y, reg, b=None, rows=None, out=None, n_threads=None, scratch=None):
    global _layer_is_threadsafe
    N, C = X.shape[0], W.shape[1]
    n = N if rows is None else len(rows)
    if rows is not None and n and (rows.min() < 0 or rows.max() >= N):
        raise IndexError(f"rows must index X's {N} rows")
    n_threads = min(get_num_threads() if n_threads is None else n_threads, numba.config.NUMBA_NUM_THREADS)
    n_threads = n_chunks = thread_count(n, X.shape[1], C, n_threads)
    Xf, ldx = _flat_rows(X)
    Wt = _aligned_transpose(W, scratch)
    if out is None:
        out = np.empty(W.shape, dtype=W.dtype)
    db = np.empty(C, dtype=np.float64)
    has_b = b is not None
    bias = b if has_b else np.zeros(C, dtype=W.dtype)  # unused placeholder of the same type
    rws = _NO_ROWS if rows is None else rows
    pf = n >= tile_prefetch_from(W.dtype.itemsize)
    args = (Wt, W.shape[0], C, bias, has_b, Xf, ldx, y, rws, rows is not None, n, n_chunks, out, db, pf)
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


loss_grad.__doc__ = LOSS_GRAD_DOC
softmax_loss = registry_kernel(loss_grad)
