"""Pictures of a trained softmax classifier: class templates, loss curve, tuning heat-map.

Design note
-----------
Figures are built with matplotlib's object-oriented API on an Agg canvas
(``matplotlib.figure.Figure``, never ``pyplot``), so plotting works on a
headless machine and never changes the global backend of a user's session or
notebook.  matplotlib is imported only when a picture is drawn, so
``import fastsoftmax`` stays light.  Every PNG is written atomically
(:func:`fastsoftmax._files.atomic_write`).
"""

from __future__ import annotations

import math

import numpy as np

from .._files import atomic_write

__all__ = ["weight_images", "plot_weights", "plot_loss", "plot_tuning_heatmap"]


def _figure(figsize):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path):
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=100)
    return str(path)


def weight_images(W, image_shape=(32, 32, 3)):
    """The weight columns as images scaled to ``[0, 255]`` (CS231n's rescaling).

    Parameters
    ----------
    W : array_like, shape (D, C)
        Weights; a trailing bias row (D = prod(image_shape) + 1) is dropped.
    image_shape : tuple of int
        Shape of one image in the data's flattening order (HWC for
        :func:`fastsoftmax.training.data.get_cifar10_data`).

    Returns
    -------
    ndarray, shape (C, *image_shape), float64 in [0, 255]
        One min-max scale for all classes, so templates are comparable.
    """
    W = np.asarray(W, dtype=np.float64)
    size = math.prod(image_shape)
    if W.ndim != 2 or W.shape[0] not in (size, size + 1):
        raise ValueError(
            f"W must have shape ({size}, C) or ({size + 1}, C) with a bias row for images of shape "
            f"{image_shape}, got {W.shape}"
        )
    w = W[:size].T.reshape(W.shape[1], *image_shape)
    lo, hi = w.min(), w.max()
    return np.clip(255.0 * (w - lo) / (hi - lo), 0, 255) if hi > lo else np.zeros_like(w)


def plot_weights(W, path, class_names=None, ncols=5, image_shape=(32, 32, 3)):
    """Draw the learned weights as one template image per class (a grid) to a PNG.

    Parameters
    ----------
    W : array_like, shape (D, C)
        See :func:`weight_images`.
    path : str or os.PathLike
        PNG to write.
    class_names : sequence of str, optional
        Titles, one per class.
    ncols : int
        Templates per row (ten CIFAR-10 classes make a 2 x 5 grid).

    Returns
    -------
    str
        ``path``.
    """
    images = weight_images(W, image_shape)
    C = len(images)
    if class_names is not None and len(class_names) != C:
        raise ValueError(f"class_names has {len(class_names)} names for {C} classes")
    ncols = min(ncols, C)
    nrows = math.ceil(C / ncols)
    fig = _figure((1.6 * ncols, 1.8 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < C:
            ax.imshow(images[k].astype(np.uint8))
            ax.set_title(class_names[k] if class_names is not None else f"class {k}", fontsize=9)
    return _save(fig, path)


def plot_loss(loss_history, path, title="Training loss"):
    """Draw the loss per SGD iteration to a PNG.

    Parameters
    ----------
    loss_history : sequence of float
        As returned by :meth:`fastsoftmax.Softmax.train`.
    path : str or os.PathLike

    Returns
    -------
    str
        ``path``.
    """
    loss_history = np.asarray(loss_history, dtype=np.float64)
    if loss_history.ndim != 1 or loss_history.size == 0:
        raise ValueError(f"loss_history must be a non-empty 1-D sequence, got shape {loss_history.shape}")
    fig = _figure((6, 4))
    ax = fig.subplots()
    ax.plot(np.arange(len(loss_history)), loss_history, lw=1)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_tuning_heatmap(results, path):
    """Draw train and validation accuracy over the (learning rate, reg) grid to a PNG.

    Parameters
    ----------
    results : dict
        ``{(learning_rate, reg): (train_accuracy, val_accuracy)}``, as in
        :attr:`fastsoftmax.training.tuning.TuningResult.results`.
    path : str or os.PathLike

    Returns
    -------
    str
        ``path``.
    """
    lrs = sorted({lr for lr, _ in results})
    regs = sorted({reg for _, reg in results})
    fig = _figure((4.5 + 1.2 * len(regs), 1.5 + 0.6 * len(lrs)))
    axes = fig.subplots(1, 2)
    for which, (ax, title) in enumerate(zip(axes, ("train accuracy", "validation accuracy"))):
        grid = np.full((len(lrs), len(regs)), np.nan)
        for (lr, reg), accuracies in results.items():
            grid[lrs.index(lr), regs.index(reg)] = accuracies[which]
        image = ax.imshow(grid, cmap="viridis", aspect="auto")
        for i in range(len(lrs)):
            for j in range(len(regs)):
                if not np.isnan(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.3f}", ha="center", va="center", color="w", fontsize=8)
        ax.set_xticks(range(len(regs)), [f"{r:.0e}" for r in regs], rotation=45)
        ax.set_yticks(range(len(lrs)), [f"{lr:.0e}" for lr in lrs])
        ax.set_xlabel("regularization strength")
        ax.set_ylabel("learning rate")
        ax.set_title(title)
        fig.colorbar(image, ax=ax)
    return _save(fig, path)
