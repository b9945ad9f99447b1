"""The two-layer net's benchmark cases, reference, GEMM yardstick and table.

Design note
-----------
The net's loss runs on the same harness as the linear one (``fastsoftmax
bench`` and ``bench/``): one table of cases (:data:`NET_CASES`, CIFAR
shapes D = 3073, H = 100, C = 10 at N = 500 and 10000, float32 and
float64), each row checked against a reference before it is timed, only
the raw kernel on the already validated problem timed, and the run's thread
count held on every pool (:func:`fastsoftmax.harness.threads.limit_threads`).

Reference: the ``python`` loops where they take seconds
(:data:`fastsoftmax.harness.agreement.PYTHON_MAX_WORK` multiply-adds);
on these cases (1.5e8 and more) a float64 evaluation in row blocks
(:func:`net_reference`) that shares no code with any backend (as
:func:`fastsoftmax.harness.agreement.reference` does for the linear loss),
so the ``numpy`` row is not compared with itself.  Agreement is
norm-wise per result (loss and each gradient) with the package's tolerances
(:data:`fastsoftmax.harness.agreement.TOLERANCE`).

Yardstick: ``GEMM roofline``, the two products every implementation must
do, ``X @ W1`` (N x D x H) and ``X.T @ dh`` (D x N x H), as two BLAS calls
into preallocated outputs at the same thread count, and nothing else.  They
are 97% of the net's arithmetic, so its time is what a loss-and-gradient
would take if everything but the GEMMs were free: the compute roofline as
BLAS reaches it on this machine.  Rows report GFLOP/s on the whole call
(``4 N H (D + C)`` flops) and their time relative to the yardstick.
"""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass

import numpy as np

from .. import backends
from ..backends._validate import NET_PARAMS, NetProblem, prepare_net
from .agreement import BLOCK_ROWS, PYTHON_MAX_WORK, relative_error, tolerance
from .threads import limit_threads

__all__ = ["NetCase", "NET_CASES", "QUICK_NET_CASES", "select_net", "net_reference", "gemm_yardstick",
           "YARDSTICK", "net_row_names", "setup_net_row", "run_net_case", "format_net_table", "compare_net"]

#: The yardstick row's name.
YARDSTICK = "GEMM roofline"


@dataclass(frozen=True)
class NetCase:
    """One net benchmark problem.

    Attributes
    ----------
    n, d, h, c : int
        Examples, features (a column of ones included, as in the linear
        cases), hidden units, classes.
    dtype : str
    reg : float
    seed : int
    """

    n: int
    d: int = 3073
    h: int = 100
    c: int = 10
    dtype: str = "float64"
    reg: float = 0.25
    seed: int = 0

    @property
    def name(self) -> str:
        """Short id such as ``"net N=500|float64"``, the benchmark group."""
        return f"net N={self.n}|{self.dtype}"

    @property
    def flops(self) -> int:
        """Flops of one loss-and-gradient call: two GEMMs of each layer, 4 N H (D + C)."""
        return 4 * self.n * self.h * (self.d + self.c)

    def skip_reason(self, backend: str) -> str | None:
        """Why ``backend`` does not run on this case, or None."""
        if backend == "python" and self.n * self.h * (self.d + self.c) > PYTHON_MAX_WORK:
            return (f"python reference skipped at N={self.n}: N*H*(D+C) = "
                    f"{self.n * self.h * (self.d + self.c):.3g} interpreted multiply-adds would take minutes "
                    f"(it runs up to {PYTHON_MAX_WORK:.3g})")
        return None

    def make(self):
        """``(params, X, y, reg)`` deterministically from ``seed``: CIFAR-like pixels, CS231n init.

        X as in :func:`fastsoftmax.harness.cases.make_problem` (mean-subtracted
        0..255 intensities and a column of ones); ``W1``, ``W2`` are
        ``1e-4 * randn`` as in the CS231n net, biases ``1e-2 * randn``.
        """
        from .cases import make_problem

        _, X, y = make_problem(self.n, self.d, self.c, self.dtype, self.seed)
        rng = np.random.default_rng(self.seed + 1)
        params = dict(W1=1e-4 * rng.standard_normal((self.d, self.h)), b1=1e-2 * rng.standard_normal(self.h),
                      W2=1e-4 * rng.standard_normal((self.h, self.c)), b2=1e-2 * rng.standard_normal(self.c))
        return {k: v.astype(self.dtype) for k, v in params.items()}, X, y, self.reg


#: The net's benchmark cases.
NET_CASES = tuple(NetCase(n, dtype=dt) for n in (500, 10000) for dt in ("float64", "float32"))

#: A smoke run's net cases.
QUICK_NET_CASES = tuple(c for c in NET_CASES if c.n == 500)


def select_net(sizes=None, dtypes=None):
    """The cases of :data:`NET_CASES` with N in ``sizes`` and dtype in ``dtypes``."""
    return tuple(c for c in NET_CASES if (sizes is None or c.n in sizes) and (dtypes is None or c.dtype in dtypes))


def net_reference(problem: NetProblem):
    """The reference ``(name, (loss, grads))`` of a validated net problem (see the module note)."""
    N, D = problem.X.shape
    H, C = problem.W2.shape
    if N * H * (D + C) <= PYTHON_MAX_WORK and "python" in backends.available("net"):
        return "python", backends.get("python", contract="net")(problem_params(problem), problem.X, problem.y,
                                                               problem.reg)
    W1, b1, W2, b2 = (np.asarray(a, dtype=np.float64) for a in problem[:4])
    grads = {k: np.zeros_like(a) for k, a in zip(NET_PARAMS, (W1, b1, W2, b2))}
    loss = 0.0
    for lo in range(0, N, BLOCK_ROWS):
        Xb = np.asarray(problem.X[lo:lo + BLOCK_ROWS], dtype=np.float64)  # upcast one block at a time
        yb = problem.y[lo:lo + BLOCK_ROWS]
        rows = np.arange(len(yb))
        pre = Xb @ W1 + b1
        hid = np.where(pre > 0, pre, 0.0)
        S = hid @ W2 + b2
        S -= S.max(axis=1, keepdims=True)
        P = np.exp(S)
        P /= P.sum(axis=1, keepdims=True)
        loss -= float(np.log(P[rows, yb]).sum())
        P[rows, yb] -= 1.0
        grads["W2"] += hid.T @ P
        grads["b2"] += P.sum(axis=0)
        G = (P @ W2.T) * (pre > 0)
        grads["W1"] += Xb.T @ G
        grads["b1"] += G.sum(axis=0)
    reg = problem.reg
    for k in grads:
        grads[k] /= N
    grads["W1"] += 2 * reg * W1
    grads["W2"] += 2 * reg * W2
    loss = loss / N + reg * float((W1 * W1).sum() + (W2 * W2).sum())
    return "float64 NumPy, blocked", (loss, grads)


def problem_params(problem):
    """The ``params`` dict of a :class:`NetProblem`."""
    return dict(zip(NET_PARAMS, problem[:4]))


def compare_net(result, reference, dtype):
    """Largest norm-wise error over the loss and the four gradients, and the tolerance.

    Returns
    -------
    error : float
    tol : float
    """
    loss, grads = result
    ref_loss, ref_grads = reference
    error = max([relative_error(loss, ref_loss)] + [relative_error(grads[k], ref_grads[k]) for k in NET_PARAMS])
    return error, tolerance(dtype)


def gemm_yardstick(problem: NetProblem):
    """The two big products of the net, into preallocated outputs: a zero-argument callable.

    ``X @ W1`` -> (N, H) and ``X.T @ G`` -> (D, H), where G stands for the
    gradient at the hidden layer (any (N, H) array: the cost does not depend
    on its values).  Returns None (nothing to check).
    """
    X, W1 = problem.X, problem.W1
    hidden = np.empty((X.shape[0], W1.shape[1]), dtype=W1.dtype)
    G = np.ones_like(hidden)
    dW1 = np.empty_like(W1)

    def run():
        np.matmul(X, W1, out=hidden)
        np.matmul(X.T, G, out=dW1)

    return run


def net_row_names(backend_names=None):
    """Rows of a net run: the net backends (or those asked for), then the yardstick."""
    names = list(backends.available("net")) if backend_names is None else \
        [n for n in backend_names if n in backends.NET_BACKENDS]
    return names + [YARDSTICK]


def setup_net_row(name, problem, threads):
    """``(check, timed)`` for row ``name``, all setup done (see :func:`fastsoftmax.harness.rows.setup_row`)."""
    if name == YARDSTICK:
        fn = gemm_yardstick(problem)
        return None, fn
    public, kernel = backends.get(name, contract="net"), backends.get_kernel(name, contract="net")

    def timed():
        with np.errstate(all="ignore"):
            return kernel(problem, threads)

    return (lambda: public(problem_params(problem), problem.X, problem.y, problem.reg, n_threads=threads)), timed


def _timed(fn, repeat, slow_s=1.0, min_slow=3):
    times = []
    for i in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if i + 1 >= min_slow and sum(times) / len(times) > slow_s:
            break
    return times


def run_net_case(case, names, threads, repeat):
    """Check, then time, every row on one net case at each thread count.

    Parameters
    ----------
    case : NetCase
    names : list of str
        From :func:`net_row_names`.
    threads : list of int
    repeat : int

    Returns
    -------
    ref_name : str
    records : list of dict
        One per row and thread count: ``backend``, ``kind``, ``threads``,
        ``status``, ``verdict``, ``error``, ``tolerance``, ``median_s``,
        ``min_s``, ``spread``, ``gflops``, ``vs_gemm`` (time / yardstick time),
        ``first_call_s``, or ``reason``.
    """
    problem = prepare_net(*case.make())
    ref_name, ref = net_reference(problem)
    records = []
    for n_threads in threads:
        with limit_threads(n_threads):
            for name in names:
                record = dict(backend=name, kind="yardstick" if name == YARDSTICK else "backend",
                              threads=n_threads, status="ok")
                reason = None if name == YARDSTICK else case.skip_reason(name)
                if reason is not None:
                    records.append({**record, "status": "skipped", "reason": reason})
                    continue
                try:
                    gc.collect()
                    t0 = time.perf_counter()
                    check, timed = setup_net_row(name, problem, n_threads)
                    if check is not None:
                        error, tol = compare_net(check(), ref, problem.W1.dtype)  # also the JIT warm-up
                        record.update(first_call_s=time.perf_counter() - t0, error=error, tolerance=tol,
                                      verdict="PASS" if error <= tol else "FAIL")
                    else:
                        timed()  # warm-up
                    times = _timed(timed, repeat)
                except Exception as exc:  # reported, not a traceback
                    records.append({**record, "status": "error", "verdict": "FAIL",
                                    "reason": f"{type(exc).__name__}: {exc}"})
                    continue
                median = statistics.median(times)
                q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else (median,) * 3
                record.update(times_s=times, median_s=median, min_s=min(times),
                              spread=(q3 - q1) / median if median > 0 else 0.0, gflops=case.flops / median / 1e9)
                records.append(record)
    for n_threads in threads:
        gemm = next((r["median_s"] for r in records if r["backend"] == YARDSTICK and r["threads"] == n_threads
                     and r["status"] == "ok"), None)
        for r in records:
            if r["threads"] == n_threads and r["status"] == "ok" and gemm:
                r["vs_gemm"] = r["median_s"] / gemm
    for r in records:
        r.update(case=case.name, n=case.n, d=case.d, h=case.h, c=case.c, dtype=case.dtype, reference=ref_name,
                 data="synthetic (CIFAR-like, seeded)")
    return ref_name, records


def format_net_table(case, ref_name, records):
    """The text table of one net case."""
    multi = len({r["threads"] for r in records}) > 1
    lines = [f"\n{case.name}   N={case.n} D={case.d} H={case.h} C={case.c}, synthetic (CIFAR-like, seeded); "
             f"reference: {ref_name}; {case.flops / 1e9:.3g} GFLOP per call"]
    cols = ["row", "median", "spread", "GFLOP/s", "x GEMM", "first call", "error", "verdict"]
    rows = []
    for r in records:
        label = r["backend"] + (f" x{r['threads']}" if multi else "")
        if r["status"] != "ok":
            rows.append([label, *["-"] * 6, f"{'FAIL' if r['status'] == 'error' else 'skip'}: {r['reason']}"])
            continue
        rows.append([label, f"{r['median_s'] * 1e3:.3g} ms", f"{100 * r['spread']:.0f}%", f"{r['gflops']:.3g}",
                     f"{r['vs_gemm']:.3g}x" if r.get("vs_gemm") else "-",
                     f"{r['first_call_s']:.3g} s" if "first_call_s" in r else "-",
                     f"{r['error']:.1e}" if "error" in r else "-", r.get("verdict", "-")])
    widths = [max(len(str(x)) for x in col) for col in zip(cols, *rows)]
    for row in [cols, *rows]:
        lines.append("  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip())
    lines.append(f"x GEMM: time relative to the {YARDSTICK} row (X @ W1 and X.T @ G alone, same threads); "
                 "error: largest norm-wise error of loss, dW1, db1, dW2, db2 vs the reference")
    return "\n".join(lines)
