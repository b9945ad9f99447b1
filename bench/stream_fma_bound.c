/* What a kernel that reads X once could reach on this CPU: an upper bound.
 *
 * Build and run (from the repository root; -march=native for this CPU's widest
 * vectors, as the AVX-512 build of the C kernel uses):
 *
 *     gcc -O3 -march=native bench/stream_fma_bound.c -o /tmp/stream_fma_bound
 *     /tmp/stream_fma_bound            # N = 10000 rows of D = 3073 float64
 *     /tmp/stream_fma_bound 500        # another N
 *
 * For every 8 doubles of X it loads, the loop does the fused kernel's whole
 * arithmetic on that data (4 * C = 40 flops per element, C = 10: 20
 * vector FMAs of 8 lanes) on registers only: no W, no second pass, no
 * softmax.  So no real kernel that reads X once can be faster; compare its
 * time with the kernel's work at the GEMM rate (4 * N * D * C / R_gemm,
 * what `python bench/kernel_ab.py` prints) and with the kernel itself.
 *
 * It reads X in the orders a kernel may: one row after the other (one
 * memory stream), or the way a register block over RB rows must (RB rows
 * interleaved vector by vector, in tiles of T rows and D-chunks of Dc
 * elements, like the C kernel's score pass), with each row prefetched
 * `ahead` bytes on.  docs/kernels.md ("Round 3") has what it measured.
 * Times are thread CPU time, best of 5; X is 2 MB-page aligned and
 * madvise'd for huge pages, as NumPy does for large arrays.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

#define D 3073
typedef double v8 __attribute__((vector_size(64), aligned(8)));

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

/* Tiles of T rows; per D-chunk, blocks of RB rows read interleaved. */
__attribute__((noinline)) static double sweep(const double *X, long n, int T, int RB, int Dc, int ahead)
{
    v8 a[20], w[2];
    for (int k = 0; k < 20; k++)
        for (int l = 0; l < 8; l++) a[k][l] = 0;
    for (int l = 0; l < 8; l++) {
        w[0][l] = 1e-3 * l;
        w[1][l] = -1e-3 * l;
    }
    const long Dv = D - D % 8;
    for (long k0 = 0; k0 + T <= n; k0 += T)
        for (long d0 = 0; d0 < Dv; d0 += Dc)
            for (int r0 = 0; r0 < T; r0 += RB)
                for (long d = d0; d < d0 + Dc && d < Dv; d += 8)
                    for (int r = 0; r < RB; r++) {
                        const double *x = X + (k0 + r0 + r) * D;
                        v8 xv = *(const v8 *)(x + d);
                        if (ahead) __builtin_prefetch(x + d + ahead / 8, 0, 3);
#pragma GCC unroll 20
                        for (int k = 0; k < 20; k++) a[k] += xv * w[k & 1];
                    }
    double s = 0;
    for (int k = 0; k < 20; k++)
        for (int l = 0; l < 8; l++) s += a[k][l];
    return s;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 10000;
    n -= n % 10;
    if (n < 10) n = 10;
    size_t page = 2u << 20, bytes = ((size_t)n * D * 8 / page + 1) * page;
    double *X = aligned_alloc(page, bytes);
    if (!X) return 1;
    madvise(X, bytes, MADV_HUGEPAGE);
    for (size_t i = 0; i < (size_t)n * D; i++) X[i] = 1.0 / (1 + i % 13);
    struct { const char *what; int T, RB, Dc, ahead; } cases[] = {
        {"one row after the other, no prefetch", 1, 1, 3072, 0},
        {"one row after the other, prefetch 3 KB", 1, 1, 3072, 3072},
        {"2 rows interleaved, whole rows", 10, 2, 3072, 3072},
        {"5 rows interleaved, whole rows", 10, 5, 3072, 3072},
        {"5 rows interleaved, 10-row tiles, Dc = 192 (the C kernel's order)", 10, 5, 192, 3072},
    };
    printf("N = %ld, D = %d float64; kernel-equivalent work: %.3f GFLOP\n", n, D, 4.0 * n * D * 10 / 1e9);
    for (unsigned c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        double best = 1e30;
        volatile double sink = 0;
        for (int rep = 0; rep < 5; rep++) {
            double t = now();
            sink += sweep(X, n, cases[c].T, cases[c].RB, cases[c].Dc, cases[c].ahead);
            t = now() - t;
            if (t < best) best = t;
        }
        printf("%-68s %9.3f ms  %6.1f GFLOP/s\n", cases[c].what, best * 1e3, 4.0 * n * D * 10 / best / 1e9);
    }
    free(X);
    return 0;
}
