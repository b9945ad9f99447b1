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

__all__ = [
    "weight_images",
    "plot_weights",
    "plot_loss",
    "plot_tuning_heatmap",
    "plot_points",
    "plot_decision_regions",
    "plot_first_layer",
    "plot_net_history",
]


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


def _check_points(X, y):
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    if X.ndim != 2 or X.shape[1] != 2 or y.shape != (X.shape[0],):
        raise ValueError(f"X must have shape (N, 2) and y shape (N,), got {X.shape} and {y.shape}")
    return X, y


def plot_points(X, y, path, title="Data"):
    """Scatter plot of 2-D points coloured by class, to a PNG.

    Parameters
    ----------
    X : array_like, shape (N, 2)
    y : array_like, shape (N,), integer labels
    path : str or os.PathLike

    Returns
    -------
    str
        ``path``.
    """
    X, y = _check_points(X, y)
    fig = _figure((5, 5))
    ax = fig.subplots()
    ax.scatter(X[:, 0], X[:, 1], c=y, s=20, cmap="brg", edgecolors="k", linewidths=0.3)
    ax.set_aspect("equal")
    ax.set_title(title)
    return _save(fig, path)


def plot_decision_regions(predict, X, y, path, title="Decision regions", resolution=200):
    """The class a 2-D classifier predicts over the plane, with the data on top, to a PNG.

    Parameters
    ----------
    predict : callable
        ``predict(points) -> labels`` for an (M, 2) float64 array.
    X : array_like, shape (N, 2)
    y : array_like, shape (N,)
    path : str or os.PathLike
    title : str
    resolution : int
        Grid points per axis.

    Returns
    -------
    str
        ``path``.
    """
    X, y = _check_points(X, y)
    pad = 0.1 * max(np.ptp(X[:, 0]), np.ptp(X[:, 1]), 1e-12)
    xs = np.linspace(X[:, 0].min() - pad, X[:, 0].max() + pad, resolution)
    ys = np.linspace(X[:, 1].min() - pad, X[:, 1].max() + pad, resolution)
    gx, gy = np.meshgrid(xs, ys)
    labels = np.asarray(predict(np.c_[gx.ravel(), gy.ravel()])).reshape(gx.shape)
    fig = _figure((5, 5))
    ax = fig.subplots()
    n_classes = int(max(labels.max(), y.max())) + 1
    ax.contourf(gx, gy, labels, levels=np.arange(n_classes + 1) - 0.5, cmap="brg", alpha=0.3)
    ax.scatter(X[:, 0], X[:, 1], c=y, s=20, cmap="brg", vmin=0, vmax=n_classes - 1, edgecolors="k",
               linewidths=0.3)
    ax.set_aspect("equal")
    ax.set_title(title)
    return _save(fig, path)


def plot_first_layer(W1, path, ncols=10, image_shape=(32, 32, 3), max_units=100):
    """A network's first-layer weights, one tile per hidden unit, to a PNG.

    Each column of ``W1`` is drawn as an image, min-max scaled on its own
    (as CS231n's ``visualize_grid``), so every unit's pattern is visible.

    Parameters
    ----------
    W1 : array_like, shape (D, H)
        D = prod(image_shape), or one more (a bias row, dropped).
    path : str or os.PathLike
    ncols : int
        Tiles per row.
    image_shape : tuple of int
        Shape of one image in the data's flattening order (HWC for CIFAR-10).
    max_units : int
        Draw at most this many units (the first ones).

    Returns
    -------
    str
        ``path``.
    """
    W1 = np.asarray(W1, dtype=np.float64)
    size = math.prod(image_shape)
    if W1.ndim != 2 or W1.shape[0] not in (size, size + 1):
        raise ValueError(f"W1 must have shape ({size}, H) for images of shape {image_shape}, got {W1.shape}")
    tiles = W1[:size, :max_units].T.reshape(-1, *image_shape)
    H = len(tiles)
    ncols = min(ncols, H)
    nrows = math.ceil(H / ncols)
    fig = _figure((0.9 * ncols, 0.9 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < H:
            t = tiles[k]
            lo, hi = t.min(), t.max()
            ax.imshow(((t - lo) / (hi - lo) if hi > lo else np.zeros_like(t)).squeeze())
    return _save(fig, path)


def plot_net_history(history, path, title="Training"):
    """Loss per iteration and train/validation accuracy per epoch, side by side, to a PNG.

    Parameters
    ----------
    history : dict
        As returned by :meth:`fastsoftmax.training.net.TwoLayerNet.train`:
        ``loss_history``, ``train_acc_history``, ``val_acc_history``.
    path : str or os.PathLike

    Returns
    -------
    str
        ``path``.
    """
    loss = np.asarray(history["loss_history"], dtype=np.float64)
    if loss.ndim != 1 or loss.size == 0:
        raise ValueError(f"history['loss_history'] must be a non-empty 1-D sequence, got shape {loss.shape}")
    fig = _figure((10, 4))
    ax_loss, ax_acc = fig.subplots(1, 2)
    ax_loss.plot(np.arange(len(loss)), loss, lw=1)
    ax_loss.set_xlabel("iteration")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title(f"{title}: loss")
    ax_loss.grid(alpha=0.3)
    for key, label in (("train_acc_history", "train (batch)"), ("val_acc_history", "validation")):
        acc = np.asarray(history[key], dtype=np.float64)
        ax_acc.plot(np.arange(1, len(acc) + 1), acc, marker="o" if len(acc) < 50 else None, label=label)
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_title(f"{title}: accuracy")
    ax_acc.legend()
    ax_acc.grid(alpha=0.3)
    return _save(fig, path)
