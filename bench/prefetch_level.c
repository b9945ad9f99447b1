/* Which cache a software prefetch fills on this CPU.
 *
 * Build and run (from the repository root):
 *
 *     gcc -O2 bench/prefetch_level.c -o /tmp/prefetch_level && /tmp/prefetch_level
 *
 * The C kernel's FS_PREFETCH_L2 (`__builtin_prefetch(p, 0, 2)`, PREFETCHT1
 * on x86) is meant to fill L2 only: the next tile's rows, for the next score
 * pass, without taking L1 from the rows the gradient pass is reading.  Where
 * the CPU fills L1 with it too (the Zen 5 of docs/kernels.md, round 21), the
 * next tile's lines go through L1 as well.  This measures it: a 16 KB region
 * (256 lines, linked in a random order) is made L2-resident and evicted from
 * L1 (512 KB of other data read after it); then each line is prefetched
 * with one hint, or loaded, or left alone; after a pause of about 10 us the
 * chain is followed once, one dependent load per line.  Where the lines are
 * in L1 that takes L1's latency per load, else L2's.  Nanoseconds per load,
 * best of 50 rounds (CLOCK_MONOTONIC), for each of: nothing, loads,
 * locality 3 (PREFETCHT0), 2 (T1), 1 (T2) and 0 (NTA).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LINES 256                                /* the region: 16 KB */
#define EVICT (512 << 10)                        /* read after it: L1 loses it, L2 keeps it */

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

/* One round: region in L2 only, then `mode` on every line, a pause, the chain. */
static double round_ns(char *region, const char *evict, int mode)
{
    volatile char sink = 0;
    for (int i = 0; i < LINES; i++) sink += region[64 * i];
    for (int i = 0; i < EVICT; i += 64) sink += evict[i];
    for (int i = 0; i < LINES; i++) {
        const char *p = region + 64 * i;
        switch (mode) {
        case 1: sink += *p; break;
        case 2: __builtin_prefetch(p, 0, 3); break;
        case 3: __builtin_prefetch(p, 0, 2); break;
        case 4: __builtin_prefetch(p, 0, 1); break;
        case 5: __builtin_prefetch(p, 0, 0); break;
        default: break;
        }
    }
    double until = now() + 1e-5;
    while (now() < until) {
    }
    char *q = *(char **)region;
    double t = now();
    for (int i = 0; i < LINES; i++) q = *(char **)q;
    t = now() - t;
    if (q == NULL) sink = 1;                      /* keeps the chain */
    return t / LINES * 1e9;
}

int main(void)
{
    static const char *what[] = {"nothing (the lines in L2)", "loads (the lines in L1)", "prefetch locality 3 (T0)",
                                 "prefetch locality 2 (T1, FS_PREFETCH_L2)", "prefetch locality 1 (T2)",
                                 "prefetch locality 0 (NTA)"};
    char *region = aligned_alloc(4096, 64 * LINES), *evict = aligned_alloc(4096, EVICT);
    int *order = malloc(sizeof(int) * LINES);
    if (!region || !evict || !order) return 1;
    memset(evict, 1, EVICT);                      /* real pages, not the shared zero page */
    for (int i = 0; i < LINES; i++) order[i] = i;
    unsigned s = 12345;                           /* a fixed shuffle: lines in a random order */
    for (int i = LINES - 1; i > 0; i--) {
        s = s * 1103515245u + 12345u;
        int j = (int)((s >> 8) % (unsigned)(i + 1)), k = order[i];
        order[i] = order[j], order[j] = k;
    }
    for (int i = 0; i < LINES; i++)               /* one cycle through every line */
        *(char **)(region + 64 * order[i]) = region + 64 * order[(i + 1) % LINES];
    double best[6];
    for (int m = 0; m < 6; m++) best[m] = 1e30;
    for (int r = 0; r < 50; r++)
        for (int m = 0; m < 6; m++) {
            double ns = round_ns(region, evict, m);
            if (ns < best[m]) best[m] = ns;
        }
    for (int m = 0; m < 6; m++) printf("%-42s %6.2f ns per load\n", what[m], best[m]);
    double l1 = best[1], l2 = best[0], t1 = best[3];
    printf("locality 2 (T1) fills L1: %s\n", t1 - l1 < (l2 - l1) / 2 ? "yes" : "no");
    free(region), free(evict), free(order);
    return 0;
}
