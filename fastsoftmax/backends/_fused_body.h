/* One tiled, fused softmax loss/gradient kernel, instantiated per dtype and ISA.
 *
 * Included by _fused_kernel.h with these macros defined:
 *   FT     element type (float or double)
 *   VL     lanes per vector (VL * sizeof(FT) bytes)
 *   RB     rows per score micro-kernel (register block)
 *   CB     classes per score micro-kernel (Cp must be a multiple of CB)
 *   GNC    classes per gradient micro-kernel (a multiple of CB; 5 is also used)
 *   GKV    vectors of D per gradient micro-kernel
 *   NAME   the function's name
 * See _fused_kernel.h (and docs/kernels.md) for the design.
 */

#define FS_CAT_(a, b) a##b
#define FS_CAT(a, b) FS_CAT_(a, b)
#define VEC FS_CAT(NAME, _vec)
#define GRAD_MK FS_CAT(NAME, _grad_mk)

#if FS_VECTOR_EXT
typedef FT VEC __attribute__((vector_size(VL * sizeof(FT)), aligned(sizeof(FT)), may_alias));
#else
typedef FT VEC;                                /* VL is 1: plain scalar code */
#endif

/* Gradient micro-kernel: G[j0+c, d:d+kv*VL] += sum_r cf[r, j0+c] * x_r[d:...]
 * for c < nc, r < nt.  The nc x kv accumulators live in registers for the
 * whole tile: G is loaded and stored once per tile, X's tile rows (in L2)
 * once per class group.  nc and kv are compile-time constants at every call
 * site, so the loops unroll completely. */
static FS_INLINE void GRAD_MK(const int nc, const int kv, FT *G, Py_ssize_t ldg,
                              Py_ssize_t j0, Py_ssize_t d, const FT *const *xp,
                              const FT *cf, Py_ssize_t Cp, Py_ssize_t nt)
{
    VEC acc[GNC][GKV];
    for (int c = 0; c < nc; c++)
        for (int k = 0; k < kv; k++) acc[c][k] = *(const VEC *)(G + (j0 + c) * ldg + d + k * VL);
    for (Py_ssize_t r = 0; r < nt; r++) {
        VEC xv[GKV];
        for (int k = 0; k < kv; k++) xv[k] = *(const VEC *)(xp[r] + d + k * VL);
        const FT *cr = cf + r * Cp + j0;
        for (int c = 0; c < nc; c++) {
            FT cc = cr[c];
            for (int k = 0; k < kv; k++) acc[c][k] += cc * xv[k];
        }
    }
    for (int c = 0; c < nc; c++)
        for (int k = 0; k < kv; k++) *(VEC *)(G + (j0 + c) * ldg + d + k * VL) = acc[c][k];
}

#if FS_VECTOR_EXT
/* exp in double on whole vectors, for the softmax (x <= 0 there: scores
 * minus their row's maximum).  exp(x) = 2^k * exp(r), k = round(x / ln 2),
 * r = x - k ln 2 in two parts (|r| <= ln 2 / 2, exact products), exp(r) by
 * its Taylor polynomial to r^13 (truncation < 1e-17 relative), 2^k built
 * in the exponent bits.  Within 1 ulp of libm's exp; below -708 (where
 * exp < 3.3e-308, nothing beside the row maximum's exp(0) = 1) the result
 * is 0; NaN stays NaN.  Plain vector arithmetic: the compiler's FMAs, no
 * -ffast-math, the same bits on every call. */
#define DVL (VL * (int)sizeof(FT) / (int)sizeof(double))
#define DVEC FS_CAT(NAME, _dvec)
#define DIVEC FS_CAT(NAME, _divec)
#define VEXP FS_CAT(NAME, _vexp)
typedef double DVEC __attribute__((vector_size(DVL * sizeof(double)), aligned(sizeof(double)), may_alias));
typedef long long DIVEC __attribute__((vector_size(DVL * sizeof(double))));
static FS_INLINE DVEC VEXP(DVEC x)
{
    const double shifter = 0x1.8p52;                 /* 2^52 + 2^51: rounds to integers */
    DIVEC tiny = x < -708.0;                         /* all ones where exp(x) is taken as 0 */
    x = (DVEC)((DIVEC)x & ~tiny);                    /* those lanes: x = 0 (NaN stays NaN) */
    DVEC t = x * 1.4426950408889634 + shifter;       /* k + shifter */
    DVEC kd = t - shifter;
    DVEC r = x - kd * 6.93147180369123816490e-01;    /* ln 2, high part: k * it is exact */
    r = r - kd * 1.90821492927058770002e-10;         /* ln 2, low part */
    DVEC p = (DVEC){0} + 1.0 / 6227020800.0;         /* 1/13! */
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    DIVEC k = (DIVEC)t - (DIVEC)((DVEC){0} + shifter);   /* k as an integer, -1022 <= k <= 0 */
    DVEC scale = (DVEC)((k + 1023) << 52);
    return (DVEC)((DIVEC)(p * scale) & ~tiny);
}

#endif

/* Lane sums of VL vectors at once: out[k] = sum of the lanes of v[k].
 * log2(VL) stages of "transpose and add": each pairs up the vectors and
 * adds the lower and upper blocks of bs lanes of both (two two-source
 * shuffles and an add per pair), so VL sums take 3 (VL - 1) vector
 * operations where summing lanes one by one took 2 VL per sum (12 % of
 * the kernel's time at VL = 16 with X in L1).  The order of the additions
 * is a fixed tree: the same bits on every call. */
#define HSUM FS_CAT(NAME, _hsum)
#if FS_VECTOR_EXT
#define IVEC FS_CAT(NAME, _ivec)
/* integer lanes of FT's width */
typedef __typeof__(__builtin_choose_expr(sizeof(FT) == 8, (long long)0, (int)0)) FS_CAT(NAME, _ilane);
typedef FS_CAT(NAME, _ilane) IVEC __attribute__((vector_size(VL * sizeof(FT))));
static FS_INLINE void HSUM(const VEC *v, FT *out)
{
    VEC cur[VL];
    for (int k = 0; k < VL; k++) cur[k] = v[k];
    /* stage: pairs (cur[2k], cur[2k+1]) -> cur[k], lanes (i / bs) * 2 bs + i % bs
     * (lo) and the same + bs (hi) of the two side by side; the masks are
     * written out, so the compiler sees constants (computed in a loop, GCC
     * built them at run time with integer divisions) */
#define HS_STAGE(n, LO, HI)                                                         \
    do {                                                                            \
        const IVEC lo = LO, hi = HI;                                                \
        for (int k = 0; k < (n); k++)                                               \
            cur[k] = __builtin_shuffle(cur[2 * k], cur[2 * k + 1], lo)              \
                     + __builtin_shuffle(cur[2 * k], cur[2 * k + 1], hi);           \
    } while (0)
#if VL == 16
    HS_STAGE(8, ((IVEC){0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23}), ((IVEC){8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31}));
    HS_STAGE(4, ((IVEC){0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27}), ((IVEC){4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31}));
    HS_STAGE(2, ((IVEC){0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29}), ((IVEC){2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31}));
    HS_STAGE(1, ((IVEC){0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30}), ((IVEC){1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31}));
#elif VL == 8
    HS_STAGE(4, ((IVEC){0, 1, 2, 3, 8, 9, 10, 11}), ((IVEC){4, 5, 6, 7, 12, 13, 14, 15}));
    HS_STAGE(2, ((IVEC){0, 1, 4, 5, 8, 9, 12, 13}), ((IVEC){2, 3, 6, 7, 10, 11, 14, 15}));
    HS_STAGE(1, ((IVEC){0, 2, 4, 6, 8, 10, 12, 14}), ((IVEC){1, 3, 5, 7, 9, 11, 13, 15}));
#elif VL == 4
    HS_STAGE(2, ((IVEC){0, 1, 4, 5}), ((IVEC){2, 3, 6, 7}));
    HS_STAGE(1, ((IVEC){0, 2, 4, 6}), ((IVEC){1, 3, 5, 7}));
#elif VL == 2
    HS_STAGE(1, ((IVEC){0, 2}), ((IVEC){1, 3}));
#else
#error "HSUM: VL must be 2, 4, 8 or 16"
#endif
#undef HS_STAGE
    *(VEC *)out = cur[0];
}
#undef IVEC
#else
static FS_INLINE void HSUM(const VEC *v, FT *out) { out[0] = v[0]; }
#endif

static double NAME(
    const FT *Wt,          /* IN  (Cp, D) transposed weights, rows >= C are zero */
    Py_ssize_t ldw,        /*     row stride of Wt (64-byte multiple: aligned loads) */
    Py_ssize_t Cp, Py_ssize_t C, Py_ssize_t D,
    const FT *bias,        /* IN  (C,) bias, or NULL */
    const FT *X,           /* IN  data, row i at X + i * ldx, unit column stride */
    Py_ssize_t ldx,
    const Py_ssize_t *rows,/* IN  row k of the problem is X[rows[k]]; NULL: X[k] */
    const Py_ssize_t *y,   /* IN  labels, indexed like X's rows, in [0, C) */
    Py_ssize_t start, Py_ssize_t stop,  /* problem rows k in [start, stop) */
    Py_ssize_t T,          /* rows per tile, a multiple of RB */
    Py_ssize_t Dc,         /* D-chunk of the score pass, a multiple of VL */
    int pf_tile,           /* nonzero: the gradient pass prefetches the whole next tile (below) */
    FT *G,                 /* OUT (Cp, D) gradient sum, accumulated into */
    Py_ssize_t ldg,        /*     row stride of G (64-byte multiple: aligned loads) */
    double *gb,            /* OUT (Cp,) sum of P - Y, accumulated into */
    const FT *zero_row)    /* IN  (D,) zeros: stands in for rows past `stop` */
{
    const Py_ssize_t Dv = D - D % VL;          /* vectorised part of each row */
    /* How far ahead of the score pass each row is prefetched from memory,
     * in elements (FS_AHEAD_BYTES); the gradient pass prefetches the next
     * tile's rows up to there, so the score pass finds its first chunks on
     * the way. */
    const Py_ssize_t ahead = FS_AHEAD_BYTES / (Py_ssize_t)sizeof(FT);
    /* How much of each of the next tile's rows the gradient pass prefetches
     * into L2: its first `ahead` elements, or with pf_tile all of it, so the
     * next score pass reads the tile from L2 instead of memory.  Then the
     * hardware is busy filling L2, and the gradient pass prefetches the
     * current tile's rows into L1 itself, FS_L1_AHEAD_BYTES on; the score
     * pass, reading from L2, prefetches that far ahead too (round 19).
     * Which is faster depends on the CPU and the build (docs/kernels.md,
     * round 14): `fastsoftmax tune` measures it; the default is the first. */
    const Py_ssize_t next = pf_tile ? D : ahead;
    const Py_ssize_t l1_ahead = FS_L1_AHEAD_BYTES / (Py_ssize_t)sizeof(FT);
    const Py_ssize_t score_ahead = pf_tile ? l1_ahead : ahead;
    double loss = 0.0;
    if (T < RB) T = RB;
    T -= T % RB;
    if (Dc < VL) Dc = VL;
    Dc -= Dc % VL;
    /* scratch: partial score vectors, scores/coefficients in double (with
     * room for the exp's last vector), the coefficients in FT, this tile's
     * and the next tile's row pointers, s[y] - shift per row */
    size_t bytes = 64 + sizeof(VEC) * (size_t)(T * Cp + VL) + sizeof(double) * (size_t)(T * Cp + 64)
                   + sizeof(FT) * (size_t)(T * Cp + VL) + sizeof(FT) * (size_t)(T * Cp)
                   + 2 * sizeof(FT *) * (size_t)T + sizeof(double) * (size_t)T + 64;
    char *scratch = (char *)malloc(bytes);
    if (scratch == NULL) return NAN;           /* a NaN loss is reported as an error */
    VEC *Sv = (VEC *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
    double *S = (double *)(Sv + T * Cp + VL);  /* Sv: room to finish a group of VL vectors */
    FT *hs = (FT *)(S + T * Cp + 64);          /* S: room to finish a vector past T * Cp */
    FT *cf = hs + T * Cp + VL;                 /* hs: the lane sums of Sv, same room */
    const FT **xp = (const FT **)(((uintptr_t)(cf + T * Cp) + 15) & ~(uintptr_t)15);
    const FT **xn = xp + T;
    double *sy = (double *)(xn + T);           /* s[y] - shift of each row of the tile */
    memset(S, 0, sizeof(double) * (size_t)(T * Cp + 64));   /* the vector exp reads all of it */
    memset(Sv + T * Cp, 0, sizeof(VEC) * VL);  /* the lane sums read up to a whole group */

    for (Py_ssize_t k0 = start; k0 < stop; k0 += T) {
        Py_ssize_t nt = stop - k0 < T ? stop - k0 : T;   /* real rows in this tile */
        Py_ssize_t Tp = (nt + RB - 1) / RB * RB;         /* rounded up to the block */
        for (Py_ssize_t r = 0; r < Tp; r++) {
            Py_ssize_t k = k0 + r;
            xp[r] = r < nt ? X + (rows ? rows[k] : k) * ldx : zero_row;
        }
        /* the next tile's rows: their first `ahead` elements are prefetched
         * during this tile's gradient pass */
        Py_ssize_t nn = stop - (k0 + T);
        nn = nn < 0 ? 0 : (nn > T ? T : nn);
        for (Py_ssize_t r = 0; r < nn; r++) {
            Py_ssize_t k = k0 + T + r;
            xn[r] = X + (rows ? rows[k] : k) * ldx;
        }

        /* 1. scores, D-chunk by D-chunk: the chunk of W (Cp x Dc, a few KB)
         * stays in L1 while every row block of the tile uses it; RB x CB
         * vector partial sums are carried in Sv from chunk to chunk.  The
         * first class block reads X from memory (or, with pf_tile, from L2)
         * and prefetches each row `score_ahead` elements on (into L1): X's
         * rows are T separate streams, more than the hardware prefetchers
         * follow well. */
#ifndef FS_SKIP_SCORE             /* profiling aid: time one pass alone */
        for (Py_ssize_t d0 = 0; d0 < Dv; d0 += Dc) {
            Py_ssize_t d1 = d0 + Dc < Dv ? d0 + Dc : Dv;
            for (Py_ssize_t r0 = 0; r0 < Tp; r0 += RB) {
                const FT *x[RB];
                for (int r = 0; r < RB; r++) x[r] = xp[r0 + r];
                for (Py_ssize_t j0 = 0; j0 < Cp; j0 += CB) {
                    VEC acc[RB][CB];
                    VEC *sv = Sv + r0 * Cp + j0;
                    if (d0 == 0) {
                        for (int r = 0; r < RB; r++)
                            for (int c = 0; c < CB; c++) acc[r][c] = FS_VZERO;
                    } else {
                        for (int r = 0; r < RB; r++)
                            for (int c = 0; c < CB; c++) acc[r][c] = sv[r * Cp + c];
                    }
                    const FT *w[CB];
                    for (int c = 0; c < CB; c++) w[c] = Wt + (j0 + c) * ldw;
                    if (j0 == 0) {             /* first class block: from memory */
                        for (Py_ssize_t d = d0; d < d1; d += VL) {
                            VEC xv[RB];
                            for (int r = 0; r < RB; r++) {
                                xv[r] = *(const VEC *)(x[r] + d);
                                FS_PREFETCH_L1(x[r] + d + score_ahead);
                            }
                            for (int c = 0; c < CB; c++) {
                                VEC wv = *(const VEC *)(w[c] + d);
                                FS_IN_REGISTER(wv);
                                for (int r = 0; r < RB; r++) acc[r][c] += xv[r] * wv;
                            }
                        }
                    } else {                   /* the others: the chunk is in L1 */
                        for (Py_ssize_t d = d0; d < d1; d += VL) {
                            VEC xv[RB];
                            for (int r = 0; r < RB; r++) xv[r] = *(const VEC *)(x[r] + d);
                            for (int c = 0; c < CB; c++) {
                                VEC wv = *(const VEC *)(w[c] + d);
                                FS_IN_REGISTER(wv);
                                for (int r = 0; r < RB; r++) acc[r][c] += xv[r] * wv;
                            }
                        }
                    }
                    for (int r = 0; r < RB; r++)
                        for (int c = 0; c < CB; c++) sv[r * Cp + c] = acc[r][c];
                }
            }
        }

#endif
        /* 2. softmax in double: S becomes the gradient coefficients P - Y.
         * Per row the scores (+ bias) and their shift by the row's maximum;
         * then every exp of the tile in one vector loop; then per row the
         * loss -log p[y] = log(sum exp(s - shift)) - (s[y] - shift) (never
         * log 0) and the coefficients. */
        if (Dv > 0)
            for (Py_ssize_t i = 0; i < nt * Cp; i += VL) HSUM(Sv + i, hs + i);
        for (Py_ssize_t r = 0; r < nt; r++) {
            double *s = S + r * Cp;
            const FT *xr = xp[r];
            for (Py_ssize_t j = 0; j < C; j++) {
                FT a = Dv > 0 ? hs[r * Cp + j] : 0;
                const FT *wj = Wt + j * ldw;
                for (Py_ssize_t d = Dv; d < D; d++) a += xr[d] * wj[d];
                s[j] = (double)a + (bias ? (double)bias[j] : 0.0);
            }
            double shift = s[0];
            for (Py_ssize_t j = 1; j < C; j++) shift = s[j] > shift ? s[j] : shift;
            for (Py_ssize_t j = 0; j < C; j++) s[j] -= shift;
            /* padding classes: unused, but the exp loop runs over them, so
             * reset them (else each tile would take exp of the last exp) */
            for (Py_ssize_t j = C; j < Cp; j++) s[j] = 0.0;
            sy[r] = s[y[rows ? rows[k0 + r] : k0 + r]];
        }
#if FS_VECTOR_EXT
        for (Py_ssize_t i = 0; i < nt * Cp; i += DVL)   /* S has room up to a whole vector */
            *(DVEC *)(S + i) = VEXP(*(const DVEC *)(S + i));
#else
        for (Py_ssize_t i = 0; i < nt * Cp; i++) S[i] = exp(S[i]);
#endif
        for (Py_ssize_t r = 0; r < nt; r++) {
            double *s = S + r * Cp;
            double total = 0.0;
            for (Py_ssize_t j = 0; j < C; j++) total += s[j];
            loss += log(total) - sy[r];
            double inv = 1.0 / total;
            for (Py_ssize_t j = 0; j < C; j++) s[j] *= inv;
            s[y[rows ? rows[k0 + r] : k0 + r]] -= 1.0;
            FT *c = cf + r * Cp;
            for (Py_ssize_t j = 0; j < C; j++) {
                c[j] = (FT)s[j];
                gb[j] += s[j];
            }
            for (Py_ssize_t j = C; j < Cp; j++) c[j] = 0;
        }

        /* 3. gradient: a small GEMM with K = the tile's rows, one slice of
         * GKV vectors of D at a time, all classes of the slice in registers;
         * the tile's rows are re-read from L2.  The first slices also
         * prefetch the start of the next tile's rows (into L2), or with
         * pf_tile every slice its part of all of them. */
        Py_ssize_t d = 0;
#ifdef FS_SKIP_GRAD
        d = Dv;
#endif
        for (; d + GKV * VL <= Dv; d += GKV * VL) {
            if (pf_tile)
                FS_UNROLL_8
                for (Py_ssize_t r = 0; r < nt; r++)
                    for (int k = 0; k < GKV * VL * (int)sizeof(FT); k += 64)
                        FS_PREFETCH_L1((const char *)(xp[r] + d + l1_ahead) + k);
            Py_ssize_t j0 = 0;
            for (; j0 + GNC <= Cp; j0 += GNC) GRAD_MK(GNC, GKV, G, ldg, j0, d, xp, cf, Cp, nt);
            for (; j0 < Cp; j0 += CB) GRAD_MK(CB, GKV, G, ldg, j0, d, xp, cf, Cp, nt);
            if (d < next)
                FS_UNROLL_8
                for (Py_ssize_t r = 0; r < nn; r++)
                    for (int k = 0; k < GKV * VL * (int)sizeof(FT); k += 64)
                        FS_PREFETCH_L2((const char *)(xn[r] + d) + k);
        }
        for (; d < Dv; d += VL)
            for (Py_ssize_t j0 = 0; j0 < Cp; j0 += CB) GRAD_MK(CB, 1, G, ldg, j0, d, xp, cf, Cp, nt);
        for (Py_ssize_t j = 0; j < Cp; j++)
            for (d = Dv; d < D; d++) {
                FT gs = G[j * ldg + d];
                for (Py_ssize_t r = 0; r < nt; r++) gs += cf[r * Cp + j] * xp[r][d];
                G[j * ldg + d] = gs;
            }
    }
    free(scratch);
    return loss;
}

/* The reduction after the threads' kernels: out (D, C) = the chunks'
 * (Cp, D) accumulators summed in chunk order and transposed.  With
 * `finish`: each element s / fn + c2 * w (w = Wt[j, d]; two roundings, as
 * _common.finish's NumPy passes: the product is kept out of an FMA) and
 * *sq = sum of w^2 in double.  With W (needs finish): p = s * rate goes to
 * out and w - p to W (two roundings, as sgd_update), and the return value
 * is nonzero when an s was NaN or inf (W is then written anyway: the caller
 * restores it from Wt).  Columns d_lo <= d < d_hi of D only (threads split
 * D), *sq_out their part of the sum.  Per class row the work runs on whole vectors
 * along D (a scalar loop took 50 us at D = 3073, C = 10 in float64, the
 * divisions one at a time), into a block buffer that is then transposed
 * into out (and W). */
#define REDUCE_BD 64                           /* D-block: a multiple of every VL */
#define REDUCE_BJ 16                           /* classes per block */
static int FS_CAT(NAME, _reduce)(const FT *G, Py_ssize_t nchunks, Py_ssize_t cstride, Py_ssize_t ldg,
                                 const FT *Wt, Py_ssize_t ldw, Py_ssize_t C, Py_ssize_t d_lo, Py_ssize_t d_hi,
                                 int finish, FT fn, FT c2, FT rate, FT *out, FT *W, double *sq_out)
{
    FT buf[REDUCE_BJ][REDUCE_BD], wbuf[REDUCE_BJ][REDUCE_BD];
    double sq = 0.0;
    FT chk = 0;                                /* s - s summed: 0 while every s is finite */
#if FS_VECTOR_EXT
    /* sum of w^2: DVL-lane double accumulators (one register each; a
     * VL-lane double vector is two of them in float32, and GCC kept it on
     * the stack), fed from halves of the row's vector in float32 */
    typedef FT HVEC __attribute__((vector_size(DVL * sizeof(FT)), aligned(sizeof(FT)), may_alias));
    DVEC sqv[VL / DVL];
    for (int h = 0; h < VL / DVL; h++) sqv[h] = (DVEC){0};
    VEC chkv = FS_VZERO;
#endif
    for (Py_ssize_t j0 = 0; j0 < C; j0 += REDUCE_BJ) {
        int jn = C - j0 < REDUCE_BJ ? (int)(C - j0) : REDUCE_BJ;
        for (Py_ssize_t d0 = d_lo; d0 < d_hi; d0 += REDUCE_BD) {
            int dn = d_hi - d0 < REDUCE_BD ? (int)(d_hi - d0) : REDUCE_BD;
            for (int jj = 0; jj < jn; jj++) {
                const FT *g = G + (j0 + jj) * ldg + d0;
                const FT *w = Wt + (j0 + jj) * ldw + d0;
                int d = 0;
#if FS_VECTOR_EXT
                for (; d + VL <= dn; d += VL) {
                    VEC s = *(const VEC *)(g + d);
                    for (Py_ssize_t t = 1; t < nchunks; t++) s = s + *(const VEC *)(g + t * cstride + d);
                    if (finish) {
                        VEC wv = *(const VEC *)(w + d);
                        for (int h = 0; h < VL / DVL; h++) {
                            DVEC wd = __builtin_convertvector(*(const HVEC *)(w + d + h * DVL), DVEC);
                            sqv[h] += wd * wd;
                        }
                        VEC pw = c2 * wv;
                        FS_IN_REGISTER(pw);
                        s = s / fn + pw;
                        if (W) {
                            chkv += s - s;
                            VEC p = s * rate;
                            FS_IN_REGISTER(p);
                            *(VEC *)(&wbuf[jj][d]) = wv - p;
                            s = p;
                        }
                    }
                    *(VEC *)(&buf[jj][d]) = s;
                }
#endif
                for (; d < dn; d++) {
                    FT s = g[d];
                    for (Py_ssize_t t = 1; t < nchunks; t++) s = s + g[t * cstride + d];
                    if (finish) {
                        FT wv = w[d];
                        sq += (double)wv * (double)wv;
                        FT pw = c2 * wv;
                        FS_IN_REGISTER(pw);
                        s = s / fn + pw;
                        if (W) {
                            chk += s - s;
                            FT p = s * rate;
                            FS_IN_REGISTER(p);
                            wbuf[jj][d] = wv - p;
                            s = p;
                        }
                    }
                    buf[jj][d] = s;
                }
            }
            for (int dd = 0; dd < dn; dd++) {
                FT *o = out + (d0 + dd) * C + j0;
                for (int jj = 0; jj < jn; jj++) o[jj] = buf[jj][dd];
                if (W) {
                    FT *wo = W + (d0 + dd) * C + j0;
                    for (int jj = 0; jj < jn; jj++) wo[jj] = wbuf[jj][dd];
                }
            }
        }
    }
#if FS_VECTOR_EXT
    for (int h = 0; h < VL / DVL; h++)
        for (int l = 0; l < DVL; l++) sq += sqv[h][l];
    for (int l = 0; l < VL; l++) chk += chkv[l];
#endif
    *sq_out = sq;
    return chk != 0;                           /* NaN != 0 too */
}
#undef REDUCE_BD
#undef REDUCE_BJ

#undef GRAD_MK
#undef VEC
#undef HSUM
#if FS_VECTOR_EXT
#undef DVL
#undef DVEC
#undef DIVEC
#undef VEXP
#endif
