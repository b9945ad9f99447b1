"""The softmax loss and gradient on Dask arrays: one partial sum per chunk, a tree of sums.

Design note
-----------
The loss and the gradient are sums over examples plus an L2 term, so they
split exactly over chunks of rows.  Each row-chunk of ``X`` (with the matching
labels) runs the fastest local backend for its dtype and row count
(:func:`fastsoftmax.fastest`) *with reg = 0*; the backends return
means, so multiplying by the chunk's row count gives that chunk's exact
partial sums ``(loss_sum, grad_sum, n)`` (one rounding, far inside the
documented tolerance of :mod:`fastsoftmax.testing`).  A tree of
:func:`dask.delayed` sums with fan-in ``split_every`` combines them on the
workers, and a last task finishes: divide by N and add the L2 term with the
same helper the compiled backends use (``backends._common.finish``).  So:

* no chunk of ``X`` ever travels to the client: (D, C) partial sums move
  between workers, and only ``(loss, dW)`` reaches the client;
* ``W`` enters the graph as a single key, so it is shipped once per call and
  fetched by each worker that needs it, never copied into every task;
* the keys are fresh per call (``pure=False``): a repeated call computes
  again instead of picking up a result the scheduler still holds under the
  same deterministic key (which made repeated timings meaningless);
* validation is the shared validator's: ``W``, the dtypes and ``reg`` are
  checked up front by :func:`fastsoftmax.backends._validate.prepare` on a one-row probe
  of X's and y's dtypes; each chunk is validated again by the backend it runs
  (so a label out of ``[0, C)`` or a NaN in ``X`` raises the validator's
  error, lazily, from the chunk that holds it).

The graph runs on whatever scheduler Dask would use: the ``distributed``
client you created (``Client("tcp://scheduler:8786")``), or Dask's threads.

Data helpers turn NumPy arrays, ``np.memmap`` files and ``.npy`` files into
row-chunked Dask arrays.  File-backed arrays are never read whole: each chunk
task maps the file and copies its own rows, and the graph carries only the
file's name, dtype, shape and offset (workers need the same path).  In-memory
arrays are scattered to the workers once when a distributed client is active
(not re-sent inside every graph); their chunks cannot be recomputed if their
worker dies, so that case raises a clear error (file-backed chunks are redone).

Training: :func:`minibatches` is a batch source of
:mod:`fastsoftmax.training.sgd` (what :meth:`fastsoftmax.Softmax.train` uses
for a Dask ``X``, or pass ``batches=minibatches``): it draws the same batches
as in memory from the generator it is given (:func:`~fastsoftmax.training.sgd.draw_rows`),
fetches each distinct row of several batches once per round trip to the
scheduler, and hands the step the fetched block with each batch's indices
into it (``rows=``), so the block is not gathered again per batch.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import math
import mmap
import os

import dask
import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.utils import parse_bytes

from . import backends
from .backends._validate import check_data, integer, prepare, row_indices
from .backends._common import finish

__all__ = ["softmax_loss", "take_rows", "minibatches", "from_array", "from_npy", "chunk_rows", "local_client"]

#: Bytes of minibatch rows :func:`minibatches` fetches per round trip.
PREFETCH_BYTES = 64 * 2**20

#: Fan-in of the tree that sums the per-chunk partial results.
SPLIT_EVERY = 8


# ----------------------------------------------------------------------------
# Loss and gradient


def _partial_sums(X_block, y_block, W, backend, num_threads):
    """One chunk's ``(loss_sum, grad_sum, n)``: runs on a worker.

    Parameters
    ----------
    X_block : ndarray, shape (n, D)
    y_block : ndarray, shape (n,)
    W : ndarray, shape (D, C), the working dtype
    backend : str
        A name from :func:`fastsoftmax.backends.available` (resolved on the client).
    num_threads : int
        Threads of the compiled backends for this task.

    Returns
    -------
    loss_sum : float
    grad_sum : ndarray, shape (D, C), float64
    n : int
    """
    n = X_block.shape[0]
    # reg = 0: the L2 term belongs to the whole problem, added once at the end.
    loss, dW = backends.get(backend)(W, X_block, y_block, 0.0, n_threads=num_threads)
    return loss * n, dW.astype(np.float64) * n, n


def _add_partials(*parts):
    """Sum several ``(loss_sum, grad_sum, n)`` triples: an inner node of the tree."""
    loss = sum(p[0] for p in parts)
    grad = parts[0][1].copy()
    for p in parts[1:]:
        grad += p[1]
    return loss, grad, sum(p[2] for p in parts)


def _finish(total, W, reg):
    """``(loss, dW)`` from the grand total: the last task, on a worker."""
    loss_sum, grad_sum, n = total
    # finish() works in place: on a copy, never on a task's input (which Dask
    # may still hold, or feed to a retry).
    loss, dW = finish(W, n, reg, loss_sum, grad_sum.copy())
    return loss, np.ascontiguousarray(dW, dtype=W.dtype)


def _tree_sum(parts, split_every):
    """Combine delayed triples ``split_every`` at a time until one is left."""
    while len(parts) > 1:
        parts = [
            dask.delayed(_add_partials, pure=False)(*parts[i : i + split_every])
            for i in range(0, len(parts), split_every)
        ]
    return parts[0]


def _known_rows(name, chunks):
    if any(math.isnan(c) for c in chunks):
        raise ValueError(
            f"{name} has unknown chunk sizes along its rows (as after boolean indexing); "
            f"call {name}.compute_chunk_sizes() first"
        )


def _align(W, X, y):
    """Check shapes (the validator's :func:`check_data`), make X and y row-chunked alike."""
    if not isinstance(X, da.Array):
        X = from_array(X)
    if not isinstance(y, da.Array) and not hasattr(y, "ndim"):
        y = np.asarray(y)
    W_probe = W if hasattr(W, "ndim") else np.asarray(W)
    if X.ndim == 2:
        _known_rows("X", X.chunks[0])
    if isinstance(y, da.Array) and y.ndim == 1:
        _known_rows("y", y.chunks[0])
    check_data(X, y, W_probe)  # the shared messages: dimensions, dtypes, shapes, N >= 1
    if len(X.chunks[1]) > 1:
        # A chunk must hold whole rows: merge the column blocks of each row
        # block (data moves between workers, never to the client).
        X = X.rechunk({1: -1})
    if not isinstance(y, da.Array):
        # Labels are small: in the graph, where Dask can recompute them after a
        # worker is lost (scattered data could not be).
        y = from_array(y, chunks=X.chunks[0], scatter=False)
    elif y.chunks[0] != X.chunks[0]:
        y = y.rechunk((X.chunks[0],))
    return X, y


def softmax_loss(W, X, y, reg, *, backend=None, num_threads=1, split_every=SPLIT_EVERY, compute=True):
    """Softmax loss and gradient of a Dask array, computed where its chunks live.

    Same contract and result as :func:`fastsoftmax.softmax_loss` on the
    same data (within :func:`fastsoftmax.testing.tolerance`).

    Parameters
    ----------
    W : array_like, shape (D, C)
        Weights (float32 or float64), a NumPy array on the client.
    X : dask.array.Array, shape (N, D)
        Data chunked by rows.  Column chunks are merged first (a rechunk on
        the workers).  A NumPy array or memmap is wrapped with
        :func:`from_array`.
    y : dask.array.Array or array_like, shape (N,)
        Integer labels in ``[0, C)``.  A NumPy array is split to match X's
        row chunks; a Dask array with other chunks is rechunked to them.
    reg : float
        L2 strength, finite and >= 0.
    backend : str, optional
        Backend every chunk runs; default, per chunk,
        ``fastsoftmax.fastest(dtype, rows of the chunk)`` as decided on the
        client (workers need the same installation).
    num_threads : int, optional
        Threads each chunk's task gives the compiled backends.  Default 1:
        Dask runs one task per worker thread (and its nanny limits BLAS to
        one thread for the same reason), so more would oversubscribe the cores.
    split_every : int, optional
        Fan-in of the reduction tree.
    compute : bool, optional
        If False, return a :class:`dask.delayed.Delayed` of ``(loss, dW)``
        instead (compute it with ``dask.compute`` or ``client.compute``).

    Returns
    -------
    loss : float
    dW : ndarray, shape (D, C)
        float32 only if W and X are both float32, else float64.

    Raises
    ------
    TypeError, ValueError
        For bad arguments, up front; for labels out of range or non-finite
        ``X``, when the chunk holding them is computed.
    """
    X, y = _align(W, X, y)
    num_threads = integer(num_threads, "num_threads", 1)
    split_every = integer(split_every, "split_every", 2)
    # The shared validator on a one-row probe with X's and y's dtypes checks
    # W (shape, dtype, finite), the dtypes, reg, and casts W to the working dtype.
    probe = prepare(W, np.zeros((1, X.shape[1]), X.dtype), np.zeros(1, y.dtype), reg)
    W, reg = probe.W, probe.reg
    if backend is not None:
        backends.get(backend)  # an unknown or unavailable name fails here, not on a worker

    def chosen(n):
        # As fastsoftmax.softmax_loss would choose for a chunk of n rows.
        return backend if backend is not None else backends.fastest(W.dtype, n)

    W_key = dask.delayed(W, pure=False)  # one key: W is shipped once per call
    partial = dask.delayed(_partial_sums, pure=False)
    # optimize_graph=False keeps the Futures of scattered chunks in the graph,
    # so a lazy result (compute=False) holds them alive on its own.
    X_blocks = X.to_delayed(optimize_graph=False).ravel()
    y_blocks = y.to_delayed(optimize_graph=False).ravel()
    parts = [
        partial(xb, yb, W_key, chosen(n), num_threads)
        for xb, yb, n in zip(X_blocks, y_blocks, X.chunks[0])
        if n > 0
    ]
    result = dask.delayed(_finish, pure=False)(_tree_sum(parts, split_every), W_key, reg)
    if not compute:
        return result
    try:
        return result.compute()
    except concurrent.futures.CancelledError as exc:  # distributed's FutureCancelledError
        raise RuntimeError(
            f"the computation was cancelled ({exc}); if a worker died holding chunks that "
            "were scattered to it (from_array of an in-memory array under a distributed "
            "client), those chunks are lost and cannot be recomputed: load X from files "
            "(from_npy, from_array of a memmap) or pass scatter=False so Dask can recompute "
            "them on another worker"
        ) from exc


def _unique_rows(X, idx):
    """Each distinct row of ``X[idx]`` fetched once: ``(block, rows, inverse)``.

    ``block == X[rows]`` (the distinct indices, sorted) and
    ``block[inverse] == X[idx]``.

    Rows are fetched in sorted order (what Dask's slicing handles best).
    ``idx`` is validated as ``softmax_loss`` validates ``rows`` (integers,
    in range, negative ones counted from the end).
    """
    idx = row_indices(idx, X.shape[0])
    rows, inverse = np.unique(idx, return_inverse=True)
    return np.asarray(X[rows].compute()), rows, inverse


def take_rows(X, idx):
    """Rows ``X[idx]`` of a Dask array, fetched to the client as one NumPy array.

    For minibatches: only the selected rows travel, each distinct row once,
    and the result is put back in the order of ``idx``, so it equals
    ``X_in_memory[idx]`` exactly, repeats included.

    Parameters
    ----------
    X : dask.array.Array, shape (N, ...)
    idx : array_like of int, shape (B,)
        Row indices, in any order, repeats allowed, negative ones counted
        from the end as in NumPy.

    Returns
    -------
    ndarray, shape (B, ...), dtype of X

    Raises
    ------
    TypeError, ValueError, IndexError
        For indices that are not integers, not 1-D, none, or out of range
        (the validator's messages for ``rows``).
    """
    block, _, inverse = _unique_rows(X, idx)
    return block[inverse]


def minibatches(X, y, batch_size, num_iters, rng, *, prefetch_bytes=PREFETCH_BYTES):
    """Batch source for training on a Dask ``X``: the in-memory batches, many per round trip.

    A batch source of :mod:`fastsoftmax.training.sgd` (pass it as
    ``Softmax.train(..., batches=minibatches)``; ``train`` picks it for a
    Dask ``X`` by itself).  Draws each batch's indices exactly as training
    in memory does (:func:`fastsoftmax.training.sgd.draw_rows` on ``rng``,
    once per batch and never more than ``num_iters`` times), but fetches
    the distinct rows of several consecutive batches at once: minibatches
    do not depend on the weights, so drawing them a little ahead changes
    nothing but the number of scheduler round trips.  Each batch is the
    fetched block with its indices into it, which the step reads in place.

    Parameters
    ----------
    X : dask.array.Array, shape (N, D)
    y : array_like, shape (N,)
        Labels (brought to the client: N integers).
    batch_size, num_iters : int
    rng : numpy.random.Generator
        For example :attr:`fastsoftmax.Softmax.rng`.
    prefetch_bytes : int
        At most this many bytes of rows per fetch (at least one batch).

    Yields
    ------
    fastsoftmax.training.sgd.Batch
        ``(block, y[fetched rows], rows)`` with ``block[rows]`` equal to the
        in-memory ``X[draw]``, shapes (M, D), (M,), (batch_size,).
    """
    from .training.sgd import Batch, draw_rows

    y = np.asarray(y)
    row_bytes = max(1, math.prod(X.shape[1:]) * X.dtype.itemsize)
    per_fetch = max(1, prefetch_bytes // (row_bytes * batch_size))
    remaining = num_iters
    while remaining > 0:
        count = min(per_fetch, remaining)
        idx = np.concatenate([draw_rows(rng, len(y), batch_size) for _ in range(count)])
        block, rows, inverse = _unique_rows(X, idx)
        y_block = y[rows]
        for i in range(count):
            yield Batch(block, y_block, inverse[i * batch_size : (i + 1) * batch_size])
        remaining -= count


# ----------------------------------------------------------------------------
# Data: NumPy arrays, memmaps and .npy files as row-chunked Dask arrays


def chunk_rows(shape, dtype, chunks="auto"):
    """Rows per chunk for an array of ``shape`` and ``dtype``.

    Parameters
    ----------
    shape : tuple of int
        ``(N, ...)``; chunks always hold whole rows.
    dtype : dtype
    chunks : int, str or "auto"
        Rows per chunk (int), bytes per chunk (``"64MiB"``), or ``"auto"``
        for Dask's ``array.chunk-size`` setting (128 MiB by default).

    Returns
    -------
    int
        At least 1, at most ``max(N, 1)``.
    """
    if isinstance(chunks, (bool, np.bool_)):
        raise TypeError(f"chunks must be a row count, a byte size or 'auto', got {chunks!r}")
    if isinstance(chunks, (int, np.integer)):
        rows = integer(chunks, "chunks", 1)
    elif isinstance(chunks, str):
        size = dask.config.get("array.chunk-size") if chunks == "auto" else chunks
        try:
            nbytes = parse_bytes(size)
        except (ValueError, TypeError) as exc:
            raise ValueError(
                f"chunks must be a row count, a byte size such as '64MiB', or 'auto'; got {chunks!r}"
            ) from exc
        row_bytes = max(1, math.prod(shape[1:]) * np.dtype(dtype).itemsize)
        rows = max(1, nbytes // row_bytes)
    else:
        raise TypeError(
            f"chunks must be a row count, a byte size such as '64MiB', or 'auto'; got {chunks!r}"
        )
    return min(rows, max(shape[0], 1))


class _MappedFile:
    """A file-backed array that pickles as its location, not its data.

    Dask's ``from_array`` slices it once per chunk; each slice maps the file
    and copies only its rows, so neither the client nor the graph ever holds
    the whole array.
    """

    def __init__(self, filename, dtype, shape, offset, order):
        self.filename = os.fspath(filename)
        self.dtype = np.dtype(dtype)
        self.shape = tuple(shape)
        self.ndim = len(self.shape)
        self.offset = offset
        self.order = order

    def __getitem__(self, key):
        mm = np.memmap(
            self.filename, dtype=self.dtype, mode="r", offset=self.offset, shape=self.shape, order=self.order
        )
        return np.array(mm[key])  # a copy: the chunk travels, the mapping does not


def _row_chunks(shape, dtype, chunks):
    if isinstance(chunks, tuple):
        if sum(chunks) != shape[0] or any(int(c) < 0 for c in chunks):
            raise ValueError(
                f"explicit row chunks must be sizes >= 0 that add up to N = {shape[0]}, got {chunks}"
            )
        rows = tuple(int(c) for c in chunks)
        return (rows,) + tuple(shape[1:])
    rows = chunk_rows(shape, dtype, chunks)
    return da.core.normalize_chunks((rows,) + tuple(shape[1:]), tuple(shape))


def from_array(a, chunks="auto", *, scatter=None):
    """A row-chunked Dask array of ``a``, without reading file-backed data whole.

    Parameters
    ----------
    a : ndarray, np.memmap or dask.array.Array, shape (N, ...)
        For example the arrays of :func:`fastsoftmax.training.data.get_cifar10_data`.
        A whole ``np.memmap`` (as from ``np.load(path, mmap_mode="r")``) is
        read lazily, chunk by chunk, on the workers; so is a ``.npy`` file via
        :func:`from_npy`.  A Dask array is rechunked to whole rows.
    chunks : int, str, "auto" or tuple of int
        Rows per chunk, bytes per chunk (``"64MiB"``), ``"auto"`` (Dask's
        ``array.chunk-size``), or explicit row-chunk sizes adding up to N.
    scatter : bool, optional
        For an in-memory array: send its chunks to the workers of the
        current ``distributed`` client now, once, instead of embedding the
        data in every graph built from it.  Default: scatter when a
        distributed client is active.  Scattered chunks live only on their
        worker: if it dies they are lost (computations on them fail with a
        clear error), whereas embedded or file-backed chunks are recomputed.

    Returns
    -------
    dask.array.Array, shape (N, ...)
        Chunked along axis 0 only.

    Raises
    ------
    ValueError
        For a 0-d array, or a memmap that is a view of a larger mapping
        (pass the whole memmap and slice the Dask array instead).
    """
    if isinstance(a, da.Array):
        if a.ndim == 0:
            raise ValueError("a must have at least one dimension (rows), got a 0-d array")
        _known_rows("a", a.chunks[0])
        return a.rechunk(_row_chunks(a.shape, a.dtype, chunks))
    if isinstance(a, np.memmap):
        if not isinstance(a.base, mmap.mmap):
            raise ValueError(
                "a is a view of a memmap, whose file offset NumPy does not record; pass the whole "
                "memmap (or use from_npy) and slice the Dask array instead"
            )
        order = "F" if a.flags.f_contiguous and not a.flags.c_contiguous else "C"
        source = _MappedFile(a.filename, a.dtype, a.shape, a.offset, order)
        return _from_source(source, chunks, key=(a.filename, a.offset, _stat(a.filename)))
    a = np.asarray(a)
    if a.ndim == 0:
        raise ValueError("a must have at least one dimension (rows), got a 0-d array")
    row_chunks = _row_chunks(a.shape, a.dtype, chunks)
    client = _current_client() if scatter is None or scatter else None
    if scatter and client is None:
        raise ValueError("scatter=True needs a distributed Client; create one first")
    if client is None:
        return da.from_array(a, chunks=row_chunks)
    bounds = np.cumsum((0,) + row_chunks[0])
    pieces = [a[start:stop] for start, stop in zip(bounds[:-1], bounds[1:])]
    # hash=False: fresh keys, so two arrays of equal data never share (and
    # release) each other's chunks.
    futures = client.scatter(pieces, hash=False)
    blocks = [da.from_delayed(f, shape=p.shape, dtype=a.dtype) for f, p in zip(futures, pieces)]
    return da.concatenate(blocks, axis=0)


def _current_client():
    """The active ``distributed`` client, or None (also when distributed is not installed)."""
    try:
        from distributed import default_client
    except ImportError:
        return None
    try:
        return default_client()
    except ValueError:
        return None


def _stat(filename):
    st = os.stat(filename)
    return st.st_size, st.st_mtime_ns


def _from_source(source, chunks, key):
    if source.ndim == 0:
        raise ValueError("the array must have at least one dimension (rows), got a 0-d array")
    row_chunks = _row_chunks(source.shape, source.dtype, chunks)
    name = "from-file-" + tokenize(key, source.dtype, source.shape, source.order, row_chunks)
    return da.from_array(
        source,
        chunks=row_chunks,
        name=name,
        asarray=False,
        fancy=False,
        meta=np.empty((0,) * source.ndim, dtype=source.dtype),
    )


def from_npy(path, chunks="auto"):
    """A ``.npy`` file as a row-chunked Dask array, never loaded whole.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.npy`` file (as written by ``np.save``); workers must be able to
        read the same path.
    chunks : int, str, "auto" or tuple of int
        As in :func:`from_array`.

    Returns
    -------
    dask.array.Array
        Each chunk task maps the file and copies its own rows.

    Raises
    ------
    FileNotFoundError, ValueError
        For a missing file, or one that is not a ``.npy`` array (NumPy's message).
    """
    # allow_pickle=False said, not assumed from NumPy's default: a .npy of
    # objects is a pickle and would run code (docs/security.md).
    mm = np.load(os.fspath(path), mmap_mode="r", allow_pickle=False)
    if not isinstance(mm, np.memmap):
        if hasattr(mm, "close"):
            mm.close()  # an NpzFile holds its file open
        raise ValueError(f"{os.fspath(path)!r} is not a .npy array file (np.load returned {type(mm).__name__})")
    return from_array(mm, chunks=chunks)


@contextlib.contextmanager
def local_client(n_workers=2, threads_per_worker=1):
    """A ``distributed`` client of a fresh ``LocalCluster`` on 127.0.0.1, closed on exit.

    Worker processes (not threads), the scheduler's HTTP server on a free
    port: what the tests and the benchmark run on, and a quick way to try
    this module on one machine.

    Parameters
    ----------
    n_workers, threads_per_worker : int

    Yields
    ------
    distributed.Client
        The default scheduler while the block runs.
    """
    from distributed import Client, LocalCluster

    with LocalCluster(
        n_workers=n_workers,
        threads_per_worker=threads_per_worker,
        processes=True,
        host="127.0.0.1",
        # A free port: the scheduler's HTTP server starts even without a
        # dashboard, and on the default 8787 it warns when another cluster
        # (a parallel test run) holds that port.
        dashboard_address="127.0.0.1:0",
    ) as cluster, Client(cluster) as client:
        yield client
