"""The KiTS23 surgical cohort as a data family: kidney-tumour surgery, the preoperative CT's segmentation and the
clinical record with the outcomes after surgery.

Layout (any folder in it is accepted by path): ``FOLDER/clinical.json``, a list of records as in KiTS23's
``kits23.json``, and ``FOLDER/case_XXXXX/segmentation.nii.gz`` for every record (labels 0 background, 1 kidney,
2 tumour, 3 cyst). :func:`read_kits_cohort` reads it into a :class:`KitsCohort`, one row per patient (index
``case_id``), registered as the tabular data family ``kits`` (``DataFamily("kits", cohort=read_kits_cohort)``).
Data: Heller N. et al., arXiv:1904.00445 (KiTS19) and arXiv:2307.01984 (KiTS21/23); CC BY-NC-SA 4.0, so the
folder is always given by path and nothing read from it is copied into the project.

Flattening rules (``frame`` columns):

* ``age`` = age_at_nephrectomy (years), ``bmi``, ``pack_years``, ``radiographic_size`` (cm): numbers, NaN when
  missing. ``pack_years`` of a never-smoker with no value recorded is 0 (development records it as 0.0,
  validation leaves it empty; imputing a median would give never-smokers a smoking dose).
* comorbidities (the 19 Charlson items, booleans) -> one 0/1 column ``cm_<name>`` each (NaN when not recorded)
  and ``charlson_index``, the Charlson comorbidity index with the weights of Charlson et al., J Chronic Dis
  40:373-383 (1987): 1 for myocardial infarction, congestive heart failure, peripheral vascular disease,
  cerebrovascular disease, dementia, chronic pulmonary disease (``copd``), connective tissue disease, peptic
  ulcer, uncomplicated diabetes and mild liver disease; 2 for diabetes with end-organ damage, hemiplegia,
  moderate-severe renal disease, leukemia, lymphoma and a localized solid tumour; 3 for moderate-severe liver
  disease; 6 for a metastatic solid tumour and AIDS; no age points (that is the 1994 age-combined index).
  Two choices, stated: the record's ``chronic_kidney_disease`` stands for Charlson's "moderate-severe renal
  disease" (the record does not grade it, so milder CKD may be counted); within the three hierarchies of the
  usual coding (Quan et al., Med Care 2005) only the heavier item counts (diabetes with end-organ damage over
  uncomplicated diabetes, moderate-severe over mild liver disease, metastatic over localized solid tumour:
  2 development and 3 validation patients carry both tumour items). NaN when any item is unrecorded.
* eGFR (ml/min/1.73 m2): ``egfr_preop`` / ``egfr_preop_days`` = last_preop_egfr's value / days before surgery;
  ``egfr_postop_first`` / ``egfr_postop_first_days`` and ``egfr_postop_last`` / ``egfr_postop_last_days`` the
  records' first and last postoperative values / days after surgery; ``egfr_postop_window`` /
  ``egfr_postop_window_days``: the value the decline outcome uses (below).
* categories (``categorical``), missing as ``None``: gender, smoking_history, alcohol_use, chewing_tobacco_use,
  surgery_type, surgical_approach, surgical_procedure. ``LEVEL_RULES`` recodes a few levels so a
  model fitted on the development split can read every later row: ``not_found_in_emr`` is missing (imputed);
  levels held by a single development patient (gender ``transgender_male_to_female``, alcohol
  ``quit_in_last_3_months``, approach ``trans_to_retro``, a conversion: 1 development and 2 validation patients)
  are missing too (no model can estimate a level from one patient, and a cross-validation fold without it would
  meet it unseen); chewing tobacco becomes ``never_or_not_in_the_last_3_months`` or ``in_the_last_3_months``
  (current users, 2 in validation only, with those who quit in the last 3 months, 5 in development).

Preoperative covariates (``covariates``: what a urologist knows before the operation): age, gender, bmi, the 19
comorbidity flags and charlson_index (collinear: an unpenalised model takes one or the other, see
:meth:`KitsCohort.with_covariates`), smoking_history, pack_years, alcohol_use, chewing_tobacco_use, egfr_preop,
radiographic_size, and the procedure, approach and surgery type, which are **planned** before
surgery (the record holds the one performed; a conversion is rare and the planned one is what a preoperative
model can be given). Nothing measured during or after surgery is a covariate (pathology, operative and ischemia
time, blood loss, complications, stay, postoperative eGFR, vital status). Nor is ``aua_risk_score``, although its
name says preoperative: in these records it is derived from the pathology (development: all 25 "benign" patients
have benign pathology, all 134 "low risk" ones are pT1, 39 of 41 "high risk" ones pT3; with it, aggressive pathology
reached an AUC of 0.985), so it stays a column of the frame and no model is given it.

Outcomes (columns; NaN where not applicable or unknown; ``OUTCOMES`` describes them):

* ``os_time`` = vital_days_after_surgery (days), ``os_event`` = 1 when vital_status is ``dead`` (else 0):
  overall survival after surgery.
* ``aggressive_pathology`` = 1 when pathology_t_stage starts with ``3`` or ``4`` (pT3-4) or tumor_isup_grade is
  ``3`` or ``4``; 0 when at least one of the two is known and neither is aggressive; NaN when both are
  missing/unknown (``na``, ``None``), except for a benign tumour (``malignant`` false), which is 0: its ``na``
  means "not applicable" (no carcinoma to stage or grade), not "unknown" (25 development, 3 validation).
* ``stay_gt3`` = hospitalization > 3 days.
* ``egfr_decline`` = (egfr_preop - postop) / egfr_preop >= 0.25, for partial nephrectomies only (NaN for the
  other procedures), with postop the first postoperative value recorded 30-365 days after surgery: the record's
  first_postop_egfr when its days lie in [30, 365], else its last_postop_egfr when those days do, else NaN (the
  first recorded value ranges from 1 to over 2,800 days after surgery; a day-1 value measures the acute injury,
  a value years later the ageing kidney).
* ``clavien_ge2`` = clavien_surgical_complications in 2, 3a, 3b, 4, 5; ``clavien_ge3a`` = in 3a, 3b, 4, 5.
  ``validate_external`` is false for both: the validation collection did not record complications the same way
  (98 of its 100 are Clavien 0; ../shared/data/SOURCES.md).
* ``procedure`` = surgical_procedure, kept beside the outcomes: external patients whose procedure never occurs
  in development (cryoablation, nephroureterectomy) are reported apart (:func:`unseen_categories`).

Also kept for subgroups and checks (not covariates): ``malignant`` (0/1), ``pathology_t_stage``,
``tumor_isup_grade``, ``hospitalization`` (days), ``clavien`` (the grade as recorded), ``aua_risk_score``.

Imputation is not done here: the one covariate encoder, ``CovariateEncoder.for_cohort(cohort)``
(:mod:`data_pipelines.covariates`, training median / mode), is fitted on the development rows only and then
applied to validation. :func:`as_survival_cohort` gives the overall-survival outcome as the outcome home's
:class:`zoo.outcome.cohorts.Cohort` (``time`` / ``event``), what the survival baselines and heads read.

Bad input is one ``data_pipelines.errors.UnreadableInput`` (a ``ValueError``): the folder or ``clinical.json``
missing (its ``MissingInput``, also a ``FileNotFoundError``); a malformed ``clinical.json`` (not JSON, nested
too deep, over 256 MiB, not a list of records, a bad or repeated case_id, a field of the wrong type) naming the
file, the case and the field; a record without its mask naming the case and the path.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from typing import Sequence

import numpy as np

from data_pipelines.errors import MissingInput, UnreadableInput
from data_pipelines.families import DataFamily, register_family
from data_pipelines.limits import check_claim
from zoo.outcome.cohorts import Cohort, make_cohort

__all__ = ["KitsCohort", "read_kits_cohort", "unseen_categories", "as_survival_cohort", "outcome_counts",
           "CHARLSON_WEIGHTS", "CHARLSON_HIERARCHY", "COMORBIDITY_FLAGS", "PREOPERATIVE", "CATEGORICAL",
           "LEVEL_RULES", "OUTCOMES", "EGFR_WINDOW_DAYS", "EGFR_DECLINE", "MASK_NAME", "CLINICAL_NAME"]

CLINICAL_NAME = "clinical.json"
MASK_NAME = "segmentation.nii.gz"
MAX_CLINICAL_BYTES = 256 << 20  # a clinical.json larger than this is not a cohort (KiTS23's is about 2 MiB)
CASE_ID = re.compile(r"^case_\d+$")

# Charlson et al. 1987 weights for the 19 items as KiTS names them
CHARLSON_WEIGHTS = {
    "myocardial_infarction": 1, "congestive_heart_failure": 1, "peripheral_vascular_disease": 1,
    "cerebrovascular_disease": 1, "dementia": 1, "copd": 1, "connective_tissue_disease": 1,
    "peptic_ulcer_disease": 1, "uncomplicated_diabetes_mellitus": 1, "diabetes_mellitus_with_end_organ_damage": 2,
    "chronic_kidney_disease": 2, "hemiplegia_from_stroke": 2, "leukemia": 2, "malignant_lymphoma": 2,
    "localized_solid_tumor": 2, "metastatic_solid_tumor": 6, "mild_liver_disease": 1,
    "moderate_to_severe_liver_disease": 3, "aids": 6,
}
# (milder, heavier): only the heavier counts when both are present
CHARLSON_HIERARCHY = (("uncomplicated_diabetes_mellitus", "diabetes_mellitus_with_end_organ_damage"),
                      ("mild_liver_disease", "moderate_to_severe_liver_disease"),
                      ("localized_solid_tumor", "metastatic_solid_tumor"))
COMORBIDITY_FLAGS = tuple(f"cm_{k}" for k in CHARLSON_WEIGHTS)

CATEGORICAL = ("gender", "smoking_history", "alcohol_use", "chewing_tobacco_use",
               "surgery_type", "surgical_approach", "surgical_procedure")
PREOPERATIVE = (("age", "gender", "bmi") + COMORBIDITY_FLAGS
                + ("charlson_index", "smoking_history", "pack_years", "alcohol_use", "chewing_tobacco_use",
                   "egfr_preop", "radiographic_size", "surgical_procedure", "surgical_approach",
                   "surgery_type"))

# column -> {recorded level: level used (None: missing)}; "not_found_in_emr" is missing in every column
LEVEL_RULES = {
    "gender": {"transgender_male_to_female": None},
    "alcohol_use": {"quit_in_last_3_months": None},
    "chewing_tobacco_use": {"quit_in_last_3_months": "in_the_last_3_months",
                            "current_chewing_tobacco_user": "in_the_last_3_months"},
    "surgical_approach": {"trans_to_retro": None},
}
MISSING_LEVELS = ("not_found_in_emr",)

TEXT_COLUMNS = ("pathology_t_stage", "tumor_isup_grade", "clavien", "procedure", "aua_risk_score")
EGFR_WINDOW_DAYS = (30.0, 365.0)
EGFR_DECLINE = 0.25
CLAVIEN_GRADES = ("0", "1", "2", "3a", "3b", "4", "5")

OUTCOMES = {
    "survival": {"kind": "survival", "columns": ("os_time", "os_event"), "validate_external": True,
                 "description": "overall survival after surgery (days; death from any cause)"},
    "aggressive_pathology": {"kind": "binary", "columns": ("aggressive_pathology",), "validate_external": True,
                             "description": "pT3-4 or ISUP 3-4 at pathology (benign: 0)"},
    "stay_gt3": {"kind": "binary", "columns": ("stay_gt3",), "validate_external": True,
                 "description": "hospital stay > 3 days"},
    "egfr_decline": {"kind": "binary", "columns": ("egfr_decline",), "validate_external": True,
                     "description": "eGFR decline >= 25 % 30-365 days after a partial nephrectomy"},
    "clavien_ge2": {"kind": "binary", "columns": ("clavien_ge2",), "validate_external": False,
                    "description": "Clavien-Dindo complication grade >= 2"},
    "clavien_ge3a": {"kind": "binary", "columns": ("clavien_ge3a",), "validate_external": False,
                     "description": "Clavien-Dindo complication grade >= 3a"},
}


@dataclasses.dataclass(frozen=True)
class KitsCohort:
    """A KiTS-layout cohort (module docstring): ``frame`` (``pandas.DataFrame``, index ``case_id``) holds the
    flattened covariates and the outcome columns; ``covariates`` the preoperative ones, ``categorical`` those of
    them that are categories; each case's mask is ``mask_path(case_id)``."""

    name: str
    folder: str
    frame: object  # pandas.DataFrame
    covariates: tuple[str, ...] = PREOPERATIVE
    categorical: tuple[str, ...] = CATEGORICAL
    time_unit: str = "days"

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def case_ids(self) -> list[str]:
        return [str(i) for i in self.frame.index]

    def mask_path(self, case_id: str) -> str:
        """``folder/case_id/segmentation.nii.gz`` (``ValueError`` for a case not in the cohort)."""
        if case_id not in self.frame.index:
            raise ValueError(f"{self.name}: unknown case {case_id!r} (not in "
                             f"{os.path.join(self.folder, CLINICAL_NAME)})")
        return os.path.join(self.folder, case_id, MASK_NAME)

    def subset(self, idx) -> "KitsCohort":
        """Rows ``idx`` (positions) as a new cohort."""
        return dataclasses.replace(self, frame=self.frame.iloc[np.asarray(idx, np.int64)])

    def drop(self, case_ids: Sequence[str]) -> "KitsCohort":
        """The cohort without the cases ``case_ids`` (e.g. :func:`unseen_categories`' ones)."""
        return dataclasses.replace(self, frame=self.frame.drop(index=list(case_ids)))

    def with_covariates(self, names: Sequence[str]) -> "KitsCohort":
        """The same cohort with covariates ``names`` (columns of ``frame``; categories stay categorical)."""
        names = tuple(names)
        unknown = [c for c in names if c not in self.frame.columns]
        if unknown:
            raise ValueError(f"{self.name}: unknown covariate name(s) {unknown}; columns are "
                             f"{list(self.frame.columns)}")
        return dataclasses.replace(self, covariates=names, categorical=tuple(c for c in names if c in CATEGORICAL))


class _Record:
    """One record's fields, read with errors naming the file, the case and the field."""

    def __init__(self, rec: dict, where: str):
        self.rec, self.where = rec, where

    def fail(self, field: str, problem: str) -> UnreadableInput:
        return UnreadableInput(self.where, f"field {field!r} {problem}")

    def number(self, field: str, container: dict | None = None, name: str | None = None) -> float:
        v = (self.rec if container is None else container).get(field)
        if v is None:
            return math.nan
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise self.fail(name or field, f"must be a finite number or null, got {v!r}")
        return float(v)

    def text(self, field: str) -> str | None:
        v = self.rec.get(field)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (str, int)):
            raise self.fail(field, f"must be a string or null, got {v!r}")
        return str(v)

    def flag(self, field: str, container: dict | None = None, name: str | None = None) -> float:
        v = (self.rec if container is None else container).get(field)
        if v is None:
            return math.nan
        if not isinstance(v, bool):
            raise self.fail(name or field, f"must be true, false or null, got {v!r}")
        return float(v)

    def nested(self, field: str) -> dict:
        v = self.rec.get(field)
        if v is None:
            return {}
        if not isinstance(v, dict):
            raise self.fail(field, f"must be an object or null, got {v!r}")
        return v


def _level(column: str, value: str | None) -> str | None:
    if value is None or value in MISSING_LEVELS:
        return None
    return LEVEL_RULES.get(column, {}).get(value, value)


def _charlson(r: _Record) -> dict:
    items = r.nested("comorbidities")
    unknown = sorted(set(items) - set(CHARLSON_WEIGHTS))
    if unknown:
        raise r.fail("comorbidities", f"has unknown item(s) {unknown}; expected the 19 Charlson items "
                                      f"{list(CHARLSON_WEIGHTS)}")
    flags = {k: r.flag(k, items, f"comorbidities.{k}") for k in CHARLSON_WEIGHTS}
    counted = dict(flags)
    for milder, heavier in CHARLSON_HIERARCHY:
        if counted[heavier] == 1.0:
            counted[milder] = 0.0
    index = float(sum(CHARLSON_WEIGHTS[k] * v for k, v in counted.items()))  # NaN when any item is unrecorded
    return {**{f"cm_{k}": v for k, v in flags.items()}, "charlson_index": index}


def _egfr(r: _Record) -> dict:
    pre, first, last = r.nested("last_preop_egfr"), r.nested("first_postop_egfr"), r.nested("last_postop_egfr")
    out = {"egfr_preop": r.number("value", pre, "last_preop_egfr.value"),
           "egfr_preop_days": r.number("days_before_nephrectomy", pre, "last_preop_egfr.days_before_nephrectomy"),
           "egfr_postop_first": r.number("value", first, "first_postop_egfr.value"),
           "egfr_postop_first_days": r.number("days_after_nephrectomy", first,
                                              "first_postop_egfr.days_after_nephrectomy"),
           "egfr_postop_last": r.number("value", last, "last_postop_egfr.value"),
           "egfr_postop_last_days": r.number("days_after_nephrectomy", last,
                                             "last_postop_egfr.days_after_nephrectomy")}
    for key in ("egfr_preop", "egfr_postop_first", "egfr_postop_last"):
        if out[key] <= 0:
            raise r.fail(key, f"eGFR must be positive, got {out[key]}")
    lo, hi = EGFR_WINDOW_DAYS
    out["egfr_postop_window"] = out["egfr_postop_window_days"] = math.nan
    for which in ("first", "last"):
        value, days = out[f"egfr_postop_{which}"], out[f"egfr_postop_{which}_days"]
        if math.isfinite(value) and lo <= days <= hi:
            out["egfr_postop_window"], out["egfr_postop_window_days"] = value, days
            break
    return out


def _aggressive(t_stage: str | None, isup: str | None, malignant: float) -> float:
    t = (t_stage or "").strip().lower()
    g = (isup or "").strip().lower()
    t_known = t not in ("", "na", "x", "tx")
    g_known = g in ("1", "2", "3", "4")
    if (t_known and t[0] in "34") or g in ("3", "4"):
        return 1.0
    if t_known or g_known or malignant == 0.0:
        return 0.0
    return math.nan


def _clavien(r: _Record) -> str | None:
    c = r.text("clavien_surgical_complications")
    if c is not None and c.lower() not in CLAVIEN_GRADES:
        raise r.fail("clavien_surgical_complications", f"must be one of {list(CLAVIEN_GRADES)} or null, got {c!r}")
    return None if c is None else c.lower()


def _row(r: _Record) -> dict:
    row = {"age": r.number("age_at_nephrectomy"), "bmi": r.number("bmi"), "pack_years": r.number("pack_years"),
           "radiographic_size": r.number("radiographic_size")}
    row.update({c: _level(c, r.text(c)) for c in CATEGORICAL})
    if math.isnan(row["pack_years"]) and row["smoking_history"] == "never_smoked":
        row["pack_years"] = 0.0
    row.update(_charlson(r))
    row.update(_egfr(r))

    status = r.text("vital_status")
    if status not in (None, "dead", "censored", "alive"):
        raise r.fail("vital_status", f"must be 'dead', 'censored', 'alive' or null, got {status!r}")
    row["os_time"] = r.number("vital_days_after_surgery")
    row["os_event"] = math.nan if status is None else float(status == "dead")
    row["malignant"] = r.flag("malignant")
    row["pathology_t_stage"], row["tumor_isup_grade"] = r.text("pathology_t_stage"), r.text("tumor_isup_grade")
    row["aua_risk_score"] = _level("aua_risk_score", r.text("aua_risk_score"))
    row["aggressive_pathology"] = _aggressive(row["pathology_t_stage"], row["tumor_isup_grade"], row["malignant"])
    row["hospitalization"] = r.number("hospitalization")
    row["stay_gt3"] = math.nan if math.isnan(row["hospitalization"]) else float(row["hospitalization"] > 3)
    row["procedure"] = row["surgical_procedure"]
    decline = math.nan
    if row["procedure"] == "partial_nephrectomy" and math.isfinite(row["egfr_preop"]) \
            and math.isfinite(row["egfr_postop_window"]):
        decline = float((row["egfr_preop"] - row["egfr_postop_window"]) / row["egfr_preop"] >= EGFR_DECLINE)
    row["egfr_decline"] = decline
    clavien = _clavien(r)
    row["clavien"] = clavien
    row["clavien_ge2"] = math.nan if clavien is None else float(clavien in ("2", "3a", "3b", "4", "5"))
    row["clavien_ge3a"] = math.nan if clavien is None else float(clavien in ("3a", "3b", "4", "5"))
    return row


def _records(path: str) -> list:
    check_claim(path, "the clinical records' size", (os.path.getsize(path),), 1, MAX_CLINICAL_BYTES)
    try:
        with open(path, encoding="utf-8") as f:
            records = json.load(f)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:  # JSONDecodeError, a too-long number, nesting
        raise UnreadableInput(path, f"not valid JSON ({type(e).__name__}: {e})") from None
    if not isinstance(records, list):
        raise UnreadableInput(path, f"expected a list of patient records, got a JSON {type(records).__name__}")
    if not records:
        raise UnreadableInput(path, "no patient records")
    return records


def read_kits_cohort(folder: str) -> KitsCohort:
    """The cohort in ``folder`` (``clinical.json`` + ``case_XXXXX/segmentation.nii.gz``), flattened by the
    module docstring's rules; every record's mask must exist."""
    import pandas as pd

    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise MissingInput(folder, f"no such cohort folder (expected {CLINICAL_NAME} and "
                                   f"case_XXXXX/{MASK_NAME} inside)")
    path = os.path.join(folder, CLINICAL_NAME)
    if not os.path.isfile(path):
        raise MissingInput(path, f"no such file (a KiTS-layout folder holds {CLINICAL_NAME})")
    rows, ids = [], []
    for i, rec in enumerate(_records(path)):
        if not isinstance(rec, dict):
            raise UnreadableInput(path, f"record {i} is a JSON {type(rec).__name__}, not an object")
        case_id = rec.get("case_id")
        if not isinstance(case_id, str) or not CASE_ID.match(case_id):
            raise UnreadableInput(path, f"record {i} has case_id {case_id!r}; expected 'case_' and digits")
        if case_id in ids:
            raise UnreadableInput(path, f"case_id {case_id!r} appears more than once")
        ids.append(case_id)
        rows.append(_row(_Record(rec, f"{path}, {case_id}")))
    missing = [c for c in ids if not os.path.isfile(os.path.join(folder, c, MASK_NAME))]
    if missing:
        more = f" (and {len(missing) - 1} more record(s) without a mask)" if len(missing) > 1 else ""
        raise UnreadableInput(path, f"case {missing[0]!r} has no mask at "
                                    f"{os.path.join(folder, missing[0], MASK_NAME)}{more}")
    frame = pd.DataFrame(rows, index=pd.Index(ids, name="case_id"))
    for c in CATEGORICAL + TEXT_COLUMNS:  # categories as strings, missing as None (pandas may have made it NaN)
        frame[c] = pd.Series([row[c] for row in rows], index=frame.index, dtype=object)
    return KitsCohort(name=os.path.basename(os.path.normpath(folder)), folder=folder, frame=frame)


def unseen_categories(dev: KitsCohort, ext: KitsCohort, column: str = "surgical_procedure") -> list[str]:
    """The ``ext`` case ids whose ``column`` holds a category never seen in ``dev`` (missing values are not
    categories): reported apart, not scored by models that never saw the category."""
    for c in (dev, ext):
        if column not in c.frame.columns:
            raise ValueError(f"{c.name}: unknown column {column!r}; columns are {list(c.frame.columns)}")
    seen = set(dev.frame[column].dropna().astype(str))
    values = ext.frame[column]
    return [str(i) for i, v in zip(ext.frame.index, values) if v is not None and v == v and str(v) not in seen]


def as_survival_cohort(cohort: KitsCohort, covariates: Sequence[str] | None = None) -> Cohort:
    """Overall survival as the outcome home's :class:`~zoo.outcome.cohorts.Cohort` (``time`` = os_time,
    ``event`` = os_event, days) over ``covariates`` (default the cohort's); patients without a survival
    record (NaN time or status) are left out."""
    cov = tuple(covariates) if covariates is not None else cohort.covariates
    known = cohort.frame["os_time"].notna() & cohort.frame["os_event"].notna()
    frame = cohort.frame.loc[known]
    return make_cohort(cohort.name, frame, "os_time", "os_event", cov, [c for c in cov if c in CATEGORICAL],
                       time_unit=cohort.time_unit)


def outcome_counts(cohort: KitsCohort) -> dict:
    """``{outcome: {"known": patients with a value, "events": positives (deaths for survival)}}``."""
    out = {}
    for name, spec in OUTCOMES.items():
        col = cohort.frame[spec["columns"][-1]]
        out[name] = {"known": int(col.notna().sum()), "events": int((col == 1).sum())}
    return out


register_family(DataFamily(
    "kits", cohort=read_kits_cohort, needs_data_dir=True,
    summary="KiTS23 kidney-tumour surgery: clinical.json + case_XXXXX/segmentation.nii.gz (by path)"))
