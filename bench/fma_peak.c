/* The core's FMA peak: what no kernel, GEMM included, can beat on one thread.
 *
 * Build and run (from the repository root):
 *
 *     gcc -O2 -mavx512f -mfma bench/fma_peak.c -o /tmp/fma_peak && /tmp/fma_peak   # 64-byte vectors
 *     gcc -O2 -mavx2 -mfma bench/fma_peak.c -o /tmp/fma_peak2 && /tmp/fma_peak2     # 32-byte vectors
 *     /tmp/fma_peak 1000000                  # iterations per run (default 2e8, about 0.4 s)
 *
 * Twelve independent vector FMAs per iteration, on registers only (no
 * loads, no stores): enough chains to cover the FMA latency on two pipes,
 * few enough for AVX2's 16 registers (with the two operands).
 * Thread CPU time, best of five runs, for float64 and float32.  The
 * vectors are the widest the flags allow (64 bytes with AVX-512, 32 with
 * AVX, else SSE2's 16); x86-64 and GCC (its vector extensions and asm).
 *
 * docs/kernels.md (round 20) sets the GEMM yardstick against this peak: on
 * the Zen 5 of the later sessions OpenBLAS's square GEMM reaches 76-77 % of
 * it in float64 and 90-93 % in float32 with AVX-512.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#if defined(__AVX512F__)
#define VBYTES 64
#elif defined(__AVX__)
#define VBYTES 32
#else
#define VBYTES 16
#endif

static double seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

/* GFLOP/s of 12 FMA chains of vectors of FT, best of five runs. */
#define PEAK(FT, NAME)                                                                              \
    static double NAME(long iters)                                                                  \
    {                                                                                               \
        typedef FT V __attribute__((vector_size(VBYTES)));                                          \
        double best = 0.0;                                                                          \
        for (int run = 0; run < 5; run++) {                                                         \
            V x = (V){0} + (FT)1.0000001, y = (V){0} + (FT)0.9999999;                               \
            V a0 = x, a1 = y, a2 = x + y, a3 = x - y, a4 = x * y, a5 = x + x, a6 = y + y, a7 = x * x; \
            V a8 = a0 + 1, a9 = a1 + 1, a10 = a2 + 1, a11 = a3 + 1;                                 \
            double t0 = seconds();                                                                  \
            for (long it = 0; it < iters; it++) {                                                   \
                a0 = a0 * x + y; a1 = a1 * x + y; a2 = a2 * x + y; a3 = a3 * x + y;                 \
                a4 = a4 * x + y; a5 = a5 * x + y; a6 = a6 * x + y; a7 = a7 * x + y;                 \
                a8 = a8 * x + y; a9 = a9 * x + y; a10 = a10 * x + y; a11 = a11 * x + y;             \
                /* keep every chain in a register and every iteration in the loop */                \
                __asm__ volatile("" : "+v"(a0), "+v"(a1), "+v"(a2), "+v"(a3), "+v"(a4), "+v"(a5),   \
                                 "+v"(a6), "+v"(a7));                                               \
                __asm__ volatile("" : "+v"(a8), "+v"(a9), "+v"(a10), "+v"(a11));                    \
            }                                                                                       \
            double s = seconds() - t0;                                                              \
            double rate = 2.0 * iters * 12 * (VBYTES / sizeof(FT)) / s / 1e9;                       \
            if (rate > best) best = rate;                                                           \
        }                                                                                           \
        return best;                                                                                \
    }

PEAK(double, peak64)
PEAK(float, peak32)

int main(int argc, char **argv)
{
    long iters = argc > 1 ? atol(argv[1]) : 200000000;
    if (iters < 1) {
        fprintf(stderr, "usage: %s [iterations >= 1]\n", argv[0]);
        return 2;
    }
    printf("%d-byte vectors: float64 %.1f GFLOP/s, float32 %.1f GFLOP/s (one thread, best of 5)\n",
           VBYTES, peak64(iters), peak32(iters));
    return 0;
}
