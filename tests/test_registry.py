"""The registry: which backends exist, which load, which is fastest, and pinning."""

import os
import subprocess
import sys

import numpy as np
import pytest

import fastsoftmax
from fastsoftmax import backends
from fastsoftmax.testing import REQUIRE_ALL_ENV

REQUIRE_ALL = os.environ.get(REQUIRE_ALL_ENV) == "1"


def test_registry_and_backend_modules_match():
    """Every public module in fastsoftmax/backends/ is registered under its own name, and only those.

    Over both contracts of the registry (:data:`fastsoftmax.backends.CONTRACTS`).

    A new backend module that was never added to BACKENDS (so no test and no
    benchmark would see it), or an entry pointing at a module that does not
    exist, fails here.
    """
    import importlib.util
    import pkgutil

    modules = {m.name for m in pkgutil.iter_modules(backends.__path__) if not m.name.startswith("_")}
    # Each contract's table (the linear loss, the two-layer net) names its
    # modules: ``name`` for the linear loss, ``net_<name>`` for the net.
    prefixes = {"softmax": "", "net": "net_"}
    assert set(backends.CONTRACTS) == set(prefixes)
    registered = set()
    for contract, (table, _) in backends.CONTRACTS.items():
        for name, module in table.items():
            assert module == f"fastsoftmax.backends.{prefixes[contract]}{name}", (contract, name)
            assert importlib.util.find_spec(module) is not None, module
            registered.add(module.rsplit(".", 1)[1])
    assert registered == modules


def test_every_backend_loads_or_says_why():
    """Each registered backend either gives a kernel or is listed as unavailable with a reason."""
    loaded = set(backends.available())
    missing = backends.unavailable()
    for name in backends.BACKENDS:
        assert (name in loaded) != (name in missing), name
        if name in loaded:
            assert callable(backends.get_kernel(name)) and callable(backends.get(name))
        else:
            assert missing[name].strip(), name


def test_available_backends_are_ranked():
    names = backends.available()
    assert "python" in names and "numpy" in names
    ranked = [n for n in backends.ranking() if n in names]
    assert names[: len(ranked)] == ranked


@pytest.mark.skipif(not REQUIRE_ALL, reason="CI requires all backends; users may lack a compiler")
def test_ci_has_every_backend():
    assert set(backends.available()) == set(backends.BACKENDS), backends.unavailable()


def test_fastest_is_first_available_in_ranking():
    assert fastsoftmax.fastest() == backends.available()[0]


def test_pin_with_api_call():
    try:
        fastsoftmax.set_backend("numpy")
        assert fastsoftmax.fastest() == "numpy"
        with pytest.raises(backends.BackendUnavailable):
            fastsoftmax.set_backend("nope")
        assert fastsoftmax.fastest() == "numpy"
    finally:
        fastsoftmax.set_backend(None)
    assert fastsoftmax.fastest() == backends.available()[0]


def test_pin_with_environment_variable(monkeypatch):
    monkeypatch.setenv("FASTSOFTMAX_BACKEND", "python")
    assert fastsoftmax.fastest() == "python"
    monkeypatch.setenv("FASTSOFTMAX_BACKEND", "nope")
    with pytest.raises(backends.BackendUnavailable, match="unknown backend 'nope'"):
        fastsoftmax.softmax_loss(np.ones((2, 2)), np.ones((1, 2)), [0], 0.0)


def test_import_does_not_load_numba_or_the_extension():
    code = (
        "import sys, fastsoftmax; "
        "print('numba' in sys.modules, 'fastsoftmax.backends._cython_kernel' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_missing_extension_does_not_break_import(tmp_path):
    """Simulate a checkout where the Cython extension was never built."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.endswith('_cython_kernel'):\n"
        "            raise ImportError('extension not built')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import fastsoftmax\n"
        "print(fastsoftmax.available())\n"
        "print(fastsoftmax.backends.unavailable()['cython'])\n"
        "print(fastsoftmax.fastest())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "FASTSOFTMAX_BACKEND"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    lines = out.stdout.splitlines()
    assert "cython" not in lines[0]
    assert "extension not built" in lines[1] and "pip install" in lines[1]
    assert lines[2] != "cython"


def test_register_and_unregister():
    def kernel(problem, n_threads):
        return 0.0, np.zeros_like(problem.W), None

    backends.register("zero", kernel)
    try:
        assert "zero" in backends.available()
        loss, dW = backends.get("zero")(np.ones((2, 2)), np.ones((1, 2)), [0], 0.0)
        assert loss == 0.0 and not dW.any()
        with pytest.raises(ValueError, match="built-in"):
            backends.register("numpy", kernel)
    finally:
        backends.unregister("zero")
    assert "zero" not in backends.available()


def test_kept_scratch_is_one_dict_per_thread_kernel_and_shape(monkeypatch):
    """The public wrapper hands a ``takes_scratch`` kernel one dict per thread, kept while the shape stays.

    The same dict for calls of one shape, dtype and thread count; a new one
    when any of them changes (the old one is dropped: one slot per kernel
    and thread); another thread's own; none over :data:`KEPT_BYTES` or for a
    kernel that does not take scratch.
    """
    import threading

    seen = []

    def kernel(problem, n_threads, scratch=None):
        seen.append(scratch)
        return 0.0, np.zeros_like(problem.W), None

    kernel.takes_scratch = True
    backends.register("keeper", kernel)
    try:
        f = backends.get("keeper")
        X, y = np.ones((3, 4)), [0, 1, 0]
        f(np.ones((4, 2)), X, y, 0.0, n_threads=1)
        f(np.ones((4, 2)), X, y, 0.0, n_threads=1)
        assert isinstance(seen[0], dict) and seen[1] is seen[0]
        f(np.ones((4, 3)), X, y, 0.0, n_threads=1)  # another C
        f(np.ones((4, 2)), X, y, 0.0, n_threads=1)  # back: a new dict, the first was dropped
        f(np.ones((4, 2), np.float32), X.astype(np.float32), y, 0.0, n_threads=1)
        f(np.ones((4, 2)), X, y, 0.0, n_threads=2)
        assert len({id(s) for s in seen[1:]}) == 5 and seen[3] is not seen[0]
        other = threading.Thread(target=f, args=(np.ones((4, 2)), X, y, 0.0), kwargs={"n_threads": 2})
        other.start()
        other.join()
        assert isinstance(seen[-1], dict) and seen[-1] is not seen[-2]
        monkeypatch.setattr(backends, "KEPT_BYTES", 3 * 64 - 1)  # (threads + 1) * W.nbytes = 3 * 64
        f(np.ones((4, 2)), X, y, 0.0, n_threads=2)
        assert seen[-1] is None
        monkeypatch.setattr(backends, "KEPT_BYTES", 3 * 64)
        f(np.ones((4, 2)), X, y, 0.0, n_threads=2)
        assert isinstance(seen[-1], dict)
    finally:
        backends.unregister("keeper")

    def plain(problem, n_threads):  # no takes_scratch: called with two arguments
        return 0.0, np.zeros_like(problem.W), None

    backends.register("plain", plain)
    try:
        assert backends.get("plain")(np.ones((4, 2)), np.ones((3, 4)), [0, 1, 0], 0.0)[0] == 0.0
    finally:
        backends.unregister("plain")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kept_scratch_returns_fresh_arrays_with_the_same_bits(fast_backend, dtype):
    """Calls that reuse kept buffers return new arrays, bit for bit what a call without them returns.

    Shapes, batch sizes (the cython kernel's thread count follows them) and
    thread counts change between the calls, and no earlier result changes.
    """
    from fastsoftmax.backends._validate import prepare

    name, f = fast_backend
    kernel = backends.get_kernel(name)
    rng = np.random.default_rng(5)
    X = rng.standard_normal((300, 37)).astype(dtype)
    y = rng.integers(0, 7, 300)
    b = rng.standard_normal(7).astype(dtype)
    calls = [(7, 300, 2), (7, 300, 2), (7, 3, 2), (7, 300, 1), (6, 300, 2), (7, 120, 2)]
    results = []
    for C, n, threads in calls:
        W = rng.standard_normal((37, C)).astype(dtype)
        args = (W, X[:n], y[:n] % C, 0.1)
        loss, dW, db = f(*args, b=b[:C], n_threads=threads)
        fresh = kernel(prepare(*args, b=b[:C]), threads)
        assert loss == fresh[0]
        np.testing.assert_array_equal(dW, fresh[1], strict=True)
        np.testing.assert_array_equal(db, fresh[2], strict=True)
        results.append((dW, dW.copy(), db, db.copy()))
    for dW, dW0, db, db0 in results:
        np.testing.assert_array_equal(dW, dW0, strict=True)
        np.testing.assert_array_equal(db, db0, strict=True)


def test_a_kept_scratch_dict_holds_one_set_of_buffers(fast_backend, monkeypatch):
    """What a kernel keeps in one scratch dict stays ``(threads + 1)`` padded W's, whatever the batch sizes.

    The thread count follows the batch size (``thread_count``), so a dict
    used for batches of 1 and of many rows must replace its accumulators,
    not keep a set per count.
    """
    from fastsoftmax.backends import _common
    from fastsoftmax.backends._validate import prepare

    monkeypatch.setattr(_common, "MIN_WORK_PER_THREAD", 1)  # 2 threads from 2 rows on
    name, _ = fast_backend
    kernel = backends.get_kernel(name)
    if not getattr(kernel, "takes_scratch", False):
        pytest.skip(f"{name} keeps nothing")
    rng = np.random.default_rng(6)
    D, C, threads = 37, 7, 2
    X, W, y = rng.standard_normal((300, D)), rng.standard_normal((D, C)), rng.integers(0, C, 300)
    scratch = {}
    for n in (1, 300, 2, 1, 300):
        kernel(prepare(W, X[:n], y[:n], 0.1), threads, scratch)
    kept = [a for v in scratch.values() for a in (v if isinstance(v, tuple) else (v,)) if isinstance(a, np.ndarray)]
    padded_w = 10 * 48 * 8  # Cp = 10 classes (blocks of 5) x rows of 48 elements (64-byte multiples) x 8 bytes
    assert kept and sum(a.nbytes for a in kept) <= (threads + 1) * padded_w + 1024


def test_thread_settings(monkeypatch):
    monkeypatch.delenv("FASTSOFTMAX_NUM_THREADS", raising=False)
    default = fastsoftmax.get_num_threads()
    assert default >= 1
    monkeypatch.setenv("FASTSOFTMAX_NUM_THREADS", "1")
    assert fastsoftmax.get_num_threads() == 1
    fastsoftmax.set_num_threads(2)
    try:
        assert fastsoftmax.get_num_threads() == 2
        with fastsoftmax.threads(1):
            assert fastsoftmax.get_num_threads() == 1
        assert fastsoftmax.get_num_threads() == 2
        with pytest.raises(ValueError, match=r"n must be an integer >= 1, got 0"):
            fastsoftmax.set_num_threads(0)
    finally:
        fastsoftmax.set_num_threads(None)
    monkeypatch.setenv("FASTSOFTMAX_NUM_THREADS", "many")
    with pytest.raises(ValueError, match="FASTSOFTMAX_NUM_THREADS"):
        fastsoftmax.get_num_threads()


@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_thread_count_does_not_change_the_answer(fast_backend, n_threads):
    name, f = fast_backend
    rng = np.random.default_rng(3)
    X = rng.standard_normal((101, 17))
    W = rng.standard_normal((17, 4))
    y = rng.integers(0, 4, 101)
    with fastsoftmax.threads(1):
        ref = f(W, X, y, 0.1)
    with fastsoftmax.threads(n_threads):
        got = f(W, X, y, 0.1)
    assert abs(got[0] - ref[0]) <= 1e-12 * abs(ref[0])
    np.testing.assert_allclose(got[1], ref[1], rtol=0, atol=1e-12 * np.abs(ref[1]).max())


def _imports_of_other_products(path):
    """``(line, module)`` of every import in ``path`` that reaches the harness, the training kit or an adapter."""
    import ast

    other = ("fastsoftmax.harness", "fastsoftmax.training", "fastsoftmax.dask", "fastsoftmax.sklearn",
             "fastsoftmax.cli", "fastsoftmax.testing")
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            # Resolve relative imports from fastsoftmax/backends/<module>.py.
            base = ["fastsoftmax", "backends"][: 2 - (node.level - 1)] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names = [module] + [f"{module}.{alias.name}" for alias in node.names]
        else:
            continue
        found += [(node.lineno, n) for n in names if n.startswith(other)]
    return found


def test_kernels_import_nothing_from_the_other_products():
    """The layout's one rule: backends/ (the kernels) never imports the harness, the training kit or an adapter."""
    import pathlib

    package = pathlib.Path(backends.__file__).parent
    offenders = {p.name: found for p in sorted(package.glob("*.py")) if (found := _imports_of_other_products(p))}
    assert not offenders, f"kernel modules import other products: {offenders}"


def test_the_import_rule_sees_relative_and_absolute_imports(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text("from ..training.layers import affine_forward\n"
                       "def f():\n    import fastsoftmax.harness.run\n"
                       "from . import _validate\nfrom .. import backends\n")
    assert [m for _, m in _imports_of_other_products(planted)] == [
        "fastsoftmax.training.layers", "fastsoftmax.training.layers.affine_forward", "fastsoftmax.harness.run"]
