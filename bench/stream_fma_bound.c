/* What a kernel that reads X once could reach on this CPU: upper bounds.
 *
 * Build and run (from the repository root; -march=native for this CPU's widest
 * vectors, as the AVX-512 build of the C kernel uses):
 *
 *     gcc -O3 -march=native bench/stream_fma_bound.c -o /tmp/stream_fma_bound
 *     /tmp/stream_fma_bound            # N = 10000 rows of D = 3073 float64
 *     /tmp/stream_fma_bound 500        # another N
 *     gcc -O3 -march=native -DFS_FLOAT32 bench/stream_fma_bound.c -o /tmp/b32   # float32
 *
 * The vectors are the build's widest (64 bytes with AVX-512, else 32: build
 * with `-mavx2 -mfma` instead of -march=native for the AVX2 bound, and
 * compare with the AVX2 GEMM, OPENBLAS_CORETYPE=Haswell).
 *
 * One pass.  For every vector of X it loads, the loop does the fused
 * kernel's whole arithmetic on that data (4 * C = 40 flops per element,
 * C = 10: 20 vector FMAs) on registers only: no W, no second pass, no
 * softmax.  So no real kernel that reads X once can be faster; compare its
 * time with the kernel's work at the GEMM rate (4 * N * D * C / R_gemm,
 * what `python bench/kernel_ab.py` prints) and with the kernel itself.
 * It reads X in the orders a kernel may: one row after the other (one
 * memory stream), or the way a register block over RB rows must (RB rows
 * interleaved vector by vector, in tiles of T rows and D-chunks of Dc
 * bytes, like the C kernel's score pass), with each row prefetched `ahead`
 * bytes on.
 *
 * Two passes.  A fused kernel cannot do all of a row's arithmetic while the
 * row streams in: the gradient needs the row's softmax, so it needs the row's
 * scores over all of D first.  Every fused kernel therefore reads a row from
 * memory for the score pass (half the arithmetic) and again, from cache, for
 * the gradient pass (the other half).  The two-pass cases do exactly that on
 * tiles of T rows, still with no W and no softmax, so no fused kernel with
 * this shape can be faster than them.  Variants: the order of pass 1, and
 * where memory is read (during pass 1 only; pipelined, so one sweep over D
 * does pass 1 of tile t and pass 2 of tile t - 1; or with pass 2
 * prefetching the next tile, one line per vector).
 *
 * docs/kernels.md ("Round 3", "Round 6") has what it measured.  Times are
 * thread CPU time, best of 5; X is 2 MB-page aligned and madvise'd for huge
 * pages, as NumPy does for large arrays.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

#define D 3073
#ifdef FS_FLOAT32
typedef float FT;
#define NAME "float32"
#else
typedef double FT;
#define NAME "float64"
#endif
#ifdef __AVX512F__
#define VBYTES 64                         /* the widest vectors the build targets */
#else
#define VBYTES 32                         /* AVX2 (-mavx2 -mfma) and narrower: 16 registers */
#endif
#define VLN (VBYTES / (int)sizeof(FT))    /* lanes of a vector */
typedef FT vec __attribute__((vector_size(VBYTES), aligned(sizeof(FT))));

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static void init(vec *a, int na, vec *w)
{
    for (int k = 0; k < na; k++)
        for (int l = 0; l < VLN; l++) a[k][l] = 0;
    for (int l = 0; l < VLN; l++) {
        w[0][l] = 1e-3f * l;
        w[1][l] = -1e-3f * l;
    }
}

static double total(const vec *a, int na)
{
    double s = 0;
    for (int k = 0; k < na; k++)
        for (int l = 0; l < VLN; l++) s += a[k][l];
    return s;
}

/* One pass: tiles of T rows; per D-chunk, blocks of RB rows read interleaved. */
__attribute__((noinline)) static double sweep(const FT *X, long n, int T, int RB, int Dc, int ahead)
{
    vec a[10], w[2];
    init(a, 10, w);
    const long Dv = D - D % VLN;
    for (long k0 = 0; k0 + T <= n; k0 += T)
        for (long d0 = 0; d0 < Dv; d0 += Dc)
            for (int r0 = 0; r0 < T; r0 += RB)
                for (long d = d0; d < d0 + Dc && d < Dv; d += VLN)
                    for (int r = 0; r < RB; r++) {
                        const FT *x = X + (k0 + r0 + r) * D;
                        vec xv = *(const vec *)(x + d);
                        if (ahead) __builtin_prefetch(x + d + ahead / (int)sizeof(FT), 0, 3);
#pragma GCC unroll 10
                        for (int k = 0; k < 10; k++) {  /* 20 FMAs on 10 accumulators: fits 16 registers */
                            a[k] += xv * w[0];
                            a[k] += xv * w[1];
                        }
                    }
    return total(a, 10);
}

/* Half the arithmetic (10 FMAs per vector) on rows x[0 .. RB) over [d0, d1);
 * with `next`, also one prefetch (into L2) of the next tile per vector. */
static inline void half_pass(vec *a, const vec *w, const FT *const *x, int RB, long d0, long d1, int ahead,
                             const FT *const *next, long *cursor)
{
    for (long d = d0; d < d1; d += VLN)
        for (int r = 0; r < RB; r++) {
            vec xv = *(const vec *)(x[r] + d);
            if (ahead) __builtin_prefetch(x[r] + d + ahead / (int)sizeof(FT), 0, 3);
            if (next) {                     /* the next tile, row after row, line by line */
                long line = (*cursor)++, per_row = (D * (long)sizeof(FT) + 63) / 64;
                if (line < RB * per_row)
                    __builtin_prefetch((const char *)next[line / per_row] + 64 * (line % per_row), 0, 2);
            }
#pragma GCC unroll 10
            for (int k = 0; k < 10; k++) a[k] += xv * w[k & 1];
        }
}

enum { SEPARATE, PIPELINED, PREFETCH_NEXT };

/* Two passes per tile of T rows: pass 1 reads the rows (from memory) in
 * blocks of RB interleaved per D-chunk of Dc; pass 2 reads the tile again
 * (from L2), all T rows per 2-vector slice, as a gradient micro-kernel does. */
__attribute__((noinline)) static double two_pass(const FT *X, long n, int T, int RB, int Dc, int ahead, int mode)
{
    vec a[10], w[2];
    init(a, 10, w);
    const long Dv = D - D % VLN;
    const FT *xp[64], *xq[64], *xn[64];
    const long ntiles = n / T;
    for (int r = 0; r < T; r++) xp[r] = X;
    for (long t = 0; t <= ntiles; t++) {
        for (int r = 0; r < T; r++) {
            xq[r] = xp[r];
            xp[r] = X + (t < ntiles ? t * T + r : 0) * D;
            xn[r] = X + (t + 1 < ntiles ? (t + 1) * T + r : 0) * D;
        }
        long cursor = 0;
        if (mode == PIPELINED) {
            for (long d0 = 0; d0 < Dv; d0 += Dc) {
                long d1 = d0 + Dc < Dv ? d0 + Dc : Dv;
                if (t < ntiles)
                    for (int r0 = 0; r0 < T; r0 += RB) half_pass(a, w, xp + r0, RB, d0, d1, ahead, NULL, NULL);
                if (t > 0)
                    for (long d = d0; d < d1; d += 2 * VLN)
                        half_pass(a, w, xq, T, d, d + 2 * VLN < d1 ? d + 2 * VLN : d1, 0, NULL, NULL);
            }
        } else if (t < ntiles) {
            for (long d0 = 0; d0 < Dv; d0 += Dc) {
                long d1 = d0 + Dc < Dv ? d0 + Dc : Dv;
                for (int r0 = 0; r0 < T; r0 += RB) half_pass(a, w, xp + r0, RB, d0, d1, ahead, NULL, NULL);
            }
            const FT *const *next = mode == PREFETCH_NEXT && t + 1 < ntiles ? xn : NULL;
            for (long d = 0; d < Dv; d += 2 * VLN)
                half_pass(a, w, xp, T, d, d + 2 * VLN < Dv ? d + 2 * VLN : Dv, 0, next, &cursor);
        }
    }
    return total(a, 10);
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 10000;
    n -= n % 10;
    if (n < 10) n = 10;
    size_t page = 2u << 20, bytes = ((size_t)n * D * sizeof(FT) / page + 1) * page;
    FT *X = aligned_alloc(page, bytes);
    if (!X) return 1;
    madvise(X, bytes, MADV_HUGEPAGE);
    for (size_t i = 0; i < (size_t)n * D; i++) X[i] = 1.0f / (1 + i % 13);
    const int chunk = 1536 / (int)sizeof(FT);   /* the C kernel's D-chunk: 192 doubles, 384 floats */
    struct { const char *what; int T, RB, Dc, ahead, two, mode; } cases[] = {
        {"one row after the other, no prefetch", 1, 1, 4096, 0, 0, 0},
        {"one row after the other, prefetch 3 KB", 1, 1, 4096, 3072, 0, 0},
        {"2 rows interleaved, whole rows", 10, 2, 4096, 3072, 0, 0},
        {"5 rows interleaved, whole rows", 10, 5, 4096, 3072, 0, 0},
        {"5 rows interleaved, 10-row tiles, 1.5 KB chunks (the C kernel's order)", 10, 5, chunk, 3072, 0, 0},
        {"two passes: pass 1 one row after the other", 10, 1, 4096, 3072, 1, SEPARATE},
        {"two passes: pass 1 in the C kernel's order", 10, 5, chunk, 3072, 1, SEPARATE},
        {"two passes, C kernel's order, pass 2 prefetches the next tile", 10, 5, chunk, 3072, 1, PREFETCH_NEXT},
        {"two passes pipelined: pass 1 one row after the other", 10, 1, 4096, 3072, 1, PIPELINED},
        {"two passes pipelined: pass 1 in the C kernel's order", 10, 5, chunk, 3072, 1, PIPELINED},
    };
    printf("N = %ld, D = %d %s; kernel-equivalent work: %.3f GFLOP\n", n, D, NAME, 4.0 * n * D * 10 / 1e9);
    for (unsigned c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        double best = 1e30;
        volatile double sink = 0;
        for (int rep = 0; rep < 5; rep++) {
            double t = now();
            sink += cases[c].two ? two_pass(X, n, cases[c].T, cases[c].RB, cases[c].Dc, cases[c].ahead, cases[c].mode)
                                 : sweep(X, n, cases[c].T, cases[c].RB, cases[c].Dc, cases[c].ahead);
            t = now() - t;
            if (t < best) best = t;
        }
        printf("%-72s %9.3f ms  %6.1f GFLOP/s\n", cases[c].what, best * 1e3, 4.0 * n * D * 10 / best / 1e9);
    }
    free(X);
    return 0;
}
