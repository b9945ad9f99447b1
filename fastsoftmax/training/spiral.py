"""The spiral case study of the CS231n notes: a linear classifier fails, a two-layer net succeeds.

Design note
-----------
"Putting it together: minimal neural network case study" trains, on 3 arms
of 100 points (:func:`fastsoftmax.training.data.make_spiral`), first a
linear softmax classifier with a bias, then a two-layer net with 100 hidden
units, both by full-batch gradient descent with step 1.0 and
regularisation 1e-3, and reports training accuracies of about 0.49 and
0.98.  :func:`run` repeats it with the package's parts:

* the linear model is ``fastsoftmax.softmax_loss(W, X, y, reg, b=b)``, the
  unregularised bias given as ``b`` (no column of ones appended to X),
  200 steps;
* the net is :class:`~fastsoftmax.training.net.TwoLayerNet` (``std=0.01``,
  ``batch_size=None`` for full-batch descent, no decay), 10000 steps.

The notes write the penalty as ``0.5 * reg * sum(W**2)``; the package's is
``reg * sum(W**2)``, so their ``reg = 1e-3`` is passed as ``5e-4``
(:data:`NOTES_REG`, :func:`package_reg`).  Both runs start from one seeded
generator, so the figures are reproducible; the pictures (data, each
model's decision regions, the net's loss) are written atomically.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

__all__ = ["run", "package_reg", "NOTES_REG", "train_linear", "add_arguments", "main"]

#: The notes' regularisation strength, in their ``0.5 * reg * sum(W**2)`` convention.
NOTES_REG = 1e-3


def package_reg(notes_reg):
    """Convert ``0.5 * reg * sum(W**2)`` (the notes') to ``reg * sum(W**2)`` (the package's)."""
    return notes_reg / 2


def train_linear(X, y, num_classes, step_size=1.0, reg=package_reg(NOTES_REG), num_steps=200, seed=0):
    """Full-batch gradient descent on the linear softmax classifier with bias.

    Parameters
    ----------
    X : ndarray, shape (N, D)
    y : ndarray, shape (N,)
    num_classes : int
    step_size : float
    reg : float
        Package convention, ``reg * sum(W**2)``.
    num_steps : int
    seed : int
        Initial weights are ``0.01 * N(0, 1)``, bias 0, as in the notes.

    Returns
    -------
    W : ndarray, shape (D, C)
    b : ndarray, shape (C,)
    losses : list of float
    """
    from .. import softmax_loss

    rng = np.random.default_rng(seed)
    W = 0.01 * rng.standard_normal((X.shape[1], num_classes))
    b = np.zeros(num_classes)
    losses = []
    for _ in range(num_steps):
        loss, dW, db = softmax_loss(W, X, y, reg, b=b)
        W = W - step_size * dW
        b = b - step_size * db
        losses.append(loss)
    return W, b, losses


def run(out_dir=".", json_path=None, linear_steps=200, net_steps=10000, hidden_size=100, step_size=1.0,
        notes_reg=NOTES_REG, n_per_class=100, n_classes=3, seed=0, backend=None, progress=False, echo=print):
    """The case study: train both models, report their accuracies, draw the pictures.

    Parameters
    ----------
    out_dir : str or os.PathLike
        Where the PNGs go (created if needed).
    json_path : str or os.PathLike, optional
        Also write the figures there as JSON (atomically).
    linear_steps, net_steps : int
        Full-batch gradient steps (the notes: 200 and 10000).
    hidden_size : int
        The net's hidden units (the notes: 100).
    step_size : float
        Both models' step (the notes: 1.0).
    notes_reg : float
        Regularisation in the notes' ``0.5 * reg`` convention (1e-3).
    n_per_class, n_classes : int
        The spiral (100 points per arm, 3 arms).
    seed : int
        Seed of the data and of both models.
    backend : str or None
        Net backend (None: the fastest).
    progress : bool
        tqdm bar over the net's steps.
    echo : callable
        Receives each line of the report.

    Returns
    -------
    dict
        ``linear_train_accuracy``, ``net_train_accuracy``, final losses,
        settings (including ``reg_package`` and ``reg_notes``), seconds and
        ``files``.
    """
    from .._files import report_outputs
    from ..backends._validate import integer
    from .data import make_spiral
    from .net import TwoLayerNet
    from .visualize import plot_decision_regions, plot_net_history, plot_points

    linear_steps = integer(linear_steps, "linear_steps", 1)
    net_steps = integer(net_steps, "net_steps", 1)
    X, y = make_spiral(n_per_class, n_classes, seed=seed)
    reg = package_reg(notes_reg)
    os.makedirs(out_dir, exist_ok=True)
    figures = dict(n_per_class=n_per_class, n_classes=n_classes, step_size=step_size, reg_notes=notes_reg,
                   reg_package=reg, reg_convention="loss adds reg_package * sum(W**2) = 0.5 * reg_notes * sum(W**2)",
                   linear_steps=linear_steps, net_steps=net_steps, hidden_size=hidden_size, seed=seed)

    t0 = time.perf_counter()
    W, b, linear_losses = train_linear(X, y, n_classes, step_size, reg, linear_steps, seed)
    figures.update(linear_seconds=time.perf_counter() - t0, linear_final_loss=linear_losses[-1],
                   linear_train_accuracy=float(np.mean(np.argmax(X @ W + b, axis=1) == y)))
    echo(f"linear softmax with bias: training accuracy {figures['linear_train_accuracy']:.4f} "
         f"(loss {figures['linear_final_loss']:.4f} after {linear_steps} steps)")

    net = TwoLayerNet(2, hidden_size, n_classes, std=0.01, seed=seed, backend=backend)
    t0 = time.perf_counter()
    history = net.train(X, y, X, y, learning_rate=step_size, learning_rate_decay=1.0, reg=reg,
                        num_iters=net_steps, batch_size=None, progress=progress)
    figures.update(net_seconds=time.perf_counter() - t0, net_backend=net.settings["backend"],
                   net_final_loss=history["loss_history"][-1],
                   net_train_accuracy=net.score(X, y))
    echo(f"two-layer net (h = {hidden_size}, {net.settings['backend']} backend): training accuracy "
         f"{figures['net_train_accuracy']:.4f} (loss {figures['net_final_loss']:.4f} after {net_steps} steps, "
         f"{figures['net_seconds']:.1f} s)")

    files = dict(
        data=plot_points(X, y, os.path.join(out_dir, "spiral_data.png"), title="Spiral data"),
        linear_regions=plot_decision_regions(
            lambda P: np.argmax(P @ W + b, axis=1), X, y, os.path.join(out_dir, "spiral_linear.png"),
            title=f"Linear softmax: train accuracy {figures['linear_train_accuracy']:.2f}"),
        net_regions=plot_decision_regions(
            net.predict, X, y, os.path.join(out_dir, "spiral_net.png"),
            title=f"Two-layer net: train accuracy {figures['net_train_accuracy']:.2f}"),
    )
    files["net_history"] = plot_net_history(history, os.path.join(out_dir, "spiral_net_history.png"),
                                            title="Spiral net")
    return report_outputs(figures, files, json_path, echo)


def add_arguments(parser):
    """Add the case study's options to an ``argparse`` parser (for ``fastsoftmax spiral``)."""
    parser.add_argument("--out", default=".", help="directory for the PNGs (default: .)")
    parser.add_argument("--json", dest="json_path", help="also write every figure to this JSON file")
    parser.add_argument("--net-steps", type=int, default=10000, help="the net's gradient steps (default 10000)")
    parser.add_argument("--linear-steps", type=int, default=200, help="the linear model's steps (default 200)")
    parser.add_argument("--hidden-size", type=int, default=100, help="hidden units (default 100)")
    parser.add_argument("--backend", help="net backend (default: the fastest)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--progress", action="store_true", help="progress bar over the net's steps")
    return parser


def run_args(args):
    """Run the case study with parsed :func:`add_arguments` options; returns the exit status."""
    run(out_dir=args.out, json_path=args.json_path, linear_steps=args.linear_steps, net_steps=args.net_steps,
        hidden_size=args.hidden_size, seed=args.seed, backend=args.backend, progress=args.progress)
    return 0


def main(argv=None):
    """``python -m fastsoftmax.training.spiral [--out DIR] [--json PATH]``; returns the exit status."""
    parser = add_arguments(argparse.ArgumentParser(prog="fastsoftmax spiral", description=__doc__.splitlines()[0]))
    return run_args(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
