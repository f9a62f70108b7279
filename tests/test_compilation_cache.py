"""The persistent compilation cache every command line turns on (zoo.compilation_cache via zoo.cli.run_command):
a second run in a fresh process compiles nothing new; MEDZOO_COMPILATION_CACHE=0 turns it off."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from zoo import compilation_cache

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A command line declared and run as every entry point is; its body runs a tiny model once and reports how many
# programs XLA compiled and how many came from the persistent cache.
RUN = """
import json, sys
import jax, numpy as np
from zoo import compilation_cache
from zoo.cli import command_parser, run_command
from zoo.registry import create_model

def body(args):
    with compilation_cache.compile_counter() as c:
        model = create_model("unet", spatial_dims=2, in_channels=1, num_classes=2, features=2, depth=2)
        x = np.zeros((1, 16, 16, 1), np.float32)
        variables = model.init(jax.random.PRNGKey(0), x, train=False)
        jax.block_until_ready(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x))
    print(json.dumps({"compiled": c.compiled, "loaded": c.loaded,
                      "dir": jax.config.jax_compilation_cache_dir}))

sys.exit(run_command(command_parser("tiny", "tiny"), [], body))
"""


def _run(env_extra: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k != compilation_cache.ENV}
    env.update(env_extra)
    r = subprocess.run([sys.executable, "-c", RUN], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_second_run_in_a_fresh_process_compiles_nothing(tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    first = _run(env)
    assert first["dir"] == str(tmp_path / "xdg" / "medzoo" / "jax" / f"cpu-{compilation_cache.cpu_signature()[1]}")
    assert first["compiled"] > 0 and first["loaded"] == 0
    assert os.listdir(first["dir"])  # the programs were written
    second = _run(env)
    assert second["compiled"] == 0, second
    assert second["loaded"] == first["compiled"]


def test_turned_off_writes_no_cache(tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg"), compilation_cache.ENV: "0"}
    run = _run(env)
    assert run["dir"] is None and run["compiled"] > 0 and run["loaded"] == 0
    assert not (tmp_path / "xdg" / "medzoo").exists()


CPU = f"cpu-{compilation_cache.cpu_signature()[1]}"


@pytest.mark.parametrize("environ,expected", [
    ({"XDG_CACHE_HOME": "/c"}, f"/c/medzoo/jax/{CPU}"),
    ({"XDG_CACHE_HOME": "/c", "MEDZOO_COMPILATION_CACHE": "1"}, f"/c/medzoo/jax/{CPU}"),
    ({"XDG_CACHE_HOME": "/c", "MEDZOO_COMPILATION_CACHE": "/elsewhere/x"}, "/elsewhere/x"),
    ({"XDG_CACHE_HOME": "/c", "MEDZOO_COMPILATION_CACHE": "off"}, None),
    ({"XDG_CACHE_HOME": "/c", "JAX_COMPILATION_CACHE_DIR": "/j"}, "/j"),
    ({"JAX_COMPILATION_CACHE_DIR": "/j", "MEDZOO_COMPILATION_CACHE": "/m"}, "/m"),
    ({"XDG_CACHE_HOME": "/c", "MEDZOO_COMPILATION_CACHE": "False"}, None),
])
def test_cache_dir_from_the_environment(environ, expected):
    assert compilation_cache.cache_dir(environ) == expected


def test_default_is_the_user_cache():
    assert compilation_cache.cache_dir({}) == os.path.join(os.path.expanduser("~"), ".cache", "medzoo", "jax", CPU)
    model, digest = compilation_cache.cpu_signature()
    assert model and len(digest) == 16 and int(digest, 16) >= 0
