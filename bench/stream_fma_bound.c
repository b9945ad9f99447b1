/* What a kernel that reads X once could reach on this CPU: upper bounds.
 *
 * Build and run (from the repository root; -march=native for this CPU's widest
 * vectors, as the AVX-512 build of the C kernel uses):
 *
 *     gcc -O3 -march=native bench/stream_fma_bound.c -o /tmp/stream_fma_bound
 *     /tmp/stream_fma_bound            # N = 10000 rows of D = 3073 float64
 *     /tmp/stream_fma_bound 500        # another N
 *     gcc -O3 -march=native -DFS_FLOAT32 bench/stream_fma_bound.c -o /tmp/b32   # float32
 *     /tmp/stream_fma_bound 200 4585  # a training step's batch: 200 fresh rows of
 *                                     # 4585 per call against a gathered batch
 *     gcc -O3 -march=native -DFS_PAD=16 bench/stream_fma_bound.c -o /tmp/b_pad
 *                                     # rows of X 16 elements further apart
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
 * Two passes with W.  The orders that read fewer rows at once (one row, two
 * whole rows) cannot keep a slice of W in L1: a whole row meets all of W.T
 * (10 x D, an L2 resident).  The "W loaded" cases add the score pass's W
 * loads to the two-pass shape (still no gradient accumulator, no softmax):
 * the C kernel's order and register block (W from L1), that block on whole
 * rows, and one or two whole rows against all 10 classes (W from L2); and
 * the C kernel's order with pass 2 prefetching the whole next tile, as the
 * kernel's pf_tile does (round 14).  Pass
 * 2's constants are re-read from memory after pass 1, as the real kernel's
 * coefficients are, so that the block keeps all its registers (until round
 * 8 GCC kept them in 2 of AVX2's 16 and spilled an accumulator).
 *
 * Rows of X are D elements apart, as in a C-ordered NumPy array, unless
 * built with -DFS_PAD=K (D + K).  At D = 3073 that stride is 4 (float32) or 8
 * (float64) bytes past a multiple of 4 KB, so a tile's rows at one column
 * share a set of a 4 KB-periodic L1 (Zen 5: 48 KB, 12 ways; Zen 4: 32 KB, 8): a tile
 * of more rows than ways evicts itself.  The whole-next-tile cases in
 * tiles of 20 and 40 rows show it; FS_PAD=16 spreads the rows over the sets
 * (round 21).
 *
 * docs/kernels.md ("Round 3", "Round 6", "Round 7", "Round 8", "Round 21")
 * has what it measured.  Times are thread CPU time, best of 5; X is 2 MB-page aligned
 * and madvise'd for huge pages, as NumPy does for large arrays.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

#define D 3073
#ifndef FS_PAD
#define FS_PAD 0                          /* extra elements between rows of X */
#endif
#define LDX (D + FS_PAD)                   /* X's row stride, in elements */
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

/* n rows of D, 2 MB-page aligned and madvise'd for huge pages (as NumPy
 * does for large arrays), filled with fixed values; NULL if out of memory. */
static FT *rows_alloc(long n)
{
    size_t page = 2u << 20, bytes = ((size_t)n * LDX * sizeof(FT) / page + 1) * page;
    FT *X = aligned_alloc(page, bytes);
    if (!X) return NULL;
    madvise(X, bytes, MADV_HUGEPAGE);
    for (size_t i = 0; i < (size_t)n * LDX; i++) X[i] = 1.0f / (1 + i % 13);
    return X;
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
                        const FT *x = X + (k0 + r0 + r) * LDX;
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

enum { SEPARATE, PIPELINED, PREFETCH_NEXT };              /* two_pass's modes */

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
            xp[r] = X + (t < ntiles ? t * T + r : 0) * LDX;
            xn[r] = X + (t + 1 < ntiles ? (t + 1) * T + r : 0) * LDX;
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

/* Two passes as above, pass 1 on whole rows in blocks of RB (1 or 2) rows,
 * now with the score pass's W: per vector of D, the 10 vectors of a (10, D)
 * W.T (246 KB in float64: an L2 resident, as whole rows need all of it)
 * are loaded and each feeds the block's RB rows (RB x 10 accumulators, W
 * shared by the rows).  RB = 3 would need 30 accumulators, 3 row vectors and
 * a W vector: 34 > 32 registers.  Pass 2 as in two_pass (no gradient
 * accumulator). */
__attribute__((noinline)) static double two_pass_w(const FT *X, const FT *Wt, long ldw, long n, int T, int RB, int ahead)
{
    vec a[20], w[2];
    init(a, 20, w);
    const long Dv = D - D % VLN;
    const FT *xp[64];
    for (long t = 0; t < n / T; t++) {
        for (int r = 0; r < T; r++) xp[r] = X + (t * T + r) * LDX;
        for (int r0 = 0; r0 + RB <= T; r0 += RB) {
            const FT *x0 = xp[r0], *x1 = xp[r0 + RB - 1];
            for (long d = 0; d < Dv; d += VLN) {
                vec v0 = *(const vec *)(x0 + d);
                __builtin_prefetch(x0 + d + ahead / (int)sizeof(FT), 0, 3);
                if (RB == 1) {
#pragma GCC unroll 10
                    for (int k = 0; k < 10; k++) a[k] += v0 * *(const vec *)(Wt + k * ldw + d);
                } else {
                    vec v1 = *(const vec *)(x1 + d);
                    __builtin_prefetch(x1 + d + ahead / (int)sizeof(FT), 0, 3);
#pragma GCC unroll 10
                    for (int k = 0; k < 10; k++) {
                        vec wk = *(const vec *)(Wt + k * ldw + d);
                        a[k] += v0 * wk;
                        a[10 + k] += v1 * wk;
                    }
                }
            }
        }
        for (long d = 0; d < Dv; d += 2 * VLN)
            half_pass(a, w, xp, T, d, d + 2 * VLN < Dv ? d + 2 * VLN : Dv, 0, NULL, NULL);
    }
    return total(a, 20);
}

/* Two passes, pass 1 in the C kernel's order with its W: per D-chunk of Dc
 * elements (the Cp x Dc slice of W.T stays in L1; Dc = whole rows: all of
 * W.T, from L2), per block of KRB rows, per block of 5 classes, a KRB x 5
 * register block, as the C kernel's builds hold: 5 x 5 with AVX-512 (25
 * accumulators, 5 W and 1 row vector: 31 of 32 registers), 2 x 5 with
 * AVX2 (16 of 16).  The second class block re-reads the rows from L1.
 * Pass 2 as in two_pass; with `whole`, it also prefetches the whole next
 * tile into L2 (line by line, as two_pass's PREFETCH_NEXT) and its own rows
 * into L1 512 bytes ahead, as the C kernel's pf_tile does (round 14).  Row k
 * is X[rows[k]] (rows = NULL: X[k]). */
#if VBYTES == 64
#define KRB 5
#else
#define KRB 2
#endif
__attribute__((noinline)) static double two_pass_kw(const FT *X, const long *rows, const FT *Wt, long ldw, long n, int T,
                                                    int Dc, int ahead, int whole)
{
    vec a[5 * KRB], w[2];
    init(a, 5 * KRB, w);
    const long Dv = D - D % VLN;
    const FT *xp[64], *xn[64];
    for (long t = 0; t < n / T; t++) {
        for (int r = 0; r < T; r++) {
            xp[r] = X + (rows ? rows[t * T + r] : t * T + r) * LDX;
            xn[r] = t + 1 < n / T ? X + (rows ? rows[(t + 1) * T + r] : (t + 1) * T + r) * LDX : NULL;
        }
        for (long d0 = 0; d0 < Dv; d0 += Dc) {
            long d1 = d0 + Dc < Dv ? d0 + Dc : Dv;
            for (int r0 = 0; r0 + KRB <= T; r0 += KRB)
                for (int c0 = 0; c0 < 10; c0 += 5)
                    for (long d = d0; d < d1; d += VLN) {
                        vec wv[5];
                        for (int c = 0; c < 5; c++) {
                            wv[c] = *(const vec *)(Wt + (c0 + c) * ldw + d);
#ifdef __AVX__                            /* a vector register holds a vec */
                            __asm__("" : "+v"(wv[c]));   /* in a register, loaded once (as the kernel does) */
#endif
                        }
#pragma GCC unroll 5
                        for (int r = 0; r < KRB; r++) {
                            vec xv = *(const vec *)(xp[r0 + r] + d);
                            if (c0 == 0) __builtin_prefetch(xp[r0 + r] + d + ahead / (int)sizeof(FT), 0, 3);
#pragma GCC unroll 5
                            for (int c = 0; c < 5; c++) a[5 * r + c] += xv * wv[c];
                        }
                    }
        }
        /* Pass 2's two constant vectors are re-read from memory here, so
         * they hold no registers in pass 1, whose block may need them all
         * (AVX2: 16 of 16; the real kernel's pass 2 broadcasts its
         * coefficients from memory too). */
        __asm__ volatile("" : "+m"(w));
        long cursor = 0;
        const FT *const *next = whole && xn[0] ? xn : NULL;
        for (long d = 0; d < Dv; d += 2 * VLN)
            half_pass(a, w, xp, T, d, d + 2 * VLN < Dv ? d + 2 * VLN : Dv, whole ? 512 : 0, next, &cursor);
    }
    return total(a, 5 * KRB);
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* A training step's minibatch: `batch` rows drawn at random (with
 * replacement, fixed seed) from a pool of `pool` rows, read in place (fresh:
 * a new draw every call, as an SGD step reads them), against the same
 * number of rows already gathered and read call after call (the cache
 * keeps what it can, as for the kernel on a gathered batch).  The two
 * alternate call by call, as fastsoftmax bench --training-step does; the
 * case is the kernel's order and block with W.  Medians of `calls` calls. */
static long draw(unsigned long long *state, long pool)   /* xorshift64: a row in [0, pool) */
{
    *state ^= *state << 13, *state ^= *state >> 7, *state ^= *state << 17;
    return (long)(*state % pool);
}

static int batch_mode(long batch, long pool, int calls, const FT *Wt, long ldw, int Dc)
{
    FT *X = rows_alloc(pool), *G = rows_alloc(batch);  /* G: the gathered batch */
    long *rows = malloc(sizeof(long) * batch);
    double *t_fresh = malloc(sizeof(double) * calls), *t_gathered = malloc(sizeof(double) * calls);
    if (!X || !G || !rows || !t_fresh || !t_gathered) return 1;
    unsigned long long state = 88172645463325252ull;
    for (long k = 0; k < batch; k++) {
        long row = draw(&state, pool);
        for (long d = 0; d < D; d++) G[k * LDX + d] = X[row * LDX + d];
    }
    volatile double sink = two_pass_kw(G, NULL, Wt, ldw, batch, 10, Dc, 3072, 0);
    for (int c = 0; c < calls; c++) {
        for (long k = 0; k < batch; k++) rows[k] = draw(&state, pool);
        double t = now();
        sink += two_pass_kw(X, rows, Wt, ldw, batch, 10, Dc, 3072, 0);
        t_fresh[c] = now() - t;
        t = now();
        sink += two_pass_kw(G, NULL, Wt, ldw, batch, 10, Dc, 3072, 0);
        t_gathered[c] = now() - t;
    }
    qsort(t_fresh, calls, sizeof(double), cmp);
    qsort(t_gathered, calls, sizeof(double), cmp);
    double f = t_fresh[calls / 2], g = t_gathered[calls / 2];
    printf("batch of %ld rows from %ld, %s, two passes with W in the C kernel's order (median of %d calls):\n", batch,
           pool, NAME, calls);
    printf("gathered batch %9.3f ms  %6.1f GFLOP/s\n", g * 1e3, 4.0 * batch * D * 10 / g / 1e9);
    printf("fresh rows     %9.3f ms  %6.1f GFLOP/s\n", f * 1e3, 4.0 * batch * D * 10 / f / 1e9);
    printf("fresh / gathered %.3f\n", f / g);
    free(X), free(G), free(rows), free(t_fresh), free(t_gathered);
    return 0;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 10000;
    n -= n % 10;
    if (n < 10) n = 10;
    const long ldw = (D + 63) / 64 * 64;           /* W.T rows 64-byte aligned, as in the C kernel */
    FT *Wt = aligned_alloc(64, sizeof(FT) * 10 * ldw);
    if (!Wt) return 1;
    for (long i = 0; i < 10 * ldw; i++) Wt[i] = 1e-3f * (i % 7);
    /* the C kernel's D-chunk: 192 doubles, 384 floats (AVX2 since round 9: 0.5 KB, its own case below) */
    const int chunk = 1536 / (int)sizeof(FT);
    if (argc > 2) {                             /* batch mode: N rows drawn from a pool of argv[2] */
        int rc = batch_mode(n, atol(argv[2]), argc > 3 ? atoi(argv[3]) : 41, Wt, ldw, chunk);
        free(Wt);
        return rc;
    }
    FT *X = rows_alloc(n);
    if (!X) return 1;
    enum { SWEEP, TWO_PASS, TWO_PASS_W, TWO_PASS_KW };        /* which loop a case times */
    struct { const char *what; int T, RB, Dc, ahead, kind, mode; } cases[] = {
        {"one row after the other, no prefetch", 1, 1, 4096, 0, SWEEP, SEPARATE},
        {"one row after the other, prefetch 3 KB", 1, 1, 4096, 3072, SWEEP, SEPARATE},
        {"2 rows interleaved, whole rows", 10, 2, 4096, 3072, SWEEP, SEPARATE},
        {"5 rows interleaved, whole rows", 10, 5, 4096, 3072, SWEEP, SEPARATE},
        {"5 rows interleaved, 10-row tiles, 1.5 KB chunks (the C kernel's order)", 10, 5, chunk, 3072, SWEEP, SEPARATE},
        {"two passes: pass 1 one row after the other", 10, 1, 4096, 3072, TWO_PASS, SEPARATE},
        {"two passes: pass 1 in the C kernel's order", 10, 5, chunk, 3072, TWO_PASS, SEPARATE},
        {"two passes: pass 1 two rows interleaved, whole rows", 10, 2, 4096, 3072, TWO_PASS, SEPARATE},
        {"two passes: pass 1 five rows interleaved, whole rows", 10, 5, 4096, 3072, TWO_PASS, SEPARATE},
        {"two passes, W loaded: pass 1 in the C kernel's order and block", 10, KRB, chunk, 3072, TWO_PASS_KW, SEPARATE},
        {"two passes, W loaded: the C kernel's order, 0.5 KB chunks (AVX2's)", 10, KRB, 512 / (int)sizeof(FT), 3072,
         TWO_PASS_KW, SEPARATE},
        {"two passes, W loaded: the C kernel's order, pass 2 prefetches the whole next tile", 10, KRB, chunk, 3072,
         TWO_PASS_KW, PREFETCH_NEXT},
        {"two passes, W loaded: whole next tile, tiles of 20 rows", 20, KRB, chunk, 3072, TWO_PASS_KW, PREFETCH_NEXT},
        {"two passes, W loaded: whole next tile, tiles of 40 rows", 40, KRB, chunk, 3072, TWO_PASS_KW, PREFETCH_NEXT},
        {"two passes, W loaded: pass 1 the kernel's block, whole rows", 10, KRB, 4096, 3072, TWO_PASS_KW, SEPARATE},
        {"two passes, W loaded: pass 1 one row after the other", 10, 1, 4096, 3072, TWO_PASS_W, SEPARATE},
#if VBYTES == 64                          /* 20 accumulators: AVX-512 only */
        {"two passes, W loaded: pass 1 two rows interleaved, whole rows", 10, 2, 4096, 3072, TWO_PASS_W, SEPARATE},
#endif
        {"two passes, C kernel's order, pass 2 prefetches the next tile", 10, 5, chunk, 3072, TWO_PASS, PREFETCH_NEXT},
        {"two passes pipelined: pass 1 one row after the other", 10, 1, 4096, 3072, TWO_PASS, PIPELINED},
        {"two passes pipelined: pass 1 in the C kernel's order", 10, 5, chunk, 3072, TWO_PASS, PIPELINED},
    };
    printf("N = %ld, D = %d, rows %d apart, %s; kernel-equivalent work: %.3f GFLOP\n", n, D, LDX, NAME,
           4.0 * n * D * 10 / 1e9);
    for (unsigned c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        double best = 1e30;
        volatile double sink = 0;
        for (int rep = 0; rep < 5; rep++) {
            double t = now();
            sink += cases[c].kind == TWO_PASS_KW ? two_pass_kw(X, NULL, Wt, ldw, n, cases[c].T, cases[c].Dc, cases[c].ahead,
                                                                   cases[c].mode == PREFETCH_NEXT)
                  : cases[c].kind == TWO_PASS_W ? two_pass_w(X, Wt, ldw, n, cases[c].T, cases[c].RB, cases[c].ahead)
                  : cases[c].kind == TWO_PASS ? two_pass(X, n, cases[c].T, cases[c].RB, cases[c].Dc, cases[c].ahead,
                                                         cases[c].mode)
                                              : sweep(X, n, cases[c].T, cases[c].RB, cases[c].Dc, cases[c].ahead);
            t = now() - t;
            if (t < best) best = t;
        }
        long done = n / cases[c].T * cases[c].T;   /* rows the case ran: whole tiles */
        printf("%-72s %9.3f ms  %6.1f GFLOP/s\n", cases[c].what, best * 1e3, 4.0 * done * D * 10 / best / 1e9);
    }
    free(X);
    free(Wt);
    return 0;
}
