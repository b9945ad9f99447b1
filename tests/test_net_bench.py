"""The net's rows in ``fastsoftmax bench``: checked against the reference, timed beside the GEMM yardstick."""

import json

import numpy as np
import pytest

from fastsoftmax import backends, cli
from fastsoftmax.backends._validate import prepare_net
from fastsoftmax.harness import net as harness_net


def test_net_cases_are_the_issues():
    assert {(c.n, c.d, c.h, c.c, c.dtype) for c in harness_net.NET_CASES} == {
        (n, 3073, 100, 10, dt) for n in (500, 10000) for dt in ("float64", "float32")}
    assert harness_net.NET_CASES[0].flops == 4 * 500 * 100 * (3073 + 10)


def test_blocked_reference_matches_the_loops(monkeypatch):
    """The float64 reference used above PYTHON_MAX_WORK agrees with the python loops (where both run)."""
    problem = prepare_net(*harness_net.NetCase(30, d=40, h=7, c=4, dtype="float64").make())
    name, loops = harness_net.net_reference(problem)
    assert name == "python"
    monkeypatch.setattr(harness_net, "PYTHON_MAX_WORK", 0)
    monkeypatch.setattr(harness_net, "BLOCK_ROWS", 7)  # several blocks, one short
    name, blocked = harness_net.net_reference(problem)
    assert name == "float64 NumPy, blocked"
    error, _ = harness_net.compare_net(blocked, loops, np.float64)
    assert error < 1e-12


def test_bench_runs_the_net_cases(tmp_path, capsys):
    path = tmp_path / "b.json"
    status = cli.main(["bench", "--net-only", "--quick", "--dtypes", "float32", "--repeat", "1",
                       "--no-peers", "--no-memory", "--json", str(path)])
    text = capsys.readouterr().out
    assert status == 0, text
    assert "net N=500|float32" in text and harness_net.YARDSTICK in text
    records = json.loads(path.read_text())["net_records"]
    rows = {r["backend"]: r for r in records}
    assert set(rows) == set(backends.NET_BACKENDS) | {harness_net.YARDSTICK}
    for name in backends.available("net"):
        if name != "python":
            assert rows[name]["verdict"] == "PASS" and rows[name]["vs_gemm"] > 0
    assert rows["python"]["status"] == "skipped"
    assert rows[harness_net.YARDSTICK]["vs_gemm"] == 1


def test_bench_fails_a_wrong_net_backend(monkeypatch, capsys):
    """A kernel whose gradient is off is caught by the check before timing, and the exit status says so."""
    real = backends.get_kernel("numpy", contract="net")

    def wrong(problem, n_threads):
        loss, dW1, db1, dW2, db2 = real(problem, n_threads)
        return loss, dW1, db1 * 1.01, dW2, db2

    monkeypatch.setitem(backends._state["net"][0], "numpy", wrong)
    backends._state["net"][1].pop("numpy", None)  # the validated wrapper is rebuilt around `wrong`
    try:
        status = cli.main(["bench", "--net-only", "--quick", "--dtypes", "float32", "--repeat", "1",
                           "--no-peers", "--no-memory", "--backends", "numpy"])
    finally:
        backends._state["net"][1].pop("numpy", None)
    text = capsys.readouterr().out
    assert status == 1
    assert "FAIL" in text and "numpy on net N=500|float32" in text


def test_net_only_needs_a_net_size():
    with pytest.raises(SystemExit):
        cli.main(["bench", "--net-only", "--sizes", "49000"])
