"""`charbot backup PATH` and `charbot restore PATH`: the database and the live model.

A backup is a folder:

    PATH/charbot.sqlite3       a consistent copy of the database (SQLite's backup API: it
                               may run while the bot writes), in rollback-journal mode so
                               that it can be read from a read-only place
    PATH/models/vNNNN/, LIVE   the live model version, as a model store of its own

Both are written into a hidden temporary folder beside PATH, made durable, and renamed
to PATH when whole. Restoring copies both into a data dir that holds no database and no
model versions yet, the database last: until it is in place the restore has not
happened, and a failed one removes what it wrote. A PostgreSQL database is backed up
with its own tools (pg_dump); the bot says so instead of copying.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

from sqlalchemy.engine import make_url

from bot.datadir import MODELS_DIR
from bot.settings import Settings
from model.atomic import fsync_dir, fsync_tree
from model.modelfile import ModelFileError
from model.store import ModelStore, StoreError
from storage import DATABASE_FILE

SIDE_FILES = ("-wal", "-shm", "-journal")  # SQLite's files beside a database
RESTORING = ".restoring"  # suffix of what a restore writes before it is in place


class BackupError(RuntimeError):
    """A backup or restore that cannot be done, in one line naming the path and the fix."""


def backup(settings: Settings, dest: Path) -> int:
    """Write a backup of the data dir into the new folder `dest`; returns the model
    version it holds."""
    database = _sqlite_file(settings)
    if dest.exists():
        raise BackupError(f"{dest} exists already: name a new folder for the backup")
    if not dest.parent.is_dir() or not os.access(dest.parent, os.W_OK):
        raise BackupError(f"{dest.parent} is not a folder this user can write in")
    if not database.is_file():
        raise BackupError(f"{database} does not exist: there is nothing to back up yet")
    models = settings.data_dir / MODELS_DIR
    if not models.is_dir():
        raise BackupError(f"{models} holds no model version to back up")
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        _copy_database(database, tmp / DATABASE_FILE)  # first: a run it names is in models
        version = ModelStore(models).export_live(tmp / MODELS_DIR)
        fsync_tree(tmp)
        os.rename(tmp, dest)  # fails if `dest` appeared meanwhile: nothing is replaced
        fsync_dir(dest.parent)
    except (OSError, sqlite3.Error, ModelFileError, StoreError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise BackupError(f"could not write the backup to {dest}: {exc}") from None
    return version


def restore(settings: Settings, src: Path) -> int:
    """Copy the backup in `src` into the data dir, which must hold no database and no
    model versions; returns the model version restored."""
    database = _sqlite_file(settings)
    copied_db, copied_models = src / DATABASE_FILE, src / MODELS_DIR
    if not copied_db.is_file() or not copied_models.is_dir():
        raise BackupError(f"{src} is not a charbot backup (no {DATABASE_FILE} and {MODELS_DIR}/)")
    models = settings.data_dir / MODELS_DIR
    leftovers = [p for p in (database, *_side_files(database)) if p.exists()]
    if models.is_dir() and any(p.name.startswith("v") for p in models.iterdir()):
        leftovers.append(models)
    if leftovers:
        raise BackupError(
            f"{', '.join(map(str, leftovers))} exist already: restore into a data dir with no "
            "database and no model versions (CHARBOT_DATA_DIR), or remove them first"
        )
    new_models = models.with_name(MODELS_DIR + RESTORING)
    new_database = database.with_name(database.name + RESTORING)
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(new_models, ignore_errors=True)  # what a restore that died left
        new_database.unlink(missing_ok=True)
        shutil.copytree(copied_models, new_models)
        version = ModelStore(new_models).live_version()
        if version is None:
            raise BackupError(f"{copied_models} holds no model version that loads")
        readonly = f"{copied_db.resolve().as_uri()}?mode=ro&immutable=1"
        with contextlib.closing(sqlite3.connect(readonly, uri=True)) as conn:
            if conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise BackupError(f"{copied_db} is damaged: restore another backup")
        _copy_database(readonly, new_database, uri=True)
        fsync_tree(new_models)
        if models.is_dir():
            shutil.rmtree(models)  # empty of versions (checked): at most a lock file
        os.rename(new_models, models)
        os.rename(new_database, database)  # the restore happens here
        fsync_dir(database.parent)
    except (OSError, sqlite3.Error, BackupError) as exc:
        new_database.unlink(missing_ok=True)
        shutil.rmtree(new_models, ignore_errors=True)
        if not database.exists():  # not restored: no model versions without their database
            shutil.rmtree(models, ignore_errors=True)
        if isinstance(exc, BackupError):
            raise
        raise BackupError(f"could not restore {src} into {settings.data_dir}: {exc}") from None
    return version


def _sqlite_file(settings: Settings) -> Path:
    """The bot's SQLite file; BackupError for another kind of database."""
    url = make_url(settings.database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        raise BackupError(
            "CHARBOT_DATABASE_URL is not an SQLite file: back that database up with its own "
            "tools (PostgreSQL: pg_dump), and the model versions by copying "
            f"{settings.data_dir / MODELS_DIR}"
        )
    return Path(url.database)


def _side_files(database: Path) -> list[Path]:
    return [database.with_name(database.name + suffix) for suffix in SIDE_FILES]


def _copy_database(src: Path | str, dest: Path, *, uri: bool = False) -> None:
    """A consistent copy of the SQLite database `src` (even while others write to it),
    durable, in rollback-journal mode (a copy needs no -wal or -shm file to be read)."""
    with (
        contextlib.closing(sqlite3.connect(src, uri=uri)) as source,
        contextlib.closing(sqlite3.connect(dest)) as target,
    ):
        source.backup(target)  # all pages in one step: one snapshot
        target.execute("PRAGMA journal_mode = DELETE")
    with open(dest, "rb") as f:
        os.fsync(f.fileno())
