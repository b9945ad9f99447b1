"""The training-step section of ``fastsoftmax bench`` (issue 14): what it times is what it checks."""

import json

import pytest

from fastsoftmax import cli
from fastsoftmax.harness import training_step as ts


@pytest.fixture
def small_x(monkeypatch):
    """The section's shapes, shrunk so the test takes seconds (CIFAR's D is kept)."""
    monkeypatch.setattr(ts, "N", 600)
    monkeypatch.setattr(ts, "PREDRAWN", 5)


def test_cli_training_step_only_writes_table_and_json(small_x, tmp_path, capsys):
    path = tmp_path / "steps.json"
    status = cli.main(["bench", "--training-step-only", "--threads", "1", "--dtypes", "float32,float64",
                       "--json", str(path)])
    assert status == 0
    out = capsys.readouterr().out
    assert "training step   X 600 x 3073" in out
    assert "N=500" not in out  # no per-case tables
    payload = json.loads(path.read_text())
    assert payload["records"] == []
    steps = payload["training_step"]
    assert {(r["dtype"], r["threads"], r["row"]) for r in steps} == {
        (dt, 1, row) for dt in ("float32", "float64") for row in ts.ROWS}
    for r in steps:
        assert r["median_s"] > 0 and len(r["times_s"]) == 50 and r["agrees"]
        assert r["batch"] == 200 and r["target"] == 1.15
    kernel = [r for r in steps if r["row"] == "kernel"]
    assert all(r["ratio"] == 1.0 for r in kernel)


def test_a_rows_path_that_disagrees_fails_the_run(small_x, tmp_path, capsys):
    """A backend whose rows= result differs from the gathered call makes bench exit 1."""
    from fastsoftmax import backends
    from fastsoftmax.backends.numpy import softmax_loss as numpy_kernel

    def wrong_rows(problem, n_threads):
        loss, dW, db = numpy_kernel(problem, n_threads)
        if problem.rows is not None:
            dW *= 1.01
        return loss, dW, db

    backends.register("wrong-rows", wrong_rows)
    backends.set_backend("wrong-rows")
    try:
        assert cli.main(["bench", "--training-step-only", "--threads", "1", "--dtypes", "float64"]) == 1
    finally:
        backends.set_backend(None)
        backends.unregister("wrong-rows")
    out = capsys.readouterr().out
    assert "FAIL" in out and "training step float64 x1" in out


def test_section_follows_the_case_tables_in_one_run(small_x, tmp_path):
    """``fastsoftmax bench --training-step``: the per-case tables, then the section, in one JSON."""
    from fastsoftmax.harness import run
    from fastsoftmax.harness.cases import Case

    lines = []
    path = tmp_path / "both.json"
    status = run([Case(64, d=33, c=10)], backend_names=["numpy"], peers=False, memory=False, repeat=1,
                 training_step=True, training_step_threads=(1,), training_step_dtypes=["float64"],
                 json_path=str(path), out=lines.append)
    assert status == 0
    text = "\n".join(lines)
    assert text.index("N=64|float64") < text.index("training step   X 600 x 3073")
    payload = json.loads(path.read_text())
    assert {r["backend"] for r in payload["records"]} >= {"numpy"}
    assert {(r["dtype"], r["threads"]) for r in payload["training_step"]} == {("float64", 1)}
