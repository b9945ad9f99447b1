"""Peak extra memory of one call, measured in a separate process.

Design note
-----------
Memory needs malloc settings that slow allocation down, so it is measured in
a fresh process per case, never in the timed one; see
:func:`peak_extra_memory` for the method.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from .. import backends
from ..backends._validate import prepare
from .cases import Case
from .inputs import case_data
from .rows import setup_row
from .threads import limit_threads

__all__ = ["peak_extra_memory"]

_PROBE = r"""
import gc, json, sys
spec = json.loads(sys.argv[1])
from fastsoftmax import backends
from fastsoftmax.harness.memory import _probe_rows
for name, (module, attr) in spec.pop("extra").items():
    import importlib
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    backends.register(name, obj)
print(json.dumps(_probe_rows(**spec)))
"""


def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _probe_rows(case, names, threads, data_dir):
    """In the probe process: peak RSS growth of one call of each row, in bytes."""

    case = Case(**case)
    args, _ = case_data(case, data_dir)
    problem = prepare(*args)
    out = {}
    with limit_threads(threads):
        for name in names:
            _, fn = setup_row(name, problem, threads)
            fn()  # warm-up: imports, JIT, thread pools, first-touch of caches
            # the buffers the compiled kernels keep from call to call are
            # memory a call needs: the measured call allocates them anew
            backends.release_scratch()
            gc.collect()
            before = _status_kb("VmRSS")
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM (the RSS high-water mark) to the current RSS
            result = fn()
            peak = _status_kb("VmHWM")
            output = 0 if result is None else np.asarray(result[1]).nbytes
            out[name] = max(0, (peak - before) * 1024 - output)
            del result, fn
            gc.collect()
    return out


def peak_extra_memory(case, names, threads, data_dir=None, timeout=600):
    """Peak memory one call of each row allocates beyond its inputs and output.

    Method: a fresh Python process builds the case, runs each row once (the
    warm-up: JIT compilation, thread pools, imports), then resets the kernel's
    resident-set high-water mark (``echo 5 > /proc/self/clear_refs``), calls
    the row once more and reads ``VmHWM - VmRSS before`` from
    ``/proc/self/status``, less the output's size.  RSS counts every page the
    call touches, whoever allocated it (NumPy, Numba's NRT, OpenMP, BLAS
    buffers), which tracemalloc (NumPy only) and Numba's allocation counters
    (counts, not bytes) cannot.  glibc is told to serve every allocation over
    64 KiB with a fresh mmap and to give freed memory back at once
    (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``), so a temporary
    cannot hide in pages an earlier call left resident.  This slows
    allocation down, which is why it runs in its own process and never in
    the timed one.  Resolution: one page (4 KiB); Linux only.

    Parameters
    ----------
    case : fastsoftmax.harness.cases.Case
    names : list of str
        Rows to measure (backends, yardsticks, peers).  A backend added with
        :func:`fastsoftmax.backends.register` is re-registered in the probe
        from its kernel's module and qualified name.
    threads : int
    data_dir : str or None

    Returns
    -------
    dict
        Row name to bytes, or to None where it could not be measured; the
        key ``"_error"`` explains a failed probe.
    """
    if not os.path.exists("/proc/self/clear_refs"):
        return {"_error": "needs Linux /proc/self/clear_refs"} | {n: None for n in names}
    extra = {}
    for name in names:
        if name in backends._extra:
            kernel = backends._extra[name]
            extra[name] = (kernel.__module__, kernel.__qualname__)
    spec = {
        "case": {f: getattr(case, f) for f in ("n", "d", "c", "dtype", "reg", "seed")},
        "names": names,
        "threads": threads,
        "data_dir": os.path.abspath(data_dir) if data_dir else None,
        "extra": extra,
    }
    env = dict(os.environ)
    env.update(MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0", MALLOC_TOP_PAD_="0")
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        # Not the caller's directory: `python -c` puts it first on sys.path,
        # and run from a source checkout it would import the uncompiled
        # package instead of the installed one.
        cwd=tempfile.gettempdir(),
        timeout=timeout,
    )
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"_error": f"memory probe failed: {tail}"} | {n: None for n in names}
    return json.loads(proc.stdout.strip().splitlines()[-1])
