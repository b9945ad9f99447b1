"""The spiral case study (``fastsoftmax spiral``): the notes' accuracies, the pictures, the command."""

import json

import numpy as np
import pytest

from fastsoftmax import cli
from fastsoftmax.training import spiral


def _is_png(path):
    from matplotlib.image import imread

    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    assert image.ndim == 3 and min(image.shape[:2]) > 100
    return image


def test_case_study_reaches_the_notes_accuracies(tmp_path):
    """The notes: linear softmax ~0.49, two-layer net ~0.98, with their settings (10000 full-batch steps)."""
    figures = spiral.run(out_dir=tmp_path, json_path=tmp_path / "spiral.json", echo=lambda line: None)
    assert 0.40 <= figures["linear_train_accuracy"] <= 0.60  # not linearly separable: about chance + a bit
    assert figures["net_train_accuracy"] >= 0.97
    assert figures["reg_package"] == pytest.approx(figures["reg_notes"] / 2) == 5e-4
    assert figures["net_steps"] == 10000 and figures["hidden_size"] == 100 and figures["step_size"] == 1.0
    assert json.loads((tmp_path / "spiral.json").read_text()) == json.loads(json.dumps(figures))
    images = {what: _is_png(path) for what, path in figures["files"].items()}
    assert set(images) == {"data", "linear_regions", "net_regions", "net_history"}
    # the two models' regions differ: the net's picture is not the linear one redrawn
    assert not np.array_equal(images["linear_regions"], images["net_regions"])


def test_linear_model_uses_an_unregularised_bias():
    from fastsoftmax.training.data import make_spiral

    X, y = make_spiral(seed=1)
    keep = np.r_[0:100, 100:150, 200:210]  # class frequencies 100 : 50 : 10
    X, y = X[keep], y[keep]
    p = np.bincount(y) / len(y)
    # A huge reg drives W to 0 but leaves b free, so b alone fits the class
    # frequencies: softmax(b) -> p and the loss -> their entropy.  A bias that
    # were penalised (or a ones column in X) would be pulled to 0 instead.
    W, b, losses = spiral.train_linear(X, y, 3, step_size=0.04, reg=10.0, num_steps=2000, seed=1)
    assert np.abs(W).max() < 1e-2  # 5e-3: the data gradient over 2 * reg
    np.testing.assert_allclose(np.exp(b) / np.exp(b).sum(), p, atol=1e-3)
    assert losses[-1] == pytest.approx(-np.sum(p * np.log(p)), abs=1e-3)


def test_command_writes_json_and_pictures(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["spiral", "--out", str(out), "--json", str(out / "s.json"), "--net-steps", "30",
                     "--linear-steps", "10", "--hidden-size", "20"]) == 0
    figures = json.loads((out / "s.json").read_text())
    assert figures["net_steps"] == 30 and figures["hidden_size"] == 20
    for path in figures["files"].values():
        _is_png(path)
    assert "training accuracy" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--net-steps", "0"], "net_steps must be an integer >= 1"),
        (["--hidden-size", "0"], "hidden_size must be an integer >= 1"),
        (["--backend", "cython"], "unknown net backend 'cython'"),
    ],
)
def test_command_rejects_bad_settings(tmp_path, argv, match):
    with pytest.raises(ValueError, match=match):
        cli.main(["spiral", "--out", str(tmp_path), "--linear-steps", "2", *argv])
