"""Per-machine measured backend rankings ("wisdom", as in FFTW), read by the registry.

Design note
-----------
Which backend is fastest depends on the CPU (instruction set, FMA units,
cache sizes, memory bandwidth), the dtype, the batch size and the thread
count; a static table measured on one machine is wrong on others (issue 11:
on a Zen 3 the table picked cython where numba was 1.27x faster).  So:

* ``fastsoftmax tune`` (:mod:`fastsoftmax.harness.tune`) times every
  available backend on CIFAR-shaped problems for each dtype, a few batch
  sizes and thread counts, and saves the preference orders here, in the
  user's cache directory, keyed by the CPU model and the package version
  (a new version may change the kernels, so its wisdom is not reused).
* :func:`lookup` returns the measured order for (dtype, threads, N) or None;
  the registry (:func:`fastsoftmax.backends.fastest`) then falls back to its
  static :data:`~fastsoftmax.backends.RANKINGS`.
* The same holds for one blocking parameter of the C kernel, the bytes of
  W.T per D-chunk of its score pass: ``fastsoftmax tune`` times a few
  candidates for the instruction-set build that runs, and
  :func:`chunk_bytes` returns this machine's best, or None for the static
  :data:`~fastsoftmax.backends._common.CHUNK_BYTES` (the chunk changes no
  bits, only the speed).  Likewise whether its gradient pass prefetches the
  whole next tile: :func:`prefetch_from` returns the smallest batch size
  from which that measured faster, or None (then it never does).
* Nothing is ever measured at import or on a call: no wisdom means the
  static table.  A missing, unreadable or foreign file is simply ignored.

The file is JSON, written atomically, one per package version and per set
of instruction-set overrides (:data:`BUILD_ENV`).  Its location: ``FASTSOFTMAX_CACHE_DIR``
if set, else the platform's user cache directory for fastsoftmax
(``platformdirs``, e.g. ``~/.cache/fastsoftmax`` on Linux), beside the Numba
cache of :mod:`._numba_cache`.
"""

from __future__ import annotations

import json
import os
import platform
import sys

__all__ = ["cache_dir", "wisdom_path", "build_tag", "machine_key", "load", "save", "lookup", "chunk_bytes",
           "prefetch_from", "prefetch_start", "DTYPE_NAMES", "forget", "state"]

_ENV = "FASTSOFTMAX_CACHE_DIR"
FORMAT = 1

#: The dtype names the wisdom is kept under, by itemsize.
DTYPE_NAMES = {8: "float64", 4: "float32"}

_loaded: dict = {}  # path -> parsed wisdom (or None), read once per process
_generation = 0  # bumped whenever what was read may change (save, forget)


# What platformdirs' answer depends on, on this platform (wisdom_path asks
# again only when these change): XDG_CACHE_HOME or ~/.cache on Linux and
# other Unix, ~/Library/Caches on macOS, the local AppData folder on Windows.
_PLATFORM_ENV = {"win32": ("LOCALAPPDATA", "USERPROFILE"), "darwin": ("HOME",)}.get(
    sys.platform, ("XDG_CACHE_HOME", "HOME"))


def cache_dir():
    """Directory of fastsoftmax's per-user cache (not created here).

    ``FASTSOFTMAX_CACHE_DIR``, else platformdirs' answer (about 30 us; the
    path read on every call, :func:`wisdom_path`, is remembered there).
    """
    explicit = os.environ.get(_ENV)
    if explicit:
        return explicit
    import platformdirs

    return platformdirs.user_cache_dir("fastsoftmax", appauthor=False)


def _version():
    from .. import __version__

    return __version__


#: Environment variables that choose which instruction-set builds run (the
#: C kernel's, Numba's target, OpenBLAS's kernels; docs/kernels.md forces
#: the AVX2 builds with them): wisdom measured under them is kept in a file
#: of its own, so tuning the AVX2 builds never replaces the native ones'.
#: Set but empty counts: ``NUMBA_CPU_FEATURES=`` is what holds Numba to the
#: CPU that ``NUMBA_CPU_NAME`` names (the name alone keeps the host's
#: features).  All are read once, when the libraries load, so the tag is too.
BUILD_ENV = ("FASTSOFTMAX_ISA", "NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES", "OPENBLAS_CORETYPE")
_build_tag = None


def build_tag():
    """``""``, or ``"-NAME=value..."`` for the :data:`BUILD_ENV` variables set (even if empty) in this process."""
    global _build_tag
    if _build_tag is None:
        parts = [f"{name}={os.environ[name]}" for name in BUILD_ENV if name in os.environ]
        tag = "".join(f"-{part}" for part in parts)
        _build_tag = "".join(ch if ch.isalnum() or ch in "-_.=" else "_" for ch in tag)
    return _build_tag


_paths: dict = {}  # what the path depends on in the environment -> the path


def wisdom_path():
    """The wisdom file for this package version and the builds this process runs (:func:`build_tag`).

    Read on every call (through :func:`state`), so the path is remembered per
    value of the environment variables it depends on (1-3 reads, then a dict
    lookup: it took 4 us warm, and 2-4x that as the first Python after a
    kernel; docs/kernels.md, round 12).
    """
    tag = build_tag()
    key = (os.environ.get(_ENV) or tuple(map(os.environ.get, _PLATFORM_ENV)), tag)
    path = _paths.get(key)
    if path is None:
        if len(_paths) >= 64:  # the environment keeps changing: start over
            _paths.clear()
        path = _paths[key] = os.path.join(cache_dir(), f"wisdom-{_version()}{tag}.json")
    return path


def machine_key():
    """The CPU model (``/proc/cpuinfo``'s model name where there is one) and architecture."""
    model = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model or platform.processor() or 'unknown CPU'} ({platform.machine()})"


def load(path=None):
    """The wisdom for this machine and version, or None (missing, unreadable, foreign)."""
    path = path or wisdom_path()
    if path in _loaded:
        return _loaded[path]
    wisdom = None
    try:
        with open(path) as f:
            data = json.load(f)
        if (isinstance(data, dict) and data.get("format") == FORMAT and data.get("version") == _version()
                and data.get("machine") == machine_key() and isinstance(data.get("orders"), dict)):
            wisdom = data
    except (OSError, ValueError):
        pass
    _loaded[path] = wisdom
    return wisdom


def save(orders, measurements, path=None, chunks=None, prefetch=None):
    """Write wisdom.

    Parameters
    ----------
    orders : dict
        ``"dtype|threads|smallest N"`` -> backend names, fastest first.
    measurements : list
        What the choice was made from (kept for the record, never read).
    path : str, optional
        Default :func:`wisdom_path`.
    chunks : dict, optional
        ``"isa|dtype"`` -> the C kernel's best D-chunk in bytes (:func:`chunk_bytes`).
    prefetch : dict, optional
        ``"isa|dtype"`` -> the smallest batch size from which the C kernel
        prefetches whole tiles ahead, or None for never (:func:`prefetch_from`).
    """
    from .._files import atomic_write

    path = path or wisdom_path()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = {"format": FORMAT, "version": _version(), "machine": machine_key(),
            "orders": {k: list(v) for k, v in orders.items()}, "measurements": measurements,
            "chunks": dict(chunks or {}), "prefetch": dict(prefetch or {})}
    with atomic_write(path, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    _loaded[path] = data
    _bump()
    return path


def _bump():
    global _generation
    _generation += 1


def state():
    """What a choice made from the wisdom depends on: the file and the reads of it (a memo key)."""
    return wisdom_path(), _generation


def forget():
    """Drop what was read, so the next :func:`lookup` reads the file again."""
    _loaded.clear()
    _bump()


def lookup(dtype, threads, n):
    """The measured order for working dtype ``dtype`` (a name), ``threads`` and batch size ``n``.

    The entry for the largest measured thread count <= ``threads`` and the
    band with the largest smallest-N <= ``n``; None without wisdom.
    """
    wisdom = load()
    if wisdom is None:
        return None
    best = None
    for key, order in wisdom["orders"].items():
        try:
            dt, t, lo = key.split("|")
            t, lo = int(t), int(lo)
        except ValueError:
            continue
        if dt != dtype or t > threads or (n is not None and lo > n):
            continue
        rank = (t, lo)  # no N means a large batch: the top band
        if best is None or rank > best[0]:
            best = (rank, order)
    return None if best is None else tuple(best[1])


def _build_entry(field, isa, dtype):
    """What the wisdom's table ``field`` holds for the C kernel's build ``isa`` and ``dtype`` (unchecked), or None."""
    wisdom = load()
    table = None if wisdom is None else wisdom.get(field)
    return table.get(f"{isa}|{dtype}") if isinstance(table, dict) else None


#: Plausible D-chunk sizes: a value outside (a hand-edited or foreign file) is ignored.
CHUNK_RANGE = (256, 1 << 20)


def chunk_bytes(isa, dtype):
    """This machine's measured D-chunk (bytes of W.T) for the C kernel's build ``isa`` and ``dtype``, or None.

    Parameters
    ----------
    isa : str
        The instruction-set build that runs (``"avx512"``, ``"avx2"``, ``"baseline"``).
    dtype : str
        ``"float64"`` or ``"float32"``.

    Returns
    -------
    int or None
        None without wisdom, without an entry for this build and dtype, or
        with an implausible one.
    """
    value = _build_entry("chunks", isa, dtype)
    if type(value) is not int or not CHUNK_RANGE[0] <= value <= CHUNK_RANGE[1]:
        return None
    return value


def prefetch_from(isa, dtype):
    """From which batch size a kernel prefetches whole tiles ahead in ``dtype``, or None.

    ``fastsoftmax tune`` times the gradient pass prefetching the whole next
    tile against its default and saves the smallest batch size from which
    the first was faster: for the C kernel's build that runs and for the
    Numba kernel.

    Parameters
    ----------
    isa : str
        The C kernel's instruction-set build that runs, or ``"numba"``.
    dtype : str
        ``"float64"`` or ``"float32"``.

    Returns
    -------
    int or None
        None without wisdom, without an entry (or a plausible one) for this
        build and dtype, or where it measured slower at every size: never.
    """
    value = _build_entry("prefetch", isa, dtype)
    return value if type(value) is int and value >= 1 else None


def prefetch_start(build, itemsize, override=None):
    """From which batch size ``build`` (:func:`prefetch_from`'s ``isa``) prefetches whole tiles, as an int.

    ``override`` True or False (a backend's ``PREFETCH_TILE``) means 1 or
    never; None means this machine's wisdom, else never.  Never is
    ``sys.maxsize``, so a caller compares ``n >= prefetch_start(...)``.
    Both compiled backends ask on every call: the wisdom is read once per
    file (:func:`load`), so this is a few dict lookups (0.5 us).
    """
    if override is not None:
        return 1 if override else sys.maxsize
    return prefetch_from(build, DTYPE_NAMES[itemsize]) or sys.maxsize
