"""Clinical covariates (EHR tables): read, validate, encode, join to images by patient id.

A ``schema`` maps column names to ``Field``s (numeric with a range, categorical with its levels,
binary 0/1). ``validate`` checks types, ranges, levels, missing values and the id column;
``ClinicalEncoder`` one-hot encodes categoricals and standardises numerics with statistics fitted
on the training patients only; ``join`` aligns table rows to a list of patient ids (one per image)
and fails clearly on ids that are missing or duplicated.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Mapping, Sequence

import numpy as np

__all__ = ["Field", "read_table", "validate", "ClinicalEncoder", "join", "PHANTOM_SCHEMA"]


@dataclasses.dataclass(frozen=True)
class Field:
    """``kind``: ``numeric`` (``min``/``max`` inclusive), ``categorical`` (``categories``) or ``binary``.
    ``required``: missing values (NaN/empty) raise; otherwise numerics are imputed with the training
    mean and categoricals get an all-zero one-hot row."""

    kind: str
    min: float | None = None
    max: float | None = None
    categories: tuple | None = None
    required: bool = True

    def __post_init__(self):
        if self.kind not in ("numeric", "categorical", "binary"):
            raise ValueError(f"Field.kind must be numeric, categorical or binary; got {self.kind!r}")
        if self.kind == "categorical" and not self.categories:
            raise ValueError("a categorical Field needs categories")


PHANTOM_SCHEMA = {
    "age": Field("numeric", 18, 90), "sex": Field("categorical", categories=("F", "M")),
    "diabetes": Field("binary"), "hypertension": Field("binary"), "cardiac_disease": Field("binary"),
    "smoker": Field("binary"), "site": Field("categorical", categories=("site_A", "site_B", "site_C")),
}


def read_table(path: str | os.PathLike):
    """CSV or Parquet -> ``pandas.DataFrame`` (``ValueError`` naming the file on failure)."""
    import pandas as pd

    p = os.fspath(path)
    if not os.path.exists(p):
        raise FileNotFoundError(f"{p}: no such file")
    low = p.lower()
    try:
        if low.endswith((".parquet", ".pq")):
            return pd.read_parquet(p)
        if low.endswith((".csv", ".csv.gz", ".tsv")):
            return pd.read_csv(p, sep="\t" if low.endswith(".tsv") else ",")
    except Exception as e:
        raise ValueError(f"{p}: cannot read table ({type(e).__name__}: {e})") from e
    raise ValueError(f"{p}: unknown table format (expected .csv, .tsv or .parquet)")


def _as_frame(table):
    import pandas as pd

    return table if isinstance(table, pd.DataFrame) else pd.DataFrame(dict(table))


def validate(table, schema: Mapping[str, Field], id_column: str = "patient_id", source: str = "table"):
    """Check ``table`` against ``schema``; return it as a DataFrame. Raises ``ValueError`` listing
    every problem (column, row ids, values)."""
    import pandas as pd

    df = _as_frame(table)
    problems = []
    if id_column not in df.columns:
        raise ValueError(f"{source}: id column {id_column!r} missing; columns are {list(df.columns)}")
    ids = df[id_column]
    if ids.isna().any():
        problems.append(f"{int(ids.isna().sum())} rows without {id_column}")
    dup = ids[ids.duplicated(keep=False)].astype(str).unique().tolist()
    if dup:
        problems.append(f"duplicated {id_column}: {dup[:5]}")
    for name, f in schema.items():
        if name not in df.columns:
            problems.append(f"column {name!r} missing")
            continue
        col = df[name]
        missing = col.isna() | (col.astype(str).str.strip() == "")
        if f.required and missing.any():
            problems.append(f"column {name!r}: missing values for {ids[missing].astype(str).tolist()[:5]}")
        present = col[~missing]
        if f.kind in ("numeric", "binary"):
            num = pd.to_numeric(present, errors="coerce")
            bad = present[num.isna()]
            if len(bad):
                problems.append(f"column {name!r}: non-numeric values {bad.astype(str).unique().tolist()[:5]}")
            num = num.dropna()
            if f.kind == "binary":
                off = num[~num.isin([0, 1])]
                if len(off):
                    problems.append(f"column {name!r}: binary column has values {sorted(off.unique().tolist())[:5]}")
            else:
                lo = f.min if f.min is not None else -np.inf
                hi = f.max if f.max is not None else np.inf
                out = num[(num < lo) | (num > hi)]
                if len(out):
                    who = ids[out.index].astype(str).tolist()[:5]
                    problems.append(f"column {name!r}: values {out.tolist()[:5]} outside [{f.min}, {f.max}] "
                                    f"(patients {who})")
        else:
            levels = {str(c) for c in f.categories}
            off = present[~present.astype(str).isin(levels)]
            if len(off):
                problems.append(f"column {name!r}: unknown categories {off.astype(str).unique().tolist()[:5]}, "
                                f"expected {sorted(levels)}")
    if problems:
        raise ValueError(f"{source}: " + "; ".join(problems))
    return df


class ClinicalEncoder:
    """One-hot categoricals, standardised numerics, binaries as 0/1; ``fit`` on training rows only."""

    def __init__(self, schema: Mapping[str, Field]):
        self.schema = dict(schema)
        self.stats: dict[str, tuple[float, float]] = {}

    @property
    def feature_names(self) -> list[str]:
        names = []
        for n, f in self.schema.items():
            names += [f"{n}={c}" for c in f.categories] if f.kind == "categorical" else [n]
        return names

    def fit(self, table) -> "ClinicalEncoder":
        import pandas as pd

        df = _as_frame(table)
        for n, f in self.schema.items():
            if f.kind == "numeric":
                v = pd.to_numeric(df[n], errors="coerce").dropna().to_numpy(np.float64)
                if not len(v):
                    raise ValueError(f"column {n!r}: no values to fit")
                sd = float(v.std())
                self.stats[n] = (float(v.mean()), sd if sd > 0 else 1.0)
        return self

    def transform(self, table) -> np.ndarray:
        """``[N, F]`` float32 in ``feature_names`` order."""
        import pandas as pd

        df = _as_frame(table)
        cols = []
        for n, f in self.schema.items():
            if n not in df.columns:
                raise ValueError(f"column {n!r} missing; columns are {list(df.columns)}")
            if f.kind == "numeric":
                if n not in self.stats:
                    raise ValueError(f"ClinicalEncoder: column {n!r} not fitted; call fit() on training rows first")
                mu, sd = self.stats[n]
                v = pd.to_numeric(df[n], errors="coerce").to_numpy(np.float64)
                cols.append(((np.where(np.isnan(v), mu, v) - mu) / sd)[:, None])
            elif f.kind == "binary":
                v = pd.to_numeric(df[n], errors="coerce").fillna(0).to_numpy(np.float64)
                cols.append(v[:, None])
            else:
                s = df[n].astype(str).to_numpy()
                cols.append(np.stack([(s == str(c)) for c in f.categories], axis=1).astype(np.float64))
        return np.concatenate(cols, axis=1).astype(np.float32)

    def fit_transform(self, table) -> np.ndarray:
        return self.fit(table).transform(table)


def join(patient_ids: Sequence, table, id_column: str = "patient_id", source: str = "table"):
    """Rows of ``table`` aligned with ``patient_ids`` (one per image; repeats allowed) -> DataFrame.

    Raises ``ValueError`` naming ids with no row and ids with several rows.
    """
    df = _as_frame(table)
    if id_column not in df.columns:
        raise ValueError(f"{source}: id column {id_column!r} missing; columns are {list(df.columns)}")
    keys = df[id_column].astype(str)
    dup = keys[keys.duplicated(keep=False)].unique().tolist()
    if dup:
        raise ValueError(f"{source}: duplicated {id_column} {dup[:5]} ({len(dup)} ids); each patient needs one row")
    wanted = [str(p) for p in patient_ids]
    missing = sorted(set(wanted) - set(keys))
    if missing:
        raise ValueError(f"{source}: no row for {len(missing)} patient ids, e.g. {missing[:5]}")
    pos = dict(zip(keys, range(len(keys))))
    return df.iloc[[pos[p] for p in wanted]].reset_index(drop=True)
