"""The roofline table of docs/kernels.md: % of roofline per backend, case and thread count.

Usage (from the repository root)::

    python bench/roofline.py                                   # widest build
    FASTSOFTMAX_ISA=avx2 OPENBLAS_CORETYPE=Haswell NUMBA_CPU_NAME=haswell \\
        python bench/roofline.py                               # AVX2 build vs an AVX2 GEMM
    python bench/roofline.py --sizes 500 --dtypes float32 --threads 1 --repeat 21

``fastsoftmax bench`` reports the same ``% roof`` column from medians of its
rows, one row after the other.  On a shared machine whose load changes by
the second that is not a fair ratio, so this script *interleaves*: every
repetition runs the GEMM yardstick, then the stream-X yardstick and each
backend once, in an order rotated from one repetition to the next (the call
right after the GEMM finds its caches taken), and the table gives both the median-based and the
best-of-run (min time, max rate) ``% of roofline``; the best-of-run figure
is what the machine can do when nobody else is using it.  Everything is
measured in this one process, with the case's dtype and thread count.

With more than one thread, every BLAS call (the GEMM, the ``numpy``
backend) is followed by an untimed pause of ``--settle`` seconds: OpenBLAS's
worker threads busy-wait for a while after a call, and on a machine with no
spare core they would steal a core from the next row's threads (measured:
cython at N=500 with 2 threads took 16 ms right after a 2-thread GEMM,
1.7 ms on one thread).
"""

import argparse
import statistics
import time

import numpy as np

import fastsoftmax
from fastsoftmax import backends
from fastsoftmax.backends._validate import prepare
from fastsoftmax.harness.cases import make_problem
from fastsoftmax.harness.peers import _stream_call
from fastsoftmax.harness.roofline import GEMM_N, isa_note
from fastsoftmax.harness.threads import limit_threads


def _time(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(n, dtype, threads, names, repeat, d=3073, c=10, settle=0.3):
    """Interleaved times: {'gemm': [...], 'stream': [...], name: [...]} and the case's flops and bytes."""
    W, X, y = make_problem(n, d, c, dtype)[:3]
    problem = prepare(W, X, y, 1e-3)
    rng = np.random.default_rng(0)
    A = rng.standard_normal((GEMM_N, GEMM_N)).astype(dtype)
    B = rng.standard_normal((GEMM_N, GEMM_N)).astype(dtype)
    times = {"gemm": [], "stream": [], **{name: [] for name in names}}
    with limit_threads(threads):
        stream = _stream_call(np.ascontiguousarray(X).ravel(), threads)
        kernels = {name: backends.get_kernel(name) for name in names}
        A @ B
        for kernel in kernels.values():
            backends.run_kernel(kernel, problem, threads)  # compile / first touch, untimed
        pause = settle if threads > 1 else 0.0
        order = ["stream", *kernels]
        for rep in range(repeat):
            times["gemm"].append(_time(lambda: A @ B))
            time.sleep(pause)  # let BLAS's spinning workers go to sleep (see above)
            # Rotate who runs first after the GEMM: that call pays for the
            # caches the GEMM took over (measured: cython at N=500 float32,
            # 0.97 ms first after the GEMM, 0.65 ms third), so no row may
            # always be the one that pays.
            k = rep % len(order)
            for name in order[k:] + order[:k]:
                if name == "stream":
                    times[name].append(_time(stream))
                    continue
                times[name].append(_time(lambda: backends.run_kernel(kernels[name], problem, threads)))
                if name == "numpy":
                    time.sleep(pause)
    return times, 4 * n * d * c, X.nbytes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="500,10000,49000")
    parser.add_argument("--dtypes", default="float64,float32")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--backends", default="numpy,numba,cython")
    parser.add_argument("--repeat", type=int, default=11, help="interleaved repetitions (N >= 10000: a third, >= 5)")
    parser.add_argument("--settle", type=float, default=0.3,
                        help="untimed pause after each BLAS call when threads > 1 (seconds)")
    args = parser.parse_args(argv)
    names = [b for b in args.backends.split(",") if b in backends.available()]
    print(f"isa: {isa_note()}; backends: {names}; fastsoftmax {fastsoftmax.__version__}")
    print("case            thr  R_gemm GF/s   R_stream GB/s  T* ms (bound)   "
          + "  ".join(f"{name + ' ms':>13} {'%roof':>9}" for name in names) + "  pick")
    for dtype in args.dtypes.split(","):
        for n in map(int, args.sizes.split(",")):
            for threads in map(int, args.threads.split(",")):
                repeat = args.repeat if n < 10000 else max(5, args.repeat // 3)
                times, flops, nbytes = measure(n, dtype, threads, names, repeat, settle=args.settle)
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
