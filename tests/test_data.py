"""fastsoftmax.training.data: the CIFAR-10 loader, the CS231n splits, the downloader, the spiral."""

import hashlib
import http.server
import io
import os
import pickle
import tarfile
import threading

import numpy as np
import pytest

from fastsoftmax.training.classifier import Softmax
from fastsoftmax.testing import CIFAR10_CLASSES, write_fake_cifar10
from fastsoftmax.training.data import (
    CIFAR10_DIRNAME,
    DownloadError,
    download_cifar10,
    get_cifar10_data,
    load_cifar10,
    make_spiral,
)

NAMES = CIFAR10_CLASSES


# -- the real subset ---------------------------------------------------------------


def test_load_real_subset(cifar_root):
    X_train, y_train, X_test, y_test, class_names = load_cifar10(cifar_root)
    # 1017 images per file: the count must come from the data, not be assumed 10000.
    assert X_train.shape == (5 * 1017, 32, 32, 3) and X_test.shape == (1017, 32, 32, 3)
    assert X_train.dtype == X_test.dtype == np.uint8
    assert y_train.shape == (5085,) and y_test.shape == (1017,)
    assert y_train.dtype == y_test.dtype == np.int64
    assert set(np.unique(y_train)) == set(range(10)) and set(np.unique(y_test)) == set(range(10))
    assert class_names == NAMES
    # Images are real pictures in HWC order: neighbouring pixels are strongly correlated,
    # which they would not be with the channel planes mixed up.
    img = X_train[0].astype(float)
    assert np.corrcoef(img[:, :-1, 0].ravel(), img[:, 1:, 0].ravel())[0, 1] > 0.5


def test_cs231n_splits_of_real_subset(cifar_splits):
    s = cifar_splits
    assert s.X_train.shape == (4585, 3073) and s.X_val.shape == (500, 3073)
    assert s.X_test.shape == (1017, 3073) and s.X_dev.shape == (500, 3073)
    assert s.mean_image.shape == (3072,) and s.class_names == NAMES
    for X in (s.X_train, s.X_val, s.X_test, s.X_dev):
        assert X.dtype == np.float64 and (X[:, -1] == 1).all()  # bias trick
    np.testing.assert_allclose(s.X_train[:, :-1].mean(axis=0), 0, atol=1e-9)  # mean subtracted
    assert 100 < s.mean_image.mean() < 150  # a mean of 0-255 pixel values
    # The dev batch is a sample of the training split (same rows, same labels).
    rows = {r.tobytes(): lab for r, lab in zip(s.X_train, s.y_train)}
    assert all(rows[r.tobytes()] == lab for r, lab in zip(s.X_dev, s.y_dev))


def test_float32_splits(cifar_root, cifar_splits):
    s32 = get_cifar10_data(cifar_root, num_training=1000, num_validation=10, num_test=10, num_dev=10,
                           dtype=np.float32)
    assert all(a.dtype == np.float32 for a in (s32.X_train, s32.X_val, s32.X_test, s32.X_dev, s32.mean_image))
    assert s32.X_train.nbytes == cifar_splits.X_train[:1000].nbytes // 2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_training=5000, num_validation=100), "only 5085 training images"),
        (dict(num_test=2000), "only 1017 test images"),
        (dict(num_training=100, num_validation=0, num_dev=200), "num_training = 100"),
        (dict(num_training=0), "num_training must be an integer >= 1"),
        (dict(dtype=np.int32), "float32 or float64"),
    ],
)
def test_split_errors(cifar_root, kwargs, message):
    base = dict(num_training=4000, num_validation=500, num_test=100, num_dev=50)
    with pytest.raises(ValueError, match=message):
        get_cifar10_data(cifar_root, **{**base, **kwargs})


def test_split_sizes_use_the_one_integer_checker(cifar_root):
    with pytest.raises(TypeError, match="num_dev must be an integer, got float 50.0"):
        get_cifar10_data(cifar_root, num_training=4000, num_validation=500, num_test=100, num_dev=50.0)


# -- synthetic batches in the official layout --------------------------------------


@pytest.mark.parametrize("bytes_keys", [False, True], ids=["str-keys", "bytes-keys"])
def test_loader_takes_count_from_data_and_accepts_bytes_keys(tmp_path, bytes_keys):
    root = write_fake_cifar10(tmp_path / CIFAR10_DIRNAME, n=7, bytes_keys=bytes_keys)
    X_train, y_train, X_test, y_test, names = load_cifar10(root)
    assert X_train.shape == (35, 32, 32, 3) and X_test.shape == (7, 32, 32, 3)
    assert names == NAMES
    # The directory the archive was extracted into works too.
    assert load_cifar10(tmp_path)[0].shape == X_train.shape
    # CHW rows become HWC images.
    raw = pickle.loads((root / "data_batch_1").read_bytes(), encoding="latin1")
    data = raw[b"data" if bytes_keys else "data"]
    assert X_train[0, 2, 3, 1] == data[0, 1024 + 2 * 32 + 3]


def test_missing_directory_says_what_and_how(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"does not exist.*data_batch_1.*download_cifar10"):
        load_cifar10(tmp_path / "nowhere")
    root = write_fake_cifar10(tmp_path / "c")
    (root / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match=r"lacks data_batch_3.*download_cifar10"):
        load_cifar10(root)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: p.write_bytes(b"not a pickle at all"), "cannot unpickle"),
        (lambda p: p.write_bytes(p.read_bytes()[:1000]), "cannot unpickle"),
        (lambda p: p.write_bytes(pickle.dumps([1, 2, 3], protocol=2)), "expected a pickled dict"),
        (lambda p: p.write_bytes(pickle.dumps({"labels": [1]}, protocol=2)), "no 'data' entry"),
        (
            lambda p: p.write_bytes(pickle.dumps({"labels": [1], "data": np.zeros((1, 10), np.uint8)}, protocol=2)),
            r"uint8 of shape \(n, 3072\)",
        ),
        (
            lambda p: p.write_bytes(pickle.dumps({"labels": [1, 2], "data": np.zeros((1, 3072), np.uint8)}, protocol=2)),
            "one per image",
        ),
        (
            lambda p: p.write_bytes(pickle.dumps({"labels": [12], "data": np.zeros((1, 3072), np.uint8)}, protocol=2)),
            r"labels must be in \[0, 10\)",
        ),
    ],
)
def test_damaged_file_is_named(tmp_path, damage, message):
    root = write_fake_cifar10(tmp_path / "c")
    damage(root / "data_batch_2")
    with pytest.raises(ValueError, match=rf"data_batch_2 is not a valid CIFAR-10 batch file: .*{message}.*download_cifar10"):
        load_cifar10(root)


# -- the downloader, against a local server ------------------------------------------


def make_archive(tmp_path):
    """A small .tar.gz in the official layout (cifar-10-batches-py/...) and its MD5."""
    root = write_fake_cifar10(tmp_path / "src" / CIFAR10_DIRNAME, n=5)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(root, arcname=CIFAR10_DIRNAME)
    data = buf.getvalue()
    return data, hashlib.md5(data).hexdigest()


@pytest.fixture
def server():
    """A loopback HTTP server; ``routes[path] = (body, bytes_actually_sent)``."""
    routes = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path not in routes:
                self.send_error(404)
                return
            body, sent = routes[self.path]
            self.send_response(200)
            self.send_header("Content-Type", "application/gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:sent])  # sent < len(body): the transfer stops early
            self.close_connection = True

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield routes, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_download_good_archive(tmp_path, server):
    routes, base = server
    data, md5 = make_archive(tmp_path)
    routes["/cifar.tar.gz"] = (data, len(data))
    dest = tmp_path / "data"
    path = download_cifar10(dest, url=base + "/cifar.tar.gz", md5=md5, progress=False)
    assert path == str(dest / CIFAR10_DIRNAME)
    assert os.listdir(dest) == [CIFAR10_DIRNAME]  # no temporary files left
    assert load_cifar10(path)[0].shape == (25, 32, 32, 3)
    # A second call finds it and downloads nothing.
    del routes["/cifar.tar.gz"]
    assert download_cifar10(dest, url=base + "/cifar.tar.gz", md5=md5, progress=False) == path


def test_download_default_md5_is_the_published_one(tmp_path, server):
    routes, base = server
    data, _ = make_archive(tmp_path)
    routes["/a.tar.gz"] = (data, len(data))
    dest = tmp_path / "data"
    dest.mkdir()
    with pytest.raises(DownloadError, match="expected c58f30108f718f92721af3b95e74349a"):
        download_cifar10(dest, url=base + "/a.tar.gz", progress=False)
    assert os.listdir(dest) == []


def test_download_corrupted_archive(tmp_path, server):
    routes, base = server
    data, md5 = make_archive(tmp_path)
    corrupted = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
    routes["/bad.tar.gz"] = (corrupted, len(corrupted))
    dest = tmp_path / "data"
    dest.mkdir()
    with pytest.raises(DownloadError, match=rf"MD5 .* expected {md5}.*nothing was kept"):
        download_cifar10(dest, url=base + "/bad.tar.gz", md5=md5, progress=False)
    assert os.listdir(dest) == []


def test_download_interrupted_transfer(tmp_path, server):
    routes, base = server
    data, md5 = make_archive(tmp_path)
    routes["/cut.tar.gz"] = (data, len(data) // 2)
    dest = tmp_path / "new" / "data"  # created by the call, removed again on failure
    with pytest.raises(DownloadError, match=r"interrupted|IncompleteRead"):
        download_cifar10(dest, url=base + "/cut.tar.gz", md5=md5, progress=False)
    assert not dest.exists()


def test_download_archive_without_dataset_and_missing_url(tmp_path, server):
    routes, base = server
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("something/else.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    other = buf.getvalue()
    routes["/other.tar.gz"] = (other, len(other))
    dest = tmp_path / "data"
    dest.mkdir()
    with pytest.raises(DownloadError, match="does not hold the CIFAR-10 dataset"):
        download_cifar10(dest, url=base + "/other.tar.gz", md5=hashlib.md5(other).hexdigest(), progress=False)
    with pytest.raises(DownloadError, match="404"):
        download_cifar10(dest, url=base + "/missing.tar.gz", progress=False)
    assert os.listdir(dest) == []


# -- spiral ------------------------------------------------------------------------------


def test_spiral_shape_and_linear_accuracy(one_blas_thread):
    X, y = make_spiral(n_per_class=100, n_classes=3, seed=0)
    assert X.shape == (300, 2) and y.shape == (300,) and np.bincount(y).tolist() == [100, 100, 100]
    assert np.abs(X).max() <= 1.0 + 1e-12
    np.testing.assert_array_equal(make_spiral(seed=0)[0], X)
    # The notes' linear classifier: full batch, step 1, 200 iterations, reg 1e-3 in
    # their 0.5 * reg convention (= 5e-4 here); it reaches about 0.49.
    accuracies = []
    for seed in range(3):
        Xs, ys = make_spiral(seed=seed)
        Xs = np.c_[Xs, np.ones(len(Xs))]
        model = Softmax(backend="numpy", seed=seed)
        model.train(Xs, ys, learning_rate=1.0, reg=5e-4, num_iters=200, batch_size=300)
        accuracies.append(model.score(Xs, ys))
    assert all(0.44 <= a <= 0.60 for a in accuracies), accuracies
