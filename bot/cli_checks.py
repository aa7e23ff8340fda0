"""What `charbot` checks and binds before TensorFlow loads, so that a bad setting, a
port in use or an unusable database is one line in a second, not after the model loads;
and whether `charbot train --if-due` has a run to start.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from pathlib import Path

from bot.datadir import (
    check_shared_store,
    open_database_for,
    open_store,
    reconcile_stale_runs,
    run_lock,
)
from bot.metrics import MetricsServer
from bot.reports import STALE_RUN, no_run_line, run_going, schedule_wait
from bot.settings import Settings
from storage import Database


class CommandError(Exception):
    """A failure to report as one line (`charbot: ...`) with exit status 1."""


def no_run(reason: str, as_json: bool) -> int:
    """`charbot train --if-due` found nothing to do: say why (and, for --json, as JSON)."""
    print(f"charbot: no run now: {reason}")
    if as_json:
        print(no_run_line(reason))
    return 0


def not_due(settings: Settings, db: Database) -> str | None:
    """Why `charbot train --if-due` starts no run where the bot's scheduled check would
    not either; None: one is due. Runs whose process died are closed first (they count
    as failed), under the run lock, as the bot closes them.

    Raises DataDirError for a trainer host whose model store mount is missing."""
    check_shared_store(settings, db)  # before open_store, which would start a store here
    lock = run_lock(settings)
    if not lock.acquire():
        return run_going(lock.holder())
    try:
        reconcile_stale_runs(db, open_store(settings), STALE_RUN)
    finally:
        lock.release()
    return schedule_wait(settings, db, dt.datetime.now(dt.UTC))


def bind_metrics(settings: Settings) -> MetricsServer | None:
    """The /metrics server, bound before the model loads (a port in use: one line)."""
    if settings.metrics_address is None:
        return None
    host, port = settings.metrics_address
    try:
        return MetricsServer(host, port)
    except OSError as exc:
        raise CommandError(
            f"CHARBOT_METRICS_ADDRESS: cannot listen on {host}:{port} ({exc.strerror or exc})"
        ) from None


def bind_webhook(settings: Settings) -> socket.socket | None:
    """The webhook server's socket, bound before the model loads (a port in use: one
    line); None when the bot polls."""
    if settings.webhook_url is None:
        return None
    host, port = settings.webhook_listen
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        raise CommandError(
            f"CHARBOT_WEBHOOK_LISTEN: cannot listen on {host}:{port} ({exc.strerror or exc})"
        ) from None


def check_writable_file(path: Path) -> None:
    """CommandError unless a file can be written at `path` (said before hours of work)."""
    if path.is_dir():
        raise CommandError(f"{path} is a folder: name the file to write")
    if not path.parent.is_dir() or not os.access(path.parent, os.W_OK):
        raise CommandError(f"{path.parent} is not a folder this user can write in")


def preflight(settings: Settings) -> None:
    """Fail in a second, before TensorFlow loads, on a data dir or database the bot cannot
    use (DataDirError, DatabaseFileError: one line each)."""
    open_database_for(settings).dispose()
