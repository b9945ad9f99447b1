"""``fastsoftmax bench``: time every backend on the shared cases, prove they agree.

Design note
-----------
One run measures everything a reader needs to judge a backend, side by side:
every registered backend, the two yardsticks and the installed peers of
:mod:`fastsoftmax.harness.peers`, on the cases of :mod:`fastsoftmax.harness.cases` (the same
table ``bench/`` and the tests use).  For each case and thread count:

1. The case's arrays are built once and validated once with
   :func:`fastsoftmax.backends._validate.prepare`, outside every timed region.
2. The reference result is computed
   (:func:`fastsoftmax.harness.agreement.reference`): the ``python`` backend
   where the problem is small, else a float64 NumPy evaluation done in row
   blocks (independent of every backend's code).
3. Each row is checked first: a backend's *public* function (validation
   included) is called once and compared with the reference by
   :func:`fastsoftmax.harness.agreement.compare`.  That call is also the warm-up that
   absorbs Numba's JIT compilation; its duration is kept as ``first_call_s``.
4. Then only the raw kernel (``backends.get_kernel``) is timed, ``repeat``
   times (fewer for rows slower than a second: see :func:`_timed`).  The
   table shows the median and the spread (interquartile range / median).

5. The roofline (:mod:`fastsoftmax.harness.roofline`): a square GEMM's
   rate in the case's dtype and thread count (once per run) and the
   ``stream X`` row's rate give ``T*``, the time no kernel can beat here;
   every row gets ``% of roofline`` = T* / median, and the row of the
   backend ``fastsoftmax.softmax_loss`` would pick for this dtype, N and
   thread count (:func:`fastsoftmax.backends.fastest`) is marked, so a wrong
   pick shows.

Peak extra memory per call is measured in a separate process per case
(:func:`fastsoftmax.harness.memory.peak_extra_memory`), because it needs malloc settings that would
slow the timed process down.  See that function for the method.

Exit status (:func:`run`): 1 if any checked row disagrees with the reference
or fails, else 0.  JSON and PNG outputs are written to a temporary file and
moved into place with ``os.replace``, so a crash never leaves half a file.
"""

from __future__ import annotations

import gc
import statistics
import sys
import time

from .. import backends
from ..backends._threads import get_num_threads
from ..backends._validate import prepare
from .peers import ROWS, jax_threads, stream_is_memory_bound
from .agreement import compare, reference
from .cases import CASES
from .inputs import case_data
from .machine import machine_info
from .memory import peak_extra_memory
from .report import footnotes, format_table, write_json, write_plot
from .roofline import gemm_rate, isa_note, stream_rate, t_star
from .rows import row_kind, row_names, setup_row, skip_reason
from .threads import limit_threads

__all__ = ["run"]

#: Rows slower than this (seconds per call) are timed at most MIN_SLOW_REPEAT times.
SLOW_CALL_S = 1.0
MIN_SLOW_REPEAT = 3


def _timed(fn, repeat):
    """Wall times of ``repeat`` calls of ``fn`` (at most MIN_SLOW_REPEAT if slow)."""
    times = []
    for i in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if i + 1 >= MIN_SLOW_REPEAT and sum(times) / len(times) > SLOW_CALL_S:
            break
    return times


def _measure(case, name, problem, ref_name, ref, threads, repeat):
    """One record: check, then time one row on one case at one thread count."""
    record = {"backend": name, "kind": row_kind(name), "threads": threads, "status": "ok"}
    reason = skip_reason(case, name)
    if reason is not None:
        return {**record, "status": "skipped", "reason": reason}
    try:
        gc.collect()
        t0 = time.perf_counter()
        check, timed = setup_row(name, problem, threads)
        # The reference row is not compared with itself: that would prove
        # nothing and cost another slow python call.
        result = None if name == ref_name else check()
        if name == ref_name:
            record["verdict"] = "REF"
        else:
            record["first_call_s"] = time.perf_counter() - t0
        if result is not None:
            agreement = compare(result, ref, problem.W.dtype)
            record.update(
                loss_error=agreement.loss_error,
                grad_error=agreement.grad_error,
                tolerance=agreement.tolerance,
                verdict="PASS" if agreement.ok else "FAIL",
            )
            del result
        times = _timed(timed, repeat)
    except Exception as exc:  # a crashing row is a failure, reported, not a traceback
        return {**record, "status": "error", "verdict": "FAIL", "reason": f"{type(exc).__name__}: {exc}"}
    if name == "jax" and threads != jax_threads():
        record["note"] = f"JAX ran with {jax_threads()} threads (XLA's pool is fixed at start-up)"
    median = statistics.median(times)
    q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else (median,) * 3
    record.update(
        times_s=times,
        median_s=median,
        min_s=min(times),
        spread=(q3 - q1) / median if median > 0 else 0.0,
        gflops=case.flops / median / 1e9,
        x_bandwidth_gbs=case.x_bytes / median / 1e9,
    )
    return record


def run(
    cases=CASES,
    backend_names=None,
    threads=None,
    repeat=7,
    peers=True,
    memory=True,
    data_dir=None,
    json_path=None,
    plot_path=None,
    out=print,
    progress=None,
    training_step=False,
    training_step_threads=(1, 2),
    training_step_dtypes=None,
    net_cases=(),
):
    """Benchmark ``cases``; print one table per case; return the exit status.

    Parameters
    ----------
    cases : sequence of fastsoftmax.harness.cases.Case
    backend_names : list of str or None
        None: every available backend (extras added with ``register`` too).
    threads : list of int or None
        Thread counts to run each case with (None: the current setting,
        :func:`fastsoftmax.get_num_threads`).
    repeat : int
        Timed calls per row after the warm-up (rows slower than
        ``SLOW_CALL_S`` stop after ``MIN_SLOW_REPEAT``).
    peers, memory : bool
        Include the peer rows; measure peak extra memory.
    data_dir : str or None
        Real CIFAR-10 batches instead of synthetic data.
    json_path, plot_path : str or None
        Where to write the JSON records and the PNG chart.
    out : callable
        Receives each table.
    progress : bool or None
        tqdm progress bar on stderr (None: only on a terminal).
    training_step : bool
        Also time a training step beside the bare kernel
        (:mod:`fastsoftmax.harness.training_step`).
    training_step_threads : sequence of int
        Thread counts of that section.
    training_step_dtypes : sequence of str, optional
        Its dtypes (default: those of ``cases``, or both).
    net_cases : sequence of fastsoftmax.harness.net.NetCase
        Two-layer net cases, run after ``cases`` with the net backends and
        the GEMM roofline yardstick (:mod:`fastsoftmax.harness.net`); their
        records go to the JSON's ``net_records``.

    Returns
    -------
    int
        0 if every checked row agreed with the reference, else 1.
    """
    from tqdm import tqdm

    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    threads = [get_num_threads()] if not threads else list(threads)
    names = row_names(backend_names, peers)
    unknown = [n for n in names if n not in ROWS and n not in backends.BACKENDS
               and n not in backends._extra]
    if unknown:
        raise backends.BackendUnavailable(f"unknown backend(s) {unknown}; available: {backends.available()}")
    records, failed, sources, steps = [], [], {}, []
    isa = isa_note()
    if cases and isa["yardstick"]:
        out(isa["yardstick"])
    # tqdm's disable=None means "only on a terminal".
    disable = None if progress is None else not progress
    bar = tqdm(total=len(cases) * len(threads) * len(names), disable=disable,
               file=sys.stderr, unit="row", leave=False)
    try:
        for case in cases:
            args, source = case_data(case, data_dir)
            problem = prepare(*args)
            ref_name, ref = reference(*problem.args)
            sources[case.name] = source
            case_records = []
            for n_threads in threads:
                with limit_threads(n_threads):
                    for name in names:
                        bar.set_description(f"{case.name} {name} x{n_threads}")
                        rec = _measure(case, name, problem, ref_name, ref, n_threads, repeat)
                        case_records.append(rec)
                        bar.update()
                    bar.set_description(f"{case.name} roofline x{n_threads}")
                    _add_roofline(case, problem, n_threads,
                                  [r for r in case_records if r["threads"] == n_threads])
                if memory:
                    measured = [r["backend"] for r in case_records
                                if r["threads"] == n_threads and r["status"] == "ok"]
                    bar.set_description(f"{case.name} memory x{n_threads}")
                    mem = peak_extra_memory(case, measured, n_threads, data_dir)
                    for r in case_records:
                        if r["threads"] == n_threads and r["backend"] in mem:
                            r["peak_extra_memory_bytes"] = mem[r["backend"]]
                            if mem.get("_error"):
                                r["memory_note"] = mem["_error"]
            del args, problem
            _add_ratios(case_records)
            for r in case_records:
                r.update(case=case.name, n=case.n, d=case.d, c=case.c, dtype=case.dtype,
                         reference=ref_name, data=source)
                if r.get("verdict") == "FAIL":
                    failed.append(f"{r['backend']} on {case.name} (threads={r['threads']})")
            records += case_records
            bar.clear()
            out(format_table(case, source, ref_name, case_records))
            for note in dict.fromkeys(r["memory_note"] for r in case_records if "memory_note" in r):
                out(f"extra mem not measured: {note}")
        if training_step:
            from . import training_step as ts

            dtypes = training_step_dtypes or list(dict.fromkeys(c.dtype for c in cases)) or ["float64", "float32"]
            steps = ts.measure(dtypes, training_step_threads, progress=bar.set_description)
            bar.clear()
            out(ts.format_table(steps))
            failed += [f"training step {r['dtype']} x{r['threads']} (rows= disagrees with the gathered call)"
                       for r in steps if r["row"] == "rows step" and not r["agrees"]]
    finally:
        bar.close()
    payload = {"machine": {**machine_info(), "isa": isa}, "argv": sys.argv, "repeat": repeat,
               "records": records}
    if steps:
        payload["training_step"] = steps
    if cases:
        out("\n" + footnotes(names, threads))
    if cases and any(name == "stream X" for name in names):
        payload["floor_check"] = _floor_check(cases, records, threads)
        out(payload["floor_check"]["summary"])
    if net_cases:
        from .net import format_net_table, net_row_names, run_net_case

        net_records = []
        for case in net_cases:
            ref_name, case_records = run_net_case(case, net_row_names(backend_names), threads, repeat)
            out(format_net_table(case, ref_name, case_records))
            failed += [f"{r['backend']} on {case.name} (threads={r['threads']})"
                       for r in case_records if r.get("verdict") == "FAIL"]
            net_records += case_records
        payload["net_records"] = net_records
    if json_path:
        write_json(json_path, payload)
        out(f"wrote {json_path}")
    if plot_path:
        write_plot(plot_path, records)
        out(f"wrote {plot_path}")
    if failed:
        out("\nFAIL: disagree with the reference or crashed: " + ", ".join(failed))
        return 1
    return 0


def _add_roofline(case, problem, n_threads, records):
    """Give each record of one case and thread count the roofline and its ``% of roofline``.

    R_stream comes from this run's ``stream X`` row when it was measured,
    else it is measured here; R_gemm is measured here, right after the rows.
    """
    floor = next((r for r in records if r["backend"] == "stream X" and r["status"] == "ok"), None)
    r_stream = case.x_bytes / floor["median_s"] if floor else stream_rate(problem.X, n_threads)
    r_gemm = gemm_rate(case.dtype, n_threads, cache=False)  # now, beside the rows: a busy machine moves both
    t, bound = t_star(case.flops, case.x_bytes, r_gemm, r_stream)
    pick = backends.fastest(case.dtype, case.n, threads=n_threads)
    for r in records:
        r.update(r_gemm_gflops=r_gemm / 1e9, r_stream_gbs=r_stream / 1e9, t_star_s=t, roof_bound=bound,
                 picked=r["backend"] == pick)
        if r["status"] == "ok" and r["backend"] != "stream X":
            r["roofline_pct"] = 100.0 * t / r["median_s"]


def _add_ratios(records):
    """Speedups against python (any thread count) and numpy (same thread count)."""
    ok = [r for r in records if r["status"] == "ok"]
    python = next((r["median_s"] for r in ok if r["backend"] == "python"), None)
    numpy_by_threads = {r["threads"]: r["median_s"] for r in ok if r["backend"] == "numpy"}
    for r in ok:
        if r["backend"] == "stream X":
            continue
        r["speedup_vs_python"] = python / r["median_s"] if python else None
        base = numpy_by_threads.get(r["threads"])
        r["speedup_vs_numpy"] = base / r["median_s"] if base else None


def _floor_check(cases, records, threads):
    """Is the floor memory-bound?  Compare its rate on X with an L2-resident block."""
    checks = []
    for dtype in sorted({c.dtype for c in cases}):
        for n in threads:
            floor = [r for r in records if r["backend"] == "stream X" and r["status"] == "ok"
                     and r["dtype"] == dtype and r["threads"] == n]
            if not floor:
                continue
            with limit_threads(n):
                in_cache = stream_is_memory_bound(dtype, n) / 1e9
            best = max(floor, key=lambda r: r["n"])
            checks.append({"dtype": dtype, "threads": n, "case": best["case"],
                           "x_gbs": best["x_bandwidth_gbs"], "l2_block_gbs": in_cache})
    summary = "floor check (stream X on X vs the same loop on an L2-resident 256 KiB block per thread): " + "; ".join(
        f"{c['case']} x{c['threads']}: {c['x_gbs']:.3g} GB/s vs {c['l2_block_gbs']:.3g} GB/s in L2"
        for c in checks
    )
    return {"checks": checks, "summary": summary}
