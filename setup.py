"""Build the optional Cython kernel.

Only the extension lives here (everything declarative is in pyproject.toml).
The build must never fail because of OpenMP: the flags are probed, and without
OpenMP the kernel still compiles and runs serially (``prange`` degrades to
``range``).

Portability: no ``-march`` flag by default, so the extension runs on any
x86-64.  Speed does not depend on it: ``_fused_kernel.h`` compiles its hot
loops three times under ``#pragma GCC target`` (AVX-512, AVX2+FMA, baseline)
and picks the widest one the CPU supports at import.  ``FASTSOFTMAX_NATIVE=1``
opts in to ``-march=native`` for a build that only has to run on this machine
(it changes only the glue code and the baseline build).  No ``-ffast-math``:
NaN and inf must propagate so that bad input is detected from the result.
"""

import os
import sys
import tempfile

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def _compiler_accepts(compiler, flags):
    """Return True if ``compiler`` compiles and links an OpenMP program with ``flags``."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write("#include <omp.h>\nint main(void){return omp_get_max_threads() < 1;}\n")
        try:
            objs = compiler.compile([src], output_dir=tmp, extra_postargs=flags)
            compiler.link_executable(objs, os.path.join(tmp, "probe"), extra_postargs=flags)
        except Exception:  # any compiler or linker failure means "no"
            return False
    return True


class BuildExt(build_ext):
    """Add optimisation and (when available) OpenMP flags for the compiler in use."""

    def build_extensions(self):
        ctype = self.compiler.compiler_type
        if ctype == "msvc":
            compile_args, link_args = ["/O2", "/openmp"], []
        else:
            compile_args = ["-O3", "-fno-math-errno"]
            link_args = []
            if os.environ.get("FASTSOFTMAX_NATIVE") == "1":
                compile_args.append("-march=native")
            omp = ["-fopenmp"]
            if _compiler_accepts(self.compiler, omp):
                compile_args += omp
                link_args += omp
            else:
                print("fastsoftmax: compiler has no OpenMP, building the serial kernel", file=sys.stderr)
        for ext in self.extensions:
            ext.extra_compile_args = compile_args + list(ext.extra_compile_args)
            ext.extra_link_args = link_args + list(ext.extra_link_args)
        super().build_extensions()


extensions = [
    Extension(
        "fastsoftmax.backends._cython_kernel",
        ["fastsoftmax/backends/_cython_kernel.pyx"],
        include_dirs=[np.get_include(), "fastsoftmax/backends"],
        depends=["fastsoftmax/backends/_fused_kernel.h", "fastsoftmax/backends/_fused_body.h"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    ),
    cmdclass={"build_ext": BuildExt},
)
