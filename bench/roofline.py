"""The roofline table of docs/kernels.md: % of roofline per backend, case and thread count.

Usage (from the repository root)::

    env -u OPENBLAS_CORETYPE python bench/roofline.py          # widest build
    FASTSOFTMAX_ISA=avx2 OPENBLAS_CORETYPE=Haswell NUMBA_CPU_NAME=haswell NUMBA_CPU_FEATURES= \\
        python bench/roofline.py                               # AVX2 builds vs an AVX2 GEMM
    python bench/roofline.py --sizes 500 --dtypes float32 --threads 1 --rounds 5

``fastsoftmax bench`` reports the same ``% roof`` column from medians of its
rows, one row after the other.  On a shared machine whose load changes by
the second that is not a fair ratio, so this script measures every row of a
case, the GEMM and stream-X yardsticks included, side by side in one
process with the case's dtype and thread count, in warm, rotated blocks
(:func:`fastsoftmax.harness.timing.warm_blocks`): per round, each row runs
untimed for ``--warm`` seconds, then ``--per-block`` timed calls back to
back, and the order of the rows rotates from round to round.  The table
gives both the median-based and the best-of-run (min time, max rate)
``% of roofline``; the best-of-run figure is what the machine can do when
nobody else is using it.

Until the thirteenth session this script interleaved single calls and, with
more than one thread, slept 0.3 s after each BLAS call so that OpenBLAS's
spinning workers would stop.  On the virtual machine measured, the sleep
cost more than it saved: a 2-thread call right after an idle pause took up
to 10x its time in a loop, and half of each row's calls came right after
one (docs/kernels.md, round 10).
"""

import argparse
import functools
import statistics

import numpy as np

import fastsoftmax
from fastsoftmax import backends
from fastsoftmax.backends._validate import prepare
from fastsoftmax.harness.cases import make_problem
from fastsoftmax.harness.peers import _stream_call
from fastsoftmax.harness.roofline import GEMM_N, isa_note
from fastsoftmax.harness.threads import limit_threads
from fastsoftmax.harness.timing import WARM_S, warm_blocks


def measure(n, dtype, threads, names, rounds, per_block, warm_s=WARM_S, d=3073, c=10):
    """Times in warm, rotated blocks: {'gemm': [...], 'stream': [...], name: [...]} and the case's flops and bytes."""
    W, X, y = make_problem(n, d, c, dtype)[:3]
    problem = prepare(W, X, y, 1e-3)
    rng = np.random.default_rng(0)
    A = rng.standard_normal((GEMM_N, GEMM_N)).astype(dtype)
    B = rng.standard_normal((GEMM_N, GEMM_N)).astype(dtype)
    with limit_threads(threads):
        calls = {"gemm": lambda: A @ B, "stream": _stream_call(np.ascontiguousarray(X).ravel(), threads)}
        for name in names:
            calls[name] = functools.partial(backends.run_kernel, backends.get_kernel(name), problem, threads)
        times = warm_blocks(calls, rounds, per_block, warm_s)
    return times, 4 * n * d * c, X.nbytes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="500,10000,49000")
    parser.add_argument("--dtypes", default="float64,float32")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--backends", default="numpy,numba,cython")
    parser.add_argument("--rounds", type=int, default=3, help="blocks per row, in rotated order (default 3)")
    parser.add_argument("--per-block", type=int, default=4,
                        help="timed calls per block (default 4; N >= 10000: half, at least 2)")
    parser.add_argument("--warm", type=float, default=WARM_S, help=f"untimed running before each block (s, default {WARM_S})")
    args = parser.parse_args(argv)
    names = [b for b in args.backends.split(",") if b in backends.available()]
    note = isa_note()
    print(f"isa: {note}; backends: {names}; fastsoftmax {fastsoftmax.__version__}")
    if note["yardstick"]:
        print(note["yardstick"])
    print("case            thr  R_gemm GF/s   R_stream GB/s  T* ms (bound)   "
          + "  ".join(f"{name + ' ms':>13} {'%roof':>9}" for name in names) + "  pick")
    for dtype in args.dtypes.split(","):
        for n in map(int, args.sizes.split(",")):
            for threads in map(int, args.threads.split(",")):
                per_block = args.per_block if n < 10000 else max(2, args.per_block // 2)
                times, flops, nbytes = measure(n, dtype, threads, names, args.rounds, per_block, args.warm)
                gemm_flops = 2.0 * GEMM_N**3
                cells = []
                for stat in (statistics.median, min):
                    r_gemm = gemm_flops / stat(times["gemm"])
                    r_stream = nbytes / stat(times["stream"])
                    t_star = max(flops / r_gemm, nbytes / r_stream)
                    cells.append((r_gemm, r_stream, t_star, "gemm" if flops / r_gemm >= nbytes / r_stream else "stream"))
                (rg, rs, ts, bound), (rg_b, rs_b, ts_b, _) = cells
                row = [f"N={n}|{dtype}".ljust(15), f"x{threads}".rjust(3),
                       f"{rg / 1e9:5.1f} ({rg_b / 1e9:5.1f})", f"{rs / 1e9:5.1f} ({rs_b / 1e9:5.1f})",
                       f"{ts * 1e3:7.2f} ({bound})"]
                for name in names:
                    med, best = statistics.median(times[name]), min(times[name])
                    row.append(f"{med * 1e3:13.3g} {100 * ts / med:3.0f}% ({100 * ts_b / best:3.0f}%)")
                with fastsoftmax.threads(threads):
                    row.append(backends.fastest(dtype, n))
                print("  ".join(row), flush=True)
    print("% roof = T* / time: median-based, and (in parentheses) best-of-run: min times, max rates.")


if __name__ == "__main__":
    main()
