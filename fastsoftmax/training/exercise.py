"""The CS231n softmax exercise end to end: ``python -m fastsoftmax.training.exercise``.

Design note
-----------
One function, :func:`run`, does the whole exercise with the library's public
pieces (data, gradcheck, Softmax, grid search, pictures) and returns every
figure in a dict, so the command line (``fastsoftmax train``, or
``python -m fastsoftmax.training.exercise``), the example script and the tests all share it.
Without ``data`` it runs on the spiral toy set, so it works on any machine;
the CIFAR-only steps (weight templates) are skipped there.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np

__all__ = ["run", "add_arguments", "main"]

#: CS231n-style grid for CIFAR-10 (reg * sum(W**2) convention) and for the spiral.
CIFAR_GRID = dict(learning_rates=[1e-6, 2e-6], regularization_strengths=[1e3, 5e3])
SPIRAL_GRID = dict(learning_rates=[0.1, 1.0], regularization_strengths=[1e-4, 1e-3])


def _timed(f, repeat, warm_up=True):
    """Best of ``repeat`` calls of ``f``, after one untimed warm-up call (JIT, caches)."""
    result = f() if warm_up else None
    best = math.inf
    for _ in range(repeat):
        t = time.perf_counter()
        result = f()
        best = min(best, time.perf_counter() - t)
    return result, best


def _load(data, num_training, num_validation, seed):
    from .data import make_spiral

    if data is None:
        X, y = make_spiral(seed=seed)
        X = np.c_[X, np.ones(len(X))]
        order = np.random.default_rng(seed).permutation(len(X))
        X, y = X[order], y[order]
        n_val = len(X) // 5
        # The spiral has no held-out set: train / val / test / dev are cut from it.
        return dict(X_train=X[n_val:], y_train=y[n_val:], X_val=X[:n_val], y_val=y[:n_val],
                    X_test=X[:n_val], y_test=y[:n_val], X_dev=X[n_val:], y_dev=y[n_val:],
                    mean_image=None, class_names=[f"arm {k}" for k in range(y.max() + 1)])
    from .data import load_cifar10, split_cifar10

    loaded = load_cifar10(data)
    n_train = len(loaded[1])
    if num_validation is None:  # CS231n's 1000 of 50000; 500 (at most a tenth) of a smaller set
        num_validation = min(1000 if n_train >= 50000 else 500, n_train // 10)
    if num_training is None:
        num_training = min(49000, n_train - num_validation)
    return split_cifar10(loaded, num_training=num_training, num_validation=num_validation, num_test=None,
                         num_dev=min(500, num_training), seed=seed)._asdict()


def run(data=None, out_dir=".", json_path=None, num_iters=None, num_training=None, num_validation=None,
        learning_rates=None, regularization_strengths=None, seed=0, progress=True, echo=print):
    """Run the softmax exercise and return its figures.

    Parameters
    ----------
    data : str or os.PathLike or None
        A ``cifar-10-batches-py`` directory; None uses the spiral data.
    out_dir : str or os.PathLike
        Where the PNGs and the model are written (created if needed).
    json_path : str or os.PathLike, optional
        Also write the figures there as JSON (atomically).
    num_iters : int, optional
        SGD steps per model in the grid search (default 600 on CIFAR, 200 on the spiral).
    num_training, num_validation : int, optional
        CIFAR split sizes (default: as CS231n, 49000 / 1000; on a smaller
        set 500 (at most a tenth) for validation and the rest for training).
    learning_rates, regularization_strengths : sequence of float, optional
        The grid (defaults: :data:`CIFAR_GRID` or :data:`SPIRAL_GRID`).
    seed : int
    progress : bool
        tqdm bars.
    echo : callable
        Receives each line of the report (``print`` by default).

    Returns
    -------
    dict
        ``sanity_loss``, ``expected_sanity_loss``, ``gradcheck_rel_errors``,
        ``gradcheck_max_rel_error``, ``naive_seconds``, ``fastest_seconds``,
        ``fastest_backend``, ``speedup``, ``loss_difference``,
        ``grad_difference``, ``tuning`` (list of rows), ``best_learning_rate``,
        ``best_reg``, ``val_accuracy``, ``train_accuracy``, ``test_accuracy``,
        ``files``.
    """
    from .. import backends
    from .._files import report_outputs
    from .classifier import Softmax
    from .gradcheck import grad_check_sparse
    from ..harness.agreement import relative_error
    from .tuning import grid_search
    from .visualize import plot_loss, plot_weights

    cifar = data is not None
    s = _load(data, num_training, num_validation, seed)
    grid = CIFAR_GRID if cifar else SPIRAL_GRID
    learning_rates = list(learning_rates or grid["learning_rates"])
    regularization_strengths = list(regularization_strengths or grid["regularization_strengths"])
    num_iters = num_iters if num_iters is not None else (600 if cifar else 200)
    os.makedirs(out_dir, exist_ok=True)
    C = int(max(s["y_train"].max(), s["y_val"].max())) + 1
    figures = dict(data=os.fspath(data) if cifar else "spiral", num_train=len(s["y_train"]),
                   num_val=len(s["y_val"]), num_test=len(s["y_test"]), num_dev=len(s["y_dev"]))
    echo(f"data: {figures['data']}: {figures['num_train']} train, {figures['num_val']} val, "
         f"{figures['num_test']} test, {figures['num_dev']} dev examples, D = {s['X_train'].shape[1]}")

    # 1. Sanity check: tiny random weights give loss ~ -log(1/C).
    X_dev, y_dev = s["X_dev"], s["y_dev"]
    W0 = 1e-4 * np.random.default_rng(seed).standard_normal((X_dev.shape[1], C))
    fastest = backends.fastest()
    loss_fn = backends.get(fastest)
    sanity, dW = loss_fn(W0, X_dev, y_dev, 0.0)
    figures.update(sanity_loss=sanity, expected_sanity_loss=-math.log(1.0 / C))
    echo(f"sanity check: loss {sanity:.4f} vs -log(1/{C}) = {-math.log(1.0 / C):.4f}")

    # 2. Gradient check (h = 1e-6: see fastsoftmax.training.gradcheck on raw pixels), with and without reg.
    errors = []
    for reg in (0.0, 5e1 if cifar else 1e-2):
        _, dW = loss_fn(W0, X_dev, y_dev, reg)
        errors += grad_check_sparse(lambda w: loss_fn(w, X_dev, y_dev, reg)[0], W0, dW, num_checks=10,
                                    h=1e-6, seed=seed).tolist()
    figures.update(gradcheck_rel_errors=errors, gradcheck_max_rel_error=max(errors))
    echo(f"gradient check: max relative error {max(errors):.2e} over {len(errors)} entries")

    # 3. Naive (pure-Python reference) vs fastest backend on the dev batch.
    naive = backends.get("python")
    (ref_loss, ref_dW), naive_s = _timed(lambda: naive(W0, X_dev, y_dev, 5e-6), repeat=1, warm_up=False)
    (fast_loss, fast_dW), fast_s = _timed(lambda: loss_fn(W0, X_dev, y_dev, 5e-6), repeat=5)
    figures.update(naive_seconds=naive_s, fastest_seconds=fast_s, fastest_backend=fastest,
                   speedup=naive_s / fast_s, loss_difference=abs(ref_loss - fast_loss),
                   grad_difference=relative_error(fast_dW, ref_dW))
    echo(f"naive (python) {naive_s * 1e3:.1f} ms vs fastest ({fastest}) {fast_s * 1e3:.2f} ms: "
         f"{naive_s / fast_s:.0f}x faster; loss difference {figures['loss_difference']:.2e}, "
         f"gradient difference {figures['grad_difference']:.2e} (norm-wise relative)")

    # 4. Tuning on the validation split.
    heatmap = os.path.join(out_dir, "tuning.png")
    result = grid_search(s["X_train"], s["y_train"], s["X_val"], s["y_val"], learning_rates,
                         regularization_strengths, num_iters=num_iters, seed=seed, progress=progress,
                         heatmap_path=heatmap)
    echo(result.table())
    model = result.best_model
    figures.update(
        tuning=[dict(learning_rate=lr, reg=reg, train_accuracy=tr, val_accuracy=va)
                for (lr, reg), (tr, va) in sorted(result.results.items())],
        best_learning_rate=result.best_learning_rate, best_reg=result.best_reg,
        val_accuracy=result.best_val_accuracy, train_accuracy=result.results[
            (result.best_learning_rate, result.best_reg)][0],
        test_accuracy=model.score(s["X_test"], s["y_test"]))
    echo(f"best validation accuracy: {figures['val_accuracy']:.4f} (learning rate "
         f"{figures['best_learning_rate']:.1e}, reg {figures['best_reg']:.1e})")
    echo(f"test accuracy: {figures['test_accuracy']:.4f}")

    # 5. Pictures and the model: the loss curve of the best pair, retrained with the same seed.
    history = Softmax(backend=model.backend, seed=seed).train(
        s["X_train"], s["y_train"], learning_rate=result.best_learning_rate, reg=result.best_reg,
        num_iters=num_iters)
    files = dict(tuning_heatmap=heatmap, loss_curve=plot_loss(history, os.path.join(out_dir, "loss.png")))
    if cifar:
        files["weights"] = plot_weights(model.W, os.path.join(out_dir, "weights.png"), s["class_names"])
    model.class_names = list(s["class_names"])
    model.mean_image = s["mean_image"]
    files["model"] = os.path.join(out_dir, "softmax.npz")
    model.save(files["model"])
    return report_outputs(figures, files, json_path, echo)


def add_arguments(parser):
    """Add the exercise's options to an ``argparse`` parser (for ``fastsoftmax train``)."""
    parser.add_argument("--data", help="cifar-10-batches-py directory (default: the spiral toy data)")
    parser.add_argument("--out", default=".", help="directory for the PNGs and the model (default: .)")
    parser.add_argument("--json", dest="json_path", help="also write every figure to this JSON file")
    parser.add_argument("--num-iters", type=int, help="SGD steps per model (default 600 CIFAR, 200 spiral)")
    parser.add_argument("--num-training", type=int, help="training images (default 49000 or what exists)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    return parser


def main(argv=None):
    """``python -m fastsoftmax.training.exercise [--data DIR] [--json PATH] ...``; returns the exit status."""
    parser = add_arguments(argparse.ArgumentParser(prog="fastsoftmax train", description=__doc__.splitlines()[0]))
    return run_args(parser.parse_args(argv))


def run_args(args):
    """Run the exercise with parsed :func:`add_arguments` options; returns the exit status."""
    run(data=args.data, out_dir=args.out, json_path=args.json_path, num_iters=args.num_iters,
        num_training=args.num_training, seed=args.seed, progress=args.progress)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
