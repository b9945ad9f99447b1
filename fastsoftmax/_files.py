"""Writing files so that a reader never sees half of one.

Design note
-----------
Every file fastsoftmax writes (saved models, PNG pictures, JSON reports) goes
through :func:`atomic_write`: the bytes go to a temporary file in the
destination's own directory (so the final rename never crosses a file
system), and only a complete file is moved into place with
:func:`os.replace`.  An exception while writing removes the temporary file
and leaves any previous file at ``path`` untouched.
"""

from __future__ import annotations

import contextlib
import os
import tempfile

__all__ = ["atomic_write"]


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
