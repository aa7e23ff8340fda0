"""One retraining run at a time through PostgreSQL (storage/run_lock.py), and a
`charbot train` on another host: real processes against a real server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import time

import psycopg
import pytest
from sqlalchemy.engine import make_url
from test_bot_e2e import ADMIN, data_dir, stub
from test_retraining import env, settings, write_chats

from bot.datadir import MODELS_DIR, DataDirError, open_database_for, open_store, run_lock
from bot.reports import describe_holder, status_lines
from bot.retrainer import Retrainer
from bot.services import open_services
from bot.train_job import AlreadyRunning, train_once
from model.runlock import RunLock
from storage import finish_run, get_run, last_run, start_run
from storage.run_lock import RUN_LOCK_KEY, AdvisoryRunLock

__all__ = ["data_dir", "env", "settings", "stub"]  # fixtures used here, defined there

# A process that takes the lock, says so, and keeps it until it is killed.
HOLD = """
import sys, time
from storage.run_lock import AdvisoryRunLock
lock = AdvisoryRunLock(sys.argv[1])
print("held" if lock.acquire() else "refused", flush=True)
time.sleep(600)
"""
FREED_WITHIN_S = 5.0  # a killed holder's lock is free again within this


def connect(url: str) -> psycopg.Connection:
    """A plain psycopg connection to the database at `url` (as psql would be)."""
    libpq = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    return psycopg.connect(libpq, autocommit=True)


@pytest.fixture
def holder(pg_url: str, clean_env):
    """Another process holding the run lock of `pg_url`; killed at the end if still alive."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, pg_url], stdout=subprocess.PIPE, text=True, env=clean_env
    )
    try:
        assert process.stdout.readline().strip() == "held"
        yield process
    finally:
        process.kill()
        process.wait()


@pytest.fixture
def pg_settings(settings, pg_url):
    return dataclasses.replace(settings, database_url=pg_url)


def test_a_second_process_is_refused_while_the_first_holds_the_lock(pg_url, holder):
    lock = AdvisoryRunLock(pg_url)
    assert lock.is_running()
    assert lock.acquire() is False and not lock.held
    info = lock.holder()
    assert (info["pid"], info["host"]) == (holder.pid, socket.gethostname())
    since = dt.datetime.fromisoformat(info["since"])
    assert abs(dt.datetime.now(dt.UTC) - since) < dt.timedelta(minutes=1)
    # What `charbot train` says when refused: the holder, by host, pid and start time.
    assert describe_holder(info).startswith(f"pid {holder.pid} on {socket.gethostname()} since ")


def test_a_holder_killed_with_sigkill_frees_the_lock_within_seconds(pg_url, holder):
    lock = AdvisoryRunLock(pg_url)
    assert not lock.acquire()
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    killed = time.monotonic()
    while not lock.acquire():
        assert time.monotonic() - killed < FREED_WITHIN_S, "the dead holder's lock stayed"
        time.sleep(0.02)
    try:
        assert lock.held and lock.holder()["pid"] == os.getpid()
    finally:
        lock.release()
    assert not lock.is_running() and lock.holder() is None


def test_release_frees_the_lock_and_a_held_lock_is_not_taken_twice(pg_url):
    first, second = AdvisoryRunLock(pg_url), AdvisoryRunLock(pg_url)
    assert first.acquire()
    with pytest.raises(RuntimeError, match="held already"):
        first.acquire()
    assert not second.acquire() and second.is_running()
    first.release()
    first.release()  # twice is harmless
    assert not second.is_running()
    assert second.acquire()
    second.release()


def test_the_lock_connection_outlives_the_servers_idle_timeouts(pg_url):
    """A run holds its lock for hours on an idle connection: a server that ends idle
    sessions must not end that one (and with it the lock)."""
    name = make_url(pg_url).database
    with connect(pg_url) as conn:
        for setting in ("idle_session_timeout", "idle_in_transaction_session_timeout"):
            conn.execute(f'ALTER DATABASE "{name}" SET {setting} = 300')  # ms
    lock, other = AdvisoryRunLock(pg_url), AdvisoryRunLock(pg_url)
    assert lock.acquire()
    try:
        time.sleep(1.0)  # past both timeouts
        assert not other.acquire() and other.holder()["pid"] == os.getpid()
    finally:
        lock.release()
    assert other.acquire()
    other.release()


def test_each_database_has_its_own_run_lock(pg_server, pg_url):
    other = pg_server.create_database()
    try:
        here = AdvisoryRunLock(pg_url)
        there = AdvisoryRunLock(pg_server.url(other))
        assert here.acquire() and there.acquire()  # two bots on one server: no waiting
        here.release()
        there.release()
    finally:
        pg_server.drop_database(other)


def test_a_held_key_that_is_not_a_run_names_only_the_backend(pg_url):
    """Someone took charbot's key by hand (psql): refused, and the holder is that backend."""
    with connect(pg_url) as conn:
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        conn.execute("SELECT pg_advisory_lock(%s)", (RUN_LOCK_KEY,))
        lock = AdvisoryRunLock(pg_url)
        assert not lock.acquire() and lock.holder() == {"pid": backend}


def test_the_run_lock_follows_the_database(settings, pg_settings):
    assert isinstance(run_lock(settings), RunLock)
    assert isinstance(run_lock(pg_settings), AdvisoryRunLock)
    # Plain postgresql:// and postgres:// URLs (psycopg 3, as for the bot's own
    # connections) get the database's lock too.
    for scheme in ("postgresql://", "postgres://"):
        plain = pg_settings.database_url.replace("postgresql+psycopg://", scheme)
        lock = run_lock(dataclasses.replace(pg_settings, database_url=plain))
        assert lock.acquire() and run_lock(pg_settings).is_running()
        lock.release()


def test_charbot_train_is_refused_while_another_host_runs(pg_settings, holder):
    db = open_database_for(pg_settings)
    store = open_store(pg_settings)
    lock = run_lock(pg_settings)
    try:
        with pytest.raises(AlreadyRunning, match=f"pid {holder.pid} on {socket.gethostname()}"):
            train_once(pg_settings, db)
        with db.read() as session:
            assert last_run(session) is None  # nothing recorded
        lines = status_lines(pg_settings, db, store, running=True, holder=lock.holder())
    finally:
        db.dispose()
    going = f"Retraining: a run is going now (pid {holder.pid} on {socket.gethostname()} since "
    assert any(line.startswith(going) for line in lines), lines


def test_a_trainer_without_the_bots_model_store_is_refused_in_one_line(pg_settings, tmp_path):
    """A trainer host whose store mount is missing must not start a store of its own."""
    open_store(pg_settings)  # the bot's store: version 1
    db = open_database_for(pg_settings)
    with db.begin() as session:
        run = start_run(session, trigger="cli", last_message_id=0)
        finish_run(session, run.id, status="published", new_version=2)
    elsewhere = dataclasses.replace(pg_settings, data_dir=tmp_path / "trainer")
    try:
        with pytest.raises(DataDirError, match="holds no model versions, but the database"):
            train_once(elsewhere, db)
        with db.read() as session:
            assert last_run(session).id == run.id  # nothing started
    finally:
        db.dispose()
    assert not list((tmp_path / "trainer" / MODELS_DIR).glob("v*"))


def test_a_charbot_train_on_another_host_publishes_and_the_bot_serves_it(
    pg_settings, tmp_path, generator, charbot, clean_env
):
    """The trainer host's data dir is its own, with the bot's model store mounted in it
    (here a symlink); both use the same PostgreSQL database."""
    write_chats(pg_settings, chats=12, turns=6)
    services = open_services(pg_settings, generator=generator)  # the bot: version 1 live
    trainer_dir = tmp_path / "trainer"
    trainer_dir.mkdir()
    (trainer_dir / MODELS_DIR).symlink_to(pg_settings.data_dir / MODELS_DIR)
    env = {
        **clean_env,
        "CHARBOT_DATA_DIR": str(trainer_dir),
        "CHARBOT_DATABASE_URL": pg_settings.database_url,
        "CHARBOT_MODEL_PATH": str(pg_settings.model_path),
        "CHARBOT_RETRAIN_EPOCHS": "3",
    }
    notes = []

    async def notify(admin, text, plot):
        notes.append(text)

    async def main():
        retrainer = Retrainer(pg_settings, services.db, services.live, notify)
        child = await asyncio.create_subprocess_exec(
            *charbot, "train", "--json", env=env, stdout=asyncio.subprocess.PIPE
        )
        seen_running = started = False
        while child.returncode is None:  # the bot's side, while the other host trains
            if await asyncio.to_thread(retrainer.lock.is_running):
                seen_running = True
                started = await retrainer.start("admin", requested_by=ADMIN)
                # Not stale though no local process has its pid: the lock is held.
                await asyncio.to_thread(retrainer.close_stale_runs)
                break
            await asyncio.sleep(0.1)
        out, _ = await child.communicate()
        await retrainer.watch()  # the periodic look: swap, and report the unwatched run
        return seen_running, started, child.returncode, out.decode()

    try:
        seen_running, started, code, out = asyncio.run(main())
        served = services.live.version
        with services.db.read() as session:
            run = get_run(session, 1)
            status, new_version, reported = run.status, run.new_version, run.reported
    finally:
        services.close()
    assert code == 0, out
    assert seen_running and not started
    assert (status, new_version, served) == ("published", 2, 2)
    assert notes == [notes[0]] and notes[0].startswith("Retraining run 1 (cli): published")
    assert reported
    assert (trainer_dir / "runs" / "run-00001").is_dir()  # the run's files stay on its host
    assert not (pg_settings.data_dir / "runs" / "run-00001").exists()
    assert open_store(pg_settings).live_version() == 2
