"""What machine and libraries a benchmark ran on, for its JSON and the docs."""

from __future__ import annotations

import os
import platform

from . import peers

__all__ = ["machine_info"]


def machine_info():
    """CPU, core count and library versions, for the JSON and the README."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    from threadpoolctl import threadpool_info

    import fastsoftmax

    libs = {"python": platform.python_version(), "fastsoftmax": fastsoftmax.__version__}
    for lib in ("numpy", "numba", "Cython", "threadpoolctl", "scikit-learn", "torch", "jax"):
        libs[lib] = peers.library_version(lib)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "platform": platform.platform(),
        "libraries": libs,
        "blas": [
            {k: p.get(k) for k in ("internal_api", "version", "num_threads", "architecture")}
            for p in threadpool_info()
            if p.get("user_api") == "blas"
        ],
    }
