"""``cython`` backend: the compiled extension ``_cython_kernel``.

Design note
-----------
The kernel (``_cython_kernel.pyx`` over the C micro-kernels of
``_fused_kernel.h``; docs/kernels.md has the design and the measurements)
is built by ``setup.py`` at install time.  If it was not built (a source
checkout without ``pip install``, a machine with no compiler), importing this
module raises ``ImportError`` and the registry reports the backend as
unavailable with that reason; ``import fastsoftmax`` never fails because of
it.

This module only adapts layouts (dividing by N and the L2 term happen in
the kernel's final reduction, ``reg=``): it pads ``W.T`` with zero classes to the
kernel's class block and hands X over as it is whenever its rows have unit
stride (C order, or row-strided views such as ``X[::2]``); only other
layouts (Fortran order, column-strided views) are copied, once.  A bias, a
row index array and an output array go to the kernel natively: nothing of
size N x D is ever gathered or copied for them.
"""

import os

import numpy as np

from ._threads import get_num_threads
from ._common import blocking, padded_transpose, thread_count
from ._cython_kernel import CLASS_BLOCK, SUPPORTED_ISAS, fused_loss_grad

#: Which instruction-set build of the kernel runs (one of ``SUPPORTED_ISAS``);
#: None means the widest this CPU supports.  Tests set it to cover every build;
#: the environment variable ``FASTSOFTMAX_ISA`` sets it for a whole process
#: (e.g. ``FASTSOFTMAX_ISA=avx2 fastsoftmax bench`` on an AVX-512 machine).
ISA = os.environ.get("FASTSOFTMAX_ISA") or None
if ISA is not None and ISA not in SUPPORTED_ISAS:
    raise ImportError(f"FASTSOFTMAX_ISA={ISA!r}: this CPU runs {SUPPORTED_ISAS}")

#: (tile, dchunk) override for experiments; None: ``_common.blocking``.
BLOCKING = None

__all__ = ["softmax_loss", "loss_grad", "ISA", "SUPPORTED_ISAS"]


def loss_grad(W, X, y, reg, b=None, rows=None, out=None, n_threads=None):
    """Loss and gradients, with optional bias, row subset and output array.

    Parameters
    ----------
    W : ndarray, shape (D, C), float32 or float64
    X : ndarray, shape (N, D), same dtype as ``W``
    y : ndarray, shape (N,), intp labels in [0, C)
    reg : float
    b : ndarray, shape (C,), dtype of ``W``, optional
    rows : ndarray, shape (n,), intp in [0, N), optional
        Process ``X[rows]``, ``y[rows]`` without gathering them.
    out : ndarray, shape (D, C), dtype of ``W``, C-contiguous, optional
    n_threads : int, optional
        Default :func:`fastsoftmax.get_num_threads`.

    Returns
    -------
    loss : float
    dW : ndarray, shape (D, C) (``out`` if given)
    db : ndarray, shape (C,), or None when ``b`` is None
    """
    N, C = X.shape[0], W.shape[1]
    n = N if rows is None else len(rows)
    item = X.dtype.itemsize
    if X.shape[1] > 1 and X.strides[1] != item or X.strides[0] % item:
        X = np.ascontiguousarray(X)
    Wt = padded_transpose(W, CLASS_BLOCK, aligned=True)
    tile, dchunk = BLOCKING or blocking(X.shape[1], Wt.shape[0], item)
    n_threads = thread_count(n, X.shape[1], C, get_num_threads() if n_threads is None else n_threads)
    # reg=: the kernel's reduction divides by n and adds the L2 term
    # (_common.finish's job, without its three extra passes over (D, C)).
    loss, dW, db = fused_loss_grad(Wt, X, y, C, n_threads, ISA, b, rows, out, tile, dchunk, reg=reg)
    return loss, dW, db


def softmax_loss(problem, n_threads):
    """Softmax loss and gradients: the registry's kernel interface.

    Parameters
    ----------
    problem : fastsoftmax.backends._validate.Problem
        ``W`` (D, C) and ``X`` (N, D) float32 or float64, ``y`` (N,) intp,
        ``reg``; optional ``b``, ``rows``, ``out``, all handled natively.
    n_threads : int
        Upper bound on threads; small problems use fewer (``thread_count``).

    Returns
    -------
    loss : float
    dW : ndarray, shape (D, C), dtype of ``W`` (``out`` if given)
    db : ndarray, shape (C,), or None without ``b``
    """
    return loss_grad(*problem.args, b=problem.b, rows=problem.rows, out=problem.out, n_threads=n_threads)
