"""Numerical gradient checks, as in the CS231n ``gradient_check`` utilities.

Design note
-----------
Both functions use centred differences, ``(f(x + h) - f(x - h)) / 2h``,
whose truncation error is ``h**2 / 6`` times the third derivative and whose
rounding error is about ``eps * |f| / h``.  For the softmax loss the third
derivative in a weight scales like ``|x|**3``: with unit-scale data and
``h = 1e-5`` (the CS231n default) a right gradient agrees to ~1e-8
relative, but on mean-subtracted CIFAR-10 pixels (|x| up to ~150)
truncation dominates and leaves ~2e-7; ``h = 1e-6`` brings that to ~2e-9
(measured on the real dev batch) with rounding (~1e-10) still far below.
A wrong gradient is off by order one.

The relative error of one entry is ``|num - ana| / (|num| + |ana|)``
(0 when both are 0), the measure of the CS231n code.  Unlike that code, the
caller's ``x`` is never modified: ``f`` is evaluated on a private float64
copy that is perturbed one entry at a time.  Results are returned, and
printed only when ``verbose`` is true.
"""

from __future__ import annotations

import numpy as np

from ..backends._validate import integer

__all__ = ["eval_numerical_gradient", "grad_check_sparse", "rel_error"]


def rel_error(a, b):
    """Entry-wise relative error ``|a - b| / (|a| + |b|)``, 0 where both are 0.

    Parameters
    ----------
    a, b : array_like, same shape

    Returns
    -------
    ndarray of float64 (a 0-d array for scalars)
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    denom = np.abs(a) + np.abs(b)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, np.abs(a - b) / np.where(denom > 0, denom, 1.0), 0.0)


def _centred(f, x, ix, h):
    old = x[ix]
    x[ix] = old + h
    fxph = float(f(x))
    x[ix] = old - h
    fxmh = float(f(x))
    x[ix] = old
    return (fxph - fxmh) / (2 * h)


def eval_numerical_gradient(f, x, h=1e-5, verbose=False):
    """Numerical gradient of the scalar function ``f`` at ``x``, entry by entry.

    Costs ``2 * x.size`` calls of ``f``: use it on small problems, and
    :func:`grad_check_sparse` on large ones.

    Parameters
    ----------
    f : callable
        ``f(x) -> float`` for an array ``x`` of ``x``'s shape.
    x : array_like
        Point of evaluation; not modified (``f`` sees a float64 copy).
    h : float
        Step of the centred difference.
    verbose : bool
        Print each entry's index and numerical derivative.

    Returns
    -------
    ndarray, float64, shape of ``x``
    """
    x = np.array(x, dtype=np.float64, copy=True)
    grad = np.zeros_like(x)
    for ix in np.ndindex(x.shape):
        grad[ix] = _centred(f, x, ix, h)
        if verbose:
            print(ix, grad[ix])
    return grad


def grad_check_sparse(f, x, analytic_grad, num_checks=10, h=1e-5, seed=None, verbose=False):
    """Compare ``analytic_grad`` with centred differences at random entries.

    Parameters
    ----------
    f : callable
        ``f(x) -> float``.
    x : array_like
        Point of evaluation; not modified.
    analytic_grad : array_like, shape of ``x``
        The gradient to check.
    num_checks : int
        Number of random entries (drawn with replacement, as in CS231n).
    h : float
        Step of the centred difference.
    seed : int or None
        Seed of the entries' choice.
    verbose : bool
        Print ``numerical: ... analytic: ..., relative error: ...`` per entry.

    Returns
    -------
    ndarray, shape (num_checks,), float64
        Relative error of each checked entry (see :func:`rel_error`).
    """
    x = np.array(x, dtype=np.float64, copy=True)
    analytic_grad = np.asarray(analytic_grad)
    if analytic_grad.shape != x.shape:
        raise ValueError(f"analytic_grad has shape {analytic_grad.shape}, expected x's shape {x.shape}")
    num_checks = integer(num_checks, "num_checks", 1)
    rng = np.random.default_rng(seed)
    errors = np.empty(num_checks)
    for k in range(num_checks):
        ix = tuple(int(rng.integers(m)) for m in x.shape)
        numerical = _centred(f, x, ix, h)
        analytic = float(analytic_grad[ix])
        errors[k] = rel_error(numerical, analytic)
        if verbose:
            print(f"numerical: {numerical:f} analytic: {analytic:f}, relative error: {errors[k]:e}")
    return errors
