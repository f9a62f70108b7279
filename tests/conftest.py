"""Test-suite set-up: CPU only, strict dtype promotion, shared fixtures."""

import os
import pathlib

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Commands the tests run (in-process or in subprocesses that inherit this) do not fill the user's compilation cache;
# the cache's own tests turn it on in their subprocesses.
os.environ.setdefault("MEDZOO_COMPILATION_CACHE", "0")
# Compile fast, run slow: the suite's programs are tiny, so XLA:CPU's backend optimisation (LLVM at -O2) costs far
# more time than it saves (test_models' train cases: 24 s -> 16 s). Tests check values, not speed; the library
# and the benchmarks keep XLA's default. Subprocesses that inherit the environment inherit this too.
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_backend_optimization_level" not in _flags:
    os.environ["XLA_FLAGS"] = f"{_flags} --xla_backend_optimization_level=0".strip()

import jax  # noqa: E402
import pytest  # noqa: E402



@pytest.fixture(autouse=True)
def _strict_dtype_promotion(request):
    """Strict dtype promotion (equinox style) catches silent float64/float32 and int/float mixing in our code.

    Optax's own update rules mix int32 step counts with float32 (``decay ** count``), so tests that run an
    optax optimiser in-process mark themselves ``@pytest.mark.standard_promotion``.
    """
    if request.node.get_closest_marker("standard_promotion"):
        yield
        return
    with jax.numpy_dtype_promotion("strict"):
        yield

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """``../shared/data`` beside the project root; tests using it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data samples not found at {SHARED_DATA} (they live beside the project root)")
    return SHARED_DATA


def pytest_configure(config):
    # CI runs `-n 2 --dist loadfile`: xdist would order the files by their number of tests, which puts the few-test
    # end-to-end files (two-process training, resume, ...) last, where one of them alone keeps a worker busy after
    # the other has finished. The order of pytest_collection_modifyitems is kept instead.
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
    """Files holding ``slow``-marked tests first, then the others by their number of tests, most first (xdist's own
    order): under ``--dist loadfile`` the long files start early and the short ones fill the end."""
    files = {}
    for i, item in enumerate(items):
        n, slow, first = files.get(item.path, (0, False, i))
        files[item.path] = (n + 1, slow or item.get_closest_marker("slow") is not None, first)
    items.sort(key=lambda item: (not files[item.path][1], -files[item.path][0], files[item.path][2]))  # stable
