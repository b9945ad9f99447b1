"""fastsoftmax.training.gradcheck, and every backend's gradient checked numerically on real images."""

import numpy as np
import pytest

from fastsoftmax.training.gradcheck import eval_numerical_gradient, grad_check_sparse, rel_error


def test_numerical_gradient_of_a_known_function():
    x = np.array([[0.5, -1.0, 2.0], [3.0, 0.0, -0.25]])
    before = x.copy()
    grad = eval_numerical_gradient(lambda v: float(np.sum(v**3)), x)
    np.testing.assert_allclose(grad, 3 * before**2, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(x, before)  # the caller's array is untouched


def test_grad_check_sparse_accepts_right_and_rejects_wrong_gradient(capsys):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 4))

    def f(v):
        return float(np.sum(np.sin(v)))

    good = grad_check_sparse(f, x, np.cos(x), num_checks=8, seed=1, verbose=True)
    assert good.shape == (8,) and good.max() < 1e-8
    assert capsys.readouterr().out.count("relative error:") == 8
    bad = grad_check_sparse(f, x, 1.01 * np.cos(x), num_checks=8, seed=1)
    assert bad.min() > 1e-3  # a 1 % error shows as ~5e-3, far above 1e-7
    assert grad_check_sparse(f, x, np.cos(x), num_checks=3, seed=1).tolist() == good[:3].tolist()
    with pytest.raises(ValueError, match="analytic_grad has shape"):
        grad_check_sparse(f, x, np.cos(x).T)
    with pytest.raises(ValueError, match="num_checks"):
        grad_check_sparse(f, x, np.cos(x), num_checks=0)
    with pytest.raises(TypeError, match="num_checks must be an integer, got float 2.5"):  # the one integer checker
        grad_check_sparse(f, x, np.cos(x), num_checks=2.5)


def test_rel_error():
    assert rel_error(0.0, 0.0) == 0.0
    assert rel_error(1.0, 3.0) == 0.5
    np.testing.assert_allclose(rel_error([1.0, 0.0], [1.0, -2.0]), [0.0, 1.0])


@pytest.mark.parametrize("reg", [0.0, 5e1])
def test_every_backend_passes_the_cs231n_gradient_check(backend, cifar_splits, reg):
    """CS231n's check on the real dev batch: relative errors < 1e-7 in float64.

    The step is h = 1e-6, not CS231n's 1e-5: on raw mean-subtracted pixels the
    truncation error of 1e-5 alone is ~2e-7 relative (see the note in
    fastsoftmax.training.gradcheck; measured 2.3e-7 with 1e-5, 2.2e-9 with 1e-6).  The
    pure-Python reference runs on the first 20 dev rows (its 21 loss calls on
    all 500 would take half a minute); the others on the whole 500-image batch.
    """
    name, f = backend
    n = 20 if name == "python" else len(cifar_splits.X_dev)
    X, y = cifar_splits.X_dev[:n], cifar_splits.y_dev[:n]
    W = 1e-4 * np.random.default_rng(0).standard_normal((X.shape[1], 10))
    loss, dW = f(W, X, y, reg)
    errors = grad_check_sparse(lambda w: f(w, X, y, reg)[0], W, dW, num_checks=10, h=1e-6, seed=0)
    assert errors.max() < 1e-7, f"{name}: {errors}"
