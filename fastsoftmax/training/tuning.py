"""Hyper-parameter search for :class:`fastsoftmax.Softmax` on a validation split.

Design note
-----------
The CS231n procedure: train one model per (learning rate, regularization
strength) pair on the training split, measure its accuracy on the training
and validation splits, keep the model with the best validation accuracy.
Every model starts from the same seed, so pairs differ only in their
hyper-parameters.  The search is a plain loop (models are cheap and the
backends already use every core); a tqdm bar shows which pair is running.
The results come back as a :class:`TuningResult` that prints the table and
can draw the heat-map (:func:`fastsoftmax.training.visualize.plot_tuning_heatmap`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from .classifier import Softmax

__all__ = ["TuningResult", "grid_search"]


@dataclass
class TuningResult:
    """Outcome of :func:`grid_search`.

    Attributes
    ----------
    best_model : Softmax
        The model with the highest validation accuracy (first pair on ties).
    best_learning_rate, best_reg : float
    best_val_accuracy : float
    results : dict
        ``{(learning_rate, reg): (train_accuracy, val_accuracy)}`` for every pair.
    heatmap_path : str or None
        Where the heat-map PNG was written, if it was.
    """

    best_model: Softmax
    best_learning_rate: float
    best_reg: float
    best_val_accuracy: float
    results: dict = field(default_factory=dict)
    heatmap_path: str | None = None

    def table(self):
        """The results as a text table, one row per pair, best marked with ``*``."""
        lines = [f"{'learning rate':>14} {'reg':>10} {'train acc':>10} {'val acc':>10}"]
        for (lr, reg), (train_acc, val_acc) in sorted(self.results.items()):
            best = " *" if (lr, reg) == (self.best_learning_rate, self.best_reg) else ""
            lines.append(f"{lr:>14.3e} {reg:>10.3e} {train_acc:>10.4f} {val_acc:>10.4f}{best}")
        return "\n".join(lines)

    def plot(self, path):
        """Write the heat-map PNG of train and validation accuracy; return its path."""
        from .visualize import plot_tuning_heatmap

        self.heatmap_path = plot_tuning_heatmap(self.results, path)
        return self.heatmap_path


def grid_search(
    X_train,
    y_train,
    X_val,
    y_val,
    learning_rates,
    regularization_strengths,
    num_iters=1500,
    batch_size=200,
    backend=None,
    seed=0,
    progress=True,
    heatmap_path=None,
    verbose=False,
):
    """Train one :class:`Softmax` per (learning rate, reg) pair and keep the best.

    Parameters
    ----------
    X_train : array_like, shape (N, D)
    y_train : array_like, shape (N,)
    X_val : array_like, shape (M, D)
    y_val : array_like, shape (M,)
    learning_rates, regularization_strengths : sequence of float
        The grid (every combination is trained).
    num_iters, batch_size : int
        Passed to :meth:`Softmax.train`.
    backend : str or None
        Backend of every model (None: the fastest).
    seed : int or None
        Seed of every model.
    progress : bool
        Show a tqdm bar over the pairs.
    heatmap_path : str or os.PathLike, optional
        Also write the heat-map PNG there.
    verbose : bool
        Print each pair's accuracies as it finishes.

    Returns
    -------
    TuningResult
    """
    from tqdm.auto import tqdm

    learning_rates = list(learning_rates)
    regularization_strengths = list(regularization_strengths)
    if not learning_rates or not regularization_strengths:
        raise ValueError("learning_rates and regularization_strengths must each hold at least one value")
    pairs = list(itertools.product(learning_rates, regularization_strengths))
    results = {}
    best = None
    with tqdm(pairs, desc="grid search", disable=not progress) as bar:
        for lr, reg in bar:
            bar.set_postfix(lr=f"{lr:.1e}", reg=f"{reg:.1e}")
            model = Softmax(backend=backend, seed=seed)
            model.train(X_train, y_train, learning_rate=lr, reg=reg, num_iters=num_iters, batch_size=batch_size)
            accuracies = (model.score(X_train, y_train), model.score(X_val, y_val))
            results[(lr, reg)] = accuracies
            if verbose:
                bar.write(f"lr {lr:e} reg {reg:e} train accuracy: {accuracies[0]:f} val accuracy: {accuracies[1]:f}")
            if best is None or accuracies[1] > best[3]:
                best = (model, lr, reg, accuracies[1])
    result = TuningResult(*best, results=results)
    if heatmap_path is not None:
        result.plot(heatmap_path)
    return result
