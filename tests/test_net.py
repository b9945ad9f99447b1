"""The two-layer net: layers, the net backends against the reference and numerical gradients, TwoLayerNet.

Tolerances:

* Backends against the ``python`` loops use the package's documented
  norm-wise tolerances (:data:`fastsoftmax.testing.TOLERANCE`: 1e-10 in
  float64, 1e-4 in float32; see :mod:`fastsoftmax.harness.agreement` for the
  rounding argument).  The net adds one more product (H x C) to a chain of
  the same length-D sums, so the same margins hold; a wrong index or a
  missing term is an error of order one.
* Gradients against centred differences use the CS231n measure
  (:func:`fastsoftmax.training.gradcheck.rel_error`, entry by entry, the
  maximum taken) with the issue's bound 1e-7 in float64: with h = 1e-5 (the CS231n step) and
  unit-scale data the truncation error (h**2 times the third derivative) is
  ~1e-11 and the rounding error (eps * |f| / h) ~1e-11 absolute, against
  gradient entries of order 1e-2 or more (``reg`` keeps even dead units'
  gradients away from 0).  A kink of the ReLU within h of a pre-activation
  would break the check; at these seeds none is (the margin is asserted).
"""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import fastsoftmax
from fastsoftmax import backends
from fastsoftmax.testing import TOLERANCE, as_layout, load_backend, relative_error
from fastsoftmax.training import layers
from fastsoftmax.training.gradcheck import eval_numerical_gradient, rel_error
from fastsoftmax.training.net import TwoLayerNet

NET_PARAMS = ("W1", "b1", "W2", "b2")


def random_net(rng, n, d, h, c, dtype=np.float64, scale=1.0):
    """Parameters, data and labels of a small net whose activations are of order ``scale``."""
    params = {
        "W1": scale / np.sqrt(d) * rng.standard_normal((d, h)),
        "b1": 0.1 * rng.standard_normal(h),
        "W2": scale / np.sqrt(h) * rng.standard_normal((h, c)),
        "b2": 0.1 * rng.standard_normal(c),
    }
    params = {k: v.astype(dtype) for k, v in params.items()}
    X = rng.standard_normal((n, d)).astype(dtype)
    y = rng.integers(0, c, size=n)
    return params, X, y


@pytest.fixture(params=list(backends.NET_BACKENDS))
def net_backend(request):
    """(name, public two_layer_loss) for each built-in net backend."""
    return request.param, load_backend(request.param, contract="net")


@pytest.fixture(autouse=True)
def split_small_problems(monkeypatch):
    """Let tiny problems use several threads, so the fused kernel's chunking runs here."""
    monkeypatch.setattr("fastsoftmax.backends._common.MIN_WORK_PER_THREAD", 1)


def _max_rel(num, ana):
    """The CS231n measure: the largest entry-wise relative error."""
    return float(np.max(rel_error(num, ana)))


# The layers are checked norm-wise (max|num - ana| / max|ana|): an entry-wise
# measure is ill-conditioned for entries near 0, where the difference
# quotient's rounding (eps * |f| / h ~ 1e-10 absolute here) dominates.  On
# these unit-scale inputs a right layer is within ~1e-9; a wrong one is off
# by order one.
LAYER_TOL = 1e-8


# --- layers -----------------------------------------------------------------------


def test_layers_match_numerical_gradients():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 2, 3))  # flattened to D = 6 by the affine layer
    w = rng.standard_normal((6, 5))
    b = rng.standard_normal(5)
    dout = rng.standard_normal((4, 5))
    out, cache = layers.affine_forward(x, w, b)
    np.testing.assert_allclose(out, x.reshape(4, 6) @ w + b, rtol=1e-14)
    dx, dw, db = layers.affine_backward(dout, cache)
    assert dx.shape == x.shape and dw.shape == w.shape and db.shape == b.shape
    for arg, grad in ((x, dx), (w, dw), (b, db)):
        def f(v, arg=arg):
            args = [v if a is arg else a for a in (x, w, b)]
            return float(np.sum(layers.affine_forward(*args)[0] * dout))
        assert relative_error(eval_numerical_gradient(f, arg, h=1e-5), grad) < LAYER_TOL

    # ReLU and affine-ReLU; inputs kept away from the kink at 0 by more than h
    a = rng.standard_normal((5, 7))
    a[np.abs(a) < 1e-3] = 0.5
    dout = rng.standard_normal((5, 7))
    out, cache = layers.relu_forward(a)
    np.testing.assert_array_equal(out, np.where(a > 0, a, 0))
    da = layers.relu_backward(dout, cache)
    num = eval_numerical_gradient(lambda v: float(np.sum(layers.relu_forward(v)[0] * dout)), a, h=1e-5)
    assert relative_error(num, da) < LAYER_TOL
    dout2 = rng.standard_normal((4, 5))
    _, cache = layers.affine_relu_forward(x, w, b)
    dx, dw, db = layers.affine_relu_backward(dout2, cache)
    num = eval_numerical_gradient(lambda v: float(np.sum(layers.affine_relu_forward(x, v, b)[0] * dout2)), w, h=1e-5)
    assert relative_error(num, dw) < LAYER_TOL
    assert layers.affine_relu_backward(dout2, cache, input_grad=False)[0] is None


def test_softmax_layer_value_and_gradient():
    rng = np.random.default_rng(1)
    scores = 3 * rng.standard_normal((6, 4))
    y = rng.integers(0, 4, 6)
    loss, dscores = layers.softmax_loss(scores, y)
    # the definition, in float64 without the shift (no overflow at this scale)
    expected = np.mean(np.log(np.exp(scores).sum(axis=1)) - scores[np.arange(6), y])
    assert abs(loss - expected) < 1e-14 * abs(expected) + 1e-15
    num = eval_numerical_gradient(lambda s: layers.softmax_loss(s, y)[0], scores, h=1e-5)
    assert relative_error(num, dscores) < LAYER_TOL
    # huge scores: the max shift keeps them finite, and small random scores give -log(1/C)
    assert np.isfinite(layers.softmax_loss(scores + 1e4, y)[0])
    assert abs(layers.softmax_loss(1e-6 * scores, y)[0] - np.log(4)) < 1e-5
    loss32, d32 = layers.softmax_loss(scores.astype(np.float32), y)
    assert d32.dtype == np.float32 and abs(loss32 - loss) < 1e-5


def test_layers_name_the_bad_argument_and_modify_nothing():
    rng = np.random.default_rng(2)
    x, w, b = rng.standard_normal((3, 4)), rng.standard_normal((4, 2)), rng.standard_normal(2)
    copies = [a.copy() for a in (x, w, b)]
    with pytest.raises(ValueError, match=r"w has 5 rows .* 4 values"):
        layers.affine_forward(x, rng.standard_normal((5, 2)), b)
    with pytest.raises(ValueError, match=r"b has 3 entries"):
        layers.affine_forward(x, w, np.zeros(3))
    out, cache = layers.affine_forward(x, w, b)
    with pytest.raises(ValueError, match=r"dout must have the shape of the affine layer's output \(3, 2\)"):
        layers.affine_backward(np.zeros((3, 3)), cache)
    with pytest.raises(ValueError, match=r"dout must have the shape of the ReLU's input"):
        layers.relu_backward(np.zeros(2), layers.relu_forward(x)[1])
    with pytest.raises(ValueError, match=r"y has 2 labels but x has 3 rows"):
        layers.softmax_loss(out, np.array([0, 1]))
    with pytest.raises(ValueError, match=r"labels in \[0, C\) = \[0, 2\), found 2"):
        layers.softmax_loss(out, np.array([0, 1, 2]))
    with pytest.raises(TypeError, match="y must be a 1-D array of integer labels"):
        layers.softmax_loss(out, np.array([0.0, 1.0, 1.0]))
    layers.affine_backward(np.ones((3, 2)), cache)
    layers.softmax_loss(out, np.array([0, 1, 1]))
    for a, c in zip((x, w, b), copies):
        np.testing.assert_array_equal(a, c)


# --- the net backends ---------------------------------------------------------------


def test_registry_serves_the_net_contract():
    assert backends.available("net")[0] == backends.fastest_net()
    assert set(backends.available("net")) <= set(backends.NET_BACKENDS)
    with pytest.raises(backends.BackendUnavailable, match=r"unknown net backend 'cython'; net backends are"):
        backends.get("cython", contract="net")
    # the linear contract is untouched by the second one
    assert backends.get("numpy") is not backends.get("numpy", contract="net")
    assert backends.get("numpy", contract="net").backend == "numpy"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_parameter_matches_numerical_gradient(net_backend, seed):
    name, f = net_backend
    rng = np.random.default_rng(seed)
    params, X, y = random_net(rng, 6, 5, 7, 3)
    reg = 0.05
    # no ReLU kink within the difference step of any pre-activation
    assert np.abs(X @ params["W1"] + params["b1"]).min() > 1e-4
    loss, grads = f(params, X, y, reg)
    assert set(grads) == set(NET_PARAMS)
    for k in NET_PARAMS:
        def loss_at(v, k=k):
            return f({**params, k: v}, X, y, reg)[0]
        error = _max_rel(eval_numerical_gradient(loss_at, params[k], h=1e-5), grads[k])
        assert error < 1e-7, f"{name}: d{k} relative error {error:.2e}"


def softmax_rounding(params, X, dtype):
    """Absolute error that rounding the softmax itself may cost, per result.

    The relative tolerances fail only where the loss is tiny (found by
    hypothesis: one float32 example classified right by a wide margin has a
    loss of 3e-8, which float32 rounds to exactly 0 while the float64
    reference keeps it).  Rounding P in the working dtype costs up to
    (C + 2) u absolutely in the loss and in each entry of dscores
    (:mod:`fastsoftmax.harness.agreement` makes the same argument for the
    linear loss); the chain rule carries that to each gradient through the
    magnitudes it is multiplied by.  In float64 this is ~1e-15, negligible.
    """
    p = {k: np.abs(np.asarray(v, dtype=np.float64)) for k, v in params.items()}
    x = np.abs(np.asarray(X, dtype=np.float64))
    u = float(np.finfo(dtype).eps) / 2
    C = p["W2"].shape[1]
    e = (C + 2) * u
    hidden = x @ p["W1"] + p["b1"]  # bounds |h|
    row = p["W2"].sum(axis=1).max()  # bounds |dh| per unit dscores
    return dict(loss=e, b2=e, W2=e * hidden.max(), b1=e * row, W1=e * row * x.max())


@settings(max_examples=40)
@given(n=st.integers(1, 6), d=st.integers(1, 6), h=st.integers(1, 6), c=st.integers(1, 4),
       reg=st.sampled_from([0.0, 0.1]), seed=st.integers(0, 2**32 - 1))
def test_numerical_gradients_over_random_shapes(n, d, h, c, reg, seed):
    """Every parameter of the numpy backend against centred differences, on shapes hypothesis picks.

    The other backends are held to the numpy one (and the loops) by the
    agreement test below.  Draws whose +-h step would cross a ReLU kink are
    discarded (no derivative there).  Norm-wise, against the issue's 1e-7:
    an entry-wise measure is meaningless for the exact zeros that dead units
    and C = 1 produce.  The worst of 400 such draws measured 3e-9.
    """
    params, X, y = random_net(np.random.default_rng(seed), n, d, h, c)
    pre = X @ params["W1"] + params["b1"]
    assume(np.abs(pre).min() > 1e-5 * (1 + np.abs(X).max()))
    f = backends.get("numpy", contract="net")
    _, grads = f(params, X, y, reg)
    for k in NET_PARAMS:
        num = eval_numerical_gradient(lambda v, k=k: f({**params, k: v}, X, y, reg)[0], params[k], h=1e-5)
        scale = max(float(np.abs(num).max()), 1e-3)
        assert float(np.abs(num - grads[k]).max()) / scale < 1e-7, k


@given(
    n=st.integers(1, 9), d=st.integers(1, 12), h=st.integers(1, 12), c=st.integers(1, 6),
    dtype=st.sampled_from([np.float64, np.float32]), scale=st.floats(0.1, 5.0),
    reg=st.sampled_from([0.0, 1e-3, 0.5]), seed=st.integers(0, 2**32 - 1),
    n_threads=st.sampled_from([1, 3]),
)
def test_backends_agree_with_the_reference(n, d, h, c, dtype, scale, reg, seed, n_threads):
    params, X, y = random_net(np.random.default_rng(seed), n, d, h, c, dtype, scale)
    ref_loss, ref = backends.get("python", contract="net")(params, X, y, reg)
    allowance = softmax_rounding(params, X, dtype)
    tol = TOLERANCE[np.dtype(dtype)]
    for name in backends.available("net"):
        with fastsoftmax.threads(n_threads):
            loss, grads = backends.get(name, contract="net")(params, X, y, reg)
        assert abs(loss - ref_loss) <= tol * abs(ref_loss) + allowance["loss"], name
        for k in NET_PARAMS:
            assert grads[k].dtype == dtype and grads[k].shape == params[k].shape, (name, k)
            error = float(np.max(np.abs(grads[k] - ref[k])))
            assert error <= tol * float(np.max(np.abs(ref[k]))) + allowance[k], (name, k, error)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n, d, h", [(31, 513, 5), (33, 1030, 12), (70, 511, 3), (64, 1, 1)])
def test_fused_kernel_at_larger_shapes(n, d, h, dtype):
    """The numba kernel at larger shapes: partial row blocks (4), unit groups (5), several chunks.

    Compared with the numpy backend (itself checked against the loops above)
    with the package's tolerances; the loops would take too long at D ~ 1000.
    """
    params, X, y = random_net(np.random.default_rng(n + d), n, d, h, 4, dtype)
    ref_loss, ref = backends.get("numpy", contract="net")(params, X, y, 0.1)
    f = load_backend("numba", contract="net")
    tol = TOLERANCE[np.dtype(dtype)]
    for n_threads in (1, 3):
        loss, grads = f(params, X, y, 0.1, n_threads=n_threads)
        assert relative_error(loss, ref_loss) <= tol
        for k in NET_PARAMS:
            assert relative_error(grads[k], ref[k]) <= tol, (k, n_threads)


def test_numba_net_recompiles_when_its_cache_cannot_be_read():
    """A cache load that fails (no new overload, a cache still set) warns and recompiles without the cache."""
    pytest.importorskip("numba")
    from numba.core.caching import NullCache

    from fastsoftmax.backends import net_numba

    class Dispatcher:
        """Stands in for a Numba dispatcher whose first call fails reading a damaged cache file."""

        def __init__(self, fail):
            self.overloads, self._cache, self.fail, self.calls = {}, object(), fail, 0

        def __call__(self, *args):
            self.calls += 1
            if self.fail:
                self.fail -= 1
                raise EOFError("Ran out of input")
            return "result"

    fused, helper = Dispatcher(fail=1), Dispatcher(fail=0)
    with pytest.warns(RuntimeWarning, match="cache could not be read .*EOFError.*recompiling without the cache"):
        assert net_numba._call(fused, (helper, fused), 1, 2) == "result"
    assert fused.calls == 2 and isinstance(fused._cache, NullCache) and isinstance(helper._cache, NullCache)
    # without a cache to blame, the error is real and propagates, once
    uncached = Dispatcher(fail=1)
    uncached._cache = NullCache()
    with pytest.raises(EOFError):
        net_numba._call(uncached, (uncached,), 1)
    assert uncached.calls == 1


def test_backend_handles_layouts_and_leaves_inputs_alone(net_backend):
    name, f = net_backend
    params, X, y = random_net(np.random.default_rng(3), 9, 8, 6, 4)
    expected = f(params, X, y, 0.1)
    snapshot = {k: v.copy() for k, v in params.items()}, X.copy(), y.copy()
    odd = {k: np.asfortranarray(v) for k, v in params.items()}
    for v in odd.values():
        v.setflags(write=False)
    Xf = np.asfortranarray(X)
    Xf.setflags(write=False)
    for Xv in (Xf, as_layout(X, "row-padded")):  # Fortran order; a column slice (gaps between rows)
        loss, grads = f(odd, Xv, y.astype(np.int32), 0.1)
        assert relative_error(loss, expected[0]) <= 1e-12
        for k in NET_PARAMS:
            assert relative_error(grads[k], expected[1][k]) <= 1e-12
    for k in NET_PARAMS:
        np.testing.assert_array_equal(params[k], snapshot[0][k])
    np.testing.assert_array_equal(X, snapshot[1])
    np.testing.assert_array_equal(y, snapshot[2])


@pytest.mark.parametrize(
    "change, error, match",
    [
        (dict(W1=np.zeros((5, 3))), ValueError, r"params\['W1'\] has 5 rows but X has 4 columns"),
        (dict(b1=np.zeros(4)), ValueError, r"params\['b1'\] must have shape \(H,\) = \(3,\)"),
        (dict(W2=np.zeros((4, 2))), ValueError, r"params\['W2'\] has 4 rows but params\['W1'\] has 3 columns"),
        (dict(b2=np.zeros((1, 2))), ValueError, r"params\['b2'\] must have shape \(C,\) = \(2,\)"),
        (dict(W1=np.zeros((4, 0)), b1=np.zeros(0), W2=np.zeros((0, 2))), ValueError, r"at least one column \(hidden"),
        (dict(W2=np.full((3, 2), np.nan)), ValueError, r"params\['W2'\] contains NaN or inf"),
        (dict(b1=np.array([0, np.inf, 0])), ValueError, r"params\['b1'\] contains NaN or inf"),
        (dict(W1=np.zeros((4, 3), dtype=complex)), TypeError, r"params\['W1'\] must be an array of real numbers"),
        (dict(X=np.zeros((5, 4))), ValueError, r"y has 6 labels but X has 5 rows"),
        (dict(y=np.array([0, 1, 2, 0, 1, 0])), ValueError, r"labels in \[0, C\) = \[0, 2\), found label 2"),
        (dict(reg=-1.0), ValueError, "reg must be a finite number >= 0"),
        (dict(X=np.full((6, 4), np.nan)), ValueError, "X contains NaN or inf"),
    ],
)
def test_bad_input_names_the_argument(net_backend, change, error, match):
    _, f = net_backend
    rng = np.random.default_rng(4)
    params = dict(W1=rng.standard_normal((4, 3)), b1=np.zeros(3), W2=rng.standard_normal((3, 2)), b2=np.zeros(2))
    args = dict(X=rng.standard_normal((6, 4)), y=rng.integers(0, 2, 6), reg=0.1)
    params.update({k: v for k, v in change.items() if k in NET_PARAMS})
    args.update({k: v for k, v in change.items() if k not in NET_PARAMS})
    with pytest.raises(error, match=match):
        f(params, args["X"], args["y"], args["reg"])


def test_missing_parameter_is_named():
    f = backends.get("numpy", contract="net")
    with pytest.raises(ValueError, match=r"params is missing \['b2'\]"):
        f(dict(W1=np.ones((2, 2)), b1=np.ones(2), W2=np.ones((2, 2))), np.ones((1, 2)), [0], 0.0)
    with pytest.raises(TypeError, match="params must be a dict"):
        f(None, np.ones((1, 2)), [0], 0.0)


# --- TwoLayerNet ----------------------------------------------------------------------


def test_twolayernet_interface_and_sanity_loss():
    assert fastsoftmax.TwoLayerNet is TwoLayerNet  # beside fastsoftmax.Softmax
    net = TwoLayerNet(5, 10, 3, std=1e-1, seed=0)
    assert net.params["W1"].shape == (5, 10) and net.params["b1"].shape == (10,)
    assert net.params["W2"].shape == (10, 3) and net.params["b2"].shape == (3,)
    assert not net.params["b1"].any() and not net.params["b2"].any()
    X = np.random.default_rng(0).standard_normal((8, 5))
    y = np.array([0, 1, 2, 2, 1, 0, 1, 2])
    scores = net.loss(X)
    hidden = np.maximum(X @ net.params["W1"] + net.params["b1"], 0)
    np.testing.assert_allclose(scores, hidden @ net.params["W2"] + net.params["b2"], rtol=1e-13)
    np.testing.assert_array_equal(net.predict(X), scores.argmax(axis=1))
    loss, grads = net.loss(X, y, reg=0.05)
    assert set(grads) == set(NET_PARAMS)
    sq = sum(float(np.sum(net.params[k] ** 2)) for k in ("W1", "W2"))
    assert abs(loss - (net.loss(X, y, reg=0.0)[0] + 0.05 * sq)) < 1e-12
    tiny = TwoLayerNet(5, 10, 3, std=1e-6, seed=0)
    assert abs(tiny.loss(X, y)[0] - np.log(3)) < 1e-6


def test_twolayernet_trains_reproducibly_on_every_backend(tmp_path):
    rng = np.random.default_rng(5)
    X = rng.standard_normal((60, 6))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)
    histories, finals = {}, {}
    for name in backends.available("net"):
        net = TwoLayerNet(6, 8, 3, std=0.1, seed=7, backend=name)
        h = net.train(X, y, X[:20], y[:20], learning_rate=0.5, learning_rate_decay=0.9, reg=1e-3,
                      num_iters=40, batch_size=20)
        histories[name], finals[name] = h, net
        assert len(h["loss_history"]) == 40
        assert len(h["train_acc_history"]) == len(h["val_acc_history"]) == 40 // 3
        assert h["loss_history"][-1] < h["loss_history"][0]
        assert net.settings["backend"] == name and net.settings["learning_rate_decay"] == 0.9
    # same seed: same batches and, within float64 rounding amplified by 40 steps, the same model
    ref = finals["python"].params
    for name, net in finals.items():
        for k in NET_PARAMS:
            assert relative_error(net.params[k], ref[k]) < 1e-9, (name, k)
    again = TwoLayerNet(6, 8, 3, std=0.1, seed=7, backend="numpy")
    assert again.train(X, y, X[:20], y[:20], learning_rate=0.5, learning_rate_decay=0.9, reg=1e-3,
                       num_iters=40, batch_size=20) == histories["numpy"]


def test_twolayernet_float32_and_full_batch():
    rng = np.random.default_rng(6)
    X = rng.standard_normal((30, 4)).astype(np.float32)
    y = rng.integers(0, 2, 30)
    net = TwoLayerNet(4, 5, 2, std=0.1, seed=0, dtype=np.float32)
    h = net.train(X, y, X, y, learning_rate=0.1, num_iters=5, batch_size=None)
    assert len(h["val_acc_history"]) == 5  # an epoch is one full-batch step
    assert all(v.dtype == np.float32 for v in net.params.values())
    assert net.loss(X).dtype == np.float32


def test_twolayernet_save_load_round_trip(tmp_path):
    net = TwoLayerNet(4, 3, 2, std=0.1, seed=1, backend="numpy")
    X = np.random.default_rng(0).standard_normal((5, 4))
    net.train(X, [0, 1, 0, 1, 1], X, [0, 1, 0, 1, 1], num_iters=3, batch_size=2)
    net.class_names = ["a", "b"]
    net.mean_image = np.arange(4.0)
    path = tmp_path / "net.npz"
    net.save(path)
    back = TwoLayerNet.load(path)
    for k in NET_PARAMS:
        np.testing.assert_array_equal(back.params[k], net.params[k])
    assert back.class_names == ["a", "b"] and back.settings == net.settings and back.backend == "numpy"
    np.testing.assert_array_equal(back.mean_image, net.mean_image)
    np.testing.assert_array_equal(back.predict(X), net.predict(X))
    # not a net, damaged, inconsistent
    bad = tmp_path / "bad.npz"
    bad.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="is not a fastsoftmax TwoLayerNet model"):
        TwoLayerNet.load(bad)
    np.savez(bad, W1=np.ones((2, 2)), b1=np.ones(3), W2=np.ones((2, 2)), b2=np.ones(2),
             meta=np.array('{"format": "fastsoftmax.TwoLayerNet/1"}'))
    with pytest.raises(ValueError, match="inconsistent parameters"):
        TwoLayerNet.load(bad)
    # a pickled (object) array is refused before it is unpickled (allow_pickle=False, as Softmax.load)
    np.savez(bad, W1=np.array([object()], dtype=object), b1=np.ones(2), W2=np.ones((2, 2)), b2=np.ones(2),
             meta=np.array('{"format": "fastsoftmax.TwoLayerNet/1"}'))
    with pytest.raises(ValueError, match="is not a fastsoftmax TwoLayerNet model.*pickle"):
        TwoLayerNet.load(bad)
    with pytest.raises(FileNotFoundError):
        TwoLayerNet.load(tmp_path / "missing.npz")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(hidden_size=0), "hidden_size must be an integer >= 1, got 0"),
        (dict(hidden_size=2.5), "hidden_size must be an integer, got float 2.5"),
        (dict(input_size=0), "input_size must be an integer >= 1"),
        (dict(output_size=-1), "output_size must be an integer >= 1"),
        (dict(std=float("nan")), "std must be a finite number"),
        (dict(dtype=np.int32), "dtype must be float32 or float64"),
        (dict(backend="cython"), "unknown net backend 'cython'"),
    ],
)
def test_twolayernet_bad_construction(kwargs, match):
    args = {**dict(input_size=3, hidden_size=4, output_size=2), **kwargs}
    with pytest.raises((ValueError, TypeError), match=match):
        TwoLayerNet(**args)


def test_twolayernet_bad_training_input_and_nonfinite_parameters():
    net = TwoLayerNet(3, 4, 2, std=0.1, seed=0)
    X, y = np.ones((4, 3)), np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"X must have shape \(N, 3\)"):
        net.predict(np.ones((4, 2)))
    with pytest.raises(ValueError, match=r"X_val must be 2-D with one row per label of y_val"):
        net.train(X, y, X[:2], y[:3])
    with pytest.raises(ValueError, match=r"X_val must have 3 columns for params\['W1'\] of shape \(3, 4\)"):
        net.train(X, y, np.ones((4, 5)), y)
    with pytest.raises(ValueError, match="learning_rate_decay must be in"):
        net.train(X, y, X, y, learning_rate_decay=1.5)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        net.train(X, y, X, y, batch_size=0)
    with pytest.raises(ValueError, match=r"labels in \[0, C\) = \[0, 2\)"):
        net.loss(X, np.array([0, 1, 2, 0]))
    net.params["W2"] = net.params["W2"].copy()
    net.params["W2"][0, 0] = np.inf
    with pytest.raises(ValueError, match=r"params\['W2'\] contains NaN or inf"):
        net.loss(X, y)
    with pytest.raises(ValueError, match=r"params\['W2'\] contains NaN or inf"):
        net.predict(X)


def test_training_never_writes_to_arrays_the_caller_holds():
    net = TwoLayerNet(3, 4, 2, std=0.1, seed=0)
    mine = {k: v.copy() for k, v in net.params.items()}
    net.params = dict(mine)
    X = np.random.default_rng(1).standard_normal((10, 3))
    y = np.arange(10) % 2
    X0 = X.copy()
    net.train(X, y, X, y, learning_rate=0.5, num_iters=3, batch_size=4)
    np.testing.assert_array_equal(X, X0)
    assert any(not np.array_equal(mine[k], net.params[k]) for k in NET_PARAMS)
    fresh = TwoLayerNet(3, 4, 2, std=0.1, seed=0)
    for k in NET_PARAMS:
        np.testing.assert_array_equal(mine[k], fresh.params[k])
