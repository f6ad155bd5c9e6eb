"""Stage artifacts: one folder per stage output, with typed metadata, an identity and a status.

The three stage outputs (generated set ``dataset.json``, generator checkpoint, detector run
``run.json``) are opened through one routine, :func:`open_artifact`:

* **one writer per folder**: an advisory ``fcntl`` lock on ``FOLDER/.anobench.lock``, held while
  the stage writes; a second writer is refused with the holder's pid and host. The kernel drops
  the lock when its process dies, so a killed run never leaves a stale lock.
* **create or resume**: a new folder gets the metadata; an existing one is resumed only when
  its *identity* (every field that changes the result) matches, else the differing fields are
  named. Paths never enter the identity (a moved or copied grid resumes); they are stored
  relative to the artifact folder next to their absolute form.
* **status**: ``created`` (metadata written, no result yet), ``running``, ``complete``, the
  same three values in every artifact. A folder still ``created`` that holds nothing but its
  metadata is what a failed start leaves: a corrected command replaces it instead of being
  refused by the stub.

Metadata is typed: each stage's file is a record of :mod:`anobench.records` (written with
``to_dict``, read back with ``from_dict``), and the configs inside it are the stage's config
dataclasses (:func:`anobench.config.config_from_dict` refuses unknown keys).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anobench.errors import AnobenchError
from anobench.images import atomic_write_text
from anobench.records import COMPLETE, CREATED, RUNNING, STATUSES, StageRecord  # noqa: F401 - re-exported

LOCK_FILE = ".anobench.lock"


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def relative_path(target: str | os.PathLike, start: str | os.PathLike) -> str:
    """``target`` relative to folder ``start`` (what metadata stores, so moved folders still resolve)."""
    return os.path.relpath(Path(target).resolve(), Path(start).resolve())


def resolve_stored_path(folder: Path, meta: "dict[str, Any] | StageRecord", key: str) -> Path | None:
    """A path the metadata holds as ``key`` (relative to ``folder``) and ``key + '_abs'``.

    The relative form wins when it exists (the folder moved with its inputs); the absolute form
    is the fallback (the folder moved alone). None when neither exists.
    """
    if isinstance(meta, StageRecord):
        meta = meta.to_dict()
    candidates = []
    if meta.get(key):
        stored = Path(str(meta[key]))
        candidates.append(stored if stored.is_absolute() else folder / stored)
    if meta.get(key + "_abs"):
        candidates.append(Path(str(meta[key + "_abs"])))
    for candidate in candidates:
        if candidate.exists():
            return candidate
    return None


class FolderLock:
    """An exclusive advisory lock on an artifact folder (one writer at a time)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / LOCK_FILE
        self._handle = None

    def acquire(self) -> "FolderLock":
        self.folder.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise AnobenchError(
                f"{self.folder}: in use by {holder}; wait for it to finish or use another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def __enter__(self) -> "FolderLock":
        return self.acquire() if self._handle is None else self

    def __exit__(self, *exc: Any) -> None:
        self.release()


@dataclass
class Artifact:
    """An opened stage folder: its typed metadata (``record``) and lock."""

    folder: Path
    record: StageRecord
    resumed: bool
    lock: FolderLock | None = field(default=None, repr=False)

    @property
    def meta_path(self) -> Path:
        return self.folder / self.record.FILE

    @property
    def status(self) -> str:
        return self.record.status

    def holds_work(self) -> bool:
        """Whether the folder holds anything beyond its metadata and lock (a result, a state)."""
        return holds_work(self.folder, self.record.FILE)

    def save(self, **updates: Any) -> None:
        """Update the record's fields and atomically rewrite the metadata file."""
        self.record = self.record.replace(**updates)
        write_json(self.meta_path, self.record.to_dict())

    def close(self) -> None:
        if self.lock is not None:
            self.lock.release()

    def __enter__(self) -> "Artifact":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def holds_work(folder: Path, meta_file: str) -> bool:
    ignore = {meta_file, LOCK_FILE}
    return any(p.name not in ignore and not p.name.endswith(".tmp") for p in folder.iterdir())


def identity_diff(old: dict[str, Any], new: dict[str, Any], keys: tuple[str, ...]) -> list[str]:
    """The identity keys whose values differ (JSON-normalised, so tuples equal lists)."""
    def norm(value: Any) -> str:
        return json.dumps(value, sort_keys=True, default=str)

    return [k for k in keys if norm(old.get(k)) != norm(new.get(k))]


def open_artifact(folder: str | os.PathLike, record: StageRecord, hint: str = "use another --out or delete it",
                  lock: bool = True) -> Artifact:
    """Create ``folder`` with ``record`` or resume it; the one create-or-resume routine of every stage.

    An existing folder whose identity (``record.IDENTITY``) differs is refused, naming the
    fields, unless it is still ``created`` (a failed start): then it is replaced. On resume the
    stored record is kept (recorded cost, status, frozen split) and returned; the caller updates
    it with ``save``.
    """
    folder = Path(folder)
    kind = record.KIND
    if folder.exists() and not folder.is_dir():
        raise AnobenchError(f"{folder}: is a file, not a {kind} folder; use another --out")
    held = FolderLock(folder).acquire() if lock else None
    try:
        path = folder / record.FILE
        if path.exists():
            old = type(record).read(folder)
            diff = identity_diff(old.identity(), record.identity(), record.IDENTITY)
            if not diff:
                return Artifact(folder, old, True, held)
            if old.status != CREATED or holds_work(folder, record.FILE):
                raise AnobenchError(
                    f"{folder}: holds a {kind} made with other settings ({', '.join(diff)} differ); {hint}")
        new = record.replace(status=CREATED)
        write_json(path, new.to_dict())
        return Artifact(folder, new, False, held)
    except BaseException:
        if held is not None:
            held.release()
        raise
