/* Fused softmax loss/gradient kernels, one build per instruction set.
 *
 * Design (docs/kernels.md has the model and the measurements)
 * ------
 * The two products are skinny GEMMs (K = D large, C ~ 10), so the kernel is
 * built like a GEMM, around what each level of the memory hierarchy holds:
 *
 * - Rows are processed in tiles of T rows (T chosen by the caller from the
 *   L2 size: a tile, W and the gradient accumulator stay in L2).  Row k of
 *   the problem is X[rows[k]] (rows = NULL: X[k]), so a minibatch is never
 *   gathered into a copy.
 * - Score pass, D-chunk by D-chunk: a Cp x Dc slice of W.T (about 16 KB)
 *   stays in L1 while every RB-row block of the tile is multiplied by it in
 *   an RB x CB register block of vector accumulators; the vector partial
 *   sums are carried across chunks in a small buffer and reduced once.
 *   Each row of the tile is prefetched FS_AHEAD_BYTES ahead of where the
 *   pass reads it (FS_L1_AHEAD_BYTES where the tile is already in L2): the
 *   tile's rows are T concurrent streams, more than the hardware
 *   prefetchers follow well.
 * - Softmax, loss and the coefficients P - Y of the tile in double, the
 *   tile's exps in one vector loop (an exp of our own, within 1 ulp).
 * - Gradient pass: a small GEMM with K = T.  For each slice of GKV vectors
 *   of D, GNC classes x GKV vectors of accumulators stay in registers while
 *   all T rows of the tile (L2 resident) are added in, so the (Cp, D)
 *   accumulator is loaded and stored once per tile instead of once per
 *   row block.  Meanwhile the first FS_AHEAD_BYTES of the next tile's rows
 *   are prefetched, so its score pass starts on data in cache, or, where
 *   `fastsoftmax tune` measured it faster (pf_tile), the whole next tile.
 * - The reduction after the threads' kernels (NAME_reduce) sums their
 *   accumulators, finishes (s / n + 2 reg w) and transposes to (D, C), on
 *   vectors along D through a small block buffer: at N = 500 the scalar
 *   loop it replaced was 4-12 % of a call.
 * - X's rows are read where they are (no packed copy: the copy's stores
 *   and its second L2 footprint cost more than the split loads they save,
 *   and than the L1 set conflicts of rows nearly a multiple of 4 KB apart
 *   that a skewed copy avoids; docs/kernels.md, rounds 3 and 21).
 * - FS_PREFETCH_L2 asks for L2 only, but CPUs may fill L1 too (Zen 5
 *   does: bench/prefetch_level.c), so the next tile's prefetched lines
 *   pass through L1.
 * - Classes are padded with zero weights to a multiple of CB and missing rows
 *   of the last block point at a zero row, so the hot loops have no remainder
 *   code (only a scalar tail for D % VL).
 *
 * Portability: the code uses GCC vector extensions, not intrinsics, and is
 * compiled three times under `#pragma GCC target` (AVX-512, AVX2+FMA, and the
 * x86-64 baseline).  fs_select() picks the widest one the running CPU (and
 * OS) supports, so the default `pip install` build runs on any x86-64 and
 * still uses AVX-512 where it exists.  clang and non-x86 GCC get the
 * baseline build only (vectorised for whatever -m flags they use); compilers
 * without vector extensions (MSVC) get the same body as scalar code.
 * No -ffast-math: the order of every sum is fixed by the code, so NaN/inf
 * propagate and results are reproducible for a given ISA, tile and thread
 * count.
 */
#ifndef FASTSOFTMAX_FUSED_KERNEL_H
#define FASTSOFTMAX_FUSED_KERNEL_H

#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

typedef double (*fs_kernel_f64)(const double *, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                const double *, const double *, Py_ssize_t,
                                const Py_ssize_t *, const Py_ssize_t *,
                                Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t, int,
                                double *, Py_ssize_t, double *, const double *);
typedef double (*fs_kernel_f32)(const float *, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                const float *, const float *, Py_ssize_t,
                                const Py_ssize_t *, const Py_ssize_t *,
                                Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t, int,
                                float *, Py_ssize_t, double *, const float *);

/* The reduction after the kernels (see _fused_body.h): returns nonzero when
 * an updated gradient element was not finite. */
typedef int (*fs_reduce_f64)(const double *, Py_ssize_t, Py_ssize_t, Py_ssize_t, const double *, Py_ssize_t,
                             Py_ssize_t, Py_ssize_t, Py_ssize_t, int, double, double, double, double *, double *,
                             double *);
typedef int (*fs_reduce_f32)(const float *, Py_ssize_t, Py_ssize_t, Py_ssize_t, const float *, Py_ssize_t,
                             Py_ssize_t, Py_ssize_t, Py_ssize_t, int, float, float, float, float *, float *,
                             double *);

/* Classes per score micro-kernel: Cp = C rounded up to a multiple of this. */
#define FS_CB 5

/* How far ahead of its use each row of X is prefetched (bytes), where the
 * score pass reads the tile from memory. */
#ifndef FS_AHEAD_BYTES
#define FS_AHEAD_BYTES 3072
#endif

/* With the whole next tile prefetched into L2 (pf_tile), how far ahead of
 * its use each row of the tile is prefetched into L1, by both passes: the
 * rows then come from L2, so a short distance covers the latency, and the
 * long one above would keep about 30 KB of rows in flight beside the
 * 16 KB chunk of W in a 48 KB L1 (docs/kernels.md, round 19). */
#ifndef FS_L1_AHEAD_BYTES
#define FS_L1_AHEAD_BYTES 512
#endif

/* The gradient pass's prefetch loops (one iteration per row of a tile, a
 * prefetch or two each) unrolled by 8: a few per cent faster at N = 10000,
 * most with the whole next tile prefetched; no bits change (docs/kernels.md,
 * round 16).  GCC only; elsewhere the compiler decides. */
#if defined(__GNUC__) && !defined(__clang__)
#define FS_UNROLL_8 _Pragma("GCC unroll 8")
#else
#define FS_UNROLL_8
#endif

/* GCC and clang have vector extensions; other compilers (MSVC) get scalar
 * code (VL = 1) from the same body.  -DFS_NO_VECTOR_EXT forces that path. */
#if (defined(__GNUC__) || defined(__clang__)) && !defined(FS_NO_VECTOR_EXT)
#define FS_VECTOR_EXT 1
#define FS_VZERO ((VEC){0})
#define FS_PREFETCH_L2(p) __builtin_prefetch((p), 0, 2)
#define FS_PREFETCH_L1(p) __builtin_prefetch((p), 0, 3)
#define FS_INLINE inline __attribute__((always_inline))
#define FS_VL(n) (n)
/* Keep a loaded vector in a register: stops GCC from folding the load into
 * every FMA that uses it (the AVX2 build re-loaded each W vector once per
 * row, 12 loads per 10 FMAs instead of 7). */
#if defined(__x86_64__)
#define FS_IN_REGISTER(v) __asm__("" : "+v"(v))
#else
#define FS_IN_REGISTER(v) ((void)0)
#endif
#else
#define FS_VECTOR_EXT 0
#define FS_VZERO ((VEC)0)
#define FS_PREFETCH_L2(p) ((void)(p))
#define FS_PREFETCH_L1(p) ((void)(p))
#define FS_IN_REGISTER(v) ((void)0)
#if defined(_MSC_VER)
#define FS_INLINE __forceinline
#elif defined(__GNUC__) || defined(__clang__)
#define FS_INLINE inline __attribute__((always_inline))
#else
#define FS_INLINE inline
#endif
#define FS_VL(n) 1
#endif

/* ---- x86-64 baseline (SSE2), or any other CPU: always present -----------
 * 16 registers: scores 2 rows x 5 classes (10 accumulators + 2 rows + 1 W),
 * gradient 5 classes x 2 vectors (10 accumulators + 2 rows + 1 coefficient) */
#define RB 2
#define CB FS_CB
#define GNC 5
#define GKV 2
#define FT double
#define VL FS_VL(2)
#define NAME fs_f64_base
#include "_fused_body.h"
#undef FT
#undef VL
#undef NAME
#define FT float
#define VL FS_VL(4)
#define NAME fs_f32_base
#include "_fused_body.h"
#undef FT
#undef VL
#undef NAME
#undef RB

#if FS_VECTOR_EXT && defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define FS_MULTI_ISA 1
/* ---- AVX2 + FMA: 16 ymm registers, 2 rows x 5 classes of accumulators --- */
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define RB 2
#define GNC 5
#define GKV 2
#define FT double
#define VL 4
#define NAME fs_f64_avx2
#include "_fused_body.h"
#undef FT
#undef VL
#undef NAME
#define FT float
#define VL 8
#define NAME fs_f32_avx2
#include "_fused_body.h"
#undef FT
#undef VL
#undef NAME
#undef RB
#pragma GCC pop_options

/* ---- AVX-512: 32 zmm registers.  Scores: 5 rows x 5 classes (25
 * accumulators, 5 rows, 1 W; 10 loads per 25 FMAs).  Gradient: 10 classes x
 * 2 vectors (20 accumulators, 2 rows, 1 coefficient; 12 loads per 20 FMAs),
 * so for C <= 10 each tile row is read from L2 once in the gradient pass. */
#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")
#define RB 5
#undef GNC
#define GNC 10
#define FT double
#define VL 8
#define NAME fs_f64_avx512
#include "_fused_body.h"
#undef FT
#undef VL
#undef NAME
#define FT float
#define VL 16
#define NAME fs_f32_avx512
#include "_fused_body.h"
#undef FT
#undef VL
#undef NAME
#undef RB
#undef GNC
#undef GKV
#pragma GCC pop_options
#else
#define FS_MULTI_ISA 0
#endif
#undef CB

/* ISA levels: 0 baseline, 1 AVX2+FMA, 2 AVX-512. */
static int fs_best_isa(void) {
#if FS_MULTI_ISA
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
#endif
    return 0;
}

/* The build of a function for ISA level isa: fs_<dtype>_<build><suffix>. */
#if FS_MULTI_ISA
#define FS_BUILD(isa, dt, suffix) \
    ((isa) >= 2 ? fs_##dt##_avx512##suffix : (isa) == 1 ? fs_##dt##_avx2##suffix : fs_##dt##_base##suffix)
#else
#define FS_BUILD(isa, dt, suffix) ((void)(isa), fs_##dt##_base##suffix)
#endif

static fs_kernel_f64 fs_select_f64(int isa) { return FS_BUILD(isa, f64, ); }
static fs_kernel_f32 fs_select_f32(int isa) { return FS_BUILD(isa, f32, ); }
static fs_reduce_f64 fs_select_reduce_f64(int isa) { return FS_BUILD(isa, f64, _reduce); }
static fs_reduce_f32 fs_select_reduce_f32(int isa) { return FS_BUILD(isa, f32, _reduce); }

#endif
