"""``cython`` backend: the compiled extension ``_cython_kernel``.

Design note
-----------
The kernel is built by ``setup.py`` at install time.  If it was not built
(a source checkout without ``pip install``, a machine with no compiler),
importing this module raises ``ImportError`` and the registry reports the
backend as unavailable with that reason; ``import fastsoftmax`` never fails
because of it.
"""

import numpy as np

from .._threads import get_num_threads
from ._common import finish
from ._cython_kernel import fused_loss_grad


def softmax_loss(W, X, y, reg):
    """Softmax loss and gradient from the compiled, GIL-free kernel.

    Parameters
    ----------
    W : ndarray, shape (D, C), float32 or float64
    X : ndarray, shape (N, D), same dtype as ``W``
    y : ndarray, shape (N,), intp labels in [0, C)
    reg : float

    Returns
    -------
    loss : float
    dW : ndarray, shape (D, C), dtype of ``W``
    """
    N = X.shape[0]
    Wt = np.ascontiguousarray(W.T)
    X = np.ascontiguousarray(X)  # a no-op for C order
    data_loss, dWt = fused_loss_grad(Wt, X, y, get_num_threads())
    return finish(W, N, reg, data_loss, dWt)
