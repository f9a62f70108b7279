"""python -m eval.studies.kidney_outcomes on tiny fake cohorts in the KiTS layout (clinical.json +
case_XXXXX/segmentation.nii.gz, made here): report.json rows with the stated keys, strict JSON, --external takes
any folder in the layout, a bad --cohort -> exit 2 with one error line; the calibration slope / intercept."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

nib = pytest.importorskip("nibabel")
pytest.importorskip("sksurv")

from eval.studies import kidney_models, kidney_outcomes  # noqa: E402
from scoring.calibration import calibration_binary  # noqa: E402
from scoring.survival import cox_calibration_slope  # noqa: E402

ROW_KEYS = {"outcome", "model", "split", "metric", "value", "ci_low", "ci_high", "n", "events"}
COMORBIDITIES = ("myocardial_infarction", "congestive_heart_failure", "peripheral_vascular_disease",
                 "cerebrovascular_disease", "dementia", "copd", "connective_tissue_disease", "peptic_ulcer_disease",
                 "uncomplicated_diabetes_mellitus", "diabetes_mellitus_with_end_organ_damage", "chronic_kidney_disease",
                 "hemiplegia_from_stroke", "leukemia", "malignant_lymphoma", "localized_solid_tumor",
                 "metastatic_solid_tumor", "mild_liver_disease", "moderate_to_severe_liver_disease", "aids")


def _record(i: int, rng, procedures) -> dict:
    """One fake record in KiTS23's format; outcomes loosely follow the tumour size so models have a signal."""
    size = float(rng.uniform(1.5, 10.0))
    big = size > 5.0
    proc = procedures[i % len(procedures)]
    dead = bool(rng.random() < (0.45 if big else 0.15))
    return {
        "case_id": f"case_{i:05d}", "gender": ["male", "female"][i % 2], "age_at_nephrectomy": int(rng.integers(35, 80)),
        "bmi": float(rng.uniform(20, 38)) if i % 7 else None,
        "comorbidities": {k: bool(rng.random() < 0.1) for k in COMORBIDITIES},
        "vital_status": "dead" if dead else "censored", "vital_days_after_surgery": int(rng.integers(30, 1500)),
        "hospitalization": int(rng.integers(4, 8) if big or rng.random() < 0.2 else rng.integers(1, 4)),
        "er_visit": False, "readmission": False, "surgery_type": ["robotic", "open"][i % 2],
        "surgical_approach": "transperitoneal", "surgical_procedure": proc, "estimated_blood_loss": 100,
        "clavien_surgical_complications": "2" if (big and rng.random() < 0.6) or rng.random() < 0.15 else "0",
        "intraoperative_complications": {"blood_transfusion": False, "injury_to_surrounding_organ": False,
                                         "cardiac_event": False},
        "ischemia_time": None, "operative_time": 200, "smoking_history": ["never_smoked", "previous_smoker"][i % 2],
        "age_when_quit_smoking": None, "pack_years": 0.0 if i % 2 == 0 else 10.0,
        "chewing_tobacco_use": "never_or_not_in_the_last_3_months", "alcohol_use": "two_or_less_daily",
        "radiographic_size": round(size, 1), "cytoreductive": False, "pathologic_size": size, "malignant": True,
        "pathology_t_stage": "3a" if big and rng.random() < 0.7 else "1a", "pathology_n_stage": "0",
        "pathology_m_stage": "0", "tumor_histologic_subtype": "clear_cell_rcc",
        "tumor_necrosis": False, "tumor_isup_grade": "3" if big and rng.random() < 0.5 else "2",
        "positive_resection_margins": False, "sarcomatoid_features": False, "rhabdoid_features": False,
        "last_preop_egfr": {"days_before_nephrectomy": 10, "value": float(rng.uniform(50, 100))},
        "first_postop_egfr": {"days_after_nephrectomy": 60, "value": float(rng.uniform(30, 100))},
        "last_postop_egfr": {"days_after_nephrectomy": 900, "value": 70.0},
        "aua_risk_score": "high_risk" if big else "low_risk",
    }


def _mask(size_cm: float, rng) -> np.ndarray:
    """A 24^3 label map at 4 mm: an ellipsoidal kidney with a spherical tumour whose radius follows the size."""
    z, y, x = np.mgrid[:24, :24, :24].astype(np.float64)
    m = np.zeros((24, 24, 24), np.uint8)
    m[((z - 12) / 10) ** 2 + ((y - 12) / 6) ** 2 + ((x - 12) / 5) ** 2 <= 1] = 1
    r = max(size_cm * 10 / 2 / 4, 1.0)
    cz = 12 + rng.integers(-3, 4)
    m[(z - cz) ** 2 + (y - 12) ** 2 + (x - 16) ** 2 <= r * r] = 2
    if rng.random() < 0.3:
        m[(z - 5) ** 2 + (y - 10) ** 2 + (x - 10) ** 2 <= 2] = 3
    return m


def make_fake_cohort(folder, n: int, start: int, seed: int, procedures=("partial_nephrectomy",
                                                                      "radical_nephrectomy")) -> str:
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    records = [_record(start + i, rng, procedures) for i in range(n)]
    for r in records:
        d = os.path.join(folder, r["case_id"])
        os.makedirs(d, exist_ok=True)
        affine = np.diag([4.0, 4.0, 4.0, 1.0])
        nib.save(nib.Nifti1Image(_mask(r["radiographic_size"], rng), affine), os.path.join(d, "segmentation.nii.gz"))
    with open(os.path.join(folder, "clinical.json"), "w", encoding="utf-8") as f:
        json.dump(records, f)
    return str(folder)


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory):
    base = tmp_path_factory.mktemp("kits_fake")
    dev = make_fake_cohort(base / "dev", 28, 0, 0)
    # any folder in the layout: another name, another id range, and a procedure development never saw
    ext = make_fake_cohort(base / "later_collection", 14, 400, 1,
                           procedures=("partial_nephrectomy", "radical_nephrectomy", "cryoablation"))
    return dev, ext


def _strict(path):
    with open(path, encoding="utf-8") as f:
        return json.loads(f.read(), parse_constant=lambda c: pytest.fail(f"{path}: non-strict JSON constant {c}"))


@pytest.mark.slow
def test_report_end_to_end(cohorts, tmp_path, capsys):
    dev, ext = cohorts
    out = tmp_path / "report"
    # --crop_pool 4: the deep model sees 12^3 crops (of 48^3), an eighth of the default's voxels (CI time)
    rc = kidney_outcomes.main(["--cohort", dev, "--external", ext, "--out", str(out), "--quick", "--deep_steps", "2",
                               "--crop_pool", "4", "--n_boot", "5", "--no_progress", "--outcomes", "survival,stay_gt3,clavien_ge2",
                               "--learning_curve", "stay_gt3", "--curve_fractions", "0.6"])
    assert rc == 0, capsys.readouterr().err
    for root, _, files in os.walk(out):
        for name in files:
            if name.endswith(".json"):
                _strict(os.path.join(root, name))
    res = _strict(out / "report.json")
    rows = res["rows"]
    assert rows and all(ROW_KEYS <= set(r) for r in rows)
    models = {r["model"] for r in rows}
    assert {"clinical", "clinical+size", "clinical+renal", "gbm_image", "rsf_image", "deep_crop_ehr"} <= models
    got = {(r["outcome"], r["split"], r["metric"]) for r in rows}
    assert ("survival", "external", "harrell_c") in got and ("stay_gt3", "cv", "auc") in got
    assert ("stay_gt3", "external", "calibration_slope") in got
    assert not any(r["outcome"] == "clavien_ge2" and r["split"] == "external" for r in rows)  # cv only
    assert any(r["metric"].startswith("delta_") and r["model"] == "deep_crop_ehr" for r in rows)
    by = {o["outcome"]: o for o in res["outcomes"]}
    unseen = by["survival"]["external_unseen_procedure"]
    n_cryo = sum((400 + i) % 3 == 2 for i in range(14))  # every third external case: cryoablation
    assert unseen["n"] == n_cryo and len(res["unseen_procedure_external"]) == n_cryo
    assert by["survival"]["n_external"] == 14 - n_cryo and by["survival"]["best_traditional"] in kidney_models.TRADITIONAL
    lc = by["stay_gt3"]["learning_curve"]
    assert lc["fractions"] == [0.6, 1.0] and lc["n_train"][0] < lc["n_train"][1] and len(lc["deep_crop_ehr"]) == 2
    assert (out / lc["plot"]).is_file()
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "## survival" in md and "external validation" in md and "Events per variable" in md
    assert (out / "decision_stay_gt3_external.png").is_file() and (out / "calibration_survival_cv.png").is_file()
    ex = by["stay_gt3"]["explain"]  # --explain's default: stay_gt3's deep model on the external patients
    assert len(ex["gradcam_plots"]) == 4 and all((out / p).stat().st_size > 500 for p in ex["gradcam_plots"])
    assert (out / ex["shap_plot"]).is_file() and "Explanations of deep_crop_ehr" in md
    shap = [r for r in rows if r["metric"] == "mean_abs_shap"]
    assert shap and all(r["model"] == "deep_crop_ehr" and r["outcome"] == "stay_gt3" and r["split"] == "external"
                        for r in shap)
    assert len({r["feature"] for r in shap}) == len(shap) and all(np.isfinite(r["value"]) for r in shap)
    assert sum(r["value"] for r in shap) > 0
    assert all("feature" not in r for r in rows if r["metric"] != "mean_abs_shap")


def test_bad_cohort_exits_2(tmp_path, capsys):
    rc = kidney_outcomes.main(["--cohort", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), "--quick"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error:") and "nope" in err[0]
    assert not (tmp_path / "o").exists()


def test_bad_explain_exits_2_before_reading(cohorts, tmp_path, capsys):
    rc = kidney_outcomes.main(["--cohort", cohorts[0], "--out", str(tmp_path / "o"), "--quick",
                               "--explain", "survival"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("error: --explain") and not (tmp_path / "o").exists()


@pytest.mark.parametrize("a, b", [(0.0, 1.0), (0.5, 1.0), (0.0, 0.5)])
def test_calibration_binary_recovers_recalibration(a, b):
    """Outcomes drawn from logit P = a + b logit(p): the slope estimate is near b; the intercept of a
    well-calibrated model (a=0, b=1) is near 0."""
    rng = np.random.default_rng(0)
    p = rng.uniform(0.05, 0.95, 20000)
    lp = np.log(p / (1 - p))
    y = (rng.random(len(p)) < 1 / (1 + np.exp(-(a + b * lp)))).astype(float)
    slope, intercept = calibration_binary(y, p)
    assert abs(slope - b) < 0.08
    if (a, b) == (0.0, 1.0):
        assert abs(intercept) < 0.05
    assert np.isnan(calibration_binary(np.zeros(5), np.full(5, 0.3))[0])


def test_cox_calibration_slope_matches_scikit_survival():
    """One covariate, ties in the times: the Newton estimate equals scikit-survival's Cox PH (Breslow)."""
    from sksurv.linear_model import CoxPHSurvivalAnalysis

    rng = np.random.default_rng(1)
    x = rng.normal(size=300)
    t = np.ceil(rng.exponential(1.0 / np.exp(0.7 * x)) * 20)  # integer times: ties
    c = np.ceil(rng.uniform(0, 40, 300))
    event, time = t <= c, np.minimum(t, c)
    y = np.empty(300, dtype=[("event", bool), ("time", float)])
    y["event"], y["time"] = event, time
    ref = CoxPHSurvivalAnalysis(ties="breslow").fit(x[:, None], y).coef_[0]
    assert abs(cox_calibration_slope(event, time, x) - ref) < 1e-4
    assert abs(ref - 0.7) < 0.2
