"""A two-layer fully connected network with the CS231n interface, on any net backend.

Design note
-----------
``TwoLayerNet`` is the network of the CS231n assignment (affine - ReLU -
affine - softmax) with the same constructor, ``params`` dict, ``loss``,
``train`` and ``predict``.  The loss and gradients come from a registered
net backend (``fastsoftmax.backends.get(name, contract="net")``: the python
loops, the NumPy layers or the fused Numba kernel), so inputs are validated
in the one validator (:func:`fastsoftmax.backends._validate.prepare_net`)
and every backend is interchangeable; scores and predictions without labels
are the layer functions of :mod:`fastsoftmax.training.layers` composed.

Regularisation convention: the package's, ``reg * (sum(W1**2) +
sum(W2**2))``, with gradient ``2 * reg * W``; biases are not penalised.
This is what the current CS231n ``neural_net.py`` uses.  The course notes
(and the spiral case study) write ``0.5 * reg * sum(W**2)``: their ``reg``
is ``2 *`` ours, so pass ``reg = their_reg / 2`` (their 1e-3 is our 5e-4).

Reproducibility: all randomness (initial weights, minibatches) comes from
one ``numpy.random.Generator`` seeded at construction, drawn the same way
whatever the backend.  ``batch_size=None`` in :meth:`train` means full-batch
gradient descent (no sampling at all), as in the spiral case study.
"""

from __future__ import annotations

import os

import numpy as np

from .. import backends
from .._files import load_model, save_model
from ..backends._validate import NET_PARAMS
from ..backends._validate import integer, real
from .layers import affine_forward, affine_relu_forward

__all__ = ["TwoLayerNet"]

_FORMAT = "fastsoftmax.TwoLayerNet/1"


def _dtype(dtype):
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    return dtype


class TwoLayerNet:
    """Affine - ReLU - affine - softmax, ``scores = max(0, X W1 + b1) W2 + b2``.

    Parameters
    ----------
    input_size : int
        D, features per example (>= 1).
    hidden_size : int
        H, hidden units (>= 1).
    output_size : int
        C, classes (>= 1).
    std : float
        Initial weights are ``std * N(0, 1)``; biases start at 0.
    seed : int or None
        Seed of the initial weights and of the minibatches.
    dtype : {numpy.float64, numpy.float32}
        Dtype of the parameters (float32 trains in float32 when X is float32).
    backend : str or None
        Net backend (:func:`fastsoftmax.backends.available` with
        ``"net"``); None uses :func:`fastsoftmax.backends.fastest_net` at
        each call.

    Attributes
    ----------
    params : dict of str to ndarray
        ``W1`` (D, H), ``b1`` (H,), ``W2`` (H, C), ``b2`` (C,).
    class_names : list of str or None
        Saved with the model.
    mean_image : ndarray or None
        Mean subtracted from the data before training, saved with the model.
    settings : dict
        Hyper-parameters of the last :meth:`train` call and the backend used.
    """

    def __init__(self, input_size, hidden_size, output_size, std=1e-4, seed=None, dtype=np.float64,
                 backend=None):
        D = integer(input_size, "input_size", 1)
        H = integer(hidden_size, "hidden_size", 1)
        C = integer(output_size, "output_size", 1)
        std = real(std, "std", positive=False)
        dtype = _dtype(dtype)
        if backend is not None:
            backends.get(backend, contract="net")  # a clear error now rather than at the first step
        self.backend = backend
        self.seed = seed
        self.class_names = None
        self.mean_image = None
        self.settings = {}
        self._rng = np.random.default_rng(seed)
        self.params = {
            "W1": (std * self._rng.standard_normal((D, H))).astype(dtype),
            "b1": np.zeros(H, dtype=dtype),
            "W2": (std * self._rng.standard_normal((H, C))).astype(dtype),
            "b2": np.zeros(C, dtype=dtype),
        }

    def __repr__(self):
        D, H = self.params["W1"].shape
        C = self.params["W2"].shape[1]
        return (f"TwoLayerNet(input_size={D}, hidden_size={H}, output_size={C}, "
                f"dtype={self.params['W1'].dtype}, backend={self.backend!r}, seed={self.seed!r})")

    def _backend_name(self):
        return self.backend if self.backend is not None else backends.fastest_net()

    def _scores(self, X):
        """Class scores of X, shape (N, C), by the layer functions."""
        if not hasattr(X, "shape"):
            X = np.asarray(X)
        D = self.params["W1"].shape[0]
        if len(X.shape) != 2 or X.shape[1] != D:
            raise ValueError(f"X must have shape (N, {D}) for params['W1'] of shape {self.params['W1'].shape}, "
                             f"got {X.shape}")
        for k in NET_PARAMS:
            if not np.isfinite(self.params[k]).all():
                raise ValueError(f"params[{k!r}] contains NaN or inf; parameters must be finite")
        hidden, _ = affine_relu_forward(X, self.params["W1"], self.params["b1"])
        scores, _ = affine_forward(hidden, self.params["W2"], self.params["b2"])
        return scores

    def loss(self, X, y=None, reg=0.0):
        """Scores, or the loss and gradients, of a batch.

        Parameters
        ----------
        X : array_like, shape (N, D)
        y : array_like, shape (N,), optional
            Integer labels in ``[0, C)``.  Without it, only the scores are
            computed.
        reg : float
            L2 strength, ``reg * (sum(W1**2) + sum(W2**2))`` (module note).

        Returns
        -------
        scores : ndarray, shape (N, C)
            If ``y`` is None.
        loss : float, grads : dict of str to ndarray
            Otherwise; ``grads`` has the keys and shapes of :attr:`params`.
        """
        if y is None:
            return self._scores(X)
        return backends.get(self._backend_name(), contract="net")(self.params, X, y, reg)

    def predict(self, X):
        """Predicted labels ``argmax(scores)``.

        Parameters
        ----------
        X : array_like, shape (N, D)

        Returns
        -------
        ndarray, shape (N,), intp
        """
        return np.argmax(self._scores(X), axis=1)

    def score(self, X, y):
        """Accuracy of :meth:`predict` on ``(X, y)``, a float in [0, 1]."""
        return float(np.mean(self.predict(X) == np.asarray(y)))

    def train(self, X, y, X_val, y_val, learning_rate=1e-3, learning_rate_decay=0.95, reg=5e-6,
              num_iters=100, batch_size=200, verbose=False, progress=False):
        """Train with (minibatch) stochastic gradient descent.

        Each iteration draws ``batch_size`` examples with replacement (as in
        CS231n) and takes the step ``p -= learning_rate * grad`` for every
        parameter.  After every epoch (``max(N / batch_size, 1)``
        iterations) the accuracy on the last batch and on the validation set
        is recorded and the learning rate is multiplied by
        ``learning_rate_decay``.

        Parameters
        ----------
        X : array_like, shape (N, D)
        y : array_like, shape (N,), integer labels in [0, C)
        X_val : array_like, shape (M, D)
        y_val : array_like, shape (M,)
        learning_rate : float
            > 0.
        learning_rate_decay : float
            In (0, 1]; applied once per epoch.
        reg : float
            L2 strength, >= 0 (module note for the convention).
        num_iters : int
            >= 0.
        batch_size : int or None
            Examples per step, >= 1; None: every example, in order, at every
            step (full-batch gradient descent; an epoch is one step).
        verbose : bool
            Print the loss every 100 iterations.
        progress : bool
            A tqdm progress bar with the current loss.

        Returns
        -------
        dict
            ``loss_history`` (one float per iteration), ``train_acc_history``
            and ``val_acc_history`` (one float per epoch).
        """
        learning_rate = real(learning_rate, "learning_rate", positive=True)
        decay = real(learning_rate_decay, "learning_rate_decay", positive=True)
        if decay > 1:
            raise ValueError(f"learning_rate_decay must be in (0, 1], got {decay}")
        reg = real(reg, "reg", positive=False)
        num_iters = integer(num_iters, "num_iters", 0)
        if batch_size is not None:
            batch_size = integer(batch_size, "batch_size", 1)
        X = X if hasattr(X, "shape") else np.asarray(X)
        X_val = X_val if hasattr(X_val, "shape") else np.asarray(X_val)
        y = np.asarray(y)
        y_val = np.asarray(y_val)
        for name, a, labels in (("X", X, y), ("X_val", X_val, y_val)):
            if len(a.shape) != 2 or a.shape[0] != labels.shape[0]:
                label_name = "y" if name == "X" else "y_val"
                raise ValueError(f"{name} must be 2-D with one row per label of {label_name}: "
                                 f"{label_name} has shape {labels.shape}, {name} has shape {a.shape}")
        D = self.params["W1"].shape[0]
        for name, a in (("X", X), ("X_val", X_val)):
            if a.shape[1] != D:  # found now, not after the first epoch's steps
                raise ValueError(f"{name} must have {D} columns for params['W1'] of shape "
                                 f"{self.params['W1'].shape}, got shape {a.shape}")
        if y.shape[0] == 0:
            raise ValueError("cannot train on an empty data set (y has no labels)")
        if y_val.shape[0] == 0:
            raise ValueError("X_val and y_val must hold at least one example (validation accuracy is per epoch)")
        N = y.shape[0]
        backend = self._backend_name()
        loss_fn = backends.get(backend, contract="net")
        self.settings = dict(learning_rate=learning_rate, learning_rate_decay=decay, reg=reg,
                             num_iters=num_iters, batch_size=batch_size, backend=backend, seed=self.seed,
                             dtype=str(self.params["W1"].dtype))
        iterations_per_epoch = 1 if batch_size is None else max(N // batch_size, 1)
        from tqdm.auto import tqdm

        loss_history, train_acc_history, val_acc_history = [], [], []
        lr = learning_rate
        with tqdm(total=num_iters, desc=f"train net[{backend}]", disable=not progress, leave=False) as bar:
            for it in range(num_iters):
                if batch_size is None:
                    X_batch, y_batch = X, y
                else:
                    idx = self._rng.choice(N, batch_size, replace=True)
                    X_batch, y_batch = X[idx], y[idx]
                loss, grads = loss_fn(self.params, X_batch, y_batch, reg)
                for k in NET_PARAMS:  # new arrays: an array the caller put in params is never written to
                    self.params[k] = (self.params[k] - lr * grads[k]).astype(self.params[k].dtype, copy=False)
                loss_history.append(loss)
                bar.update(1)
                if it % 100 == 0:
                    bar.set_postfix(loss=f"{loss:.4f}")
                    if verbose:
                        print(f"iteration {it} / {num_iters}: loss {loss:f}")
                if (it + 1) % iterations_per_epoch == 0:
                    train_acc_history.append(float(np.mean(self.predict(X_batch) == y_batch)))
                    val_acc_history.append(self.score(X_val, y_val))
                    lr *= decay
        return dict(loss_history=loss_history, train_acc_history=train_acc_history,
                    val_acc_history=val_acc_history)

    # -- persistence ---------------------------------------------------------------

    def save(self, path):
        """Write the model to one ``.npz`` file, atomically.

        Holds the four parameters, class names, mean image and settings; a
        reader never sees a half-written file.

        Parameters
        ----------
        path : str or os.PathLike
            Written exactly as given (no suffix is added).
        """
        meta = dict(backend=self.backend, seed=self.seed, settings=self.settings, class_names=self.class_names)
        save_model(path, _FORMAT, self.params, meta, self.mean_image)

    @classmethod
    def load(cls, path):
        """Read a model written by :meth:`save`.

        Parameters
        ----------
        path : str or os.PathLike

        Returns
        -------
        TwoLayerNet

        Raises
        ------
        FileNotFoundError
            If ``path`` does not exist.
        ValueError
            If the file is damaged, is not a saved TwoLayerNet, or holds
            parameters of inconsistent shapes or non-finite values.
        """
        path = os.fspath(path)
        what = f"{path!r} is not a fastsoftmax TwoLayerNet model (a .npz written by TwoLayerNet.save)"
        meta, params, mean_image = load_model(path, _FORMAT, what, NET_PARAMS)
        W1, b1, W2, b2 = (params[k] for k in NET_PARAMS)
        dtypes = {a.dtype for a in params.values()}
        if (W1.ndim != 2 or W2.ndim != 2 or b1.shape != (W1.shape[1],) or W2.shape[0] != W1.shape[1]
                or b2.shape != (W2.shape[1],) or len(dtypes) != 1 or dtypes.pop() not in (np.float32, np.float64)
                or min(W1.shape + W2.shape) < 1):
            raise ValueError(f"{what}: inconsistent parameters "
                             f"{ {k: (str(a.dtype), a.shape) for k, a in params.items()} }")
        if not all(np.isfinite(a).all() for a in params.values()):
            raise ValueError(f"{what}: its parameters contain NaN or inf")
        backend = meta.get("backend")
        model = cls(W1.shape[0], W1.shape[1], W2.shape[1], std=0.0, seed=meta.get("seed"), dtype=W1.dtype,
                    backend=backend if backend in backends.available("net") else None)
        model.params = params
        model.mean_image = mean_image
        model.class_names = meta.get("class_names")
        model.settings = meta.get("settings") or {}
        return model
