"""The images a MONAI Label client left on the server: sessions (``PUT /session/``) and datastore images
(``PUT /datastore/?image=NAME``), each one uploaded file in its own folder of a server temporary directory.

Ids are made here (``uuid4`` hex) and checked against that form before anything touches the file system; a
client's datastore name is only a key in memory, never a path, and it is kept per ``client_id`` (the id MONAI
Label's client sends with every upload and inference), so two users segmenting volumes of the same name (Slicer
names volumes by their series) do not get each other's images. An entry expires ``expiry`` seconds after it was
last used (capped by the store's ``max_expiry``, as MONAI Label's ``Sessions`` does) and is removed on the next
look-up; past ``max_entries`` the least recently used entry goes first. The whole directory is removed when the
store is closed or the process exits.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
import weakref

__all__ = ["SessionInfo", "SessionStore", "SESSION_ID"]

SESSION_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclasses.dataclass
class SessionInfo:
    """One stored upload: ``name`` (its id), the saved file's ``image`` name and ``suffix``, what reading it found
    (``meta``: shape, spacing, channels), the datastore name it was uploaded under (``None`` for a session) and
    the uploading ``client_id``, and
    MONAI Label's timestamps (``create_ts``, ``last_access_ts``, seconds) and ``expiry`` (seconds after the last
    access)."""

    name: str
    image: str
    suffix: str
    meta: dict
    create_ts: int
    last_access_ts: int
    expiry: int
    datastore_name: str | None = None
    client_id: str | None = None

    def to_json(self) -> dict:
        """What ``GET /session/{id}`` answers (MONAI Label's ``SessionInfo`` fields; no server path)."""
        return {"name": self.name, "image": self.image, "meta": self.meta, "create_ts": self.create_ts,
                "last_access_ts": self.last_access_ts, "expiry": self.expiry}


class SessionStore:
    """Uploaded images under ``root`` (default: a fresh temporary directory), ``max_expiry`` seconds at most after
    their last use, at most ``max_entries`` at once; ``clock`` gives the time in seconds (tests move it)."""

    def __init__(self, root: str | None = None, *, max_expiry: int = 3600, max_entries: int = 64, clock=time.time):
        if max_expiry < 1 or max_entries < 1:
            raise ValueError(f"session store: max_expiry >= 1 s and max_entries >= 1; got {max_expiry}, {max_entries}")
        self.root = root or tempfile.mkdtemp(prefix="zoo-sessions-")
        os.makedirs(self.root, exist_ok=True)
        self.max_expiry, self.max_entries, self.clock = int(max_expiry), int(max_entries), clock
        self._entries: dict[str, SessionInfo] = {}
        self._names: dict[tuple, str] = {}  # (client id, datastore name) -> id
        self._lock = threading.Lock()
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.root, True)

    def close(self) -> None:
        """Remove every entry and the store's directory."""
        self._cleanup()

    def reserve(self) -> tuple[str, str]:
        """A new id and its empty folder ``(id, folder)``: save the upload there, then :meth:`commit` it (or
        :meth:`discard` it)."""
        sid = uuid.uuid4().hex
        folder = os.path.join(self.root, sid)
        os.makedirs(folder)
        return sid, folder

    def discard(self, sid: str) -> None:
        """Remove the reserved or stored entry ``sid`` (nothing when there is none)."""
        if not SESSION_ID.match(sid or ""):
            return
        with self._lock:
            info = self._entries.pop(sid, None)
            if info is not None and info.datastore_name is not None:
                self._names.pop((info.client_id, info.datastore_name), None)
        shutil.rmtree(os.path.join(self.root, sid), ignore_errors=True)

    def commit(self, sid: str, image: str, suffix: str, meta: dict, *, expiry: int = 0,
               datastore_name: str | None = None, client_id: str | None = None) -> SessionInfo:
        """Store the upload saved as ``image`` in ``sid``'s folder; ``expiry`` 0 (or over the cap): the store's
        ``max_expiry``. A ``datastore_name`` the same ``client_id`` already uses is replaced."""
        now = int(self.clock())
        expiry = self.max_expiry if expiry <= 0 else min(int(expiry), self.max_expiry)
        info = SessionInfo(name=sid, image=image, suffix=suffix, meta=meta, create_ts=now, last_access_ts=now,
                           expiry=expiry, datastore_name=datastore_name, client_id=client_id)
        self.remove_expired()
        key = (client_id, datastore_name)
        replaced = self._names.get(key) if datastore_name is not None else None
        if replaced is not None:
            self.discard(replaced)
        with self._lock:
            self._entries[sid] = info
            if datastore_name is not None:
                self._names[key] = sid
            over = sorted(self._entries.values(), key=lambda i: i.last_access_ts)[:-self.max_entries]
        for old in over:
            self.discard(old.name)
        return info

    def remove_expired(self) -> int:
        """Remove the entries past their expiry; returns how many."""
        now = self.clock()
        with self._lock:
            gone = [s for s, i in self._entries.items() if i.last_access_ts + i.expiry < now]
        for sid in gone:
            self.discard(sid)
        return len(gone)

    def get(self, sid: str, *, update_ts: bool = True) -> SessionInfo | None:
        """The live session ``sid`` (``None`` when unknown, malformed or expired); ``update_ts`` marks it used."""
        self.remove_expired()
        if not SESSION_ID.match(sid or ""):
            return None
        with self._lock:
            info = self._entries.get(sid)
            if info is not None and update_ts:
                info.last_access_ts = int(self.clock())
        return info

    def find(self, image: str, client_id: str | None = None) -> SessionInfo | None:
        """The entry an ``image`` query names: a session id, else ``client_id``'s datastore name (``None`` when
        neither)."""
        info = self.get(image)
        if info is None:
            with self._lock:
                sid = self._names.get((client_id, image))
            info = self.get(sid) if sid is not None else None
        return info

    def path(self, info: SessionInfo) -> str:
        """The saved file of entry ``info``."""
        return os.path.join(self.root, info.name, info.image)

    def datastore(self) -> list:
        """The live datastore images (``SessionInfo``), oldest first."""
        self.remove_expired()
        with self._lock:
            return sorted((self._entries[s] for s in self._names.values() if s in self._entries),
                          key=lambda i: i.create_ts)
