"""The one error type for outside bytes that cannot be read: :class:`UnreadableInput`.

Every parser the project feeds with files it did not write (the image readers, the application's zip handling,
the cohort tables) raises it for every malformed input: missing, truncated, corrupt, of an unknown or unsupported
kind, larger than the caller's limit (claimed by a header or reached while inflating), or naming a data file
outside the folder it may read. The message is ``"<file>: <what is wrong>"``. It is a ``ValueError``, so the
command lines' boundary (``zoo.cli.run_command``: ``error: <message>``, exit 2) and the application's error
mapping (a 4xx with the message) take it as bad input. Two refinements keep older callers working:
:class:`MissingInput` is also a ``FileNotFoundError``, :class:`InputTooLarge` carries the size and the limit.
The exceptions pickle with their fields (a worker process may raise them).
"""

from __future__ import annotations

import os

__all__ = ["UnreadableInput", "MissingInput", "InputTooLarge", "format_bytes"]


def format_bytes(n: float) -> str:
    """``n`` bytes for a message: ``"1.5 GiB (1610612736 bytes)"``."""
    n = float(n)
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit} ({n:.0f} bytes)"
    return f"{n:.0f} bytes"


class UnreadableInput(ValueError):
    """``file`` (the path or name of the input) cannot be read because of ``problem`` (a phrase). Given one
    message (``type(e)(f"case 7: {e}")``, a caller adding context) it splits it at the first ``": "``."""

    def __init__(self, file: str | os.PathLike, problem: str | None = None):
        if problem is None:
            file, _, problem = str(file).partition(": ")
        self.file = os.fspath(file)
        self.problem = str(problem)
        super().__init__(f"{self.file}: {self.problem}")

    def __reduce__(self):
        return type(self), (self.file, self.problem)


class MissingInput(UnreadableInput, FileNotFoundError):
    """An input that does not exist (also a ``FileNotFoundError``)."""


class InputTooLarge(UnreadableInput):
    """An input whose size (``size`` bytes, claimed by its header or reached while inflating) is over ``limit``."""

    def __init__(self, file: str | os.PathLike, what: str | None = None, size: float = 0.0, limit: float = 0.0):
        self.what, self.size, self.limit = what, float(size), float(limit)
        if what is None:  # one message, as UnreadableInput takes it
            super().__init__(file)
        else:
            super().__init__(file, f"{what} {format_bytes(size)}, over the limit of {format_bytes(limit)}")

    def __reduce__(self):
        return type(self), ((self.file, self.what, self.size, self.limit) if self.what is not None else (str(self),))
