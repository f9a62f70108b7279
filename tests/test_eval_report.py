"""End to end: a smoke checkpoint → eval.report / analysis outputs and the ablations' paired deltas, checked
against scoring."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from eval import analysis, checkpoints, report
from eval.deltas import CaseValues, paired_deltas
from eval.studies import ablations
import scoring as M

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def smoke_workdir(tmp_path_factory):
    wd = str(tmp_path_factory.mktemp("smoke") / "run")
    cmd = [sys.executable, "-m", "zoo.train", "--config=smoke", f"--workdir={wd}", "--config.train.steps=4",
           "--no_progress", "--config.data.num_val=6"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return wd


def _expected_case_values(wd):
    """Per-case values recomputed here with scoring on the model's own predictions."""
    from data_pipelines.datasets import load_dataset
    from zoo import load_pretrained

    pre = load_pretrained(wd)
    _, val, info = load_dataset(pre.config.data)
    pred = pre.predict(val["image"])
    out = {m: [] for m in checkpoints.STUDY_METRICS}
    for p, t in zip(pred, val["label"]):
        pr, tr = M.brats_regions(p), M.brats_regions(t)
        for m in out:
            out[m].append(np.nanmean([M.METRICS[m](pr[r], tr[r]) for r in ("WT", "TC", "ET")]))
    return {m: np.asarray(v) for m, v in out.items()}, info


@pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning")
def test_report_numbers_equal_metric_functions(smoke_workdir, tmp_path):
    out = tmp_path / "rep"
    rc = report.main(["--workdir", smoke_workdir, "--out", str(out), "--n_boot", "200",
                      "--external", "seed=7"])
    assert rc == 0
    for name in ("report.md", "report.csv", "report.json"):
        assert (out / name).stat().st_size > 100
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert any(p.startswith("boxplot_") for p in pngs) and any(p.startswith("overlay_") for p in pngs)
    want, info = _expected_case_values(smoke_workdir)
    doc = json.loads((out / "report.json").read_text(encoding="utf-8"))
    internal = [r for r in doc["rows"] if "external" not in r["dataset"]]
    assert {r["dataset"] for r in internal} == {info.name}
    md = (out / "report.md").read_text(encoding="utf-8")
    with open(out / "report.csv", encoding="utf-8") as f:
        csv_rows = list(csv.DictReader(f))
    table1 = []
    for m in checkpoints.STUDY_METRICS:
        row = [r for r in internal if r["structure"] == "mean" and r["metric"] == m][0]
        est = float(np.nanmean(want[m]))
        assert row["estimate"] == pytest.approx(est, abs=1e-9), m
        assert row["ci_low"] <= est + 1e-12 and est <= row["ci_high"] + 1e-12
        c = [r for r in csv_rows if r["structure"] == "mean" and r["metric"] == m and "external" not in r["dataset"]]
        assert float(c[0]["estimate"]) == pytest.approx(est, abs=1e-9)
        table1.append(f"{est:.3f}")
    assert " / ".join(table1) in md  # Table 1 cell in the study's layout
    per_case = np.asarray(doc["models"][0]["per_case"], dtype=float)  # [N, structures, metrics]
    j = doc["models"][0]["metrics"].index("dice")
    assert np.allclose(np.nanmean(per_case[:, :, j], axis=1), want["dice"], equal_nan=True)
    # The external split is a second data set column for the same model, compared with CIs.
    assert any("external" in r["dataset"] for r in doc["rows"])
    ext = doc["external_validation"][0]
    assert ext["internal"]["estimate"] == pytest.approx(float(np.nanmean(want["dice"])), abs=1e-9)
    assert ext["small"] is True and "External validation" in md  # 6 cases < min_n


def test_report_cli_bad_input(tmp_path, capsys):
    assert report.main(["--workdir", str(tmp_path / "missing")]) == 2
    assert "error:" in capsys.readouterr().err
    assert report.main(["--workdir", str(tmp_path), "--metrics", "dice,nope"]) == 2
    assert "nope" in capsys.readouterr().err


def test_analysis_cli_with_subgroups(smoke_workdir, tmp_path):
    meta = tmp_path / "meta.csv"
    from data_pipelines.datasets import load_dataset
    from zoo import load_pretrained

    cfg = load_pretrained(smoke_workdir).config
    ids = [str(i) for i in load_dataset(cfg.data)[1]["patient_id"]]
    rows = ["patient_id,age,sex,site"] + [f"{c},{30 + 10 * i},{'FM'[i % 2]},{'AB'[i // 4]}" for i, c in enumerate(ids)]
    meta.write_text("\n".join(rows) + "\n")
    out = tmp_path / "an"
    assert analysis.main(["--workdir", smoke_workdir, "--out", str(out), "--metadata", str(meta),
                          "--n_boot", "100"]) == 0
    res = json.loads((out / "analysis.json").read_text(encoding="utf-8"))
    assert res["num_cases"] == len(ids)
    b = res["boundary_bands"]
    assert sum(b["voxels"]) == len(ids) * 32 * 32
    sites = [r for r in res["subgroups"] if r["attribute"] == "site"]
    assert sorted(r["level"] for r in sites) == ["A", "B"] and all(r["small"] for r in sites)
    assert sum(r["n"] for r in sites) <= len(ids)
    assert len(res["worst_cases"]) == min(5, len(ids)) and all(w["reasons"] for w in res["worst_cases"])
    assert "Worst cases" in (out / "analysis.md").read_text(encoding="utf-8")


def test_ablation_compare_same_run_gives_zero_delta(smoke_workdir):
    ev, _, _ = checkpoints.evaluate_workdir(smoke_workdir, metrics=("dice", "jaccard", "sensitivity", "specificity"),
                                       with_auc=False)
    ab = ablations.ABLATIONS["skips"]
    rows = paired_deltas({"a": CaseValues.of_eval(ev), "b": CaseValues.of_eval(ev)}, [(ab, "a", "b")], n_boot=100)
    assert len(rows) == 4
    for r in rows:
        assert r["delta"] == 0.0 and r["delta_ci_low"] == 0.0 and r["delta_ci_high"] == 0.0 and r["identical"]
    md = ablations.ablation_markdown(rows)
    assert "no effect" in md and "-10..-5%" in md
    missing = paired_deltas({"a": CaseValues.of_eval(ev)}, [(ab, "a", "b")])
    assert "error" in missing[0]
    # A finished run is reused, not retrained (no subprocess is started).
    res = ablations.train_run("smoke", smoke_workdir, {}, steps=4)
    assert res["reused"] and res["rc"] == 0


def test_ablation_plan():
    from zoo.configs import load_config

    runs, pairs, skipped = ablations.plan(list(ablations.ABLATIONS), available_models={"unet"},
                                       base_config=load_config("smoke"))
    assert [s[0] for s in skipped] == ["attention"]
    assert runs["recipe"] == {} and runs["skip_connections=False"] == {"model.kwargs.skip_connections": "False"}
    by = {ab.name: (r, t) for ab, r, t in pairs}
    assert by["normalisation"] == ("norm=none", "recipe") and by["augmentation"] == ("recipe", "augment.enabled=True")
    assert by["loss"] == ("train.loss=ce", "train.loss=dice")
    assert len(runs) == 6  # the recipe is shared by three ablations
    with pytest.raises(ValueError, match="unknown ablations"):
        ablations.plan(["nope"])
