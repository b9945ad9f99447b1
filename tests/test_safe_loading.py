"""Reading a file never runs code from it (issue 15).

The CIFAR-10 reader's restricted unpickler (``fastsoftmax.training.data.unpickle``)
against crafted files, in ``batches.meta`` and in a data batch, through the
Python API and both ``--data`` commands; that it still reads the real subset and
every protocol/key encoding exactly as ``pickle.load`` does; and the other
readers: ``Softmax.load`` and ``fastsoftmax.dask.from_npy``.

Every attack's payload would create a marker file (or import a module that
does); each test asserts that the marker does not exist afterwards.
"""

import codecs
import json
import os
import pickle
import pickletools
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest

from fastsoftmax import cli
from fastsoftmax.testing import CIFAR10_CLASSES, write_fake_cifar10
from fastsoftmax.training import data
from fastsoftmax.training.classifier import Softmax
from fastsoftmax.training.data import UnsafePickleError, load_cifar10, unpickle

PROTOCOLS = range(2, pickle.HIGHEST_PROTOCOL + 1)
NP_RECONSTRUCT = np.empty(0).__reduce__()[0]
BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
FILES = BATCHES + ["batches.meta"]


class Call:
    """Pickles as ``func(*args)``: the ``__reduce__`` a malicious file is written with."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


class Build:
    """Pickles as ``func(*args)`` followed by ``BUILD state``: how NumPy objects are written."""

    def __init__(self, func, args, state):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return self.func, self.args, self.state


def same(a, b):
    """Bit-identical: same types, keys in the same order, arrays equal in dtype, shape, strides, bytes, flags."""
    if isinstance(a, np.ndarray):
        return (
            type(b) is np.ndarray and a.dtype == b.dtype and a.dtype.str == b.dtype.str and a.shape == b.shape
            and a.strides == b.strides and a.tobytes("A") == b.tobytes("A")
            and a.flags.writeable == b.flags.writeable
        )
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def plain_load(path):
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


def globals_of(blob):
    """``(module, name)`` of every global a pickle names, read with pickletools (nothing is run)."""
    found, strings, memo = set(), [], {}
    for op, arg, _ in pickletools.genops(blob):
        if op.name in ("GLOBAL", "INST"):
            found.add(tuple(arg.split(" ", 1)))
        elif op.name == "STACK_GLOBAL":
            found.add(tuple(strings[-2:]))
        elif op.name in ("MEMOIZE",):
            memo[len(memo)] = strings[-1] if strings else None
        elif op.name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[arg] = strings[-1] if strings else None
        elif op.name in ("BINGET", "LONG_BINGET", "GET"):
            strings.append(memo.get(arg))
        elif "UNICODE" in op.name or "STRING" in op.name:
            strings.append(arg)
    return found


# -- attacks -------------------------------------------------------------------------


@pytest.fixture
def marker(tmp_path):
    """The file every payload would create; must not exist after any test."""
    path = tmp_path / "payload_ran.npy"  # .npy: numpy.save would not rename it
    yield path
    assert not path.exists(), "a payload from a crafted file ran"


def _evil_npy(tmp_path, marker):
    """A .npy holding an object array whose pickle runs os.system: numpy.load(allow_pickle=True) would run it."""
    path = tmp_path / "evil.npy"
    np.save(path, np.array([Call(os.system, f"touch {shlex.quote(str(marker))}")], dtype=object))
    return path


# name -> (payload builder (tmp_path, marker) -> object to pickle, text the error names)
ATTACKS = {
    # os.system pickles as posix.system (nt.system on Windows)
    "os.system": (lambda tmp, m: Call(os.system, f"touch {shlex.quote(str(m))}"), r"(posix|nt)\.system"),
    # builtins.eval at protocol >= 3, __builtin__.eval at protocol 2
    "builtins.eval": (lambda tmp, m: Call(eval, f"open({str(m)!r}, 'w').close()"), r"(__)?builtin(s|__)\.eval"),
    # protocol 2 writes Python 2's module name, commands.run, which plain pickle maps back
    "subprocess.run": (lambda tmp, m: Call(subprocess.run, ["touch", str(m)]), r"(subprocess|commands)\.run"),
    "numpy.save": (lambda tmp, m: Call(np.save, str(m), np.zeros(1)), r"numpy\.save"),
    # numpy.load(evil.npy, allow_pickle=True) would unpickle a second payload
    "numpy.load": (lambda tmp, m: Call(np.load, str(_evil_npy(tmp, m)), None, True), r"numpy\.load"),
    "numpy.testing": (lambda tmp, m: Call(np.testing.assert_equal, 1, 1), r"numpy\.testing\.[\w.]*assert_equal"),
}


def _plant(root, target, payload, protocol):
    """Replace ``target`` in a fake CIFAR-10 directory by a plausible dict carrying ``payload``."""
    if target == "batches.meta":
        content = {"label_names": CIFAR10_CLASSES, "num_vis": payload}
    else:
        content = {"batch_label": payload, "labels": [0, 1], "data": np.zeros((2, 3072), np.uint8),
                   "filenames": ["a.png", "b.png"]}
    with open(root / target, "wb") as f:
        pickle.dump(content, f, protocol=protocol)
    return root / target


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL], ids=lambda p: f"protocol{p}")
@pytest.mark.parametrize("target", ["batches.meta", "data_batch_1"])
@pytest.mark.parametrize("attack", list(ATTACKS))
def test_crafted_global_is_refused_before_it_runs(tmp_path, marker, attack, target, protocol):
    root = write_fake_cifar10(tmp_path / "cifar")
    build, named = ATTACKS[attack]
    payload = build(tmp_path, marker)
    path = _plant(root, target, payload, protocol)
    with pytest.raises(UnsafePickleError, match=(
        rf"{re.escape(str(path))} is not a valid CIFAR-10 batch file and was refused unread: .*the global "
        rf"{named}.*Nothing from the file was imported or run.*download_cifar10"
    )):
        load_cifar10(root)


def test_payloads_are_live(tmp_path):
    """The payloads of ATTACKS do create the marker under plain pickle (so their tests can fail)."""
    for attack, (build, _) in ATTACKS.items():
        if attack == "numpy.testing":
            continue
        m = tmp_path / f"{attack}.npy"
        pickle.loads(pickle.dumps(build(tmp_path, m), protocol=2))
        assert m.exists(), attack


def test_instruction_opcodes_are_refused_too(tmp_path, marker):
    """Protocol 0's INST opcode names a class without GLOBAL; it goes through the same door."""
    blob = b"(S'touch " + shlex.quote(str(marker)).encode() + b"'\nios\nsystem\n."
    pickle.loads(blob)  # live: plain pickle runs it
    assert marker.exists()
    marker.unlink()
    path = tmp_path / "batches.meta"
    path.write_bytes(blob)
    with pytest.raises(UnsafePickleError, match=r"the global os\.system"):
        unpickle(path)
    assert not marker.exists()


@pytest.mark.parametrize("target", ["batches.meta", "data_batch_1"])
def test_module_named_by_a_file_is_never_imported(tmp_path, monkeypatch, marker, target):
    """Importing runs a module's top level: a global from an importable module must not be imported."""
    modname = f"fastsoftmax_evil_{target.replace('.', '_')}"
    (tmp_path / f"{modname}.py").write_text(f"open({str(marker)!r}, 'w').close()\nx = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    # {"labels": <modname>.x} at protocol 2: PROTO EMPTY_DICT BINUNICODE GLOBAL SETITEM STOP
    blob = b"\x80\x02}X\x06\x00\x00\x00labelsc" + modname.encode() + b"\nx\ns."
    assert pickle.loads(blob) == {"labels": 1} and marker.exists()  # live: plain pickle imports it
    marker.unlink()
    del sys.modules[modname]
    root = write_fake_cifar10(tmp_path / "cifar")
    (root / target).write_bytes(blob)
    with pytest.raises(UnsafePickleError, match=rf"the global {modname}\.x"):
        load_cifar10(root)
    assert modname not in sys.modules


@pytest.mark.parametrize("target", ["batches.meta", "data_batch_1"])
@pytest.mark.parametrize(
    "top", [[1, 2, 3], np.zeros((2, 3072), np.uint8), "label_names"], ids=["list", "ndarray", "str"]
)
def test_non_dict_top_level(tmp_path, target, top):
    root = write_fake_cifar10(tmp_path / "cifar")
    (root / target).write_bytes(pickle.dumps(top, protocol=2))
    with pytest.raises(ValueError, match=rf"{target} is not a valid CIFAR-10 batch file: expected a pickled dict, "
                                         rf"found {type(top).__name__}"):
        load_cifar10(root)


def _state_dtype(spec, state):
    return Build(np.dtype, (spec, False, True), state)


def _array(dtype, shape, raw):
    return Build(NP_RECONSTRUCT, (np.ndarray, (0,), b"b"), (1, shape, dtype, False, raw))


# What NumPy's own pickling allows but the official files never hold.  The first
# two are memory errors, not code: a field 1 MiB outside a 1-byte item (reading it
# crashes the interpreter) and a uint64 flagged as holding object pointers.
CRAFTED_NUMPY = {
    "field outside the item": (
        _array(_state_dtype("V1", (3, "|", None, ("a",), {"a": (np.dtype("u8"), 1 << 20)}, 1, 1, 0)), (1,), b"A"),
        r"numpy\.dtype\('V1'",
    ),
    "fields set on a number": (
        _array(_state_dtype("u1", (3, "|", None, ("a",), {"a": (np.dtype("u8"), 100)}, -1, -1, 0)), (1,), b"A"),
        r"numpy\.dtype\('\|u1'\)\.__setstate__",
    ),
    "object flags on a number": (
        _array(_state_dtype("u8", (3, "<", None, None, None, -1, -1, 1)), (2,), b"A" * 16),
        r"numpy\.dtype\('<u8'\)\.__setstate__",
    ),
    "object array": (np.array([1, "a"], dtype=object), r"numpy\.dtype\('O8'"),
    "structured array": (np.zeros(2, dtype=[("a", "u1")]), r"numpy\.dtype\('V1'"),
    "datetime array": (np.zeros(2, "M8[s]"), r"numpy\.dtype\('M8'"),
    "numpy scalar": (np.int64(3), r"the global numpy\.(_)?core\.multiarray\.scalar"),  # _core: NumPy 2
    "ndarray constructor": (Call(np.ndarray, (4,), "u1", b"x" * 4), r"numpy\.ndarray\(\(4,\)"),
    "reconstruct of a non-empty array": (Call(NP_RECONSTRUCT, np.ndarray, (10,), b"b"), r"_reconstruct\(numpy\.ndarray, \(10,\)"),
    "array without state": (Call(NP_RECONSTRUCT, np.ndarray, (0,), b"b"), r"a bare numpy\.ndarray"),
    "codec other than latin1": (Call(codecs.encode, "x" * 100, "zlib"), r"_codecs\.encode\('xxx"),
    # Protocol 2 spells bytes() as __builtin__.bytes, which maps to a checker; later ones as builtins.bytes.
    "bytes of a huge size": (Call(bytes, 10**12), r"bytes\(1000000000000\)|the global builtins\.bytes"),
}


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL], ids=lambda p: f"protocol{p}")
@pytest.mark.parametrize("case", list(CRAFTED_NUMPY))
def test_crafted_numpy_reconstruction_is_refused(tmp_path, case, protocol):
    obj, named = CRAFTED_NUMPY[case]
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({"data": obj}, protocol=protocol))
    with pytest.raises(UnsafePickleError, match=rf"{re.escape(str(path))} is not a valid CIFAR-10 batch file .*{named}"):
        unpickle(path)


def test_crafted_dtype_is_real_under_plain_pickle():
    """Plain pickle does build the first CRAFTED_NUMPY case: a 1-byte item with a field 1 MiB
    outside it (reading a['a'] reads outside the buffer; it crashed NumPy 2.4 with SIGSEGV)."""
    a = pickle.loads(pickle.dumps(CRAFTED_NUMPY["field outside the item"][0], protocol=2))
    assert a.dtype.itemsize == 1 and a.dtype.fields["a"][1] == 1 << 20 and a.nbytes == 1


@pytest.mark.parametrize("command", ["train", "bench"])
def test_command_line_data_refuses_crafted_directory(tmp_path, marker, command):
    root = write_fake_cifar10(tmp_path / "cifar")
    _plant(root, "batches.meta", ATTACKS["os.system"][0](tmp_path, marker), 2)
    argv = {
        "train": ["train", "--data", str(root), "--out", str(tmp_path), "--no-progress"],
        "bench": ["bench", "--data", str(root), "--quick", "--no-peers", "--no-memory", "--backends", "numpy",
                  "--repeat", "1", "--no-progress"],
    }[command]
    with pytest.raises(UnsafePickleError, match=r"batches\.meta .*the global posix\.system"):
        cli.main(argv)


# -- what still loads, bit-identically ---------------------------------------------


@pytest.mark.parametrize("name", FILES)
def test_real_subset_loads_as_plain_pickle_does(cifar_root, name):
    assert same(unpickle(cifar_root / name), plain_load(cifar_root / name))


def test_real_files_name_only_the_three_numpy_globals(cifar_root):
    for name in FILES:
        expected = set() if name == "batches.meta" else {
            ("numpy.core.multiarray", "_reconstruct"), ("numpy", "ndarray"), ("numpy", "dtype")}
        assert globals_of((cifar_root / name).read_bytes()) == expected, name


@pytest.mark.parametrize("bytes_keys", [False, True], ids=["str-keys", "bytes-keys"])
@pytest.mark.parametrize("protocol", PROTOCOLS, ids=lambda p: f"protocol{p}")
def test_every_protocol_and_key_encoding_loads_as_plain_pickle_does(tmp_path, protocol, bytes_keys):
    n = 7
    root = write_fake_cifar10(tmp_path / "cifar", n=n, bytes_keys=bytes_keys, protocol=protocol)
    # n=0: protocol 2 writes the empty image bytes as __builtin__.bytes().
    empty = write_fake_cifar10(tmp_path / "empty", n=0, bytes_keys=bytes_keys, protocol=protocol)
    for name in FILES:
        assert same(unpickle(root / name), plain_load(root / name)), name
        assert same(unpickle(empty / name), plain_load(empty / name)), name
    # And load_cifar10 gives what the CS231n loader would make of the plain pickles.
    key = (lambda k: k.encode()) if bytes_keys else (lambda k: k)
    plain = [plain_load(root / name) for name in BATCHES]
    images = [b[key("data")].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1) for b in plain]
    X_train, y_train, X_test, y_test, names = load_cifar10(root)
    np.testing.assert_array_equal(X_train, np.concatenate(images[:5]))
    np.testing.assert_array_equal(X_test, images[5])
    np.testing.assert_array_equal(y_train, np.concatenate([b[key("labels")] for b in plain[:5]]).astype(np.int64))
    np.testing.assert_array_equal(y_test, plain[5][key("labels")])
    assert X_train.shape == (5 * n, 32, 32, 3) and names == CIFAR10_CLASSES


ARRAYS = {
    "uint8": np.arange(12, dtype=np.uint8).reshape(3, 4),
    "empty": np.zeros((0, 3072), np.uint8),
    "big-endian": np.arange(5, dtype=">i4"),
    "little-endian": np.arange(5, dtype="<f8"),
    "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
    "strided": np.arange(10)[::3],
    "bool": np.array([True, False]),
    "float16": np.ones(3, np.float16),
    "complex": np.ones(2, np.complex128),
}


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=lambda p: f"protocol{p}")
def test_numeric_arrays_of_every_kind_load_as_plain_pickle_does(tmp_path, protocol):
    shared = np.arange(4, dtype=np.int16)
    content = dict(ARRAYS)
    content.update(shared=[shared, (shared, 1.5, None, b"", b"xy")], keys={b"bytes": 1, "str": 2})
    path = tmp_path / "f"
    path.write_bytes(pickle.dumps(content, protocol=protocol))
    got = unpickle(path)
    assert same(got, plain_load(path))
    assert got["shared"][0] is got["shared"][1][0]  # memo sharing kept, as pickle keeps it


def test_recursive_list_loads(tmp_path):
    a = [np.zeros(2, np.uint8)]
    a.append(a)
    path = tmp_path / "f"
    path.write_bytes(pickle.dumps({"a": a}, protocol=2))
    got = unpickle(path)["a"]
    assert got[1] is got and same(got[0], a[0])


def test_allowed_globals_are_exactly_those_numpy_and_pickle_write(cifar_root, tmp_path):
    """The table holds nothing no writer needs: every entry is named by the real files or by a
    pickle this NumPy writes, except the other NumPy major version's spelling of the same function."""
    seen = {g for name in FILES for g in globals_of((cifar_root / name).read_bytes())}
    for protocol in PROTOCOLS:
        for bytes_keys in (False, True):
            root = write_fake_cifar10(tmp_path / f"{protocol}{bytes_keys}", n=0 if bytes_keys else 3,
                                      bytes_keys=bytes_keys, protocol=protocol)
            seen |= {g for name in FILES for g in globals_of((root / name).read_bytes())}
        seen |= {g for v in ARRAYS.values() for g in globals_of(pickle.dumps(v, protocol))}
    other_numpy = ({("numpy.core.numeric", "_frombuffer")} if int(np.__version__.split(".")[0]) >= 2 else
                   {("numpy._core.multiarray", "_reconstruct"), ("numpy._core.numeric", "_frombuffer")})
    assert seen <= set(data._GLOBALS)
    assert set(data._GLOBALS) - seen == other_numpy


# -- damaged, not dangerous --------------------------------------------------------


@pytest.mark.parametrize(
    "blob, message",
    [
        (b"\x80\x02]q\x00(" + b"]" * 5000, "cannot unpickle"),  # truncated
        (pickle.dumps({"a": 1}, protocol=2)[:-1], "cannot unpickle"),
        (b"\x80\x05\x8e" + (1 << 62).to_bytes(8, "little"), "cannot unpickle"),  # 4 EiB of bytes announced
        (b"\x80\x02" + b"]" * 100_000 + b"a" * 99_999 + b".", "nested too deeply"),
        (b"\x80\x02Q.", "cannot unpickle"),  # a persistent id: nothing resolves it
    ],
    ids=["truncated-list", "truncated-dict", "huge-length", "deep-nesting", "persistent-id"],
)
def test_damaged_pickles_are_named_errors(tmp_path, blob, message):
    root = write_fake_cifar10(tmp_path / "cifar")
    (root / "test_batch").write_bytes(blob)
    with pytest.raises(ValueError, match=rf"test_batch is not a valid CIFAR-10 batch file: .*({message})"):
        load_cifar10(root)


def test_fake_writer_refuses_protocols_the_loader_is_not_tested_on(tmp_path):
    for bad in (1, pickle.HIGHEST_PROTOCOL + 1, "2", True):
        with pytest.raises(ValueError, match=r"protocol must be an integer from 2 to"):
            write_fake_cifar10(tmp_path / "x", protocol=bad)
    assert not (tmp_path / "x").exists()


# -- the package's other readers ---------------------------------------------------


@pytest.mark.parametrize("member", ["W", "meta"])
def test_model_load_refuses_pickled_arrays(tmp_path, marker, member):
    """Softmax.load reads with allow_pickle=False: an object array in the .npz is refused unread."""
    evil = np.array([Call(os.system, f"touch {shlex.quote(str(marker))}")], dtype=object)
    arrays = dict(W=np.ones((3, 2)), meta=np.array(json.dumps({"format": "fastsoftmax.Softmax/1"})))
    arrays[member] = evil
    path = tmp_path / "model.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=r"is not a fastsoftmax Softmax model.*allow_pickle=False"):
        Softmax.load(path)


@pytest.mark.parametrize("kind", ["object-npy", "raw-pickle"])
def test_dask_from_npy_refuses_pickles(tmp_path, marker, kind):
    fd = pytest.importorskip("fastsoftmax.dask")
    payload = Call(os.system, f"touch {shlex.quote(str(marker))}")
    path = tmp_path / "X.npy"
    if kind == "object-npy":
        np.save(path, np.array([payload, payload], dtype=object))
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    # NumPy's messages: an object .npy cannot be memory-mapped; a pickle needs allow_pickle.
    with pytest.raises(ValueError, match=r"can't be memory-mapped|contains pickled \(object\) data"):
        fd.from_npy(path)
