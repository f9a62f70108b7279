"""The one way the project writes a file: atomically, under a unique temporary name, JSON strictly.

Every writer puts its bytes into a fresh temporary file in the destination's folder (``tempfile.mkstemp``: two
writers of the same path never share a temporary) and renames it over the destination with ``os.replace``, so a
reader sees the old file or the whole new one and a crash leaves no half-written file. Tables go out as CSV with a header (:func:`write_csv`). JSON is strict: NaN and
infinities become ``null`` (``NaN`` tokens are not JSON; strict parsers reject them), numpy scalars numbers,
tuples lists, dataclasses dicts. :func:`atomic_path` hands a temporary path to a library that insists on writing
a path itself (nibabel, SimpleITK, Orbax, a compiler).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import math
import os
import tempfile
from typing import Iterator

__all__ = ["strict_json", "dumps", "write_json", "write_csv", "write_text", "write_bytes", "atomic_path"]


def _plain(o):
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return dataclasses.asdict(o)
    if hasattr(o, "item") and callable(o.item):  # numpy scalars and 0-d arrays
        return o.item()
    if hasattr(o, "tolist") and callable(o.tolist):  # numpy arrays
        return o.tolist()
    if isinstance(o, (tuple, set, frozenset)):
        return list(o)
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    return str(o)


def strict_json(obj):
    """``obj`` with NaN and infinities as ``None`` (JSON ``null``), recursively through dicts and lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


def dumps(obj, indent: int | None = 2, **kwargs) -> str:
    """Strict JSON text of ``obj`` (see the module docstring); ``kwargs`` go to ``json.dumps``."""
    plain = strict_json(json.loads(json.dumps(obj, default=_plain)))
    return json.dumps(plain, indent=indent, allow_nan=False, **kwargs)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[str]:
    """A fresh temporary path beside ``path`` (same suffix, so format-sniffing writers pick the right format);
    on a clean exit it replaces ``path``, on an error it is removed and ``path`` is left as it was."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    if suffix is None:
        suffix = "".join(s for s in (".nii.gz",) if name.endswith(s)) or os.path.splitext(name)[1]
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{name}-", suffix=suffix, dir=folder)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj, indent: int | None = 2) -> None:
    """Write ``obj`` to ``path`` as strict JSON (NaN/Inf as ``null``), atomically."""
    write_text(path, dumps(obj, indent=indent))


def write_csv(path: str | os.PathLike, rows: list[dict], fieldnames=None, **kwargs) -> None:
    """Write ``rows`` (dicts) as CSV with a header (``fieldnames``: default the first row's keys; ``kwargs`` go
    to ``csv.DictWriter``), atomically."""
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=list(fieldnames if fieldnames is not None else rows[0]), **kwargs)
    w.writeheader()
    w.writerows(rows)
    write_text(path, buf.getvalue())
