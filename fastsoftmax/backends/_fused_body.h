/* One block-fused softmax loss/gradient kernel, instantiated per dtype and ISA.
 *
 * Included by _fused_kernel.h with these macros defined:
 *   FT     element type (float or double)
 *   VL     lanes per vector (VL * sizeof(FT) bytes)
 *   RB     rows per block (register block of the micro-kernels)
 *   CB     classes per score micro-kernel (Cp must be a multiple of CB)
 *   NAME   the function's name
 * See _fused_kernel.h for the design.
 */

static double NAME(
    const FT *Wt,          /* IN  (Cp, D) transposed weights, rows >= C are zero  */
    Py_ssize_t Cp, Py_ssize_t C, Py_ssize_t D,
    const FT *X,           /* IN  (N, D) data, row i at X + i * ldx, unit column stride */
    Py_ssize_t ldx,
    const Py_ssize_t *y,   /* IN  (N,) labels in [0, C) */
    Py_ssize_t start, Py_ssize_t stop,
    FT *G,                 /* OUT (Cp, D) gradient sum, accumulated into */
    const FT *zero_row)    /* IN  (D,) zeros: stands in for rows past `stop` */
{
#if FS_VECTOR_EXT
    typedef FT vec __attribute__((vector_size(VL * sizeof(FT)), aligned(sizeof(FT)), may_alias));
#else
    typedef FT vec;                            /* VL is 1: plain scalar code */
#endif
    const Py_ssize_t Dv = D - D % VL;          /* vectorised part of each row */
    double loss = 0.0;
    double S[RB][FS_CMAX_STACK];               /* scores of the block, then P - Y */
    double *Sp[RB];
    double *heap = NULL;
    if (Cp > FS_CMAX_STACK) {
        heap = (double *)malloc(sizeof(double) * RB * Cp);
        if (heap == NULL) return NAN;          /* a NaN loss is reported as an error */
    }
    for (int r = 0; r < RB; r++) Sp[r] = heap ? heap + r * Cp : S[r];

    for (Py_ssize_t i0 = start; i0 < stop; i0 += RB) {
        const FT *x[RB];
        int nr = (int)((stop - i0) < RB ? (stop - i0) : RB);
        for (int r = 0; r < RB; r++) x[r] = r < nr ? X + (i0 + r) * ldx : zero_row;
        /* the next block's rows, prefetched while this block's gradient runs
         * from cache, so the DRAM stream overlaps the arithmetic */
        const FT *nx[RB];
        for (int r = 0; r < RB; r++)
            nx[r] = i0 + RB + r < stop ? X + (i0 + RB + r) * ldx : zero_row;

        /* 1. scores: RB rows x CB classes of vector accumulators, one pass over D */
        for (Py_ssize_t j0 = 0; j0 < Cp; j0 += CB) {
            vec acc[RB][CB];
            for (int r = 0; r < RB; r++)
                for (int c = 0; c < CB; c++) acc[r][c] = FS_VZERO;
            const FT *w[CB];
            for (int c = 0; c < CB; c++) w[c] = Wt + (j0 + c) * D;
            for (Py_ssize_t d = 0; d < Dv; d += VL) {
                vec xv[RB];
                for (int r = 0; r < RB; r++) xv[r] = *(const vec *)(x[r] + d);
                for (int c = 0; c < CB; c++) {
                    vec wv = *(const vec *)(w[c] + d);
                    for (int r = 0; r < RB; r++) acc[r][c] += xv[r] * wv;
                }
            }
            for (int r = 0; r < RB; r++)
                for (int c = 0; c < CB; c++) {
                    FT s = 0;
                    for (int l = 0; l < VL; l++) s += FS_LANE(acc[r][c], l);
                    for (Py_ssize_t d = Dv; d < D; d++) s += x[r][d] * w[c][d];
                    Sp[r][j0 + c] = (double)s;
                }
        }

        /* 2. softmax in double: S becomes the gradient coefficients P - Y */
        for (int r = 0; r < RB; r++) {
            double *s = Sp[r];
            if (r >= nr) {                      /* padding row: contributes nothing */
                for (Py_ssize_t j = 0; j < Cp; j++) s[j] = 0.0;
                continue;
            }
            Py_ssize_t yi = y[i0 + r];
            double shift = s[0];
            for (Py_ssize_t j = 1; j < C; j++) shift = s[j] > shift ? s[j] : shift;
            double total = 0.0;
            /* -log p[y] = log(sum exp(s - shift)) - (s[y] - shift): never log(0) */
            loss -= s[yi] - shift;
            for (Py_ssize_t j = 0; j < C; j++) {
                s[j] = exp(s[j] - shift);
                total += s[j];
            }
            loss += log(total);
            double inv = 1.0 / total;
            for (Py_ssize_t j = 0; j < C; j++) s[j] *= inv;
            s[yi] -= 1.0;
            for (Py_ssize_t j = C; j < Cp; j++) s[j] = 0.0;
        }

        /* 3. gradient: G[j, :] += sum_r coef[r, j] * x[r, :] for CB classes at a
         * time, the RB x CB coefficients held in registers, the rows still in cache */
        for (Py_ssize_t j0 = 0; j0 < Cp; j0 += CB) {
            FT coef[RB][CB];
            FT *g[CB];
            for (int c = 0; c < CB; c++) {
                g[c] = G + (j0 + c) * D;
                for (int r = 0; r < RB; r++) coef[r][c] = (FT)Sp[r][j0 + c];
            }
            for (Py_ssize_t d = 0; d < Dv; d += VL) {
                vec xv[RB];
                for (int r = 0; r < RB; r++) xv[r] = *(const vec *)(x[r] + d);
                if (j0 == 0)
                    for (int r = 0; r < RB; r++) FS_PREFETCH(nx[r] + d);
                for (int c = 0; c < CB; c++) {
                    vec gv = *(vec *)(g[c] + d);
                    for (int r = 0; r < RB; r++) gv += coef[r][c] * xv[r];
                    *(vec *)(g[c] + d) = gv;
                }
            }
        }
        for (Py_ssize_t j = 0; j < Cp; j++)
            for (Py_ssize_t d = Dv; d < D; d++) {
                FT gs = G[j * D + d];
                for (int r = 0; r < RB; r++) gs += (FT)Sp[r][j] * x[r][d];
                G[j * D + d] = gs;
            }
    }
    free(heap);
    return loss;
}
