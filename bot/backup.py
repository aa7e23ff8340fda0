"""`charbot backup PATH` and `charbot restore PATH`: the database and the live model.

A backup is a folder:

    PATH/charbot.sqlite3       a consistent copy of the database (SQLite's backup API: it
                               may run while the bot writes)
    PATH/models/vNNNN/, LIVE   the live model version, as a model store of its own

Restoring copies both into a data dir that holds neither yet; `charbot run` then starts
from them. A PostgreSQL database is backed up with its own tools (pg_dump); the bot
says so instead of copying.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from pathlib import Path

from sqlalchemy.engine import make_url

from bot.datadir import MODELS_DIR
from bot.settings import Settings
from model import ModelFileError, load
from model.store import ModelStore, StoreError
from storage import DATABASE_FILE


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
    store = ModelStore(settings.data_dir / MODELS_DIR)
    version = store.live_version()
    if version is None:
        raise BackupError(f"{store.root} holds no model version to back up")
    tmp = dest.with_name(f".{dest.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        _copy_database(database, tmp / DATABASE_FILE)
        copy = ModelStore(tmp / MODELS_DIR)
        shutil.copytree(store.path(version), copy.path(version))
        load(copy.model_path(version))  # the copy loads, or there is no backup
        copy.set_live(version)
        os.rename(tmp, dest)  # a folder named `dest` is always a whole backup
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
    if database.exists() or (models.is_dir() and any(models.iterdir())):
        raise BackupError(
            f"{settings.data_dir} holds a database or model versions already: restore into "
            "an empty data dir (CHARBOT_DATA_DIR)"
        )
    try:
        read_only = f"{copied_db.resolve().as_uri()}?mode=ro"
        with contextlib.closing(sqlite3.connect(read_only, uri=True)) as conn:
            if conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise BackupError(f"{copied_db} is damaged: restore another backup")
        version = ModelStore(copied_models).live_version()
        if version is None:
            raise BackupError(f"{copied_models} holds no model version that loads")
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        shutil.copytree(copied_models, models, dirs_exist_ok=True)
        _copy_database(copied_db, database)
    except (OSError, sqlite3.Error) as exc:
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


def _copy_database(src: Path, dest: Path) -> None:
    """A consistent copy of the SQLite file `src`, even while others write to it."""
    with (
        contextlib.closing(sqlite3.connect(src)) as source,
        contextlib.closing(sqlite3.connect(dest)) as target,
    ):
        source.backup(target)
