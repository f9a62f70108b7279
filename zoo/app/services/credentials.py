"""The user names and passwords ``POST /auth/token`` exchanges for the server's bearer token (MONAI Label's login,
which 3D Slicer's MONAI Label module runs when ``GET /auth/`` says authentication is enabled).

``zoo.serve --credentials-file FILE``: one ``username:password`` a line (blank lines and lines starting with ``#``
are skipped; the password is everything after the first ``:``). Keep the file readable by the server's user only.
"""

from __future__ import annotations

import hmac

__all__ = ["read_credentials", "check_credentials"]

MIN_PASSWORD = 8


def read_credentials(path: str | None) -> dict:
    """``{username: password}`` of file ``path`` (``{}`` for no path); a malformed line, a short password or a
    repeated user is a ``ValueError`` naming the line."""
    if not path:
        return {}
    out: dict = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            user, sep, password = line.partition(":")
            user = user.strip()
            if not sep or not user:
                raise ValueError(f"--credentials-file {path} line {n}: expected username:password")
            if len(password) < MIN_PASSWORD:
                raise ValueError(f"--credentials-file {path} line {n}: the password of {user!r} must have at least "
                                 f"{MIN_PASSWORD} characters")
            if user in out:
                raise ValueError(f"--credentials-file {path} line {n}: user {user!r} is listed twice")
            out[user] = password
    if not out:
        raise ValueError(f"--credentials-file {path}: no username:password line")
    return out


def check_credentials(credentials: dict, username: str, password: str) -> bool:
    """Whether ``username`` / ``password`` is one of ``credentials`` (constant-time password comparison)."""
    expected = credentials.get(username)
    if expected is None:
        hmac.compare_digest(password.encode(), password.encode())  # the same work for an unknown user
        return False
    return hmac.compare_digest(password.encode(), expected.encode())
