"""Command line: ``fastsoftmax bench``.

Design note
-----------
A thin argparse layer; the work is in :mod:`fastsoftmax.benchmark` so that it
can be called from Python and tested without a subprocess.
"""

import argparse
import sys


def main(argv=None):
    """Entry point of the ``fastsoftmax`` command; returns the exit status."""
    parser = argparse.ArgumentParser(prog="fastsoftmax", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("bench", help="time every backend on CIFAR-sized batches and check they agree")
    bench.add_argument("--quick", action="store_true", help="N = 500 only (a smoke run)")
    bench.add_argument("--repeat", type=int, default=7, help="timed calls per backend (default 7)")
    args = parser.parse_args(argv)
    from . import benchmark

    return benchmark.run(quick=args.quick, repeat=args.repeat)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
