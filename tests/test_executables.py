"""Store entries that carry compiled programs (zoo.executables): on the same host type the first prediction in a
fresh process compiles nothing; programs made for another host are ignored with one notice line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from zoo import executables, store

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENTRY = os.path.join(store.PACKAGE_STORE, "unet-phantoms-brain2d")

# Load the entry and segment two phantom slices (Predictor batches) and one whole slice by sliding window with
# mirroring: the programs a prediction compiles.
BODY = """
import json, sys
import numpy as np
from data_pipelines import phantoms
from zoo import compilation_cache, executables, load_pretrained

pc = phantoms.PhantomConfig(kind="brain", shape=(64, 64), seed=123, difficulty="realistic")
images = np.stack([phantoms.make_phantom(pc, i)["image"] for i in range(2)])

def run():
    pre = load_pretrained(sys.argv[1])
    return pre.predict(images, batch_size=2), pre.predictor.sliding_window_proba(images[:1], (64, 64), tta=True)
"""
# As a command line does: the compilation cache on; count the programs compiled and loaded from the cache.
PREDICT = BODY + """
compilation_cache.enable()
with compilation_cache.compile_counter() as c:
    labels, proba = run()
print(json.dumps({"compiled": c.compiled, "loaded": c.loaded, "fg": int((labels > 0).sum()),
                  "proba_sum": float(proba.sum())}))
"""
# Prepare the programs (compiled from scratch) and report what that prediction gave.
PREPARE = BODY + """
out = []
n = executables.prepare(sys.argv[1], lambda: out.append(run()))
labels, proba = out[0]
print(json.dumps({"programs": n, "fg": int((labels > 0).sum()), "proba_sum": float(proba.sum())}))
"""


def _predict(entry, xdg) -> tuple[dict, list[str]]:
    env = dict(os.environ, XDG_CACHE_HOME=str(xdg))
    env.pop("MEDZOO_COMPILATION_CACHE", None)
    r = subprocess.run([sys.executable, "-c", PREDICT, str(entry)], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.strip().splitlines()
    return json.loads(lines[-1]), lines[:-1]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A copy of the shipped phantom entry with its programs prepared (in a fresh process, as a user would)."""
    entry = tmp_path_factory.mktemp("store") / "unet-phantoms-brain2d"
    shutil.copytree(ENTRY, entry)
    r = subprocess.run([sys.executable, "-c", PREPARE, str(entry)], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    ref = json.loads(r.stdout.strip().splitlines()[-1])
    assert ref["programs"] > 0
    return entry, ref


def test_an_entry_with_programs_predicts_without_compiling(prepared, tmp_path):
    entry, ref = prepared
    info = json.loads((entry / "programs" / "programs.json").read_text(encoding="utf-8"))
    assert info["host"] == executables.host_key() and len(info["programs"]) == ref["programs"]
    assert all((entry / "programs" / "cache" / f).is_file() for f in info["programs"])
    out, notes = _predict(entry, tmp_path / "xdg")  # a fresh user cache: only the entry's programs
    assert out["compiled"] == 0 and out["loaded"] == ref["programs"], out
    assert not notes
    # the same answer as the prediction that compiled them
    assert out["fg"] == ref["fg"] and out["proba_sum"] == pytest.approx(ref["proba_sum"])


def test_programs_for_another_host_are_ignored_with_one_notice(prepared, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(prepared[0], other)
    info_path = other / "programs" / "programs.json"
    info = json.loads(info_path.read_text(encoding="utf-8"))
    info["host"]["cpu_flags"] = "0123456789abcdef"
    info_path.write_text(json.dumps(info), encoding="utf-8")
    out, notes = _predict(other, tmp_path / "xdg")
    assert out["compiled"] > 0 and out["loaded"] == 0
    assert len(notes) == 1 and notes[0].startswith("notice: the compiled programs of") and "cpu_flags" in notes[0]
    assert "compiling instead" in notes[0]


def test_install_without_programs_or_cache(tmp_path, monkeypatch):
    lines = []
    assert executables.install(str(tmp_path), log=lines.append) == 0 and not lines  # no programs: silent
    (tmp_path / "programs").mkdir()
    (tmp_path / "programs" / "programs.json").write_text("{", encoding="utf-8")
    assert executables.install(str(tmp_path), log=lines.append) == 0
    assert len(lines) == 1 and "cannot be read" in lines[0]
    with pytest.raises(ValueError, match="not a model-store entry"):
        executables.prepare(str(tmp_path), lambda: None)
