"""The engine, its sessions, and the migrations that keep the schema current.

Both backends give the code above them the same two guarantees:

- `Database.begin()` is the only writer while it runs. Read-then-write units of work
  (a /forget's "anything left?" then "drop the user", the publish step's consent check
  then the publish) never interleave, and messages commit in the order of their ids, so
  "every message up to id N" (a training run's mark, a /forget's mark) never misses one
  that commits later with a smaller id.
- `Database.read()` sees one snapshot from its first query to its end (a training run
  reads its sample and its authors' consent as of one moment).

SQLite (the default) is tuned for one bot process plus a training process that reads at
the same time: WAL journal (a reader keeps its snapshot), a busy timeout, foreign keys
on, and every read-write transaction started with BEGIN IMMEDIATE. A deferred transaction
that reads and then writes can fail at once with "database is locked" when another
connection wrote in between (the busy timeout cannot help there); taking the write lock
at BEGIN makes it wait its turn instead. We use SQLAlchemy's documented pysqlite recipe
for this: the driver is put in autocommit mode (`isolation_level = None`) and a `begin`
event emits BEGIN itself.

PostgreSQL (psycopg 3) gets the same: every `begin()` transaction first takes one
transaction-level advisory lock (WRITE_LOCK_KEY), released at commit or rollback, and
then runs in READ COMMITTED, so it sees everything committed before it got the lock.
Row locks or SERIALIZABLE could not give the second half of the first guarantee (ids
are drawn from a sequence when a row is inserted, not when it commits), and the bot
writes a few short transactions a second at most (Telegram's rate limit), which one
lock serves easily. Reads run in REPEATABLE READ, READ ONLY: one snapshot, never
blocked by the lock. Any other URL gets an ordinary engine.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, NoSuchModuleError
from sqlalchemy.orm import Session, sessionmaker

from storage.faults import DatabaseFileError, explain, explain_missing_driver

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
DATABASE_FILE = "charbot.sqlite3"
# How long a writer waits for another process's write lock (a backup, a `sqlite3` shell,
# a slow disk, a long migration) before it fails: long enough that a lock of up to five
# minutes delays messages without losing any.
BUSY_TIMEOUT_MS = 6 * 60 * 1000
WRITE_OPTION = "charbot_write"  # execution option: this connection's transactions write
WAL_RETRY_PAUSE_S = 0.05  # between tries to switch a new file to WAL while another process does
# PostgreSQL: psycopg 3 for postgresql:// and postgres:// URLs (SQLAlchemy's default
# driver for them, psycopg2, is not what the `postgres` extra installs).
POSTGRES_DRIVER = "postgresql+psycopg"
POSTGRES_NAMES = ("postgresql", "postgres")
CONNECT_TIMEOUT_S = 10  # a server that does not answer is reported, not waited for
# The write lock's advisory key: the bytes of "charbotw" as one bigint (storage.run_lock's
# run lock is "charbot"; keys are per database, and must differ within one).
WRITE_LOCK_KEY = 0x63686172626F7477
APPLICATION_NAME = "charbot"  # how the bot's connections show in pg_stat_activity


def sqlite_url(data_dir: Path) -> str:
    """The URL of the bot's SQLite file in `data_dir` (which must exist to open it)."""
    return f"sqlite:///{(Path(data_dir) / DATABASE_FILE).resolve()}"


def normalize_url(url: str | URL) -> URL:
    """`url` with the driver the bot uses: postgresql:// and postgres:// mean psycopg 3.

    Raises sqlalchemy.exc.ArgumentError for a string that is no URL.
    """
    url = make_url(url)
    backend, _, driver = url.drivername.partition("+")
    if backend in POSTGRES_NAMES:
        return url.set(drivername=f"postgresql+{driver}" if driver else POSTGRES_DRIVER)
    return url


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
    """Emit BEGIN IMMEDIATE for a writing connection, BEGIN (deferred) for a reading one."""
    writes = conn.get_execution_options().get(WRITE_OPTION, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")


def _begin_postgresql(conn: Connection) -> None:
    """Take the write lock first in a writing connection's transaction (held to its end)."""
    if conn.get_execution_options().get(WRITE_OPTION, False):
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({WRITE_LOCK_KEY})")


def postgresql_connect_args(url: URL, options: str, *, application_name: str) -> dict:
    """psycopg's connect arguments for the bot's settings, under the operator's.

    SQLAlchemy puts connect_args over the URL's query, and libpq puts a given keyword over
    its environment (PGOPTIONS, PGCONNECT_TIMEOUT, PGAPPNAME): so a `connect_timeout` or
    `application_name` the operator set either way is left alone, and the bot's server
    `options` (`-c name=value`) go first, before the URL's or PGOPTIONS (for one name,
    the last setting wins).
    """
    query = {k: " ".join(v) if isinstance(v, tuple) else v for k, v in url.query.items()}
    theirs = query.get("options", os.environ.get("PGOPTIONS", ""))
    args: dict = {"options": f"{options} {theirs}".strip()}
    if "connect_timeout" not in query and "PGCONNECT_TIMEOUT" not in os.environ:
        args["connect_timeout"] = CONNECT_TIMEOUT_S
    if "application_name" not in query and "PGAPPNAME" not in os.environ:
        args["application_name"] = application_name
    return args


def _postgresql_engine(url: URL, echo: bool) -> Engine:
    """An engine for a PostgreSQL server: connections that fail fast when the server is
    away, wait for locks as long as SQLite's writers do, and are checked before reuse (a
    restarted server leaves dead ones in the pool)."""
    connect_args = postgresql_connect_args(
        url, f"-c lock_timeout={BUSY_TIMEOUT_MS}", application_name=APPLICATION_NAME
    )
    engine = create_engine(url, echo=echo, pool_pre_ping=True, connect_args=connect_args)
    event.listen(engine, "begin", _begin_postgresql)
    return engine


class Database:
    """An engine plus the two kinds of session the bot uses.

    `begin()` is for units of work that write; `read()` for those that only read (see
    the module docstring for what each guarantees).
    """

    def __init__(self, url: str | URL, *, echo: bool = False) -> None:
        self.url = normalize_url(url)
        backend = self.url.get_backend_name()
        self.is_sqlite = backend == "sqlite"
        self.is_postgresql = backend == "postgresql"
        reading: dict[str, Any] = {}
        if self.is_sqlite:
            # A thread waiting for a pooled connection waits as long as one waiting for
            # the lock.
            pool_timeout = BUSY_TIMEOUT_MS / 1000
            self.engine: Engine = create_engine(self.url, echo=echo, pool_timeout=pool_timeout)
            event.listen(self.engine, "connect", _set_sqlite_pragmas)
            event.listen(self.engine, "begin", _begin_sqlite)
        elif self.is_postgresql:
            self.engine = _postgresql_engine(self.url, echo)
            reading = {"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
        else:
            self.engine = create_engine(self.url, echo=echo)
        # Same pool; each option set applies to a connection while it is checked out.
        self._writer = self.engine.execution_options(**{WRITE_OPTION: True})
        reader = self.engine.execution_options(**reading) if reading else self.engine
        # Objects stay usable after the unit of work ends (handlers read user settings).
        self._write_sessions = sessionmaker(self._writer, expire_on_commit=False)
        self._read_sessions = sessionmaker(reader, expire_on_commit=False)

    def __repr__(self) -> str:
        return f"Database({self.url.render_as_string(hide_password=True)!r})"

    @contextmanager
    def begin(self) -> Iterator[Session]:
        """One read-write transaction holding the write lock (BEGIN IMMEDIATE on SQLite,
        the advisory write lock on PostgreSQL) from its first query: committed on success,
        rolled back on an exception."""
        with self._write_sessions.begin() as session:
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reading: one snapshot from its first query, rolled back at the end."""
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

        The write lock is held throughout: two processes that start together (the bot and
        `charbot train`) migrate one after the other, and the second finds nothing to do.

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


def open_database(url: str | URL, *, echo: bool = False) -> Database:
    """Connect to `url` and upgrade its schema to the newest revision.

    Raises DatabaseFileError (one line naming the cause and the fix) when the database
    cannot be reached, read or written, or its driver is not installed.
    """
    url = make_url(url)  # named in messages as the operator wrote it
    try:
        db = Database(url, echo=echo)
    except ImportError as exc:  # create_engine imports the URL's driver
        raise DatabaseFileError(explain_missing_driver(url, exc.name or str(exc))) from exc
    except NoSuchModuleError as exc:  # a driver SQLAlchemy has no dialect for
        raise DatabaseFileError(explain_missing_driver(url, url.drivername)) from exc
    try:
        db.upgrade()
    except DBAPIError as exc:
        db.dispose()
        cause = str(exc.orig) if exc.orig is not None else str(exc)
        raise DatabaseFileError(explain(url, cause.strip().splitlines()[0])) from exc
    except BaseException:
        db.dispose()
        raise
    return db
