"""A scikit-learn estimator: multinomial logistic regression on the fused kernels.

Design note
-----------
:class:`SoftmaxClassifier` is an adapter, like :mod:`fastsoftmax.dask`: it
owns no kernel and no input check of its own.  scikit-learn's
``validate_data`` gives the errors scikit-learn users expect (and its
estimator checks test); the loss and gradient are
:func:`fastsoftmax.backends.get`'s validated ``softmax_loss`` for the chosen
backend, which also checks the ``n_threads`` it is handed; numbers are
checked by the package's ``real``/``integer``.  scikit-learn and
SciPy are imported by this module only, so ``import fastsoftmax`` does not
need them (``pip install fastsoftmax[sklearn]``).

The objective is scikit-learn's, so that the optimum is the same point
``LogisticRegression(solver="lbfgs")`` reaches at the same ``C``.  In
scikit-learn 1.x ``_logistic_regression_path`` minimizes, with
``s = sum(sample_weight)`` (``N`` when there are none) and the intercept
``b`` not penalized,

    sum_i w_i * l_i(W, b) / s + ||W||^2 / (2 * C * s),

``l_i`` the cross-entropy of example ``i``.  This package's loss is
``mean_i l_i + reg * ||W||^2``, so without weights

    reg = 1 / (2 * C * N),

and with weights the data term is the weighted mean and ``reg = 1 / (2 * C * s)``
(weights act as counts: scaling them all by ``k`` is ``C -> k * C``).

Solvers:

* ``"lbfgs"`` (default): SciPy's L-BFGS-B with scikit-learn's settings
  (``gtol=tol``, ``maxls=50``, ``ftol=64 * eps``, start at zero), so ``tol``
  and ``max_iter`` mean what they mean for ``LogisticRegression``.  The
  objective is one fused kernel call per evaluation: ``b=`` carries the
  intercept (no column of ones appended to X, no copy of X) and ``out=``
  writes dW straight into the gradient vector SciPy receives (SciPy copies
  the gradient it is given, so one buffer serves every call).
* ``"sgd"``: epochs of the package's minibatch SGD step
  (:class:`fastsoftmax.training.sgd.SGDStep`, the step of
  :class:`fastsoftmax.training.Softmax`): minibatches are row indices
  (``rows=``, no copy of the batch), W and the intercept are updated in
  place (``b=``), and with sample weights the rows are drawn with
  probability ``w_i / s``, which makes the minibatch gradient an unbiased
  estimate of the weighted objective's.

Sample weights are not in the fused kernels.  When they are not all equal
the objective is :func:`weighted_softmax_loss`, a NumPy (BLAS) evaluation
written once here and tested against ``LogisticRegression``; equal weights
use the fused kernel (the data term is then a plain mean).

Dtype: ``dtype=np.float64`` (default) fits in float64; ``np.float32`` fits in
float32 (a float32 X is used as it is, never copied to float64; SciPy's
parameter vector stays float64 and W is cast to float32 per call, which
costs D x C, not N x D); ``None`` keeps float32 input in float32 and fits
anything else in float64, as ``LogisticRegression`` does.

Binary problems keep the softmax parameterization: ``coef_`` is (2, D), and
``decision_function`` returns the 1-D score difference scikit-learn expects
for two classes.  With the penalty on both rows this is the binomial model
of ``LogisticRegression`` at ``2 * C`` (at the optimum the rows are
opposite, so ``||W||^2`` is half the binomial ``||w||^2``); tested.
"""

from __future__ import annotations

import contextlib
import functools
import numbers
import warnings

import numpy as np
from scipy import optimize
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, check_random_state, validate_data

from . import backends
from .backends._validate import integer, real
from .training.sgd import SGDStep, draw_rows

__all__ = ["SoftmaxClassifier", "weighted_softmax_loss"]

_SOLVERS = ("lbfgs", "sgd")
#: Epochs without improvement larger than ``tol`` after which SGD stops
#: (as ``SGDClassifier(n_iter_no_change=5)``).
_SGD_PATIENCE = 5


def weighted_softmax_loss(W, X, y, reg, sample_weight, *, b=None, out=None):
    """Weighted softmax loss and gradient, in NumPy: the objective with sample weights.

    ``loss = sum_i v_i * l_i + reg * ||W||^2`` with ``v = sample_weight /
    sum(sample_weight)`` and ``l_i = logsumexp(S[i]) - S[i, y[i]]``,
    ``S = X @ W (+ b)``.  Equal weights give ``fastsoftmax.softmax_loss``.
    Inputs are trusted (the estimator validated them); the computation runs
    in the dtype of W and X (both float32 or both float64).

    Parameters
    ----------
    W : ndarray, shape (D, C)
    X : ndarray, shape (N, D)
    y : ndarray, shape (N,), intp, labels in [0, C)
    reg : float
        L2 strength on W (never on b).
    sample_weight : ndarray, shape (N,)
        Non-negative, with a positive sum.
    b : ndarray, shape (C,), optional
        Unpenalized intercept.
    out : ndarray, shape (D, C), optional
        Where to write dW.

    Returns
    -------
    loss : float
    dW : ndarray, shape (D, C)
        ``X.T @ (v[:, None] * (P - Y)) + 2 * reg * W``.
    db : ndarray, shape (C,)
        ``sum_i v_i * (P[i] - Y[i])``; only when ``b`` is given.
    """
    v = (sample_weight / sample_weight.sum()).astype(X.dtype, copy=False)
    S = X @ W
    if b is not None:
        S += b
    S -= S.max(axis=1, keepdims=True)
    rows = np.arange(len(y))
    correct = S[rows, y].copy()
    np.exp(S, out=S)
    Z = S.sum(axis=1)
    loss = float(v @ (np.log(Z) - correct)) + reg * float(np.vdot(W, W))
    S /= Z[:, None]  # P
    S[rows, y] -= 1  # P - Y
    S *= v[:, None]
    # (C, D) product copied transposed, as the numpy backend does:
    # matmul(X.T, S, out=out) is slower (measured ~1.5x here).
    if out is None:
        out = np.empty(W.shape, dtype=W.dtype)
    out[...] = (S.T @ X).T
    dW = out
    dW += (2 * reg) * W
    if b is None:
        return loss, dW
    return loss, dW, S.sum(axis=0)


class SoftmaxClassifier(ClassifierMixin, BaseEstimator):
    """Multinomial logistic regression (softmax) fitted with fastsoftmax's fused kernels.

    A drop-in for ``LogisticRegression(solver="lbfgs")`` on dense data: same
    objective, same ``C``, ``tol`` and ``max_iter``, same optimum (see the
    module's design note for the mapping ``reg = 1 / (2 * C * sum(w))``).

    Parameters
    ----------
    C : float, default=1.0
        Inverse L2 strength, > 0; ``np.inf`` for no penalty.  The intercept
        is never penalized.
    fit_intercept : bool, default=True
        Fit an intercept per class (passed to the kernel as ``b``; X is not
        copied).
    solver : {"lbfgs", "sgd"}, default="lbfgs"
        Full-batch L-BFGS (SciPy) or minibatch SGD.
    max_iter : int, default=100
        L-BFGS iterations, or SGD epochs (passes of ``ceil(N / batch_size)``
        steps).
    tol : float or None, default=1e-4
        L-BFGS stops when the largest gradient component is <= ``tol``
        (SciPy's ``gtol``, as ``LogisticRegression``).  SGD stops when the
        epoch's mean loss has not improved by more than ``tol`` for 5
        epochs; None runs all ``max_iter`` epochs.  (L-BFGS needs a number.)
    dtype : {numpy.float64, numpy.float32, None}, default=numpy.float64
        Dtype the fit runs in.  float32 uses a float32 X as it is (no float64
        copy); None keeps float32 input in float32 and fits anything else
        in float64.
    backend : str or None, default=None
        fastsoftmax backend (:func:`fastsoftmax.available`); None picks
        :func:`fastsoftmax.fastest` for the fit's dtype and N.
    n_threads : int or None, default=None
        Threads for the compiled kernels and BLAS during ``fit``; None keeps
        the current settings (:func:`fastsoftmax.get_num_threads`, BLAS's own).
    learning_rate : float, default=1e-3
        SGD step size (``solver="sgd"`` only).
    batch_size : int, default=200
        SGD examples per step, drawn with replacement (``solver="sgd"`` only).
    random_state : int, RandomState instance or None, default=None
        Seeds SGD's minibatch draws (``solver="sgd"`` only).

    Attributes
    ----------
    classes_ : ndarray, shape (n_classes,)
        The sorted distinct labels (any type, strings too).
    coef_ : ndarray, shape (n_classes, n_features)
        Weights, in the fit's dtype (``W.T`` in this package's notation).
    intercept_ : ndarray, shape (n_classes,)
        Zeros when ``fit_intercept=False``.
    n_iter_ : ndarray, shape (1,), int32
        Iterations (L-BFGS) or epochs (SGD) run, as ``LogisticRegression``.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when X had string column names.
    backend_ : str
        The backend the fit used.
    loss_ : float
        L-BFGS: the objective (the form in the design note) at the solution;
        SGD: the mean minibatch loss of the last epoch.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from fastsoftmax.sklearn import SoftmaxClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = SoftmaxClassifier(C=0.1, max_iter=1000).fit(X / 16, y)
    >>> clf.coef_.shape
    (10, 64)
    """

    def __init__(
        self,
        C=1.0,
        *,
        fit_intercept=True,
        solver="lbfgs",
        max_iter=100,
        tol=1e-4,
        dtype=np.float64,
        backend=None,
        n_threads=None,
        learning_rate=1e-3,
        batch_size=200,
        random_state=None,
    ):
        self.C = C
        self.fit_intercept = fit_intercept
        self.solver = solver
        self.max_iter = max_iter
        self.tol = tol
        self.dtype = dtype
        self.backend = backend
        self.n_threads = n_threads
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.random_state = random_state

    # -- fitting -------------------------------------------------------------------

    def _checked_params(self):
        """The hyper-parameters, checked: a clear error before any work."""
        if self.solver not in _SOLVERS:
            raise ValueError(f"solver must be one of {_SOLVERS}, got {self.solver!r}")
        if not isinstance(self.fit_intercept, (bool, np.bool_)):
            raise TypeError(f"fit_intercept must be a bool, got {self.fit_intercept!r}")
        # The package's one checkers of numbers (C may also be inf: no penalty).
        C = np.inf if isinstance(self.C, numbers.Real) and self.C == np.inf else real(self.C, "C", positive=True)
        max_iter = integer(self.max_iter, "max_iter", 0)
        if self.tol is None and self.solver == "lbfgs":
            raise ValueError("tol=None is only for solver='sgd'; L-BFGS needs a gradient tolerance")
        tol = None if self.tol is None else real(self.tol, "tol")
        if self.dtype is None:
            dtype = [np.float64, np.float32]
        else:
            try:
                dtype = np.dtype(self.dtype)
            except TypeError as exc:
                raise TypeError(f"dtype must be numpy.float64, numpy.float32 or None, got {self.dtype!r}") from exc
            if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
                raise ValueError(f"dtype must be numpy.float64, numpy.float32 or None, got {self.dtype!r}")
        learning_rate = real(self.learning_rate, "learning_rate", positive=True)
        batch_size = integer(self.batch_size, "batch_size", 1)
        n_threads = None if self.n_threads is None else integer(self.n_threads, "n_threads", 1)
        return C, max_iter, tol, dtype, learning_rate, batch_size, n_threads

    @staticmethod
    def _blas_limit(n_threads):
        """BLAS held to n_threads (None: untouched); the kernels get n_threads per call."""
        if n_threads is None:
            return contextlib.nullcontext()
        from threadpoolctl import threadpool_limits

        return threadpool_limits(limits=n_threads)

    def fit(self, X, y, sample_weight=None):
        """Fit the model to (X, y), optionally weighted.

        Parameters
        ----------
        X : array-like, shape (n_samples, n_features)
            Dense training data (sparse input is rejected).  Not modified; a
            copy is made only if it is not C-ordered or not in the fit dtype.
        y : array-like, shape (n_samples,)
            Labels of any type scikit-learn accepts for classification, at
            least two distinct.
        sample_weight : array-like, shape (n_samples,), optional
            Non-negative weights with a positive sum; act as counts.

        Returns
        -------
        self
        """
        C, max_iter, tol, dtype, learning_rate, batch_size, n_threads = self._checked_params()
        X, y = validate_data(self, X, y, dtype=dtype, order="C")
        check_classification_targets(y)
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        y_idx = np.ascontiguousarray(y_idx.reshape(-1), dtype=np.intp)
        n_classes = len(self.classes_)
        if n_classes < 2:
            raise ValueError(
                f"SoftmaxClassifier needs samples of at least 2 classes in the data, but the data "
                f"contains only one class: {self.classes_[0]!r}"
            )
        N, D = X.shape
        if sample_weight is None:
            sw = None
            sw_sum = float(N)
        else:
            sw = _check_sample_weight(sample_weight, X, dtype=X.dtype, ensure_non_negative=True)
            sw_sum = float(sw.sum(dtype=np.float64))
            if not sw_sum > 0:
                raise ValueError("sample_weight must have a positive sum (all weights are zero)")
            if np.all(sw == sw[0]):
                sw = None  # equal weights: the data term is a plain mean (fused kernel)
        reg = 0.0 if C == np.inf else 1.0 / (2.0 * C * sw_sum)
        name = self.backend if self.backend is not None else backends.fastest(X.dtype, N)
        loss_fn = backends.get(name)  # BackendUnavailable (a ValueError) for a bad name
        self.backend_ = name

        loss_fn = functools.partial(loss_fn, n_threads=n_threads)
        with self._blas_limit(n_threads):
            if self.solver == "lbfgs":
                W, b, self.loss_, n_iter = self._lbfgs(loss_fn, X, y_idx, reg, sw, n_classes, max_iter, tol)
            else:
                W, b, self.loss_, n_iter = self._sgd(
                    name, X, y_idx, reg, sw, n_classes, max_iter, tol, learning_rate, batch_size, n_threads
                )
        self.coef_ = np.ascontiguousarray(W.T)
        self.intercept_ = b if b is not None else np.zeros(n_classes, dtype=X.dtype)
        self.n_iter_ = np.array([n_iter], dtype=np.int32)
        return self

    def _lbfgs(self, loss_fn, X, y, reg, sw, n_classes, max_iter, tol):
        """Full-batch L-BFGS-B on ``theta = [W.ravel(), b]`` (float64, as SciPy needs)."""
        N, D = X.shape
        C = n_classes
        DC = D * C
        fit_b = bool(self.fit_intercept)
        dtype = X.dtype
        g = np.empty(DC + C * fit_b)  # SciPy copies the gradient it gets: one buffer for all calls
        gW = g[:DC].reshape(D, C)
        out = gW if dtype == np.float64 else np.empty((D, C), dtype=dtype)

        def objective(theta):
            W = theta[:DC].reshape(D, C).astype(dtype, copy=False)
            b = theta[DC:].astype(dtype, copy=False) if fit_b else None
            if sw is None:
                result = loss_fn(W, X, y, reg, b=b, out=out) if fit_b else loss_fn(W, X, y, reg, out=out)
            else:
                result = weighted_softmax_loss(W, X, y, reg, sw, b=b, out=out)
            if result[1] is not gW:
                gW[...] = result[1]
            if fit_b:
                g[DC:] = result[2]
            return result[0], g

        res = optimize.minimize(
            objective,
            np.zeros(DC + C * fit_b),
            method="L-BFGS-B",
            jac=True,
            options={"maxiter": max_iter, "maxls": 50, "gtol": tol, "ftol": 64 * np.finfo(float).eps},
        )
        n_iter = min(int(res.nit), max_iter)
        if res.status != 0:
            warnings.warn(
                f"lbfgs failed to converge after {n_iter} iteration(s) (status={res.status}): "
                f"{res.message}. Increase the number of iterations (max_iter) or scale the data "
                "(e.g. sklearn.preprocessing.StandardScaler).",
                ConvergenceWarning,
                stacklevel=3,
            )
        theta = res.x
        W = theta[:DC].reshape(D, C).astype(dtype)
        b = theta[DC:].astype(dtype) if fit_b else None
        return W, b, float(res.fun), n_iter

    def _sgd(self, name, X, y, reg, sw, n_classes, max_iter, tol, learning_rate, batch_size, n_threads):
        """Epochs of ``ceil(N / batch_size)`` SGD steps, stopping on ``tol`` as SGDClassifier.

        The epoch's loss is the mean of its steps' minibatch losses.  Rows are
        drawn with replacement, uniformly (:func:`~fastsoftmax.training.sgd.draw_rows`,
        as ``Softmax.train``) or, with sample weights, with probability
        ``w_i / s`` (inverse-CDF draws of uniforms, as ``rng.choice(N, p=...)``
        draws, with the table built once, not per step).
        """
        N, D = X.shape
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        rng = np.random.default_rng(seed)
        if sw is None:
            def draw():
                return draw_rows(rng, N, batch_size)
        else:
            cdf = np.cumsum(sw, dtype=np.float64)
            cdf /= cdf[-1]

            def draw():
                return cdf.searchsorted(rng.random(batch_size), side="right")
        W = np.zeros((D, n_classes), dtype=X.dtype)
        b = np.zeros(n_classes, dtype=X.dtype) if self.fit_intercept else None
        step = SGDStep(W, learning_rate, reg, b=b, backend=name, n_threads=n_threads)
        steps = -(-N // batch_size)
        best, stale, epoch, loss = np.inf, 0, 0, np.nan
        converged = max_iter == 0
        for epoch in range(1, max_iter + 1):
            try:
                loss = float(np.mean([step(X, y, draw()) for _ in range(steps)]))
            except FloatingPointError as exc:  # the kernel's overflow error, raised before W was touched
                raise FloatingPointError(
                    f"SGD diverged in epoch {epoch} ({exc}); lower learning_rate (now {learning_rate})"
                ) from exc
            if not np.isfinite(loss):
                raise FloatingPointError(
                    f"SGD diverged (loss {loss} in epoch {epoch}); lower learning_rate (now {learning_rate})"
                )
            if tol is not None:
                stale = stale + 1 if loss > best - tol else 0
                best = min(best, loss)
                if stale >= _SGD_PATIENCE:
                    converged = True
                    break
        if not converged and tol is not None:
            warnings.warn(
                f"sgd stopped after max_iter={max_iter} epochs with the loss still improving by more than "
                f"tol={tol}; increase max_iter or learning_rate.",
                ConvergenceWarning,
                stacklevel=3,
            )
        return W, b, loss, epoch

    # -- prediction ----------------------------------------------------------------

    def _scores(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return X @ self.coef_.T + self.intercept_

    def decision_function(self, X):
        """Class scores ``X @ coef_.T + intercept_``.

        Parameters
        ----------
        X : array-like, shape (n_samples, n_features)

        Returns
        -------
        ndarray, shape (n_samples, n_classes), or (n_samples,) for two classes
            For two classes, the score of ``classes_[1]`` minus that of
            ``classes_[0]`` (positive means ``classes_[1]``), as scikit-learn
            expects of a binary classifier.
        """
        S = self._scores(X)
        return S[:, 1] - S[:, 0] if S.shape[1] == 2 else S

    def predict(self, X):
        """Most probable class of each row.

        Returns
        -------
        ndarray, shape (n_samples,)
            Values from ``classes_``.
        """
        S = self._scores(X)  # first: NotFittedError before classes_ is read
        return self.classes_[np.argmax(S, axis=1)]

    def predict_log_proba(self, X):
        """Log of the softmax probabilities.

        Returns
        -------
        ndarray, shape (n_samples, n_classes)
            Columns in ``classes_`` order.
        """
        S = self._scores(X)
        S -= S.max(axis=1, keepdims=True)
        S -= np.log(np.exp(S).sum(axis=1, keepdims=True))
        return S

    def predict_proba(self, X):
        """Softmax probabilities.

        Returns
        -------
        ndarray, shape (n_samples, n_classes)
            Rows sum to 1; columns in ``classes_`` order.
        """
        return np.exp(self.predict_log_proba(X))
