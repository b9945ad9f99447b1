"""Rows of the benchmark that are not fastsoftmax backends: yardsticks and peers.

Design note
-----------
A benchmark that only compares our backends with each other says nothing
about how good they are.  This module supplies the outside references that
``fastsoftmax bench`` and ``bench/`` time in the same run, on the same
validated arrays:

* yardsticks, always present:

  - ``textbook``: the vectorized formulation of the CS231n notes, verbatim
    (``scores = X.dot(W)`` ... ``dW = X.T.dot(dscores)``), what most people
    would write;
  - ``stream X``: the floor.  A single pass that reads every byte of X once
    and does almost nothing with it (a sum, with one accumulator per thread
    and reassociation allowed so it vectorizes).  No loss-and-gradient can
    be faster, because each one must read all of X at least once.  It runs
    with the same thread count as the backends.  :func:`stream_is_memory_bound`
    checks the claim "memory-bound": it times the same loop on a block small
    enough to stay in L2, and the benchmark reports both rates.

* peers, where installed (the ``peers`` extra): scikit-learn's multinomial
  ``LinearModelLoss.loss_gradient``, PyTorch ``cross_entropy`` + ``backward``
  on CPU and JAX ``jit(value_and_grad)``.  Each is converted to our
  convention (mean loss, ``reg * ||W||^2``) so its result is checked against
  the reference exactly like a backend's.

Every row is a :class:`Row` whose ``setup(problem, threads)`` does all the
preparation (imports, conversions, device copies, JIT compilation) and
returns a zero-argument callable: only that callable is timed.  A row whose
library is missing is reported with the reason, never silently dropped.

Threads: the benchmark limits BLAS and OpenMP pools with threadpoolctl and our
compiled backends with :func:`fastsoftmax.threads`; ``setup`` additionally
passes the count where a library has its own knob (scikit-learn's
``n_threads``, ``torch.set_num_threads``).  JAX's CPU thread pool is fixed
when its backend starts: :func:`_jax_setup` sets
``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1``
before JAX is first imported when one thread is asked for and the user has
not set ``XLA_FLAGS``; otherwise JAX uses its default pool (all cores) for
the whole process, and its row says so.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Callable, NamedTuple

import numpy as np

__all__ = ["Row", "YARDSTICKS", "PEERS", "ROWS", "row_status", "textbook", "stream_is_memory_bound"]


class Row(NamedTuple):
    """A timed row that is not a registered backend.

    Attributes
    ----------
    name : str
    kind : str
        ``"yardstick"`` or ``"peer"``.
    what : str
        One line for the table's footnotes.
    setup : callable
        ``setup(problem, threads) -> fn``; ``fn()`` returns ``(loss, dW)``
        with dW of shape (D, C), or None for the floor (nothing to check).
    requires : str or None
        Module that must import for the row to be available.
    """

    name: str
    kind: str
    what: str
    setup: Callable
    requires: str | None = None


# --------------------------------------------------------------- yardsticks


def textbook(W, X, y, reg):
    """The CS231n notes' vectorized softmax loss, verbatim (a yardstick).

    Parameters
    ----------
    W : ndarray, shape (D, C)
    X : ndarray, shape (N, D)
    y : ndarray, shape (N,), int
    reg : float

    Returns
    -------
    loss : float
    dW : ndarray, shape (D, C)
    """
    num_train = X.shape[0]
    scores = X.dot(W)
    scores -= np.max(scores, axis=1, keepdims=True)
    exp_scores = np.exp(scores)
    probs = exp_scores / np.sum(exp_scores, axis=1, keepdims=True)
    loss = -np.sum(np.log(probs[np.arange(num_train), y])) / num_train
    loss += reg * np.sum(W * W)
    dscores = probs
    dscores[np.arange(num_train), y] -= 1
    dscores /= num_train
    dW = X.T.dot(dscores)
    dW += 2 * reg * W
    return float(loss), dW


def _textbook_setup(problem, threads):
    return lambda: textbook(*problem.args)


_stream_kernels: dict = {}


def _stream(parallel=False):
    """The jitted single-pass sum, serial or over threads (compiled on first use, cached where the backend's kernels are)."""
    if parallel in _stream_kernels:
        return _stream_kernels[parallel]
    import numba

    from ..backends._numba_cache import jit

    if not parallel:
        # reassoc lets LLVM keep several vector accumulators, so the loop is
        # limited by loads, not by the latency of one chain of adds.  No nnan/ninf.
        @jit(nogil=True, fastmath={"reassoc", "contract"})
        def stream_sum(flat, lo, hi, passes):
            # Index a slice from 0 to its size: with lo..hi indices into
            # ``flat`` LLVM kept the negative-index checks and did not vectorize.
            block = flat[lo:hi]
            acc = block[0] - block[0]  # X's own dtype: no conversion in the loop
            for _ in range(passes):
                for i in range(block.size):
                    acc += block[i]
            return acc

        kernel = stream_sum
    else:
        serial = _stream()

        # One slice per thread, each summed by the serial kernel (the same
        # loop written inside the prange did not vectorize).  Numba's
        # threads, as the backends use: a Python thread pool's hand-off cost
        # about 0.2 ms per call, which halved the rate measured at N = 500
        # and so inflated the roofline's memory term (docs/kernels.md, round 5).
        @jit(parallel=True)
        def stream_sum_threads(flat, threads, passes):
            n = flat.size
            parts = np.zeros(threads, dtype=flat.dtype)
            for t in numba.prange(threads):
                lo, hi = t * n // threads, (t + 1) * n // threads
                if hi > lo:
                    parts[t] = serial(flat, lo, hi, passes)
            return parts.sum()

        kernel = stream_sum_threads
    _stream_kernels[parallel] = kernel
    return kernel


def _stream_call(flat, threads, passes=1):
    """A callable reading ``flat`` ``passes`` times with ``threads`` threads."""
    import numba

    n = flat.size
    if threads == 1:
        kernel = _stream()

        def fn():
            kernel(flat, 0, n, passes)

    else:
        kernel = _stream(parallel=True)
        pool = min(threads, numba.config.NUMBA_NUM_THREADS)  # as the numba backend clips it

        def fn():
            numba.set_num_threads(pool)  # thread-local in Numba
            kernel(flat, threads, passes)

    fn()  # compile (or load from cache) and start the threads outside the timed region
    return fn


def _stream_setup(problem, threads):
    # X from the cases is C-contiguous, so ravel is a view: the floor reads
    # exactly the bytes the kernels read.
    return _stream_call(np.ascontiguousarray(problem.X).ravel(), threads)


def stream_is_memory_bound(dtype, threads, block_bytes=256 * 1024, passes=400, repeat=5):
    """Throughput of the floor's loop on an L2-resident block, in bytes/s.

    If streaming X is much slower than this, the floor is limited by memory
    bandwidth, not by the loop's arithmetic.

    Parameters
    ----------
    dtype : dtype
    threads : int
    block_bytes : int
        Bytes per thread; 256 KiB fits every x86-64 L2 cache made this decade.
    passes : int
        Passes over the block inside one call, so that the call overhead
        (a few microseconds) does not count.
    repeat : int

    Returns
    -------
    float
        Bytes read per second, best of ``repeat`` calls.
    """
    import time

    itemsize = np.dtype(dtype).itemsize
    block = np.ones(threads * block_bytes // itemsize, dtype=dtype)
    fn = _stream_call(block, threads, passes)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return passes * block.nbytes / best


# -------------------------------------------------------------------- peers


def _sklearn_setup(problem, threads):
    from sklearn._loss.loss import HalfMultinomialLoss
    from sklearn.linear_model._linear_loss import LinearModelLoss

    W, X, y, reg = problem.args
    model = LinearModelLoss(base_loss=HalfMultinomialLoss(n_classes=W.shape[1]), fit_intercept=False)
    coef = np.ascontiguousarray(W.T)  # scikit-learn's multinomial coef is (C, D)
    y_float = y.astype(X.dtype)  # its losses take labels as floats
    # Our loss is mean CE + reg*||W||^2; scikit-learn's L2 term is
    # 0.5*l2_reg_strength*||coef||^2 and, without sample_weight, it averages
    # over samples too.  So l2_reg_strength = 2*reg gives the same function.
    l2 = 2.0 * reg

    def fn():
        loss, grad = model.loss_gradient(coef, X, y_float, l2_reg_strength=l2, n_threads=threads)
        return loss, grad.T

    return fn


def _torch_setup(problem, threads):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    W, X, y, reg = problem.args
    # from_numpy shares memory (no copy of X); it warns about read-only arrays.
    X_t = torch.from_numpy(X if X.flags.writeable else X.copy())
    y_t = torch.from_numpy(y.astype(np.int64))
    W_t = torch.from_numpy(W.copy()).requires_grad_(True)

    def fn():
        W_t.grad = None
        loss = F.cross_entropy(X_t @ W_t, y_t) + reg * (W_t * W_t).sum()
        loss.backward()
        return loss.item(), W_t.grad.numpy()

    return fn


def jax_threads():
    """Threads JAX's CPU backend runs with in this process (its pool is fixed at start-up)."""
    if "intra_op_parallelism_threads=1" in os.environ.get("XLA_FLAGS", ""):
        return 1
    try:  # XLA's default pool: every core this process may use
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _jax_setup(problem, threads):
    if "jax" not in sys.modules and threads == 1 and "XLA_FLAGS" not in os.environ:
        os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    import jax
    import jax.numpy as jnp

    W, X, y, reg = problem.args
    if W.dtype == np.float64:
        jax.config.update("jax_enable_x64", True)

    def loss_fn(W, X, y):
        scores = X @ W
        log_p = jax.nn.log_softmax(scores, axis=1)
        return -jnp.mean(jnp.take_along_axis(log_p, y[:, None], axis=1)) + reg * jnp.sum(W * W)

    step = jax.jit(jax.value_and_grad(loss_fn))
    W_j, X_j, y_j = (jax.device_put(a) for a in (W, X, y.astype(np.int32)))

    def fn():
        loss, grad = step(W_j, X_j, y_j)
        grad.block_until_ready()
        return float(loss), np.asarray(grad)

    fn()  # trace and compile outside the timed region
    return fn


#: Yardsticks measured in every run.
YARDSTICKS = {
    "textbook": Row(
        "textbook",
        "yardstick",
        "CS231n notes' vectorized NumPy: scores = X.dot(W) ... dW = X.T.dot(dscores)",
        _textbook_setup,
    ),
    "stream X": Row(
        "stream X",
        "yardstick",
        "the floor: one vectorized pass summing every element of X (Numba, same threads)",
        _stream_setup,
        "numba",
    ),
}

#: Other libraries' loss-and-gradient for the same problem, where installed.
PEERS = {
    "sklearn": Row(
        "sklearn",
        "peer",
        "scikit-learn LinearModelLoss(HalfMultinomialLoss, fit_intercept=False).loss_gradient, "
        "l2_reg_strength = 2*reg",
        _sklearn_setup,
        "sklearn",
    ),
    "torch": Row(
        "torch",
        "peer",
        "PyTorch CPU: cross_entropy(X @ W, y) + reg*sum(W*W), backward()",
        _torch_setup,
        "torch",
    ),
    "jax": Row(
        "jax",
        "peer",
        "JAX jit(value_and_grad) of mean(-log_softmax(X @ W)[y]) + reg*sum(W*W); "
        "XLA's thread pool is fixed at start-up (1 thread only via XLA_FLAGS)",
        _jax_setup,
        "jax",
    ),
}

#: Every non-backend row, in table order.
ROWS = {**YARDSTICKS, **PEERS}


def row_status(name):
    """Why row ``name`` cannot run here, or None if its library imports.

    Parameters
    ----------
    name : str
        A key of :data:`ROWS`.

    Returns
    -------
    str or None
    """
    row = ROWS[name]
    if row.requires is None:
        return None
    if row.requires in sys.modules:
        return None
    if importlib.util.find_spec(row.requires) is None:
        extra = " (pip install 'fastsoftmax[peers]')" if row.kind == "peer" else ""
        return f"{row.requires} is not installed{extra}"
    return None


def library_version(name):
    """Version string of an installed library, or None (without importing it)."""
    from importlib import metadata

    dist = {"sklearn": "scikit-learn"}.get(name, name)
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None
