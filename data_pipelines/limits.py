"""Size bounds for outside bytes, checked before anything is allocated or inflated.

* :data:`DEFAULT_MAX_BYTES`: the largest decoded input a reader accepts unless its caller says otherwise.
* :func:`check_claim`: the bytes a header claims (shape x item size), refused over the limit with
  :class:`~data_pipelines.errors.InputTooLarge` naming the claimed size.
* :func:`inflated_size`: what a zlib/gzip/deflate stream inflates to, counted as a stream and stopped past a cap
  (a compression bomb costs at most the cap in time and 1 MiB of memory).
"""

from __future__ import annotations

import zlib
from typing import Sequence

import numpy as np

from data_pipelines.errors import InputTooLarge, UnreadableInput

__all__ = ["DEFAULT_MAX_BYTES", "GZIP_OR_ZLIB", "RAW_DEFLATE", "check_claim", "inflated_size"]

DEFAULT_MAX_BYTES = 4 << 30  # 4 GiB decoded: a large CT in float64 fits, a header claiming 10^12 voxels does not
GZIP_OR_ZLIB = 47  # zlib wbits: a gzip or a zlib header, detected
RAW_DEFLATE = -15  # zlib wbits: a bare deflate stream (a deflated DICOM data set)


def check_claim(path: str, what: str, shape: Sequence[int], item_bytes: int, max_bytes: int, extra: int = 0) -> int:
    """Bytes ``what`` of ``path`` claims (``prod(shape) * item_bytes + extra``, exact integers); an
    ``InputTooLarge`` over ``max_bytes``, an ``UnreadableInput`` for a negative size."""
    dims = [int(s) for s in shape]
    if any(s < 0 for s in dims):
        raise UnreadableInput(path, f"{what} has a negative size {dims}")
    claimed = int(np.prod(dims, dtype=object)) * int(item_bytes) + int(extra)
    if claimed > max_bytes:
        raise InputTooLarge(path, f"{what} {'x'.join(map(str, dims))} claims", claimed, max_bytes)
    return claimed


def inflated_size(path: str, offset: int, cap: int, wbits: int = GZIP_OR_ZLIB) -> int:
    """Bytes the compressed stream at ``offset`` of ``path`` inflates to, inflated in 1 MiB pieces and stopped past
    ``cap`` (then ``cap + 1``); a corrupt stream raises ``zlib.error``."""
    d = zlib.decompressobj(wbits)
    total = 0
    with open(path, "rb") as f:
        f.seek(offset)
        while not d.eof and total <= cap:
            data = d.unconsumed_tail or f.read(1 << 16)
            if not data:
                break
            total += len(d.decompress(data, 1 << 20))
    return min(total, cap + 1)
