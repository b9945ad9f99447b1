"""fastsoftmax.sklearn.SoftmaxClassifier: scikit-learn's conventions and LogisticRegression's optimum.

The reference is scikit-learn itself: ``parametrize_with_checks`` for the
estimator API and bad-input errors, ``LogisticRegression(solver="lbfgs")``
for the optimum (same objective, same C).  Both are fitted to a tight
``tol`` so that "same optimum" is a statement about the minimizer, not about
two optimizers stopping at the same iteration.
"""

import pickle
import subprocess
import sys
import tracemalloc
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")
pytest.importorskip("scipy")

from sklearn.datasets import load_digits  # noqa: E402
from sklearn.exceptions import ConvergenceWarning, NotFittedError  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from fastsoftmax import backends  # noqa: E402
from fastsoftmax.sklearn import SoftmaxClassifier, weighted_softmax_loss  # noqa: E402

# Small products on a shared, oversubscribed machine: see conftest.one_blas_thread.
pytestmark = pytest.mark.usefixtures("one_blas_thread")

#: The issue's target: coefficients within 1e-4 of LogisticRegression's,
#: relative (Frobenius norm).  Both fits run to TIGHT_TOL, which puts each
#: within ~1e-7 of the true minimizer on these problems (measured: 3e-7 to
#: 1.3e-6 on digits), so 1e-4 has room for the two solvers' different paths
#: and still fails on a wrong objective (a factor 2 in reg moves coef ~10%).
COEF_RTOL = 1e-4
TIGHT_TOL = 1e-9


def _rel(a, b):
    return float(np.linalg.norm(np.asarray(a) - b) / max(np.linalg.norm(b), 1e-300))


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X / 16.0, y


@pytest.fixture(scope="module")
def cifar(cifar_root):
    """The first 600 real CIFAR training images, standardized per pixel (3072 features)."""
    from fastsoftmax.training.data import load_cifar10

    X_train, y_train, *_ = load_cifar10(cifar_root)
    X = X_train[:600].reshape(600, -1).astype(np.float64)
    X -= X.mean(axis=0)
    X /= X.std(axis=0)
    return X, y_train[:600].copy()


def _weights(n, seed=0):
    return np.random.default_rng(seed).uniform(0.1, 3.0, n)


# -- scikit-learn's own estimator checks -----------------------------------------------


@parametrize_with_checks([SoftmaxClassifier(), SoftmaxClassifier(dtype=None, fit_intercept=False)])
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        # Some checks fit tiny or degenerate data on purpose; LogisticRegression
        # warns there too.  Any other warning is still an error.
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


# -- same optimum as LogisticRegression ------------------------------------------------


@pytest.mark.parametrize("fit_intercept", [True, False], ids=["intercept", "no-intercept"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("data", ["digits", "cifar"])
def test_same_optimum_as_logistic_regression(data, weighted, fit_intercept, request):
    X, y = request.getfixturevalue(data)
    C = 1.0 if data == "digits" else 1e-3
    sw = _weights(len(y)) if weighted else None
    settings = dict(C=C, fit_intercept=fit_intercept, tol=TIGHT_TOL, max_iter=3000)
    ref = LogisticRegression(**settings).fit(X, y, sample_weight=sw)
    ours = SoftmaxClassifier(**settings).fit(X, y, sample_weight=sw)
    assert ours.n_iter_[0] < 3000 and ref.n_iter_[0] < 3000  # both converged
    assert _rel(ours.coef_, ref.coef_) < COEF_RTOL
    if fit_intercept:
        assert _rel(ours.intercept_, ref.intercept_) < COEF_RTOL
    else:
        assert not ours.intercept_.any()
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-5)


def test_binary_is_logistic_regression_at_twice_c(digits):
    """Two classes keep two rows; their difference is LogisticRegression's binomial coef at 2C."""
    X, y = digits
    keep = y < 2
    X, y = X[keep], np.where(y[keep] == 1, "one", "zero")
    ours = SoftmaxClassifier(C=0.5, tol=TIGHT_TOL, max_iter=3000).fit(X, y)
    ref = LogisticRegression(C=1.0, tol=TIGHT_TOL, max_iter=3000).fit(X, y)
    assert ours.coef_.shape == (2, X.shape[1]) and ref.coef_.shape == (1, X.shape[1])
    assert _rel(ours.coef_[1] - ours.coef_[0], ref.coef_[0]) < COEF_RTOL
    np.testing.assert_allclose(ours.decision_function(X), ref.decision_function(X), rtol=1e-4, atol=1e-6)
    assert list(ours.classes_) == list(ref.classes_) == ["one", "zero"]


def test_integer_weights_are_counts(digits):
    """Weight 2 is a repeated row and weight 0 a missing one (the objective divides by sum(w))."""
    X, y = digits
    X, y = X[:400], y[:400]
    w = np.random.default_rng(1).integers(0, 3, len(y))
    rows = np.repeat(np.arange(len(y)), w)
    weighted = SoftmaxClassifier(tol=TIGHT_TOL, max_iter=3000).fit(X, y, sample_weight=w)
    repeated = SoftmaxClassifier(tol=TIGHT_TOL, max_iter=3000).fit(X[rows], y[rows])
    assert _rel(weighted.coef_, repeated.coef_) < COEF_RTOL


def test_equal_weights_scale_the_penalty(digits):
    """Weights all k are C -> k*C (scikit-learn's convention), and the fused path is taken."""
    X, y = digits
    a = SoftmaxClassifier(C=0.2, tol=TIGHT_TOL, max_iter=3000).fit(X, y, sample_weight=np.full(len(y), 5.0))
    b = SoftmaxClassifier(C=1.0, tol=TIGHT_TOL, max_iter=3000).fit(X, y)
    assert _rel(a.coef_, b.coef_) < COEF_RTOL


# -- the weighted objective ------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_weighted_loss_gradient_matches_central_differences(dtype):
    rng = np.random.default_rng(3)
    N, D, C = 30, 7, 4
    X = rng.standard_normal((N, D)).astype(dtype)
    y = rng.integers(0, C, N).astype(np.intp)
    W = rng.standard_normal((D, C)).astype(dtype)
    b = rng.standard_normal(C).astype(dtype)
    sw = rng.uniform(0, 2, N).astype(dtype)
    reg = 0.1
    loss, dW, db = weighted_softmax_loss(W, X, y, reg, sw, b=b)
    # float64: central differences with h=1e-6 are exact to ~1e-9 here; the
    # float64 evaluation of a float32 problem's parameters is tested at the
    # float32 rounding of the analytic gradient (~1e-6 relative, 1e-4 kept).
    f = lambda W_, b_: weighted_softmax_loss(W_.astype(np.float64), X.astype(np.float64), y, reg,  # noqa: E731
                                            sw.astype(np.float64), b=b_.astype(np.float64))[0]
    h = 1e-6
    W64, b64 = W.astype(np.float64), b.astype(np.float64)
    num_dW = np.zeros((D, C))
    for idx in np.ndindex(D, C):
        E = np.zeros((D, C))
        E[idx] = h
        num_dW[idx] = (f(W64 + E, b64) - f(W64 - E, b64)) / (2 * h)
    num_db = np.array([(f(W64, b64 + h * e) - f(W64, b64 - h * e)) / (2 * h) for e in np.eye(C)])
    rtol = 1e-6 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(dW, num_dW, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(db, num_db, rtol=rtol, atol=rtol)
    assert dW.dtype == dtype and db.dtype == dtype


def test_weighted_loss_with_equal_weights_is_softmax_loss():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((50, 9))
    y = rng.integers(0, 5, 50).astype(np.intp)
    W, b = rng.standard_normal((9, 5)), rng.standard_normal(5)
    expected = backends.get("python")(W, X, y, 0.3, b=b)
    got = weighted_softmax_loss(W, X, y, 0.3, np.full(50, 2.5), b=b)
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-12)
    np.testing.assert_allclose(got[1], expected[1], rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(got[2], expected[2], rtol=1e-10, atol=1e-14)


# -- backends, threads, dtype, copies ---------------------------------------------------


def test_every_backend_reaches_the_same_optimum(fast_backend, digits):
    name, _ = fast_backend
    X, y = digits
    X, y = X[:150], y[:150]  # the python reference loops over examples
    ref = SoftmaxClassifier(tol=TIGHT_TOL, max_iter=3000, backend="python").fit(X, y)
    ours = SoftmaxClassifier(tol=TIGHT_TOL, max_iter=3000, backend=name, n_threads=2).fit(X, y)
    assert ours.backend_ == name
    assert _rel(ours.coef_, ref.coef_) < COEF_RTOL
    assert _rel(ours.intercept_, ref.intercept_) < COEF_RTOL


def test_float32_fits_in_float32_without_copying_x():
    rng = np.random.default_rng(5)
    X32 = rng.standard_normal((8000, 500)).astype(np.float32)  # 16 MB
    y = rng.integers(0, 10, 8000)
    # Everything else fit allocates is O(D * C + N * C): L-BFGS's history
    # (2 * 10 * D * C float64) and the scores, ~2 MB at peak here; a copy of
    # X (16 MB as float32, 32 MB as float64) would show.  The numpy
    # backend reads b natively (the compiled ones copy in the interim).
    clf = SoftmaxClassifier(dtype=np.float32, backend="numpy", max_iter=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X32[:10], y[:10])  # imports and first calls outside the measurement
        tracemalloc.start()
        try:
            clf.fit(X32, y)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        ref = SoftmaxClassifier(max_iter=10).fit(X32.astype(np.float64), y)
    assert peak < X32.nbytes / 4, f"fit allocated {peak} bytes at peak; X is {X32.nbytes}"
    assert clf.coef_.dtype == np.float32 and clf.intercept_.dtype == np.float32
    assert ref.coef_.dtype == np.float64
    # Same iterates up to float32 rounding of the gradients (~1e-6 relative).
    assert _rel(clf.coef_, ref.coef_) < 1e-3


def test_dtype_none_keeps_float32_and_float64_default_casts(digits):
    X, y = digits
    X32 = X.astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        assert SoftmaxClassifier(dtype=None, max_iter=20).fit(X32, y).coef_.dtype == np.float32
        assert SoftmaxClassifier(max_iter=20).fit(X32, y).coef_.dtype == np.float64
        assert SoftmaxClassifier(dtype=None, max_iter=20).fit(X, y).coef_.dtype == np.float64


def test_inputs_are_not_modified(digits):
    X, y = digits
    X = X.copy()
    X.flags.writeable = False  # a write would raise
    y_str = np.array([f"c{v}" for v in y])
    sw = _weights(len(y))
    before = (X.copy(), y_str.copy(), sw.copy())
    for solver in ("lbfgs", "sgd"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            SoftmaxClassifier(solver=solver, max_iter=5, random_state=0).fit(X, y_str, sample_weight=sw)
    np.testing.assert_array_equal(X, before[0])
    np.testing.assert_array_equal(y_str, before[1])
    np.testing.assert_array_equal(sw, before[2])


# -- API: labels, pipelines, pickling, warnings, errors ---------------------------------


def test_string_labels_and_probabilities(digits):
    X, y = digits
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
    clf = SoftmaxClassifier(max_iter=500).fit(X, names[y])
    assert list(clf.classes_) == sorted(names)
    assert clf.n_features_in_ == 64 and clf.coef_.shape == (10, 64) and clf.intercept_.shape == (10,)
    P = clf.predict_proba(X)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(np.log(P), clf.predict_log_proba(X), rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[P.argmax(axis=1)])
    assert clf.score(X, names[y]) > 0.95


def test_pipeline_grid_search_cross_val_and_pickle(digits):
    X, y = digits
    X, y = X[:600], y[:600]
    pipe = make_pipeline(StandardScaler(), SoftmaxClassifier(max_iter=300))
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.75
    search = GridSearchCV(pipe, {"softmaxclassifier__C": [1e-3, 1.0]}, cv=3).fit(X, y)
    assert search.best_params_ == {"softmaxclassifier__C": 1.0}
    fitted = search.best_estimator_
    clone = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(clone.predict_proba(X), fitted.predict_proba(X))
    assert clone.get_params()["softmaxclassifier__C"] == 1.0


def test_max_iter_gives_convergence_warning(digits):
    X, y = digits
    with pytest.warns(ConvergenceWarning, match="lbfgs failed to converge after 3 iteration"):
        clf = SoftmaxClassifier(max_iter=3).fit(X, y)
    assert clf.n_iter_.tolist() == [3]


def test_not_fitted(digits):
    with pytest.raises(NotFittedError):
        SoftmaxClassifier().predict(digits[0])


@pytest.mark.parametrize(
    "params, error, match",
    [
        (dict(C=0), ValueError, "C must be a finite number > 0"),
        (dict(C=np.nan), ValueError, "C must be a finite number > 0"),
        (dict(C=-1.0), ValueError, "C must be"),
        (dict(C="1"), TypeError, "C must be a real number"),
        (dict(solver="newton"), ValueError, "solver must be one of"),
        (dict(max_iter=-1), ValueError, "max_iter must be an integer >= 0"),
        (dict(tol=-1e-3), ValueError, "tol must be"),
        (dict(tol=None), ValueError, "tol=None is only for solver='sgd'"),
        (dict(dtype=np.int64), ValueError, "dtype must be"),
        (dict(dtype="no such"), TypeError, "dtype must be"),
        (dict(fit_intercept="yes"), TypeError, "fit_intercept must be a bool"),
        (dict(learning_rate=0.0), ValueError, "learning_rate must be"),
        (dict(batch_size=0), ValueError, "batch_size must be an integer >= 1"),
        (dict(backend="nope"), backends.BackendUnavailable, "unknown backend 'nope'"),
        (dict(n_threads=0), ValueError, "n_threads must be an integer >= 1"),
        (dict(n_threads=1.5), TypeError, "n_threads must be an integer"),
    ],
)
def test_bad_parameters_are_named(params, error, match, digits):
    X, y = digits
    with pytest.raises(error, match=match):
        SoftmaxClassifier(**params).fit(X[:50], y[:50])


def test_bad_sample_weights(digits):
    X, y = digits
    with pytest.raises(ValueError, match="Negative values in data"):
        SoftmaxClassifier().fit(X[:50], y[:50], sample_weight=np.r_[-1.0, np.ones(49)])
    with pytest.raises(ValueError, match="[Ss]ample weights? .*(zero|positive)|all weights are zero"):
        SoftmaxClassifier().fit(X[:50], y[:50], sample_weight=np.zeros(50))


# -- SGD ------------------------------------------------------------------------------


def _objective(clf, X, y, sw=None):
    sw = np.ones(len(y)) if sw is None else sw
    reg = 1.0 / (2.0 * clf.C * sw.sum())
    yi = np.searchsorted(clf.classes_, y)
    return weighted_softmax_loss(clf.coef_.T.copy(), X, yi, reg, sw, b=clf.intercept_.copy())[0]


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_sgd_approaches_the_lbfgs_optimum(weighted, digits):
    X, y = digits
    sw = _weights(len(y)) if weighted else None
    best = SoftmaxClassifier(C=0.1, tol=TIGHT_TOL, max_iter=3000).fit(X, y, sample_weight=sw)
    sgd = SoftmaxClassifier(C=0.1, solver="sgd", learning_rate=0.5, batch_size=100, max_iter=40, tol=None,
                            random_state=0).fit(X, y, sample_weight=sw)
    f_best, f_sgd = _objective(best, X, y, sw), _objective(sgd, X, y, sw)
    f_zero = np.log(10)  # the objective at W = 0, b = 0
    assert f_best <= f_sgd < f_best + 0.02 * (f_zero - f_best), (f_best, f_sgd)
    assert sgd.n_iter_.tolist() == [40]


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_sgd_fits_the_intercept_and_draws_by_the_weights(weighted):
    """Class priors far from uniform put the optimum's intercept far from zero, and
    weights of 8 on the rarest class move it by more than 1: SGD must land near
    L-BFGS's intercept in both cases, so an intercept left at zero, or rows drawn
    uniformly despite the weights, fail here (the digits test above cannot tell).
    Intercepts are compared centered: the penalty leaves b's mean free, and both
    solvers keep it at the start's zero only up to rounding."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((1200, 4))
    y = np.argmax(X @ rng.standard_normal((4, 3)) + [1.5, 0.0, -1.5] + rng.gumbel(size=(1200, 3)), axis=1)
    sw = np.where(y == 2, 8.0, 1.0) if weighted else None
    best = SoftmaxClassifier(tol=1e-8, max_iter=1000).fit(X, y, sample_weight=sw)
    other = SoftmaxClassifier(tol=1e-8, max_iter=1000).fit(X, y, sample_weight=None if weighted else np.where(y == 2, 8.0, 1.0))
    sgd = SoftmaxClassifier(solver="sgd", learning_rate=0.1, batch_size=50, max_iter=100, tol=None,
                            random_state=0).fit(X, y, sample_weight=sw)
    centered = lambda b: b - b.mean()  # noqa: E731
    assert np.abs(centered(best.intercept_)).max() > 0.5  # a zero intercept is far off
    assert np.abs(centered(best.intercept_) - centered(other.intercept_)).max() > 1.0  # so are the other draws
    np.testing.assert_allclose(centered(sgd.intercept_), centered(best.intercept_), atol=0.15)
    np.testing.assert_allclose(sgd.coef_, best.coef_, atol=0.15)
    no_b = SoftmaxClassifier(solver="sgd", fit_intercept=False, learning_rate=0.1, max_iter=2, tol=None).fit(X, y)
    np.testing.assert_array_equal(no_b.intercept_, 0)


def test_sgd_divergence_is_reported_with_the_epoch():
    """A learning rate that overflows the scores gets the estimator's own error,
    naming the epoch and the setting to lower."""
    rng = np.random.default_rng(1)
    X = 1e150 * rng.standard_normal((100, 3))
    y = np.arange(100) % 2
    with pytest.raises(FloatingPointError, match=r"SGD diverged in epoch 1 .*lower learning_rate \(now 1000.0\)"):
        SoftmaxClassifier(solver="sgd", learning_rate=1e3, batch_size=10, max_iter=3, tol=None).fit(X, y)


def test_sgd_is_reproducible_and_warns_at_max_iter(digits):
    X, y = digits
    make = lambda: SoftmaxClassifier(solver="sgd", learning_rate=0.5, max_iter=2, random_state=7)  # noqa: E731
    with pytest.warns(ConvergenceWarning, match="sgd stopped after max_iter=2"):
        a = make().fit(X, y)
    with pytest.warns(ConvergenceWarning):
        b = make().fit(X, y)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    c = SoftmaxClassifier(solver="sgd", learning_rate=0.5, max_iter=2, tol=None, random_state=8).fit(X, y)
    assert not np.array_equal(a.coef_, c.coef_)


def test_sgd_stops_on_tol(digits):
    X, y = digits
    clf = SoftmaxClassifier(solver="sgd", learning_rate=0.5, max_iter=500, tol=1.0, random_state=0).fit(X, y)
    # The first epoch improves on "nothing yet"; none after it gains 1.0, and
    # after 5 such epochs (the patience) it stops, converged: no warning.
    assert clf.n_iter_.tolist() == [6]


# -- packaging -------------------------------------------------------------------------


def test_import_fastsoftmax_does_not_import_sklearn_or_scipy():
    code = "import sys, fastsoftmax; print([m for m in ('sklearn', 'scipy') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    code = "import sys, fastsoftmax; fastsoftmax.sklearn.SoftmaxClassifier; print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True"


# -- the fit benchmark (fastsoftmax bench --sklearn) -------------------------------------


def test_bench_sklearn_table_checks_and_times_every_row(tmp_path, capsys):
    from fastsoftmax import cli
    from fastsoftmax.testing import write_fake_cifar10

    root = write_fake_cifar10(tmp_path / "cifar", n=4)
    status = cli.main(["bench", "--sklearn", "--data", str(root), "--threads", "1", "--repeat", "2",
                       "--C", "0.01", "--tol", "1e-6", "--max-iter", "200"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "fit on 20 x 3072 CIFAR-10" in out and "1 thread(s), median of 2" in out
    for row in ("LogisticRegression float64", "SoftmaxClassifier float64", "LogisticRegression float32",
                "SoftmaxClassifier float32"):
        assert row in out
    assert out.count(" ok") == 4 and "DISAGREES" not in out


def test_bench_sklearn_run_fails_a_row_that_disagrees(tmp_path, monkeypatch):
    """The check can fail: a SoftmaxClassifier at the wrong C is reported, exit status 1."""
    from fastsoftmax.harness import fit
    from fastsoftmax.testing import write_fake_cifar10

    root = write_fake_cifar10(tmp_path / "cifar", n=4)
    real = fit.fit_rows

    def wrong_c(C, tol, max_iter, fit_intercept, backend=None):
        rows = real(C, tol, max_iter, fit_intercept, backend)
        make, dt = rows["SoftmaxClassifier float64"]
        rows["SoftmaxClassifier float64"] = (lambda: make().set_params(C=2 * C), dt)
        return rows

    monkeypatch.setattr(fit, "fit_rows", wrong_c)
    lines = []
    records, status = fit.run_fit(root, threads=[1], repeat=1, C=0.01, tol=1e-6, max_iter=200, out=lines.append)
    assert status == 1
    bad = [r for r in records if not r["ok"]]
    assert [r["row"] for r in bad] == ["SoftmaxClassifier float64"]
    assert any("DISAGREES" in line for line in lines)


def test_bench_sklearn_needs_data(capsys):
    from fastsoftmax import cli

    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "--sklearn"])
    assert exc.value.code == 2
    assert "--sklearn needs --data DIR" in capsys.readouterr().err
