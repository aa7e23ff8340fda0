"""Shared fixtures: a tiny model file and one warmed generator for the whole session, and
databases on both backends (a SQLite file, a PostgreSQL server started for the session).

TensorFlow is imported inside the fixtures, so tests that need no model stay fast; the
PostgreSQL server starts only when a test first asks for it.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from postgres import PgServer

from storage import DATABASE_FILE, alembic_config, open_database, sqlite_url

# The migrations' head: the revision open_database brings a database to.
LATEST_REVISION = ScriptDirectory.from_config(alembic_config()).get_current_head()
TINY_META = {"kind": "tiny-test", "created": "2025-01-01T00:00:00+00:00"}


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> Path:
    """An untrained GRU-32 model file (replies are noise, but never empty)."""
    import keras

    from model import ModelConfig, ModelFile, save
    from model.network import build_network

    keras.utils.set_random_seed(3)
    config = ModelConfig(units=32, embed_dim=16)
    path = tmp_path_factory.mktemp("model") / "tiny.npz"
    save(ModelFile.from_network(build_network(config), config, TINY_META), path)
    return path


@pytest.fixture(scope="session")
def generator(tiny_model_path):
    """One warmed generator for the tiny model, shared by every bot the tests start."""
    from model import load
    from model.generator import Generator

    return Generator(load(tiny_model_path))


BACKENDS = ("sqlite", "postgresql")  # every test that uses `db` runs on each


@pytest.fixture(scope="session")
def pg_server() -> PgServer:
    """One PostgreSQL server for the whole session, stopped (and deleted) at the end."""
    server = PgServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg_template(pg_server: PgServer) -> str:
    """A database migrated to the newest revision once, which test databases copy."""
    name = pg_server.create_database()
    open_database(pg_server.url(name).render_as_string(hide_password=False)).dispose()
    return name


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """The URL of a new, empty PostgreSQL database, dropped after the test."""
    name = pg_server.create_database()
    yield pg_server.url(name).render_as_string(hide_password=False)
    pg_server.drop_database(name)


@pytest.fixture(params=BACKENDS)
def empty_db_url(request, tmp_path: Path) -> str:
    """The URL of a new database that was never migrated, on each backend in turn."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path)
    return request.getfixturevalue("pg_url")


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    """A SQLite file migrated to the newest revision once, which test databases copy."""
    folder = tmp_path_factory.mktemp("sqlite-template")
    open_database(sqlite_url(folder)).dispose()  # the last close folds the WAL into the file
    return folder / DATABASE_FILE


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path: Path) -> str:
    """The URL of a new database at the newest revision: a SQLite file or on PostgreSQL."""
    if request.param == "sqlite":
        shutil.copyfile(request.getfixturevalue("sqlite_template"), tmp_path / DATABASE_FILE)
        yield sqlite_url(tmp_path)
        return
    server: PgServer = request.getfixturevalue("pg_server")
    name = server.create_database(template=request.getfixturevalue("pg_template"))
    yield server.url(name).render_as_string(hide_password=False)
    server.drop_database(name)


@pytest.fixture
def db(db_url: str):
    """A new, migrated database, on each backend in turn."""
    database = open_database(db_url)
    yield database
    database.dispose()


@pytest.fixture
def clean_env() -> dict[str, str]:
    """The process environment without any charbot or Telegram variable (for subprocesses)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHARBOT_", "TELEGRAM_BOT_"))}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture(scope="session")
def charbot() -> list[str]:
    """How to run the `charbot` console script of this environment."""
    script = Path(sys.executable).with_name("charbot")
    if script.exists():
        return [str(script)]
    found = shutil.which("charbot")
    return [found] if found else [sys.executable, "-m", "bot.cli"]
