"""eval.report / eval.analysis (eval.checkpoints, eval.tables, eval.error_analysis) on each task's code path,
with a stand-in for ``zoo.load_pretrained``'s ``Pretrained`` (task, meta, config, step, predict, predict_proba,
iter_proba) and fake data: no training."""

from __future__ import annotations

import ast
import csv
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest

import scoring as M
from eval import cases, checkpoints, error_analysis, report, tables
from eval.streaming import HistogramAUC, SegmentationAccumulator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _n(inputs):
    return len(inputs["image"]) if isinstance(inputs, dict) else len(inputs)


def _take(inputs, a, b):
    return {k: v[a:b] for k, v in inputs.items()} if isinstance(inputs, dict) else inputs[a:b]


class StandIn:
    """The ``Pretrained`` contract of the prediction path, backed by a numpy ``proba_fn``."""

    def __init__(self, task, proba_fn, *, model="fake_net", data_name="fake/data"):
        self.task, self._proba = task, proba_fn
        self.meta = {"model": model, "data": {"name": data_name}}
        self.config = types.SimpleNamespace(data=types.SimpleNamespace(name=data_name))
        self.step = 3
        self.calls = 0

    def iter_proba(self, inputs, batch_size=8):
        for start in range(0, _n(inputs), batch_size):
            self.calls += 1
            yield start, self._proba(_take(inputs, start, start + batch_size))

    def predict_proba(self, inputs, batch_size=8):
        return np.concatenate([p for _, p in self.iter_proba(inputs, batch_size)])

    def predict(self, inputs, batch_size=8):
        return self.predict_proba(inputs, batch_size).argmax(-1)


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def _seg_data(n=7, shape=(16, 16), k=3, seed=0):
    rng = np.random.default_rng(seed)
    label = np.zeros((n, *shape), np.int32)
    for i in range(n):
        r, c = rng.integers(2, 10, size=2)
        label[i, r:r + 5, c:c + 4] = 1
        label[i, r + 1:r + 3, c + 1:c + 3] = 2 if i % 3 else 0
    image = (label[..., None] + rng.normal(0, 0.6, size=(n, *shape, 1))).astype(np.float32)
    info = types.SimpleNamespace(name="fake/seg", num_classes=k, class_names=("background", "a", "b"))
    arrays = {"image": image, "label": label, "patient_id": np.array([f"p{i}" for i in range(n)])}
    return arrays, info


def _seg_proba(images):  # a deterministic "model" of the image: logits from the intensity
    x = images[..., 0]
    return _softmax(np.stack([-2 * x, -2 * np.abs(x - 1), -2 * np.abs(x - 2)], -1))


def _onehot_proba(images):  # an instance run's contract: the one-hot of its semantic label map
    return np.eye(3, dtype=np.float32)[_seg_proba(images).argmax(-1)]


def _outcome_data(n=30, seed=1):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n)
    cov = (y[:, None] + rng.normal(0, 0.8, size=(n, 3))).astype(np.float32)
    arrays = {"image": rng.normal(size=(n, 8, 8, 1)).astype(np.float32), "covariates": cov, "outcome": y,
              "patient_id": np.arange(100, 100 + n)}
    info = types.SimpleNamespace(name="outcome_phantoms/brain", num_classes=2, class_names=("good", "adverse"))
    return arrays, info


def _outcome_proba(inputs):
    s = 1 / (1 + np.exp(-2 * inputs["covariates"].mean(1) + 1))
    return np.stack([1 - s, s], 1).astype(np.float32)


@pytest.fixture
def runs(monkeypatch):
    """``{workdir: (StandIn, arrays, info)}`` served by patched ``zoo.load_pretrained`` / ``load_split``."""
    import zoo

    table = {}

    def load_pretrained(path):
        if path not in table:
            raise FileNotFoundError(f"no such checkpoint or work directory: {path}")
        return table[path][0]

    def load_split(config, split, data_overrides=None):
        for pre, arrays, info in table.values():
            if pre.config is config:
                return arrays, info
        raise AssertionError("unknown config")

    monkeypatch.setattr(zoo, "load_pretrained", load_pretrained)
    monkeypatch.setattr(checkpoints, "load_split", load_split)
    monkeypatch.setattr(error_analysis, "load_split", load_split)
    return table


def test_evaluate_arrays_streams_proba_and_equals_direct_accumulation():
    arrays, info = _seg_data()
    pre = StandIn("segmentation", _seg_proba)
    acc, auc = checkpoints.evaluate_arrays(pre.iter_proba, arrays, 3, info.class_names, batch_size=3,
                                      metrics=("dice", "hd95", "surface_dice"))
    assert pre.calls == 3  # 7 cases in batches of 3
    proba = _seg_proba(arrays["image"])
    shape = arrays["label"].shape[1:]
    want = SegmentationAccumulator(3, ("dice", "hd95", "surface_dice"), class_names=info.class_names,
                                   one_empty_distance=float(np.sqrt(sum(s * s for s in shape))))
    want.update(proba.argmax(-1), arrays["label"], [str(i) for i in arrays["patient_id"]])
    assert np.array_equal(acc.values, want.values, equal_nan=True) and acc.case_ids == want.case_ids
    ref = HistogramAUC(3)
    ref.update(proba, arrays["label"])
    assert np.array_equal(auc.auc_roc(), ref.auc_roc(), equal_nan=True)


@pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning")
def test_segmentation_and_instance_workdirs(runs, tmp_path):
    arrays, info = _seg_data()
    runs["seg"] = (StandIn("segmentation", _seg_proba), arrays, info)
    runs["inst"] = (StandIn("instance", _onehot_proba, model="mask_rcnn"), arrays, info)
    seg, _, _ = checkpoints.evaluate_workdir("seg", metrics=("dice", "jaccard"), batch_size=4)
    inst, _, pre = checkpoints.evaluate_workdir("inst", metrics=("dice", "jaccard"), batch_size=4)
    assert seg.task == "segmentation" and seg.auc is not None
    assert inst.task == "instance" and inst.auc is None  # one-hot probabilities: no voxel AUC
    # Same semantic label maps → same per-case metrics.
    assert np.array_equal(seg.acc.values, inst.acc.values, equal_nan=True)
    res = tables.write_report([seg, inst], str(tmp_path), n_boot=50, plot_inputs={inst.label: (arrays, pre.predict)})
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "no voxel AUC" in md and "Table 1" in md and "Table 5" not in md
    voxel = {r["model"] for r in res["rows"] if r["structure"].startswith("voxel:")}
    assert voxel == {seg.label}
    doc = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert [m["task"] for m in doc["models"]] == ["segmentation", "instance"]
    assert any(p.name.startswith("overlay_") for p in tmp_path.glob("*.png"))


def test_outcome_workdir_report_and_cli(runs, tmp_path, capsys):
    arrays, info = _outcome_data()
    runs["out"] = (StandIn("outcome", _outcome_proba, model="outcome_net"), arrays, info)
    ev, _, _ = checkpoints.evaluate_workdir("out", batch_size=7)
    assert isinstance(ev, checkpoints.OutcomeEval) and ev.proba.shape == (30, 2)
    want = M.outcome_metrics(arrays["outcome"], _outcome_proba(arrays))
    assert ev.metrics() == want and ev.case_ids == [str(i) for i in arrays["patient_id"]]
    rows = tables.build_tables([ev], n_boot=200)
    assert [r["metric"] for r in rows] == list(checkpoints.OUTCOME_METRICS)
    for r in rows:
        assert r["structure"] == "patient" and r["n"] == 30
        assert r["estimate"] == pytest.approx(want[r["metric"]], abs=1e-12)
        assert r["ci_low"] <= r["estimate"] + 1e-12 <= r["ci_high"] + 2e-12
    out = tmp_path / "rep"
    assert report.main(["--workdir", "out", "--out", str(out), "--n_boot", "100"]) == 0
    assert "30 patients" in capsys.readouterr().out
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "Table 5" in md and "Table 1" not in md and "specificity" in md
    with open(out / "report.csv", encoding="utf-8") as f:
        csv_rows = list(csv.DictReader(f))
    auc = [r for r in csv_rows if r["metric"] == "auc_roc"][0]
    assert float(auc["estimate"]) == pytest.approx(want["auc_roc"])
    doc = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert doc["models"][0]["task"] == "outcome" and len(doc["models"][0]["proba"]) == 30
    assert not list(out.glob("*.png"))  # no boxplots / overlays for patient-level outcomes


def test_outcome_inputs_are_checked():
    arrays, _ = _outcome_data()
    with pytest.raises(ValueError, match="covariates"):
        cases.model_inputs({"image": arrays["image"], "outcome": arrays["outcome"]}, "outcome")
    with pytest.raises(ValueError, match="unknown task"):
        cases.model_inputs(arrays, "detection")


@pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning")
def test_analysis_on_instance_run_and_refuses_outcome(runs):
    arrays, info = _seg_data()
    runs["inst"] = (StandIn("instance", _onehot_proba), arrays, info)
    res = error_analysis.analyse_workdir("inst", n_boot=50, batch_size=3)
    assert res["num_cases"] == len(arrays["label"]) and sum(res["boundary_bands"]["voxels"]) == 7 * 16 * 16
    o_arrays, o_info = _outcome_data()
    runs["out"] = (StandIn("outcome", _outcome_proba), o_arrays, o_info)
    with pytest.raises(ValueError, match="segmentation or instance"):
        error_analysis.analyse_workdir("out")


def _imports(path):
    tree = ast.parse(open(path, encoding="utf-8").read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


# The studies that train models (the paper table, ablations, the outcome report) live in eval/studies/ and may
# drive the training core (DESIGN.md); every module of eval/ itself reaches models only through the store and the
# prediction path.
TRAINING_ENTRY_POINTS = ()


def test_eval_imports_only_what_it_may():
    forbidden = ("zoo.train", "zoo.cv", "zoo.outcome", "zoo.hparam", "eval.metrics", "eval.surface",
                 "eval.instance_metrics")
    for name in sorted(os.listdir(os.path.join(ROOT, "eval"))):
        if name.endswith(".py"):
            mods = set(_imports(os.path.join(ROOT, "eval", name)))
            assert not [m for m in mods if m in forbidden], name
            if name not in TRAINING_ENTRY_POINTS:
                assert not [m for m in mods if m.startswith("zoo.training")], name
            assert "eval.report" not in mods or name == "ablate.py", name  # report sits on top
    r = subprocess.run([sys.executable, "-c", "import sys, eval.analysis, eval.cases; "
                        "assert 'eval.report' not in sys.modules"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
