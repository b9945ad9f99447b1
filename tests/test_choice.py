"""The measured choice of backend: ``fastsoftmax tune`` wisdom, read by ``fastest``, static fallback."""

import json
import subprocess
import sys

import numpy as np
import pytest

import fastsoftmax
from fastsoftmax import backends
from fastsoftmax.backends import _wisdom


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
                        out=lines.append)
    assert path == _wisdom.wisdom_path() and len(lines) == 2
    assert set(orders) == {"float32|1|1", "float32|1|22"}
    for order in orders.values():
        assert order[-1] == "python" and set(order) == set(backends.available())
    _wisdom.forget()
    assert backends.fastest("float32", 64, threads=1) == orders["float32|1|22"][0]


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
    assert '"float64|1|1"' in capsys.readouterr().out
