"""The engine, its sessions, and the migrations that keep the schema current.

SQLite (the default) is tuned for one bot process plus a training process that
reads at the same time: WAL journal, a busy timeout, foreign keys on, and every
read-write transaction started with BEGIN IMMEDIATE. A deferred transaction that
reads and then writes can fail at once with "database is locked" when another
connection wrote in between (the busy timeout cannot help there); taking the write
lock at BEGIN makes it wait its turn instead.

We use SQLAlchemy's documented pysqlite recipe for this: the driver is put in
autocommit mode (`isolation_level = None`) and a `begin` event emits BEGIN itself.
Any other URL (PostgreSQL, ...) gets an ordinary engine.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
DATABASE_FILE = "charbot.sqlite3"
# How long a writer waits for another process's write lock (a backup, a `sqlite3` shell,
# a slow disk) before it fails: long enough that a lock of up to five minutes delays
# messages without losing any.
BUSY_TIMEOUT_MS = 6 * 60 * 1000
BEGIN_OPTION = "charbot_sqlite_begin"  # execution option: "" (deferred) or "IMMEDIATE"
WAL_RETRY_PAUSE_S = 0.05  # between tries to switch a new file to WAL while another process does


def sqlite_url(data_dir: Path) -> str:
    """The URL of the bot's SQLite file in `data_dir` (which must exist to open it)."""
    return f"sqlite:///{(Path(data_dir) / DATABASE_FILE).resolve()}"


def _set_sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    """Configure every new pysqlite connection; the driver must not BEGIN on its own."""
    dbapi_connection.isolation_level = None  # driver autocommit: our `begin` event emits BEGIN
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")  # first: the next may wait
        _enable_wal(cursor, time.monotonic() + BUSY_TIMEOUT_MS / 1000)
        cursor.execute("PRAGMA synchronous = NORMAL")  # durable at checkpoints; safe with WAL
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _enable_wal(cursor: Any, deadline: float) -> None:
    """Switch to WAL (readers and one writer at the same time), waiting out a busy file.

    Two processes converting a new file at once: the one that already read the header
    gets SQLITE_BUSY at once, without the busy handler (SQLite's deadlock rule), so the
    busy timeout cannot help and we try again until `deadline`.
    """
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(WAL_RETRY_PAUSE_S)


def _begin_sqlite(conn: Connection) -> None:
    """Emit BEGIN (deferred) or BEGIN IMMEDIATE, as the connection's options ask."""
    mode = conn.get_execution_options().get(BEGIN_OPTION, "")
    conn.exec_driver_sql(f"BEGIN {mode}".strip())


class Database:
    """An engine plus the two kinds of session the bot uses.

    `begin()` is for units of work that write; `read()` for those that only read.
    """

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        # A thread waiting for a pooled connection waits as long as one waiting for the lock.
        pool = {"pool_timeout": BUSY_TIMEOUT_MS / 1000} if self.is_sqlite else {}
        self.engine: Engine = create_engine(self.url, echo=echo, **pool)
        writer = self.engine
        if self.is_sqlite:
            event.listen(self.engine, "connect", _set_sqlite_pragmas)
            event.listen(self.engine, "begin", _begin_sqlite)
            # Same pool, but its transactions take the write lock at BEGIN.
            writer = self.engine.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})
        # Objects stay usable after the unit of work ends (handlers read user settings).
        self._write_sessions = sessionmaker(writer, expire_on_commit=False)
        self._read_sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._writer = writer

    def __repr__(self) -> str:
        return f"Database({self.url.render_as_string(hide_password=True)!r})"

    @contextmanager
    def begin(self) -> Iterator[Session]:
        """One read-write transaction: committed on success, rolled back on an exception."""
        with self._write_sessions.begin() as session:
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reading (one deferred transaction, rolled back at the end)."""
        with self._read_sessions() as session:
            yield session

    def upgrade(self, revision: str = "head") -> None:
        """Bring the schema to `revision` (Alembic), keeping the data, in one transaction."""
        self._run_migrations(command.upgrade, revision)

    def downgrade(self, revision: str) -> None:
        """Take the schema back to `revision` (for development and tests)."""
        self._run_migrations(command.downgrade, revision)

    def revision(self) -> str | None:
        """The schema revision the database is at, or None if it was never migrated."""
        with self.engine.connect() as conn:
            if not self.engine.dialect.has_table(conn, "alembic_version"):
                return None
            return conn.scalar(text("SELECT version_num FROM alembic_version"))

    def _run_migrations(self, run: Any, revision: str) -> None:
        with self.migration_connection() as conn:
            run(alembic_config(conn), revision)

    @contextmanager
    def migration_connection(self) -> Iterator[Connection]:
        """A connection inside one write transaction, for running migrations on.

        On SQLite, foreign keys are off meanwhile: table rebuilds in later (batch)
        migrations drop and recreate tables, and SQLite can only switch the check off
        outside a transaction. All keys are checked before committing instead.
        """
        with self._writer.connect() as conn:
            raw = conn.connection.driver_connection if self.is_sqlite else None
            if raw is not None:
                raw.execute("PRAGMA foreign_keys = OFF")
            try:
                with conn.begin():
                    yield conn
                    if raw is not None:
                        broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
                        if broken:
                            raise RuntimeError(f"migration broke foreign keys: {broken[:5]}")
            finally:
                if raw is not None:
                    raw.execute("PRAGMA foreign_keys = ON")

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config for our migrations; no alembic.ini file is needed.

    With `connection`, migrations run on it, inside the caller's transaction.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


class DatabaseFileError(RuntimeError):
    """The database cannot be opened or migrated; the message is one line with the fix."""


# What SQLite says -> what the operator should do about it.
_FIXES = (
    (
        ("file is not a database", "malformed", "disk image"),
        "the file is damaged: restore it from a backup (charbot backup), or move it away "
        "and the bot starts with an empty one",
    ),
    (
        ("readonly", "read-only", "unable to open", "permission"),
        "the bot cannot write there: give its user write access to the file and its "
        "folder, or set CHARBOT_DATA_DIR to a writable folder",
    ),
)


def open_database(url: str, *, echo: bool = False) -> Database:
    """Connect to `url` and upgrade its schema to the newest revision.

    Raises DatabaseFileError (one line naming the cause and the fix) when the database
    cannot be read or written.
    """
    db = Database(url, echo=echo)
    try:
        db.upgrade()
    except DBAPIError as exc:
        db.dispose()
        raise DatabaseFileError(_explain(db, exc)) from exc
    except BaseException:
        db.dispose()
        raise
    return db


def _explain(db: Database, exc: DBAPIError) -> str:
    cause = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
    where = db.url.database if db.is_sqlite else db.url.render_as_string(hide_password=True)
    fix = next(
        (fix for words, fix in _FIXES if any(w in cause.lower() for w in words)),
        "check that the database server is running and the URL is right",
    )
    return f"{where}: {cause}: {fix}"
