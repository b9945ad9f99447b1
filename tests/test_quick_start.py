"""The README's quick start: the two commands a new user types, and CI runs verbatim.

``.ci/run`` reads them with ``.ci/quick_start.py`` and runs them in order in
one fresh virtualenv, stopping with the exit status of the first that fails
(issue 10: the second once failed only after the first had run).  Here: the
block is found, and it is what the README promises, one command that installs
and benchmarks and one that installs the test extras and runs the tests.
"""

import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
quick_start = runpy.run_path(str(ROOT / ".ci" / "quick_start.py"))


def test_readme_quick_start_is_install_and_bench_then_install_and_test():
    first, second = quick_start["commands"]((ROOT / "README.md").read_text(encoding="utf-8"))
    assert first.startswith("pip install . ") and first.endswith("&& fastsoftmax bench"), first
    assert second.startswith('pip install -e ".[test]"') and second.endswith("&& pytest"), second


def test_a_readme_without_the_block_is_refused():
    with pytest.raises(ValueError, match="quick-start"):
        quick_start["commands"]("# fastsoftmax\n\n```bash\npip install .\n```\n")


def test_ci_runs_the_quick_start_with_every_backend_required():
    run = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "python3 .ci/quick_start.py" in run
    assert "export FASTSOFTMAX_REQUIRE_ALL_BACKENDS=1" in run
