"""A real PostgreSQL server for the tests: one per session, a new database per test.

The server comes from the `pgserver` package (PostgreSQL 16 binaries on PyPI): it listens
on a unix socket in its data folder only, trusts local users, and is stopped and deleted
at the end. Its folder is a temporary one of its own, not under pytest's tmp_path: pytest
deletes old base folders when another session starts, and PostgreSQL shuts down
when its data folder goes.

Durability is switched off (fsync, synchronous commit): a test server that crashes loses
nothing anyone needs, and every commit would otherwise wait for the disk.

Each test gets its own database: an empty one (`pg_url`), or a copy of a database migrated
once per session (`CREATE DATABASE ... TEMPLATE`), which costs a file copy instead of a
run through every migration.
"""

from __future__ import annotations

import itertools
import os
import tempfile
import warnings
from pathlib import Path

import psycopg
from sqlalchemy.engine import URL, make_url

with warnings.catch_warnings():  # platformdirs warns at import when XDG_RUNTIME_DIR is unset
    warnings.simplefilter("ignore")
    import pgserver

DRIVER = "postgresql+psycopg"  # what the bot uses for a postgresql:// URL
# Settings for a throwaway server: commits need not reach the disk.
TEST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


class PgServer:
    """A running server plus one autocommit admin connection for creating databases."""

    def __init__(self) -> None:
        folder = Path(tempfile.mkdtemp(prefix="charbot-pg-")) / "data"
        self._server = pgserver.get_server(folder, cleanup_mode="delete")
        self._base = make_url(self._server.get_uri()).set(drivername=DRIVER)
        self._admin = psycopg.connect(self._server.get_uri(), autocommit=True)
        for name, value in TEST_SETTINGS.items():
            self._admin.execute(f"ALTER SYSTEM SET {name} = '{value}'")
        self._admin.execute("SELECT pg_reload_conf()")
        self._names = (f"charbot_test_{os.getpid()}_{n}" for n in itertools.count())

    def url(self, database: str) -> URL:
        """The SQLAlchemy URL (psycopg 3 driver) of `database` on this server."""
        return self._base.set(database=database)

    def create_database(self, template: str | None = None) -> str:
        """A new database, empty or a copy of `template`; returns its name."""
        name = next(self._names)
        copy = f' TEMPLATE "{template}"' if template else ""
        self._admin.execute(f'CREATE DATABASE "{name}"{copy}')
        return name

    def drop_database(self, name: str) -> None:
        """Drop `name`, ending any session still connected to it (a leaked connection)."""
        self._admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        """Stop the server and delete its folder."""
        self._admin.close()
        self._server.cleanup()
        Path(self._server.pgdata).parent.rmdir()
