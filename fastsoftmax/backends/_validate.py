"""The one place where inputs to ``softmax_loss`` are checked and prepared.

Design note
-----------
Every backend receives what :func:`prepare` returns and nothing else, so a
kernel may assume: ``W`` is (D, C) and ``X`` is (N, D) of one working float
dtype, ``y`` is a C-contiguous ``intp`` array of N labels, ``reg`` is a
finite Python float ``>= 0``, and the batch has at least one row.  The
optional parts of the contract arrive ready too: ``b`` is None or a finite
C-contiguous (C,) bias of the working dtype; ``rows`` is None (the batch is
all of X, in order) or a C-contiguous ``intp`` array of indices in
``[0, N)`` (negative ones already wrapped, repeats allowed), and then only
the labels ``y[rows]`` are known to be in ``[0, C)``; ``out`` is None or a
writable C-contiguous (D, C) array of the working dtype that shares no
memory with any input.

What this module deliberately does *not* do:

* It never copies ``X`` when ``X`` already has the working dtype, whatever its
  layout: each backend decides whether a layout is worth a copy.  ``X`` is the
  one array large enough to matter (N x D), so it is never cast either when
  it already has the working dtype.
* It does not scan ``X`` for NaN or inf: that would be a second pass over the
  largest array.  :func:`check_result` detects a non-finite result after the
  kernel ran and only then looks for the culprit, so the error still names it.

``W`` is small (D x C), so it is checked for non-finite values up front, and
it is handed to kernels in one canonical form: C-contiguous and writable
(copied when it is not; the copy costs microseconds).  Numba compiles one
specialization per array type it sees (layout C/F/A times read-only or not);
each takes ~10 s to compile, so canonicalizing W keeps a user's first call
with a transposed or memory-mapped W, and a fresh test run, from paying for
up to five extra compilations per dtype.
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import NamedTuple

import numpy as np

__all__ = [
    "Problem",
    "prepare",
    "check_result",
    "working_dtype",
    "check_data",
    "check_labels",
    "row_indices",
    "rebatch",
    "integer",
    "real",
    "NetProblem",
    "prepare_net",
    "check_net_result",
    "NET_PARAMS",
]


class Problem(NamedTuple):
    """Validated inputs, in the form every backend kernel expects.

    The batch is ``X[rows]`` with labels ``y[rows]`` (all of X when ``rows``
    is None); its size is :attr:`n`.

    Attributes
    ----------
    W : ndarray, shape (D, C), dtype float32 or float64, C-contiguous, writable
    X : ndarray, shape (N, D), same dtype as ``W`` (any memory layout)
    y : ndarray, shape (N,), dtype intp, C-contiguous; values in [0, C) for
        the rows of the batch
    reg : float, finite and >= 0
    b : ndarray, shape (C,), dtype of ``W``, C-contiguous, finite; or None
    rows : ndarray, shape (n,), dtype intp, C-contiguous, values in [0, N); or None
    out : ndarray, shape (D, C), dtype of ``W``, C-contiguous, writable; or None
    """

    W: np.ndarray
    X: np.ndarray
    y: np.ndarray
    reg: float
    b: np.ndarray | None = None
    rows: np.ndarray | None = None
    out: np.ndarray | None = None

    @property
    def n(self) -> int:
        """Number of examples in the batch (the loss is a mean over them)."""
        return self.X.shape[0] if self.rows is None else self.rows.shape[0]

    @property
    def args(self):
        """``(W, X, y, reg)``: the four arguments every implementation takes."""
        return self.W, self.X, self.y, self.reg


def _float_kind(name, a):
    """Raise TypeError unless ``a``'s dtype is a real number type we can use."""
    dt = a.dtype
    # By kind, not issubdtype: NumPy counts timedelta64 as an integer type.
    if dt.kind not in "fiu":
        raise TypeError(
            f"{name} must be an array of real numbers (float32 or float64; integers are "
            f"cast to float64), got dtype {dt}"
        )
    if not np.can_cast(dt, np.float64, casting="safe"):
        raise TypeError(
            f"{name} has dtype {dt}, which cannot be cast to float64 without losing "
            "precision; pass float32 or float64"
        )


def working_dtype(W_dtype, X_dtype) -> np.dtype:
    """The dtype the computation runs in: float32 only if both inputs are float32.

    float16 is promoted to float32; integers and mixed float32/float64 compute
    in float64.
    """
    small = (np.dtype(np.float32), np.dtype(np.float16))
    if np.dtype(W_dtype) in small and np.dtype(X_dtype) in small:
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def _as_array(name, a):
    if isinstance(a, np.ndarray):
        return a
    try:
        return np.asarray(a)
    except Exception as exc:  # ragged lists and the like; NumPy's words are in the chain
        raise TypeError(
            f"{name} must be array-like (a rectangular nested sequence of numbers), "
            f"got a {type(a).__name__} NumPy cannot turn into an array"
        ) from exc


def prepare(W, X, y, reg, b=None, rows=None, out=None) -> Problem:
    """Check the arguments of ``softmax_loss`` and return them ready for a kernel.

    Parameters
    ----------
    W : array_like, shape (D, C)
        Weights, real numbers.
    X : array_like, shape (N, D)
        Data, one example per row.
    y : array_like, shape (N,)
        Integer class labels in ``[0, C)`` (only those of ``rows`` are
        checked when ``rows`` is given).
    reg : float
        L2 regularisation strength, finite and ``>= 0``.
    b : array_like, shape (C,), optional
        Bias added to every row's scores; not regularised.
    rows : array_like of int, shape (n,), optional
        The batch: indices of rows of X (and labels of y), any order,
        repeats allowed, negative ones counted from the end as in NumPy.
    out : ndarray, shape (D, C), optional
        Where to write the gradient: C-contiguous, writable, of the working
        dtype, sharing no memory with the inputs.

    Returns
    -------
    Problem
        Never a view that could write to the caller's arrays: arrays are
        returned as they are (kernels only read them) or as new copies.

    Raises
    ------
    TypeError
        For arrays of the wrong kind (complex, object, bool, float or bool
        labels or row indices), a non-numeric ``reg``, or an ``out`` that is
        not a NumPy array of the working dtype.
    ValueError
        For wrong dimensions, mismatched shapes, empty batches, labels out of
        range, a negative or non-finite ``reg``, non-finite values in ``W`` or
        ``b``, or an ``out`` of the wrong shape or layout or that overlaps an
        input.
    IndexError
        For row indices out of range for X.
    """
    W = _as_array("W", W)
    X = _as_array("X", X)
    y = _as_array("y", y)
    N, D = check_data(X, y, W, empty_ok=rows is not None)
    C = W.shape[1]
    reg = real(reg, "reg")

    if rows is not None:
        rows = _rows(rows, N)
    check_labels(y if rows is None else y[rows], C)  # with rows, a small gather: n labels

    dtype = working_dtype(W.dtype, X.dtype)
    # W is small: cast it, and copy it into one canonical form (C-contiguous,
    # writable) unless it already is; then check it.
    W = W.astype(dtype, copy=False)
    if not (W.flags.c_contiguous and W.flags.writeable):
        W = np.array(W, dtype=dtype, order="C", copy=True)
    if not np.isfinite(W).all():
        raise ValueError("W contains NaN or inf; weights must be finite")
    # X is large: a cast only when it must, never a layout change here.
    X = X.astype(dtype, copy=False)
    y = np.ascontiguousarray(y, dtype=np.intp)
    if b is not None:
        b = _bias(b, C, dtype)
    if out is not None:
        _check_out(out, (D, C), dtype, W, X, y, b, rows)
    return Problem(W, X, y, reg, b, rows, out)


def rebatch(problem: Problem, rows) -> Problem:
    """``problem`` with another batch ``rows`` of the same X and y: only the batch is checked.

    For a caller that validated ``problem`` with :func:`prepare` once and
    now runs it on one batch after another (the training step,
    :class:`fastsoftmax.training.sgd.SGDStep`): W, X, y, reg, b and out are
    taken as they were validated; what can change from batch to batch is
    checked as :func:`prepare` checks it, with the same errors: the indices
    (integers, 1-D, not empty, in range, negative ones wrapped) and the
    batch's labels (in ``[0, C)``, read now, so a label changed since
    ``prepare`` is still refused before a kernel indexes with it).

    Parameters
    ----------
    problem : Problem
        Returned by :func:`prepare` (with ``rows`` given or not).
    rows : array_like of int, shape (n,)

    Returns
    -------
    Problem
    """
    W, X, y, reg, b, _, out = problem
    # The usual batch (a new intp array, in range) in one compiled call;
    # anything else, or anything wrong, through the checks that name it.
    compiled = _compiled_batch_check()
    if not (compiled is not None and type(rows) is np.ndarray and rows.dtype == np.intp
            and rows.ndim == 1 and rows.shape[0] and rows.flags.c_contiguous
            and compiled(rows, y, W.shape[1])):
        rows = _rows(rows, X.shape[0])
        check_labels(y[rows], W.shape[1])
    return Problem(W, X, y, reg, b, rows, out)  # not _replace: 3 us per step, measured


@functools.cache
def _compiled_batch_check():
    """``_cython_kernel.batch_in_range``, or None without the extension.

    Loaded at the first :func:`rebatch`, not at import: ``import
    fastsoftmax`` loads neither Numba nor the extension.
    """
    try:
        from ._cython_kernel import batch_in_range
    except ImportError:  # pragma: no cover - a build without the extension
        return None
    return batch_in_range


def check_data(X, y, W=None, *, empty_ok=False):
    """Check the shapes and dtypes of ``X``, ``y`` (and ``W``) without reading their values.

    The part of :func:`prepare` that needs only ``ndim``, ``shape`` and
    ``dtype``, so it also serves arrays that are not in memory (Dask) and
    callers that have no ``W`` yet (a classifier before its first step):
    one set of messages for every entry point.

    Parameters
    ----------
    X : array, shape (N, D)
        Anything with ``ndim``, ``shape`` and ``dtype``.
    y : array, shape (N,)
        Integer labels (their values are checked by :func:`check_labels`).
    W : array, shape (D, C), optional
    empty_ok : bool
        Allow N == 0 (when a batch of ``rows`` is chosen separately).

    Returns
    -------
    (N, D) : tuple of int

    Raises
    ------
    TypeError
        For non-real ``X`` or ``W``, or labels that are not integers.
    ValueError
        For wrong dimensions, mismatched shapes, no classes, or no rows.
    """
    if W is not None and W.ndim != 2:
        raise ValueError(f"W must be 2-D with shape (D, C), got {W.ndim}-D array of shape {W.shape}")
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D with shape (N, D), got {X.ndim}-D array of shape {X.shape}")
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D with shape (N,), got {y.ndim}-D array of shape {y.shape}")
    if W is not None:
        _float_kind("W", W)
    _float_kind("X", X)
    N, D = X.shape
    if W is not None:
        Dw, C = W.shape
        if Dw != D:
            raise ValueError(
                f"W has {Dw} rows but X has {D} columns: W must be (D, C) = ({D}, C) for X of shape {X.shape}"
            )
        if C == 0:
            raise ValueError(f"W must have at least one column (class), got shape {W.shape}")
    if y.shape[0] != N:
        raise ValueError(f"y has {y.shape[0]} labels but X has {N} rows: y must have shape ({N},)")
    if not empty_ok and N == 0:
        raise ValueError("X has no rows (N == 0): the loss is a mean over examples and needs N >= 1")
    if y.dtype.kind not in "iu":  # not bool, not timedelta64 (an "integer" to NumPy)
        raise TypeError(f"y must hold integer class labels, got dtype {y.dtype}")
    return N, D


def check_labels(y, C=None):
    """Check that integer labels ``y`` lie in ``[0, C)`` (only ``>= 0`` when C is None).

    Parameters
    ----------
    y : ndarray, shape (n,), integer dtype, n >= 1
    C : int, optional
        Number of classes; None when it is not known yet (it will be
        ``max(y) + 1``).

    Raises
    ------
    ValueError
        Naming the first offending bound's label.
    """
    lo, hi = int(y.min()), int(y.max())
    if C is None:
        if lo < 0:
            raise ValueError(f"y must hold labels >= 0 (class indices), found label {lo}")
    elif lo < 0 or hi >= C:
        bad = lo if lo < 0 else hi
        raise ValueError(f"y must hold labels in [0, C) = [0, {C}), found label {bad}")


def real(value, name, *, positive=False):
    """``value`` as a finite Python float ``>= 0`` (``> 0`` if ``positive``), or a clear error.

    The one check of real-number arguments (``reg``, learning rates).

    Raises
    ------
    TypeError
        If ``value`` is not a real number (bools, strings, arrays, complex).
    ValueError
        If it is NaN, infinite or out of range.
    """
    bound = "> 0" if positive else ">= 0"
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number {bound}, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value) or (value <= 0 if positive else value < 0):
        raise ValueError(f"{name} must be a finite number {bound}, got {value}")
    return value


def row_indices(rows, N):
    """Row indices as a C-contiguous intp array in ``[0, N)``, as ``prepare`` takes ``rows``.

    Negative indices count from the end, as in NumPy (a new array: the
    caller's is never changed).

    Raises
    ------
    TypeError
        For indices that are not integers.
    ValueError
        For indices that are not 1-D, or none at all.
    IndexError
        For an index out of range for N rows.
    """
    return _rows(rows, N)


def integer(value, name, minimum=None):
    """``value`` as a Python int, or a clear error naming ``name``.

    The one check of integer arguments (thread counts, sizes, seeds, steps):
    bools are refused, NumPy integers accepted, ``minimum`` enforced.

    Raises
    ------
    TypeError
        If ``value`` is not an integer.
    ValueError
        If it is below ``minimum``.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return value


def _rows(rows, N):
    """Row indices as a C-contiguous intp array in [0, N): negatives wrapped, never in place."""
    rows = _as_array("rows", rows)
    if rows.ndim != 1:
        raise ValueError(f"rows must be 1-D with shape (n,), got {rows.ndim}-D array of shape {rows.shape}")
    if rows.dtype.kind not in "iu":
        raise TypeError(f"rows must hold integer row indices, got dtype {rows.dtype}")
    if rows.shape[0] == 0:
        raise ValueError("rows is empty: the loss is a mean over the batch and needs at least one row")
    lo, hi = int(rows.min()), int(rows.max())
    if lo < -N or hi >= N:
        bad = lo if lo < -N else hi
        raise IndexError(f"rows holds index {bad}, out of range for X with {N} rows")
    rows = np.ascontiguousarray(rows, dtype=np.intp)
    if lo < 0:
        rows = np.where(rows < 0, rows + N, rows)  # a new array: the caller's is never changed
    return rows


def _bias(b, C, dtype):
    """The bias as a finite C-contiguous (C,) array of the working dtype."""
    b = _as_array("b", b)
    if b.ndim != 1 or b.shape[0] != C:
        raise ValueError(f"b must have shape (C,) = ({C},), one bias per class, got shape {b.shape}")
    _float_kind("b", b)
    b = np.ascontiguousarray(b, dtype=dtype)
    if not np.isfinite(b).all():
        raise ValueError("b contains NaN or inf; the bias must be finite")
    return b


def _check_out(out, shape, dtype, *inputs):
    """Refuse an ``out`` the kernels cannot write the gradient into as it is."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a NumPy array of shape {shape} and dtype {dtype}, got {type(out).__name__}")
    if out.dtype != dtype:
        raise TypeError(f"out must have the working dtype {dtype} (that of the gradient), got {out.dtype}")
    if out.shape != shape:
        raise ValueError(f"out must have shape (D, C) = {shape}, got {out.shape}")
    if not (out.flags.c_contiguous and out.flags.writeable):
        raise ValueError("out must be C-contiguous and writable")
    if any(a is not None and np.may_share_memory(out, a) for a in inputs):
        raise ValueError("out shares memory with an input (W, X, y, b or rows); pass a separate array")


def check_result(problem: Problem, loss, dW, db=None):
    """Turn a kernel's raw output into the public result, or explain a non-finite one.

    Parameters
    ----------
    problem : Problem
        What the kernel was given.
    loss : float-like
    dW : ndarray, shape (D, C)
    db : ndarray, shape (C,), or None
        The bias gradient, when ``problem.b`` was given.

    Returns
    -------
    loss : float
    dW : ndarray, shape (D, C), dtype of ``problem.W`` (``problem.out`` if given)
    db : ndarray, shape (C,), dtype of ``problem.W``
        Only when ``problem.b`` was given.

    Raises
    ------
    ValueError
        If ``X`` holds NaN or inf (found only now, so a finite ``X`` costs no
        extra pass).
    FloatingPointError
        If inputs were finite but the result overflowed (scores beyond the
        dtype's range).
    """
    loss = float(loss)
    result = (loss, dW) if problem.b is None else (loss, dW, db)
    if math.isfinite(loss) and np.isfinite(dW).all() and (db is None or np.isfinite(db).all()):
        return result
    X = problem.X if problem.rows is None else problem.X[problem.rows]
    if not np.isfinite(X).all():
        raise ValueError("X contains NaN or inf; data must be finite")
    raise FloatingPointError(
        f"softmax loss overflowed in {problem.W.dtype}: the scores X @ W exceed the dtype's "
        "range; scale X or W down, or use float64"
    )


# --- the two-layer net's contract -------------------------------------------------

#: Parameter names of the two-layer net, in kernel order, and their shapes.
NET_PARAMS = ("W1", "b1", "W2", "b2")


class NetProblem(NamedTuple):
    """Validated inputs of a two-layer net kernel (affine - ReLU - affine - softmax).

    Attributes
    ----------
    W1 : ndarray, shape (D, H), float32 or float64, C-contiguous, writable
    b1 : ndarray, shape (H,), dtype of ``W1``, C-contiguous
    W2 : ndarray, shape (H, C), dtype of ``W1``, C-contiguous, writable
    b2 : ndarray, shape (C,), dtype of ``W1``, C-contiguous
    X : ndarray, shape (N, D), dtype of ``W1`` (any memory layout)
    y : ndarray, shape (N,), dtype intp, C-contiguous, values in [0, C)
    reg : float, finite and >= 0
    """

    W1: np.ndarray
    b1: np.ndarray
    W2: np.ndarray
    b2: np.ndarray
    X: np.ndarray
    y: np.ndarray
    reg: float


def prepare_net(params, X, y, reg) -> NetProblem:
    """Check the arguments of a two-layer net loss and return them ready for a kernel.

    The same rules as :func:`prepare` (and the same messages for ``X``, ``y``
    and ``reg``), applied to the four parameters: ``W1`` (D, H), ``b1``
    (H,), ``W2`` (H, C), ``b2`` (C,).  The working dtype is float32 only if
    ``X`` and all four parameters are float32; parameters are small and are
    cast and made C-contiguous (copied when needed, never written to).

    Parameters
    ----------
    params : mapping
        ``{"W1": ..., "b1": ..., "W2": ..., "b2": ...}``.
    X : array_like, shape (N, D)
    y : array_like, shape (N,), integer labels in [0, C)
    reg : float

    Returns
    -------
    NetProblem

    Raises
    ------
    TypeError, ValueError
        Naming the argument (``params['W2']``, ``X``, ...) and what was expected.
    """
    try:
        missing = [k for k in NET_PARAMS if k not in params]
    except TypeError:
        raise TypeError(f"params must be a dict with keys {list(NET_PARAMS)}, got {type(params).__name__}") from None
    if missing:
        raise ValueError(f"params is missing {missing}; a two-layer net needs {list(NET_PARAMS)}")
    P = {k: _as_array(f"params[{k!r}]", params[k]) for k in NET_PARAMS}
    for k in NET_PARAMS:
        _float_kind(f"params[{k!r}]", P[k])
    W1, b1, W2, b2 = (P[k] for k in NET_PARAMS)
    if W1.ndim != 2:
        raise ValueError(f"params['W1'] must be 2-D with shape (D, H), got shape {W1.shape}")
    if W2.ndim != 2:
        raise ValueError(f"params['W2'] must be 2-D with shape (H, C), got shape {W2.shape}")
    D, H = W1.shape
    if H == 0:
        raise ValueError(f"params['W1'] must have at least one column (hidden unit), got shape {W1.shape}")
    if b1.shape != (H,):
        raise ValueError(f"params['b1'] must have shape (H,) = ({H},) to match params['W1'] {W1.shape}, got {b1.shape}")
    if W2.shape[0] != H:
        raise ValueError(
            f"params['W2'] has {W2.shape[0]} rows but params['W1'] has {H} columns: W2 must be ({H}, C)"
        )
    C = W2.shape[1]
    if C == 0:
        raise ValueError(f"params['W2'] must have at least one column (class), got shape {W2.shape}")
    if b2.shape != (C,):
        raise ValueError(f"params['b2'] must have shape (C,) = ({C},) to match params['W2'] {W2.shape}, got {b2.shape}")
    X = _as_array("X", X)
    y = _as_array("y", y)
    if X.ndim == 2 and X.shape[1] != D:
        raise ValueError(
            f"params['W1'] has {D} rows but X has {X.shape[1]} columns: W1 must be ({X.shape[1]}, H) "
            f"for X of shape {X.shape}"
        )
    # X, y and reg: the linear contract's checks and messages.
    check_data(X, y)
    check_labels(y, C)
    reg = real(reg, "reg")
    dtype = np.dtype(np.float32)
    if any(working_dtype(a.dtype, a.dtype) != dtype for a in (W1, b1, W2, b2, X)):
        dtype = np.dtype(np.float64)
    out = []
    for k, a in zip(NET_PARAMS, (W1, b1, W2, b2)):
        a = a.astype(dtype, copy=False)
        if not (a.flags.c_contiguous and a.flags.writeable):
            a = np.array(a, dtype=dtype, order="C", copy=True)
        if not np.isfinite(a).all():
            raise ValueError(f"params[{k!r}] contains NaN or inf; parameters must be finite")
        out.append(a)
    return NetProblem(*out, X.astype(dtype, copy=False), np.ascontiguousarray(y, dtype=np.intp), reg)


def check_net_result(problem: NetProblem, loss, grads):
    """:func:`check_result` for a net kernel's ``(loss, (dW1, db1, dW2, db2))``.

    Returns
    -------
    loss : float
    grads : dict of str to ndarray
        ``{"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}``, shapes and dtype of
        the parameters.

    Raises
    ------
    ValueError
        If ``X`` holds NaN or inf.
    FloatingPointError
        If finite inputs gave a non-finite result.
    """
    loss = float(loss)
    if math.isfinite(loss) and all(np.isfinite(g).all() for g in grads):
        return loss, dict(zip(NET_PARAMS, grads))
    if not np.isfinite(problem.X).all():
        raise ValueError("X contains NaN or inf; data must be finite")
    raise FloatingPointError(
        f"two-layer net loss overflowed in {problem.W1.dtype}: hidden activations or scores exceed "
        "the dtype's range; scale X or the weights down, or use float64"
    )
