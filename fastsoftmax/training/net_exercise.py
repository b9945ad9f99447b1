"""The CS231n two-layer net exercise on CIFAR-10 end to end: ``fastsoftmax net --data DIR``.

Design note
-----------
The sibling of :mod:`fastsoftmax.training.exercise` (the linear softmax)
for :class:`~fastsoftmax.training.net.TwoLayerNet`, built from the same
parts: the CIFAR-10 loader and splits (:mod:`fastsoftmax.training.data`),
the sparse gradient check (:mod:`fastsoftmax.training.gradcheck`), tqdm and
the Agg pictures (:mod:`fastsoftmax.training.visualize`).  :func:`run` does

1. load and split (mean image subtracted; the loader's bias column is
   dropped, since the net has its own biases ``b1``, ``b2``);
2. the sanity check: small random weights give a loss near ``log(10)``;
3. the gradient check of every parameter (W1, b1, W2, b2), in float64 on
   the dev batch (real pixels), with and without regularisation;
4. the search over hidden size, learning rate, its decay and ``reg``, each
   model trained from the same seed, the best kept by validation accuracy;
5. the best model's test accuracy, its first layer as 32x32x3 tiles, its
   loss and accuracy curves, the model itself (``net.npz``) and the JSON.

Everything is returned in one dict, so the command line, the tests and a
notebook share it.  ``reg`` is in the package's convention, ``reg *
(sum(W1**2) + sum(W2**2))``, which is also the current CS231n
``neural_net.py``'s.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import sys
import time

import numpy as np

__all__ = ["run", "DEFAULT_GRID", "add_arguments", "main"]

#: The search :func:`run` makes by default: chosen from runs on the 4585-image
#: subset (docs/net.md), where it takes a few minutes on two cores.
DEFAULT_GRID = dict(hidden_sizes=[100, 200], learning_rates=[1e-3], learning_rate_decays=[0.95],
                    regularization_strengths=[0.25, 0.5])

#: Settings of the gradient check: a net of this many hidden units in float64
#: on the dev batch, with weights and biases of scale ``std``.  The
#: exercise's ``std = 1e-4`` makes the gradients of b1 so small (~1e-5)
#: that the difference quotient's rounding (``eps * loss / h`` ~ 2e-11)
#: alone is a relative error of 1e-6; at ``std = 1e-2`` every entry stands
#: well above it.  Steps ``h`` per parameter move the scores by about 1e-5
#: each: W1's by h * |x| * |W2| (pixels ~100, W2 ~0.01), W2's by h * |hidden|
#: (~30 at this scale, hence 1e-6; with 1e-5 the truncation error of W2 was
#: 5e-7, measured on the subset's dev batch).
GRADCHECK = dict(hidden_size=10, std=1e-2, h=dict(W1=1e-5, b1=1e-5, W2=1e-6, b2=1e-5), num_checks=10, reg=0.05)


def _load(data, num_training, num_validation, num_dev, dtype, seed):
    from .data import load_cifar10, split_cifar10

    loaded = load_cifar10(data)
    n_train = len(loaded[1])
    if num_validation is None:  # CS231n's 1000 of 50000; 500 (at most a tenth) of a smaller set
        num_validation = min(1000 if n_train >= 50000 else 500, n_train // 10)
    if num_training is None:
        num_training = min(49000, n_train - num_validation)
    s = split_cifar10(loaded, num_training=num_training, num_validation=num_validation, num_test=None,
                      num_dev=min(num_dev, num_training), dtype=dtype, seed=seed)
    # The net has its own biases: drop the bias column of ones (one copy per split, once).
    drop = {k: np.ascontiguousarray(getattr(s, k)[:, :-1]) for k in ("X_train", "X_val", "X_test", "X_dev")}
    return s._replace(**drop)


def gradient_check(X, y, hidden_size, num_classes, std, h, num_checks, reg, seed, backend=None):
    """Largest relative error of each parameter's gradient against centred differences.

    Parameters
    ----------
    X : ndarray, shape (N, D)
    y : ndarray, shape (N,)
    hidden_size, num_classes : int
    std : float
        Scale of the random weights and biases (biases are not 0, so that
        the check does not start on the ReLU's kinks).
    h : float or dict of str to float
        Step of the centred differences, or one per parameter.
    num_checks : int
        Random entries per parameter.
    reg : float
    seed : int
    backend : str or None
        Net backend whose gradients are checked.

    Returns
    -------
    errors : dict of str to float
        ``{"W1": max rel. error, "b1": ..., "W2": ..., "b2": ...}`` in float64.
    skipped : int
        Entries drawn but not checked because ``+-h`` would move a hidden
        unit's pre-activation across the ReLU's kink, where the loss has no
        derivative and the difference quotient measures nothing (the CS231n
        notes' "kinks in the objective"; about one draw in a hundred on the
        dev batch with ``h = 1e-5``).
    """
    from .. import backends
    from .gradcheck import _centred, rel_error
    from .net import TwoLayerNet

    X = np.asarray(X, dtype=np.float64)
    net = TwoLayerNet(X.shape[1], hidden_size, num_classes, std=std, seed=seed, backend=backend)
    rng = np.random.default_rng(seed)
    params = dict(net.params, b1=std * rng.standard_normal(hidden_size), b2=std * rng.standard_normal(num_classes))
    loss_fn = backends.get(net._backend_name(), contract="net")
    _, grads = loss_fn(params, X, y, reg)
    pre = X @ params["W1"] + params["b1"]  # (N, H) pre-activations
    steps = h if isinstance(h, dict) else dict.fromkeys(("W1", "b1", "W2", "b2"), h)

    def crosses_kink(k, ix):
        """Whether moving entry ``ix`` of ``k`` by +-h moves some pre-activation across 0."""
        h = steps[k]
        if k == "W1":
            return bool(np.any(np.abs(pre[:, ix[1]]) <= h * np.abs(X[:, ix[0]])))
        if k == "b1":
            return bool(np.any(np.abs(pre[:, ix[0]]) <= h))
        return False  # the second layer is smooth in W2 and b2

    errors, skipped = {}, 0
    for k in ("W1", "b1", "W2", "b2"):
        x = np.array(params[k], dtype=np.float64)
        def f(value, k=k):
            return loss_fn({**params, k: value}, X, y, reg)[0]

        worst, checked = 0.0, 0
        for _ in range(100 * num_checks):  # draws, so a net with every entry at a kink still ends
            ix = tuple(int(rng.integers(m)) for m in x.shape)
            if crosses_kink(k, ix):
                skipped += 1
                continue
            worst = max(worst, float(rel_error(_centred(f, x, ix, steps[k]), grads[k][ix])))
            checked += 1
            if checked == num_checks:
                break
        errors[k] = worst
    return errors, skipped


def run(data, out_dir=".", json_path=None, hidden_sizes=None, learning_rates=None, learning_rate_decays=None,
        regularization_strengths=None, num_iters=2000, batch_size=200, num_training=None, num_validation=None,
        dtype=np.float32, backend=None, seed=0, progress=True, echo=print):
    """Run the two-layer net exercise on a CIFAR-10 directory and return its figures.

    Parameters
    ----------
    data : str or os.PathLike
        A ``cifar-10-batches-py`` directory.
    out_dir : str or os.PathLike
        Where the PNGs and the model go (created if needed).
    json_path : str or os.PathLike, optional
        Also write the figures there as JSON (atomically).
    hidden_sizes, learning_rates, learning_rate_decays, regularization_strengths : sequence, optional
        The grid (every combination is trained; defaults :data:`DEFAULT_GRID`).
    num_iters, batch_size : int
        SGD steps and examples per step of every model.
    num_training, num_validation : int, optional
        Split sizes (default: CS231n's 49000 / 1000, or on a smaller set
        500 (at most a tenth) for validation and the rest for training).
    dtype : {numpy.float32, numpy.float64}
        Dtype of the data and the models (the gradient check is float64 always).
    backend : str or None
        Net backend (None: the fastest).
    seed : int
    progress : bool
        tqdm bars (the grid, and each model's steps).
    echo : callable
        Receives each line of the report.

    Returns
    -------
    dict
        ``sanity_loss``, ``expected_sanity_loss``, ``gradcheck_rel_errors``
        (per parameter), ``gradcheck_max_rel_error``, ``tuning`` (one row per
        combination), ``best`` (its settings), ``val_accuracy``,
        ``train_accuracy``, ``test_accuracy``, ``seconds``, ``files``.
    """
    from tqdm.auto import tqdm

    from .._files import report_outputs
    from ..backends._validate import integer
    from .net import TwoLayerNet
    from .visualize import plot_first_layer, plot_net_history

    grid = dict(DEFAULT_GRID)
    for key, value in (("hidden_sizes", hidden_sizes), ("learning_rates", learning_rates),
                       ("learning_rate_decays", learning_rate_decays),
                       ("regularization_strengths", regularization_strengths)):
        if value is not None:
            value = list(value)
            if not value:
                raise ValueError(f"{key} must hold at least one value")
            grid[key] = value
    num_iters = integer(num_iters, "num_iters", 1)
    batch_size = integer(batch_size, "batch_size", 1)
    started = time.perf_counter()
    s = _load(data, num_training, num_validation, 50, dtype, seed)
    os.makedirs(out_dir, exist_ok=True)
    C = len(s.class_names)
    D = s.X_train.shape[1]
    figures = dict(data=os.fspath(data), num_train=len(s.y_train), num_val=len(s.y_val), num_test=len(s.y_test),
                   num_dev=len(s.y_dev), dtype=np.dtype(dtype).name, num_iters=num_iters, batch_size=batch_size,
                   grid=grid, reg_convention="loss adds reg * (sum(W1**2) + sum(W2**2)); biases not penalised")
    echo(f"data: {figures['data']}: {figures['num_train']} train, {figures['num_val']} val, "
         f"{figures['num_test']} test, {figures['num_dev']} dev examples, D = {D}")

    # 1. Sanity check: tiny random weights give a loss near -log(1/C).
    probe = TwoLayerNet(D, grid["hidden_sizes"][0], C, std=1e-4, seed=seed, dtype=dtype, backend=backend)
    sanity, _ = probe.loss(s.X_dev, s.y_dev, reg=0.0)
    figures.update(sanity_loss=sanity, expected_sanity_loss=math.log(C))
    echo(f"sanity check: loss {sanity:.4f} vs -log(1/{C}) = {math.log(C):.4f}")

    # 2. Gradient check of every parameter, float64, with and without reg.
    errors, skipped = {}, 0
    for reg in (0.0, GRADCHECK["reg"]):
        per_param, n_skipped = gradient_check(s.X_dev, s.y_dev, GRADCHECK["hidden_size"], C, GRADCHECK["std"],
                                              GRADCHECK["h"], GRADCHECK["num_checks"], reg, seed, backend)
        skipped += n_skipped
        for k, e in per_param.items():
            errors[k] = max(errors.get(k, 0.0), e)
    figures.update(gradcheck_rel_errors=errors, gradcheck_max_rel_error=max(errors.values()),
                   gradcheck_skipped_at_kinks=skipped, gradcheck_settings=dict(GRADCHECK, regs=[0.0, GRADCHECK["reg"]]))
    echo("gradient check (float64, dev batch): "
         + ", ".join(f"{k} {e:.2e}" for k, e in errors.items()) + " (max relative error)")

    # 3. The search.
    combos = list(itertools.product(grid["hidden_sizes"], grid["learning_rates"], grid["learning_rate_decays"],
                                    grid["regularization_strengths"]))
    rows, best = [], None
    with tqdm(combos, desc="grid search", disable=not progress) as bar:
        for hidden, lr, decay, reg in bar:
            bar.set_postfix(hidden=hidden, lr=f"{lr:.0e}", reg=f"{reg:.0e}")
            t0 = time.perf_counter()
            net = TwoLayerNet(D, hidden, C, std=1e-4, seed=seed, dtype=dtype, backend=backend)
            history = net.train(s.X_train, s.y_train, s.X_val, s.y_val, learning_rate=lr,
                                learning_rate_decay=decay, reg=reg, num_iters=num_iters, batch_size=batch_size,
                                progress=progress)
            row = dict(hidden_size=hidden, learning_rate=lr, learning_rate_decay=decay, reg=reg,
                       train_accuracy=net.score(s.X_train, s.y_train), val_accuracy=net.score(s.X_val, s.y_val),
                       final_loss=history["loss_history"][-1], seconds=time.perf_counter() - t0)
            rows.append(row)
            if best is None or row["val_accuracy"] > best[0]["val_accuracy"]:
                best = (row, net, history)
    figures["tuning"] = rows
    echo(_table(rows, best[0]))
    row, net, history = best
    figures.update(best={k: row[k] for k in ("hidden_size", "learning_rate", "learning_rate_decay", "reg")},
                   backend=net.settings["backend"], val_accuracy=row["val_accuracy"],
                   train_accuracy=row["train_accuracy"], test_accuracy=net.score(s.X_test, s.y_test),
                   history=history)
    echo(f"best validation accuracy: {row['val_accuracy']:.4f} (hidden {row['hidden_size']}, learning rate "
         f"{row['learning_rate']:.1e}, decay {row['learning_rate_decay']}, reg {row['reg']:.1e})")
    echo(f"test accuracy: {figures['test_accuracy']:.4f}")

    # 4. Pictures and the model.
    net.class_names = list(s.class_names)
    net.mean_image = s.mean_image
    files = dict(first_layer=plot_first_layer(net.params["W1"], os.path.join(out_dir, "net_first_layer.png")),
                 curves=plot_net_history(history, os.path.join(out_dir, "net_curves.png"), title="CIFAR-10 net"),
                 model=os.path.join(out_dir, "net.npz"))
    net.save(files["model"])
    figures["seconds"] = time.perf_counter() - started
    return report_outputs(figures, files, json_path, echo)


def _table(rows, best):
    lines = [f"{'hidden':>7} {'lr':>9} {'decay':>6} {'reg':>9} {'train acc':>10} {'val acc':>8} {'s':>7}"]
    for r in rows:
        mark = " *" if r is best else ""
        lines.append(f"{r['hidden_size']:>7} {r['learning_rate']:>9.2e} {r['learning_rate_decay']:>6.3g} "
                     f"{r['reg']:>9.2e} {r['train_accuracy']:>10.4f} {r['val_accuracy']:>8.4f} "
                     f"{r['seconds']:>7.1f}{mark}")
    return "\n".join(lines)


def _float_list(text):
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected at least one number, got {text!r}")
    return values


def _int_list(text):
    values = _float_list(text)
    if any(v != int(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    return [int(v) for v in values]


def add_arguments(parser):
    """Add the exercise's options to an ``argparse`` parser (for ``fastsoftmax net``)."""
    parser.add_argument("--data", required=True, help="cifar-10-batches-py directory")
    parser.add_argument("--out", default=".", help="directory for the PNGs and the model (default: .)")
    parser.add_argument("--json", dest="json_path", help="also write every figure to this JSON file")
    parser.add_argument("--hidden-sizes", type=_int_list, metavar="H,H", help="default 100,200")
    parser.add_argument("--learning-rates", type=_float_list, metavar="LR,LR", help="default 1e-3")
    parser.add_argument("--decays", type=_float_list, metavar="D,D", help="learning-rate decay per epoch (default 0.95)")
    parser.add_argument("--regs", type=_float_list, metavar="R,R",
                        help="reg * (sum(W1**2) + sum(W2**2)) strengths (default 0.25,0.5)")
    parser.add_argument("--num-iters", type=int, default=2000, help="SGD steps per model (default 2000)")
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--num-training", type=int, help="training images (default 49000 or what exists)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--backend", help="net backend (default: the fastest)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    return parser


def run_args(args):
    """Run the exercise with parsed :func:`add_arguments` options; returns the exit status."""
    run(args.data, out_dir=args.out, json_path=args.json_path, hidden_sizes=args.hidden_sizes,
        learning_rates=args.learning_rates, learning_rate_decays=args.decays,
        regularization_strengths=args.regs, num_iters=args.num_iters, batch_size=args.batch_size,
        num_training=args.num_training, dtype=np.dtype(args.dtype), backend=args.backend, seed=args.seed,
        progress=args.progress)
    return 0


def main(argv=None):
    """``python -m fastsoftmax.training.net_exercise --data DIR [...]``; returns the exit status."""
    parser = add_arguments(argparse.ArgumentParser(prog="fastsoftmax net", description=__doc__.splitlines()[0]))
    return run_args(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
