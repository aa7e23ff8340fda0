"""bot/run_backoff.py: failed or killed runs are not retried blindly by the schedule."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from stored import say

from bot.datadir import open_database_for, run_lock
from bot.reports import STALE_RUN
from bot.retrainer import Retrainer
from bot.run_backoff import BACKOFF_FIRST, BACKOFF_MAX, backoff_of, backoff_text
from bot.settings import Settings, load_settings
from model.store import ModelStore
from storage import finish_run, recent_runs, start_run
from storage.models import TrainingRun

T0 = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def run(id: int, status: str, minutes: int = 0, error: str | None = None):
    when = T0 + dt.timedelta(minutes=minutes)
    return SimpleNamespace(id=id, status=status, finished_at=when, started_at=when, error=error)


def test_each_failure_in_a_row_doubles_the_wait_up_to_a_day():
    assert backoff_of([]) is None
    assert backoff_of([run(3, "published"), run(2, "failed")]) is None  # the streak ended
    one = backoff_of([run(5, "failed", error="killed")])
    assert one.failures == 1 and one.until == T0 + dt.timedelta(seconds=BACKOFF_FIRST)
    three = backoff_of([run(7, "failed"), run(6, "failed"), run(5, "failed"), run(4, "rejected")])
    assert three.failures == 3 and three.until == T0 + dt.timedelta(seconds=4 * BACKOFF_FIRST)
    assert three.tell and not one.tell
    many = backoff_of([run(i, "failed") for i in range(40, 20, -1)])
    assert many.until == T0 + dt.timedelta(seconds=BACKOFF_MAX)
    # A run going now has not failed: the streak is read past it.
    going = backoff_of([run(9, "running"), run(8, "failed")])
    assert going.failures == 1 and going.last.id == 8
    assert "run 7: out of memory" in backoff_text(
        backoff_of([run(7, "failed", error="out of memory")] * 3)
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, admin_ids=frozenset({1}), retrain_min_messages=1)


def live_of(settings: Settings):
    """What the Retrainer needs of the live model here: its store."""
    return SimpleNamespace(store=ModelStore(settings.data_dir / "models"))


def recent(db) -> list[TrainingRun]:
    with db.read() as session:
        return recent_runs(session)


def fail_runs(db, n: int, ago: dt.timedelta, reason: str = STALE_RUN) -> None:
    with db.begin() as session:
        for _ in range(n):
            run_id = start_run(session, trigger="schedule", last_message_id=0).id
            finish_run(session, run_id, status="failed", error=reason)
            session.get(TrainingRun, run_id).finished_at = dt.datetime.now(dt.UTC) - ago


def test_the_schedule_backs_off_and_the_third_failure_tells_the_admins(
    settings: Settings, monkeypatch
):
    db = open_database_for(settings)
    notes = []

    async def notify(admin, text, plot):
        notes.append((admin, text))

    retrainer = Retrainer(settings, db, live_of(settings), notify)
    try:
        with db.begin() as session:  # a run whose process was killed unseen
            start_run(session, trigger="schedule", last_message_id=0)
        fail_runs(db, 1, dt.timedelta(minutes=1))
        assert asyncio.run(retrainer.scheduled_check()) is False
        assert [r.status for r in recent(db)] == ["failed", "failed"]  # closed, counted
        assert notes == [] and retrainer._task is None  # backed off quietly, nothing started
        # A third failure: a child that dies before it records anything.
        monkeypatch.setattr("bot.retrainer.sys.executable", "/bin/false")

        async def admin_run():
            assert await retrainer.start("admin", requested_by=1)  # admins are not held back
            await retrainer.wait()

        fail_runs(db, 1, dt.timedelta(minutes=1))
        asyncio.run(admin_run())
        [(admin, text)] = notes
        assert admin == 1 and "did not finish (exit code 1)" in text
        assert "failed 3 times in a row" in text and STALE_RUN in text
    finally:
        db.dispose()


def test_once_the_wait_is_over_the_schedule_checks_again(settings: Settings, monkeypatch):
    db = open_database_for(settings)
    counted = []

    def new_messages(db_):
        counted.append(True)
        return 0  # nothing new: the check ends there, no run starts

    monkeypatch.setattr("bot.reports.new_messages", new_messages)

    async def notify(admin, text, plot):
        raise AssertionError("nothing to tell")

    try:
        fail_runs(db, 1, dt.timedelta(seconds=BACKOFF_FIRST + 60))
        retrainer = Retrainer(settings, db, live_of(settings), notify)
        assert asyncio.run(retrainer.scheduled_check()) is False
        assert counted == [True]  # past the wait, it looked for new messages
    finally:
        db.dispose()


def test_train_if_due_starts_a_run_only_when_the_schedule_would(
    charbot, clean_env, tmp_path, tiny_model_path
):
    """`charbot train --if-due`, as a trainer host's timer runs it."""
    env = {
        **clean_env,
        "CHARBOT_DATA_DIR": str(tmp_path / "data"),
        "CHARBOT_MODEL_PATH": str(tiny_model_path),
        "CHARBOT_RETRAIN_MIN_MESSAGES": "2",
    }
    settings = load_settings(env, env_file=None)

    def train_if_due() -> list[str]:
        result = subprocess.run(
            [*charbot, "train", "--if-due", "--json"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()

    db = open_database_for(settings)
    try:
        wait = "0 new messages, waiting for 2"
        assert train_if_due() == [
            f"charbot: no run now: {wait}",
            json.dumps({"run_id": None, "status": "not started", "reason": wait}),
        ]
        with db.begin() as session:
            say(session, 7, 11, "one")
            say(session, 7, 11, "two")
            start_run(session, trigger="schedule", last_message_id=0)  # its process died
        lines = train_if_due()
        # The dead run was closed as failed, and the backoff after it holds.
        assert len(lines) == 2 and lines[0].startswith(
            "charbot: no run now: 1 failed run(s) in a row, waiting until "
        )
        assert json.loads(lines[1])["status"] == "not started"
        assert [(r.status, r.error) for r in recent(db)] == [("failed", STALE_RUN)]
        with db.begin() as session:  # the backoff is over
            session.get(TrainingRun, 1).finished_at -= dt.timedelta(seconds=BACKOFF_FIRST + 60)
        lock = run_lock(settings)  # another run is going
        assert lock.acquire()
        try:
            line, last = train_if_due()
            assert line.startswith("charbot: no run now: another retraining run is going (pid ")
            assert json.loads(last)["reason"] in line
        finally:
            lock.release()
        assert train_if_due()[-1] == '{"run_id": 2, "status": "skipped"}'  # due: it ran
        assert recent(db)[0].trigger == "schedule"  # reported as the schedule's run
    finally:
        db.dispose()
