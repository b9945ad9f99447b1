"""Shared fixtures: every test that takes ``backend`` runs once per registered backend.

A backend that cannot load on this machine is skipped with its reason, except
where ``FASTSOFTMAX_REQUIRE_ALL_BACKENDS=1`` (set by ``.ci/run``): there a
missing backend, such as a Cython extension that silently failed to build,
fails the run instead.
"""

import os

import pytest

from fastsoftmax import backends
from fastsoftmax.testing import load_backend


@pytest.fixture(autouse=True, scope="session")
def no_user_wisdom(tmp_path_factory):
    """Tests never read the user's ``fastsoftmax tune`` results: the static table decides."""
    before = os.environ.get("FASTSOFTMAX_CACHE_DIR")
    os.environ["FASTSOFTMAX_CACHE_DIR"] = str(tmp_path_factory.mktemp("fastsoftmax-cache"))
    yield
    if before is None:
        os.environ.pop("FASTSOFTMAX_CACHE_DIR", None)
    else:
        os.environ["FASTSOFTMAX_CACHE_DIR"] = before

@pytest.fixture(params=list(backends.BACKENDS))
def backend(request):
    """(name, softmax_loss) for each built-in backend."""
    return request.param, load_backend(request.param)


@pytest.fixture(params=[b for b in backends.BACKENDS if b != "python"])
def fast_backend(request):
    """(name, softmax_loss) for each backend other than the reference."""
    return request.param, load_backend(request.param)


@pytest.fixture
def reference():
    """The reference implementation's public ``softmax_loss``."""
    return backends.get("python")


# --- hypothesis profiles -------------------------------------------------
# "default" keeps the property tests inside the normal suite's time budget;
# "thorough" is the long run on demand:
#     HYPOTHESIS_PROFILE=thorough pytest tests/test_properties.py
#     pytest tests/test_properties.py --hypothesis-profile=thorough
# Deadlines are off in both: the first call of a numba kernel compiles it, and
# a shared CI machine makes per-example wall time meaningless.  The example
# database stays on (in .hypothesis/, git-ignored) so a failure found once is
# replayed first on the next run.
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "default",
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough",
    max_examples=5000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


# --- training tests (tests/test_data.py, test_classifier.py, test_gradcheck.py, test_tuning.py) ---

import pathlib  # noqa: E402

#: The real CIFAR-10 subset beside the repository (see ../shared/cifar-10-subset/README).
CIFAR_SUBSET = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "cifar-10-subset" / "cifar-10-batches-py"


@pytest.fixture(scope="session")
def cifar_root():
    """Path of the shared CIFAR-10 subset, or skip saying where it was looked for."""
    if not CIFAR_SUBSET.is_dir():
        pytest.skip(f"real CIFAR-10 subset not found at {CIFAR_SUBSET} (expected ../shared beside the repository)")
    return CIFAR_SUBSET


@pytest.fixture(scope="session")
def cifar_splits(cifar_root):
    """The issue's splits of the subset: 4585 train / 500 val / 500 dev / all 1017 test, float64."""
    from fastsoftmax.training.data import get_cifar10_data

    return get_cifar10_data(cifar_root, num_training=4585, num_validation=500, num_test=1017, num_dev=500)


@pytest.fixture
def one_blas_thread():
    """Run BLAS single-threaded: on a shared, oversubscribed 2-core machine a spinning
    2-thread OpenBLAS makes the many small products of SGD ~10x slower; results do not
    depend on it (the training tests compare models within one setting)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield
