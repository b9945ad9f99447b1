"""The roofline: the time no kernel can beat on this machine, measured in the same run.

Design note
-----------
One call costs ``4*N*D*C`` floating-point operations and must read X once,
so for a case (N, D, C, dtype, threads) no kernel can beat

    ``T* = max(4*N*D*C / R_gemm, bytes(X) / R_stream)``

with ``R_gemm`` the rate of a square GEMM (n = 2048, ``A @ B`` through
NumPy's BLAS) in the same dtype and thread count, and ``R_stream`` the rate
at which the ``stream X`` yardstick reads X once (same thread count).  Both
are measured in the run that times the backends, so a busy or throttled
machine moves the yardstick and the rows together, and each row's
``% of roofline`` = T* / T is a ratio of figures from one run (issue 11).

The GEMM rate is the best a tuned BLAS gets from these FMA units; it is the
right yardstick only if the kernels may use the same instruction set.  To
hold the AVX2 builds to an AVX2 GEMM on an AVX-512 machine, start the
process with :data:`AVX2_ENV` and ``FASTSOFTMAX_ISA=avx2``:
``OPENBLAS_CORETYPE=Haswell`` for OpenBLAS, ``NUMBA_CPU_NAME=haswell
NUMBA_CPU_FEATURES=`` for Numba (the name alone keeps the host's AVX-512:
until the twenty-first session the AVX2 "numba" rows ran AVX-512 code,
docs/kernels.md, round 18).  :func:`isa_note` records what was in effect,
Numba's target read from its compiled code.

The reverse also happens: a machine's environment may hold OpenBLAS to a
narrower instruction set than the kernels use.  The sixteenth session's
AMD EPYC (Zen 5, AVX-512 on full-width units) had ``OPENBLAS_CORETYPE=
Haswell`` set for every process: the AVX-512 kernels were measured against
an AVX2 GEMM (67 instead of 110 GFLOP/s in float64) and read 125 % of the
"roofline".  So :func:`yardstick_check` compares the instruction set of
OpenBLAS's core (threadpoolctl's ``architecture``) with the cython
build's and says when they differ; ``fastsoftmax bench`` and
bench/roofline.py print it, and the JSON keeps it (``isa.yardstick``).
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import numpy as np

from .threads import limit_threads

__all__ = ["GEMM_N", "AVX2_ENV", "gemm_rate", "stream_rate", "t_star", "isa_note", "blas_isa", "yardstick_check"]

#: Side of the square GEMM whose rate is the compute roof.
GEMM_N = 2048

_gemm_cache: dict = {}


#: Untimed pause after a multi-threaded GEMM (seconds): OpenBLAS's workers
#: busy-wait for a while after a call and, with no spare core, would slow
#: down whatever row runs next (measured: cython N=500 float64 on 2 threads,
#: 16 ms right after a 2-thread GEMM instead of 1.25 ms).
SETTLE_S = 0.3


def gemm_rate(dtype, threads, n=None, repeat=5, cache=True):
    """FLOP/s of ``A @ B`` (n x n, default :data:`GEMM_N`, ``dtype``) with ``threads`` BLAS threads.

    The median of ``repeat`` calls; then, with more than one thread, an
    untimed pause of :data:`SETTLE_S`.

    One untimed call first (BLAS thread start-up, first touch).  Cached per
    (dtype, threads, n) for the process, so one run measures it once.
    """
    n = GEMM_N if n is None else n
    key = (np.dtype(dtype).name, threads, n)
    if cache and key in _gemm_cache:
        return _gemm_cache[key]
    rng = np.random.default_rng(0)
    A = rng.standard_normal((n, n)).astype(dtype)
    B = rng.standard_normal((n, n)).astype(dtype)
    times = []
    with limit_threads(threads):
        A @ B
        for _ in range(repeat):
            t0 = time.perf_counter()
            A @ B
            times.append(time.perf_counter() - t0)
    if threads > 1:
        time.sleep(SETTLE_S)
    rate = 2.0 * n**3 / statistics.median(times)
    if cache:
        _gemm_cache[key] = rate
    return rate


def stream_rate(X, threads, repeat=5):
    """Bytes/s at which the ``stream X`` yardstick reads ``X`` once (median of ``repeat``)."""
    from .peers import _stream_call

    flat = np.ascontiguousarray(X).ravel()
    with limit_threads(threads):
        fn = _stream_call(flat, threads)
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return flat.nbytes / statistics.median(times)


def t_star(flops, x_bytes, r_gemm, r_stream):
    """``max(flops / r_gemm, x_bytes / r_stream)`` in seconds, and which term binds."""
    compute, memory = flops / r_gemm, x_bytes / r_stream
    return (compute, "gemm") if compute >= memory else (memory, "stream")


#: OpenBLAS cores (threadpoolctl's ``architecture``, lower case) by the
#: widest instruction set of their GEMM kernels, in the names of the cython
#: builds.  Zen cores run the Haswell kernels; a core not listed (another
#: BLAS, an older or unknown core) is not compared.
BLAS_CORE_ISA = {
    **dict.fromkeys(("skylakex", "cooperlake", "sapphirerapids"), "avx512"),
    **dict.fromkeys(("haswell", "zen", "skylake"), "avx2"),
    **dict.fromkeys(("sandybridge", "bulldozer", "piledriver", "steamroller", "excavator", "nehalem", "core2",
                     "penryn", "dunnington", "atom", "barcelona", "opteron", "prescott", "katmai", "coppermine",
                     "northwood", "banias", "athlon"), "baseline"),
}
_ISA_ORDER = ("baseline", "avx2", "avx512")


def blas_isa(cores=None):
    """The instruction set of the BLAS's GEMM kernels (``"avx512"``, ``"avx2"``, ``"baseline"``) and the core name.

    Parameters
    ----------
    cores : list of str, optional
        BLAS core names (default: threadpoolctl's ``architecture`` of every
        loaded BLAS).

    Returns
    -------
    (str or None, str or None)
        ``(None, core)`` when the core is not in :data:`BLAS_CORE_ISA`, or
        when several BLAS libraries disagree (``core`` then lists them).
    """
    if cores is None:
        from threadpoolctl import threadpool_info

        cores = [p.get("architecture") for p in threadpool_info() if p.get("user_api") == "blas"]
    cores = sorted({c for c in cores if c})
    if len(cores) != 1:
        return None, ", ".join(cores) or None
    return BLAS_CORE_ISA.get(cores[0].lower()), cores[0]


#: What holds each side to AVX2 on an AVX-512 machine (docs/kernels.md):
#: OpenBLAS's Haswell kernels, and Numba's target.  ``NUMBA_CPU_NAME``
#: alone is not enough: Numba keeps the host's features, AVX-512 included,
#: unless ``NUMBA_CPU_FEATURES`` is set too (empty: the named CPU's own).
NUMBA_AVX2_ENV = "NUMBA_CPU_NAME=haswell NUMBA_CPU_FEATURES="
AVX2_ENV = f"OPENBLAS_CORETYPE=Haswell {NUMBA_AVX2_ENV}"


def yardstick_check(kernel_isa, blas=None, numba_isa=None):
    """None when the GEMM yardstick uses the kernels' instruction sets, else a warning saying what to set.

    Parameters
    ----------
    kernel_isa : str or None
        The cython build that runs (``cython.running_isa()``); None: not checked.
    blas : (str or None, str or None), optional
        :func:`blas_isa`'s answer (default: asked now).
    numba_isa : str or None, optional
        What Numba compiles for (``numba.target_isa()``); None: not checked.

    Returns
    -------
    str or None
        One line per kernel whose instruction set differs from the GEMM's.
    """
    isa, core = blas_isa() if blas is None else blas
    warnings = []
    kernels = (("the C kernel's build", kernel_isa, f"set FASTSOFTMAX_ISA={isa} to measure that build"),
               ("Numba's code", numba_isa, f"hold Numba to {isa} too (for AVX2: {NUMBA_AVX2_ENV})"))
    for who, kisa, narrower in kernels:
        if kisa not in _ISA_ORDER or isa is None or isa == kisa:
            continue
        head = f"WARNING: the GEMM yardstick runs OpenBLAS's {core} ({isa}) kernels but {who} is {kisa}"
        if _ISA_ORDER.index(isa) < _ISA_ORDER.index(kisa):
            forced = os.environ.get("OPENBLAS_CORETYPE")
            fix = (f"unset OPENBLAS_CORETYPE (it is {forced!r} here)" if forced else "use a BLAS built for this CPU")
            warnings.append(f"{head}: its % roof reads too high; {fix}, or {narrower}")
        else:
            warnings.append(f"{head}: its % roof reads too low; to measure the {kisa} builds against a GEMM of "
                            f"their own instruction set, start the process with {AVX2_ENV} as docs/kernels.md does")
    return "\n".join(warnings) or None


def isa_note():
    """The instruction sets in effect: the cython build (D-chunk, prefetch), OpenBLAS's core and overrides, Numba's.

    ``yardstick`` is :func:`yardstick_check`'s warning, or None when the GEMM
    yardstick, the C kernel and Numba's code use the same instruction set
    (or one of them is unknown).  ``numba_isa`` is what Numba compiles for
    (``numba.target_isa()``: read from compiled code, since the environment
    alone does not say it).
    """
    from ..backends import _wisdom, available, kernel_isa

    blas = blas_isa()
    isa = kernel_isa()  # through the registry: None wherever the extension does not load
    note = {name: os.environ.get(name) for name in ("OPENBLAS_CORETYPE", "NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES")}
    note.update(blas_core=blas[1], yardstick=None, cython_isa=isa)
    if "numba" in available():
        from ..backends import numba

        note["numba_isa"] = numba.target_isa()
        for itemsize, dtype in _wisdom.DTYPE_NAMES.items():
            note[f"numba_prefetch_{dtype}"] = _whole_tile_from(numba.tile_prefetch_from(itemsize), "none")
    note["yardstick"] = yardstick_check(isa, blas, note.get("numba_isa"))
    if isa is None:
        return note
    from ..backends import cython

    for itemsize, dtype in _wisdom.DTYPE_NAMES.items():
        chunk, tuned = cython.score_chunk(itemsize)
        note[f"cython_chunk_{dtype}"] = f"{chunk / 1024:g} KiB ({'tuned' if tuned else 'static'})"
        note[f"cython_prefetch_{dtype}"] = _whole_tile_from(cython.tile_prefetch_from(itemsize), "start of the next tile")
    return note


def _whole_tile_from(start, default):
    """How :func:`isa_note` says from which batch size (``sys.maxsize``: never) a kernel prefetches whole tiles."""
    return default if start == sys.maxsize else f"whole next tile from N = {start} (tuned)"
