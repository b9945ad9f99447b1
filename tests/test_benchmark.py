"""The benchmark harness: ``fastsoftmax bench`` and ``bench/`` check before they time.

Every run here uses a small batch (``--sizes 64`` or N = 500 only where the
pytest harness decides) so the whole file takes seconds, not minutes.
"""

import json
import os
import platform
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from fastsoftmax import backends, cli
from fastsoftmax.harness import agreement, peers
from fastsoftmax.harness.compile import fresh_numba_backend
from fastsoftmax.harness.inputs import case_data
from fastsoftmax.harness.memory import peak_extra_memory
from fastsoftmax.harness.report import write_json
from fastsoftmax.harness.rows import setup_row
from fastsoftmax.backends._validate import prepare
from fastsoftmax.harness.cases import CASES, Case
from fastsoftmax.training.data import load_cifar10
from fastsoftmax.testing import compare, write_fake_cifar10

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOG_BYTES = 48 * 2**20


def bench_module(filename):
    """A file of ``bench/`` (a script, or its conftest) imported as a module, to call its functions."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"bench_{filename.removesuffix('.py')}",
                                                  os.path.join(ROOT, "bench", filename))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def wrong_kernel(problem, n_threads):
    """A deliberately wrong backend: the gradient misses its L2 term."""
    loss, dW, db = backends.get_kernel("numpy")(problem, n_threads)
    return loss, dW - (2.0 * problem.reg) * problem.W, db


def hog_kernel(problem, n_threads):
    """A correct backend that also touches a 48 MiB temporary (for the memory probe)."""
    waste = np.ones(HOG_BYTES // 8)
    waste[::512] = 2.0
    return backends.get_kernel("numpy")(problem, n_threads)


@pytest.fixture
def registered():
    """Register test backends; always unregister them."""
    names = []

    def add(name, kernel):
        backends.register(name, kernel)
        names.append(name)

    yield add
    for name in names:
        backends.unregister(name)


def test_cli_quick_json_has_a_verdict_per_backend(tmp_path, capsys):
    path, png = tmp_path / "bench.json", tmp_path / "bench.png"
    status = cli.main(["bench", "--quick", "--sizes", "64", "--dtypes", "float64", "--repeat", "2",
                       "--no-peers", "--json", str(path), "--plot", str(png)])
    out = capsys.readouterr().out
    assert status == 0, out
    payload = json.loads(path.read_text())
    assert payload["machine"]["cores"] >= 1 and payload["machine"]["libraries"]["numpy"]
    records = payload["records"]
    by_name = {r["backend"]: r for r in records if r["kind"] == "backend"}
    assert set(by_name) == set(backends.available())
    for name, r in by_name.items():
        assert r["median_s"] > 0 and len(r["times_s"]) == 2, name
        assert r["verdict"] == ("REF" if name == "python" else "PASS"), name
        assert r["peak_extra_memory_bytes"] is not None, r
        assert r["case"] == "N=64|float64" and (r["n"], r["d"], r["c"]) == (64, 3073, 10)
    floor = next(r for r in records if r["backend"] == "stream X")
    assert floor["median_s"] > 0 and "verdict" not in floor
    assert by_name["numpy"]["speedup_vs_numpy"] == pytest.approx(1.0)
    assert payload["floor_check"]["checks"][0]["l2_block_gbs"] > 0
    assert "textbook" in out and "stream X" in out and "N=64|float64" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Exactly the two outputs: no temporary file of atomic_write (".bench.json.*.tmp") left behind.
    assert sorted(os.listdir(tmp_path)) == ["bench.json", "bench.png"]


def test_cli_fails_naming_a_wrong_backend(registered, tmp_path, capsys):
    registered("wrong", wrong_kernel)
    status = cli.main(["bench", "--sizes", "64", "--dtypes", "float32", "--backends", "numpy,wrong",
                       "--repeat", "1", "--no-peers", "--no-memory", "--json", str(tmp_path / "b.json")])
    out = capsys.readouterr().out
    assert status == 1
    assert "FAIL: disagree with the reference or crashed: wrong on N=64|float32" in out
    records = json.loads((tmp_path / "b.json").read_text())["records"]
    verdicts = {r["backend"]: r["verdict"] for r in records if "verdict" in r}
    assert verdicts["wrong"] == "FAIL" and verdicts["numpy"] == "PASS"


def test_pytest_harness_fails_naming_a_wrong_backend(tmp_path):
    (tmp_path / "wrong_plugin.py").write_text(
        "from fastsoftmax import backends\n"
        "from test_benchmark import wrong_kernel\n"
        "backends.register('wrong', wrong_kernel)\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.path.join(ROOT, "tests")]))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "bench", "-p", "wrong_plugin", "-k", "wrong and float32",
         "-q", "--no-header", "-p", "no:cacheprovider"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "backend 'wrong' disagrees with the reference (python) on N=500|float32" in proc.stdout


def test_memory_probe_sees_a_temporary(registered):
    registered("hog", hog_kernel)
    mem = peak_extra_memory(Case(64, dtype="float64"), ["numpy", "hog"], threads=1)
    assert "_error" not in mem, mem
    # RSS is read from per-thread counters that Linux batches (up to 64 pages
    # per thread before they reach VmRSS/VmHWM), so the probe can see a few
    # pages less than was touched: it measured 16 KiB short in 1 of ~12 runs.
    # 1 MiB of slack still leaves a 48 MiB temporary unmistakable.
    assert HOG_BYTES - 2**20 <= mem["hog"] < HOG_BYTES + 8 * 2**20
    assert mem["numpy"] < 4 * 2**20


def test_memory_probe_counts_the_buffers_a_kernel_keeps():
    """The kept scratch (W's padded copy, the accumulators) is a call's memory, though a repeated call reuses it."""
    pytest.importorskip("fastsoftmax.backends.cython")
    case = Case(64, dtype="float64")
    mem = peak_extra_memory(case, ["cython"], threads=1)
    assert "_error" not in mem, mem
    w_bytes = case.d * case.c * 8
    assert 2 * w_bytes <= mem["cython"] < 8 * w_bytes   # W.T padded, one accumulator; O(threads * D * C)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_blocked_reference_matches_python(monkeypatch, dtype):
    """Above PYTHON_MAX_WORK the reference is blocked float64 NumPy: check it against python."""
    monkeypatch.setattr(agreement, "BLOCK_ROWS", 128)  # several blocks, the last one partial
    monkeypatch.setattr(agreement, "PYTHON_MAX_WORK", 0)
    case = Case(600, d=40, c=7, dtype=dtype)
    problem = prepare(*case.make())
    name, ref = agreement.reference(*problem.args)
    assert name == "float64 NumPy, blocked"
    result = compare(ref, backends.get("python")(*problem.args), dtype)
    assert result.ok, result


def test_every_row_agrees_on_a_small_case():
    """The yardstick and peers follow our convention (reg * ||W||^2, mean loss)."""
    case = Case(50, d=30, c=5)
    problem = prepare(*case.make())
    ref = agreement.reference(*problem.args)[1]
    for name in peers.ROWS:
        if peers.row_status(name) is None:
            result = setup_row(name, problem, 1)[0]()
            assert result is None or compare(result, ref, np.float64).ok, name


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("n", [1, 2, 7, 1000])
def test_stream_yardstick_reads_every_element_once(threads, n):
    """``stream X`` on any thread count sums every element exactly once (slices cover X, no overlap).

    Also with more slices than elements, and than Numba has threads (they share them).
    """
    flat = np.arange(1, n + 1, dtype=np.float64)  # sums of small integers: exact in any order
    expected = n * (n + 1) / 2
    if threads == 1:
        assert peers._stream()(flat, 0, n, 2) == 2 * expected
    else:
        assert peers._stream(parallel=True)(flat, threads, 2) == 2 * expected
    peers._stream_call(flat, threads)()  # the callable the roofline times runs too


def test_data_dir_reads_official_batches_and_repeats_them(tmp_path):
    root = write_fake_cifar10(tmp_path / "cifar", n=1)  # 6 images, one per file
    (W, X, y, reg), source = case_data(Case(7, dtype="float32"), str(root))
    assert X.shape == (7, 3073) and X.dtype == np.float32 and W.shape == (3073, 10)
    _, y_train, _, y_test, _ = load_cifar10(root)
    expected = y_train.tolist() + y_test.tolist()
    assert y.tolist() == expected + expected[:1]  # 6 images, cycled to 7 rows
    np.testing.assert_array_equal(X[:, -1], 1.0)
    np.testing.assert_allclose(X[:, :-1].mean(axis=0), 0.0, atol=1e-4)
    assert "6 images, repeated cyclically to 7 rows" in source
    with pytest.raises(FileNotFoundError, match="does not exist"):
        case_data(Case(7), str(tmp_path / "empty"))


def test_cli_on_real_cifar(cifar_root, capsys):
    status = cli.main(["bench", "--sizes", "64", "--dtypes", "float32", "--backends", "numpy",
                       "--no-peers", "--no-memory", "--repeat", "1", "--data", str(cifar_root)])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "real CIFAR-10" in out and "PASS" in out


def test_cli_rejects_bad_options(capsys):
    for argv in (["bench", "--backends", "nope"], ["bench", "--threads", "0"], ["bench", "--repeat", "0"],
                 ["bench", "--dtypes", "int8"]):
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        assert exc.value.code == 2, argv
    assert "unknown backend(s) ['nope']" in capsys.readouterr().err


def test_json_write_is_atomic(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("old")
    with pytest.raises(TypeError):
        write_json(str(path), {"bad": object()})
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["out.json"]


def test_fresh_numba_backend_has_nothing_compiled(tmp_path):
    if "numba" not in backends.available():
        pytest.skip(backends.unavailable()["numba"])
    import numba.core.registry

    module = fresh_numba_backend(str(tmp_path))
    jitted = [v for v in vars(module).values() if isinstance(v, numba.core.registry.CPUDispatcher)]
    assert jitted and all(not d.signatures for d in jitted)
    original = sys.modules[backends.BACKENDS["numba"]]
    assert all(d is not getattr(original, d.__name__, None) for d in jitted)


def test_bench_harness_uses_the_shared_case_table():
    bench_conftest = bench_module("conftest.py")
    params = bench_conftest.case_setup._fixture_function_marker.params
    assert tuple(params) == CASES


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the memory probe needs Linux /proc")
def test_memory_probe_ignores_a_source_checkout_in_the_working_directory(tmp_path, monkeypatch):
    """Run from a repository root after `pip install .`, the probe must import the installed package."""
    shadow = tmp_path / "fastsoftmax"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise ImportError('imported the checkout, not the install')\n")
    monkeypatch.chdir(tmp_path)
    mem = peak_extra_memory(Case(64), ["numpy"], 1)
    assert "_error" not in mem, mem.get("_error")
    assert mem["numpy"] >= 0


# --- the README's results table (generated by `fastsoftmax report`) -------


def test_readme_results_table_is_what_docs_bench_json_gives():
    """The README's table cannot drift from the run it documents.

    Fix a failure with ``fastsoftmax report docs/bench.json --readme README.md``.
    """
    from fastsoftmax.harness.report import documented_results_table, results_table

    with open(os.path.join(ROOT, "docs", "bench.json"), encoding="utf-8") as f:
        payload = json.load(f)
    documented = documented_results_table(os.path.join(ROOT, "README.md"))
    assert documented is not None, "README.md lacks the results-table markers"
    assert documented == results_table(payload), (
        "README's results table is stale; run `fastsoftmax report docs/bench.json --readme README.md`"
    )


def _record(backend, case, threads, median_s, kind="backend", **extra):
    return {"backend": backend, "kind": kind, "threads": threads, "case": case, "status": "ok",
            "median_s": median_s, **extra}


def test_results_table_marks_fastest_skips_and_failures():
    from fastsoftmax.harness.report import results_table

    payload = {
        "machine": {"cpu": "Test CPU", "cores": 2, "libraries": {"numpy": "9.9"}},
        "records": [
            _record("cython", "N=64|float64", 1, 0.002, verdict="PASS"),
            _record("numpy", "N=64|float64", 1, 0.001, verdict="FAIL"),  # faster but wrong: not bold
            _record("numba", "N=64|float64", 1, 0.003, verdict="PASS"),
            {"backend": "python", "kind": "backend", "threads": 1, "case": "N=64|float64",
             "status": "skipped", "reason": "too slow"},
            _record("stream X", "N=64|float64", 1, 0.0001, kind="yardstick"),  # faster, not a backend
        ],
    }
    lines = results_table(payload).splitlines()
    assert lines[0].startswith("Median time per call on Test CPU, 2 cores (numpy 9.9); FAIL: numpy (N=64|float64).")
    assert lines[2] == "| row | N=64 float64 |"  # '|' in the case name would split the cell
    assert lines[4:] == [
        "| cython | **2 ms** |",
        "| numpy | FAIL |",
        "| numba | 3 ms |",
        "| python | skip |",
        "| stream X | 0.1 ms |",
    ]


def test_report_command_rewrites_only_between_the_markers(tmp_path, capsys):
    from fastsoftmax.harness.report import RESULTS_BEGIN, RESULTS_END

    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"machine": {}, "records": [_record("numpy", "N=1|float64", 1, 1.5, verdict="PASS")]}))
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\n{RESULTS_BEGIN}\nold table\n{RESULTS_END}\n\nafter\n")
    assert cli.main(["report", str(bench), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith(f"# Title\n\n{RESULTS_BEGIN}\nMedian time per call")
    assert "| numpy | **1.5 s** |\n" + RESULTS_END + "\n\nafter\n" in text and "old table" not in text
    assert cli.main(["report", str(bench), "--readme", str(readme)]) == 0
    assert "unchanged" in capsys.readouterr().out and readme.read_text() == text
    assert sorted(os.listdir(tmp_path)) == ["README.md", "bench.json"]
    assert cli.main(["report", str(bench)]) == 0
    assert capsys.readouterr().out == text.split(RESULTS_BEGIN + "\n")[1].split(RESULTS_END)[0]


def test_report_command_draws_the_chart_from_the_json(tmp_path, capsys, monkeypatch):
    """`fastsoftmax report --plot` redraws a run's chart from its JSON: a panel per case, legend beside it."""
    from matplotlib.colors import to_rgba

    from fastsoftmax.harness.report import write_plot
    from fastsoftmax.training import visualize

    records = [_record("numpy", "N=1|float64", 1, 0.0015, verdict="PASS", d=7, c=3, t_star_s=0.001),
               _record("stream X", "N=1|float64", 1, 0.0002, kind="yardstick"),
               _record("numpy", "N=2|float32", 1, 0.002, verdict="FAIL")]
    bench, png = tmp_path / "bench.json", tmp_path / "chart.png"
    bench.write_text(json.dumps({"machine": {}, "records": records}))
    assert cli.main(["report", str(bench), "--plot", str(png)]) == 0
    assert capsys.readouterr().out == f"wrote {png}\n"  # the chart only: no table printed
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    bad = tmp_path / "bad.json"
    bad.write_text('{"records": []}')
    with pytest.raises(SystemExit):
        cli.main(["report", str(bad), "--plot", str(tmp_path / "bad.png")])
    assert "no 'records'" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["bad.json", "bench.json", "chart.png"]  # nothing for bad input

    figures = []
    monkeypatch.setattr(visualize, "_save", lambda fig, path: figures.append(fig))
    write_plot(tmp_path / "unused.png", records)
    fig = figures[0]
    fig.canvas.draw()
    first, second = [ax for ax in fig.axes if ax.get_visible()]
    assert [first.get_title(), second.get_title()] == ["N=1|float64  (D=7, C=3)", "N=2|float32"]
    legend = first.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["stream X once: 0.2 ms", "roofline T*: 1 ms"]
    assert legend.get_window_extent().x0 >= first.get_window_extent().x1  # beside the bars, not over them
    assert second.patches[0].get_facecolor() == to_rgba("tab:red")         # a FAIL row shows
    labels = [t.get_text() for t in first.get_xticklabels() if t.get_text()]
    assert labels and all(float(t) > 0 for t in labels)                    # plain numbers on the log axis


@pytest.mark.parametrize(
    "bench_text, readme_text, message",
    [
        ('{"records": []}', "", "no 'records'"),
        ("not json", "", "Expecting value"),
        ('{"records": [{"backend": "numpy"}]}', "", "benchmark record without"),
        (None, "", "No such file"),
        ('{"records": [{"backend": "numpy", "kind": "backend", "threads": 1, "case": "c", "status": "ok", '
         '"median_s": 1.0}]}', "no markers here\n", "must hold each results-table marker exactly once"),
    ],
    ids=["no-records", "not-json", "incomplete-record", "missing-file", "no-markers"],
)
def test_report_command_refuses_bad_input_clearly(tmp_path, capsys, bench_text, readme_text, message):
    bench = tmp_path / "bench.json"
    if bench_text is not None:
        bench.write_text(bench_text)
    readme = tmp_path / "README.md"
    readme.write_text(readme_text)
    with pytest.raises(SystemExit) as exc:
        cli.main(["report", str(bench), "--readme", str(readme)])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert readme.read_text() == readme_text  # nothing half-written


def test_roofline_in_table_and_json(tmp_path, capsys, monkeypatch):
    """Each row gets % of roofline against R_gemm and R_stream of the same run; the pick is marked."""
    from fastsoftmax.harness import roofline

    monkeypatch.setattr(roofline, "GEMM_N", 256)  # a small GEMM: this test checks the bookkeeping
    path = tmp_path / "bench.json"
    picked = backends.fastest("float32", 64, threads=1)
    rows = ",".join(dict.fromkeys(["numpy", "python", picked]))
    status = cli.main(["bench", "--sizes", "64", "--dtypes", "float32", "--repeat", "2", "--threads", "1",
                       "--no-peers", "--no-memory", "--backends", rows, "--json", str(path)])
    out = capsys.readouterr().out
    assert status == 0, out
    records = json.loads(path.read_text())["records"]
    for r in records:
        assert r["r_gemm_gflops"] > 0 and r["r_stream_gbs"] > 0 and r["roof_bound"] in ("gemm", "stream")
        t_star = max(r["n"] * r["d"] * r["c"] * 4 / (r["r_gemm_gflops"] * 1e9),
                     r["n"] * r["d"] * 4 / (r["r_stream_gbs"] * 1e9))
        assert r["t_star_s"] == pytest.approx(t_star)
        assert r["picked"] == (r["backend"] == picked)
        if r["backend"] != "stream X":
            assert r["roofline_pct"] == pytest.approx(100 * t_star / r["median_s"])
    floor = next(r for r in records if r["backend"] == "stream X")
    assert floor["r_stream_gbs"] == pytest.approx(64 * 3073 * 4 / floor["median_s"] / 1e9)
    assert "% roof" in out and "roofline x1: R_gemm" in out and "*: the backend" in out
    assert any(line.startswith(f"{picked} *") for line in out.splitlines())


def test_a_gemm_yardstick_of_another_instruction_set_is_flagged(tmp_path, capsys, monkeypatch):
    """OpenBLAS held to AVX2 under an AVX-512 kernel (or the reverse) is said in the table and the JSON.

    Seen on a Zen 5 whose environment set OPENBLAS_CORETYPE=Haswell for
    every process: the AVX-512 kernel read 125 % of an AVX2 "roofline".
    """
    from fastsoftmax.harness import roofline

    assert roofline.blas_isa(["SkylakeX"]) == ("avx512", "SkylakeX")
    assert roofline.blas_isa(["Zen"]) == ("avx2", "Zen")
    assert roofline.blas_isa(["Haswell", "SkylakeX"]) == (None, "Haswell, SkylakeX")  # two BLAS: no verdict
    assert roofline.blas_isa(["neoversen1"]) == (None, "neoversen1")
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    low = roofline.yardstick_check("avx512", ("avx2", "Haswell"))
    assert "too high" in low and "unset OPENBLAS_CORETYPE (it is 'Haswell' here)" in low
    assert "FASTSOFTMAX_ISA=avx2" in low
    assert "too low" in roofline.yardstick_check("avx2", ("avx512", "SkylakeX"))
    for kernel, blas in (("avx2", ("avx2", "Haswell")), ("avx512", (None, "neoversen1")), (None, ("avx2", "Zen"))):
        assert roofline.yardstick_check(kernel, blas) is None
    # Numba's target is checked too, and told how to hold it to AVX2 (its CPU name alone does not)
    assert roofline.yardstick_check("avx2", ("avx2", "Haswell"), "avx2") is None
    numba_high = roofline.yardstick_check("avx2", ("avx2", "Haswell"), "avx512")
    assert "Numba's code is avx512" in numba_high and "too high" in numba_high
    assert "NUMBA_CPU_NAME=haswell NUMBA_CPU_FEATURES=" in numba_high and "\n" not in numba_high
    both = roofline.yardstick_check("avx512", ("avx2", "Haswell"), "avx512").splitlines()
    assert len(both) == 2 and "C kernel" in both[0] and "Numba" in both[1]

    cython = pytest.importorskip("fastsoftmax.backends.cython")  # a kernel build to compare with
    core = ("avx512", "SkylakeX") if cython.running_isa() != "avx512" else ("baseline", "Core2")
    monkeypatch.setattr(roofline, "GEMM_N", 64)
    monkeypatch.setattr(roofline, "blas_isa", lambda cores=None: core)
    path = tmp_path / "bench.json"
    assert cli.main(["bench", "--sizes", "64", "--dtypes", "float64", "--repeat", "1", "--threads", "1",
                     "--no-peers", "--no-memory", "--backends", "numpy", "--json", str(path)]) == 0
    warning = json.loads(path.read_text())["machine"]["isa"]["yardstick"]
    assert warning.startswith(f"WARNING: the GEMM yardstick runs OpenBLAS's {core[1]} ({core[0]}) kernels")
    assert warning in capsys.readouterr().out


def test_roofline_script_times_every_row_in_warm_rotated_blocks(monkeypatch):
    """bench/roofline.py: the yardsticks and the backends each get ``rounds * per_block`` samples.

    Each from a block that starts with an untimed call, and round by round
    another row runs first (see fastsoftmax.harness.timing for why).
    """
    import types

    script = bench_module("roofline.py")
    calls = []

    def fake_kernel(name):
        return lambda problem, n_threads: calls.append(name)

    class Matrix(np.ndarray):  # A @ B records the GEMM instead of running it
        def __matmul__(self, other):
            calls.append("gemm")

    monkeypatch.setattr(script.backends, "get_kernel", fake_kernel)
    monkeypatch.setattr(script, "_stream_call", lambda flat, threads: lambda: calls.append("stream"))
    class Rng:
        def standard_normal(self, shape):
            return np.zeros(shape).view(Matrix)

    fake_np = types.SimpleNamespace(random=types.SimpleNamespace(default_rng=lambda seed: Rng()),
                                    ascontiguousarray=np.ascontiguousarray)
    monkeypatch.setattr(script, "np", fake_np)
    names = ["numpy", "cython"]
    times, flops, nbytes = script.measure(8, "float64", 1, names, rounds=3, per_block=2, warm_s=0.0, d=16, c=3)
    assert {k: len(v) for k, v in times.items()} == {"gemm": 6, "stream": 6, "numpy": 6, "cython": 6}
    rows = ["gemm", "stream", "numpy", "cython"]
    blocks = [calls[i:i + 3] for i in range(0, len(calls), 3)]  # one untimed, two timed calls each
    assert all(len(set(block)) == 1 for block in blocks) and len(blocks) == 12
    assert [b[0] for b in blocks] == rows + rows[1:] + rows[:1] + rows[2:] + rows[:2]
    assert flops == 4 * 8 * 16 * 3 and nbytes == 8 * 16 * 8


def _small_pool():
    """(W, X, y) of a small problem for bench/fresh_rows.py: 60 rows of D = 32 to draw batches of 10 from, C = 4."""
    rng = np.random.default_rng(0)
    return rng.standard_normal((32, 4)), rng.standard_normal((60, 32)), rng.integers(0, 4, 60)


@pytest.mark.parametrize("name", ["cython", "numba"])
def test_fresh_rows_script_times_every_source_of_rows(name):
    """bench/fresh_rows.py: every row gets one call per round, drawn as its docstring says."""
    if name not in backends.available():
        pytest.skip(f"{name} is not available here")
    script = bench_module("fresh_rows.py")
    arrays = _small_pool()
    result = script.measure(threads=1, repeat=3, pools=(10, 60), backend=name, arrays=arrays, batch=10)
    assert result["backend"] == name
    labels = ["gathered", "same rows", "random / 10", "random / 60", "block / 10", "block / 60"]
    assert list(result["rows"]) == labels
    assert all(len(ts) == 3 and min(ts) > 0 for ts in result["rows"].values())
    table = script.format_table(result, "float64", 1).splitlines()
    assert len(table) == 7 and table[1].split()[-1] == "1.000x"
    random = script.batches("random", 10, 50, 10, np.random.default_rng(1))
    assert all(sorted(r) == list(range(10)) for r in random)  # distinct rows of the pool
    block = script.batches("block", 60, 50, 10, np.random.default_rng(1))
    assert all(np.array_equal(b, np.arange(b[0], b[0] + 10)) and 0 <= b[0] <= 50 for b in block)


def test_fresh_rows_script_refuses_a_kernel_whose_rows_differ(monkeypatch):
    """bench/fresh_rows.py checks rows= against the gathered copy before it times anything."""
    script = bench_module("fresh_rows.py")
    numpy_kernel = backends.get_kernel("numpy")

    def off_with_rows(problem, n_threads):
        loss, dW, db = numpy_kernel(problem, n_threads)
        return (loss + 1.0 if problem.rows is not None else loss), dW, db

    monkeypatch.setattr(script.backends, "get_kernel", lambda name: off_with_rows)
    arrays = _small_pool()
    with pytest.raises(AssertionError, match="same rows: rows= differs"):
        script.measure(repeat=2, pools=(10,), backend="numpy", arrays=arrays, batch=10)


@pytest.mark.skipif(shutil.which("gcc") is None, reason="bench/kernel_ab.py compiles with gcc")
@pytest.mark.parametrize("where", ["l2", "fresh"])
def test_kernel_ab_script_builds_variants_and_checks_their_bits(capsys, where):
    """bench/kernel_ab.py: variants are compiled, compared bit for bit with the first, then timed."""
    script = bench_module("kernel_ab.py")
    isa = os.environ.get("FASTSOFTMAX_ISA") or "baseline"
    script.main(["", "T=20 Dc=32", "-DFS_SKIP_GRAD", "PF=1", "-funroll-loops", "--n", "60", "--repeat", "1",
                 "--gemm-n", "64", "--isa", isa, "--where", where])
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[-1] == "reference"
    assert out[1].endswith("same")  # blocking never changes the bits
    assert "differs" in out[2]      # a kernel without its gradient pass does
    assert out[3].startswith("PF=1") and out[3].endswith("same")  # nor does the whole-tile prefetch
    assert out[4].split()[0] == "-funroll-loops" and out[4].endswith("same")  # nor a gcc flag that keeps the order
    assert len(out) == 11 and all("% of GEMM" in line for line in out[6:])


@pytest.mark.skipif(shutil.which("gcc") is None, reason="bench/kernel_ab.py compiles with gcc")
def test_kernel_ab_control_times_the_first_variant_twice(capsys):
    """--control: a second build of the first variant, same bits, timed last, and the two times' distance printed."""
    script = bench_module("kernel_ab.py")
    isa = os.environ.get("FASTSOFTMAX_ISA") or "baseline"
    script.main(["PF=1", "T=20", "--control", "--n", "30", "--repeat", "2", "--gemm-n", "64", "--isa", isa])
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 8
    assert out[2].startswith("PF=1 (control)") and out[2].endswith("same")
    assert [line.split()[0] for line in out[4:7]] == ["PF=1", "T=20", "PF=1"] and "(control)" in out[6]
    assert out[7].startswith("control: the first variant built twice, ")
    assert float(out[7].split(", ")[1].split(" % apart")[0]) >= 0
    script.main(["PF=1", "--n", "30", "--repeat", "1", "--gemm-n", "64", "--isa", isa])
    assert "control" not in capsys.readouterr().out  # only when asked
    assert script.apart(2.0, 2.1) == pytest.approx(5.0) == script.apart(2.1, 2.0)  # % of the shorter time


@pytest.mark.skipif(shutil.which("gcc") is None, reason="bench/kernel_ab.py compiles with gcc")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_kernel_ab_pad_moves_the_rows_apart_and_keeps_the_bits(tmp_path, capsys, dtype):
    """--pad K: the same values with rows D + K apart; the kernel reads them in place, to the same bits."""
    script = bench_module("kernel_ab.py")
    isa = os.environ.get("FASTSOFTMAX_ISA") or "baseline"
    plain, padded = (script.problem(47, np.dtype(dtype), "mem", pad=pad) for pad in (0, 16))
    assert padded["X"].strides == ((3073 + 16) * padded["X"].itemsize, padded["X"].itemsize)
    np.testing.assert_array_equal(padded["X"], plain["X"])
    lib = script.build([], script.HEADERS, str(tmp_path), 0)
    want, got = (script.caller(lib, script.ISAS[isa], p, 20, 64, 1)() for p in (plain, padded))
    assert got[0] == want[0]
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[2], want[2])
    script.main(["", "--pad", "16", "--n", "20", "--repeat", "1", "--gemm-n", "64", "--isa", isa])
    assert "X in mem (rows 3089 apart)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as bad:
        script.main(["", "--pad", "-1"])
    assert bad.value.code == 2 and "--pad must be >= 0, got -1" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("gcc") is None, reason="bench/kernel_ab.py compiles with gcc")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_scalar_build_of_the_c_kernel_computes_the_loss_and_gradient(tmp_path, dtype):
    """-DFS_NO_VECTOR_EXT (the body compilers without vector extensions, MSVC, get) compiles and is right.

    The vector builds never run that path, so it is compiled here with GCC
    and checked, with the vector baseline build, against the ``numpy``
    backend in float64 (the kernel returns sums over the rows: the backend's
    means times N, with a zero bias for the bias sums).
    Tolerances: float64 sums of ~40 terms of O(1) products, 1e-12 of the
    largest element; float32 the same sums rounded at 2**-24 each, 1e-5.
    """
    script = bench_module("kernel_ab.py")
    p = script.problem(23, np.dtype(dtype), "l2", d=37, c=7, cp=10)   # D, N, C off every block size
    Xr = p["X"][p["rows"]].astype(np.float64)
    y = p["y"][p["rows"]]
    loss, dW, db = backends.get("numpy")(p["Wt"][:7, :37].T.astype(np.float64), Xr, y, 0.0, b=np.zeros(7))
    loss, G, gb = loss * 23, dW.T * 23, db * 23
    tol = 1e-12 if dtype == "float64" else 1e-5
    for i, flags in enumerate([[], ["-DFS_NO_VECTOR_EXT"]]):
        lib = script.build(flags, script.HEADERS, str(tmp_path), i)
        got_loss, got_G, got_gb = script.caller(lib, script.ISAS["baseline"], p, 10, 16, 0)()
        assert abs(got_loss - loss) <= tol * abs(loss), flags
        np.testing.assert_allclose(got_G[:7, :37], G, rtol=0, atol=tol * np.abs(G).max(), err_msg=str(flags))
        assert not got_G[7:].any() and not got_G[:, 37:].any(), flags   # padding stays zero
        np.testing.assert_allclose(got_gb[:7], gb, rtol=0, atol=tol * len(y), err_msg=str(flags))


def _build_bench_c(tmp_path, source, *flags, opt="-O2"):
    """Compile ``bench/<source>`` warning-free with ``flags``; return the executable's path."""
    exe = tmp_path / source.removesuffix(".c")
    build = subprocess.run(["gcc", opt, "-Wall", "-Werror", *flags, os.path.join(ROOT, "bench", source), "-o", str(exe)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    return str(exe)


def _run_ok(*command):
    """Run a command (60 s at most) that must exit 0; return its standard output."""
    run = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return run.stdout


@pytest.mark.skipif(shutil.which("gcc") is None or platform.machine() not in ("x86_64", "AMD64"),
                    reason="bench/fma_peak.c is x86-64 code built with gcc")
def test_fma_peak_builds_and_float32_doubles_float64(tmp_path):
    """bench/fma_peak.c (round 20's FMA peak) compiles warning-free and measures both dtypes.

    Built for the x86-64 baseline (16-byte vectors): a vector holds twice
    as many float32 lanes, so float32's rate is about twice float64's; the
    band is wide for a shared machine (best of five short runs each).
    """
    exe = _build_bench_c(tmp_path, "fma_peak.c")
    out = _run_ok(exe, "2000000")
    found = re.fullmatch(r"16-byte vectors: float64 ([0-9.]+) GFLOP/s, float32 ([0-9.]+) GFLOP/s \(one thread, best of 5\)\n",
                         out)
    assert found, out
    f64, f32 = float(found.group(1)), float(found.group(2))
    assert f64 > 0 and 1.3 < f32 / f64 < 3.0, out
    bad = subprocess.run([exe, "0"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "usage" in bad.stderr


@pytest.mark.skipif(shutil.which("gcc") is None, reason="bench/prefetch_level.c is built with gcc")
def test_prefetch_level_builds_and_times_each_hint(tmp_path):
    """bench/prefetch_level.c (round 21: which cache a prefetch fills) compiles warning-free and times six cases.

    Only the form is asserted: the latencies, and so the verdict, are the
    CPU's (a loaded line is in L1, so it is not slower than one left in L2,
    within a shared machine's noise).
    """
    *cases, verdict = _run_ok(_build_bench_c(tmp_path, "prefetch_level.c")).splitlines()
    ns = {}
    for line in cases:
        found = re.fullmatch(r"(.+?) +([0-9.]+) ns per load", line)
        assert found, line
        ns[found.group(1)] = float(found.group(2))
    assert len(ns) == 6 and all(v > 0 for v in ns.values())
    assert ns["loads (the lines in L1)"] <= 1.5 * ns["nothing (the lines in L2)"]
    assert re.fullmatch(r"locality 2 \(T1\) fills L1: (yes|no)", verdict)


@pytest.mark.skipif(shutil.which("gcc") is None, reason="bench/stream_fma_bound.c is built with gcc")
@pytest.mark.parametrize("dtype, pad", [("float64", 0), ("float32", 0), ("float32", 16)])
def test_stream_fma_bound_builds_and_times_every_read_order(tmp_path, dtype, pad):
    """bench/stream_fma_bound.c (docs/kernels.md's upper bounds) compiles warning-free and times its 19 cases.

    Built for the x86-64 baseline (no -march): 32-byte vectors, so the
    20-accumulator "two whole rows with W" case (AVX-512 only) is left out.
    -DFS_PAD=K moves X's rows K elements further apart (round 21's L1 set
    aliasing); N = 40 so that the tiles of 40 rows run too.
    """
    flags = (["-DFS_FLOAT32"] if dtype == "float32" else []) + ([f"-DFS_PAD={pad}"] if pad else [])
    exe = _build_bench_c(tmp_path, "stream_fma_bound.c", *flags, opt="-O3")
    lines = _run_ok(exe, "40").splitlines()
    assert lines[0].startswith(f"N = 40, D = 3073, rows {3073 + pad} apart, {dtype}")
    rates = [float(line.split()[-2]) for line in lines[1:]]   # GFLOP/s: > 0 only if a case ran rows
    assert len(rates) == 19 and all(r > 0 for r in rates)
    assert sum("two passes" in line for line in lines) == 14
    assert sum("W loaded" in line for line in lines) == 7
    assert sum("whole next tile, tiles of" in line for line in lines) == 2
    # batch mode: 20 fresh rows drawn from 300 per call against a gathered batch of 20
    lines = _run_ok(exe, "20", "300", "3").splitlines()
    assert lines[0].startswith(f"batch of 20 rows from 300, {dtype}") and "median of 3 calls" in lines[0]
    assert lines[1].startswith("gathered batch") and lines[2].startswith("fresh rows")
    assert float(lines[1].split()[2]) > 0 and float(lines[2].split()[2]) > 0
    assert lines[3].startswith("fresh / gathered") and float(lines[3].split()[-1]) > 0
