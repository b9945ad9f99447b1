"""The measured choice of backend: ``fastsoftmax tune`` wisdom, read by ``fastest``, static fallback."""

import json
import subprocess
import sys

import numpy as np
import pytest

import fastsoftmax
from fastsoftmax import backends
from fastsoftmax.backends import _wisdom
from fastsoftmax.harness.tune import CHUNKS


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    """Every test gets its own empty cache directory."""
    monkeypatch.setenv("FASTSOFTMAX_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("FASTSOFTMAX_BACKEND", raising=False)
    _wisdom.forget()
    yield tmp_path
    _wisdom.forget()


def _write(orders, **overrides):
    """Wisdom for this machine and version with ``orders``; ``overrides`` replace header fields."""
    path = _wisdom.save(orders, [])
    with open(path) as f:
        data = json.load(f)
    data.update(overrides)
    with open(path, "w") as f:
        json.dump(data, f)
    _wisdom.forget()
    return path


def _write_without(field):
    """Wisdom for this machine and version without ``field``, as a version before it was measured wrote."""
    path = _write({})
    with open(path) as f:
        data = json.load(f)
    del data[field]
    with open(path, "w") as f:
        json.dump(data, f)
    _wisdom.forget()


def test_no_wisdom_means_the_static_table():
    for dtype, n in (("float64", 16), ("float64", 500), ("float32", 10**5)):
        expected = next(b for b in backends.ranking(dtype, n) if b in backends.available())
        assert backends.fastest(dtype, n) == expected


def test_wisdom_decides_per_dtype_band_and_threads():
    _write({
        "float64|1|1": ["python", "numpy"],
        "float64|1|100": ["numpy", "python"],
        "float64|2|100": ["python", "numpy"],
        "float32|1|1": ["numpy", "python"],
    })
    assert backends.fastest("float64", 50, threads=1) == "python"
    assert backends.fastest("float64", 100, threads=1) == "numpy"
    assert backends.fastest("float64", None, threads=1) == "numpy"  # no N: the top band
    assert backends.fastest("float64", 100, threads=2) == "python"
    assert backends.fastest("float64", 100, threads=8) == "python"  # the largest measured count <= 8
    assert backends.fastest("float32", 10**6, threads=4) == "numpy"
    with fastsoftmax.threads(2):  # default threads: the current setting
        assert backends.fastest("float64", 500) == "python"


def test_remembered_choice_follows_new_wisdom_and_cache_dir(cache_dir, tmp_path_factory, monkeypatch):
    """fastest() remembers its answer per call shape, but never past a change of wisdom."""
    static = backends.fastest("float64", 500, threads=1)
    other = "python" if static != "python" else "numpy"
    _wisdom.save({"float64|1|1": [other]}, [])         # tune writes new wisdom in this process
    assert backends.fastest("float64", 500, threads=1) == other
    monkeypatch.setenv("FASTSOFTMAX_CACHE_DIR", str(tmp_path_factory.mktemp("empty")))
    assert backends.fastest("float64", 500, threads=1) == static   # another cache: no wisdom
    monkeypatch.setenv("FASTSOFTMAX_CACHE_DIR", str(cache_dir))
    assert backends.fastest("float64", 500, threads=1) == other
    (cache_dir / _wisdom.wisdom_path().rsplit("/", 1)[-1]).unlink()
    assert backends.fastest("float64", 500, threads=1) == other    # read once per process ...
    _wisdom.forget()
    assert backends.fastest("float64", 500, threads=1) == static   # ... until forgotten


def test_softmax_loss_runs_what_fastest_says():
    _write({"float64|1|1": ["python", "numpy"]})
    rng = np.random.default_rng(0)
    W, X, y = rng.standard_normal((5, 3)), rng.standard_normal((4, 5)), np.array([0, 1, 2, 0])
    with fastsoftmax.threads(1):
        assert backends.fastest("float64", 4) == "python"
        loss, dW = fastsoftmax.softmax_loss(W, X, y, 0.1)
    ref = backends.get("python")(W, X, y, 0.1)
    assert loss == ref[0] and np.array_equal(dW, ref[1])


def test_pin_beats_wisdom():
    _write({"float64|1|1": ["python"]})
    fastsoftmax.set_backend("numpy")
    try:
        assert backends.fastest("float64", 10, threads=1) == "numpy"
    finally:
        fastsoftmax.set_backend(None)


@pytest.mark.parametrize("field", ["machine", "version", "format"])
def test_wisdom_of_another_machine_or_version_is_ignored(field):
    _write({"float64|1|1": ["python"]}, **{field: "something else"})
    assert backends.fastest("float64", 10, threads=1) != "python"


def test_unusable_wisdom_falls_back_quietly(cache_dir):
    path = _wisdom.wisdom_path()
    with open(path, "w") as f:
        f.write('{"format": 1, "truncat')
    assert backends.fastest("float64", 10, threads=1) == next(
        b for b in backends.ranking("float64", 10) if b in backends.available())
    # a backend in the wisdom that cannot load here is skipped
    _write({"float64|1|1": ["no-such-backend", "python"]})
    assert backends.fastest("float64", 10, threads=1) == "python"


def test_tune_measures_and_saves(cache_dir):
    from fastsoftmax.harness.tune import bands, tune

    assert bands([32, 500, 10000]) == [1, 126, 2236]
    lines = []
    orders, path = tune(sizes=(8, 64), dtypes=("float32",), threads=(1,), repeat=1, d=40, c=3,
                        out=lines.append, warm_s=0.0)
    # first the blocking: with cython its D-chunk and prefetch, then the numba kernel's prefetch, each at
    # two sizes and a verdict; then the backends at each size
    assert path == _wisdom.wisdom_path() and len(lines) in (5, 11)
    assert lines[-2].startswith("float32 N=8 ") and lines[-1].startswith("float32 N=64 ")
    assert lines[-5].startswith("numba float32 N=500 ") and "whole" in lines[-3]
    assert set(orders) == {"float32|1|1", "float32|1|22"}
    for order in orders.values():
        assert order[-1] == "python" and set(order) == set(backends.available())
    _wisdom.forget()
    assert backends.fastest("float32", 64, threads=1) == orders["float32|1|22"][0]
    try:
        from fastsoftmax.backends import cython
    except ImportError:
        assert _wisdom.load()["chunks"] == {} and set(_wisdom.load()["prefetch"]) == {"numba|float32"}
        return
    isa = cython.ISA or cython.SUPPORTED_ISAS[-1]  # tune also measured the C kernel's D-chunk
    assert set(_wisdom.load()["chunks"]) == {f"{isa}|float32"}
    assert _wisdom.chunk_bytes(isa, "float32") in CHUNKS
    assert "D-chunk" in lines[0] and "D-chunk" in lines[2] and "whole" in lines[5]
    assert set(_wisdom.load()["prefetch"]) == {f"{isa}|float32", "numba|float32"}


def _numba_calls(monkeypatch):
    """A list to which every call of the Numba kernel from now on appends ``(n, whether it prefetched)``."""
    from fastsoftmax.backends import numba

    ran, real = [], numba._run_fused

    def spy(*args):
        ran.append((args[10], args[-1]))  # _fused(..., n, n_chunks, out, db, pf)
        return real(*args)

    monkeypatch.setattr(numba, "_run_fused", spy)
    return ran


def test_tune_ranks_the_backends_with_the_blocking_it_found(cache_dir, monkeypatch):
    """The backends are timed as they will run with the new wisdom: its prefetch decided per batch size, for
    each kernel; the overrides are restored afterwards."""
    from fastsoftmax.backends import numba
    from fastsoftmax.harness import tune as tune_module

    ran = _numba_calls(monkeypatch)
    found = {"numba|float32": 22}
    try:
        from fastsoftmax.backends import cython
    except ImportError:
        cython = None
    else:
        found[f"{cython.running_isa()}|float32"] = 1
        real_cython = cython.fused_loss_grad

        def spy_cython(*args, prefetch_tile=False, **kw):
            ran.append(("cython", prefetch_tile))
            return real_cython(*args, prefetch_tile=prefetch_tile, **kw)

        monkeypatch.setattr(cython, "fused_loss_grad", spy_cython)
    monkeypatch.setattr(tune_module, "tune_chunks", lambda *a, **k: ({}, []))
    monkeypatch.setattr(tune_module, "tune_prefetch", lambda *a, **k: (found, []))
    tune_module.tune(sizes=(8, 64), dtypes=("float32",), threads=(1,), repeat=1, d=40, c=3, out=lambda line: None,
                     warm_s=0.0)
    assert set(ran) == {(8, False), (64, True)} | ({("cython", True)} if cython else set())
    assert numba.PREFETCH_TILE is None and (cython is None or cython.PREFETCH_TILE is None)
    assert _wisdom.prefetch_from("numba", "float32") == 22


def test_wisdom_chunk_is_read_per_build_and_dtype_and_only_when_plausible():
    assert _wisdom.chunk_bytes("avx2", "float64") is None  # no wisdom
    _wisdom.save({}, [], chunks={"avx2|float64": 4096, "avx512|float32": 8192})
    assert _wisdom.chunk_bytes("avx2", "float64") == 4096
    assert _wisdom.chunk_bytes("avx512", "float32") == 8192
    assert _wisdom.chunk_bytes("avx2", "float32") is None
    assert _wisdom.chunk_bytes("baseline", "float64") is None
    for bad in (True, 16, 1 << 30, "4096", 4096.0, None):
        _write({}, chunks={"avx2|float64": bad})
        assert _wisdom.chunk_bytes("avx2", "float64") is None, bad
    _write({}, chunks=["avx2|float64"])
    assert _wisdom.chunk_bytes("avx2", "float64") is None
    _write_without("chunks")  # the wisdom of a version before chunks were measured
    assert _wisdom.load() is not None and _wisdom.chunk_bytes("avx2", "float64") is None


def test_cython_blocking_follows_the_measured_chunk(monkeypatch):
    """The C kernel runs this machine's tuned D-chunk for the build and dtype that run, else the static one."""
    cython = pytest.importorskip("fastsoftmax.backends.cython")
    from fastsoftmax.backends._common import blocking

    monkeypatch.setattr(cython, "BLOCKING", None)
    for isa in cython.SUPPORTED_ISAS:
        monkeypatch.setattr(cython, "ISA", isa)
        other = next(i for i in ("baseline", "avx2", "avx512") if i != isa)
        _wisdom.save({}, [], chunks={f"{isa}|float64": 2560, f"{other}|float32": 2560})
        assert cython._blocking(3073, 10, 8)[:2] == blocking(3073, 10, 8, isa=isa, chunk_bytes=2560)
        assert cython._blocking(3073, 10, 8)[1] == 32  # 2560 bytes / (10 classes * 8 bytes), in 16s
        assert cython._blocking(3073, 10, 4)[:2] == blocking(3073, 10, 4, isa=isa)  # static
        _wisdom.forget()


def test_cython_blocking_is_remembered_but_follows_new_wisdom_and_cache_dir(cache_dir, tmp_path_factory,
                                                                           monkeypatch):
    """_blocking works the blocking out once per shape, build and wisdom: a save or another cache dir is seen."""
    cython = pytest.importorskip("fastsoftmax.backends.cython")
    import fastsoftmax.backends._common as common

    monkeypatch.setattr(cython, "BLOCKING", None)
    isa = cython.running_isa()
    static = cython._blocking(3073, 10, 8)
    worked_out = []
    monkeypatch.setattr(cython, "blocking", lambda *a, **k: worked_out.append(a) or common.blocking(*a, **k))
    assert [cython._blocking(3073, 10, 8) for _ in range(3)] == [static] * 3 and worked_out == []
    _wisdom.save({}, [], chunks={f"{isa}|float64": 2560})          # tune saves in this process
    assert cython._blocking(3073, 10, 8)[1] == 32 and len(worked_out) == 1
    monkeypatch.setenv("FASTSOFTMAX_CACHE_DIR", str(tmp_path_factory.mktemp("empty")))
    assert cython._blocking(3073, 10, 8) == static                  # another cache: no wisdom
    monkeypatch.setenv("FASTSOFTMAX_CACHE_DIR", str(cache_dir))
    assert cython._blocking(3073, 10, 8)[1] == 32
    assert cython._blocking(3073, 10, 4)[:2] == common.blocking(3073, 10, 4, isa=isa)   # float32: static


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="XDG_CACHE_HOME is where Linux keeps caches")
def test_wisdom_path_follows_the_platform_cache_dir(tmp_path, monkeypatch):
    """Without FASTSOFTMAX_CACHE_DIR the file is in the user cache dir, read anew when the environment changes."""
    monkeypatch.delenv("FASTSOFTMAX_CACHE_DIR")
    for sub in ("a", "b", "a"):
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / sub))
        assert _wisdom.wisdom_path().startswith(str(tmp_path / sub / "fastsoftmax") + "/")
    monkeypatch.setenv("FASTSOFTMAX_CACHE_DIR", str(tmp_path / "c"))
    assert _wisdom.wisdom_path().startswith(str(tmp_path / "c") + "/")


def test_tune_chunks_times_each_chunk_and_keeps_the_static_one_unless_clearly_beaten(monkeypatch):
    """``tune_chunks`` times every candidate and the static chunk at each size, restores the blocking, and
    saves another chunk only if it is ``GAIN`` faster on the geometric mean and nowhere that much slower."""
    cython = pytest.importorskip("fastsoftmax.backends.cython")
    from fastsoftmax.backends._common import static_chunk_bytes
    from fastsoftmax.harness import tune as tune_module

    monkeypatch.setattr(cython, "BLOCKING", None)
    lines, chosen = [], []
    real = cython.fused_loss_grad

    def spy(Wt, X, y, C, n_threads, isa, b, rows, out, tile, dchunk, **kw):
        chosen.append((X.shape[0], dchunk))
        return real(Wt, X, y, C, n_threads, isa, b, rows, out, tile, dchunk, **kw)

    monkeypatch.setattr(cython, "fused_loss_grad", spy)
    isa = cython.running_isa()
    static = static_chunk_bytes(isa)
    best, found = tune_module.tune_chunks(dtypes=("float64",), sizes=(30, 50), repeat=2, d=700, c=3,
                                          chunks=(256, 2048), out=lines.append, warm_s=0.0)
    # C = 3 padded to 5: 256 and 2048 bytes are 6 and 51 float64s, in 16s (at least one); the static chunk too
    static_dc = max(16, static // 40 // 16 * 16)
    assert set(chosen) == {(n, dc) for n in (30, 50) for dc in (16, 48, static_dc)}
    assert len(chosen) == 2 * 3 * 2 * 2  # per size and chunk: 2 rounds of one untimed and one timed call
    assert [m["n"] for m in found] == [30, 50] and best[f"{isa}|float64"] in (256, 2048, static)
    assert cython.BLOCKING is None and len(lines) == 3
    # the verdict, from given medians: per size, {chunk: seconds}
    for medians, want in [
        ([{256: 0.9, 2048: 0.95, static: 1.0}, {256: 0.9, 2048: 0.95, static: 1.0}], 256),
        ([{256: 0.9, 2048: 0.95, static: 1.0}, {256: 1.1, 2048: 0.95, static: 1.0}], 2048),  # 256 slower at 50
        ([{256: 0.99, 2048: 1.0, static: 1.0}, {256: 0.99, 2048: 1.0, static: 1.0}], static),  # a tie
        ([{256: 0.8, 2048: 1.0, static: 1.0}, {256: 1.05, 2048: 1.05, static: 1.0}], static),
    ]:
        sizes = iter(medians)
        monkeypatch.setattr(tune_module, "_medians", lambda calls, repeat, warm_s, it=sizes: next(it))
        best, _ = tune_module.tune_chunks(dtypes=("float64",), sizes=(30, 50), repeat=1, d=700, c=3,
                                          chunks=(256, 2048), out=lambda line: None, warm_s=0.0)
        assert best == {f"{isa}|float64": want}, medians


def test_import_never_measures(cache_dir):
    """Importing and calling fastsoftmax writes no wisdom: only ``fastsoftmax tune`` does."""
    code = ("import numpy as np, fastsoftmax; "
            "fastsoftmax.softmax_loss(np.ones((3, 2)), np.ones((4, 3)), np.zeros(4, int), 0.0)")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert list(cache_dir.iterdir()) == []


def test_cli_tune_show(cache_dir, capsys):
    from fastsoftmax.cli import main

    assert main(["tune", "--show"]) == 0
    assert "no wisdom" in capsys.readouterr().out
    _write({"float64|1|1": ["python"]})
    assert main(["tune", "--show"]) == 0
    shown = capsys.readouterr().out
    assert '"float64|1|1"' in shown and '"chunks"' in shown and '"prefetch"' in shown


def test_the_benchmarks_record_which_chunk_ran():
    """``isa_note`` (in bench JSON, pytest-benchmark's extra_info, bench/roofline.py) says tuned or static."""
    cython = pytest.importorskip("fastsoftmax.backends.cython")
    from fastsoftmax.backends._common import static_chunk_bytes
    from fastsoftmax.harness.roofline import isa_note

    isa = cython.ISA or cython.SUPPORTED_ISAS[-1]
    static = f"{static_chunk_bytes(isa) / 1024:g} KiB (static)"
    assert isa_note()["cython_chunk_float64"] == isa_note()["cython_chunk_float32"] == static
    _wisdom.save({}, [], chunks={f"{isa}|float32": 3072})
    note = isa_note()
    assert note["cython_isa"] == isa and note["cython_chunk_float32"] == "3 KiB (tuned)"
    assert note["cython_chunk_float64"] == static
    assert note["cython_prefetch_float64"] == "start of the next tile"
    assert note["numba_prefetch_float64"] == note["numba_prefetch_float32"] == "none"
    _wisdom.save({}, [], prefetch={f"{isa}|float64": 2236, "numba|float32": 126})
    assert isa_note()["cython_prefetch_float64"] == "whole next tile from N = 2236 (tuned)"
    assert isa_note()["numba_prefetch_float32"] == "whole next tile from N = 126 (tuned)"


def test_wisdom_of_forced_builds_has_a_file_of_its_own(cache_dir, monkeypatch):
    """Tuning with the AVX2 builds forced (docs/kernels.md) never replaces, nor is read as, the native wisdom."""
    for name in _wisdom.BUILD_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(_wisdom, "_build_tag", None)
    native = _wisdom.wisdom_path()
    assert _wisdom.build_tag() == "" and native.endswith(f"wisdom-{fastsoftmax.__version__}.json")
    monkeypatch.setattr(_wisdom, "_build_tag", None)
    for name, value in (("FASTSOFTMAX_ISA", "avx2"), ("NUMBA_CPU_NAME", "haswell"), ("OPENBLAS_CORETYPE", "Has well")):
        monkeypatch.setenv(name, value)
    assert _wisdom.build_tag() == "-FASTSOFTMAX_ISA=avx2-NUMBA_CPU_NAME=haswell-OPENBLAS_CORETYPE=Has_well"
    monkeypatch.setattr(_wisdom, "_build_tag", None)
    monkeypatch.setenv("NUMBA_CPU_FEATURES", "")  # set but empty: Numba held to haswell's own features, another build
    assert _wisdom.build_tag() == ("-FASTSOFTMAX_ISA=avx2-NUMBA_CPU_NAME=haswell-NUMBA_CPU_FEATURES="
                                   "-OPENBLAS_CORETYPE=Has_well")
    forced = _wisdom.wisdom_path()
    assert forced != native and forced.startswith(str(cache_dir))
    _wisdom.save({"float64|1|1": ["python"]}, [])
    assert backends.fastest("float64", 16, threads=1) == "python"
    monkeypatch.setattr(_wisdom, "_build_tag", None)
    for name in _wisdom.BUILD_ENV:
        monkeypatch.delenv(name)
    assert _wisdom.wisdom_path() == native and _wisdom.load() is None  # the native file is untouched
    monkeypatch.setattr(_wisdom, "_build_tag", None)  # afterwards monkeypatch restores the tag of before


def test_wisdom_prefetch_is_read_per_build_and_dtype_and_only_when_plausible():
    """``prefetch_from``: the batch size tune saved for a build and dtype; None (never) for none or nonsense."""
    assert _wisdom.prefetch_from("avx512", "float64") is None  # no wisdom
    _wisdom.save({}, [], prefetch={"avx512|float64": 2236, "avx512|float32": None, "avx2|float64": 1})
    assert _wisdom.prefetch_from("avx512", "float64") == 2236
    assert _wisdom.prefetch_from("avx512", "float32") is None  # measured slower: never
    assert _wisdom.prefetch_from("avx2", "float64") == 1
    assert _wisdom.prefetch_from("baseline", "float64") is None
    for bad in (0, -5, "2236", 1.5, True):
        _write({}, prefetch={"avx2|float64": bad})
        assert _wisdom.prefetch_from("avx2", "float64") is None, bad
    _write({}, prefetch=["avx2|float64"])
    assert _wisdom.prefetch_from("avx2", "float64") is None
    _write_without("prefetch")  # the wisdom of a version before the prefetch was measured
    assert _wisdom.load() is not None and _wisdom.prefetch_from("avx2", "float64") is None


def _prefetch_probe(backend, seen):
    """``(prefetched, (W, X, y))``: ``prefetched(n, rows, dtype)`` calls ``backend`` on X's first ``n`` rows
    (or ``rows``) and returns the first thing its spy appended to ``seen`` (whether it prefetched)."""
    rng = np.random.default_rng(3)
    W, X, y = rng.standard_normal((40, 3)), rng.standard_normal((60, 40)), rng.integers(0, 3, 60)
    f = backends.get(backend)

    def prefetched(n=None, rows=None, dtype=np.float64):
        seen.clear()
        f(W.astype(dtype), X[:n].astype(dtype), y[:n], 0.1, rows=rows)
        return seen[0]

    return prefetched, (W, X, y)


def test_cython_prefetches_whole_tiles_from_the_measured_batch_size(monkeypatch):
    """The kernel prefetches whole tiles ahead from the batch size ``fastsoftmax tune`` found it faster,
    for the build and dtype that run (the batch: the rows given, else X's); never without wisdom;
    ``PREFETCH_TILE`` overrides both.  The training step's bound call decides once, for its batch size."""
    cython = pytest.importorskip("fastsoftmax.backends.cython")
    from fastsoftmax.backends._validate import prepare

    monkeypatch.setattr(cython, "BLOCKING", None)
    monkeypatch.setattr(cython, "PREFETCH_TILE", None)
    seen = []
    real_loss_grad, real_step = cython.fused_loss_grad, cython.sgd_step

    def spy(*args, prefetch_tile=False, **kw):
        seen.append(prefetch_tile)
        return real_loss_grad(*args, prefetch_tile=prefetch_tile, **kw)

    def spy_step(*args):
        seen.append(args[12])  # sgd_step(W, Wt, X, y, C, threads, isa, b, rows, out, tile, dchunk, prefetch, ...)
        return real_step(*args)

    monkeypatch.setattr(cython, "fused_loss_grad", spy)
    monkeypatch.setattr(cython, "sgd_step", spy_step)
    prefetched, (W, X, y) = _prefetch_probe("cython", seen)
    assert not prefetched()  # no wisdom: never
    _wisdom.save({}, [], prefetch={f"{cython.running_isa()}|float64": 50})
    assert [prefetched(49), prefetched(50), prefetched()] == [False, True, True]
    assert not prefetched(rows=np.arange(40))  # a batch of 40 rows of 60
    assert prefetched(rows=np.arange(55) % 7)  # 55 rows (of 7 distinct)
    assert not prefetched(dtype=np.float32)  # no entry for float32
    for batch, want in ((49, False), (50, True)):
        seen.clear()
        problem = prepare(W, X, y, 0.1, out=np.empty_like(W))
        cython.bind_sgd_step(problem, batch, 1, {})(np.arange(batch), 0.01)
        assert seen == [want], batch
    monkeypatch.setattr(cython, "PREFETCH_TILE", True)
    assert prefetched(5)
    monkeypatch.setattr(cython, "PREFETCH_TILE", False)
    assert not prefetched()


def test_numba_prefetches_whole_tiles_from_the_measured_batch_size(monkeypatch):
    """The Numba kernel prefetches whole tiles ahead from the batch size ``fastsoftmax tune`` saved under
    ``numba|dtype`` (the batch: the rows given, else X's); never without wisdom, nor from the C kernel's
    entry; ``PREFETCH_TILE`` overrides both."""
    from fastsoftmax.backends import numba

    monkeypatch.setattr(numba, "PREFETCH_TILE", None)
    seen = []
    real = numba._run_fused

    def spy(*args):
        seen.append(args[-1])  # pf, the last argument of _fused
        return real(*args)

    monkeypatch.setattr(numba, "_run_fused", spy)
    prefetched, _ = _prefetch_probe("numba", seen)
    assert not prefetched()  # no wisdom: never
    _wisdom.save({}, [], prefetch={"avx512|float64": 1, "avx2|float64": 1, "baseline|float64": 1})
    assert not prefetched()  # the C kernel's entries are not the Numba kernel's
    _wisdom.save({}, [], prefetch={"numba|float64": 50})
    assert [prefetched(49), prefetched(50), prefetched()] == [False, True, True]
    assert not prefetched(rows=np.arange(40)) and prefetched(rows=np.arange(55) % 7)
    assert not prefetched(dtype=np.float32)  # no entry for float32
    monkeypatch.setattr(numba, "PREFETCH_TILE", True)
    assert prefetched(5)
    monkeypatch.setattr(numba, "PREFETCH_TILE", False)
    assert not prefetched()


def test_tune_prefetch_keeps_the_whole_tile_only_from_where_it_is_faster_at_every_size(monkeypatch):
    """``tune_prefetch`` times both prefetches with the tuned chunk and saves the smallest band from which
    the whole tile won by ``GAIN`` at every larger measured size (ties keep the default)."""
    cython = pytest.importorskip("fastsoftmax.backends.cython")
    from fastsoftmax.harness import tune as tune_module

    isa = cython.running_isa()
    monkeypatch.setattr(cython, "BLOCKING", None)
    monkeypatch.setattr(cython, "PREFETCH_TILE", None)
    ran = []
    real = cython.fused_loss_grad

    def spy(Wt, X, y, C, n_threads, isa_, b, rows, out, tile, dchunk, prefetch_tile=False, **kw):
        ran.append((X.shape[0], dchunk, prefetch_tile))
        return real(Wt, X, y, C, n_threads, isa_, b, rows, out, tile, dchunk, prefetch_tile=prefetch_tile, **kw)

    monkeypatch.setattr(cython, "fused_loss_grad", spy)
    best, found = tune_module.tune_prefetch(("float64",), sizes=(30, 80), chunks={f"{isa}|float64": 2048},
                                            repeat=2, d=700, c=3, out=lambda line: None, warm_s=0.0,
                                            kernels=("cython",))
    # C = 3 padded to 5: 2048 bytes are 51 float64s, in 16s; both modes at both sizes, 2 rounds of 2 calls
    assert sorted(set(ran)) == [(30, 48, False), (30, 48, True), (80, 48, False), (80, 48, True)]
    assert len(ran) == 2 * 2 * 2 * 2 and [m["n"] for m in found] == [30, 80]
    assert set(best) == {f"{isa}|float64"} and best[f"{isa}|float64"] in (None, 1, 48)
    assert cython.BLOCKING is None and cython.PREFETCH_TILE is None
    # the verdict, from given medians: (start, whole) per size
    for medians, want in [({30: (1.0, 0.9), 80: (1.0, 0.9)}, 1), ({30: (1.0, 1.0), 80: (1.0, 0.9)}, 48),
                          ({30: (1.0, 0.9), 80: (1.0, 0.99)}, None), ({30: (1.0, 0.9), 80: (1.0, 1.2)}, None)]:
        assert _prefetch_verdict(monkeypatch, medians, "float64", "cython") == {f"{isa}|float64": want}, medians


def _prefetch_verdict(monkeypatch, medians, dtype, kernel):
    """What ``tune_prefetch`` saves for ``kernel`` at sizes 30 and 80 when the medians per size are
    ``medians[n] = (default, whole tile)``."""
    from fastsoftmax.harness import tune as tune_module

    times = iter(medians.values())
    monkeypatch.setattr(tune_module, "_medians", lambda calls, repeat, warm_s: dict(zip(("start", "tile"), next(times))))
    return tune_module.tune_prefetch((dtype,), sizes=(30, 80), repeat=1, d=700, c=3, out=lambda line: None,
                                     warm_s=0.0, kernels=(kernel,))[0]


def test_tune_prefetch_times_the_numba_kernel_both_ways(monkeypatch):
    """``tune_prefetch`` times the Numba kernel with and without the whole next tile at each size, restores
    ``PREFETCH_TILE``, and saves its verdict under ``numba|dtype``, by the same rule as the C kernel's."""
    from fastsoftmax.backends import numba
    from fastsoftmax.harness import tune as tune_module

    monkeypatch.setattr(numba, "PREFETCH_TILE", None)
    ran = _numba_calls(monkeypatch)
    lines = []
    best, found = tune_module.tune_prefetch(("float32",), sizes=(30, 80), repeat=2, d=700, c=3, out=lines.append,
                                            warm_s=0.0, kernels=("numba",))
    assert sorted(set(ran)) == [(30, False), (30, True), (80, False), (80, True)] and len(ran) == 16
    assert set(best) == {"numba|float32"} and best["numba|float32"] in (None, 1, 48)
    assert [(m["prefetch_isa"], m["n"]) for m in found] == [("numba", 30), ("numba", 80)]
    assert numba.PREFETCH_TILE is None and len(lines) == 3 and lines[0].startswith("numba float32 N=30 x1")
    for medians, want in [({30: (1.0, 0.9), 80: (1.0, 0.9)}, 1), ({30: (1.0, 1.1), 80: (1.0, 0.9)}, 48),
                          ({30: (1.0, 0.9), 80: (1.0, 0.99)}, None)]:
        assert _prefetch_verdict(monkeypatch, medians, "float32", "numba") == {"numba|float32": want}, medians
