"""``cython`` backend: the compiled extension ``_cython_kernel``.

Design note
-----------
The kernel (``_cython_kernel.pyx`` over the C micro-kernels of
``_fused_kernel.h``; the README's "How the kernels work" has the design and
the measurements) is built by ``setup.py`` at install time.  If it was not
built (a source checkout without ``pip install``, a machine with no
compiler), importing this module raises ``ImportError`` and the registry
reports the backend as unavailable with that reason; ``import fastsoftmax``
never fails because of it.

This module only adapts layouts: it pads ``W.T`` with zero classes to the
kernel's class block and hands X over as it is whenever its rows have unit
stride (C order, or row-strided views such as ``X[::2]``); only other
layouts (Fortran order, column-strided views) are copied, once.
"""

import numpy as np

from ._common import finish, interim, into, padded_transpose, thread_count
from ._cython_kernel import CLASS_BLOCK, SUPPORTED_ISAS, fused_loss_grad

#: Which instruction-set build of the kernel runs (one of ``SUPPORTED_ISAS``);
#: None means the widest this CPU supports.  Tests set it to cover every build.
ISA = None

__all__ = ["softmax_loss", "ISA", "SUPPORTED_ISAS"]


def softmax_loss(problem, n_threads):
    """Softmax loss and gradient from the compiled, GIL-free kernel.

    Parameters
    ----------
    problem : fastsoftmax.backends._validate.Problem
        ``W`` (D, C) and ``X`` (N, D) float32 or float64, ``y`` (N,) intp,
        ``reg``; optional ``b``, ``rows``, ``out``.
    n_threads : int
        Upper bound on threads; small problems use fewer (``thread_count``).

    Returns
    -------
    loss : float
    dW : ndarray, shape (D, C), dtype of ``W`` (``out`` if given)
    db : ndarray, shape (C,), or None without ``b``
    """
    if problem.b is not None or problem.rows is not None:
        return interim(problem, n_threads)
    W, X, y, reg = problem.args
    N, C = X.shape[0], W.shape[1]
    item = X.dtype.itemsize
    if X.shape[1] > 1 and X.strides[1] != item or X.strides[0] % item:
        X = np.ascontiguousarray(X)
    Wt = padded_transpose(W, CLASS_BLOCK)
    n_threads = thread_count(N, X.shape[1], C, n_threads)
    data_loss, grad_sum = fused_loss_grad(Wt, X, y, C, n_threads, ISA)
    loss, dW = finish(W, N, reg, data_loss, grad_sum)
    return loss, into(problem.out, dW), None
