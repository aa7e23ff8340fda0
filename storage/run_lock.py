"""One retraining run at a time across hosts: a PostgreSQL session-level advisory lock.

When the bot and `charbot train` share a PostgreSQL database they may run on different
machines (the trainer on a GPU host), where a lock file in the data dir cannot be
trusted (flock over NFS). The database holds the lock instead: `pg_try_advisory_lock`
on a connection kept open, idle and outside any transaction, for the whole run. The
server drops the lock when that connection ends in any way: the run releases it, its
process exits or is killed (kill -9 closes the socket), or its host vanishes (the TCP
keepalives below end the connection within about a minute).

Who holds it is read from the server, never from a file: pg_locks names the holding
backend, and pg_stat_activity gives that backend's `application_name`, which the lock's
connection sets to "charbot-run <pid> <since, unix seconds> <host>". Every role may read
another session's application_name, the label lives and dies with the lock, and no
table is needed (nothing to clean up after a crash).

Advisory locks belong to one database: two bots with two databases on one server do
not wait for each other.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import socket
import time

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from storage.database import normalize_url, postgresql_connect_args

# The run lock's advisory key: the bytes of "charbot" as one bigint. Every other advisory
# lock in the bot's database needs another key (storage.database's write lock: "charbotw").
RUN_LOCK_KEY = 0x63686172626F74
APP_NAME_PREFIX = "charbot-run"  # the lock connection's application_name starts so
APP_NAME_BYTES = 63  # PostgreSQL keeps this much of an application_name (NAMEDATALEN - 1)
# Server-side settings of the lock's connection: it sits idle for hours and must not be
# ended for that, and it must end soon after its host dies (keepalive probes every 10 s
# after 30 s of silence, given up after 3), so a lost trainer does not block runs.
LOCK_SESSION_OPTIONS = (
    "-c idle_in_transaction_session_timeout=0 "
    "-c tcp_keepalives_idle=30 -c tcp_keepalives_interval=10 -c tcp_keepalives_count=3"
)
IDLE_SESSION_TIMEOUT_SINCE = (14,)  # idle_session_timeout (also set to 0) is this new

# The backend holding `key` in this database, with its label.
_HOLDER = text(
    """
    SELECT a.pid, a.application_name
    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND (l.classid::bigint << 32) + l.objid::bigint = :key
    """
)


class AdvisoryRunLock:
    """One retraining run at a time, across processes and hosts sharing one PostgreSQL
    database: the interface of model.runlock.RunLock, held by the server (see above).

    `holder()` also names the holder's host: its pid means something only there.
    """

    def __init__(self, url: str | URL, *, key: int = RUN_LOCK_KEY):
        self.url = normalize_url(url)  # postgresql:// means psycopg 3, as for the bot
        self.key = key
        self._conn: Connection | None = None

    def __repr__(self) -> str:
        return f"AdvisoryRunLock({self.url.render_as_string(hide_password=True)!r})"

    def acquire(self) -> bool:
        """Take the lock without waiting; False if another run holds it."""
        if self._conn is not None:
            raise RuntimeError(f"{self!r}: this lock is held already")
        label = f"{APP_NAME_PREFIX} {os.getpid()} {int(time.time())} {socket.gethostname()}"
        conn = self._engine(label[:APP_NAME_BYTES], LOCK_SESSION_OPTIONS).connect()
        try:
            # Autocommit: no transaction (and no snapshot) stays open for the run's hours.
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            if conn.dialect.server_version_info >= IDLE_SESSION_TIMEOUT_SINCE:
                conn.exec_driver_sql("SET idle_session_timeout = 0")
            taken = conn.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key})
        except BaseException:
            conn.close()
            raise
        if not taken:
            conn.close()
            return False
        self._conn = conn
        return True

    def release(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            # Closing the connection frees the lock anyway; unlocking first says so at once
            # even if the close is slow. A connection that broke has lost the lock already.
            with contextlib.suppress(Exception):
                conn.scalar(text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
            with contextlib.suppress(Exception):
                conn.close()

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._conn is not None

    def is_running(self) -> bool:
        """Whether a run (in this or any other process, on any host) holds the lock now."""
        return self._conn is not None or self._holder_row() is not None

    def holder(self) -> dict | None:
        """{"pid", "host", "since"} of the run holding the lock, or None when none runs.

        `since` is an ISO time (UTC) as model.runlock.RunLock gives it; a holder that is
        not a charbot run (someone took the key by hand) has only "pid" (the backend's).
        """
        row = self._holder_row()
        if row is None:
            return None if self._conn is None else {}
        pid, label = row
        parts = (label or "").split(" ", 3)
        if len(parts) < 3 or parts[0] != APP_NAME_PREFIX:
            return {"pid": pid}
        with contextlib.suppress(ValueError):
            since = dt.datetime.fromtimestamp(int(parts[2]), dt.UTC)
            return {
                "pid": int(parts[1]),
                "host": parts[3] if len(parts) > 3 else "",
                "since": since.isoformat(timespec="seconds"),
            }
        return {"pid": pid}

    def _holder_row(self) -> tuple | None:
        engine = self._engine(f"{APP_NAME_PREFIX}-probe")
        try:
            with engine.connect() as conn:
                return conn.execute(_HOLDER, {"key": self.key}).first()
        finally:
            engine.dispose()

    def _engine(self, label: str, options: str | None = None) -> Engine:
        """An engine whose every connection is new and closed when done (no pool: a pooled
        connection would keep the lock after release)."""
        args = postgresql_connect_args(self.url, options or "", application_name=label)
        args["application_name"] = label  # how holder() finds the run, whatever the URL says
        return create_engine(self.url, poolclass=NullPool, connect_args=args)
