"""The model store's files on disk, and how each is written so a crash cannot tear it.

    <root>/v0001/model.npz, info.json   one folder per published version, never changed
    <root>/LIVE                         {"live": 3, "history": [1, 2], "last": 3}
    <root>/.lock                        held while the store is changed (one writer at a time)

A version folder is written under a temporary name (`.tmp-...`), fsynced, and renamed
into place, so a folder named `vNNNN` is always complete. The pointer `LIVE` is
replaced atomically (temporary file, fsync, `os.replace`, fsync of the folder).
Which version is live and what rollback and prune may do is `model.store`'s business;
this module only reads and writes the files, given the store's root folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from model.atomic import TMP_PREFIX, fsync_dir, write_atomically
from model.modelfile import ModelFile, save

log = logging.getLogger(__name__)

MODEL_FILE = "model.npz"
INFO_FILE = "info.json"
POINTER_FILE = "LIVE"
STORE_LOCK_FILE = ".lock"
HISTORY_LIMIT = 100  # live versions remembered for rollback
VERSION_NAME = re.compile(r"^v(\d{4,})$")


class PointerError(ValueError):
    """The LIVE pointer file exists but cannot be read or parsed."""


@dataclass
class Pointer:
    live: int | None = None
    history: list[int] = field(default_factory=list)  # earlier live versions, oldest first
    last: int = 0  # highest version number ever given out: numbers are never reused


def version_name(version: int) -> str:
    return f"v{version:04d}"


def list_versions(root: Path) -> list[int]:
    """Published version numbers under `root`, oldest first."""
    found = (VERSION_NAME.match(p.name) for p in root.iterdir() if p.is_dir())
    return sorted(int(m.group(1)) for m in found if m)


@contextlib.contextmanager
def write_lock(root: Path) -> Iterator[None]:
    """Hold the store's write lock (other processes' changes wait; readers never do)."""
    with open(root / STORE_LOCK_FILE, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def write_version(root: Path, version: int, model: ModelFile, record: dict) -> None:
    """Write the folder of `version` (model and info `record`) whole or not at all."""
    tmp = root / f"{TMP_PREFIX}{version_name(version)}-{secrets.token_hex(4)}"
    try:
        tmp.mkdir()
        save(model, tmp / MODEL_FILE)  # fsyncs the file
        with open(tmp / INFO_FILE, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(tmp)
        os.rename(tmp, root / version_name(version))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(root)  # the version exists; the pointer still names the old one


def discard_version(root: Path, version: int) -> None:
    """Rename the folder of `version` to a leftover name; the caller fsyncs `root` and
    removes leftovers. Renamed away first (atomic), so a half-deleted folder is never a
    version."""
    trash = root / f"{TMP_PREFIX}deleted-{version_name(version)}-{secrets.token_hex(4)}"
    os.rename(root / version_name(version), trash)


def remove_leftovers(root: Path) -> None:
    """Delete what writers that died left behind (call with the write lock held)."""
    for path in root.iterdir():
        if path.name.startswith(TMP_PREFIX):
            log.info("%s: removing unfinished %s", root, path.name)
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def read_pointer(root: Path) -> Pointer:
    """The LIVE pointer (`fallback_pointer` if there is no file); PointerError if the file
    is unreadable."""
    path = root / POINTER_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        live = data["live"]
        history = [int(v) for v in data.get("history", [])]
        return Pointer(None if live is None else int(live), history, int(data.get("last", 0)))
    except FileNotFoundError:
        return fallback_pointer(root)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PointerError(str(exc)) from exc


def fallback_pointer(root: Path) -> Pointer:
    """No usable pointer: the newest version is live, the older ones its history."""
    versions = list_versions(root)
    return Pointer(None, versions[:-1], max(versions, default=0))


def write_pointer(root: Path, pointer: Pointer) -> None:
    """Replace the LIVE pointer atomically; history entries whose folder is gone are
    dropped, and only the newest HISTORY_LIMIT kept."""
    existing = set(list_versions(root))
    history = [v for v in pointer.history if v in existing][-HISTORY_LIMIT:]
    data = {"live": pointer.live, "history": history, "last": pointer.last}
    write_atomically(root / POINTER_FILE, json.dumps(data).encode() + b"\n")
