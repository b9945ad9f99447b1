"""Minibatch SGD on the softmax loss: the step every training loop shares.

Design note
-----------
One SGD step is: choose ``batch_size`` rows, compute the loss and gradient
on them, take ``W -= learning_rate * dW``.  Written the obvious way it
copies the batch out of X (``X[idx]``: 200 x 3073 float64 is 4.9 MB, about
a quarter of a step on CIFAR-sized data) and allocates a fresh ``dW`` and a
fresh ``learning_rate * dW`` every step.  :class:`SGDStep` does neither:

* the kernel is handed the whole X and the batch's row indices
  (``softmax_loss(..., rows=idx)``), so a kernel that reads rows in place
  never copies X.  (The compiled kernels read ``rows`` natively; the
  ``numpy`` kernel gathers inside, because BLAS needs one array.)
* the gradient is written into one (D, C) buffer owned by the step
  (``out=``), scaled in place and subtracted from W in place: after the
  first step nothing of size D x C is allocated.  Where the Cython
  extension is built, the finite check, the product and the difference are
  one compiled call (:func:`_update`): after a kernel has filled the
  caches, each NumPy call costs about 10 us, and NumPy's three took 30 us
  of a 0.6 ms CIFAR-batch step in float64 (20 us compiled), 22 us in
  float32 (13 us).  What remains per step is the generator's draw of
  ``batch_size`` indices (NumPy's ``Generator`` cannot draw integers into a
  buffer) and the batch's checks;
* the compiled kernels keep their own buffers (W's padded transpose, the
  per-thread gradient accumulators) in a ``scratch`` dict the step owns,
  instead of allocating them each call: new zeroed arrays of 0.25 MB are
  paid again in page faults inside the kernel, and keeping them made a
  CIFAR-batch step 3-8 % faster (docs/training.md).  Its own dict, not the
  one the registry keeps per thread for public calls: a dict holds one set
  of accumulators, for one thread count, which follows the batch size, so
  a step's small batches and the caller's other calls (a loss over all of
  X) sharing a dict would replace each other's buffers whenever their
  thread counts differ;
* a kernel may offer its own step (``bind_sgd_step``, which the ``cython``
  kernel has): set up once per problem, batch size and thread setting,
  each step is then one compiled call that writes W's transpose, runs the
  kernel and takes the update in the kernel's reduction, each element of W
  written as its gradient is finished.  That saves the Python and NumPy
  calls around the kernel (``np.errstate``, the backend's layout work, the
  transpose, the separate update: after a kernel has filled the caches each
  costs microseconds) and the update's own pass over W, which read W back
  from L3 after the batch had evicted it.  A CIFAR-batch step took 8-12 %
  less time (docs/training.md).  W is written before the whole gradient is
  known to be finite; if it is not, the kernel restores W from the
  transpose, its exact copy, so a refused step still leaves W untouched;
* the step's own arrays are validated once, not every step: the first step
  (and any step with another X, y or buffer) runs the full
  :func:`~fastsoftmax.backends._validate.prepare`; later steps check only
  the batch (:func:`~fastsoftmax.backends._validate.rebatch`: the indices
  and their labels, with prepare's errors) and call the backend's kernel
  directly.  Non-finite values in W, b or X are not looked for up front;
  they make the result non-finite, and then the step re-runs the public
  function, whose full checks raise the error that names the cause, before
  W is touched.  (``prepare`` and ``check_result`` on every step cost 30-50
  us beside a 0.4-0.7 ms CIFAR-batch kernel.)

Bit for bit the copy path's result: the kernel sees the same rows in the
same order, and ``dW *= lr; W -= dW`` rounds exactly as ``W -= lr * dW``
(a product, then a difference, each rounded once in W's dtype), in NumPy,
in :func:`_update` and in the kernel's own step alike.  Tested in
``tests/test_sgd.py`` against a copy-path loop, per backend and thread
count, and the kernel's step against its kernel and :func:`_update` per
instruction-set build in ``tests/test_kernels.py``.

Batch sources
-------------
How batches reach a training loop is one small protocol, so that data
in memory, Dask arrays and anything else plug into the same loop:

    ``source(X, y, batch_size, num_iters, rng)`` returns an iterable of
    exactly ``num_iters`` :class:`Batch` ``(X, y, rows)``: NumPy arrays
    and the row indices of this batch in them (the kernel reads
    ``X[rows]``, ``y[rows]``); the rows of the i-th batch must be those
    :func:`draw_rows` draws from ``rng`` at the i-th step, so that every
    source trains the same model for a seed.

:func:`random_batches` is the in-memory source; :func:`fastsoftmax.dask.minibatches`
fetches only the drawn rows of a Dask array, several batches per round trip.

Other SGD users (a two-layer net, an estimator's solver) reuse
:func:`draw_rows` and a source for their batches, and :class:`SGDStep`
wherever their loss is the softmax loss of a linear layer.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np

from .. import backends
from ..backends._threads import get_num_threads
from ..backends._validate import integer, prepare, real, rebatch, working_dtype

try:  # the update as one compiled call, when the Cython extension is built
    from ..backends._cython_kernel import sgd_update as _compiled_update
except ImportError:  # pragma: no cover - a build without the extension
    _compiled_update = None

__all__ = ["Batch", "draw_rows", "random_batches", "SGDStep"]


class Batch(NamedTuple):
    """One minibatch: the rows ``rows`` of ``X`` and ``y``, read in place.

    Attributes
    ----------
    X : ndarray, shape (M, D)
        Rows the batch is taken from (all of X in memory; a fetched block of
        a Dask array).
    y : ndarray, shape (M,)
        Integer labels of those rows.
    rows : ndarray of int, shape (batch_size,)
        The batch: indices into ``X`` and ``y``, any order, repeats allowed.
    """

    X: np.ndarray
    y: np.ndarray
    rows: np.ndarray


def draw_rows(rng, n, batch_size):
    """The row indices of one minibatch: ``batch_size`` of ``range(n)``, with replacement.

    The one sampling rule of the package (as in CS231n), so every batch
    source draws the same batches from the same generator.

    Parameters
    ----------
    rng : numpy.random.Generator
    n : int
        Number of examples to draw from.
    batch_size : int

    Returns
    -------
    ndarray, shape (batch_size,), int64
    """
    # The same stream as CS231n's rng.choice(n, batch_size, replace=True)
    # (tested), at 8 us instead of 14 us per draw.
    return rng.integers(0, n, batch_size)


def random_batches(X, y, batch_size, num_iters, rng):
    """The in-memory batch source: ``num_iters`` batches of rows of ``(X, y)``.

    Parameters
    ----------
    X : ndarray, shape (N, D)
    y : ndarray, shape (N,)
    batch_size, num_iters : int
    rng : numpy.random.Generator
        Drawn from once per batch, lazily (a loop that stops early has drawn
        only what it used).

    Yields
    ------
    Batch
        ``Batch(X, y, draw_rows(rng, N, batch_size))``: X itself, never a copy.
    """
    for _ in range(num_iters):
        yield Batch(X, y, draw_rows(rng, len(y), batch_size))


class SGDStep:
    """One minibatch SGD step on the softmax loss, in place, with its buffers reused.

    ``step(X, y, rows)`` computes the loss and gradient of ``W`` (and ``b``)
    on the batch ``X[rows], y[rows]`` without copying it, then takes
    ``W -= learning_rate * dW`` (and ``b -= learning_rate * db``) in place.

    Parameters
    ----------
    W : ndarray, shape (D, C), float32 or float64
        The weights, updated in place (so must be writable).
    learning_rate : float
        Step size, finite and > 0.
    reg : float
        L2 strength on W (loss adds ``reg * sum(W**2)``), finite and >= 0.
    b : ndarray, shape (C,), optional
        A bias, not regularized, updated in place too.
    backend : str, optional
        Backend name; default :func:`fastsoftmax.fastest` for the working
        dtype and batch size (what :func:`fastsoftmax.softmax_loss` picks),
        chosen at each batch size's first step.
    n_threads : int, optional
        Threads of the compiled backends; default
        :func:`fastsoftmax.get_num_threads` at each step.

    Attributes
    ----------
    grad : ndarray, shape (D, C), or None
        The gradient buffer (the working dtype), allocated at the first
        step; after a step it holds ``learning_rate * dW``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastsoftmax.training.sgd import SGDStep, random_batches
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((100, 5)); y = rng.integers(0, 3, 100)
    >>> W = np.zeros((5, 3))
    >>> step = SGDStep(W, learning_rate=0.1, reg=1e-3)
    >>> losses = [step(*batch) for batch in random_batches(X, y, 20, 10, rng)]
    """

    def __init__(self, W, learning_rate, reg, *, b=None, backend=None, n_threads=None):
        if not isinstance(W, np.ndarray) or not W.flags.writeable:
            raise TypeError("W must be a writable NumPy array: the step updates it in place")
        if b is not None and (not isinstance(b, np.ndarray) or not b.flags.writeable):
            raise TypeError("b must be a writable NumPy array: the step updates it in place")
        self.W = W
        self.b = b
        self.learning_rate = real(learning_rate, "learning_rate", positive=True)
        self.reg = real(reg, "reg")
        if backend is not None:
            backends.get(backend)  # a clear error now rather than at the first step
        self.backend = backend
        self.n_threads = None if n_threads is None else integer(n_threads, "n_threads", 1)
        self.grad = None
        # (X's dtype, batch size) -> (backend's softmax_loss, its raw kernel,
        # working dtype, the kernel's bind_sgd_step or None)
        self._functions = {}
        # (batch size, threads) -> bind_sgd_step's run for self._problem (or None: not bindable)
        self._runs = {}
        # The compiled kernels' buffers (W's padded transpose, their accumulators), kept from step to step
        self._scratch = {}
        # The validated problem of the last (X, y) seen, when the trusted path may
        # run it (see _trusted); None: validate on the next step.
        self._problem = None
        self._shapes = None

    def backend_for(self, X, n):
        """Name of the backend a step on ``n`` rows of ``X`` runs."""
        if self.backend is not None:
            return self.backend
        return backends.fastest(working_dtype(self.W.dtype, X.dtype), n)

    def __call__(self, X, y, rows):
        """Take one step on the batch ``X[rows], y[rows]``; return its loss.

        Parameters
        ----------
        X : ndarray, shape (N, D)
            Never modified, never copied by this step.
        y : ndarray, shape (N,)
            Integer labels.
        rows : array_like of int, shape (n,)
            The batch (validated by the backend: integers, in range; negative
            ones count from the end as in NumPy).

        Returns
        -------
        float
            The loss on the batch before the update.
        """
        # Per-step bookkeeping is kept to dictionary lookups: it is paid on
        # every step, beside a kernel of well under a millisecond.
        n = rows.shape[0] if isinstance(rows, np.ndarray) and rows.ndim else (np.shape(rows) or (0,))[0]
        entry = self._functions.get((X.dtype, n))
        if entry is None:
            name = self.backend_for(X, n)
            kernel = backends.get_kernel(name)
            bind = getattr(kernel, "bind_sgd_step", None)
            if getattr(kernel, "takes_scratch", False):
                kernel = functools.partial(kernel, scratch=self._scratch)
            entry = backends.get(name), kernel, working_dtype(self.W.dtype, X.dtype), bind
            self._functions[(X.dtype, n)] = entry
        public, kernel, dtype, bind = entry
        grad = self.grad
        if grad is None or grad.dtype != dtype or grad.shape != self.W.shape:
            grad = self.grad = np.empty(self.W.shape, dtype=dtype)
        lr = self.learning_rate
        problem = self._trusted(X, y, rows, grad)
        if problem is not None:
            n_threads = get_num_threads() if self.n_threads is None else self.n_threads
            run = None
            if bind is not None:
                run = self._runs.get((n, n_threads), False)
                if run is False:
                    run = self._runs[(n, n_threads)] = bind(problem, n, n_threads, self._scratch)
            if run is not None:
                # The kernel's own step: loss, gradient and the update of W
                # (and b) in one compiled call; None: not finite, W untouched.
                loss = run(problem.rows, lr)
                if loss is not None:
                    return loss
            else:
                with np.errstate(all="ignore"):
                    loss, dW, db = kernel(problem, n_threads)
                # W is updated only if the loss and every gradient are finite.
                if math.isfinite(loss) and (db is None or np.isfinite(db).all()) and _update(self.W, dW, lr):
                    if db is not None:
                        _update(self.b, db, lr)
                    return float(loss)
        # The public function validates everything (again) and raises the
        # error that names the cause of a non-finite result (non-finite W, b
        # or X, or overflow) before W is touched.
        result = public(self.W, X, y, self.reg, b=self.b, rows=rows, out=grad, n_threads=self.n_threads)
        _update(self.W, result[1], lr)
        if self.b is not None:
            _update(self.b, result[2], lr)
        return result[0]

    def _trusted(self, X, y, rows, grad):
        """The validated problem for this batch, or None: run the public function.

        The trusted path: W, X, y, reg, b and the gradient buffer are
        validated once (:func:`~fastsoftmax.backends._validate.prepare`,
        on the first step and whenever X, y, the buffer or a shape changes),
        and each step checks only the batch
        (:func:`~fastsoftmax.backends._validate.rebatch`: the indices and
        their labels).  What else can change between steps is the values of
        W, b and X (the step's own updates, or the caller's); a non-finite
        one shows as a non-finite result, which sends the step through the
        public function and its full checks before W is touched.  Used only
        where the kernel then sees the caller's own arrays (W and b of the
        working dtype and C-contiguous, X of the working dtype, y already
        ``intp``), so it reads exactly what the public function would.
        """
        problem = self._problem
        if (problem is None or problem.X is not X or problem.y is not y or problem.out is not grad
                or problem.W is not self.W or problem.b is not self.b
                or self._shapes != (X.shape, y.shape, self.W.shape, X.strides)):
            self._problem = None
            self._runs = {}
            if not (isinstance(X, np.ndarray) and isinstance(y, np.ndarray)):
                return None
            problem = prepare(self.W, X, y, self.reg, self.b, rows, grad)
            if problem.W is self.W and problem.X is X and problem.y is y and problem.b is self.b:
                self._problem = problem
                self._shapes = (X.shape, y.shape, self.W.shape, X.strides)
                return problem
            return None
        return rebatch(problem, rows)


def _update(W, G, lr):
    """``G *= lr; W -= G`` in place, unless ``G`` holds NaN or inf; return whether it did.

    Bit for bit ``W -= lr * G``: the product and the difference are each
    rounded once, in the working dtype.  One compiled call
    (``_cython_kernel.sgd_update``) where W and G are C-contiguous arrays
    of one float dtype, as on the step's trusted path; NumPy otherwise (and
    without the extension), casting the result to W's dtype.

    Parameters
    ----------
    W : ndarray, shape (D, C) or (C,)
        Weights (or bias), updated in place.
    G : ndarray, shape of ``W``, the working dtype
        Their gradient; holds ``lr * G`` afterwards.
    lr : float

    Returns
    -------
    bool
        False, with W and G untouched, if G is not finite.
    """
    if (_compiled_update is not None and W.ndim == 2 and W.dtype == G.dtype
            and W.dtype.type in (np.float32, np.float64) and W.flags.c_contiguous and G.flags.c_contiguous):
        return _compiled_update(W, G, lr)
    if not np.isfinite(G).all():
        return False
    np.multiply(G, lr, out=G)
    np.subtract(W, G, out=W, casting="same_kind")
    return True
