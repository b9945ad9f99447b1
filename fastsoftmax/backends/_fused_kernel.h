/* Fused softmax loss/gradient micro-kernels, one build per instruction set.
 *
 * Design
 * ------
 * For a block of RB rows of X the kernel computes the RB x C scores, their
 * softmax and loss, and the block's gradient contribution while the rows are
 * still in L1/L2, so X is read from memory once.  The two products are tiny
 * GEMMs (K = D large, C = 10): the score micro-kernel keeps RB x CB vector
 * accumulators in registers and walks D contiguously (W is passed transposed,
 * (Cp, D), so every load is unit-stride); the gradient micro-kernel loads RB
 * vectors of X once per D position and updates every class's row of the
 * (Cp, D) accumulator.  Classes are padded with zero weights to a multiple of
 * CB and missing rows of the last block point at a zero row, so there is no
 * remainder code in the hot loops (only a scalar tail for D % VL).
 *
 * Portability: the code uses GCC vector extensions, not intrinsics, and is
 * compiled three times under `#pragma GCC target` (AVX-512, AVX2+FMA, and the
 * x86-64 baseline).  fs_select() picks the widest one the running CPU (and
 * OS) supports, so the default `pip install` build runs on any x86-64 and
 * still uses AVX-512 where it exists.  clang and non-x86 GCC get the
 * baseline build only (vectorised for whatever -m flags they use); compilers
 * without vector extensions (MSVC) get the same body as scalar code.
 * No -ffast-math: the lane order of every sum is fixed by the code, so
 * NaN/inf propagate and results are reproducible for a given ISA.
 */
#ifndef FASTSOFTMAX_FUSED_KERNEL_H
#define FASTSOFTMAX_FUSED_KERNEL_H

#include <Python.h>
#include <math.h>
#include <stdlib.h>

#define FS_CMAX_STACK 64   /* classes handled with stack scratch; more use malloc */

typedef double (*fs_kernel_f64)(const double *, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                const double *, Py_ssize_t, const Py_ssize_t *,
                                Py_ssize_t, Py_ssize_t, double *, const double *);
typedef double (*fs_kernel_f32)(const float *, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                const float *, Py_ssize_t, const Py_ssize_t *,
                                Py_ssize_t, Py_ssize_t, float *, const float *);

/* Classes per score micro-kernel: Cp = C rounded up to a multiple of this. */
#define FS_CB 5

/* GCC and clang have vector extensions; other compilers (MSVC) get scalar
 * code (VL = 1) from the same body.  -DFS_NO_VECTOR_EXT forces that path. */
#if (defined(__GNUC__) || defined(__clang__)) && !defined(FS_NO_VECTOR_EXT)
#define FS_VECTOR_EXT 1
#define FS_VZERO ((vec){0})
#define FS_LANE(v, l) ((v)[l])
#define FS_PREFETCH(p) __builtin_prefetch((p), 0, 3)
#define FS_VL(n) (n)
#else
#define FS_VECTOR_EXT 0
#define FS_VZERO ((vec)0)
#define FS_LANE(v, l) (v)
#define FS_PREFETCH(p) ((void)(p))
#define FS_VL(n) 1
#endif

/* ---- x86-64 baseline (SSE2), or any other CPU: always present ----------- */
#define RB 2
#define CB FS_CB
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

/* ---- AVX-512: 32 zmm registers, 5 rows x 5 classes of accumulators ------
 * (5x5 measured 6-10% faster than 4x5 and 8x2, 3x faster than 2x10, N=500) */
#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")
#define RB 5
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

static fs_kernel_f64 fs_select_f64(int isa) {
#if FS_MULTI_ISA
    if (isa >= 2) return fs_f64_avx512;
    if (isa == 1) return fs_f64_avx2;
#endif
    (void)isa;
    return fs_f64_base;
}

static fs_kernel_f32 fs_select_f32(int isa) {
#if FS_MULTI_ISA
    if (isa >= 2) return fs_f32_avx512;
    if (isa == 1) return fs_f32_avx2;
#endif
    (void)isa;
    return fs_f32_base;
}

#endif
