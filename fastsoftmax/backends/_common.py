"""What the compiled backends share: blocking, padding, turning sums into the result, their interface.

The fused kernels accumulate per-example gradients in (Cp, D) layout
(classes padded to the kernel's class block) because that is what their
inner loops write contiguously; their final, compiled reduction over the
per-thread accumulators writes the sum transposed to the (D, C) result (the
caller's ``out``, or a fresh array; a NumPy transpose-and-copy of it took
0.2 ms, 8% of a N=500 call).  The C kernel's tile and D-chunk come from a
cache model (:func:`blocking`, docs/kernels.md); the D-chunk from this
machine's measurement instead when ``fastsoftmax tune`` has made one.  Padding W, dividing by N
and adding the L2 term are the same for every such kernel, so they live
here once (:func:`finish`; the C kernel's reduction does finish's work as
it writes each element, ``fused_loss_grad(reg=)``, which saves finish's
three extra passes over (D, C), and is tested against it).
"""

import os

import numpy as np

#: Multiply-adds (N * D * C) each thread must get before a kernel uses more
#: than one: about 70 us of one core's work.  Smaller problems run on one
#: thread, because starting a parallel region costs microseconds on an idle
#: machine but measured 20-40 ms per call (Numba's omp layer) on a loaded one.
MIN_WORK_PER_THREAD = 1 << 20


def thread_count(N, D, C, n_threads):
    """How many threads (= chunks of rows) a fused kernel should use.

    Parameters
    ----------
    N, D, C : int
        Problem shape.
    n_threads : int
        The user's setting (:func:`fastsoftmax.get_num_threads`).

    Returns
    -------
    int
        Between 1 and ``min(n_threads, N)``; deterministic in its arguments,
        so results stay bit-identical for a given setting and shape.
    """
    by_work = (N * max(D, 1) * C) // MIN_WORK_PER_THREAD
    return max(1, min(n_threads, N, by_work))


#: L2 bytes per core assumed where the OS does not say (1 MiB: between the
#: 512 KiB of Zen 2/3 and the 2 MiB of Sapphire Rapids / Zen 4's 1 MiB).
DEFAULT_L2 = 1 << 20

#: Bytes of W.T the score pass keeps in L1 per D-chunk: half of a 32 KiB L1d,
#: the smallest on x86-64 cores of the last decade, so the chunk, the rows it
#: meets and the partial sums fit together.
L1_W_BYTES = 16 << 10

#: The score pass's chunk of W.T per instruction-set build, where it is not
#: :data:`L1_W_BYTES`: the fallback where ``fastsoftmax tune`` has not
#: measured this machine's best chunk (:func:`fastsoftmax.backends._wisdom.chunk_bytes`).
#: The AVX2 build's 2-row micro-kernel meets each chunk five times per
#: 10-row tile (the AVX-512 build's 5-row one twice), beside the tile's rows
#: prefetched into L1, and ran 5-6 % faster at N = 10000 with 5 KiB chunks
#: (512 bytes of each class's row) than with 16 KiB, in both dtypes, on 1
#: and 2 threads; the AVX-512 build ran 7 % slower with them in float64 and
#: the same in float32, the baseline build the same (docs/kernels.md, round
#: 9; measured on one CPU, an AVX-512 Xeon, hence the per-machine wisdom).
CHUNK_BYTES = {"avx2": 5 << 10}


def _l2_bytes():
    """This CPU's per-core L2 size (Linux sysfs), or :data:`DEFAULT_L2`."""
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for index in sorted(os.listdir(base)):
            with open(os.path.join(base, index, "level")) as f:
                if f.read().strip() != "2":
                    continue
            with open(os.path.join(base, index, "size")) as f:
                text = f.read().strip().upper()
            scale = {"K": 1 << 10, "M": 1 << 20}.get(text[-1:], 1)
            return int(text.rstrip("KM")) * scale
    except (OSError, ValueError):
        pass
    return DEFAULT_L2


L2_BYTES = _l2_bytes()


def static_chunk_bytes(isa):
    """Bytes of W.T per score-pass D-chunk for build ``isa`` where nothing was measured here."""
    return CHUNK_BYTES.get(isa, L1_W_BYTES)


def blocking(D, Cp, itemsize, l2_bytes=None, isa=None, chunk_bytes=None):
    """Tile rows and score-pass D-chunk of the C kernel, from the cache model.

    * A tile of T rows of X is read from memory by the score pass (each row
      prefetched a few KB ahead) and re-read from L2 by the gradient pass,
      while the start of the next tile is prefetched (or all of it, where
      ``fastsoftmax tune`` measured that faster: ``cython.tile_prefetch_from``).  The budget is three
      tiles' bytes plus W.T and the (Cp, D) gradient accumulator in a
      quarter of L2, the rest being the hardware prefetchers' and the other
      tenants'.  It is empirical: it gives T = 10 at D = 3073 in both dtypes,
      which measured best on a 2 MiB L2 and on 1 MiB (20, 30 and 40 rows
      were slower: at D = 3073 a C-ordered X's rows are a few bytes past a
      multiple of 4 KB apart, so a tile's rows at one column share an L1
      set, and 20 rows overflow its ways; with rows padded apart 20 rows
      tie or win, docs/kernels.md, round 21).  Larger tiles cut the
      accumulator's traffic (loaded and stored once per tile: 2 * Cp / T
      of X's), so T is the largest that fits, a multiple of 10 (the score
      micro-kernels' 2 or 5 rows), at least 10, and small enough that the tile's partial score vectors
      (T * Cp vectors of 64 bytes) stay within :data:`L1_W_BYTES` of L1
      (T <= 20 at Cp = 10; measured at D = 512: T = 20 best, 60 up to 15 %
      slower).
    * The D-chunk: ``chunk_bytes`` of W.T when given (this machine's
      measured best, from ``fastsoftmax tune``), else :data:`CHUNK_BYTES`
      for the builds measured faster with another, else
      :data:`L1_W_BYTES`; a multiple of 16 elements.

    Neither choice changes a sum's order (each gradient element adds the
    rows one by one in problem order, each score lane adds D in order), so
    machines with other cache sizes get the same bits for the same
    instruction-set build and thread count (tested).  docs/kernels.md has
    the measurements behind the model.

    Parameters
    ----------
    D, Cp : int
        Features, and classes padded to the kernel's class block.
    itemsize : int
        Bytes per element (8 or 4).
    l2_bytes : int, optional
        L2 per core (default: this CPU's, :data:`L2_BYTES`).
    isa : str, optional
        The instruction-set build that runs (a key of :data:`CHUNK_BYTES`
        or another build name).
    chunk_bytes : int, optional
        Bytes of W.T per D-chunk, overriding the static table.

    Returns
    -------
    (tile, dchunk) : tuple of int
    """
    l2 = L2_BYTES if l2_bytes is None else l2_bytes
    row = max(1, D) * itemsize
    rows = (l2 // 4 - 2 * Cp * row) // (3 * row)
    most = max(10, L1_W_BYTES // (Cp * 64) // 10 * 10)
    tile = max(10, min(most, rows // 10 * 10))
    chunk = chunk_bytes or static_chunk_bytes(isa)
    dchunk = max(16, chunk // (Cp * itemsize) // 16 * 16)
    return tile, dchunk


def reads_in_place(X):
    """Whether a kernel can read X's rows where they are.

    Yes when every row is unit-stride and the row stride is a whole number
    of elements (any sign: C order, a column slice ``big[:, :D]``,
    ``X[::2]``, ``X[::-1]``); no for Fortran order and strided columns.

    Parameters
    ----------
    X : ndarray, shape (N, D)

    Returns
    -------
    bool
    """
    item = X.dtype.itemsize
    return not (X.shape[1] > 1 and X.strides[1] != item or X.strides[0] % item)


def rows_in_place(X):
    """X itself when a kernel can read its rows where they are (:func:`reads_in_place`), else a C-ordered copy.

    Parameters
    ----------
    X : ndarray, shape (N, D)

    Returns
    -------
    ndarray, shape (N, D), dtype of ``X``
    """
    return X if reads_in_place(X) else np.ascontiguousarray(X)


def aligned_zeros(rows, D, dtype):
    """A zero (rows, ld) array whose rows start on 64-byte boundaries, ld = D rounded up to a cache line.

    Parameters
    ----------
    rows, D : int
    dtype : numpy dtype

    Returns
    -------
    ndarray, shape (rows, ld), C-contiguous
    """
    line = 64 // np.dtype(dtype).itemsize
    ld = -(-max(D, 1) // line) * line
    flat = np.zeros(rows * ld + line, dtype=dtype)
    off = ((-flat.ctypes.data) % 64) // flat.itemsize
    return flat[off:off + rows * ld].reshape(rows, ld)


def padded_classes(C, multiple):
    """C rounded up to a whole number of the kernel's class blocks of ``multiple``: the Cp of its layouts."""
    return -(-C // multiple) * multiple


def padded_transpose(W, multiple, aligned=False, scratch=None, transpose=None):
    """``W.T`` as a (Cp, D) array, Cp = C rounded up to ``multiple``.

    C-contiguous; or, with ``aligned``, a view whose rows start on 64-byte
    boundaries (row stride a multiple of 64 bytes), so that the C kernel's
    vector loads of W never straddle two cache lines.

    The extra rows are zero weights: the kernels' micro-kernels then work on
    whole class blocks, and the padded classes' scores and gradients are
    ignored.

    Parameters
    ----------
    W : ndarray, shape (D, C)
    multiple : int
    aligned : bool
    scratch : dict, optional
        A caller's buffers, kept between its calls (see
        :func:`registry_kernel`): the transpose is written into the array
        kept there from an earlier call of the same shape and dtype, instead
        of a new one (0.25 MB for CIFAR's W in float64; with the cython
        kernel's accumulators kept too, a training step is 3-8 % faster,
        docs/training.md).
    transpose : callable, optional
        ``transpose(W, Wt)`` writes ``W.T`` into ``Wt[:C]``: a compiled
        loop faster than NumPy's strided copy (the cython backend's, for a
        C-contiguous W).  Default NumPy's ``Wt[:C] = W.T``.

    Returns
    -------
    ndarray, shape (Cp, D), dtype of ``W``
        The one kept in ``scratch`` (overwritten by the next call) if given.
    """
    D, C = W.shape
    Cp = padded_classes(C, multiple)
    key = ("padded_transpose", multiple, aligned, W.shape, W.dtype)
    Wt = None if scratch is None else scratch.get(key)
    if Wt is None:
        Wt = aligned_zeros(Cp, D, W.dtype)[:, :D] if aligned else np.zeros((Cp, D), dtype=W.dtype)
        if scratch is not None:
            scratch[key] = Wt
    # rows C..Cp stay zero: nothing else writes them
    if transpose is None:
        Wt[:C] = W.T
    else:
        transpose(W, Wt)
    return Wt


def finish(W, N, reg, loss_sum, grad_sum, bias_sum=None):
    """Average the sums over N examples and add ``reg * ||W||^2``, in place.

    Parameters
    ----------
    W : ndarray, shape (D, C)
    N : int
    reg : float
    loss_sum : float
        Sum over examples of ``-log softmax(S)[i, y[i]]``.
    grad_sum : ndarray, shape (D, C), dtype of ``W``, C-contiguous
        Sum over examples of ``outer(X[i], P[i] - Y[i])``; a scratch array of
        the kernel's, overwritten with the result.
    bias_sum : ndarray, shape (C,), optional
        Sum over examples of ``P[i] - Y[i]``; divided by N in place.

    Returns
    -------
    loss : float
    dW : ndarray, shape (D, C), dtype of ``W``, C-contiguous (``grad_sum``)
    """
    if bias_sum is not None:
        bias_sum /= N
    grad_sum /= N
    grad_sum += (2.0 * reg) * W
    # Not np.vdot: that is a BLAS call, and OpenBLAS multithreads it at this
    # size; its worker then spin-waits beside our OpenMP/Numba threads on the
    # next call (3 runnable threads on 2 cores: 8 ms instead of 1.6 ms per
    # N = 500 call, measured).  einsum's own loop never starts a thread.
    loss = float(loss_sum) / N + reg * float(np.einsum("ij,ij->", W, W, dtype=np.float64))
    return loss, grad_sum


#: The docstring of the compiled backends' ``loss_grad`` (one contract, two kernels).
LOSS_GRAD_DOC = """Loss and gradients, with optional bias, row subset and output array.

    Parameters
    ----------
    W : ndarray, shape (D, C), float32 or float64
    X : ndarray, shape (N, D), same dtype as ``W``
    y : ndarray, shape (N,), intp labels in [0, C)
    reg : float
    b : ndarray, shape (C,), dtype of ``W``, optional
    rows : ndarray, shape (n,), intp in [0, N), optional
        Process ``X[rows]``, ``y[rows]`` without gathering them.
    out : ndarray, shape (D, C), dtype of ``W``, C-contiguous, optional
    n_threads : int, optional
        Default :func:`fastsoftmax.get_num_threads`.
    scratch : dict, optional
        Kept by a caller between its calls (the training step): the kernel
        keeps its buffers there (W's padded transpose; in cython also the
        per-thread accumulators) instead of allocating them each call.

    Returns
    -------
    loss : float
    dW : ndarray, shape (D, C) (``out`` if given)
    db : ndarray, shape (C,), or None when ``b`` is None
    """


def registry_kernel(loss_grad):
    """The registry's kernel interface, ``softmax_loss(problem, n_threads)``, over a backend's ``loss_grad``.

    Both compiled backends take a bias, a row index array and an output array
    natively, so the validated problem is passed on as it is.  They also
    take a ``scratch`` dict, and their kernels say so (attribute
    ``takes_scratch``, which other kernels, plug-ins included, need not
    have): a caller that runs one kernel again and again (the training
    step) keeps a dict for it, and the kernel keeps its buffers there
    instead of allocating them anew each call.
    """

    def softmax_loss(problem, n_threads, scratch=None):
        """Softmax loss and gradients: the registry's kernel interface.

        Parameters
        ----------
        problem : fastsoftmax.backends._validate.Problem
            ``W`` (D, C) and ``X`` (N, D) float32 or float64, ``y`` (N,) intp,
            ``reg``; optional ``b``, ``rows``, ``out``, all handled natively.
        n_threads : int
            Upper bound on threads; small problems use fewer (``thread_count``).
        scratch : dict, optional
            Where the kernel keeps buffers between one caller's calls.  Not
            to be shared between threads.

        Returns
        -------
        loss : float
        dW : ndarray, shape (D, C), dtype of ``W`` (``out`` if given)
        db : ndarray, shape (C,), or None without ``b``
        """
        return loss_grad(*problem.args, b=problem.b, rows=problem.rows, out=problem.out, n_threads=n_threads,
                         scratch=scratch)

    softmax_loss.takes_scratch = True
    return softmax_loss
