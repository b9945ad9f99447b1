"""What is specific to the fused kernels: block edges, every ISA build, threads, copies.

The compiled kernels work on blocks (4 rows x 5 classes, in the C kernels and
in Numba; vectors of 2-16 lanes along D) and split N into one chunk per thread,
so the shapes below sit on both sides of every one of those boundaries, and
every instruction-set build of the C kernel runs on this CPU is exercised.
All are checked against the python reference with the documented tolerances
(:func:`fastsoftmax.testing.compare`).
"""

import os
import tracemalloc

import numpy as np
import pytest

import fastsoftmax
from fastsoftmax import backends
from fastsoftmax.testing import as_layout, compare, load_backend, random_problem

# Our own kernels: every registered backend but the reference and the BLAS
# one, so a new backend is tested here without being listed.
COMPILED = [name for name in backends.BACKENDS if name not in ("python", "numpy")]

# (N, D, C) around the block sizes: rows 1..9 (blocks of 4), D around the
# vector widths (1, 2, 4, 8, 16 lanes) up to 70, C from 1 to 17 (class blocks
# of 5) and past the C kernel's 64-class stack scratch.
EDGE_SHAPES = (
    [(n, 13, 3) for n in range(1, 10)]
    + [(9, d, 4) for d in (1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 70)]
    + [(6, 19, c) for c in range(1, 18)]
    + [(5, 11, 66), (3, 40, 70)]
)


@pytest.fixture(autouse=True)
def split_small_problems(monkeypatch):
    """Let tiny problems use several threads, so every chunking path runs here."""
    monkeypatch.setattr("fastsoftmax.backends._common.MIN_WORK_PER_THREAD", 1)


def _isas():
    """Every build of the C kernel this CPU can run (empty if it is not built)."""
    try:
        from fastsoftmax.backends import cython
    except ImportError:
        return []
    return list(cython.SUPPORTED_ISAS)


def _builds():
    """One label per compiled kernel build: each instruction-set build of cython, the others once."""
    return [
        label
        for name in COMPILED
        for label in (["cython-" + isa for isa in _isas() or ["missing"]] if name == "cython" else [name])
    ]


@pytest.fixture(params=_builds())
def kernel(request, monkeypatch):
    """(label, public softmax_loss) per compiled kernel build."""
    name, _, isa = request.param.partition("-")
    f = load_backend(name)
    if isa:
        monkeypatch.setattr("fastsoftmax.backends.cython.ISA", isa)
    return request.param, f


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n_threads", [1, 3])
def test_block_edges_agree_with_reference(kernel, reference, dtype, n_threads):
    label, f = kernel
    rng = np.random.default_rng(20)
    with fastsoftmax.threads(n_threads):
        for shape in EDGE_SHAPES:
            W, X, y = random_problem(rng, *shape, dtype=dtype, scale=5.0)
            agreement = compare(f(W, X, y, 0.3), reference(W, X, y, 0.3), dtype)
            assert agreement.ok, (label, shape, agreement)


@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_rows_around_chunk_boundaries(kernel, reference, n_threads):
    """N from 1 to 3 blocks per thread, so chunks are empty, partial and full."""
    label, f = kernel
    rng = np.random.default_rng(21)
    for n in range(1, 4 * 3 * n_threads + 2):
        W, X, y = random_problem(rng, n, 24, 10)
        with fastsoftmax.threads(n_threads):
            got = f(W, X, y, 0.0)
        assert compare(got, reference(W, X, y, 0.0), np.float64).ok, (label, n)


def test_row_strided_and_reversed_views(kernel, reference):
    """Views with unit stride along D go to the C kernel without a copy."""
    label, f = kernel
    rng = np.random.default_rng(22)
    W, X, y = random_problem(rng, 40, 21, 7)
    for view, labels in ((X[::3], y[::3]), (X[::-1], y[::-1]), (X[5:30:2, 1:20], y[5:30:2])):
        Wv = W[: view.shape[1]]
        assert compare(f(Wv, view, labels, 0.1), reference(Wv, view, labels, 0.1), np.float64).ok


@pytest.mark.parametrize("name", COMPILED)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_rows_padded_apart_give_the_c_ordered_bits(name, dtype):
    """X built with its rows padded apart (docs/kernels.md, round 21) is read in place, to the same bits.

    At CIFAR's D = 3073 NumPy's rows are a few bytes past a multiple of 4 KB
    apart; a view of an N x (D + 16) array is the layout the docs suggest
    instead.  Only the row stride differs, so every sum is the same.
    """
    f = load_backend(name)
    rng = np.random.default_rng(25)
    W, X, y = random_problem(rng, 45, 3073, 10, dtype=dtype)
    padded = as_layout(X, "row-padded", pad=16)
    assert padded.strides[0] == (3073 + 16) * padded.itemsize
    assert backends._common.reads_in_place(padded)
    for n_threads in (1, 2):
        with fastsoftmax.threads(n_threads):
            want, got = f(W, X, y, 0.1), f(W, padded, y, 0.1)
        assert got[0] == want[0], (name, n_threads)
        np.testing.assert_array_equal(got[1], want[1], err_msg=f"{name}, {n_threads} threads")


@pytest.mark.parametrize("n_rows", [7, 23])
def test_softmax_probabilities_over_the_whole_exp_range(kernel, n_rows):
    """Every probability the kernel forms, read back from its gradient, against numpy's exp.

    With X one-hot (row i is e_i) the scores of row i are W[i] and the
    gradient's row i is (P_i - Y_i) / N, so each p = exp(s - max) / total
    is seen directly.  The score gaps span exp's whole range, from 0 down past
    -708 (where exp(x) < 3.3e-308 and the kernel may give 0 instead of a
    subnormal), in steps that put every lane of a vector at every kind of
    value; 7 and 23 rows of 10 classes end mid-vector in every build.
    Tolerance: 6 ulp (the exp within 1 ulp of numpy's, then the sum, the
    division, P - Y and the division by N, each rounded on both sides), and
    an absolute 3.4e-308 for what may be flushed to 0.
    """
    label, f = kernel
    rng = np.random.default_rng(24)
    C = 10
    gaps = np.concatenate([
        -np.linspace(0.0, 707.9, n_rows * C - 10),      # exp's normal range, every reduced argument
        -np.geomspace(1e-300, 1e-3, 5),                  # exp(x) ~ 1 - |x|
        [-708.0, -708.5, -745.5, -1e4, -1e6],            # around and past the flush to 0
    ])
    S = rng.permutation(gaps).reshape(n_rows, C)
    S[:, 0] = 0.0                                        # a finite maximum in every row
    S -= S.max(axis=1, keepdims=True) - rng.uniform(-50.0, 50.0, (n_rows, 1))   # max shift, not at 0
    y = rng.integers(0, C, n_rows)
    X = np.eye(n_rows)
    loss, dW = f(S, X, y, 0.0)
    E = np.exp(S - S.max(axis=1, keepdims=True))
    P = E / E.sum(axis=1, keepdims=True)
    shifted = S - S.max(axis=1, keepdims=True)
    expected_loss = np.mean(np.log(E.sum(axis=1)) - shifted[np.arange(n_rows), y])
    P[np.arange(n_rows), y] -= 1.0
    np.testing.assert_allclose(dW, P / n_rows, rtol=6 * np.finfo(np.float64).eps, atol=3.4e-308, err_msg=label)
    assert loss == pytest.approx(expected_loss, rel=1e-13), label


@pytest.mark.parametrize("name", COMPILED)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_same_thread_count_is_bit_identical(name, dtype):
    f = load_backend(name)
    W, X, y = random_problem(np.random.default_rng(23), 301, 77, 10, dtype=dtype)
    with fastsoftmax.threads(2):
        first = f(W, X, y, 0.1)
        for _ in range(3):
            again = f(W, X, y, 0.1)
            assert again[0] == first[0]
            np.testing.assert_array_equal(again[1], first[1])


def test_small_problems_run_on_one_thread(monkeypatch):
    """Below MIN_WORK_PER_THREAD multiply-adds per thread, no parallel region is started."""
    from fastsoftmax.backends._common import thread_count

    monkeypatch.setattr("fastsoftmax.backends._common.MIN_WORK_PER_THREAD", 1 << 20)
    assert thread_count(10, 5, 3, 8) == 1
    assert thread_count(500, 3073, 10, 2) == 2
    assert thread_count(500, 3073, 10, 64) == 14  # 15.4M multiply-adds
    assert thread_count(3, 10**6, 10, 8) == 3  # never more chunks than rows


def _peak_bytes(f, *args):
    tracemalloc.start()
    try:
        f(*args)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("name", [name for name in backends.BACKENDS if name != "python"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_no_copy_of_x(name, dtype):
    """A C-contiguous X of the working dtype is never copied (peak extra memory << X).

    The fused kernels also read rows that have gaps between them in place
    (a row stride, a column slice): numba used to copy those to C order.
    """
    f = load_backend(name)
    W, X, y = random_problem(np.random.default_rng(25), 4000, 300, 10, dtype=dtype)
    f(W, X, y, 0.1)  # compile outside the measurement
    with fastsoftmax.threads(2):
        peak = _peak_bytes(f, W, X, y, 0.1)
    assert peak < X.nbytes / 4, f"{name}: peak {peak} bytes for X of {X.nbytes}"
    if name in ("cython", "numba"):  # rows with gaps between them are read in place too
        for view, labels in ((X[::2], y[::2]), (as_layout(X, "row-padded"), y)):  # every other row; a column slice
            ref = f(W, np.ascontiguousarray(view), labels, 0.1)
            with fastsoftmax.threads(2):
                peak = _peak_bytes(f, W, view, labels, 0.1)
            assert peak < view.nbytes / 4, f"{name}: peak {peak} bytes for a view of {view.nbytes}"
            with fastsoftmax.threads(2):
                got = f(W, view, labels, 0.1)
            assert got[0] == ref[0] and np.array_equal(got[1], ref[1])  # same bits as the contiguous copy


@pytest.mark.parametrize("name", COMPILED)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_kernel_given_scratch_gives_the_same_bits(name, dtype):
    """A caller's ``scratch`` dict (the training step keeps one) changes no bit of the
    result, call after call with a new W and a new batch, at 1 and 2 threads
    (one accumulator per thread): the kept buffers are rewritten or zeroed each call."""
    from fastsoftmax.backends._validate import prepare

    kernel = backends.get_kernel(name)
    assert kernel.takes_scratch
    rng = np.random.default_rng(41)
    W, X, y = random_problem(rng, 300, 77, 10, dtype=dtype)
    scratch = {}
    for n_threads in (1, 2, 1):
        for _ in range(3):
            W = (W + 0.1 * rng.standard_normal(W.shape)).astype(dtype)
            problem = prepare(W, X, y, 0.1, None, rng.integers(0, 300, 200))
            want = kernel(problem, n_threads)
            got = kernel(problem, n_threads, scratch)
            assert got[0] == want[0]
            np.testing.assert_array_equal(got[1], want[1])
    assert scratch, "the kernel kept nothing"


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cython_with_scratch_and_out_allocates_nothing_of_ws_size(dtype):
    """With ``out=`` and a kept ``scratch``, a cython call after the first allocates
    neither W's padded transpose nor its accumulators: what a training step relies on.

    (numba still allocates: its accumulators inside compiled code, and a
    (D, C) temporary in ``_common.finish``.)
    """
    from fastsoftmax.backends._validate import prepare

    if "cython" not in backends.available():
        pytest.skip("cython not built")
    kernel = backends.get_kernel("cython")
    W, X, y = random_problem(np.random.default_rng(43), 300, 400, 10, dtype=dtype)
    problem = prepare(W, X, y, 0.1, None, np.arange(0, 300, 3), np.empty_like(W))
    scratch = {}
    kernel(problem, 1, scratch)
    without = _peak_bytes(kernel, problem, 1)
    assert without > W.nbytes, "the test would not see the buffers"
    peak = _peak_bytes(kernel, problem, 1, scratch)
    assert peak < W.nbytes / 8, f"peak {peak} bytes with scratch; W is {W.nbytes}"


def test_padded_transpose_rewrites_the_array_kept_in_scratch():
    from fastsoftmax.backends._common import padded_transpose

    rng = np.random.default_rng(47)
    W = rng.standard_normal((9, 7))
    scratch = {}
    first = padded_transpose(W, 5, aligned=True, scratch=scratch)
    second = padded_transpose(2 * W, 5, aligned=True, scratch=scratch)
    assert second is first and second.shape == (10, 9) and second.ctypes.data % 64 == 0
    np.testing.assert_array_equal(second[:7], 2 * W.T)
    assert not second[7:].any()  # the padding classes stay zero
    other = padded_transpose(W[:, :4].astype(np.float32), 5, aligned=True, scratch=scratch)
    assert other is not first and other.dtype == np.float32 and other.shape == (5, 9)
    assert padded_transpose(W, 5, aligned=True) is not first  # no scratch: a new array


def test_fastest_follows_the_ranking_table():
    for (dtype, lo), order in backends.RANKINGS.items():
        expected = next(n for n in order if n in backends.available())
        assert fastsoftmax.fastest(dtype, lo) == expected
        assert backends.ranking(dtype, lo) == order
        assert backends.ranking(dtype, lo + 1) == order  # a band runs up to the next
    assert fastsoftmax.fastest() == backends.available()[0]
    assert backends.ranking() == backends.RANKING
    assert backends.ranking("float16", 500) == backends.ranking("float64", 500)


def test_top_level_picks_by_dtype_and_size(monkeypatch):
    """softmax_loss asks fastest() about the problem's own dtype and N; a pin still wins."""
    seen = []
    real = backends.fastest

    def spy(dtype=None, n=None):
        seen.append((dtype, n))
        return real(dtype, n)

    monkeypatch.setattr(fastsoftmax, "fastest", spy)
    monkeypatch.setattr(backends, "fastest", spy)
    W, X, y = random_problem(np.random.default_rng(26), 7, 5, 3, dtype=np.float32)
    fastsoftmax.softmax_loss(W, X, y, 0.0)
    assert seen == [(np.dtype(np.float32), 7)]
    monkeypatch.setenv("FASTSOFTMAX_BACKEND", "python")
    assert real(np.float32, 10**6) == "python"


#: (D, C) of the reduction tests: a small problem, and one that spans more than
#: one of the C reduction's blocks (64 columns of D, 16 classes) with tails.
REDUCTION_SHAPES = [(37, 7), (150, 19)]


@pytest.mark.parametrize("isa", _isas() or [pytest.param(None, marks=pytest.mark.skip(reason="cython not built"))])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n_threads", [1, 3])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("D, C", REDUCTION_SHAPES)
def test_cython_reduction_finishes_as_common_finish(isa, dtype, n_threads, with_bias, D, C):
    """``fused_loss_grad(reg=)`` divides by n and adds the L2 terms in its reduction:
    the same result as ``_common.finish`` on the raw sums, which the other kernels use.

    Per element the gradient takes the same two roundings as finish's (``s / n``,
    then ``+ (2 reg) w``), bit for bit on every build: the C reduction keeps
    the product out of a multiply-add, which would round once (with that
    barrier removed, the AVX2 and AVX-512 builds fail here).  ``||W||^2`` is
    summed in float64 in another order than finish's einsum: rtol 1e-12 (the
    bound for reordering a sum of positive terms is about n * eps = 2e-13 here).
    """
    from fastsoftmax.backends import _common, cython

    rng = np.random.default_rng(31)
    W, X, y = random_problem(rng, 53, D, C, dtype=dtype)
    b = rng.standard_normal(C).astype(dtype) if with_bias else None
    rows = rng.integers(0, 53, 29).astype(np.intp)
    Wt = _common.padded_transpose(W, cython.CLASS_BLOCK, aligned=True)
    args = (Wt, X, y.astype(np.intp), C, n_threads, isa, b, rows, None, 10, 16)
    reg = 0.37
    loss, dW, db = cython.fused_loss_grad(*args, reg=reg)
    raw_loss, raw_grad, raw_db = cython.fused_loss_grad(*args)
    want_loss, want_dW = _common.finish(W, 29, reg, raw_loss, raw_grad, raw_db)
    eps = np.finfo(dtype).eps
    np.testing.assert_array_equal(dW, want_dW)
    assert loss == pytest.approx(want_loss, rel=1e-12)
    if with_bias:
        np.testing.assert_array_equal(db, raw_db)  # finish divided raw_db in place, as the reduction did db
    else:
        assert db is None


def _sgd_step_args(rng, dtype, with_bias, N=53, D=37, C=7, batch=29):
    """A problem for ``sgd_step``, its padded ``W.T`` buffer and a batch."""
    from fastsoftmax.backends import _common, cython

    W, X, y = random_problem(rng, N, D, C, dtype=dtype)
    b = rng.standard_normal(C).astype(dtype) if with_bias else None
    Wt = _common.padded_transpose(W, cython.CLASS_BLOCK, aligned=True)
    return W, X, y.astype(np.intp), b, Wt, rng.integers(0, N, batch).astype(np.intp)


@pytest.mark.parametrize("isa", _isas() or [pytest.param(None, marks=pytest.mark.skip(reason="cython not built"))])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n_threads", [1, 3])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("D, C", REDUCTION_SHAPES)
def test_cython_sgd_step_is_the_kernel_then_the_update(isa, dtype, n_threads, with_bias, D, C):
    """``sgd_step`` takes the update in the kernel's reduction, with the bits of
    ``fused_loss_grad(reg=)`` followed by ``sgd_update`` (and ``b -= lr * db``):
    the same loss, W, b, and ``lr * dW`` left in ``out``.  Called twice with one
    scratch dict, as a training loop calls it, so the kept accumulators are
    zeroed between calls.  The step prefetches whole tiles ahead and the
    reference does not: the prefetch changes no bits."""
    from fastsoftmax.backends import _cython_kernel, cython

    rng = np.random.default_rng(41)
    W, X, y, b, Wt, rows = _sgd_step_args(rng, dtype, with_bias, D=D, C=C)
    reg, lr = 0.37, 0.3
    W_ref, b_ref = W.copy(), None if b is None else b.copy()
    W_new, b_new = W.copy(), None if b is None else b.copy()
    Wt_new, out, scratch = np.zeros_like(Wt), np.empty_like(W), {}
    for _ in range(2):
        Wt[:C] = W_ref.T
        loss, dW, db = cython.fused_loss_grad(Wt, X, y, C, n_threads, isa, b_ref, rows, None, 10, 16, reg=reg)
        assert _cython_kernel.sgd_update(W_ref, dW, lr)
        if with_bias:
            b_ref -= dtype(lr) * db
        got = _cython_kernel.sgd_step(W_new, Wt_new, X, y, C, n_threads, isa, b_new, rows, out, 10, 16, True, reg,
                                      lr, scratch)
        assert got == loss
        np.testing.assert_array_equal(W_new, W_ref)
        np.testing.assert_array_equal(out, dW)  # lr * dW, as sgd_update leaves it
        if with_bias:
            np.testing.assert_array_equal(b_new, b_ref)
        np.testing.assert_array_equal(Wt_new[C:], 0)  # the padding is never written


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("D, C", [(1, 1), (37, 7), (150, 19)])
def test_cython_transpose_into_writes_w_t_and_nothing_else(dtype, D, C):
    """The compiled ``Wt[:C] = W.T`` (blocks of 16 rows of W) of the cython backend's
    padded transpose: every element, the padding rows and columns untouched."""
    _cython_kernel = pytest.importorskip("fastsoftmax.backends._cython_kernel")
    rng = np.random.default_rng(47)
    W = rng.standard_normal((D, C)).astype(dtype)
    big = np.full((C + 3, D + 5), 7, dtype=dtype)
    Wt = big[:, :D]  # rows strided, as the aligned padded transpose is
    _cython_kernel.transpose_into(W, Wt)
    np.testing.assert_array_equal(Wt[:C], W.T)
    assert (big[C:] == 7).all() and (big[:, D:] == 7).all()
    with pytest.raises(ValueError, match="shape"):
        _cython_kernel.transpose_into(W, np.zeros((C, D + 1), dtype))


@pytest.mark.parametrize("isa", _isas() or [pytest.param(None, marks=pytest.mark.skip(reason="cython not built"))])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cause", ["X overflows the gradient", "NaN in X", "reg overflows", "NaN in W", "NaN in b"])
def test_cython_sgd_step_refuses_what_is_not_finite_and_restores_w(isa, dtype, cause):
    """W is written during the reduction, before the whole gradient is known to
    be finite; a refused step must still leave W and b bit for bit as they were
    (restored from the transpose), as ``sgd_update`` leaves them.  Each cause
    makes some elements non-finite, after others were already written."""
    from fastsoftmax.backends import _cython_kernel

    rng = np.random.default_rng(43)
    W, X, y, b, Wt, rows = _sgd_step_args(rng, dtype, with_bias=True)
    reg = 0.37
    big = np.finfo(dtype).max
    if cause == "X overflows the gradient":
        X[rows[3], 20:] = big  # the first 20 columns of dW are finite and written first
    elif cause == "NaN in X":
        X[rows[5], 30] = np.nan
    elif cause == "reg overflows":
        reg = float(big)
    elif cause == "NaN in W":
        W[25, 2] = np.nan
    else:
        b[4] = np.nan
    W_before, b_before = W.copy(), b.copy()
    got = _cython_kernel.sgd_step(W, Wt, X, y, 7, 2, isa, b, rows, np.empty_like(W), 10, 16, False, reg, 0.1,
                                  None)
    assert got is None
    np.testing.assert_array_equal(W.view(f"u{W.itemsize}"), W_before.view(f"u{W.itemsize}"))
    np.testing.assert_array_equal(b.view(f"u{b.itemsize}"), b_before.view(f"u{b.itemsize}"))


def _numba_targets_avx512():
    """True when Numba compiles AVX-512 code here (read from compiled code: ``numba.target_isa``)."""
    from fastsoftmax.backends import numba as nb

    return nb.target_isa() == "avx512"


def _numba_isa_in(env):
    """``numba.target_isa()`` in a fresh Python whose environment has ``env`` set on top of this one's."""
    import subprocess
    import sys

    code = "from fastsoftmax.backends import numba; print(numba.target_isa())"
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_numba_target_isa_is_read_from_the_code():
    """``target_isa`` says what Numba compiles for: the host's widest set, or AVX2 under the recipe that
    docs/kernels.md forces it with (``NUMBA_CPU_NAME=haswell NUMBA_CPU_FEATURES=``).

    ``NUMBA_CPU_NAME=haswell`` alone kept the host's AVX-512 (Numba 0.68 on a
    Zen 5): for five sessions the "AVX2" numba rows of the roofline ran
    AVX-512 code.  So the bench records what the compiled code uses."""
    import platform

    import llvmlite.binding as llvm

    from fastsoftmax.backends import numba as nb

    if platform.machine().lower() not in ("x86_64", "amd64"):
        assert nb.target_isa() is None
        return
    host = llvm.get_host_cpu_features()
    pinned = any(name in os.environ for name in ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES"))
    if not pinned:
        widest = "avx512" if host.get("avx512f") else "avx2" if host.get("avx2") and host.get("fma") else "baseline"
        assert nb.target_isa() == widest
    if host.get("avx2") and host.get("fma"):
        assert _numba_isa_in({"NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": ""}) == "avx2"
    assert _numba_isa_in({"NUMBA_CPU_NAME": "nehalem", "NUMBA_CPU_FEATURES": ""}) == "baseline"


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_numba_narrow_score_kernel_matches_the_wide_one(dtype):
    """The 2-row score micro-kernel (``_scores2``: CPUs with 16 vector registers, ``_RB == 2``) and its
    packing (``_pack``) compute what the 5-row one does, whatever this machine's kernels use.

    Both sum each score over D in the same order of vector lanes; this CPU's
    builds agreed bit for bit (AVX-512 and AVX2, docs/kernels.md round 18), the
    test allows the reassociation Numba may choose elsewhere."""
    from fastsoftmax.backends import numba as nb

    assert nb._RB == (2 if nb.target_isa() in ("avx2", "baseline") else 5)
    rng = np.random.default_rng(5)
    D = 77  # not a multiple of any vector width: the loop's tail too
    Wt = nb._aligned_transpose(rng.standard_normal((D, 10)).astype(dtype))
    rows = rng.standard_normal((10, D)).astype(dtype)
    wide, narrow = np.zeros((10, 10)), np.zeros((10, 10))
    P5, P2 = nb._aligned(10, Wt.shape[1], rows), nb._aligned(10, Wt.shape[1], rows)
    for j in (0, 5):
        nb._scores(Wt, D, j, *rows[:5], wide, 0, *P5[:5])
        nb._scores(Wt, D, j, *rows[5:], wide, 5, *P5[5:])
        for r in range(0, 10, 2):
            if j == 0:  # as _tile does: a pair of rows packed, then scored from the packed tile
                nb._pack(P2[r], rows[r], D)
                nb._pack(P2[r + 1], rows[r + 1], D)
            nb._scores2(Wt, D, j, P2[r], P2[r + 1], narrow, r)
    tol = {np.float64: 1e-13, np.float32: 1e-5}[dtype]  # two summation orders of 77 products, in W's dtype
    np.testing.assert_allclose(narrow, wide, rtol=tol, atol=tol * np.abs(wide).max())
    np.testing.assert_allclose(wide, rows.astype(np.float64) @ Wt[:, :D].T.astype(np.float64), rtol=tol * 10,
                               atol=tol * 10 * np.abs(wide).max())
    np.testing.assert_array_equal(P2[:, :D], rows)  # the packed tile is the rows, copied
    np.testing.assert_array_equal(P5[:, :D], rows)


def test_numba_gradient_loops_enter_without_alias_checks_or_calls():
    """``_grad`` declares G ``noalias`` and inlines ``_prefetch_rows``, and still sums what it should.

    A codegen guard: its vectorised loops are entered up to 240 times per
    tile, and each entry used to compare G's address range with the rows'
    and call the prefetch function, about a tenth of the pass each (numba.py,
    ``_noalias``).
    Should a Numba release name its arguments otherwise, ``_noalias`` marks
    nothing and this test says so.
    """
    import re

    import numba

    from fastsoftmax.backends import numba as nb

    fresh = numba.njit(fastmath={"contract"})(nb._grad.py_func)  # not the cached build: its IR is not kept
    rng = np.random.default_rng(5)
    D, Cp, ld = 300, 10, 304
    G = nb._aligned(Cp, ld, np.zeros(1))
    G[:, :D] = rng.standard_normal((Cp, D))
    P = nb._aligned(10, ld, np.zeros(1))
    P[:, :D] = rng.standard_normal((10, D))
    coef_t = rng.standard_normal((10, Cp))
    X = rng.standard_normal((30, D))
    nxt = np.arange(10) * D
    want = G[:, :D] + coef_t.T @ P[:, :D]
    fresh(G, D, coef_t, *P, 64, X.reshape(-1), nxt, 10)  # D-chunks of 64, prefetching the "next tile" X[:10]
    np.testing.assert_allclose(G[:, :D], want, rtol=1e-12, atol=1e-12)
    (llvm,) = fresh.inspect_llvm().values()
    (header,) = [line for line in llvm.splitlines() if line.startswith("define") and "%arg.G.4" in line]
    assert re.search(r"ptr noalias[^,]* %arg\.G\.4\b", header), header
    assert not re.search(r"call[^\n]*_prefetch_rows", llvm)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("pack", [True, False], ids=["packing", "plain"])
def test_numba_score_kernel_fits_the_registers(dtype, pack):
    """The 5 x 5 score micro-kernel keeps its 25 accumulators in vector registers.

    A codegen guard, not a timing: with AVX-512 it must compile to 25 zmm FMAs
    and touch no zmm on the stack.  The body is written row by row so that,
    with the packing copy, at most 31 vectors are live; written with the five
    rows loaded first, LLVM held 35, spilled 4 accumulators and took 1.34x
    as long (numba.py, ``_scores``).
    """
    import re

    import numba

    from fastsoftmax.backends import numba as nb

    if not _numba_targets_avx512():
        pytest.skip("Numba does not target AVX-512 here")
    fresh = numba.njit(fastmath=nb._FASTMATH)(nb._scores.py_func)  # not the cached build: its asm is not kept
    D = 3073
    Wt = nb._aligned_transpose(np.ones((D, 10), dtype=dtype))
    x = np.ones(D, dtype=dtype)
    S = np.zeros((10, 10))
    P = nb._aligned(5, Wt.shape[1], x)
    fresh(Wt, D, 0, x, x, x, x, x, S, 0, *(P if pack else ()))
    (asm,) = fresh.inspect_asm().values()
    # The module also holds Numba's wrapper for calls from Python, which
    # copies the array structs through the stack with zmm moves (LLVM did so
    # for znver5): only the function with the FMAs is the kernel.
    functions = re.split(r"\n(?=[A-Za-z_$][\w$.]*:)", asm)
    (kernel,) = [f for f in functions if re.search(r"vfmadd\w+\s+[^\n]*%zmm", f)]
    assert len(re.findall(r"vfmadd\w+\s+[^\n]*%zmm", kernel)) >= 25
    spills = re.findall(r"vmov\w+\s+(?:%zmm\d+, [^\n]*\(%rsp\)|[^\n]*\(%rsp\), %zmm\d+)", kernel)
    assert not spills, spills[:4]
    np.testing.assert_allclose(S[:5, :5], D)
