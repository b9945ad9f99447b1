"""Writing files so that a reader never sees half of one.

Design note
-----------
Every file fastsoftmax writes (saved models, PNG pictures, JSON reports) goes
through :func:`atomic_write`: the bytes go to a temporary file in the
destination's own directory (so the final rename never crosses a file
system), and only a complete file is moved into place with
:func:`os.replace`.  An exception while writing removes the temporary file
and leaves any previous file at ``path`` untouched.

Saved models (:class:`fastsoftmax.Softmax`, :class:`fastsoftmax.TwoLayerNet`)
share one format, written and read by :func:`save_model` and
:func:`load_model`: a ``.npz`` of the model's arrays plus ``meta``, a JSON
string with a format tag.  It is read with ``allow_pickle=False``, so a file
can never make NumPy unpickle (run) anything (docs/security.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile

import numpy as np

__all__ = ["atomic_write", "save_model", "load_model", "report_outputs"]


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """Open a temporary file that replaces ``path`` only if the block succeeds.

    Parameters
    ----------
    path : str or os.PathLike
        Final location; its directory must exist.
    mode : {"wb", "w"}
        Binary or text.

    Yields
    ------
    file object
        Open for writing; closed and moved to ``path`` on success.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot write {path!r}: directory {directory!r} does not exist")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); give it the permissions an
        # ordinary open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save_model(path, fmt, arrays, meta, mean_image=None):
    """Write a model's arrays and settings to one ``.npz`` at ``path``, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Written exactly as given (no suffix is added).
    fmt : str
        The format tag stored first in the metadata, checked by :func:`load_model`.
    arrays : dict of str to ndarray
        The model's parameters.
    meta : dict
        JSON-serialisable settings (backend, seed, class names, ...).
    mean_image : ndarray or None
        Stored as ``mean_image`` when given.
    """
    payload = dict(arrays, meta=np.array(json.dumps(dict(format=fmt, **meta))))
    if mean_image is not None:
        payload["mean_image"] = np.asarray(mean_image)
    with atomic_write(path) as f:
        np.savez(f, **payload)


def load_model(path, fmt, what, names):
    """Read what :func:`save_model` wrote, or raise ``ValueError`` starting with ``what``.

    Parameters
    ----------
    path : str
    fmt : str
        The format tag the file must carry.
    what : str
        The start of every error message ("'m.npz' is not a ... model").
    names : sequence of str
        The arrays the model must have.

    Returns
    -------
    meta : dict
    arrays : dict of str to ndarray
        ``names``, read into memory.
    mean_image : ndarray or None

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is damaged, holds a pickle, lacks an array or carries
        another format tag.
    """
    try:
        # Open the file ourselves: np.load leaks its handle when the zip is damaged.
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"][()]))
            arrays = {k: np.array(npz[k]) for k in names}
            mean_image = np.array(npz["mean_image"]) if "mean_image" in npz.files else None
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, TypeError) as exc:
        raise ValueError(f"{what}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        raise ValueError(f"{what}: format tag {meta.get('format') if isinstance(meta, dict) else meta!r}, "
                         f"expected {fmt!r}")
    return meta, arrays, mean_image


def report_outputs(figures, files, json_path, echo):
    """End of a command that writes files: list them, and write ``figures`` as JSON.

    ``figures["files"]`` becomes ``files``; each file is announced with
    ``echo``; the JSON (when ``json_path`` is given) is written atomically.

    Parameters
    ----------
    figures : dict
        JSON-serialisable results; gains the key ``"files"``.
    files : dict of str to str
        What was written, by name.
    json_path : str or None
    echo : callable
        Receives one line per file written.

    Returns
    -------
    dict
        ``figures``.
    """
    figures["files"] = files
    for what, path in files.items():
        echo(f"wrote {what}: {path}")
    if json_path is not None:
        with atomic_write(json_path, "w") as f:
            json.dump(figures, f, indent=2)
        echo(f"wrote figures: {json_path}")
    return figures
