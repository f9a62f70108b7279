"""zoo.outcome.kits: the KiTS-layout cohort reader on tiny fake cohorts written here (flattening, eGFR window,
outcome rules, errors, the train-fitted encoder), and the facts of the real KiTS23 folders when present."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from data_pipelines.covariates import CovariateEncoder
from data_pipelines.families import get_family
from zoo.outcome.kits import (CATEGORICAL, COMORBIDITY_FLAGS, OUTCOMES, PREOPERATIVE, KitsCohort, as_survival_cohort,
                              outcome_counts, read_kits_cohort, unseen_categories)

nib = pytest.importorskip("nibabel")

CHARLSON_ITEMS = [f[3:] for f in COMORBIDITY_FLAGS]


def _record(case_id: str, **fields) -> dict:
    """A KiTS23-shaped record: a healthy partial nephrectomy unless ``fields`` say otherwise
    (``comorbidities`` lists the items that are true)."""
    rec = {
        "case_id": case_id, "gender": "male", "vital_status": "censored", "vital_days_after_surgery": 1000,
        "bmi": 27.5, "age_at_nephrectomy": 60, "hospitalization": 2, "surgery_type": "robotic",
        "surgical_approach": "transperitoneal", "surgical_procedure": "partial_nephrectomy",
        "estimated_blood_loss": 100, "clavien_surgical_complications": "0", "ischemia_time": 20,
        "operative_time": 200, "smoking_history": "previous_smoker", "age_when_quit_smoking": None,
        "pack_years": 10.0, "chewing_tobacco_use": "never_or_not_in_the_last_3_months",
        "alcohol_use": "two_or_less_daily", "radiographic_size": 3.0, "malignant": True,
        "pathology_t_stage": "1a", "tumor_isup_grade": "2", "aua_risk_score": "low_risk",
        "last_preop_egfr": {"days_before_nephrectomy": 10, "value": 80.0},
        "first_postop_egfr": {"days_after_nephrectomy": 90, "value": 75.0},
        "last_postop_egfr": {"days_after_nephrectomy": 900, "value": 70.0},
    }
    true_items = set(fields.pop("comorbidities", ()))
    rec["comorbidities"] = {k: k in true_items for k in CHARLSON_ITEMS}
    rec.update(fields)
    return rec


def _write(folder, records, masks=None):
    """``folder/clinical.json`` + a tiny mask for each record (or only for the case ids in ``masks``)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "clinical.json").write_text(json.dumps(records))
    lab = np.zeros((4, 5, 6), np.uint8)
    lab[1:3, 1:4, 1:5], lab[2, 2, 2] = 1, 2
    for case_id in (masks if masks is not None else [r["case_id"] for r in records]):
        (folder / case_id).mkdir()
        nib.save(nib.Nifti1Image(lab, np.diag([2.0, 0.8, 0.8, 1.0])), str(folder / case_id / "segmentation.nii.gz"))
    return str(folder)


def _unknown_comorbidity(tmp_path):
    rec = _record("case_00000")
    rec["comorbidities"]["gout"] = True
    return _write(tmp_path / "c", [rec])


DEV = [
    # Charlson: MI 1 + diabetes with end-organ damage 2 (over uncomplicated) + metastatic 6 (over localized) = 9
    _record("case_00000", comorbidities=["myocardial_infarction", "uncomplicated_diabetes_mellitus",
                                         "diabetes_mellitus_with_end_organ_damage", "localized_solid_tumor",
                                         "metastatic_solid_tumor"],
            vital_status="dead", vital_days_after_surgery=100, pathology_t_stage="3a", tumor_isup_grade="2",
            hospitalization=5, clavien_surgical_complications="3a", smoking_history="never_smoked", pack_years=None,
            first_postop_egfr={"days_after_nephrectomy": 30, "value": 60.0}),  # (80-60)/80 = 0.25: a decline
    _record("case_00001", comorbidities=["chronic_kidney_disease", "mild_liver_disease"], gender="female",
            pathology_t_stage="1a", tumor_isup_grade="na", hospitalization=3, clavien_surgical_complications="2",
            smoking_history="current_smoker", pack_years=None, bmi=None,
            last_preop_egfr={"days_before_nephrectomy": 3, "value": 100.0},
            first_postop_egfr={"days_after_nephrectomy": 5, "value": 40.0},   # too early: the last one is used
            last_postop_egfr={"days_after_nephrectomy": 200, "value": 90.0}),
    _record("case_00002", surgical_procedure="radical_nephrectomy", surgery_type="open", malignant=False,
            pathology_t_stage="na", tumor_isup_grade="na", clavien_surgical_complications=None,
            smoking_history="not_found_in_emr", gender="transgender_male_to_female", chewing_tobacco_use=
            "quit_in_last_3_months", first_postop_egfr={"days_after_nephrectomy": 60, "value": 20.0}),
    _record("case_00003", pathology_t_stage=None, tumor_isup_grade=None, malignant=None, radiographic_size=7.0,
            aua_risk_score="high_risk", age_at_nephrectomy=70,
            first_postop_egfr={"days_after_nephrectomy": 366, "value": 20.0},   # both outside 30-365 days
            last_postop_egfr={"days_after_nephrectomy": 800, "value": 20.0}),
    _record("case_00004", tumor_isup_grade="4", pathology_t_stage="1b", age_at_nephrectomy=50,
            last_preop_egfr={"days_before_nephrectomy": None, "value": None}, smoking_history="never_smoked",
            pack_years=0.0),
]
EXT = [
    _record("case_00400", surgical_procedure="cryoablation", surgery_type="percutaneous"),
    _record("case_00401", bmi=None, radiographic_size=None, surgery_type=None, gender="female",
            chewing_tobacco_use="current_chewing_tobacco_user", surgical_approach="trans_to_retro"),
    _record("case_00402", surgical_procedure="nephroureterectomy", smoking_history="never_smoked", pack_years=None),
]


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    root = tmp_path_factory.mktemp("kits")
    return read_kits_cohort(_write(root / "development", DEV)), read_kits_cohort(_write(root / "validation", EXT))


def test_flattened_frame(fake):
    dev, ext = fake
    f = dev.frame
    assert isinstance(dev, KitsCohort) and dev.name == "development" and len(dev) == 5
    assert list(f.index) == [r["case_id"] for r in DEV] and f.index.name == "case_id"
    assert dev.covariates == PREOPERATIVE and dev.categorical == CATEGORICAL
    assert set(dev.categorical) <= set(dev.covariates) and set(dev.covariates) <= set(f.columns)
    for post in ("os_time", "hospitalization", "egfr_postop_first", "clavien", "pathology_t_stage", "procedure"):
        assert post not in dev.covariates
    assert f["charlson_index"].tolist() == [9.0, 3.0, 0.0, 0.0, 0.0]  # CKD 2 + mild liver 1
    assert f.loc["case_00000", "cm_uncomplicated_diabetes_mellitus"] == 1.0  # the flag stays; the index counts one
    assert f.loc["case_00000", "age"] == 60 and f.loc["case_00003", "radiographic_size"] == 7.0
    assert f.loc["case_00000", "pack_years"] == 0.0  # never-smoker without a value
    assert math.isnan(f.loc["case_00001", "pack_years"]) and math.isnan(f.loc["case_00001", "bmi"])
    # level rules: not_found_in_emr and single-patient levels are missing; chewing tobacco in two levels
    assert f.loc["case_00002", "smoking_history"] is None and f.loc["case_00002", "gender"] is None
    assert f.loc["case_00002", "chewing_tobacco_use"] == "in_the_last_3_months"
    assert ext.frame.loc["case_00401", "chewing_tobacco_use"] == "in_the_last_3_months"
    assert ext.frame.loc["case_00401", "surgical_approach"] is None
    assert f.loc["case_00000", "egfr_preop"] == 80.0 and f.loc["case_00000", "egfr_preop_days"] == 10.0
    assert f.loc["case_00001", "egfr_postop_first"] == 40.0 and f.loc["case_00001", "egfr_postop_first_days"] == 5.0
    assert dev.mask_path("case_00003").endswith("case_00003/segmentation.nii.gz")
    with pytest.raises(ValueError, match="case_09999"):
        dev.mask_path("case_09999")


def test_outcome_rules(fake):
    f = fake[0].frame

    def col(name):
        return [None if math.isnan(v) else int(v) for v in f[name]]

    assert col("os_event") == [1, 0, 0, 0, 0] and f["os_time"].tolist()[:2] == [100.0, 1000.0]
    # pT3a; pT1a with ISUP na (known T); benign (na/na but malignant false); all unknown; ISUP 4
    assert col("aggressive_pathology") == [1, 0, 0, None, 1]
    assert col("stay_gt3") == [1, 0, 0, 0, 0]  # > 3 days, not >= 3
    # 0.25 exactly at day 30; the last value when the first is too early (10 %); radical; outside the window;
    # no preoperative value
    assert col("egfr_decline") == [1, 0, None, None, None]
    assert f["egfr_postop_window"].tolist()[:2] == [60.0, 90.0]
    assert math.isnan(f.loc["case_00003", "egfr_postop_window"])
    assert col("clavien_ge2") == [1, 1, None, 0, 0] and col("clavien_ge3a") == [1, 0, None, 0, 0]
    assert f["procedure"].tolist() == f["surgical_procedure"].tolist()
    counts = outcome_counts(fake[0])
    assert counts["survival"] == {"known": 5, "events": 1} and counts["egfr_decline"] == {"known": 2, "events": 1}
    assert set(counts) == set(OUTCOMES)
    assert not OUTCOMES["clavien_ge2"]["validate_external"] and not OUTCOMES["clavien_ge3a"]["validate_external"]
    assert OUTCOMES["survival"]["kind"] == "survival" and OUTCOMES["survival"]["columns"] == ("os_time", "os_event")
    assert all(set(spec["columns"]) <= set(f.columns) for spec in OUTCOMES.values())


@pytest.mark.parametrize("first, last, expected", [
    ((30, 50.0), (400, 10.0), 50.0),     # the window's edges are inside
    ((365, 50.0), (400, 10.0), 50.0),
    ((29, 50.0), (365, 10.0), 10.0),     # first too early: the last, inside
    ((20, 50.0), (25, 10.0), None),      # both too early
    ((None, None), (100, 10.0), 10.0),   # no first value
    ((100, None), (200, 10.0), 10.0),    # a first day without a value
])
def test_egfr_window(tmp_path, first, last, expected):
    rec = _record("case_00007", first_postop_egfr={"days_after_nephrectomy": first[0], "value": first[1]},
                  last_postop_egfr={"days_after_nephrectomy": last[0], "value": last[1]})
    v = read_kits_cohort(_write(tmp_path / "c", [rec])).frame.loc["case_00007", "egfr_postop_window"]
    assert (math.isnan(v) if expected is None else v == expected)


def test_encoder_fitted_on_development_imputes_external(fake):
    dev, ext = fake
    apart = unseen_categories(dev, ext)
    assert apart == ["case_00400", "case_00402"]
    assert unseen_categories(dev, ext, "surgery_type") == ["case_00400"]
    kept = ext.drop(apart)
    enc = CovariateEncoder.for_cohort(dev).fit(dev)
    x = enc.transform(kept, "external")
    names = enc.feature_names
    assert x.shape == (1, len(names)) and np.isfinite(x).all()
    row = dict(zip(names, x[0]))
    dev_bmi = [r["bmi"] for r in DEV if r["bmi"] is not None]
    assert row["bmi"] == pytest.approx(np.median(dev_bmi))  # the development median, not the external one
    assert row["radiographic_size"] == pytest.approx(3.0)
    assert row["gender=female"] == 1.0 and row["chewing_tobacco_use=in_the_last_3_months"] == 1.0
    assert "surgical_approach=trans_to_retro" not in names
    # the reference level is development's most frequent one (robotic): an imputed surgery type has no column set
    surgery = [n for n in names if n.startswith("surgery_type=")]
    assert surgery and all(row[n] == 0.0 for n in surgery)
    # derived from the pathology in these records: never a covariate
    assert "aua_risk_score" not in dev.covariates and not any(n.startswith("aua_risk_score") for n in names)
    assert dev.frame.loc["case_00003", "aua_risk_score"] == "high_risk"  # kept as a column of the frame
    with pytest.raises(ValueError, match="cryoablation"):
        enc.transform(ext, "external")
    # overall survival as the outcome home's Cohort, over a chosen covariate set
    surv = as_survival_cohort(dev.with_covariates(["age", "charlson_index", "gender"]))
    assert surv.covariates == ("age", "charlson_index", "gender") and surv.categorical == ("gender",)
    assert surv.event.tolist() == [1, 0, 0, 0, 0] and surv.time.tolist()[0] == 100.0


def test_registered_family(fake):
    family = get_family("kits")
    assert family.needs_data_dir and family.cohort is read_kits_cohort
    assert len(family.cohort(fake[1].folder)) == 3


def _bad_json(tmp_path):
    (tmp_path / "clinical.json").write_text('[{"case_id": "case_00000",')
    return str(tmp_path)


@pytest.mark.parametrize("make, error, pattern", [
    (lambda p: _write(p / "c", DEV[:3], masks={"case_00000", "case_00002"}), ValueError,
     r"case 'case_00001' has no mask at .*case_00001/segmentation\.nii\.gz"),
    (_bad_json, ValueError, r"clinical\.json: not valid JSON"),
    (lambda p: _write(p / "c", {"case_id": "case_00000"}, masks=()), ValueError, r"clinical\.json: expected a list"),
    (lambda p: _write(p / "c", []), ValueError, r"clinical\.json: no patient records"),
    (lambda p: _write(p / "c", [_record("case_00000"), _record("case_00000")], masks=set()), ValueError,
     "appears more than once"),
    (lambda p: _write(p / "c", [_record("../x")], masks=set()), ValueError, r"case_id '\.\./x'"),
    (lambda p: _write(p / "c", [_record("case_00000", bmi="27")]), ValueError, r"case_00000: field 'bmi'"),
    (_unknown_comorbidity, ValueError, r"'comorbidities' has unknown item\(s\) \['gout'\]"),
    (lambda p: _write(p / "c", [_record("case_00000", last_preop_egfr={"value": "high"})]), ValueError,
     r"field 'last_preop_egfr\.value'"),
    (lambda p: _write(p / "c", [_record("case_00000", clavien_surgical_complications="6")]), ValueError,
     "clavien_surgical_complications"),
    (lambda p: str(p / "nowhere"), FileNotFoundError, "no such cohort folder"),
    (lambda p: (p / "empty").mkdir() or str(p / "empty"), FileNotFoundError, r"clinical\.json: no such file"),
])
def test_bad_input_one_clear_error(tmp_path, make, error, pattern):
    with pytest.raises(error, match=pattern):
        read_kits_cohort(make(tmp_path))


def test_real_kits23_facts(shared_data):
    root = shared_data / "kits23"
    if not (root / "development" / "clinical.json").is_file():
        pytest.skip(f"KiTS23 sample not found at {root}")
    dev, val = read_kits_cohort(str(root / "development")), read_kits_cohort(str(root / "validation"))
    facts = {c.name: outcome_counts(c) for c in (dev, val)}
    print("KiTS23 outcome counts:", facts)
    assert (len(dev), len(val)) == (300, 100)
    assert facts["development"]["survival"]["events"] == 42 and facts["validation"]["survival"]["events"] == 12
    assert facts["development"]["stay_gt3"]["events"] == 109 and facts["validation"]["stay_gt3"]["events"] == 27
    for c, (t34, isup34) in ((dev, (75, 89)), (val, (25, 30))):  # SOURCES.md's pT3-4 and ISUP 3-4
        f = c.frame
        assert int(f["pathology_t_stage"].fillna("").str[:1].isin(["3", "4"]).sum()) == t34
        assert int(f["tumor_isup_grade"].isin(["3", "4"]).sum()) == isup34
    apart = unseen_categories(dev, val)
    assert len(apart) == 18 and set(val.frame.loc[apart, "procedure"]) == {"cryoablation", "nephroureterectomy"}
    x = CovariateEncoder.for_cohort(dev).fit(dev).transform(val.drop(apart), "external")
    assert x.shape[0] == 82 and np.isfinite(x).all()
