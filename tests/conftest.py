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
