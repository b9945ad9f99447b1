"""Command line: ``fastsoftmax bench``, ``report``, ``tune``, ``train``, ``net`` and ``spiral``.

Design note
-----------
A thin argparse layer; the work is in :mod:`fastsoftmax.harness` and
:mod:`fastsoftmax.training.exercise` (and ``net_exercise``, ``spiral``) so that it can be called from Python and tested
without a subprocess.  Argument errors
(an unknown backend, a size with no case) are reported by argparse with exit
status 2; a backend that disagrees with the reference gives exit status 1.
"""

import argparse
import sys


def _int_list(text):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _str_list(text):
    return [v.strip() for v in text.split(",") if v.strip()]


def _parser():
    parser = argparse.ArgumentParser(
        prog="fastsoftmax",
        description="Softmax loss and gradient as fast as the CPU allows: benchmark the backends, or train.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser(
        "bench",
        help="time every backend on CIFAR-sized batches and check they agree",
        description="Time every backend, the yardsticks (textbook NumPy, streaming X once) and "
        "installed peers on the shared cases; check each against the reference; exit 1 if any disagrees.",
    )
    bench.add_argument("--sizes", type=_int_list, metavar="N,N",
                       help="batch sizes N (default: the cases' 500,10000,49000; any other N makes a "
                       "case of the same shape family, D=3073, C=10; overrides --quick's N)")
    bench.add_argument("--dtypes", type=_str_list, metavar="DT,DT", help="float64 and/or float32 (default: both)")
    bench.add_argument("--backends", type=_str_list, metavar="NAME,NAME",
                       help="backends to run (default: every available one)")
    bench.add_argument("--threads", type=_int_list, metavar="T,T",
                       help="thread counts, each a full run of every case (default: the current "
                       "fastsoftmax setting, all cores unless FASTSOFTMAX_NUM_THREADS is set)")
    bench.add_argument("--repeat", type=int, default=None,
                       help="timed calls per row after warm-up (default 7; with --sklearn, fits per row, default 3)")
    bench.add_argument("--quick", action="store_true", help="N = 500 only (a smoke run)")
    bench.add_argument("--no-peers", action="store_true", help="skip scikit-learn, PyTorch and JAX rows")
    bench.add_argument("--no-memory", action="store_true", help="skip the peak-memory probe (saves a few s per case)")
    bench.add_argument("--training-step", action="store_true",
                       help="also time a training step (batch 200 drawn from a 4585 x 3073 X, copy path "
                       "and rows=) beside the bare kernel on the gathered batch, at 1 and 2 threads "
                       "unless --threads (10-30 s)")
    bench.add_argument("--training-step-only", action="store_true",
                       help="only the training-step section (no per-case tables)")
    bench.add_argument("--data", metavar="DIR", help="real CIFAR-10 python batches instead of synthetic data")
    bench.add_argument("--json", metavar="PATH", help="write every figure as JSON (one record per row per case)")
    bench.add_argument("--plot", metavar="PATH", help="write a PNG bar chart (log scale, one panel per case)")
    fit = bench.add_argument_group(
        "scikit-learn fit table (--sklearn)",
        "Instead of the kernel table: time whole fits of fastsoftmax.sklearn.SoftmaxClassifier and "
        "LogisticRegression(solver='lbfgs'), float64 and float32, on the real CIFAR-10 of --data "
        "(required), each checked against LogisticRegression float64; needs the sklearn extra.",
    )
    fit.add_argument("--sklearn", action="store_true", help="run the fit table")
    fit.add_argument("--C", type=float, default=1e-3, help="inverse L2 strength of both estimators (default 1e-3)")
    fit.add_argument("--tol", type=float, default=1e-4, help="L-BFGS gradient tolerance of both (default 1e-4)")
    fit.add_argument("--max-iter", type=int, default=300, help="iteration limit of both (default 300)")
    fit.add_argument("--no-intercept", action="store_true", help="fit_intercept=False for both")
    bench.add_argument("--net", action=argparse.BooleanOptionalAction, default=True,
                       help="also run the two-layer net cases (N=500 and 10000, D=3073, H=100, C=10, as "
                       "selected by --sizes/--quick/--dtypes) with the GEMM roofline yardstick (default: on)")
    bench.add_argument("--net-only", action="store_true", help="run only the two-layer net cases")
    bench.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                       help="progress bar on stderr (default: only on a terminal)")
    tune = sub.add_parser(
        "tune",
        help="measure which backend is fastest on this machine and remember it",
        description="Time the compiled kernels' settings (the C kernel's D-chunk for the instruction-set "
        "build that runs; whether it and the Numba kernel prefetch whole tiles ahead), then every available "
        "backend side by side with them (CIFAR shapes, each dtype, a few batch sizes, 1 thread and all cores), "
        "and save the ranking and the settings in the user cache directory, per CPU model and package version; "
        "fastsoftmax.softmax_loss then follows them (the static tables otherwise).",
    )
    tune.add_argument("--sizes", type=_int_list, metavar="N,N", help="batch sizes (default 32,500,10000)")
    tune.add_argument("--threads", type=_int_list, metavar="T,T", help="thread counts (default 1 and all cores)")
    tune.add_argument("--repeat", type=int, default=7, help="timed calls per backend, in warm, rotated blocks (default 7)")
    tune.add_argument("--show", action="store_true", help="print the saved wisdom and its path; measure nothing")
    report = sub.add_parser(
        "report",
        help="the README's results table (and the chart) from a `fastsoftmax bench --json` file",
        description="Print the results table (Markdown: median time per call, one column per case) made "
        "from a `fastsoftmax bench --json` file, or write it into a Markdown file between its markers; "
        "with --plot, draw the run's chart again.",
    )
    report.add_argument("json_path", metavar="BENCH_JSON", help="a file written by `fastsoftmax bench --json`")
    report.add_argument("--readme", metavar="PATH",
                        help="rewrite the table between the results-table markers of this Markdown file")
    report.add_argument("--plot", metavar="PNG",
                        help="draw the run's chart (as `fastsoftmax bench --plot` does) into this PNG file")
    from .training import exercise

    exercise.add_arguments(sub.add_parser(
        "train",
        help="the CS231n softmax exercise: load, check, train, tune, draw",
        description="The CS231n softmax exercise end to end: load CIFAR-10 (or the spiral toy data), "
        "sanity-check the loss, check the gradient, train with SGD, tune, and draw the learned weights.",
    ))
    from .training import net_exercise, spiral

    net_exercise.add_arguments(sub.add_parser(
        "net",
        help="the CS231n two-layer net on CIFAR-10: check, tune, test, draw",
        description="Train and tune the two-layer net on a CIFAR-10 directory: sanity loss, gradient "
        "check of every parameter, a grid over hidden size, learning rate, decay and reg, test accuracy, "
        "the first layer's weights and the loss/accuracy curves.",
    ))
    spiral.add_arguments(sub.add_parser(
        "spiral",
        help="the CS231n spiral case study: linear softmax vs two-layer net, with pictures",
        description="Train a linear softmax classifier with bias and a two-layer net on the spiral "
        "data by full-batch gradient descent, as in the CS231n notes; report training accuracies and "
        "draw the data and both models' decision regions.",
    ))
    return parser


def _report(parser, args):
    """``fastsoftmax report``: the results table, printed or written into a Markdown file; the chart."""
    import json

    from .harness.report import benchmark_records, results_table, update_results_table, write_plot

    try:
        with open(args.json_path, encoding="utf-8") as f:
            payload = json.load(f)
        if args.plot is not None:
            write_plot(args.plot, benchmark_records(payload))
            print(f"wrote {args.plot}")
        if args.readme is None:
            if args.plot is None:
                print(results_table(payload), end="")
            return 0
        changed = update_results_table(args.readme, payload)
    except (OSError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        parser.error(f"report: {exc}")
    print(f"{'updated' if changed else 'unchanged'}: results table in {args.readme}")
    return 0


def main(argv=None):
    """Entry point of the ``fastsoftmax`` command; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "train":
        from .training import exercise

        return exercise.run_args(args)
    if args.command == "tune":
        return _tune(args)
    if args.command == "report":
        return _report(parser, args)
    if args.command == "net":
        from .training import net_exercise

        return net_exercise.run_args(args)
    if args.command == "spiral":
        from .training import spiral

        return spiral.run_args(args)
    from . import backends
    from .harness import run
    from .harness.cases import CASES, QUICK_CASES, Case, select

    sizes = args.sizes or ([c.n for c in QUICK_CASES] if args.quick else None)
    dtypes = args.dtypes or list(dict.fromkeys(c.dtype for c in CASES))
    bad = [d for d in dtypes if d not in {c.dtype for c in CASES}]
    if bad:
        parser.error(f"unknown dtype(s) {bad}; dtypes are float64, float32")
    cases = [] if args.training_step_only else list(select(sizes, dtypes))
    # A size outside the table gets a case of the same family (CIFAR shapes).
    if not args.training_step_only:
        cases += [Case(n, dtype=dt) for n in sizes or () if n not in {c.n for c in CASES} for dt in dtypes]
    if args.repeat is not None and args.repeat < 1:
        parser.error(f"--repeat must be >= 1, got {args.repeat}")
    if args.backends:
        known = set(backends.BACKENDS) | set(backends.available())
        bad = [b for b in args.backends if b not in known]
        if bad:
            parser.error(f"unknown backend(s) {bad}; backends are {sorted(known)}")
    if args.sklearn:
        if not args.data:
            parser.error("--sklearn needs --data DIR (real CIFAR-10 python batches)")
        import importlib.util

        missing = [m for m in ("sklearn", "scipy") if importlib.util.find_spec(m) is None]
        if missing:
            parser.error(f"--sklearn needs {missing} (pip install fastsoftmax[sklearn])")
        if args.backends and len(args.backends) > 1:
            parser.error("--sklearn fits with one backend; give one name to --backends")
        from .harness.fit import run_fit

        _, status = run_fit(args.data, threads=args.threads, repeat=args.repeat or 3, C=args.C, tol=args.tol,
                            max_iter=args.max_iter, fit_intercept=not args.no_intercept,
                            backend=args.backends[0] if args.backends else None)
        return status
    from .harness.net import select_net

    if args.net_only and args.training_step_only:
        parser.error("--net-only and --training-step-only exclude each other")
    # The net cases run by default, but not in another section's "only" run.
    net_cases = select_net(sizes, dtypes) if args.net_only or (args.net and not args.training_step_only) else ()
    if args.net_only:
        cases = []
        if not net_cases:
            parser.error("--net-only: no net case has these sizes; net cases have N = 500 and 10000")
    return run(
        cases,
        net_cases=net_cases,
        backend_names=args.backends,
        threads=args.threads,
        repeat=args.repeat or 7,
        peers=not args.no_peers,
        memory=not args.no_memory,
        data_dir=args.data,
        json_path=args.json,
        plot_path=args.plot,
        progress=args.progress,
        training_step=args.training_step or args.training_step_only,
        training_step_threads=args.threads or (1, 2),
        training_step_dtypes=dtypes,
    )


def _tune(args):
    import json

    from .backends import _wisdom

    if args.show:
        wisdom = _wisdom.load()
        print(_wisdom.wisdom_path())
        shown = {key: wisdom.get(key, {}) for key in ("orders", "chunks", "prefetch")} if wisdom else None
        print(json.dumps(shown, indent=1) if wisdom else "no wisdom for this machine and version")
        return 0
    from .harness.tune import SIZES, tune

    if args.repeat < 1:
        raise SystemExit("--repeat must be >= 1")
    _, path = tune(sizes=args.sizes or SIZES, threads=args.threads, repeat=args.repeat)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
