"""The harness's timing of rows side by side: warm, rotated blocks (fastsoftmax.harness.timing)."""

import time

from fastsoftmax.harness.timing import warm_blocks


def test_blocks_rotate_and_start_untimed():
    calls = []
    rows = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    times = warm_blocks(rows, rounds=4, per_block=3, warm_s=0.0)
    assert {k: len(v) for k, v in times.items()} == {"a": 12, "b": 12, "c": 12}
    blocks = [calls[i:i + 4] for i in range(0, len(calls), 4)]  # one untimed call, three timed
    assert all(len(set(block)) == 1 for block in blocks)
    assert "".join(b[0] for b in blocks) == "abc" + "bca" + "cab" + "abc"


def test_each_block_runs_untimed_for_warm_s_first():
    """A row runs untimed until ``warm_s`` has passed, then its timed calls follow back to back."""
    log = []

    def row():
        log.append(time.perf_counter())
        time.sleep(0.005)

    times = warm_blocks({"r": row}, rounds=1, per_block=2, warm_s=0.05)
    assert len(times["r"]) == 2 and all(t >= 0.005 for t in times["r"])
    assert len(log) >= 2 + 2  # untimed calls first (each >= 5 ms, so at most 10 of them)
    assert log[-2] - log[0] >= 0.05 - 0.001  # the first timed call starts once warm_s has passed
    assert times["r"][0] <= log[-1] - log[-2] + 1e-4  # the timed calls follow each other back to back
