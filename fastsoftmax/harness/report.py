"""What a benchmark run shows: the text table, the JSON, the PNG chart and the README's table.

Design note
-----------
Output only: every number here was measured by :mod:`fastsoftmax.harness.run`.
Files are written atomically (a temporary file moved into place), so a
crash never leaves half a JSON or PNG behind.

The README's results table is never typed by hand: :func:`results_table`
makes it from a ``fastsoftmax bench --json`` file and
:func:`update_results_table` writes it between two markers of a Markdown file
(``fastsoftmax report docs/bench.json --readme README.md``); a test checks that
the README holds exactly what the committed ``docs/bench.json`` gives.
"""

from __future__ import annotations

import json

from .._files import atomic_write
from . import peers

__all__ = ["benchmark_records", "format_table", "footnotes", "write_json", "write_plot", "results_table", "update_results_table",
           "RESULTS_BEGIN", "RESULTS_END"]


def _fmt_time(s):
    if s is None:
        return "-"
    return f"{s * 1e3:.3g} ms" if s < 1 else f"{s:.3g} s"


def _fmt_ratio(r):
    return "-" if r is None else f"{r:.3g}x"


def _fmt_mem(b):
    if b is None:
        return "-"
    return f"{b / 2**20:.1f} MB" if b >= 2**20 else f"{b / 2**10:.0f} kB"


def format_table(case, source, ref_name, records):
    """The text table of one case (one line per record)."""
    multi = len({r["threads"] for r in records}) > 1
    head = (
        f"\n{case.name}   N={case.n} D={case.d} C={case.c}, {source}; reference: {ref_name}; "
        f"{case.flops / 1e6:.0f} MFLOP and {case.x_bytes / 1e6:.1f} MB of X per call"
    )
    roofs = {}
    for r in records:
        if "t_star_s" in r:
            roofs.setdefault(r["threads"], r)
    for t, r in roofs.items():
        head += (f"\nroofline x{t}: R_gemm {r['r_gemm_gflops']:.3g} GFLOP/s (square GEMM, n=2048), "
                 f"R_stream {r['r_stream_gbs']:.3g} GB/s (stream X) -> T* = {_fmt_time(r['t_star_s'])} "
                 f"({'compute' if r['roof_bound'] == 'gemm' else 'memory'}-bound)")
    cols = ["backend", "median", "spread", "vs python", "vs numpy", "GFLOP/s", "X GB/s",
            "% roof", "extra mem", "loss err", "grad err", "verdict"]
    rows = []
    for r in records:
        label = r["backend"] + (f" x{r['threads']}" if multi else "") + (" *" if r.get("picked") else "")
        if r["status"] in ("skipped", "error"):
            verdict = "FAIL" if r["status"] == "error" else "skip"
            rows.append([label, *["-"] * 10, f"{verdict}: {r['reason']}"])
            continue
        rows.append([
            label,
            _fmt_time(r["median_s"]),
            f"{100 * r['spread']:.0f}%",
            _fmt_ratio(r.get("speedup_vs_python")),
            _fmt_ratio(r.get("speedup_vs_numpy")),
            f"{r['gflops']:.3g}",
            f"{r['x_bandwidth_gbs']:.3g}",
            f"{r['roofline_pct']:.0f}%" if "roofline_pct" in r else "-",
            _fmt_mem(r.get("peak_extra_memory_bytes")),
            f"{r['loss_error']:.1e}" if "loss_error" in r else "-",
            f"{r['grad_error']:.1e}" if "grad_error" in r else "-",
            r.get("verdict", "(floor)") + (f"  [{r['note']}]" if r.get("note") else ""),
        ])
    widths = [max(len(str(x)) for x in col) for col in zip(cols, *[r[:-1] + [""] for r in rows])]
    line = lambda cells: "  ".join(  # noqa: E731
        [f"{cells[0]:<{widths[0]}}"] + [f"{c:>{w}}" for c, w in zip(cells[1:-1], widths[1:-1])] + [cells[-1]]
    )
    return "\n".join([head, line(cols), *(line(r) for r in rows)])


def write_json(path, payload):
    """Write ``payload`` as JSON to ``path`` atomically."""
    with atomic_write(path, "w") as f:
        json.dump(payload, f, indent=1, default=float)
        f.write("\n")


def write_plot(path, records):
    """A PNG bar chart of median time per call: log scale, one panel per case.

    Parameters
    ----------
    path : str or os.PathLike
        The PNG, written atomically.
    records : list of dict
        ``fastsoftmax bench`` records (the JSON's ``records``): one panel per
        ``case``, in the records' order, one bar per row that ran; the
        ``stream X`` floor and the roofline's ``T*`` are drawn as lines, named
        in a legend beside the panel (inside it hid the longest bars).  The
        time axis is labelled at 1, 2 and 5 times powers of ten.
    """
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    from ..training.visualize import _figure, _save  # an Agg canvas, never pyplot's global state

    cases = list(dict.fromkeys(r["case"] for r in records))
    cols = min(2, len(cases))
    nrows = -(-len(cases) // cols)
    fig = _figure((9 * cols, 3.6 * nrows))
    axes = fig.subplots(nrows, cols, squeeze=False)
    colors = {"backend": "tab:blue", "yardstick": "tab:gray", "peer": "tab:orange"}
    multi = len({r["threads"] for r in records}) > 1
    for ax, case in zip(axes.flat, cases):
        recs = [r for r in records if r["case"] == case and r["status"] == "ok"]
        bars = [r for r in recs if r["backend"] != "stream X"]
        labels = [r["backend"] + (f" x{r['threads']}" if multi else "") for r in bars]
        values = [r["median_s"] * 1e3 for r in bars]
        ax.barh(labels, values, color=[
            "tab:red" if r.get("verdict") == "FAIL" else colors.get(r["kind"], "tab:gray") for r in bars])
        for r in recs:
            if r["backend"] == "stream X":
                ax.axvline(r["median_s"] * 1e3, color="k", ls="--", lw=1,
                           label=f"stream X once{' x%d' % r['threads'] if multi else ''}: "
                                 f"{r['median_s'] * 1e3:.3g} ms")
        for t_star, t in sorted({(r["t_star_s"], r["threads"]) for r in recs if "t_star_s" in r}, key=lambda x: x[1]):
            ax.axvline(t_star * 1e3, color="tab:green", ls=":", lw=1.2,
                       label=f"roofline T*{' x%d' % t if multi else ''}: {t_star * 1e3:.3g} ms")
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.invert_yaxis()
        shape = next(((r["d"], r["c"]) for r in recs if "d" in r and "c" in r), None)
        ax.set_title(case + (f"  (D={shape[0]}, C={shape[1]})" if shape else ""))
        ax.set_xlabel("median time per call (ms, log scale)")
        if any(r["backend"] == "stream X" or "t_star_s" in r for r in recs):
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=8)
    for ax in list(axes.flat)[len(cases):]:
        ax.set_visible(False)
    fig.suptitle("fastsoftmax bench: backends (blue), yardsticks (gray), peers (orange)")
    _save(fig, path)


def footnotes(names, threads):
    lines = [
        "median: of the timed calls after a checked warm-up call; spread: interquartile range / median.",
        "GFLOP/s: 4*N*D*C / median; X GB/s: bytes of X / median (reading X once); "
        "extra mem: peak RSS growth of one call beyond inputs and output (separate process).",
        "% roof: T* / median, T* = max(4*N*D*C / R_gemm, bytes of X / R_stream), both rates measured in "
        "this run with the row's dtype and threads (docs/kernels.md); "
        "*: the backend fastsoftmax.softmax_loss picks for this dtype, N and thread count.",
        f"threads: {', '.join(map(str, threads))} (fastsoftmax.threads, threadpoolctl for BLAS/OpenMP, "
        "torch.set_num_threads, scikit-learn n_threads).",
    ]
    for name in names:
        if name in peers.ROWS:
            lines.append(f"{name}: {peers.ROWS[name].what}")
    return "\n".join(lines)


# --- the README's results table ------------------------------------------

#: The markers around the generated table in a Markdown file.
RESULTS_BEGIN = "<!-- results-table: generated by `fastsoftmax report`, do not edit -->"
RESULTS_END = "<!-- results-table: end -->"


def benchmark_records(payload):
    """The records of a ``fastsoftmax bench --json`` payload, checked for the fields the table and chart use.

    Raises
    ------
    ValueError
        If ``payload`` is not a benchmark JSON (no ``records``, or records
        without ``backend``, ``kind``, ``threads``, ``case`` or ``status``).
    """
    records = payload.get("records") if isinstance(payload, dict) else None
    if not records:
        raise ValueError("not a `fastsoftmax bench --json` file: no 'records'")
    needed = ("backend", "kind", "threads", "case", "status")
    for r in records:
        missing = [k for k in needed if k not in r]
        if missing:
            raise ValueError(f"benchmark record without {missing}: {r}")
    return records


def results_table(payload):
    """The results as a Markdown table: median time per call, one column per case.

    One row per benchmarked row and thread count (``cython x2``: two
    threads), in the run's order; the fastest of our backends in each column
    and thread count is in bold.  A row that was skipped shows ``skip``, one
    that disagreed with the reference or crashed ``FAIL``.  Above the table,
    one line names the machine and counts the verdicts.

    Parameters
    ----------
    payload : dict
        What ``fastsoftmax bench --json`` writes (``machine`` and
        ``records``).

    Returns
    -------
    str
        Markdown, ending with a newline.

    Raises
    ------
    ValueError
        If ``payload`` is not a benchmark JSON (no ``records``, or records
        without the fields the table needs).
    """
    records = benchmark_records(payload)
    cases = list(dict.fromkeys(r["case"] for r in records))
    rows = list(dict.fromkeys((r["backend"], r["threads"]) for r in records))
    multi = len({t for _, t in rows}) > 1
    by = {(r["case"], r["backend"], r["threads"]): r for r in records}
    best = {}
    for r in records:
        if r["kind"] == "backend" and r["status"] == "ok" and r.get("verdict") != "FAIL":
            key = (r["case"], r["threads"])
            if key not in best or r["median_s"] < by[(key[0], best[key], key[1])]["median_s"]:
                best[key] = r["backend"]

    def cell(case, name, threads):
        r = by.get((case, name, threads))
        if r is None:
            return ""
        if r["status"] == "skipped":
            return "skip"
        if r["status"] != "ok" or r.get("verdict") == "FAIL":
            return "FAIL"
        text = _fmt_time(r["median_s"])
        return f"**{text}**" if best.get((case, threads)) == name else text

    verdicts = [r for r in records if r.get("verdict") in ("PASS", "FAIL")]
    failed = sorted({f"{r['backend']} ({r['case']})" for r in verdicts if r["verdict"] == "FAIL"})
    machine = payload.get("machine", {})
    libs = machine.get("libraries", {})
    versions = ", ".join(f"{k} {v}" for k, v in libs.items() if v and k in ("numpy", "numba", "Cython"))
    summary = (
        f"Median time per call on {machine.get('cpu', 'an unnamed CPU')}, "
        f"{machine.get('cores', '?')} cores ({versions}); "
        + ("`xT` = T threads; " if multi else "")
        + (f"FAIL: {', '.join(failed)}." if failed else f"all {len(verdicts)} rows checked agree with the reference.")
    )
    header = " | ".join(c.replace("|", " ") for c in cases)  # "N=500|float64": '|' would split the cell
    lines = [summary, "", f"| row | {header} |", "|---|" + "---:|" * len(cases)]
    for name, threads in rows:
        label = f"{name} x{threads}" if multi else name
        lines.append(f"| {label} | " + " | ".join(cell(c, name, threads) for c in cases) + " |")
    return "\n".join(lines) + "\n"


def update_results_table(markdown_path, payload):
    """Replace the text between :data:`RESULTS_BEGIN` and :data:`RESULTS_END` by :func:`results_table`.

    The file is rewritten atomically and only if the table changed.

    Parameters
    ----------
    markdown_path : str or os.PathLike
        A Markdown file holding both markers, each on a line of its own.
    payload : dict
        A ``fastsoftmax bench --json`` payload.

    Returns
    -------
    bool
        Whether the file changed.

    Raises
    ------
    ValueError
        If the markers are missing, repeated or out of order.
    """
    table = results_table(payload)  # a bad payload is refused before the file is read
    with open(markdown_path, encoding="utf-8") as f:
        text = f.read()
    if text.count(RESULTS_BEGIN) != 1 or text.count(RESULTS_END) != 1:
        raise ValueError(
            f"{markdown_path} must hold each results-table marker exactly once:\n{RESULTS_BEGIN}\n{RESULTS_END}"
        )
    head, rest = text.split(RESULTS_BEGIN)
    if RESULTS_END not in rest:
        raise ValueError(f"{markdown_path}: {RESULTS_END!r} comes before {RESULTS_BEGIN!r}")
    _, tail = rest.split(RESULTS_END)
    new = f"{head}{RESULTS_BEGIN}\n{table}{RESULTS_END}{tail}"
    if new == text:
        return False
    with atomic_write(markdown_path, "w") as f:
        f.write(new)
    return True


def documented_results_table(markdown_path):
    """The table currently between the markers of ``markdown_path`` (None without markers)."""
    with open(markdown_path, encoding="utf-8") as f:
        text = f.read()
    if RESULTS_BEGIN not in text or RESULTS_END not in text:
        return None
    return text.split(RESULTS_BEGIN, 1)[1].split(RESULTS_END, 1)[0].removeprefix("\n")
