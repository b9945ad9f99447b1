"""A/B timing of variants of the fused C kernel, one thread, in one process.

Usage (from the repository root; needs gcc)::

    python bench/kernel_ab.py "" -DFS_SKIP_GRAD -DFS_SKIP_SCORE        # each pass alone
    python bench/kernel_ab.py --where l2 "" "@/tmp/main/fastsoftmax/backends"
    python bench/kernel_ab.py --isa avx2 --dtype float32 "" "-DFS_AHEAD_BYTES=1536"
    python bench/kernel_ab.py "" "T=20" "T=20 Dc=96"
    python bench/kernel_ab.py "" "PF=1"      # the whole next tile prefetched

Each VARIANT is a string of words: ``-D...``, ``-f...`` or ``-m...`` flags for gcc, ``@DIR`` to take
``_fused_kernel.h``/``_fused_body.h`` from DIR instead of this checkout (a
``git worktree`` of another commit, say), ``T=..``/``Dc=..`` to override the
blocking that ``_common.blocking`` would choose, ``PF=1`` to have the
gradient pass prefetch the whole next tile (the kernel's ``pf_tile``; headers
from before it existed ignore it).  Every variant is compiled
into its own shared library (``gcc -O3 -fno-math-errno -shared``, the flags
setup.py uses) and called through ctypes on the same CIFAR-shaped problem
(D = 3073, C = 10).

Why this script and not ``fastsoftmax bench``: a kernel change is a ratio
of a few percent on a shared, noisy machine.  Here the variants run
interleaved, repetition by repetition (in a rotating order), with a 2048^2 GEMM (the roofline's
yardstick) in every repetition; the times are *thread CPU time*, min over
the repetitions (another tenant's load lengthens wall time, not this), and
``% of GEMM`` is ``4*N*D*C / R_gemm / time``, the kernel-only part of
docs/kernels.md's ``% of roofline``.  ``--where`` says where X lives:

* ``mem`` (default): N distinct rows, streamed from memory as in real use;
* ``l2``: rows ``arange(N) % 40`` (about 1 MB of X, resident in L2);
* ``l1``: every row is row 0 (24 KB, resident in L1): the arithmetic alone;
* ``fresh``: a minibatch of N rows drawn at random from 4585 CIFAR-sized
  rows, a new draw before every call (untimed), as a training step reads.

``--pad K`` puts X's rows K elements further apart (a view of the first D
columns of an N x (D + K) array: the same values, another row stride).  At
D = 3073 a C-ordered X's rows are 4 (float32) or 8 (float64) bytes past a
multiple of 4 KB apart, so a tile's rows at one column share an L1 set;
``--pad 16`` spreads them (docs/kernels.md, round 21).

``--control`` builds the first variant a second time, as a variant of its
own, and prints how far the two identical builds' times lie apart: the
noise floor of that run, below which a difference between variants says
nothing (0-8 % on the shared VMs of docs/kernels.md, rounds 20-22).

Before timing, every variant's loss, gradient and bias sums are compared
with the first variant's: ``same`` means bit-identical.
"""

import argparse
import ctypes
import os
import subprocess
import sys
import sysconfig
import tempfile
import time

import numpy as np
from threadpoolctl import threadpool_limits

HERE = os.path.dirname(os.path.abspath(__file__))
HEADERS = os.path.join(os.path.dirname(HERE), "fastsoftmax", "backends")
sys.path.insert(0, os.path.dirname(HERE))
from fastsoftmax.backends._common import blocking  # noqa: E402
from fastsoftmax.testing import as_layout  # noqa: E402

ISAS = {"baseline": 0, "avx2": 1, "avx512": 2}
POOL = 4585  # rows a ``fresh`` minibatch is drawn from (the training-step benchmark's X)

STUB = """
#include "_fused_kernel.h"
#ifdef STUB_PF   /* headers with the kernel's pf_tile argument */
#define PF pf,
#else
#define PF
#endif
double call64(int isa, const double *Wt, Py_ssize_t ldw, Py_ssize_t Cp, Py_ssize_t C, Py_ssize_t D,
              const double *X, Py_ssize_t ldx, const Py_ssize_t *rows, const Py_ssize_t *y,
              Py_ssize_t start, Py_ssize_t stop, Py_ssize_t T, Py_ssize_t Dc, int pf, double *G,
              Py_ssize_t ldg, double *gb, const double *zero)
{ return fs_select_f64(isa)(Wt, ldw, Cp, C, D, NULL, X, ldx, rows, y, start, stop, T, Dc, PF G, ldg, gb, zero); }
double call32(int isa, const float *Wt, Py_ssize_t ldw, Py_ssize_t Cp, Py_ssize_t C, Py_ssize_t D,
              const float *X, Py_ssize_t ldx, const Py_ssize_t *rows, const Py_ssize_t *y,
              Py_ssize_t start, Py_ssize_t stop, Py_ssize_t T, Py_ssize_t Dc, int pf, float *G,
              Py_ssize_t ldg, double *gb, const float *zero)
{ return fs_select_f32(isa)(Wt, ldw, Cp, C, D, NULL, X, ldx, rows, y, start, stop, T, Dc, PF G, ldg, gb, zero); }
"""


def parse_variant(text):
    """``"-DA @dir T=20 PF=1"`` -> (gcc flags, header directory, tile, dchunk, pf_tile)."""
    flags, headers, tile, dchunk, pf = [], HEADERS, None, None, 0
    for word in text.split():
        if word.startswith("@"):
            headers = os.path.abspath(word[1:])
        elif word.startswith("T="):
            tile = int(word[2:])
        elif word.startswith("Dc="):
            dchunk = int(word[3:])
        elif word.startswith("PF="):
            pf = int(word[3:])
        elif word.startswith(("-D", "-U", "-f", "-m")):
            flags.append(word)
        else:
            raise SystemExit(f"variant {text!r}: don't know {word!r} (use -D..., -f..., -m..., @DIR, T=.., Dc=.., PF=..)")
    return flags, headers, tile, dchunk, pf


def build(flags, headers, workdir, index):
    """Compile the stub against ``headers`` with ``flags``; return the loaded library."""
    stub_dir = os.path.join(workdir, f"v{index}")  # the stub must not sit beside any header
    os.makedirs(stub_dir)
    stub = os.path.join(stub_dir, "stub.c")
    with open(stub, "w") as f:
        f.write(STUB)
    with open(os.path.join(headers, "_fused_body.h")) as f:
        if "pf_tile" in f.read():
            flags = [*flags, "-DSTUB_PF"]
    lib = os.path.join(stub_dir, "kernel.so")
    cmd = ["gcc", "-O3", "-fno-math-errno", "-fPIC", "-shared", f"-I{headers}",
           f"-I{sysconfig.get_paths()['include']}", *flags, stub, "-o", lib]
    subprocess.run(cmd, check=True)
    return ctypes.CDLL(lib)


def problem(n, dtype, where, d=3073, c=10, cp=10, seed=0, pad=0):
    """Inputs of one kernel call: padded W.T, X (rows ``d + pad`` apart), labels, rows (or None), and the outputs."""
    rng = np.random.default_rng(seed)
    line = 64 // np.dtype(dtype).itemsize
    ld = -(-d // line) * line
    X = rng.standard_normal((POOL if where == "fresh" else n, d)).astype(dtype)
    if pad:  # the same values, rows further apart
        X = as_layout(X, "row-padded", pad=pad)
    Wt = np.zeros((cp, ld), dtype)
    Wt[:c, :d] = rng.standard_normal((c, d)) * 1e-2
    y = rng.integers(0, c, X.shape[0]).astype(np.intp)
    rows = {"mem": None, "l2": np.arange(n) % 40, "l1": np.zeros(n), "fresh": rng.integers(0, POOL, n)}[where]
    rows = None if rows is None else rows.astype(np.intp)
    return dict(X=X, Wt=Wt, y=y, rows=rows, ld=ld, d=d, c=c, cp=cp, zero=np.zeros(d, dtype))


def caller(lib, isa, p, tile, dchunk, pf):
    """A no-argument function running the kernel once; it returns (loss, G, gb)."""
    f64 = p["X"].dtype == np.float64
    fn = lib.call64 if f64 else lib.call32
    ptr, size = ctypes.c_void_p, ctypes.c_ssize_t
    fn.restype = ctypes.c_double
    fn.argtypes = [ctypes.c_int, ptr, size, size, size, size, ptr, size, ptr, ptr,
                   size, size, size, size, ctypes.c_int, ptr, size, ptr, ptr]
    G = np.zeros((p["cp"], p["ld"]), p["X"].dtype)
    gb = np.zeros(p["cp"])
    n = p["X"].shape[0] if p["rows"] is None else p["rows"].shape[0]
    rows = None if p["rows"] is None else p["rows"].ctypes.data

    def run():
        G[:] = 0
        gb[:] = 0
        loss = fn(isa, p["Wt"].ctypes.data, p["ld"], p["cp"], p["c"], p["d"], p["X"].ctypes.data,
                  p["X"].strides[0] // p["X"].itemsize, rows, p["y"].ctypes.data, 0, n, tile, dchunk, pf,
                  G.ctypes.data, p["ld"], gb.ctypes.data, p["zero"].ctypes.data)
        return loss, G, gb

    return run


def apart(first, again):
    """How far two times of the same build lie apart, in % of the shorter."""
    return 100.0 * abs(again - first) / min(first, again)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="+", help='e.g. "" (this checkout as it is), "-DFS_SKIP_GRAD"')
    parser.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    parser.add_argument("--isa", default="avx512", choices=list(ISAS))
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--where", default="mem", choices=["mem", "l2", "l1", "fresh"])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--gemm-n", type=int, default=2048)
    parser.add_argument("--pad", type=int, default=0, help="elements between the end of a row of X and the next row")
    parser.add_argument("--control", action="store_true",
                        help="time a second build of the first variant: the run's noise floor")
    argv = sys.argv[1:] if argv is None else list(argv)
    # "-DFOO" is a variant, not an option: a leading space keeps argparse off it
    argv = [" " + a if a.startswith(("-D", "-U", "-f", "-m")) else a for a in argv]
    args = parser.parse_args(argv)
    if args.pad < 0:
        parser.error(f"--pad must be >= 0, got {args.pad}")
    p = problem(args.n, np.dtype(args.dtype), args.where, pad=args.pad)
    default_tile, default_dchunk = blocking(p["d"], p["cp"], p["X"].itemsize, isa=args.isa)
    runs = []
    variants = [*args.variants, args.variants[0]] if args.control else args.variants
    with tempfile.TemporaryDirectory() as workdir:
        for i, text in enumerate(variants):
            flags, headers, tile, dchunk, pf = parse_variant(text)
            lib = build(flags, headers, workdir, i)
            tile, dchunk = tile or default_tile, dchunk or default_dchunk
            label = text or "(this checkout)"
            if args.control and i == len(variants) - 1:
                label += " (control)"
            runs.append((label, tile, dchunk, caller(lib, ISAS[args.isa], p, tile, dchunk, pf)))
        first = None
        for label, tile, dchunk, run in runs:
            loss, G, gb = run()
            result = (loss, G.copy(), gb.copy())
            if first is None:
                first, agree = result, "reference"
            else:
                same = first[0] == loss and np.array_equal(first[1], G) and np.array_equal(first[2], gb)
                scale = max(float(np.abs(first[1]).max()), 1e-300)
                agree = "same" if same else f"differs (grad {np.abs(first[1] - G).max() / scale:.1e} rel)"
            print(f"{label:40s} T={tile:3d} Dc={dchunk:4d}  {agree}")
        rng = np.random.default_rng(1)
        A = rng.standard_normal((args.gemm_n, args.gemm_n)).astype(p["X"].dtype)
        times, gemm = [[] for _ in runs], []
        draw = np.random.default_rng(2)
        with threadpool_limits(1):
            A @ A
            for rep in range(args.repeat):
                t0 = time.thread_time()
                A @ A
                gemm.append(2.0 * args.gemm_n**3 / (time.thread_time() - t0))
                # rotated, so that no variant always runs first after the GEMM
                # (that call finds its caches taken: 1.5x slower at N=500)
                for j in range(len(runs)):
                    k = (j + rep) % len(runs)
                    if args.where == "fresh":
                        p["rows"][:] = draw.integers(0, POOL, args.n)
                    t0 = time.thread_time()
                    runs[k][3]()
                    times[k].append(time.thread_time() - t0)
    flops = 4.0 * args.n * p["d"] * p["c"]
    r_gemm = max(gemm)
    pad = f" (rows {p['d'] + args.pad} apart)" if args.pad else ""
    print(f"{args.dtype} {args.isa} N={args.n} X in {args.where}{pad}: GEMM {r_gemm / 1e9:.1f} GFLOP/s "
          f"(best of {args.repeat}), kernel at GEMM rate {flops / r_gemm * 1e3:.2f} ms")
    for (label, tile, dchunk, _), ts in zip(runs, times):
        t = min(ts)
        print(f"  {label:40s} {t * 1e3:8.2f} ms  {flops / t / 1e9:6.1f} GFLOP/s  {100 * flops / r_gemm / t:5.1f} % of GEMM")
    if args.control:
        print(f"control: the first variant built twice, {apart(min(times[0]), min(times[-1])):.1f} % apart "
              "(differences below that are noise)")


if __name__ == "__main__":
    main()
