"""Bad input: every backend raises the same documented error, and changes nothing.

``BAD_INPUTS`` is the table docs/robustness.md's "Bad input" section documents:
one row per kind of mistake, with the exception type and the words its
message must contain.  Each row runs against every backend.  The documented
table is generated from it (``python tests/test_validation.py`` rewrites it),
and a test fails if the two differ, so the documentation cannot drift.
"""

import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import pytest

from fastsoftmax import backends
from fastsoftmax.testing import random_problem


def good(n=6, d=4, c=3, dtype=np.float64):
    W, X, y = random_problem(np.random.default_rng(0), n, d, c, dtype=dtype)
    return W, X, y, 0.1


#: The keyword arguments of the contract (``b``, ``rows``, ``out``).
OPTIONS = ("b", "rows", "out")


def with_(**changes):
    """A builder: a good problem with some arguments replaced or options added."""

    def build():
        W, X, y, reg = good()
        args = {"W": W, "X": X, "y": y, "reg": reg}
        for k, v in changes.items():
            args[k] = v(args) if callable(v) else v
        options = {k: args[k] for k in OPTIONS if k in args}
        return args["W"], args["X"], args["y"], args["reg"], options

    return build


def _set(name, value, dtype=None):
    """A change: argument ``name`` (cast to ``dtype`` if given) with one entry set to ``value``."""

    def change(args):
        a = args[name].astype(dtype or args[name].dtype)
        a[1, 1] = value
        return a

    return change


def _cast(name, dtype):
    return lambda args: args[name].astype(dtype)


class Bad(NamedTuple):
    """One row of the bad-input table: a mistake, and what every backend must raise for it."""

    id: str
    what: str  # the mistake, in words, for the documented table
    build: Callable  # () -> (W, X, y, reg, options)
    exc: type
    match: str  # a regex the message must contain


F32 = np.float32

#: The table docs/robustness.md's "Bad input" section is generated from (see ``main``).
BAD_INPUTS = [
    # shapes
    Bad("W-1d", "W is 1-D", with_(W=lambda a: a["W"][:, 0]), ValueError, r"W must be 2-D"),
    Bad("W-3d", "W is 3-D", with_(W=lambda a: a["W"][None]), ValueError, r"W must be 2-D"),
    Bad("X-1d", "X is 1-D (one example without the batch axis)", with_(X=lambda a: a["X"][0]), ValueError, r"X must be 2-D"),
    Bad("X-3d", "X is 3-D (images not flattened)", with_(X=lambda a: a["X"][None]), ValueError, r"X must be 2-D"),
    Bad("X-none", "X is None", with_(X=None), ValueError, r"X must be 2-D"),
    Bad("y-2d", "y is a column (N, 1)", with_(y=lambda a: a["y"][:, None]), ValueError, r"y must be 1-D"),
    Bad("y-scalar", "y is a scalar", with_(y=3), ValueError, r"y must be 1-D"),
    Bad("W-X-mismatch", "W has the wrong number of rows for X", with_(W=lambda a: a["W"][:-1]), ValueError, r"W has 3 rows but X has 4 columns"),
    Bad("W-transposed", "W passed as (C, D)", with_(W=lambda a: a["W"].T), ValueError, r"W has 3 rows but X has 4 columns"),
    Bad("y-X-mismatch", "y has the wrong length", with_(y=lambda a: a["y"][:-1]), ValueError, r"y has 5 labels but X has 6 rows"),
    Bad("N-zero", "empty batch, N == 0", with_(X=lambda a: a["X"][:0], y=lambda a: a["y"][:0]), ValueError, r"N == 0"),
    Bad("C-zero", "no classes, C == 0", with_(W=lambda a: a["W"][:, :0]), ValueError, r"at least one column"),
    # labels
    Bad("label-too-big", "a label >= C", with_(y=np.array([0, 1, 2, 3, 0, 1])), ValueError, r"labels in \[0, C\) = \[0, 3\), found label 3"),
    Bad("label-huge-uint64", "a huge uint64 label", with_(y=np.array([0, 1, 2**64 - 1, 0, 1, 2], dtype=np.uint64)), ValueError, r"found label 18446744073709551615"),
    Bad("label-negative", "a negative label", with_(y=np.array([0, 1, -1, 2, 0, 1])), ValueError, r"found label -1"),
    Bad("label-float", "float labels (even integral ones)", with_(y=np.array([0.0, 1, 2, 0, 1, 2])), TypeError, r"y must hold integer class labels"),
    Bad("label-bool", "bool labels", with_(y=np.array([True, False] * 3)), TypeError, r"y must hold integer class labels"),
    Bad("label-string", "string labels", with_(y=np.array(list("abcabc"))), TypeError, r"y must hold integer class labels"),
    Bad("label-object", "labels in an object array", with_(y=np.array([0, 1, 2, 0, 1, 2], dtype=object)), TypeError, r"y must hold integer class labels"),
    Bad("label-complex", "complex labels", with_(y=np.arange(6) % 3 + 0j), TypeError, r"y must hold integer class labels"),
    Bad("label-timedelta", "timedelta64 labels", with_(y=lambda a: a["y"].astype("timedelta64[s]")), TypeError, r"y must hold integer class labels"),
    Bad("label-ragged", "labels that are not a flat sequence", with_(y=[[0], [1, 2]]), TypeError, r"y must be array-like"),
    # reg
    Bad("reg-negative", "negative reg", with_(reg=-1.0), ValueError, r"reg must be a finite number >= 0"),
    Bad("reg-nan", "NaN reg", with_(reg=float("nan")), ValueError, r"reg must be a finite number >= 0"),
    Bad("reg-inf", "infinite reg", with_(reg=float("inf")), ValueError, r"reg must be a finite number >= 0"),
    Bad("reg-string", "reg as a string", with_(reg="0.1"), TypeError, r"reg must be a real number"),
    Bad("reg-none", "reg is None", with_(reg=None), TypeError, r"reg must be a real number"),
    Bad("reg-bool", "reg is a bool", with_(reg=True), TypeError, r"reg must be a real number"),
    Bad("reg-complex", "complex reg", with_(reg=0.1 + 0j), TypeError, r"reg must be a real number"),
    Bad("reg-array", "reg is an array", with_(reg=np.array([0.1, 0.2])), TypeError, r"reg must be a real number"),
    # non-finite values
    Bad("W-nan", "NaN in W (float64)", with_(W=_set("W", np.nan)), ValueError, r"W contains NaN or inf"),
    Bad("W-inf", "inf in W (float64)", with_(W=_set("W", np.inf)), ValueError, r"W contains NaN or inf"),
    Bad("W-nan-f32", "NaN in W (float32)", with_(W=_set("W", np.nan, F32), X=_cast("X", F32)), ValueError, r"W contains NaN or inf"),
    Bad("W-inf-f32", "-inf in W (float32)", with_(W=_set("W", -np.inf, F32), X=_cast("X", F32)), ValueError, r"W contains NaN or inf"),
    Bad("X-nan", "NaN in X (float64)", with_(X=_set("X", np.nan)), ValueError, r"X contains NaN or inf"),
    Bad("X-inf", "-inf in X (float64)", with_(X=_set("X", -np.inf)), ValueError, r"X contains NaN or inf"),
    Bad("X-nan-f32", "NaN in X (float32)", with_(W=_cast("W", F32), X=_set("X", np.nan, F32)), ValueError, r"X contains NaN or inf"),
    Bad("X-inf-f32", "inf in X (float32)", with_(W=_cast("W", F32), X=_set("X", np.inf, F32)), ValueError, r"X contains NaN or inf"),
    Bad("X-inf-mixed", "inf in a float32 X with float64 W", with_(X=_set("X", np.inf, F32)), ValueError, r"X contains NaN or inf"),
    # dtypes
    Bad("W-complex", "complex W", with_(W=_cast("W", complex)), TypeError, r"W must be an array of real numbers"),
    Bad("X-complex", "complex X", with_(X=_cast("X", complex)), TypeError, r"X must be an array of real numbers"),
    Bad("X-complex64", "complex64 X", with_(X=_cast("X", np.complex64)), TypeError, r"X must be an array of real numbers"),
    Bad("W-object", "W as an object array", with_(W=_cast("W", object)), TypeError, r"W must be an array of real numbers"),
    Bad("X-object", "X as an object array", with_(X=_cast("X", object)), TypeError, r"X must be an array of real numbers"),
    Bad("W-bool", "bool W", with_(W=lambda a: a["W"] > 0), TypeError, r"W must be an array of real numbers"),
    Bad("X-bool", "bool X", with_(X=lambda a: a["X"] > 0), TypeError, r"X must be an array of real numbers"),
    Bad("W-string", "W of strings", with_(W=_cast("W", str)), TypeError, r"W must be an array of real numbers"),
    Bad("X-string", "X of strings", with_(X=_cast("X", str)), TypeError, r"X must be an array of real numbers"),
    Bad("X-bytes", "X of bytes", with_(X=_cast("X", "S8")), TypeError, r"X must be an array of real numbers"),
    Bad("X-datetime", "X of datetime64", with_(X=lambda a: a["X"].astype(np.int64).astype("datetime64[s]")), TypeError, r"X must be an array of real numbers"),
    Bad("X-timedelta", "X of timedelta64", with_(X=lambda a: a["X"].astype(np.int64).astype("timedelta64[s]")), TypeError, r"X must be an array of real numbers"),
    Bad("X-void", "X of raw bytes (void)", with_(X=lambda a: np.zeros(a["X"].shape, dtype="V8")), TypeError, r"X must be an array of real numbers"),
    Bad("X-structured", "X as a structured array", with_(X=lambda a: np.zeros(a["X"].shape, dtype=[("a", "f8")])), TypeError, r"X must be an array of real numbers"),
    Bad("W-longdouble", "long double W", with_(W=_cast("W", np.longdouble)), TypeError, r"cannot be cast to float64"),
    Bad("X-longdouble", "long double X", with_(X=_cast("X", np.longdouble)), TypeError, r"cannot be cast to float64"),
    Bad("X-ragged", "X a ragged nested list", with_(X=[[1.0, 2.0], [3.0]]), TypeError, r"X must be array-like"),
    Bad("W-ragged", "W a ragged nested list", with_(W=[[1.0, 2.0], [3.0]]), TypeError, r"W must be array-like"),
    # the bias b
    Bad("b-length", "b with one value too few", with_(b=np.zeros(2)), ValueError, r"b must have shape \(C,\) = \(3,\)"),
    Bad("b-2d", "b as a (1, C) row", with_(b=np.zeros((1, 3))), ValueError, r"b must have shape \(C,\)"),
    Bad("b-nan", "NaN in b", with_(b=np.array([0.0, np.nan, 0.0])), ValueError, r"b contains NaN or inf"),
    Bad("b-complex", "complex b", with_(b=np.zeros(3, dtype=complex)), TypeError, r"b must be an array of real numbers"),
    # the batch rows
    Bad("rows-float", "float row indices", with_(rows=np.array([0.0, 1.0])), TypeError, r"rows must hold integer row indices"),
    Bad("rows-bool", "a boolean mask as rows", with_(rows=np.ones(6, dtype=bool)), TypeError, r"rows must hold integer row indices"),
    Bad("rows-2d", "rows as a column", with_(rows=np.array([[0], [1]])), ValueError, r"rows must be 1-D"),
    Bad("rows-too-big", "a row index >= N", with_(rows=np.array([0, 6])), IndexError, r"rows holds index 6, out of range for X with 6 rows"),
    Bad("rows-too-negative", "a row index < -N", with_(rows=np.array([-7, 0])), IndexError, r"rows holds index -7, out of range"),
    Bad("rows-empty", "an empty batch of rows", with_(rows=np.array([], dtype=int)), ValueError, r"rows is empty"),
    Bad("rows-bad-label", "a chosen row has a label >= C", with_(y=np.array([0, 1, 2, 3, 0, 1]), rows=np.array([3])), ValueError, r"found label 3"),
    # the output buffer out
    Bad("out-shape", "out of the wrong shape", with_(out=np.empty((3, 4))), ValueError, r"out must have shape \(D, C\) = \(4, 3\)"),
    Bad("out-dtype", "out of another dtype", with_(out=np.empty((4, 3), dtype=np.float32)), TypeError, r"out must have the working dtype float64"),
    Bad("out-list", "out as a list", with_(out=[[0.0] * 3] * 4), TypeError, r"out must be a NumPy array"),
    Bad("out-fortran", "out in Fortran order", with_(out=np.empty((4, 3), order="F")), ValueError, r"out must be C-contiguous and writable"),
    Bad("out-is-W", "out is W itself", with_(out=lambda a: a["W"]), ValueError, r"out shares memory with an input"),
]


def raised(row, f):
    """Call ``f`` on ``row``'s inputs; return the exception it raised (or fail)."""
    W, X, y, reg, options = row.build()
    with pytest.raises(row.exc, match=row.match) as info:
        f(W, X, y, reg, **options)
    return info.value


def _cell(text):
    return str(text).replace("|", r"\|")


def bad_input_table():
    """The documented bad-input table, in Markdown, from running every row."""
    lines = ["| bad input | exception | message (for a 6 x 4 X, 3 classes) |", "|---|---|---|"]
    for row in BAD_INPUTS:
        exc = raised(row, backends.get("numpy"))
        lines.append(f"| {_cell(row.what)} | `{type(exc).__name__}` | {_cell(exc)} |")
    return "\n".join(lines) + "\n"


DOC = Path(__file__).resolve().parents[1] / "docs" / "robustness.md"
BEGIN = "<!-- bad-input table: generated by `python tests/test_validation.py`, do not edit -->\n"
END = "<!-- end of bad-input table -->\n"


def documented_table():
    text = DOC.read_text()
    if BEGIN not in text or END not in text:
        return text, None
    return text, text[text.index(BEGIN) + len(BEGIN) : text.index(END)]


@pytest.mark.parametrize("row", BAD_INPUTS, ids=[r.id for r in BAD_INPUTS])
def test_bad_input(backend, row):
    name, f = backend
    W, X, y, reg, options = row.build()
    given = (W, X, y, *options.values())
    snapshot = [np.array(a, dtype=object, copy=True) if not isinstance(a, np.ndarray) else a.copy() for a in given]
    with pytest.raises(row.exc, match=row.match):
        f(W, X, y, reg, **options)
    for before, after in zip(snapshot, given):
        if isinstance(after, np.ndarray):
            np.testing.assert_array_equal(before, after)


def test_every_backend_gives_the_documented_message():
    """The documented table is exactly what each backend raises: it cannot drift from the code."""
    _, documented = documented_table()
    assert documented is not None, f"{DOC} lacks the bad-input table; run `python tests/test_validation.py`"
    assert documented == bad_input_table(), f"{DOC}'s bad-input table is stale; run `python tests/test_validation.py`"
    for row in BAD_INPUTS:
        messages = {name: str(raised(row, backends.get(name))) for name in backends.available()}
        assert len(set(messages.values())) == 1, (row.id, messages)


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


def main():
    """Rewrite docs/robustness.md's bad-input table from :data:`BAD_INPUTS` (atomically)."""
    text, old = documented_table()
    table = bad_input_table()
    if old is None:
        sys.exit(f"{DOC} has no bad-input markers; add\n{BEGIN}{END}where the table belongs")
    new = text.replace(BEGIN + old + END, BEGIN + table + END)
    fd, tmp = tempfile.mkstemp(dir=DOC.parent, prefix=f".{DOC.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as out:
        out.write(new)
    os.chmod(tmp, DOC.stat().st_mode & 0o777)
    os.replace(tmp, DOC)
    print(f"wrote {len(BAD_INPUTS)} rows to {DOC}")


if __name__ == "__main__":
    main()


@pytest.fixture(params=["compiled", "numpy"])
def batch_check(request, monkeypatch):
    """rebatch's check of the usual batch: one compiled call, or (without the extension) NumPy's."""
    from fastsoftmax.backends import _validate

    if request.param == "numpy":
        monkeypatch.setattr(_validate, "_compiled_batch_check", lambda: None)
    elif _validate._compiled_batch_check() is None:
        pytest.skip("the Cython extension is not built")
    return request.param


def test_rebatch_gives_what_prepare_gives_for_the_new_batch(batch_check):
    """rebatch(prepare(..., rows=a), b) is prepare(..., rows=b): indices wrapped the same way."""
    from fastsoftmax.backends._validate import prepare, rebatch

    rng = np.random.default_rng(3)
    W, X, y = rng.standard_normal((6, 4)), rng.standard_normal((20, 6)), rng.integers(0, 4, 20)
    base = prepare(W, X, y, 0.5, rows=np.array([0, 1]))
    batches = (np.array([3, -1, 3, -20]), np.array([19], dtype=np.int32), [0, 5, -2],
               np.array([0, 19, 7, 7], dtype=np.intp), np.arange(20)[::-3])
    for rows in batches:
        got, want = rebatch(base, rows), prepare(W, X, y, 0.5, rows=rows)
        for name in ("W", "X", "y", "b", "out"):
            assert getattr(got, name) is getattr(base, name)
        assert got.reg == want.reg
        assert got.rows.dtype == want.rows.dtype == np.intp and got.rows.flags.c_contiguous
        np.testing.assert_array_equal(got.rows, want.rows)
        np.testing.assert_array_equal(got.rows, np.arange(20)[rows])  # negatives counted from the end


@pytest.mark.parametrize(("rows", "label", "ok"), [
    ([0, 9], 2, True),       # first and last row, last class
    ([10], 0, False),        # one past the last row
    ([-1], 0, False),        # negative: left to the Python path, which wraps it
    ([4, 3], 3, False),      # label C
    ([4, 3], -1, False),     # negative label
])
def test_the_compiled_batch_check_accepts_exactly_rows_and_labels_in_range(rows, label, ok):
    """batch_in_range says True only for indices in [0, N) whose labels are in [0, C)."""
    kernel = pytest.importorskip("fastsoftmax.backends._cython_kernel")
    y = np.zeros(10, dtype=np.intp)
    y[[3, 9]] = label
    assert kernel.batch_in_range(np.array(rows, dtype=np.intp), y, 3) is ok
