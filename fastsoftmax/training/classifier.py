"""A linear softmax classifier trained with minibatch SGD, on any backend.

Design note
-----------
This is the ``Softmax`` / ``LinearClassifier`` of the CS231n assignment with
its loss computed by a fastsoftmax backend.  :meth:`Softmax.train` is a loop
over three small steps, each its own method so that it can be replaced
(for example to train on a Dask array) without touching the loop:

* :meth:`Softmax._minibatch` draws ``batch_size`` examples with replacement,
* :meth:`Softmax.loss` runs the backend's validated ``softmax_loss``,
* :meth:`Softmax._update` takes the SGD step ``W -= learning_rate * dW``.

Inputs are validated once, by the backend (``fastsoftmax.backends._validate``); this
module checks only what it needs itself: the SGD settings, that X has one row
per label, and the labels (they fix the number of classes).

Reproducibility: all randomness (initial weights and minibatches) comes from
one ``numpy.random.Generator`` seeded at construction and is drawn the same
way whatever the backend, so two models with the same seed see the same
batches.  Backends agree to within the tolerances of
:mod:`fastsoftmax.testing`, so their models agree to within SGD's
amplification of those differences (tested).

``backend=None`` means "the fastest backend at call time"
(:func:`fastsoftmax.fastest`), so a later :func:`fastsoftmax.set_backend`
takes effect on a model that already exists.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import sys
import zipfile

import numpy as np

from .. import backends
from .._files import atomic_write
from ..backends._validate import working_dtype

__all__ = ["Softmax"]

_FORMAT = "fastsoftmax.Softmax/1"


def _positive_int(name, value, minimum):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _finite(name, value, positive):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value) or (value <= 0 if positive else value < 0):
        raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value}")
    return value


class Softmax:
    """Linear softmax classifier ``scores = X @ W`` trained with minibatch SGD.

    Parameters
    ----------
    backend : str or None
        Backend computing the loss and gradient (any of
        :func:`fastsoftmax.available`); None uses :func:`fastsoftmax.fastest`
        at each call.
    seed : int or None
        Seed of the initial weights and the minibatch sampling.

    Attributes
    ----------
    W : ndarray, shape (D, C), or None
        The weights (None until trained or loaded).  Include a bias row by
        appending a column of ones to X (see :func:`fastsoftmax.training.data.get_cifar10_data`).
    class_names : list of str or None
        Optional names of the C classes, saved with the model.
    mean_image : ndarray or None
        Optional mean subtracted from the data before training, saved with
        the model so that new images can be prepared the same way.
    settings : dict
        Hyper-parameters of the last :meth:`train` call and the backend used.
    """

    def __init__(self, backend=None, seed=None):
        if backend is not None:
            backends.get(backend)  # a clear error now rather than at the first step
        self.backend = backend
        self.seed = seed
        self.W = None
        self.class_names = None
        self.mean_image = None
        self.settings = {}
        self._rng = np.random.default_rng(seed)

    def __repr__(self):
        shape = None if self.W is None else self.W.shape
        return f"Softmax(backend={self.backend!r}, seed={self.seed!r}, W.shape={shape})"

    # -- the three steps of train() ------------------------------------------------

    def _backend_name(self):
        return self.backend if self.backend is not None else backends.fastest()

    def loss(self, X_batch, y_batch, reg):
        """Softmax loss and gradient of the current weights on one batch.

        Parameters
        ----------
        X_batch : array_like, shape (N, D)
        y_batch : array_like, shape (N,), integer labels in [0, C)
        reg : float
            L2 strength (loss adds ``reg * sum(W**2)``).

        Returns
        -------
        loss : float
        dW : ndarray, shape (D, C), dtype of W
        """
        if self.W is None:
            raise RuntimeError("this Softmax has no weights yet: call train() or Softmax.load() first")
        return backends.get(self._backend_name())(self.W, X_batch, y_batch, reg)

    def _minibatch_indices(self, n, batch_size):
        """Indices of one minibatch: ``batch_size`` of ``range(n)``, with replacement (as in CS231n)."""
        return self._rng.choice(n, batch_size, replace=True)

    def _minibatch(self, X, y, batch_size):
        """``batch_size`` rows of (X, y) drawn with replacement."""
        idx = self._minibatch_indices(len(y), batch_size)
        return X[idx], y[idx]

    def _update(self, dW, learning_rate):
        """One SGD step, in place."""
        self.W -= learning_rate * dW

    def _init_weights(self, D, C, dtype):
        self.W = (0.001 * self._rng.standard_normal((D, C))).astype(dtype)

    # -- public API ----------------------------------------------------------------

    def _check_labels(self, X, y):
        y = np.asarray(y)
        if y.ndim != 1 or y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"y must be a 1-D array of integer labels, got {y.dtype} of shape {y.shape}")
        if len(X.shape) != 2 or X.shape[0] != y.shape[0]:
            raise ValueError(f"X must be 2-D with one row per label: y has {y.shape[0]} labels, X has shape {X.shape}")
        if y.size == 0:
            raise ValueError("cannot train on an empty data set (y has no labels)")
        if y.min() < 0:
            raise ValueError(f"labels must be >= 0, found {y.min()}")
        if self.W is not None and (X.shape[1] != self.W.shape[0] or y.max() >= self.W.shape[1]):
            raise ValueError(
                f"this model's W has shape {self.W.shape} (D, C): X must have {self.W.shape[0]} columns "
                f"and labels must be < {self.W.shape[1]}; got X {X.shape}, max label {y.max()}"
            )
        return y

    def train(self, X, y, learning_rate=1e-3, reg=1e-5, num_iters=100, batch_size=200, verbose=False, progress=False):
        """Train with minibatch stochastic gradient descent.

        Starts from the current weights if there are any, else from small
        random ones (``0.001 * N(0, 1)``) with ``C = max(y) + 1`` classes.

        Parameters
        ----------
        X : array_like, shape (N, D)
            Training data (float32 trains in float32, anything else in float64).
        y : array_like, shape (N,)
            Integer labels ``>= 0``.
        learning_rate : float
            SGD step size, > 0.
        reg : float
            L2 strength, >= 0.
        num_iters : int
            Number of SGD steps, >= 0.
        batch_size : int
            Examples per step (drawn with replacement), >= 1.
        verbose : bool
            Print the loss every 100 iterations.
        progress : bool
            Show a tqdm progress bar with the current loss.

        Returns
        -------
        list of float
            The loss of each iteration.
        """
        learning_rate = _finite("learning_rate", learning_rate, positive=True)
        reg = _finite("reg", reg, positive=False)
        num_iters = _positive_int("num_iters", num_iters, 0)
        batch_size = _positive_int("batch_size", batch_size, 1)
        if not hasattr(X, "shape"):
            X = np.asarray(X)
        y = self._check_labels(X, y)
        if self.W is None:
            self._init_weights(X.shape[1], int(y.max()) + 1, working_dtype(X.dtype, X.dtype))

        backend = self._backend_name()
        self.settings = dict(
            learning_rate=learning_rate, reg=reg, num_iters=num_iters, batch_size=batch_size,
            backend=backend, seed=self.seed, dtype=str(self.W.dtype),
        )
        from tqdm.auto import tqdm

        batches = None
        dask_array = sys.modules.get("dask.array")  # loaded if X can be one
        if dask_array is not None and isinstance(X, dask_array.Array):
            # X stays on its workers: only the drawn rows are fetched, the same
            # batches as in memory (see fastsoftmax.dask.minibatches).
            from ..dask import minibatches

            batches = minibatches(self, X, y, batch_size, num_iters)
        loss_history = []
        with tqdm(total=num_iters, desc=f"train[{backend}]", disable=not progress, leave=False) as bar:
            for it in range(num_iters):
                X_batch, y_batch = self._minibatch(X, y, batch_size) if batches is None else next(batches)
                loss, dW = self.loss(X_batch, y_batch, reg)
                self._update(dW, learning_rate)
                loss_history.append(loss)
                bar.update(1)
                if it % 100 == 0:
                    bar.set_postfix(loss=f"{loss:.4f}")
                    if verbose:
                        print(f"iteration {it} / {num_iters}: loss {loss:f}")
        return loss_history

    def predict(self, X):
        """Predicted labels ``argmax(X @ W)``.

        Parameters
        ----------
        X : array_like, shape (N, D)

        Returns
        -------
        ndarray, shape (N,), intp
        """
        if self.W is None:
            raise RuntimeError("this Softmax has no weights yet: call train() or Softmax.load() first")
        if not hasattr(X, "shape"):
            X = np.asarray(X)
        if len(X.shape) != 2 or X.shape[1] != self.W.shape[0]:
            raise ValueError(f"X must have shape (N, {self.W.shape[0]}) for W of shape {self.W.shape}, got {X.shape}")
        return np.argmax(X @ self.W, axis=1)

    def score(self, X, y):
        """Accuracy of :meth:`predict` on ``(X, y)``, a float in [0, 1]."""
        return float(np.mean(self.predict(X) == np.asarray(y)))

    # -- persistence ---------------------------------------------------------------

    def save(self, path):
        """Write the model to one ``.npz`` file, atomically.

        Holds the weights, class names, mean image, and settings (backend,
        seed, hyper-parameters of the last training).  A reader never sees a
        half-written file: it is written beside ``path`` and renamed.

        Parameters
        ----------
        path : str or os.PathLike
            Written exactly as given (no suffix is added).
        """
        if self.W is None:
            raise RuntimeError("nothing to save: this Softmax has no weights (call train() first)")
        meta = dict(format=_FORMAT, backend=self.backend, seed=self.seed, settings=self.settings,
                    class_names=self.class_names)
        arrays = dict(W=self.W, meta=np.array(json.dumps(meta)))
        if self.mean_image is not None:
            arrays["mean_image"] = np.asarray(self.mean_image)
        with atomic_write(path) as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path):
        """Read a model written by :meth:`save`.

        Parameters
        ----------
        path : str or os.PathLike

        Returns
        -------
        Softmax

        Raises
        ------
        FileNotFoundError
            If ``path`` does not exist.
        ValueError
            If the file is damaged or not a model saved by :meth:`save`.
        """
        path = os.fspath(path)
        what = f"{path!r} is not a fastsoftmax Softmax model (a .npz written by Softmax.save)"
        try:
            # Open the file ourselves: np.load leaks its handle when the zip is damaged.
            with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as npz:
                meta = json.loads(str(npz["meta"][()]))
                W = np.array(npz["W"])
                mean_image = np.array(npz["mean_image"]) if "mean_image" in npz.files else None
        except FileNotFoundError:
            raise
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, TypeError) as exc:
            raise ValueError(f"{what}: {type(exc).__name__}: {exc}") from exc
        if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
            raise ValueError(f"{what}: format tag {meta.get('format') if isinstance(meta, dict) else meta!r}, expected {_FORMAT!r}")
        if W.ndim != 2 or not np.issubdtype(W.dtype, np.floating):
            raise ValueError(f"{what}: W must be a 2-D float array, found {W.dtype} {W.shape}")
        backend = meta.get("backend")
        model = cls(backend=backend if backend in backends.available() else None, seed=meta.get("seed"))
        model.W = W
        model.mean_image = mean_image
        model.class_names = meta.get("class_names")
        model.settings = meta.get("settings") or {}
        return model
