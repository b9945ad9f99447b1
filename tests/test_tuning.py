"""Grid search, pictures and the end-to-end exercise."""

import json
import os

import numpy as np
import pytest
from matplotlib.image import imread

from fastsoftmax import cli
from fastsoftmax.training import exercise
from fastsoftmax.training.data import make_spiral
from fastsoftmax.training.tuning import grid_search
from fastsoftmax.training.visualize import plot_loss, plot_tuning_heatmap, plot_weights, weight_images


def read_png(path):
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 0 and image.shape[1] > 0
    return image


@pytest.fixture
def spiral():
    X, y = make_spiral(seed=1)
    X = np.c_[X, np.ones(len(X))]
    order = np.random.default_rng(0).permutation(len(X))
    return X[order[:240]], y[order[:240]], X[order[240:]], y[order[240:]]


def test_grid_search_on_small_data(tmp_path, spiral, capsys, one_blas_thread):
    X_train, y_train, X_val, y_val = spiral
    heatmap = tmp_path / "tuning.png"
    result = grid_search(X_train, y_train, X_val, y_val, [1e-3, 1.0], [1e-4, 1e-1], num_iters=100,
                         batch_size=50, backend="numpy", progress=True, verbose=True, heatmap_path=heatmap)
    assert set(result.results) == {(1e-3, 1e-4), (1e-3, 1e-1), (1.0, 1e-4), (1.0, 1e-1)}
    best_val = max(val for _, val in result.results.values())
    assert result.best_val_accuracy == best_val
    assert result.results[(result.best_learning_rate, result.best_reg)][1] == best_val
    assert result.best_model.score(X_val, y_val) == best_val  # the returned model is the best one
    assert result.best_model.settings["learning_rate"] == result.best_learning_rate
    table = result.table().splitlines()
    assert len(table) == 5 and sum(line.endswith(" *") for line in table) == 1
    assert result.heatmap_path == str(heatmap)
    read_png(heatmap)
    err = capsys.readouterr().err
    assert "grid search" in err  # the tqdm bar
    with pytest.raises(ValueError, match="at least one value"):
        grid_search(X_train, y_train, X_val, y_val, [], [1.0])


def test_tuned_model_on_real_subset(cifar_splits, tmp_path, one_blas_thread):
    """The issue's bar: test accuracy >= 0.34 after tuning on a small grid.

    Measured on the 4585/500 split: best val 0.360, test 0.356-0.363 with
    600 steps (CS231n asks > 0.35 with 49000 images)."""
    s = cifar_splits
    result = grid_search(s.X_train, s.y_train, s.X_val, s.y_val, [1e-6, 2e-6], [1e3, 5e3],
                         num_iters=600, backend="numpy", seed=0, progress=False)
    assert result.best_val_accuracy > 0.33
    assert result.best_model.score(s.X_test, s.y_test) >= 0.34
    path = plot_weights(result.best_model.W, tmp_path / "weights.png", s.class_names)
    image = read_png(path)
    assert image.shape[1] > image.shape[0]  # a 2 x 5 grid is wider than tall


def test_weight_images_and_errors(tmp_path):
    W = np.random.default_rng(0).standard_normal((3073, 10))
    images = weight_images(W)
    assert images.shape == (10, 32, 32, 3) and images.min() == 0 and images.max() == pytest.approx(255)
    # Column k, pixel (i, j, c) is row i*96 + j*3 + c of W: HWC, as the data are flattened.
    k, i, j, c = 3, 5, 7, 2
    scaled = 255 * (W[:-1] - W[:-1].min()) / (W[:-1].max() - W[:-1].min())
    assert images[k, i, j, c] == pytest.approx(scaled[i * 96 + j * 3 + c, k])
    with pytest.raises(ValueError, match=r"\(3072, C\) or \(3073, C\)"):
        weight_images(W[:100])
    with pytest.raises(ValueError, match="3 names for 10 classes"):
        plot_weights(W, tmp_path / "w.png", ["a", "b", "c"])
    with pytest.raises(ValueError, match="non-empty"):
        plot_loss([], tmp_path / "loss.png")
    read_png(plot_loss(np.linspace(3, 1, 50), tmp_path / "loss.png"))
    read_png(plot_tuning_heatmap({(1e-3, 1.0): (0.5, 0.4), (1e-2, 1.0): (0.6, 0.5)}, tmp_path / "h.png"))
    assert sorted(os.listdir(tmp_path)) == ["h.png", "loss.png"]  # nothing half-written


def test_exercise_on_spiral(tmp_path, one_blas_thread):
    out = tmp_path / "out"
    figures = exercise.run(data=None, out_dir=out, json_path=tmp_path / "figures.json", progress=False,
                           echo=lambda line: None)
    saved = json.loads((tmp_path / "figures.json").read_text())
    for key in ("val_accuracy", "test_accuracy", "sanity_loss", "gradcheck_max_rel_error",
                "best_learning_rate", "best_reg"):
        assert saved[key] == figures[key]
    assert abs(figures["sanity_loss"] - np.log(3)) < 0.05
    assert figures["gradcheck_max_rel_error"] < 1e-7
    assert figures["grad_difference"] < 1e-10
    assert 0.4 < figures["val_accuracy"] < 0.7  # a linear model on the spiral (notes: ~0.49)
    for name in ("tuning.png", "loss.png"):
        read_png(out / name)
    assert set(figures["files"]) == {"tuning_heatmap", "loss_curve", "model"}


def test_exercise_command_line_on_real_subset(cifar_root, tmp_path, capsys, one_blas_thread):
    """`fastsoftmax train --data ...`, shortened to 150 steps per model."""
    json_path = tmp_path / "out.json"
    assert cli.main(["train", "--data", str(cifar_root), "--out", str(tmp_path), "--json", str(json_path),
                          "--num-iters", "150", "--no-progress"]) == 0
    stdout = capsys.readouterr().out
    assert "sanity check" in stdout and "test accuracy" in stdout
    figures = json.loads(json_path.read_text())
    assert figures["num_train"] == 4585 and figures["num_val"] == 500 and figures["num_test"] == 1017
    assert abs(figures["sanity_loss"] - np.log(10)) < 0.1
    assert figures["gradcheck_max_rel_error"] < 1e-7
    assert figures["test_accuracy"] > 0.25
    for name in ("weights.png", "loss.png", "tuning.png"):
        read_png(tmp_path / name)
    from fastsoftmax import Softmax

    model = Softmax.load(tmp_path / "softmax.npz")
    assert model.class_names[0] == "airplane" and model.mean_image.shape == (3072,)
