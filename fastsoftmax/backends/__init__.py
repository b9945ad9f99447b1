"""The registry of backends: which exist, which load here, which is fastest.

Design note
-----------
A backend is a module in this package exposing a *kernel*
``softmax_loss(problem, n_threads) -> (loss, dW, db)`` that trusts its
inputs (a :class:`fastsoftmax.backends._validate.Problem`; ``db`` is None
when the problem has no bias).  The registry wraps every kernel in the same
public function: validate with :func:`fastsoftmax.backends._validate.prepare`,
resolve the thread count once (:func:`fastsoftmax.get_num_threads` unless
the caller passes ``n_threads``), run the kernel, check the result with
:func:`fastsoftmax.backends._validate.check_result`.  So all backends share
one validator and one thread setting, and differ only in their kernel.
A kernel that takes a ``scratch`` dict (attribute ``takes_scratch``: both
compiled ones) gets one kept per Python thread and backend, for the last
shape and thread count it ran (:data:`KEPT_BYTES` at most), so repeated
calls reuse W's padded copy and the per-thread accumulators instead of
allocating and faulting them in anew.

Backends load lazily, on first use, as in opt_einsum: ``import fastsoftmax``
imports neither Numba nor the compiled extension.  A backend whose import
fails, with any exception, is recorded with the reason and reported by :func:`unavailable` and by
the error :func:`get` raises; it never breaks the package.

Which backend is fastest is decided in one place, :func:`fastest`, for the
caller's dtype, N and thread count, from measurements: this machine's own
when ``fastsoftmax tune`` has measured it (:mod:`._wisdom`, cached per CPU
model and package version, read lazily, never measured at import or on a
call), else the static :data:`RANKINGS` (one preference order per working
dtype and batch-size band).  :data:`RANKING` is the static
entry for a CIFAR-sized float64 batch (the order with no problem given).  The choice
can be pinned with the ``FASTSOFTMAX_BACKEND`` environment variable or
:func:`set_backend`.  docs/kernels.md says why the choice is measured per
machine rather than static.

The registry serves a second contract the same way: the two-layer net's loss
(:data:`NET_BACKENDS`, kernels ``two_layer_loss(problem, n_threads)``).
Every function that looks a backend up takes ``contract="softmax"`` (the
default) or ``"net"`` (:data:`CONTRACTS`); loading, error reporting and the
validated wrapper are shared, only the validator
(:func:`~fastsoftmax.backends._validate.prepare_net`) and the kernels differ.
"""

from __future__ import annotations

import importlib
import os
import threading

import numpy as np

from ._threads import get_num_threads
from ._validate import check_result, integer, prepare, working_dtype
from . import _wisdom

__all__ = [
    "BACKENDS",
    "RANKING",
    "RANKINGS",
    "ranking",
    "kernel_isa",
    "BackendUnavailable",
    "available",
    "unavailable",
    "get",
    "get_kernel",
    "run_kernel",
    "release_scratch",
    "fastest",
    "problem_key",
    "set_backend",
    "register",
    "unregister",
    "CONTRACTS",
    "NET_BACKENDS",
    "NET_RANKING",
    "fastest_net",
]

#: Backend name -> module that implements its kernel.
BACKENDS = {
    "python": "fastsoftmax.backends.python",
    "numpy": "fastsoftmax.backends.numpy",
    "numba": "fastsoftmax.backends.numba",
    "cython": "fastsoftmax.backends.cython",
}

#: Preference order, fastest first, per working dtype and batch-size band:
#: ``(dtype, smallest N of the band) -> order``: the fallback where
#: ``fastsoftmax tune`` has not measured this machine (see :func:`fastest`).
#: numpy / cython / numba, ms per call, one thread, D=3073, C=10, the 25th
#: percentile of 200 interleaved calls (docs/kernels.md, round 20), on the
#: Zen 5 of the later sessions with the AVX-512 build (the AVX2 build, held
#: to AVX2 with Numba and BLAS, in brackets):
#:
#: * N=1:   float64 0.075 / 0.035 / 0.086 (0.072 / 0.039 / 0.094)
#: * N=16:  float64 0.070 / 0.056 / 0.106 (0.107 / 0.072 / 0.124)
#: * N=32:  float64 0.105 / 0.082 / 0.142 (0.176 / 0.113 / 0.179),
#:          float32 0.073 / 0.055 / 0.097 (0.097 / 0.071 / 0.122)
#: * N=64:  float64 0.211 / 0.131 / 0.194 (0.349 / 0.190 / 0.266)
#: * N=128: float64 0.373 / 0.238 / 0.306 (0.794 / 0.361 / 0.441)
#:
#: cython leads at every N on both builds: its call is one C function, where
#: the numpy backend's is a dozen NumPy operations, each with its own fixed
#: cost.  Below N=64 numpy comes before numba, whose fixed cost (threads,
#: one (C, D) accumulator per thread) is the larger.  Until the twenty-third
#: session the table put numpy first below N=64, as measured on a Zen 4
#: before issue 11 (numpy / cython / numba at N=32: float64 0.17 / 0.21 /
#: 0.26 ms) and kept on a Sapphire Rapids with that issue's first tiled
#: kernels; a call's fixed cost has since been cut (docs/kernels.md, rounds
#: 11 and 12).  Larger N only widen the lead of the fused kernels (they
#: read X once, BLAS twice).  ``python`` is last everywhere.
RANKINGS = {
    ("float64", 1): ("cython", "numpy", "numba", "python"),
    ("float64", 64): ("cython", "numba", "numpy", "python"),
    ("float32", 1): ("cython", "numpy", "numba", "python"),
    ("float32", 64): ("cython", "numba", "numpy", "python"),
}

#: One table for every instruction-set build of the C kernel.  From the
#: sixteenth to the twentieth session the AVX2 build had its own entries
#: (numba first from N = 256), measured with ``NUMBA_CPU_NAME=haswell``, which
#: on Numba 0.68 keeps the host's AVX-512 features: AVX-512 Numba code against
#: the AVX2 C kernel.  With both held to AVX2 (``NUMBA_CPU_FEATURES=`` too;
#: Zen 5, 21st session, ``fastsoftmax tune``), cython / numba, ms:
#:
#: * float64 N=500 1.27 / 1.64 (two threads 0.655 / 0.912), N=10000
#:   25.9 / 35.3 (13.7 / 18.9);
#: * float32 N=500 0.647 / 0.899 (0.351 / 0.497), N=10000 12.4 / 18.2
#:   (6.80 / 9.34).
#:
#: So cython leads on that build too; the Zen 3 of issue 11, where numba led
#: at N = 500, ran both kernels as they were before that issue's tiling.

#: The order used when no problem is given (a CIFAR batch: float64, N >= 64):
#: :func:`ranking` without arguments; :func:`available` lists backends in it.
RANKING = RANKINGS[("float64", 64)]

_ENV = "FASTSOFTMAX_BACKEND"

#: The two-layer net's backends: a second contract served by the same
#: registry.  Each module's kernel is ``two_layer_loss(problem, n_threads) ->
#: (loss, dW1, db1, dW2, db2)`` on a validated
#: :class:`~fastsoftmax.backends._validate.NetProblem`; :func:`get` with
#: ``contract="net"`` wraps it in :func:`~fastsoftmax.backends._validate.prepare_net`.
#: No Cython net kernel: the numba one is a port of the same fused design,
#: and numpy's BLAS already wins at the benchmark's shapes (docs/net.md).
NET_BACKENDS = {
    "python": "fastsoftmax.backends.net_python",
    "numpy": "fastsoftmax.backends.net_numpy",
    "numba": "fastsoftmax.backends.net_numba",
}

#: Contract -> (backend name -> module, name of the kernel in each module).
CONTRACTS = {
    "softmax": (BACKENDS, "softmax_loss"),
    "net": (NET_BACKENDS, "two_layer_loss"),
}

# Per contract: loaded kernels, validated public functions, reasons a backend
# cannot load, kernels registered at run time (register(); softmax only).
_state = {contract: ({}, {}, {}, {}) for contract in CONTRACTS}
_kernels, _public, _errors, _extra = _state["softmax"]
_pinned: str | None = None
_choices: dict = {}  # fastest()'s memo, see there


#: Most bytes of W-sized buffers a kernel may keep between one thread's
#: calls: ``(threads + 1) * W.nbytes`` (W's padded copy and one gradient
#: accumulator per kernel thread).  Keeping them saved up to 7 % of a call at
#: N = 500 (D = 3073, C = 10; 50 us of the cython kernel's 1.1 ms in
#: float64) and nothing measurable at N = 10000 (docs/kernels.md, round 9);
#: beyond 64 MiB (W of 4 MiB on 15 threads) an allocation is a
#: small part of any call that reads X, and keeping it would hold that much
#: memory per calling thread.  0 turns keeping off.
KEPT_BYTES = 64 * 2**20
_kept = threading.local()  # .slots: kernel -> ((shape, dtype, threads), scratch dict)


def _kept_scratch(kernel, problem, n_threads):
    """This thread's scratch dict for ``kernel`` on ``problem``, or None.

    One slot per kernel and thread: a call with another W shape, dtype or
    thread count starts a new dict (the old buffers are freed), so what is
    kept stays ``O(threads * D * C)`` per calling thread.  Threads never
    share a dict: the kernels write into it.
    """
    W = problem.W
    if not getattr(kernel, "takes_scratch", False) or (n_threads + 1) * W.nbytes > KEPT_BYTES:
        return None
    slots = _kept.__dict__.setdefault("slots", {})
    key = (W.shape, W.dtype.str, n_threads)
    slot = slots.get(kernel)
    if slot is None or slot[0] != key:
        slot = slots[kernel] = (key, {})
    return slot[1]


def release_scratch():
    """Drop the scratch this thread keeps for the kernels (the next call allocates its buffers anew).

    The memory probe (:mod:`fastsoftmax.harness.memory`) calls it between
    its warm-up call and the measured one, so that the measured call's
    buffers count as that call's memory.
    """
    _kept.__dict__.pop("slots", None)


def run_kernel(kernel, problem, n_threads):
    """Run a raw kernel as the public functions do: with this thread's kept scratch, if it takes one.

    What benchmarks time (``fastsoftmax bench``, ``fastsoftmax tune``,
    bench/roofline.py), so that they measure the call a user's repeated
    ``softmax_loss`` makes.

    Parameters
    ----------
    kernel : callable
        A registry kernel, ``kernel(problem, n_threads[, scratch])``.
    problem : fastsoftmax.backends._validate.Problem
    n_threads : int

    Returns
    -------
    (loss, dW, db)
        The kernel's raw result.
    """
    scratch = _kept_scratch(kernel, problem, n_threads)
    return kernel(problem, n_threads) if scratch is None else kernel(problem, n_threads, scratch)


class BackendUnavailable(ImportError, ValueError):
    """Raised for a backend name that is unknown or cannot load here."""


def _try_load(name, contract="softmax"):
    """Import backend ``name`` of ``contract`` if it exists; return its kernel or None (reason kept)."""
    kernels, _, errors, extra = _state[contract]
    modules, attr = CONTRACTS[contract]
    if name in kernels:
        return kernels[name]
    if name in extra:
        return extra[name]
    if name not in modules or name in errors:
        return None
    try:
        module = importlib.import_module(modules[name])
    except Exception as exc:  # not only ImportError: e.g. Numba's RuntimeError when it cannot cache
        hint = " (build the extension with `pip install .`)" if name == "cython" else ""
        errors[name] = f"{type(exc).__name__}: {exc}{hint}"
        return None
    kernels[name] = getattr(module, attr)
    return kernels[name]


def _load(name, contract="softmax"):
    kernel = _try_load(name, contract)
    if kernel is not None:
        return kernel
    _, _, errors, extra = _state[contract]
    what = "backend" if contract == "softmax" else f"{contract} backend"
    if name in errors:
        raise BackendUnavailable(
            f"{what} {name!r} is not available here: {errors[name]}; available: {available(contract)}"
        )
    raise BackendUnavailable(
        f"unknown {what} {name!r}; {what}s are {sorted(set(CONTRACTS[contract][0]) | set(extra))}"
    )


def available(contract="softmax"):
    """Names of the backends that load on this machine, in :func:`ranking` order (a large float64 batch).

    Parameters
    ----------
    contract : {"softmax", "net"}
        Backends of the linear loss (default) or of the two-layer net
        (:data:`NET_BACKENDS`, in :data:`NET_RANKING` order).

    Returns
    -------
    list of str
    """
    modules = CONTRACTS[contract][0]
    order = ranking() if contract == "softmax" else NET_RANKING
    names = [n for n in order if n in modules] + [n for n in modules if n not in order]
    names += list(_state[contract][3])
    return [name for name in names if _try_load(name, contract) is not None]


def unavailable(contract="softmax"):
    """Backends of ``contract`` that exist but cannot load here, with the reason.

    Returns
    -------
    dict of str to str
    """
    available(contract)
    return dict(_state[contract][2])


def get_kernel(name, contract="softmax"):
    """The raw kernel of backend ``name``: no validation, for benchmarks only.

    Its inputs must already be what :func:`fastsoftmax.backends._validate.prepare`
    (``contract="net"``: :func:`~fastsoftmax.backends._validate.prepare_net`)
    returns.
    """
    return _load(name, contract)


def get(name, contract="softmax"):
    """Return backend ``name``'s ``softmax_loss(W, X, y, reg, ...) -> (loss, dW)``.

    Parameters
    ----------
    name : str
        One of :func:`available`.
    contract : {"softmax", "net"}
        ``"net"``: backend ``name``'s two-layer net loss instead,
        ``two_layer_loss(params, X, y, reg) -> (loss, grads)`` (see
        :data:`NET_CONTRACT_DOC`).

    Returns
    -------
    callable
        Validates its inputs, then runs the backend's kernel.

    Raises
    ------
    BackendUnavailable
        If ``name`` is unknown or cannot load here; the message lists the
        backends that exist and why this one failed.
    """
    if contract != "softmax":
        return _get_net(name) if contract == "net" else _load(name, contract)
    if name in _public:
        return _public[name]
    kernel = _load(name)

    def softmax_loss(W, X, y, reg, *, b=None, rows=None, out=None, n_threads=None):
        problem = prepare(W, X, y, reg, b, rows, out)
        n_threads = get_num_threads() if n_threads is None else integer(n_threads, "n_threads", 1)
        # Non-finite intermediates are detected from the result by
        # check_result, which names the cause; NumPy's warnings would only
        # repeat it less clearly.
        with np.errstate(all="ignore"):
            loss, dW, db = run_kernel(kernel, problem, n_threads)
        return check_result(problem, loss, dW, db)

    softmax_loss.__name__ = "softmax_loss"
    softmax_loss.__qualname__ = f"softmax_loss[{name}]"
    softmax_loss.__doc__ = _PUBLIC_DOC.format(name=name)
    softmax_loss.backend = name
    _public[name] = softmax_loss
    return softmax_loss


def kernel_isa():
    """The instruction-set build of the C kernel that runs (``"avx512"``, ``"avx2"``, ...), or None where it does not load."""
    if "cython" not in BACKENDS or _try_load("cython") is None:
        return None
    return importlib.import_module(BACKENDS["cython"]).running_isa()


def ranking(dtype=None, n=None):
    """The static preference order for working dtype ``dtype`` and N = ``n``: an entry of :data:`RANKINGS`.

    Parameters
    ----------
    dtype : dtype, optional
        The working dtype (float32 or float64); default float64.
    n : int, optional
        Number of examples; default a large batch.

    Returns
    -------
    tuple of str
        Backend names, fastest first.
    """
    key = np.dtype(np.float64 if dtype is None else dtype).name
    if key not in {k for k, _ in RANKINGS}:
        key = "float64"
    bands = sorted(lo for k, lo in RANKINGS if k == key)
    lo = bands[-1] if n is None else max((b for b in bands if b <= n), default=bands[0])
    return RANKINGS[(key, lo)]


def fastest(dtype=None, n=None, threads=None):
    """Name of the backend :func:`fastsoftmax.softmax_loss` uses.

    A pin (:func:`set_backend`, else ``FASTSOFTMAX_BACKEND``) wins; otherwise
    the first available backend in this machine's measured order for the
    dtype, N and thread count (``fastsoftmax tune``; see :mod:`._wisdom`),
    or, without one, in the static :func:`ranking`.

    Parameters
    ----------
    dtype : dtype, optional
        Working dtype of the problem (see
        :func:`fastsoftmax.backends._validate.working_dtype`); default float64.
    n : int, optional
        Number of examples N; default a large batch.
    threads : int, optional
        Thread count of the call; default :func:`fastsoftmax.get_num_threads`.

    Returns
    -------
    str
    """
    pinned = _pinned or os.environ.get(_ENV) or None
    if pinned:
        _load(pinned)  # raises a clear error for a bad pin
        return pinned
    threads = get_num_threads() if threads is None else threads
    # Called on every softmax_loss call: the choice is remembered per
    # (dtype, threads, N, wisdom file and reads of it); availability is fixed
    # per process.  Cold after a kernel, working it out cost 30 us.
    memo_key = (dtype, threads, n, _wisdom.state())
    name = _choices.get(memo_key)
    if name is not None:
        return name
    key = np.dtype(np.float64 if dtype is None else dtype).name
    measured = _wisdom.lookup(key, threads, n)
    for order in (measured or (), ranking(dtype, n)):
        for name in order:
            if _try_load(name) is not None:
                if len(_choices) >= 4096:  # many distinct batch sizes: start over
                    _choices.clear()
                _choices[memo_key] = name
                return name
    raise BackendUnavailable(f"no backend loads here: {unavailable()}")  # pragma: no cover


def problem_key(W, X, rows=None):
    """``(working dtype, batch size)`` of an unvalidated problem, or ``(None, None)``.

    Cheap (no conversion of array-likes): what :func:`fastest` needs to pick
    a backend before the chosen backend validates the inputs.  The batch is
    ``len(rows)`` rows when ``rows`` is given, else all of X.
    """
    try:
        return working_dtype(W.dtype, X.dtype), int(X.shape[0] if rows is None else np.shape(rows)[0])
    except (AttributeError, TypeError, IndexError, ValueError):
        return None, None


def set_backend(name):
    """Pin the backend :func:`fastsoftmax.softmax_loss` uses (None unpins).

    Parameters
    ----------
    name : str or None
    """
    global _pinned
    if name is not None:
        _load(name)
    _pinned = name


def register(name, kernel):
    """Add a backend at run time (plug-ins, and tests of the harness).

    Parameters
    ----------
    name : str
        Must not clash with a built-in backend.
    kernel : callable
        ``kernel(problem, n_threads) -> (loss, dW, db)`` on a validated
        :class:`fastsoftmax.backends._validate.Problem` (see the module note).
    """
    if name in BACKENDS:
        raise ValueError(f"{name!r} is a built-in backend and cannot be replaced")
    _extra[name] = kernel
    _public.pop(name, None)


def unregister(name):
    """Remove a backend added with :func:`register`."""
    if name not in _extra:
        raise ValueError(f"{name!r} was not added with register()")
    del _extra[name]
    _public.pop(name, None)


#: The contract every backend's ``softmax_loss`` keeps (numpydoc sections),
#: shared by the per-backend functions and ``fastsoftmax.softmax_loss``.
CONTRACT_DOC = """
Parameters
----------
W : array_like, shape (D, C)
    Weights (float32 or float64; integers are cast to float64).
X : array_like, shape (N, D)
    Data, one example per row.
y : array_like, shape (N,)
    Integer labels in ``[0, C)``, any integer dtype.
reg : float
    L2 strength, finite and >= 0.  The loss adds ``reg * sum(W**2)``; pass
    ``reg / 2`` for the older ``0.5 * reg * sum(W**2)`` convention.
b : array_like, shape (C,), optional
    A bias: the scores are ``X @ W + b``.  Not regularised.  When given, the
    result has a third element, ``db``.
rows : array_like of int, shape (n,), optional
    Use only the batch ``X[rows]``, ``y[rows]`` (any order, repeats allowed,
    negative indices counted from the end as in NumPy), read in place: the
    result is that of ``softmax_loss(W, X[rows], y[rows], reg)``.
out : ndarray, shape (D, C), optional
    Write ``dW`` into this array (C-contiguous, of the result's dtype, not
    overlapping an input) and return it, instead of allocating one.
n_threads : int, optional
    Threads for this call (compiled backends); default
    :func:`fastsoftmax.get_num_threads`.

Returns
-------
loss : float
    ``mean_i(logsumexp(S[i]) - S[i, y[i]]) + reg * sum(W**2)`` over the
    batch, ``S = X @ W (+ b)``.
dW : ndarray, shape (D, C)
    ``X.T @ (P - Y) / n + 2 * reg * W``; float32 only if W and X are both
    float32, else float64.
db : ndarray, shape (C,)
    ``sum_i (P - Y)[i] / n``, only when ``b`` is given.

Raises
------
TypeError, ValueError, IndexError
    For bad input, naming the argument and what was expected (docs,
    "Robustness").
FloatingPointError
    If finite inputs give scores beyond the dtype's range.
"""

_PUBLIC_DOC = "Softmax loss and gradient, ``{name}`` backend.\n" + CONTRACT_DOC


# --- the two-layer net's contract ----------------------------------------------

#: Net backends, fastest first, at the benchmark's shapes (D=3073, H=100,
#: C=10), thread CPU time of one call on one thread (docs/net.md); numpy /
#: numba, ms:
#:
#: * N=500:   float64 17.7 / 27.3,  float32 6.2 / 12.7
#: * N=10000: float64 298 / 464,    float32 128 / 219
#:
#: (the two GEMMs alone: 13.5, 5.0, 281, 116).  ``python`` is last.
NET_RANKING = ("numpy", "numba", "python")


def fastest_net():
    """Name of the net backend :class:`~fastsoftmax.training.net.TwoLayerNet` uses by default.

    A pin (:func:`set_backend`, else ``FASTSOFTMAX_BACKEND``) wins when that
    backend has a net kernel; otherwise the first available backend of
    :data:`NET_RANKING`.

    Returns
    -------
    str
    """
    pinned = _pinned or os.environ.get(_ENV) or None
    if pinned in NET_BACKENDS and _try_load(pinned, "net") is not None:
        return pinned
    return available("net")[0]


def _get_net(name):
    public = _state["net"][1]
    if name in public:
        return public[name]
    kernel = _load(name, "net")

    from ._validate import check_net_result, prepare_net

    def two_layer_loss(params, X, y, reg, *, n_threads=None):
        problem = prepare_net(params, X, y, reg)
        n_threads = get_num_threads() if n_threads is None else integer(n_threads, "n_threads", 1)
        with np.errstate(all="ignore"):  # non-finite results are explained by check_net_result
            loss, *grads = kernel(problem, n_threads)
        return check_net_result(problem, loss, grads)

    two_layer_loss.__name__ = "two_layer_loss"
    two_layer_loss.__qualname__ = f"two_layer_loss[{name}]"
    two_layer_loss.__doc__ = f"Two-layer net loss and gradients, ``{name}`` backend.\n" + NET_CONTRACT_DOC
    two_layer_loss.backend = name
    public[name] = two_layer_loss
    return two_layer_loss


#: The contract every net backend keeps (``get(name, contract="net")``).
NET_CONTRACT_DOC = """
Affine - ReLU - affine - softmax: ``h = max(0, X @ W1 + b1)``,
``S = h @ W2 + b2``.

Parameters
----------
params : dict
    ``W1`` (D, H), ``b1`` (H,), ``W2`` (H, C), ``b2`` (C,); float32 or
    float64, finite.  Never modified.
X : array_like, shape (N, D)
y : array_like, shape (N,)
    Integer labels in ``[0, C)``.
reg : float
    L2 strength, finite and >= 0.  The loss adds ``reg * (sum(W1**2) +
    sum(W2**2))``; biases are not penalised.  Pass ``reg / 2`` for the
    older ``0.5 * reg * sum(W**2)`` convention.
n_threads : int, optional
    Threads for the compiled kernel (default :func:`fastsoftmax.get_num_threads`).

Returns
-------
loss : float
    ``mean_i(logsumexp(S[i]) - S[i, y[i]]) + reg * (sum(W1**2) + sum(W2**2))``.
grads : dict
    ``W1``, ``b1``, ``W2``, ``b2``: gradients with the parameters' shapes,
    float32 only if X and every parameter are float32.

Raises
------
TypeError, ValueError
    For bad input, naming the argument (``params['W2']``, ``X``, ``y``, ...).
FloatingPointError
    If finite inputs overflow.
"""
