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

A pickle is a program: ``pickle.load`` runs whatever functions the file
names, so a "CIFAR-10" directory from anywhere but the official archive
could run code as the user.  :func:`unpickle` therefore hands the unpickler
a fixed table of the few globals the official files (and NumPy 1.x/2.x
pickles of protocols 2-5) name, each mapped to a small checker of its own,
never to the named object: an array is rebuilt only from a plain numeric
dtype (bool, int, uint, float, complex; no fields, objects or metadata)
whose pickled state is the one NumPy writes, by NumPy's own reconstruction
functions.  Any other global is refused before anything from the file is
imported or called.  ``docs/security.md`` lists every file the package
reads and how each is protected.

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
import re
import reprlib
import shutil
import tarfile
import tempfile
import urllib.request
from typing import NamedTuple

import numpy as np

from ..backends._validate import integer

__all__ = [
    "CIFAR10_URL",
    "CIFAR10_MD5",
    "CIFAR10_DIRNAME",
    "DownloadError",
    "UnsafePickleError",
    "CIFAR10Splits",
    "unpickle",
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


class UnsafePickleError(ValueError):
    """A CIFAR-10 file asked the unpickler for something the official files never hold.

    Raised before anything the file names was imported or called.
    """


def _damaged(path, what):
    return ValueError(f"{path} is not a valid CIFAR-10 batch file: {what}. {_HOW_TO_GET}")


# -- the restricted unpickler ------------------------------------------------------
#
# The official files reference three globals (numpy.core.multiarray._reconstruct,
# numpy.ndarray, numpy.dtype; batches.meta none).  Python 3 and NumPy 1.x/2.x
# pickles of the same data at protocols 2-5 add NumPy 2's module names,
# _frombuffer (protocol 5) and, at protocol 2 only, _codecs.encode and
# __builtin__.bytes for Python 3 bytes.  Each is mapped to a checker below; the
# real objects are never handed to the unpickler.  NumPy's own functions, taken
# from NumPy itself rather than imported by a private name:
_NP_RECONSTRUCT = np.empty(0).__reduce__()[0]  # numpy(._)core.multiarray._reconstruct
_NP_FROMBUFFER = np.empty(0).__reduce_ex__(5)[0]  # numpy(._)core.numeric._frombuffer

# The dtypes NumPy pickles as (spec, align, copy) with these specs: plain numbers.
_DTYPE_SPEC = re.compile(r"[biufc][0-9]{1,2}\Z")
# The state NumPy writes for such a dtype after the byte order (version 3):
# no sub-array, names or fields, elsize and alignment -1, flags 0.
_DTYPE_STATE_TAIL = (None, None, None, -1, -1, 0)


class _Refused(pickle.UnpicklingError):
    """Raised inside the unpickler; :func:`unpickle` adds the file's name."""


def _refuse(what, *args):
    """Raise :class:`_Refused` for ``what`` called with ``args`` (shown briefly: they may be huge)."""
    if args:
        what += "(" + ", ".join(reprlib.repr(a) for a in args) + ")"
    raise _Refused(what)


def _is_int(value):
    return isinstance(value, int)


def _is_shape(value):
    return isinstance(value, tuple) and all(_is_int(v) and v >= 0 for v in value)


class _Recipe:
    """Something only the unpickler handles: unhashable, so never a key or a set member."""

    __slots__ = ()
    __hash__ = None


class _NdarrayName(_Recipe):
    """Stands for ``numpy.ndarray``: an argument of ``_reconstruct``, never callable."""

    __slots__ = ()

    def __repr__(self):
        return "numpy.ndarray"

    def __call__(self, *args):
        _refuse("numpy.ndarray", *args)  # the constructor takes a buffer, strides and an offset


_NDARRAY = _NdarrayName()


class _Dtype(_Recipe):
    """``numpy.dtype(spec, align, copy)`` plus its pickled state, checked."""

    __slots__ = ("dtype", "has_state")

    def __init__(self, dtype):
        self.dtype = dtype
        self.has_state = False

    def __repr__(self):
        return f"numpy.dtype({self.dtype.str!r})"

    def __setstate__(self, state):
        # NumPy writes (3, byteorder, None, None, None, -1, -1, 0) for a plain
        # number, byteorder one of "<>|"; anything else would set fields,
        # sub-arrays, sizes or flags (a crafted state can make a 1-byte dtype
        # with a field far outside it, or a uint64 "holding" object pointers).
        # Types are checked before values: an array from the file compares elementwise.
        if (
            self.has_state
            or not (isinstance(state, tuple) and len(state) == 8)
            or not (_is_int(state[0]) and state[0] == 3)
            or not (isinstance(state[1], str) and state[1] in ("<", ">", "|"))
            or not all(a is None for a in state[2:5])
            or not all(_is_int(a) and a == b for a, b in zip(state[5:], _DTYPE_STATE_TAIL[3:]))
        ):
            _refuse(f"{self!r}.__setstate__", state)
        if state[1] in "<>":
            self.dtype = self.dtype.newbyteorder(state[1])
        self.has_state = True


def _dtype(spec, align=False, copy=True):
    """``numpy.dtype`` for plain numeric specs only ('u1', 'i8', 'f4', 'b1', 'c16', ...)."""
    if not (isinstance(spec, str) and _DTYPE_SPEC.match(spec) and _is_int(align) and _is_int(copy)):
        _refuse("numpy.dtype", spec, align, copy)
    try:
        dtype = np.dtype(spec)
    except TypeError:
        _refuse("numpy.dtype", spec)
    if dtype.kind not in "biufc" or dtype.fields is not None or dtype.subdtype is not None:
        _refuse("numpy.dtype", spec)
    return _Dtype(dtype)


class _Array(_Recipe):
    """``_reconstruct(numpy.ndarray, (0,), b'b')``; its state fills it by NumPy's own ``__setstate__``."""

    __slots__ = ("array",)

    def __init__(self):
        self.array = None

    def __repr__(self):
        return "numpy.ndarray"

    def __setstate__(self, state):
        if self.array is not None or not (isinstance(state, tuple) and len(state) == 5):
            _refuse("numpy.ndarray.__setstate__", state)
        version, shape, dtype, is_fortran, raw = state
        if not (
            _is_int(version) and version == 1 and _is_shape(shape) and isinstance(dtype, _Dtype)
            and _is_int(is_fortran) and isinstance(raw, (bytes, str))
        ):
            _refuse("numpy.ndarray.__setstate__", state)
        array = _NP_RECONSTRUCT(np.ndarray, (0,), b"b")
        # NumPy checks that raw holds exactly the bytes shape and dtype need.
        array.__setstate__((1, shape, dtype.dtype, bool(is_fortran), raw))
        self.array = array


def _reconstruct(subtype, shape, typecode):
    if not (subtype is _NDARRAY and _is_shape(shape) and shape == (0,)
            and isinstance(typecode, (str, bytes)) and typecode in ("b", b"b")):
        _refuse("numpy._core.multiarray._reconstruct", subtype, shape, typecode)
    return _Array()


def _frombuffer(buf, dtype, shape, order):
    if not (
        isinstance(buf, (bytes, bytearray)) and isinstance(dtype, _Dtype) and _is_shape(shape)
        and isinstance(order, str) and order in ("C", "F")
    ):
        _refuse("numpy._core.numeric._frombuffer", buf, dtype, shape, order)
    return _NP_FROMBUFFER(buf, dtype.dtype, shape, order)


def _encode(text, encoding):
    """``_codecs.encode(text, 'latin1')``: how protocol 2 writes Python 3 bytes."""
    if not (isinstance(text, str) and isinstance(encoding, str) and encoding == "latin1"):
        _refuse("_codecs.encode", text, encoding)
    return text.encode("latin1")


def _empty_bytes(*args):
    """``bytes()``: how protocol 2 writes Python 3's empty bytes."""
    if args:
        _refuse("bytes", *args)
    return b""


_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # NumPy 1.x and the official files
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # NumPy 2.x
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,  # protocol 5, NumPy 1.x
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,  # protocol 5, NumPy 2.x
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _dtype,
    ("_codecs", "encode"): _encode,  # bytes at protocol 2
    ("__builtin__", "bytes"): _empty_bytes,  # empty bytes at protocol 2
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals of :data:`_GLOBALS`, to their checkers.

    ``find_class`` is the one door to globals for every opcode (GLOBAL,
    STACK_GLOBAL, INST, OBJ, EXT*); persistent ids and out-of-band buffers are
    refused by :class:`pickle.Unpickler` itself, as nothing is given for them.
    """

    def find_class(self, module, name):
        checker = _GLOBALS.get((module, name))
        if checker is None:
            _refuse(f"the global {module}.{name}")
        return checker


def _finish(obj, seen):
    """``obj`` with every filled :class:`_Array` replaced by its array (lists and dicts in place).

    ``seen`` maps ``id(container)`` to ``(container, result)``: shared and
    recursive containers are visited once, and holding the container keeps its
    id from being reused by a new object during the walk.
    """
    if isinstance(obj, _Array) and obj.array is not None:
        return obj.array
    if isinstance(obj, _Recipe):
        _refuse(f"a bare {obj!r} where data belongs")
    if not isinstance(obj, (list, dict, tuple)):
        return obj
    if id(obj) in seen:
        return seen[id(obj)][1]
    if isinstance(obj, list):
        seen[id(obj)] = (obj, obj)
        obj[:] = [_finish(v, seen) for v in obj]
        return obj
    if isinstance(obj, dict):
        seen[id(obj)] = (obj, obj)
        for k in obj:
            obj[k] = _finish(obj[k], seen)
        return obj
    items = tuple(_finish(v, seen) for v in obj)
    result = obj if all(a is b for a, b in zip(items, obj)) else items
    seen[id(obj)] = (obj, result)
    return result


def unpickle(path):
    """Read one CIFAR-10 python file without running code from it.

    Gives what ``pickle.load(f, encoding="latin1")`` gives for the official
    files and for NumPy/Python pickles of the same kind of data (protocols
    2-5, ``str`` or ``bytes`` keys): dicts, lists, tuples, strings, bytes,
    numbers and NumPy arrays of plain numeric dtypes.  Anything else the file
    asks for is refused before anything from it is imported or called.

    Parameters
    ----------
    path : str or os.PathLike
        A pickle file such as ``data_batch_1`` or ``batches.meta``.

    Returns
    -------
    object
        The unpickled object (a dict for every CIFAR-10 file).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    UnsafePickleError
        If the file names a global or builds an object the official files
        never hold (a function to call, a module to import, an object or
        structured dtype).  The message names the file and what was refused.
    ValueError
        If the file is not a complete pickle.
    """
    try:
        with open(path, "rb") as f:
            obj = _RestrictedUnpickler(f, encoding="latin1").load()
        return _finish(obj, {})
    except FileNotFoundError:
        raise FileNotFoundError(f"missing CIFAR-10 file {path}. {_HOW_TO_GET}") from None
    except _Refused as exc:
        raise UnsafePickleError(
            f"{path} is not a valid CIFAR-10 batch file and was refused unread: it asks the unpickler "
            f"for {exc}, which the official files never hold. Nothing from the file was imported or run; "
            f"do not load it with pickle. {_HOW_TO_GET}"
        ) from None
    except RecursionError:
        raise _damaged(path, "cannot unpickle it (nested too deeply)") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            OverflowError, MemoryError) as exc:
        raise _damaged(path, f"cannot unpickle it ({type(exc).__name__}: {exc})") from exc


def _unpickle(path):
    """Read one file of the official release into a dict with str keys."""
    obj = unpickle(path)
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
    num_validation = integer(num_validation, "num_validation", 0)
    if num_training is None:
        num_training = n_train - num_validation
    num_training = integer(num_training, "num_training", 1)
    num_test = integer(n_test if num_test is None else num_test, "num_test", 0)
    num_dev = integer(num_dev, "num_dev", 0)
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
    n_per_class = integer(n_per_class, "n_per_class", 1)
    n_classes = integer(n_classes, "n_classes", 1)
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
