"""The contract every backend keeps: same numbers as the reference, same types, no side effects."""

import math

import numpy as np
import pytest

import fastsoftmax
from fastsoftmax.testing import LAYOUTS, as_layout, compare, random_problem, relative_error, tolerance

SHAPES = [
    # (N, D, C): ordinary, single example, one class, two classes, tall, wide
    (20, 15, 4),
    (1, 7, 3),
    (13, 5, 1),
    (17, 9, 2),
    (257, 33, 10),
    (3, 70, 11),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "N{}-D{}-C{}".format(*s))
@pytest.mark.parametrize("reg", [0.0, 0.1])
def test_agrees_with_reference(backend, reference, shape, dtype, reg):
    name, f = backend
    rng = np.random.default_rng(hash((shape, reg)) % 2**32)
    W, X, y = random_problem(rng, *shape, dtype=dtype, scale=3.0)
    loss, dW = f(W, X, y, reg)
    agreement = compare((loss, dW), reference(W, X, y, reg), dtype)
    assert agreement.ok, f"{name}: {agreement}"
    assert type(loss) is float
    assert dW.shape == W.shape and dW.dtype == np.dtype(dtype)


def test_many_random_problems_float64(fast_backend, reference):
    """Random shapes and scales; float64 must match to 1e-10 (see fastsoftmax.testing)."""
    name, f = fast_backend
    rng = np.random.default_rng(1234)
    for _ in range(25):
        n, d, c = rng.integers(1, 60), rng.integers(1, 40), rng.integers(1, 12)
        W, X, y = random_problem(rng, n, d, c, scale=10 ** rng.uniform(-2, 2))
        reg = float(rng.choice([0.0, 1e-3, 10.0]))
        got, ref = f(W, X, y, reg), reference(W, X, y, reg)
        assert relative_error(got[0], ref[0]) <= 1e-10, (name, n, d, c)
        assert relative_error(got[1], ref[1]) <= 1e-10, (name, n, d, c)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layouts(backend, reference, layout):
    name, f = backend
    rng = np.random.default_rng(7)
    W, X, y = random_problem(rng, 31, 12, 5)
    ref = reference(W, X, y, 0.5)
    X2 = as_layout(X, layout)
    W2 = as_layout(W, layout)
    got = f(W2, X2, y, 0.5)
    assert compare(got, ref, np.float64).ok


@pytest.mark.parametrize("pad", [0, 3, 16])
def test_row_padded_layout_puts_pad_elements_between_rows(pad):
    """as_layout(..., "row-padded", pad=K): the same values, rows m + K apart, zeros between them."""
    a = np.arange(12.0).reshape(3, 4)
    v = as_layout(a, "row-padded", pad=pad)
    np.testing.assert_array_equal(v, a)
    assert v.strides == ((4 + pad) * 8, 8)
    assert not np.shares_memory(v, a)
    if pad:
        assert not v.base[:, 4:].any()
    assert as_layout(a, "row-padded").strides == (7 * 8, 8)  # 3 by default
    for bad in (-1, 1.5, True, "16"):
        with pytest.raises(ValueError, match=f"pad must be an integer >= 0, got {bad!r}"):
            as_layout(a, "row-padded", pad=bad)


def test_memmap(backend, reference, tmp_path):
    name, f = backend
    rng = np.random.default_rng(8)
    W, X, y = random_problem(rng, 40, 9, 3)
    mm = np.lib.format.open_memmap(tmp_path / "X.npy", mode="w+", dtype=X.dtype, shape=X.shape)
    mm[:] = X
    mm.flush()
    ro = np.load(tmp_path / "X.npy", mmap_mode="r")
    assert compare(f(W, ro, y, 0.1), reference(W, X, y, 0.1), np.float64).ok


def test_inputs_not_modified(backend):
    name, f = backend
    rng = np.random.default_rng(9)
    W, X, y = random_problem(rng, 30, 8, 4)
    copies = [a.copy() for a in (W, X, y)]
    f(W, X, y, 0.3)
    for before, after in zip(copies, (W, X, y)):
        np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize(
    "wdt, xdt, expected",
    [
        (np.float32, np.float32, np.float32),
        (np.float64, np.float64, np.float64),
        (np.float32, np.float64, np.float64),
        (np.float64, np.float32, np.float64),
        (np.float64, np.int64, np.float64),
        (np.float16, np.float16, np.float32),
    ],
)
def test_result_dtype(backend, reference, wdt, xdt, expected):
    name, f = backend
    rng = np.random.default_rng(10)
    W, X, y = random_problem(rng, 12, 6, 3)
    W, X = W.astype(wdt), (X * 4).astype(xdt)
    loss, dW = f(W, X, y, 0.2)
    assert dW.dtype == expected and type(loss) is float
    assert compare((loss, dW), reference(W, X, y, 0.2), expected).ok


@pytest.mark.parametrize(
    "ydt", [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]
)
def test_label_dtypes(backend, reference, ydt):
    name, f = backend
    rng = np.random.default_rng(11)
    W, X, y = random_problem(rng, 15, 6, 4)
    assert compare(f(W, X, y.astype(ydt), 0.0), reference(W, X, y, 0.0), np.float64).ok


def test_lists_are_accepted(backend, reference):
    name, f = backend
    W = [[0.1, -0.2], [0.3, 0.0]]
    X = [[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]]
    y = [0, 1, 1]
    assert compare(f(W, X, y, 0.1), reference(W, X, y, 0.1), np.float64).ok


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cs231n_sanity_loss(backend, dtype):
    """W = 1e-4 * randn on 10 classes: every class equally likely, loss ~ -log(0.1)."""
    name, f = backend
    rng = np.random.default_rng(12)
    X = rng.uniform(-128, 128, size=(200, 3073)).astype(dtype)
    X[:, -1] = 1
    W = (1e-4 * rng.standard_normal((3073, 10))).astype(dtype)
    y = rng.integers(0, 10, size=200)
    loss, _ = f(W, X, y, 0.0)
    # Scores are ~ 1e-4 * 74 * sqrt(3073) ~ 0.4, so the loss is near, not at, log(10).
    assert abs(loss - (-math.log(0.1))) < 0.2


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_huge_scores_are_stable(backend, reference, dtype):
    """Scores of magnitude 1e4 overflow a naive exp; the log-sum-exp shift keeps them finite."""
    name, f = backend
    rng = np.random.default_rng(13)
    W, X, y = random_problem(rng, 25, 8, 6, dtype=dtype)
    W = (W / np.abs(X @ W).max() * 1e4).astype(dtype)  # max |score| = 1e4
    loss, dW = f(W, X, y, 0.0)
    assert math.isfinite(loss) and np.isfinite(dW).all()
    ref_loss, ref_dW = reference(W, X, y, 0.0)
    # The loss is a mean of O(1e4) terms: float32 keeps ~1e-4 of it after cancellation.
    assert compare((loss, dW), (ref_loss, ref_dW), dtype).loss_error <= tolerance(dtype) * 10
    assert relative_error(dW, ref_dW) <= tolerance(dtype)


def numerical_gradient(f, W, h=1e-5):
    """Central differences of ``f`` at every entry of ``W``."""
    grad = np.zeros_like(W)
    for idx in np.ndindex(*W.shape):
        old = W[idx]
        W[idx] = old + h
        fp = f(W)
        W[idx] = old - h
        fm = f(W)
        W[idx] = old
        grad[idx] = (fp - fm) / (2 * h)
    return grad


@pytest.mark.parametrize("reg", [0.0, 0.7])
def test_gradient_matches_central_differences(backend, reg):
    name, f = backend
    rng = np.random.default_rng(14)
    W, X, y = random_problem(rng, 18, 7, 4)
    _, dW = f(W, X, y, reg)
    num = numerical_gradient(lambda w: f(w, X, y, reg)[0], W.copy())
    # Central differences with h = 1e-5 are accurate to ~h^2 * f''' + eps / h ~ 1e-10
    # relative to gradients of order 1: 1e-7 leaves margin for both.
    rel = np.abs(dW - num) / np.maximum(np.abs(dW) + np.abs(num), 1e-8)
    assert rel.max() < 1e-7, f"{name}: max relative error {rel.max():.2e}"


def test_top_level_softmax_loss_uses_fastest():
    rng = np.random.default_rng(15)
    W, X, y = random_problem(rng, 10, 5, 3)
    expected = fastsoftmax.backends.get(fastsoftmax.fastest(X.dtype, X.shape[0]))(W, X, y, 0.1)
    got = fastsoftmax.softmax_loss(W, X, y, 0.1)
    assert got[0] == expected[0]
    np.testing.assert_array_equal(got[1], expected[1])


def test_half_reg_convention():
    """The older CS231n convention 0.5 * reg * ||W||^2 is reg/2 in ours."""
    rng = np.random.default_rng(16)
    W, X, y = random_problem(rng, 10, 5, 3)
    loss0, dW0 = fastsoftmax.softmax_loss(W, X, y, 0.0)
    loss, dW = fastsoftmax.softmax_loss(W, X, y, 0.8 / 2)
    assert loss == pytest.approx(loss0 + 0.5 * 0.8 * np.sum(W * W), rel=1e-12)
    np.testing.assert_allclose(dW, dW0 + 0.8 * W, rtol=1e-12, atol=1e-15)


# --- the optional parts of the contract: b, rows, out ----------------------


def _ones_column(W, X, b):
    """The same model with the bias as a last weight row and a column of ones in X."""
    return np.vstack([W, b[None, :]]), np.hstack([X, np.ones((X.shape[0], 1), dtype=X.dtype)])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reg", [0.0, 0.3])
def test_bias_is_an_unregularized_ones_column(backend, dtype, reg):
    """``b`` gives what appending a column of ones gives, less b's L2 term."""
    name, f = backend
    rng = np.random.default_rng(7)
    W, X, y = random_problem(rng, 37, 11, 6, dtype=dtype, scale=3.0)
    b = (2 * rng.standard_normal(6)).astype(dtype)
    loss, dW, db = f(W, X, y, reg, b=b)
    W1, X1 = _ones_column(W, X, b)
    ref_loss, ref_dW1 = f(W1, X1, y, reg)
    ref_loss -= reg * float(np.sum(b.astype(np.float64) ** 2))
    ref_db = ref_dW1[-1] - 2 * reg * b
    assert compare((loss, dW), (ref_loss, ref_dW1[:-1]), dtype).ok, name
    assert relative_error(db, ref_db) <= tolerance(dtype), name
    assert db.shape == (6,) and db.dtype == np.dtype(dtype) and dW.dtype == np.dtype(dtype)


def test_bias_gradient_is_the_numerical_derivative(backend):
    """db by central differences on the python reference's loss (float64)."""
    name, f = backend
    rng = np.random.default_rng(3)
    W, X, y = random_problem(rng, 9, 5, 4, scale=2.0)
    b = rng.standard_normal(4)
    _, _, db = f(W, X, y, 0.1, b=b)
    h = 1e-6
    numeric = np.empty(4)
    for j in range(4):
        e = np.zeros(4)
        e[j] = h
        numeric[j] = (f(W, X, y, 0.1, b=b + e)[0] - f(W, X, y, 0.1, b=b - e)[0]) / (2 * h)
    # Central differences are accurate to O(h^2) plus roundoff ~1e-16/h: 1e-8 absolute.
    np.testing.assert_allclose(db, numeric, rtol=0, atol=1e-8, err_msg=name)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_rows_equal_the_gathered_batch(backend, dtype):
    """``rows`` (any order, repeats, negatives) gives what ``X[rows], y[rows]`` gives."""
    name, f = backend
    rng = np.random.default_rng(11)
    W, X, y = random_problem(rng, 50, 13, 7, dtype=dtype, scale=3.0)
    b = rng.standard_normal(7).astype(dtype)
    rows = np.array([49, 3, 3, -1, 0, 17, -50, 25, 8, 8, 8, 30])
    before = (X.copy(), y.copy(), rows.copy())
    loss, dW, db = f(W, X, y, 0.2, b=b, rows=rows)
    ref = f(W, X[rows], y[rows], 0.2, b=b)
    assert compare((loss, dW), ref[:2], dtype).ok, name
    assert relative_error(db, ref[2]) <= tolerance(dtype), name
    for a, a0 in zip((X, y, rows), before):
        np.testing.assert_array_equal(a, a0)  # nothing the caller passed is changed


def test_rows_of_any_integer_dtype_and_lists(backend):
    name, f = backend
    W, X, y = random_problem(np.random.default_rng(5), 20, 6, 3)
    ref = f(W, X[[4, 2, 19]], y[[4, 2, 19]], 0.1)
    for rows in ([4, 2, 19], np.array([4, 2, 19], dtype=np.uint8), np.array([4, 2, -1], dtype=np.int16)):
        got = f(W, X, y, 0.1, rows=rows)
        assert compare(got, ref, np.float64).ok, (name, rows)


def test_rows_ignore_labels_outside_the_batch(backend):
    """Only the chosen rows' labels must be valid, as for ``y[rows]``."""
    name, f = backend
    W, X, y = random_problem(np.random.default_rng(6), 8, 5, 3)
    y[5] = 99
    got = f(W, X, y, 0.0, rows=[0, 1, 2])
    assert compare(got, f(W, X[:3], y[:3], 0.0), np.float64).ok, name


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_out_receives_the_gradient(backend, dtype):
    name, f = backend
    W, X, y = random_problem(np.random.default_rng(8), 30, 9, 5, dtype=dtype)
    out = np.full(W.shape, np.nan, dtype=dtype)
    loss, dW = f(W, X, y, 0.4, out=out)
    assert dW is out
    ref = f(W, X, y, 0.4)
    assert loss == ref[0] and np.array_equal(out, ref[1]), name
