"""The numba backend's on-disk cache: never in the package, NUMBA_CACHE_DIR, read-only installs, damaged files.

Design note
-----------
Every scenario runs in a fresh subprocess (a cache is only read at a
process's first call) on a *copy* of the package, put first on
``PYTHONPATH``, so the tests never touch the real package's ``__pycache__``.
The subprocess (:data:`PROBE`) computes one problem with the numba backend,
compares it with the numpy backend, and reports the cache hits and misses of
the backend's Numba dispatchers.

"Read-only" must hold for root too (containers, some CI): there, the
subprocess drops the capabilities that let root ignore file permissions
(CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH) from its bounding set before exec,
so a ``chmod a-w`` directory is as unwritable to it as to anyone.

Each subprocess that misses the cache compiles the parallel kernel, seconds
each, so the tests share one populated cache where they can.
"""

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import fastsoftmax
from fastsoftmax.testing import load_backend

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="subprocess permission setup is Linux-only")

PROBE = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import fastsoftmax
    from numba.core.dispatcher import Dispatcher

    f = fastsoftmax.backends.get("numba")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 7)); W = rng.standard_normal((7, 4)); y = rng.integers(0, 4, 50)
    loss, dW = f(W, X, y, 0.1)
    ref_loss, ref_dW = fastsoftmax.backends.get("numpy")(W, X, y, 0.1)
    kernels = [v for v in vars(sys.modules["fastsoftmax.backends.numba"]).values() if isinstance(v, Dispatcher)]
    print(json.dumps({
        "file": fastsoftmax.__file__,
        "agree": abs(loss - ref_loss) <= 1e-12 * abs(ref_loss) and bool(np.allclose(dW, ref_dW, rtol=1e-10, atol=0)),
        "hits": sum(sum(k.stats.cache_hits.values()) for k in kernels),
        "misses": sum(sum(k.stats.cache_misses.values()) for k in kernels),
    }))
    """
)

_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH, _PR_CAPBSET_DROP = 1, 2, 24

# As root, a subprocess must give up ignoring file permissions or nothing is
# read-only to it.  The child drops the two capabilities from its bounding set
# and then execs the real interpreter (the drop takes effect at exec).  Doing
# it in the child, not with preexec_fn, keeps the parent from running fork
# hooks: JAX, imported by other tests, warns on every fork.
_DROP_ROOT_FILE_POWERS = (
    "import ctypes, os, sys\n"
    "libc = ctypes.CDLL(None)\n"
    f"for cap in ({_CAP_DAC_OVERRIDE}, {_CAP_DAC_READ_SEARCH}):\n"
    f"    libc.prctl({_PR_CAPBSET_DROP}, cap, 0, 0, 0)  # if refused, require_read_only() skips\n"
    "os.execv(sys.executable, [sys.executable, '-c', sys.argv[1]])\n"
)


def require_read_only(path):
    """Skip unless a subprocess (set up as :func:`run_python` does) really cannot write ``path``."""
    out = run_python(f"open({str(Path(path) / 'probe')!r}, 'w')", path, path)
    if out.returncode == 0:
        (Path(path) / "probe").unlink()
        pytest.skip(f"cannot make {path} read-only for a subprocess here (root without capability control)")


def run_python(code, pkg, home, cache_dir=None):
    """Run ``code`` in a fresh interpreter with ``pkg`` first on the path and ``home`` as HOME.

    Python itself writes no bytecode (``PYTHONDONTWRITEBYTECODE``): an
    installed package has its ``.pyc`` files from pip, and what is checked
    here is what fastsoftmax and Numba write.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_CACHE_DIR", "FASTSOFTMAX_"))}
    env.update(
        PYTHONPATH=str(pkg), HOME=str(home), XDG_CACHE_HOME=str(Path(home) / ".cache"), PYTHONDONTWRITEBYTECODE="1"
    )
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = str(cache_dir)
    launch = [sys.executable, "-c", _DROP_ROOT_FILE_POWERS] if os.geteuid() == 0 else [sys.executable, "-c"]
    return subprocess.run(
        [*launch, code],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(home),
        timeout=600,
    )


def probe(pkg, home, cache_dir=None):
    """Run :data:`PROBE`; return its report, or raise :class:`CacheCrash` with its stderr."""
    out = run_python(PROBE, pkg, home, cache_dir)
    if out.returncode != 0:
        raise CacheCrash(out.stderr[-1500:])
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["file"].startswith(str(pkg)), f"probe imported the wrong package: {report['file']}"
    return report


class CacheCrash(Exception):
    """The numba backend crashed in the subprocess (its stderr is the message)."""


def copy_package(dest, read_only):
    """A copy of the installed package (with its built extension, without caches) under ``dest``."""
    src = Path(fastsoftmax.__file__).parent
    shutil.copytree(src, dest / "fastsoftmax", ignore=shutil.ignore_patterns("__pycache__", "*.c"))
    if read_only:
        make_read_only(dest)
    return dest


def make_read_only(path):
    for p in [path, *Path(path).rglob("*")]:
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A read-only package copy, and a NUMBA_CACHE_DIR populated by one run on it."""
    load_backend("numba")
    base = tmp_path_factory.mktemp("numba-cache")
    pkg = copy_package(base / "pkg", read_only=True)
    home = base / "home"
    home.mkdir()
    cache = base / "cache"
    first = probe(pkg, home, cache)
    assert first["agree"] and first["misses"] >= 1, first
    yield {"base": base, "pkg": pkg, "home": home, "cache": cache}
    for p in [base, *base.rglob("*")]:  # let pytest clean up later
        p.chmod(p.stat().st_mode | stat.S_IWUSR)


def test_numba_cache_dir_elsewhere_is_used(world):
    """NUMBA_CACHE_DIR: compiled code lands there, and the next process loads it."""
    files = list(world["cache"].rglob("*.nbi")), list(world["cache"].rglob("*.nbc"))
    assert all(files), f"no index/data files in NUMBA_CACHE_DIR: {files}"
    second = probe(world["pkg"], world["home"], world["cache"])
    assert second["agree"] and second["hits"] >= 1 and second["misses"] == 0, second


def test_read_only_package_uses_the_user_cache(world, tmp_path):
    """A package in a read-only directory (a system install) caches in ~/.cache/fastsoftmax/numba."""
    require_read_only(world["pkg"])
    home = tmp_path / "home"
    home.mkdir()
    first = probe(world["pkg"], home)
    assert first["agree"], first
    assert not list(world["pkg"].rglob("*.nbi")), "wrote into the read-only package"
    assert list((home / ".cache" / "fastsoftmax" / "numba").rglob("*.nbi")), "not in the user cache directory"
    second = probe(world["pkg"], home)
    assert second["agree"] and second["hits"] >= 1, second


NO_CACHE_PROBE = textwrap.dedent(
    """
    import json, warnings
    import numpy as np

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import fastsoftmax
        available = fastsoftmax.available()
        X = np.ones((4, 3)); W = np.ones((3, 2)); y = np.array([0, 1, 0, 1])
        loss, dW = fastsoftmax.backends.get("numba")(W, X, y, 0.1)
        ref_loss, ref_dW = fastsoftmax.backends.get("numpy")(W, X, y, 0.1)
    print(json.dumps({
        "available": available,
        "unavailable": {k: str(v) for k, v in fastsoftmax.backends.unavailable().items()},
        "agree": abs(loss - ref_loss) <= 1e-12 * abs(ref_loss) and bool(np.allclose(dW, ref_dW, rtol=1e-10, atol=0)),
        "warnings": [f"{w.category.__name__}: {w.message}" for w in caught],
    }))
    """
)


def test_no_writable_cache_location_keeps_the_backend_available_and_warns(world, tmp_path):
    """Read-only package, unwritable HOME, no NUMBA_CACHE_DIR: compile without a cache, with a warning.

    The backend still loads and computes (the cache is an optimisation), and
    says why every process will compile again.
    """
    home = tmp_path / "home"
    home.mkdir()
    make_read_only(home)
    require_read_only(home)
    out = run_python(NO_CACHE_PROBE, world["pkg"], home)
    assert out.returncode == 0, out.stderr[-1500:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert "numba" in report["available"] and "numba" not in report["unavailable"], report
    assert report["agree"], report
    assert any(
        w.startswith("RuntimeWarning: fastsoftmax: no writable place for Numba's cache") for w in report["warnings"]
    ), report["warnings"]


CALL_EVERY_BACKEND = textwrap.dedent(
    """
    import json
    import numpy as np
    import fastsoftmax
    from fastsoftmax.harness import peers

    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 7)); W = rng.standard_normal((7, 4)); y = rng.integers(0, 4, 50)
    names = fastsoftmax.available()
    for name in names:
        for dtype in (np.float32, np.float64):
            fastsoftmax.backends.get(name)(W.astype(dtype), X.astype(dtype), y, 0.1)
    peers._stream()(np.ones(64), 0, 64, 1)  # the harness's own jitted kernel
    print(json.dumps({"file": fastsoftmax.__file__, "ran": names}))
    """
)


def snapshot(root):
    """Every path under ``root`` with its size and modification time."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in [root, *root.rglob("*")]}


def test_compiled_calls_leave_the_package_directory_unchanged(tmp_path):
    """First calls of every backend (Numba compiling, Cython) write nothing into the package (issue 10).

    The package copy is writable and NUMBA_CACHE_DIR unset, the case where
    Numba's own ``cache=True`` writes into ``backends/__pycache__/`` (what
    broke ``pip uninstall``).  HOME is fresh, so the cache is cold and must
    land in the user cache directory.
    """
    load_backend("numba")
    load_backend("cython")
    pkg = copy_package(tmp_path / "pkg", read_only=False)
    home = tmp_path / "home"
    home.mkdir()
    before = snapshot(pkg)
    out = run_python(CALL_EVERY_BACKEND, pkg, home)
    assert out.returncode == 0, out.stderr[-1500:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["file"].startswith(str(pkg)), f"imported the wrong package: {report['file']}"
    assert {"numba", "cython"} <= set(report["ran"]), report
    after = snapshot(pkg)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"the package directory changed: {changed}"
    cached = [p.name for p in (home / ".cache" / "fastsoftmax" / "numba").rglob("*.nbi")]
    for kernel in ("numba._fused-", "peers._stream.locals.stream_sum-"):
        assert any(name.startswith(kernel) for name in cached), f"{kernel} not cached in the user cache: {cached}"


def _damage_nbc(path):
    path.write_bytes(os.urandom(100))


def _damage_nbi(path):
    path.write_bytes(os.urandom(100))


def _truncate(path):
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


@pytest.mark.parametrize(
    "suffix, damage",
    [
        pytest.param("nbc", _damage_nbc, id="nbc-garbage"),
        pytest.param("nbc", _truncate, id="nbc-truncated"),
        pytest.param("nbi", _damage_nbi, id="nbi-garbage"),
        pytest.param("nbi", _truncate, id="nbi-truncated"),
    ],
)
def test_damaged_cache_file_is_recompiled(world, tmp_path, suffix, damage):
    cache = tmp_path / "cache"
    shutil.copytree(world["cache"], cache)
    files = list(cache.rglob(f"*.{suffix}"))
    assert files
    for f in files:
        damage(f)
    report = probe(world["pkg"], world["home"], cache)
    assert report["agree"] and report["misses"] >= 1, report


def test_stale_cache_is_recompiled(world, tmp_path):
    """A cache written for other source (the kernel file changed since) is not used."""
    from numba.core.caching import _CacheLocator

    pkg = tmp_path / "pkg"
    shutil.copytree(world["pkg"], pkg)  # copy2: same sizes and mtimes, so the cache matches
    source = pkg / "fastsoftmax" / "backends" / "numba.py"
    cache = tmp_path / "cache"
    (populated,) = [d for d in world["cache"].iterdir() if d.is_dir()]
    shutil.copytree(populated, cache / _CacheLocator.get_suitable_cache_subpath(str(source)))
    control = probe(pkg, world["home"], cache)
    assert control["agree"] and control["hits"] >= 1 and control["misses"] == 0, control
    # As if upgraded: new content (Numba stamps a cache with the source's hash),
    # same line numbers, so the very same index file is found and must be refused.
    source.chmod(source.stat().st_mode | stat.S_IWUSR)
    source.write_text(source.read_text() + "\n# a later version\n")
    report = probe(pkg, world["home"], cache)
    assert report["agree"] and report["misses"] >= 1 and report["hits"] == 0, report
