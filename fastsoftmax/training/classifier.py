"""A linear softmax classifier trained with minibatch SGD, on any backend.

Design note
-----------
This is the ``Softmax`` / ``LinearClassifier`` of the CS231n assignment with
its loss computed by a fastsoftmax backend.  :meth:`Softmax.train` is a loop
over the batches of a *batch source* (:mod:`fastsoftmax.training.sgd`),
each taken by one :class:`fastsoftmax.training.sgd.SGDStep`: the kernel reads
the batch's rows of X in place (``rows=``), writes the gradient into one
reused buffer (``out=``), and W is updated in place.  The model equals, bit
for bit, what the textbook loop (``X[idx]``, a fresh ``dW``,
``W -= lr * dW``) gives for the same seed and thread count.

Where the batches come from is the ``batches=`` argument of :meth:`train`
(the documented protocol of :mod:`fastsoftmax.training.sgd`):
:func:`~fastsoftmax.training.sgd.random_batches` for arrays in memory, and
for a Dask array (recognised by Dask's public collection protocol,
``__dask_graph__``) :func:`fastsoftmax.dask.minibatches`, which fetches
only the drawn rows.  Neither module touches the other's private names.

Inputs are validated by the one validator (``fastsoftmax.backends._validate``):
shapes, dtypes and labels up front with its ``check_data`` and
``check_labels`` (the same messages as :func:`fastsoftmax.softmax_loss`),
everything else by the backend at each step.

Reproducibility: all randomness (initial weights and minibatches) comes from
one ``numpy.random.Generator``, :attr:`Softmax.rng`, seeded at construction
and drawn the same way whatever the backend and batch source, so two models
with the same seed see the same batches.  Backends agree to within the
tolerances of :mod:`fastsoftmax.harness.agreement`, so their models agree to
within SGD's amplification of those differences (tested).

``backend=None`` means "what :func:`fastsoftmax.softmax_loss` would pick":
:func:`fastsoftmax.fastest` for the working dtype and batch size, decided
when :meth:`train` (or :meth:`loss`) is called, so a later
:func:`fastsoftmax.set_backend` takes effect on a model that already exists.
"""

from __future__ import annotations

import os

import numpy as np

from .. import backends
from .._files import load_model, save_model
from ..backends._validate import check_data, check_labels, integer, real, working_dtype
from .sgd import SGDStep, random_batches

__all__ = ["Softmax"]

_FORMAT = "fastsoftmax.Softmax/1"


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
    rng : numpy.random.Generator
        The source of all randomness (initial weights, minibatches), seeded
        with ``seed``; batch sources draw from it.
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
        self.rng = np.random.default_rng(seed)

    def __repr__(self):
        shape = None if self.W is None else self.W.shape
        return f"Softmax(backend={self.backend!r}, seed={self.seed!r}, W.shape={shape})"

    def _backend_name(self, dtype=None, n=None):
        return self.backend if self.backend is not None else backends.fastest(dtype, n)

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
        name = self._backend_name(*backends.problem_key(self.W, X_batch))
        return backends.get(name)(self.W, X_batch, y_batch, reg)

    def _init_weights(self, D, C, dtype):
        self.W = (0.001 * self.rng.standard_normal((D, C))).astype(dtype)

    # -- public API ----------------------------------------------------------------

    def _check_data(self, X, y):
        """Shapes, dtypes and labels, with the validator's messages; returns y as an ndarray."""
        y = np.asarray(y)  # labels are small; a Dask y is brought to the client
        check_data(X, y, self.W)
        check_labels(y, None if self.W is None else self.W.shape[1])
        return y

    def train(self, X, y, learning_rate=1e-3, reg=1e-5, num_iters=100, batch_size=200, verbose=False,
              progress=False, *, batches=None, n_threads=None):
        """Train with minibatch stochastic gradient descent.

        Starts from the current weights if there are any, else from small
        random ones (``0.001 * N(0, 1)``) with ``C = max(y) + 1`` classes.
        Each step reads its batch's rows of X in place and updates
        :attr:`W` in place (:class:`fastsoftmax.training.sgd.SGDStep`).

        Parameters
        ----------
        X : array_like, shape (N, D)
            Training data (float32 trains in float32, anything else in
            float64); never modified.  A Dask array is trained on without
            being loaded (see ``batches``).
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
        batches : callable, optional
            The batch source, ``batches(X, y, batch_size, num_iters, rng)``
            returning ``num_iters`` :class:`fastsoftmax.training.sgd.Batch`
            (the protocol of :mod:`fastsoftmax.training.sgd`).  Default:
            :func:`fastsoftmax.training.sgd.random_batches` for arrays in
            memory, :func:`fastsoftmax.dask.minibatches` for a Dask array.
        n_threads : int, optional
            Threads of the compiled backends; default
            :func:`fastsoftmax.get_num_threads`.

        Returns
        -------
        list of float
            The loss of each iteration.

        Raises
        ------
        TypeError, ValueError
            For bad settings or data, with the validator's messages.
        IndexError
            If a batch source yields row indices out of range.
        """
        learning_rate = real(learning_rate, "learning_rate", positive=True)
        reg = real(reg, "reg")
        num_iters = integer(num_iters, "num_iters", 0)
        batch_size = integer(batch_size, "batch_size", 1)
        if n_threads is not None:
            n_threads = integer(n_threads, "n_threads", 1)
        if batches is None:
            if hasattr(X, "__dask_graph__"):  # Dask's collection protocol: fetch only the drawn rows
                from ..dask import minibatches as batches
            else:
                batches = random_batches
                # Once, not per step (a no-op for NumPy arrays and memmaps: no copy).
                X = np.asarray(X)
        elif not hasattr(X, "shape"):
            X = np.asarray(X)
        y = self._check_data(X, y)
        if self.W is None:
            self._init_weights(X.shape[1], int(y.max()) + 1, working_dtype(X.dtype, X.dtype))

        step = SGDStep(self.W, learning_rate, reg, backend=self.backend, n_threads=n_threads)
        backend = step.backend_for(X, batch_size)
        self.settings = dict(
            learning_rate=learning_rate, reg=reg, num_iters=num_iters, batch_size=batch_size,
            backend=backend, seed=self.seed, dtype=str(self.W.dtype),
        )
        from tqdm.auto import tqdm

        loss_history = []
        with tqdm(total=num_iters, desc=f"train[{backend}]", disable=not progress, leave=False) as bar:
            for it, batch in enumerate(batches(X, y, batch_size, num_iters, self.rng)):
                if it == num_iters:
                    raise ValueError(f"the batch source yielded more than num_iters = {num_iters} batches")
                loss = step(*batch)
                loss_history.append(loss)
                bar.update(1)
                if it % 100 == 0:
                    bar.set_postfix(loss=f"{loss:.4f}")
                    if verbose:
                        print(f"iteration {it} / {num_iters}: loss {loss:f}")
        if len(loss_history) != num_iters:
            raise ValueError(f"the batch source yielded {len(loss_history)} batches, not num_iters = {num_iters}")
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
        meta = dict(backend=self.backend, seed=self.seed, settings=self.settings, class_names=self.class_names)
        save_model(path, _FORMAT, dict(W=self.W), meta, self.mean_image)

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
        meta, arrays, mean_image = load_model(path, _FORMAT, what, ("W",))
        W = arrays["W"]
        if W.ndim != 2 or not np.issubdtype(W.dtype, np.floating):
            raise ValueError(f"{what}: W must be a 2-D float array, found {W.dtype} {W.shape}")
        backend = meta.get("backend")
        model = cls(backend=backend if backend in backends.available() else None, seed=meta.get("seed"))
        model.W = W
        model.mean_image = mean_image
        model.class_names = meta.get("class_names")
        model.settings = meta.get("settings") or {}
        return model
