"""Bad input: every backend raises the same documented error, and changes nothing.

``BAD_INPUTS`` is the table the README's "Bad input" section documents: one
row per kind of mistake, with the exception type and the words its message
must contain.  Each row runs against every backend.
"""

import numpy as np
import pytest

import fastsoftmax
from fastsoftmax import backends

from fastsoftmax.testing import random_problem


def good(n=6, d=4, c=3, dtype=np.float64):
    W, X, y = random_problem(np.random.default_rng(0), n, d, c, dtype=dtype)
    return W, X, y, 0.1


def with_(**changes):
    """A builder: a good problem with some arguments replaced."""

    def build():
        W, X, y, reg = good()
        args = {"W": W, "X": X, "y": y, "reg": reg}
        for k, v in changes.items():
            args[k] = v(args) if callable(v) else v
        return args["W"], args["X"], args["y"], args["reg"]

    return build


def _nan_at(name, value):
    def change(args):
        a = args[name].copy()
        a[1, 1] = value
        return a

    return change


# (id, builder, exception, message must match)
BAD_INPUTS = [
    ("W-1d", with_(W=lambda a: a["W"][:, 0]), ValueError, r"W must be 2-D"),
    ("X-3d", with_(X=lambda a: a["X"][None]), ValueError, r"X must be 2-D"),
    ("y-2d", with_(y=lambda a: a["y"][:, None]), ValueError, r"y must be 1-D"),
    ("W-X-mismatch", with_(W=lambda a: a["W"][:-1]), ValueError, r"W has 3 rows but X has 4 columns"),
    ("y-X-mismatch", with_(y=lambda a: a["y"][:-1]), ValueError, r"y has 5 labels but X has 6 rows"),
    ("N-zero", with_(X=lambda a: a["X"][:0], y=lambda a: a["y"][:0]), ValueError, r"N == 0"),
    ("C-zero", with_(W=lambda a: a["W"][:, :0]), ValueError, r"at least one column"),
    ("label-too-big", with_(y=np.array([0, 1, 2, 3, 0, 1])), ValueError, r"labels in \[0, C\) = \[0, 3\), found label 3"),
    ("label-negative", with_(y=np.array([0, 1, -1, 2, 0, 1])), ValueError, r"found label -1"),
    ("label-float", with_(y=np.array([0.0, 1, 2, 0, 1, 2])), TypeError, r"y must hold integer class labels"),
    ("label-bool", with_(y=np.array([True, False] * 3)), TypeError, r"y must hold integer class labels"),
    ("reg-negative", with_(reg=-1.0), ValueError, r"reg must be a finite number >= 0"),
    ("reg-nan", with_(reg=float("nan")), ValueError, r"reg must be a finite number >= 0"),
    ("reg-inf", with_(reg=float("inf")), ValueError, r"reg must be a finite number >= 0"),
    ("reg-string", with_(reg="0.1"), TypeError, r"reg must be a real number"),
    ("reg-array", with_(reg=np.array([0.1, 0.2])), TypeError, r"reg must be a real number"),
    ("W-nan", with_(W=_nan_at("W", np.nan)), ValueError, r"W contains NaN or inf"),
    ("W-inf", with_(W=_nan_at("W", np.inf)), ValueError, r"W contains NaN or inf"),
    ("X-nan", with_(X=_nan_at("X", np.nan)), ValueError, r"X contains NaN or inf"),
    ("X-inf", with_(X=_nan_at("X", -np.inf)), ValueError, r"X contains NaN or inf"),
    ("W-complex", with_(W=lambda a: a["W"].astype(complex)), TypeError, r"W must be an array of real numbers"),
    ("X-complex", with_(X=lambda a: a["X"].astype(complex)), TypeError, r"X must be an array of real numbers"),
    ("X-object", with_(X=lambda a: a["X"].astype(object)), TypeError, r"X must be an array of real numbers"),
    ("X-bool", with_(X=lambda a: a["X"] > 0), TypeError, r"X must be an array of real numbers"),
    ("X-string", with_(X=lambda a: a["X"].astype(str)), TypeError, r"X must be an array of real numbers"),
    ("X-longdouble", with_(X=lambda a: a["X"].astype(np.longdouble)), TypeError, r"cannot be cast to float64"),
    ("X-ragged", with_(X=[[1.0, 2.0], [3.0]]), TypeError, r"X must be array-like"),
]


@pytest.mark.parametrize("build, exc, match", [r[1:] for r in BAD_INPUTS], ids=[r[0] for r in BAD_INPUTS])
def test_bad_input(backend, build, exc, match):
    name, f = backend
    W, X, y, reg = build()
    snapshot = [np.array(a, dtype=object, copy=True) if not isinstance(a, np.ndarray) else a.copy() for a in (W, X, y)]
    with pytest.raises(exc, match=match):
        f(W, X, y, reg)
    for before, after in zip(snapshot, (W, X, y)):
        if isinstance(after, np.ndarray):
            np.testing.assert_array_equal(before, after)


def test_overflow_is_reported_not_returned(backend):
    """Finite inputs whose scores overflow the dtype get a FloatingPointError, never inf."""
    name, f = backend
    W = np.full((2, 2), 1e200)
    W[0, 1] = -1e200
    X = np.full((3, 2), 1e200)
    y = np.array([0, 1, 0])
    with pytest.raises(FloatingPointError, match="overflowed in float64"):
        f(W, X, y, 0.0)


def test_unknown_backend_lists_the_real_ones():
    with pytest.raises(backends.BackendUnavailable, match=r"unknown backend 'fortran'.*cython.*numba.*numpy.*python"):
        backends.get("fortran")


def test_unavailable_backend_says_why(monkeypatch):
    monkeypatch.setitem(backends.BACKENDS, "ghost", "fastsoftmax.backends._no_such_module")
    with pytest.raises(backends.BackendUnavailable, match=r"'ghost' is not available here: ModuleNotFoundError"):
        backends.get("ghost")
    assert "ghost" in backends.unavailable()
    assert "ghost" not in backends.available()
    backends._errors.pop("ghost")
