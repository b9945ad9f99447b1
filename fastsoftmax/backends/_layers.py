"""The layers of a CS231n network: affine, ReLU and the softmax loss on scores.

Design note
-----------
Each formula is written once, here, as a forward/backward pair in the
CS231n style: ``forward`` returns ``(out, cache)``, ``backward`` takes the
upstream gradient and that cache.  The two-layer net's ``numpy`` backend
(:mod:`fastsoftmax.backends.net_numpy`) and :meth:`TwoLayerNet.loss
<fastsoftmax.training.net.TwoLayerNet.loss>` without labels are compositions
of these functions, not second copies of them; the ``python`` net backend
(the loop reference) and the ``numba`` one are independent writings, tested
against this composition and against numerical derivatives.

It lives with the kernels, not in the training kit, because a backend is
built from it and the kernels import nothing from the training kit or the
harness; students find it as :mod:`fastsoftmax.training.layers` too.  It
imports only NumPy.

The functions check shapes (an affine layer's ``w`` must match ``x``'s
features, an upstream gradient must match the layer's output) and raise a
``ValueError`` naming the argument; they never write to their inputs, and
caches hold references to them, not copies.  Arithmetic follows NumPy's type
promotion: float32 inputs give float32 outputs.

``softmax_loss`` here is the layer a network ends with: it takes *scores*
(N, C) and returns ``(loss, dscores)``, as in CS231n's ``layers.py``.  The
linear classifier's ``fastsoftmax.softmax_loss(W, X, y, reg)`` is the same
loss composed with an affine layer and an L2 penalty, computed by the fused
kernels.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "affine_forward",
    "affine_backward",
    "relu_forward",
    "relu_backward",
    "affine_relu_forward",
    "affine_relu_backward",
    "softmax_loss",
]


def _array(name, a, ndim=None):
    a = np.asarray(a)
    if a.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be an array of real numbers, got dtype {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got {a.ndim}-D array of shape {a.shape}")
    return a


def _same_shape(name, a, shape, what):
    if a.shape != shape:
        raise ValueError(f"{name} must have the shape of {what} {shape}, got {a.shape}")


def affine_forward(x, w, b):
    """``out = x.reshape(N, D) @ w + b``.

    Parameters
    ----------
    x : array_like, shape (N, d_1, ..., d_k)
        Input; each example is flattened to ``D = d_1 * ... * d_k`` values.
    w : array_like, shape (D, M)
    b : array_like, shape (M,)

    Returns
    -------
    out : ndarray, shape (N, M)
    cache : tuple
        ``(x, w, b)`` for :func:`affine_backward`.

    Raises
    ------
    ValueError
        If ``w`` does not have ``D`` rows or ``b`` does not have ``M`` entries.
    """
    x = _array("x", x)
    w = _array("w", w, 2)
    b = _array("b", b, 1)
    if x.ndim < 1:
        raise ValueError(f"x must have a batch dimension, got a {x.ndim}-D array")
    N = x.shape[0]
    D = math.prod(x.shape[1:])
    if w.shape[0] != D:
        raise ValueError(
            f"w has {w.shape[0]} rows but each example of x has {D} values (x shape {x.shape}): "
            f"w must be ({D}, M)"
        )
    if b.shape[0] != w.shape[1]:
        raise ValueError(f"b has {b.shape[0]} entries but w has {w.shape[1]} columns: b must be ({w.shape[1]},)")
    out = x.reshape(N, D) @ w + b
    return out, (x, w, b)


def affine_backward(dout, cache, *, input_grad=True):
    """Gradients of an affine layer.

    Parameters
    ----------
    dout : array_like, shape (N, M)
        Upstream gradient.
    cache : tuple
        From :func:`affine_forward`.
    input_grad : bool
        Compute ``dx``.  A network's first layer needs no gradient for its
        data, and ``dout @ w.T`` is a product as large as the forward one
        (N x M x D): pass False there to skip it.

    Returns
    -------
    dx : ndarray, shape of ``x``, or None
        ``dout @ w.T`` (None when ``input_grad`` is false).
    dw : ndarray, shape (D, M)
        ``x.reshape(N, D).T @ dout``.
    db : ndarray, shape (M,)
        ``dout.sum(axis=0)``.
    """
    x, w, b = cache
    dout = _array("dout", dout)
    N = x.shape[0]
    _same_shape("dout", dout, (N, w.shape[1]), "the affine layer's output")
    dx = (dout @ w.T).reshape(x.shape) if input_grad else None
    dw = x.reshape(N, -1).T @ dout
    db = dout.sum(axis=0)
    return dx, dw, db


def relu_forward(x):
    """``out = max(x, 0)``.

    Parameters
    ----------
    x : array_like, any shape

    Returns
    -------
    out : ndarray, shape of ``x``
    cache : ndarray
        ``x``, for :func:`relu_backward`.
    """
    x = _array("x", x)
    return np.maximum(x, 0), x


def relu_backward(dout, cache):
    """Gradient of a ReLU: ``dout`` where the input was positive, else 0.

    The derivative at exactly 0 is taken as 0 (the subgradient CS231n uses).

    Parameters
    ----------
    dout : array_like, shape of ``x``
    cache : ndarray
        From :func:`relu_forward`.

    Returns
    -------
    dx : ndarray, shape of ``x``
    """
    x = cache
    dout = _array("dout", dout)
    _same_shape("dout", dout, x.shape, "the ReLU's input")
    return np.where(x > 0, dout, np.zeros((), dtype=dout.dtype))


def affine_relu_forward(x, w, b):
    """An affine layer followed by a ReLU; returns ``(out, cache)``."""
    a, fc_cache = affine_forward(x, w, b)
    out, relu_cache = relu_forward(a)
    return out, (fc_cache, relu_cache)


def affine_relu_backward(dout, cache, *, input_grad=True):
    """Backward pass of :func:`affine_relu_forward`; returns ``(dx, dw, db)``.

    ``input_grad=False`` skips ``dx`` (see :func:`affine_backward`).
    """
    fc_cache, relu_cache = cache
    return affine_backward(relu_backward(dout, relu_cache), fc_cache, input_grad=input_grad)


def softmax_loss(x, y):
    """Softmax cross-entropy of class scores, and its gradient.

    Parameters
    ----------
    x : array_like, shape (N, C)
        Scores, ``x[i, j]`` for example ``i`` and class ``j``.
    y : array_like, shape (N,)
        Integer labels in ``[0, C)``.

    Returns
    -------
    loss : float
        ``mean_i(logsumexp(x[i]) - x[i, y[i]])``, computed with the max shift
        so no finite score overflows.
    dx : ndarray, shape (N, C), dtype of ``x`` (float64 for integer scores)
        ``(softmax(x) - onehot(y)) / N``.

    Raises
    ------
    ValueError
        For an empty batch, ``y`` of the wrong length, or labels outside
        ``[0, C)``.
    TypeError
        If ``y`` does not hold integers.
    """
    x = _array("x", x, 2)
    y = np.asarray(y)
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise TypeError(f"y must be a 1-D array of integer labels, got {y.dtype} of shape {y.shape}")
    N, C = x.shape
    if y.shape[0] != N:
        raise ValueError(f"y has {y.shape[0]} labels but x has {N} rows of scores")
    if N == 0 or C == 0:
        raise ValueError(f"x must have at least one example and one class, got shape {x.shape}")
    if y.min() < 0 or y.max() >= C:
        raise ValueError(f"y must hold labels in [0, C) = [0, {C}), found {y.min() if y.min() < 0 else y.max()}")
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    rows = np.arange(N)
    shifted = x - x.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    total = exp.sum(axis=1)
    loss = float(np.sum(np.log(total) - shifted[rows, y], dtype=np.float64)) / N
    dx = exp / total[:, None]
    dx[rows, y] -= 1
    dx /= N
    return loss, dx
