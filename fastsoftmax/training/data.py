"""Data for training a softmax classifier: CIFAR-10 and the CS231n spiral.

Design note
-----------
The loader follows the CS231n ``data_utils`` conventions so that code written
for the assignment keeps working: images come back as ``(N, 32, 32, 3)``
(height, width, channel), so a flattened row and a learned weight column are
both in HWC order and ``W[:-1].reshape(32, 32, 3, C)`` is a picture.  Unlike
the assignment, images stay ``uint8`` until :func:`get_cifar10_data` cuts
the splits (the full training set is 150 MB as bytes, 1.2 GB as float64),
and the image count of every batch file is read from the file.

The official files are Python 2 pickles; they are read with
``encoding="latin1"`` and both ``str`` and ``bytes`` keys are accepted.
Anything unexpected in a file (missing key, wrong shape, labels outside 0-9)
is reported with the file's name, what was expected and how to get a good
copy, rather than surfacing later as an index error.

:func:`download_cifar10` never leaves a half-written dataset: the archive is
downloaded into a private temporary directory inside ``dest``, checked
against its MD5, extracted there, and only the finished
``cifar-10-batches-py`` directory is renamed into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.request
from typing import NamedTuple

import numpy as np

__all__ = [
    "CIFAR10_URL",
    "CIFAR10_MD5",
    "CIFAR10_DIRNAME",
    "DownloadError",
    "CIFAR10Splits",
    "load_cifar10",
    "get_cifar10_data",
    "split_cifar10",
    "download_cifar10",
    "make_spiral",
]

#: The official "CIFAR-10 python version" archive and its published MD5.
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
#: The directory the archive extracts to.
CIFAR10_DIRNAME = "cifar-10-batches-py"

_TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
_TEST_FILE = "test_batch"
_META_FILE = "batches.meta"
_IMAGE_SIZE = 32 * 32 * 3
_NUM_CLASSES = 10

_HOW_TO_GET = (
    f"Expected the CIFAR-10 python version: a directory ({CIFAR10_DIRNAME}/) holding "
    f"{', '.join(_TRAIN_FILES)}, {_TEST_FILE} and {_META_FILE}. Get it with "
    f"fastsoftmax.training.data.download_cifar10(dest), or download {CIFAR10_URL} "
    f"(md5 {CIFAR10_MD5}) and extract it."
)


class DownloadError(OSError):
    """The dataset could not be downloaded, verified or extracted (nothing was kept)."""


class CIFAR10Splits(NamedTuple):
    """The CS231n splits of CIFAR-10, ready for a linear classifier.

    Every ``X_*`` is ``(n, 3073)`` in the requested dtype: the flattened image
    (HWC order) minus :attr:`mean_image`, then a column of ones (the bias
    trick).  Every ``y_*`` is ``(n,)`` int64 in ``[0, 10)``.
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    X_dev: np.ndarray
    y_dev: np.ndarray
    #: (3072,) mean of the training images, in the requested dtype.
    mean_image: np.ndarray
    #: The ten class names, in label order.
    class_names: list


def _damaged(path, what):
    return ValueError(f"{path} is not a valid CIFAR-10 batch file: {what}. {_HOW_TO_GET}")


def _unpickle(path):
    """Read one Python 2 pickle of the official release into a dict with str keys."""
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f, encoding="latin1")
    except FileNotFoundError:
        raise FileNotFoundError(f"missing CIFAR-10 file {path}. {_HOW_TO_GET}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError) as exc:
        raise _damaged(path, f"cannot unpickle it ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict):
        raise _damaged(path, f"expected a pickled dict, found {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _read_batch(path):
    """Images ``(n, 32, 32, 3)`` uint8 and labels ``(n,)`` int64 of one batch file."""
    batch = _unpickle(path)
    for key in ("data", "labels"):
        if key not in batch:
            raise _damaged(path, f"no {key!r} entry (found keys {sorted(batch)})")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch["labels"])
    if data.ndim != 2 or data.shape[1] != _IMAGE_SIZE or data.dtype != np.uint8:
        raise _damaged(
            path, f"'data' must be uint8 of shape (n, {_IMAGE_SIZE}), got {data.dtype} {data.shape}"
        )
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise _damaged(
            path, f"'labels' must be {data.shape[0]} integers (one per image), got {labels.dtype} {labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= _NUM_CLASSES):
        raise _damaged(path, f"labels must be in [0, {_NUM_CLASSES}), found {labels.min()}..{labels.max()}")
    # Rows are 1024 red, 1024 green, 1024 blue values: CHW -> HWC.
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.astype(np.int64)


def _check_root(root):
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"CIFAR-10 directory {root!r} does not exist. {_HOW_TO_GET}")
    if os.path.isdir(os.path.join(root, CIFAR10_DIRNAME)) and not os.path.exists(
        os.path.join(root, _META_FILE)
    ):
        root = os.path.join(root, CIFAR10_DIRNAME)  # the directory the archive was extracted into
    missing = [n for n in [*_TRAIN_FILES, _TEST_FILE, _META_FILE] if not os.path.isfile(os.path.join(root, n))]
    if missing:
        raise FileNotFoundError(f"CIFAR-10 directory {root!r} lacks {', '.join(missing)}. {_HOW_TO_GET}")
    return root


def load_cifar10(root):
    """Load the official CIFAR-10 python batches.

    Parameters
    ----------
    root : str or os.PathLike
        The ``cifar-10-batches-py`` directory (or the directory it was
        extracted into).  Any number of images per file is accepted.

    Returns
    -------
    X_train : ndarray, shape (N_train, 32, 32, 3), uint8
        The images of ``data_batch_1`` .. ``data_batch_5``, in that order.
    y_train : ndarray, shape (N_train,), int64
        Labels in ``[0, 10)``.
    X_test : ndarray, shape (N_test, 32, 32, 3), uint8
        The images of ``test_batch``.
    y_test : ndarray, shape (N_test,), int64
    class_names : list of str
        The ten names from ``batches.meta``, in label order.

    Raises
    ------
    FileNotFoundError
        If the directory or one of its files is missing.
    ValueError
        If a file is damaged or not in the official format.  Both messages
        say what was expected and how to get the dataset.
    """
    root = _check_root(root)
    parts = [_read_batch(os.path.join(root, name)) for name in _TRAIN_FILES]
    X_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    X_test, y_test = _read_batch(os.path.join(root, _TEST_FILE))
    meta_path = os.path.join(root, _META_FILE)
    names = _unpickle(meta_path).get("label_names")
    if names is None or len(names) != _NUM_CLASSES:
        raise _damaged(meta_path, f"expected 'label_names' with {_NUM_CLASSES} names")
    class_names = [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]
    return X_train, y_train, X_test, y_test, class_names


def _count(name, value, minimum):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def get_cifar10_data(
    root,
    num_training=49000,
    num_validation=1000,
    num_test=1000,
    num_dev=500,
    dtype=np.float64,
    seed=0,
):
    """CIFAR-10 cut into the CS231n splits, mean image subtracted, bias column appended.

    As in the CS231n softmax exercise: validation is the ``num_validation``
    training images after the first ``num_training``; test is the first
    ``num_test`` test images; the dev batch is ``num_dev`` images sampled
    without replacement from the training split.

    Parameters
    ----------
    root : str or os.PathLike
        The ``cifar-10-batches-py`` directory (see :func:`load_cifar10`).
    num_training, num_validation, num_test, num_dev : int
        Split sizes (``num_training=None``: all training images not used for
        validation; ``num_test=None``: all test images).  ``num_training + num_validation`` may not exceed the
        training images there are, ``num_test`` the test images, ``num_dev``
        ``num_training``.
    dtype : {numpy.float64, numpy.float32}
        Dtype of the returned arrays; float32 halves the memory.
    seed : int or None
        Seed of the dev-batch sample.

    Returns
    -------
    CIFAR10Splits
        ``X_train, y_train, X_val, y_val, X_test, y_test, X_dev, y_dev,
        mean_image, class_names`` (a named tuple).

    Raises
    ------
    ValueError
        If a split asks for more images than exist (the message says how many
        there are) or ``dtype`` is not float32/float64.
    """
    return split_cifar10(load_cifar10(root), num_training, num_validation, num_test, num_dev, dtype, seed)


def split_cifar10(loaded, num_training=49000, num_validation=1000, num_test=1000, num_dev=500,
                  dtype=np.float64, seed=0):
    """:func:`get_cifar10_data` on what :func:`load_cifar10` returned.

    ``num_training=None`` takes every training image not used for validation,
    ``num_test=None`` every test image; the other parameters are those of
    :func:`get_cifar10_data`.
    """
    X_train_all, y_train_all, X_test_all, y_test_all, class_names = loaded
    n_train, n_test = len(X_train_all), len(X_test_all)
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    num_validation = _count("num_validation", num_validation, 0)
    if num_training is None:
        num_training = n_train - num_validation
    num_training = _count("num_training", num_training, 1)
    num_test = _count("num_test", n_test if num_test is None else num_test, 0)
    num_dev = _count("num_dev", num_dev, 0)
    if num_training + num_validation > n_train:
        raise ValueError(
            f"num_training + num_validation = {num_training} + {num_validation} = "
            f"{num_training + num_validation}, but there are only {n_train} training images"
        )
    if num_test > n_test:
        raise ValueError(f"num_test = {num_test}, but there are only {n_test} test images")
    if num_dev > num_training:
        raise ValueError(
            f"num_dev = {num_dev} is sampled from the training split, which has only "
            f"num_training = {num_training} images"
        )

    mean_image = X_train_all[:num_training].reshape(num_training, -1).mean(axis=0, dtype=np.float64).astype(dtype)
    dev_idx = np.random.default_rng(seed).choice(num_training, num_dev, replace=False)

    def finish(images):
        """Flat pixels minus the mean image, with a bias column: one array, written once."""
        X = np.empty((len(images), mean_image.size + 1), dtype=dtype)
        X[:, :-1] = images.reshape(len(images), -1)
        X[:, :-1] -= mean_image
        X[:, -1] = 1
        return X

    stop = num_training + num_validation
    return CIFAR10Splits(
        X_train=finish(X_train_all[:num_training]),
        y_train=y_train_all[:num_training].copy(),
        X_val=finish(X_train_all[num_training:stop]),
        y_val=y_train_all[num_training:stop].copy(),
        X_test=finish(X_test_all[:num_test]),
        y_test=y_test_all[:num_test].copy(),
        X_dev=finish(X_train_all[dev_idx]),
        y_dev=y_train_all[dev_idx].copy(),
        mean_image=mean_image,
        class_names=class_names,
    )


def _md5(path):
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(url, path, progress, timeout):
    """Stream ``url`` into ``path`` with a tqdm bar; raise DownloadError if it stops short."""
    from tqdm.auto import tqdm

    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(path, "wb") as out:
            length = response.headers.get("Content-Length")
            total = int(length) if length is not None else None
            received = 0
            with tqdm(total=total, unit="B", unit_scale=True, desc="CIFAR-10", disable=not progress) as bar:
                for chunk in iter(lambda: response.read(1 << 16), b""):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except DownloadError:
        raise
    except Exception as exc:  # URLError, HTTPError, IncompleteRead, timeouts, resets
        raise DownloadError(f"downloading {url} failed: {type(exc).__name__}: {exc}") from exc
    if total is not None and received != total:
        raise DownloadError(
            f"downloading {url} was interrupted: received {received} of {total} bytes"
        )


def _safe_members(archive, where):
    """The archive's members, refusing paths that would land outside ``where``."""
    where = os.path.realpath(where)
    for member in archive.getmembers():
        target = os.path.realpath(os.path.join(where, member.name))
        if not (member.isfile() or member.isdir()) or os.path.commonpath([where, target]) != where:
            raise DownloadError(f"archive member {member.name!r} is not a plain file inside the archive")
        yield member


def download_cifar10(dest, url=CIFAR10_URL, md5=CIFAR10_MD5, progress=True, timeout=60):
    """Download, verify and extract CIFAR-10 (python version) into ``dest``.

    Parameters
    ----------
    dest : str or os.PathLike
        Directory that receives ``cifar-10-batches-py/`` (created if needed).
    url : str
        Where to fetch the ``.tar.gz`` from (default: the official archive).
    md5 : str
        Expected MD5 of the archive (default: the published one).
    progress : bool
        Show a tqdm progress bar.
    timeout : float
        Socket timeout in seconds.

    Returns
    -------
    str
        Path of the ``cifar-10-batches-py`` directory.  If it already exists
        and loads, nothing is downloaded.

    Raises
    ------
    DownloadError
        If the transfer fails or stops short, the MD5 differs, or the archive
        does not hold the dataset.  Nothing is left behind in ``dest``.
    """
    dest = os.fspath(dest)
    final = os.path.join(dest, CIFAR10_DIRNAME)
    if os.path.isdir(final):
        _check_root(final)  # an incomplete existing copy is an error, not silently kept
        return final
    created = not os.path.isdir(dest)
    os.makedirs(dest, exist_ok=True)
    work = tempfile.mkdtemp(dir=dest, prefix=".cifar10-download-")
    try:
        archive_path = os.path.join(work, "cifar-10-python.tar.gz")
        _fetch(url, archive_path, progress, timeout)
        got = _md5(archive_path)
        if got != md5.lower():
            raise DownloadError(
                f"{url} has MD5 {got}, expected {md5}: the download is corrupt or not the "
                "CIFAR-10 python archive; nothing was kept"
            )
        extracted = os.path.join(work, "extracted")
        try:
            with tarfile.open(archive_path, "r:gz") as archive:
                # The "data" filter (Python >= 3.11.4 / 3.12) also refuses links and
                # special files; passing it also avoids 3.12's DeprecationWarning.
                safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                archive.extractall(extracted, members=_safe_members(archive, extracted), **safe)
            _check_root(os.path.join(extracted, CIFAR10_DIRNAME))
        except (tarfile.TarError, OSError, EOFError) as exc:
            if isinstance(exc, DownloadError):
                raise
            raise DownloadError(f"{url} does not hold the CIFAR-10 dataset: {exc}") from exc
        os.replace(os.path.join(extracted, CIFAR10_DIRNAME), final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        if created:
            with contextlib.suppress(OSError):
                os.rmdir(dest)
        raise
    shutil.rmtree(work, ignore_errors=True)
    return final


def make_spiral(n_per_class=100, n_classes=3, seed=0):
    """The spiral data set of the CS231n notes ("Putting it together").

    Parameters
    ----------
    n_per_class : int
        Points per class (arm of the spiral).
    n_classes : int
        Number of classes (arms).
    seed : int or None
        Seed of the angular noise.

    Returns
    -------
    X : ndarray, shape (n_per_class * n_classes, 2), float64
    y : ndarray, shape (n_per_class * n_classes,), int64

    Notes
    -----
    Not linearly separable: the notes' linear softmax reaches about 49 %
    training accuracy on the default 3 x 100 points, a two-layer net about 98 %.
    """
    n_per_class = _count("n_per_class", n_per_class, 1)
    n_classes = _count("n_classes", n_classes, 1)
    rng = np.random.default_rng(seed)
    X = np.zeros((n_per_class * n_classes, 2))
    y = np.zeros(n_per_class * n_classes, dtype=np.int64)
    r = np.linspace(0.0, 1.0, n_per_class)
    for j in range(n_classes):
        ix = slice(n_per_class * j, n_per_class * (j + 1))
        t = np.linspace(j * 4, (j + 1) * 4, n_per_class) + 0.2 * rng.standard_normal(n_per_class)
        X[ix] = np.c_[r * np.sin(t), r * np.cos(t)]
        y[ix] = j
    return X, y
