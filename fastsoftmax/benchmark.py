"""Time every backend on the shared cases and check each against the reference.

Design note
-----------
Each backend's kernel is timed on inputs validated once, outside the timed
region, after one untimed warm-up call (which also absorbs Numba's JIT
compilation).  Before timing, the backend's public function is compared with
the reference result for the same case (``fastsoftmax.testing.compare``);
a disagreement makes the run fail.
"""

import statistics
import time

from . import backends
from ._validate import prepare
from .cases import CASES, QUICK_CASES
from .testing import compare


def _reference(case, W, X, y, reg):
    name = "python" if case.skip_reason("python") is None else "numpy"
    return name, backends.get(name)(W, X, y, reg)


def run(quick=False, repeat=7, out=print):
    """Print one table per case; return 0 if every backend agreed, else 1."""
    failed = []
    for case in QUICK_CASES if quick else CASES:
        W, X, y, reg = case.make()
        ref_name, ref = _reference(case, W, X, y, reg)
        out(f"\n{case.name}  (D={case.d}, C={case.c}; reference: {ref_name})")
        out(f"{'backend':<8} {'median ms':>10} {'min ms':>8} {'loss err':>9} {'grad err':>9}  verdict")
        problem = prepare(W, X, y, reg)
        for name in backends.available():
            reason = case.skip_reason(name)
            if reason:
                out(f"{name:<8} skipped: {reason}")
                continue
            agreement = compare(backends.get(name)(W, X, y, reg), ref, problem.W.dtype)
            kernel = backends.get_kernel(name)
            times = []
            for _ in range(1 if name == "python" else repeat):
                t0 = time.perf_counter()
                kernel(*problem)
                times.append(time.perf_counter() - t0)
            verdict = "PASS" if agreement.ok else "FAIL"
            if not agreement.ok:
                failed.append((case.name, name))
            out(
                f"{name:<8} {statistics.median(times) * 1e3:>10.2f} {min(times) * 1e3:>8.2f} "
                f"{agreement.loss_error:>9.1e} {agreement.grad_error:>9.1e}  {verdict}"
            )
    if failed:
        out("\nFAIL: disagree with the reference: " + ", ".join(f"{b} on {c}" for c, b in failed))
        return 1
    return 0
