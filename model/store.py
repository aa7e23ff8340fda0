"""The model store: numbered versions on disk, one of them live.

The files (version folders `vNNNN`, the pointer `LIVE`, the write lock) and how each
is written so a crash cannot tear it are in `model.store_layout`; this module decides
which version is live, what rollback and prune may do, and which versions load.
`kill -9` at any moment therefore leaves the last good version live and loadable;
leftover temporary folders are removed the next time the store is opened.

"Previous" version: the pointer keeps the history of versions that were live, oldest
first. Publishing or `set_live` pushes the version that was live; `rollback` makes
the newest entry of that history live again and drops it, without pushing the
version it leaves. So rollback undoes the last change of the live version and can
be repeated, and a version that was rolled back from is never a rollback target
again (unless made live by hand). Versions that vanished or do not load are skipped.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
from pathlib import Path

from model.atomic import fsync_dir
from model.modelfile import ModelFile, ModelFileError, load
from model.store_layout import (
    INFO_FILE,
    MODEL_FILE,
    POINTER_FILE,
    Pointer,
    PointerError,
    discard_version,
    fallback_pointer,
    list_versions,
    read_pointer,
    remove_leftovers,
    version_name,
    write_lock,
    write_pointer,
    write_version,
)

log = logging.getLogger(__name__)


class StoreError(RuntimeError):
    """The store cannot do what was asked (no such version, nothing to roll back to)."""


class ModelStore:
    """Numbered model versions under `root`, one of them live. Safe across processes."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._loadable_cache: dict[int, tuple[int, bool]] = {}  # version -> (mtime_ns, ok)
        self._warned: set[int] = set()  # broken live versions reported already
        self._pointer_warned = False
        # What the store found wrong and worked around, one sentence each, for the admins.
        self.notices: list[str] = []
        with write_lock(self.root):
            remove_leftovers(self.root)

    def __repr__(self) -> str:
        return f"ModelStore({str(self.root)!r})"

    # -- reading ----------------------------------------------------------------

    def versions(self) -> list[int]:
        """Published version numbers, oldest first."""
        return list_versions(self.root)

    def path(self, version: int) -> Path:
        """The folder of `version` (which may not exist)."""
        return self.root / version_name(version)

    def model_path(self, version: int) -> Path:
        """The model file of `version` (which may not exist)."""
        return self.path(version) / MODEL_FILE

    def info(self, version: int) -> dict:
        """What was recorded when `version` was published (plus `version`, `published_at`)."""
        if not self.path(version).is_dir():
            raise StoreError(f"{self.root}: there is no version {version}")
        path = self.path(version) / INFO_FILE
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise StoreError(f"{path}: unreadable version info ({exc})") from None

    def load(self, version: int) -> ModelFile:
        """The model of `version`; StoreError if there is none, ModelFileError if it is broken."""
        if not self.path(version).is_dir():
            raise StoreError(f"{self.root}: there is no version {version}")
        return load(self.path(version) / MODEL_FILE)

    def live_version(self) -> int | None:
        """The live version; None for an empty store.

        If the pointer names a version that is missing or does not load, the newest
        loadable version is live instead (with a warning).
        """
        pointer = self._read_pointer()
        if pointer.live is not None and self._loadable(pointer.live):
            return pointer.live
        fallback = next((v for v in reversed(self.versions()) if self._loadable(v)), None)
        if pointer.live is not None and fallback is not None and pointer.live not in self._warned:
            self._warned.add(pointer.live)
            self._notice(
                f"the live version {pointer.live} is missing or does not load; serving "
                f"version {fallback}, the newest that does (/rollback to choose another)"
            )
        return fallback

    def load_live(self) -> tuple[int, ModelFile]:
        """(version, model) of the live version."""
        for _ in range(3):  # a concurrent prune or rollback may move the target under us
            version = self.live_version()
            if version is None:
                raise StoreError(
                    f"{self.root}: no model versions yet (bootstrap the store from the base model)"
                )
            try:
                return version, self.load(version)
            except (StoreError, ModelFileError):
                self._loadable_cache.pop(version, None)
        raise StoreError(f"{self.root}: no loadable model version")

    def published_before(self) -> bool:
        """Whether a version was ever published here (even if none is left)."""
        return self._read_pointer().last > 0

    def previous_version(self) -> int | None:
        """The version `rollback` would make live, or None (see the module docstring)."""
        pointer = self._read_pointer()
        live = self.live_version()
        return next((v for v in reversed(pointer.history) if v != live and self._loadable(v)), None)

    # -- changing -----------------------------------------------------------------

    def publish(self, model: ModelFile, info: dict | None = None) -> int:
        """Add `model` as a new version and make it live; returns its number."""
        with write_lock(self.root):
            return self._publish(model, info)

    def publish_if_live(
        self, expected: int, model: ModelFile, info: dict | None = None
    ) -> int | None:
        """`publish`, but only while `expected` is still the live version (checked under the
        write lock); None if another publish or a rollback came first."""
        with write_lock(self.root):
            if self.live_version() != expected:
                return None
            return self._publish(model, info)

    def set_live(self, version: int) -> None:
        """Make `version` live (it must load); the version live before can be rolled back to."""
        with write_lock(self.root):
            self._check_loadable(version)
            self._point_to(self._read_pointer(), version)

    def rollback(self) -> int:
        """Make the previous version live again (see the module docstring); returns it."""
        with write_lock(self.root):
            pointer = self._read_pointer()
            live = self.live_version()
            history = list(pointer.history)
            while history:
                candidate = history.pop()
                if candidate != live and self._loadable(candidate):
                    write_pointer(self.root, Pointer(candidate, history, pointer.last))
                    log.info("%s: rolled back from version %s to %s", self.root, live, candidate)
                    return candidate
            if live is None:
                raise StoreError(f"{self.root}: nothing to roll back to: the store is empty")
            raise StoreError(
                f"{self.root}: nothing to roll back to: no other loadable version was live "
                f"before version {live}"
            )

    def prune(self, keep: int) -> list[int]:
        """Delete all but the `keep` newest versions, never the live one or its predecessor.

        Returns the deleted version numbers.
        """
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        with write_lock(self.root):
            protected = {self.live_version(), self.previous_version()}
            versions = self.versions()
            doomed = [v for v in versions[:-keep] if v not in protected]
            for version in doomed:
                discard_version(self.root, version)
                self._loadable_cache.pop(version, None)
            if doomed:
                fsync_dir(self.root)
                pointer = self._read_pointer()
                pointer.last = max([pointer.last, *versions])
                write_pointer(self.root, pointer)
                remove_leftovers(self.root)
            return doomed

    def bootstrap(self, base_path: str | os.PathLike) -> int:
        """Publish the model at `base_path` as the first version if the store is empty.

        Returns the live version. Rollback then works the same from the first retrain on.
        """
        with write_lock(self.root):
            if not self.versions():
                self._publish(load(base_path), {"kind": "base", "source": str(base_path)})
        version = self.live_version()
        if version is None:
            raise StoreError(f"{self.root}: no loadable model version")
        return version

    def export_live(self, dest: str | os.PathLike) -> int:
        """Copy the live version into a new store at `dest` (a backup); its pointer keeps
        this store's version counter, so a store restored from it never reuses a number
        that runs recorded. Returns the version."""
        with write_lock(self.root):  # no publish, rollback or prune meanwhile
            pointer = self._read_pointer()
            version = self.live_version()
            if version is None:
                raise StoreError(f"{self.root}: no model version to copy")
            copy = ModelStore(dest)
            shutil.copytree(self.path(version), copy.path(version))
            copy._check_loadable(version)  # the copy loads, or there is none
            write_pointer(copy.root, Pointer(version, [], max(pointer.last, version)))
        return version

    # -- internals ----------------------------------------------------------------

    def _publish(self, model: ModelFile, info: dict | None) -> int:
        """Write a new version folder, then flip the pointer (call with the write lock held)."""
        pointer = self._read_pointer()
        version = max([pointer.last, *self.versions()]) + 1
        record = {
            **(info or {}),
            "version": version,
            "published_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        write_version(self.root, version, model, record)
        # Just written from a ModelFile: it loads (no need to read it back to know).
        stamp = self.model_path(version).stat().st_mtime_ns
        self._loadable_cache[version] = (stamp, True)
        self._point_to(pointer, version)
        return version

    def _notice(self, text: str) -> None:
        log.warning("%s: %s", self.root, text)
        self.notices.append(text)

    def _read_pointer(self) -> Pointer:
        try:
            return read_pointer(self.root)
        except PointerError as exc:
            if not self._pointer_warned:
                self._pointer_warned = True
                self._notice(
                    f"the live pointer {self.root / POINTER_FILE} is unreadable ({exc}); "
                    "serving the newest version that loads, which may not be the one an "
                    "admin chose (/rollback to choose another)"
                )
            return fallback_pointer(self.root)

    def _point_to(self, pointer: Pointer, version: int) -> None:
        # Written whenever the file does not name `version` yet, even when `version` is
        # what the store serves already by falling back to the newest: else the file
        # keeps naming a missing version (or stays absent) after a publish.
        if pointer.live == version:
            return
        live = self.live_version()
        history = [v for v in pointer.history if v != version]
        if live is not None and live != version:
            history.append(live)
        write_pointer(self.root, Pointer(version, history, max(pointer.last, version)))

    def _loadable(self, version: int) -> bool:
        """Whether `version` exists and loads (cached; published versions never change)."""
        try:
            stamp = (self.path(version) / MODEL_FILE).stat().st_mtime_ns
        except OSError:
            self._loadable_cache.pop(version, None)
            return False
        cached = self._loadable_cache.get(version)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            self._check_loadable(version)
            ok = True
        except (StoreError, ModelFileError) as exc:
            log.warning("%s: version %s is unusable: %s", self.root, version, exc)
            ok = False
        self._loadable_cache[version] = (stamp, ok)
        return ok

    def _check_loadable(self, version: int) -> None:
        self.load(version)
        self.info(version)
