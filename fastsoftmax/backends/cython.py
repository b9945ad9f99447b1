"""``cython`` backend: the compiled extension ``_cython_kernel``.

Design note
-----------
The kernel (``_cython_kernel.pyx`` over the C micro-kernels of
``_fused_kernel.h``; docs/kernels.md has the design and the measurements)
is built by ``setup.py`` at install time.  If it was not built (a source
checkout without ``pip install``, a machine with no compiler), importing this
module raises ``ImportError`` and the registry reports the backend as
unavailable with that reason; ``import fastsoftmax`` never fails because of
it.

This module only adapts layouts (dividing by N and the L2 term happen in
the kernel's final reduction, ``reg=``): it pads ``W.T`` with zero classes to the
kernel's class block and hands X over as it is whenever its rows have unit
stride (C order, or row-strided views such as ``X[::2]``); only other
layouts (Fortran order, column-strided views) are copied, once.  A bias, a
row index array and an output array go to the kernel natively: nothing of
size N x D is ever gathered or copied for them.  Given a ``scratch`` dict
(the training step's), the padded ``W.T`` and the kernel's accumulators
are kept there from call to call instead of allocated anew.

For the training step the kernel offers one more entry,
``softmax_loss.bind_sgd_step`` (:func:`bind_sgd_step`): the step's whole
compiled part for one problem, set up once, so that each step is one call
(``_cython_kernel.sgd_step``: W's transpose, the kernel, the reduction with
the update ``W -= lr * dW`` in it) instead of this module's layout work and
the update in another pass over W.
"""

import os

from . import _wisdom
from ._threads import get_num_threads
from ._common import (
    LOSS_GRAD_DOC, blocking, padded_transpose, reads_in_place, registry_kernel, rows_in_place, static_chunk_bytes,
    thread_count,
)
from ._cython_kernel import CLASS_BLOCK, SUPPORTED_ISAS, fused_loss_grad, sgd_step, transpose_into

#: Which instruction-set build of the kernel runs (one of ``SUPPORTED_ISAS``);
#: None means the widest this CPU supports.  Tests set it to cover every build;
#: the environment variable ``FASTSOFTMAX_ISA`` sets it for a whole process
#: (e.g. ``FASTSOFTMAX_ISA=avx2 fastsoftmax bench`` on an AVX-512 machine).
ISA = os.environ.get("FASTSOFTMAX_ISA") or None
if ISA is not None and ISA not in SUPPORTED_ISAS:
    raise ImportError(f"FASTSOFTMAX_ISA={ISA!r}: this CPU runs {SUPPORTED_ISAS}")

#: (tile, dchunk) override for experiments; None: ``_common.blocking``.
BLOCKING = None

#: Whether the gradient pass prefetches the whole next tile (True/False, for
#: experiments and ``fastsoftmax tune``); None: from the batch size that this
#: machine's wisdom says (:func:`tile_prefetch_from`), never without it.
PREFETCH_TILE = None

__all__ = ["softmax_loss", "loss_grad", "bind_sgd_step", "running_isa", "score_chunk", "tile_prefetch_from", "ISA",
           "SUPPORTED_ISAS"]


def running_isa():
    """The instruction-set build that runs: :data:`ISA`, else the widest this CPU supports."""
    return ISA or SUPPORTED_ISAS[-1]


def score_chunk(itemsize):
    """Bytes of W.T per score-pass D-chunk for the build that runs, and whether ``fastsoftmax tune`` measured them.

    This machine's measured best for the build and dtype when tune has
    saved one (:func:`._wisdom.chunk_bytes`), else the static table's
    (``_common.static_chunk_bytes``).

    Returns
    -------
    (int, bool)
    """
    isa = running_isa()
    measured = _wisdom.chunk_bytes(isa, _wisdom.DTYPE_NAMES[itemsize])
    return (measured, True) if measured else (static_chunk_bytes(isa), False)


def tile_prefetch_from(itemsize):
    """From which batch size the gradient pass prefetches the whole next tile, for the build that runs.

    :data:`PREFETCH_TILE` when set (True: 1, False: never), else this
    machine's measured threshold (:func:`._wisdom.prefetch_from`), else
    never: the start of the next tile's rows is the default, measured
    faster or equal on the other CPUs and builds (docs/kernels.md, round 14).

    Returns
    -------
    int
        Batches of at least this many rows prefetch whole tiles
        (``sys.maxsize``: never).
    """
    return _wisdom.prefetch_start(running_isa(), itemsize, PREFETCH_TILE)


_blockings: dict = {}  # (D, Cp, itemsize, ISA, overrides, wisdom state) -> (tile, dchunk, prefetch_from)


def _blocking(D, Cp, itemsize):
    """(tile, dchunk, prefetch_from) for the build that runs.

    :data:`BLOCKING`, else ``_common.blocking``'s with :func:`score_chunk`;
    and :func:`tile_prefetch_from`.  Remembered per shape, build and wisdom
    (:func:`._wisdom.state`): worked out on every call it cost 15-30 us of
    an N = 500 call, being the first Python after the kernel
    (docs/kernels.md, round 12).
    """
    key = (D, Cp, itemsize, ISA, BLOCKING, PREFETCH_TILE, _wisdom.state())
    found = _blockings.get(key)
    if found is None:
        if len(_blockings) >= 256:  # many shapes: start over
            _blockings.clear()
        tile, dchunk = BLOCKING or blocking(D, Cp, itemsize, isa=running_isa(),
                                            chunk_bytes=score_chunk(itemsize)[0])
        found = _blockings[key] = (tile, dchunk, tile_prefetch_from(itemsize))
    return found


# The contract of both compiled backends: _common.LOSS_GRAD_DOC, set as the docstring below.
def loss_grad(W, X, y, reg, b=None, rows=None, out=None, n_threads=None, scratch=None):
    N, C = X.shape[0], W.shape[1]
    n = N if rows is None else len(rows)
    X = rows_in_place(X)
    Wt = padded_transpose(W, CLASS_BLOCK, aligned=True, scratch=scratch,
                          transpose=transpose_into if W.flags.c_contiguous else None)
    tile, dchunk, prefetch_from = _blocking(X.shape[1], Wt.shape[0], X.dtype.itemsize)
    n_threads = thread_count(n, X.shape[1], C, get_num_threads() if n_threads is None else n_threads)
    # reg=: the kernel's reduction divides by n and adds the L2 term
    # (_common.finish's job, without its three extra passes over (D, C)).
    loss, dW, db = fused_loss_grad(Wt, X, y, C, n_threads, ISA, b, rows, out, tile, dchunk, reg=reg, scratch=scratch,
                                   prefetch_tile=n >= prefetch_from)
    return loss, dW, db


loss_grad.__doc__ = LOSS_GRAD_DOC
softmax_loss = registry_kernel(loss_grad)


def bind_sgd_step(problem, n, n_threads, scratch):
    """The training step's compiled call for batches of ``n`` rows of ``problem``.

    Everything that stays the same from batch to batch (the padded ``W.T``
    buffer, the blocking, the thread count, the instruction set) is settled
    here once; the returned ``run(rows, learning_rate)`` is then one call of
    ``_cython_kernel.sgd_step``, which computes the loss and gradient of the
    batch and takes ``W -= learning_rate * dW`` (and the same for ``b``) in
    the kernel's own reduction, bit for bit as :func:`loss_grad` followed by
    ``_cython_kernel.sgd_update``.

    Parameters
    ----------
    problem : fastsoftmax.backends._validate.Problem
        Validated, with ``out`` (the gradient buffer, shape (D, C)) and ``reg``.
        ``run`` reads W, X, y and b as they are at each call and updates W
        and b in place.
    n : int
        Rows per batch.
    n_threads : int
        The thread setting (``thread_count`` decides how many run).
    scratch : dict
        Where the buffers are kept (the step's).

    Returns
    -------
    callable or None
        ``run(rows, learning_rate) -> float or None``: rows an intp array of
        ``n`` indices, checked in range; the batch's loss before the update,
        or None (W and b untouched) when the loss or a gradient is not
        finite.  None instead of ``run`` when X would need a copy to be read
        in place (then each step must copy it anew: use the kernel).
    """
    W, X, y, reg, b, _, out = problem
    if not reads_in_place(X) or out is None or not W.flags.c_contiguous:
        return None
    D, C = W.shape
    Wt = padded_transpose(W, CLASS_BLOCK, aligned=True, scratch=scratch)
    tile, dchunk, prefetch_from = _blocking(D, Wt.shape[0], X.dtype.itemsize)
    prefetch = n >= prefetch_from
    threads = thread_count(n, D, C, n_threads)
    isa = ISA

    def run(rows, learning_rate):
        return sgd_step(W, Wt, X, y, C, threads, isa, b, rows, out, tile, dchunk, prefetch, reg, learning_rate,
                        scratch)

    return run


softmax_loss.bind_sgd_step = bind_sgd_step
