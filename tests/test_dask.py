"""fastsoftmax.dask on a real distributed cluster: two worker processes on 127.0.0.1.

One ``LocalCluster`` serves the whole module (starting one takes seconds).
Whatever these tests compute runs on it: the module's client is the default
scheduler while it is up.  Functions defined here are shipped to the workers
by value (they cannot import this test module).
"""

import concurrent.futures
import os
import signal
import sys
import time

import numpy as np
import pytest

pytest.importorskip("distributed", reason="fastsoftmax[dask] is not installed")
da = pytest.importorskip("dask.array", reason="fastsoftmax[dask] is not installed")

import cloudpickle  # noqa: E402  (a dependency of distributed)

import fastsoftmax  # noqa: E402
from fastsoftmax import dask as fd  # noqa: E402
from fastsoftmax.testing import compare, random_problem  # noqa: E402


@pytest.fixture(scope="module")
def client():
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        with fd.local_client(n_workers=2, threads_per_worker=1) as client:
            yield client
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def problem(n=103, d=20, c=5, dtype=np.float64, seed=0):
    return random_problem(np.random.default_rng(seed), n, d, c, dtype=dtype)


def assert_agrees(result, reference, dtype):
    agreement = compare(result, reference, dtype)
    assert agreement.ok, agreement
    assert result[1].dtype == reference[1].dtype


# ----------------------------------------------------------------------------
# Same numbers as in memory


@pytest.mark.parametrize(
    "chunks",
    [
        (103,),  # one chunk
        (25, 25, 25, 28),  # even-ish
        (1, 50, 52),  # uneven, with a chunk of one row
        (1,) * 103,  # every row its own chunk (a deep reduction tree)
        (40, 0, 63),  # an empty chunk, as slicing can leave
        "2KiB",  # chunk size in bytes
    ],
    ids=["single", "even", "uneven-with-one-row", "one-row-each", "empty-chunk", "bytes"],
)
def test_matches_in_memory_for_chunkings(client, chunks):
    W, X, y = problem()
    reference = fastsoftmax.softmax_loss(W, X, y, 0.3)
    result = fd.softmax_loss(W, fd.from_array(X, chunks=chunks), y, 0.3)
    assert_agrees(result, reference, np.float64)


def test_every_backend_runs_on_the_workers(client, fast_backend):
    name, in_memory = fast_backend
    W, X, y = problem(n=64)
    reference = in_memory(W, X, y, 0.1)
    result = fd.softmax_loss(W, fd.from_array(X, chunks=(7, 30, 27)), y, 0.1, backend=name, num_threads=2)
    assert_agrees(result, reference, np.float64)


def test_float32_and_mixed_dtypes(client):
    W, X, y = problem(dtype=np.float32)
    for W_, X_ in [(W, X), (W.astype(np.float64), X)]:
        reference = fastsoftmax.softmax_loss(W_, X_, y, 0.2)
        result = fd.softmax_loss(W_, fd.from_array(X_, chunks=(1, 50, 52)), y, 0.2)
        assert_agrees(result, reference, reference[1].dtype)


def test_column_chunks_and_mismatched_label_chunks_are_aligned(client):
    W, X, y = problem()
    reference = fastsoftmax.softmax_loss(W, X, y, 0.0)
    Xd = da.from_array(X, chunks=(30, 7))  # column chunks: merged to whole rows
    yd = da.from_array(y, chunks=17)  # other row chunks than X: rechunked to X's
    assert_agrees(fd.softmax_loss(W, Xd, yd, 0.0), reference, np.float64)


def test_inputs_are_not_modified(client):
    W, X, y = problem()
    copies = W.copy(), X.copy(), y.copy()
    fd.softmax_loss(W, fd.from_array(X, chunks=10), y, 1.0)
    for before, after in zip(copies, (W, X, y)):
        np.testing.assert_array_equal(before, after)


# ----------------------------------------------------------------------------
# What travels


def _bytes_sent_off_workers(client):
    """Bytes the workers have sent to anyone but each other (the scheduler, the client).

    Chunks may move between workers (work stealing); gathering to the client
    goes through the scheduler or straight from the workers, and is what
    this counts.
    """
    workers = set(client.scheduler_info()["workers"])

    def sent(dask_worker, workers=workers):
        return sum(e["total"] for e in dask_worker.transfer_outgoing_log if e["who"] not in workers)

    return sum(client.run(sent).values())


def test_no_chunk_of_X_travels_to_the_client(client):
    # X is generated on the workers; only (D, C) partial sums may leave them.
    n, d, c, rows = 2000, 256, 4, 200
    X = da.random.default_rng(3).standard_normal((n, d), chunks=(rows, d))
    y = da.random.default_rng(4).integers(0, c, n, chunks=rows)
    W = 0.05 * np.random.default_rng(5).standard_normal((d, c))
    before = _bytes_sent_off_workers(client)
    X_here, y_here = client.compute([X, y], sync=True)
    # The probe sees a gather: computing X on the client moves all of it.
    assert _bytes_sent_off_workers(client) - before >= X_here.nbytes
    reference = fastsoftmax.softmax_loss(W, X_here, y_here, 0.5)

    before = _bytes_sent_off_workers(client)
    result = fd.softmax_loss(W, X, y, 0.5)
    moved = _bytes_sent_off_workers(client) - before

    assert_agrees(result, reference, np.float64)
    chunk_bytes = rows * d * 8
    # Only the finished (D, C) result: not a single chunk of X.
    assert 0 < moved < chunk_bytes, f"{moved} bytes left the workers; one chunk of X is {chunk_bytes}"


def test_lazy_result_keeps_scattered_chunks_alive(client):
    W, X, y = problem()
    lazy = fd.softmax_loss(W, fd.from_array(X, chunks=10), y, 0.2, compute=False)
    # The temporary Dask array (and its Futures) is gone; the graph holds them.
    assert_agrees(client.compute(lazy, sync=True), fastsoftmax.softmax_loss(W, X, y, 0.2), np.float64)


def test_W_is_in_the_graph_once(client):
    n_chunks, d, c = 20, 256, 64
    X = da.random.default_rng(0).standard_normal((n_chunks * 4, d), chunks=(4, d))
    y = da.zeros(n_chunks * 4, dtype=int, chunks=4)
    W = np.random.default_rng(1).standard_normal((d, c))
    lazy = fd.softmax_loss(W, X, y, 0.1, compute=False)
    graph_bytes = len(cloudpickle.dumps(dict(lazy.__dask_graph__())))
    # Once per chunk would be 20 times W; the rest of the graph is small.
    assert W.nbytes < graph_bytes < 1.5 * W.nbytes, (graph_bytes, W.nbytes)
    reference = fastsoftmax.softmax_loss(W, *client.compute([X, y], sync=True), 0.1)
    assert_agrees(client.compute(lazy, sync=True), reference, np.float64)


# ----------------------------------------------------------------------------
# A worker dies mid-computation


def _slow(block):
    time.sleep(0.4)
    return block


def _busy_workers(client):
    """Addresses of the workers the scheduler has a slow task running on."""

    def busy(dask_scheduler):
        return [
            address
            for address, ws in dask_scheduler.workers.items()
            if any("slow" in str(ts.key) for ts in ws.processing)
        ]

    return client.run_on_scheduler(busy)


def _kill_a_busy_worker(client):
    """SIGKILL one worker process while it runs a slow task; return its pid."""
    pids = client.run(os.getpid)
    deadline = time.monotonic() + 30
    while not (busy := _busy_workers(client)):
        assert time.monotonic() < deadline, "no slow task started on any worker"
        time.sleep(0.05)
    time.sleep(0.1)  # well inside the task's 0.4 s
    os.kill(pids[busy[0]], signal.SIGKILL)
    return pids[busy[0]]


def _wait_for_restart(client, pid):
    client.wait_for_workers(2, timeout=60)  # the nanny restarts it for the next tests
    assert pid not in client.run(os.getpid).values(), "the worker was not killed"


def test_worker_killed_mid_computation_gives_right_answer(client):
    # Chunks Dask can recompute (here from the graph; from_npy works alike)
    # are redone on a surviving worker: the same answer.
    W, X, y = problem(n=120)
    reference = fastsoftmax.softmax_loss(W, X, y, 0.05)
    Xd = fd.from_array(X, chunks=10, scatter=False).map_blocks(_slow, dtype=X.dtype)
    future = client.compute(fd.softmax_loss(W, Xd, y, 0.05, compute=False))
    pid = _kill_a_busy_worker(client)
    result = future.result(timeout=90)
    assert_agrees(result, reference, np.float64)
    _wait_for_restart(client, pid)


def test_worker_killed_holding_scattered_chunks_fails_clearly(client):
    # Scattered chunks exist only on their worker: losing it must be an
    # error that says so, never a sum over the surviving chunks.
    W, X, y = problem(n=120)
    Xd = fd.from_array(X, chunks=10).map_blocks(_slow, dtype=X.dtype)
    assert Xd.chunks[0] == (10,) * 12  # scattered: the client is active
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        call = pool.submit(fd.softmax_loss, W, Xd, y, 0.05)
        pid = _kill_a_busy_worker(client)
        with pytest.raises(RuntimeError, match="cannot be recomputed: load X from files"):
            call.result(timeout=90)
    _wait_for_restart(client, pid)


# ----------------------------------------------------------------------------
# Bad input: the shared validator's errors, up front or from the chunk


def test_bad_arguments_are_rejected_up_front(client):
    W, X, y = problem()
    Xd = fd.from_array(X, chunks=10)
    with pytest.raises(ValueError, match=r"W has 19 rows but X has 20 columns"):
        fd.softmax_loss(W[:-1], Xd, y, 0.1)
    with pytest.raises(ValueError, match=r"y has 102 labels but X has 103 rows"):
        fd.softmax_loss(W, Xd, y[:-1], 0.1)
    with pytest.raises(ValueError, match=r"y has 102 labels but X has 103 rows"):
        fd.softmax_loss(W, Xd, da.from_array(y[:-1]), 0.1)
    with pytest.raises(TypeError, match=r"y must hold integer class labels"):
        fd.softmax_loss(W, Xd, y.astype(float), 0.1)
    with pytest.raises(TypeError, match=r"X must be an array of real numbers"):
        fd.softmax_loss(W, Xd.astype(complex), y, 0.1)
    with pytest.raises(ValueError, match=r"reg must be a finite number >= 0"):
        fd.softmax_loss(W, Xd, y, -1.0)
    with pytest.raises(ValueError, match=r"W contains NaN or inf"):
        fd.softmax_loss(np.full_like(W, np.nan), Xd, y, 0.1)
    with pytest.raises(ValueError, match=r"X must be 2-D"):
        fd.softmax_loss(W, Xd[:, 0], y, 0.1)
    with pytest.raises(ValueError, match=r"unknown chunk sizes.*compute_chunk_sizes"):
        fd.softmax_loss(W, Xd[da.from_array(y, chunks=10) > 2], y, 0.1)
    with pytest.raises(ValueError, match=r"num_threads must be an integer >= 1, got 0"):
        fd.softmax_loss(W, Xd, y, 0.1, num_threads=0)
    with pytest.raises(ValueError, match=r"split_every must be an integer >= 2, got 1"):
        fd.softmax_loss(W, Xd, y, 0.1, split_every=1)
    with pytest.raises(TypeError, match=r"split_every must be an integer, got float"):
        fd.softmax_loss(W, Xd, y, 0.1, split_every=2.0)
    with pytest.raises(fastsoftmax.backends.BackendUnavailable, match="unknown backend"):
        fd.softmax_loss(W, Xd, y, 0.1, backend="fortran")


def test_bad_chunk_contents_raise_from_the_workers(client):
    W, X, y = problem()
    bad_y = y.copy()
    bad_y[77] = 5  # C = 5: out of range, in the 8th chunk only
    with pytest.raises(ValueError, match=r"labels in \[0, C\) = \[0, 5\), found label 5"):
        fd.softmax_loss(W, fd.from_array(X, chunks=10), bad_y, 0.1)
    bad_X = X.copy()
    bad_X[50, 3] = np.nan
    with pytest.raises(ValueError, match=r"X contains NaN or inf"):
        fd.softmax_loss(W, fd.from_array(bad_X, chunks=10), y, 0.1)


# ----------------------------------------------------------------------------
# Data helpers


@pytest.mark.parametrize("order", ["C", "F"])
def test_from_npy_reads_rows_lazily_and_matches(client, tmp_path, order):
    W, X, y = problem()
    path = tmp_path / "X.npy"
    np.save(path, np.asarray(X, order=order))
    Xd = fd.from_npy(path, chunks=(1, 50, 52))
    assert Xd.chunks == ((1, 50, 52), (20,))
    # The graph names the file; it does not carry its data.
    assert len(cloudpickle.dumps(dict(Xd.__dask_graph__()))) < X.nbytes / 4
    np.testing.assert_array_equal(Xd.compute(), X)
    assert_agrees(fd.softmax_loss(W, Xd, y, 0.1), fastsoftmax.softmax_loss(W, X, y, 0.1), np.float64)


def test_from_array_of_a_memmap_and_labels(client, tmp_path):
    path = tmp_path / "y.dat"
    labels = np.random.default_rng(0).integers(0, 10, 1000).astype(np.int16)
    mm = np.memmap(path, dtype=np.int16, mode="w+", shape=labels.shape)
    mm[:] = labels
    mm.flush()
    yd = fd.from_array(np.memmap(path, dtype=np.int16, mode="r", shape=labels.shape), chunks="512B")
    assert yd.chunks == ((256, 256, 256, 232),)
    np.testing.assert_array_equal(yd.compute(), labels)
    with pytest.raises(ValueError, match="a view of a memmap"):
        fd.from_array(mm[10:])
    del mm


def test_chunk_specifications():
    assert fd.chunk_rows((1000, 10), np.float64, 7) == 7
    assert fd.chunk_rows((1000, 10), np.float64, "800B") == 10
    assert fd.chunk_rows((1000, 10), np.float64, "1B") == 1
    assert fd.chunk_rows((5, 10), np.float64, "1GiB") == 5
    assert fd.chunk_rows((10**9, 3073), np.float32, "auto") == 128 * 2**20 // (3073 * 4)
    X = np.zeros((10, 3))
    assert fd.from_array(X, chunks=(3, 7)).chunks == ((3, 7), (3,))
    assert fd.from_array(da.from_array(X, chunks=(2, 1)), chunks=4).chunks == ((4, 4, 2), (3,))
    with pytest.raises(ValueError, match=r"chunks must be an integer >= 1, got 0"):
        fd.chunk_rows((10, 3), np.float64, 0)
    with pytest.raises(ValueError, match="byte size such as '64MiB'"):
        fd.chunk_rows((10, 3), np.float64, "lots")
    with pytest.raises(TypeError, match="chunks must be"):
        fd.chunk_rows((10, 3), np.float64, 2.5)
    with pytest.raises(ValueError, match="add up to N = 10"):
        fd.from_array(X, chunks=(3, 3))
    with pytest.raises(ValueError, match="at least one dimension"):
        fd.from_array(np.float64(1.0))


def test_in_memory_arrays_are_scattered_once_not_embedded(client):
    W, X, y = problem(n=400, d=64)
    scattered = fd.from_array(X, chunks=100)
    embedded = fd.from_array(X, chunks=100, scatter=False)
    assert len(cloudpickle.dumps(dict(scattered.__dask_graph__()))) < X.nbytes / 10
    assert len(cloudpickle.dumps(dict(embedded.__dask_graph__()))) > X.nbytes
    assert scattered.chunks == embedded.chunks == ((100,) * 4, (64,))
    np.testing.assert_array_equal(scattered.compute(), X)


def test_take_rows_equals_in_memory_indexing(client):
    X = np.random.default_rng(0).standard_normal((50, 3))
    Xd = fd.from_array(X, chunks=(1, 20, 29))
    idx = np.array([49, 3, 3, 0, 21, 20, 49])
    np.testing.assert_array_equal(fd.take_rows(Xd, idx), X[idx])
    with pytest.raises(ValueError, match="rows is empty"):
        fd.take_rows(Xd, np.array([], dtype=int))
    np.testing.assert_array_equal(fd.take_rows(Xd, np.array([-1, 0])), X[[-1, 0]])  # as in NumPy
    # The validator's checks and messages for rows (one API for both):
    with pytest.raises(IndexError, match=r"rows holds index 50, out of range for X with 50 rows"):
        fd.take_rows(Xd, np.array([50]))
    with pytest.raises(TypeError, match="rows must hold integer row indices"):
        fd.take_rows(Xd, np.array([1.0]))


# ----------------------------------------------------------------------------
# Training


def test_training_on_a_dask_array_matches_training_in_memory(client, capsys):
    from fastsoftmax.training.data import make_spiral

    X, y = make_spiral(n_per_class=100, n_classes=3, seed=0)
    X = np.c_[X, np.ones(len(X))]  # bias column
    settings = dict(learning_rate=1.0, reg=1e-3, num_iters=150, batch_size=100, verbose=True)
    in_memory = fastsoftmax.Softmax(seed=7)
    history = in_memory.train(X, y, **settings)
    printed = capsys.readouterr().out

    on_dask = fastsoftmax.Softmax(seed=7)
    Xd, yd = fd.from_array(X, chunks=(1, 120, 79, 100)), fd.from_array(y, chunks=50)
    dask_history = on_dask.train(Xd, yd, **settings)
    assert capsys.readouterr().out == printed  # the same progress report
    assert "iteration 100 / 150" in printed

    # The same minibatches (same seed, rows fetched in the order drawn): the same model.
    np.testing.assert_allclose(dask_history, history, rtol=1e-12)
    np.testing.assert_allclose(on_dask.W, in_memory.W, rtol=1e-12, atol=0)
    accuracy = in_memory.score(X, y)
    assert accuracy > 0.45  # the CS231n notes' linear softmax on the spiral: about 0.49
    assert on_dask.score(Xd, yd) == accuracy
    assert isinstance(on_dask.predict(Xd), da.Array)  # prediction stays lazy
    # Exactly num_iters draws: a further train() continues the same random stream.
    assert on_dask.rng.bit_generator.state == in_memory.rng.bit_generator.state
    # The explicit way: the batch source as an argument, the same model again.
    explicit = fastsoftmax.Softmax(seed=7)
    explicit.train(Xd, yd, batches=fd.minibatches, **{**settings, "verbose": False})
    np.testing.assert_array_equal(explicit.W, on_dask.W)


def test_training_on_a_dask_array_equals_the_in_memory_model_bit_for_bit(client):
    """The fetched block with rows= into it feeds the kernel the same rows as X[idx] in memory."""
    from fastsoftmax.training.sgd import random_batches

    rng = np.random.default_rng(2)
    X = rng.standard_normal((300, 40))
    y = rng.integers(0, 5, 300)
    settings = dict(learning_rate=0.3, reg=1e-3, num_iters=30, batch_size=64, n_threads=1)
    models = []
    for X_, batches in [(X, random_batches), (fd.from_array(X, chunks=70), fd.minibatches)]:
        model = fastsoftmax.Softmax(backend="numpy", seed=4)
        model.train(X_, y, batches=batches, **settings)
        models.append(model)
    np.testing.assert_array_equal(models[0].W, models[1].W)


def test_minibatches_fetch_several_per_round_trip_as_drawn_in_memory(client, monkeypatch):
    from fastsoftmax.training.sgd import random_batches

    X = np.random.default_rng(0).standard_normal((50, 3))
    y = np.arange(50) % 4
    fetches = []
    unique_rows = fd._unique_rows
    monkeypatch.setattr(fd, "_unique_rows", lambda X, idx: fetches.append(len(idx)) or unique_rows(X, idx))
    # Room for three batches of 5 rows of 3 float64 per fetch: 11 batches in 4 fetches.
    got = list(fd.minibatches(fd.from_array(X, chunks=7), y, 5, 11, np.random.default_rng(3),
                              prefetch_bytes=3 * 5 * 24))
    assert fetches == [15, 15, 15, 10]
    expected = list(random_batches(X, y, 5, 11, np.random.default_rng(3)))
    assert len(got) == len(expected) == 11
    for (block, y_block, rows), (X_all, y_all, idx) in zip(got, expected):
        assert block.shape[0] <= 15  # only fetched rows, never X
        np.testing.assert_array_equal(block[rows], X_all[idx])
        np.testing.assert_array_equal(y_block[rows], y_all[idx])


def test_train_without_a_batch_source_does_not_load_a_dask_array(client, monkeypatch):
    """A Dask X gets fastsoftmax.dask.minibatches by default: never np.asarray(X) (all of it)."""
    X = np.random.default_rng(0).standard_normal((50, 3))
    Xd = fd.from_array(X, chunks=10)
    monkeypatch.setattr(type(Xd), "__array__", lambda *a, **k: pytest.fail("train() loaded all of X"))
    model = fastsoftmax.Softmax(backend="numpy", seed=0)
    assert len(model.train(Xd, np.arange(50) % 3, num_iters=3, batch_size=5)) == 3
