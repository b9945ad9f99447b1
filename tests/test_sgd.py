"""The minibatch step (rows + out + in-place update) against the copy path, bit for bit.

The copy path is the textbook loop every training loop used to run:
``X[idx]``, ``y[idx]``, a fresh ``dW`` from the backend's public function,
``W -= lr * dW``.  The step must give the same model to the last bit, for
every backend, dtype and thread count (a compiled kernel's result depends
on its thread count, so each count is compared with itself).
"""

import tracemalloc

import numpy as np
import pytest

import fastsoftmax
from fastsoftmax import Softmax, backends
from fastsoftmax.training import sgd
from fastsoftmax.training.sgd import Batch, SGDStep, draw_rows, random_batches

#: Shapes per thread count: with 2 threads the batch must be big enough
#: that the compiled kernels really split it (N*D*C >= 2 * 2**20 multiply-adds,
#: backends._common.MIN_WORK_PER_THREAD), or "2 threads" would test 1 again.
SHAPES = {1: dict(n=80, d=30, c=5, batch=16, steps=12), 2: dict(n=400, d=1100, c=10, batch=200, steps=4)}

#: Compiled backends that hand ``rows`` problems to the numpy kernel instead
#: of reading rows in place (their rows path then cannot equal their copy
#: path).  Empty since issue 11: the cython and numba kernels read ``rows``
#: natively, bit-identical to the gathered copy.
INTERIM_ROWS = set()


def data(dtype, n, d, c, seed=0, **_):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(dtype)
    y = rng.integers(0, c, n)
    W0 = (0.01 * rng.standard_normal((d, c))).astype(dtype)
    return W0, X, y


def copy_path(name, W0, X, y, lr, reg, seed, steps, batch, n_threads, b0=None):
    """The textbook loop: gather, fresh gradient, ``W -= lr * dW``."""
    rng = np.random.default_rng(seed)
    W = W0.copy()
    b = None if b0 is None else b0.copy()
    loss_fn = backends.get(name)
    losses = []
    for _ in range(steps):
        idx = rng.choice(len(y), batch, replace=True)
        result = loss_fn(W, X[idx], y[idx], reg, b=b, n_threads=n_threads)
        W -= lr * result[1]
        if b is not None:
            b -= lr * result[2]
        losses.append(result[0])
    return W, b, losses


def _steps_match_the_copy_path(name, W0, X, y, lr, reg, seed=3, steps=6, batch=16):
    """Six one-thread steps of ``SGDStep`` against :func:`copy_path`, bit for bit; returns the step's W."""
    W_ref, _, losses_ref = copy_path(name, W0, X, y, lr, reg, seed, steps, batch, 1)
    W = W0.copy()
    step = SGDStep(W, lr, reg, backend=name, n_threads=1)
    losses = [step(*b) for b in random_batches(X, y, batch, steps, np.random.default_rng(seed))]
    np.testing.assert_array_equal(W, W_ref)
    assert losses == losses_ref
    return W


def _maybe_interim(name):
    if name in INTERIM_ROWS:
        pytest.xfail(f"{name} hands rows= to the numpy kernel until issue 11's kernels land")


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_training_equals_the_copy_path_bit_for_bit(backend, dtype, n_threads):
    name, _ = backend
    if name == "python" and n_threads == 2:
        pytest.skip("the python reference has no threads (and is slow at the 2-thread size)")
    shape = SHAPES[n_threads]
    W0, X, y = data(dtype, **shape)
    X_before = X.copy()
    lr, reg, seed = 0.05, 1e-3, 11
    W_ref, _, losses_ref = copy_path(name, W0, X, y, lr, reg, seed, shape["steps"], shape["batch"], n_threads)

    model = Softmax(backend=name, seed=seed)
    model.W = W0.copy()  # no initial draw: the generator goes straight to the batches, as in copy_path
    history = model.train(X, y, learning_rate=lr, reg=reg, num_iters=shape["steps"],
                          batch_size=shape["batch"], n_threads=n_threads)
    np.testing.assert_array_equal(X, X_before)  # X is read in place, never written
    if name in INTERIM_ROWS and not np.array_equal(model.W, W_ref):
        _maybe_interim(name)
    assert model.W.dtype == W_ref.dtype
    np.testing.assert_array_equal(model.W, W_ref)
    assert history == losses_ref
    if name in INTERIM_ROWS:
        pytest.fail(f"{name} now matches its copy path bit for bit: remove it from INTERIM_ROWS")


@pytest.mark.parametrize("name", ["numpy", "cython"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_step_with_bias_equals_the_copy_path(dtype, name):
    """The estimator's case: an unregularized bias, updated in place too (by the
    kernel's own step in cython, ``bind_sgd_step``)."""
    if name not in backends.available():
        pytest.skip(f"{name} not available")
    W0, X, y = data(dtype, n=90, d=12, c=4)
    b0 = np.linspace(-0.1, 0.1, 4).astype(dtype)
    W_ref, b_ref, losses_ref = copy_path(name, W0, X, y, 0.1, 1e-2, 5, 15, 32, 1, b0=b0)
    W, b = W0.copy(), b0.copy()
    step = SGDStep(W, 0.1, 1e-2, b=b, backend=name, n_threads=1)
    losses = [step(*batch) for batch in random_batches(X, y, 32, 15, np.random.default_rng(5))]
    np.testing.assert_array_equal(W, W_ref)
    np.testing.assert_array_equal(b, b_ref)
    assert losses == losses_ref


@pytest.mark.parametrize("n, batch_size", [(1, 3), (7, 1), (4585, 200), (10**6, 50)])
def test_draw_rows_is_the_cs231n_draw(n, batch_size):
    """draw_rows keeps the stream of rng.choice(n, batch_size, replace=True): same seed, same batches."""
    a, b = np.random.default_rng(9), np.random.default_rng(9)
    for _ in range(3):
        drawn, choice = draw_rows(a, n, batch_size), b.choice(n, batch_size, replace=True)
        np.testing.assert_array_equal(drawn, choice)
        assert drawn.dtype == choice.dtype


def test_negative_rows_mean_what_they_mean_in_numpy():
    W0, X, y = data(np.float64, n=50, d=7, c=3)
    rows = np.array([3, 49, 0, 3])
    a, b = W0.copy(), W0.copy()
    SGDStep(a, 0.1, 0.0, backend="numpy")(X, y, rows)
    SGDStep(b, 0.1, 0.0, backend="numpy")(X, y, rows - 50)  # the same rows, counted from the end
    np.testing.assert_array_equal(a, b)


def _source(rows):
    """A batch source yielding one batch of the given rows."""
    return lambda X, y, batch_size, num_iters, rng: [Batch(X, y, rows)]


#: Bad batches of X with 50 rows, the validator's error and message for each.
BAD_ROWS = {
    "float": (np.array([0, 1.0]), TypeError, r"rows must hold integer row indices, got dtype float64"),
    "too-large": (np.array([0, 50]), IndexError, r"rows holds index 50, out of range for X with 50 rows"),
    "too-negative": (np.array([-51]), IndexError, r"rows holds index -51, out of range for X with 50 rows"),
    "empty": (np.array([], dtype=int), ValueError, r"rows is empty"),
    "2-D": (np.array([[0, 1]]), ValueError, r"rows must be 1-D"),
}


def _bad_rows(*names):
    return pytest.mark.parametrize("rows, error, message", [BAD_ROWS[n] for n in names], ids=list(names))


@_bad_rows("float", "too-large", "too-negative", "empty")
def test_bad_rows_from_a_batch_source_get_the_validators_error(rows, error, message):
    W0, X, y = data(np.float64, n=50, d=7, c=3)
    model = Softmax(backend="numpy", seed=0)
    model.W = W0.copy()
    with pytest.raises(error, match=message):
        model.train(X, y, num_iters=1, batch_size=2, batches=_source(rows))
    np.testing.assert_array_equal(model.W, W0)  # a refused step changes nothing


def test_a_batch_source_must_yield_num_iters_batches():
    W0, X, y = data(np.float64, n=50, d=7, c=3)
    model = Softmax(backend="numpy", seed=0)
    with pytest.raises(ValueError, match=r"yielded 1 batches, not num_iters = 3"):
        model.train(X, y, num_iters=3, batch_size=2, batches=_source(np.array([0, 1])))
    too_many = lambda X, y, bs, n, rng: [Batch(X, y, np.array([0, 1]))] * 2  # noqa: E731
    with pytest.raises(ValueError, match=r"more than num_iters = 1"):
        model.train(X, y, num_iters=1, batch_size=2, batches=too_many)


def _peak_of_steps(step, X, y, n_steps, batch_size):
    """Peak bytes traced by tracemalloc over ``n_steps`` steps on random batches."""
    rng = np.random.default_rng(0)
    tracemalloc.start()
    try:
        for _ in range(n_steps):
            step(X, y, draw_rows(rng, len(y), batch_size))
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_step_allocates_nothing_of_the_gradients_size():
    """After the first step, the loop allocates no (D, C) array: the gradient goes into
    ``step.grad`` (``out=``) and the update is done in place.

    A kernel registered for the test writes into ``out`` and allocates
    nothing itself, so what tracemalloc sees is the step's own cost (without
    the compiled extension, also the result check's: a (D, C) bool from
    ``isfinite(dW)``, 1/8 of the gradient).
    The copy path allocates dW and ``lr * dW``: two gradients per step.
    """
    D, C = 400, 10

    def kernel(problem, n_threads):
        dW = problem.out if problem.out is not None else np.empty(problem.W.shape, problem.W.dtype)
        dW.fill(1e-3)
        return 1.0, dW, None

    backends.register("no-alloc", kernel)
    try:
        W0, X, y = data(np.float64, n=300, d=D, c=C)
        W = W0.copy()
        step = SGDStep(W, 0.1, 1e-3, backend="no-alloc")
        step(X, y, np.arange(32))  # warm-up: allocates step.grad once
        grad = step.grad
        peak = _peak_of_steps(step, X, y, 10, 32)
        assert step.grad is grad
        # With the compiled update not even the finite check's bool array
        # (W.nbytes / 8) is allocated; NumPy's update allocates that one.
        bound = W.nbytes / 16 if sgd._compiled_update is not None else W.nbytes / 2
        assert peak < bound, f"{peak} bytes allocated at peak; the gradient is {W.nbytes}"
        np.testing.assert_allclose(W, W0 - 11 * 0.1 * 1e-3, rtol=1e-12)  # 11 in-place updates
    finally:
        backends.unregister("no-alloc")


@pytest.fixture
def cython_steps(monkeypatch):
    """Counts the calls of the cython kernel's own step (``_cython_kernel.sgd_step``)."""
    if "cython" not in backends.available():
        pytest.skip("cython not built")
    from fastsoftmax.backends import cython

    calls = []
    real = cython.sgd_step

    def counted(*args):
        calls.append(args[0])
        return real(*args)

    monkeypatch.setattr(cython, "sgd_step", counted)
    return calls


@pytest.mark.parametrize("layout", ["C", "F"])
def test_the_step_takes_the_kernels_own_step_where_it_can(cython_steps, layout):
    """A kernel with ``bind_sgd_step`` (cython) takes each step in one call; with
    an X it cannot read in place (Fortran order: a copy per step), the step
    falls back to the kernel and the separate update.  Both give the copy
    path's model bit for bit."""
    W0, X, y = data(np.float64, n=80, d=30, c=5)
    X = np.asfortranarray(X) if layout == "F" else X
    W = _steps_match_the_copy_path("cython", W0, X, y, 0.05, 1e-3)
    assert len(cython_steps) == (6 if layout == "C" else 0)
    assert all(w is W for w in cython_steps)


def test_what_the_caller_changes_between_steps_is_seen(cython_steps):
    """The bound step reads W, b and the learning rate anew at each step: a caller
    who rescales W, shifts b or decays the rate between steps trains the model
    the copy path trains with the same changes."""
    W0, X, y = data(np.float64, n=80, d=30, c=5)
    b0 = np.zeros(5)
    W, b = W0.copy(), b0.copy()
    step = SGDStep(W, 0.05, 1e-3, b=b, backend="cython", n_threads=1)
    W_ref, b_ref = W0.copy(), b0.copy()
    loss_fn = backends.get("cython")
    rng, rng_ref = np.random.default_rng(4), np.random.default_rng(4)
    for k in range(5):
        step(X, y, draw_rows(rng, len(y), 16))
        idx = rng_ref.choice(len(y), 16, replace=True)
        _, dW, db = loss_fn(W_ref, X[idx], y[idx], 1e-3, b=b_ref, n_threads=1)
        W_ref -= step.learning_rate * dW
        b_ref -= step.learning_rate * db
        for w in (W, W_ref):
            w *= 0.5
        for v in (b, b_ref):
            v += 0.25
        step.learning_rate *= 0.9
    np.testing.assert_array_equal(W, W_ref)
    np.testing.assert_array_equal(b, b_ref)
    assert len(cython_steps) == 5


def test_a_changed_thread_setting_gets_its_own_bound_step(cython_steps):
    """The step binds per (batch size, thread setting): steps under 1, 2, then 1
    threads again give the copy path's bits with the same thread counts."""
    shape = SHAPES[2]
    W0, X, y = data(np.float64, **shape)
    W, W_ref = W0.copy(), W0.copy()
    step = SGDStep(W, 0.05, 1e-3, backend="cython")
    loss_fn = backends.get("cython")
    rng, rng_ref = np.random.default_rng(6), np.random.default_rng(6)
    for n_threads in (1, 2, 1):
        with fastsoftmax.threads(n_threads):
            step(X, y, draw_rows(rng, len(y), shape["batch"]))
        idx = rng_ref.choice(len(y), shape["batch"], replace=True)
        W_ref -= 0.05 * loss_fn(W_ref, X[idx], y[idx], 1e-3, n_threads=n_threads)[1]
        np.testing.assert_array_equal(W, W_ref)
    assert len(step._runs) == 2


@pytest.mark.parametrize("n_threads", [1, 2])
def test_a_cython_step_allocates_nothing_of_ws_size(n_threads):
    """With the real cython kernel too: W's padded transpose and the per-thread
    accumulators are kept in the step's scratch, not allocated per step."""
    if "cython" not in backends.available():
        pytest.skip("cython not built")
    W0, X, y = data(np.float64, n=300, d=3073, c=10)  # CIFAR's W: 0.25 MB
    W = W0.copy()
    step = SGDStep(W, 1e-3, 1e-3, backend="cython", n_threads=n_threads)
    step(X, y, np.arange(200))  # warm-up: the buffers are allocated once
    peak = _peak_of_steps(step, X, y, 5, 200)
    assert peak < W.nbytes / 8, f"{peak} bytes allocated at peak; W is {W.nbytes}"


@pytest.fixture(params=["compiled", "numpy"])
def update_impl(request, monkeypatch):
    """The step's update as the compiled call (when the extension is built) and as NumPy."""
    if request.param == "numpy":
        monkeypatch.setattr(sgd, "_compiled_update", None)
    elif sgd._compiled_update is None:
        pytest.skip("the Cython extension is not built")
    return request.param


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_update_rounds_as_w_minus_lr_times_g(update_impl, dtype):
    """``_update`` gives the bits of NumPy's ``W -= lr * G``: the product rounded, then
    the difference rounded.  One fused multiply-add would round once, and on
    these values that differs in many elements (checked here, so the test
    can tell the two apart)."""
    rng = np.random.default_rng(5)
    W = rng.standard_normal((257, 7)).astype(dtype)
    G = rng.standard_normal((257, 7)).astype(dtype)
    lr = 0.3
    expected = W - dtype(lr) * G
    fused = (W.astype(np.longdouble) - np.longdouble(dtype(lr)) * G.astype(np.longdouble)).astype(dtype)
    if np.finfo(np.longdouble).nmant > np.finfo(np.float64).nmant or dtype is np.float32:
        assert not np.array_equal(fused, expected)  # the data tell one rounding from two
    W_in, G_in = W.copy(), G.copy()
    assert sgd._update(W_in, G_in, lr) is True
    np.testing.assert_array_equal(W_in, expected)
    np.testing.assert_array_equal(G_in, dtype(lr) * G)  # the buffer holds lr * G, as documented


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", [0, 900, -1])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_update_refuses_a_non_finite_gradient_and_touches_nothing(update_impl, dtype, where, bad):
    rng = np.random.default_rng(6)
    W = rng.standard_normal((129, 10)).astype(dtype)
    G = rng.standard_normal((129, 10)).astype(dtype)
    G.ravel()[where] = bad
    W_in, G_in = W.copy(), G.copy()
    assert sgd._update(W_in, G_in, 0.1) is False
    np.testing.assert_array_equal(W_in, W)
    np.testing.assert_array_equal(G_in, G)
    G.ravel()[where] = np.finfo(dtype).max  # the largest finite value is not refused
    assert sgd._update(W_in, G.copy(), 1e-3) is True


def test_step_refuses_what_it_cannot_update_in_place():
    W = np.zeros((3, 2))
    W.flags.writeable = False
    with pytest.raises(TypeError, match="W must be a writable NumPy array"):
        SGDStep(W, 0.1, 0.0)
    with pytest.raises(TypeError, match="b must be a writable NumPy array"):
        SGDStep(np.zeros((3, 2)), 0.1, 0.0, b=[0.0, 0.0])
    with pytest.raises(ValueError, match="learning_rate must be a finite number > 0"):
        SGDStep(np.zeros((3, 2)), 0.0, 0.0)
    with pytest.raises(backends.BackendUnavailable, match="unknown backend"):
        SGDStep(np.zeros((3, 2)), 0.1, 0.0, backend="nope")


def test_default_backend_is_what_softmax_loss_picks_for_the_batch():
    W = np.zeros((3073, 10), np.float32)
    X = np.zeros((5, 3073), np.float32)
    step = SGDStep(W, 0.1, 0.0)
    for n in (16, 200):
        assert step.backend_for(X, n) == backends.fastest(np.float32, n)


# --- the trusted path: validate once, then only each batch --------------------------


def test_the_step_validates_its_arrays_once_then_only_each_batch(monkeypatch):
    """``prepare`` runs on the first step and when X or y changes, not on every step."""
    import fastsoftmax.training.sgd as sgd

    calls = []
    real_prepare = sgd.prepare
    monkeypatch.setattr(sgd, "prepare", lambda *a: calls.append(1) or real_prepare(*a))
    W0, X, y = data(np.float64, n=50, d=7, c=3)
    step = SGDStep(W0.copy(), 0.1, 1e-3, backend="numpy")
    rng = np.random.default_rng(0)
    for _ in range(5):
        step(X, y, draw_rows(rng, 50, 8))
    assert len(calls) == 1
    X2 = X.copy()
    step(X2, y, draw_rows(rng, 50, 8))
    step(X2, y, draw_rows(rng, 50, 8))
    assert len(calls) == 2  # a new X: validated again, once


@pytest.mark.parametrize("dtypes", [(np.float32, np.float64), (np.float64, np.float32)], ids=["W32-X64", "W64-X32"])
def test_mixed_dtypes_step_on_the_live_weights(dtypes):
    """When the kernel gets a cast copy of W (working dtype differs from W's), the step
    must not keep that copy: every step sees the weights the last step left."""
    W_dtype, X_dtype = dtypes
    W0, X, y = data(np.float64, n=60, d=9, c=4)
    W0, X = W0.astype(W_dtype), X.astype(X_dtype)
    _steps_match_the_copy_path("numpy", W0, X, y, 0.1, 1e-2)


@pytest.mark.parametrize(
    "spoil, error, message",
    [
        ("W", ValueError, r"W contains NaN or inf"),
        ("X", ValueError, r"X contains NaN or inf"),
        ("b", ValueError, r"b contains NaN or inf"),
    ],
)
def test_non_finite_values_after_the_first_step_get_the_validators_error(fast_backend, spoil, error, message):
    """Values the step does not re-check (W, X, b) still get prepare's clear error,
    and the refused step leaves W and b as they were."""
    name, _ = fast_backend
    W0, X, y = data(np.float64, n=50, d=7, c=3)
    W, b = W0.copy(), np.zeros(3)
    step = SGDStep(W, 0.1, 1e-3, b=b, backend=name, n_threads=1)
    rows = np.array([4, 9, 4, 30])
    step(X, y, rows)  # validated here
    {"W": W, "X": X[9], "b": b}[spoil][1] = np.nan if spoil != "X" else np.inf
    W_before, b_before = W.copy(), b.copy()
    with pytest.raises(error, match=message):
        step(X, y, rows)
    np.testing.assert_array_equal(W, W_before)
    np.testing.assert_array_equal(b, b_before)


@_bad_rows(*BAD_ROWS)
def test_bad_rows_after_the_first_step_get_the_validators_error(fast_backend, rows, error, message):
    name, _ = fast_backend
    W0, X, y = data(np.float64, n=50, d=7, c=3)
    W = W0.copy()
    step = SGDStep(W, 0.1, 1e-3, backend=name, n_threads=1)
    step(X, y, np.array([1, 2, 3]))
    W_before = W.copy()
    with pytest.raises(error, match=message):
        step(X, y, rows)
    np.testing.assert_array_equal(W, W_before)


@pytest.mark.parametrize("label", [3, -1])
def test_a_label_changed_after_the_first_step_is_refused(fast_backend, label):
    """The batch's labels are read at every step, so a label changed in y after the
    first step is refused before a kernel indexes with it."""
    W0, X, y = data(np.float64, n=50, d=7, c=3)
    W = W0.copy()
    step = SGDStep(W, 0.1, 1e-3, backend=fast_backend[0], n_threads=1)
    step(X, y, np.array([1, 2, 3]))
    y[2] = label
    with pytest.raises(ValueError, match=rf"y must hold labels in \[0, C\) = \[0, 3\), found label {label}"):
        step(X, y, np.array([5, 2]))
    step(X, y, np.array([5, 6]))  # labels outside the batch are not the batch's business
